"""Turn a public data set's raw files into mmaux's canonical data directory.

An importer reads the raw format into :class:`RawPost` records; :func:`write_dataset`
does the rest the same way for every data set: check each source image, copy or link it
into ``out/images/`` (sources are never modified), assign a seeded stratified 80/10/10
split where the data set has no official one, and write ``manifest.jsonl``,
``dataset.json`` and ``import_report.json``. Images and posts are judged by the data
rulebook (:mod:`mmaux.data.rules`), so an import never writes a row the loader rejects:
missing, over-limit or unreadable images are listed in the report (``on_missing="fail"``
stops the import, ``"drop"`` leaves those posts out and records the choice and the dropped
ids in ``dataset.json``); posts that break a row rule (invisible-only or over-long text, an
id that would leave the image folder) are left out and listed with the skipped rows.
Leakage across splits and class balance are reported in the notes, never dropped. Nothing
is dropped silently.
"""

from __future__ import annotations

import json
import os
import random
import re
import shutil
from collections import Counter, defaultdict
from collections.abc import Iterable, Mapping, Sequence
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any, Literal

from mmaux.config import DataRulesConfig
from mmaux.data.manifest import SPLITS, Post, write_dataset_info, write_manifest
from mmaux.data.rules import (
    check_manifest,
    image_file_problem,
    image_path_problem,
    leak_notes,
    post_problems,
    resolve_image,
)
from mmaux.fsio import atomic_write_text

OnMissing = Literal["drop", "fail"]
# No symlinks: a link out of the data root is exactly what the manifest loader rejects.
LinkMode = Literal["copy", "hardlink"]
# A post id that can name its files (``images/{id}.jpg``, ``data/{id}.txt``): no dots,
# slashes or spaces, so it cannot leave a folder.
SAFE_ID = re.compile(r"[A-Za-z0-9_-]+")


class ImportFailed(ValueError):
    """The raw data cannot be imported as asked; the message says why and where."""


@dataclass
class RawPost:
    """One post as read from the raw files, before images are checked and copied."""

    id: str
    text: str
    image: Path | None  # the source image file (None: the raw data names none)
    label: str
    split: str | None = None  # None: assigned by the seeded stratified split
    meta: dict[str, Any] = field(default_factory=dict)
    image_note: str | None = None  # why ``image`` is None, when the importer knows


def source_image(folder: Path, name: str) -> tuple[Path | None, str | None]:
    """``folder/name`` if it stays inside ``folder``, else (None, reason)."""
    folder = Path(folder).resolve()
    path = (folder / name.strip()).resolve()
    try:
        path.relative_to(folder)
    except ValueError:
        return None, f"image name {name!r} leaves the image folder"
    return path, None


def shorten(items: Sequence[str], limit: int) -> str:
    """The first ``limit`` items joined with ``", "``, then ``", ..."`` if there are more."""
    return ", ".join(items[:limit]) + (", ..." if len(items) > limit else "")


def skip_notes(skipped: Iterable[Mapping[str, Any]], descriptions: Mapping[str, str]) -> list[str]:
    """One note ``"skipped N <description>"`` per ``kind`` of the skipped rows, by kind name."""
    kinds = Counter(r["kind"] for r in skipped)
    return [f"skipped {n} {descriptions[k]}" for k, n in sorted(kinds.items())]


def require_posts(posts: Sequence[RawPost], skipped: Sequence[Any], source: Path | str) -> None:
    """Fail the import when the raw data yields no usable post, saying how many rows were
    skipped."""
    if not posts:
        raise ImportFailed(f"{source}: no usable posts ({len(skipped)} row(s) skipped)")


