"""A small, real data root for the data-rule and validation tests: 10 posts over 3 images."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

from PIL import Image

LABELS = ["neg", "pos"]
SPLITS = ["train"] * 6 + ["val"] * 2 + ["test"] * 2


def rows() -> list[dict[str, Any]]:
    """p0..p5 train (neg/pos alternating), p6-p7 val, p8-p9 test; line n+1 holds p{n}."""
    return [
        {
            "id": f"p{i}",
            "text": f"post number {i}",
            "image": f"img/{i}.png",
            "label": LABELS[i % 2],
            "split": SPLITS[i],
        }
        for i in range(len(SPLITS))
    ]


def write_rows(
    root: Path, rows: list[dict[str, Any]], extra_lines: dict[int, str] | None = None
) -> Path:
    """``root/manifest.jsonl`` from ``rows``, with raw ``extra_lines`` inserted at indices."""
    lines = [json.dumps(r) for r in rows]
    for at, raw in sorted((extra_lines or {}).items()):
        lines.insert(at, raw)
    path = root / "manifest.jsonl"
    path.write_text("\n".join(lines) + "\n", encoding="utf-8")
    return path


def make_good_root(root: Path) -> Path:
    """A data root that passes every rule: images, dataset.json and :func:`rows`."""
    (root / "img").mkdir(parents=True)
    for i in range(len(SPLITS)):
        Image.new("RGB", (8, 8), (i * 25, 255 - i * 25, 7)).save(root / "img" / f"{i}.png")
    (root / "dataset.json").write_text(json.dumps({"name": "t", "labels": LABELS}))
    write_rows(root, rows())
    return root
