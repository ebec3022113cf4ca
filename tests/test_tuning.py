"""Optuna tuning: real journal storage, real (tiny) training runs, no mocks."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from contextlib import contextmanager
from pathlib import Path

import optuna
import pytest
from optuna.trial import TrialState

from mmaux.config import ConfigError, config_from_dict, dump_config
from mmaux.training import Callback
from mmaux.tuning import (
    OWNER_ATTR,
    PruningCallback,
    check_search_space,
    fail_stale_trials,
    load_best_overrides,
    make_study,
    suggest_overrides,
    tune,
)

optuna.logging.set_verbosity(optuna.logging.WARNING)


@pytest.fixture
def tune_cfg(make_cfg, tmp_path):
    def make(*overrides: str):
        return make_cfg(
            "tune.epochs=2",
            f"tune.storage={tmp_path}/study/s.journal",
            f"tune.best_params={tmp_path}/best.json",
            *overrides,
        )

    return make


class Recorder(Callback):
    def __init__(self):
        self.records: list[dict] = []

    def on_epoch_end(self, trainer, record):
        self.records.append(record)


class CountingHook:
    """A trial hook: counts trainings, records every epoch, checks the trial's config."""

    def __init__(self):
        self.trials: list[int] = []
        self.configs = []
        self.recorder = Recorder()

    @contextmanager
    def __call__(self, trial, cfg):
        self.trials.append(trial.number)
        self.configs.append(cfg)
        yield [self.recorder]


def test_tune_runs_resumes_and_writes_best_params(tune_cfg, tmp_path):
    out = tmp_path / "tuning"
    hook = CountingHook()
    first = tune(tune_cfg("tune.n_trials=2"), trial_hook=hook, out_dir=out)
    assert (first.n_new, first.n_complete, hook.trials) == (2, 2, [0, 1])

    # A process killed mid-trial leaves a RUNNING trial behind: ask() and drop it.
    cfg = tune_cfg("tune.n_trials=3")
    stale = make_study(cfg.tune).ask()

    result = tune(cfg, trial_hook=hook, out_dir=out)
    assert result.n_new == 1 and hook.trials == [0, 1, 3]  # exactly one more training
    study = make_study(cfg.tune)
    states = {t.number: t.state for t in study.get_trials()}
    assert states == {
        0: TrialState.COMPLETE,
        1: TrialState.COMPLETE,
        stale.number: TrialState.FAIL,
        3: TrialState.COMPLETE,
    }
    assert (result.n_complete, result.n_pruned, result.n_failed) == (3, 0, 1)

    # The hook's callbacks saw every epoch; trials train tune.epochs into their own dirs.
    assert len(hook.recorder.records) == 3 * 2
    assert all("val_macro_f1" in r for r in hook.recorder.records)
    for n, c in zip(hook.trials, hook.configs, strict=True):
        assert c.train.epochs == 2 and not c.train.progress
        assert c.train.output_dir == out / "trials" / f"trial-{n:03d}"

    # best_params.json: in range, the best trial's val macro-F1, which the run dir confirms.
    best = json.loads((tmp_path / "best.json").read_text())
    values = {t.number: t.value for t in study.get_trials(states=[TrialState.COMPLETE])}
    assert best["value"] == max(values.values()) == result.best_value
    assert best["trial"] == result.best_trial and best["study"] == cfg.tune.study_name
    assert best["n_complete"] == 3
    p = best["params"]
    assert 0.0 <= p["aux.itc_weight"] <= 0.4 and 0.0 <= p["aux.itm_weight"] <= 0.4
    assert p.get("aux.itm_negatives", "random") in ("random", "hard")
    run_dir = out / "trials" / f"trial-{best['trial']:03d}"
    metrics = json.loads((run_dir / "metrics.json").read_text())
    assert metrics["val"]["macro_f1"] == best["value"]
    assert "test" not in metrics  # trials never evaluate on test
    for n in hook.trials:  # weights deleted, logs kept
        d = out / "trials" / f"trial-{n:03d}"
        assert not list(d.glob("*.safetensors")) and not (d / "checkpoint").exists()
        assert (d / "metrics.json").is_file() and (d / "epochs.jsonl").is_file()
    history = json.loads((out / "history.json").read_text())
    assert [(r["number"], r["state"]) for r in history] == [
        (0, "COMPLETE"),
        (1, "COMPLETE"),
        (2, "FAIL"),
        (3, "COMPLETE"),
    ]

    # The train stage gets the same aux values back as a valid Config.
    overrides = load_best_overrides(tmp_path / "best.json")
    trained = config_from_dict(dump_config(cfg), overrides)
    for key, value in p.items():
        assert getattr(trained.aux, key.split(".")[1]) == value

    # Already complete: a re-run trains nothing and reports the same best.
    again = tune(cfg, trial_hook=hook, out_dir=out)
    assert again.n_new == 0 and again.best_trial == result.best_trial
    assert len(hook.trials) == 3


def test_a_failing_trial_is_marked_fail_and_re_raised(tune_cfg, tmp_path):
    @contextmanager
    def broken(trial, cfg):
        raise RuntimeError("tracking server down")
        yield []

    cfg = tune_cfg("tune.n_trials=1")
    with pytest.raises(RuntimeError, match="tracking server down"):
        tune(cfg, trial_hook=broken, out_dir=tmp_path / "tuning")
    states = [t.state for t in make_study(cfg.tune).get_trials()]
    assert states == [TrialState.FAIL]


