"""The one place that talks to MLflow: tracking URI, request bounds, experiment, runs.

Every run records the process that owns it (tag ``mmaux.owner``); starting a run first
closes the experiment's RUNNING runs whose owner process is gone as KILLED, with their
nested runs, so a stage killed by SIGKILL, OOM or a lost node leaves no run RUNNING for
ever. Ending a run never raises: a tracking server that died must not hide the error
(or the result) of the block.
"""

from __future__ import annotations

import json
import logging
import os
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import TYPE_CHECKING

import yaml

from mmaux.config import TrackingConfig
from mmaux.owner import current_owner, owner_alive

if TYPE_CHECKING:
    import mlflow

log = logging.getLogger(__name__)

DEFAULT_TRACKING_URI = "sqlite:///mlflow.db"
OWNER_TAG = "mmaux.owner"
_REMOTE_SCHEMES = ("http", "https", "databricks", "databricks-uc", "uc")


class TrackingError(RuntimeError):
    """MLflow could not record a finished run; the local run directory is intact."""


def resolve_tracking_uri(cfg: TrackingConfig) -> str:
    """``cfg.tracking_uri``, else ``$MLFLOW_TRACKING_URI``, else ``sqlite:///mlflow.db`` (cwd).

    Note that ``mlflow.set_tracking_uri`` also exports ``MLFLOW_TRACKING_URI``."""
    return cfg.tracking_uri or os.environ.get("MLFLOW_TRACKING_URI") or DEFAULT_TRACKING_URI


def first_line(err: BaseException) -> str:
    """``Type: first line of the message``: what a one-line report of an error shows."""
    text = str(err).strip().splitlines()
    return f"{type(err).__name__}: {text[0]}" if text else type(err).__name__


def bound_requests(cfg: TrackingConfig) -> None:
    """Bound MLflow's HTTP requests for this process: ``cfg.request_timeout_s`` per attempt,
    ``cfg.max_retries`` retries, backoff ``cfg.backoff_factor`` (MLflow's defaults, 120 s,
    7 and 2, stall a caller for minutes when the server is down). MLflow reads these
    environment variables at each request."""
    os.environ["MLFLOW_HTTP_REQUEST_TIMEOUT"] = str(cfg.request_timeout_s)
    os.environ["MLFLOW_HTTP_REQUEST_MAX_RETRIES"] = str(cfg.max_retries)
    os.environ["MLFLOW_HTTP_REQUEST_BACKOFF_FACTOR"] = str(cfg.backoff_factor)


def _is_remote(uri: str) -> bool:
    return uri.split(":", 1)[0].lower() in _REMOTE_SCHEMES


