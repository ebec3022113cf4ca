"""Preprocessing: build the caches the trainer reads, once per data and encoder setup.

Frozen image encoders: features (pooled, plus tokens for attention fusion). Trainable
encoders: decoded, resized, cropped uint8 pixels. Both live in ``data.cache_dir`` under
content-hash keys (encoder, transform, bytes of every image), so the trainer finds them
and a stale entry is never read. Text is tokenised when datasets are built (it is fast).
"""

from __future__ import annotations

import time
from typing import Any

from mmaux.assemble import assemble
from mmaux.config import Config
from mmaux.runtime import resolve_device


def preprocess(cfg: Config) -> dict[str, Any]:
    """Validate-load the manifest and fill the caches; return a summary."""
    started = time.perf_counter()
    asm = assemble(cfg, resolve_device(cfg.train.device), progress=cfg.train.progress)
    lengths = [len(ids) for ds in asm.datasets.values() for ids in (ds.input_ids or [])]
    cache = sorted(p.name for p in cfg.data.cache_dir.glob("*.safetensors"))
    return {
        "posts": {split: len(ds) for split, ds in asm.datasets.items()},
        "labels": asm.manifest.labels,
        "images": len({p.image for p in asm.manifest.posts}),
        "image_features_from_cache": asm.features_from_cache,
        "pixels_from_cache": asm.pixels_from_cache,
        "cache_dir": str(cfg.data.cache_dir),
        "cache_files": cache,
        "max_tokens": max(lengths, default=0),
        "mean_tokens": round(sum(lengths) / max(len(lengths), 1), 2),
        "seconds": round(time.perf_counter() - started, 2),
    }
