"""Which process owns a piece of shared state (an Optuna trial, an MLflow run), and whether
that process is still alive: host, pid and the process's start time, so a reused pid is not
mistaken for the original owner."""

from __future__ import annotations

import os
import socket
from pathlib import Path
from typing import Any


def process_start(pid: int) -> str | None:
    """The start time of a process (Linux /proc, clock ticks since boot), or None."""
    try:
        stat = Path(f"/proc/{pid}/stat").read_text()
    except OSError:
        return None
    return stat.rsplit(")", 1)[1].split()[19]


def current_owner() -> dict[str, Any]:
    """This process as an owner record: ``{"host", "pid", "start"}``."""
    pid = os.getpid()
    return {"host": socket.gethostname(), "pid": pid, "start": process_start(pid)}


def owner_alive(owner: Any) -> bool:
    """Whether the process an owner record names may still be running.

    Unknown owners are dead; owners on another host are assumed alive (cannot be checked)."""
    if not isinstance(owner, dict) or "pid" not in owner:
        return False
    if owner.get("host") != socket.gethostname():
        return True
    pid = int(owner["pid"])
    if owner.get("start") is not None and Path("/proc/self/stat").exists():
        return process_start(pid) == str(owner["start"])  # a reused pid has another start
    if os.name != "posix":
        return True
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:
        return True
    return True
