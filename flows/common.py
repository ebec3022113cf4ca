"""What every flow shares: typed parameters, config loading, artifacts, report files."""

from __future__ import annotations

import argparse
import json
from pathlib import Path
from typing import Any

from pydantic import BaseModel, ConfigDict, Field

from mmaux.config import Config, load_config

REPORTS = Path("reports")
PLOTS = Path("plots")
PIPELINE_RUN = Path("runs/pipeline")


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
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(json.dumps(data, indent=2, default=str) + "\n")
    return path


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
