"""MHP: the Dog Whistle 5k subset of MMHS150K (Botelho et al. 2021), hateful multimodal tweets.

Raw (``src``):

* per-split CSVs (zenodo) with at least ``image_number, tweet_text, img_text,
  Primary_numeric_gt``: every CSV in ``src`` whose header has these columns is read, under
  any file name; other columns are ignored. ``image_number`` is the post id (an image
  extension such as ``.jpg`` and a pandas float artefact ``.0`` are stripped); the image is
  ``images/{id}.jpg`` (``images`` overrides the folder).
* ``Primary_numeric_gt``: 0 none, 1 hateful, 2 counter_speech, 3 reclaimed (``1.0`` reads
  as 1).
* Input text = ``tweet_text`` + " " + ``img_text`` (the image's OCR text). An empty or
  ``nan`` OCR text leaves the tweet text alone (and an empty or ``nan`` tweet text leaves
  the OCR text); both raw fields are kept in ``meta``.
* Splits: ``DataSplits.csv`` (an unnamed index column, then ``Train IDs``, ``Dev IDs``,
  ``Test IDs``; the shorter columns padded with empty cells) decides every id's split when
  present: an id in two columns fails the import, listed ids absent from the CSVs are
  counted in a note, CSV rows it does not list are skipped rows. Without it the CSV file
  names decide when each names one split (train; dev/val/valid; test), else the seeded
  stratified 80/10/10 split is used.
* A pandas pickle of the data also circulates. Pickles are NEVER loaded (unpickling runs
  arbitrary code): with a pickle and no usable CSV the import fails, saying to convert it to
  CSV in a trusted environment.
"""

from __future__ import annotations

import csv
import re
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
from mmaux.importers.rawio import dict_reader, open_csv

LABELS = ["none", "hateful", "counter_speech", "reclaimed"]
LABEL_MAP = {"0": "none", "1": "hateful", "2": "counter_speech", "3": "reclaimed"}
COLUMNS = ("image_number", "tweet_text", "img_text", "Primary_numeric_gt")
SPLITS_FILE = "DataSplits.csv"
COLUMN_WORDS = (("train", ("train",)), ("val", ("dev", "val")), ("test", ("test",)))
IMAGE_EXTS = {"jpg", "jpeg", "png", "gif", "webp"}
NAME_SPLITS = {
    "train": "train",
    "training": "train",
    "dev": "val",
    "val": "val",
    "valid": "val",
    "validation": "val",
    "test": "test",
    "testing": "test",
}


def clean_id(raw: str) -> str | None:
    """The post id in an ``image_number`` cell (``123``, ``123.jpg``, ``123.0``), or None."""
    value = raw.strip()
    stem, dot, ext = value.rpartition(".")
    if dot and ext.lower() in IMAGE_EXTS:
        value = stem
    integral = re.fullmatch(r"(\d+)\.0+", value)
    if integral:
        value = integral.group(1)
    return value if SAFE_ID.fullmatch(value) else None


def parse_label(raw: str) -> int | None:
    """``Primary_numeric_gt`` as 0-3 (``2`` or ``2.0``), or None."""
    try:
        value = float(raw.strip())
    except ValueError:
        return None
    return int(value) if value.is_integer() and 0 <= value <= 3 else None


def present(value: str | None) -> str:
    """The stripped text, or "" for an empty or NaN-like cell."""
    value = (value or "").strip()
    return "" if value.lower() in ("nan", "none") else value


def split_from_name(path: Path) -> str | None:
    """The split a CSV's file name names (``train.csv``, ``mhp_dev.csv``), if exactly one."""
    found = {NAME_SPLITS[t] for t in re.split(r"[^a-z]+", path.stem.lower()) if t in NAME_SPLITS}
    return found.pop() if len(found) == 1 else None


def find_csvs(src: Path) -> tuple[list[Path], list[str]]:
    """The CSVs in ``src`` that have the MHP columns, and notes on the files left aside."""
    found, notes = [], []
    for path in sorted(p for p in src.iterdir() if p.is_file()):
        suffix = path.suffix.lower()
        if suffix in (".pkl", ".pickle"):
            notes.append(f"ignored {path.name}: pickles are never loaded")
        if suffix != ".csv" or path.name == SPLITS_FILE:
            continue
        with open_csv(path) as fh:
            header = {h.strip() for h in next(csv.reader(fh), [])}
        if set(COLUMNS) <= header:
            found.append(path)
        else:
            notes.append(f"ignored {path.name}: no {', '.join(COLUMNS)} columns")
    order = {"train": 0, "val": 1, "test": 2, None: 3}
    found.sort(key=lambda p: (order[split_from_name(p)], p.name))  # first of a duplicate id
    if not found:
        pickles = sorted(p.name for p in src.glob("*") if p.suffix.lower() in (".pkl", ".pickle"))
        if pickles:
            raise ImportFailed(
                f"{src}: found {', '.join(pickles)} but no CSV with columns "
                f"{', '.join(COLUMNS)}. Pickles are not loaded: unpickling can run arbitrary "
                "code. Convert the data to CSV in a trusted environment (e.g. pandas "
                "read_pickle then to_csv) and import the CSV."
            )
        raise ImportFailed(f"{src}: no CSV with columns {', '.join(COLUMNS)}")
    return found, notes


