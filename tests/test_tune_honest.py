"""Honest tuning: searched aux keys are neither read nor hashed; exact n_trials with several
tuners on one journal study; unique temporary names. Real Optuna, real processes."""

from __future__ import annotations

import json
import os
import socket
import subprocess
import sys
import threading
import time
from contextlib import contextmanager
from pathlib import Path

import optuna
import pytest
import yaml
from optuna.trial import TrialState

from mmaux.config import ConfigError, dump_config, load_config
from mmaux.tuning import (
    OWNER_ATTR,
    _write_json,
    claim_trial,
    make_study,
    searched_aux_keys,
    study_name,
    train_overrides,
    tune,
)
from tests.pipeline_fixtures import REPO, tiny_params

optuna.logging.set_verbosity(optuna.logging.WARNING)


@pytest.fixture
def tune_cfg(make_cfg, tmp_path):
    def make(*overrides: str):
        return make_cfg(
            "tune.epochs=1",
            f"tune.storage={tmp_path}/study/s.journal",
            f"tune.best_params={tmp_path}/best.json",
            *overrides,
        )

    return make


# --------------------------------------------------------------------------- the study hash
@pytest.mark.parametrize(
    "override",
    [
        "aux.itc_weight=0.3",
        "aux.itm_weight=0.05",
        "aux.itm_negatives=hard",
        "train.epochs=7",
        "train.progress=true",
        "train.output_dir=elsewhere",
        "train.num_workers=2",
        "train.log_every_steps=3",
        "train.checkpoint_every_steps=5",
        "tune.n_trials=30",
        "tune.enabled=false",
        "data.cache_dir=other-cache",
    ],
)
def test_study_name_ignores_searched_aux_keys_and_bookkeeping(tune_cfg, override):
    assert study_name(tune_cfg(override)) == study_name(tune_cfg())


@pytest.mark.parametrize(
    "override",
    [
        "aux.temperature=0.1",  # not searched unless tune.temperature is set
        "aux.weighting=additive",
        "model.dropout=0.2",
        "train.lr=0.001",
        "tune.itc_weight=[0.0, 0.2]",
        "tune.epochs=3",
        "tune.seed=1",
    ],
)
def test_study_name_follows_what_trials_depend_on(tune_cfg, override):
    assert study_name(tune_cfg(override)) != study_name(tune_cfg())


def test_a_searched_temperature_is_not_hashed(tune_cfg):
    searched = "tune.temperature=[0.03, 0.2]"
    assert "temperature" in searched_aux_keys(tune_cfg(searched).tune)
    assert study_name(tune_cfg(searched, "aux.temperature=0.1")) == study_name(tune_cfg(searched))


# --------------------------------------------------------------------------- trials never read them
class Captured(Exception):
    pass


def _trial_config(cfg):
    """The config the first trial would train with (the hook stops it before training)."""
    seen = []

    @contextmanager
    def hook(trial, trial_cfg):
        seen.append(trial_cfg)
        raise Captured
        yield []

    with pytest.raises(Captured):
        tune(cfg, trial_hook=hook, out_dir=Path(cfg.tune.storage).parent / "out")
    return seen[0]


def test_trials_never_read_the_searched_aux_keys(tune_cfg, tmp_path):
    itm_off = ("tune.itm_weight=[0.0, 0.0]",)  # ITM off: no trial sets the negative mode
    a = _trial_config(tune_cfg(*itm_off, "aux.itc_weight=0.05", "aux.itm_negatives=hard"))
    b = _trial_config(
        tune_cfg(
            *itm_off,
            "aux.itc_weight=0.3",
            "aux.itm_negatives=random",
            f"tune.storage={tmp_path}/other/s.journal",
        )
    )
    assert dump_config(a)["aux"] == dump_config(b)["aux"]  # same seed, same suggestion
    assert a.aux.itm_negatives == "random"  # the default, not params.yaml's 'hard'


# --------------------------------------------------------------------------- the train stage
def _best(cfg, **params) -> None:
    payload = {"params": params, "value": 0.5, "trial": 0, "study": study_name(cfg)}
    Path(cfg.tune.best_params).write_text(json.dumps(payload))


def test_train_stage_takes_searched_keys_from_the_study_only(tune_cfg):
    from flows.common import StageParams

    cfg = tune_cfg()
    _best(cfg, **{"aux.itc_weight": 0.2, "aux.itm_weight": 0.0})  # ITM off: no negative mode
    trained = []
    for aux in (["aux.itc_weight=0.05", "aux.itm_negatives=hard"], ["aux.itm_weight=0.3"]):
        c = tune_cfg(*aux)
        trained.append(load_config_with(c, train_overrides(c)))
    assert dump_config(trained[0])["aux"] == dump_config(trained[1])["aux"]
    assert (trained[0].aux.itc_weight, trained[0].aux.itm_weight) == (0.2, 0.0)
    assert trained[0].aux.itm_negatives == "random"

    # Search off: no overrides, params.yaml's aux as it is.
    off = tune_cfg("tune.enabled=false", "aux.itc_weight=0.05")
    assert train_overrides(off) == []

    # The flow's own config goes through the same function.
    from flows.train import stage_config

    pfile = Path(cfg.tune.best_params).parent / "params.yaml"
    pfile.write_text(yaml.safe_dump(dump_config(tune_cfg("aux.itc_weight=0.05"))))
    flow_cfg, tuned = stage_config(StageParams(params_file=str(pfile)))
    assert flow_cfg.aux.itc_weight == 0.2 and tuned == train_overrides(cfg)
    off_cfg, tuned = stage_config(StageParams(params_file=str(pfile), overrides=["tune.enabled=0"]))
    assert off_cfg.aux.itc_weight == 0.05 and tuned == []


