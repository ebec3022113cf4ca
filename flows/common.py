"""What every flow shares: typed parameters, config loading, artifacts, report files."""

from __future__ import annotations

import argparse
import ctypes
import json
import logging
import os
import signal
import sys
from pathlib import Path
from types import FrameType
from typing import Any

from pydantic import BaseModel, ConfigDict, Field

from mmaux.config import Config, load_config
from mmaux.fsio import atomic_write_text

REPORTS = Path("reports")
PLOTS = Path("plots")
PIPELINE_RUN = Path("runs/pipeline")
PR_SET_PDEATHSIG = 1  # <linux/prctl.h>

log = logging.getLogger(__name__)


class StageParams(BaseModel):
    """Parameters of every stage flow: the configuration file and key=value overrides."""

    model_config = ConfigDict(frozen=True, extra="forbid")

    params_file: str = Field("params.yaml", description="configuration file")
    overrides: list[str] = Field(default_factory=list, description="KEY=VALUE overrides")

    def config(self, *extra: str) -> Config:
        return load_config(self.params_file, [*self.overrides, *extra])


DEFAULT_PARAMS = StageParams()


def cli_params(description: str) -> StageParams:
    """Stage parameters from the command line (``--params FILE --set KEY=VALUE``)."""
    parser = argparse.ArgumentParser(description=description)
    parser.add_argument("--params", default="params.yaml")
    parser.add_argument("--set", dest="overrides", action="append", default=[])
    args = parser.parse_args()
    return StageParams(params_file=args.params, overrides=args.overrides)


def write_json(path: Path, data: Any) -> Path:
    """Write ``data`` as JSON, atomically (unique temporary name, then rename)."""
    return atomic_write_text(Path(path), json.dumps(data, indent=2, default=str) + "\n")


def _exit_on_sigterm(signum: int, frame: FrameType | None) -> None:
    raise SystemExit(128 + signum)


def init_stage_process() -> None:
    """Run first in a stage's ``__main__``: the stage dies with its parent, and the library's
    INFO logs (trials, "resuming from ...") show in the stage's output.

    On Linux the process asks for SIGTERM when its parent (``dvc repro``, which runs the
    stage command through ``$SHELL -c``; the command ``exec``s python, so dvc is the parent)
    dies, so killing dvc never leaves a stage running. SIGTERM then raises
    :class:`SystemExit`, so exit hooks (Prefect's ephemeral server) run; while training, the
    trainer's own handler checkpoints first and stops. A parent that died before the call
    cannot be detected (the process then runs to its end)."""
    logging.getLogger("mmaux").setLevel(logging.INFO)
    signal.signal(signal.SIGTERM, _exit_on_sigterm)
    if not sys.platform.startswith("linux"):
        return
    parent = os.getppid()
    libc = ctypes.CDLL(None, use_errno=True)
    if libc.prctl(PR_SET_PDEATHSIG, signal.SIGTERM, 0, 0, 0) != 0:
        log.warning("prctl(PR_SET_PDEATHSIG) failed: %s", os.strerror(ctypes.get_errno()))
    elif os.getppid() != parent:  # the parent died between getppid and prctl
        os.kill(os.getpid(), signal.SIGTERM)


def markdown_table(rows: list[dict[str, Any]]) -> str:
    """A Markdown table of dict rows (keys of the first row are the columns)."""
    if not rows:
        return "(none)"
    cols = list(rows[0])
    lines = ["| " + " | ".join(cols) + " |", "|" + "---|" * len(cols)]
    for r in rows:
        cells = [f"{r.get(c):.4f}" if isinstance(r.get(c), float) else str(r.get(c)) for c in cols]
        lines.append("| " + " | ".join(cells) + " |")
    return "\n".join(lines)
