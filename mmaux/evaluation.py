"""Prediction and evaluation of a trained classifier on a split."""

from __future__ import annotations

import csv
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
import torch
import torch.nn.functional as F
from torch.utils.data import DataLoader

from mmaux.metrics import classification_metrics
from mmaux.models.classifier import MultimodalClassifier
from mmaux.runtime import autocast


@dataclass
class Predictions:
    ids: list[str]
    labels: np.ndarray  # (N,) true class indices
    probs: np.ndarray  # (N, C)
    loss: float

    @property
    def preds(self) -> np.ndarray:
        return self.probs.argmax(1)


def _to(batch: dict[str, torch.Tensor], device: torch.device) -> dict[str, torch.Tensor]:
    return {k: v.to(device, non_blocking=True) for k, v in batch.items()}


@torch.no_grad()
def predict(
    model: MultimodalClassifier, loader: DataLoader, device: torch.device, precision: str
) -> Predictions:
    """Class probabilities for every post of the loader's dataset (eval mode, no aux tasks)."""
    was_training = model.training
    model.eval()
    dataset = loader.dataset
    probs, labels, ids = [], [], []
    total, n = 0.0, 0
    for batch in loader:
        batch = _to(batch, device)
        with autocast(device, precision):
            logits = model(batch).logits.float()
        total += float(F.cross_entropy(logits, batch["labels"], reduction="sum"))
        n += logits.shape[0]
        probs.append(logits.softmax(-1).cpu().numpy())
        labels.append(batch["labels"].cpu().numpy())
        ids.extend(dataset.posts[i].id for i in batch["index"].tolist())  # type: ignore[attr-defined]
    model.train(was_training)
    return Predictions(ids, np.concatenate(labels), np.concatenate(probs), total / max(n, 1))


def evaluate(
    model: MultimodalClassifier,
    loader: DataLoader,
    labels: list[str],
    device: torch.device,
    precision: str,
) -> tuple[dict[str, Any], Predictions]:
    """Metrics (macro-F1 first) and the raw predictions."""
    pred = predict(model, loader, device, precision)
    metrics = classification_metrics(pred.labels.tolist(), pred.preds.tolist(), labels)
    metrics["loss"] = pred.loss
    return metrics, pred


def write_predictions(pred: Predictions, labels: list[str], path: Path) -> Path:
    """CSV: id, label, prediction, then one probability column per class."""
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    with path.open("w", newline="", encoding="utf-8") as fh:
        w = csv.writer(fh)
        w.writerow(["id", "label", "prediction", *[f"p_{name}" for name in labels]])
        for pid, y, p, row in zip(pred.ids, pred.labels, pred.preds, pred.probs, strict=True):
            w.writerow([pid, labels[y], labels[p], *[f"{x:.6f}" for x in row]])
    return path
