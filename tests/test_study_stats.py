"""mmaux.study.stats: paired seed tests, Holm, bootstraps, macro-F1."""

from __future__ import annotations

import json
import math
import random

import numpy as np
import pytest
from scipy import stats as sps
from sklearn.metrics import f1_score

from mmaux.study import stats as st

SEEDS = list(range(10))


def _baseline(seeds=SEEDS, seed: int = 1) -> dict[int, float]:
    rng = np.random.default_rng(seed)
    return {s: float(v) for s, v in zip(seeds, rng.uniform(0.55, 0.70, len(seeds)), strict=True)}


def _shifted(base: dict[int, float], deltas) -> dict[int, float]:
    return {s: base[s] + float(d) for s, d in zip(sorted(base), deltas, strict=True)}


@pytest.fixture(scope="module")
def known_shift() -> st.Comparison:
    base = _baseline()
    noise = np.random.default_rng(2).normal(0.0, 0.01, len(SEEDS))
    treat = _shifted(base, 0.05 + noise)
    return st.compare_paired(
        "late · fused+itc vs fused-ce",
        base,
        treat,
        baseline_name="fused-ce",
        treatment_name="fused+itc",
        n_resamples=2000,
    )


@pytest.fixture(scope="module")
def no_shift() -> st.Comparison:
    base = _baseline()
    deltas = [0.01, -0.01, 0.02, -0.02, 0.03, -0.03, 0.04, -0.04, 0.05, -0.05]
    return st.compare_paired("null", base, _shifted(base, deltas), n_resamples=2000)


def test_known_shift_detected(known_shift):
    c = known_shift
    assert c.seeds == SEEDS and len(c.deltas) == 10
    assert c.mean == pytest.approx(0.05, abs=0.01)
    assert c.std == pytest.approx(np.std(c.deltas, ddof=1))
    assert 0 < c.ci_low < 0.05 < c.ci_high
    assert c.p_wilcoxon < 0.01 and c.p_permutation < 0.01
    assert c.p_wilcoxon == pytest.approx(2 / 2**10)  # exact Wilcoxon, all deltas positive
    assert c.verdict().startswith("significant gain") and "unadjusted" in c.verdict()

    base = _baseline()
    others = [
        st.compare_paired(f"null {i}", base, _shifted(base, [0.01, -0.01] * 5), n_resamples=500)
        for i in range(3)
    ]
    out = st.adjust([c, *others])
    assert out[0] is c
    assert c.significant is True and c.p_permutation_holm < 0.05
    assert c.p_permutation_holm == pytest.approx(min(1.0, 4 * c.p_permutation))
    assert all(o.significant is False for o in others)
    v = c.verdict()
    assert v.startswith("significant gain: +0.0") and "Holm-adjusted permutation p" in v
    assert "cannot reach" not in v


def test_known_loss_says_loss(known_shift):
    base = _baseline()
    flipped = {s: base[s] - d for s, d in zip(SEEDS, known_shift.deltas, strict=True)}
    c = st.compare_paired("loss", base, flipped, n_resamples=500)
    assert c.mean == pytest.approx(-known_shift.mean)
    assert c.verdict().startswith("significant loss: -0.0")


def test_no_shift_within_noise(no_shift):
    c = no_shift
    assert c.mean == pytest.approx(0.0, abs=1e-12)
    assert c.ci_low < 0 < c.ci_high
    assert c.p_wilcoxon > 0.5 and c.p_permutation > 0.5
    st.adjust([c])
    assert c.significant is False
    assert c.verdict().startswith("within noise")


def test_exact_permutation_p_five_seeds():
    base = _baseline(seeds=[3, 7, 11, 13, 17])
    c = st.compare_paired("n5", base, _shifted(base, [0.01, 0.02, 0.03, 0.04, 0.05]))
    assert c.p_permutation == 2 / 32  # exact: 2 of 32 sign flips are as extreme
    assert c.p_wilcoxon == pytest.approx(2 / 32)
    assert st.min_p(5) == 0.0625
    v = c.verdict()
    assert v.startswith("within noise") and "5 seeds cannot reach p < 0.05" in v
    assert "0.0625" in v


def test_min_p():
    assert st.min_p(4) == 0.125
    assert st.min_p(6) == 0.03125
    assert st.min_p(1) == 1.0


def test_pairing_by_seed():
    base = _baseline()
    treat = _shifted(base, np.linspace(-0.02, 0.06, 10))
    ref = st.compare_paired("a", base, treat, n_resamples=500)
    keys = list(base)
    random.Random(0).shuffle(keys)
    shuffled = st.compare_paired(
        "a", {k: base[k] for k in keys}, {k: treat[k] for k in reversed(keys)}, n_resamples=500
    )
    assert shuffled == ref
    # deltas follow the sorted seeds, whatever the dict order
    assert ref.deltas == pytest.approx([treat[s] - base[s] for s in SEEDS], abs=1e-11)

    partial = st.compare_paired(
        "p", {**base, 99: 0.1}, {s: treat[s] for s in [8, 2, 5, 0]}, n_resamples=500
    )
    assert partial.seeds == [0, 2, 5, 8]
    assert partial.deltas == pytest.approx([treat[s] - base[s] for s in [0, 2, 5, 8]], abs=1e-11)

    with pytest.raises(ValueError, match="fused\\+itm.*fused-ce|fused-ce.*fused\\+itm"):
        st.compare_paired(
            "x", {1: 0.5}, {2: 0.6}, baseline_name="fused-ce", treatment_name="fused+itm"
        )


