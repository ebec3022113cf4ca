"""LXMERT (Tan & Bansal 2019): two single-modality streams, then cross-modality layers.

``transformers.LxmertModel`` provides the weights and the layers; this module runs them in
two parts so that ITM negatives re-run only what depends on the pairing:

* :meth:`LxmertFamily.encode` (once per step): the word embeddings and the language-only
  layers (``encoder.layer``, the ``l_layers``) on the text; the visual feature encoder
  (``encoder.visn_fc``: region features + boxes) and the relationship layers
  (``encoder.r_layers``) on the image regions.
* :meth:`LxmertFamily.fuse` (per pairing): the cross-modality layers (``encoder.x_layers``)
  on (text ``text_idx[k]``, image ``image_idx[k]``), LXMERT's pooler on the language CLS,
  then the paper's classifier path ``Linear + ReLU + dropout`` (the shared class head is
  the final ``Linear``).

Regions. The authors fed 36 Faster R-CNN regions with their boxes; here the regions are the
cells of the timm image encoder's grid (CNN feature-map cells in raster order, or ViT
patches), each with its normalised box ``(x1, y1, x2, y2)`` in [0, 1], so no object
detector is needed. A ViT's prefix tokens (CLS, registers) are kept as regions, with the
whole-image box ``(0, 0, 1, 1)``: they summarise the image, like a box around it. The grid
side is inferred from the region count (a Python int of the shape, never a tensor read),
and the boxes of a shape are built once on the device and cached.

Costs. ITM: a re-paired pair re-runs only the cross-modality layers and the pooler over its
``L + N`` states; the embeddings, ``l_layers``, ``visn_fc`` and ``r_layers`` run once per
step (the image encoder too, or never with cached frozen features). ITC costs nothing
extra: its unimodal vectors (mean of the language states after the ``l_layers``, mean of
the vision states after the ``r_layers``) are already computed, and both sides keep their
gradients (the authors' code detached the text side). SimCSE's second view re-runs the
embeddings and ``l_layers`` on the same ids under fresh dropout.

The last cross-modality layer only needs its language half: the pooled output reads the
language CLS, so the vision self-attention and FFN of that layer (and its vision-to-language
cross-attention) would feed nothing. They are skipped, and their parameters frozen (a
trainable parameter without a gradient breaks DDP).
"""

from __future__ import annotations

import logging
import math
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import torch
from torch import nn

from mmaux.config import EMBEDDED_TEXT, Config
from mmaux.models.base import MultimodalModel, pool_tokens, take
from mmaux.models.encoders import (
    EncoderLoadError,
    ImageEncoder,
    TextEncoder,
    _first_line,
    check_transformer_limits,
    load_image_encoder,
    resolve_text_source,
    transformer_load_message,
    transformer_source,
)
from mmaux.models.late import run_image_encoder

log = logging.getLogger(__name__)

# A small random LXMERT that trains on a CPU (LXMERT-base is 768 wide, 9/5/5 layers).
RANDOM_DEFAULTS: dict[str, Any] = {
    "hidden_size": 256,
    "num_attention_heads": 4,
    "intermediate_size": 1024,
    "l_layers": 2,
    "r_layers": 1,
    "x_layers": 2,
    "max_position_embeddings": 512,
    "hidden_dropout_prob": 0.1,  # BERT's and the original LXMERT's rates
    "attention_probs_dropout_prob": 0.1,
}
# Set from the image encoder: its width, and boxes (x1, y1, x2, y2).
DERIVED = ("visual_feat_dim", "visual_pos_dim")
BOX_DIM = 4


def additive_mask(mask: torch.Tensor) -> torch.Tensor:
    """A (B, L) padding mask as the (B, 1, 1, L) additive mask LXMERT's attention adds to its
    scores (0 = attend, float32 min = masked), as ``LxmertModel.forward`` builds it; made on
    the device, never read on the host (no ``mask.all()``)."""
    m = mask[:, None, None, :].to(torch.float32)
    return (1.0 - m) * torch.finfo(torch.float32).min


def grid_boxes(h: int, w: int, device: torch.device | str = "cpu") -> torch.Tensor:
    """Normalised boxes (h*w, 4) ``(x1, y1, x2, y2)`` of the cells of an h x w grid, in
    raster order (row by row, as a flattened (C, H, W) feature map)."""
    ys = torch.arange(h + 1, device=device, dtype=torch.float32) / h
    xs = torch.arange(w + 1, device=device, dtype=torch.float32) / w
    y1, y2 = ys[:-1].repeat_interleave(w), ys[1:].repeat_interleave(w)
    x1, x2 = xs[:-1].repeat(h), xs[1:].repeat(h)
    return torch.stack([x1, y1, x2, y2], dim=1)


