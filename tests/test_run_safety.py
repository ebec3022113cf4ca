"""Nothing is lost on failure: run directories, checkpoints and diverging runs."""

from __future__ import annotations

import json

import pytest

from mmaux.cli import main
from mmaux.config import ConfigError
from mmaux.data.manifest import ManifestError
from mmaux.training import CheckpointExists, NonFiniteLoss, Trainer, TrainingInterrupted, train
from tests.test_training import StopAt

FINISHED = ("model.safetensors", "metrics.json", "steps.jsonl", "epochs.jsonl", "config.yaml")


def _snapshot(run_dir) -> dict[str, bytes]:
    return {name: (run_dir / name).read_bytes() for name in FINISHED}


@pytest.fixture
def finished(make_cfg):
    cfg = make_cfg("train.epochs=1")
    train(cfg)
    return cfg


def test_a_run_that_fails_on_bad_data_leaves_the_previous_run_untouched(
    finished, make_cfg, tmp_path, synth_root
):
    before = _snapshot(finished.train.output_dir)
    bad = tmp_path / "bad"
    bad.mkdir()
    (bad / "dataset.json").write_text((synth_root / "dataset.json").read_text())
    (bad / "manifest.jsonl").write_text('{"id": "x", "text": "hi"}\n')
    with pytest.raises(ManifestError):
        train(make_cfg("train.epochs=1", f"data.root={bad}"))
    assert _snapshot(finished.train.output_dir) == before


def test_a_fresh_run_that_diverges_restores_the_previous_outputs(finished, make_cfg):
    run_dir = finished.train.output_dir
    before = _snapshot(run_dir)
    with pytest.raises(NonFiniteLoss, match="by step .* training diverged"):
        train(make_cfg("train.epochs=1", "train.lr=1e30", "train.head_lr=1e30",
                       "train.log_every_steps=1", "train.max_grad_norm=null"))  # fmt: skip
    assert _snapshot(run_dir) == before
    assert not list(run_dir.glob(".previous*"))
    for row in (run_dir / "steps.jsonl").read_text().splitlines():
        json.loads(row, parse_constant=lambda c: pytest.fail(f"{c} in steps.jsonl"))


def test_non_finite_settings_are_refused_by_the_configuration(make_cfg):
    for override in ("train.head_lr=.inf", "train.lr=.nan", "aux.itc_weight=.nan"):
        with pytest.raises(ConfigError, match="finite"):
            make_cfg(override)


def test_a_fresh_run_replaces_the_previous_one_only_once_it_checkpoints(finished, make_cfg):
    run_dir = finished.train.output_dir
    old = (run_dir / "model.safetensors").read_bytes()
    with pytest.raises(TrainingInterrupted):
        Trainer(make_cfg("train.epochs=2", "train.seed=3"), callbacks=[StopAt(2)]).fit()
    assert not (run_dir / "model.safetensors").exists()  # superseded: the new run's checkpoint
    assert not list(run_dir.glob(".previous*"))
    result = Trainer(make_cfg("train.epochs=2", "train.seed=3")).fit(resume=True)
    assert (run_dir / "model.safetensors").read_bytes() != old
    assert result.global_step == 12


def test_an_unfinished_run_is_never_overwritten_without_resume(make_cfg, capsys):
    cfg = make_cfg("train.epochs=2")
    with pytest.raises(TrainingInterrupted):
        Trainer(cfg, callbacks=[StopAt(3)]).fit()
    checkpoint = cfg.train.output_dir / "checkpoint"
    state = (checkpoint / "state.json").read_bytes()
    with pytest.raises(CheckpointExists, match="--resume"):
        train(cfg)
    assert (checkpoint / "state.json").read_bytes() == state
    params = cfg.train.output_dir.parent / "params.yaml"
    import yaml

    from mmaux.config import dump_config

    params.write_text(yaml.safe_dump(dump_config(cfg)))
    assert main(["train", "--params", str(params)]) == 2
    err = capsys.readouterr().err.strip().splitlines()
    assert len(err) == 1 and err[0].startswith("error: ") and "--resume" in err[0]
    assert (checkpoint / "state.json").read_bytes() == state
    assert main(["train", "--params", str(params), "--resume"]) == 0
    assert not checkpoint.exists()


def test_the_pipeline_stage_reuses_resumes_or_replaces_by_configuration(make_cfg, caplog):
    from mmaux.training import train_stage

    cfg = make_cfg("train.epochs=2")
    with pytest.raises(TrainingInterrupted):
        Trainer(cfg, callbacks=[StopAt(3)]).fit()
    changed = make_cfg("train.epochs=2", "train.lr=3e-4")  # params edited after a kill
    with caplog.at_level("WARNING", logger="mmaux.training"):
        result, reused = train_stage(changed)
    assert not reused and result.global_step == 12
    assert "made with other params" in caplog.text
    model = (cfg.train.output_dir / "model.safetensors").read_bytes()
    again, reused = train_stage(make_cfg("train.epochs=2", "train.lr=3e-4", "train.progress=true"))
    assert reused and again.metrics == result.metrics  # e.g. a re-run after tracking failed
    assert (cfg.train.output_dir / "model.safetensors").read_bytes() == model
    longer, reused = train_stage(make_cfg("train.epochs=3", "train.lr=3e-4"))
    assert not reused and longer.epochs_run == 3
