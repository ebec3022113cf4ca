"""Shared fixtures: a tiny synthetic data set, a tiny text model, a shrunken real config."""

from __future__ import annotations

import os
from pathlib import Path

import pytest

os.environ.setdefault("HF_HUB_OFFLINE", "1")
os.environ.setdefault("TRANSFORMERS_OFFLINE", "1")
os.environ.setdefault("TOKENIZERS_PARALLELISM", "false")

from mmaux.config import Config, SynthConfig  # noqa: E402
from tests.pipeline_fixtures import save_tiny_bert, shrunk_config  # noqa: E402

REPO = Path(__file__).resolve().parents[1]


@pytest.fixture(scope="session")
def tiny_text_model(tmp_path_factory) -> Path:
    """A 2-layer, 32-wide random BERT with the embedded MiniLM tokenizer, saved locally."""
    return save_tiny_bert(tmp_path_factory.mktemp("tiny-bert"))


@pytest.fixture(scope="session")
def synth_root(tmp_path_factory) -> Path:
    """A small embedded-default data set (96/48/48 posts at 64 px)."""
    from mmaux.data.synth import generate

    root = tmp_path_factory.mktemp("synth")
    generate(root, SynthConfig(seed=5, n_train=96, n_val=48, n_test=48, image_size=64))
    return root


@pytest.fixture
def make_cfg(tmp_path, tiny_text_model, synth_root):
    """The real params.yaml, shrunk to run in seconds: same code paths, tiny sizes."""

    def make(*overrides: str, root: Path | None = None) -> Config:
        return shrunk_config(tmp_path, root or synth_root, tiny_text_model, *overrides)

    return make


@pytest.fixture(scope="module")
def prefect_harness(tmp_path_factory):
    """Prefect's temporary server and database for one test module, results in a tmp dir."""
    from prefect.settings import PREFECT_RESULTS_LOCAL_STORAGE_PATH, temporary_settings
    from prefect.testing.utilities import prefect_test_harness

    storage = tmp_path_factory.mktemp("prefect-results")
    with temporary_settings({PREFECT_RESULTS_LOCAL_STORAGE_PATH: storage}):
        with prefect_test_harness(server_startup_timeout=180):
            yield
