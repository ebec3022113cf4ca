"""The study's report: ``report.md``, PNG plots, CSVs for DVC plots and ``summary.json``
(DVC metrics), all under ``study.out_dir``."""

from __future__ import annotations

import json
import math
from collections.abc import Sequence
from pathlib import Path
from typing import Any

import pandas as pd

from mmaux.config import Config
from mmaux.fsio import atomic_write_text
from mmaux.study import plots
from mmaux.study.analysis import analyse
from mmaux.study.runner import CellResult
from mmaux.study.stats import min_p

REPORT = "report.md"
GAP_COLUMNS = ("name", "mean", "ci_low", "ci_high", "significant")
CURVE_COLUMNS = ("model", "variant", "n_train", "size", "mean", "ci_low", "ci_high", "n_seeds")


def _f(x: float | None, digits: int = 3, sign: bool = False) -> str:
    if x is None or (isinstance(x, float) and math.isnan(x)):
        return "—"
    return f"{x:+.{digits}f}" if sign else f"{x:.{digits}f}"


def _ci(pair: Sequence[float | None], sign: bool = False) -> str:
    return f"[{_f(pair[0], sign=sign)}, {_f(pair[1], sign=sign)}]"


def _variants_table(rows: list[dict[str, Any]]) -> list[str]:
    lines = [
        "| model | n train | variant | seeds | test macro-F1 mean ± std | 95% CI (seeds) "
        "| 95% CI (test posts) | val macro-F1 | train s |",
        "|---|---|---|---|---|---|---|---|---|",
    ]
    for r in rows:
        lines.append(
            f"| {r['model']} | {r['n_train']} | {r['variant']} | {len(r['seeds'])} "
            f"| {_f(r['test_macro_f1'], 4)} ± {_f(r['test_macro_f1_std'], 4)} "
            f"| {_ci(r['test_macro_f1_ci'])} | {_ci(r['test_bootstrap_ci'])} "
            f"| {_f(r['val_macro_f1'])} ± {_f(r['val_macro_f1_std'])} | {r['train_seconds']:.0f} |"
        )
    return lines


def _comparisons_table(rows: list[dict[str, Any]]) -> list[str]:
    lines = [
        "| model | n train | comparison | Δ macro-F1 | 95% CI (seeds) | Wilcoxon p (Holm) "
        "| permutation p (Holm) | 95% CI (test posts) | verdict |",
        "|---|---|---|---|---|---|---|---|---|",
    ]
    for r in rows:
        boot = r["test_bootstrap"]
        lines.append(
            f"| {r['model']} | {r['n_train']} | {r['variant']} − {r['baseline']} "
            f"| {_f(r['mean'], sign=True)} | {_ci((r['ci_low'], r['ci_high']), sign=True)} "
            f"| {_f(r['p_wilcoxon'])} ({_f(r['p_wilcoxon_holm'])}) "
            f"| {_f(r['p_permutation'])} ({_f(r['p_permutation_holm'])}) "
            f"| {_ci((boot['ci_low'], boot['ci_high']), sign=True)} "
            f"| {r['verdict'].split(':')[0]} |"
        )
    return lines


def _in_words(rows: list[dict[str, Any]], what: str, alpha: float) -> list[str]:
    if not rows:
        return []
    sig = [r for r in rows if r.get("significant")]
    n_seeds = min(len(r["seeds"]) for r in rows)
    lines = []
    if not sig:
        lines.append(
            f"**No {what} difference is significant** at α = {alpha} after Holm's correction "
            f"over the {len(rows)} comparisons."
        )
    else:
        lines.append(
            f"**Significant at α = {alpha} after Holm's correction over {len(rows)} comparisons:**"
        )
        lines += [f"- {r['model']}, n={r['n_train']}: {r['variant']} vs {r['baseline']}: "
                  f"{r['verdict']}" for r in sig]  # fmt: skip
    if min_p(n_seeds) >= alpha:
        lines.append(
            f"With {n_seeds} seeds the smallest attainable two-sided p is "
            f"{min_p(n_seeds):.3f}: no gap can be significant, whatever its size."
        )
    return lines


