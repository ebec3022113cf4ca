"""The multimodal post classifier: encoders, a fusion head, a class head and aux heads.

The forward pass is split so auxiliary tasks stay cheap: :meth:`encode` runs the unimodal
encoders once, :meth:`fuse` maps any re-pairing of those encodings to fused vectors, so ITM
negatives re-run only the fusion head, never the encoders.
"""

from __future__ import annotations

import contextlib
import math
from dataclasses import dataclass

import torch
import torch.nn.functional as F
from torch import nn

from mmaux.config import Config
from mmaux.models.encoders import (
    ImageEncoder,
    TextEncoder,
    image_tokens_and_pooled,
    load_image_encoder,
    load_text_encoder,
)
from mmaux.models.fusion import build_fusion


@dataclass
class Encoded:
    """Unimodal encodings of a batch (fields are ``None`` for an unused modality)."""

    text_tokens: torch.Tensor | None = None  # (B, L, Dt)
    text_mask: torch.Tensor | None = None  # (B, L)
    text_pooled: torch.Tensor | None = None  # (B, Dt)
    image_tokens: torch.Tensor | None = None  # (B, N, Di)
    image_pooled: torch.Tensor | None = None  # (B, Di)

    def __len__(self) -> int:
        ref = self.text_pooled if self.text_pooled is not None else self.image_pooled
        assert ref is not None
        return ref.shape[0]


@dataclass
class ModelOutput:
    logits: torch.Tensor
    fused: torch.Tensor
    encoded: Encoded


def _take(x: torch.Tensor | None, idx: torch.Tensor | None) -> torch.Tensor | None:
    return x if x is None or idx is None else x.index_select(0, idx)