class MlflowService:
    """URI, experiment (created with an explicit, absolute artifact location for file
    stores, so artifacts never land in a stray ``./mlruns``) and runs."""

    def __init__(self, cfg: TrackingConfig):
        self.cfg = cfg
        self.tracking_uri = resolve_tracking_uri(cfg)
        self.experiment_id: str | None = None
        self._client: mlflow.MlflowClient | None = None
        self._unended: dict[str, str] = {}  # run id -> status, not ended (server down)

    def client(self) -> mlflow.MlflowClient:
        """A client bound to this service's tracking (and registry) URI."""
        import mlflow

        if self._client is None:
            self._client = mlflow.MlflowClient(tracking_uri=self.tracking_uri)
        return self._client

    def start(self) -> None:
        """Bound requests, set the tracking URI, create (or get) the experiment; idempotent."""
        import mlflow
        from mlflow.exceptions import MlflowException

        bound_requests(self.cfg)
        mlflow.set_tracking_uri(self.tracking_uri)
        if self.experiment_id is not None:
            return
        client = self.client()
        name = self.cfg.experiment
        exp = client.get_experiment_by_name(name)
        if exp is None:
            # A server chooses its own artifact store; local stores get an absolute path.
            location = (
                None
                if _is_remote(self.tracking_uri)
                else Path(self.cfg.artifact_location).resolve().as_uri()
            )
            try:
                self.experiment_id = client.create_experiment(name, artifact_location=location)
            except MlflowException:  # created concurrently
                exp = client.get_experiment_by_name(name)
                if exp is None:
                    raise
        if exp is not None:
            if exp.lifecycle_stage == "deleted":
                client.restore_experiment(exp.experiment_id)
            self.experiment_id = exp.experiment_id
        mlflow.set_experiment(experiment_id=self.experiment_id)

    def close_orphans(self) -> list[str]:
        """End the experiment's RUNNING runs whose owner process is dead as KILLED, and the
        RUNNING runs nested under them. Returns their ids; runs without an owner tag (not
        started by this service) are left alone."""
        from mlflow.entities import ViewType

        self.start()
        client = self.client()
        running = client.search_runs(
            [self.experiment_id],
            filter_string="attributes.status = 'RUNNING'",
            run_view_type=ViewType.ACTIVE_ONLY,
            max_results=1000,
        )
        dead: set[str] = set()
        for run in running:
            raw = run.data.tags.get(OWNER_TAG)
            if raw is None:
                continue
            try:
                owner = json.loads(raw)
            except ValueError:
                owner = None
            if not owner_alive(owner):
                dead.add(run.info.run_id)
        children = {
            r.info.run_id
            for r in running
            if r.data.tags.get("mlflow.parentRunId") in dead and OWNER_TAG not in r.data.tags
        }
        for run_id in sorted(dead | children):
            client.set_tag(run_id, "mmaux.end_reason", "owner process gone")
            client.set_terminated(run_id, status="KILLED")
            log.warning("MLflow run %s: its process is gone; ended as KILLED", run_id)
        return sorted(dead | children)

    @contextmanager
    def run(
        self,
        name: str,
        tags: dict[str, str] | None = None,
        nested: bool = False,
        parent_run_id: str | None = None,
        run_id: str | None = None,
    ) -> Iterator[mlflow.ActiveRun]:
        """An active run owned by this process; ended FINISHED, FAILED if the block raises,
        KILLED on Ctrl-C or SystemExit. A failure to end it is logged, never raised.
        ``run_id`` reopens an existing run (its tags are updated, its name kept).

        Starting a top-level run first closes the runs of dead processes
        (:meth:`close_orphans`)."""
        import mlflow

        self.start()
        self._end_unended()
        if not nested and parent_run_id is None and run_id is None:
            self.close_orphans()
        active = mlflow.start_run(
            run_id=run_id,
            run_name=None if run_id else name,
            experiment_id=None if run_id else self.experiment_id,
            tags={**(tags or {}), OWNER_TAG: json.dumps(current_owner())},
            nested=nested,
            parent_run_id=parent_run_id,
        )
        status = "FAILED"
        try:
            yield active
            status = "FINISHED"
        except (KeyboardInterrupt, SystemExit):  # Ctrl-C, SIGTERM in a stage process
            status = "KILLED"
            raise
        finally:
            self._end(active.info.run_id, status)

    def _end(self, run_id: str, status: str) -> None:
        """End the active run ``run_id`` without raising. MLflow pops its run stack before
        it calls the server, so a dead server leaves no active run behind; the run is ended
        at this service's next run start, or by :meth:`close_orphans` in a later process."""
        import mlflow

        current = mlflow.active_run()
        if current is None or current.info.run_id != run_id:
            return  # the block ended it itself
        try:
            mlflow.end_run(status)
        except Exception as err:
            self._unended[run_id] = status
            log.warning("MLflow run %s: cannot end it as %s (%s)", run_id, status, first_line(err))

    def _end_unended(self) -> None:
        for run_id, status in list(self._unended.items()):
            try:
                self.client().set_terminated(run_id, status=status)
            except Exception:  # still down: starting the next run reports the error
                return
            del self._unended[run_id]


def run_tags(data_dvc: Path | None = Path("data.dvc")) -> dict[str, str]:
    """Provenance MLflow does not record itself: ``data.version`` (+ ``data.path``) from a
    DVC file and ``dvc.exp_name`` from ``$DVC_EXP_NAME``, each only when available.

    The code version is MLflow's own ``mlflow.source.git.commit`` tag (set when the main
    script lies in a git working copy, as ``python -m flows.<stage>`` does)."""
    tags: dict[str, str] = {}
    if data_dvc is not None and Path(data_dvc).is_file():
        try:
            info = yaml.safe_load(Path(data_dvc).read_text()) or {}
            out = (info.get("outs") or [{}])[0]
        except (yaml.YAMLError, AttributeError, IndexError, TypeError) as err:
            log.warning("%s: cannot read the data version (%s)", data_dvc, err)
            out = {}
        if isinstance(out, dict) and out.get("md5"):
            tags["data.version"] = str(out["md5"])
            if out.get("path"):
                tags["data.path"] = str(out["path"])
    if os.environ.get("DVC_EXP_NAME"):
        tags["dvc.exp_name"] = os.environ["DVC_EXP_NAME"]
    return tags


def active_run_id() -> str:
    """The id of the active run; raises rather than letting the fluent API start one."""
    import mlflow

    run = mlflow.active_run()
    if run is None:
        raise RuntimeError("no active MLflow run: call this inside MlflowService.run(...)")
    return run.info.run_id
