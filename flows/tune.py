"""Stage 3: Optuna search of the ITC/ITM weights; trials are nested MLflow runs.

While ``tune.enabled``, the searched ``aux`` keys of params.yaml are neither read nor hashed
into the study name (:func:`mmaux.tuning.study_name`); with ``tune.enabled=false`` the stage
only records that the search is off (the train stage then uses ``aux`` as it is).
"""

from __future__ import annotations

import contextlib
import json
from collections.abc import Iterator
from pathlib import Path

from prefect import flow, task
from prefect.artifacts import create_table_artifact

from flows.common import (
    DEFAULT_PARAMS,
    PLOTS,
    StageParams,
    cli_params,
    init_stage_process,
    write_json,
)
from mmaux.fsio import atomic_write_text

SEARCH_OFF = {"enabled": False, "params": {}, "value": None, "trial": None, "study": None}


@task
def search(params: StageParams) -> dict:
    from mmaux.tuning import study_name, tune

    cfg = params.config("train.progress=false")
    if not cfg.tune.enabled:
        write_json(cfg.tune.best_params, SEARCH_OFF)
        return {"history": [], "best": SEARCH_OFF}
    cfg.tune.study_name = study_name(cfg)  # validated assignment
    hook = None
    parent = contextlib.nullcontext()
    if cfg.tracking.enabled:
        from mmaux.tracking import MlflowCallback, MlflowService, log_config, run_tags

        service = MlflowService(cfg.tracking)
        service.start()
        parent = service.run("tune", tags={**run_tags(), "stage": "tune"})

        @contextlib.contextmanager
        def hook(trial, trial_cfg) -> Iterator[list]:
            with service.run(
                f"trial-{trial.number:03d}",
                nested=True,
                tags={"stage": "tune", "optuna.trial": str(trial.number)},
            ):
                log_config(trial_cfg)
                yield [MlflowCallback(service)]

    with parent:
        result = tune(cfg, trial_hook=hook, out_dir=Path("tuning"))
        if cfg.tracking.enabled:
            import mlflow

            mlflow.log_params({f"best.{k}": v for k, v in result.best_params.items()})
            mlflow.log_metric("best_val_macro_f1", result.best_value)
    return {"history": result.history, "best": json.loads(Path(cfg.tune.best_params).read_text())}


@flow(name="tune", log_prints=True)
def tune_flow(params: StageParams = DEFAULT_PARAMS) -> dict:
    """Run (or continue) the study; write tune.best_params and plots/tuning.csv."""
    out = search(params)
    rows = [
        {
            "trial": h["number"],
            "state": h["state"],
            "value": h.get("value"),
            **{k: v for k, v in (h.get("params") or {}).items()},
        }
        for h in out["history"]
    ]
    lines = ["trial,state,val_macro_f1"]
    lines += [f"{r['trial']},{r['state']},{'' if r['value'] is None else r['value']}" for r in rows]
    atomic_write_text(PLOTS / "tuning.csv", "\n".join(lines) + "\n")
    create_table_artifact(
        key="tuning-trials",
        table=rows or [{"search": "disabled"}],
        description=f"best: {out['best']}",
    )
    print(f"best: {out['best']}")
    return out["best"]


if __name__ == "__main__":
    init_stage_process()
    tune_flow(cli_params(__doc__))
