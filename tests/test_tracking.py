"""MLflow tracking against a real SQLite store: a tracked tiny training run, the pyfunc model
(served from a fresh process, with the package copy it carries), the registry's champion
alias. One training run serves the whole module. Failures: test_tracking_failures.py."""

from __future__ import annotations

import contextlib
import csv
import json
import os
import shutil
import subprocess
import sys
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


@dataclass
class Tracked:
    cfg: Config
    service: MlflowService
    result: TrainResult
    run_id: str


@pytest.fixture(scope="module")
def tracked(tmp_path_factory, mlflow_template, tiny_text_model, synth_root) -> Tracked:
    """Train the shrunken real config once inside a tracked run (loss terms logged at every
    step), from a directory holding a data.dvc file, with DVC_EXP_NAME set."""
    tmp = tmp_path_factory.mktemp("tracked")
    work = tmp / "work"
    work.mkdir()
    (work / "data.dvc").write_text(
        yaml.safe_dump({"outs": [{"md5": DATA_MD5, "nfiles": 1, "path": "data/raw"}]})
    )
    cfg = shrunk_config(tmp, synth_root, tiny_text_model, "train.log_every_steps=1")
    cfg.tracking = _tracking_cfg(tmp, mlflow_template)
    with _tracking_uri(cfg.tracking.tracking_uri), pytest.MonkeyPatch.context() as mp:
        mp.chdir(work)
        mp.setenv("DVC_EXP_NAME", "exp-test")
        service = MlflowService(cfg.tracking)
        with service.run("train", tags=run_tags()) as run:
            log_config(cfg)
            result = train(cfg, callbacks=[MlflowCallback(service, flush_every=4)])
            log_result(result)
    return Tracked(cfg, service, result, run.info.run_id)


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
    for term in ("loss", "itc", "itm", "itm_acc", "logit_scale"):
        history = client.get_metric_history(tracked.run_id, f"train/step/{term}")
        assert {m.step: m.value for m in history} == {
            r["step"]: pytest.approx(r[term]) for r in logged_steps
        }

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
    assert "git.commit" not in tags  # MLflow's mlflow.source.git.commit replaces it
    assert json.loads(tags["mmaux.owner"])["pid"] == os.getpid()

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


_SERVE = """
import json, sys
import mlflow
import pandas as pd

model = mlflow.pyfunc.load_model(sys.argv[1])
out = model.predict(pd.DataFrame(json.loads(open(sys.argv[2]).read())))
import mmaux

print(json.dumps({"mmaux": mmaux.__file__, "out": out.to_dict(orient="list")}))
"""


def test_champion_model_predicts_like_mmaux_evaluate(tracked, logged, synth_root, tmp_path):
    """The champion, loaded from code in a fresh process (as a model server would), with the
    copy of the package it carries, returns `mmaux evaluate`'s probabilities: both run
    :class:`mmaux.prediction.Predictor`."""
    import numpy as np

    from mmaux.evaluation import evaluate_run
    from mmaux.prediction import Predictor

    name = tracked.cfg.tracking.registered_model
    score = tracked.result.metrics["val"]["macro_f1"]
    with _tracking_uri(tracked.service.tracking_uri):
        assert promote_if_better(tracked.service, logged.model_uri, name, score) == (1, True)
        here = mlflow.pyfunc.load_model(f"models:/{name}@champion").unwrap_python_model()
    assert isinstance(here.predictor, Predictor)  # no preprocessing of its own
    metrics, pred, labels = evaluate_run(tracked.result.run_dir, "test")

    posts = load_manifest(synth_root / "manifest.jsonl", root=synth_root).split("test")
    assert pred.ids == [p.id for p in posts]
    # Image paths absolute or relative to the working directory (the data root here).
    rows = {
        "text": [p.text for p in posts],
        "image": [str(synth_root / p.image) if i % 2 else p.image for i, p in enumerate(posts)],
    }
    (tmp_path / "posts.json").write_text(json.dumps(rows))
    env = {k: v for k, v in os.environ.items() if k != "PYTHONPATH"}
    env["MLFLOW_TRACKING_URI"] = tracked.service.tracking_uri
    env["MLFLOW_ALLOW_PICKLE_DESERIALIZATION"] = "false"  # models-from-code
    proc = subprocess.run(
        [sys.executable, "-c", _SERVE, f"models:/{name}@champion", str(tmp_path / "posts.json")],
        cwd=synth_root,
        env=env,
        capture_output=True,
        text=True,
        timeout=300,
    )
    assert proc.returncode == 0, proc.stderr[-3000:]
    served = json.loads(proc.stdout.splitlines()[-1])
    package = Path(served["mmaux"]).resolve()
    assert REPO not in package.parents and "code" in package.parts  # the model's own copy

    out = served["out"]
    assert list(out) == ["label", *(f"p_{n}" for n in labels)]
    probs = np.array([out[f"p_{n}"] for n in labels]).T
    np.testing.assert_allclose(probs, pred.probs, rtol=0, atol=1e-6)
    assert out["label"] == [labels[i] for i in pred.preds]
    # The trainer's final evaluation (from the feature cache) agrees too.
    with (tracked.result.run_dir / "predictions_test.csv").open() as fh:
        reference = {row["id"]: row for row in csv.DictReader(fh)}
    expected = [[float(reference[p.id][f"p_{n}"]) for n in labels] for p in posts]
    np.testing.assert_allclose(probs, expected, atol=1e-4)
    assert metrics["macro_f1"] == pytest.approx(tracked.result.test_macro_f1)


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
