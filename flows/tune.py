"""Stage 3: Optuna search of the ITC/ITM weights; trials are nested MLflow runs."""

from __future__ import annotations

import contextlib
import hashlib
import json
from collections.abc import Iterator
from pathlib import Path

from prefect import flow, task
from prefect.artifacts import create_table_artifact

from flows.common import DEFAULT_PARAMS, PLOTS, StageParams, cli_params, write_json
from mmaux.config import Config, dump_config


def study_name(cfg: Config) -> str:
    """The study name plus a hash of what the trials depend on: re-running with the same
    setup continues the study; a changed search space or base config starts a new one."""
    raw = dump_config(cfg)
    basis = {k: raw[k] for k in ("data", "model", "aux", "train")}
    basis["tune"] = {k: v for k, v in raw["tune"].items() if k not in ("n_trials", "enabled")}
    digest = hashlib.sha256(json.dumps(basis, sort_keys=True).encode()).hexdigest()[:10]
    return f"{cfg.tune.study_name}-{digest}"


def _fixed_params(cfg: Config) -> dict:
    """Search off: the train stage uses params.yaml's aux weights as they are."""
    a = cfg.aux
    params = {
        "aux.itc_weight": a.itc_weight,
        "aux.itm_weight": a.itm_weight,
        "aux.itm_negatives": a.itm_negatives,
    }
    return {"params": params, "value": None, "trial": None, "study": None, "n_complete": 0}


@task
def search(params: StageParams) -> dict:
    from mmaux.tuning import tune

    cfg = params.config("train.progress=false")
    cfg.tune.study_name = study_name(cfg)  # validated assignment
    if not cfg.tune.enabled:
        write_json(cfg.tune.best_params, _fixed_params(cfg))
        return {"history": [], "best": _fixed_params(cfg)}
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
                yield [MlflowCallback()]

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
    PLOTS.mkdir(parents=True, exist_ok=True)
    lines = ["trial,state,val_macro_f1"]
    lines += [f"{r['trial']},{r['state']},{'' if r['value'] is None else r['value']}" for r in rows]
    (PLOTS / "tuning.csv").write_text("\n".join(lines) + "\n")
    create_table_artifact(
        key="tuning-trials",
        table=rows or [{"search": "disabled"}],
        description=f"best: {out['best']}",
    )
    print(f"best: {out['best']}")
    return out["best"]


if __name__ == "__main__":
    tune_flow(cli_params(__doc__))
