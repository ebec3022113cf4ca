"""TIR (Vempala & Preoţiuc-Pietro 2019): how a tweet's image relates to its text.

Raw (``src`` is a folder):

* ``textimage-data.csv``: quoted CSV ``tweet_id,user_id,tweet`` + six 0/1 label columns
  ``text_is_represented,image_adds`` and the one-hot relationship
  ``image_adds_text_repr,image_adds_text_notrepr,image_notadds_text_repr,
  image_notadds_text_notrepr``. Quirk: quotes inside a tweet are escaped as ``\\"``
  instead of CSV's ``""``. A plain CSV reader then ends the field early: rows whose tweet
  also holds a comma split into 10+ fields, and the others keep 9 fields with garbled
  text. Every ``\\"`` is rewritten to ``""`` before the CSV reader sees the line (other
  backslashes are kept; tweets may span lines inside quotes, line numbers stay the file's).
  A record that still has more than 9 fields is recovered by a heuristic (2 ids first, 6
  labels last, the middle fields joined with ``,``) when its ids are numbers and its labels
  0/1; any other record is a skipped row naming the file and line.
* ``textimage.csv`` (newer): ``tweet_id`` + the six label columns only, with trailing empty
  columns (``,,,``) that some rows lack. Used only when ``textimage-data.csv`` is absent;
  the tweet text must then be rehydrated from Twitter by id and passed as ``text_file``
  (an ``id,text`` CSV); ids without text there are skipped rows.
* images ``T{tweet_id}.jpg`` in ``images/``.

Labels (``task``): ``relationship`` (default) is the 4-way one-hot, named by its columns;
``text_is_represented`` and ``image_adds`` are the binary columns. Whatever the task, a row
whose one-hot does not hold exactly one 1, or whose binary columns disagree with it, is a
skipped row; the six raw label columns (and ``user_id`` where known) go into ``meta``.
There is no official split: posts get the seeded stratified 80/10/10 split by label.
"""

from __future__ import annotations

import csv
from collections import Counter
from collections.abc import Iterable, Iterator
from dataclasses import dataclass
from pathlib import Path

from mmaux.importers.base import (
    ImportFailed,
    ImportReport,
    RawPost,
    skip_notes,
    source_image,
    write_dataset,
)
from mmaux.importers.rawio import clean_text, open_csv, read_text_file, text_file_notes

DATA_FILE = "textimage-data.csv"
IDS_FILE = "textimage.csv"
BINARY = ["text_is_represented", "image_adds"]
RELATIONS = [
    "image_adds_text_repr",
    "image_adds_text_notrepr",
    "image_notadds_text_repr",
    "image_notadds_text_notrepr",
]
LABEL_COLUMNS = BINARY + RELATIONS
DATA_COLUMNS = ["tweet_id", "user_id", "tweet", *LABEL_COLUMNS]
IDS_COLUMNS = ["tweet_id", *LABEL_COLUMNS]
# task -> (ordered label names, raw value -> label name)
TASKS: dict[str, tuple[list[str], dict[str, str]]] = {
    "relationship": (RELATIONS, {c: c for c in RELATIONS}),
    "text_is_represented": (
        ["not_represented", "represented"],
        {"0": "not_represented", "1": "represented"},
    ),
    "image_adds": (["not_adds", "adds"], {"0": "not_adds", "1": "adds"}),
}
NO_TEXT_MESSAGE = (
    f"{IDS_FILE} holds tweet ids and labels only: the tweet text must be rehydrated from "
    "Twitter by tweet id and passed with --text-file (a CSV with an id,text header)"
)
SKIP_NOTES = {
    "parse": "row(s) whose fields could not be recovered",
    "id": "row(s) with a non-numeric or repeated tweet_id",
    "values": "row(s) with a label column other than 0/1",
    "one_hot": "row(s) whose one-hot relationship columns do not hold exactly one 1",
    "inconsistent": "row(s) whose text_is_represented/image_adds disagree with the one-hot",
    "no_text": "row(s) with no text for their id in text_file",
    "empty_text": "row(s) with empty text",
}


@dataclass
class Row:
    """One labelled tweet as read from either CSV (``text`` None: the ids-only file)."""

    line: int
    tweet_id: str
    labels: dict[str, str]
    text: str | None = None
    user_id: str | None = None
    parse: str = "csv"  # "csv", "repaired_quotes" or "heuristic"


