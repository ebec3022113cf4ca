"""Importers from public raw formats into the canonical manifest (see :mod:`.base`).

Every importer is ``import_NAME(src, out, *, on_missing, link, seed, images, **options)``
and returns an :class:`ImportReport`; :func:`get_importer` loads one by data set name.
"""

from __future__ import annotations

import importlib
from collections.abc import Callable

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


__all__ = [
    "IMPORTERS",
    "ImportFailed",
    "ImportReport",
    "RawPost",
    "get_importer",
    "import_datakey",
    "import_multioff",
    "stratified_split",
    "write_dataset",
]
