"""Optuna search over the auxiliary-loss weights (``tune`` section of ``params.yaml``).

The study lives in an Optuna journal file (``tune.storage``), so a search is resumable:
running :func:`tune` again continues the same study until it holds ``tune.n_trials``
finished (complete or pruned) trials. Trials train on the train split and are scored on the
validation split only: the final evaluation of a trial covers the validation split alone.

Several tuners may share one study (processes on one journal file): each takes the next trial
with :func:`claim_trial`, which counts the finished *and running* trials and asks for a new
one under a lock file beside the journal, so the study stops at exactly ``tune.n_trials``
finished trials. Each trial records the process that runs it (:mod:`mmaux.owner`). Journal
storage has no heartbeats, so a claim first fails the RUNNING trials whose process is gone
(:func:`fail_stale_trials`); such trials never count towards ``n_trials``.

While ``tune.enabled``, the searched ``aux`` keys (:func:`searched_aux_keys`) come from the
search alone: trials and the train stage (:func:`train_overrides`) never read their
``params.yaml`` values, and :func:`study_name` does not hash them.

Tracking stays outside this module: a :data:`TrialHook` wraps each trial (e.g. in a nested
MLflow run) and yields extra training callbacks.
"""

from __future__ import annotations

import hashlib
import json
import logging
import shutil
import time
from collections.abc import Callable
from contextlib import AbstractContextManager, nullcontext
from dataclasses import dataclass
from itertools import product
from pathlib import Path
from typing import Any

import optuna
from optuna.storages import JournalStorage
from optuna.storages.journal import JournalFileBackend, JournalFileOpenLock
from optuna.trial import FrozenTrial, TrialState

from mmaux.assemble import load_data
from mmaux.config import (
    RESULT_NEUTRAL_KEYS,
    AuxConfig,
    Config,
    ConfigError,
    TuneConfig,
    config_from_dict,
    dump_config,
    parse_override,
    without_keys,
)
from mmaux.data.manifest import Manifest
from mmaux.fsio import atomic_write_text
from mmaux.owner import current_owner, owner_alive
from mmaux.training import Callback, Trainer, train

log = logging.getLogger(__name__)

TrialHook = Callable[[optuna.Trial, Config], AbstractContextManager[list[Callback]]]
"""Wraps one trial's training; yields extra callbacks for it (e.g. an MLflow logger)."""

OWNER_ATTR = "owner"
OVERRIDES_ATTR = "overrides"
FINISHED = (TrialState.COMPLETE, TrialState.PRUNED)
TAKEN = (*FINISHED, TrialState.RUNNING)  # trials that fill one of the n_trials slots
CLAIM_GRACE_S = 15  # a claim lock left by a killed process is broken after this long
_WEIGHT_FILES = ("model.safetensors", "best.safetensors")
# Keys no trial reads (trials train tune.epochs) or that cannot change a trial's result.
_UNHASHED = RESULT_NEUTRAL_KEYS | {("train", "epochs"), ("train", "checkpoint_every_steps")}
_UNHASHED |= {("tune", k) for k in ("enabled", "n_trials", "storage", "study_name", "best_params")}


# --------------------------------------------------------------------------- what is searched
def searched_aux_keys(cfg: TuneConfig) -> tuple[str, ...]:
    """The ``aux`` keys every trial sets itself: the ITC/ITM weights, the ITM negative mode
    (sampled from ``tune.negatives``; irrelevant while ITM is off) and, with
    ``tune.temperature``, the initial temperature."""
    keys = ("itc_weight", "itm_weight", "itm_negatives")
    return (*keys, "temperature") if cfg.temperature is not None else keys


def _neutral_aux(cfg: TuneConfig) -> list[str]:
    """Overrides resetting the searched keys to their defaults, so that a trial or the train
    stage never sees the ``params.yaml`` values of keys the search owns."""
    defaults = AuxConfig()
    return [f"aux.{k}={_fmt(getattr(defaults, k))}" for k in searched_aux_keys(cfg)]


