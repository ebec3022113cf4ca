"""Setup shared by the importer tests: raw fixtures copied into ``tmp_path``, tiny images,
hashes of a source tree, and the JSON files and skipped rows an import reports."""

from __future__ import annotations

import hashlib
import json
import shutil
from collections.abc import Iterable
from pathlib import Path
from typing import Any

from PIL import Image

from mmaux.importers import ImportReport

FIXTURES = Path(__file__).resolve().parent / "fixtures" / "raw"
SHARED = Path(__file__).resolve().parents[2] / "shared"
RAW_SAMPLES = SHARED / "reference" / "raw-samples"  # real rows of each data set, if present
NOT_AN_IMAGE = b"not an image"

RGB = tuple[int, int, int]


def make_image(path: Path, colour: RGB = (200, 30, 30)) -> Path:
    """A 12x10 RGB image at ``path`` (its folder is created)."""
    path.parent.mkdir(parents=True, exist_ok=True)
    Image.new("RGB", (12, 10), colour).save(path)
    return path


def make_images(
    folder: Path,
    ids: Iterable[str],
    name: str = "{}.jpg",
    *,
    missing: Iterable[str] = (),
    corrupt: Iterable[str] = (),
) -> None:
    """An image ``folder/name.format(id)`` per id, each its own colour, except the
    ``missing`` ids (no file) and the ``corrupt`` ones (bytes that are no image)."""
    missing, corrupt = set(missing), set(corrupt)
    folder.mkdir(parents=True, exist_ok=True)
    for i, post_id in enumerate(ids):
        path = folder / name.format(post_id)
        if post_id in corrupt:
            path.write_bytes(NOT_AN_IMAGE)
        elif post_id not in missing:
            make_image(path, ((7 * i) % 256, 80, 120))


def copy_fixture(name: str, tmp_path: Path) -> Path:
    """A copy of ``tests/fixtures/raw/{name}`` as ``tmp_path/{last part of name}``."""
    dest = tmp_path / Path(name).name
    shutil.copytree(FIXTURES / name, dest)
    return dest


def tree_hash(root: Path) -> dict[str, str]:
    """SHA-256 of every file under ``root`` by relative path (to show sources untouched)."""
    return {
        str(p.relative_to(root)): hashlib.sha256(p.read_bytes()).hexdigest()
        for p in sorted(root.rglob("*"))
        if p.is_file()
    }


def read_dataset_info(out: Path) -> dict[str, Any]:
    """The ``dataset.json`` an import wrote to ``out``."""
    return json.loads((out / "dataset.json").read_text())


def read_import_report(out: Path) -> dict[str, Any]:
    """The ``import_report.json`` an import wrote to ``out``."""
    return json.loads((out / "import_report.json").read_text())


def problems_by_line(report: ImportReport) -> dict[str, str]:
    """Skipped rows' problems keyed ``"file name:line"``."""
    return {f"{Path(r['file']).name}:{r['line']}": r["problem"] for r in report.skipped_rows}


def problems_by_id(report: ImportReport) -> dict[str, str]:
    """Skipped rows' problems keyed by post id (``"line N"`` for a row without one)."""
    return {r.get("id", f"line {r['line']}"): r["problem"] for r in report.skipped_rows}
