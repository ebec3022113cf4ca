"""Killing the tune stage mid-search loses no finished trial; re-running resumes the study."""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import time

import pytest

from tests.pipeline_fixtures import REPO, tiny_params


def _finished(history_path) -> list[dict]:
    if not history_path.is_file():
        return []
    try:
        rows = json.loads(history_path.read_text())
    except json.JSONDecodeError:  # caught mid-write
        return []
    return [r for r in rows if r["state"] in ("COMPLETE", "PRUNED")]


def test_killed_tune_stage_resumes_the_same_study(tmp_path, synth_root, tiny_text_model):
    params = tiny_params(
        tmp_path,
        synth_root,
        tiny_text_model,
        tune={"n_trials": 3, "epochs": 2, "pruner": "none"},
        tracking={"enabled": False},
    )
    env = {
        **os.environ,
        "PREFECT_HOME": str(tmp_path / "prefect-home"),
        "PREFECT_SERVER_EPHEMERAL_STARTUP_TIMEOUT_SECONDS": "180",
    }
    cmd = [sys.executable, "-m", "flows.tune", "--params", str(params)]
    repo = str(tmp_path)
    env["PYTHONPATH"] = os.pathsep.join([str(REPO), env.get("PYTHONPATH", "")])
    history = tmp_path / "tuning" / "history.json"
    proc = subprocess.Popen(
        cmd,
        cwd=repo,
        env=env,
        stdout=subprocess.DEVNULL,
        stderr=subprocess.DEVNULL,
        start_new_session=True,
    )
    deadline = time.monotonic() + 400
    try:
        while not _finished(history):
            assert proc.poll() is None, "tune exited before finishing a trial"
            assert time.monotonic() < deadline, "no trial finished in time"
            time.sleep(0.5)
    finally:
        os.killpg(proc.pid, signal.SIGKILL)  # a hard kill, mid-search
        proc.wait(timeout=60)
    first = _finished(history)
    assert 1 <= len(first) < 3
    done = subprocess.run(cmd, cwd=repo, env=env, capture_output=True, text=True, timeout=600)
    assert done.returncode == 0, done.stderr[-3000:]
    after = json.loads(history.read_text())
    finished = [r for r in after if r["state"] in ("COMPLETE", "PRUNED")]
    assert len(finished) == 3
    # The trials finished before the kill are still there, unchanged: nothing was redone.
    for row in first:
        again = next(r for r in after if r["number"] == row["number"])
        assert again["state"] == row["state"] and again["value"] == pytest.approx(row["value"])
    best = json.loads((tmp_path / "tuning" / "best_params.json").read_text())
    assert best["value"] == pytest.approx(
        max(r["value"] for r in finished if r["value"] is not None)
    )
