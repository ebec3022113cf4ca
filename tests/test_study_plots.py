"""mmaux.study.plots: every figure renders to a PNG, without pyplot's global state."""

from __future__ import annotations

import matplotlib.image
import matplotlib.pyplot as plt
import pandas as pd
import pytest
from matplotlib.colors import to_hex
from matplotlib.figure import Figure

from mmaux.study.plots import (
    alignment_uniformity,
    gap_bars,
    low_resource_curves,
    save,
    subgroup_gap_plot,
)

PNG = b"\x89PNG\r\n\x1a\n"
GAP_ROWS = [
    {"name": "fused+itc", "mean": 0.03, "ci_low": 0.01, "ci_high": 0.05, "significant": True},
    {"name": "fused+itm", "mean": -0.01, "ci_low": -0.04, "ci_high": 0.02, "significant": False},
    {
        "name": "text-only",
        "mean": -0.08,
        "ci_low": float("nan"),
        "ci_high": float("nan"),
        "significant": None,
    },
]
SIZES = [50, 100, 400, 1600]
CURVES = [
    {
        "variant": v,
        "n_train": n,
        "mean": m + 0.05 * k,
        "ci_low": m + 0.05 * k - 0.02,
        "ci_high": m + 0.05 * k + 0.02,
    }
    for v, m in (("fused-ce", 0.40), ("fused+itc", 0.43))
    for k, n in enumerate(SIZES)
]
GAPS = pd.DataFrame(
    [
        {
            "family": f,
            "group": g,
            "n": n,
            "variant": v,
            "metric": m,
            "gap": d,
            "ci_low": d - 0.02,
            "ci_high": d + 0.02,
            "baseline": 0.5,
            "value": 0.5 + d,
            "n_seeds": 3,
        }
        for f, m, groups in (
            ("class", "f1", [("neg", 12), ("pos", 9)]),
            ("meta.relationship", "macro_f1", [("A", 14), ("B", 13), ("C", 13)]),
        )
        for g, n in groups
        for v, d in (("fused+itc", 0.02), ("fused+itm", -0.01))
    ]
)
ALIGN = [
    {"variant": "fused-ce", "alignment": 1.2, "uniformity_text": -1.0, "uniformity_image": -0.8},
    {"variant": "fused+itc", "alignment": 0.6, "uniformity_text": -2.1, "uniformity_image": -1.7},
]


def _figures() -> dict[str, Figure]:
    return {
        "gap_bars": gap_bars(GAP_ROWS),
        "low_resource": low_resource_curves(CURVES),
        "subgroups": subgroup_gap_plot(GAPS),
        "alignment": alignment_uniformity(ALIGN),
    }


def _texts(fig: Figure) -> list[str]:
    return [t.get_text() for ax in fig.axes for t in ax.texts]


def test_every_figure_is_saved_as_a_readable_png(tmp_path):
    for name, fig in _figures().items():
        path = save(fig, tmp_path / "deep" / "dir" / f"{name}.png")
        assert path.read_bytes()[:8] == PNG, name
        height, width = matplotlib.image.imread(path).shape[:2]
        assert height > 50 and width > 50, name
    assert plt.get_fignums() == []


def test_gap_bars_one_bar_per_row_coloured_by_significance():
    fig = gap_bars(GAP_ROWS)
    ax = fig.axes[0]
    bars = ax.patches
    assert len(bars) == len(GAP_ROWS)
    colours = [to_hex(b.get_facecolor()) for b in bars]
    assert colours[0] != colours[1] and colours[1] == colours[2]
    assert [b.get_width() for b in bars[:2]] == pytest.approx([0.03, -0.01])
    legend = [t.get_text() for t in ax.get_legend().get_texts()]
    assert any("not" in t for t in legend) and any(t == "significant" for t in legend)
    assert [t.get_text() for t in ax.get_yticklabels()] == [r["name"] for r in GAP_ROWS]


def test_low_resource_curves_use_a_log_axis_ticked_at_the_sizes():
    fig = low_resource_curves(CURVES)
    ax = fig.axes[0]
    assert ax.get_xscale() == "log"
    assert list(ax.get_xticks()) == SIZES
    assert [t.get_text() for t in ax.get_xticklabels()] == [str(s) for s in SIZES]
    assert len(ax.get_lines()) == 2 and len(ax.collections) == 2  # a line and a band each


def test_subgroup_plot_has_a_panel_per_family_with_sized_group_labels():
    fig = subgroup_gap_plot(GAPS)
    assert len(fig.axes) == 2
    labels = [t.get_text() for t in fig.axes[1].get_yticklabels()]
    assert labels == ["A (n=14)", "B (n=13)", "C (n=13)"]


def test_alignment_uniformity_marks_text_and_image_per_variant():
    fig = alignment_uniformity(ALIGN)
    ax = fig.axes[0]
    assert len(ax.collections) == 2 * len(ALIGN)
    assert {t.get_text() for t in ax.texts} == {"fused-ce", "fused+itc"}


def test_empty_input_gives_a_no_data_figure(tmp_path):
    empties = [
        gap_bars([]),
        low_resource_curves([]),
        subgroup_gap_plot(pd.DataFrame()),
        alignment_uniformity([]),
    ]
    for i, fig in enumerate(empties):
        assert isinstance(fig, Figure) and "no data" in _texts(fig)
        assert save(fig, tmp_path / f"empty{i}.png").read_bytes()[:8] == PNG
    assert plt.get_fignums() == []
