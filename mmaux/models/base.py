"""The one model interface every family implements (late fusion, MMBT, ViLT, LXMERT).

A family says how it *encodes* a batch once (:meth:`MultimodalModel.encode`, an opaque
per-family object: everything the other methods need, computed once per step), how it
*fuses* any re-pairing ``(text text_idx[k], image image_idx[k])`` of those encodings
(:meth:`MultimodalModel.fuse`: the cheap fusion head for late fusion, the cross-modal
transformer for early fusion; image encoders never re-run), which pooled *unimodal*
vectors ITC contrasts (:meth:`MultimodalModel.unimodal`) and how it encodes the text once
more under a fresh dropout mask for SimCSE (:meth:`MultimodalModel.text_view`).

The heads shared by all families live here: the class head and ITM head on the fused
vector, the ITC projections and learnable logit scale, and the SimCSE head. Losses,
trainer, evaluation, tracking and the pyfunc model only use this interface.
"""

from __future__ import annotations

import math
from dataclasses import dataclass
from typing import Any

import torch
import torch.nn.functional as F
from torch import nn

from mmaux.config import Config


@dataclass
class ModelOutput:
    logits: torch.Tensor
    fused: torch.Tensor
    encoded: Any


def take(x: torch.Tensor | None, idx: torch.Tensor | None) -> torch.Tensor | None:
    """Rows ``idx`` of ``x`` (``x`` itself for ``idx=None`` or ``x=None``)."""
    return x if x is None or idx is None else x.index_select(0, idx)


def encoder_mask(model: nn.Module, attention_mask: torch.Tensor) -> torch.Tensor:
    """A (B, L) padding mask as the 4D (B, 1, 1, L) mask transformers passes through as is.

    Given the 2D mask, transformers asks ``mask.all()`` on the host to decide whether SDPA
    may skip it: a GPU synchronisation in every step. SDPA takes a boolean mask (True =
    attend); eager attention an additive one."""
    mask = attention_mask[:, None, None, :].bool()
    if getattr(model.config, "_attn_implementation", "sdpa") == "sdpa":
        return mask
    low = torch.finfo(torch.float32).min
    return torch.zeros(mask.shape, device=mask.device).masked_fill_(~mask, low)


def pool_tokens(tokens: torch.Tensor, mask: torch.Tensor, how: str) -> torch.Tensor:
    """Position 0 (``cls``) or the mean over unmasked positions (``mean``)."""
    if how == "cls":
        return tokens[:, 0]
    m = mask.unsqueeze(-1).to(tokens.dtype)
    return (tokens * m).sum(1) / m.sum(1).clamp_min(1.0)