def test_small_n_edge_cases():
    one = st.compare_paired("n1", {0: 0.5}, {0: 0.6})
    assert one.std == 0.0 and math.isnan(one.ci_low) and math.isnan(one.ci_high)
    assert math.isnan(one.p_wilcoxon) and math.isnan(one.p_permutation)
    assert "cannot be tested" in one.verdict()

    two = st.compare_paired("n2", {0: 0.5, 1: 0.6}, {0: 0.6, 1: 0.65})
    assert math.isnan(two.ci_low) and not math.isnan(two.p_permutation)
    assert two.p_permutation == pytest.approx(0.5)

    zeros = st.compare_paired("same", {0: 0.5, 1: 0.6, 2: 0.7}, {0: 0.5, 1: 0.6, 2: 0.7})
    assert zeros.p_wilcoxon == 1.0 and zeros.p_permutation == 1.0
    assert (zeros.ci_low, zeros.ci_high) == (0.0, 0.0)

    # equal non-zero deltas (up to float noise): CI collapses to the mean
    const = st.compare_paired("const", {0: 0.51, 1: 0.66, 2: 0.3}, {0: 0.56, 1: 0.71, 2: 0.35})
    assert const.ci_low == const.ci_high == pytest.approx(0.05)


def test_holm_hand_values():
    assert st.holm([0.01, 0.04, 0.03]) == pytest.approx([0.03, 0.06, 0.06])
    # m = 4: 0.005*4, 0.01*3, 0.02*2 -> 0.04, then 0.5*1 -> 0.5
    assert st.holm([0.5, 0.01, 0.005, 0.02]) == pytest.approx([0.5, 0.03, 0.02, 0.04])
    # step-down monotonicity: 0.02*3=0.06 carries over 0.025*2=0.05
    assert st.holm([0.02, 0.025, 0.9]) == pytest.approx([0.06, 0.06, 0.9])
    assert st.holm([0.4, 0.5]) == pytest.approx([0.8, 0.8])  # capped only above 1
    assert st.holm([0.6, 0.7]) == [1.0, 1.0]
    assert st.holm([]) == []


def test_holm_nan_and_monotone():
    out = st.holm([0.01, math.nan, 0.04, 0.03])
    assert math.isnan(out[1])
    assert [out[0], out[2], out[3]] == pytest.approx([0.03, 0.06, 0.06])  # m = 3, not 4
    assert all(math.isnan(x) for x in st.holm([math.nan, math.nan]))

    p = np.random.default_rng(0).uniform(0, 0.2, 20)
    adj = np.array(st.holm(p))
    order = np.argsort(p)
    assert np.all(np.diff(adj[order]) >= 0)
    assert np.all(adj >= p) and np.all(adj <= 1)


def _fake(p: float, mean: float = 0.02) -> st.Comparison:
    return st.Comparison("c", "b", "t", [0, 1, 2], [mean] * 3, mean, 0.0, mean, mean, p, p)


def test_adjust_sets_significant_from_holm():
    cs = [_fake(0.03), _fake(0.04), _fake(0.035)]
    st.adjust(cs)
    assert [c.p_permutation_holm for c in cs] == pytest.approx([0.09, 0.09, 0.09])
    assert all(c.significant is False for c in cs)  # raw 0.03 < 0.05, but not after Holm
    assert cs[0].verdict().startswith("within noise")

    cs = [_fake(0.001), _fake(0.3)]
    cs[0].p_wilcoxon = 0.2  # families are adjusted separately
    st.adjust(cs)
    assert cs[0].significant is True and cs[1].significant is False
    assert cs[0].p_permutation_holm == pytest.approx(0.002)
    assert [c.p_wilcoxon_holm for c in cs] == pytest.approx([0.4, 0.4])  # 2 * 0.2, then max
    assert st.adjust(cs, alpha=0.001)[0].significant is False

    nan = _fake(math.nan)
    st.adjust([nan, _fake(0.01)])
    assert nan.significant is False and math.isnan(nan.p_permutation_holm)


@pytest.mark.parametrize("k", [2, 3, 5])
def test_macro_f1_matches_sklearn(k):
    rng = np.random.default_rng(k)
    for trial in range(20):
        n = int(rng.integers(5, 40))
        y = rng.integers(0, k, n)
        p = rng.integers(0, k, n)
        if trial % 3 == 0:  # a class missing from truth
            y[y == k - 1] = 0
        if trial % 3 == 1:  # a class missing from both truth and prediction
            y[y == k - 1] = 0
            p[p == k - 1] = 0
        ref = f1_score(y, p, average="macro", labels=list(range(k)), zero_division=0)
        assert float(st.macro_f1(y, p, k)) == pytest.approx(ref)


