"""ViLT (Kim et al. 2021): one transformer over word embeddings and linear image patches.

:meth:`ViltFamily.encode` embeds the text (word + position + token type, ViLT's LayerNorm
and dropout, plus the text modality embedding) and the image (the patch projection conv,
interpolated position embeddings, the image CLS token, the image modality embedding) once
per step; :meth:`ViltFamily.fuse` runs the transformer layers over ``[text; image]`` of
any re-pairing, then the final LayerNorm, ViLT's pooler (CLS) and dropout.

Costs: every ITM pair the losses re-fuse (all B random pairs; the 2B hard negatives, whose
B real pairs reuse the classification pass) re-runs the whole joint transformer over its
``L + 1 + N`` tokens (``N = (S/patch)²``); the patch embedding is reused, never re-run.
ITC contrasts a text-only and an image-only pass of the same layers (each vector saw only
its own modality), computed once per step and shared with SimCSE's first view; SimCSE's
second view is one more text-only pass under fresh dropout.

Patches are embedded by fixed-shape code of our own, not by ``ViltEmbeddings.visual_embed``:
that samples patches with ``nonzero``/``multinomial``/``unique`` and per-row Python lists
(host synchronisations and data-dependent shapes). mmaux images fill the whole pixel
canvas (no ``pixel_mask``; one in the batch is ignored), so every patch is kept, in raster
order, with the same weights (patch conv, resized position table, image CLS, modality
embedding). ``visual_embed`` with ``max_image_length=-1`` keeps the same patches in a
random order, which neither the transformer (positions are in the embeddings) nor CLS /
mean pooling can see. ViLT's patch sampling (``max_image_length > 0``) is not used.
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path
from typing import Any

import torch
import torch.nn.functional as F
from torch import nn

from mmaux.config import EMBEDDED_TEXT, Config
from mmaux.models.base import MultimodalModel, pool_tokens, take
from mmaux.models.encoders import (
    EncoderLoadError,
    ImageEncoder,
    TextEncoder,
    _first_line,
    check_transformer_limits,
    resolve_text_source,
    transformer_load_message,
    transformer_source,
)

# A small random ViLT that trains on a CPU (ViLT-B/32 is 768 wide, 12 layers).
RANDOM_DEFAULTS: dict[str, Any] = {
    "hidden_size": 256,
    "num_hidden_layers": 4,
    "num_attention_heads": 4,
    "intermediate_size": 1024,
    "patch_size": 32,
    "max_position_embeddings": 512,
    "num_images": 1,
    "modality_type_vocab_size": 2,
    "max_image_length": -1,
    "hidden_dropout_prob": 0.1,  # BERT's and the original ViLT's rate
    "attention_probs_dropout_prob": 0.1,
}
VILT_MEAN = VILT_STD = (0.5, 0.5, 0.5)


@dataclass
class ViltEncoded:
    """What a step computes once: both modalities' input embeddings (modality type added)."""

    text: torch.Tensor  # (B, L, D) text embeddings
    text_mask: torch.Tensor  # (B, L)
    image: torch.Tensor  # (B, 1 + N, D) image CLS + patch embeddings
    input_ids: torch.Tensor  # (B, L), for SimCSE's second view
    text_only: torch.Tensor | None = None  # (B, D) pooled text-only pass, once computed
    image_only: torch.Tensor | None = None  # (B, D) pooled image-only pass, once computed

    def __len__(self) -> int:
        return self.text.shape[0]


def _pair(v: Any) -> tuple[int, int]:
    return (int(v), int(v)) if isinstance(v, int) else (int(v[0]), int(v[1]))


def additive_mask(mask: torch.Tensor, dtype: torch.dtype) -> torch.Tensor:
    """A (B, L) padding mask as the (B, 1, 1, L) additive mask ViLT's attention adds to its
    scores (0 = attend, dtype min = masked): built on the device, no host read."""
    m = mask[:, None, None, :].to(dtype)
    return (1.0 - m) * torch.finfo(dtype).min


