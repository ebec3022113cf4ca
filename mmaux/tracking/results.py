"""What a run logs besides its training curves: the configuration as parameters, and the
final metrics, run files and per-split reports."""

from __future__ import annotations

import json
import re
from collections.abc import Iterator
from pathlib import Path
from typing import TYPE_CHECKING, Any

from mmaux.config import Config, dump_config
from mmaux.tracking.service import active_run_id

if TYPE_CHECKING:
    from mmaux.training import TrainResult

RUN_FILES = (
    "config.yaml",
    "labels.json",
    "metrics.json",
    "epochs.jsonl",
    "steps.jsonl",
    "skipped.jsonl",
)


def metric_name(name: str) -> str:
    """``name`` with the characters MLflow rejects in metric keys replaced by ``_``."""
    return re.sub(r"[^\w.\- /:]", "_", name)


def number(value: Any) -> float | None:
    """``value`` as a float if it is a real number (not a bool), else None."""
    if isinstance(value, bool) or not isinstance(value, int | float):
        return None
    return float(value)


def _flatten(tree: dict[str, Any], prefix: str = "") -> Iterator[tuple[str, Any]]:
    for key, value in tree.items():
        if isinstance(value, dict) and value:
            yield from _flatten(value, f"{prefix}{key}.")
        else:
            yield f"{prefix}{key}", value


def _param_value(value: Any, limit: int) -> str:
    text = json.dumps(value) if isinstance(value, list | tuple | dict) else str(value)
    return text if len(text) <= limit else text[: limit - 3] + "..."


def log_config(cfg: Config) -> None:
    """Log the configuration as flat parameters (``aux.itc_weight`` = ``"0.1"``, ...)."""
    import mlflow
    from mlflow.utils.validation import MAX_PARAM_VAL_LENGTH

    active_run_id()
    params = {k: _param_value(v, MAX_PARAM_VAL_LENGTH) for k, v in _flatten(dump_config(cfg))}
    mlflow.log_params(params)


def _final_metrics(summary: dict[str, Any], splits: list[str]) -> dict[str, float]:
    values: dict[str, float] = {}
    for key in ("best_epoch", "epochs_run", "global_step", "train_seconds", "steps_per_second"):
        if (v := number(summary.get(key))) is not None:
            values[key] = v
    for split in splits:
        m = summary[split]
        for key in ("macro_f1", "weighted_f1", "accuracy", "macro_precision", "macro_recall"):
            if (v := number(m.get(key))) is not None:
                values[f"{split}/{key}"] = v
        if (v := number(m.get("loss"))) is not None:
            values[f"{split}/loss"] = v
        for label, row in m.get("per_class", {}).items():
            values[metric_name(f"{split}/f1/{label}")] = float(row["f1"])
    return values


def log_result(result: TrainResult) -> None:
    """Log final metrics (headline, per-class F1, run summary), the run files and, per
    evaluated split, a confusion-matrix PNG and a per-class report (JSON + text).

    Final metrics use step = ``epochs_run`` so that ``val/macro_f1`` (best weights) is the
    latest value of the per-epoch history the callback logged."""
    import mlflow

    from mmaux.metrics import format_report
    from mmaux.tracking.figures import confusion_figure

    active_run_id()
    summary = result.metrics
    splits = [s for s in ("val", "test") if isinstance(summary.get(s), dict)]
    mlflow.log_metrics(_final_metrics(summary, splits), step=int(result.epochs_run))

    run_dir = Path(result.run_dir)
    mlflow.set_tag("mmaux.run_dir", str(run_dir.resolve()))
    for path in [*(run_dir / n for n in RUN_FILES), *sorted(run_dir.glob("predictions_*.csv"))]:
        if path.is_file():
            mlflow.log_artifact(str(path))
    for split in splits:
        m = summary[split]
        report = {
            "split": split,
            **{k: m[k] for k in ("n", "macro_f1", "weighted_f1", "accuracy") if k in m},
            "per_class": m.get("per_class", {}),
            "labels": m.get("labels", list(m.get("per_class", {}))),
            "confusion_matrix": m.get("confusion_matrix"),
        }
        mlflow.log_dict(report, f"evaluation/{split}_report.json")
        if "per_class" in m:
            mlflow.log_text(format_report(m) + "\n", f"evaluation/{split}_report.txt")
        if m.get("confusion_matrix") is not None:
            fig = confusion_figure(
                m["confusion_matrix"],
                report["labels"],
                f"{split}: macro-F1 {m.get('macro_f1', float('nan')):.3f}",
            )
            mlflow.log_figure(fig, f"evaluation/{split}_confusion_matrix.png")
