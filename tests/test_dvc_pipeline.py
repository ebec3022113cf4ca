"""`dvc repro`, `dvc status`, `dvc exp run` and `dvc exp show` on a tiny config, for real."""

from __future__ import annotations

import json
import os
import shutil
import subprocess
import sys
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
    for name in ("flows", "dvc.yaml", ".dvcignore"):
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
        "/reports/\n/plots/\n/tuning/\n/metrics.json\n"
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


def test_changing_an_aux_weight_only_touches_dependent_stages(repo):
    work, env, _ = repo
    params = yaml.safe_load((work / "params.yaml").read_text())
    params["aux"]["itc_weight"] = 0.25
    (work / "params.yaml").write_text(yaml.safe_dump(params, sort_keys=False))
    status = _json([str(DVC), "status", "--json"], work, env)
    changed = {name.split(":")[-1] for name in status}
    assert changed == {"tune", "train"}, status  # evaluate follows train's new output
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