def check_labels(raw: dict[str, str]) -> tuple[str | None, str, str]:
    """(relationship column, "", "") for consistent labels, else (None, kind, problem)."""
    bad = [f"{c}={v!r}" for c, v in raw.items() if v not in ("0", "1")]
    if bad:
        return None, "values", "label columns must be 0 or 1: " + ", ".join(bad)
    ones = [c for c in RELATIONS if raw[c] == "1"]
    if len(ones) != 1:
        return (
            None,
            "one_hot",
            f"one-hot relationship columns hold {len(ones)} ones"
            + (f" ({', '.join(ones)})" if ones else ""),
        )
    rel = ones[0]
    expected = {
        "text_is_represented": "1" if rel.endswith("_text_repr") else "0",
        "image_adds": "1" if rel.startswith("image_adds") else "0",
    }
    wrong = [f"{c}={raw[c]}" for c in BINARY if raw[c] != expected[c]]
    if wrong:
        return None, "inconsistent", f"{', '.join(wrong)} disagrees with the one-hot {rel}"
    return rel, "", ""


def _repair_quotes(lines: Iterable[str], repaired: set[int]) -> Iterator[str]:
    """Lines with ``\\"`` rewritten as CSV's ``""``; notes the numbers of changed lines."""
    for number, line in enumerate(lines, 1):
        if '\\"' in line:
            repaired.add(number)
            line = line.replace('\\"', '""')
        yield line


def _heuristic(fields: list[str]) -> list[str] | None:
    """9 fields from a longer record whose ids and labels are plausible, else None."""
    ids, labels = fields[:2], fields[-6:]
    if len(fields) < 9 or not all(f.strip().isdigit() for f in ids):
        return None
    if any(f.strip() not in ("0", "1") for f in labels):
        return None
    return [*ids, ",".join(fields[2:-6]), *labels]


def _records(
    path: Path, columns: list[str], rewrite: bool
) -> Iterator[tuple[int, list[str], bool]]:
    """(first line, fields, quotes repaired) per non-blank record after the checked header."""
    repaired: set[int] = set()
    with open_csv(path) as fh:
        reader = csv.reader(_repair_quotes(fh, repaired) if rewrite else fh)
        header = [h.strip() for h in next(reader, [])]
        while header and not header[-1]:
            header.pop()
        if header != columns:
            raise ImportFailed(f"{path}: expected the header {','.join(columns)}, found {header}")
        end = reader.line_num
        for fields in reader:
            start, end = end + 1, reader.line_num
            if any(f.strip() for f in fields):
                yield start, fields, any(n in repaired for n in range(start, end + 1))


def read_data_file(path: Path) -> tuple[list[Row], list[dict]]:
    """Rows of ``textimage-data.csv`` (broken quoting repaired) and the unrecoverable ones."""
    rows, skipped = [], []
    for line, fields, repaired in _records(path, DATA_COLUMNS, rewrite=True):
        parse = "repaired_quotes" if repaired else "csv"
        if len(fields) != len(DATA_COLUMNS):
            recovered = _heuristic(fields)
            if recovered is None:
                skipped.append(
                    {
                        "file": str(path),
                        "line": line,
                        "problem": f"{len(fields)} fields where 9 are expected "
                        "(tweet_id, user_id, tweet, 6 labels); the quoting cannot be repaired",
                        "kind": "parse",
                    }
                )
                continue
            fields, parse = recovered, "heuristic"
        values = dict(zip(DATA_COLUMNS, fields, strict=True))
        rows.append(
            Row(
                line=line,
                tweet_id=values["tweet_id"].strip(),
                labels={c: values[c].strip() for c in LABEL_COLUMNS},
                text=clean_text(values["tweet"]),
                user_id=values["user_id"].strip(),
                parse=parse,
            )
        )
    return rows, skipped


def read_ids_file(path: Path) -> tuple[list[Row], list[dict]]:
    """Rows of the ids-only ``textimage.csv`` (trailing empty columns ignored)."""
    rows, skipped = [], []
    for line, fields, _ in _records(path, IDS_COLUMNS, rewrite=False):
        fields = [f.strip() for f in fields]
        while len(fields) > len(IDS_COLUMNS) and not fields[-1]:
            fields.pop()
        if len(fields) != len(IDS_COLUMNS):
            skipped.append(
                {
                    "file": str(path),
                    "line": line,
                    "problem": f"{len(fields)} fields where 7 are expected "
                    "(tweet_id and 6 labels, then empty columns)",
                    "kind": "parse",
                }
            )
            continue
        values = dict(zip(IDS_COLUMNS, fields, strict=True))
        rows.append(Row(line, values["tweet_id"], {c: values[c] for c in LABEL_COLUMNS}))
    return rows, skipped


