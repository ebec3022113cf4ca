"""The training loop: AdamW, optional aux losses, early stopping, exact resume.

A run directory (``train.output_dir``) receives:

* ``config.yaml``, ``labels.json``: what the run was;
* ``steps.jsonl``: the loss terms averaged over every ``train.log_every_steps`` optimizer
  steps; ``epochs.jsonl``: per-epoch means of every term and the validation metrics;
* ``checkpoint/``: the full training state, written at each epoch end, every
  ``train.checkpoint_every_steps`` steps and when the run is interrupted (Ctrl-C/SIGTERM);
  removed once the run completes;
* ``model.safetensors``: the best weights (by validation macro-F1);
* ``metrics.json`` and ``predictions_{val,test}.csv``: the final evaluation.

Batch order is a pure function of (seed, epoch), and the RNG states are checkpointed, so a
resumed run reproduces the uninterrupted run exactly on CPU. One step is
:func:`mmaux.train_step.forward_backward` then :func:`~mmaux.train_step.optimizer_step`;
the loss terms stay on the device until a log point. Logging, early stopping and
checkpointing are callbacks (:mod:`mmaux.callbacks`).

Nothing is lost on failure: an unfinished run's checkpoint is never overwritten by a fresh
run (pass ``resume``), and a fresh run moves the previous outputs aside only once its data
and model are loaded, deleting them at its first checkpoint and restoring them if it fails
before.
"""

from __future__ import annotations

import contextlib
import json
import logging
import shutil
import signal
import threading
import time
from collections.abc import Sequence
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any

import torch
import yaml
from tqdm.auto import tqdm

from mmaux.assemble import Assembly, assemble
from mmaux.callbacks import Callback, Checkpointer, EarlyStopping, RunLog
from mmaux.checkpoint import (
    find_checkpoint,
    load_checkpoint,
    load_weights,
    rng_state,
    save_checkpoint,
    save_weights,
    set_rng_state,
)
from mmaux.config import (
    RESULT_NEUTRAL_KEYS,
    Config,
    ConfigError,
    config_from_dict,
    dump_config,
    without_keys,
)
from mmaux.data.manifest import Manifest, write_skip_report
from mmaux.distributed import any_rank, barrier, broadcast, init_from_env, shard
from mmaux.evaluation import DIAGNOSTICS, evaluate, evaluate_splits
from mmaux.fsio import atomic_write_text, unique_tmp
from mmaux.losses import balanced_class_weights
from mmaux.runtime import resolve_device, resolve_precision, seed_everything
from mmaux.train_step import (
    LossMeter,
    NonFiniteLoss,
    build_optimizer,
    forward_backward,
    itm_generator,
    optimizer_step,
    training_step_fn,
)

log = logging.getLogger(__name__)

# Keys that may differ between an interrupted run and its resumption.
_RESUME_FREE = RESULT_NEUTRAL_KEYS | {
    ("train", k)
    for k in "epochs patience compile channels_last deterministic checkpoint_every_steps".split()
}
_RESUME_FREE |= {("data", "check_images"), ("data", "on_error")}
_RESUME_FREE |= {("eval", "batch_size"), ("eval", "split")}
_OUTPUTS = (  # a finished run's files, kept until a fresh run in its directory checkpoints
    *("config.yaml", "labels.json", "skipped.jsonl", "steps.jsonl", "epochs.jsonl"),
    *("metrics.json", "model.safetensors", "best.safetensors"),
    *("predictions_val.csv", "predictions_test.csv", "predictions_train.csv"),
)

__all__ = [
    "Callback",
    "NonFiniteLoss",
    "Trainer",
    "TrainResult",
    "TrainingInterrupted",
    "finished_run",
    "train",
    "train_stage",
]


class TrainingInterrupted(RuntimeError):
    """Training stopped on request; the state was checkpointed and can be resumed."""

    def __init__(self, checkpoint: Path, step: int):
        self.checkpoint, self.step = checkpoint, step
        super().__init__(
            f"training interrupted at step {step}; state saved to {checkpoint}. "
            "Run again with --resume to continue."
        )