@pytest.mark.skipif(not Path("/proc/self/stat").exists(), reason="needs Linux /proc")
def test_only_trials_of_dead_processes_are_failed(tune_cfg):
    import socket

    from mmaux.owner import current_owner

    study = make_study(tune_cfg().tune)
    proc = subprocess.Popen([sys.executable, "-c", "pass"])
    proc.wait()
    host = socket.gethostname()
    owners = {
        "none": None,
        "dead": {"host": host, "pid": proc.pid, "start": None},
        "reused-pid": {"host": host, "pid": os.getpid(), "start": "0"},
        "alive": current_owner(),
        "other-host": {"host": host + "-elsewhere", "pid": 1, "start": None},
    }
    trials = {}
    for name, owner in owners.items():
        trial = study.ask()
        if owner is not None:
            trial.set_user_attr(OWNER_ATTR, owner)
        trials[name] = trial.number
    failed = fail_stale_trials(study)
    assert sorted(failed) == sorted(trials[n] for n in ("none", "dead", "reused-pid"))
    running = study.get_trials(states=[TrialState.RUNNING])
    assert sorted(t.number for t in running) == [trials["alive"], trials["other-host"]]
    assert sorted(fail_stale_trials(study, all_running=True)) == [
        trials["alive"],
        trials["other-host"],
    ]


def _drive(study, values):
    """A trial whose epochs report ``values``; returns its final state."""
    trial = study.ask()
    cb = PruningCallback(trial)
    try:
        for epoch, v in enumerate(values):
            cb.on_epoch_end(None, {"epoch": epoch, "val_macro_f1": v})
    except optuna.TrialPruned:
        return study.tell(trial, state=TrialState.PRUNED).state
    return study.tell(trial, max(values)).state


def test_pruning_callback_prunes_a_clearly_worse_trial(tune_cfg):
    study = make_study(tune_cfg("tune.pruner=median").tune)
    good = [0.5, 0.6, 0.7, 0.75, 0.8]
    assert _drive(study, good) == TrialState.COMPLETE
    assert _drive(study, [g + 0.01 for g in good]) == TrialState.COMPLETE
    assert _drive(study, [0.1, 0.1, 0.1, 0.1, 0.1]) == TrialState.PRUNED
    pruned = study.get_trials()[-1]
    assert sorted(pruned.intermediate_values) == [0, 1, 2]  # warm-up epochs 0-1 never prune
    assert pruned.value == 0.1


def test_no_pruner_never_prunes(tune_cfg, tmp_path):
    cfg = tune_cfg("tune.pruner=none", f"tune.storage={tmp_path}/other.journal")
    study = make_study(cfg.tune)
    assert isinstance(study.pruner, optuna.pruners.NopPruner)
    for values in ([0.8] * 5, [0.8] * 5, [0.1] * 5):
        assert _drive(study, values) == TrialState.COMPLETE
    hb = tune_cfg("tune.pruner=hyperband", f"tune.storage={tmp_path}/hb.journal")
    assert isinstance(make_study(hb.tune).pruner, optuna.pruners.HyperbandPruner)


def test_hard_negatives_fall_back_to_random_without_itc(tune_cfg):
    cfg = tune_cfg("tune.itc_weight=[0.0, 0.0]", "tune.negatives=[hard]")
    check_search_space(cfg)
    study = make_study(cfg.tune)
    for _ in range(4):
        trial = study.ask()
        overrides = suggest_overrides(trial, cfg.tune)
        c = config_from_dict(dump_config(cfg), overrides)  # never invalid
        assert c.aux.itc_weight == 0.0 and c.aux.itm_negatives == "random"
        assert trial.user_attrs["itm_negatives"] == "random"
        assert "aux.itc_weight" not in trial.params  # a fixed range is not a search dimension
        study.tell(trial, 0.5)

    # Enqueued points go through the same repair; 'hard' stays when ITC is on.
    cfg = tune_cfg()
    study = make_study(cfg.tune)
    for itc, expected in ((0.0, "random"), (0.2, "hard")):
        study.enqueue_trial(
            {"aux.itc_weight": itc, "aux.itm_weight": 0.2, "aux.itm_negatives": "hard"}
        )
        trial = study.ask()
        c = config_from_dict(dump_config(cfg), suggest_overrides(trial, cfg.tune))
        assert c.aux.itm_negatives == expected and trial.params["aux.itm_negatives"] == "hard"
        study.tell(trial, 0.5)


def test_search_space_and_overrides_edge_cases(tune_cfg, tmp_path):
    with pytest.raises(ConfigError, match="search space"):
        check_search_space(tune_cfg("tune.itc_weight=[0.0, 0.6]", "tune.itm_weight=[0.0, 0.6]"))
    # SimCSE's weight takes its share of CE's too: 0.4 + 0.4 + 0.3 >= 1 at the corner.
    with pytest.raises(ConfigError, match="simcse_weight must be < 1"):
        check_search_space(tune_cfg("aux.simcse_weight=0.3"))
    check_search_space(tune_cfg("aux.simcse_weight=0.1"))
    cfg = tune_cfg("tune.temperature=[0.03, 0.2]", "tune.itm_weight=[0.0, 0.0]")
    check_search_space(cfg)
    trial = make_study(cfg.tune).ask()
    overrides = suggest_overrides(trial, cfg.tune)
    assert not any(o.startswith("aux.itm_negatives") for o in overrides)  # ITM off
    c = config_from_dict(dump_config(cfg), overrides)
    assert 0.03 <= c.aux.temperature <= 0.2 and c.aux.itm_weight == 0.0

    # Tiny floats survive the JSON -> override -> YAML round trip as floats.
    path = tmp_path / "best.json"
    path.write_text(json.dumps({"params": {"aux.itc_weight": 1e-05, "aux.itm_weight": 0.25}}))
    c = config_from_dict(dump_config(cfg), load_best_overrides(path))
    assert (c.aux.itc_weight, c.aux.itm_weight) == (1e-05, 0.25)
