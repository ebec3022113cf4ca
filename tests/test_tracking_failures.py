"""Tracking failures against real MLflow (a loopback `mlflow server`, SQLite stores), no mocks:

* the server dies mid-run: training completes in bounded time, warns once, keeps its metrics
  buffered and sends them when the server is back;
* the server is gone after training: the train stage fails with that first error in one line
  and keeps the run directory and reports/train.json;
* a stage killed with SIGKILL: the next run closes its runs (and nested ones) as KILLED;
* what replaced hand-made code: MLflow's own git-commit tag, no module ``__getattr__``, no
  ``optuna_integration``.
"""

from __future__ import annotations

import ast
import json
import logging
import os
import shutil
import signal
import subprocess
import sys
import threading
import time
import tomllib
from pathlib import Path
from types import SimpleNamespace

import pytest

os.environ.setdefault("MLFLOW_DISABLE_TELEMETRY", "true")
mlflow = pytest.importorskip("mlflow")

from mmaux.callbacks import Callback  # noqa: E402
from mmaux.config import TrackingConfig  # noqa: E402
from mmaux.tracking import (  # noqa: E402
    MlflowCallback,
    MlflowService,
    TrackingError,
    run_tags,
)
from mmaux.training import train  # noqa: E402
from tests.mlflow_helpers import MlflowServer, copy_db, free_port, migrated_db  # noqa: E402

REPO = Path(__file__).resolve().parents[1]
_ENV = (
    "MLFLOW_TRACKING_URI",
    "MLFLOW_HTTP_REQUEST_TIMEOUT",
    "MLFLOW_HTTP_REQUEST_MAX_RETRIES",
    "MLFLOW_HTTP_REQUEST_BACKOFF_FACTOR",
)


@pytest.fixture(scope="module")
def template(tmp_path_factory) -> Path:
    return migrated_db(tmp_path_factory.mktemp("mlflow-template") / "mlflow.db")


@pytest.fixture
def isolated(monkeypatch):
    """Whatever a test sets (tracking URI, request bounds, active runs) is undone after it."""
    from mlflow.tracking._tracking_service import utils

    for name in _ENV:
        monkeypatch.delenv(name, raising=False)
    previous = utils._tracking_uri
    yield
    while mlflow.active_run() is not None:
        mlflow.end_run()
    mlflow.set_tracking_uri(previous)


@pytest.fixture
def server(tmp_path, template):
    srv = MlflowServer(copy_db(template, tmp_path / "server.db"), tmp_path / "server-artifacts")
    yield srv.start()
    srv.kill()


class KillAfterFirstEpoch(Callback):
    """Kills the tracking server once the first epoch's metrics are sent."""

    def __init__(self, server: MlflowServer):
        self.server = server

    def on_epoch_end(self, trainer, record) -> None:
        if record["epoch"] == 0:
            self.server.kill()


def _messages(caplog, needle: str) -> list[str]:
    return [r.getMessage() for r in caplog.records if needle in r.getMessage()]


# --------------------------------------------------------------------------- server dies


