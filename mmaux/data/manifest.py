"""The canonical post manifest: format, strict loading, and writing.

A data set is a directory (the *data root*) holding:

* ``manifest.jsonl``: one JSON object per line with ``id``, ``text``, ``image`` (a POSIX
  path relative to the data root), ``label``, ``split`` (``train``/``val``/``test``) and an
  optional ``meta`` object. A ``.csv`` manifest with the same columns (``meta`` as a JSON
  string) is read too.
* ``dataset.json``: ``{"name": ..., "labels": [ordered label names], ...}``.
* the images, anywhere under the root.

Loading judges the manifest with the data rulebook (:mod:`mmaux.data.rules`, settings in
``data.rules``) and never drops a row silently: with ``on_error="raise"`` every error is
collected and raised together; with ``on_error="skip"`` rejected rows are left out and
returned in :attr:`Manifest.skipped`, each with file, line, id and reason. Warnings (e.g.
texts shared across splits) keep their rows and are logged and kept in
:attr:`Manifest.warnings`. Data set errors (class balance, no usable row) always raise.
"""

from __future__ import annotations

import json
import logging
from collections.abc import Iterable
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any, Literal

from mmaux.config import DataRulesConfig
from mmaux.data.images import ImageCheck
from mmaux.data.rules import REQUIRED, SPLITS, RowProblem, check_manifest
from mmaux.fsio import atomic_target, atomic_write_text

__all__ = [
    "DATASET_INFO",
    "REQUIRED",
    "SPLITS",
    "Manifest",
    "ManifestError",
    "Post",
    "RowProblem",
    "load_manifest",
    "read_dataset_info",
    "write_dataset_info",
    "write_manifest",
    "write_skip_report",
]

log = logging.getLogger(__name__)
DATASET_INFO = "dataset.json"


@dataclass(frozen=True)
class Post:
    """One social-media post: text, an image file and a label."""

    id: str
    text: str
    image: str
    label: str
    split: str
    meta: dict[str, Any] = field(default_factory=dict, compare=False, hash=False)

    def to_json(self) -> dict[str, Any]:
        d = asdict(self)
        if not d["meta"]:
            d.pop("meta")
        return d


class ManifestError(ValueError):
    """The manifest has bad rows; ``problems`` lists every one of them."""

    def __init__(self, problems: list[RowProblem], header: str | None = None, show: int = 20):
        self.problems = problems
        head = header or f"{len(problems)} bad row(s) in manifest"
        lines = [head] + [f"  {p}" for p in problems[:show]]
        if len(problems) > show:
            lines.append(f"  ... and {len(problems) - show} more")
        super().__init__("\n".join(lines))


@dataclass
class Manifest:
    """Loaded, validated posts of a data set."""

    root: Path
    labels: list[str]
    posts: list[Post]
    skipped: list[RowProblem] = field(default_factory=list)
    source: Path | None = None
    warnings: list[RowProblem] = field(default_factory=list)

    def split(self, name: str) -> list[Post]:
        return [p for p in self.posts if p.split == name]

    def image_path(self, post: Post) -> Path:
        return self.root / post.image

    def label_index(self) -> dict[str, int]:
        return {name: i for i, name in enumerate(self.labels)}

    def counts(self) -> dict[str, dict[str, int]]:
        """Posts per split and label."""
        out: dict[str, dict[str, int]] = {s: {lab: 0 for lab in self.labels} for s in SPLITS}
        for p in self.posts:
            out[p.split][p.label] += 1
        return out


def read_dataset_info(root: Path) -> dict[str, Any]:
    """Read ``<root>/dataset.json``."""
    path = Path(root) / DATASET_INFO
    if not path.is_file():
        raise FileNotFoundError(
            f"{path}: no dataset info; declare the label set in it "
            '({"labels": [...]}) or set data.labels in params.yaml'
        )
    try:
        info = json.loads(path.read_text(encoding="utf-8"))
    except json.JSONDecodeError as err:
        raise ValueError(f"{path}: not valid JSON ({err})") from None
    labels = info.get("labels") if isinstance(info, dict) else None
    if not isinstance(labels, list) or not all(isinstance(x, str) for x in labels):
        raise ValueError(f"{path}: 'labels' must be a list of label names")
    return info


def write_dataset_info(root: Path, info: dict[str, Any]) -> Path:
    text = json.dumps(info, indent=2, sort_keys=True, ensure_ascii=False) + "\n"
    return atomic_write_text(Path(root) / DATASET_INFO, text)


def write_manifest(posts: Iterable[Post], path: Path) -> Path:
    """Write posts as JSON Lines, deterministically (same posts give the same bytes)."""
    path = Path(path)
    with atomic_target(path) as tmp, tmp.open("w", encoding="utf-8", newline="\n") as fh:
        for post in posts:
            fh.write(json.dumps(post.to_json(), sort_keys=True, ensure_ascii=False) + "\n")
    return path


def load_manifest(
    path: str | Path,
    root: str | Path | None = None,
    labels: list[str] | None = None,
    on_error: Literal["raise", "skip"] = "raise",
    check_images: ImageCheck = "decode",
    rules: DataRulesConfig | None = None,
) -> Manifest:
    """Load a manifest and judge it with the data rulebook (``rules``: ``data.rules``).

    ``root`` defaults to the manifest's directory and ``labels`` to ``dataset.json``'s. With
    ``on_error="raise"`` all rejected rows are raised together as :class:`ManifestError`;
    with ``"skip"`` they are returned in ``skipped``. A duplicate id keeps its first row; a
    leaked copy (an error-severity leakage kind) is rejected outside its earliest split.
    """
    path = Path(path)
    root = Path(root) if root is not None else path.parent
    rules = rules or DataRulesConfig()
    if not path.is_file():
        raise FileNotFoundError(f"{path}: manifest not found (run `mmaux synth` or an importer)")
    if labels is None:
        labels = list(read_dataset_info(root)["labels"])
    verdict = check_manifest(path, root, labels, rules, check_images)
    rejected = verdict.rejected()
    dataset_errors = verdict.dataset_errors()
    if rejected and on_error == "raise":
        raise ManifestError(rejected + dataset_errors, header=f"{path}: {len(rejected)} bad row(s)")
    if dataset_errors:
        head = "no usable rows" if dataset_errors[-1].rule == "rows" else "data set rule(s) failed"
        raise ManifestError(rejected + dataset_errors, header=f"{path}: {head}")
    warnings = verdict.warnings()
    if warnings:
        log.warning(
            "%s: %d warning(s) (kept; see data.rules), e.g.\n  %s",
            path,
            len(warnings),
            "\n  ".join(str(w) for w in warnings[:5]),
        )
    posts = [
        Post(
            id=row["id"],
            text=row["text"],
            image=row["image"].replace("\\", "/"),
            label=row["label"],
            split=row["split"],
            meta=dict(row.get("meta") or {}),
        )
        for rv in verdict.accepted()
        if (row := rv.row) is not None
    ]
    return Manifest(
        root=root,
        labels=list(labels),
        posts=posts,
        skipped=rejected,
        source=path,
        warnings=warnings,
    )


def write_skip_report(problems: list[RowProblem], path: Path) -> Path:
    """Write findings as JSON Lines (file, line, post_id, problem, rule, severity)."""
    lines = "".join(json.dumps(asdict(p), ensure_ascii=False) + "\n" for p in problems)
    return atomic_write_text(Path(path), lines)
