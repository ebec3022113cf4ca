"""The study flow under Prefect's test harness: one MLflow parent run with a child run per
cell (tagged model, variant, n_train, seed), the report on the parent, Prefect artifacts, and
a re-run that reopens the parent and trains nothing."""

from __future__ import annotations

import json

import pytest

from tests.pipeline_fixtures import tiny_params

prefect = pytest.importorskip("prefect")
pytestmark = pytest.mark.usefixtures("prefect_harness")


def test_study_flow_tracks_a_parent_with_one_child_per_cell(
    tmp_path, monkeypatch, synth_root, tiny_text_model
):
    import mlflow
    from prefect.client.orchestration import get_client

    from flows.common import StageParams
    from flows.study import study_flow

    monkeypatch.chdir(tmp_path)
    path = tiny_params(
        tmp_path,
        synth_root,
        tiny_text_model,
        train={"epochs": 1},
        study={
            "name": "flow-test",
            "variants": ["fused-ce", "fused+itc"],
            "sizes": [32, "all"],
            "seeds": [0, 1],
            "resamples": 200,
            "test_resamples": 200,
            "out_dir": str(tmp_path / "study"),
        },
    )
    summary = study_flow(StageParams(params_file=str(path)))
    parent_id = summary["mlflow_parent_run_id"]
    client = mlflow.MlflowClient(tracking_uri=f"sqlite:///{tmp_path / 'mlflow.db'}")
    parent = client.get_run(parent_id)
    assert parent.info.status == "FINISHED" and parent.data.tags["stage"] == "study"
    assert parent.data.metrics["default/n_all/fused-ce/test_macro_f1"] == pytest.approx(
        next(
            r for r in summary["variants"] if r["variant"] == "fused-ce" and r["n_train"] == "all"
        )["test_macro_f1"]
    )
    exp = parent.info.experiment_id
    children = client.search_runs([exp], f"tags.`mlflow.parentRunId` = '{parent_id}'")
    tags = sorted(
        (r.data.tags["model"], r.data.tags["variant"], r.data.tags["n_train"], r.data.tags["seed"])
        for r in children
    )
    assert tags == sorted(
        ("default", v, n, s)
        for v in ("fused-ce", "fused+itc")
        for n in ("32", "all")
        for s in ("0", "1")
    )
    assert all(r.info.status == "FINISHED" and "test/macro_f1" in r.data.metrics for r in children)
    files = {a.path for a in client.list_artifacts(parent_id, "report")}
    assert {"report/report.md", "report/summary.json", "report/plots"} <= files
    plots = {a.path for a in client.list_artifacts(parent_id, "report/plots")}
    assert "report/plots/gaps.png" in plots and "report/plots/low_resource.png" in plots

    async def artifacts():
        async with get_client() as c:
            return await c.read_artifacts()

    import asyncio

    found = {a.key: a for a in asyncio.run(artifacts())}
    assert "flow-test-report" in found
    assert "Aux losses against" in found["flow-test-report"].data
    assert "flow-test-comparisons" in found

    # a re-run reopens the parent, trains nothing and adds no child run
    again = study_flow(StageParams(params_file=str(path)))
    assert again["mlflow_parent_run_id"] == parent_id
    assert len(client.search_runs([exp], f"tags.`mlflow.parentRunId` = '{parent_id}'")) == 8
    rows = [json.loads(x) for x in (tmp_path / "study" / "cells.jsonl").read_text().splitlines()]
    assert len(rows) == 8 and all(r["reused"] for r in rows)
