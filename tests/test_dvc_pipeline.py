"""`dvc repro`, `dvc status`, `dvc exp run` and `dvc exp show` on a tiny config, for real."""

from __future__ import annotations

import json
import os
import shutil
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest
import yaml

from tests.pipeline_fixtures import REPO, tiny_params

DVC = Path(sys.executable).with_name("dvc")
pytestmark = pytest.mark.skipif(not DVC.exists(), reason="dvc not installed")


def _run(args, cwd, env, timeout=900) -> str:
    proc = subprocess.run(args, cwd=cwd, env=env, capture_output=True, text=True, timeout=timeout)
    assert proc.returncode == 0, f"{args}\n{proc.stdout[-3000:]}\n{proc.stderr[-3000:]}"
    return proc.stdout + proc.stderr


def _json(args, cwd, env):
    proc = subprocess.run(args, cwd=cwd, env=env, capture_output=True, text=True, timeout=300)
    assert proc.returncode == 0, proc.stderr[-3000:]
    return json.loads(proc.stdout)


@pytest.fixture(scope="module")
def repo(tmp_path_factory, tiny_text_model):
    from mmaux.config import SynthConfig
    from mmaux.data.synth import generate

    work = tmp_path_factory.mktemp("dvc-repo")
    for name in ("flows", "dvc.yaml", ".dvcignore", "studies"):
        src = REPO / name
        if src.is_dir():
            shutil.copytree(src, work / name, ignore=shutil.ignore_patterns("__pycache__"))
        elif src.exists():
            shutil.copy(src, work / name)
    # The stage deps name library files; the installed package is what runs.
    shutil.copytree(REPO / "mmaux", work / "mmaux", ignore=shutil.ignore_patterns("__pycache__"))
    generate(work / "data/raw", SynthConfig(seed=5, n_train=64, n_val=32, n_test=32, image_size=64))
    tiny_params(
        work,
        Path("data/raw"),
        tiny_text_model,
        tracking={
            "tracking_uri": f"sqlite:///{work / 'mlflow.db'}",
            "artifact_location": str(work / "mlartifacts"),
        },
    )
    env = {
        **os.environ,
        "PREFECT_HOME": str(work / ".prefect-home"),
        "PREFECT_SERVER_EPHEMERAL_STARTUP_TIMEOUT_SECONDS": "180",
        "PYTHONPATH": str(work),
        "HF_HUB_OFFLINE": "1",
        "GX_ANALYTICS_ENABLED": "false",
    }
    env["PATH"] = f"{DVC.parent}{os.pathsep}{env.get('PATH', '')}"
    git = ["git", "-c", "user.name=t", "-c", "user.email=t@t"]
    _run(["git", "init", "-q"], work, env)
    (work / ".gitignore").write_text(
        "/mmaux/\n/.prefect-home/\nmlflow.db\n/mlartifacts/\n"
        "/reports/\n/plots/\n/tuning/\n/metrics.json\n/results/\n"
    )
    _run([str(DVC), "init", "-q"], work, env)
    _run([str(DVC), "config", "core.analytics", "false"], work, env)
    _run([str(DVC), "add", "-q", "data/raw"], work, env)
    _run([*git, "add", "-A"], work, env)
    _run([*git, "commit", "-qm", "init"], work, env)
    return work, env, git


def test_repro_runs_every_stage_then_nothing(repo):
    work, env, git = repo
    out = _run([str(DVC), "repro"], work, env)
    for stage in ("validate", "preprocess", "tune", "train", "evaluate"):
        assert f"Running stage '{stage}'" in out, out[-2000:]
    metrics = json.loads((work / "metrics.json").read_text())
    assert 0 <= metrics["test"]["macro_f1"] <= 1
    lock = yaml.safe_load((work / "dvc.lock").read_text())
    assert set(lock["stages"]) == {"validate", "preprocess", "tune", "train", "evaluate"}
    again = _run([str(DVC), "repro"], work, env)
    assert "Running stage" not in again
    _run([*git, "add", "-A"], work, env)
    _run([*git, "commit", "-qm", "pipeline"], work, env)