@dataclass
class ImportReport:
    dataset: str
    source: str
    out: str
    labels: list[str]
    label_map: dict[str, str]
    split_rule: str
    on_missing: str
    counts: dict[str, dict[str, int]]
    missing_images: list[dict[str, str]] = field(default_factory=list)
    skipped_rows: list[dict[str, Any]] = field(default_factory=list)
    notes: list[str] = field(default_factory=list)

    @property
    def n_posts(self) -> int:
        return sum(sum(c.values()) for c in self.counts.values())

    def summary(self) -> str:
        lines = [f"{self.dataset}: {self.n_posts} posts written to {self.out}"]
        for split, counts in self.counts.items():
            lines.append(f"  {split:<5} " + "  ".join(f"{k}={v}" for k, v in counts.items()))
        if self.missing_images:
            verb = "dropped" if self.on_missing == "drop" else "found"
            lines.append(
                f"  {len(self.missing_images)} post(s) with a missing or unreadable image {verb}:"
            )
            lines += [
                f"    {m['id']}: {m['image']} ({m['problem']})" for m in self.missing_images[:10]
            ]
        if self.skipped_rows:
            lines.append(f"  {len(self.skipped_rows)} raw row(s) not usable:")
            lines += [f"    line {r['line']}: {r['problem']}" for r in self.skipped_rows[:10]]
        lines += [f"  note: {n}" for n in self.notes]
        return "\n".join(lines)


def stratified_split(
    labels: Sequence[str], seed: int, ratios: tuple[float, float, float] = (0.8, 0.1, 0.1)
) -> list[str]:
    """A seeded stratified train/val/test assignment, one split name per item."""
    by_label: dict[str, list[int]] = defaultdict(list)
    for i, label in enumerate(labels):
        by_label[label].append(i)
    out = [""] * len(labels)
    rng = random.Random(seed)
    for label in sorted(by_label):
        idx = by_label[label]
        rng.shuffle(idx)
        n_train = round(len(idx) * ratios[0])
        n_val = round(len(idx) * ratios[1])
        for k, i in enumerate(idx):
            out[i] = "train" if k < n_train else "val" if k < n_train + n_val else "test"
    return out


def _place(src: Path, dst: Path, mode: LinkMode) -> None:
    dst.parent.mkdir(parents=True, exist_ok=True)
    if dst.exists() or dst.is_symlink():
        dst.unlink()
    if mode == "hardlink":
        try:
            os.link(src, dst)
            return
        except OSError:  # another file system: fall back to a copy
            pass
    shutil.copy2(src, dst)


