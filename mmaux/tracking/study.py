"""A study in MLflow: one parent run, one child run per cell (tags model, variant, n_train,
seed), the report and plots on the parent.

The parent's id is kept in ``<study.out_dir>/mlflow.json``: a re-run of an interrupted study
reopens the same parent, and a finished cell that has no child run under it yet (trained
before tracking, or its logging failed) gets one from its run directory, without retraining.
"""

from __future__ import annotations

import contextlib
import json
import logging
from collections.abc import Iterator, Sequence
from pathlib import Path
from typing import Any

from mmaux.config import Config
from mmaux.fsio import atomic_write_text
from mmaux.study.grid import Cell
from mmaux.tracking.callback import MlflowCallback
from mmaux.tracking.results import log_config, log_result, metric_name
from mmaux.tracking.service import MlflowService, first_line, run_tags

log = logging.getLogger(__name__)

PARENT_FILE = "mlflow.json"
CELL_TAG = "mmaux.cell"


class StudyTracker:
    """Trains cells inside MLflow child runs of the study's parent run."""

    def __init__(self, study: Config):
        self.study = study
        self.service = MlflowService(study.tracking)
        self.parent_id: str | None = None

    @property
    def _parent_file(self) -> Path:
        return Path(self.study.study.out_dir) / PARENT_FILE

    def _saved_parent(self) -> str | None:
        """The parent run of an earlier attempt, if it is in this tracking store."""
        path = self._parent_file
        if not path.is_file():
            return None
        saved = json.loads(path.read_text())
        if saved.get("tracking_uri") != self.service.tracking_uri:
            return None
        try:
            run = self.service.client().get_run(saved["run_id"])
        except Exception:  # deleted, or another store
            return None
        return run.info.run_id if run.info.lifecycle_stage == "active" else None

    def attach(self, parent_run_id: str) -> None:
        """Log cells as children of a parent run another process holds open (a worker)."""
        self.service.start()
        self.parent_id = parent_run_id

    @contextlib.contextmanager
    def parent(self) -> Iterator[str]:
        """The study's parent run (reopened when an earlier attempt made it)."""
        import mlflow

        self.service.start()
        s = self.study.study
        tags = {**run_tags(), "stage": "study", "mmaux.study": s.name}
        previous = self._saved_parent()
        if previous is not None:
            log.info("MLflow: continuing the study's parent run %s", previous)
            with self.service.run(s.name, tags=tags, run_id=previous):  # this process owns it
                self.parent_id = previous
                yield previous
            return
        with self.service.run(s.name, tags=tags) as run:
            self.parent_id = run.info.run_id
            self._parent_file.parent.mkdir(parents=True, exist_ok=True)
            atomic_write_text(
                self._parent_file,
                json.dumps({"run_id": self.parent_id, "tracking_uri": self.service.tracking_uri})
                + "\n",
            )
            mlflow.log_params(
                {
                    "study.models": ",".join(s.models),
                    "study.variants": ",".join(s.variants),
                    "study.sizes": ",".join(map(str, s.sizes)),
                    "study.seeds": ",".join(map(str, s.seeds)),
                    "study.baseline": s.baseline,
                    "data.root": str(self.study.data.root),
                }
            )
            yield self.parent_id

    def _child_exists(self, cell: Cell) -> bool:
        assert self.parent_id is not None
        found = self.service.client().search_runs(
            [self.service.experiment_id],
            filter_string=f"tags.`{CELL_TAG}` = '{cell.key}' and "
            f"tags.`mlflow.parentRunId` = '{self.parent_id}' and attributes.status = 'FINISHED'",
            max_results=1,
        )
        return bool(found)

    def __call__(self, cfg: Config, cell: Cell) -> tuple[Any, bool]:
        """Train (or reuse) one cell in a child run of the parent."""
        import mlflow

        from mmaux.training import finished_run, train_stage

        done = finished_run(cfg)
        if done is not None and self._child_exists(cell):
            return done, True
        tags = {**run_tags(), "stage": "study", **cell.tags()}
        active = mlflow.active_run()  # the parent in this thread, or none in a worker thread
        nested = active is not None and active.info.run_id == self.parent_id
        with self.service.run(cell.key, tags=tags, nested=nested, parent_run_id=self.parent_id):
            log_config(cfg)
            if done is None:
                result, reused = train_stage(cfg, callbacks=[MlflowCallback(self.service)])
            else:
                result, reused = done, True
                mlflow.set_tag("mmaux.reused_run", "true")
            try:
                log_result(result)
            except Exception as err:  # local results are complete: keep studying
                log.warning("MLflow: %s not fully logged (%s)", cell.key, first_line(err))
        return result, reused

    def log_report(self, summary: dict[str, Any], files: Sequence[Path]) -> None:
        """Headline metrics and every report file on the parent run."""
        import mlflow

        metrics: dict[str, float] = {}
        for r in summary.get("variants", []):
            base = f"{r['model']}/n_{r['n_train']}/{r['variant']}"
            metrics[metric_name(f"{base}/test_macro_f1")] = float(r["test_macro_f1"])
            metrics[metric_name(f"{base}/val_macro_f1")] = float(r["val_macro_f1"])
        for r in summary.get("vs_baseline", []):
            base = f"{r['model']}/n_{r['n_train']}/{r['variant']}"
            if r.get("mean") is not None:
                metrics[metric_name(f"{base}/delta_vs_{r['baseline']}")] = float(r["mean"])
        try:
            if metrics:
                mlflow.log_metrics(metrics)
            for path in files:
                sub = "report/plots" if path.suffix == ".png" else "report"
                mlflow.log_artifact(str(path), artifact_path=sub)
        except Exception as err:
            log.warning("MLflow: the study report was not fully logged (%s)", first_line(err))
