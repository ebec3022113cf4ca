"""mmaux.study.subgroups: subgroup families, per-subgroup metrics, paired gaps per subgroup."""

from __future__ import annotations

import json
import math
from pathlib import Path

import numpy as np
import pandas as pd
import pytest
from scipy import stats
from sklearn.metrics import f1_score

from mmaux.study.subgroups import (
    group_labels,
    length_bins,
    posts_frame,
    subgroup_columns,
    subgroup_gaps,
    subgroup_metrics,
)

LABELS = ["neg", "neu", "pos"]
N = 40


def _relationship(i: int) -> str:
    return "A" if i < 14 else "B" if i < 28 else "C"


@pytest.fixture
def manifest(tmp_path) -> Path:
    """40 test posts (i+1 words each) and 5 train posts with assorted meta fields."""
    lines = []
    for i in range(N + 5):
        split = "test" if i < N else "train"
        meta = {
            "raw_label": LABELS[i % 3],
            "relationship": _relationship(i),
            "agreement": "high" if i % 2 else "low",
            "source_line": i + 2,
            "tags": ["x", "y"],
            "dataset": "toy",
            "rare": "odd" if i == 3 else "usual",
        }
        post = {
            "id": f"p{i}",
            "text": " ".join(["w"] * (i + 1)),
            "image": f"images/p{i}.png",
            "label": LABELS[i % 3],
            "split": split,
            "meta": meta,
        }
        lines.append(json.dumps(post))
    path = tmp_path / "manifest.jsonl"
    path.write_text("\n".join(lines) + "\n")
    return path


def _pred(ids: list[int], wrong: set[int]) -> pd.DataFrame:
    """A prediction table: right everywhere but on the posts in ``wrong``."""
    return pd.DataFrame(
        {
            "id": [f"p{i}" for i in ids],
            "label": [LABELS[i % 3] for i in ids],
            "prediction": [LABELS[(i + (1 if i in wrong else 0)) % 3] for i in ids],
        }
    )


def _baseline_wrong(seed: int) -> set[int]:
    return {i for i in range(N) if (i + seed) % 4 == 0 or (i * seed) % 7 == 1}


def _study() -> dict[tuple[str, int], pd.DataFrame]:
    """fused+itc fixes every baseline error inside relationship A; fused+itm changes nothing."""
    ids = list(range(N))
    preds: dict[tuple[str, int], pd.DataFrame] = {}
    for seed in range(3):
        base = _baseline_wrong(seed)
        preds[("fused+itc", seed)] = _pred(ids, {i for i in base if _relationship(i) != "A"})
        preds[("fused-ce", seed)] = _pred(ids, base)
        preds[("fused+itm", seed)] = _pred(ids, base)
    preds[("fused+itc", 3)] = _pred(ids, set(ids))  # no baseline partner: must be ignored
    return preds


def test_posts_frame_keeps_the_split_and_scalar_meta_fields(manifest):
    posts = posts_frame(manifest)
    assert len(posts) == N and posts.index[0] == "p0"
    assert posts.loc["p9", "n_words"] == 10
    assert posts.loc["p5", "label"] == LABELS[5 % 3]
    assert "meta.relationship" in posts.columns and "meta.source_line" in posts.columns
    assert "meta.tags" not in posts.columns
    assert len(posts_frame(manifest, split="train")) == 5


def test_automatic_subgroup_columns_skip_ids_lists_constants_and_tiny_groups(manifest):
    posts = posts_frame(manifest)
    assert subgroup_columns(posts) == ["meta.agreement", "meta.relationship"]
    assert subgroup_columns(posts, ["relationship", "meta.source_line"]) == [
        "meta.relationship",
        "meta.source_line",
    ]


def test_an_unknown_field_names_the_available_ones(manifest):
    posts = posts_frame(manifest)
    with pytest.raises(ValueError, match="nope") as err:
        subgroup_columns(posts, ["nope"])
    assert "relationship" in str(err.value) and "agreement" in str(err.value)


def test_length_bins_cover_every_post_in_order():
    n = pd.Series(range(1, N + 1), index=[f"p{i}" for i in range(N)])
    b = length_bins(n)
    assert b.notna().all() and b.cat.ordered
    assert list(b.cat.categories) == ["≤14 words", "15–27 words", ">27 words"]
    assert b["p0"] == "≤14 words" and b["p13"] == "≤14 words" and b["p14"] == "15–27 words"
    assert b["p39"] == ">27 words"
    codes = b.cat.codes.to_numpy()
    assert (np.diff(codes) >= 0).all()  # longer posts never fall in an earlier bin

    ties = length_bins(pd.Series([5] * 10 + [6, 9]))
    assert ties.notna().all() and list(ties.cat.categories) == ["≤5 words", ">5 words"]
    same = length_bins(pd.Series([7, 7, 7]))
    assert list(same.cat.categories) == ["7 words"] and same.notna().all()