def _spread(rows: list[dict[str, Any]]) -> list[str]:
    """Seed spread next to the spread that test-set size alone causes."""
    lines = [
        "| model | n train | variant | std over seeds | std from resampling test posts |",
        "|---|---|---|---|---|",
    ]
    for r in rows:
        lines.append(
            f"| {r['model']} | {r['n_train']} | {r['variant']} | {_f(r['test_macro_f1_std'])} "
            f"| {_f(r['test_bootstrap_std'])} ({r['test_posts']} posts) |"
        )
    return lines


def _subgroups_table(gaps: pd.DataFrame) -> list[str]:
    lines = [
        "| model | subgroup | group | posts | variant | metric | baseline | variant value "
        "| Δ (95% CI) |",
        "|---|---|---|---|---|---|---|---|---|",
    ]
    for r in gaps.to_dict("records"):
        lines.append(
            f"| {r['model']} | {r['family']} | {r['group']} | {r['n']} | {r['variant']} "
            f"| {r['metric']} | {_f(r['baseline'])} | {_f(r['value'])} "
            f"| {_f(r['gap'], sign=True)} {_ci((r['ci_low'], r['ci_high']), sign=True)} |"
        )
    return lines


def _json_safe(x: Any) -> Any:
    if isinstance(x, float) and not math.isfinite(x):
        return None
    if isinstance(x, dict):
        return {str(k): _json_safe(v) for k, v in x.items()}
    if isinstance(x, list | tuple):
        return [_json_safe(v) for v in x]
    return x


def metrics_tree(summary: dict[str, Any]) -> dict[str, Any]:
    """The DVC metrics: model -> n_train -> variant -> test/val macro-F1, and the gaps."""
    tree: dict[str, Any] = {}
    for r in summary["variants"]:
        node = tree.setdefault(r["model"], {}).setdefault(f"n_{r['n_train']}", {})
        node[r["variant"]] = {
            "test_macro_f1": r["test_macro_f1"],
            "val_macro_f1": r["val_macro_f1"],
        }
    for r in summary["vs_baseline"]:
        node = tree[r["model"]][f"n_{r['n_train']}"][r["variant"]]
        node["delta_vs_baseline"] = r["mean"]
        node["p_holm"] = r["p_permutation_holm"]
    return _json_safe(tree)


