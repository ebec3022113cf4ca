"""Fusion heads: map unimodal encodings to one fused vector per (text, image) pair.

Every head has the same signature so ITM negatives can re-run only the fusion step on
re-paired encodings. ``text`` and ``image`` are the unimodal baselines.
"""

from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import nn


class Fusion(nn.Module):
    """Base class: ``forward(text_tokens, text_mask, text_pooled, image_tokens, image_pooled)``."""

    needs_image_tokens = False
    uses_text = True
    uses_image = True


def _mlp(in_dim: int, hidden: int, dropout: float) -> nn.Sequential:
    return nn.Sequential(nn.Linear(in_dim, hidden), nn.ReLU(), nn.Dropout(dropout))


class ConcatFusion(Fusion):
    """concat(text pooled, image pooled) -> Linear + ReLU -> dropout."""

    def __init__(self, text_dim: int, image_dim: int, hidden: int, dropout: float):
        super().__init__()
        self.mlp = _mlp(text_dim + image_dim, hidden, dropout)

    def forward(self, text_tokens, text_mask, text_pooled, image_tokens, image_pooled):
        return self.mlp(torch.cat([text_pooled, image_pooled], dim=-1))


class AttentionFusion(Fusion):
    """Ber-ViT-Att: text attends over image tokens (Q = text, K/V = image patches/cells).

    The paper keeps position 0 of the attended sequence and concatenates it with the text
    CLS; only that query row is computed (the other rows are discarded anyway).
    """

    needs_image_tokens = True

    def __init__(self, text_dim: int, image_dim: int, hidden: int, dropout: float, heads: int = 1):
        super().__init__()
        if text_dim % heads:
            raise ValueError(f"attention_heads={heads} must divide the text width {text_dim}")
        self.heads = heads
        self.q = nn.Linear(text_dim, text_dim)
        self.k = nn.Linear(image_dim, text_dim)
        self.v = nn.Linear(image_dim, text_dim)
        self.mlp = _mlp(2 * text_dim, hidden, dropout)

    def forward(self, text_tokens, text_mask, text_pooled, image_tokens, image_pooled):
        b, n, _ = image_tokens.shape
        d = self.q.out_features
        h = self.heads
        q = self.q(text_tokens[:, :1]).view(b, 1, h, d // h).transpose(1, 2)
        k = self.k(image_tokens).view(b, n, h, d // h).transpose(1, 2)
        v = self.v(image_tokens).view(b, n, h, d // h).transpose(1, 2)
        attended = F.scaled_dot_product_attention(q, k, v).transpose(1, 2).reshape(b, d)
        return self.mlp(torch.cat([attended, text_tokens[:, 0]], dim=-1))


class GMUFusion(Fusion):
    """Gated multimodal unit (Arevalo et al. 2017): z*tanh(Wt t) + (1-z)*tanh(Wv v)."""

    def __init__(self, text_dim: int, image_dim: int, hidden: int, dropout: float):
        super().__init__()
        self.text = nn.Linear(text_dim, hidden)
        self.image = nn.Linear(image_dim, hidden)
        self.gate = nn.Linear(text_dim + image_dim, hidden)
        self.dropout = nn.Dropout(dropout)

    def forward(self, text_tokens, text_mask, text_pooled, image_tokens, image_pooled):
        z = torch.sigmoid(self.gate(torch.cat([text_pooled, image_pooled], dim=-1)))
        fused = z * torch.tanh(self.text(text_pooled)) + (1 - z) * torch.tanh(
            self.image(image_pooled)
        )
        return self.dropout(fused)


class Unimodal(Fusion):
    """Unimodal baseline: pooled text (or image) -> Linear + ReLU -> dropout."""

    def __init__(self, modality: str, text_dim: int, image_dim: int, hidden: int, dropout: float):
        super().__init__()
        self.uses_text = modality == "text"
        self.uses_image = modality == "image"
        self.mlp = _mlp(text_dim if self.uses_text else image_dim, hidden, dropout)

    def forward(self, text_tokens, text_mask, text_pooled, image_tokens, image_pooled):
        return self.mlp(text_pooled if self.uses_text else image_pooled)


def build_fusion(
    kind: str, text_dim: int, image_dim: int, hidden: int, dropout: float, heads: int = 1
) -> Fusion:
    if kind == "attention":
        return AttentionFusion(text_dim, image_dim, hidden, dropout, heads)
    if kind in ("text", "image"):
        return Unimodal(kind, text_dim, image_dim, hidden, dropout)
    classes = {"concat": ConcatFusion, "gmu": GMUFusion}
    if kind not in classes:
        raise ValueError(f"unknown fusion {kind!r}; expected attention, concat, gmu, text, image")
    return classes[kind](text_dim, image_dim, hidden, dropout)