class CheckpointExists(FileExistsError):
    """A fresh run was asked for where an unfinished run's checkpoint lies."""


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

    @classmethod
    def of(cls, run_dir: Path, metrics: dict[str, Any], st: TrainState) -> TrainResult:
        return cls(
            run_dir, metrics, st.best_epoch + 1, st.epoch, st.global_step, st.train_seconds,
            list(st.history),
        )  # fmt: skip


@dataclass
class TrainState:
    """Everything a checkpoint needs besides tensors (saved as ``state.json``)."""

    epoch: int = 0
    micro_in_epoch: int = 0  # micro-batches done in the current epoch
    global_step: int = 0  # optimizer steps done
    best_score: float = -1.0
    best_epoch: int = -1
    bad_epochs: int = 0
    meter: dict[str, Any] = field(default_factory=dict)  # LossMeter.state()
    history: list[dict[str, Any]] = field(default_factory=list)
    train_seconds: float = 0.0
    done: bool = False
    config: dict[str, Any] = field(default_factory=dict)  # the resume-relevant config

    def summary(self) -> dict[str, Any]:
        """The counters metrics.json reports."""
        return {
            "best_epoch": self.best_epoch + 1,
            "epochs_run": self.epoch,
            "global_step": self.global_step,
            "train_seconds": round(self.train_seconds, 3),
            "steps_per_second": round(self.global_step / max(self.train_seconds, 1e-9), 3),
        }


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
        batches = []
        for start in range(0, keep, span):
            chunk = sorted(order[start : min(start + span, keep)], key=lambda i: lengths[i])
            batches += [chunk[i : i + batch_size] for i in range(0, len(chunk), batch_size)]
        perm = torch.randperm(len(batches), generator=gen).tolist()
        return [batches[i] for i in perm]
    batches = [order[i : i + batch_size] for i in range(0, n, batch_size)]
    if len(batches) > 1 and len(batches[-1]) < batch_size:
        batches.pop()
    return batches


class EpochBatches:
    """A batch sampler whose batches are set each epoch, so one DataLoader (and its
    persistent workers) serves the whole run; sampling runs in the main process."""

    def __init__(self) -> None:
        self.batches: list[list[int]] = []

    def __iter__(self):
        return iter(list(self.batches))

    def __len__(self) -> int:
        return len(self.batches)


def install_stop_signals(stop: threading.Event) -> dict[int, Any]:
    """SIGINT/SIGTERM set ``stop`` (the loop checkpoints and exits); a second one raises
    KeyboardInterrupt at once. Returns the previous handlers (main thread only)."""
    if threading.current_thread() is not threading.main_thread():
        return {}

    def handler(signum, frame):
        if stop.is_set():
            raise KeyboardInterrupt
        log.warning("signal %s: finishing this step, checkpointing, then stopping", signum)
        stop.set()

    return {sig: signal.signal(sig, handler) for sig in (signal.SIGINT, signal.SIGTERM)}


def _resume_view(cfg_dict: dict[str, Any]) -> dict[str, Any]:
    return without_keys(cfg_dict, _RESUME_FREE)


class _PreviousOutputs:
    """A finished run's outputs, moved aside while a fresh run starts in its directory;
    deleted at the fresh run's first checkpoint, restored if it fails before."""

    def __init__(self, run_dir: Path):
        self.run_dir, self.aside = run_dir, unique_tmp(run_dir / "previous")
        for name in _OUTPUTS:
            if (run_dir / name).exists():
                self.aside.mkdir(exist_ok=True)
                (run_dir / name).replace(self.aside / name)

    def discard(self) -> None:
        shutil.rmtree(self.aside, ignore_errors=True)

    def restore(self) -> None:
        if self.aside.is_dir():
            for path in self.aside.iterdir():
                path.replace(self.run_dir / path.name)
            self.aside.rmdir()


