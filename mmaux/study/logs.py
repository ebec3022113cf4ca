"""Every log line of a study says which cell it belongs to."""

from __future__ import annotations

import contextlib
import contextvars
import logging
from collections.abc import Iterator

_CELL: contextvars.ContextVar[str | None] = contextvars.ContextVar("mmaux_cell", default=None)
_installed: list[bool] = []


def _install() -> None:
    """Wrap the log-record factory once: records created inside :func:`cell_logging`
    carry ``record.cell`` and start with ``[cell] ``, whichever logger and handler (the
    library's, Prefect's, MLflow's) they go through."""
    if _installed:
        return
    base = logging.getLogRecordFactory()

    def factory(*args, **kwargs) -> logging.LogRecord:
        record = base(*args, **kwargs)
        cell = _CELL.get()
        record.cell = cell or ""
        if cell and isinstance(record.msg, str) and not record.msg.startswith(f"[{cell}]"):
            record.msg = f"[{cell}] {record.msg}"
        return record

    logging.setLogRecordFactory(factory)
    _installed.append(True)


@contextlib.contextmanager
def cell_logging(label: str) -> Iterator[None]:
    """Within the block, every log record (of this thread or task) names ``label``."""
    _install()
    token = _CELL.set(label)
    try:
        yield
    finally:
        _CELL.reset(token)
