"""Image files: checking, decoding and preprocessing to an encoder's own configuration.

Every decode in mmaux goes through this module, with one pixel limit (``data.rules.
max_image_pixels``) read from the header *before* decoding. PIL's own global limit
(``Image.MAX_IMAGE_PIXELS``, which warns or raises ``DecompressionBombError``) is switched off
while we open an image, so it can neither crash a check nor make two entry points disagree.
"""

from __future__ import annotations

import hashlib
import threading
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import Any, Literal

from PIL import Image, UnidentifiedImageError

from mmaux.config import DataRulesConfig

ImageCheck = Literal["decode", "exists", "none"]
DEFAULT_MAX_IMAGE_PIXELS: int = DataRulesConfig().max_image_pixels
_DECODE_ERRORS = (UnidentifiedImageError, OSError, SyntaxError, ValueError, EOFError)
_PIL_LIMIT = threading.RLock()


class ImageLoadError(OSError):
    """An image file is missing, too large or cannot be decoded; the message names the file."""


@contextmanager
def _own_pixel_limit() -> Iterator[None]:
    """Switch PIL's global bomb check off (ours applies instead), restoring it afterwards."""
    with _PIL_LIMIT:
        saved = Image.MAX_IMAGE_PIXELS
        Image.MAX_IMAGE_PIXELS = None
        try:
            yield
        finally:
            Image.MAX_IMAGE_PIXELS = saved


def _pixels_problem(size: tuple[int, int], max_pixels: int | None) -> str | None:
    width, height = size
    if max_pixels is not None and width * height > max_pixels:
        return (
            f"image is {width}x{height} = {width * height:,} pixels "
            f"(limit {max_pixels:,}: data.rules.max_image_pixels)"
        )
    return None


def _decode_problem(err: BaseException, path: Path) -> str:
    detail = str(err).replace(str(path), "").strip(" :'")
    kind = type(err).__name__
    if isinstance(err, UnidentifiedImageError) or not detail:
        return f"image cannot be decoded ({kind})"
    return f"image cannot be decoded ({kind}: {detail})"


def image_check(
    path: Path, check: ImageCheck = "decode", max_pixels: int | None = DEFAULT_MAX_IMAGE_PIXELS
) -> tuple[str, str] | None:
    """``(rule, problem)`` for what is wrong with an image file, or ``None``.

    Rules, in order: ``image_exists``; with ``check="decode"`` also ``image_pixels`` (the
    header's width * height against ``max_pixels``) and ``image_decodes``.
    """
    path = Path(path)
    if check == "none":
        return None
    try:
        if not path.is_file():
            return "image_exists", (
                "image file not found" if not path.exists() else "image path is not a file"
            )
    except OSError as err:  # e.g. a name too long for the file system
        return "image_exists", f"image path cannot be read ({err.strerror or err})"
    if check == "exists":
        return None
    with _own_pixel_limit():
        try:
            with Image.open(path) as im:
                too_big = _pixels_problem(im.size, max_pixels)
                if too_big is None:
                    im.load()
        except Image.DecompressionBombError as err:  # only if PIL's limit is back on
            return "image_pixels", f"image is too large ({err})"
        except _DECODE_ERRORS as err:
            return "image_decodes", _decode_problem(err, path)
    if too_big is not None:
        return "image_pixels", too_big
    return None


def file_digest(path: Path) -> str:
    """sha256 of a file's bytes (byte-identical images have the same digest)."""
    h = hashlib.sha256()
    with open(path, "rb") as fh:
        for chunk in iter(lambda: fh.read(1 << 20), b""):
            h.update(chunk)
    return h.hexdigest()


def load_rgb(path: Path, max_pixels: int | None = DEFAULT_MAX_IMAGE_PIXELS) -> Image.Image:
    """Decode an image as RGB, raising :class:`ImageLoadError` naming the file when it is
    missing, larger than ``max_pixels`` (checked before decoding) or undecodable."""
    with _own_pixel_limit():
        try:
            with Image.open(path) as im:
                too_big = _pixels_problem(im.size, max_pixels)
                rgb = None if too_big else im.convert("RGB")
        except FileNotFoundError:
            raise ImageLoadError(f"{path}: image file not found") from None
        except Image.DecompressionBombError as err:
            raise ImageLoadError(f"{path}: image is too large ({err})") from None
        except _DECODE_ERRORS as err:
            raise ImageLoadError(f"{path}: image cannot be decoded ({err})") from None
    if rgb is None:
        raise ImageLoadError(f"{path}: {too_big}")
    return rgb


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
