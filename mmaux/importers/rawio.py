"""Reading the raw files of public data sets the same way in every importer.

Raw releases are uneven: byte-order marks, CRLF line ends, stray bytes that are not UTF-8,
headers with padding or odd case. The helpers here decode leniently (undecodable bytes
become U+FFFD instead of stopping the import) and leave line numbering to the caller's
reader, so skipped rows can name the file's own line numbers.
"""

from __future__ import annotations

import csv
from pathlib import Path
from typing import TextIO

from mmaux.importers.base import ImportFailed

# A byte-order mark, where present, is dropped instead of becoming part of the first field.
RAW_ENCODING = "utf-8-sig"


def open_csv(path: Path, encoding: str = RAW_ENCODING) -> TextIO:
    """``path`` opened for the :mod:`csv` module: undecodable bytes replaced, newlines left
    to the CSV reader (quoted fields may span lines)."""
    return Path(path).open(encoding=encoding, errors="replace", newline="")


def dict_reader(fh: TextIO, *, lower: bool = False) -> tuple[csv.DictReader, list[str]]:
    """A :class:`csv.DictReader` on ``fh`` whose field names are stripped (and lowercased
    with ``lower``), and the header as found, for error messages."""
    reader = csv.DictReader(fh)
    found = reader.fieldnames or []
    reader.fieldnames = [name.strip().lower() if lower else name.strip() for name in found]
    return reader, list(found)


def read_lines(path: Path) -> list[str]:
    """The lines of a text file split on ``\\n`` only, so a line's index + 1 is its number in
    the file (a CR of a CRLF line end stays on the line: callers strip)."""
    return Path(path).read_bytes().decode(RAW_ENCODING, errors="replace").split("\n")


def clean_text(text: str | None) -> str:
    """Stripped text with Windows line ends inside it made ``\\n``."""
    return (text or "").replace("\r\n", "\n").strip()


def read_text_file(path: Path) -> tuple[dict[str, str], list[dict]]:
    """Texts by id from an ``id,text`` CSV (rehydrated post text), and its rows not used.

    A repeated id keeps its first text; a repeat with a different text is reported.
    """
    path = Path(path)
    if not path.is_file():
        raise ImportFailed(f"{path}: text file not found")
    texts: dict[str, str] = {}
    first: dict[str, int] = {}
    skipped: list[dict] = []
    with open_csv(path) as fh:
        reader, found = dict_reader(fh, lower=True)
        if not {"id", "text"} <= set(reader.fieldnames or []):
            raise ImportFailed(f"{path}: expected an id,text header, found {found}")
        start = reader.line_num + 1
        for row in reader:
            line, start = start, reader.line_num + 1
            post_id = (row["id"] or "").strip()
            text = clean_text(row["text"])
            if not post_id:
                skipped.append(
                    {"file": str(path), "line": line, "problem": "empty id", "kind": "text_file"}
                )
            elif post_id in texts:
                if text != texts[post_id]:
                    skipped.append(
                        {
                            "file": str(path),
                            "line": line,
                            "id": post_id,
                            "problem": f"id {post_id} repeated with a different text "
                            f"(first on line {first[post_id]}, which is used)",
                            "kind": "text_file",
                        }
                    )
            else:
                texts[post_id] = text
                first[post_id] = line
    return texts, skipped


def text_file_notes(skipped: list[dict]) -> list[str]:
    """A note counting the rows of the text file that were not used, if there are any."""
    return [f"{len(skipped)} row(s) of text_file not used (see skipped rows)"] if skipped else []
