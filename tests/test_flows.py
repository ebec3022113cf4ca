"""The Prefect flows under Prefect's test harness, on real data, MLflow, Optuna and GX."""

from __future__ import annotations

import json
import shutil

import pandas as pd
import pytest
import yaml

from tests.pipeline_fixtures import tiny_params

prefect = pytest.importorskip("prefect")
pytestmark = pytest.mark.usefixtures("prefect_harness")


@pytest.fixture
def work(tmp_path, monkeypatch):
    monkeypatch.chdir(tmp_path)
    return tmp_path


def _params(work, synth_root, tiny_text_model, **sections):
    from flows.common import StageParams

    path = tiny_params(work, synth_root, tiny_text_model, **sections)
    return StageParams(params_file=str(path))


def test_pipeline_flow_end_to_end(work, synth_root, tiny_text_model):
    import mlflow

    from flows.pipeline import pipeline_flow

    params = _params(work, synth_root, tiny_text_model)
    out = pipeline_flow(params)
    for path in (
        "reports/validation.json",
        "reports/preprocess.json",
        "reports/train.json",
        "reports/evaluation.json",
        "metrics.json",
        "plots/epochs.csv",
        "plots/confusion.csv",
        "plots/tuning.csv",
        "tuning/best_params.json",
        "runs/pipeline/model.safetensors",
    ):
        assert (work / path).is_file(), path
    metrics = json.loads((work / "metrics.json").read_text())
    assert metrics == out["metrics"] and 0 <= metrics["test"]["macro_f1"] <= 1
    best = json.loads((work / "tuning/best_params.json").read_text())
    assert best["n_complete"] >= 1 and set(best["params"]) >= {"aux.itc_weight", "aux.itm_weight"}
    assert (work / "plots/confusion.csv").read_text().count("\n") == 1 + 48
    train = json.loads((work / "reports/train.json").read_text())
    assert train["promoted"] is True and train["model_version"] == 1
    assert train["tuned_overrides"]
    mlflow.set_tracking_uri(f"sqlite:///{work / 'mlflow.db'}")
    model = mlflow.pyfunc.load_model("models:/mmaux-classifier@champion")
    assert model is not None
    runs = mlflow.search_runs(experiment_names=["mmaux"], output_format="list")
    stages = {r.data.tags.get("stage") for r in runs}
    assert {"tune", "train"} <= stages
    trials = [r for r in runs if "optuna.trial" in r.data.tags]
    assert len(trials) == 2 and all(r.data.tags.get("mlflow.parentRunId") for r in trials)


def test_bad_data_stops_the_pipeline_at_validate(work, synth_root, tiny_text_model):
    from flows.pipeline import pipeline_flow
    from mmaux.validation import DataValidationError

    root = work / "raw"
    shutil.copytree(synth_root, root)
    lines = (root / "manifest.jsonl").read_text().splitlines()
    first = json.loads(lines[0])
    lines.append(json.dumps({**first, "label": "sarcastic"}).replace(first["id"], "new-id"))
    (root / "manifest.jsonl").write_text("\n".join(lines) + "\n")
    params = _params(work, root, tiny_text_model)
    with pytest.raises(DataValidationError) as err:
        pipeline_flow(params)
    assert "sarcastic" in str(err.value) or "label" in str(err.value)
    report = json.loads((work / "reports/validation.json").read_text())
    assert report["success"] is False
    assert not (work / "reports/preprocess.json").exists()  # nothing downstream ran


def test_stage_parameters_are_validated(work):
    from prefect.exceptions import ParameterTypeError

    from flows.validate import validate_flow

    with pytest.raises(ParameterTypeError):
        validate_flow(params={"params_file": "params.yaml", "bogus": 1})


def test_import_flow_writes_a_dataset_the_pipeline_can_load(work):
    from PIL import Image

    from flows.import_data import ImportParams, import_flow
    from mmaux.data.manifest import load_manifest
    from mmaux.importers import ImportFailed

    (work / "raw" / "images").mkdir(parents=True)
    rows = ["tweet_id,text,label,split"]
    for i in range(12):
        label, split = ("yes" if i % 3 else "no"), ["train", "val", "test"][i % 3]
        rows.append(f"{100 + i},post number {i},{label},{split}")
        if i != 7:  # one post's image is missing
            Image.new("RGB", (8, 8), (i * 20, 0, 0)).save(
                work / "raw" / "images" / f"{100 + i}.jpg"
            )
    (work / "raw" / "key.csv").write_text("\n".join(rows) + "\n")

    with pytest.raises(ImportFailed, match="107"):
        import_flow(ImportParams(dataset="datakey", src="raw/key.csv", out="out-fail"))
    result = import_flow(
        ImportParams(dataset="datakey", src="raw/key.csv", out="data/imported", on_missing="drop")
    )
    assert result["n_posts"] == 11
    assert result["counts"]["val"] == {"no": 0, "yes": 3}  # id 107 (val, yes) dropped
    manifest = load_manifest(work / "data" / "imported" / "manifest.jsonl")
    assert len(manifest.posts) == 11 and "107" not in {p.id for p in manifest.posts}


def test_import_flow_parameters_are_validated(work):
    from prefect.exceptions import ParameterTypeError

    from flows.import_data import import_flow

    with pytest.raises(ParameterTypeError):
        import_flow(params={"dataset": "not-a-dataset", "src": "x", "out": "y"})


def test_pipeline_flow_trains_an_early_fusion_family(work, synth_root, tiny_text_model):
    """ViLT (pixels, no frozen encoder) through validate, preprocess, tune, train and
    evaluate; the registered MLflow model predicts like the run."""
    import mlflow

    from flows.pipeline import pipeline_flow

    tiny = {"hidden_size": 32, "num_hidden_layers": 1, "num_attention_heads": 2}
    params = _params(
        work,
        synth_root,
        tiny_text_model,
        model={"family": "vilt", "vilt": {"name": "random", "config": tiny}},
        tune={"n_trials": 1, "epochs": 1},
        train={"epochs": 1, "batch_size": 16, "device": "cpu", "progress": False},
    )
    out = pipeline_flow(params)
    preprocess = json.loads((work / "reports/preprocess.json").read_text())
    assert preprocess["pixels_from_cache"] is not None  # ViLT reads pixels, not features
    assert preprocess["image_features_from_cache"] is None
    run = work / "runs/pipeline"
    assert yaml.safe_load((run / "config.yaml").read_text())["model"]["family"] == "vilt"
    assert 0 <= out["metrics"]["test"]["macro_f1"] <= 1
    mlflow.set_tracking_uri(f"sqlite:///{work / 'mlflow.db'}")
    model = mlflow.pyfunc.load_model("models:/mmaux-classifier@champion")
    rows = [json.loads(x) for x in (synth_root / "manifest.jsonl").read_text().splitlines()][:4]
    images = [str(synth_root / r["image"]) for r in rows]
    frame = pd.DataFrame({"text": [r["text"] for r in rows], "image": images})
    probs = model.predict(frame)
    labels = json.loads((run / "labels.json").read_text())
    assert len(probs) == 4 and set(probs["label"]) <= set(labels)
    assert list(probs.columns) == ["label", *(f"p_{n}" for n in labels)]
