"""A study's numbers: per-variant results, paired comparisons with Holm-corrected
p-values, test-set bootstraps, low-resource curves and subgroup gaps.

Comparisons pair cells by seed within one model and training-set size. Two families are
corrected separately: every variant against ``study.baseline`` (fused CE), and every fused
variant against text-only (the question whether the image helps at all).
"""

from __future__ import annotations

import json
import statistics
from collections import defaultdict
from collections.abc import Sequence
from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd

from mmaux.config import Config
from mmaux.study.runner import CellResult
from mmaux.study.stats import (
    Comparison,
    adjust,
    compare_paired,
    mean_ci,
    paired_test_bootstrap,
    test_set_bootstrap,
)
from mmaux.study.subgroups import posts_frame, subgroup_gaps

TEXT_ONLY = "text-only"
UNIMODAL = ("text-only", "image-only")
Group = tuple[str, str]  # (model, size)
Predictions = dict[Path, pd.DataFrame]  # run_dir -> test predictions, read once per analysis


def _predictions(run_dir: Path, split: str = "test") -> pd.DataFrame:
    path = Path(run_dir) / f"predictions_{split}.csv"
    if not path.is_file():
        raise FileNotFoundError(f"{path}: the cell's predictions are missing; re-run the cell")
    return pd.read_csv(path, dtype={"id": str, "label": str, "prediction": str})


def _labels(run_dir: Path) -> list[str]:
    return list(json.loads((Path(run_dir) / "labels.json").read_text()))


def _encoded(pred: pd.DataFrame, labels: list[str]) -> tuple[np.ndarray, np.ndarray]:
    index = {name: i for i, name in enumerate(labels)}
    order = pred.sort_values("id")
    return (
        order["label"].map(index).to_numpy(dtype=int),
        order["prediction"].map(index).to_numpy(dtype=int),
    )


def _mean_std(xs: Sequence[float]) -> tuple[float, float]:
    return statistics.fmean(xs), (statistics.stdev(xs) if len(xs) > 1 else 0.0)


def grouped(results: Sequence[CellResult]) -> dict[Group, dict[str, dict[int, CellResult]]]:
    """(model, size) -> variant -> seed -> cell result."""
    out: dict[Group, dict[str, dict[int, CellResult]]] = defaultdict(lambda: defaultdict(dict))
    for r in results:
        out[(r.cell.model, r.cell.size)][r.cell.variant][r.cell.seed] = r
    return out


def _variant_row(
    study: Config,
    preds: Predictions,
    model: str,
    size: str,
    variant: str,
    seeds: dict[int, CellResult],
) -> dict[str, Any]:
    s = study.study
    ordered = [seeds[k] for k in sorted(seeds)]
    test = [r.metrics["test"]["macro_f1"] for r in ordered]
    val = [r.metrics["val"]["macro_f1"] for r in ordered]
    mean, lo, hi = mean_ci(test, s.confidence)
    labels = _labels(ordered[0].run_dir)
    encoded = [_encoded(preds[Path(r.run_dir)], labels) for r in ordered]
    boot = test_set_bootstrap(
        encoded[0][0],
        [p for _, p in encoded],
        len(labels),
        n_resamples=s.test_resamples,
        confidence=s.confidence,
    )
    row: dict[str, Any] = {
        "model": model,
        "n_train": size,
        "n_train_posts": ordered[0].metrics.get("n_train_posts"),
        "variant": variant,
        "seeds": sorted(seeds),
        "test_macro_f1": mean,
        "test_macro_f1_std": _mean_std(test)[1],
        "test_macro_f1_ci": [lo, hi],
        "test_bootstrap_ci": [boot["ci_low"], boot["ci_high"]],
        "test_bootstrap_std": boot["std"],
        "test_posts": boot["n_posts"],
        "val_macro_f1": _mean_std(val)[0],
        "val_macro_f1_std": _mean_std(val)[1],
        "test_accuracy": statistics.fmean(r.metrics["test"]["accuracy"] for r in ordered),
        "train_seconds": statistics.fmean(r.metrics["train_seconds"] for r in ordered),
        "per_seed_test_macro_f1": dict(zip(sorted(seeds), test, strict=True)),
    }
    for key in ("val_alignment", "val_uniformity_text", "val_uniformity_image"):
        vals = [r.best_epoch_record().get(key) for r in ordered]
        if all(v is not None for v in vals):
            row[key] = statistics.fmean(vals)
    return row


