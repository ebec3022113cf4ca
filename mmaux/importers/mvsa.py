"""MVSA-Single and MVSA-Multiple (Niu et al. 2016): tweet sentiment, text and image labelled.

Raw (``src`` is the unzipped official archive):

* ``labelResultAll.txt``: a header line ``ID<TAB>text,image``, then ``id<TAB>text,image``
  per post with the words ``positive``/``neutral``/``negative``. MVSA-Multiple has three
  annotators, ``id<TAB>t1,i1<TAB>t2,i2<TAB>t3,i3``; the number of fields most lines have
  tells which (a line with another number is a skipped row), so one reader serves both.
  Per modality the label is the majority over the annotators; a tie (three different
  words) skips the post ("no majority").
* ``data/{id}.txt``: the tweet text, often not valid UTF-8: decoded as UTF-8, else as
  latin-1 (counted in a note, ``meta["text_encoding"]``). ``data/{id}.jpg``: the image
  (``images`` overrides the folder). A missing text file skips the post.
* optional ``valid_pairlist.txt`` (the cleaned list, no header):
  ``id,multimodal_label,text_label,image_label`` with 0 neutral, 1 positive, 2 negative.
  When present it is authoritative: only its ids, with its ``multimodal_label``
  (``labelResultAll.txt`` may then be absent; the ids it lists beyond the pair list are
  skipped rows, counted in a note).
* optional numbered splits ``train_{k}.txt``, ``val_{k}.txt``, ``test_{k}.txt``, one integer
  a line. ASSUMPTION: they are 0-based ROW INDICES into ``valid_pairlist.txt`` (index i is
  its line i + 1), not post ids: the public ``train_1.txt``'s values stay below the 4,511
  rows while ids run higher and have gaps. ``fold=k`` uses split k (it needs the pair list
  and all three files; an index out of range or a row in two files fails the import), and
  pair-list rows in none of the three are skipped rows ("not in fold k"). Without ``fold``
  the seeded stratified 80/10/10 split is used.

Post label from ``labelResultAll.txt`` (the standard rule): text == image -> that label; one
polar (positive/negative) and the other neutral -> the polar one; positive vs negative ->
dropped (a skipped row with the id, counted in a note). Numeric convention: 0 neutral,
1 positive, 2 negative.
"""

from __future__ import annotations

from collections import Counter
from collections.abc import Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from mmaux.importers.base import (
    SAFE_ID,
    ImportFailed,
    ImportReport,
    RawPost,
    require_posts,
    shorten,
    source_image,
    write_dataset,
)
from mmaux.importers.rawio import read_lines

LABELS = ["neutral", "positive", "negative"]
LABEL_MAP = {"0": "neutral", "1": "positive", "2": "negative"}
LABEL_FILE = "labelResultAll.txt"
PAIR_FILE = "valid_pairlist.txt"
RULE = (
    "post label: text == image -> that label; polar + neutral -> the polar one; "
    "positive vs negative -> dropped (0 neutral, 1 positive, 2 negative)"
)


@dataclass
class Candidate:
    """A post id with its label, before its text file is read."""

    id: str
    label: str
    file: Path
    line: int
    meta: dict[str, Any] = field(default_factory=dict)
    row: int | None = None  # 0-based row index in valid_pairlist.txt


def _skip(path: Path, line: int, problem: str, post_id: str | None = None) -> dict[str, Any]:
    row: dict[str, Any] = {"file": str(path), "line": line, "problem": problem}
    if post_id is not None:
        row["id"] = post_id
    return row


def resolve(text_label: str, image_label: str) -> str | None:
    """The post label by the standard rule; ``None`` for positive vs negative."""
    if text_label == image_label:
        return text_label
    if "neutral" in (text_label, image_label):
        return image_label if text_label == "neutral" else text_label
    return None


def majority(words: Sequence[str]) -> str | None:
    """The word most annotators gave; ``None`` on a tie."""
    ranked = Counter(words).most_common()
    if len(ranked) > 1 and ranked[0][1] == ranked[1][1]:
        return None
    return ranked[0][0]


