"""Checkpoints without pickle: safetensors for tensors, JSON for everything else.

A checkpoint directory holds ``model.safetensors`` (trainable parameters and all buffers;
frozen weights come from the encoders' own source), ``optimizer.safetensors`` +
``optimizer.json`` (AdamW state), ``rng.safetensors`` (RNG states) and ``state.json`` (the
trainer's counters). Directories are swapped in atomically so an interruption while saving
never leaves a half-written checkpoint.
"""

from __future__ import annotations

import json
import shutil
from pathlib import Path
from typing import Any

import torch
from safetensors.torch import load_file, save_file
from torch import nn

from mmaux.fsio import atomic_target, unique_tmp


def trainable_state(model: nn.Module) -> dict[str, torch.Tensor]:
    """Parameters that train, plus every persistent buffer (BN statistics etc.)."""
    params = dict(model.named_parameters())
    return {
        k: v.detach().cpu().contiguous().clone()
        for k, v in model.state_dict().items()
        if k not in params or params[k].requires_grad
    }


def save_weights(model: nn.Module, path: Path) -> Path:
    with atomic_target(Path(path)) as tmp:
        save_file(trainable_state(model), str(tmp))
    return Path(path)


def load_weights(model: nn.Module, path: Path) -> None:
    """Load saved weights; every key the file lacks must be a frozen parameter."""
    path = Path(path)
    if not path.is_file():
        raise FileNotFoundError(f"{path}: weights file not found")
    state = load_file(str(path))
    missing, unexpected = model.load_state_dict(state, strict=False)
    frozen = {n for n, p in model.named_parameters() if not p.requires_grad}
    really_missing = [k for k in missing if k not in frozen]
    if really_missing or unexpected:
        raise RuntimeError(
            f"{path}: does not match the model (missing {really_missing[:5]}, "
            f"unexpected {unexpected[:5]}); was it trained with another configuration?"
        )


def _optimizer_to_files(opt: torch.optim.Optimizer) -> tuple[dict[str, torch.Tensor], dict]:
    sd = opt.state_dict()
    tensors: dict[str, torch.Tensor] = {}
    scalars: dict[str, dict[str, Any]] = {}
    for idx, slot in sd["state"].items():
        for name, value in slot.items():
            if torch.is_tensor(value):
                tensors[f"{idx}.{name}"] = value.detach().cpu().contiguous().clone()
            else:
                scalars.setdefault(str(idx), {})[name] = value
    return tensors, {"param_groups": sd["param_groups"], "scalars": scalars}


def _optimizer_from_files(tensors: dict[str, torch.Tensor], meta: dict) -> dict[str, Any]:
    state: dict[int, dict[str, Any]] = {}
    for key, value in tensors.items():
        idx, name = key.split(".", 1)
        state.setdefault(int(idx), {})[name] = value
    for idx, slot in meta.get("scalars", {}).items():
        state.setdefault(int(idx), {}).update(slot)
    groups = meta["param_groups"]
    for g in groups:
        if "betas" in g:
            g["betas"] = tuple(g["betas"])
    return {"state": state, "param_groups": groups}


def save_checkpoint(
    directory: Path,
    model: nn.Module,
    optimizer: torch.optim.Optimizer,
    rng: dict[str, torch.Tensor],
    state: dict[str, Any],
) -> Path:
    """Write a complete checkpoint, replacing ``directory`` atomically: the new one is
    written under a name unique to this process, the old one renamed aside (``.old``), the
    new one renamed in, the old one deleted."""
    directory = Path(directory)
    new = unique_tmp(directory)
    try:
        new.mkdir(parents=True)
        save_file(trainable_state(model), str(new / "model.safetensors"))
        tensors, meta = _optimizer_to_files(optimizer)
        save_file(tensors, str(new / "optimizer.safetensors"))
        (new / "optimizer.json").write_text(json.dumps(meta))
        save_file({k: v.contiguous() for k, v in rng.items()}, str(new / "rng.safetensors"))
        (new / "state.json").write_text(json.dumps(state, indent=1, allow_nan=False))
        old = unique_tmp(directory).with_suffix(".old")
        if directory.exists():
            directory.rename(old)
        new.rename(directory)
        shutil.rmtree(old, ignore_errors=True)
    finally:
        shutil.rmtree(new, ignore_errors=True)
    return directory


def find_checkpoint(directory: Path) -> Path | None:
    """The checkpoint directory to resume from (falls back to one left mid-swap)."""
    directory = Path(directory)
    aside = sorted(
        directory.parent.glob(f".{directory.name}.*.old"), key=lambda p: p.stat().st_mtime
    )
    for cand in (directory, *reversed(aside)):
        if (cand / "state.json").is_file():
            return cand
    return None


def load_checkpoint(
    directory: Path, model: nn.Module, optimizer: torch.optim.Optimizer
) -> tuple[dict[str, torch.Tensor], dict[str, Any]]:
    """Restore model and optimizer in place; return (rng states, trainer state)."""
    directory = Path(directory)
    load_weights(model, directory / "model.safetensors")
    meta = json.loads((directory / "optimizer.json").read_text())
    optimizer.load_state_dict(
        _optimizer_from_files(load_file(str(directory / "optimizer.safetensors")), meta)
    )
    rng = load_file(str(directory / "rng.safetensors"))
    state = json.loads((directory / "state.json").read_text())
    return rng, state


def rng_state(itm_gen: torch.Generator, device: torch.device) -> dict[str, torch.Tensor]:
    """The RNG states a resumed run needs: torch's, the ITM sampler's and CUDA's."""
    state = {"torch": torch.get_rng_state(), "itm": itm_gen.get_state()}
    if device.type == "cuda":
        state["cuda"] = torch.cuda.get_rng_state(device)
    return state


def set_rng_state(
    rng: dict[str, torch.Tensor], itm_gen: torch.Generator, device: torch.device
) -> None:
    """Restore what :func:`rng_state` saved."""
    torch.set_rng_state(rng["torch"])
    itm_gen.set_state(rng["itm"])
    if "cuda" in rng and device.type == "cuda":
        torch.cuda.set_rng_state(rng["cuda"], device)