class ViltFamily(MultimodalModel):
    """``transformers.ViltModel`` (all of it trains) + the shared heads on its pooled CLS."""

    family = "vilt"
    needs_image_tokens = False

    def __init__(self, cfg: Config, num_classes: int, vilt: nn.Module):
        hidden = int(vilt.config.hidden_size)
        super().__init__(cfg, num_classes, hidden, hidden, hidden, None, None)
        self.vilt = vilt
        self.pooling = cfg.model.text.pooling
        self.dropout = nn.Dropout(cfg.model.dropout)

    def pretrained_modules(self) -> list[nn.Module]:
        return [self.vilt]

    def frozen_modules(self) -> list[nn.Module]:
        return []

    # ------------------------------------------------------------------ embeddings
    def embed_text(self, input_ids: torch.Tensor) -> torch.Tensor:
        """Word + position + token type (LayerNorm, dropout), plus the text modality type."""
        emb = self.vilt.embeddings
        text = emb.text_embeddings(input_ids=input_ids)
        return text + emb.token_type_embeddings.weight[0]

    def embed_image(self, pixel_values: torch.Tensor) -> torch.Tensor:
        """``visual_embed`` for a full pixel mask, with fixed shapes: patch projection, the
        position grid bilinearly resized to the patch grid (``align_corners=True``, as ViLT),
        the image CLS token and its position, dropout, then the image modality type."""
        emb = self.vilt.embeddings
        x = emb.patch_embeddings(pixel_values)  # (B, D, h, w)
        b, d, h, w = x.shape
        (ih, iw), (ph, pw) = emb.patch_embeddings.image_size, emb.patch_embeddings.patch_size
        gh, gw = ih // ph, iw // pw  # the grid of the position table (config.image_size)
        grid = emb.position_embeddings[:, 1:, :].transpose(1, 2).reshape(1, d, gh, gw)
        if (gh, gw) != (h, w):
            grid = F.interpolate(grid, size=(h, w), mode="bilinear", align_corners=True)
        patches = (x + grid).flatten(2).transpose(1, 2)  # (B, h*w, D)
        cls = (emb.cls_token + emb.position_embeddings[:, :1, :]).expand(b, -1, -1)
        tokens = emb.dropout(torch.cat([cls.to(patches.dtype), patches], dim=1))
        return tokens + emb.token_type_embeddings.weight[1]

    def encode(self, batch: dict[str, torch.Tensor]) -> ViltEncoded:
        """Both modalities' embeddings, once per step (the patch projection runs here only)."""
        ids = batch["input_ids"]
        return ViltEncoded(
            text=self.embed_text(ids),
            text_mask=batch["attention_mask"],
            image=self.embed_image(batch["pixel_values"]),
            input_ids=ids,
        )

    # ------------------------------------------------------------------ transformer
    def _transformer(self, embeds: torch.Tensor, mask: torch.Tensor | None) -> torch.Tensor:
        """ViLT's layers and final LayerNorm; ``mask`` (B, L) or ``None`` (attend to all)."""
        add = None if mask is None else additive_mask(mask, embeds.dtype)
        out = self.vilt.encoder(embeds, attention_mask=add).last_hidden_state
        return self.vilt.layernorm(out)

    def fuse(
        self,
        enc: ViltEncoded,
        text_idx: torch.Tensor | None = None,
        image_idx: torch.Tensor | None = None,
    ) -> torch.Tensor:
        """The joint transformer over ``[text text_idx[k]; image image_idx[k]]``, then
        ViLT's pooler on the CLS and dropout: (P, hidden)."""
        text, mask = take(enc.text, text_idx), take(enc.text_mask, text_idx)
        image = take(enc.image, image_idx)
        assert text is not None and mask is not None and image is not None
        embeds = torch.cat([text, image.to(text.dtype)], dim=1)
        full_mask = torch.cat([mask, mask.new_ones(image.shape[:2])], dim=1)
        assert self.vilt.pooler is not None
        return self.dropout(self.vilt.pooler(self._transformer(embeds, full_mask)))

    def _text_pass(self, text: torch.Tensor, mask: torch.Tensor) -> torch.Tensor:
        return pool_tokens(self._transformer(text, mask), mask, self.pooling)

    def unimodal(self, enc: ViltEncoded) -> tuple[torch.Tensor, torch.Tensor]:
        """A text-only pass (pooled by ``model.text.pooling``) and an image-only pass (mean
        over the patches) of the same layers; cached on ``enc``."""
        if enc.image_only is None:
            enc.image_only = self._transformer(enc.image, None)[:, 1:].mean(1)
        return self.unimodal_text(enc), enc.image_only

    def unimodal_text(self, enc: ViltEncoded) -> torch.Tensor:
        """The text-only pass alone (SimCSE without ITC never runs the image-only pass)."""
        if enc.text_only is None:
            enc.text_only = self._text_pass(enc.text, enc.text_mask)
        return enc.text_only

    def text_view(self, enc: ViltEncoded) -> torch.Tensor:
        """The text embedded and encoded once more (fresh dropout everywhere)."""
        return self._text_pass(self.embed_text(enc.input_ids), enc.text_mask)