def load_config_with(cfg, overrides):
    from mmaux.config import config_from_dict

    return config_from_dict(dump_config(cfg), overrides)


def test_train_stage_refuses_a_missing_or_search_off_result(tune_cfg):
    cfg = tune_cfg()
    with pytest.raises(ConfigError, match="does not exist"):
        train_overrides(cfg)
    Path(cfg.tune.best_params).write_text(json.dumps({"params": {}, "study": None}))
    with pytest.raises(ConfigError, match="no tuning result"):
        train_overrides(cfg)


# --------------------------------------------------------------------------- exact n_trials
def test_claims_count_running_trials_and_free_failed_and_stale_slots(tune_cfg):
    cfg = tune_cfg("tune.n_trials=2").tune
    study = make_study(cfg)
    first, second = claim_trial(study, cfg), claim_trial(study, cfg)
    assert first is not None and second is not None
    assert first.user_attrs[OWNER_ATTR]["pid"] == os.getpid()
    assert claim_trial(study, cfg) is None  # two running trials fill both slots
    study.tell(first, state=TrialState.FAIL)
    third = claim_trial(study, cfg)
    assert third is not None and claim_trial(study, cfg) is None
    study.tell(second, 0.5)
    study.tell(third, state=TrialState.PRUNED)
    assert claim_trial(study, cfg) is None  # complete + pruned = n_trials

    # A trial of a dead process is failed at the next claim and frees its slot.
    more = tune_cfg("tune.n_trials=3").tune
    orphan = claim_trial(study, more)
    dead = {"host": socket.gethostname(), "pid": os.getpid(), "start": "0"}  # a reused pid
    orphan.set_user_attr(OWNER_ATTR, dead)
    again = claim_trial(study, more)
    assert again is not None and study.trials[orphan.number].state == TrialState.FAIL


_WORKER = """
import sys, time
from pathlib import Path
from mmaux.config import load_config
from mmaux.tuning import tune
params, go, out = sys.argv[1:4]
cfg = load_config(params, sys.argv[4:])
Path(out).mkdir(parents=True, exist_ok=True)
(Path(out) / "ready").touch()
while not Path(go).exists():
    time.sleep(0.05)
result = tune(cfg, out_dir=Path(out))
print("NEW", result.n_new)
"""


def test_two_tuners_on_one_study_finish_exactly_n_trials(tmp_path, synth_root, tiny_text_model):
    params = tiny_params(
        tmp_path,
        synth_root,
        tiny_text_model,
        tune={
            "n_trials": 3,
            "epochs": 1,
            "pruner": "none",
            "storage": str(tmp_path / "tuning" / "study.journal"),
            "best_params": str(tmp_path / "tuning" / "best_params.json"),
        },
        tracking={"enabled": False},
    )
    go = tmp_path / "go"
    env = {
        **os.environ,
        "PYTHONPATH": os.pathsep.join([str(REPO), os.environ.get("PYTHONPATH", "")]),
    }
    workers = []
    for n in range(2):
        out = tmp_path / f"worker{n}"
        cmd = [sys.executable, "-c", _WORKER, str(params), str(go), str(out)]
        # Own feature caches: the study is what the workers share.
        cmd.append(f"data.cache_dir={tmp_path / f'cache{n}'}")
        workers.append(
            (
                out,
                subprocess.Popen(
                    cmd,
                    cwd=tmp_path,
                    env=env,
                    stdout=subprocess.PIPE,
                    stderr=subprocess.PIPE,
                    text=True,
                ),
            )
        )
    deadline = time.monotonic() + 120
    while not all((out / "ready").exists() for out, _ in workers):
        assert all(p.poll() is None for _, p in workers), [p.communicate() for _, p in workers]
        assert time.monotonic() < deadline
        time.sleep(0.1)
    go.touch()  # both start claiming at the same moment
    new = 0
    for _, proc in workers:
        stdout, stderr = proc.communicate(timeout=300)
        assert proc.returncode == 0, stderr[-3000:]
        new += int(stdout.split("NEW")[-1])
    cfg = load_config(params)
    trials = make_study(cfg.tune).get_trials()
    assert [t.state for t in trials] == [TrialState.COMPLETE] * 3
    assert new == 3
    best = json.loads(Path(cfg.tune.best_params).read_text())
    assert best["n_complete"] == 3


# --------------------------------------------------------------------------- temporary files
def test_concurrent_json_writers_never_collide(tmp_path):
    target = tmp_path / "best_params.json"
    errors: list[BaseException] = []

    def write(n: int) -> None:
        try:
            for i in range(200):
                _write_json(target, {"writer": n, "i": i, "pad": "x" * 4096})
        except BaseException as err:  # noqa: BLE001 - collected for the assertion
            errors.append(err)

    threads = [threading.Thread(target=write, args=(n,)) for n in range(4)]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    assert not errors, errors[:3]
    assert json.loads(target.read_text())["i"] == 199
    assert [p.name for p in tmp_path.iterdir()] == ["best_params.json"]  # no temporary left
