"""Stage 4: train with the tuned weights, track in MLflow, register, promote if better.

Resumable: ``runs/pipeline`` persists across a killed ``dvc repro``; the stage continues
from its checkpoint, replaces a checkpoint made with other params, and reuses a finished run
of the same configuration (a re-run after tracking failed registers it without retraining):
:func:`mmaux.training.train_stage`.

Tracking never stops training: the callback buffers through a server outage and every
request is bounded (``tracking.request_timeout_s``, ``tracking.max_retries``). If MLflow still
fails after training, the stage *fails* with one line naming that first error, keeping
``runs/pipeline`` and ``reports/train.json`` (``tracking: failed``). It fails rather than
succeeding with a note because the registered model and its champion alias are products of
this stage that serving and ``evaluate`` rely on: a success would let DVC mark the stage done
and nothing would ever retry the registration. An unreachable server at the start fails the
stage before any training.
"""

from __future__ import annotations

from prefect import flow, task
from prefect.artifacts import create_markdown_artifact

from flows.common import (
    DEFAULT_PARAMS,
    PIPELINE_RUN,
    REPORTS,
    StageParams,
    cli_params,
    init_stage_process,
    write_json,
)
from mmaux.config import Config
from mmaux.metrics import format_report
from mmaux.training import train_stage


def stage_config(params: StageParams) -> tuple[Config, list[str]]:
    """The train stage's configuration and the tuned overrides in it: with ``tune.enabled``
    the searched ``aux`` keys come from ``tune.best_params`` only (their ``params.yaml``
    values are ignored); otherwise ``aux`` is used as it is."""
    from mmaux.tuning import train_overrides

    tuned = train_overrides(params.config())
    cfg = params.config(*tuned, f"train.output_dir={PIPELINE_RUN}", "train.progress=false")
    return cfg, tuned


@task
def fit(params: StageParams) -> dict:
    cfg, tuned = stage_config(params)
    report: dict = {"tuned_overrides": tuned, "run_dir": str(PIPELINE_RUN)}
    if not cfg.tracking.enabled:
        result, reused = train_stage(cfg)
        return {**report, "metrics": result.metrics, "reused_finished_run": reused}
    from mmaux.tracking import (
        MlflowCallback,
        MlflowService,
        TrackingError,
        first_line,
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
        result, reused = train_stage(cfg, callbacks=[MlflowCallback(service)])
        report["reused_finished_run"] = reused
        try:
            if reused:  # e.g. a re-run after tracking failed: the histories are in steps.jsonl
                import mlflow

                mlflow.set_tag("mmaux.reused_run", "true")
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
        except Exception as err:  # the first error, stated once; the local result stays
            failed = {**report, "mlflow_run_id": run.info.run_id, "tracking": "failed"}
            write_json(REPORTS / "train.json", {**failed, "tracking_error": first_line(err)})
            raise TrackingError(
                f"MLflow tracking failed after training ({first_line(err)}); "
                f"{PIPELINE_RUN} and {REPORTS / 'train.json'} are kept"
            ) from err
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
    init_stage_process()
    train_flow(cli_params(__doc__))
