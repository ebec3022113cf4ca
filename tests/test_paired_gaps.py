"""benchmarks/paired_gaps.py: pairs runs by seed and reports scipy's paired tests."""

from __future__ import annotations

import json
import sys
from pathlib import Path

import pytest
from scipy import stats

sys.path.insert(0, str(Path(__file__).resolve().parents[1] / "benchmarks"))
import paired_gaps  # noqa: E402


def _write(root: Path, variant: str, seed: int, test: float, finished: bool = True) -> None:
    d = root / variant / f"seed-{seed}"
    d.mkdir(parents=True)
    m = {"val": {"macro_f1": 0.5}, "best_epoch": 2, "train_seconds": 10.0}
    if finished:
        m["test"] = {"macro_f1": test}
    (d / "metrics.json").write_text(json.dumps(m))


def test_gaps_are_paired_by_seed_and_unfinished_runs_are_left_out(tmp_path):
    a = [0.50, 0.55, 0.60, 0.52, 0.58]
    b = [0.53, 0.56, 0.66, 0.51, 0.63, 0.99]  # seed 5 has no partner
    for seed, v in enumerate(a):
        _write(tmp_path / "x", "ce", seed, v)
    for seed, v in enumerate(b):
        _write(tmp_path / "y", "aux", seed, v)
    _write(tmp_path / "y", "aux-trial", 0, 0.0, finished=False)
    runs = {
        **paired_gaps.load_runs("x", tmp_path / "x"),
        **paired_gaps.load_runs("y", tmp_path / "y"),
    }
    assert set(runs) == {"x/ce", "y/aux"}
    r = paired_gaps.paired(runs["x/ce"], runs["y/aux"])
    assert r["seeds"] == [0, 1, 2, 3, 4]
    assert r["gaps"] == pytest.approx([0.03, 0.01, 0.06, -0.01, 0.05])
    assert r["t_p"] == pytest.approx(stats.ttest_rel(b[:5], a).pvalue)
    assert r["wilcoxon_p"] == pytest.approx(stats.wilcoxon(b[:5], a).pvalue)
