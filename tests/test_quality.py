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
    f1 = {
        v: train(variant_config(base, v, 0, tmp_path)).test_macro_f1
        for v in ("text-only", "image-only", "fused-ce")
    }
    # The task is built so text alone caps near 0.5 accuracy and the image alone is chance.
    assert f1["text-only"] < 0.55 and f1["image-only"] < 0.4
    assert f1["fused-ce"] > max(f1["text-only"], f1["image-only"]) + 0.15, f1