def study_name(cfg: Config) -> str:
    """``tune.study_name`` plus a hash of everything a trial's result depends on: re-running
    with the same setup continues the study; a changed search space or base config starts a
    new one. Not hashed: the searched ``aux`` keys (never read while tuning), train keys no
    trial reads or that leave results unchanged (epochs, progress, output_dir, workers,
    logging and checkpoint intervals), ``data.cache_dir`` and the tune bookkeeping keys."""
    raw = dump_config(cfg)
    searched = {("aux", key) for key in searched_aux_keys(cfg.tune)}
    sections = {s: raw[s] for s in ("data", "model", "aux", "train", "tune")}
    basis = without_keys(sections, _UNHASHED | searched)
    digest = hashlib.sha256(json.dumps(basis, sort_keys=True).encode()).hexdigest()[:10]
    return f"{cfg.tune.study_name}-{digest}"


def train_overrides(cfg: Config) -> list[str]:
    """The overrides the train stage applies on top of ``params.yaml``.

    ``tune.enabled=false``: none, ``aux.*`` is used as it is. ``tune.enabled``: every searched
    key, set from ``tune.best_params`` (a key the best trial left unset, such as the ITM
    negatives with ITM off, gets its default), so their ``params.yaml`` values never reach
    the model. Raises :class:`ConfigError` when there is no tuning result to train with."""
    if not cfg.tune.enabled:
        return []
    path = Path(cfg.tune.best_params)
    try:
        payload = json.loads(path.read_text())
    except FileNotFoundError:
        raise ConfigError(
            f"tune.enabled=true but {path} does not exist: run the tune stage first "
            "(python -m flows.tune), or set tune.enabled=false"
        ) from None
    if payload.get("study") is None:
        raise ConfigError(
            f"{path} holds no tuning result (it was written with tune.enabled=false): run the "
            "tune stage again, or set tune.enabled=false"
        )
    if payload["study"] != (expected := study_name(cfg)):
        log.warning(
            "%s comes from study %r, but this configuration's study is %r: re-run the tune "
            "stage to tune for it",
            path,
            payload["study"],
            expected,
        )
    return [*_neutral_aux(cfg.tune), *load_best_overrides(path)]


# --------------------------------------------------------------------------- study
def make_study(cfg: TuneConfig, direction: str = "maximize") -> optuna.Study:
    """Create or load the persistent study in the journal file ``cfg.storage``.

    The TPE sampler is seeded with ``cfg.seed`` plus the number of trials already in the
    study (again at each :func:`claim_trial`), so a resumed search does not replay the first
    run's random suggestions."""
    path = Path(cfg.storage)
    path.parent.mkdir(parents=True, exist_ok=True)
    storage = JournalStorage(JournalFileBackend(str(path)))
    pruner: optuna.pruners.BasePruner
    if cfg.pruner == "median":
        pruner = optuna.pruners.MedianPruner(n_startup_trials=2, n_warmup_steps=2)
    elif cfg.pruner == "hyperband":
        pruner = optuna.pruners.HyperbandPruner(min_resource=1, max_resource=cfg.epochs)
    else:
        pruner = optuna.pruners.NopPruner()
    study = optuna.create_study(
        storage=storage,
        study_name=cfg.study_name,
        direction=direction,
        sampler=_sampler(cfg, 0),
        pruner=pruner,
        load_if_exists=True,
    )
    existing = len(study.get_trials(deepcopy=False))
    if existing:
        study.sampler = _sampler(cfg, existing)
    return study


