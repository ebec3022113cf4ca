"""Importers from public raw formats into the canonical manifest (see :mod:`.base`)."""

from mmaux.importers.base import (
    ImportFailed,
    ImportReport,
    RawPost,
    stratified_split,
    write_dataset,
)
from mmaux.importers.datakey import import_datakey
from mmaux.importers.multioff import import_multioff

IMPORTERS = {"multioff": import_multioff, "datakey": import_datakey}

__all__ = [
    "IMPORTERS",
    "ImportFailed",
    "ImportReport",
    "RawPost",
    "stratified_split",
    "write_dataset",
]
