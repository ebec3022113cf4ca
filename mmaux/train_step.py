"""One training step, as free functions the trainer and the throughput benchmark share.

* :func:`forward_backward`: one micro-batch's forward pass and losses under autocast, then
  backward (scaled for gradient accumulation);
* :func:`optimizer_step`: gradient clipping, the AdamW step, ``zero_grad`` and the ITC
  logit-scale clamp;
* :class:`LossMeter`: the loss terms summed on the device and read back to the host only
  when asked (every ``train.log_every_steps`` optimizer steps), so a step between log points
  never waits for the GPU.

None of these reads a tensor on the host: the step is free of host synchronisations
(``tests/test_sync_free.py`` counts them).
"""

from __future__ import annotations

import math
from collections.abc import Callable, Sequence
from typing import Any

import torch
from torch import nn

from mmaux.config import AuxConfig, TrainConfig
from mmaux.distributed import DistInfo
from mmaux.losses import LossTerms, compute_losses
from mmaux.models.base import ModelOutput, MultimodalModel
from mmaux.runtime import autocast

StepFn = Callable[..., tuple[LossTerms, ModelOutput | None]]
"""``(batch, aux, class_weight, generator) -> (terms, output)``: a :class:`LossModule`, its
compiled or DDP-wrapped form, or any callable with that signature (the benchmark's naive
ITM)."""


class LossModule(nn.Module):
    """The model and its losses as one module: DDP wraps this, so every trainable parameter
    (encoders, fusion, ITC projections, ITM head) is used inside one DDP forward."""

    def __init__(self, model: MultimodalModel, dist: DistInfo):
        super().__init__()
        self.model = model
        self.dist = dist

    def forward(
        self,
        batch: dict[str, torch.Tensor],
        aux: AuxConfig,
        class_weight: torch.Tensor | None,
        generator: torch.Generator,
    ) -> tuple[LossTerms, ModelOutput]:
        return compute_losses(self.model, batch, aux, class_weight, generator, self.dist)


def training_step_fn(
    model: MultimodalModel, dist: DistInfo, device: torch.device, compile: bool = False
) -> nn.Module:
    """The model and losses as the module a step calls: compiled on request, DDP-wrapped
    under ``torchrun``."""
    step_fn: nn.Module = LossModule(model, dist)
    if compile:
        step_fn = torch.compile(step_fn)  # type: ignore[assignment]
    if dist.enabled:
        from torch.nn.parallel import DistributedDataParallel

        ids = [device.index] if device.type == "cuda" else None
        step_fn = DistributedDataParallel(step_fn, device_ids=ids)
    return step_fn


def build_optimizer(
    model: MultimodalModel, t: TrainConfig, device: torch.device
) -> torch.optim.Optimizer:
    """AdamW over the trainable parameters: encoder vs head learning rates, no weight decay
    on biases, norms and the logit scale; the fused kernel on CUDA."""

    def no_decay(name: str, p: nn.Parameter) -> bool:
        return p.ndim < 2 or "norm" in name.lower() or name == "logit_scale"

    enc_ids = {id(p) for p in model.encoder_parameters()}
    groups: dict[tuple[bool, bool], list[nn.Parameter]] = {}
    for name, p in model.named_parameters():
        if p.requires_grad:
            groups.setdefault((id(p) in enc_ids, no_decay(name, p)), []).append(p)
    param_groups: list[dict[str, Any]] = [
        {
            "params": ps,
            "lr": t.lr if is_enc else t.head_lr,
            "weight_decay": 0.0 if nd else t.weight_decay,
        }
        for (is_enc, nd), ps in sorted(groups.items())
    ]
    if device.type == "cuda":
        return torch.optim.AdamW(param_groups, fused=True)
    return torch.optim.AdamW(param_groups)


def forward_backward(
    step_fn: StepFn,
    batch: dict[str, torch.Tensor],
    aux: AuxConfig,
    class_weight: torch.Tensor | None,
    generator: torch.Generator,
    device: torch.device,
    precision: str,
    accum: int = 1,
) -> LossTerms:
    """Forward one micro-batch and its losses under autocast; backward ``total / accum``."""
    with autocast(device, precision):
        terms, _ = step_fn(batch, aux, class_weight, generator)
    (terms.total / accum).backward()
    return terms


