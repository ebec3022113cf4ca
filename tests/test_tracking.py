"""MLflow tracking against a real SQLite store: a tracked tiny training run, the pyfunc model,
the registry's champion alias. One training run serves the whole module."""

from __future__ import annotations

import contextlib
import csv
import json
import os
import shutil
import subprocess
from dataclasses import dataclass
from pathlib import Path

import pytest
import yaml

os.environ.setdefault("MLFLOW_DISABLE_TELEMETRY", "true")
mlflow = pytest.importorskip("mlflow")

from mmaux.config import Config, TrackingConfig  # noqa: E402
from mmaux.data.manifest import load_manifest  # noqa: E402
from mmaux.tracking import (  # noqa: E402
    MlflowCallback,
    MlflowService,
    log_config,
    log_model,
    log_result,
    promote_if_better,
    resolve_tracking_uri,
    run_tags,
)
from mmaux.training import TrainResult, train  # noqa: E402
from tests.pipeline_fixtures import shrunk_config  # noqa: E402

REPO = Path(__file__).resolve().parents[1]
DATA_MD5 = "0123456789abcdef0123456789abcdef.dir"


@contextlib.contextmanager
def _tracking_uri(uri: str):
    """Point MLflow at ``uri`` and restore the previous URI afterwards.

    ``mlflow.set_tracking_uri`` also exports MLFLOW_TRACKING_URI; restore that too."""
    from mlflow.tracking._tracking_service import utils

    with pytest.MonkeyPatch.context() as mp:
        mp.delenv("MLFLOW_TRACKING_URI", raising=False)
        previous = utils._tracking_uri
        try:
            yield
        finally:
            while mlflow.active_run() is not None:
                mlflow.end_run()
            mlflow.set_tracking_uri(previous)


@pytest.fixture(scope="session")
def mlflow_template(tmp_path_factory) -> Path:
    """A migrated, empty MLflow SQLite database (migrating costs seconds; copying does not)."""
    db = tmp_path_factory.mktemp("mlflow-template") / "mlflow.db"
    mlflow.MlflowClient(tracking_uri=f"sqlite:///{db}").search_experiments()
    return db


def _tracking_cfg(tmp: Path, template: Path) -> TrackingConfig:
    shutil.copy(template, tmp / "mlflow.db")
    return TrackingConfig(
        tracking_uri=f"sqlite:///{tmp / 'mlflow.db'}",
        artifact_location=tmp / "artifacts",
        experiment="mmaux-test",
        registered_model="mmaux-test-classifier",
    )


def _git(cwd: Path, *args: str) -> str:
    env = {
        **os.environ,
        "GIT_AUTHOR_NAME": "t",
        "GIT_AUTHOR_EMAIL": "t@example.com",
        "GIT_COMMITTER_NAME": "t",
        "GIT_COMMITTER_EMAIL": "t@example.com",
    }
    out = subprocess.run(["git", *args], cwd=cwd, env=env, capture_output=True, text=True)
    assert out.returncode == 0, out.stderr
    return out.stdout.strip()


@dataclass
class Tracked:
    cfg: Config
    service: MlflowService
    result: TrainResult
    run_id: str
    commit: str | None


@pytest.fixture(scope="module")
def tracked(tmp_path_factory, mlflow_template, tiny_text_model, synth_root) -> Tracked:
    """Train the shrunken real config once inside a tracked run, from a git working copy
    holding a data.dvc file, with DVC_EXP_NAME set."""
    tmp = tmp_path_factory.mktemp("tracked")
    work = tmp / "work"
    work.mkdir()
    (work / "data.dvc").write_text(
        yaml.safe_dump({"outs": [{"md5": DATA_MD5, "nfiles": 1, "path": "data/raw"}]})
    )
    commit = None
    if shutil.which("git"):
        _git(work, "init", "-q")
        _git(work, "add", "data.dvc")
        _git(work, "commit", "-q", "-m", "data")
        commit = _git(work, "rev-parse", "HEAD")
    cfg = shrunk_config(tmp, synth_root, tiny_text_model)
    cfg.tracking = _tracking_cfg(tmp, mlflow_template)
    with _tracking_uri(cfg.tracking.tracking_uri), pytest.MonkeyPatch.context() as mp:
        mp.chdir(work)
        mp.setenv("DVC_EXP_NAME", "exp-test")
        service = MlflowService(cfg.tracking)
        with service.run("train", tags=run_tags()) as run:
            log_config(cfg)
            result = train(cfg, callbacks=[MlflowCallback(flush_every=4)])
            log_result(result)
    return Tracked(cfg, service, result, run.info.run_id, commit)