def read_datasplits(path: Path) -> dict[str, str]:
    """Post id -> split from ``DataSplits.csv``; an id in two columns fails the import."""
    where: dict[str, tuple[str, int, str]] = {}
    with open_csv(path) as fh:
        reader = csv.reader(fh)
        header = [h.strip() for h in next(reader, [])]
        columns: dict[int, str] = {}
        for i, name in enumerate(header):
            low = name.lower()
            for split, words in COLUMN_WORDS:
                if any(w in low for w in words):
                    columns[i] = split
                    break
        if sorted(columns.values()) != ["test", "train", "val"]:
            raise ImportFailed(f"{path}:1: expected Train/Dev/Test ID columns, found {header}")
        for row in reader:
            line = reader.line_num
            for i, split in columns.items():
                cell = row[i].strip() if i < len(row) else ""
                if not present(cell):  # padding of the shorter columns
                    continue
                post_id = clean_id(cell)
                if post_id is None:
                    raise ImportFailed(f"{path}:{line}: {cell!r} in {header[i]} is not an id")
                if post_id in where and where[post_id][0] != split:
                    _, first_line, first_col = where[post_id]
                    raise ImportFailed(
                        f"{path}:{line}: id {post_id} is in {header[i]} and in {first_col} "
                        f"(line {first_line})"
                    )
                where.setdefault(post_id, (split, line, header[i]))
    return {post_id: split for post_id, (split, _, _) in where.items()}


def read(
    src: Path, images: Path | None = None
) -> tuple[list[RawPost], list[dict[str, Any]], list[str], str]:
    """Posts, skipped rows, notes and split rule of an MHP folder."""
    src = Path(src)
    if not src.is_dir():
        raise ImportFailed(f"{src}: not a folder")
    images = Path(images) if images else src / "images"
    csvs, notes = find_csvs(src)
    listed: dict[str, str] | None = None
    name_split = {p: split_from_name(p) for p in csvs}
    if (src / SPLITS_FILE).is_file():
        listed = read_datasplits(src / SPLITS_FILE)
        split_rule = f"official ({SPLITS_FILE}: Train/Dev/Test IDs)"
    elif all(name_split.values()):
        split_rule = "official (from the CSV file names: " + ", ".join(
            f"{p.name} -> {s}" for p, s in name_split.items()
        )
        split_rule += ")"
    else:
        split_rule = "seeded stratified 80/10/10"
        name_split = dict.fromkeys(csvs)
    posts: list[RawPost] = []
    skipped: list[dict[str, Any]] = []
    seen: set[str] = set()
    first: dict[str, str] = {}
    for path in csvs:
        with open_csv(path) as fh:
            reader, _ = dict_reader(fh)
            for row in reader:
                line = reader.line_num
                where: dict[str, Any] = {"file": str(path), "line": line}
                raw_id = (row["image_number"] or "").strip()
                post_id = clean_id(raw_id)
                if None in row:
                    skipped.append({**where, "problem": "more fields than the header"})
                    continue
                if post_id is None:
                    skipped.append({**where, "problem": f"bad image_number {raw_id!r}"})
                    continue
                seen.add(post_id)
                where["id"] = post_id
                raw_label = (row["Primary_numeric_gt"] or "").strip()
                label = parse_label(raw_label)
                tweet, ocr = present(row["tweet_text"]), present(row["img_text"])
                text = f"{tweet} {ocr}".strip()
                if post_id in first:
                    problem = f"duplicate id (first at {first[post_id]})"
                elif label is None:
                    problem = f"unknown label {raw_label!r}"
                elif not text:
                    problem = "empty text"
                elif listed is not None and post_id not in listed:
                    problem = f"not listed in {SPLITS_FILE}"
                else:
                    problem = None
                if problem:
                    skipped.append({**where, "problem": problem})
                    continue
                assert label is not None
                first[post_id] = f"{path.name}:{line}"
                split = listed[post_id] if listed is not None else name_split[path]
                image, note = source_image(images, f"{post_id}.jpg")
                meta = {
                    "source_file": path.name,
                    "source_line": line,
                    "image_number": raw_id,
                    "tweet_text": row["tweet_text"],
                    "img_text": row["img_text"],
                    "raw_label": raw_label,
                }
                label_name = LABEL_MAP[str(label)]
                posts.append(RawPost(post_id, text, image, label_name, split, meta, note))
    if listed is not None:
        absent = sorted(set(listed) - seen)
        if absent:
            notes.append(
                f"{len(absent)} id(s) listed in {SPLITS_FILE} are in no CSV: {shorten(absent, 10)}"
            )
    notes.append("text = tweet_text + ' ' + img_text (OCR; left out when empty or nan)")
    return posts, skipped, notes, split_rule


def import_mhp(
    src: Path, out: Path, on_missing="fail", link="copy", seed=0, images: Path | None = None
) -> ImportReport:
    """Import MHP (Dog Whistle 5k) from ``src`` (see the module docstring)."""
    posts, skipped, notes, split_rule = read(src, images)
    require_posts(posts, skipped, src)
    return write_dataset(
        posts,
        out,
        dataset="mhp",
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
