"""Study figures: paired gaps, low-resource curves, subgroup gaps, alignment/uniformity.

Every function builds a standalone :class:`matplotlib.figure.Figure` on an Agg canvas (no
pyplot, so no global figure registry to leak); empty input gives a "no data" figure.
"""

from __future__ import annotations

import math
from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd
from matplotlib.backends.backend_agg import FigureCanvasAgg
from matplotlib.figure import Figure
from matplotlib.lines import Line2D
from matplotlib.patches import Patch
from matplotlib.ticker import NullLocator

STRONG = "#1f5fbf"
GREY = "#b3b3b3"
PALETTE = [
    "#1f77b4",
    "#d62728",
    "#2ca02c",
    "#ff7f0e",
    "#9467bd",
    "#8c564b",
    "#e377c2",
    "#17becf",
    "#bcbd22",
    "#7f7f7f",
]


def _figure(width: float = 7.0, height: float = 4.5) -> Figure:
    fig = Figure(figsize=(width, height))
    FigureCanvasAgg(fig)
    return fig


def _no_data(title: str) -> Figure:
    fig = _figure(6.0, 3.0)
    ax = fig.add_subplot()
    ax.set_axis_off()
    ax.set_title(title)
    ax.text(0.5, 0.5, "no data", ha="center", va="center", fontsize=14, transform=ax.transAxes)
    return fig


def _f(v: Any) -> float:
    """A float, NaN for None or anything unparsable."""
    try:
        return float(v)
    except (TypeError, ValueError):
        return math.nan


