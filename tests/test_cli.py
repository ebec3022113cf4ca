"""The command line, as a newcomer uses it, including a run with the network cut off."""

from __future__ import annotations

import json
import os
import shutil
import subprocess
import sys
from pathlib import Path

import pytest
import yaml

from mmaux.cli import build_parser, main

REPO = Path(__file__).resolve().parents[1]


@pytest.mark.parametrize("command", ["synth", "validate", "train", "evaluate", "ablate", "config"])
def test_every_command_has_help(command, capsys):
    with pytest.raises(SystemExit) as code:
        main([command, "--help"])
    assert code.value.code == 0
    text = capsys.readouterr().out
    assert "--params" in text and "--set" in text
    assert command in build_parser().format_help()


def test_config_applies_overrides_and_rejects_unknown_keys(capsys):
    assert (
        main(["config", "--params", str(REPO / "params.yaml"), "--set", "aux.itc_weight=0.3"]) == 0
    )
    assert yaml.safe_load(capsys.readouterr().out)["aux"]["itc_weight"] == 0.3
    assert main(["config", "--params", str(REPO / "params.yaml"), "--set", "aux.nope=1"]) == 2
    assert "aux.nope: unknown key" in capsys.readouterr().err


def test_synth_then_validate_reports_bad_rows(tmp_path, capsys):
    root = tmp_path / "raw"
    sets = [
        "--set",
        f"data.root={root}",
        "--set",
        "synth.n_train=8",
        "--set",
        "synth.n_val=4",
        "--set",
        "synth.n_test=4",
        "--set",
        "synth.image_size=32",
    ]
    assert main(["synth", *sets]) == 0
    assert main(["synth", *sets]) == 2  # refuses to overwrite without --overwrite
    assert "--overwrite" in capsys.readouterr().err
    assert main(["validate", *sets]) == 0
    first = json.loads((root / "manifest.jsonl").read_text().splitlines()[0])
    (root / first["image"]).unlink()
    report = tmp_path / "bad.jsonl"
    assert main(["validate", *sets, "--report", str(report)]) == 1
    err = capsys.readouterr().err
    assert f"{root / 'manifest.jsonl'}:1 (id={first['id']}): image file not found" in err
    assert json.loads(report.read_text())["post_id"] == first["id"]


def _offline_prefix() -> list[str]:
    unshare = shutil.which("unshare")
    if unshare is None:
        pytest.skip("unshare not available")
    probe = subprocess.run([unshare, "-n", "true"], capture_output=True)
    if probe.returncode != 0:
        pytest.skip("cannot create a network namespace here")
    return [unshare, "-n"]


def test_embedded_default_trains_with_the_network_cut_off(tmp_path):
    """synth + train + evaluate with the real embedded encoders, in a namespace with no network."""
    params = yaml.safe_load((REPO / "params.yaml").read_text())
    params["data"].update(
        root=str(tmp_path / "raw"), cache_dir=str(tmp_path / "cache"), image_size=64
    )
    params["synth"].update(n_train=48, n_val=16, n_test=16, image_size=64)
    params["train"].update(
        epochs=1, batch_size=16, output_dir=str(tmp_path / "run"), progress=False
    )
    pfile = tmp_path / "params.yaml"
    pfile.write_text(yaml.safe_dump(params))
    env = {k: v for k, v in os.environ.items() if not k.startswith(("HF_", "TRANSFORMERS_"))}
    prefix = _offline_prefix()
    for args in (["synth"], ["train"], ["evaluate"]):
        proc = subprocess.run(
            [*prefix, sys.executable, "-m", "mmaux", *args, "--params", str(pfile)],
            capture_output=True,
            text=True,
            env=env,
            cwd=tmp_path,
            timeout=600,
        )
        assert proc.returncode == 0, proc.stderr[-3000:]
    metrics = json.loads((tmp_path / "run" / "metrics.json").read_text())
    assert metrics["global_step"] == 3 and "macro_f1" in metrics["test"]
    assert (tmp_path / "run" / "eval_test.json").is_file()
