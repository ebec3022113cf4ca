"""Real MLflow for tests: migrated SQLite stores and an `mlflow server` on loopback that a
test can kill (SIGKILL, like a crashed host) and start again on the same port and store."""

from __future__ import annotations

import os
import shutil
import signal
import socket
import subprocess
import sys
import time
import urllib.request
from pathlib import Path

MLFLOW = Path(sys.executable).with_name("mlflow")


def migrated_db(path: Path) -> Path:
    """An empty, migrated MLflow SQLite database at ``path`` (migrating takes seconds)."""
    import mlflow

    mlflow.MlflowClient(tracking_uri=f"sqlite:///{path}").search_experiments()
    return path


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


class MlflowServer:
    """``mlflow server`` on 127.0.0.1 over a SQLite store, in its own process group."""

    def __init__(self, db: Path, artifacts: Path, port: int | None = None):
        self.db, self.artifacts = Path(db), Path(artifacts)
        self.port = port or free_port()
        self.uri = f"http://127.0.0.1:{self.port}"
        self.proc: subprocess.Popen | None = None
        self.log = self.db.with_suffix(".server.log")

    def start(self, timeout: float = 60.0) -> MlflowServer:
        env = {**os.environ, "MLFLOW_DISABLE_TELEMETRY": "true"}
        cmd = [str(MLFLOW), "server", "--host", "127.0.0.1", "--port", str(self.port)]
        cmd += ["--backend-store-uri", f"sqlite:///{self.db}", "--workers", "1"]
        cmd += ["--artifacts-destination", str(self.artifacts)]
        with self.log.open("a") as out:
            self.proc = subprocess.Popen(
                cmd, stdout=out, stderr=subprocess.STDOUT, env=env, start_new_session=True
            )
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            if self.proc.poll() is not None:
                raise RuntimeError(f"mlflow server exited:\n{self.log.read_text()[-3000:]}")
            try:
                with urllib.request.urlopen(f"{self.uri}/health", timeout=1) as r:
                    if r.status == 200:
                        return self
            except OSError:
                time.sleep(0.1)
        self.kill()
        raise RuntimeError(f"mlflow server not up after {timeout} s:\n{self.log.read_text()}")

    def kill(self) -> None:
        """SIGKILL the server's process group (the CLI and its uvicorn worker)."""
        if self.proc is None:
            return
        try:
            os.killpg(self.proc.pid, signal.SIGKILL)
        except ProcessLookupError:
            pass
        self.proc.wait(timeout=30)
        self.proc = None


def copy_db(template: Path, dest: Path) -> Path:
    shutil.copy(template, dest)
    return dest
