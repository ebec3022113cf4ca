"""Cells in parallel on one machine: ``mmaux study --workers N`` runs each missing cell as its
own ``mmaux study --cell KEY`` process, N at a time, each with its share of the CPU threads.

A cell process needs only the study's resolved configuration (``study.yaml``) and its key:
the same command runs a cell on any machine that sees the files. With tracking on, each
worker attaches its child run to the study's parent (``MMAUX_STUDY_PARENT``).
"""

from __future__ import annotations

import logging
import os
import subprocess
import sys
from collections.abc import Sequence
from concurrent.futures import FIRST_COMPLETED, Future, ThreadPoolExecutor, wait
from pathlib import Path

import yaml
from tqdm.auto import tqdm

from mmaux.config import Config, dump_config
from mmaux.fsio import atomic_write_text
from mmaux.study.grid import Cell, cell_config

log = logging.getLogger(__name__)

PARENT_ENV = "MMAUX_STUDY_PARENT"


def worker_command(params: Path, cell: Cell, track: bool) -> list[str]:
    """The command that trains one cell of the study saved in ``params``."""
    cmd = [sys.executable, "-m", "mmaux", "study", "--params", str(params), "--cell", cell.key]
    return cmd if track else [*cmd, "--no-track"]


def _warm_caches(study: Config, todo: Sequence[Cell]) -> None:
    """Fill the image caches once, before workers would each build them."""
    from mmaux.preprocess import preprocess

    seen: set[str] = set()
    for cell in todo:
        cfg = cell_config(study, cell)
        key = f"{cfg.model.family}:{cfg.model.fusion}"
        if key not in seen and cfg.model.fusion != "text":
            seen.add(key)
            preprocess(cfg)


def run_workers(
    study: Config, todo: Sequence[Cell], workers: int, parent_run_id: str | None = None
) -> list[Cell]:
    """Train ``todo`` in ``workers`` processes; returns the cells whose process failed (their
    logs are in ``<out_dir>/logs/``). Finished cells are never re-run by a worker."""
    out = Path(study.study.out_dir)
    logs = out / "logs"
    logs.mkdir(parents=True, exist_ok=True)
    params = out / "study.yaml"
    atomic_write_text(params, yaml.safe_dump(dump_config(study), sort_keys=False))
    _warm_caches(study, todo)
    threads = max(1, (os.cpu_count() or 1) // workers)
    env = {
        **os.environ,
        "OMP_NUM_THREADS": str(threads),
        "MKL_NUM_THREADS": str(threads),
        "TOKENIZERS_PARALLELISM": "false",
    }
    if parent_run_id:
        env[PARENT_ENV] = parent_run_id
    track = parent_run_id is not None
    failed: list[Cell] = []
    bar = tqdm(total=len(todo), desc=f"study ({workers} workers)", unit="cell",
               disable=None if study.train.progress else True)  # fmt: skip

    def one(cell: Cell) -> int:
        path = logs / (cell.key.replace("/", "__") + ".log")
        with path.open("w") as fh:
            return subprocess.run(
                worker_command(params, cell, track), env=env, stdout=fh, stderr=subprocess.STDOUT
            ).returncode

    with ThreadPoolExecutor(workers) as pool:
        running: dict[Future, Cell] = {pool.submit(one, c): c for c in todo}
        while running:
            done, _ = wait(running, return_when=FIRST_COMPLETED)
            for fut in done:
                cell = running.pop(fut)
                code = fut.result()
                if code != 0:
                    failed.append(cell)
                    log.error("[%s] worker exited with %d; see %s", cell.label, code, logs)
                bar.update(1)
                bar.set_postfix_str(cell.label)
    bar.close()
    return failed
