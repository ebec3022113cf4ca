"""Metrics agree with scikit-learn on random and degenerate inputs."""

from __future__ import annotations

import numpy as np
import pytest
from sklearn.metrics import (
    accuracy_score,
    confusion_matrix,
    f1_score,
    precision_recall_fscore_support,
)

from mmaux.metrics import classification_metrics, format_report


@pytest.mark.parametrize("seed", range(5))
def test_matches_sklearn(seed):
    rng = np.random.default_rng(seed)
    k = int(rng.integers(2, 6))
    y = rng.integers(0, k, 200)
    p = np.where(rng.random(200) < 0.6, y, rng.integers(0, k, 200))
    labels = [f"c{i}" for i in range(k)]
    m = classification_metrics(y.tolist(), p.tolist(), labels)
    ids = list(range(k))
    assert m["macro_f1"] == pytest.approx(
        f1_score(y, p, average="macro", labels=ids, zero_division=0)
    )
    assert m["weighted_f1"] == pytest.approx(
        f1_score(y, p, average="weighted", labels=ids, zero_division=0)
    )
    assert m["accuracy"] == pytest.approx(accuracy_score(y, p))
    assert m["confusion_matrix"] == confusion_matrix(y, p, labels=ids).tolist()
    prec, rec, f1, sup = precision_recall_fscore_support(y, p, labels=ids, zero_division=0)
    for i, name in enumerate(labels):
        assert m["per_class"][name]["precision"] == pytest.approx(prec[i])
        assert m["per_class"][name]["recall"] == pytest.approx(rec[i])
        assert m["per_class"][name]["f1"] == pytest.approx(f1[i])
        assert m["per_class"][name]["support"] == sup[i]


def test_never_predicted_class_counts_as_zero_in_macro():
    m = classification_metrics([0, 0, 1, 1], [0, 0, 0, 0], ["a", "b"])
    assert m["per_class"]["b"]["f1"] == 0.0
    assert m["macro_f1"] == pytest.approx((2 * 0.5 * 1 / 1.5) / 2)
    assert "macro-F1" in format_report(m)