class MultimodalClassifier(nn.Module):
    """Text encoder + image encoder + fusion + classifier, with ITC projections and ITM head."""

    def __init__(
        self,
        cfg: Config,
        num_classes: int,
        text: TextEncoder | None,
        image: ImageEncoder | None,
    ):
        super().__init__()
        mc = cfg.model
        self.pooling = mc.text.pooling
        self.text_frozen = mc.text.trainable_layers == 0
        self.image_frozen = mc.image.freeze
        self.text_encoder = text.model if text is not None else None
        self.image_encoder = image.model if image is not None else None
        text_dim = text.hidden_size if text is not None else 0
        image_dim = image.feature_dim if image is not None else 0
        self.fusion = build_fusion(
            mc.fusion, text_dim, image_dim, mc.hidden_dim, mc.dropout, mc.attention_heads
        )
        self.classifier = nn.Linear(mc.hidden_dim, num_classes)
        aux = cfg.aux
        self.text_proj: nn.Module | None = None
        self.image_proj: nn.Module | None = None
        self.logit_scale: nn.Parameter | None = None
        self.itm_head: nn.Module | None = None
        self.max_logit_scale = float(aux.max_logit_scale)
        if aux.itc_weight > 0:
            self.text_proj = nn.Linear(text_dim, mc.proj_dim, bias=False)
            self.image_proj = nn.Linear(image_dim, mc.proj_dim, bias=False)
            self.logit_scale = nn.Parameter(
                torch.tensor(aux.init_logit_scale), requires_grad=aux.learn_temperature
            )
        if aux.itm_weight > 0:
            self.itm_head = nn.Linear(mc.hidden_dim, 2)

    # ------------------------------------------------------------------ modes
    def train(self, mode: bool = True) -> MultimodalClassifier:
        """Train mode everywhere except fully frozen encoders (their BN/dropout stay fixed)."""
        super().train(mode)
        if mode:
            if self.image_encoder is not None and self.image_frozen:
                self.image_encoder.eval()
            if self.text_encoder is not None and self.text_frozen:
                self.text_encoder.eval()
        return self

    def clamp_logit_scale(self) -> None:
        """Clamp the ITC logit scale to [0, ln(max_logit_scale)] (as open_clip does)."""
        if self.logit_scale is not None:
            with torch.no_grad():
                self.logit_scale.clamp_(0.0, math.log(self.max_logit_scale))

    # ------------------------------------------------------------------ encode
    def _encoder_mask(self, attention_mask: torch.Tensor) -> torch.Tensor:
        """The padding mask as the 4D (B, 1, 1, L) mask transformers passes through as is.

        Given the 2D mask, transformers asks ``mask.all()`` on the host to decide whether
        SDPA may skip it: a GPU synchronisation in every step. SDPA takes a boolean mask
        (True = attend); eager attention an additive one."""
        mask = attention_mask[:, None, None, :].bool()
        assert self.text_encoder is not None
        if getattr(self.text_encoder.config, "_attn_implementation", "sdpa") == "sdpa":
            return mask
        low = torch.finfo(torch.float32).min
        return torch.zeros(mask.shape, device=mask.device).masked_fill_(~mask, low)

    def encode_text(self, input_ids: torch.Tensor, attention_mask: torch.Tensor):
        assert self.text_encoder is not None
        mask = self._encoder_mask(attention_mask)
        with torch.no_grad() if self.text_frozen else contextlib.nullcontext():
            tokens = self.text_encoder(input_ids=input_ids, attention_mask=mask)
        tokens = tokens.last_hidden_state
        if self.pooling == "cls":
            pooled = tokens[:, 0]
        else:
            m = attention_mask.unsqueeze(-1).to(tokens.dtype)
            pooled = (tokens * m).sum(1) / m.sum(1).clamp_min(1.0)
        return tokens, pooled

    def encode_image(self, pixel_values: torch.Tensor):
        assert self.image_encoder is not None
        if self.image_frozen:
            with torch.no_grad():
                return image_tokens_and_pooled(self.image_encoder, pixel_values)
        return image_tokens_and_pooled(self.image_encoder, pixel_values)

    def encode(self, batch: dict[str, torch.Tensor]) -> Encoded:
        """Run the encoders once; cached image features in the batch skip the image encoder."""
        enc = Encoded()
        if self.fusion.uses_text:
            enc.text_mask = batch["attention_mask"]
            enc.text_tokens, enc.text_pooled = self.encode_text(
                batch["input_ids"], batch["attention_mask"]
            )
        if self.fusion.uses_image:
            if "image_pooled" in batch:
                enc.image_pooled = batch["image_pooled"]
                enc.image_tokens = batch.get("image_tokens")
                if self.fusion.needs_image_tokens and enc.image_tokens is None:
                    raise ValueError("attention fusion needs image tokens; cache them too")
            else:
                enc.image_tokens, enc.image_pooled = self.encode_image(batch["pixel_values"])
        return enc

    # ------------------------------------------------------------------ fuse / heads
    def fuse(
        self,
        enc: Encoded,
        text_idx: torch.Tensor | None = None,
        image_idx: torch.Tensor | None = None,
    ) -> torch.Tensor:
        """Fused vectors for pairs (text ``text_idx[k]``, image ``image_idx[k]``) of a batch."""
        return self.fusion(
            _take(enc.text_tokens, text_idx),
            _take(enc.text_mask, text_idx),
            _take(enc.text_pooled, text_idx),
            _take(enc.image_tokens, image_idx),
            _take(enc.image_pooled, image_idx),
        )

    def forward(self, batch: dict[str, torch.Tensor]) -> ModelOutput:
        enc = self.encode(batch)
        fused = self.fuse(enc)
        return ModelOutput(logits=self.classifier(fused), fused=fused, encoded=enc)

    def itc_embeddings(self, enc: Encoded) -> tuple[torch.Tensor, torch.Tensor]:
        """L2-normalised ITC projections of the pooled text and image encodings."""
        if self.text_proj is None or self.image_proj is None:
            raise RuntimeError("ITC projections are off (aux.itc_weight=0)")
        assert enc.text_pooled is not None and enc.image_pooled is not None
        t = F.normalize(self.text_proj(enc.text_pooled), dim=-1)
        i = F.normalize(self.image_proj(enc.image_pooled.to(t.dtype)), dim=-1)
        return t, i

    def encoder_parameters(self) -> list[nn.Parameter]:
        mods = [m for m in (self.text_encoder, self.image_encoder) if m is not None]
        return [p for m in mods for p in m.parameters() if p.requires_grad]

    def head_parameters(self) -> list[nn.Parameter]:
        enc = {id(p) for p in self.encoder_parameters()}
        mods = [m for m in (self.text_encoder, self.image_encoder) if m is not None]
        frozen = {id(p) for m in mods for p in m.parameters()}
        return [p for p in self.parameters() if p.requires_grad and id(p) not in enc | frozen]


def build_model(
    cfg: Config, num_classes: int
) -> tuple[MultimodalClassifier, TextEncoder | None, ImageEncoder | None]:
    """Load the encoders the configured fusion needs and assemble the classifier."""
    fusion = cfg.model.fusion
    text = load_text_encoder(cfg.model.text) if fusion != "image" else None
    image = load_image_encoder(cfg.model.image) if fusion != "text" else None
    model = MultimodalClassifier(cfg, num_classes, text, image)
    return model, text, image
