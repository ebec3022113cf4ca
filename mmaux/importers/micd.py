"""MICD (Sánchez Villegas et al. 2023): commercial vs non-commercial influencer posts.

Raw (``src`` is a folder):

* ``data_key_mic.csv``: ``id,domain,year,month,label,split``; label ``0``/``1``
  (non-commercial/commercial), split ``train``/``val``/``test`` (official, kept). It holds
  no post text: the data set is distributed without it (Twitter/Instagram terms), so the
  text must be rehydrated by id and passed as ``text_file``, a CSV with an ``id,text``
  header (UTF-8, a byte-order mark is accepted; texts may hold quoted commas and newlines).
* ``text_data_mic.csv``: ``id,label,split``, the paper's text-only test tweets. They have
  no image, so they are not imported; a note counts them.
* images ``{id}_1.jpg`` (the post's first image) in ``images/``.

Rules: a key row with an unknown label or split, an unusable or repeated id, or no (or
empty) text in ``text_file`` is a skipped row naming the id and the problem; ids of
``text_file`` that the key lacks are counted in a note. Meta: domain, year, month, source
line and raw label.
"""

from __future__ import annotations

import csv
from pathlib import Path

from mmaux.importers.base import (
    SAFE_ID,
    ImportFailed,
    ImportReport,
    RawPost,
    skip_notes,
    source_image,
    write_dataset,
)
from mmaux.importers.rawio import dict_reader, open_csv, read_text_file, text_file_notes

KEY_FILE = "data_key_mic.csv"
TEXT_ONLY_FILE = "text_data_mic.csv"
LABELS = ["non-commercial", "commercial"]
LABEL_MAP = {"0": "non-commercial", "1": "commercial"}
SPLITS = ("train", "val", "test")
NO_TEXT_MESSAGE = (
    "MICD is distributed without post text (Twitter/Instagram terms): rehydrate the text "
    "of each post by its id and pass it with --text-file, a CSV with an id,text header"
)
SKIP_NOTES = {
    "label": "row(s) with an unknown label",
    "split": "row(s) with an unknown split",
    "id": "row(s) with an empty, unusable or repeated id",
    "fields": "row(s) with more fields than the header",
    "no_text": "post(s) with no text in text_file",
    "empty_text": "post(s) whose text in text_file is empty",
}


def read_ids(path: Path) -> list[str]:
    """The ``id`` column of a CSV's non-blank rows."""
    with open_csv(path) as fh:
        return [(row.get("id") or "").strip() for row in csv.DictReader(fh)]


def _number(value: str | None) -> int | str:
    value = (value or "").strip()
    return int(value) if value.isdigit() else value


def read(
    src: Path, texts: dict[str, str], images: Path | None = None
) -> tuple[list[RawPost], list[dict], set[str]]:
    """Posts of ``data_key_mic.csv`` with their text, the unusable rows and every id the
    key names."""
    path = Path(src) / KEY_FILE
    images = Path(images) if images else Path(src) / "images"
    posts: list[RawPost] = []
    skipped: list[dict] = []
    seen: dict[str, int] = {}

    def skip(kind: str, line: int, problem: str, post_id: str | None = None) -> None:
        entry = {"file": str(path), "line": line, "problem": problem, "kind": kind}
        skipped.append(entry | ({"id": post_id} if post_id else {}))

    with open_csv(path) as fh:
        reader, found = dict_reader(fh, lower=True)
        if not {"id", "label", "split"} <= set(reader.fieldnames or []):
            raise ImportFailed(
                f"{path}: expected columns id,domain,year,month,label,split, found {found}"
            )
        for row in reader:
            line = reader.line_num
            post_id = (row["id"] or "").strip()
            raw_label = (row["label"] or "").strip()
            split = (row["split"] or "").strip().lower()
            first = seen.setdefault(post_id, line)
            if None in row:
                skip("fields", line, "more fields than the header", post_id)
            elif not SAFE_ID.fullmatch(post_id):
                skip("id", line, f"unusable id {post_id!r}")
            elif first != line:
                skip("id", line, f"duplicate id {post_id} (first on line {first})", post_id)
            elif raw_label not in LABEL_MAP:
                skip("label", line, f"unknown label {raw_label!r} (id {post_id})", post_id)
            elif split not in SPLITS:
                skip("split", line, f"unknown split {split!r} (id {post_id})", post_id)
            elif post_id not in texts:
                skip("no_text", line, f"no text for id {post_id} in text_file", post_id)
            elif not texts[post_id]:
                skip("empty_text", line, f"empty text for id {post_id} in text_file", post_id)
            else:
                image, note = source_image(images, f"{post_id}_1.jpg")
                posts.append(
                    RawPost(
                        id=post_id,
                        text=texts[post_id],
                        image=image,
                        label=LABEL_MAP[raw_label],
                        split=split,
                        meta={
                            "domain": (row.get("domain") or "").strip(),
                            "year": _number(row.get("year")),
                            "month": _number(row.get("month")),
                            "source_file": KEY_FILE,
                            "source_line": line,
                            "raw_label": raw_label,
                        },
                        image_note=note,
                    )
                )
    return posts, skipped, set(seen) - {""}


def import_micd(
    src: Path,
    out: Path,
    on_missing="fail",
    link="copy",
    seed=0,
    images: Path | None = None,
    text_file: Path | None = None,
) -> ImportReport:
    """Import MICD's image-text posts with their official split; text from ``text_file``."""
    src = Path(src)
    if not (src / KEY_FILE).is_file():
        raise ImportFailed(f"{src / KEY_FILE}: missing (MICD's data key, id,...,label,split)")
    if text_file is None:
        raise ImportFailed(f"{src / KEY_FILE}: no post text. {NO_TEXT_MESSAGE}")
    texts, skipped_text = read_text_file(Path(text_file))
    posts, skipped, key_ids = read(src, texts, images)
    notes = [f"post text from {text_file}"]
    notes += skip_notes(skipped, SKIP_NOTES)
    notes += text_file_notes(skipped_text)
    text_only: list[str] = []
    if (src / TEXT_ONLY_FILE).is_file():
        text_only = read_ids(src / TEXT_ONLY_FILE)
        notes.append(
            f"left out {len(text_only)} text-only post(s) of {TEXT_ONLY_FILE}: they have "
            "no image, and an mmaux data set pairs text with an image"
        )
    extra = set(texts) - key_ids
    if extra:
        of_text_only = len(extra & set(text_only))
        notes.append(
            f"text_file holds {len(extra)} id(s) not in {KEY_FILE}, not used"
            + (f" ({of_text_only} of them text-only posts)" if of_text_only else "")
        )
    if not posts:
        raise ImportFailed(f"{src / KEY_FILE}: no usable rows")
    return write_dataset(
        posts,
        out,
        dataset="micd",
        source=src,
        labels=LABELS,
        label_map=LABEL_MAP,
        split_rule=f"official (split column of {KEY_FILE})",
        on_missing=on_missing,
        link=link,
        seed=seed,
        skipped_rows=skipped_text + skipped,
        notes=notes,
    )
