"""The paper's comparison: unimodal baselines vs fused CE-only vs +ITC / +ITM / +ITC+ITM.

Every variant runs on the same seeds, so differences can be read pairwise per seed; the
table reports mean ± sample std over seeds and the paired gap to fused CE-only.
"""

from __future__ import annotations

import json
import statistics
import time
from collections.abc import Callable, Sequence
from pathlib import Path
from typing import Any

from mmaux.config import VARIANTS as ALL_VARIANTS
from mmaux.config import Config, config_from_dict, dump_config

PAPER_BETA = 0.1
VARIANTS = ALL_VARIANTS[:6]  # the paper's comparison (mmaux ablate's default)
BASELINE = "fused-ce"
# What each variant trains: fusion (None: the base's fused head) and which aux terms are on.
VARIANT_TERMS: dict[str, dict[str, Any]] = {
    "text-only": {"fusion": "text"},
    "image-only": {"fusion": "image"},
    "fused-ce": {},
    "fused+itc": {"itc": True},
    "fused+itm": {"itm": True},
    "fused+itc+itm": {"itc": True, "itm": True},
    "fused+simcse": {"simcse": True},
    "fused+itc+simcse": {"itc": True, "simcse": True},  # MCSE
}


def variant_config(base: Config, variant: str, seed: int, out_dir: Path) -> Config:
    """The base configuration changed only where a variant differs (and seed, output dir).

    An aux term a variant turns on keeps the base's weight (the paper's 0.1 where the base
    has 0); the terms it leaves out get weight 0."""
    if variant not in VARIANT_TERMS:
        raise ValueError(f"unknown variant {variant!r}; expected one of {', '.join(ALL_VARIANTS)}")
    v = VARIANT_TERMS[variant]
    raw = dump_config(base)
    fused = base.model.fusion if base.model.fusion not in ("text", "image") else "concat"
    raw["model"]["fusion"] = v.get("fusion", fused)
    if raw["model"]["fusion"] in ("text", "image"):  # unimodal baselines are late-family models
        raw["model"]["family"] = "late"
    aux = raw["aux"]
    for term in ("itc", "itm", "simcse"):
        weight = getattr(base.aux, f"{term}_weight") or PAPER_BETA
        aux[f"{term}_weight"] = weight if v.get(term) else 0.0
    if aux["itc_weight"] == 0 and aux["itm_negatives"] == "hard":
        aux["itm_negatives"] = "random"
    raw["train"]["seed"] = seed
    raw["train"]["output_dir"] = str(out_dir / variant / f"seed-{seed}")
    return config_from_dict(raw, source=f"ablation:{variant}")


def _mean_std(xs: Sequence[float]) -> tuple[float, float]:
    return statistics.fmean(xs), (statistics.stdev(xs) if len(xs) > 1 else 0.0)


def summarise(runs: list[dict[str, Any]]) -> dict[str, Any]:
    """Per-variant mean ± std and the paired (same-seed) gap to fused CE-only."""
    out: dict[str, Any] = {}
    by_variant: dict[str, dict[int, dict[str, Any]]] = {}
    for r in runs:
        by_variant.setdefault(r["variant"], {})[r["seed"]] = r
    base = by_variant.get(BASELINE, {})
    for variant, seeds in by_variant.items():
        entry: dict[str, Any] = {"seeds": sorted(seeds)}
        for key in (
            "test_macro_f1",
            "test_weighted_f1",
            "test_accuracy",
            "val_macro_f1",
            "train_seconds",
        ):
            entry[key] = _mean_std([seeds[s][key] for s in sorted(seeds)])
        shared = sorted(set(seeds) & set(base))
        if variant != BASELINE and shared:
            gaps = [seeds[s]["test_macro_f1"] - base[s]["test_macro_f1"] for s in shared]
            entry["gap_vs_fused_ce"] = _mean_std(gaps)
        out[variant] = entry
    return out


def format_table(summary: dict[str, Any]) -> str:
    """A Markdown table of the summary."""
    lines = [
        "| variant | test macro-F1 | test weighted-F1 | test accuracy | Δ macro-F1 vs fused CE "
        "(paired) | train s/run |",
        "|---|---|---|---|---|---|",
    ]
    for variant in [v for v in VARIANTS if v in summary] + [
        v for v in summary if v not in VARIANTS
    ]:
        e = summary[variant]
        gap = e.get("gap_vs_fused_ce")
        gap_s = f"{gap[0]:+.4f} ± {gap[1]:.4f}" if gap else "—"
        lines.append(
            f"| {variant} | {e['test_macro_f1'][0]:.4f} ± {e['test_macro_f1'][1]:.4f} "
            f"| {e['test_weighted_f1'][0]:.4f} ± {e['test_weighted_f1'][1]:.4f} "
            f"| {e['test_accuracy'][0]:.4f} ± {e['test_accuracy'][1]:.4f} | {gap_s} "
            f"| {e['train_seconds'][0]:.1f} |"
        )
    return "\n".join(lines)


def run_ablation(
    base: Config,
    seeds: Sequence[int],
    out_dir: Path,
    variants: Sequence[str] = VARIANTS,
    train_fn: Callable[..., Any] | None = None,
) -> dict[str, Any]:
    """Train every variant on every seed; write ``runs.jsonl``, ``summary.json`` and
    ``table.md`` to ``out_dir``. Finished runs (with a ``metrics.json``) are reused and
    interrupted ones resumed (``train_fn`` is called with ``resume=True``)."""
    from mmaux.training import train

    train_fn = train_fn or train
    out_dir = Path(out_dir)
    out_dir.mkdir(parents=True, exist_ok=True)
    runs = []
    for variant in variants:
        for seed in seeds:
            cfg = variant_config(base, variant, seed, out_dir)
            metrics_path = Path(cfg.train.output_dir) / "metrics.json"
            if not metrics_path.is_file():
                started = time.perf_counter()
                train_fn(cfg, resume=True)
                wall = time.perf_counter() - started
            else:
                wall = float("nan")
            m = json.loads(metrics_path.read_text())
            runs.append(
                {
                    "variant": variant,
                    "seed": seed,
                    "run_dir": str(cfg.train.output_dir),
                    "test_macro_f1": m["test"]["macro_f1"],
                    "test_weighted_f1": m["test"]["weighted_f1"],
                    "test_accuracy": m["test"]["accuracy"],
                    "val_macro_f1": m["val"]["macro_f1"],
                    "best_epoch": m["best_epoch"],
                    "train_seconds": m["train_seconds"],
                    "wall_seconds": wall,
                }
            )
    summary = summarise(runs)
    (out_dir / "runs.jsonl").write_text("".join(json.dumps(r) + "\n" for r in runs))
    (out_dir / "summary.json").write_text(json.dumps(summary, indent=2) + "\n")
    (out_dir / "table.md").write_text(format_table(summary) + "\n")
    return summary
