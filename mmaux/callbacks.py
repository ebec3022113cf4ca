"""Training callbacks: the hooks the training loop calls, and the built-in ones.

A callback sees only values that are already on the host: the loop reads the loss terms
from the device once every ``train.log_every_steps`` optimizer steps and hands the means
over that interval to :meth:`Callback.on_log`. A callback must never read a model tensor
itself (that would add a host synchronisation to the step).
"""

from __future__ import annotations

from typing import TYPE_CHECKING, Any

if TYPE_CHECKING:
    from mmaux.training import Trainer, TrainResult


class Callback:
    """Hooks into training; subclass and override what you need (e.g. experiment tracking).

    Callbacks run on rank 0 only. Raising from a hook stops training (tuning's pruner does
    this); a tracking callback should swallow its own I/O errors instead."""

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
