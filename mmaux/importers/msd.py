"""MSD, multimodal sarcasm detection on Twitter (Cai et al. 2019).

Raw: ``text/train.txt``, ``text/valid2.txt``, ``text/test2.txt`` (or the three directly in
``src``), one Python literal list per line (CRLF line ends in the public copy): train
``['id', 'text', label]``, val/test ``['id', 'text', hashtag_label, label]``. The texts use
both quote styles and escaped quotes (``'didn \\'t'``), so each line is parsed with
:func:`ast.literal_eval`, never ``eval``. The label is the LAST element: 0 not sarcastic,
1 sarcastic. A line that does not parse, is not a list of the right length, or has a label
outside {0, 1} is a skipped row naming the file, line and problem. Images: ``{id}.jpg`` in
``images/`` (``dataset_image/`` as in the original release; ``images`` overrides).

Keyword filter (the authors' preprocessing, on every split): a post is dropped when, for
any of sarcasm, sarcastic, irony, ironic, joke, jokes, humor, humour, exgag, reposting and
``<url>``, the keyword is a SUBSTRING of the lowercased text (as in the original code, so
``#jokesonyou`` and ``<url>`` anywhere count). Dropped posts are skipped rows with the id and
the matched keywords, counted per split in a note. ``keyword_filter=False`` keeps them.
Splits: the official ones (train.txt -> train, valid2.txt -> val, test2.txt -> test).
"""

from __future__ import annotations

import ast
from pathlib import Path
from typing import Any

from mmaux.importers.base import (
    SAFE_ID,
    ImportFailed,
    ImportReport,
    RawPost,
    require_posts,
    source_image,
    write_dataset,
)
from mmaux.importers.rawio import read_lines

LABELS = ["not_sarcastic", "sarcastic"]
LABEL_MAP = {"0": "not_sarcastic", "1": "sarcastic"}
# split -> (file name, elements per record)
FILES = {"train": ("train.txt", 3), "val": ("valid2.txt", 4), "test": ("test2.txt", 4)}
KEYWORDS = (
    "sarcasm",
    "sarcastic",
    "irony",
    "ironic",
    "joke",
    "jokes",
    "humor",
    "humour",
    "exgag",
    "reposting",
    "<url>",
)


def parse_line(line: str, n_elements: int) -> tuple[dict[str, Any] | None, str | None]:
    """``({"id", "text", "label", "hashtag_label"?}, None)`` for a good line, else
    ``(None, problem)``."""
    try:
        value = ast.literal_eval(line.strip())
    except (ValueError, SyntaxError, TypeError, MemoryError, RecursionError) as err:
        return None, f"not a Python literal ({type(err).__name__})"
    if not isinstance(value, list | tuple):
        return None, f"a {type(value).__name__}, not a list"
    if len(value) != n_elements:
        return None, f"expected {n_elements} elements, found {len(value)}"
    post_id, text, label = value[0], value[1], value[-1]
    if isinstance(post_id, int) and not isinstance(post_id, bool):
        post_id = str(post_id)
    if not isinstance(post_id, str) or not SAFE_ID.fullmatch(post_id.strip()):
        return None, f"bad id {post_id!r}"
    if not isinstance(text, str):
        return None, f"text is a {type(text).__name__}, not a string"
    if type(label) is not int or label not in (0, 1):  # not True, 1.0 or '1'
        return None, f"label {label!r} not in {{0, 1}}"
    record: dict[str, Any] = {"id": post_id.strip(), "text": text, "label": label}
    if n_elements == 4:
        record["hashtag_label"] = value[2]
    return record, None


def matched_keywords(text: str) -> list[str]:
    """The filter keywords that occur as substrings of the lowercased text."""
    low = text.lower()
    return [k for k in KEYWORDS if k in low]


def text_folder(src: Path) -> Path:
    """``src/text`` or ``src``, whichever holds the three files."""
    for folder in (src / "text", src):
        if (folder / FILES["train"][0]).is_file():
            missing = [name for name, _ in FILES.values() if not (folder / name).is_file()]
            if missing:
                raise ImportFailed(f"{folder}: missing {', '.join(missing)}")
            return folder
    names = ", ".join(name for name, _ in FILES.values())
    raise ImportFailed(f"{src}: no text/train.txt or train.txt (MSD needs {names})")


def read(
    src: Path, images: Path | None = None, keyword_filter: bool = True
) -> tuple[list[RawPost], list[dict[str, Any]], list[str]]:
    """Posts of the three official files, the skipped rows and the notes."""
    src = Path(src)
    folder = text_folder(src)
    if images is None:
        images = next(
            (d for d in (src / "images", src / "dataset_image") if d.is_dir()), src / "images"
        )
    posts: list[RawPost] = []
    skipped: list[dict[str, Any]] = []
    filtered: dict[str, int] = {}
    first: dict[str, str] = {}
    for split, (name, n_elements) in FILES.items():
        path = folder / name
        filtered[split] = 0
        for no, raw in enumerate(read_lines(path), start=1):
            if not raw.strip():
                continue
            record, problem = parse_line(raw, n_elements)
            where: dict[str, Any] = {"file": str(path), "line": no}
            if record is None:
                skipped.append({**where, "problem": problem})
                continue
            post_id = record["id"]
            if post_id in first:
                skipped.append(
                    {**where, "id": post_id, "problem": f"duplicate id (first at {first[post_id]})"}
                )
                continue
            first[post_id] = f"{name}:{no}"
            found = matched_keywords(record["text"]) if keyword_filter else []
            if found:
                filtered[split] += 1
                problem = "keyword filter: text contains " + ", ".join(map(repr, found))
                skipped.append({**where, "id": post_id, "problem": problem, "keywords": found})
                continue
            text = record["text"].strip()
            if not text:
                skipped.append({**where, "id": post_id, "problem": "empty text"})
                continue
            image, note = source_image(Path(images), f"{post_id}.jpg")
            meta = {"source_file": name, "source_line": no, "raw_label": record["label"]}
            if "hashtag_label" in record:
                meta["hashtag_label"] = record["hashtag_label"]
            label = LABEL_MAP[str(record["label"])]
            posts.append(RawPost(post_id, text, image, label, split, meta, note))
    if keyword_filter:
        per_split = ", ".join(f"{s} {n}" for s, n in filtered.items())
        notes = [
            f"keyword filter (the authors' preprocessing: substring of the lowercased text, "
            f"any of {', '.join(KEYWORDS)}) dropped {sum(filtered.values())} post(s): {per_split}"
        ]
    else:
        notes = ["keyword filter off: posts mentioning the filter keywords are kept"]
    return posts, skipped, notes


def import_msd(
    src: Path,
    out: Path,
    on_missing="fail",
    link="copy",
    seed=0,
    images: Path | None = None,
    keyword_filter: bool = True,
) -> ImportReport:
    """Import MSD from ``src`` (see the module docstring)."""
    posts, skipped, notes = read(src, images, keyword_filter)
    require_posts(posts, skipped, src)
    return write_dataset(
        posts,
        out,
        dataset="msd",
        source=Path(src),
        labels=LABELS,
        label_map=LABEL_MAP,
        split_rule="official (text/train.txt, valid2.txt, test2.txt)",
        on_missing=on_missing,
        link=link,
        seed=seed,
        skipped_rows=skipped,
        notes=notes,
    )