def write_dataset(
    posts: Sequence[RawPost],
    out_dir: Path,
    *,
    dataset: str,
    source: Path,
    labels: Sequence[str],
    label_map: dict[str, str],
    split_rule: str,
    on_missing: OnMissing = "fail",
    link: LinkMode = "copy",
    seed: int = 0,
    skipped_rows: Sequence[dict[str, Any]] = (),
    notes: Sequence[str] = (),
    rules: DataRulesConfig | None = None,
) -> ImportReport:
    """Check, place and write ``posts`` as a canonical data directory; return the report.

    ``rules`` (``data.rules``, default: its defaults) judges every post and image."""
    out_dir = Path(out_dir)
    rules = rules or DataRulesConfig()
    out_dir.mkdir(parents=True, exist_ok=True)
    if (out_dir / "manifest.jsonl").exists():
        raise ImportFailed(f"{out_dir}: already holds a data set; choose an empty --out")
    dupes = sorted(i for i, n in Counter(p.id for p in posts).items() if n > 1)
    if dupes:
        raise ImportFailed(f"{source}: duplicate post ids in the raw data: {dupes[:10]}")
    posts, refused = _refuse_rule_breakers(posts, out_dir, labels, rules, source)
    missing = []
    for p in posts:
        if p.image is None:
            problem = p.image_note or "no image named"
        else:
            found = image_file_problem(Path(p.image), rules)
            problem = found[1] if found else None
        if problem:
            missing.append({"id": p.id, "image": str(p.image), "problem": problem})
    if missing and on_missing == "fail":
        listed = "\n".join(f"  {m['id']}: {m['image']} ({m['problem']})" for m in missing[:20])
        raise ImportFailed(
            f"{source}: {len(missing)} post(s) have a missing or unreadable image "
            f"(use --on-missing drop to leave them out):\n{listed}"
        )
    bad = {m["id"] for m in missing}
    kept = [p for p in posts if p.id not in bad]
    unsplit = [p for p in kept if p.split is None]
    assigned = stratified_split([p.label for p in unsplit], seed)
    for p, split in zip(unsplit, assigned, strict=True):
        p.split = split
    out_posts = []
    for p in kept:
        assert p.image is not None and p.split in SPLITS
        rel = f"images/{p.id}{Path(p.image).suffix.lower()}"
        _place(Path(p.image), out_dir / rel, link)
        out_posts.append(Post(p.id, p.text, rel, p.label, p.split, dict(p.meta)))
    counts = {s: {lab: 0 for lab in labels} for s in SPLITS}
    for p in out_posts:
        counts[p.split][p.label] += 1
    report = ImportReport(
        dataset=dataset,
        source=str(source),
        out=str(out_dir),
        labels=list(labels),
        label_map=dict(label_map),
        split_rule=split_rule,
        on_missing=on_missing,
        counts=counts,
        missing_images=missing,
        skipped_rows=list(skipped_rows) + refused,
        notes=list(notes),
    )
    write_dataset_info(
        out_dir,
        {
            "name": dataset,
            "labels": list(labels),
            "import": {
                "source": str(source),
                "split_rule": split_rule,
                "seed": seed,
                "on_missing": on_missing,
                "dropped_ids": sorted(bad),
                "label_map": dict(label_map),
                "link": link,
            },
        },
    )
    write_manifest(out_posts, out_dir / "manifest.jsonl")
    report.notes += _data_set_notes(out_dir, labels, rules)
    atomic_write_text(out_dir / "import_report.json", json.dumps(asdict(report), indent=2) + "\n")
    return report


def _refuse_rule_breakers(
    posts: Sequence[RawPost],
    out_dir: Path,
    labels: Sequence[str],
    rules: DataRulesConfig,
    source: Path,
) -> tuple[list[RawPost], list[dict[str, Any]]]:
    """Posts that pass the rulebook's row rules (id, text, label, split, the image path they
    will get), and a skipped-row entry for each one that does not."""
    kept, refused = [], []
    for p in posts:
        problems = post_problems(p.id, p.text, p.label, p.split, labels, rules)
        suffix = Path(p.image).suffix.lower() if p.image is not None else ""
        rel = f"images/{p.id}{suffix}"
        if resolve_image(out_dir, rel) is None:
            problems["image_path"] = image_path_problem(rel)
        if not problems:
            kept.append(p)
            continue
        rule = next(iter(problems))
        refused.append(
            {
                "file": str(p.meta.get("source_file", source)),
                "line": p.meta.get("source_line"),
                "id": p.id,
                "rule": rule,
                "problem": "; ".join(problems.values()),
            }
        )
    return kept, refused


def _data_set_notes(out_dir: Path, labels: Sequence[str], rules: DataRulesConfig) -> list[str]:
    """The rulebook's verdict on the written set: leakage and class balance as notes (rows
    are never dropped for them); a row error here would be a bug, so it fails the import."""
    verdict = check_manifest(out_dir / "manifest.jsonl", out_dir, labels, rules, "exists")
    rejected = [r for r in verdict.rejected() if not r.rule.startswith("leakage_")]
    if rejected:
        listed = "\n".join(f"  {r}" for r in rejected[:10])
        raise ImportFailed(f"{out_dir}: the written manifest breaks row rules:\n{listed}")
    notes = leak_notes(verdict)
    notes += [f"{f.severity} ({f.rule}): {f.problem}" for f in verdict.dataset]
    return notes
