"""Assemble what a job needs from a :class:`Config`: manifest, model, datasets, loaders."""

from __future__ import annotations

import logging
from dataclasses import dataclass, field
from functools import partial
from pathlib import Path

import torch
from torch.utils.data import DataLoader, Sampler

from mmaux.config import Config
from mmaux.data.dataset import ImageFeatures, ImagePixels, PostDataset, collate_posts
from mmaux.data.features import (
    cached_image_features,
    cached_pixels,
    split_transform,
    weights_digest,
)
from mmaux.data.images import build_transform
from mmaux.data.manifest import Manifest, Post, load_manifest
from mmaux.data.subsample import stratified_subsample
from mmaux.models import MultimodalModel, build_model
from mmaux.models.encoders import ImageEncoder, TextEncoder

log = logging.getLogger(__name__)


def load_data(cfg: Config) -> Manifest:
    """Load the configured manifest, judged by the data rulebook (``data.rules``)."""
    root = Path(cfg.data.root)
    return load_manifest(
        root / cfg.data.manifest,
        root=root,
        labels=cfg.data.labels,
        on_error=cfg.data.on_error,
        check_images=cfg.data.check_images,
        rules=cfg.data.rules,
    )


@dataclass
class Assembly:
    """A model with the datasets it reads."""

    cfg: Config
    manifest: Manifest
    model: MultimodalModel
    text: TextEncoder | None
    image: ImageEncoder | None
    datasets: dict[str, PostDataset] = field(default_factory=dict)
    features_from_cache: bool | None = None
    pixels_from_cache: bool | None = None
    channels_last: bool = False

    def prepare_channels_last(self, device: torch.device) -> None:
        """Channels-last for a convolutional image encoder that runs on CUDA (tensor cores
        read NHWC natively); ViTs and cached features are left alone."""
        enc = self.model.image_encoder
        self.channels_last = bool(
            self.cfg.train.channels_last
            and device.type == "cuda"
            and enc is not None
            and any(isinstance(m, torch.nn.Conv2d) for m in enc.modules())
            and not self.features_from_cache
        )
        if self.channels_last:
            enc.to(memory_format=torch.channels_last)  # type: ignore[union-attr]

    def to_device(
        self, batch: dict[str, torch.Tensor], device: torch.device
    ) -> dict[str, torch.Tensor]:
        """A loader batch on the training device (non-blocking from pinned memory)."""
        out = {k: v.to(device, non_blocking=True) for k, v in batch.items()}
        if self.channels_last and "pixel_values" in out:
            out["pixel_values"] = out["pixel_values"].contiguous(memory_format=torch.channels_last)
        return out

    @property
    def pad_id(self) -> int:
        tok = self.text.tokenizer if self.text is not None else None
        return int(getattr(tok, "pad_token_id", 0) or 0)

    def loader(
        self,
        split: str,
        batch_size: int,
        batch_sampler: Sampler | list | None = None,
        device: torch.device | None = None,
    ) -> DataLoader:
        """A loader over one split: ordered batches unless a batch sampler is given."""
        ds = self.datasets[split]
        workers = self.cfg.train.num_workers
        common = dict(
            collate_fn=partial(collate_posts, pad_id=self.pad_id),
            num_workers=workers,
            pin_memory=device is not None and device.type == "cuda",
            persistent_workers=workers > 0,
            # Workers start from a clean server process, not a fork of this one: a fork of a
            # process with threads (Prefect, MLflow, tokenizers) can die or deadlock.
            multiprocessing_context="forkserver" if workers > 0 else None,
            # A private generator: creating loader iterators must not consume the global RNG
            # (dropout's), or a resumed run would diverge from an uninterrupted one.
            generator=torch.Generator().manual_seed(0),
        )
        if batch_sampler is not None:
            return DataLoader(ds, batch_sampler=batch_sampler, **common)
        return DataLoader(ds, batch_size=batch_size, shuffle=False, **common)


def split_posts(cfg: Config, manifest: Manifest, split: str) -> list[Post]:
    """The posts a job reads of one split: for train, the ``data.n_train`` subsample."""
    posts = manifest.split(split)
    n = cfg.data.n_train
    if split != "train" or n is None:
        return posts
    if n > len(posts):
        raise ValueError(
            f"data.n_train={n}: {manifest.source or manifest.root} has only {len(posts)} "
            "training posts"
        )
    seed = cfg.train.seed if cfg.data.subsample_seed is None else cfg.data.subsample_seed
    return stratified_subsample(posts, n, seed)


def caches_image_features(cfg: Config, model: MultimodalModel) -> bool:
    """Whether the model reads cached image features instead of pixels: a frozen timm
    image encoder with ``train.cache_image_features``."""
    return bool(
        model.uses_image
        and cfg.model.image.freeze
        and model.image_encoder is not None
        and cfg.train.cache_image_features
    )


def assemble(
    cfg: Config,
    device: torch.device,
    splits: tuple[str, ...] = ("train", "val", "test"),
    manifest: Manifest | None = None,
    progress: bool = False,
) -> Assembly:
    """Build the model and the split datasets; frozen image features are cached on disk."""
    manifest = manifest or load_data(cfg)
    model, text, image = build_model(cfg, len(manifest.labels))
    model.to(device)
    asm = Assembly(cfg, manifest, model, text, image)
    uses_image = model.uses_image
    transform = None
    features: ImageFeatures | None = None
    pixels: ImagePixels | None = None
    if uses_image:
        assert image is not None
        transform = build_transform(image.data_config, cfg.data.image_size)
        # Caches cover the whole data set, whichever splits this job reads, so every
        # stage (preprocess, tune, train, evaluate) shares one cache entry.
        posts = manifest.posts
        if caches_image_features(cfg, model):
            encoder_id = {
                "name": cfg.model.image.name,
                "kwargs": cfg.model.image.kwargs,
                "weights": weights_digest(image.model),
            }
            features, asm.features_from_cache = cached_image_features(
                image.model,
                encoder_id,
                manifest.root,
                [p.image for p in posts],
                transform,
                cfg.data.cache_dir,
                model.needs_image_tokens,
                device,
                progress=progress,
                max_pixels=cfg.data.rules.max_image_pixels,
            )
        else:  # a trainable encoder sees pixels: decode and resize each image only once
            rows, tensor, asm.pixels_from_cache = cached_pixels(
                manifest.root,
                [p.image for p in posts],
                transform,
                cfg.data.cache_dir,
                max_pixels=cfg.data.rules.max_image_pixels,
            )
            pixels = ImagePixels(rows, tensor, split_transform(transform)[1])
    tokenizer = text.tokenizer if text is not None else None
    for split in splits:
        asm.datasets[split] = PostDataset(
            manifest,
            split_posts(cfg, manifest, split),
            tokenizer,
            cfg.data.max_text_length,
            transform=transform,
            features=features,
            use_image=uses_image,
            pixels=pixels,
            max_pixels=cfg.data.rules.max_image_pixels,
            # ITM never pairs a text with a copy of its own image as a negative
            with_image_groups=split == "train" and uses_image and cfg.aux.itm_weight > 0,
        )
    return asm