def test_training_outlives_a_server_that_dies_mid_run(make_cfg, server, isolated, caplog):
    cfg = make_cfg("train.epochs=2", "train.log_every_steps=1")
    started = time.perf_counter()
    train(cfg)  # the untracked reference (it also fills the caches)
    untracked = time.perf_counter() - started

    cfg.train.output_dir = Path(cfg.train.output_dir).parent / "tracked"
    service = MlflowService(TrackingConfig(tracking_uri=server.uri, experiment="mmaux-test"))
    caplog.set_level(logging.WARNING, logger="mmaux.tracking")
    started = time.perf_counter()
    with service.run("train") as run:  # its end, against the dead server, must not raise
        callback = MlflowCallback(service)
        result = train(cfg, callbacks=[callback, KillAfterFirstEpoch(server)])
    tracked = time.perf_counter() - started

    assert (result.run_dir / "metrics.json").is_file()
    assert (result.run_dir / "model.safetensors").is_file()
    assert result.epochs_run == 2
    # MLflow's own retry policy stalled each request for minutes (~260 s measured here).
    assert tracked < untracked + 60, (tracked, untracked)
    assert len(_messages(caplog, "cannot log metrics")) == 1  # once per outage
    assert _messages(caplog, "metrics not sent") and _messages(caplog, "cannot end it")
    assert callback.pending > 0 and callback.dropped == 0

    # The server comes back (same store, same port): the buffer drains, the run is ended.
    server.start()
    assert callback.flush(force=True) and callback.pending == 0
    with service.run("next"):
        pass
    client = service.client()
    assert client.get_run(run.info.run_id).info.status == "FINISHED"
    rows = (result.run_dir / "steps.jsonl").read_text().splitlines()
    steps = [json.loads(line)["step"] for line in rows]
    assert len(steps) == result.global_step == 2 * (96 // 16)
    loss = client.get_metric_history(run.info.run_id, "train/step/loss")
    assert sorted(m.step for m in loss) == steps
    assert len(client.get_metric_history(run.info.run_id, "val/macro_f1")) == 2


def test_callback_buffer_is_bounded_and_warns_once(isolated, caplog):
    dead = TrackingConfig(
        tracking_uri=f"http://127.0.0.1:{free_port()}",
        max_retries=0,
        buffer_size=5,
        retry_interval_s=0,
    )
    callback = MlflowCallback(MlflowService(dead), run_id="0" * 32, flush_every=1)
    caplog.set_level(logging.WARNING, logger="mmaux.tracking")
    started = time.perf_counter()
    for step in range(1, 4):
        callback.on_log(None, step, {"loss": 1.0, "ce": 0.5})  # type: ignore[arg-type]
    callback.on_train_end(None, SimpleNamespace(run_dir=Path("run")))  # type: ignore[arg-type]
    assert time.perf_counter() - started < 10
    assert callback.pending == 5 and callback.dropped == 1  # the oldest went
    assert len(_messages(caplog, "cannot log metrics")) == 1
    assert _messages(caplog, "5 metrics not sent, 1 dropped")


def test_tracking_failure_after_training_fails_the_stage_with_the_first_error(
    tmp_path, monkeypatch, server, synth_root, tiny_text_model, isolated
):
    from mlflow.exceptions import MlflowException

    from flows.common import StageParams
    from flows.train import fit
    from tests.pipeline_fixtures import tiny_params

    monkeypatch.chdir(tmp_path)
    params = tiny_params(
        tmp_path,
        synth_root,
        tiny_text_model,
        train={"epochs": 3},
        tune={"enabled": False},
        tracking={"tracking_uri": server.uri},
    )
    epochs = tmp_path / "runs" / "pipeline" / "epochs.jsonl"
    done = threading.Event()

    def kill_after_first_epoch() -> None:
        while not done.is_set():
            if epochs.is_file() and epochs.read_text().strip():
                server.kill()
                return
            time.sleep(0.02)

    watcher = threading.Thread(target=kill_after_first_epoch, daemon=True)
    watcher.start()
    try:
        started = time.perf_counter()
        with pytest.raises(TrackingError) as err:
            fit.fn(StageParams(params_file=str(params)))
        elapsed = time.perf_counter() - started
    finally:
        done.set()
        watcher.join()
    message = str(err.value)
    assert "\n" not in message
    assert message.startswith("MLflow tracking failed after training (MlflowException: API")
    assert "Connection refused" in message and "are kept" in message
    assert isinstance(err.value.__cause__, MlflowException)  # the first error, not end_run's
    assert elapsed < 120
    run = tmp_path / "runs" / "pipeline"
    assert (run / "model.safetensors").is_file() and (run / "metrics.json").is_file()
    report = json.loads((tmp_path / "reports" / "train.json").read_text())
    assert report["tracking"] == "failed" and report["mlflow_run_id"]
    assert report["tracking_error"].startswith("MlflowException: API request")


# --------------------------------------------------------------------------- killed stages

_STAGE = """
import json, sys, time
import mlflow
from mmaux.config import TrackingConfig
from mmaux.tracking import MlflowService

cfg = TrackingConfig(tracking_uri=sys.argv[1], artifact_location=sys.argv[2], experiment="e")
service = MlflowService(cfg)
with service.run("tune") as parent:
    with service.run("trial-000", nested=True) as trial:
        bare = mlflow.start_run(run_name="untagged", nested=True)  # opened without the service
        print(json.dumps([parent.info.run_id, trial.info.run_id, bare.info.run_id]), flush=True)
        time.sleep(600)
"""


def _stage(uri: str, artifacts: Path, log: Path) -> tuple[subprocess.Popen, list[str]]:
    with log.open("w") as err:
        proc = subprocess.Popen(
            [sys.executable, "-c", _STAGE, uri, str(artifacts)],
            stdout=subprocess.PIPE,
            stderr=err,
            text=True,
            start_new_session=True,
        )
    line = proc.stdout.readline()  # type: ignore[union-attr]
    assert line, log.read_text()
    return proc, json.loads(line)


def test_runs_of_a_killed_stage_are_closed_as_killed_by_the_next_run(tmp_path, template, isolated):
    uri = f"sqlite:///{copy_db(template, tmp_path / 'mlflow.db')}"
    artifacts = tmp_path / "artifacts"
    killed, killed_ids = _stage(uri, artifacts, tmp_path / "killed.log")
    alive, alive_ids = _stage(uri, artifacts, tmp_path / "alive.log")
    try:
        killed.send_signal(signal.SIGKILL)
        killed.wait(timeout=30)
        service = MlflowService(
            TrackingConfig(tracking_uri=uri, artifact_location=artifacts, experiment="e")
        )
        client = service.client()
        assert {client.get_run(i).info.status for i in killed_ids} == {"RUNNING"}
        with service.run("train") as run:
            pass
        for run_id in killed_ids:  # the stage's run, its trial and the trial's bare child
            info = client.get_run(run_id).info
            assert info.status == "KILLED" and info.end_time is not None
        assert {client.get_run(i).info.status for i in alive_ids} == {"RUNNING"}
        assert client.get_run(run.info.run_id).info.status == "FINISHED"
    finally:
        for proc in (killed, alive):
            if proc.poll() is None:
                proc.kill()
            proc.wait(timeout=30)
            proc.stdout.close()  # type: ignore[union-attr]


# --------------------------------------------------------------------------- what MLflow does


_TRACKED_SCRIPT = """
import sys
from mmaux.config import TrackingConfig
from mmaux.tracking import MlflowService, run_tags

cfg = TrackingConfig(tracking_uri=sys.argv[1], artifact_location=sys.argv[2], experiment="e")
with MlflowService(cfg).run("train", tags=run_tags()) as run:
    print(run.info.run_id)
"""


@pytest.mark.skipif(shutil.which("git") is None, reason="needs git")
def test_mlflow_tags_the_git_commit_of_the_stage_script(tmp_path, template, isolated):
    repo = tmp_path / "repo"
    repo.mkdir()
    (repo / "stage.py").write_text(_TRACKED_SCRIPT)
    env = {**os.environ}
    for who in ("AUTHOR", "COMMITTER"):
        env.update({f"GIT_{who}_NAME": "t", f"GIT_{who}_EMAIL": "t@example.com"})
    for args in (["init", "-q"], ["add", "stage.py"], ["commit", "-qm", "stage"]):
        subprocess.run(["git", *args], cwd=repo, env=env, check=True)
    commit = subprocess.run(
        ["git", "rev-parse", "HEAD"], cwd=repo, capture_output=True, text=True, check=True
    ).stdout.strip()
    uri = f"sqlite:///{copy_db(template, tmp_path / 'mlflow.db')}"
    out = subprocess.run(
        [sys.executable, "stage.py", uri, str(tmp_path / "artifacts")],
        cwd=repo,
        capture_output=True,
        text=True,
        timeout=120,
    )
    assert out.returncode == 0, out.stderr[-3000:]
    tags = mlflow.MlflowClient(uri).get_run(out.stdout.split()[-1]).data.tags
    assert tags["mlflow.source.git.commit"] == commit
    assert "git.commit" not in tags  # the hand-made duplicate is gone


def test_tracking_modules_are_plain_and_cheap_to_import():
    for path in sorted((REPO / "mmaux" / "tracking").glob("*.py")):
        tree = ast.parse(path.read_text())
        names = {n.name for n in tree.body if isinstance(n, ast.FunctionDef)}
        assert "__getattr__" not in names, path
    from mmaux.tracking.pyfunc import MmauxModel

    assert issubclass(MmauxModel, mlflow.pyfunc.PythonModel)
    assert MmauxModel.__module__ == "mmaux.tracking.pyfunc"
    probe = (
        "import sys, mmaux.tracking; print([m for m in ('mlflow', 'torch') if m in sys.modules])"
    )
    out = subprocess.run([sys.executable, "-c", probe], capture_output=True, text=True, check=True)
    assert out.stdout.strip() == "[]"


def test_optuna_integration_is_neither_imported_nor_required():
    for top in ("mmaux", "flows", "tests", "benchmarks"):
        for path in sorted((REPO / top).rglob("*.py")):
            for node in ast.walk(ast.parse(path.read_text())):
                if isinstance(node, ast.Import):
                    modules = [a.name for a in node.names]
                elif isinstance(node, ast.ImportFrom):
                    modules = [node.module or ""]
                else:
                    continue
                assert not any(m.split(".")[0] == "optuna_integration" for m in modules), path
    project = tomllib.loads((REPO / "pyproject.toml").read_text())["project"]
    requirements = [*project["dependencies"]]
    for extra in project["optional-dependencies"].values():
        requirements += extra
    assert not [r for r in requirements if r.lower().startswith("optuna-integration")]


def test_run_tags_carry_no_hand_made_git_commit(tmp_path, monkeypatch):
    (tmp_path / "data.dvc").write_text("outs:\n- md5: abc.dir\n  path: data/raw\n")
    monkeypatch.chdir(tmp_path)
    monkeypatch.setenv("DVC_EXP_NAME", "exp")
    assert run_tags() == {"data.version": "abc.dir", "data.path": "data/raw", "dvc.exp_name": "exp"}