def write_report(study: Config, results: Sequence[CellResult]) -> dict[str, Any]:
    """Analyse the cells and write every report file; returns the summary."""
    s = study.study
    out = Path(s.out_dir)
    plot_dir = out / "plots"
    plot_dir.mkdir(parents=True, exist_ok=True)
    summary = analyse(study, results)
    gaps: pd.DataFrame = summary.pop("subgroups")
    figures: dict[str, Path] = {}

    comps = summary["vs_baseline"] + summary["vs_text_only"]
    bars = [
        {
            "name": f"{r['model']} n={r['n_train']}: {r['variant']} − {r['baseline']}",
            "mean": r["mean"],
            "ci_low": r["ci_low"],
            "ci_high": r["ci_high"],
            "significant": r.get("significant"),
        }
        for r in comps
    ]
    # The CSVs always exist (DVC declares them), with a header when there is nothing to show.
    pd.DataFrame(bars, columns=list(GAP_COLUMNS)).to_csv(out / "gaps.csv", index=False)
    pd.DataFrame(summary["curves"], columns=list(CURVE_COLUMNS)).to_csv(
        out / "low_resource.csv", index=False
    )
    gaps.to_csv(out / "subgroups.csv", index=False)
    if bars:
        figures["gaps"] = plots.save(plots.gap_bars(bars), plot_dir / "gaps.png")
    if summary["curves"]:
        figures["low_resource"] = plots.save(
            plots.low_resource_curves(summary["curves"]), plot_dir / "low_resource.png"
        )
    if not gaps.empty:
        figures["subgroups"] = plots.save(plots.subgroup_gap_plot(gaps), plot_dir / "subgroups.png")
    au = [r for r in summary["variants"] if "val_alignment" in r]
    if au:
        rows = [
            {
                "variant": f"{r['model']} n={r['n_train']} {r['variant']}",
                "alignment": r["val_alignment"],
                "uniformity_text": r["val_uniformity_text"],
                "uniformity_image": r["val_uniformity_image"],
            }
            for r in au
        ]
        figures["alignment_uniformity"] = plots.save(
            plots.alignment_uniformity(rows), plot_dir / "alignment_uniformity.png"
        )

    trained = [r for r in results if not r.reused]
    train_s = sum(float(r.metrics.get("train_seconds", 0.0)) for r in results)
    lines = [
        f"# Study `{s.name}`",
        "",
        f"{len(results)} cells: models {list(s.models)} × variants {s.variants} × "
        f"training sizes {s.sizes} × seeds {s.seeds}. Data: `{study.data.root}`. "
        f"Baseline: `{s.baseline}`. Every comparison pairs runs on the same seeds. "
        f"Training time summed over cells: {train_s / 60:.1f} min "
        f"({len(trained)} cells trained by this process, the rest reused or trained by "
        "workers).",
        "",
        "## Results (test split)",
        "",
        "The 95% CI over seeds is Student's t over the per-seed macro-F1. The CI over test "
        "posts resamples the test posts (the same resample for every seed) and shows how much "
        "the test split's size alone moves the mean.",
        "",
        *_variants_table(summary["variants"]),
        "",
        f"## Aux losses against `{s.baseline}`",
        "",
        "Δ is the paired mean over seeds; its CI is a BCa bootstrap over seeds. p-values: "
        "two-sided Wilcoxon signed-rank and exact paired permutation (sign-flip) tests, "
        "Holm-corrected over all comparisons in this table.",
        "",
        *(_comparisons_table(summary["vs_baseline"]) if summary["vs_baseline"] else ["(none)"]),
        "",
        *_in_words(summary["vs_baseline"], "aux-loss", s.alpha),
    ]
    if summary["vs_text_only"]:
        lines += [
            "",
            "## Fused against text-only",
            "",
            "Does the image help at all? Each fused variant against the text-only model, "
            "Holm-corrected over this table.",
            "",
            *_comparisons_table(summary["vs_text_only"]),
            "",
            *_in_words(summary["vs_text_only"], "fused-vs-text-only", s.alpha),
        ]
    lines += ["", "## Seed spread and test-set size", "", *_spread(summary["variants"])]
    if summary["curves"]:
        lines += [
            "",
            "## Low-resource curves",
            "",
            "Seeded, stratified subsamples of the training split (each seed draws its own "
            "subsample; every variant of a seed trains on the same one).",
            "",
            "![low-resource curves](plots/low_resource.png)",
        ]
    if not gaps.empty:
        lines += [
            "",
            f"## Subgroups (Δ against `{s.baseline}`, paired over seeds)",
            "",
            "![subgroup gaps](plots/subgroups.png)",
            "",
            *_subgroups_table(gaps),
        ]
    if "gaps" in figures:
        lines += ["", "## Gaps with CIs", "", "![gaps](plots/gaps.png)"]
    if au:
        lines += [
            "",
            "## Alignment and uniformity (val, best epoch)",
            "",
            "![alignment and uniformity](plots/alignment_uniformity.png)",
        ]
    lines.append("")
    atomic_write_text(out / REPORT, "\n".join(lines))
    summary["figures"] = {k: str(v) for k, v in figures.items()}
    summary["subgroup_rows"] = len(gaps)
    atomic_write_text(out / "summary.json", json.dumps(_json_safe(summary), indent=2) + "\n")
    atomic_write_text(out / "metrics.json", json.dumps(metrics_tree(summary), indent=2) + "\n")
    return summary


def report_files(study: Config) -> list[Path]:
    """Every report file that exists: the Markdown, JSON, CSVs and plots."""
    out = Path(study.study.out_dir)
    names = [REPORT, "summary.json", "metrics.json", "cells.jsonl", "study.yaml"]
    names += ["gaps.csv", "low_resource.csv", "subgroups.csv"]
    files = [out / n for n in names if (out / n).is_file()]
    return files + sorted((out / "plots").glob("*.png"))