def test_class_f1_matches_sklearn_and_subgroups_are_scored_inside(manifest):
    posts = posts_frame(manifest)
    groups = group_labels(posts)
    assert set(groups) == {"class", "text length", "meta.agreement", "meta.relationship"}
    pred = _pred(list(range(N)), _baseline_wrong(1))
    m = subgroup_metrics(pred, groups, LABELS)
    cls = m[m["family"] == "class"].set_index("group")
    per_class = f1_score(pred["label"], pred["prediction"], labels=LABELS, average=None)
    assert cls.loc[LABELS, "value"].tolist() == pytest.approx(per_class.tolist())
    assert cls.loc["neg", "n"] == (pred["label"] == "neg").sum()
    assert set(cls["metric"]) == {"f1"}

    rel = m[(m["family"] == "meta.relationship") & (m["group"] == "B")].set_index("metric")
    inside = pred[[_relationship(i) == "B" for i in range(N)]]
    expected = f1_score(inside["label"], inside["prediction"], labels=LABELS, average="macro")
    assert rel.loc["macro_f1", "value"] == pytest.approx(expected)
    accuracy = (inside["label"] == inside["prediction"]).mean()
    assert rel.loc["accuracy", "value"] == pytest.approx(accuracy)
    assert rel.loc["macro_f1", "n"] == 14


def test_gap_is_positive_where_the_variant_fixes_errors_and_zero_elsewhere(manifest):
    posts = posts_frame(manifest)
    gaps = subgroup_gaps(_study(), posts, LABELS)
    itc = gaps[gaps["variant"] == "fused+itc"]
    rel = itc[itc["family"] == "meta.relationship"].set_index("group")

    in_a = [i for i in range(N) if _relationship(i) == "A"]
    deltas = []
    for seed in range(3):
        p = _pred(in_a, _baseline_wrong(seed))
        deltas.append(1.0 - f1_score(p["label"], p["prediction"], labels=LABELS, average="macro"))
    half = stats.t.ppf(0.975, 2) * np.std(deltas, ddof=1) / math.sqrt(3)
    assert rel.loc["A", "gap"] == pytest.approx(np.mean(deltas)) and rel.loc["A", "gap"] > 0
    assert rel.loc["A", "value"] == pytest.approx(1.0)
    assert rel.loc["A", "ci_low"] == pytest.approx(np.mean(deltas) - half)
    assert rel.loc["A", "ci_high"] == pytest.approx(np.mean(deltas) + half)
    assert rel.loc["A", "n"] == 14 and rel.loc["A", "metric"] == "macro_f1"
    assert rel.loc["B", "gap"] == 0.0 and rel.loc["C", "gap"] == 0.0
    assert (itc["n_seeds"] == 3).all()  # seed 3 has no baseline partner

    itm = gaps[gaps["variant"] == "fused+itm"]
    assert (itm["gap"] == 0.0).all()

    families = list(dict.fromkeys(gaps["family"]))
    assert families == ["class", "text length", "meta.agreement", "meta.relationship"]
    assert list(dict.fromkeys(gaps["variant"])) == ["fused+itc", "fused+itm"]
    assert gaps[gaps["family"] == "class"]["metric"].eq("f1").all()
    assert list(dict.fromkeys(gaps.loc[gaps["family"] == "class", "group"])) == LABELS
    length = itc[itc["family"] == "text length"].set_index("group")
    assert list(length.index) == ["≤14 words", "15–27 words", ">27 words"]
    assert length.loc["≤14 words", "gap"] == pytest.approx(np.mean(deltas))  # = posts of A


def test_pairing_uses_only_the_seeds_both_variants_have(manifest):
    posts = posts_frame(manifest)
    ids = list(range(N))
    preds = {
        ("fused-ce", 0): _pred(ids, set()),
        ("fused-ce", 1): _pred(ids, set()),
        ("fused+itc", 1): _pred(ids, set()),
        ("fused+itc", 2): _pred(ids, set(ids)),
    }
    gaps = subgroup_gaps(preds, posts, LABELS, fields=["relationship"])
    assert (gaps["n_seeds"] == 1).all() and (gaps["gap"] == 0.0).all()
    assert gaps["ci_low"].isna().all() and gaps["ci_high"].isna().all()
    assert set(gaps["family"]) == {"class", "text length", "meta.relationship"}


def test_prediction_ids_missing_from_the_posts_raise_with_variant_and_seed(manifest):
    posts = posts_frame(manifest)
    preds = _study()
    bad = preds[("fused+itm", 2)].copy()
    bad.loc[0, "id"] = "ghost-1"
    preds[("fused+itm", 2)] = bad
    with pytest.raises(ValueError, match="fused\\+itm") as err:
        subgroup_gaps(preds, posts, LABELS)
    assert "seed 2" in str(err.value) and "ghost-1" in str(err.value)
