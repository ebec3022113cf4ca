"""The validated configuration: defaults, overrides, and readable errors."""

from __future__ import annotations

from pathlib import Path

import pytest

from mmaux.config import Config, ConfigError, config_from_dict, load_config

REPO = Path(__file__).resolve().parents[1]


def test_params_yaml_is_valid_and_explicit():
    cfg = load_config(REPO / "params.yaml")
    # params.yaml spells out every default: what a user reads is what runs.
    assert cfg == Config()


def test_override_sets_nested_key_with_yaml_typing():
    cfg = load_config(REPO / "params.yaml", ["aux.itc_weight=0.3", "model.image.kwargs={a: 1}"])
    assert cfg.aux.itc_weight == pytest.approx(0.3)
    assert cfg.model.image.kwargs == {"a": 1}


@pytest.mark.parametrize(
    ("override", "needle"),
    [
        ("aux.itc_wieght=0.2", "aux.itc_wieght: unknown key"),
        ("model.fusion=sum", "model.fusion:"),
        ("train.batch_size=1", "train.batch_size:"),
        ("train.lr=-1", "train.lr:"),
        ("train.device=tpu", "train.device:"),
        ("bogus.key=1", "bogus: unknown key"),
    ],
)
def test_bad_values_name_the_key(override, needle):
    with pytest.raises(ConfigError) as err:
        load_config(REPO / "params.yaml", [override])
    assert needle in str(err.value)


def test_convex_weights_must_leave_room_for_ce():
    with pytest.raises(
        ConfigError, match="itc_weight \\+ itm_weight \\+ simcse_weight must be < 1"
    ):
        config_from_dict({"aux": {"itc_weight": 0.6, "itm_weight": 0.5}})
    with pytest.raises(ConfigError, match="simcse_weight must be < 1"):
        config_from_dict({"aux": {"itc_weight": 0.4, "itm_weight": 0.3, "simcse_weight": 0.3}})
    cfg = config_from_dict({"aux": {"itc_weight": 0.6, "itm_weight": 0.5, "weighting": "additive"}})
    assert cfg.aux.weighting == "additive"


def test_aux_losses_need_both_modalities():
    with pytest.raises(ConfigError, match="ITC/ITM need both modalities"):
        config_from_dict({"model": {"fusion": "text"}})
    cfg = config_from_dict({"model": {"fusion": "text"}, "aux": {"itc_weight": 0, "itm_weight": 0}})
    assert not cfg.aux.enabled


def test_hard_negatives_need_itc():
    with pytest.raises(ConfigError, match="hard"):
        config_from_dict({"aux": {"itc_weight": 0, "itm_negatives": "hard"}})


def test_bad_yaml_and_missing_file(tmp_path):
    bad = tmp_path / "p.yaml"
    bad.write_text("data: [unclosed")
    with pytest.raises(ConfigError, match="not valid YAML"):
        load_config(bad)
    with pytest.raises(ConfigError, match="no such configuration file"):
        load_config(tmp_path / "absent.yaml")
    with pytest.raises(ConfigError, match="expected KEY=VALUE"):
        load_config(REPO / "params.yaml", ["aux.itc_weight"])


@pytest.mark.parametrize(
    ("raw", "needle"),
    [
        (
            {
                "model": {"family": "mmbt", "fusion": "text"},
                "aux": {"itc_weight": 0, "itm_weight": 0},
            },
            "unimodal baselines are late-family models",
        ),
        ({"model": {"family": "transformer"}}, "model.family"),
        (
            {"model": {"text": {"trainable_layers": 0}}, "aux": {"simcse_weight": 0.1}},
            "a frozen text encoder",
        ),
        ({"model": {"vilt": {"name": "random", "bogus": 1}}}, "model.vilt.bogus"),
    ],
)
def test_family_and_simcse_settings_are_validated(raw, needle):
    with pytest.raises(ConfigError) as err:
        config_from_dict(raw)
    assert needle in str(err.value)