class Trainer:
    """Trains a :class:`~mmaux.models.MultimodalModel` from a :class:`Config`.

    Under ``torchrun`` (``WORLD_SIZE`` > 1) it trains data-parallel with DDP: each process
    takes its slice of every global batch of ``train.batch_size``; only rank 0 writes
    logs, checkpoints and metrics, evaluates, and runs the user callbacks.
    """

    def __init__(
        self,
        cfg: Config,
        manifest: Manifest | None = None,
        callbacks: list[Callback] | None = None,
        final_splits: tuple[str, ...] = ("val", "test"),
    ):
        self.cfg, self.manifest, self.final_splits = cfg, manifest, final_splits
        self.run_dir = Path(cfg.train.output_dir)
        self.device = resolve_device(cfg.train.device)
        joined_before = torch.distributed.is_initialized()
        self.dist = init_from_env(self.device.type)
        self.owns_group = self.dist.enabled and not joined_before
        if self.dist.enabled and self.device.type == "cuda":
            self.device = torch.device("cuda", self.dist.local_rank)
            torch.cuda.set_device(self.device)
        self.precision = resolve_precision(cfg.train.precision, self.device)
        main = self.dist.is_main
        self._log = RunLog(self.run_dir, enabled=main)
        user = list(callbacks or []) if main else []  # side effects on rank 0 only
        self.callbacks: list[Callback] = [self._log, EarlyStopping(cfg.train.patience)]
        self.callbacks += [*user, Checkpointer(cfg.train.checkpoint_every_steps)]
        self.state = TrainState(config=_resume_view(dump_config(cfg)))
        self.meter = LossMeter(self.device)
        self.asm: Assembly | None = None
        self.epoch_length = 0  # micro-batches in the current epoch
        self._stop = threading.Event()
        self._previous: _PreviousOutputs | None = None

    @property
    def global_step(self) -> int:
        return self.state.global_step

    def request_stop(self) -> None:
        """Ask the loop to checkpoint and stop after the current optimizer step."""
        self._stop.set()

    # ------------------------------------------------------------------ set-up
    def _setup(self, resume: bool) -> Path | None:
        """Load data and model (rank 0 first: it builds the caches); return the checkpoint
        to resume from. Refuses to start fresh over an unfinished run."""
        t, main = self.cfg.train, self.dist.is_main
        found = find_checkpoint(self.run_dir / "checkpoint")
        if found is not None and not resume:
            raise CheckpointExists(
                f"{self.run_dir}: holds an unfinished run's checkpoint ({found}); pass "
                "--resume to continue it, or delete it / choose another output directory"
            )
        if resume and found is None:
            log.info("--resume: no checkpoint in %s; starting a fresh run", self.run_dir)
        seed_everything(t.seed, deterministic=t.deterministic)
        if not main:
            barrier(self.dist)
        self.asm = assemble(
            self.cfg, self.device, manifest=self.manifest, progress=t.progress and main
        )
        if main:
            barrier(self.dist)
        manifest = self.asm.manifest
        for split in ("train", "val"):
            if len(self.asm.datasets[split]) == 0:
                raise ValueError(f"{manifest.source}: the {split} split is empty")
        if self.dist.enabled and t.batch_size % self.dist.world_size:
            raise ValueError(
                f"train.batch_size={t.batch_size} must be a multiple of the "
                f"{self.dist.world_size} processes"
            )
        if main:
            self.run_dir.mkdir(parents=True, exist_ok=True)
            if found is None:
                self._previous = _PreviousOutputs(self.run_dir)
            if manifest.skipped:
                report = write_skip_report(manifest.skipped, self.run_dir / "skipped.jsonl")
                log.warning("skipped %d bad manifest rows; see %s", len(manifest.skipped), report)
            config = yaml.safe_dump(dump_config(self.cfg), sort_keys=False)
            atomic_write_text(self.run_dir / "config.yaml", config)
            atomic_write_text(self.run_dir / "labels.json", json.dumps(manifest.labels) + "\n")
        return found

    def _seed_rank_streams(self, step: int) -> None:
        """Ranks above 0 draw their own dropout masks and ITM pairs (slices of a batch must
        differ), derived from the seed, rank and step; rank 0 keeps the single-process
        streams."""
        if self.dist.rank > 0:
            offset = self.cfg.train.seed + 1_000_003 * self.dist.rank + step
            torch.manual_seed(offset)
            self.itm_gen.manual_seed(offset + 7919)

    def _restore(self, found: Path) -> None:
        rng, saved = load_checkpoint(found, self.asm.model, self.optimizer)  # type: ignore[union-attr]
        if saved.get("config") != self.state.config:
            raise ValueError(
                f"{found}: the checkpoint was made with another configuration; resume with "
                "the same params, or start a fresh run without --resume"
            )
        try:
            self.state = TrainState(**saved)
        except TypeError:
            raise ValueError(f"{found}: written by another mmaux version; start afresh") from None
        self.meter.load_state(self.state.meter)
        set_rng_state(rng, self.itm_gen, self.device)
        self._seed_rank_streams(self.state.global_step)  # the checkpoint holds rank 0's
        log.info("resuming from %s at epoch %d, step %d", found, self.state.epoch, self.global_step)

    def save_checkpoint(self) -> Path:
        """Write the full training state (rank 0; every rank takes part)."""
        self.state.meter = self.meter.state(self.dist)
        path = self.run_dir / "checkpoint"
        if self.dist.is_main:
            state = asdict(self.state)
            rng = rng_state(self.itm_gen, self.device)
            save_checkpoint(path, self.asm.model, self.optimizer, rng, state)  # type: ignore[union-attr]
            if self._previous is not None:
                self._previous.discard()
                self._previous = None
        barrier(self.dist)
        return path

    # ------------------------------------------------------------------ fit
    def fit(self, resume: bool = False) -> TrainResult:
        """Train (or resume), evaluate the best weights on val and test, write the run dir."""
        found = self._setup(resume)
        assert self.asm is not None
        model, t = self.asm.model, self.cfg.train
        self.optimizer = build_optimizer(model, t, self.device)
        self.itm_gen = itm_generator(self.device, t.seed)
        self._seed_rank_streams(step=0)
        if found is not None:
            self._restore(found)
        previous = install_stop_signals(self._stop)
        try:
            for cb in self.callbacks:
                cb.on_fit_start(self)
            if not self.state.done:
                self._run_epochs()
            return self._finish()
        except BaseException:
            if self._previous is not None:  # failed before its first checkpoint
                self._previous.restore()
            raise
        finally:
            self._log.close()
            for sig, handler in previous.items():
                signal.signal(sig, handler)

    def _run_epochs(self) -> None:
        asm, t, model = self.asm, self.cfg.train, self.asm.model  # type: ignore[union-attr]
        asm.prepare_channels_last(self.device)  # type: ignore[union-attr]
        step_fn = training_step_fn(model, self.dist, self.device, t.compile)
        train_ds = asm.datasets["train"]  # type: ignore[union-attr]
        class_weight = None
        if t.class_weights == "balanced":
            num_classes = len(asm.manifest.labels)  # type: ignore[union-attr]
            class_weight = balanced_class_weights(train_ds.labels, num_classes).to(self.device)
        plan = EpochBatches()  # one loader for the run (its workers persist)
        loader = asm.loader("train", t.batch_size, plan, device=self.device)  # type: ignore[union-attr]
        val_loader = asm.loader("val", self.cfg.eval.batch_size, device=self.device)  # type: ignore[union-attr]
        trainable = [p for p in model.parameters() if p.requires_grad]
        while not self.state.done and self.state.epoch < t.epochs:
            st = self.state
            batches = epoch_batches(
                len(train_ds), t.batch_size, t.seed, st.epoch, train_ds.text_lengths,
                t.length_grouping,
            )  # fmt: skip
            self.epoch_length = len(batches)
            plan.batches = [shard(b, self.dist) for b in batches[st.micro_in_epoch :]]
            self._train_epoch(step_fn, loader, class_weight, trainable)
            self._validate_epoch(val_loader)

    def _train_epoch(self, step_fn, loader, class_weight, trainable) -> None:
        """One epoch's remaining micro-batches; the loss is read only at log points."""
        t, st, model = self.cfg.train, self.state, self.asm.model  # type: ignore[union-attr]
        no_sync = getattr(step_fn, "no_sync", None)  # DDP: skip all-reduce while accumulating
        model.train()
        started = time.perf_counter()
        bar = tqdm(
            total=self.epoch_length,
            initial=st.micro_in_epoch,
            desc=f"epoch {st.epoch + 1}/{t.epochs}",
            disable=None if t.progress and self.dist.is_main else True,
            leave=False,
        )
        for batch in loader:
            st.micro_in_epoch += 1
            last = st.micro_in_epoch == self.epoch_length
            sync = st.micro_in_epoch % t.grad_accum_steps == 0 or last
            quiet = no_sync() if no_sync is not None and not sync else contextlib.nullcontext()
            with quiet:
                terms = forward_backward(
                    step_fn, self.asm.to_device(batch, self.device), self.cfg.aux,  # type: ignore[union-attr]
                    class_weight, self.itm_gen, self.device, self.precision, t.grad_accum_steps,
                )  # fmt: skip
            self.meter.add(terms)
            bar.update(1)
            if not sync:
                continue
            optimizer_step(model, self.optimizer, trainable, t.max_grad_norm)
            st.global_step += 1
            agreed = False
            if st.global_step % t.log_every_steps == 0 or last:
                try:
                    values, agreed = self.meter.read(
                        self.dist, self._stop.is_set(), model.logit_scale
                    )
                except NonFiniteLoss as err:
                    raise NonFiniteLoss(
                        f"{self.run_dir}: by step {st.global_step}, {err}"
                    ) from None
                bar.set_postfix(loss=f"{values['loss']:.3f}")
                for cb in self.callbacks:
                    cb.on_log(self, st.global_step, values)
            for cb in self.callbacks:
                cb.on_step_end(self, st.global_step)
            # A single process sees its stop flag for free; ranks agree at log points only.
            if agreed if self.dist.enabled else self._stop.is_set():
                self._stop.set()
                st.train_seconds += time.perf_counter() - started
                bar.close()
                raise TrainingInterrupted(self.save_checkpoint(), st.global_step)
        bar.close()
        st.train_seconds += time.perf_counter() - started

    def _validate_epoch(self, val_loader) -> None:
        """Score val (rank 0), keep the best weights, run the epoch-end callbacks."""
        st, asm = self.state, self.asm
        assert asm is not None
        metrics = None
        if self.dist.is_main:  # the other ranks wait for rank 0's verdict
            metrics, _ = evaluate(
                asm.model, val_loader, asm.manifest.labels, self.device, self.precision,
                embeddings=True,
            )  # fmt: skip
        metrics = broadcast(metrics, self.dist)
        means = self.meter.epoch_means(self.dist)
        record = {
            "epoch": st.epoch,
            "step": st.global_step,
            **{f"train_{k}": v for k, v in means.items()},
            **{f"val_{k}": metrics[k] for k in ("loss", "macro_f1", "weighted_f1", "accuracy")},
            **{f"val_{k}": metrics[k] for k in DIAGNOSTICS if k in metrics},
        }
        if metrics["macro_f1"] > st.best_score + 1e-12:
            st.best_score, st.best_epoch = metrics["macro_f1"], st.epoch
            if self.dist.is_main:
                save_weights(asm.model, self.run_dir / "best.safetensors")
        st.history.append(record)
        st.epoch, st.micro_in_epoch = st.epoch + 1, 0
        st.done = st.done or st.epoch >= self.cfg.train.epochs
        for cb in self.callbacks:  # early stopping may end the run; the checkpointer is last
            cb.on_epoch_end(self, record)
        if any_rank(self._stop.is_set(), self.dist, self.device) and not st.done:
            raise TrainingInterrupted(self.run_dir / "checkpoint", st.global_step)

    # ------------------------------------------------------------------ finish
    def _finish(self) -> TrainResult:
        summary = broadcast(self._final_metrics() if self.dist.is_main else None, self.dist)
        result = TrainResult.of(self.run_dir, summary, self.state)
        for cb in self.callbacks:
            cb.on_train_end(self, result)
        return result

    def _final_metrics(self) -> dict[str, Any]:
        """Rank 0: evaluate the best weights, write metrics.json, drop the checkpoint."""
        asm, st = self.asm, self.state
        assert asm is not None
        best = self.run_dir / "best.safetensors"
        load_weights(asm.model, best)
        best.replace(self.run_dir / "model.safetensors")
        metrics = evaluate_splits(
            asm, self.final_splits, self.cfg.eval.batch_size, self.device, self.precision,
            self.run_dir,
        )  # fmt: skip
        summary = {
            **st.summary(),
            "n_train_posts": len(asm.datasets["train"]),
            "device": str(self.device),
            "precision": self.precision,
        }
        if self.dist.enabled:
            summary["world_size"] = self.dist.world_size
        summary.update(metrics)
        text = json.dumps(summary, indent=2, allow_nan=False) + "\n"
        atomic_write_text(self.run_dir / "metrics.json", text)
        shutil.rmtree(self.run_dir / "checkpoint", ignore_errors=True)
        return summary


