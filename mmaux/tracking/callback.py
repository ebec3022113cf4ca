"""The training callback that logs to MLflow, and never stops or stalls training.

Metrics wait in a bounded buffer (the oldest are dropped, and counted, when it is full) and
go out in ``log_batch`` calls. When the server fails, the callback warns once for the
outage, keeps buffering, and tries again no sooner than ``tracking.retry_interval_s``
later; each try is bounded by the service's request limits (``tracking.request_timeout_s``,
``tracking.max_retries``). The run directory's ``steps.jsonl`` and ``epochs.jsonl`` hold
every value in any case.
"""

from __future__ import annotations

import itertools
import logging
import time
from collections import deque
from typing import TYPE_CHECKING, Any

from mmaux.callbacks import Callback
from mmaux.tracking.results import metric_name, number
from mmaux.tracking.service import MlflowService, active_run_id, bound_requests, first_line

if TYPE_CHECKING:
    from mmaux.training import Trainer, TrainResult

log = logging.getLogger(__name__)

MAX_METRICS_PER_BATCH = 1000  # MLflow's log_batch limit


def epoch_metric_name(key: str) -> str:
    """``train_ce`` -> ``train/ce``, ``val_macro_f1`` -> ``val/macro_f1``."""
    for split in ("train", "val", "test"):
        if key.startswith(split + "_"):
            return metric_name(f"{split}/{key[len(split) + 1 :]}")
    return metric_name(key)


class MlflowCallback(Callback):
    """Logs the loss terms at each :meth:`on_log` (``train/step/<term>``, step = global
    step) and every epoch-record key (``train/ce``, ``val/macro_f1``, step = epoch + 1).

    Metrics are sent every ``flush_every`` :meth:`on_log` calls, at each epoch end and at
    the end of training. ``run_id`` defaults to the run active at construction."""

    def __init__(self, service: MlflowService, run_id: str | None = None, flush_every: int = 10):
        bound_requests(service.cfg)
        self.service = service
        self.run_id = run_id or active_run_id()
        self.flush_every = max(1, int(flush_every))
        self.retry_interval_s = float(service.cfg.retry_interval_s)
        self._buffer: deque[tuple[str, float, int, int]] = deque(maxlen=service.cfg.buffer_size)
        self.dropped = 0  # metrics lost to a full buffer
        self.last_error: BaseException | None = None
        self._calls = 0
        self._down_since: float | None = None  # time.monotonic() of the outage's first failure
        self._next_try = 0.0

    @property
    def pending(self) -> int:
        """Metrics buffered, not yet sent."""
        return len(self._buffer)

    def _add(self, key: str, value: Any, step: int, timestamp_ms: int) -> None:
        if (v := number(value)) is None:
            return
        if len(self._buffer) == self._buffer.maxlen:
            self.dropped += 1
        self._buffer.append((key, v, timestamp_ms, step))

    def flush(self, force: bool = False) -> bool:
        """Send the buffered metrics; True when none are left. Never raises. While the
        server is down, tries only every ``retry_interval_s`` unless ``force``."""
        if not self._buffer:
            return True
        now = time.monotonic()
        if self._down_since is not None and not force and now < self._next_try:
            return False
        try:
            from mlflow.entities import Metric

            client = self.service.client()
            while self._buffer:
                chunk = list(itertools.islice(self._buffer, MAX_METRICS_PER_BATCH))
                metrics = [Metric(key=k, value=v, timestamp=t, step=s) for k, v, t, s in chunk]
                client.log_batch(self.run_id, metrics=metrics)
                for _ in chunk:
                    self._buffer.popleft()
        except Exception as err:
            self.last_error = err
            self._next_try = time.monotonic() + self.retry_interval_s
            if self._down_since is None:
                self._down_since = now
                log.warning(
                    "MLflow run %s: cannot log metrics (%s); training continues, buffering "
                    "up to %d metrics and retrying every %.0f s",
                    self.run_id,
                    first_line(err),
                    self._buffer.maxlen,
                    self.retry_interval_s,
                )
            return False
        if self._down_since is not None:
            log.warning(
                "MLflow run %s: logging again after %.0f s (%d metrics dropped meanwhile)",
                self.run_id,
                now - self._down_since,
                self.dropped,
            )
            self._down_since = None
        return True

    def on_log(self, trainer: Trainer, step: int, values: dict[str, float]) -> None:
        now = int(time.time() * 1000)
        for key, value in values.items():
            self._add(f"train/step/{metric_name(key)}", value, step, now)
        self._calls += 1
        if self._calls % self.flush_every == 0:
            self.flush()

    def on_epoch_end(self, trainer: Trainer, record: dict[str, Any]) -> None:
        now = int(time.time() * 1000)
        step = int(record["epoch"]) + 1
        for key, value in record.items():
            if key not in ("epoch", "step"):
                self._add(epoch_metric_name(key), value, step, now)
        self.flush()

    def on_train_end(self, trainer: Trainer, result: TrainResult) -> None:
        if not self.flush(force=True) or self.dropped:
            log.warning(
                "MLflow run %s: %d metrics not sent, %d dropped (%s); %s holds them all",
                self.run_id,
                self.pending,
                self.dropped,
                first_line(self.last_error) if self.last_error else "buffer full",
                result.run_dir,
            )
