"""Training callbacks: the hooks the training loop calls, and the built-in ones.

A callback sees only values that are already on the host: the loop reads the loss terms
from the device once every ``train.log_every_steps`` optimizer steps and hands the means
over that interval to :meth:`Callback.on_log`. A callback must never read a model tensor
itself (that would add a host synchronisation to the step).
"""

from __future__ import annotations

import json
import logging
import math
from pathlib import Path
from typing import IO, TYPE_CHECKING, Any

if TYPE_CHECKING:
    from mmaux.training import Trainer, TrainResult


class Callback:
    """Hooks into training; subclass and override what you need (e.g. experiment tracking).

    User callbacks run on rank 0 only (the built-in ones below run on every rank). Raising
    from a hook stops training (tuning's pruner does this); a tracking callback should
    swallow its own I/O errors instead."""

    def on_fit_start(self, trainer: Trainer) -> None:
        """Once the data, model and (when resuming) the checkpoint are loaded."""

    def on_step_end(self, trainer: Trainer, step: int) -> None:
        """After every optimizer step: host-side counters only (``trainer.state``)."""

    def on_log(self, trainer: Trainer, step: int, values: dict[str, float]) -> None:
        """Every ``train.log_every_steps`` optimizer steps and at each epoch's last step:
        the means of the loss terms (``loss``, ``ce``, ``itc``, ``itm``, ``itm_acc``) over
        the steps since the previous call, and ``logit_scale`` (exp of the learnt ITC
        scale) after step ``step``."""

    def on_epoch_end(self, trainer: Trainer, record: dict[str, Any]) -> None:
        """After each epoch's validation, with the epoch record (``epoch``, ``step``,
        ``train_<term>`` means, ``val_loss``, ``val_macro_f1``, ``val_weighted_f1``,
        ``val_accuracy``)."""

    def on_train_end(self, trainer: Trainer, result: TrainResult) -> None:
        """After the final evaluation."""


log = logging.getLogger("mmaux.training")


def _truncate_jsonl(path: Path, keep: Any) -> None:
    if path.is_file():
        rows = [json.loads(line) for line in path.read_text().splitlines() if line.strip()]
        path.write_text("".join(json.dumps(r) + "\n" for r in rows if keep(r)))


class RunLog(Callback):
    """``steps.jsonl`` (one row per log point) and ``epochs.jsonl`` (one per epoch) in the run
    directory, and a log line per epoch; rank 0 writes, a resumed run drops the rows after
    its checkpoint."""

    def __init__(self, run_dir: Path, enabled: bool = True):
        self.run_dir, self.enabled = Path(run_dir), enabled
        self._steps: IO[str] | None = None
        self._epochs: IO[str] | None = None

    def on_fit_start(self, trainer: Trainer) -> None:
        if not self.enabled:
            return
        st = trainer.state
        _truncate_jsonl(self.run_dir / "steps.jsonl", lambda r: r["step"] <= st.global_step)
        _truncate_jsonl(self.run_dir / "epochs.jsonl", lambda r: r["epoch"] < st.epoch)
        self._steps = (self.run_dir / "steps.jsonl").open("a")
        self._epochs = (self.run_dir / "epochs.jsonl").open("a")

    def on_log(self, trainer: Trainer, step: int, values: dict[str, float]) -> None:
        if self._steps is not None:
            row = {"step": step, "epoch": trainer.state.epoch, **values}
            self._steps.write(json.dumps(row, allow_nan=False) + "\n")
            self._steps.flush()

    def on_epoch_end(self, trainer: Trainer, record: dict[str, Any]) -> None:
        best = trainer.state.best_epoch == record["epoch"]
        log.info(
            "epoch %d: train loss %.4f, val macro-F1 %.4f%s",
            record["epoch"] + 1,
            record.get("train_loss", math.nan),
            record["val_macro_f1"],
            " (best)" if best else "",
        )
        if self._epochs is not None:
            self._epochs.write(json.dumps(record, allow_nan=False) + "\n")
            self._epochs.flush()

    def close(self) -> None:
        for fh in (self._steps, self._epochs):
            if fh is not None:
                fh.close()
        self._steps = self._epochs = None


class EarlyStopping(Callback):
    """Stops training after ``patience`` epochs without a val macro-F1 gain (the counter
    lives in ``trainer.state`` so a resumed run keeps it)."""

    def __init__(self, patience: int):
        self.patience = patience

    def on_epoch_end(self, trainer: Trainer, record: dict[str, Any]) -> None:
        st = trainer.state
        st.bad_epochs = 0 if st.best_epoch == record["epoch"] else st.bad_epochs + 1
        if st.bad_epochs >= self.patience and not st.done:
            log.info("early stopping: no val macro-F1 gain for %d epochs", self.patience)
            st.done = True


class Checkpointer(Callback):
    """Checkpoints at each epoch end and every ``every`` optimizer steps (0: epoch ends
    only). Runs last, on every rank (saving is a collective under DDP)."""

    def __init__(self, every: int = 0):
        self.every = every

    def on_step_end(self, trainer: Trainer, step: int) -> None:
        mid_epoch = trainer.state.micro_in_epoch < trainer.epoch_length
        if self.every and step % self.every == 0 and mid_epoch:
            trainer.save_checkpoint()

    def on_epoch_end(self, trainer: Trainer, record: dict[str, Any]) -> None:
        trainer.save_checkpoint()
