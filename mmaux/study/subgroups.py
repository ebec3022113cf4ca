"""Metrics per subgroup of the test posts, and the paired aux-vs-baseline gap per subgroup.

Subgroup families: the true class, text length (quantile bins of word count) and the
manifest's scalar ``meta`` fields with a few well-populated levels (e.g. TIR's image-text
relationship, MVSA's annotator agreement).
"""

from __future__ import annotations

import json
import math
from collections.abc import Hashable, Mapping, Sequence
from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd
from scipy import stats
from sklearn.metrics import accuracy_score, f1_score

META = "meta."
CLASS = "class"
LENGTH = "text length"
GAP_COLUMNS = [
    "family",
    "group",
    "n",
    "variant",
    "metric",
    "baseline",
    "value",
    "gap",
    "ci_low",
    "ci_high",
    "n_seeds",
]


def _is_scalar(v: Any) -> bool:
    return v is None or isinstance(v, str | int | float | bool)


def posts_frame(manifest_path: Path, split: str = "test") -> pd.DataFrame:
    """One row per post of ``split`` (index: id): label, text, n_words and scalar meta fields."""
    records: list[dict[str, Any]] = []
    metas: list[dict[str, Any]] = []
    with Path(manifest_path).open(encoding="utf-8") as f:
        for line in f:
            if not line.strip():
                continue
            post = json.loads(line)
            if post.get("split") != split:
                continue
            text = post.get("text") or ""
            records.append(
                {
                    "id": str(post["id"]),
                    "label": post["label"],
                    "text": text,
                    "n_words": len(text.split()),
                }
            )
            metas.append(post.get("meta") or {})
    keys: list[str] = []
    for meta in metas:
        keys.extend(k for k in meta if k not in keys)
    scalar = [k for k in keys if all(_is_scalar(m.get(k)) for m in metas)]
    for rec, meta in zip(records, metas, strict=True):
        rec.update({META + k: meta.get(k) for k in scalar})
    columns = ["id", "label", "text", "n_words"] + [META + k for k in scalar]
    frame = pd.DataFrame.from_records(records, columns=columns).set_index("id")
    frame["n_words"] = frame["n_words"].astype(int)
    return frame


def subgroup_columns(
    posts: pd.DataFrame,
    fields: Sequence[str] | None = None,
    max_levels: int = 12,
    min_size: int = 5,
) -> list[str]:
    """The meta columns that define subgroups: the named ``fields``, or the well-populated ones.

    Chosen automatically: 2..max_levels distinct values, at least two of them with
    ``min_size`` posts, and not a mere renaming of the true label (like meta.raw_label).
    """
    available = [c for c in posts.columns if c.startswith(META)]
    if fields is not None:
        chosen: list[str] = []
        for name in fields:
            col = name if name.startswith(META) else META + name
            if col not in available:
                names = ", ".join(c[len(META) :] for c in available) or "(none)"
                raise ValueError(f"unknown meta field {name!r}; available meta fields: {names}")
            if col not in chosen:
                chosen.append(col)
        return chosen
    chosen = []
    for col in sorted(available):
        counts = posts[col].dropna().value_counts()
        if 2 <= len(counts) <= max_levels and int((counts >= min_size).sum()) >= 2:
            if not _relabels_class(posts, col):
                chosen.append(col)
    return chosen


def _relabels_class(posts: pd.DataFrame, col: str) -> bool:
    """Whether ``col`` splits the posts exactly as the true label does (e.g. meta.raw_label)."""
    if "label" not in posts.columns:
        return False
    both = posts[["label", col]].dropna()
    return bool(
        both.groupby(col)["label"].nunique().max() == 1
        and both.groupby("label")[col].nunique().max() == 1
    )


def length_bins(n_words: pd.Series, bins: int = 3) -> pd.Series:
    """Quantile bins of word count as an ordered categorical ("≤30 words", "31–55 words", ...)."""
    values = n_words.dropna().astype(int)
    if values.empty:
        return pd.Series(pd.Categorical([None] * len(n_words), ordered=True), index=n_words.index)
    lo, hi = int(values.min()), int(values.max())
    # Cut points are data values (≤ cut goes left), so no bin is empty; cuts at the max are dropped.
    qs = np.quantile(values.to_numpy(), np.linspace(0, 1, max(bins, 1) + 1)[1:-1], method="lower")
    cuts = sorted({int(q) for q in qs if lo <= q < hi})
    if not cuts:
        labels = [f"{lo} words" if lo == hi else f"{lo}–{hi} words"]
        codes = np.zeros(len(n_words), dtype=int)
    else:
        labels = [f"≤{cuts[0]} words"]
        for a, b in zip(cuts, cuts[1:], strict=False):
            labels.append(f"{b} words" if a + 1 == b else f"{a + 1}–{b} words")
        labels.append(f">{cuts[-1]} words")
        codes = np.searchsorted(np.asarray(cuts), n_words.fillna(-1).to_numpy(), side="left")
    codes = np.where(n_words.isna().to_numpy(), -1, codes)
    cat = pd.Categorical.from_codes(codes, categories=labels, ordered=True)
    return pd.Series(cat, index=n_words.index, name=n_words.name)


def group_labels(
    posts: pd.DataFrame, fields: Sequence[str] | None = None, bins: int = 3
) -> dict[str, pd.Series]:
    """Family name -> Series(id -> group): "class", "text length" and "meta.<field>" families."""
    groups = {CLASS: posts["label"], LENGTH: length_bins(posts["n_words"], bins)}
    for col in subgroup_columns(posts, fields):
        groups[col] = posts[col]
    return groups


