"""All training losses in one place: weighted CE, ITC, ITM, SimCSE, and how they combine.

Each loss returns its own term; :func:`compute_losses` runs one batch through any model
family (:class:`~mmaux.models.MultimodalModel`) and returns every term plus the joint
objective

* ``convex`` (the paper): ``(1 - b_itc - b_itm - b_simcse) * CE + b_itc * ITC + ...``
* ``additive``: ``CE + b_itc * ITC + b_itm * ITM + b_simcse * SimCSE``.

The embedding-space diagnostics MCSE reports (:func:`alignment`, :func:`uniformity`) are
here too.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any

import torch
import torch.nn.functional as F

from mmaux.config import AuxConfig
from mmaux.distributed import SINGLE, DistInfo, all_reduce_sum, gather_with_grad
from mmaux.models.base import ModelOutput, MultimodalModel


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
    """Pairs for ITM: text ``text_idx[k]`` with image ``image_idx[k]``.

    ``labels`` is 1 where the image is the text's own (by content: a post whose image file
    is byte-identical to the text's own image is a real pair too). The first
    ``real_prefix`` pairs are the batch's real pairs in order (``(i, i)`` for i < B): their
    fused output is reused from the classification pass."""

    text_idx: torch.Tensor
    image_idx: torch.Tensor
    labels: torch.Tensor = None  # type: ignore[assignment]  # default: text_idx == image_idx
    real_prefix: int = 0

    def __post_init__(self) -> None:
        if self.labels is None:
            self.labels = (self.text_idx == self.image_idx).long()


def _same_image(groups: torch.Tensor | None, b: int, device: torch.device) -> torch.Tensor:
    """(B, B) bool: posts i and j show the same image (``groups``: image-content ids)."""
    if groups is None:
        return torch.eye(b, dtype=torch.bool, device=device)
    g = groups.to(device)
    return g[:, None] == g[None, :]


def _pair_labels(same: torch.Tensor, text_idx: torch.Tensor, image_idx: torch.Tensor):
    return same[text_idx, image_idx].long()


def _negatives(weights: torch.Tensor, same: torch.Tensor, generator: torch.Generator):
    """One column per row, drawn with probability ``weights`` among the rows showing
    another image; a row whose every neighbour shares its image keeps its own (a real
    pair, labelled 1). Fixed shapes, no host synchronisation."""
    w = weights.masked_fill(same, 0.0)
    alone = ~(~same).any(dim=1)
    w = w + torch.diag_embed(alone.to(w.dtype))
    return torch.multinomial(w, 1, generator=generator).squeeze(1)


def random_itm_pairs(
    batch_size: int,
    prob: float,
    generator: torch.Generator,
    device: torch.device | str = "cpu",
    groups: torch.Tensor | None = None,
) -> ITMPairs:
    """The paper's scheme: each pair is broken with probability ``prob`` by the image of a
    uniformly drawn post that shows another image (``groups``: image-content ids; posts
    sharing an image are never each other's negatives).

    Drawn on the generator's device (a CUDA generator keeps the step free of host syncs)."""
    gdev = generator.device
    idx = torch.arange(batch_size, device=gdev)
    same = _same_image(groups, batch_size, gdev)
    if batch_size < 2:
        return ITMPairs(idx.to(device), idx.to(device), torch.ones_like(idx).to(device))
    broken = torch.rand(batch_size, generator=generator, device=gdev) < prob
    other = _negatives(torch.ones(batch_size, batch_size, device=gdev), same, generator)
    image_idx = torch.where(broken, other, idx)
    labels = _pair_labels(same, idx, image_idx)
    return ITMPairs(idx.to(device), image_idx.to(device), labels.to(device))


def hard_itm_pairs(
    text_emb: torch.Tensor,
    image_emb: torch.Tensor,
    logit_scale: torch.Tensor,
    generator: torch.Generator,
    groups: torch.Tensor | None = None,
) -> ITMPairs:
    """ALBEF/BLIP hard negatives: B positives, one negative image per text and one
    negative text per image, drawn with probability softmax(similarity), the diagonal and
    every post sharing the image (``groups``) zeroed.

    Sampled on the generator's device: with a CUDA generator nothing leaves the GPU."""
    b = text_emb.shape[0]
    device = text_emb.device
    idx = torch.arange(b, device=device)
    if b < 2:
        return ITMPairs(idx, idx, torch.ones_like(idx))
    with torch.no_grad():
        gdev = generator.device
        same = _same_image(groups, b, gdev)
        sim = logit_scale.float().exp() * text_emb.float() @ image_emb.float().t()
        w_t2i = (F.softmax(sim, dim=1) + 1e-5).to(gdev)
        w_i2t = (F.softmax(sim.t(), dim=1) + 1e-5).to(gdev)
        neg_image = _negatives(w_t2i, same, generator).to(device)
        neg_text = _negatives(w_i2t, same, generator).to(device)
        text_idx = torch.cat([idx, idx, neg_text])
        image_idx = torch.cat([idx, neg_image, idx])
        labels = _pair_labels(same.to(device), text_idx, image_idx)
    return ITMPairs(text_idx, image_idx, labels, real_prefix=b)


def itm_logits(
    model: MultimodalModel, enc: Any, fused: torch.Tensor, pairs: ITMPairs
) -> tuple[torch.Tensor, torch.Tensor]:
    """ITM head outputs and labels, from the batch's encodings: no image encoder re-runs.

    The known real prefix reuses ``fused`` (the classification pass); every other pair
    goes through the family's fusion again (the fusion head for late fusion, the
    cross-modal transformer for early fusion) on its own text and image, so a broken pair
    never sees the matched pair's output. All shapes are fixed by the batch size, so the
    step needs no host synchronisation (random pairs re-fuse their real pairs too: a
    data-dependent split would stall the GPU)."""
    assert model.itm_head is not None
    k = pairs.real_prefix
    parts = [fused[:k]] if k else []
    if pairs.text_idx.shape[0] > k:
        parts.append(model.fuse(enc, pairs.text_idx[k:], pairs.image_idx[k:]))
    return model.itm_head(torch.cat(parts)), pairs.labels


def itm_loss(logits: torch.Tensor, labels: torch.Tensor) -> torch.Tensor:
    """Binary matched / not-matched cross-entropy."""
    return F.cross_entropy(logits.float(), labels)


def simcse_loss(
    first: torch.Tensor, second: torch.Tensor, temperature: float, dist: DistInfo = SINGLE
) -> torch.Tensor:
    """SimCSE's unsupervised term: row i of ``first`` and ``second`` are two dropout views
    of text i (positives), every other row of ``second`` a negative;
    ``CE(cos(first, secondᵀ) / temperature, arange)``. Under data parallelism the second
    views of all ranks are gathered (with gradient): the negatives are the global batch."""
    a = F.normalize(first.float(), dim=-1)
    b = F.normalize(second.float(), dim=-1)
    offset = 0
    if dist.enabled:
        offset = dist.rank * a.shape[0]
        b = gather_with_grad(b, dist)
    logits = a @ b.t() / temperature
    target = torch.arange(a.shape[0], device=a.device) + offset
    return F.cross_entropy(logits, target)


def alignment(x: torch.Tensor, y: torch.Tensor) -> torch.Tensor:
    """Wang & Isola's alignment: mean squared distance of positive pairs (rows of the
    L2-normalised ``x`` and ``y``); lower is better."""
    return (x.float() - y.float()).norm(dim=1).pow(2).mean()


def uniformity(x: torch.Tensor, t: float = 2.0) -> torch.Tensor:
    """Wang & Isola's uniformity: ``log mean exp(-t·‖xᵢ − xⱼ‖²)`` over all pairs i < j of
    the L2-normalised rows of ``x``; lower is more uniform."""
    return torch.pdist(x.float(), p=2).pow(2).mul(-t).exp().mean().log()


def combine(
    ce: torch.Tensor,
    itc: torch.Tensor | None,
    itm: torch.Tensor | None,
    aux: AuxConfig,
    simcse: torch.Tensor | None = None,
) -> torch.Tensor:
    """Joint objective from the configured weighting."""
    terms = [(aux.itc_weight, itc), (aux.itm_weight, itm), (aux.simcse_weight, simcse)]
    terms = [(w, t) for w, t in terms if t is not None and w > 0]
    total = ce * (1.0 - sum(w for w, _ in terms)) if aux.weighting == "convex" else ce
    for w, t in terms:
        total = total + w * t
    return total


@dataclass
class LossTerms:
    total: torch.Tensor
    ce: torch.Tensor
    itc: torch.Tensor | None = None
    itm: torch.Tensor | None = None
    itm_acc: torch.Tensor | None = None
    simcse: torch.Tensor | None = None

    def named(self) -> tuple[list[str], list[torch.Tensor]]:
        """The terms that are on (``loss``, ``ce``, then ``itc``, ``itm``, ``itm_acc``,
        ``simcse``) and their tensors, still on the device."""
        names = ["loss", "ce"] + [
            n for n in ("itc", "itm", "itm_acc", "simcse") if getattr(self, n) is not None
        ]
        return names, [self.total, self.ce] + [getattr(self, n) for n in names[2:]]


def compute_losses(
    model: MultimodalModel,
    batch: dict[str, torch.Tensor],
    aux: AuxConfig,
    class_weight: torch.Tensor | None,
    generator: torch.Generator,
    dist: DistInfo = SINGLE,
) -> tuple[LossTerms, ModelOutput]:
    """One forward pass: classification plus whichever auxiliary tasks are enabled.

    With ``dist`` (data parallelism) CE, ITC and SimCSE cover the global batch; ITM pairs
    are drawn within each rank's slice. ``batch["image_group"]`` (image-content ids) keeps
    posts that share an image from being each other's ITM negatives."""
    out = model(batch)
    ce = classification_loss(out.logits, batch["labels"], class_weight, dist)
    itc = itm = itm_acc = simcse = None
    emb = None
    groups = batch.get("image_group")
    if model.logit_scale is not None and aux.itc_weight > 0:
        emb = model.itc_embeddings(out.encoded)
        itc = itc_loss(emb[0], emb[1], model.logit_scale, dist)
    if model.itm_head is not None and aux.itm_weight > 0:
        b = out.logits.shape[0]
        if aux.itm_negatives == "hard":
            assert emb is not None and model.logit_scale is not None
            pairs = hard_itm_pairs(emb[0], emb[1], model.logit_scale, generator, groups)
        else:
            pairs = random_itm_pairs(b, aux.itm_negative_prob, generator, out.logits.device, groups)
        logits, labels = itm_logits(model, out.encoded, out.fused, pairs)
        itm = itm_loss(logits, labels)
        itm_acc = (logits.argmax(-1) == labels).float().mean()
    if model.simcse_head is not None and aux.simcse_weight > 0:
        first, second = model.simcse_embeddings(out.encoded)
        simcse = simcse_loss(first, second, aux.simcse_temperature, dist)
    total = combine(ce, itc, itm, aux, simcse)
    terms = LossTerms(total=total, ce=ce, itc=itc, itm=itm, itm_acc=itm_acc, simcse=simcse)
    return terms, out
