"""All training losses in one place: weighted CE, ITC, ITM, and how they combine.

Each loss returns its own term; :func:`compute_losses` runs one batch through the model
and returns every term plus the joint objective

* ``convex`` (the paper): ``(1 - b_itc - b_itm) * CE + b_itc * ITC + b_itm * ITM``
* ``additive``: ``CE + b_itc * ITC + b_itm * ITM``.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass

import torch
import torch.nn.functional as F

from mmaux.config import AuxConfig
from mmaux.models.classifier import Encoded, ModelOutput, MultimodalClassifier


def balanced_class_weights(labels: Sequence[int], num_classes: int) -> torch.Tensor:
    """``n / (C * count_c)`` per class (scikit-learn's "balanced"); absent classes get 0."""
    counts = torch.bincount(torch.as_tensor(list(labels), dtype=torch.long), minlength=num_classes)
    n = counts.sum().clamp_min(1).float()
    weights = n / (num_classes * counts.clamp_min(1).float())
    return torch.where(counts > 0, weights, torch.zeros_like(weights))


def classification_loss(
    logits: torch.Tensor, labels: torch.Tensor, weight: torch.Tensor | None = None
) -> torch.Tensor:
    """(Class-weighted) cross-entropy of the main task."""
    return F.cross_entropy(logits.float(), labels, weight=weight)


def itc_loss(
    text_emb: torch.Tensor, image_emb: torch.Tensor, logit_scale: torch.Tensor
) -> torch.Tensor:
    """Symmetric InfoNCE: ``½[CE(S, arange) + CE(Sᵀ, arange)]``, ``S = e^t · T Iᵀ``.

    ``text_emb`` and ``image_emb`` are L2-normalised (B, D); row i of each is a real pair.
    """
    scale = logit_scale.float().exp()
    logits = scale * text_emb.float() @ image_emb.float().t()
    target = torch.arange(logits.shape[0], device=logits.device)
    return 0.5 * (F.cross_entropy(logits, target) + F.cross_entropy(logits.t(), target))


@dataclass
class ITMPairs:
    """Pairs for ITM: text ``text_idx[k]`` with image ``image_idx[k]``; label 1 = real pair."""

    text_idx: torch.Tensor
    image_idx: torch.Tensor

    @property
    def labels(self) -> torch.Tensor:
        return (self.text_idx == self.image_idx).long()


def random_itm_pairs(
    batch_size: int, prob: float, generator: torch.Generator, device: torch.device | str = "cpu"
) -> ITMPairs:
    """The paper's scheme: each pair is broken with probability ``prob`` by another post's image."""
    idx = torch.arange(batch_size)
    if batch_size < 2:
        return ITMPairs(idx.to(device), idx.to(device))
    broken = torch.rand(batch_size, generator=generator) < prob
    shift = torch.randint(1, batch_size, (batch_size,), generator=generator)
    image_idx = torch.where(broken, (idx + shift) % batch_size, idx)
    return ITMPairs(idx.to(device), image_idx.to(device))


def hard_itm_pairs(
    text_emb: torch.Tensor,
    image_emb: torch.Tensor,
    logit_scale: torch.Tensor,
    generator: torch.Generator,
) -> ITMPairs:
    """ALBEF/BLIP hard negatives: B positives, one negative image per text and one
    negative text per image, drawn with probability softmax(similarity), diagonal zeroed."""
    b = text_emb.shape[0]
    device = text_emb.device
    idx = torch.arange(b)
    if b < 2:
        return ITMPairs(idx.to(device), idx.to(device))
    with torch.no_grad():
        sim = logit_scale.float().exp() * text_emb.float() @ image_emb.float().t()
        w_t2i = F.softmax(sim, dim=1).cpu() + 1e-5
        w_i2t = F.softmax(sim.t(), dim=1).cpu() + 1e-5
        w_t2i.fill_diagonal_(0)
        w_i2t.fill_diagonal_(0)
        neg_image = torch.multinomial(w_t2i, 1, generator=generator).squeeze(1)
        neg_text = torch.multinomial(w_i2t, 1, generator=generator).squeeze(1)
    text_idx = torch.cat([idx, idx, neg_text])
    image_idx = torch.cat([idx, neg_image, idx])
    return ITMPairs(text_idx.to(device), image_idx.to(device))


def itm_logits(
    model: MultimodalClassifier, enc: Encoded, fused: torch.Tensor, pairs: ITMPairs
) -> tuple[torch.Tensor, torch.Tensor]:
    """ITM head outputs and labels. Real pairs reuse ``fused`` (the classification pass);
    only broken pairs re-run the fusion head, on the cached unimodal encodings."""
    assert model.itm_head is not None
    real = pairs.text_idx == pairs.image_idx
    fused_real = fused.index_select(0, pairs.text_idx[real])
    parts, labels = [fused_real], [torch.ones_like(pairs.text_idx[real])]
    if (~real).any():
        parts.append(model.fuse(enc, pairs.text_idx[~real], pairs.image_idx[~real]))
        labels.append(torch.zeros_like(pairs.text_idx[~real]))
    return model.itm_head(torch.cat(parts)), torch.cat(labels)


def itm_loss(logits: torch.Tensor, labels: torch.Tensor) -> torch.Tensor:
    """Binary matched / not-matched cross-entropy."""
    return F.cross_entropy(logits.float(), labels)


def combine(
    ce: torch.Tensor, itc: torch.Tensor | None, itm: torch.Tensor | None, aux: AuxConfig
) -> torch.Tensor:
    """Joint objective from the configured weighting."""
    b_itc = aux.itc_weight if itc is not None else 0.0
    b_itm = aux.itm_weight if itm is not None else 0.0
    total = ce * (1.0 - b_itc - b_itm) if aux.weighting == "convex" else ce
    if itc is not None and b_itc > 0:
        total = total + b_itc * itc
    if itm is not None and b_itm > 0:
        total = total + b_itm * itm
    return total


@dataclass
class LossTerms:
    total: torch.Tensor
    ce: torch.Tensor
    itc: torch.Tensor | None = None
    itm: torch.Tensor | None = None
    itm_acc: torch.Tensor | None = None

    def as_floats(self) -> dict[str, float]:
        out = {"loss": float(self.total.detach()), "ce": float(self.ce.detach())}
        for name in ("itc", "itm", "itm_acc"):
            value = getattr(self, name)
            if value is not None:
                out[name] = float(value.detach())
        return out


def compute_losses(
    model: MultimodalClassifier,
    batch: dict[str, torch.Tensor],
    aux: AuxConfig,
    class_weight: torch.Tensor | None,
    generator: torch.Generator,
) -> tuple[LossTerms, ModelOutput]:
    """One forward pass: classification plus whichever auxiliary tasks are enabled."""
    out = model(batch)
    ce = classification_loss(out.logits, batch["labels"], class_weight)
    itc = itm = itm_acc = None
    emb = None
    if model.logit_scale is not None and aux.itc_weight > 0:
        emb = model.itc_embeddings(out.encoded)
        itc = itc_loss(emb[0], emb[1], model.logit_scale)
    if model.itm_head is not None and aux.itm_weight > 0:
        b = out.logits.shape[0]
        if aux.itm_negatives == "hard":
            assert emb is not None and model.logit_scale is not None
            pairs = hard_itm_pairs(emb[0], emb[1], model.logit_scale, generator)
        else:
            pairs = random_itm_pairs(b, aux.itm_negative_prob, generator, out.logits.device)
        logits, labels = itm_logits(model, out.encoded, out.fused, pairs)
        itm = itm_loss(logits, labels)
        itm_acc = (logits.argmax(-1) == labels).float().mean()
    total = combine(ce, itc, itm, aux)
    return LossTerms(total=total, ce=ce, itc=itc, itm=itm, itm_acc=itm_acc), out
