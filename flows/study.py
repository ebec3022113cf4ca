"""A study as a flow: every cell (model x variant x training size x seed) a task run and an
MLflow child run of one parent study run; the report, plots and tables as artifacts.

Thin: the grid, statistics and report are :mod:`mmaux.study`; tracking is
:class:`mmaux.tracking.study.StudyTracker`. Finished cells are reused, so a re-run after a
kill continues where it stopped.

    python -m flows.study --preset aux --set study.seeds=[0,1,2]
"""

from __future__ import annotations

import argparse
from pathlib import Path

from prefect import flow, task
from prefect.artifacts import create_markdown_artifact, create_table_artifact
from prefect.cache_policies import NO_CACHE

from flows.common import DEFAULT_PARAMS, StageParams, init_stage_process
from mmaux.config import Config
from mmaux.study.grid import Cell, study_overrides
from mmaux.study.runner import CellResult, CellTrainer, plain_trainer, report, run_cell, train_cells


@task(name="study-cell", task_run_name="{cell.key}", cache_policy=NO_CACHE)
def cell_task(study: Config, cell: Cell, trainer: CellTrainer) -> CellResult:
    """One cell (reused when finished); a task run per cell in the Prefect UI."""
    return run_cell(study, cell, trainer)


def _run_one(study: Config, cell: Cell, trainer: CellTrainer) -> CellResult:
    return cell_task(study, cell, trainer)


def _artifacts(cfg: Config, summary: dict) -> None:
    out = Path(cfg.study.out_dir)
    key = "".join(c if c.isalnum() else "-" for c in cfg.study.name.lower()).strip("-")
    create_markdown_artifact(
        key=f"{key}-report" if key else "study-report",
        markdown=(out / "report.md").read_text(),
        description=f"study {cfg.study.name}: {summary['cells']} cells",
    )
    rows = [
        {
            "model": r["model"],
            "n_train": r["n_train"],
            "comparison": f"{r['variant']} vs {r['baseline']}",
            "delta": round(r["mean"], 4),
            "ci": f"[{r['ci_low']:.3f}, {r['ci_high']:.3f}]" if r["ci_low"] is not None else "—",
            "p_holm": r["p_permutation_holm"],
            "verdict": r["verdict"],
        }
        for r in summary["vs_baseline"] + summary["vs_text_only"]
    ]
    if rows:
        create_table_artifact(
            key=f"{key}-comparisons" if key else "study-comparisons",
            table=rows,
            description="paired comparisons, Holm-corrected",
        )


@flow(name="study", log_prints=True)
def study_flow(params: StageParams = DEFAULT_PARAMS, preset: str | None = None) -> dict:
    """Train every cell of ``study.*`` (a preset first, then the overrides) and report."""
    overrides = [*study_overrides(preset), *params.overrides]  # the overrides win
    cfg = StageParams(params_file=params.params_file, overrides=overrides).config()
    trainer: CellTrainer = plain_trainer
    tracker = None
    if cfg.tracking.enabled:
        from mmaux.tracking.study import StudyTracker

        tracker = StudyTracker(cfg)
        trainer = tracker
    if tracker is None:
        results = train_cells(cfg, trainer=trainer, run_one=_run_one)
        summary = report(cfg, results)
    else:
        from mmaux.study.report import report_files

        with tracker.parent():
            results = train_cells(cfg, trainer=trainer, run_one=_run_one)
            summary = report(cfg, results)
            tracker.log_report(summary, report_files(cfg))
        summary["mlflow_parent_run_id"] = tracker.parent_id
    _artifacts(cfg, summary)
    print(f"study {cfg.study.name}: {summary['cells']} cells; report {cfg.study.out_dir}/report.md")
    return summary


if __name__ == "__main__":
    init_stage_process()
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--params", default="params.yaml")
    p.add_argument("--set", dest="overrides", action="append", default=[])
    p.add_argument("--preset")
    a = p.parse_args()
    study_flow(StageParams(params_file=a.params, overrides=a.overrides), a.preset)
