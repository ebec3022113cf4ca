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
from mmaux.models.base import MultimodalModel
from mmaux.runtime import autocast

DIAGNOSTICS = ("alignment", "uniformity_text", "uniformity_image")
"""The embedding-space diagnostics logged per validation epoch when ITC is on."""


@dataclass
class Predictions:
    ids: list[str]
    labels: np.ndarray  # (N,) true class indices
    probs: np.ndarray  # (N, C)
    loss: float
    text_emb: np.ndarray | None = None  # (N, D) L2-normalised ITC text embeddings
    image_emb: np.ndarray | None = None  # (N, D) and image embeddings

    @property
    def preds(self) -> np.ndarray:
        return self.probs.argmax(1)


def _to(batch: dict[str, torch.Tensor], device: torch.device) -> dict[str, torch.Tensor]:
    return {k: v.to(device, non_blocking=True) for k, v in batch.items()}


@torch.no_grad()
def predict(
    model: MultimodalModel,
    loader: DataLoader,
    device: torch.device,
    precision: str,
    embeddings: bool = False,
) -> Predictions:
    """Class probabilities for every post of the loader's dataset (eval mode, no aux
    tasks); with ``embeddings`` (a model with ITC projections) also the normalised ITC
    text and image embeddings."""
    was_training = model.training
    model.eval()
    dataset = loader.dataset
    probs, labels, ids, texts, images = [], [], [], [], []
    embeddings = embeddings and model.text_proj is not None
    total, n = 0.0, 0
    for batch in loader:
        batch = _to(batch, device)
        with autocast(device, precision):
            out = model(batch)
            if embeddings:
                t, i = model.itc_embeddings(out.encoded)
                texts.append(t.float().cpu().numpy())
                images.append(i.float().cpu().numpy())
        logits = out.logits.float()
        total += float(F.cross_entropy(logits, batch["labels"], reduction="sum"))
        n += logits.shape[0]
        probs.append(logits.softmax(-1).cpu().numpy())
        labels.append(batch["labels"].cpu().numpy())
        ids.extend(dataset.posts[i].id for i in batch["index"].tolist())  # type: ignore[attr-defined]
    model.train(was_training)
    pred = Predictions(ids, np.concatenate(labels), np.concatenate(probs), total / max(n, 1))
    if texts:
        pred.text_emb, pred.image_emb = np.concatenate(texts), np.concatenate(images)
    return pred


def evaluate(
    model: MultimodalModel,
    loader: DataLoader,
    labels: list[str],
    device: torch.device,
    precision: str,
    embeddings: bool = False,
) -> tuple[dict[str, Any], Predictions]:
    """Metrics (macro-F1 first) and the raw predictions; with ``embeddings`` also the
    embedding-space diagnostics (:func:`embedding_diagnostics`)."""
    pred = predict(model, loader, device, precision, embeddings)
    return prediction_metrics(pred, labels), pred


def embedding_diagnostics(text: np.ndarray, image: np.ndarray) -> dict[str, float]:
    """MCSE's diagnostics of the ITC space: ``alignment`` of the real (text, image) pairs
    and the ``uniformity`` of the text and of the image embeddings (lower is better)."""
    from mmaux.losses import alignment, uniformity

    t, i = torch.from_numpy(text), torch.from_numpy(image)
    out = {"alignment": float(alignment(t, i))}
    if len(t) >= 2:
        out["uniformity_text"] = float(uniformity(t))
        out["uniformity_image"] = float(uniformity(i))
    return out


def prediction_metrics(pred: Predictions, labels: list[str]) -> dict[str, Any]:
    """Classification metrics of predictions, their cross-entropy as ``loss`` and, when the
    predictions carry ITC embeddings, the embedding diagnostics."""
    metrics = classification_metrics(pred.labels.tolist(), pred.preds.tolist(), labels)
    metrics["loss"] = pred.loss
    if pred.text_emb is not None and pred.image_emb is not None:
        metrics.update(embedding_diagnostics(pred.text_emb, pred.image_emb))
    return metrics


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


def evaluate_splits(
    asm: Any,
    splits: tuple[str, ...],
    batch_size: int,
    device: torch.device,
    precision: str,
    out_dir: Path,
) -> dict[str, dict[str, Any]]:
    """Metrics of an assembled model on each non-empty split; writes
    ``predictions_<split>.csv`` to ``out_dir``."""
    metrics: dict[str, dict[str, Any]] = {}
    for split in splits:
        if len(asm.datasets[split]) == 0:
            continue
        loader = asm.loader(split, batch_size, device=device)
        metrics[split], pred = evaluate(asm.model, loader, asm.manifest.labels, device, precision)
        write_predictions(pred, asm.manifest.labels, Path(out_dir) / f"predictions_{split}.csv")
    return metrics


def evaluate_run(
    run_dir: Path, split: str | None = None, overrides: list[str] | None = None
) -> tuple[dict[str, Any], Predictions, list[str]]:
    """Rebuild a finished run (:class:`mmaux.prediction.Predictor`, the code the MLflow model
    runs) and evaluate it on ``split`` (default ``eval.split``) of the configured data set;
    returns metrics, predictions and labels."""
    from mmaux.assemble import load_data
    from mmaux.prediction import Predictor

    predictor = Predictor.from_run(Path(run_dir), overrides)
    cfg, labels = predictor.cfg, predictor.labels
    split = split or cfg.eval.split
    manifest = load_data(cfg)
    if labels != manifest.labels:
        raise ValueError(f"label set changed since training: {labels} vs {manifest.labels}")
    pred = predictor.predict(manifest.split(split), manifest.root, cfg.train.num_workers)
    metrics = prediction_metrics(pred, labels)
    metrics["split"] = split
    return metrics, pred, labels