class MultimodalModel(nn.Module):
    """Base class of every family: shared heads plus the interface the losses use.

    Subclasses set :attr:`family`, build their encoders and call ``super().__init__`` with
    the widths of the fused vector and of the two unimodal vectors, then implement
    :meth:`encode`, :meth:`fuse`, :meth:`unimodal` and :meth:`text_view`
    (and :meth:`unimodal_text` where the text half alone is cheaper)."""

    family: str = ""
    uses_text: bool = True
    uses_image: bool = True
    needs_image_tokens: bool = False

    def __init__(
        self,
        cfg: Config,
        num_classes: int,
        fused_dim: int,
        text_dim: int,
        image_dim: int,
        text_encoder: nn.Module | None = None,
        image_encoder: nn.Module | None = None,
    ):
        super().__init__()
        # The pretrained text transformer (its tokenizer feeds the batches) and the timm
        # backbone whose features are cached when frozen; ``None`` where a family has none.
        self.text_encoder = text_encoder
        self.image_encoder = image_encoder
        aux = cfg.aux
        self.fused_dim = fused_dim
        self.classifier = nn.Linear(fused_dim, num_classes)
        self.text_proj: nn.Module | None = None
        self.image_proj: nn.Module | None = None
        self.logit_scale: nn.Parameter | None = None
        self.itm_head: nn.Module | None = None
        self.simcse_head: nn.Module | None = None
        self.max_logit_scale = float(aux.max_logit_scale)
        if aux.itc_weight > 0:
            self.text_proj = nn.Linear(text_dim, cfg.model.proj_dim, bias=False)
            self.image_proj = nn.Linear(image_dim, cfg.model.proj_dim, bias=False)
            self.logit_scale = nn.Parameter(
                torch.tensor(aux.init_logit_scale), requires_grad=aux.learn_temperature
            )
        if aux.itm_weight > 0:
            self.itm_head = nn.Linear(fused_dim, 2)
        if aux.simcse_weight > 0:  # SimCSE's training-time MLP over the pooled text
            self.simcse_head = nn.Sequential(nn.Linear(text_dim, text_dim), nn.Tanh())

    # ------------------------------------------------------------ per-family interface
    def encode(self, batch: dict[str, torch.Tensor]) -> Any:
        """Run what does not depend on the pairing once (encoders, embeddings)."""
        raise NotImplementedError

    def fuse(
        self, enc: Any, text_idx: torch.Tensor | None = None, image_idx: torch.Tensor | None = None
    ) -> torch.Tensor:
        """Fused vectors (P, fused_dim) for the pairs (text ``text_idx[k]``, image
        ``image_idx[k]``) of the encoded batch; ``None`` = the batch's own pairs."""
        raise NotImplementedError

    def unimodal(self, enc: Any) -> tuple[torch.Tensor, torch.Tensor]:
        """Pooled text (B, text_dim) and image (B, image_dim) vectors that saw only their own
        modality: what ITC contrasts, and SimCSE's first text view."""
        raise NotImplementedError

    def unimodal_text(self, enc: Any) -> torch.Tensor:
        """The text half of :meth:`unimodal` (SimCSE's first view); a family whose image
        vector costs a pass of its own overrides this so SimCSE alone never pays for it."""
        return self.unimodal(enc)[0]

    def text_view(self, enc: Any) -> torch.Tensor:
        """The pooled text encoded once more (B, text_dim), under a fresh dropout mask."""
        raise NotImplementedError

    def pretrained_modules(self) -> list[nn.Module]:
        """Modules with pretrained weights: trained at ``train.lr``, the rest at
        ``train.head_lr``."""
        return [m for m in (self.text_encoder, self.image_encoder) if m is not None]

    def frozen_modules(self) -> list[nn.Module]:
        """Fully frozen modules: kept in eval mode while training (BN and dropout fixed)."""
        return []

    # ------------------------------------------------------------ shared behaviour
    def forward(self, batch: dict[str, torch.Tensor]) -> ModelOutput:
        enc = self.encode(batch)
        fused = self.fuse(enc)
        return ModelOutput(logits=self.classifier(fused), fused=fused, encoded=enc)

    def train(self, mode: bool = True) -> MultimodalModel:
        """Train mode everywhere (dropout on in every epoch) except fully frozen modules."""
        super().train(mode)
        if mode:
            for m in self.frozen_modules():
                m.eval()
        return self

    def clamp_logit_scale(self) -> None:
        """Clamp the ITC logit scale to [0, ln(max_logit_scale)] (as open_clip does)."""
        if self.logit_scale is not None:
            with torch.no_grad():
                self.logit_scale.clamp_(0.0, math.log(self.max_logit_scale))

    def itc_embeddings(self, enc: Any) -> tuple[torch.Tensor, torch.Tensor]:
        """L2-normalised ITC projections of the unimodal text and image vectors."""
        if self.text_proj is None or self.image_proj is None:
            raise RuntimeError("ITC projections are off (aux.itc_weight=0)")
        text, image = self.unimodal(enc)
        t = F.normalize(self.text_proj(text), dim=-1)
        i = F.normalize(self.image_proj(image.to(t.dtype)), dim=-1)
        return t, i

    def simcse_embeddings(self, enc: Any) -> tuple[torch.Tensor, torch.Tensor]:
        """Two dropout views of each text through the SimCSE head (not normalised)."""
        if self.simcse_head is None:
            raise RuntimeError("the SimCSE head is off (aux.simcse_weight=0)")
        first = self.unimodal_text(enc)
        return self.simcse_head(first), self.simcse_head(self.text_view(enc))

    def encoder_parameters(self) -> list[nn.Parameter]:
        seen: set[int] = set()
        out = []
        for m in self.pretrained_modules():
            for p in m.parameters():
                if p.requires_grad and id(p) not in seen:
                    seen.add(id(p))
                    out.append(p)
        return out

    def head_parameters(self) -> list[nn.Parameter]:
        pre = {id(p) for m in self.pretrained_modules() for p in m.parameters()}
        return [p for p in self.parameters() if p.requires_grad and id(p) not in pre]
