"""MultiOFF (Suryawanshi et al. 2020): offensive vs non-offensive election memes.

Raw: ``{Training,Validation,Testing}_meme_dataset.csv`` with ``image_name,sentence,label``
(labels ``offensive`` and ``Non-offensiv``, sic) and the images in ``images/``. The
official train/val/test split is kept. One validation image is missing from the public
copy: it is reported, and dropped or fatal as the user chooses.
"""

from __future__ import annotations

import csv
from pathlib import Path

from mmaux.importers.base import ImportFailed, ImportReport, RawPost, source_image, write_dataset
from mmaux.importers.rawio import open_csv

LABELS = ["non-offensive", "offensive"]
LABEL_MAP = {
    "Non-offensiv": "non-offensive",
    "Non-offensive": "non-offensive",
    "offensive": "offensive",
}
FILES = {
    "train": "Training_meme_dataset.csv",
    "val": "Validation_meme_dataset.csv",
    "test": "Testing_meme_dataset.csv",
}


def read(src: Path, images: Path | None = None) -> tuple[list[RawPost], list[dict]]:
    """Posts of the three official CSVs and the raw rows that could not be used."""
    images = Path(images) if images else Path(src) / "images"
    posts, skipped = [], []
    for split, name in FILES.items():
        path = Path(src) / name
        if not path.is_file():
            raise ImportFailed(f"{path}: missing (MultiOFF needs {', '.join(FILES.values())})")
        with open_csv(path, encoding="utf-8") as fh:
            reader = csv.DictReader(fh)
            need = {"image_name", "sentence", "label"}
            if not need <= set(reader.fieldnames or []):
                raise ImportFailed(
                    f"{path}: expected columns {sorted(need)}, found {reader.fieldnames}"
                )
            for row in reader:
                line = reader.line_num
                raw_label = (row["label"] or "").strip()
                if raw_label not in LABEL_MAP:
                    skipped.append(
                        {"file": str(path), "line": line, "problem": f"unknown label {raw_label!r}"}
                    )
                    continue
                if not (row["sentence"] or "").strip():
                    skipped.append({"file": str(path), "line": line, "problem": "empty text"})
                    continue
                name_ = (row["image_name"] or "").strip()
                image, note = source_image(images, name_) if name_ else (None, "no image named")
                posts.append(
                    RawPost(
                        id=Path(name_).stem or f"{split}-{line}",
                        text=row["sentence"].strip(),
                        image=image,
                        label=LABEL_MAP[raw_label],
                        split=split,
                        meta={"source_file": name, "source_line": line, "raw_label": raw_label},
                        image_note=note,
                    )
                )
    return posts, skipped


def import_multioff(
    src: Path, out: Path, on_missing="fail", link="copy", seed=0, images: Path | None = None
) -> ImportReport:
    posts, skipped = read(src, images)
    return write_dataset(
        posts,
        out,
        dataset="multioff",
        source=Path(src),
        labels=LABELS,
        label_map=LABEL_MAP,
        split_rule="official (Training/Validation/Testing CSVs)",
        on_missing=on_missing,
        link=link,
        seed=seed,
        skipped_rows=skipped,
    )
