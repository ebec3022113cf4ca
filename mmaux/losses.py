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
from mmaux.distributed import SINGLE, DistInfo, all_reduce_sum, gather_with_grad
from mmaux.models.classifier import Encoded, ModelOutput, MultimodalClassifier


def balanced_class_weights(labels: Sequence[int], num_classes: int) -> torch.Tensor:
    """``n / (C * count_c)`` per class (scikit-learn's "balanced"); absent classes get 0."""
    counts = torch.bincount(torch.as_tensor(list(labels), dtype=torch.long), minlength=num_classes)
    n = counts.sum().clamp_min(1).float()
    weights = n / (num_classes * counts.clamp_min(1).float())
    return torch.where(counts > 0, weights, torch.zeros_like(weights))


def classification_loss(
    logits: torch.Tensor,
    labels: torch.Tensor,
    weight: torch.Tensor | None = None,
    dist: DistInfo = SINGLE,
) -> torch.Tensor:
    """(Class-weighted) cross-entropy of the main task.

    Under data parallelism each rank holds a slice of the global batch; the weighted mean
    is taken over the GLOBAL batch (the weight sum is all-reduced) and scaled by the world
    size, so DDP's gradient averaging yields exactly the single-process gradient."""
    if not dist.enabled:
        return F.cross_entropy(logits.float(), labels, weight=weight)
    per_item = F.cross_entropy(logits.float(), labels, weight=weight, reduction="none")
    local = weight[labels].sum() if weight is not None else per_item.new_tensor(len(labels))
    total = all_reduce_sum(local.float(), dist)
    return per_item.sum() * dist.world_size / total.clamp_min(1e-12)


def itc_loss(
    text_emb: torch.Tensor,
    image_emb: torch.Tensor,
    logit_scale: torch.Tensor,
    dist: DistInfo = SINGLE,
) -> torch.Tensor:
    """Symmetric InfoNCE: ``½[CE(S, arange) + CE(Sᵀ, arange)]``, ``S = e^t · T Iᵀ``.

    ``text_emb`` and ``image_emb`` are L2-normalised (B, D); row i of each is a real pair.
    Under data parallelism the embeddings of all ranks are gathered (with gradient), so the
    contrastive batch is the global batch: each rank scores its own rows against every
    column, and the ranks' mean is the single-process loss.
    """
    scale = logit_scale.float().exp()
    text, image = text_emb.float(), image_emb.float()
    if not dist.enabled:
        logits = scale * text @ image.t()
        target = torch.arange(logits.shape[0], device=logits.device)
        return 0.5 * (F.cross_entropy(logits, target) + F.cross_entropy(logits.t(), target))
    all_text, all_image = gather_with_grad(text, dist), gather_with_grad(image, dist)
    target = torch.arange(text.shape[0], device=text.device) + dist.rank * text.shape[0]
    t2i = scale * text @ all_image.t()
    i2t = scale * image @ all_text.t()
    return 0.5 * (F.cross_entropy(t2i, target) + F.cross_entropy(i2t, target))


@dataclass
class ITMPairs:
    """Pairs for ITM: text ``text_idx[k]`` with image ``image_idx[k]``; label 1 = real pair.

    The first ``real_prefix`` pairs are known to be the batch's real pairs in order
    (``(i, i)`` for i < B): their fused output is reused from the classification pass."""

    text_idx: torch.Tensor
    image_idx: torch.Tensor
    real_prefix: int = 0

    @property
    def labels(self) -> torch.Tensor:
        return (self.text_idx == self.image_idx).long()


def random_itm_pairs(
    batch_size: int, prob: float, generator: torch.Generator, device: torch.device | str = "cpu"
) -> ITMPairs:
    """The paper's scheme: each pair is broken with probability ``prob`` by another post's image.

    Drawn on the generator's device (a CUDA generator keeps the step free of host syncs)."""
    gdev = generator.device
    idx = torch.arange(batch_size, device=gdev)
    if batch_size < 2:
        return ITMPairs(idx.to(device), idx.to(device))
    broken = torch.rand(batch_size, generator=generator, device=gdev) < prob
    shift = torch.randint(1, batch_size, (batch_size,), generator=generator, device=gdev)
    image_idx = torch.where(broken, (idx + shift) % batch_size, idx)
    return ITMPairs(idx.to(device), image_idx.to(device))