def finished_run(cfg: Config) -> TrainResult | None:
    """The finished run in ``train.output_dir`` if it was trained with this configuration
    (up to keys that cannot change the result), else None."""
    run_dir = Path(cfg.train.output_dir)
    files = [run_dir / n for n in ("metrics.json", "model.safetensors", "config.yaml")]
    if not all(f.is_file() for f in files) or find_checkpoint(run_dir / "checkpoint"):
        return None
    try:  # through the schema: keys added since the run take their defaults
        saved = dump_config(config_from_dict(yaml.safe_load(files[2].read_text()) or {}))
    except ConfigError:  # a key since removed or renamed: not comparable
        return None
    if without_keys(saved, RESULT_NEUTRAL_KEYS) != without_keys(
        dump_config(cfg), RESULT_NEUTRAL_KEYS
    ):
        return None
    metrics = json.loads(files[0].read_text())
    epochs = run_dir / "epochs.jsonl"
    history = [json.loads(x) for x in epochs.read_text().splitlines()] if epochs.is_file() else []
    return TrainResult(
        run_dir, metrics, metrics["best_epoch"], metrics["epochs_run"], metrics["global_step"],
        metrics["train_seconds"], history,
    )  # fmt: skip


def train_stage(cfg: Config, callbacks: list[Callback] | None = None) -> tuple[TrainResult, bool]:
    """Training for a pipeline stage that is re-run after failures and param changes: a
    finished run of this configuration is reused (returns ``(result, True)``), an unfinished
    one resumed, and a checkpoint made with another configuration (params changed after a
    kill) replaced by a fresh run, with a warning."""
    if (done := finished_run(cfg)) is not None:
        log.info("%s: reusing the finished run of this configuration", done.run_dir)
        return done, True
    ckpt = find_checkpoint(Path(cfg.train.output_dir) / "checkpoint")
    if ckpt is not None:
        saved = json.loads((ckpt / "state.json").read_text()).get("config")
        if saved != _resume_view(dump_config(cfg)):
            log.warning("%s: made with other params; starting a fresh run", ckpt)
            shutil.rmtree(ckpt)
    return train(cfg, resume=True, callbacks=callbacks), False


def train(
    cfg: Config,
    resume: bool = False,
    callbacks: list[Callback] | None = None,
    manifest: Manifest | None = None,
    final_splits: tuple[str, ...] = ("val", "test"),
) -> TrainResult:
    """Train from a configuration; see :class:`Trainer`. ``final_splits`` are evaluated with
    the best weights at the end (tuning passes ``("val",)``: trials never see test). With
    ``resume`` an unfinished run continues from its checkpoint (or starts when none)."""
    trainer = Trainer(cfg, manifest, callbacks, final_splits)
    try:
        return trainer.fit(resume=resume)
    finally:
        if trainer.owns_group and torch.distributed.is_initialized():
            torch.distributed.destroy_process_group()
