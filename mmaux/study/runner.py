"""Run a study: train every cell (finished cells reused, an interrupted one resumed), then
compare them (:mod:`mmaux.study.analysis`) and write the report (:mod:`mmaux.study.report`).

Cells are independent: :func:`run_cell` trains one from the study's configuration and its
key alone, so cells can be spread over processes or machines and collected afterwards
(:func:`collect`), which is what a re-run of :func:`run_study` does with finished cells.
"""

from __future__ import annotations

import json
import logging
import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Protocol

from tqdm.auto import tqdm

from mmaux.config import Config, dump_config
from mmaux.fsio import atomic_write_text
from mmaux.study.grid import Cell, cell_config, cells
from mmaux.study.logs import cell_logging

log = logging.getLogger(__name__)


@dataclass
class CellResult:
    """A finished cell: its run directory and final metrics (``metrics.json``)."""

    cell: Cell
    run_dir: Path
    metrics: dict[str, Any]
    history: list[dict[str, Any]]
    reused: bool
    wall_seconds: float

    def row(self) -> dict[str, Any]:
        """One flat line of ``cells.jsonl``."""
        m, best = self.metrics, self.best_epoch_record()
        row: dict[str, Any] = {
            **self.cell.as_dict(),
            "key": self.cell.key,
            "run_dir": str(self.run_dir),
            "test_macro_f1": m["test"]["macro_f1"],
            "test_weighted_f1": m["test"]["weighted_f1"],
            "test_accuracy": m["test"]["accuracy"],
            "val_macro_f1": m["val"]["macro_f1"],
            "n_train_posts": m.get("n_train_posts"),
            "best_epoch": m["best_epoch"],
            "epochs_run": m["epochs_run"],
            "train_seconds": m["train_seconds"],
            "reused": self.reused,
            "wall_seconds": round(self.wall_seconds, 3),
        }
        for k in ("val_alignment", "val_uniformity_text", "val_uniformity_image"):
            if k in best:
                row[k] = best[k]
        return row

    def best_epoch_record(self) -> dict[str, Any]:
        """The epoch record of the kept (best) weights."""
        want = int(self.metrics["best_epoch"]) - 1
        return next((r for r in self.history if r.get("epoch") == want), {})


class CellTrainer(Protocol):
    """Trains (or reuses) one cell; a tracker wraps it in an MLflow child run."""

    def __call__(self, cfg: Config, cell: Cell) -> tuple[Any, bool]: ...


def plain_trainer(cfg: Config, cell: Cell) -> tuple[Any, bool]:
    """Train (resume, or reuse a finished run of) one cell without tracking."""
    from mmaux.training import train_stage

    return train_stage(cfg)


def run_cell(study: Config, cell: Cell, trainer: CellTrainer = plain_trainer) -> CellResult:
    """Train one cell of ``study`` (reused when finished with this configuration)."""
    cfg = cell_config(study, cell)
    started = time.perf_counter()
    with cell_logging(cell.label):
        result, reused = trainer(cfg, cell)
    wall = time.perf_counter() - started
    return CellResult(cell, Path(result.run_dir), result.metrics, result.history, reused, wall)


def _progress(total: int, enabled: bool) -> tqdm:
    return tqdm(total=total, desc="study", unit="cell", disable=None if enabled else True)


def train_cells(
    study: Config,
    todo: Sequence[Cell] | None = None,
    trainer: CellTrainer = plain_trainer,
    on_cell: Callable[[CellResult], None] | None = None,
    run_one: Callable[[Config, Cell, CellTrainer], CellResult] = run_cell,
) -> list[CellResult]:
    """Train ``todo`` (default: every cell of the study) one after the other, with a
    progress bar over cells above each cell's own epoch bar. Every configuration is built
    before the first cell trains, so a bad model override fails at once. ``run_one`` runs a
    cell (a flow passes :func:`run_cell` wrapped as a task)."""
    todo = list(cells(study) if todo is None else todo)
    for cell in todo:
        cell_config(study, cell)
    results: list[CellResult] = []
    bar = _progress(len(todo), study.train.progress)
    try:
        for cell in todo:
            bar.set_postfix_str(cell.label)
            res = run_one(study, cell, trainer)
            results.append(res)
            how = "reused" if res.reused else f"trained in {res.wall_seconds:.0f} s"
            with cell_logging(cell.label):
                log.info(
                    "%s: test macro-F1 %.4f, val %.4f",
                    how,
                    res.metrics["test"]["macro_f1"],
                    res.metrics["val"]["macro_f1"],
                )
            if on_cell is not None:
                on_cell(res)
            bar.update(1)
    finally:
        bar.close()
    return results


def write_cells(study: Config, results: Sequence[CellResult]) -> Path:
    """``cells.jsonl`` (one line per cell) and the study's resolved ``study.yaml``."""
    import yaml

    out = Path(study.study.out_dir)
    out.mkdir(parents=True, exist_ok=True)
    atomic_write_text(out / "study.yaml", yaml.safe_dump(dump_config(study), sort_keys=False))
    lines = "".join(json.dumps(r.row()) + "\n" for r in results)
    return atomic_write_text(out / "cells.jsonl", lines)


def collect(study: Config) -> tuple[list[CellResult], list[Cell]]:
    """The finished cells of a study (trained here or by other workers) and the missing ones;
    nothing is trained."""
    from mmaux.training import finished_run

    done, missing = [], []
    for cell in cells(study):
        result = finished_run(cell_config(study, cell))
        if result is None:
            missing.append(cell)
        else:
            done.append(CellResult(cell, result.run_dir, result.metrics, result.history, True, 0))
    return done, missing


def report(study: Config, results: Sequence[CellResult]) -> dict[str, Any]:
    """Write ``cells.jsonl`` and the report of ``results``; returns the summary."""
    from mmaux.study.report import write_report

    write_cells(study, results)
    return write_report(study, results)


def run_study(
    study: Config,
    trainer: CellTrainer = plain_trainer,
    on_cell: Callable[[CellResult], None] | None = None,
) -> tuple[list[CellResult], dict[str, Any]]:
    """Train every cell, then analyse and report; returns the cells and the summary."""
    results = train_cells(study, trainer=trainer, on_cell=on_cell)
    return results, report(study, results)
