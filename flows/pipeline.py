"""The end-to-end flow: validate -> preprocess -> tune -> train -> evaluate."""

from __future__ import annotations

from prefect import flow

from flows.common import DEFAULT_PARAMS, StageParams, cli_params, init_stage_process
from flows.evaluate import evaluate_flow
from flows.preprocess import preprocess_flow
from flows.train import train_flow
from flows.tune import tune_flow
from flows.validate import validate_flow


@flow(name="mmaux-pipeline", log_prints=True)
def pipeline_flow(params: StageParams = DEFAULT_PARAMS) -> dict:
    """Every stage in order, as subflows (dvc repro runs the same stages one by one)."""
    validate_flow(params)
    preprocess_flow(params)
    best = tune_flow(params)
    trained = train_flow(params)
    metrics = evaluate_flow(params)
    return {"best": best, "promoted": trained.get("promoted"), "metrics": metrics}


if __name__ == "__main__":
    init_stage_process()
    pipeline_flow(cli_params(__doc__))
