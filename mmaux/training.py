"""The training loop: AdamW, optional aux losses, early stopping, exact resume.

A run directory (``train.output_dir``) receives:

* ``config.yaml``, ``labels.json``: what the run was;
* ``steps.jsonl``: every loss term at every optimizer step; ``epochs.jsonl``: per-epoch
  means of every term and the validation metrics;
* ``checkpoint/``: the full training state, written at each epoch end, every
  ``train.checkpoint_every_steps`` steps and when the run is interrupted (Ctrl-C/SIGTERM);
  removed once the run completes;
* ``model.safetensors``: the best weights (by validation macro-F1);
* ``metrics.json`` and ``predictions_{val,test}.csv``: the final evaluation.

Batch order is a pure function of (seed, epoch), and the RNG states are checkpointed, so a
resumed run reproduces the uninterrupted run exactly on CPU.
"""

from __future__ import annotations

import contextlib
import json
import logging
import math
import shutil
import signal
import threading
import time
from collections.abc import Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import torch
import yaml
from tqdm.auto import tqdm

from mmaux.assemble import Assembly, assemble
from mmaux.checkpoint import (
    find_checkpoint,
    load_checkpoint,
    load_weights,
    save_checkpoint,
    save_weights,
)
from mmaux.config import Config, TrainConfig, dump_config
from mmaux.data.manifest import Manifest, write_skip_report
from mmaux.distributed import (
    DistInfo,
    any_rank,
    barrier,
    broadcast,
    init_from_env,
    mean_over_ranks,
    shard,
)
from mmaux.evaluation import evaluate, write_predictions
from mmaux.losses import LossTerms, balanced_class_weights, compute_losses
from mmaux.models.classifier import ModelOutput, MultimodalClassifier
from mmaux.runtime import autocast, resolve_device, resolve_precision, seed_everything

log = logging.getLogger(__name__)

# Keys that may differ between an interrupted run and its resumption.
_RESUME_FREE = {
    ("train", "epochs"),
    ("train", "patience"),
    ("train", "progress"),
    ("train", "output_dir"),
    ("train", "num_workers"),
    ("train", "compile"),
    ("train", "channels_last"),
    ("train", "deterministic"),
    ("train", "checkpoint_every_steps"),
    ("data", "check_images"),
    ("data", "on_error"),
    ("data", "cache_dir"),
    ("eval", "batch_size"),
    ("eval", "split"),
}


class Callback:
    """Hooks into training; subclass and override what you need (e.g. experiment tracking)."""

    def on_step_end(self, trainer: Trainer, step: int, terms: dict[str, float]) -> None:
        """After each optimizer step, with that step's loss terms."""

    def on_epoch_end(self, trainer: Trainer, record: dict[str, Any]) -> None:
        """After each epoch's validation, with the epoch record."""

    def on_train_end(self, trainer: Trainer, result: TrainResult) -> None:
        """After the final evaluation."""


class TrainingInterrupted(RuntimeError):
    """Training stopped on request; the state was checkpointed and can be resumed."""

    def __init__(self, checkpoint: Path, step: int):
        self.checkpoint = checkpoint
        self.step = step
        super().__init__(
            f"training interrupted at step {step}; state saved to {checkpoint}. "
            "Run again with --resume to continue."
        )


@dataclass
class TrainResult:
    run_dir: Path
    metrics: dict[str, Any]
    best_epoch: int
    epochs_run: int
    global_step: int
    train_seconds: float
    history: list[dict[str, Any]] = field(default_factory=list)

    @property
    def test_macro_f1(self) -> float:
        return float(self.metrics["test"]["macro_f1"])