def test_macro_f1_vectorised():
    rng = np.random.default_rng(0)
    y = rng.integers(0, 4, 50)
    p = rng.integers(0, 4, (3, 5, 50))
    out = st.macro_f1(y, p, 4)
    assert out.shape == (3, 5)
    for i in range(3):
        for j in range(5):
            assert out[i, j] == pytest.approx(st.macro_f1(y, p[i, j], 4))
    assert st.macro_f1(y, y, 4) == pytest.approx(1.0)
    with pytest.raises(ValueError):
        st.macro_f1(y, np.full(50, 4), 4)


def _preds_with_accuracy(y: np.ndarray, k: int, acc: float, seed: int) -> np.ndarray:
    rng = np.random.default_rng(seed)
    wrong = rng.random(len(y)) > acc
    p = y.copy()
    p[wrong] = (y[wrong] + rng.integers(1, k, wrong.sum())) % k
    return p


def test_test_set_bootstrap():
    k = 3
    y = np.random.default_rng(0).integers(0, k, 200)
    preds = [_preds_with_accuracy(y, k, 0.7, s) for s in range(3)]
    res = st.test_set_bootstrap(y, preds, k, n_resamples=400)
    point = np.mean([st.macro_f1(y, p, k) for p in preds])
    assert res["mean"] == pytest.approx(point)
    assert res["ci_low"] < res["mean"] < res["ci_high"]
    assert res["n_posts"] == 200 and res["std"] > 0

    big = st.test_set_bootstrap(np.tile(y, 4), [np.tile(p, 4) for p in preds], k, n_resamples=400)
    assert big["mean"] == pytest.approx(res["mean"])
    ratio = (big["ci_high"] - big["ci_low"]) / (res["ci_high"] - res["ci_low"])
    assert 0.35 < ratio < 0.65

    one = st.test_set_bootstrap(y, preds[:1], k, n_resamples=200, random_state=5)
    same = st.test_set_bootstrap(y, [preds[0]] * 4, k, n_resamples=200, random_state=5)
    assert same == pytest.approx(one)
    assert st.test_set_bootstrap(y, preds[:1], k, n_resamples=200, random_state=6) != one

    with pytest.raises(ValueError):
        st.test_set_bootstrap(y, [preds[0][:-1]], k)


def test_paired_test_bootstrap():
    k = 3
    y = np.random.default_rng(1).integers(0, k, 300)
    base = [_preds_with_accuracy(y, k, 0.65, s) for s in range(3)]

    same = st.paired_test_bootstrap(y, base, base, k, n_resamples=300)
    assert same["mean"] == 0.0 and (same["ci_low"], same["ci_high"]) == (0.0, 0.0)
    assert same["p_boot"] == 1.0 and same["n_posts"] == 300

    treat = []
    for s, b in enumerate(base):
        t = b.copy()
        errors = np.flatnonzero(b != y)
        fix = np.random.default_rng(100 + s).choice(errors, len(errors) // 5, replace=False)
        t[fix] = y[fix]
        treat.append(t)
    res = st.paired_test_bootstrap(y, base, treat, k, n_resamples=300)
    pairs = zip(base, treat, strict=True)
    gain = np.mean([st.macro_f1(y, t, k) - st.macro_f1(y, b, k) for b, t in pairs])
    assert res["mean"] == pytest.approx(gain) and gain > 0
    assert 0 < res["ci_low"] < res["mean"] < res["ci_high"]
    assert res["p_boot"] < 0.01

    worse = st.paired_test_bootstrap(y, treat, base, k, n_resamples=300)
    assert worse["ci_high"] < 0 and worse["mean"] == pytest.approx(-gain)

    with pytest.raises(ValueError, match="seeds"):
        st.paired_test_bootstrap(y, base, treat[:2], k)


def test_mean_ci():
    vals = [0.61, 0.64, 0.59, 0.66]
    m, lo, hi = st.mean_ci(vals)
    ref = sps.t.interval(0.95, df=3, loc=np.mean(vals), scale=sps.sem(vals))
    assert m == pytest.approx(np.mean(vals))
    assert (lo, hi) == pytest.approx(ref)
    _, lo90, hi90 = st.mean_ci(vals, confidence=0.9)
    assert lo < lo90 < hi90 < hi
    assert st.mean_ci([0.7]) == (0.7, 0.7, 0.7)
    assert st.mean_ci([0.7, 0.7]) == pytest.approx((0.7, 0.7, 0.7))


def test_as_dict_json_safe(known_shift):
    d = known_shift.as_dict()
    assert json.loads(json.dumps(d, allow_nan=False)) == d
    assert d["seeds"] == SEEDS and d["treatment"] == "fused+itc"

    one = st.compare_paired("n1", {0: 0.5}, {0: 0.6})
    d1 = one.as_dict()
    text = json.dumps(d1, allow_nan=False)
    assert d1["ci_low"] is None and d1["p_wilcoxon"] is None and d1["p_permutation"] is None
    assert d1["significant"] is None
    assert json.loads(text)["mean"] == pytest.approx(0.1)