def read_label_file(path: Path) -> tuple[list[Candidate], list[dict[str, Any]], int, Counter]:
    """Resolved posts of ``labelResultAll.txt``, its unusable lines, the number of
    annotators, and how many posts each rule dropped ("conflict", "no majority")."""
    posts: list[Candidate] = []
    skipped: list[dict[str, Any]] = []
    dropped: Counter = Counter()
    first: dict[str, int] = {}
    # tabs in the original; ids and label words hold no spaces
    rows = [(no, raw.split()) for no, raw in enumerate(read_lines(path), start=1) if raw.strip()]
    if rows and rows[0][1][0].lower() == "id":  # the header line
        rows = rows[1:]
    widths = Counter(len(fields) - 1 for _, fields in rows).most_common(1)
    n_annot = widths[0][0] if widths else 0  # annotators: what most lines have
    if rows and n_annot < 1:
        raise ImportFailed(f"{path}: expected lines 'id<TAB>text,image', found {rows[0][1]}")
    for no, fields in rows:
        post_id = fields[0]
        if len(fields) - 1 != n_annot:
            skipped.append(
                _skip(
                    path,
                    no,
                    f"expected {n_annot} text,image field(s), found {len(fields) - 1}",
                    post_id,
                )
            )
            continue
        if not SAFE_ID.fullmatch(post_id):
            skipped.append(_skip(path, no, f"bad id {post_id!r}"))
            continue
        if post_id in first:
            skipped.append(
                _skip(path, no, f"duplicate id (first on line {first[post_id]})", post_id)
            )
            continue
        first[post_id] = no
        pairs = [f.lower().split(",") for f in fields[1:]]
        bad = [f for f, p in zip(fields[1:], pairs, strict=True) if len(p) != 2]
        unknown = sorted({w for p in pairs if len(p) == 2 for w in p} - set(LABELS))
        if bad:
            skipped.append(_skip(path, no, f"{bad[0]!r} is not 'text,image'", post_id))
            continue
        if unknown:
            skipped.append(_skip(path, no, f"unknown label word {unknown[0]!r}", post_id))
            continue
        texts, images = [p[0] for p in pairs], [p[1] for p in pairs]
        text_label, image_label = majority(texts), majority(images)
        if text_label is None or image_label is None:
            which, words = ("text", texts) if text_label is None else ("image", images)
            dropped["no majority"] += 1
            skipped.append(
                _skip(path, no, f"no majority among the {which} labels {words}", post_id)
            )
            continue
        label = resolve(text_label, image_label)
        if label is None:
            dropped["conflict"] += 1
            skipped.append(
                _skip(
                    path,
                    no,
                    f"text and image labels conflict ({text_label} vs {image_label})",
                    post_id,
                )
            )
            continue
        meta: dict[str, Any] = {
            "text_label": text_label,
            "image_label": image_label,
            "text_image_agreement": "agree" if text_label == image_label else "differ",
        }
        if n_annot > 1:  # subgroups: how many annotators back the majority of each modality
            meta.update(annotator_text_labels=texts, annotator_image_labels=images)
            meta["annotator_agreement"] = (
                f"text {texts.count(text_label)}/{n_annot}, "
                f"image {images.count(image_label)}/{n_annot}"
            )
        posts.append(Candidate(post_id, label, path, no, meta))
    return posts, skipped, n_annot, dropped


def read_pairlist(path: Path) -> tuple[list[Candidate], list[dict[str, Any]], int]:
    """Posts of ``valid_pairlist.txt``, its unusable rows and its number of rows."""
    posts: list[Candidate] = []
    skipped: list[dict[str, Any]] = []
    first: dict[str, int] = {}
    lines = read_lines(path)
    while lines and not lines[-1].strip():
        lines.pop()
    for no, raw in enumerate(lines, start=1):
        fields = [f.strip() for f in raw.split(",")]
        if len(fields) != 4:
            skipped.append(_skip(path, no, f"expected 4 comma-separated fields, found {raw!r}"))
            continue
        post_id, codes = fields[0], fields[1:]
        if not SAFE_ID.fullmatch(post_id):
            skipped.append(_skip(path, no, f"bad id {post_id!r}"))
        elif any(c not in LABEL_MAP for c in codes):
            skipped.append(_skip(path, no, f"labels {codes} not all in 0/1/2", post_id))
        elif post_id in first:
            skipped.append(
                _skip(path, no, f"duplicate id (first on line {first[post_id]})", post_id)
            )
        else:
            first[post_id] = no
            meta = {
                "multimodal_label": int(codes[0]),
                "text_label": LABEL_MAP[codes[1]],
                "image_label": LABEL_MAP[codes[2]],
                "text_image_agreement": "agree" if codes[1] == codes[2] else "differ",
                "pairlist_row": no - 1,
            }
            posts.append(Candidate(post_id, LABEL_MAP[codes[0]], path, no, meta, row=no - 1))
    return posts, skipped, len(lines)