def _group_order(values: pd.Series) -> list[Hashable]:
    """Groups in display order: a categorical's categories, else the sorted distinct values."""
    present = values.dropna()
    if isinstance(values.dtype, pd.CategoricalDtype):
        seen = set(present)
        return [c for c in values.cat.categories if c in seen]
    distinct = list(pd.unique(present))
    try:
        return sorted(distinct)
    except TypeError:
        return sorted(distinct, key=str)


def _family_order(family: str) -> tuple[int, str]:
    return ({CLASS: 0, LENGTH: 1}.get(family, 2), family)


def _indexed(pred: pd.DataFrame) -> pd.DataFrame:
    """A prediction table indexed by post id (as str)."""
    if "id" in pred.columns:
        pred = pred.set_index("id")
    pred = pred.copy()
    pred.index = pred.index.astype(str)
    return pred


def subgroup_metrics(
    pred: pd.DataFrame, groups: dict[str, pd.Series], labels: Sequence[str]
) -> pd.DataFrame:
    """Rows (family, group, n, metric, value) for one prediction table (id, label, prediction)."""
    pred = _indexed(pred)
    labels = list(labels)
    y, yhat = pred["label"].astype(str), pred["prediction"].astype(str)
    rows: list[dict[str, Any]] = []
    for family in sorted(groups, key=_family_order):
        if family == CLASS:
            for c in labels:
                f1 = f1_score(y, yhat, labels=[c], average=None, zero_division=0)[0]
                rows.append(
                    {
                        "family": family,
                        "group": c,
                        "n": int((y == c).sum()),
                        "metric": "f1",
                        "value": float(f1),
                    }
                )
            continue
        series = groups[family]
        series = series.set_axis(series.index.astype(str))
        member = series.reindex(pred.index)
        for g in _group_order(series):
            mask = (member == g).to_numpy()
            n = int(mask.sum())
            if n == 0:
                continue
            yt, yp = y[mask], yhat[mask]
            base = {"family": family, "group": g, "n": n}
            f1 = f1_score(yt, yp, labels=labels, average="macro", zero_division=0)
            rows.append({**base, "metric": "macro_f1", "value": float(f1)})
            rows.append({**base, "metric": "accuracy", "value": float(accuracy_score(yt, yp))})
    return pd.DataFrame(rows, columns=["family", "group", "n", "metric", "value"])


def _mean_ci(deltas: np.ndarray, confidence: float) -> tuple[float, float, float]:
    """Mean and Student-t confidence interval of the mean (NaN bounds under 2 values)."""
    k = len(deltas)
    if k == 0:
        return math.nan, math.nan, math.nan
    mean = float(deltas.mean())
    if k < 2:
        return mean, math.nan, math.nan
    half = float(stats.t.ppf((1 + confidence) / 2, k - 1) * deltas.std(ddof=1) / math.sqrt(k))
    return mean, mean - half, mean + half


def subgroup_gaps(
    preds: Mapping[tuple[str, int], pd.DataFrame],
    posts: pd.DataFrame,
    labels: Sequence[str],
    baseline: str = "fused-ce",
    fields: Sequence[str] | None = None,
    bins: int = 3,
    confidence: float = 0.95,
) -> pd.DataFrame:
    """Per subgroup and variant, the paired per-seed gap (variant - baseline) of its metric."""
    known = set(posts.index.astype(str))
    groups = group_labels(posts, fields, bins)
    per_cell: dict[str, dict[int, pd.Series]] = {}
    for (variant, seed), pred in preds.items():
        table = _indexed(pred)
        missing = [i for i in table.index if i not in known]
        if missing:
            shown = ", ".join(missing[:5]) + (", ..." if len(missing) > 5 else "")
            raise ValueError(
                f"predictions of variant {variant!r} seed {seed}: {len(missing)} ids not among "
                f"the posts: {shown}"
            )
        m = subgroup_metrics(table, groups, labels)
        m = m[m["metric"] == np.where(m["family"] == CLASS, "f1", "macro_f1")]
        per_cell.setdefault(variant, {})[seed] = m.set_index(["family", "group"])["value"]
    if baseline not in per_cell:
        raise ValueError(f"no predictions for the baseline {baseline!r}; got {sorted(per_cell)}")

    sizes: dict[tuple[str, Hashable], int] = {}
    order: list[tuple[str, Hashable]] = []
    for family in sorted(groups, key=_family_order):
        series = groups[family]
        counts = series.value_counts()
        keys = list(labels) if family == CLASS else _group_order(series)
        for g in keys:
            order.append((family, g))
            sizes[(family, g)] = int(counts.get(g, 0))

    base = per_cell[baseline]
    rows: list[dict[str, Any]] = []
    for family, g in order:
        metric = "f1" if family == CLASS else "macro_f1"
        for variant, cells in per_cell.items():
            if variant == baseline:
                continue
            pairs = [
                (base[s].get((family, g), math.nan), cells[s].get((family, g), math.nan))
                for s in sorted(set(cells) & set(base))
            ]
            pairs = [(b, v) for b, v in pairs if not (math.isnan(b) or math.isnan(v))]
            b_arr = np.array([b for b, _ in pairs], dtype=float)
            v_arr = np.array([v for _, v in pairs], dtype=float)
            gap, lo, hi = _mean_ci(v_arr - b_arr, confidence)
            rows.append(
                {
                    "family": family,
                    "group": g,
                    "n": sizes[(family, g)],
                    "variant": variant,
                    "metric": metric,
                    "baseline": float(b_arr.mean()) if pairs else math.nan,
                    "value": float(v_arr.mean()) if pairs else math.nan,
                    "gap": gap,
                    "ci_low": lo,
                    "ci_high": hi,
                    "n_seeds": len(pairs),
                }
            )
    return pd.DataFrame(rows, columns=GAP_COLUMNS)
