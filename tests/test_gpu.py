"""GPU paths (marked ``gpu``; skipped without CUDA): the fast-trainer options end to end."""

from __future__ import annotations

import importlib.util
import json

import pytest
import torch

from mmaux.training import train
from tests.pipeline_fixtures import REPO

pytestmark = [
    pytest.mark.gpu,
    pytest.mark.skipif(not torch.cuda.is_available(), reason="needs CUDA"),
]


def test_trained_cnn_encoder_runs_channels_last_with_bf16(make_cfg):
    cfg = make_cfg(
        "train.device=cuda",
        "train.epochs=1",
        "train.deterministic=false",
        "train.num_workers=2",
        "model.image.name=test_efficientnet",
        "model.image.pretrained=false",
        "model.image.freeze=false",
        "aux.itc_weight=0.1",
        "aux.itm_weight=0.1",
        "aux.itm_negatives=hard",
    )
    result = train(cfg)
    assert result.metrics["precision"] == "bf16"
    assert 0.0 <= result.metrics["test"]["macro_f1"] <= 1.0


def test_compiled_training_matches_the_eager_loss_scale(make_cfg, tmp_path):
    eager = train(
        make_cfg("train.device=cuda", "train.epochs=1", f"train.output_dir={tmp_path / 'eager'}")
    )
    compiled = train(
        make_cfg(
            "train.device=cuda",
            "train.epochs=1",
            "train.compile=true",
            f"train.output_dir={tmp_path / 'comp'}",
        )
    )
    first = [h["train_loss"] for h in (eager.history[0], compiled.history[0])]
    assert first[1] == pytest.approx(first[0], rel=0.1)  # same model, same data, bf16 noise


def test_throughput_benchmark_reports_gpu_memory(tmp_path):
    spec = importlib.util.spec_from_file_location(
        "train_throughput", REPO / "benchmarks" / "train_throughput.py"
    )
    bench = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(bench)
    out = tmp_path / "bench.json"
    bench.main(
        [
            "--preset",
            "tiny",
            "--device",
            "cuda",
            "--steps",
            "3",
            "--warmup",
            "1",
            "--no-loader",
            "--json",
            str(out),
        ]
    )
    rows = json.loads(out.read_text())["rows"]
    assert rows and all(r["peak_gpu_allocated_gib"] > 0 for r in rows)