@pytest.fixture(scope="module")
def logged(tracked, synth_root):
    """The tracked run logged as a pyfunc model (with an input example, which MLflow checks
    by loading and running the model)."""
    post = load_manifest(synth_root / "manifest.jsonl", root=synth_root).split("test")[0]
    import pandas as pd

    example = pd.DataFrame({"text": [post.text], "image": [str(synth_root / post.image)]})
    with _tracking_uri(tracked.service.tracking_uri):
        tracked.service.start()
        with mlflow.start_run(run_id=tracked.run_id):
            info = log_model(tracked.result.run_dir, input_example=example)
    return info


# --------------------------------------------------------------------------- plain helpers


def test_tracking_uri_precedence(monkeypatch):
    monkeypatch.delenv("MLFLOW_TRACKING_URI", raising=False)
    assert resolve_tracking_uri(TrackingConfig()) == "sqlite:///mlflow.db"
    monkeypatch.setenv("MLFLOW_TRACKING_URI", "sqlite:///env.db")
    assert resolve_tracking_uri(TrackingConfig()) == "sqlite:///env.db"
    explicit = TrackingConfig(tracking_uri="http://127.0.0.1:5000")
    assert resolve_tracking_uri(explicit) == "http://127.0.0.1:5000"


def test_run_tags_outside_git_and_dvc(tmp_path, monkeypatch):
    monkeypatch.chdir(tmp_path)
    monkeypatch.delenv("DVC_EXP_NAME", raising=False)
    monkeypatch.setenv("GIT_CEILING_DIRECTORIES", str(tmp_path.parent))
    assert run_tags() == {}
    assert run_tags(None) == {}


# --------------------------------------------------------------------------- tracked run