def epoch_batches(
    n: int,
    batch_size: int,
    seed: int,
    epoch: int,
    lengths: Sequence[int] | None = None,
    group: int = 0,
) -> list[list[int]]:
    """The shuffled batches of one epoch: a pure function of its arguments.

    With ``lengths`` and ``group`` > 0, the shuffled order is cut into groups of
    ``group * batch_size`` posts, each group is sorted by text length and cut into
    batches, and the batch order is shuffled again: batches hold texts of similar length,
    so far less padding is computed, while every batch still mixes random posts. The last
    incomplete batch is dropped when there is more than one batch (contrastive losses need
    full, comparable batches)."""
    gen = torch.Generator().manual_seed(seed * 1_000_003 + epoch)
    order = torch.randperm(n, generator=gen).tolist()
    if lengths is not None and group > 0 and n > batch_size:
        keep = n - n % batch_size
        span = group * batch_size
        order = order[:keep]
        chunks = [order[i : i + span] for i in range(0, keep, span)]
        batches = []
        for chunk in chunks:
            chunk = sorted(chunk, key=lambda i: lengths[i])
            batches += [chunk[i : i + batch_size] for i in range(0, len(chunk), batch_size)]
        perm = torch.randperm(len(batches), generator=gen).tolist()
        return [batches[i] for i in perm]
    batches = [order[i : i + batch_size] for i in range(0, n, batch_size)]
    if len(batches) > 1 and len(batches[-1]) < batch_size:
        batches.pop()
    return batches


def _resume_view(cfg_dict: dict[str, Any]) -> dict[str, Any]:
    return {
        sec: {k: v for k, v in body.items() if (sec, k) not in _RESUME_FREE}
        for sec, body in cfg_dict.items()
    }


def _truncate_jsonl(path: Path, keep) -> None:
    if not path.is_file():
        return
    rows = [json.loads(line) for line in path.read_text().splitlines() if line.strip()]
    path.write_text("".join(json.dumps(r) + "\n" for r in rows if keep(r)))