# ---------------------------------------------------------------------- building


def _vilt_source(name: str) -> str:
    return transformer_source(name, "ViLT", "model.vilt", "ViltModel")


def _vilt_load_message(name: str, source: str, local_only: bool, err: BaseException) -> str:
    return transformer_load_message(
        "ViLT", "model.vilt", "ViltModel", name, source, local_only, err
    )


def _config_errors() -> tuple[type[BaseException], ...]:
    """What a bad config value raises (transformers' strict configs raise their own)."""
    try:
        from huggingface_hub.errors import StrictDataclassError
    except ImportError:  # pragma: no cover - older huggingface_hub
        return (TypeError, ValueError)
    return (TypeError, ValueError, StrictDataclassError)


def _check_overrides(overrides: dict[str, Any]) -> None:
    """ViltConfig keeps unknown keys silently: a typo would go unnoticed."""
    from transformers import ViltConfig

    unknown = sorted(set(overrides) - set(ViltConfig().to_dict()))
    if unknown:
        raise EncoderLoadError(
            f"model.vilt.config: unknown ViltConfig key(s) {', '.join(unknown)}; "
            "see transformers' ViltConfig (e.g. hidden_size, num_hidden_layers, patch_size)"
        )


def _random_vilt(cfg: Config) -> tuple[nn.Module, Any]:
    """A randomly initialised ViLT with the tokenizer of ``model.text`` (only the tokenizer
    is loaded: the embedded MiniLM's is bert-base-uncased's vocabulary, as ViLT's)."""
    from transformers import AutoTokenizer, ViltConfig, ViltModel

    text = cfg.model.text
    source = resolve_text_source(text.name)
    try:
        tokenizer = AutoTokenizer.from_pretrained(
            source, local_files_only=text.local_files_only or Path(source).is_dir()
        )
    except (OSError, ValueError) as err:
        raise EncoderLoadError(
            f"cannot load the tokenizer of model.text.name={text.name!r} for a random ViLT: "
            f"{_first_line(err)}; use {EMBEDDED_TEXT} or a local directory"
        ) from None
    values = {
        **RANDOM_DEFAULTS,
        "image_size": cfg.data.image_size or 384,
        "vocab_size": len(tokenizer),
        "pad_token_id": tokenizer.pad_token_id,
        **cfg.model.vilt.config,
    }
    try:
        config = ViltConfig(**values)
        vilt = ViltModel(config)
    except _config_errors() as err:
        raise EncoderLoadError(
            f"bad model.vilt.config for a random ViLT: {_first_line(err)}"
        ) from None
    # transformers leaves ViLT's image CLS token and position table at zero (the checkpoint
    # fills them); ViLT (timm) starts both from N(0, 0.02).
    std = float(config.initializer_range)
    with torch.no_grad():
        nn.init.normal_(vilt.embeddings.cls_token, std=std)
        nn.init.normal_(vilt.embeddings.position_embeddings, std=std)
    return vilt, tokenizer