def _comparison(
    study: Config,
    preds: Predictions,
    model: str,
    size: str,
    base: str,
    treat: str,
    by_variant: dict[str, dict[int, CellResult]],
    metric: str,
) -> tuple[Comparison, dict[str, float]]:
    s = study.study
    a, b = by_variant[base], by_variant[treat]
    comp = compare_paired(
        f"{model} · n={size} · {treat} vs {base}",
        {k: r.metrics[metric]["macro_f1"] for k, r in a.items()},
        {k: r.metrics[metric]["macro_f1"] for k, r in b.items()},
        baseline_name=base,
        treatment_name=treat,
        confidence=s.confidence,
        n_resamples=s.resamples,
    )
    shared = comp.seeds
    labels = _labels(a[shared[0]].run_dir)
    ea = [_encoded(preds[Path(a[k].run_dir)], labels) for k in shared]
    eb = [_encoded(preds[Path(b[k].run_dir)], labels) for k in shared]
    boot = paired_test_bootstrap(
        ea[0][0],
        [p for _, p in ea],
        [p for _, p in eb],
        len(labels),
        n_resamples=s.test_resamples,
        confidence=s.confidence,
    )
    return comp, boot


def _comparisons(
    study: Config,
    preds: Predictions,
    groups: dict[Group, dict[str, dict[int, CellResult]]],
    reference: str,
) -> list[dict[str, Any]]:
    """Every fused variant of each (model, size) against ``reference``, Holm-corrected
    together."""
    s = study.study
    pairs: list[tuple[Group, str]] = []
    for group, by_variant in groups.items():
        if reference not in by_variant:
            continue
        pairs += [(group, v) for v in by_variant if v != reference and v not in UNIMODAL]
    found = [
        (group, v, *_comparison(study, preds, *group, reference, v, groups[group], "test"))
        for group, v in pairs
    ]
    adjust([c for _, _, c, _ in found], alpha=s.alpha)
    rows = []
    for (model, size), variant, comp, boot in found:
        rows.append(
            {
                "model": model,
                "n_train": size,
                "baseline": reference,
                "variant": variant,
                **comp.as_dict(),
                "verdict": comp.verdict(s.alpha),
                "test_bootstrap": boot,
            }
        )
    return rows


def _curves(rows: list[dict[str, Any]]) -> list[dict[str, Any]]:
    """Low-resource points: (model, variant, training posts) -> mean and CI."""
    sizes = {(r["model"], r["n_train"]) for r in rows}
    if len({size for _, size in sizes}) < 2:
        return []
    return [
        {
            "model": r["model"],
            "variant": r["variant"] if _one_model(rows) else f"{r['model']} · {r['variant']}",
            "n_train": int(r["n_train_posts"] or 0),
            "size": r["n_train"],
            "mean": r["test_macro_f1"],
            "ci_low": r["test_macro_f1_ci"][0],
            "ci_high": r["test_macro_f1_ci"][1],
            "n_seeds": len(r["seeds"]),
        }
        for r in rows
    ]


def _one_model(rows: list[dict[str, Any]]) -> bool:
    return len({r["model"] for r in rows}) == 1


def _largest(sizes: Sequence[str]) -> str:
    return "all" if "all" in sizes else max(sizes, key=int)


def _subgroups(
    study: Config, preds: Predictions, groups: dict[Group, dict[str, dict[int, CellResult]]]
) -> pd.DataFrame:
    """Subgroup gaps against the baseline at each model's largest training-set size."""
    s = study.study
    manifest = Path(study.data.root) / study.data.manifest
    posts = posts_frame(manifest, "test")
    frames = []
    for model in dict.fromkeys(m for m, _ in groups):
        size = _largest([sz for m, sz in groups if m == model])
        by_variant = groups[(model, size)]
        if s.baseline not in by_variant or len(by_variant) < 2:
            continue
        per_cell = {
            (v, seed): preds[Path(r.run_dir)]
            for v, seeds in by_variant.items()
            for seed, r in seeds.items()
        }
        labels = _labels(next(iter(by_variant[s.baseline].values())).run_dir)
        gaps = subgroup_gaps(
            per_cell,
            posts,
            labels,
            baseline=s.baseline,
            fields=s.subgroups,
            bins=s.length_bins,
            confidence=s.confidence,
        )
        gaps.insert(0, "n_train", size)
        gaps.insert(0, "model", model)
        frames.append(gaps)
    return pd.concat(frames, ignore_index=True) if frames else pd.DataFrame()


def analyse(study: Config, results: Sequence[CellResult]) -> dict[str, Any]:
    """Everything the report shows, JSON-safe (except ``subgroups``, a DataFrame)."""
    groups = grouped(results)
    preds: Predictions = {Path(r.run_dir): _predictions(r.run_dir) for r in results}
    order = {v: i for i, v in enumerate(study.study.variants)}
    rows = [
        _variant_row(study, preds, model, size, variant, seeds)
        for (model, size), by_variant in groups.items()
        for variant, seeds in sorted(by_variant.items(), key=lambda kv: order.get(kv[0], 99))
    ]
    return {
        "variants": rows,
        "vs_baseline": _comparisons(study, preds, groups, study.study.baseline),
        "vs_text_only": _comparisons(study, preds, groups, TEXT_ONLY)
        if study.study.baseline != TEXT_ONLY
        else [],
        "curves": _curves(rows),
        "subgroups": _subgroups(study, preds, groups),
        "cells": len(results),
    }
