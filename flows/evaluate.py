"""Stage 5: evaluate the trained model on the test split; DVC metrics and plots."""

from __future__ import annotations

import json

from prefect import flow, task
from prefect.artifacts import create_markdown_artifact

from flows.common import (
    DEFAULT_PARAMS,
    PIPELINE_RUN,
    PLOTS,
    REPORTS,
    StageParams,
    cli_params,
    init_stage_process,
    write_json,
)
from mmaux.evaluation import evaluate_run, write_predictions
from mmaux.metrics import format_report


@task(retries=1, retry_delay_seconds=2)
def run_evaluation(params: StageParams) -> dict:
    cfg = params.config()
    metrics, pred, labels = evaluate_run(PIPELINE_RUN, cfg.eval.split, ["train.progress=false"])
    write_predictions(pred, labels, PIPELINE_RUN / f"predictions_{metrics['split']}.csv")
    return metrics


def _plots(metrics: dict) -> None:
    PLOTS.mkdir(parents=True, exist_ok=True)
    labels = metrics["labels"]
    rows = ["actual,predicted"]
    for i, row in enumerate(metrics["confusion_matrix"]):
        for j, count in enumerate(row):
            rows += [f"{labels[i]},{labels[j]}"] * count
    (PLOTS / "confusion.csv").write_text("\n".join(rows) + "\n")
    epochs = [json.loads(x) for x in (PIPELINE_RUN / "epochs.jsonl").read_text().splitlines()]
    # Fixed columns (blank where a term is off) so the DVC plot definition always fits.
    cols = [
        "epoch",
        "train_loss",
        "train_ce",
        "train_itc",
        "train_itm",
        "val_loss",
        "val_macro_f1",
        "val_accuracy",
    ]
    lines = [",".join(cols)]
    for e in epochs:
        e = {**e, "epoch": e["epoch"] + 1}
        lines.append(",".join("" if e.get(c) is None else f"{e[c]}" for c in cols))
    (PLOTS / "epochs.csv").write_text("\n".join(lines) + "\n")


@flow(name="evaluate", log_prints=True)
def evaluate_flow(params: StageParams = DEFAULT_PARAMS) -> dict:
    """Write metrics.json, plots/confusion.csv and plots/epochs.csv; log to the train run."""
    metrics = run_evaluation(params)
    train_summary = json.loads((PIPELINE_RUN / "metrics.json").read_text())
    headline = {
        "test": {k: metrics[k] for k in ("macro_f1", "weighted_f1", "accuracy")},
        "val": {k: train_summary["val"][k] for k in ("macro_f1", "weighted_f1", "accuracy")},
        "per_class_f1": {k: v["f1"] for k, v in metrics["per_class"].items()},
        "best_epoch": train_summary["best_epoch"],
        "train_steps_per_second": train_summary["steps_per_second"],
    }
    write_json(REPORTS / "evaluation.json", metrics)
    write_json(REPORTS.parent / "metrics.json", headline)
    _plots(metrics)
    cfg = params.config()
    train_report = REPORTS / "train.json"
    if cfg.tracking.enabled and train_report.is_file():
        run_id = json.loads(train_report.read_text()).get("mlflow_run_id")
        if run_id:
            from mmaux.tracking import MlflowService, TrackingError, first_line

            try:  # the reports above are written: a retry of this stage is cheap
                service = MlflowService(cfg.tracking)
                service.start()
                client = service.client()
                for k in ("macro_f1", "weighted_f1", "accuracy"):
                    client.log_metric(run_id, f"eval/{metrics['split']}/{k}", metrics[k])
            except Exception as err:
                msg = f"MLflow: cannot log the evaluation to run {run_id} ({first_line(err)})"
                raise TrackingError(msg) from err
    create_markdown_artifact(key="evaluation", markdown=f"```\n{format_report(metrics)}\n```")
    print(format_report(metrics))
    return headline


if __name__ == "__main__":
    init_stage_process()
    evaluate_flow(cli_params(__doc__))
