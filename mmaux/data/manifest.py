"""The canonical post manifest: format, strict loading, and writing.

A data set is a directory (the *data root*) holding:

* ``manifest.jsonl``: one JSON object per line with ``id``, ``text``, ``image`` (a POSIX
  path relative to the data root), ``label``, ``split`` (``train``/``val``/``test``) and an
  optional ``meta`` object. A ``.csv`` manifest with the same columns (``meta`` as a JSON
  string) is read too.
* ``dataset.json``: ``{"name": ..., "labels": [ordered label names], ...}``.
* the images, anywhere under the root.

Loading never drops a row silently: with ``on_error="raise"`` every problem is collected
and raised together; with ``on_error="skip"`` bad rows are left out and returned in
:attr:`Manifest.skipped`, each with file, line, id and reason.
"""

from __future__ import annotations

import csv
import json
from collections.abc import Iterable, Iterator
from dataclasses import asdict, dataclass, field
from pathlib import Path, PurePosixPath
from typing import Any, Literal

from mmaux.data.images import ImageCheck, image_problem

SPLITS = ("train", "val", "test")
REQUIRED = ("id", "text", "image", "label", "split")
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


@dataclass(frozen=True)
class RowProblem:
    """Why one manifest row was rejected."""

    file: str
    line: int
    post_id: str | None
    problem: str

    def __str__(self) -> str:
        who = f" (id={self.post_id})" if self.post_id is not None else ""
        return f"{self.file}:{self.line}{who}: {self.problem}"


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
    path = Path(root) / DATASET_INFO
    path.write_text(json.dumps(info, indent=2, sort_keys=True, ensure_ascii=False) + "\n")
    return path


def write_manifest(posts: Iterable[Post], path: Path) -> Path:
    """Write posts as JSON Lines, deterministically (same posts give the same bytes)."""
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    with path.open("w", encoding="utf-8", newline="\n") as fh:
        for post in posts:
            fh.write(json.dumps(post.to_json(), sort_keys=True, ensure_ascii=False) + "\n")
    return path


def iter_rows(
    path: Path, lenient: bool = False
) -> Iterator[tuple[int, dict[str, Any] | None, str | None]]:
    """Yield (line number, row or None, parse problem or None) for every non-blank row.

    Strict (the loader): a CSV without the required columns raises. Lenient (the data
    validator): missing columns are left to the schema check and undecodable bytes are
    replaced, so every row can still be reported on.
    """
    errors = "replace" if lenient else "strict"
    if path.suffix.lower() == ".csv":
        with path.open(encoding="utf-8", errors=errors, newline="") as fh:
            reader = csv.DictReader(fh)
            missing = [c for c in REQUIRED if c not in (reader.fieldnames or [])]
            if missing and not lenient:
                raise ManifestError(
                    [RowProblem(str(path), 1, None, f"missing column(s): {', '.join(missing)}")]
                )
            for row in reader:
                line = reader.line_num
                if None in row:
                    yield line, None, "row has more fields than the header"
                    continue
                row = {k: v for k, v in row.items() if v is not None}
                meta = row.pop("meta", "")
                if meta:
                    try:
                        row["meta"] = json.loads(meta)
                    except json.JSONDecodeError:
                        yield line, None, "meta is not valid JSON"
                        continue
                yield line, row, None
        return
    with path.open(encoding="utf-8", errors=errors) as fh:
        for line, raw in enumerate(fh, start=1):
            if not raw.strip():
                continue
            try:
                row = json.loads(raw)
            except json.JSONDecodeError as err:
                yield line, None, f"not valid JSON ({err.msg})"
                continue
            if not isinstance(row, dict):
                yield line, None, f"row is a JSON {type(row).__name__}, not an object"
                continue
            yield line, row, None