def region_grid(n: int, prefix: int = 0, hint: tuple[int, int] | None = None) -> tuple[int, int]:
    """The (h, w) grid of ``n - prefix`` regions: ``hint`` (a ViT's patch grid) when it
    fits, else a square; anything else is an error (mmaux images are square)."""
    m = n - prefix
    if m < 1:
        raise ValueError(f"{n} image tokens with {prefix} prefix tokens: no grid cells")
    if hint is not None and hint[0] * hint[1] == m:
        return int(hint[0]), int(hint[1])
    side = math.isqrt(m)
    if side * side != m:
        raise ValueError(
            f"cannot lay {m} image regions on a grid (not a square): LXMERT needs the image "
            "encoder's grid of a square image"
        )
    return side, side


def region_boxes(
    n: int, prefix: int = 0, hint: tuple[int, int] | None = None, device: Any = "cpu"
) -> torch.Tensor:
    """Boxes (n, 4) of ``n`` image tokens: the whole image for the ``prefix`` tokens (a
    ViT's CLS / registers, first in timm's order), then the grid cells."""
    h, w = region_grid(n, prefix, hint)
    cells = grid_boxes(h, w, device)
    if not prefix:
        return cells
    whole = torch.cat([cells.new_zeros(prefix, 2), cells.new_ones(prefix, 2)], dim=1)
    return torch.cat([whole, cells])


@dataclass
class LxmertEncoded:
    """What a step computes once: both single-modality streams."""

    lang: torch.Tensor  # (B, L, H) language states after the l_layers
    text_mask: torch.Tensor  # (B, L) padding mask
    lang_mask: torch.Tensor  # (B, 1, 1, L) additive mask
    vision: torch.Tensor  # (B, N, H) vision states after visn_fc and the r_layers
    input_ids: torch.Tensor  # (B, L), for SimCSE's second view

    def __len__(self) -> int:
        return self.lang.shape[0]