def optimizer_step(
    model: MultimodalModel,
    optimizer: torch.optim.Optimizer,
    params: Sequence[nn.Parameter],
    max_grad_norm: float | None,
) -> None:
    """Clip, step, zero the gradients and clamp the logit scale (all on the device)."""
    if max_grad_norm is not None:
        torch.nn.utils.clip_grad_norm_(params, max_grad_norm)
    optimizer.step()
    optimizer.zero_grad(set_to_none=True)
    model.clamp_logit_scale()


class NonFiniteLoss(ValueError):
    """A loss term became NaN or infinite; training stopped before saving anything from it."""


class LossMeter:
    """Loss terms summed in float64 on the device, per log interval and per epoch.

    :meth:`add` only queues device additions; :meth:`read` is the one host transfer (and,
    under DDP, the one all-reduce, which also carries the ranks' stop requests)."""

    def __init__(self, device: torch.device):
        self.device = device
        self.names: list[str] = []
        self.interval = self.epoch = torch.zeros(0, dtype=torch.float64, device=device)
        self.n_interval = self.n_epoch = 0

    def add(self, terms: LossTerms) -> None:
        names, values = terms.named()
        if not self.names:
            self.names = names
            self.interval = torch.zeros(len(names), dtype=torch.float64, device=self.device)
            self.epoch = torch.zeros_like(self.interval)
        v = torch.stack([x.detach().to(torch.float64) for x in values])
        self.interval += v
        self.epoch += v
        self.n_interval += 1
        self.n_epoch += 1

    def read(
        self, dist: DistInfo, stop: bool = False, logit_scale: torch.Tensor | None = None
    ) -> tuple[dict[str, float], bool]:
        """Means over the interval (and ``logit_scale`` as exp of the learnt scale), with the
        stop request agreed over ranks; resets the interval."""
        extra = [torch.full((1,), float(stop), dtype=torch.float64, device=self.device)]
        if logit_scale is not None:
            extra.append(logit_scale.detach().to(torch.float64).exp().reshape(1))
        packed = torch.cat([self.interval, *extra])
        if dist.enabled:
            torch.distributed.all_reduce(packed)
            packed /= dist.world_size
        host = packed.tolist()
        k, n = len(self.names), max(self.n_interval, 1)
        values = {name: host[i] / n for i, name in enumerate(self.names)}
        if logit_scale is not None:
            values["logit_scale"] = host[k + 1]
        self.interval.zero_()
        self.n_interval = 0
        bad = [name for name in self.names if not math.isfinite(values[name])]
        if bad:
            raise NonFiniteLoss(
                f"training diverged: non-finite {', '.join(bad)} ({values}); nothing of it was "
                "saved. Lower train.lr / train.head_lr, or --resume from the last checkpoint"
            )
        return values, host[k] > 0

    def epoch_means(self, dist: DistInfo) -> dict[str, float]:
        """Means over the epoch (averaged over ranks); resets the epoch sums."""
        sums = self.epoch.clone()
        if dist.enabled:
            torch.distributed.all_reduce(sums)
            sums /= dist.world_size
        host, n = sums.tolist(), max(self.n_epoch, 1)
        self.epoch.zero_()
        self.n_epoch = 0
        return {name: host[i] / n for i, name in enumerate(self.names)}

    def state(self, dist: DistInfo) -> dict[str, Any]:
        """The sums as exact floats (averaged over ranks first), for a checkpoint."""
        if dist.enabled and self.names:
            for sums in (self.interval, self.epoch):
                torch.distributed.all_reduce(sums)
                sums /= dist.world_size
        return {
            "names": list(self.names),
            "interval": self.interval.tolist(),
            "epoch": self.epoch.tolist(),
            "n_interval": self.n_interval,
            "n_epoch": self.n_epoch,
        }

    def load_state(self, state: dict[str, Any]) -> None:
        self.names = list(state["names"])
        kw: dict[str, Any] = {"dtype": torch.float64, "device": self.device}
        self.interval = torch.tensor(state["interval"], **kw)
        self.epoch = torch.tensor(state["epoch"], **kw)
        self.n_interval, self.n_epoch = int(state["n_interval"]), int(state["n_epoch"])


def itm_generator(device: torch.device, seed: int) -> torch.Generator:
    """The ITM pair sampler's generator, on the training device (no host round trips)."""
    return torch.Generator(device=device).manual_seed(seed + 7919)


__all__ = [
    "LossMeter",
    "LossModule",
    "NonFiniteLoss",
    "StepFn",
    "build_optimizer",
    "compute_losses",
    "forward_backward",
    "itm_generator",
    "optimizer_step",
    "training_step_fn",
]
