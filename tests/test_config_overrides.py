"""Overrides never touch the caller's dictionaries; a bad override value is one clear error."""

from __future__ import annotations

import copy
from pathlib import Path

import pytest

from mmaux.config import ConfigError, apply_overrides, config_from_dict, dump_config, load_config

REPO = Path(__file__).resolve().parents[1]


def test_config_from_dict_never_mutates_its_input():
    raw = dump_config(load_config(REPO / "params.yaml"))
    before = copy.deepcopy(raw)
    cfg = config_from_dict(raw, ["aux.itc_weight=0.3", "model.text.pooling=cls", "train.epochs=1"])
    assert (cfg.aux.itc_weight, cfg.model.text.pooling, cfg.train.epochs) == (0.3, "cls", 1)
    assert raw == before
    again = config_from_dict(raw)  # the same dict gives the unchanged config again
    assert again.aux.itc_weight == before["aux"]["itc_weight"]


def test_apply_overrides_returns_a_copy():
    raw = {"aux": {"itc_weight": 0.1}, "model": {"text": {"pooling": "mean"}}}
    before = copy.deepcopy(raw)
    out = apply_overrides(raw, ["aux.itc_weight=0.2", "model.text.pooling=cls", "train.seed=3"])
    assert raw == before
    assert out == {
        "aux": {"itc_weight": 0.2},
        "model": {"text": {"pooling": "cls"}},
        "train": {"seed": 3},
    }


def test_check_search_space_leaves_the_config_alone(make_cfg):
    from mmaux.tuning import check_search_space

    cfg = make_cfg("tune.temperature=[0.03, 0.2]")
    before = dump_config(cfg)
    check_search_space(cfg)
    assert dump_config(cfg) == before


@pytest.mark.parametrize("value", ["[1,2", "{a: 1", "'open", "a: b: c"])
def test_a_yaml_error_in_an_override_names_it_on_one_line(value):
    text = f"train.epochs={value}"
    with pytest.raises(ConfigError) as err:
        load_config(REPO / "params.yaml", [text])
    message = str(err.value)
    assert message.startswith(f"override {text!r}: the value is not valid YAML")
    assert "\n" not in message