def to_posts(
    rows: list[Row], path: Path, task: str, images: Path, texts: dict[str, str] | None = None
) -> tuple[list[RawPost], list[dict]]:
    """Posts labelled for ``task``, and the rows skipped (ids, labels, text)."""
    posts, skipped = [], []
    first: dict[str, int] = {}
    for row in rows:
        rel, kind, problem = check_labels(row.labels)
        text = row.text if texts is None else texts.get(row.tweet_id)
        if not row.tweet_id.isdigit():
            kind, problem = "id", f"tweet_id {row.tweet_id!r} is not a number"
        elif first.setdefault(row.tweet_id, row.line) != row.line:
            kind, problem = "id", f"duplicate tweet_id (first on line {first[row.tweet_id]})"
        elif rel is not None and text is None:
            kind, problem = "no_text", f"no text for id {row.tweet_id} in text_file"
        elif rel is not None and not text:
            where = "" if texts is None else f" for id {row.tweet_id} in text_file"
            kind, problem = "empty_text", f"empty text{where}"
        if problem:
            skipped.append(
                {
                    "file": str(path),
                    "line": row.line,
                    "id": row.tweet_id,
                    "problem": problem,
                    "kind": kind,
                }
            )
            continue
        assert rel is not None and text
        label = rel if task == "relationship" else TASKS[task][1][row.labels[task]]
        meta = {"source_file": path.name, "source_line": row.line, "relationship": rel}
        meta |= {c: int(row.labels[c]) for c in LABEL_COLUMNS}
        if row.user_id is not None:
            meta["user_id"] = row.user_id
        if row.parse != "csv":
            meta["parse"] = row.parse
        image, note = source_image(images, f"T{row.tweet_id}.jpg")
        posts.append(RawPost(row.tweet_id, text, image, label, None, meta, note))
    return posts, skipped


def import_tir(
    src: Path,
    out: Path,
    on_missing="fail",
    link="copy",
    seed=0,
    images: Path | None = None,
    task: str = "relationship",
    text_file: Path | None = None,
) -> ImportReport:
    """Import TIR for ``task`` (relationship, text_is_represented or image_adds)."""
    src = Path(src)
    if task not in TASKS:
        raise ImportFailed(f"unknown TIR task {task!r}; expected one of {', '.join(TASKS)}")
    if not src.is_dir():
        raise ImportFailed(f"{src}: not a folder (TIR needs {DATA_FILE} or {IDS_FILE} in it)")
    images = Path(images) if images else src / "images"
    skipped_text: list[dict] = []
    if (src / DATA_FILE).is_file():
        if text_file is not None:
            raise ImportFailed(
                f"{src / DATA_FILE} holds the tweet text; --text-file is only for the "
                f"ids-only {IDS_FILE} (remove {DATA_FILE} from --src to use it)"
            )
        path = src / DATA_FILE
        rows, skipped = read_data_file(path)
        texts = None
        notes = [f"tweet text from {DATA_FILE}"]
    elif (src / IDS_FILE).is_file():
        path = src / IDS_FILE
        if text_file is None:
            raise ImportFailed(f"{path}: no tweet text and no text file. {NO_TEXT_MESSAGE}")
        rows, skipped = read_ids_file(path)
        texts, skipped_text = read_text_file(Path(text_file))
        notes = [f"tweet text from {text_file} (rehydrated), labels from {IDS_FILE}"]
        extra = set(texts) - {r.tweet_id for r in rows}
        if extra:
            notes.append(f"text_file holds {len(extra)} id(s) not in {IDS_FILE}, not used")
    else:
        raise ImportFailed(f"{src}: neither {DATA_FILE} nor {IDS_FILE} found")
    posts, skipped_posts = to_posts(rows, path, task, images, texts)
    skipped += skipped_posts
    parsed = Counter(p.meta.get("parse", "csv") for p in posts)
    if parsed["repaired_quotes"]:
        notes.append(f'repaired \\" quoting inside the tweet in {parsed["repaired_quotes"]} row(s)')
    if parsed["heuristic"]:
        notes.append(
            f"recovered {parsed['heuristic']} row(s) with extra fields by joining the middle "
            "fields into the tweet (2 ids first, 6 labels last)"
        )
    notes += skip_notes(skipped, SKIP_NOTES)
    notes += text_file_notes(skipped_text)
    if not posts:
        raise ImportFailed(f"{path}: no usable rows")
    labels, label_map = TASKS[task]
    return write_dataset(
        posts,
        out,
        dataset="tir" if task == "relationship" else f"tir:{task}",
        source=src,
        labels=labels,
        label_map=label_map,
        split_rule="no official split: seeded stratified 80/10/10 by label",
        on_missing=on_missing,
        link=link,
        seed=seed,
        skipped_rows=skipped_text + skipped,
        notes=notes,
    )