class LxmertFamily(MultimodalModel):
    """``transformers.LxmertModel`` over the timm encoder's grid + the shared heads on the
    cross-modal CLS (pooler, then ``Linear + ReLU + dropout``)."""

    family = "lxmert"
    needs_image_tokens = True

    def __init__(self, cfg: Config, num_classes: int, lxmert: nn.Module, image: ImageEncoder):
        hidden = int(lxmert.config.hidden_size)
        super().__init__(cfg, num_classes, hidden, hidden, hidden, None, image.model)
        self.lxmert = lxmert
        self.pooling = cfg.model.text.pooling
        self.image_frozen = cfg.model.image.freeze
        self.head = nn.Sequential(
            nn.Linear(hidden, hidden), nn.ReLU(), nn.Dropout(cfg.model.dropout)
        )
        enc = image.model
        self.prefix_tokens = int(getattr(enc, "num_prefix_tokens", 0) or 0)
        grid = getattr(getattr(enc, "patch_embed", None), "grid_size", None)
        self.grid_hint = (int(grid[0]), int(grid[1])) if grid is not None else None
        self._boxes: dict[tuple[int, str], torch.Tensor] = {}
        if len(lxmert.encoder.x_layers) < 1:
            raise EncoderLoadError("LXMERT needs at least one cross-modality layer (x_layers)")
        last = lxmert.encoder.x_layers[-1]
        for dead in (last.visn_self_att, last.visn_inter, last.visn_output):
            dead.requires_grad_(False)  # the pooled output never reads them (skipped)

    def pretrained_modules(self) -> list[nn.Module]:
        mods: list[nn.Module] = [self.lxmert]
        if not self.image_frozen and self.image_encoder is not None:
            mods.append(self.image_encoder)
        return mods

    def frozen_modules(self) -> list[nn.Module]:
        return [self.image_encoder] if self.image_frozen and self.image_encoder is not None else []

    # ------------------------------------------------------------------ single streams
    def boxes(self, n: int, device: torch.device) -> torch.Tensor:
        """Boxes (n, 4) of ``n`` regions, built once per (n, device) and cached."""
        key = (n, str(device))
        out = self._boxes.get(key)
        if out is None:
            out = region_boxes(n, self.prefix_tokens, self.grid_hint, device)
            self._boxes[key] = out
        return out

    def encode_text(self, input_ids: torch.Tensor, lang_mask: torch.Tensor) -> torch.Tensor:
        """Embeddings and the language-only layers: (B, L, H)."""
        lang = self.lxmert.embeddings(input_ids, torch.zeros_like(input_ids))
        for layer in self.lxmert.encoder.layer:
            lang = layer(lang, lang_mask)[0]
        return lang

    def encode_image(self, tokens: torch.Tensor) -> torch.Tensor:
        """The visual feature encoder (features + boxes) and the relationship layers."""
        enc = self.lxmert.encoder
        b, n, _ = tokens.shape
        weight = enc.visn_fc.visn_fc.weight
        boxes = self.boxes(n, tokens.device).to(weight.dtype).expand(b, n, BOX_DIM)
        vision = enc.visn_fc(tokens.to(weight.dtype), boxes)
        for layer in enc.r_layers:  # every region is real: no visual mask
            vision = layer(vision, None)[0]
        return vision

    def encode(self, batch: dict[str, torch.Tensor]) -> LxmertEncoded:
        """Both single-modality streams, once per step; cached image features in the batch
        skip the image encoder."""
        ids, mask = batch["input_ids"], batch["attention_mask"]
        lang_mask = additive_mask(mask)
        tokens, _ = run_image_encoder(self.image_encoder, self.image_frozen, batch, True)
        assert tokens is not None
        return LxmertEncoded(
            lang=self.encode_text(ids, lang_mask),
            text_mask=mask,
            lang_mask=lang_mask,
            vision=self.encode_image(tokens),
            input_ids=ids,
        )

    # ------------------------------------------------------------------ cross-modality
    def cross(self, lang: torch.Tensor, lang_mask: torch.Tensor, vision: torch.Tensor):
        """The cross-modality layers; the last runs its language half only (cross-attention
        to the vision states, language self-attention, language FFN)."""
        layers = self.lxmert.encoder.x_layers
        for layer in layers[:-1]:
            lang, vision = layer(lang, lang_mask, vision, None)[:2]
        last = layers[-1]
        lang = last.visual_attention(lang, vision, ctx_att_mask=None)[0]
        lang = last.lang_self_att(lang, lang_mask)[0]
        return last.lang_output(last.lang_inter(lang), lang)

    def fuse(
        self,
        enc: LxmertEncoded,
        text_idx: torch.Tensor | None = None,
        image_idx: torch.Tensor | None = None,
    ) -> torch.Tensor:
        """Cross-modality layers on (text ``text_idx[k]``, image ``image_idx[k]``), LXMERT's
        pooler on the language CLS, then ``Linear + ReLU + dropout``: (P, hidden)."""
        lang, lang_mask = take(enc.lang, text_idx), take(enc.lang_mask, text_idx)
        vision = take(enc.vision, image_idx)
        assert lang is not None and lang_mask is not None and vision is not None
        lang = self.cross(lang, lang_mask, vision.to(lang.dtype))
        return self.head(self.lxmert.pooler(lang))

    def unimodal(self, enc: LxmertEncoded) -> tuple[torch.Tensor, torch.Tensor]:
        """Language states after the l_layers (pooled by ``model.text.pooling``) and the
        mean of the vision states after the r_layers: each saw only its own modality."""
        return pool_tokens(enc.lang, enc.text_mask, self.pooling), enc.vision.mean(1)

    def text_view(self, enc: LxmertEncoded) -> torch.Tensor:
        """Embeddings and l_layers once more on the same ids (fresh dropout), pooled."""
        lang = self.encode_text(enc.input_ids, enc.lang_mask)
        return pool_tokens(lang, enc.text_mask, self.pooling)


# ---------------------------------------------------------------------- building


def _lxmert_source(name: str) -> str:
    return transformer_source(name, "LXMERT", "model.lxmert", "LxmertModel")


def _lxmert_load_message(name: str, source: str, local_only: bool, err: BaseException) -> str:
    return transformer_load_message(
        "LXMERT", "model.lxmert", "LxmertModel", name, source, local_only, err
    )


def _user_overrides(cfg: Config) -> dict[str, Any]:
    overrides = dict(cfg.model.lxmert.config)
    bad = [k for k in DERIVED if k in overrides]
    if bad:
        raise EncoderLoadError(
            f"model.lxmert.config.{bad[0]} is set from the image encoder (its width; boxes "
            "x1, y1, x2, y2): remove it"
        )
    return overrides


