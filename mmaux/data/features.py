"""Frozen image-encoder features, computed once and cached on disk.

A frozen encoder with a deterministic transform maps each image file to fixed features, so
they are computed once and stored as safetensors under ``data.cache_dir``. The cache key
hashes the encoder identity, the transform and the bytes of every image, so any change to
either rebuilds it and a stale cache is never read.
"""

from __future__ import annotations

import hashlib
import json
import logging
from collections.abc import Callable, Sequence
from pathlib import Path

import torch
from safetensors.torch import load_file, save_file
from torch import nn
from tqdm.auto import tqdm

from mmaux.data.dataset import ImageFeatures
from mmaux.data.images import DEFAULT_MAX_IMAGE_PIXELS, file_digest, load_rgb
from mmaux.fsio import atomic_target
from mmaux.models.encoders import image_tokens_and_pooled

CACHE_VERSION = 1


log = logging.getLogger(__name__)


def weights_digest(model: nn.Module) -> str:
    """sha256 of a module's parameters and buffers: what its features really depend on
    (a name or a ``pretrained`` flag does not pin random or replaced weights)."""
    h = hashlib.sha256()
    for name, tensor in model.state_dict().items():
        t = tensor.detach().cpu().contiguous()
        h.update(name.encode() + str(t.dtype).encode() + str(tuple(t.shape)).encode())
        h.update(t.reshape(-1).view(torch.uint8).numpy().tobytes() if t.numel() else b"")
    return h.hexdigest()


def cache_key(
    encoder_id: dict, transform: Callable, need_tokens: bool, root: Path, images: Sequence[str]
) -> str:
    """Hash of everything the features depend on."""
    h = hashlib.sha256()
    h.update(
        json.dumps(
            {
                "v": CACHE_VERSION,
                "encoder": encoder_id,
                "tokens": need_tokens,
                "transform": repr(transform),
            },
            sort_keys=True,
            default=str,
        ).encode()
    )
    for rel in images:
        h.update(rel.encode() + b"\0" + file_digest(root / rel).encode() + b"\n")
    return h.hexdigest()[:32]


@torch.no_grad()
def extract_features(
    model: nn.Module,
    root: Path,
    images: Sequence[str],
    transform: Callable,
    need_tokens: bool,
    device: torch.device,
    batch_size: int = 64,
    progress: bool = False,
    max_pixels: int | None = DEFAULT_MAX_IMAGE_PIXELS,
) -> tuple[torch.Tensor, torch.Tensor | None]:
    """Run a (frozen, eval-mode) backbone over image files; return pooled (and token) features.

    An image over ``max_pixels`` (``data.rules.max_image_pixels``) or undecodable raises
    :class:`~mmaux.data.images.ImageLoadError` naming the file."""
    was_training = model.training
    model.eval()
    pooled, tokens = [], []
    starts = range(0, len(images), batch_size)
    for start in tqdm(starts, desc="image features", disable=None if progress else True):
        chunk = images[start : start + batch_size]
        decoded = [transform(load_rgb(root / rel, max_pixels)) for rel in chunk]
        pixels = torch.stack(decoded).to(device)
        tok, pool = image_tokens_and_pooled(model, pixels)
        pooled.append(pool.float().cpu())
        if need_tokens:
            tokens.append(tok.float().cpu())
    model.train(was_training)
    return torch.cat(pooled), (torch.cat(tokens) if need_tokens else None)


def split_transform(transform: Callable) -> tuple[Callable, Callable]:
    """Split an eval transform into its PIL geometry part (resize, crop) and the rest
    (to-tensor, normalise), so decoded images can be cached as exact uint8 pixels."""
    from torchvision import transforms as T

    steps = list(getattr(transform, "transforms", []))
    cut = next((i for i, t in enumerate(steps) if "ToTensor" in type(t).__name__), None)
    if cut is None:
        raise ValueError(f"cannot split transform {transform!r}: no ToTensor step")
    return T.Compose(steps[:cut]), T.Compose(steps[cut:])


def cached_pixels(
    root: Path,
    images: Sequence[str],
    transform: Callable,
    cache_dir: Path | None,
    max_pixels: int | None = DEFAULT_MAX_IMAGE_PIXELS,
) -> tuple[dict[str, int], torch.Tensor, bool]:
    """Images decoded, resized and cropped once, as uint8 (N, 3, H, W); from cache when
    possible. ``ToTensor`` of a uint8 image is exactly ``x / 255``, so this is lossless."""
    import numpy as np

    unique = sorted(set(images))
    geometry, _ = split_transform(transform)
    key = cache_key({"pixels": True}, geometry, False, root, unique)
    path = Path(cache_dir) / f"pixels-{key}.safetensors" if cache_dir else None
    rows = {rel: i for i, rel in enumerate(unique)}
    if path is not None and path.is_file():
        return rows, load_file(str(path))["pixels"], True
    arrays = [
        np.asarray(geometry(load_rgb(root / rel, max_pixels)), dtype=np.uint8) for rel in unique
    ]
    pixels = torch.from_numpy(np.stack(arrays)).permute(0, 3, 1, 2).contiguous()
    if path is not None:
        with atomic_target(path) as tmp:
            save_file({"pixels": pixels}, str(tmp), metadata={"images": json.dumps(unique)})
    return rows, pixels, False


def cached_image_features(
    model: nn.Module,
    encoder_id: dict,
    root: Path,
    images: Sequence[str],
    transform: Callable,
    cache_dir: Path | None,
    need_tokens: bool,
    device: torch.device,
    progress: bool = False,
    max_pixels: int | None = DEFAULT_MAX_IMAGE_PIXELS,
) -> tuple[ImageFeatures, bool]:
    """Features for the unique ``images`` (relative paths), from cache when possible.

    Returns the features and whether they came from the cache.
    """
    unique = sorted(set(images))
    key = cache_key(encoder_id, transform, need_tokens, root, unique)
    path = Path(cache_dir) / f"image-features-{key}.safetensors" if cache_dir else None
    rows = {rel: i for i, rel in enumerate(unique)}
    if path is not None and path.is_file():
        tensors = load_file(str(path))
        if tensors["pooled"].shape[0] == len(unique):
            return ImageFeatures(rows, tensors["pooled"], tensors.get("tokens")), True
    log.info(
        "image features: encoding %d images once (%s); cached in %s",
        len(unique),
        encoder_id.get("name"),
        path or "memory",
    )
    pooled, tokens = extract_features(
        model,
        root,
        unique,
        transform,
        need_tokens,
        device,
        progress=progress,
        max_pixels=max_pixels,
    )
    if path is not None:
        tensors = {"pooled": pooled.contiguous()}
        if tokens is not None:
            tensors["tokens"] = tokens.contiguous()
        with atomic_target(path) as tmp:
            save_file(tensors, str(tmp), metadata={"images": json.dumps(unique)})
    return ImageFeatures(rows, pooled, tokens), False
