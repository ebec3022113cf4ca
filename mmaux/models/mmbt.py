"""MMBT (Kiela et al. 2019): image features as extra tokens of the text transformer.

The image encoder's grid (feature-map cells or ViT patches; or its pooled vector as one
token) is projected into the text model's embedding space, given its own position and
segment embeddings, and placed after the text's first token: ``[CLS] img_1..img_N
text[1:]``. The text model (any BERT-like encoder: it is fed ``inputs_embeds``) then *is*
the fusion: its pooled output, after dropout, goes to the class and ITM heads.

Costs: the image encoder runs once per step (or never, with cached frozen features); an
ITM negative re-runs the whole transformer over its own ``L + N`` tokens (the matched
pair's output never reaches the head for a broken pair). ITC and SimCSE contrast a
text-only pass of the same transformer (the text must not have seen the image) with the
image encoder's pooled vector: one extra text-only pass for ITC, one more for SimCSE.
"""

from __future__ import annotations

import math
from dataclasses import dataclass

import torch
import torch.nn.functional as F
from torch import nn

from mmaux.config import Config
from mmaux.models.base import MultimodalModel, encoder_mask, pool_tokens, take
from mmaux.models.encoders import ImageEncoder, TextEncoder
from mmaux.models.late import run_image_encoder


@dataclass
class MMBTEncoded:
    """What a step computes once: word embeddings, image tokens, pooled image vector."""

    words: torch.Tensor  # (B, L, D) word embeddings of the text
    text_mask: torch.Tensor  # (B, L)
    image: torch.Tensor  # (B, N, D) projected image tokens (own position + segment)
    image_pooled: torch.Tensor  # (B, Di) the image encoder's pooled vector (ITC)
    text_only: torch.Tensor | None = None  # (B, D) pooled text-only pass, once computed

    def __len__(self) -> int:
        return self.words.shape[0]


def limit_tokens(tokens: torch.Tensor, most: int) -> torch.Tensor:
    """Average-pool (B, N, C) tokens down to at most ``most``: a square grid in 2D (to a
    k x k grid, k = floor(sqrt(most))), any other sequence in 1D."""
    b, n, c = tokens.shape
    if n <= most:
        return tokens
    side, k = math.isqrt(n), math.isqrt(most)
    if side * side == n and k >= 1:
        grid = tokens.transpose(1, 2).reshape(b, c, side, side)
        return F.adaptive_avg_pool2d(grid, k).flatten(2).transpose(1, 2)
    return F.adaptive_avg_pool1d(tokens.transpose(1, 2), most).transpose(1, 2)


class MMBTModel(MultimodalModel):
    """Text transformer over ``[CLS] image tokens text``; heads on its pooled output."""

    family = "mmbt"

    def __init__(self, cfg: Config, num_classes: int, text: TextEncoder, image: ImageEncoder):
        hidden = text.hidden_size
        super().__init__(
            cfg, num_classes, hidden, hidden, image.feature_dim, text.model, image.model
        )
        mc = cfg.model
        self.pooling = mc.text.pooling
        self.grid = mc.mmbt.image_tokens == "grid"
        self.needs_image_tokens = self.grid
        self.max_tokens = mc.mmbt.max_image_tokens if self.grid else 1
        self.text_frozen = mc.text.trainable_layers == 0
        self.image_frozen = mc.image.freeze
        self.image_in = nn.Linear(image.feature_dim, hidden)
        self.image_pos = nn.Parameter(torch.zeros(self.max_tokens, hidden))
        self.image_segment = nn.Parameter(torch.zeros(hidden))
        nn.init.normal_(self.image_pos, std=0.02)
        nn.init.normal_(self.image_segment, std=0.02)
        # BERT-like models with two token types mark the image tokens as segment 1 too.
        self.image_type = 1 if getattr(text.model.config, "type_vocab_size", 1) >= 2 else 0
        self.dropout = nn.Dropout(mc.dropout)

    def frozen_modules(self) -> list[nn.Module]:
        mods = [self.image_encoder] if self.image_frozen else []
        mods += [self.text_encoder] if self.text_frozen else []
        return [m for m in mods if m is not None]

    # ------------------------------------------------------------------ encode
    def encode(self, batch: dict[str, torch.Tensor]) -> MMBTEncoded:
        assert self.text_encoder is not None
        words = self.text_encoder.get_input_embeddings()(batch["input_ids"])
        tokens, pooled = run_image_encoder(
            self.image_encoder, self.image_frozen, batch, self.needs_image_tokens
        )
        if self.grid:
            assert tokens is not None
            tokens = limit_tokens(tokens, self.max_tokens)
        else:
            tokens = pooled.unsqueeze(1)
        n = tokens.shape[1]
        image = self.image_in(tokens.to(self.image_in.weight.dtype))
        image = image + self.image_pos[:n] + self.image_segment
        return MMBTEncoded(words, batch["attention_mask"], image, pooled)

    def _transformer(
        self, embeds: torch.Tensor, mask: torch.Tensor, types: torch.Tensor
    ) -> torch.Tensor:
        assert self.text_encoder is not None
        out = self.text_encoder(
            inputs_embeds=embeds,
            attention_mask=encoder_mask(self.text_encoder, mask),
            token_type_ids=types,
        ).last_hidden_state
        return pool_tokens(out, mask, self.pooling)

    # ------------------------------------------------------------------ fuse / unimodal
    def fuse(
        self,
        enc: MMBTEncoded,
        text_idx: torch.Tensor | None = None,
        image_idx: torch.Tensor | None = None,
    ) -> torch.Tensor:
        words, mask = take(enc.words, text_idx), take(enc.text_mask, text_idx)
        image = take(enc.image, image_idx)
        assert words is not None and mask is not None and image is not None
        image = image.to(words.dtype)
        p, n = words.shape[0], image.shape[1]
        embeds = torch.cat([words[:, :1], image, words[:, 1:]], dim=1)
        ones = mask.new_ones(p, n)
        full_mask = torch.cat([mask[:, :1], ones, mask[:, 1:]], dim=1)
        types = torch.zeros_like(full_mask, dtype=torch.long)
        types[:, 1 : 1 + n] = self.image_type
        return self.dropout(self._transformer(embeds, full_mask, types))

    def _text_pass(self, enc: MMBTEncoded) -> torch.Tensor:
        types = torch.zeros_like(enc.text_mask, dtype=torch.long)
        return self._transformer(enc.words, enc.text_mask, types)

    def unimodal(self, enc: MMBTEncoded) -> tuple[torch.Tensor, torch.Tensor]:
        if enc.text_only is None:
            enc.text_only = self._text_pass(enc)
        return enc.text_only, enc.image_pooled

    def text_view(self, enc: MMBTEncoded) -> torch.Tensor:
        return self._text_pass(enc)
