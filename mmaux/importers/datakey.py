"""The authors' normalised "data key" CSV: ``tweet_id,text,label,split`` plus an image folder.

Images are looked up by id (``{id}.jpg``, ``.jpeg``, ``.png``, ``.webp``, ``.gif``, or
``T{id}.jpg`` as TIR names them). ``split`` is ``train``/``val``/``test`` (``dev`` and
``valid`` are accepted as ``val``); an empty split gets the seeded stratified split.
"""

from __future__ import annotations

import csv
from pathlib import Path

from mmaux.importers.base import ImportFailed, ImportReport, RawPost, write_dataset
from mmaux.importers.rawio import open_csv

SPLIT_NAMES = {
    "train": "train",
    "val": "val",
    "valid": "val",
    "dev": "val",
    "test": "test",
    "": None,
}
EXTENSIONS = (".jpg", ".jpeg", ".png", ".webp", ".gif")


def find_image(folder: Path, post_id: str) -> Path | None:
    for stem in (post_id, f"T{post_id}"):
        for ext in EXTENSIONS:
            path = folder / f"{stem}{ext}"
            if path.is_file():
                return path
    return None


def read(csv_path: Path, images: Path) -> tuple[list[RawPost], list[dict], list[str]]:
    posts, skipped = [], []
    with open_csv(csv_path, encoding="utf-8") as fh:
        reader = csv.DictReader(fh)
        need = {"tweet_id", "text", "label", "split"}
        if not need <= set(reader.fieldnames or []):
            raise ImportFailed(
                f"{csv_path}: expected columns {sorted(need)}, found {reader.fieldnames}"
            )
        for row in reader:
            line = reader.line_num
            if None in row:
                skipped.append({"line": line, "problem": "more fields than the header"})
                continue
            post_id = (row["tweet_id"] or "").strip()
            split_raw = (row["split"] or "").strip().lower()
            if not post_id:
                skipped.append({"line": line, "problem": "empty tweet_id"})
            elif not (row["text"] or "").strip():
                skipped.append({"line": line, "problem": f"empty text (id={post_id})"})
            elif not (row["label"] or "").strip():
                skipped.append({"line": line, "problem": f"empty label (id={post_id})"})
            elif split_raw not in SPLIT_NAMES:
                skipped.append({"line": line, "problem": f"unknown split {split_raw!r}"})
            else:
                image = find_image(Path(images), post_id)
                posts.append(
                    RawPost(
                        id=post_id,
                        text=row["text"].strip(),
                        image=image,
                        label=row["label"].strip(),
                        split=SPLIT_NAMES[split_raw],
                        meta={"source_line": line},
                        image_note=None if image else f"no image for id {post_id} in {images}",
                    )
                )
    labels = sorted({p.label for p in posts})
    return posts, skipped, labels


def import_datakey(
    src: Path, out: Path, on_missing="fail", link="copy", seed=0, images: Path | None = None
) -> ImportReport:
    """``src`` is the CSV file; ``images`` defaults to ``images/`` beside it."""
    src = Path(src)
    if not src.is_file():
        raise ImportFailed(f"{src}: data key CSV not found")
    images = Path(images) if images else src.parent / "images"
    posts, skipped, labels = read(src, images)
    if not posts:
        raise ImportFailed(f"{src}: no usable rows")
    rule = "from the CSV's split column" + (
        "; seeded stratified 80/10/10 where empty" if any(p.split is None for p in posts) else ""
    )
    return write_dataset(
        posts,
        out,
        dataset=f"datakey:{src.stem}",
        source=src,
        labels=labels,
        label_map={lab: lab for lab in labels},
        split_rule=rule,
        on_missing=on_missing,
        link=link,
        seed=seed,
        skipped_rows=skipped,
    )