def _edit_params(work: Path, **sections: dict) -> None:
    params = yaml.safe_load((work / "params.yaml").read_text())
    for section, values in sections.items():
        params[section].update(values)
    (work / "params.yaml").write_text(yaml.safe_dump(params, sort_keys=False))


def _stale(work: Path, env) -> set[str]:
    """Stale stages of the main pipeline (plain `dvc status` also lists studies/dvc.yaml)."""
    found = _json([str(DVC), "status", "dvc.yaml", "--json"], work, env)
    return {name.split(":")[-1] for name in found}


def test_changing_an_aux_weight_only_touches_dependent_stages(repo):
    """While tune.enabled, a searched aux weight is neither read nor hashed by tune: only
    train (which lists all of aux, read with tune.enabled=false) re-runs, then evaluate."""
    from mmaux.config import load_config
    from mmaux.tuning import study_name

    work, env, _ = repo
    before = study_name(load_config(work / "params.yaml"))
    try:
        _edit_params(work, aux={"itc_weight": 0.25, "itm_negatives": "hard"})
        assert _stale(work, env) == {"train"}  # evaluate follows train's new output
        assert study_name(load_config(work / "params.yaml")) == before  # study not restarted
        _edit_params(work, aux={"weighting": "additive"})  # read by the trials
        assert _stale(work, env) == {"tune", "train"}
    finally:
        _run(["git", "checkout", "params.yaml"], work, env)


# A run long enough to be killed mid-training: 4 steps per epoch, checkpoints every 2 steps.
_KILLABLE = {
    "tune": {"enabled": False},
    "train": {"epochs": 40, "patience": 40, "batch_size": 16, "checkpoint_every_steps": 2},
    "tracking": {"enabled": False},
}


def _checkpoint(work: Path) -> Path | None:
    from mmaux.checkpoint import find_checkpoint

    return find_checkpoint(work / "runs" / "pipeline" / "checkpoint")


def _checkpointed_since(work: Path, since: float) -> bool:
    try:
        return (found := _checkpoint(work)) is not None and found.stat().st_mtime >= since
    except OSError:  # swapped for a newer one meanwhile
        return False


def _start_repro(work: Path, env, log: Path) -> subprocess.Popen:
    """`dvc repro` in its own process group; returns once the train stage has checkpointed."""
    started = time.time()
    with log.open("w") as out:
        proc = subprocess.Popen(
            [str(DVC), "repro"],
            cwd=work,
            env=env,
            stdout=out,
            stderr=subprocess.STDOUT,
            start_new_session=True,
        )
    deadline = time.monotonic() + 240
    while not _checkpointed_since(work, started):
        assert proc.poll() is None, log.read_text()[-3000:]
        assert time.monotonic() < deadline, "no checkpoint in time"
        time.sleep(0.2)
    return proc


def _gone(procs, timeout: float) -> bool:
    import psutil

    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        alive = []
        for p in procs:
            try:
                if p.is_running() and p.status() != psutil.STATUS_ZOMBIE:
                    alive.append(p)
            except psutil.NoSuchProcess:
                pass
        if not alive:
            return True
        time.sleep(0.2)
    return False


def test_killing_only_dvc_stops_the_stage(repo, tmp_path):
    """The stage gets SIGTERM when dvc dies (PR_SET_PDEATHSIG; the command execs python):
    the trainer checkpoints and the stage exits, with its Prefect server, leaving no orphan."""
    import psutil

    work, env, _ = repo
    _edit_params(work, **_KILLABLE)
    log = tmp_path / "repro.log"
    try:
        proc = _start_repro(work, env, log)
        stage = psutil.Process(proc.pid).children(recursive=True)
        assert any("flows.train" in " ".join(p.cmdline()) for p in stage), stage
        proc.kill()  # dvc alone
        proc.wait(timeout=30)
        assert _gone(stage, timeout=60), [p.cmdline() for p in stage if p.is_running()]
        assert "signal 15" in log.read_text()  # the trainer's handler: checkpoint, then stop
        assert _checkpoint(work) is not None
    finally:
        shutil.rmtree(work / "runs" / "pipeline" / "checkpoint", ignore_errors=True)
        _run(["git", "checkout", "params.yaml"], work, env)


