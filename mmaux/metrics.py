"""Classification metrics: macro-F1 (the headline), weighted-F1, accuracy, per-class report."""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

import numpy as np


def confusion_matrix(y_true: Sequence[int], y_pred: Sequence[int], num_classes: int) -> np.ndarray:
    """``cm[i, j]`` = posts of true class i predicted as class j."""
    cm = np.zeros((num_classes, num_classes), dtype=np.int64)
    np.add.at(cm, (np.asarray(y_true, dtype=np.int64), np.asarray(y_pred, dtype=np.int64)), 1)
    return cm


def _safe_div(a: np.ndarray, b: np.ndarray) -> np.ndarray:
    return np.divide(a, b, out=np.zeros_like(a, dtype=np.float64), where=b > 0)


def classification_metrics(
    y_true: Sequence[int], y_pred: Sequence[int], labels: Sequence[str]
) -> dict[str, Any]:
    """Macro/weighted F1, precision, recall, accuracy, per-class report and confusion matrix.

    Undefined ratios (no predictions or no support for a class) count as 0, like
    scikit-learn's ``zero_division=0``; every declared class enters the macro average.
    """
    k = len(labels)
    cm = confusion_matrix(y_true, y_pred, k)
    tp = np.diag(cm).astype(np.float64)
    support = cm.sum(1).astype(np.float64)
    predicted = cm.sum(0).astype(np.float64)
    precision = _safe_div(tp, predicted)
    recall = _safe_div(tp, support)
    f1 = _safe_div(2 * precision * recall, precision + recall)
    n = support.sum()
    weights = support / n if n else np.zeros_like(support)
    return {
        "n": int(n),
        "accuracy": float(tp.sum() / n) if n else 0.0,
        "macro_f1": float(f1.mean()),
        "macro_precision": float(precision.mean()),
        "macro_recall": float(recall.mean()),
        "weighted_f1": float((f1 * weights).sum()),
        "per_class": {
            name: {
                "precision": float(precision[i]),
                "recall": float(recall[i]),
                "f1": float(f1[i]),
                "support": int(support[i]),
            }
            for i, name in enumerate(labels)
        },
        "confusion_matrix": cm.tolist(),
        "labels": list(labels),
    }


def format_report(metrics: dict[str, Any]) -> str:
    """A plain-text per-class report with the headline figures."""
    rows = [f"{'class':<24}{'prec':>8}{'recall':>8}{'f1':>8}{'n':>7}"]
    for name, m in metrics["per_class"].items():
        rows.append(
            f"{name:<24}{m['precision']:>8.3f}{m['recall']:>8.3f}{m['f1']:>8.3f}{m['support']:>7d}"
        )
    rows.append(
        f"macro-F1 {metrics['macro_f1']:.4f}  weighted-F1 {metrics['weighted_f1']:.4f}  "
        f"accuracy {metrics['accuracy']:.4f}  (n={metrics['n']})"
    )
    return "\n".join(rows)
