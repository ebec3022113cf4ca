"""Statistics for comparing study variants: paired seed tests, Holm correction, bootstraps.

A variant is compared with the baseline on the seeds both were trained on (paired).
Seed-level tests (Wilcoxon, exact permutation, BCa bootstrap CI) answer "is the gain
larger than seed noise?"; the test-set bootstraps answer "how much of the spread is the
size of the test set?".
"""

from __future__ import annotations

import math
import warnings
from collections.abc import Mapping, Sequence
from dataclasses import asdict, dataclass
from typing import Any

import numpy as np
from scipy import stats

# Deltas are rounded to this many decimals so that float noise (0.71 - 0.66 vs 0.56 - 0.51)
# neither breaks true ties nor turns zero deltas into tiny non-zero ones.
_DECIMALS = 12
# Cap on resampled post indices held at once by the test-set bootstraps.
_CHUNK_ELEMENTS = 2_000_000


def min_p(n: int) -> float:
    """Smallest two-sided p an exact sign-flip permutation / Wilcoxon test reaches with n seeds."""
    return min(1.0, 2.0 / 2.0**n) if n >= 1 else 1.0


def _fmt_p(p: float) -> str:
    return f"{p:.3g}"


@dataclass
class Comparison:
    """A treatment variant against the baseline, paired by seed."""

    name: str
    baseline: str
    treatment: str
    seeds: list[int]
    deltas: list[float]
    mean: float
    std: float
    ci_low: float
    ci_high: float
    p_wilcoxon: float
    p_permutation: float
    p_wilcoxon_holm: float | None = None
    p_permutation_holm: float | None = None
    significant: bool | None = None
    confidence: float = 0.95

    @property
    def n(self) -> int:
        """Number of shared seeds."""
        return len(self.seeds)

    def verdict(self, alpha: float = 0.05) -> str:
        """Plain-words result: significant gain / significant loss / within noise."""
        n = self.n
        if n < 2 or math.isnan(self.p_permutation):
            return (
                f"cannot be tested: {n} shared seed{'s' if n != 1 else ''} "
                f"(need at least 2); mean delta {self.mean:+.3f}"
            )
        if self.p_permutation_holm is not None:
            p, label = self.p_permutation_holm, "Holm-adjusted permutation p"
        else:
            p, label = self.p_permutation, "unadjusted permutation p"
        if p < alpha:
            word = "significant gain" if self.mean > 0 else "significant loss"
        else:
            word = "within noise"
        level = f"{self.confidence:.0%} CI"
        if math.isnan(self.ci_low) or math.isnan(self.ci_high):
            ci = f"{level} n/a with {n} seeds"
        else:
            ci = f"{level} {self.ci_low:+.3f} to {self.ci_high:+.3f}"
        text = f"{word}: {self.mean:+.3f} ({ci}; {label} = {_fmt_p(p)})"
        floor = min_p(n)
        if floor >= alpha:
            text += (
                f"; {n} seeds cannot reach p < {alpha:g} even before correction "
                f"(smallest exact p = 2/2**{n} = {_fmt_p(floor)})"
            )
        return text

    def as_dict(self) -> dict[str, Any]:
        """JSON-safe dict (NaN -> None, numpy scalars -> Python)."""
        return _json_safe(asdict(self))


def _json_safe(obj: Any) -> Any:
    if isinstance(obj, dict):
        return {k: _json_safe(v) for k, v in obj.items()}
    if isinstance(obj, list | tuple):
        return [_json_safe(v) for v in obj]
    if isinstance(obj, bool | np.bool_):
        return bool(obj)
    if isinstance(obj, int | np.integer):
        return int(obj)
    if isinstance(obj, float | np.floating):
        x = float(obj)
        return None if math.isnan(x) or math.isinf(x) else x
    return obj


def _mean_stat(d: np.ndarray, axis: int = -1) -> np.ndarray:
    return np.mean(d, axis=axis)


def _bootstrap_ci(
    deltas: np.ndarray, confidence: float, n_resamples: int, random_state: int
) -> tuple[float, float]:
    """BCa CI of the mean; percentile when BCa degenerates; (mean, mean) when all equal."""
    if len(deltas) < 3:
        return math.nan, math.nan
    if np.all(deltas == deltas[0]):
        m = float(deltas[0])
        return m, m
    for method in ("BCa", "percentile"):
        with warnings.catch_warnings():
            warnings.simplefilter("ignore", stats.DegenerateDataWarning)
            res = stats.bootstrap(
                (deltas,),
                _mean_stat,
                confidence_level=confidence,
                n_resamples=n_resamples,
                method=method,
                rng=np.random.default_rng(random_state),
            )
        lo, hi = float(res.confidence_interval.low), float(res.confidence_interval.high)
        if not (math.isnan(lo) or math.isnan(hi)):
            return lo, hi
    return math.nan, math.nan


