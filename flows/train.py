"""Stage 4: train with the tuned weights, track in MLflow, register, promote if better."""

from __future__ import annotations

from pathlib import Path

from prefect import flow, task
from prefect.artifacts import create_markdown_artifact

from flows.common import DEFAULT_PARAMS, PIPELINE_RUN, REPORTS, StageParams, cli_params, write_json
from mmaux.metrics import format_report
from mmaux.training import train


@task
def fit(params: StageParams) -> dict:
    from mmaux.tuning import load_best_overrides

    base = params.config()
    best = Path(base.tune.best_params)
    tuned = load_best_overrides(best) if best.is_file() else []
    cfg = params.config(*tuned, f"train.output_dir={PIPELINE_RUN}", "train.progress=false")
    report: dict = {"tuned_overrides": tuned, "run_dir": str(PIPELINE_RUN)}
    if not cfg.tracking.enabled:
        result = train(cfg)
        return {**report, "metrics": result.metrics}
    from mmaux.tracking import (
        MlflowCallback,
        MlflowService,
        log_config,
        log_model,
        log_result,
        promote_if_better,
        run_tags,
    )

    service = MlflowService(cfg.tracking)
    service.start()
    with service.run("train", tags={**run_tags(), "stage": "train"}) as run:
        log_config(cfg)
        result = train(cfg, callbacks=[MlflowCallback()])
        log_result(result)
        info = log_model(result.run_dir)
        score = result.metrics["val"]["macro_f1"]
        version, promoted = promote_if_better(
            service,
            info.model_uri,
            cfg.tracking.registered_model,
            score,
            alias=cfg.tracking.champion_alias,
        )
    return {
        **report,
        "metrics": result.metrics,
        "mlflow_run_id": run.info.run_id,
        "model_version": version,
        "promoted": promoted,
    }


@flow(name="train", log_prints=True)
def train_flow(params: StageParams = DEFAULT_PARAMS) -> dict:
    """Train into runs/pipeline; write reports/train.json."""
    out = fit(params)
    write_json(REPORTS / "train.json", {k: v for k, v in out.items() if k != "metrics"})
    m = out["metrics"]
    promoted = out.get("promoted")
    create_markdown_artifact(
        key="training-result",
        markdown=(
            f"val macro-F1 **{m['val']['macro_f1']:.4f}**, test macro-F1 "
            f"**{m['test']['macro_f1']:.4f}** (best epoch {m['best_epoch']}, "
            f"{m['steps_per_second']:.2f} steps/s)\n\ntuned: `{out['tuned_overrides']}`\n\n"
            f"model version {out.get('model_version')}, champion: {promoted}\n\n"
            f"```\n{format_report(m['test'])}\n```"
        ),
    )
    print(format_report(m["test"]))
    return out


if __name__ == "__main__":
    train_flow(cli_params(__doc__))