def hard_itm_pairs(
    text_emb: torch.Tensor,
    image_emb: torch.Tensor,
    logit_scale: torch.Tensor,
    generator: torch.Generator,
) -> ITMPairs:
    """ALBEF/BLIP hard negatives: B positives, one negative image per text and one
    negative text per image, drawn with probability softmax(similarity), diagonal zeroed.

    Sampled on the generator's device: with a CUDA generator nothing leaves the GPU."""
    b = text_emb.shape[0]
    device = text_emb.device
    idx = torch.arange(b, device=device)
    if b < 2:
        return ITMPairs(idx, idx)
    with torch.no_grad():
        sim = logit_scale.float().exp() * text_emb.float() @ image_emb.float().t()
        eye = torch.eye(b, dtype=torch.bool, device=device)
        w_t2i = (F.softmax(sim, dim=1) + 1e-5).masked_fill(eye, 0).to(generator.device)
        w_i2t = (F.softmax(sim.t(), dim=1) + 1e-5).masked_fill(eye, 0).to(generator.device)
        neg_image = torch.multinomial(w_t2i, 1, generator=generator).squeeze(1).to(device)
        neg_text = torch.multinomial(w_i2t, 1, generator=generator).squeeze(1).to(device)
    text_idx = torch.cat([idx, idx, neg_text])
    image_idx = torch.cat([idx, neg_image, idx])
    return ITMPairs(text_idx, image_idx, real_prefix=b)


def itm_logits(
    model: MultimodalClassifier, enc: Encoded, fused: torch.Tensor, pairs: ITMPairs
) -> tuple[torch.Tensor, torch.Tensor]:
    """ITM head outputs and labels, from the cached unimodal encodings: no encoder re-runs.

    The known real prefix reuses ``fused`` (the classification pass); every other pair
    re-runs only the fusion head. All shapes are fixed by the batch size, so the step
    needs no host synchronisation (random pairs re-fuse their real pairs too: the fusion
    head is cheap, a data-dependent split would stall the GPU)."""
    assert model.itm_head is not None
    k = pairs.real_prefix
    parts = [fused[:k]] if k else []
    if pairs.text_idx.shape[0] > k:
        parts.append(model.fuse(enc, pairs.text_idx[k:], pairs.image_idx[k:]))
    return model.itm_head(torch.cat(parts)), pairs.labels


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

    def named(self) -> tuple[list[str], list[torch.Tensor]]:
        """The terms that are on (``loss``, ``ce``, then ``itc``, ``itm``, ``itm_acc``) and
        their tensors, still on the device."""
        names = ["loss", "ce"] + [
            n for n in ("itc", "itm", "itm_acc") if getattr(self, n) is not None
        ]
        return names, [self.total, self.ce] + [getattr(self, n) for n in names[2:]]


def compute_losses(
    model: MultimodalClassifier,
    batch: dict[str, torch.Tensor],
    aux: AuxConfig,
    class_weight: torch.Tensor | None,
    generator: torch.Generator,
    dist: DistInfo = SINGLE,
) -> tuple[LossTerms, ModelOutput]:
    """One forward pass: classification plus whichever auxiliary tasks are enabled.

    With ``dist`` (data parallelism) CE and ITC cover the global batch; ITM pairs are drawn
    within each rank's slice."""
    out = model(batch)
    ce = classification_loss(out.logits, batch["labels"], class_weight, dist)
    itc = itm = itm_acc = None
    emb = None
    if model.logit_scale is not None and aux.itc_weight > 0:
        emb = model.itc_embeddings(out.encoded)
        itc = itc_loss(emb[0], emb[1], model.logit_scale, dist)
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