def _sampler(cfg: TuneConfig, n_existing: int) -> optuna.samplers.TPESampler:
    """TPE seeded with ``cfg.seed`` plus the number of trials so far: reproducible for one
    tuner, and concurrent tuners (which claim trials one at a time) never share a seed."""
    n_startup = max(2, min(10, cfg.n_trials // 2))
    return optuna.samplers.TPESampler(seed=cfg.seed + n_existing, n_startup_trials=n_startup)


# --------------------------------------------------------------------------- search space
def _fmt(value: Any) -> str:
    """An override value that YAML reads back as the same value (floats keep a dot)."""
    if isinstance(value, float):
        text = repr(value)
        mantissa, e, exponent = text.partition("e")
        if e and "." not in mantissa:
            text = f"{mantissa}.0e{exponent}"
        return text
    return str(value)


def _effective(values: dict[str, Any]) -> dict[str, Any]:
    """Drop/repair settings the config would reject: no negatives without ITM, and 'hard'
    negatives (sampled by ITC similarity) fall back to 'random' when ITC is off."""
    out = dict(values)
    if out.get("aux.itm_weight", 0.0) <= 0:
        out.pop("aux.itm_negatives", None)
    elif out.get("aux.itm_negatives") == "hard" and out.get("aux.itc_weight", 0.0) <= 0:
        out["aux.itm_negatives"] = "random"
    return out


def _suggest(trial: optuna.Trial, name: str, rng: tuple[float, float], log: bool = False) -> float:
    low, high = rng
    if low == high:
        return float(low)
    return trial.suggest_float(name, low, high, log=log and low > 0)


def suggest_overrides(trial: optuna.Trial, cfg: TuneConfig) -> list[str]:
    """Sample one point of the search space as ``aux.*`` overrides.

    Fixed ranges (low == high) are applied without a suggestion. The ITM negative mode is
    only sampled when ITM is on; 'hard' with ``itc_weight == 0`` becomes 'random' (the
    effective value is the trial's ``itm_negatives`` user attribute). The overrides are
    stored as the trial's ``overrides`` user attribute."""
    values: dict[str, Any] = {
        "aux.itc_weight": _suggest(trial, "aux.itc_weight", cfg.itc_weight),
        "aux.itm_weight": _suggest(trial, "aux.itm_weight", cfg.itm_weight),
    }
    if values["aux.itm_weight"] > 0:
        modes = list(dict.fromkeys(cfg.negatives))
        values["aux.itm_negatives"] = (
            modes[0] if len(modes) == 1 else trial.suggest_categorical("aux.itm_negatives", modes)
        )
    if cfg.temperature is not None:
        values["aux.temperature"] = _suggest(trial, "aux.temperature", cfg.temperature, log=True)
    values = _effective(values)
    if "aux.itm_negatives" in values:
        trial.set_user_attr("itm_negatives", values["aux.itm_negatives"])
    overrides = [f"{k}={_fmt(v)}" for k, v in values.items()]
    trial.set_user_attr(OVERRIDES_ATTR, overrides)
    return overrides


def check_search_space(cfg: Config) -> None:
    """Raise :class:`ConfigError` if some corner of the search space is an invalid config
    (e.g. itc + itm >= 1 with convex weighting, a temperature below 1/max_logit_scale)."""
    t = cfg.tune
    temps: list[float | None] = list(t.temperature) if t.temperature else [None]
    base = _neutral_aux(t)
    for itc, itm, neg, temp in product(t.itc_weight, t.itm_weight, t.negatives, temps):
        values: dict[str, Any] = {
            "aux.itc_weight": itc,
            "aux.itm_weight": itm,
            "aux.itm_negatives": neg,
        }
        if temp is not None:
            values["aux.temperature"] = temp
        overrides = [f"{k}={_fmt(v)}" for k, v in _effective(values).items()]
        try:
            config_from_dict(dump_config(cfg), [*base, *overrides])
        except ConfigError as err:
            raise ConfigError(
                f"tune: the search space holds an invalid configuration ({', '.join(overrides)})"
                f":\n{err}"
            ) from None


# --------------------------------------------------------------------------- claiming trials
def fail_stale_trials(study: optuna.Study, all_running: bool = False) -> list[int]:
    """Mark FAIL the RUNNING trials whose process is gone (or all RUNNING trials with
    ``all_running``, e.g. after a crash on another host). Returns their numbers."""
    failed = []
    for t in study.get_trials(deepcopy=False, states=(TrialState.RUNNING,)):
        if not all_running and owner_alive(t.user_attrs.get(OWNER_ATTR)):
            continue
        study.tell(t.number, state=TrialState.FAIL, skip_if_finished=True)
        log.warning("trial %d was left RUNNING by a stopped process; marked FAIL", t.number)
        if run_dir := t.user_attrs.get("run_dir"):
            _drop_weights(Path(run_dir))
        failed.append(t.number)
    return failed


def claim_trial(study: optuna.Study, cfg: TuneConfig) -> optuna.Trial | None:
    """The next trial of the study, or None once it holds ``cfg.n_trials`` finished or
    running trials.

    Exact with several tuners on one journal: counting and asking happen under one lock
    file (Optuna's :class:`~optuna.storages.journal.JournalFileOpenLock` on
    ``<storage>.claim``), so no two tuners take the last slot; running trials count, so a
    tuner never starts a trial that another one's running trial will make surplus. Stale
    RUNNING trials of dead processes are failed first (they free their slots); the trial's
    owner is recorded before the lock is released, so no tuner mistakes it for stale."""
    lock = JournalFileOpenLock(f"{cfg.storage}.claim", grace_period=CLAIM_GRACE_S)
    lock.acquire()
    try:
        fail_stale_trials(study)
        trials = study.get_trials(deepcopy=False)
        if sum(t.state in TAKEN for t in trials) >= cfg.n_trials:
            return None
        study.sampler = _sampler(cfg, len(trials))
        trial = study.ask()
        trial.set_user_attr(OWNER_ATTR, current_owner())
        return trial
    finally:
        lock.release()


# --------------------------------------------------------------------------- trials
class PruningCallback(Callback):
    """Reports each epoch's val macro-F1 to the trial; raises :class:`optuna.TrialPruned`
    when the pruner says so."""

    def __init__(self, trial: optuna.Trial):
        self.trial = trial

    def on_epoch_end(self, trainer: Trainer, record: dict[str, Any]) -> None:
        self.trial.report(float(record["val_macro_f1"]), int(record["epoch"]))
        if self.trial.should_prune():
            raise optuna.TrialPruned(
                f"trial {self.trial.number} pruned at epoch {int(record['epoch']) + 1}"
            )


def _drop_weights(run_dir: Path) -> None:
    for name in _WEIGHT_FILES:
        (run_dir / name).unlink(missing_ok=True)
    shutil.rmtree(run_dir / "checkpoint", ignore_errors=True)


def _run_trial(
    study: optuna.Study,
    trial: optuna.Trial,
    cfg: Config,
    manifest: Manifest,
    trial_hook: TrialHook | None,
    out_dir: Path,
) -> FrozenTrial:
    run_dir = out_dir / "trials" / f"trial-{trial.number:03d}"
    trial.set_user_attr("run_dir", str(run_dir))
    started = time.perf_counter()
    try:
        overrides = suggest_overrides(trial, cfg.tune)
        trial_cfg = config_from_dict(
            dump_config(cfg),
            [
                *_neutral_aux(cfg.tune),
                *overrides,
                f"train.epochs={cfg.tune.epochs}",
                f"train.output_dir={run_dir}",
                "train.progress=false",
            ],
            source=f"trial {trial.number}",
        )
        hook = trial_hook(trial, trial_cfg) if trial_hook else nullcontext([])
        with hook as extra:
            callbacks = [*(extra or []), PruningCallback(trial)]
            result = train(trial_cfg, callbacks=callbacks, manifest=manifest, final_splits=("val",))
        value = float(result.metrics["val"]["macro_f1"])
    except optuna.TrialPruned:
        trial.set_user_attr("duration_s", round(time.perf_counter() - started, 3))
        frozen = study.tell(trial, state=TrialState.PRUNED)
    except BaseException:
        study.tell(trial, state=TrialState.FAIL, skip_if_finished=True)
        raise
    else:
        trial.set_user_attr("duration_s", round(time.perf_counter() - started, 3))
        frozen = study.tell(trial, value)
    finally:
        _drop_weights(run_dir)
    log.info(
        "trial %d %s: val macro-F1 %s (%s)",
        frozen.number,
        frozen.state.name,
        "-" if frozen.value is None else f"{frozen.value:.4f}",
        ", ".join(frozen.user_attrs.get(OVERRIDES_ATTR, [])),
    )
    return frozen


# --------------------------------------------------------------------------- results
@dataclass
class TuneResult:
    """The study's state after :func:`tune`."""

    best_params: dict[str, Any]
    best_value: float
    best_trial: int
    n_complete: int
    n_pruned: int
    n_failed: int
    history: list[dict[str, Any]]
    n_new: int = 0  # trials run by this call


def _row(t: FrozenTrial) -> dict[str, Any]:
    return {
        "number": t.number,
        "state": t.state.name,
        "value": t.value,
        "params": t.params,
        "overrides": t.user_attrs.get(OVERRIDES_ATTR),
        "epochs_reported": len(t.intermediate_values),
        "duration_s": t.user_attrs.get("duration_s"),
        "run_dir": t.user_attrs.get("run_dir"),
    }


def _params_of(t: FrozenTrial) -> dict[str, Any]:
    """The effective ``aux.*`` values a trial trained with (fixed ones and fallbacks too)."""
    out: dict[str, Any] = {}
    for text in t.user_attrs.get(OVERRIDES_ATTR) or [f"{k}={_fmt(v)}" for k, v in t.params.items()]:
        path, value = parse_override(text)
        out[".".join(path)] = value
    return out


def _write_json(path: Path, payload: Any) -> None:
    atomic_write_text(path, json.dumps(payload, indent=2) + "\n")


def _summarise(study: optuna.Study, cfg: Config, out_dir: Path, n_new: int) -> TuneResult | None:
    trials = study.get_trials(deepcopy=False)
    history = [_row(t) for t in trials]
    _write_json(out_dir / "history.json", history)
    count = {s: sum(t.state == s for t in trials) for s in TrialState}
    if not count[TrialState.COMPLETE]:
        return None
    best = study.best_trial
    result = TuneResult(
        best_params=_params_of(best),
        best_value=float(best.value),  # type: ignore[arg-type]
        best_trial=best.number,
        n_complete=count[TrialState.COMPLETE],
        n_pruned=count[TrialState.PRUNED],
        n_failed=count[TrialState.FAIL],
        history=history,
        n_new=n_new,
    )
    _write_json(
        Path(cfg.tune.best_params),
        {
            "params": result.best_params,
            "value": result.best_value,
            "trial": result.best_trial,
            "study": study.study_name,
            "n_complete": result.n_complete,
            "n_pruned": result.n_pruned,
            "n_failed": result.n_failed,
        },
    )
    return result


# --------------------------------------------------------------------------- entry points
def tune(
    cfg: Config, trial_hook: TrialHook | None = None, out_dir: Path = Path("tuning")
) -> TuneResult:
    """Run trials until the study holds ``cfg.tune.n_trials`` finished trials (with other
    tuners on the same study: until no slot is left, see :func:`claim_trial`).

    Writes ``cfg.tune.best_params`` and ``out_dir/history.json`` after every trial; trial
    runs go to ``out_dir/trials/trial-NNN`` (weights deleted). A failing trial is marked
    FAIL and its error re-raised; re-running continues the study."""
    out_dir = Path(out_dir)
    check_search_space(cfg)
    study = make_study(cfg.tune)
    manifest = load_data(cfg)
    n_new = 0
    while (trial := claim_trial(study, cfg.tune)) is not None:
        _run_trial(study, trial, cfg, manifest, trial_hook, out_dir)
        n_new += 1
        _summarise(study, cfg, out_dir, n_new)
    result = _summarise(study, cfg, out_dir, n_new)
    if result is None:
        raise RuntimeError(f"study {study.study_name!r}: no trial completed (all pruned/failed)")
    return result


def load_best_overrides(path: Path) -> list[str]:
    """The best trial's ``aux.*`` values as ``key=value`` overrides (for the train stage)."""
    payload = json.loads(Path(path).read_text())
    return [f"{k}={_fmt(v)}" for k, v in payload["params"].items()]
