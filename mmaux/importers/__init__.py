"""Importers from public raw formats into the canonical manifest (see :mod:`.base`).

Every importer is ``import_NAME(src, out, *, on_missing, link, seed, images, **options)``
and returns an :class:`ImportReport`; :func:`get_importer` loads one by data set name.
"""

from __future__ import annotations

import importlib
import inspect
from collections.abc import Callable
from pathlib import Path
from typing import Any

from mmaux.importers.base import (
    ImportFailed,
    ImportReport,
    RawPost,
    stratified_split,
    write_dataset,
)
from mmaux.importers.datakey import import_datakey
from mmaux.importers.multioff import import_multioff

# data set name -> "module:function"; modules load on first use.
IMPORTERS: dict[str, str] = {
    "datakey": "mmaux.importers.datakey:import_datakey",
    "mhp": "mmaux.importers.mhp:import_mhp",
    "micd": "mmaux.importers.micd:import_micd",
    "msd": "mmaux.importers.msd:import_msd",
    "multioff": "mmaux.importers.multioff:import_multioff",
    "mvsa": "mmaux.importers.mvsa:import_mvsa",
    "tir": "mmaux.importers.tir:import_tir",
}


def get_importer(name: str) -> Callable[..., ImportReport]:
    """The import function for data set ``name`` (one of :data:`IMPORTERS`)."""
    try:
        module, func = IMPORTERS[name].split(":")
    except KeyError:
        raise ImportFailed(
            f"unknown data set {name!r}; expected one of {', '.join(sorted(IMPORTERS))}"
        ) from None
    return getattr(importlib.import_module(module), func)


# Data-set specific options: keyword -> type (what a CLI flag or flow parameter becomes).
OPTIONS: dict[str, Callable[[Any], Any]] = {"text_file": Path, "task": str, "fold": int}


def run_import(
    name: str,
    src: str | Path,
    out: str | Path,
    *,
    on_missing: str = "fail",
    link: str = "copy",
    seed: int = 0,
    images: str | Path | None = None,
    **options: Any,
) -> ImportReport:
    """Import data set ``name``; ``options`` that are None are left out, and one the
    importer does not take is refused (named as its ``--flag``)."""
    importer = get_importer(name)
    accepted = inspect.signature(importer).parameters
    given = {k: OPTIONS[k](v) for k, v in options.items() if v is not None}
    for key in given:
        if key not in accepted:
            flag = "--" + key.replace("_", "-")
            raise ImportFailed(f"{flag} is not an option of the {name} importer")
    return importer(
        Path(src),
        Path(out),
        on_missing=on_missing,
        link=link,
        seed=seed,
        images=Path(images) if images else None,
        **given,
    )


__all__ = [
    "OPTIONS",
    "IMPORTERS",
    "ImportFailed",
    "ImportReport",
    "RawPost",
    "get_importer",
    "import_datakey",
    "import_multioff",
    "run_import",
    "stratified_split",
    "write_dataset",
]