def test_a_killed_repro_resumes_training_from_its_checkpoint(repo, tmp_path):
    """kill -9 of the whole `dvc repro` group mid-training: runs/pipeline persists and the
    re-run continues from the checkpoint instead of training from scratch."""
    work, env, _ = repo
    _edit_params(work, **_KILLABLE)
    try:
        proc = _start_repro(work, env, tmp_path / "first.log")
        os.killpg(proc.pid, signal.SIGKILL)
        proc.wait(timeout=30)
        out = _run([str(DVC), "repro"], work, env)
        assert "Running stage 'train'" in out and "resuming from" in out, out[-3000:]
        steps = [
            json.loads(line)["step"]
            for line in (work / "runs/pipeline/steps.jsonl").read_text().splitlines()
        ]
        assert steps == sorted(set(steps)) and steps[-1] == 40 * 4  # continued, not redone
        assert (work / "metrics.json").is_file() and _checkpoint(work) is None
        assert "Running stage" not in _run([str(DVC), "repro"], work, env)
    finally:
        _run(["git", "checkout", "params.yaml"], work, env)


def test_exp_run_with_a_set_param_and_exp_show(repo):
    work, env, _ = repo
    _run(
        [str(DVC), "exp", "run", "-S", "tune.enabled=false", "-S", "aux.itc_weight=0.3"], work, env
    )
    shown = _json([str(DVC), "exp", "show", "--json"], work, env)
    text = json.dumps(shown)
    assert "0.3" in text and "macro_f1" in text


def test_pointing_data_root_at_an_imported_data_set_reruns_from_validate(repo):
    from mmaux.config import SynthConfig
    from mmaux.data.synth import generate

    work, env, _ = repo
    generate(
        work / "data/imported", SynthConfig(seed=9, n_train=64, n_val=32, n_test=32, image_size=64)
    )
    _run([str(DVC), "add", "-q", "data/imported"], work, env)
    params = yaml.safe_load((work / "params.yaml").read_text())
    params["data"]["root"] = "data/imported"
    (work / "params.yaml").write_text(yaml.safe_dump(params, sort_keys=False))
    try:
        status = _json([str(DVC), "status", "--json"], work, env)
        changed = {name.split(":")[-1] for name in status}
        assert {"validate", "preprocess"} <= changed, status
        assert "data/imported" in json.dumps(status["validate"])  # the dep follows data.root
        assert "data/raw" not in json.dumps(status["validate"])
    finally:
        _run(["git", "checkout", "params.yaml"], work, env)


def test_the_study_stage_runs_apart_from_the_pipeline(repo):
    """`dvc repro` never starts a study; `dvc exp run studies/dvc.yaml:study -S ...` runs
    one, declares its metrics, and a re-run with one more seed trains only that seed."""
    work, env, _ = repo
    listed = _run([str(DVC), "stage", "list", "--name-only"], work, env).split()
    assert "train" in listed and "study" not in listed  # plain `dvc repro` runs these
    target = "studies/dvc.yaml:study"
    sets = ["-S", "study.variants=[fused-ce,fused+itc]", "-S", "study.resamples=200",
            "-S", "study.test_resamples=200", "-S", "train.epochs=1"]  # fmt: skip
    _run([str(DVC), "exp", "run", target, *sets, "-S", "study.seeds=[0,1]"], work, env)
    cells = work / "results/study/cells/default"
    first = {p: p.stat().st_mtime for p in cells.glob("*/n-all/seed-*/metrics.json")}
    assert len(first) == 4
    metrics = _json([str(DVC), "metrics", "show", "--json"], work, env)
    assert "fused+itc" in json.dumps(metrics)
    _run([str(DVC), "exp", "run", target, *sets, "-S", "study.seeds=[0,1,2]"], work, env)
    after = {p: p.stat().st_mtime for p in cells.glob("*/n-all/seed-*/metrics.json")}
    assert len(after) == 6 and all(after[p] == t for p, t in first.items())  # persisted cells
    assert "× seeds [0, 1, 2]" in (work / "results/study/report.md").read_text()