def compare_paired(
    name: str,
    baseline: Mapping[int, float],
    treatment: Mapping[int, float],
    *,
    baseline_name: str = "baseline",
    treatment_name: str = "treatment",
    confidence: float = 0.95,
    n_resamples: int = 9999,
    random_state: int = 0,
) -> Comparison:
    """Compare treatment with baseline on their shared seeds (dict keys)."""
    seeds = sorted(set(baseline) & set(treatment))
    if not seeds:
        raise ValueError(
            f"{treatment_name!r} and {baseline_name!r} share no seed "
            f"({treatment_name}: {sorted(treatment)}, {baseline_name}: {sorted(baseline)})"
        )
    d = np.round(np.array([float(treatment[s]) - float(baseline[s]) for s in seeds]), _DECIMALS)
    n = len(d)
    mean = float(d.mean())
    std = float(d.std(ddof=1)) if n > 1 else 0.0
    ci_low, ci_high = _bootstrap_ci(d, confidence, n_resamples, random_state)
    if n < 2:
        p_w = p_p = math.nan
    elif np.all(d == 0):
        p_w = p_p = 1.0
    else:
        p_w = float(stats.wilcoxon(d, alternative="two-sided").pvalue)
        p_p = float(
            stats.permutation_test(
                (d,),
                _mean_stat,
                permutation_type="samples",
                vectorized=True,
                n_resamples=n_resamples,
                alternative="two-sided",
                rng=np.random.default_rng(random_state),
            ).pvalue
        )
    return Comparison(
        name=name,
        baseline=baseline_name,
        treatment=treatment_name,
        seeds=[int(s) for s in seeds],
        deltas=[float(x) for x in d],
        mean=mean,
        std=std,
        ci_low=ci_low,
        ci_high=ci_high,
        p_wilcoxon=p_w,
        p_permutation=p_p,
        confidence=confidence,
    )


def holm(pvalues: Sequence[float]) -> list[float]:
    """Holm-Bonferroni step-down adjusted p-values; NaN stays NaN and is not counted in m."""
    p = np.asarray(pvalues, dtype=float)
    out = np.full(p.shape, np.nan)
    ok = np.flatnonzero(~np.isnan(p))
    m = len(ok)
    if m:
        order = ok[np.argsort(p[ok], kind="stable")]
        scaled = (m - np.arange(m)) * p[order]
        out[order] = np.minimum(np.maximum.accumulate(scaled), 1.0)
    return [float(x) for x in out]


def adjust(comparisons: list[Comparison], alpha: float = 0.05) -> list[Comparison]:
    """Holm-adjust both p-value families in place and set `significant`; returns the list."""
    p_w = holm([c.p_wilcoxon for c in comparisons])
    p_p = holm([c.p_permutation for c in comparisons])
    for c, w, p in zip(comparisons, p_w, p_p, strict=True):
        c.p_wilcoxon_holm = w
        c.p_permutation_holm = p
        c.significant = bool(p < alpha)  # NaN -> False
    return comparisons


def mean_ci(values: Sequence[float], confidence: float = 0.95) -> tuple[float, float, float]:
    """(mean, low, high): Student-t CI of the mean over seeds; low = high = mean if n == 1."""
    x = np.asarray(values, dtype=float)
    if x.size == 0:
        raise ValueError("mean_ci needs at least one value")
    mean = float(x.mean())
    if x.size == 1:
        return mean, mean, mean
    sem = float(x.std(ddof=1)) / math.sqrt(x.size)
    if sem == 0.0:
        return mean, mean, mean
    lo, hi = stats.t.interval(confidence, df=x.size - 1, loc=mean, scale=sem)
    return mean, float(lo), float(hi)


def macro_f1(y_true: np.ndarray, y_pred: np.ndarray, n_classes: int) -> np.ndarray:
    """Macro-F1 over the last axis; y_true (n,) (or broadcastable), y_pred (..., n).

    Every class in range(n_classes) counts; a class absent from both truth and prediction
    scores 0 (sklearn's labels=range(k), zero_division=0).
    """
    t, p = np.broadcast_arrays(np.asarray(y_true), np.asarray(y_pred))
    k = int(n_classes)
    lead, n = t.shape[:-1], t.shape[-1]
    rows = math.prod(lead)
    t = t.reshape(rows, n).astype(np.int64, copy=False)
    p = p.reshape(rows, n).astype(np.int64, copy=False)
    if t.size and (min(t.min(), p.min()) < 0 or max(t.max(), p.max()) >= k):
        raise ValueError(f"labels must lie in [0, {k})")
    flat = (np.arange(rows, dtype=np.int64)[:, None] * k + t) * k + p
    cm = np.bincount(flat.ravel(), minlength=rows * k * k).reshape(rows, k, k)
    tp = np.diagonal(cm, axis1=1, axis2=2)
    denom = cm.sum(axis=1) + cm.sum(axis=2)  # predicted + true counts = 2tp + fp + fn
    f1 = np.divide(2.0 * tp, denom, out=np.zeros(denom.shape), where=denom > 0)
    return f1.mean(axis=-1).reshape(lead)