def read_indices(path: Path, n_rows: int) -> list[int]:
    """The row indices of one split file; each must lie in ``[0, n_rows)``."""
    out = []
    for no, raw in enumerate(path.read_text(encoding="utf-8", errors="replace").split("\n"), 1):
        if not raw.strip():
            continue
        try:
            index = int(raw.strip())
        except ValueError:
            raise ImportFailed(f"{path}:{no}: {raw.strip()!r} is not a row index") from None
        if not 0 <= index < n_rows:
            raise ImportFailed(
                f"{path}:{no}: row index {index} out of range: {PAIR_FILE} has {n_rows} rows "
                "(indices are 0-based rows of it)"
            )
        out.append(index)
    return out


def read_fold(src: Path, k: int, n_rows: int) -> dict[int, str]:
    """Row index -> split of fold ``k`` (``train_k.txt``, ``val_k.txt``, ``test_k.txt``)."""
    where: dict[int, tuple[str, Path]] = {}
    for split in ("train", "val", "test"):
        path = src / f"{split}_{k}.txt"
        if not path.is_file():
            raise ImportFailed(f"{path}: missing (fold {k} needs train_/val_/test_{k}.txt)")
        for index in read_indices(path, n_rows):
            if index in where and where[index][0] != split:
                raise ImportFailed(
                    f"{path}: row index {index} is also in {where[index][1].name} "
                    f"(fold {k} puts a row in two splits)"
                )
            where[index] = (split, path)
    return {i: s for i, (s, _) in where.items()}


def read_text(path: Path) -> tuple[str, str]:
    """A text file's content and the encoding that decoded it (UTF-8, else latin-1)."""
    data = path.read_bytes()
    try:
        return data.decode("utf-8-sig"), "utf-8"
    except UnicodeDecodeError:
        return data.decode("latin-1"), "latin-1"


def _excluded_by_pairlist(
    pairs: list[Candidate],
    pair_skipped: list[dict[str, Any]],
    judged: list[Candidate],
    label_skipped: list[dict[str, Any]],
) -> list[dict[str, Any]]:
    """Skipped rows for the labelResultAll.txt lines whose id the pair list lacks; adds
    each listed post's labelResultAll label to its meta as ``label_result``."""
    listed = {c.id for c in pairs} | {r["id"] for r in pair_skipped if "id" in r}
    by_id = {c.id: c for c in judged}
    for c in pairs:
        if c.id in by_id:
            c.meta["label_result"] = by_id[c.id].label
    excluded = [(c.file, c.line, c.id, "") for c in judged if c.id not in listed] + [
        (Path(r["file"]), r["line"], r.get("id"), f"; {r['problem']}")
        for r in label_skipped
        if r.get("id") not in listed
    ]
    return [
        _skip(file, line, f"not in {PAIR_FILE}{why}", post_id)
        for file, line, post_id, why in sorted(excluded, key=lambda e: e[1])
    ]


