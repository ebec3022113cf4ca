"""Image files: checking, decoding and preprocessing to an encoder's own configuration."""

from __future__ import annotations

from pathlib import Path
from typing import Any, Literal

from PIL import Image, UnidentifiedImageError

ImageCheck = Literal["decode", "exists", "none"]


class ImageLoadError(OSError):
    """An image file is missing or cannot be decoded; the message names the file."""


def image_problem(path: Path, check: ImageCheck = "decode") -> str | None:
    """Return a short description of what is wrong with an image file, or ``None``."""
    if check == "none":
        return None
    if not path.is_file():
        return "image file not found" if not path.exists() else "image path is not a file"
    if check == "exists":
        return None
    try:
        with Image.open(path) as im:
            im.load()
    except (UnidentifiedImageError, OSError, SyntaxError, ValueError) as err:
        detail = str(err).replace(str(path), "").strip(" :'")
        kind = type(err).__name__
        if isinstance(err, UnidentifiedImageError) or not detail:
            return f"image cannot be decoded ({kind})"
        return f"image cannot be decoded ({kind}: {detail})"
    return None


def load_rgb(path: Path) -> Image.Image:
    """Decode an image as RGB, raising :class:`ImageLoadError` naming the file on failure."""
    try:
        with Image.open(path) as im:
            return im.convert("RGB")
    except FileNotFoundError:
        raise ImageLoadError(f"{path}: image file not found") from None
    except (UnidentifiedImageError, OSError, SyntaxError, ValueError) as err:
        raise ImageLoadError(f"{path}: image cannot be decoded ({err})") from None


def build_transform(data_config: dict[str, Any], image_size: int | None = None):
    """Deterministic eval-style transform (resize, centre crop, normalise) for an encoder.

    ``data_config`` is timm's resolved data config for the encoder (its own mean, std,
    interpolation, crop); ``image_size`` overrides its input size.
    """
    from timm.data import create_transform

    cfg = dict(data_config)
    if image_size is not None:
        cfg["input_size"] = (3, image_size, image_size)
    return create_transform(
        input_size=cfg["input_size"],
        is_training=False,
        interpolation=cfg.get("interpolation", "bicubic"),
        mean=cfg["mean"],
        std=cfg["std"],
        crop_pct=cfg.get("crop_pct", 1.0),
        crop_mode=cfg.get("crop_mode", "center"),
    )