def _stack_preds(y_true: np.ndarray, preds: Sequence[np.ndarray], what: str) -> np.ndarray:
    if len(preds) == 0:
        raise ValueError(f"{what}: need at least one prediction array")
    arr = np.stack([np.asarray(p) for p in preds])
    if arr.shape[1:] != y_true.shape:
        raise ValueError(f"{what}: predictions {arr.shape[1:]} do not match y_true {y_true.shape}")
    return arr


def _boot_metric(
    y_true: np.ndarray,
    groups: Sequence[np.ndarray],
    n_classes: int,
    n_resamples: int,
    random_state: int,
) -> list[np.ndarray]:
    """Per group (S, n) of seed predictions: mean-over-seeds macro-F1 for each resample.

    All groups and seeds see the same resampled posts in a resample.
    """
    n = y_true.shape[0]
    if n == 0:
        raise ValueError("empty test set")
    rng = np.random.default_rng(random_state)
    chunk = max(1, _CHUNK_ELEMENTS // n)
    out: list[list[np.ndarray]] = [[] for _ in groups]
    done = 0
    while done < n_resamples:
        b = min(chunk, n_resamples - done)
        idx = rng.integers(0, n, size=(b, n))
        yt = y_true[idx]
        for g, preds in enumerate(groups):
            out[g].append(macro_f1(yt, preds[:, idx], n_classes).mean(axis=0))
        done += b
    return [np.concatenate(o) for o in out]


def _summary(point: float, boot: np.ndarray, confidence: float, n: int) -> dict[str, float]:
    lo, hi = np.quantile(boot, [(1 - confidence) / 2, (1 + confidence) / 2])
    return {
        "mean": float(point),
        "ci_low": float(lo),
        "ci_high": float(hi),
        "std": float(boot.std(ddof=1)) if boot.size > 1 else 0.0,
        "n_posts": n,
    }


def test_set_bootstrap(
    y_true: np.ndarray,
    preds: Sequence[np.ndarray],
    n_classes: int,
    *,
    n_resamples: int = 1000,
    confidence: float = 0.95,
    random_state: int = 0,
) -> dict[str, float]:
    """Bootstrap over test posts of the mean-over-seeds macro-F1 (percentile CI)."""
    y = np.asarray(y_true)
    p = _stack_preds(y, preds, "test_set_bootstrap")
    point = float(macro_f1(y, p, n_classes).mean())
    (boot,) = _boot_metric(y, [p], n_classes, n_resamples, random_state)
    return _summary(point, boot, confidence, len(y))


test_set_bootstrap.__test__ = False  # type: ignore[attr-defined]  # not a pytest test


def paired_test_bootstrap(
    y_true: np.ndarray,
    baseline_preds: Sequence[np.ndarray],
    treatment_preds: Sequence[np.ndarray],
    n_classes: int,
    *,
    n_resamples: int = 1000,
    confidence: float = 0.95,
    random_state: int = 0,
) -> dict[str, float]:
    """Bootstrap over test posts of mean-over-seeds (F1 treatment - F1 baseline), plus p_boot.

    baseline_preds[i] and treatment_preds[i] belong to the same seed.
    """
    y = np.asarray(y_true)
    b = _stack_preds(y, baseline_preds, "paired_test_bootstrap (baseline)")
    t = _stack_preds(y, treatment_preds, "paired_test_bootstrap (treatment)")
    if len(b) != len(t):
        raise ValueError(
            f"paired_test_bootstrap: {len(b)} baseline vs {len(t)} treatment seeds; pair them"
        )
    point = float((macro_f1(y, t, n_classes) - macro_f1(y, b, n_classes)).mean())
    boot_b, boot_t = _boot_metric(y, [b, t], n_classes, n_resamples, random_state)
    diff = boot_t - boot_b
    res = _summary(point, diff, confidence, len(y))
    res["p_boot"] = float(min(1.0, 2.0 * min(np.mean(diff <= 0), np.mean(diff >= 0))))
    return res
