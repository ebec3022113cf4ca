"""Every CLI error is one clear line on stderr with exit code 2 and no traceback."""

from __future__ import annotations

import json
import shutil
import subprocess
import sys
from pathlib import Path

import pytest

from mmaux.cli import main
from tests.pipeline_fixtures import tiny_params

REPO = Path(__file__).resolve().parents[1]


def _error(capsys) -> str:
    err = capsys.readouterr().err.strip()
    assert err.startswith("error: ") and "Traceback" not in err, err
    return err


def _one_line(capsys) -> str:
    err = _error(capsys)
    assert "\n" not in err, err
    return err


@pytest.fixture
def params(tmp_path, synth_root, tiny_text_model) -> list[str]:
    path = tiny_params(
        tmp_path,
        synth_root,
        tiny_text_model,
        data={"cache_dir": str(tmp_path / "cache")},
        train={"epochs": 1, "output_dir": str(tmp_path / "run")},
    )
    return ["--params", str(path)]


def test_a_bad_override_value(capsys):
    args = ["--params", str(REPO / "params.yaml"), "--set", "train.epochs=[1,2"]
    assert main(["config", *args]) == 2
    assert "override 'train.epochs=[1,2'" in _one_line(capsys)


def test_a_missing_params_file(tmp_path, capsys):
    assert main(["config", "--params", str(tmp_path / "absent.yaml")]) == 2
    assert "no such configuration file" in _one_line(capsys)


def test_an_invalid_key_is_one_line(capsys):
    assert main(["config", "--params", str(REPO / "params.yaml"), "--set", "aux.nope=1"]) == 2
    assert "aux.nope: unknown key" in _one_line(capsys)


@pytest.mark.parametrize(
    ("name", "needle"),
    [
        ("/nonexistent/text-model", "no such directory"),
        ("no-such-org/no-such-model", "local_files_only=true forbids downloads"),
    ],
)
def test_a_missing_text_model(params, capsys, name, needle):
    assert main(["train", *params, "--set", f"model.text.name={name}"]) == 2
    err = _one_line(capsys)
    assert name in err and needle in err and "embedded:minilm-l6" in err


def test_missing_image_weights(params, tmp_path, capsys):
    weights = tmp_path / "absent.safetensors"
    assert main(["train", *params, "--set", f"model.image.weights={weights}"]) == 2
    assert f"{weights}: weights file not found" in _one_line(capsys)


def test_a_bad_manifest_is_a_headline_then_its_rows(params, synth_root, tmp_path, capsys):
    root = tmp_path / "raw"
    shutil.copytree(synth_root, root)
    lines = (root / "manifest.jsonl").read_text().splitlines()
    first = json.loads(lines[0])
    lines.append(json.dumps({**first, "id": "new-id", "label": "sarcastic"}))
    (root / "manifest.jsonl").write_text("\n".join(lines) + "\n")
    assert main(["train", *params, "--set", f"data.root={root}"]) == 2
    head, *rows = _error(capsys).splitlines()
    assert "bad row" in head and rows and all(r.startswith("  ") for r in rows)
    assert any("sarcastic" in r for r in rows)


def test_the_trainers_errors(params, tmp_path, capsys):
    from mmaux.callbacks import Callback
    from mmaux.config import load_config
    from mmaux.training import TrainingInterrupted, train

    class StopAtOnce(Callback):
        def on_log(self, trainer, step, values):
            trainer.request_stop()

    cfg = load_config(params[1], ["train.log_every_steps=1"])
    with pytest.raises(TrainingInterrupted):
        train(cfg, callbacks=[StopAtOnce()])
    assert main(["train", *params]) == 2  # an unfinished run's checkpoint, no --resume
    assert "--resume" in _one_line(capsys)

    diverge = ["--set", "train.lr=1e30", "--set", "train.head_lr=1e30"]
    diverge += ["--out", str(tmp_path / "diverged")]
    assert main(["train", *params, *diverge]) == 2  # non-finite loss
    assert "non-finite" in _one_line(capsys)


def test_no_traceback_unless_verbose(tmp_path):
    cmd = [sys.executable, "-m", "mmaux", "config", "--params", str(REPO / "params.yaml")]
    bad = ["--set", "train.epochs=[1,2"]
    proc = subprocess.run([*cmd, *bad], capture_output=True, text=True, cwd=tmp_path)
    assert proc.returncode == 2 and proc.stdout == ""
    assert proc.stderr.startswith("error: override") and proc.stderr.count("\n") == 1
    verbose = [sys.executable, "-m", "mmaux", "--verbose", *cmd[3:], *bad]
    proc = subprocess.run(verbose, capture_output=True, text=True, cwd=tmp_path)
    assert proc.returncode == 2 and "Traceback" in proc.stderr
    assert proc.stderr.rstrip().splitlines()[-1].startswith("error: override")