def _pretrained_vilt(cfg: Config) -> tuple[nn.Module, Any]:
    from transformers import AutoTokenizer, ViltModel
    from transformers.utils import logging as hf_logging

    hf_logging.disable_progress_bar()
    vc = cfg.model.vilt
    source = _vilt_source(vc.name)
    local_only = vc.local_files_only or Path(source).is_dir()
    try:
        vilt, info = ViltModel.from_pretrained(
            source,
            local_files_only=local_only,
            trust_remote_code=False,
            output_loading_info=True,
            **vc.config,
        )
        tokenizer = AutoTokenizer.from_pretrained(source, local_files_only=local_only)
    except OSError as err:  # transformers' missing-file / download errors
        raise EncoderLoadError(_vilt_load_message(vc.name, source, local_only, err)) from None
    except _config_errors() as err:
        raise EncoderLoadError(
            f"cannot build ViLT model {vc.name!r}: {_first_line(err)}; check model.vilt.config"
        ) from None
    # transformers loads any checkpoint into a ViltModel, initialising what it lacks at
    # random: refuse another architecture or a ViLT without its weights (a fresh pooler is
    # fine: ViLT's MLM checkpoints may lack it).
    missing = sorted(k for k in info["missing_keys"] if not k.startswith("pooler."))
    if vilt.config.model_type != "vilt":
        why = f"is a {vilt.config.model_type!r} model, not ViLT"
    elif missing:
        why = f"lacks {len(missing)} ViLT weights (e.g. {', '.join(missing[:2])})"
    else:
        return vilt, tokenizer
    raise EncoderLoadError(
        f"ViLT model {vc.name!r} {why}: point model.vilt.name at a saved ViltModel or "
        "ViltFor* checkpoint, or use 'random'"
    )


def _image_side(cfg: Config, vilt: nn.Module) -> ImageEncoder:
    """ViLT's preprocessing: mean = std = 0.5, bicubic, no crop, S = data.image_size."""
    patches = vilt.embeddings.patch_embeddings
    size = cfg.data.image_size or _pair(vilt.config.image_size)[0]
    ph, pw = _pair(patches.patch_size)
    if size % ph or size % pw:
        raise EncoderLoadError(
            f"data.image_size={size} is not a multiple of the ViLT patch size {ph}x{pw}: "
            f"choose data.image_size as a multiple of {ph}"
        )
    data_config = {
        "input_size": (3, size, size),
        "interpolation": "bicubic",
        "mean": VILT_MEAN,
        "std": VILT_STD,
        "crop_pct": 1.0,
        "crop_mode": "center",
    }
    return ImageEncoder(
        model=patches,
        data_config=data_config,
        feature_dim=int(vilt.config.hidden_size),
        name=cfg.model.vilt.name,
    )


def build_vilt(cfg: Config, num_classes: int) -> tuple[ViltFamily, TextEncoder, ImageEncoder]:
    """The ViLT family from ``model.vilt`` ('random', a hub name or a local directory), its
    tokenizer (as a :class:`TextEncoder`) and its image preprocessing (an
    :class:`ImageEncoder` around the patch projection; the model's own ``image_encoder`` is
    ``None``: nothing is frozen, no image feature is cached)."""
    random = cfg.model.vilt.name == "random"
    _check_overrides(cfg.model.vilt.config)
    vilt, tokenizer = _random_vilt(cfg) if random else _pretrained_vilt(cfg)
    conf = vilt.config
    check_transformer_limits(
        conf, cfg.data.max_text_length, cfg.aux.simcse_weight, "ViLT", "model.vilt", random
    )
    image = _image_side(cfg, vilt)
    text = TextEncoder(model=vilt, tokenizer=tokenizer, hidden_size=int(conf.hidden_size))
    return ViltFamily(cfg, num_classes, vilt), text, image
