"""Slow: on the embedded default the fused model must clearly beat both unimodal baselines."""

from __future__ import annotations

import math
from pathlib import Path

import pytest

from mmaux.ablation import variant_config
from mmaux.config import load_config
from mmaux.data.synth import generate
from mmaux.training import train

REPO = Path(__file__).resolve().parents[1]


@pytest.mark.slow
def test_fused_beats_both_unimodal_baselines_on_the_embedded_default(tmp_path):
    base = load_config(
        REPO / "params.yaml",
        [
            f"data.root={tmp_path / 'raw'}",
            f"data.cache_dir={tmp_path / 'cache'}",
            "train.progress=false",
        ],
    )
    generate(base.data.root, base.synth)
    runs = {
        v: train(variant_config(base, v, 0, tmp_path))
        for v in ("text-only", "image-only", "fused-ce")
    }
    acc = {v: r.metrics["test"]["accuracy"] for v, r in runs.items()}
    f1 = {v: r.test_macro_f1 for v, r in runs.items()}
    n = runs["fused-ce"].metrics["test"]["n"]
    # By construction text alone can reach at most 50 % accuracy (it cannot see whether the
    # image matches) and the image alone is at chance (25 %): allow 3 sampling std devs.
    assert acc["text-only"] < 0.5 + 3 * math.sqrt(0.5 * 0.5 / n), acc
    assert acc["image-only"] < 0.25 + 3 * math.sqrt(0.25 * 0.75 / n), acc
    assert f1["fused-ce"] > max(f1["text-only"], f1["image-only"]) + 0.15, f1
