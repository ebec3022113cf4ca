"""Seeded, stratified subsamples of a split: the low-resource study's training sets."""

from __future__ import annotations

from collections.abc import Sequence

import numpy as np

from mmaux.data.manifest import Post


def class_quotas(counts: dict[str, int], n: int) -> dict[str, int]:
    """Posts to draw per label for ``n`` in all: proportional (largest remainder), at least
    one of every label when ``n`` allows it, never more than a label has."""
    total = sum(counts.values())
    if not 0 < n <= total:
        raise ValueError(f"cannot draw {n} of {total} posts")
    exact = {k: n * c / total for k, c in counts.items()}
    quota = {k: int(v) for k, v in exact.items()}
    if n >= len(counts):
        quota = {k: max(q, 1) if counts[k] else 0 for k, q in quota.items()}
    while sum(quota.values()) > n:  # the at-least-one rule overshot: trim the largest
        k = max(quota, key=lambda k: (quota[k] - exact[k], quota[k]))
        quota[k] -= 1
    for k in sorted(exact, key=lambda k: exact[k] - quota[k], reverse=True):
        if sum(quota.values()) == n:
            break
        if quota[k] < counts[k]:
            quota[k] += 1
    while sum(quota.values()) < n:  # remainders exhausted: fill where posts remain
        k = max((k for k in counts if quota[k] < counts[k]), key=lambda k: counts[k] - quota[k])
        quota[k] += 1
    return quota


def stratified_subsample(posts: Sequence[Post], n: int | None, seed: int) -> list[Post]:
    """``n`` posts of ``posts`` with their label shares kept, drawn with ``seed``; in the
    original order. ``None`` (or ``n`` >= the split) keeps them all. The draw depends only on
    the posts, ``n`` and ``seed``, so every variant trained with one seed sees one set."""
    if n is None or n >= len(posts):
        return list(posts)
    by_label: dict[str, list[int]] = {}
    for i, p in enumerate(posts):
        by_label.setdefault(p.label, []).append(i)
    quota = class_quotas({k: len(v) for k, v in sorted(by_label.items())}, n)
    rng = np.random.default_rng(seed)
    keep: list[int] = []
    for label in sorted(by_label):
        idx = by_label[label]
        keep += [idx[j] for j in rng.choice(len(idx), size=quota[label], replace=False)]
    return [posts[i] for i in sorted(keep)]