def test_tracked_run_has_params_histories_tags_and_reports(tracked, tmp_path):
    client = tracked.service.client()
    run = client.get_run(tracked.run_id)
    assert run.info.status == "FINISHED"
    exp = client.get_experiment(run.info.experiment_id)
    assert exp.name == "mmaux-test"
    assert exp.artifact_location == Path(tracked.cfg.tracking.artifact_location).as_uri()
    assert run.info.artifact_uri.startswith(exp.artifact_location)

    params = run.data.params
    assert params["aux.itc_weight"] == str(tracked.cfg.aux.itc_weight)
    assert params["train.epochs"] == "2"
    assert params["model.fusion"] == tracked.cfg.model.fusion
    assert params["model.image.kwargs"] == "{}"

    steps = tracked.result.global_step
    assert steps == 2 * (96 // 16)
    ce = client.get_metric_history(tracked.run_id, "train/step/ce")
    assert sorted(m.step for m in ce) == list(range(1, steps + 1))
    logged_steps = [
        json.loads(line)
        for line in (tracked.result.run_dir / "steps.jsonl").read_text().splitlines()
    ]
    by_step = {m.step: m.value for m in ce}
    assert all(by_step[r["step"]] == pytest.approx(r["ce"]) for r in logged_steps)
    for term in ("loss", "itc", "itm", "logit_scale"):
        assert len(client.get_metric_history(tracked.run_id, f"train/step/{term}")) == steps

    # Per epoch (steps 1, 2), then the final evaluation of the best weights at the last step.
    val = sorted(
        client.get_metric_history(tracked.run_id, "val/macro_f1"),
        key=lambda m: (m.step, m.timestamp),
    )
    assert [m.step for m in val] == [1, 2, 2]
    assert [m.value for m in val[:2]] == [
        pytest.approx(h["val_macro_f1"]) for h in tracked.result.history
    ]
    assert len(client.get_metric_history(tracked.run_id, "train/ce")) == 2
    # The latest val/macro_f1 is the final evaluation of the best weights.
    metrics = run.data.metrics
    assert metrics["val/macro_f1"] == pytest.approx(tracked.result.metrics["val"]["macro_f1"])
    assert metrics["test/macro_f1"] == pytest.approx(tracked.result.test_macro_f1)
    for key in ("test/weighted_f1", "test/accuracy", "val/accuracy", "best_epoch"):
        assert key in metrics
    labels = json.loads((tracked.result.run_dir / "labels.json").read_text())
    for label in labels:
        f1 = tracked.result.metrics["test"]["per_class"][label]["f1"]
        assert metrics[f"test/f1/{label}"] == pytest.approx(f1)

    tags = run.data.tags
    assert tags["data.version"] == DATA_MD5
    assert tags["dvc.exp_name"] == "exp-test"
    if tracked.commit is not None:
        assert tags["git.commit"] == tracked.commit

    files = {f.path for f in client.list_artifacts(tracked.run_id)}
    assert {"metrics.json", "epochs.jsonl", "steps.jsonl", "predictions_test.csv"} <= files
    evaluation = {f.path for f in client.list_artifacts(tracked.run_id, "evaluation")}
    assert {
        "evaluation/test_confusion_matrix.png",
        "evaluation/test_report.json",
        "evaluation/test_report.txt",
    } <= evaluation
    local = Path(client.download_artifacts(tracked.run_id, "evaluation", str(tmp_path)))
    assert (local / "test_confusion_matrix.png").read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"
    report = json.loads((local / "test_report.json").read_text())
    assert set(report["per_class"]) == set(labels) and report["split"] == "test"
    assert "macro-F1" in (local / "test_report.txt").read_text()


# --------------------------------------------------------------------------- model + registry


def test_champion_model_predicts_like_mmaux(tracked, logged, synth_root, monkeypatch):
    import numpy as np
    import pandas as pd

    monkeypatch.setenv("MLFLOW_ALLOW_PICKLE_DESERIALIZATION", "false")  # models-from-code
    name = tracked.cfg.tracking.registered_model
    score = tracked.result.metrics["val"]["macro_f1"]
    with _tracking_uri(tracked.service.tracking_uri):
        assert promote_if_better(tracked.service, logged.model_uri, name, score) == (1, True)
        model = mlflow.pyfunc.load_model(f"models:/{name}@champion")

    posts = load_manifest(synth_root / "manifest.jsonl", root=synth_root).split("test")[:3]
    with (tracked.result.run_dir / "predictions_test.csv").open() as fh:
        reference = {row["id"]: row for row in csv.DictReader(fh)}
    labels = json.loads((tracked.result.run_dir / "labels.json").read_text())
    frame = pd.DataFrame(
        {
            "text": [p.text for p in posts],
            # absolute and cwd-relative paths both work
            "image": [str(synth_root / posts[0].image)]
            + [os.path.relpath(synth_root / p.image) for p in posts[1:]],
        }
    )
    out = model.predict(frame)
    assert list(out.columns) == ["label", *(f"p_{n}" for n in labels)]
    probs = out[[f"p_{n}" for n in labels]].to_numpy()
    np.testing.assert_allclose(probs.sum(1), 1.0, atol=1e-6)
    for post, (_, row), p in zip(posts, out.iterrows(), probs, strict=True):
        ref = reference[post.id]
        assert row["label"] == ref["prediction"]
        np.testing.assert_allclose(p, [float(ref[f"p_{n}"]) for n in labels], atol=1e-4)


def test_promote_only_when_better(tracked, logged):
    name = "mmaux-promotion"
    client = tracked.service.client()
    with _tracking_uri(tracked.service.tracking_uri):
        assert promote_if_better(tracked.service, logged.model_uri, name, 0.50) == (1, True)
        assert promote_if_better(tracked.service, logged.model_uri, name, 0.40) == (2, False)
        assert int(client.get_model_version_by_alias(name, "champion").version) == 1
        assert promote_if_better(tracked.service, logged.model_uri, name, 0.60) == (3, True)
    assert int(client.get_model_version_by_alias(name, "champion").version) == 3
    assert float(client.get_model_version(name, "2").tags["val_macro_f1"]) == 0.40