def _random_lxmert(cfg: Config, feature_dim: int) -> tuple[nn.Module, Any]:
    """A randomly initialised LXMERT with the tokenizer of ``model.text`` (only the
    tokenizer is loaded: the embedded MiniLM's is bert-base-uncased's vocabulary, as
    LXMERT's)."""
    from transformers import AutoTokenizer, LxmertConfig, LxmertModel

    text = cfg.model.text
    source = resolve_text_source(text.name)
    try:
        tokenizer = AutoTokenizer.from_pretrained(
            source, local_files_only=text.local_files_only or Path(source).is_dir()
        )
    except (OSError, ValueError) as err:
        raise EncoderLoadError(
            f"cannot load the tokenizer of model.text.name={text.name!r} for a random LXMERT: "
            f"{_first_line(err)}; use {EMBEDDED_TEXT} or a local directory"
        ) from None
    values = {
        **RANDOM_DEFAULTS,
        "vocab_size": len(tokenizer),
        "pad_token_id": tokenizer.pad_token_id,
        **_user_overrides(cfg),
        "visual_feat_dim": feature_dim,
        "visual_pos_dim": BOX_DIM,
    }
    try:
        lxmert = LxmertModel(LxmertConfig(**values))
    except (TypeError, ValueError) as err:
        raise EncoderLoadError(
            f"bad model.lxmert.config for a random LXMERT: {_first_line(err)}"
        ) from None
    return lxmert, tokenizer


def _pretrained_lxmert(cfg: Config, feature_dim: int) -> tuple[nn.Module, Any]:
    """``LxmertModel.from_pretrained`` (never remote code) and its tokenizer; a visual
    feature width other than the image encoder's gets a new, randomly initialised
    ``visn_fc`` projection (logged as a warning)."""
    from transformers import AutoTokenizer, LxmertModel
    from transformers.utils import logging as hf_logging

    hf_logging.disable_progress_bar()
    lc = cfg.model.lxmert
    source = _lxmert_source(lc.name)
    local_only = lc.local_files_only or Path(source).is_dir()
    overrides = _user_overrides(cfg)
    try:
        lxmert = LxmertModel.from_pretrained(
            source, local_files_only=local_only, trust_remote_code=False, **overrides
        )
        tokenizer = AutoTokenizer.from_pretrained(source, local_files_only=local_only)
    except (OSError, ValueError, TypeError) as err:  # missing files, bad config / overrides
        raise EncoderLoadError(_lxmert_load_message(lc.name, source, local_only, err)) from None
    conf = lxmert.config
    if int(conf.visual_pos_dim) != BOX_DIM:
        raise EncoderLoadError(
            f"LXMERT model {lc.name!r} expects {conf.visual_pos_dim}-d region positions; "
            f"mmaux gives boxes (x1, y1, x2, y2): {BOX_DIM}"
        )
    if int(conf.visual_feat_dim) != feature_dim:
        log.warning(
            "LXMERT %r was trained on %d-d region features; the image encoder %r gives %d: "
            "its visual projection (encoder.visn_fc.visn_fc) is new and randomly initialised",
            lc.name,
            conf.visual_feat_dim,
            cfg.model.image.name,
            feature_dim,
        )
        fc = nn.Linear(feature_dim, int(conf.hidden_size))
        nn.init.normal_(fc.weight, std=float(conf.initializer_range))
        nn.init.zeros_(fc.bias)
        lxmert.encoder.visn_fc.visn_fc = fc.to(lxmert.encoder.visn_fc.box_fc.weight.device)
        conf.visual_feat_dim = feature_dim
    return lxmert, tokenizer


def build_lxmert(cfg: Config, num_classes: int) -> tuple[LxmertFamily, TextEncoder, ImageEncoder]:
    """The LXMERT family from ``model.lxmert`` ('random', a hub name or a local directory),
    its tokenizer (as a :class:`TextEncoder` around the LxmertModel) and the timm image
    encoder of ``model.image`` (its grid = the regions; cached when frozen)."""
    image = load_image_encoder(cfg.model.image)
    random = cfg.model.lxmert.name == "random"
    build = _random_lxmert if random else _pretrained_lxmert
    lxmert, tokenizer = build(cfg, image.feature_dim)
    conf = lxmert.config
    check_transformer_limits(
        conf, cfg.data.max_text_length, cfg.aux.simcse_weight, "LXMERT", "model.lxmert", random
    )
    text = TextEncoder(model=lxmert, tokenizer=tokenizer, hidden_size=int(conf.hidden_size))
    return LxmertFamily(cfg, num_classes, lxmert, image), text, image