def _err(mean: np.ndarray, lo: np.ndarray, hi: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """Finite-CI mask and the asymmetric error-bar extents for those points."""
    ok = np.isfinite(mean) & np.isfinite(lo) & np.isfinite(hi)
    return ok, np.vstack([mean[ok] - lo[ok], hi[ok] - mean[ok]]).clip(min=0)


def gap_bars(
    rows: Sequence[Mapping[str, Any]], title: str = "Δ macro-F1 vs baseline (paired, 95% CI)"
) -> Figure:
    """Horizontal bars of mean paired gaps with CI whiskers; significant ones in colour."""
    if not rows:
        return _no_data(title)
    names = [str(r["name"]) for r in rows]
    mean = np.array([_f(r.get("mean")) for r in rows])
    lo = np.array([_f(r.get("ci_low")) for r in rows])
    hi = np.array([_f(r.get("ci_high")) for r in rows])
    sig = [bool(r.get("significant")) for r in rows]
    fig = _figure(7.0, 1.5 + 0.4 * len(rows))
    ax = fig.add_subplot()
    y = np.arange(len(rows))
    ax.barh(y, np.nan_to_num(mean), color=[STRONG if s else GREY for s in sig], height=0.6)
    ok, xerr = _err(mean, lo, hi)
    if ok.any():
        ax.errorbar(mean[ok], y[ok], xerr=xerr, fmt="none", ecolor="black", capsize=3, lw=1)
    ax.axvline(0, color="black", lw=0.8)
    ax.set_yticks(y, names)
    ax.invert_yaxis()
    ax.set_xlabel("Δ vs baseline")
    ax.set_title(title)
    ax.legend(
        handles=[
            Patch(color=STRONG, label="significant"),
            Patch(color=GREY, label="not significant"),
        ],
        loc="best",
        fontsize="small",
    )
    return fig


def low_resource_curves(
    rows: Sequence[Mapping[str, Any]], title: str = "Low-resource curves"
) -> Figure:
    """Test macro-F1 against training-set size (log x), one line + CI band per variant."""
    rows = [r for r in rows if _f(r.get("n_train")) > 0]
    if not rows:
        return _no_data(title)
    frame = pd.DataFrame(
        {
            "variant": [str(r["variant"]) for r in rows],
            "n_train": [int(r["n_train"]) for r in rows],
            "mean": [_f(r.get("mean")) for r in rows],
            "ci_low": [_f(r.get("ci_low")) for r in rows],
            "ci_high": [_f(r.get("ci_high")) for r in rows],
        }
    )
    fig = _figure()
    ax = fig.add_subplot()
    for i, (variant, g) in enumerate(frame.groupby("variant", sort=False)):
        g = g.sort_values("n_train")
        color = PALETTE[i % len(PALETTE)]
        x = g["n_train"].to_numpy()
        ax.plot(x, g["mean"], marker="o", color=color, label=variant)
        ok = np.isfinite(g["ci_low"].to_numpy()) & np.isfinite(g["ci_high"].to_numpy())
        if ok.any():
            ax.fill_between(x[ok], g["ci_low"][ok], g["ci_high"][ok], color=color, alpha=0.18)
    sizes = sorted(frame["n_train"].unique())
    ax.set_xscale("log")
    ax.set_xticks(sizes, [str(s) for s in sizes])
    ax.xaxis.set_minor_locator(NullLocator())
    ax.set_xlabel("training posts")
    ax.set_ylabel("test macro-F1")
    ax.set_title(title)
    ax.grid(alpha=0.3)
    ax.legend(fontsize="small")
    return fig


def subgroup_gap_plot(
    gaps: pd.DataFrame, title: str = "Δ vs baseline per subgroup (95% CI)"
) -> Figure:
    """One panel per family of ``subgroup_gaps`` output: a marker + CI line per variant."""
    needed = {"family", "group", "n", "variant", "gap", "ci_low", "ci_high"}
    if gaps is None or gaps.empty or not needed <= set(gaps.columns):
        return _no_data(title)
    families = list(dict.fromkeys(gaps["family"]))
    variants = list(dict.fromkeys(gaps["variant"]))
    colors = {v: PALETTE[i % len(PALETTE)] for i, v in enumerate(variants)}
    group_lists = [
        list(dict.fromkeys(gaps.loc[gaps["family"] == f, "group"].tolist())) for f in families
    ]
    heights = [max(len(g), 1) for g in group_lists]
    fig = _figure(7.5, 1.2 + 0.45 * sum(heights) + 0.5 * len(families))
    axes = fig.subplots(
        len(families), 1, sharex=True, squeeze=False, gridspec_kw={"height_ratios": heights}
    )[:, 0]
    step = 0.7 / max(len(variants), 1)
    for ax, family, groups in zip(axes, families, group_lists, strict=True):
        sub = gaps[gaps["family"] == family]
        pos = {g: i for i, g in enumerate(groups)}
        for j, variant in enumerate(variants):
            d = sub[sub["variant"] == variant]
            if d.empty:
                continue
            y = np.array([pos[g] for g in d["group"]]) + (j - (len(variants) - 1) / 2) * step
            mean = d["gap"].to_numpy(dtype=float)
            lo, hi = d["ci_low"].to_numpy(dtype=float), d["ci_high"].to_numpy(dtype=float)
            ok = np.isfinite(lo) & np.isfinite(hi)
            ax.hlines(y[ok], lo[ok], hi[ok], color=colors[variant], lw=1.5)
            ax.plot(mean, y, "o", color=colors[variant], ms=5, label=variant)
        n_by_group = sub.groupby("group", sort=False)["n"].first()
        ax.set_yticks(range(len(groups)), [f"{g} (n={int(n_by_group[g])})" for g in groups])
        ax.set_ylim(len(groups) - 0.5, -0.5)
        ax.axvline(0, color="black", lw=0.8)
        metric = sub["metric"].iloc[0] if "metric" in sub.columns else ""
        ax.set_title(f"{family} ({metric})" if metric else str(family), fontsize="medium")
        ax.grid(axis="x", alpha=0.3)
    axes[-1].set_xlabel("Δ vs baseline")
    axes[0].legend(
        handles=[Line2D([], [], marker="o", ls="-", color=colors[v], label=v) for v in variants],
        fontsize="small",
        loc="upper left",
        bbox_to_anchor=(1.01, 1.0),
    )
    fig.suptitle(title)
    return fig


def alignment_uniformity(
    rows: Sequence[Mapping[str, Any]],
    title: str = "Alignment and uniformity (val, lower is better)",
) -> Figure:
    """Wang & Isola style: x = uniformity (text ●, image ▲), y = alignment, colour = variant."""
    if not rows:
        return _no_data(title)
    fig = _figure(7.0, 5.0)
    ax = fig.add_subplot()
    handles: list[Line2D] = []
    for i, r in enumerate(rows):
        color = PALETTE[i % len(PALETTE)]
        name = str(r["variant"])
        a = _f(r.get("alignment"))
        for key, marker in (("uniformity_text", "o"), ("uniformity_image", "^")):
            u = _f(r.get(key))
            if math.isfinite(u) and math.isfinite(a):
                ax.scatter([u], [a], marker=marker, color=color, s=50, zorder=3)
                ax.annotate(
                    name, (u, a), xytext=(4, 4), textcoords="offset points", fontsize="x-small"
                )
        handles.append(Line2D([], [], marker="s", ls="none", color=color, label=name))
    handles += [
        Line2D([], [], marker="o", ls="none", color="black", label="text uniformity"),
        Line2D([], [], marker="^", ls="none", color="black", label="image uniformity"),
    ]
    ax.legend(handles=handles, fontsize="small", loc="best")
    ax.set_xlabel("uniformity (lower is better)")
    ax.set_ylabel("alignment (lower is better)")
    ax.set_title(title)
    ax.grid(alpha=0.3)
    return fig


def save(fig: Figure, path: Path) -> Path:
    """Write ``fig`` as an image (dpi 120, tight bounding box); parent folders are created."""
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    fig.savefig(path, dpi=120, bbox_inches="tight")
    return path
