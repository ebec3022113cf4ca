"""Late fusion (Ber-ViT-Att / Concat / GMU): two encoders, then a cheap fusion head.

:meth:`LateFusionModel.encode` runs the unimodal encoders once; :meth:`LateFusionModel.fuse`
maps any re-pairing of those encodings to fused vectors, so ITM negatives re-run only the
fusion head, never the encoders.
"""

from __future__ import annotations

import contextlib
from dataclasses import dataclass

import torch
from torch import nn

from mmaux.config import Config
from mmaux.models.base import MultimodalModel, encoder_mask, pool_tokens, take
from mmaux.models.encoders import ImageEncoder, TextEncoder, image_tokens_and_pooled
from mmaux.models.fusion import build_fusion


@dataclass
class Encoded:
    """Unimodal encodings of a batch (fields are ``None`` for an unused modality)."""

    text_tokens: torch.Tensor | None = None  # (B, L, Dt)
    text_mask: torch.Tensor | None = None  # (B, L)
    text_pooled: torch.Tensor | None = None  # (B, Dt)
    image_tokens: torch.Tensor | None = None  # (B, N, Di)
    image_pooled: torch.Tensor | None = None  # (B, Di)
    input_ids: torch.Tensor | None = None  # (B, L), for SimCSE's second view

    def __len__(self) -> int:
        ref = self.text_pooled if self.text_pooled is not None else self.image_pooled
        assert ref is not None
        return ref.shape[0]


def run_image_encoder(
    encoder: nn.Module, frozen: bool, batch: dict[str, torch.Tensor], needs_tokens: bool
) -> tuple[torch.Tensor | None, torch.Tensor]:
    """(tokens, pooled) of a timm backbone, or the cached frozen features in the batch."""
    if "image_pooled" in batch:
        tokens = batch.get("image_tokens")
        if needs_tokens and tokens is None:
            raise ValueError("this model needs image tokens; cache them too")
        return tokens, batch["image_pooled"]
    with torch.no_grad() if frozen else contextlib.nullcontext():
        return image_tokens_and_pooled(encoder, batch["pixel_values"])


class LateFusionModel(MultimodalModel):
    """Text encoder + image encoder + fusion head (``model.fusion``) + heads."""

    family = "late"

    def __init__(
        self,
        cfg: Config,
        num_classes: int,
        text: TextEncoder | None,
        image: ImageEncoder | None,
    ):
        mc = cfg.model
        text_dim = text.hidden_size if text is not None else 0
        image_dim = image.feature_dim if image is not None else 0
        super().__init__(
            cfg,
            num_classes,
            mc.hidden_dim,
            text_dim,
            image_dim,
            text.model if text is not None else None,
            image.model if image is not None else None,
        )
        self.pooling = mc.text.pooling
        self.text_frozen = mc.text.trainable_layers == 0
        self.image_frozen = mc.image.freeze
        self.fusion = build_fusion(
            mc.fusion, text_dim, image_dim, mc.hidden_dim, mc.dropout, mc.attention_heads
        )
        self.uses_text = self.fusion.uses_text
        self.uses_image = self.fusion.uses_image
        self.needs_image_tokens = self.fusion.needs_image_tokens

    def frozen_modules(self) -> list[nn.Module]:
        mods = [self.image_encoder] if self.image_frozen else []
        mods += [self.text_encoder] if self.text_frozen else []
        return [m for m in mods if m is not None]

    def encode_text(self, input_ids: torch.Tensor, attention_mask: torch.Tensor):
        assert self.text_encoder is not None
        mask = encoder_mask(self.text_encoder, attention_mask)
        with torch.no_grad() if self.text_frozen else contextlib.nullcontext():
            tokens = self.text_encoder(input_ids=input_ids, attention_mask=mask)
        tokens = tokens.last_hidden_state
        return tokens, pool_tokens(tokens, attention_mask, self.pooling)

    def encode(self, batch: dict[str, torch.Tensor]) -> Encoded:
        """Run the encoders once; cached image features in the batch skip the image encoder."""
        enc = Encoded()
        if self.uses_text:
            enc.input_ids, enc.text_mask = batch["input_ids"], batch["attention_mask"]
            enc.text_tokens, enc.text_pooled = self.encode_text(enc.input_ids, enc.text_mask)
        if self.uses_image:
            assert self.image_encoder is not None or "image_pooled" in batch
            enc.image_tokens, enc.image_pooled = run_image_encoder(
                self.image_encoder, self.image_frozen, batch, self.needs_image_tokens
            )
        return enc

    def fuse(
        self,
        enc: Encoded,
        text_idx: torch.Tensor | None = None,
        image_idx: torch.Tensor | None = None,
    ) -> torch.Tensor:
        """Fused vectors for pairs (text ``text_idx[k]``, image ``image_idx[k]``) of a batch."""
        return self.fusion(
            take(enc.text_tokens, text_idx),
            take(enc.text_mask, text_idx),
            take(enc.text_pooled, text_idx),
            take(enc.image_tokens, image_idx),
            take(enc.image_pooled, image_idx),
        )

    def unimodal(self, enc: Encoded) -> tuple[torch.Tensor, torch.Tensor]:
        assert enc.text_pooled is not None and enc.image_pooled is not None
        return enc.text_pooled, enc.image_pooled

    def text_view(self, enc: Encoded) -> torch.Tensor:
        assert enc.input_ids is not None and enc.text_mask is not None
        return self.encode_text(enc.input_ids, enc.text_mask)[1]