def build_optimizer(
    model: MultimodalClassifier, t: TrainConfig, device: torch.device
) -> torch.optim.Optimizer:
    """AdamW over the trainable parameters: encoder vs head learning rates, no weight decay
    on biases, norms and the logit scale; the fused kernel on CUDA."""
    no_decay = lambda n, p: p.ndim < 2 or "norm" in n.lower() or n == "logit_scale"  # noqa: E731
    enc_ids = {id(p) for p in model.encoder_parameters()}
    groups: dict[tuple[bool, bool], list] = {}
    for name, p in model.named_parameters():
        if not p.requires_grad:
            continue
        groups.setdefault((id(p) in enc_ids, no_decay(name, p)), []).append(p)
    param_groups = [
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


class EpochBatches:
    """A batch sampler whose batches are set each epoch, so one DataLoader (and its
    persistent workers) serves the whole run; sampling runs in the main process."""

    def __init__(self) -> None:
        self.batches: list[list[int]] = []

    def __iter__(self):
        return iter(list(self.batches))

    def __len__(self) -> int:
        return len(self.batches)


class LossModule(torch.nn.Module):
    """The model and its losses as one module: DDP wraps this, so every trainable parameter
    (encoders, fusion, ITC projections, ITM head) is used inside one DDP forward."""

    def __init__(self, model: MultimodalClassifier, dist: DistInfo):
        super().__init__()
        self.model = model
        self.dist = dist

    def forward(
        self,
        batch: dict[str, torch.Tensor],
        aux: Any,
        class_weight: torch.Tensor | None,
        generator: torch.Generator,
    ) -> tuple[LossTerms, ModelOutput]:
        return compute_losses(self.model, batch, aux, class_weight, generator, self.dist)


class Trainer:
    """Trains a :class:`~mmaux.models.MultimodalClassifier` from a :class:`Config`.

    Under ``torchrun`` (``WORLD_SIZE`` > 1) it trains data-parallel with DDP: each process
    takes its slice of every global batch of ``train.batch_size``; only rank 0 writes
    logs, checkpoints and metrics, evaluates, and runs the callbacks.
    """

    def __init__(
        self,
        cfg: Config,
        manifest: Manifest | None = None,
        callbacks: list[Callback] | None = None,
        final_splits: tuple[str, ...] = ("val", "test"),
    ):
        self.cfg = cfg
        self.manifest = manifest
        self.callbacks = list(callbacks or [])
        self.final_splits = final_splits  # evaluated with the best weights at the end
        self.run_dir = Path(cfg.train.output_dir)
        self.device = resolve_device(cfg.train.device)
        joined_before = torch.distributed.is_initialized()
        self.dist = init_from_env(self.device.type)
        self._owns_group = self.dist.enabled and not joined_before
        if self.dist.enabled and self.device.type == "cuda":
            self.device = torch.device("cuda", self.dist.local_rank)
            torch.cuda.set_device(self.device)
        if not self.dist.is_main:
            self.callbacks = []  # tracking and other side effects happen on rank 0 only
        self.precision = resolve_precision(cfg.train.precision, self.device)
        self._stop = threading.Event()
        self.asm: Assembly | None = None
        self.global_step = 0
        self._use_channels_last = False

    # ------------------------------------------------------------------ control
    def request_stop(self) -> None:
        """Ask the loop to checkpoint and stop after the current optimizer step."""
        self._stop.set()

    def _install_signals(self) -> dict[int, Any]:
        if threading.current_thread() is not threading.main_thread():
            return {}
        previous = {}

        def handler(signum, frame):
            if self._stop.is_set():  # second signal: stop now
                raise KeyboardInterrupt
            log.warning("signal %s: finishing this step, checkpointing, then stopping", signum)
            self._stop.set()

        for sig in (signal.SIGINT, signal.SIGTERM):
            previous[sig] = signal.signal(sig, handler)
        return previous

    # ------------------------------------------------------------------ helpers
    def _optimizer(self, model) -> torch.optim.Optimizer:
        return build_optimizer(model, self.cfg.train, self.device)

    def _rng_state(self, itm_gen: torch.Generator) -> dict[str, torch.Tensor]:
        state = {"torch": torch.get_rng_state(), "itm": itm_gen.get_state()}
        if self.device.type == "cuda":
            state["cuda"] = torch.cuda.get_rng_state(self.device)
        return state

    def _set_rng_state(self, rng: dict[str, torch.Tensor], itm_gen: torch.Generator) -> None:
        torch.set_rng_state(rng["torch"])
        itm_gen.set_state(rng["itm"])
        if "cuda" in rng and self.device.type == "cuda":
            torch.cuda.set_rng_state(rng["cuda"], self.device)

    def _seed_rank_streams(self, itm_gen: torch.Generator, step: int) -> None:
        """Ranks above 0 draw their own dropout masks and ITM pairs (slices of a batch must
        differ), derived from the seed, rank and step; rank 0 keeps the single-process
        streams."""
        if self.dist.rank > 0:
            offset = self.cfg.train.seed + 1_000_003 * self.dist.rank + step
            torch.manual_seed(offset)
            itm_gen.manual_seed(offset + 7919)

    def _batch(self, batch: dict[str, torch.Tensor]) -> dict[str, torch.Tensor]:
        out = {k: v.to(self.device, non_blocking=True) for k, v in batch.items()}
        if self._use_channels_last and "pixel_values" in out:
            out["pixel_values"] = out["pixel_values"].contiguous(memory_format=torch.channels_last)
        return out

    def _channels_last(self, model: MultimodalClassifier) -> None:
        """Channels-last for a convolutional image encoder that runs on CUDA (tensor cores
        read NHWC natively); ViTs and cached features are left alone."""
        enc = model.image_encoder
        self._use_channels_last = bool(
            self.cfg.train.channels_last
            and self.device.type == "cuda"
            and enc is not None
            and any(isinstance(m, torch.nn.Conv2d) for m in enc.modules())
            and not (self.asm is not None and self.asm.features_from_cache)
        )
        if self._use_channels_last:
            enc.to(memory_format=torch.channels_last)  # type: ignore[union-attr]

    # ------------------------------------------------------------------ fit
    def fit(self, resume: bool = False) -> TrainResult:
        """Train (or resume), evaluate the best weights on val and test, write the run dir."""
        cfg, t = self.cfg, self.cfg.train
        main = self.dist.is_main
        if main:
            self.run_dir.mkdir(parents=True, exist_ok=True)
        barrier(self.dist)
        ckpt_dir = self.run_dir / "checkpoint"
        found = find_checkpoint(ckpt_dir) if resume else None
        if resume and found is None:
            log.warning("--resume: no checkpoint in %s; starting a fresh run", ckpt_dir)
        if found is None and main:
            for name in (
                "steps.jsonl",
                "epochs.jsonl",
                "metrics.json",
                "model.safetensors",
                "best.safetensors",
            ):
                (self.run_dir / name).unlink(missing_ok=True)
            shutil.rmtree(ckpt_dir, ignore_errors=True)

        seed_everything(t.seed, deterministic=t.deterministic)
        # Rank 0 builds the on-disk caches first; the others then read them.
        if not main:
            barrier(self.dist)
        self.asm = asm = assemble(
            cfg, self.device, manifest=self.manifest, progress=t.progress and main
        )
        if main:
            barrier(self.dist)
        manifest, model = asm.manifest, asm.model
        if manifest.skipped and main:
            report = write_skip_report(manifest.skipped, self.run_dir / "skipped.jsonl")
            log.warning(
                "skipped %d bad manifest rows (data.on_error=skip); see %s",
                len(manifest.skipped),
                report,
            )
        train_ds = asm.datasets["train"]
        for split in ("train", "val"):
            if len(asm.datasets[split]) == 0:
                raise ValueError(f"{manifest.source}: the {split} split is empty")
        if main:
            (self.run_dir / "config.yaml").write_text(
                yaml.safe_dump(dump_config(cfg), sort_keys=False)
            )
            (self.run_dir / "labels.json").write_text(json.dumps(manifest.labels) + "\n")
        if self.dist.enabled and t.batch_size % self.dist.world_size:
            raise ValueError(
                f"train.batch_size={t.batch_size} must be a multiple of the "
                f"{self.dist.world_size} processes"
            )

        num_classes = len(manifest.labels)
        class_weight = (
            balanced_class_weights(train_ds.labels, num_classes).to(self.device)
            if t.class_weights == "balanced"
            else None
        )
        optimizer = self._optimizer(model)
        # On the training device, so ITM sampling never waits on the host.
        itm_gen = torch.Generator(device=self.device).manual_seed(t.seed + 7919)
        self._seed_rank_streams(itm_gen, step=0)
        state: dict[str, Any] = {
            "epoch": 0,
            "micro_in_epoch": 0,
            "global_step": 0,
            "best_score": -1.0,
            "best_epoch": -1,
            "bad_epochs": 0,
            "sums": {},
            "count": 0,
            "history": [],
            "train_seconds": 0.0,
            "done": False,
            "config": _resume_view(dump_config(cfg)),
        }
        if found is not None:
            rng, saved = load_checkpoint(found, model, optimizer)
            if saved.get("config") != state["config"]:
                raise ValueError(
                    f"{found}: the checkpoint was made with another configuration; resume with "
                    "the same params, or start a fresh run without --resume"
                )
            state.update(saved)
            self._set_rng_state(rng, itm_gen)
            self._seed_rank_streams(itm_gen, step=state["global_step"])  # it saved rank 0's
            step = state["global_step"]
            _truncate_jsonl(self.run_dir / "steps.jsonl", lambda r: r["step"] <= step)
            _truncate_jsonl(self.run_dir / "epochs.jsonl", lambda r: r["epoch"] < state["epoch"])
            log.info("resuming from %s at epoch %d, step %d", found, state["epoch"], step)

        def checkpoint() -> Path:
            if main:
                path = save_checkpoint(ckpt_dir, model, optimizer, self._rng_state(itm_gen), state)
            barrier(self.dist)
            return ckpt_dir if not main else path

        previous = self._install_signals()
        try:
            if not state["done"]:
                self._loop(state, model, optimizer, class_weight, itm_gen, checkpoint)
        finally:
            for sig, h in previous.items():
                signal.signal(sig, h)
        return self._finish(state)

    def _loop(self, state, model, optimizer, class_weight, itm_gen, checkpoint) -> None:
        cfg, t = self.cfg, self.cfg.train
        asm = self.asm
        assert asm is not None
        train_ds = asm.datasets["train"]
        accum = t.grad_accum_steps
        main, dist = self.dist.is_main, self.dist
        step_fn: torch.nn.Module = LossModule(model, dist)
        self._channels_last(model)
        if t.compile:
            step_fn = torch.compile(step_fn)  # type: ignore[assignment]
        if dist.enabled:
            from torch.nn.parallel import DistributedDataParallel

            ids = [self.device.index] if self.device.type == "cuda" else None
            step_fn = DistributedDataParallel(step_fn, device_ids=ids)
        no_sync = getattr(step_fn, "no_sync", None)  # DDP: skip all-reduce while accumulating
        val_loader = asm.loader("val", cfg.eval.batch_size, device=self.device)
        # One loader for the whole run (its workers persist); each epoch sets its batches.
        epoch_plan = EpochBatches()
        train_loader = asm.loader("train", t.batch_size, epoch_plan, device=self.device)
        steps_log = (self.run_dir / "steps.jsonl").open("a") if main else None
        epochs_log = (self.run_dir / "epochs.jsonl").open("a") if main else None
        try:
            while not state["done"] and state["epoch"] < t.epochs:
                epoch = state["epoch"]
                batches = epoch_batches(
                    len(train_ds),
                    t.batch_size,
                    t.seed,
                    epoch,
                    train_ds.text_lengths,
                    t.length_grouping,
                )
                epoch_plan.batches = [shard(b, dist) for b in batches[state["micro_in_epoch"] :]]
                model.train()
                started = time.perf_counter()
                bar = tqdm(
                    total=len(batches),
                    initial=state["micro_in_epoch"],
                    desc=f"epoch {epoch + 1}/{t.epochs}",
                    disable=None if t.progress and main else True,
                    leave=False,
                )
                for batch in train_loader:
                    batch = self._batch(batch)
                    last = state["micro_in_epoch"] + 1 == len(batches)
                    sync = (state["micro_in_epoch"] + 1) % accum == 0 or last
                    with (
                        no_sync() if no_sync is not None and not sync else contextlib.nullcontext()
                    ):
                        with autocast(self.device, self.precision):
                            terms, _ = step_fn(batch, cfg.aux, class_weight, itm_gen)
                        (terms.total / accum).backward()
                    state["micro_in_epoch"] += 1
                    values = mean_over_ranks(terms.as_floats(), dist, self.device)
                    for k, v in values.items():
                        state["sums"][k] = state["sums"].get(k, 0.0) + v
                    state["count"] += 1
                    bar.update(1)
                    bar.set_postfix(loss=f"{values['loss']:.3f}")
                    if not sync:
                        continue
                    if t.max_grad_norm is not None:
                        torch.nn.utils.clip_grad_norm_(
                            [p for p in model.parameters() if p.requires_grad], t.max_grad_norm
                        )
                    optimizer.step()
                    optimizer.zero_grad(set_to_none=True)
                    model.clamp_logit_scale()
                    state["global_step"] += 1
                    self.global_step = step = state["global_step"]
                    record = {"step": step, "epoch": epoch, **values}
                    if model.logit_scale is not None:
                        record["logit_scale"] = float(model.logit_scale.detach().exp())
                    if steps_log is not None:
                        steps_log.write(json.dumps(record) + "\n")
                    for cb in self.callbacks:
                        cb.on_step_end(self, step, values)
                    periodic = t.checkpoint_every_steps and step % t.checkpoint_every_steps == 0
                    stop = any_rank(self._stop.is_set(), dist, self.device)
                    if stop:
                        self._stop.set()
                    if stop or (periodic and not last):
                        state["train_seconds"] += time.perf_counter() - started
                        started = time.perf_counter()
                        if steps_log is not None:
                            steps_log.flush()
                        path = checkpoint()
                        if stop:
                            bar.close()
                            raise TrainingInterrupted(path, step)
                bar.close()
                state["train_seconds"] += time.perf_counter() - started
                if steps_log is not None:
                    steps_log.flush()
                metrics = None
                if main:  # the other ranks wait for rank 0's verdict
                    metrics, _ = evaluate(
                        model, val_loader, asm.manifest.labels, self.device, self.precision
                    )
                metrics = broadcast(metrics, dist)
                train_means = {k: v / max(state["count"], 1) for k, v in state["sums"].items()}
                record = {
                    "epoch": epoch,
                    "step": state["global_step"],
                    **{f"train_{k}": v for k, v in train_means.items()},
                    "val_loss": metrics["loss"],
                    "val_macro_f1": metrics["macro_f1"],
                    "val_weighted_f1": metrics["weighted_f1"],
                    "val_accuracy": metrics["accuracy"],
                }
                improved = metrics["macro_f1"] > state["best_score"] + 1e-12
                if improved:
                    state.update(best_score=metrics["macro_f1"], best_epoch=epoch, bad_epochs=0)
                    if main:
                        save_weights(model, self.run_dir / "best.safetensors")
                else:
                    state["bad_epochs"] += 1
                state["history"].append(record)
                if epochs_log is not None:
                    epochs_log.write(json.dumps(record) + "\n")
                    epochs_log.flush()
                log.info(
                    "epoch %d: train loss %.4f, val macro-F1 %.4f%s",
                    epoch + 1,
                    train_means.get("loss", math.nan),
                    metrics["macro_f1"],
                    " (best)" if improved else "",
                )
                for cb in self.callbacks:
                    cb.on_epoch_end(self, record)
                state.update(epoch=epoch + 1, micro_in_epoch=0, sums={}, count=0)
                if state["bad_epochs"] >= t.patience:
                    log.info("early stopping: no val macro-F1 gain for %d epochs", t.patience)
                    state["done"] = True
                if state["epoch"] >= t.epochs:
                    state["done"] = True
                if any_rank(self._stop.is_set(), dist, self.device) and not state["done"]:
                    raise TrainingInterrupted(checkpoint(), state["global_step"])
                checkpoint()
        finally:
            for fh in (steps_log, epochs_log):
                if fh is not None:
                    fh.close()

    def _finish(self, state: dict[str, Any]) -> TrainResult:
        summary = self._final_metrics(state) if self.dist.is_main else None
        summary = broadcast(summary, self.dist)
        result = TrainResult(
            run_dir=self.run_dir,
            metrics=summary,
            best_epoch=state["best_epoch"] + 1,
            epochs_run=state["epoch"],
            global_step=state["global_step"],
            train_seconds=state["train_seconds"],
            history=list(state["history"]),
        )
        for cb in self.callbacks:
            cb.on_train_end(self, result)
        return result

    def _final_metrics(self, state: dict[str, Any]) -> dict[str, Any]:
        """Rank 0: evaluate the best weights, write metrics.json, drop the checkpoint."""
        asm = self.asm
        assert asm is not None
        model = asm.model
        best = self.run_dir / "best.safetensors"
        load_weights(model, best)
        best.replace(self.run_dir / "model.safetensors")
        metrics: dict[str, Any] = {}
        for split in self.final_splits:
            if len(asm.datasets[split]) == 0:
                continue
            loader = asm.loader(split, self.cfg.eval.batch_size, device=self.device)
            m, pred = evaluate(model, loader, asm.manifest.labels, self.device, self.precision)
            metrics[split] = m
            write_predictions(pred, asm.manifest.labels, self.run_dir / f"predictions_{split}.csv")
        steps = state["global_step"]
        summary = {
            "best_epoch": state["best_epoch"] + 1,
            "epochs_run": state["epoch"],
            "global_step": steps,
            "train_seconds": round(state["train_seconds"], 3),
            "steps_per_second": round(steps / max(state["train_seconds"], 1e-9), 3),
            "device": str(self.device),
            "precision": self.precision,
            **metrics,
        }
        if self.dist.enabled:
            summary["world_size"] = self.dist.world_size
        (self.run_dir / "metrics.json").write_text(json.dumps(summary, indent=2) + "\n")
        shutil.rmtree(self.run_dir / "checkpoint", ignore_errors=True)
        return summary


def train(
    cfg: Config,
    resume: bool = False,
    callbacks: list[Callback] | None = None,
    manifest: Manifest | None = None,
    final_splits: tuple[str, ...] = ("val", "test"),
) -> TrainResult:
    """Train from a configuration; see :class:`Trainer`. ``final_splits`` are evaluated with
    the best weights at the end (tuning passes ``("val",)``: trials never see test)."""
    trainer = Trainer(cfg, manifest, callbacks, final_splits)
    try:
        return trainer.fit(resume=resume)
    finally:
        if trainer._owns_group and torch.distributed.is_initialized():
            torch.distributed.destroy_process_group()