def _resolve_inside(root: Path, rel: str) -> Path | None:
    """The image path under ``root``, or ``None`` if it is absolute or leaves the root."""
    pure = PurePosixPath(rel.replace("\\", "/"))
    if pure.is_absolute() or rel.startswith(("/", "\\")) or (len(rel) > 1 and rel[1] == ":"):
        return None
    full = (root / pure).resolve()
    try:
        full.relative_to(root.resolve())
    except ValueError:
        return None
    return full


def _row_problem(
    row: dict[str, Any], root: Path, labels: set[str], check: ImageCheck
) -> str | None:
    missing = [k for k in REQUIRED if k not in row or row[k] is None]
    if missing:
        return f"missing field(s): {', '.join(missing)}"
    unknown = sorted(set(row) - set(REQUIRED) - {"meta"})
    if unknown:
        return f"unknown field(s): {', '.join(unknown)}"
    for k in REQUIRED:
        if not isinstance(row[k], str):
            return f"field {k!r} must be a string, got {type(row[k]).__name__}"
    if "meta" in row and not isinstance(row["meta"], dict):
        return "meta must be an object"
    if not row["id"].strip():
        return "empty id"
    if not row["text"].strip():
        return "empty text"
    if row["label"] not in labels:
        return f"unknown label {row['label']!r} (expected one of {sorted(labels)})"
    if row["split"] not in SPLITS:
        return f"unknown split {row['split']!r} (expected one of {list(SPLITS)})"
    if not row["image"].strip():
        return "empty image path"
    full = _resolve_inside(root, row["image"])
    if full is None:
        return f"image path {row['image']!r} leaves the data root"
    problem = image_problem(full, check)
    if problem:
        return f"{problem}: {row['image']}"
    return None


def load_manifest(
    path: str | Path,
    root: str | Path | None = None,
    labels: list[str] | None = None,
    on_error: Literal["raise", "skip"] = "raise",
    check_images: ImageCheck = "decode",
) -> Manifest:
    """Load and validate a manifest.

    ``root`` defaults to the manifest's directory and ``labels`` to ``dataset.json``'s.
    Every row is checked (fields, empty text, unknown label or split, duplicate id, image
    path inside the root, image present and decodable). With ``on_error="raise"`` all
    problems are raised together as :class:`ManifestError`; with ``"skip"`` bad rows are
    returned in ``skipped``. A duplicate id keeps its first row and rejects the later ones.
    """
    path = Path(path)
    root = Path(root) if root is not None else path.parent
    if not path.is_file():
        raise FileNotFoundError(f"{path}: manifest not found (run `mmaux synth` or an importer)")
    if labels is None:
        labels = list(read_dataset_info(root)["labels"])
    label_set = set(labels)
    posts: list[Post] = []
    problems: list[RowProblem] = []
    first_line: dict[str, int] = {}
    for line, row, parse_problem in iter_rows(path):
        post_id = row.get("id") if row is not None and isinstance(row.get("id"), str) else None
        problem = parse_problem or _row_problem(row, root, label_set, check_images)  # type: ignore[arg-type]
        if problem is None and post_id in first_line:
            problem = f"duplicate id (first seen on line {first_line[post_id]})"
        if problem is not None:
            problems.append(RowProblem(str(path), line, post_id, problem))
            continue
        assert row is not None and post_id is not None
        first_line[post_id] = line
        posts.append(
            Post(
                id=post_id,
                text=row["text"],
                image=row["image"].replace("\\", "/"),
                label=row["label"],
                split=row["split"],
                meta=dict(row.get("meta") or {}),
            )
        )
    if problems and on_error == "raise":
        raise ManifestError(problems, header=f"{path}: {len(problems)} bad row(s)")
    if not posts:
        raise ManifestError(problems, header=f"{path}: no usable rows")
    return Manifest(root=root, labels=list(labels), posts=posts, skipped=problems, source=path)


def write_skip_report(problems: list[RowProblem], path: Path) -> Path:
    """Write skipped rows as JSON Lines (file, line, post_id, problem)."""
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    with path.open("w", encoding="utf-8") as fh:
        for p in problems:
            fh.write(json.dumps(asdict(p), ensure_ascii=False) + "\n")
    return path
