"""Atomic file writes with temporary names unique to the writing process.

Every writer in mmaux goes through these helpers, so two processes (two tuners on one study,
two runs sharing a cache) never write the same temporary file, and a reader never sees a
half-written one: the content goes to ``.NAME.<pid>.<random>.tmp`` beside the target and is
renamed over it (``os.replace`` is atomic on POSIX within one file system).
"""

from __future__ import annotations

import os
import shutil
import uuid
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path


def unique_tmp(path: Path) -> Path:
    """A temporary sibling of ``path`` that no other process or call will choose."""
    path = Path(path)
    return path.with_name(f".{path.name}.{os.getpid()}.{uuid.uuid4().hex[:12]}.tmp")


@contextmanager
def atomic_target(path: Path) -> Iterator[Path]:
    """Yield a unique temporary path; on success it replaces ``path``, on error it is removed.

    Works for files and for directories (a directory target is swapped in whole: the old
    one is renamed aside, the new one renamed in, the old one deleted)."""
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = unique_tmp(path)
    try:
        yield tmp
        if tmp.is_dir():
            old = unique_tmp(path) if path.exists() else None
            if old is not None:
                path.rename(old)
            tmp.rename(path)
            if old is not None:
                shutil.rmtree(old, ignore_errors=True)
        else:
            os.replace(tmp, path)
    finally:
        if tmp.is_dir():
            shutil.rmtree(tmp, ignore_errors=True)
        elif tmp.exists():
            tmp.unlink()


def atomic_write_text(path: Path, text: str, encoding: str = "utf-8") -> Path:
    """Write ``text`` to ``path`` atomically."""
    with atomic_target(path) as tmp:
        tmp.write_text(text, encoding=encoding)
    return Path(path)