def read(
    src: Path, images: Path | None = None, fold: int | None = None
) -> tuple[list[RawPost], list[dict[str, Any]], list[str], str, str]:
    """Posts, skipped rows, notes, split rule and data set name of an MVSA folder."""
    src = Path(src)
    texts = src / "data"
    images = Path(images) if images else texts
    label_path, pair_path = src / LABEL_FILE, src / PAIR_FILE
    if not label_path.is_file() and not pair_path.is_file():
        raise ImportFailed(f"{src}: neither {LABEL_FILE} nor {PAIR_FILE} found")
    notes: list[str] = [RULE]
    judged: list[Candidate] = []
    label_skipped: list[dict[str, Any]] = []
    n_annot, dropped = 0, Counter()
    if label_path.is_file():
        judged, label_skipped, n_annot, dropped = read_label_file(label_path)
    if pair_path.is_file():
        candidates, skipped, n_rows = read_pairlist(pair_path)
        notes.append(f"{PAIR_FILE} is authoritative: only its ids, with its multimodal_label")
        if label_path.is_file():
            excluded = _excluded_by_pairlist(candidates, skipped, judged, label_skipped)
            skipped += excluded
            notes.append(f"{PAIR_FILE} excludes {len(excluded)} row(s) of {LABEL_FILE}")
    else:
        if fold is not None:
            raise ImportFailed(f"{pair_path}: missing (fold {fold} indexes its rows)")
        candidates, skipped, n_rows = judged, label_skipped, 0
        if dropped["no majority"]:
            notes.append(
                f"dropped {dropped['no majority']} post(s) whose {n_annot} annotators tied "
                "on the text or the image label (no majority)"
            )
        if dropped["conflict"]:
            notes.append(
                f"dropped {dropped['conflict']} post(s) whose text and image labels "
                "conflict (positive vs negative)"
            )
    if fold is not None:
        split_of = read_fold(src, fold, n_rows)
        outside = [c for c in candidates if c.row not in split_of]
        skipped += [_skip(c.file, c.line, f"not in fold {fold}", c.id) for c in outside]
        candidates = [c for c in candidates if c.row in split_of]
        notes.append(f"{len(outside)} {PAIR_FILE} row(s) are in none of fold {fold}'s files")
        split_rule = (
            f"official fold {fold}: train_{fold}/val_{fold}/test_{fold}.txt as 0-based "
            f"row indices into {PAIR_FILE}"
        )
    else:
        split_of = {}
        split_rule = "seeded stratified 80/10/10"
        if sorted(src.glob("train_*.txt")):
            notes.append("numbered split files are present; pass fold=K to use one")
    posts: list[RawPost] = []
    fallback: list[str] = []
    for c in candidates:
        text_path = texts / f"{c.id}.txt"  # ids are checked against SAFE_ID
        if not text_path.is_file():
            skipped.append(_skip(c.file, c.line, f"text file data/{c.id}.txt not found", c.id))
            continue
        text, encoding = read_text(text_path)
        if encoding == "latin-1":
            fallback.append(c.id)
        if not text.strip():
            skipped.append(_skip(c.file, c.line, "empty text", c.id))
            continue
        image, note = source_image(images, f"{c.id}.jpg")
        meta = {"source_file": c.file.name, "source_line": c.line, **c.meta}
        meta["text_encoding"] = encoding
        posts.append(RawPost(c.id, text.strip(), image, c.label, split_of.get(c.row), meta, note))
    if fallback:
        notes.append(
            f"{len(fallback)} text file(s) were not valid UTF-8 and were decoded as latin-1 "
            f"(meta text_encoding): {shorten(fallback, 20)}"
        )
    name = {1: "mvsa-single", 3: "mvsa-multiple"}.get(n_annot, "mvsa")
    return posts, skipped, notes, split_rule, name


def import_mvsa(
    src: Path,
    out: Path,
    on_missing="fail",
    link="copy",
    seed=0,
    images: Path | None = None,
    fold: int | None = None,
) -> ImportReport:
    """Import MVSA-Single or -Multiple from ``src`` (see the module docstring)."""
    posts, skipped, notes, split_rule, name = read(src, images, fold)
    require_posts(posts, skipped, src)
    return write_dataset(
        posts,
        out,
        dataset=name,
        source=Path(src),
        labels=LABELS,
        label_map=LABEL_MAP,
        split_rule=split_rule,
        on_missing=on_missing,
        link=link,
        seed=seed,
        skipped_rows=skipped,
        notes=notes,
    )
