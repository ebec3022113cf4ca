"""The training-throughput benchmark runs end to end on CPU (tiny preset; no timing checks)."""

from __future__ import annotations

import importlib.util
import json
import sys
from pathlib import Path

SCRIPT = Path(__file__).resolve().parents[1] / "benchmarks" / "train_throughput.py"


def _load_benchmark():
    spec = importlib.util.spec_from_file_location("train_throughput", SCRIPT)
    assert spec is not None and spec.loader is not None
    module = importlib.util.module_from_spec(spec)
    sys.modules[spec.name] = module  # dataclasses resolve annotations through sys.modules
    try:
        spec.loader.exec_module(module)
    finally:
        sys.modules.pop(spec.name, None)
    return module


def test_the_benchmark_times_the_trainers_own_step():
    import mmaux.train_step as step

    bench = _load_benchmark()
    for name in ("forward_backward", "optimizer_step", "LossMeter", "build_optimizer"):
        assert getattr(bench, name) is getattr(step, name), name


def test_tiny_benchmark_reports_every_configuration(tmp_path, capsys):
    bench = _load_benchmark()
    out = tmp_path / "throughput.json"
    result = bench.main(
        [
            "--preset",
            "tiny",
            "--device",
            "cpu",
            "--batch-size",
            "8",
            "--steps",
            "2",
            "--warmup",
            "1",
            "--threads",
            "1",
            "--loader-posts",
            "16",
            "--loader-epochs",
            "1",
            "--json",
            str(out),
        ]
    )

    rows = {r["config"]: r for r in result["rows"]}
    assert list(rows) == list(bench.CONFIGS)
    assert list(rows) == ["ce", "+itc", "+itm-random", "+itc+itm", "+itc+itm-hard", "naive-itm"]
    for row in rows.values():
        assert row["samples_per_s"] > 0 and row["ms_per_step"] > 0
        assert row["flops_per_step"] > 0 and row["achieved_tflops"] > 0
        assert row["mfu"] is None  # CPU without --peak-tflops
        assert row["peak_rss_mib"] > 0
    # Re-running the whole model for ITM negatives costs more than mmaux's fusion-only re-run,
    # and the aux losses cost something over CE alone.
    assert rows["naive-itm"]["flops_per_step"] > rows["+itc+itm"]["flops_per_step"]
    assert rows["+itc+itm"]["flops_per_step"] > rows["ce"]["flops_per_step"]
    assert rows["ce"]["flops_vs_ce"] == 0 and rows["naive-itm"]["flops_vs_ce"] > 0

    loader = result["loader"]
    assert [(r["num_workers"], r["persistent_workers"]) for r in loader["rows"]] == [
        (0, False),
        (2, True),
        (2, False),
    ]
    assert all(r["samples_per_s"] > 0 and r["samples"] > 0 for r in loader["rows"])

    printed = capsys.readouterr().out
    for name in rows:
        assert f"| {name} |" in printed
    assert "FlopCounterMode" in printed

    written = json.loads(out.read_text())
    env = written["environment"]
    for key in (
        "torch",
        "device",
        "device_name",
        "precision",
        "compile",
        "batch_size",
        "text_length",
        "image_size",
        "preset",
        "presets",
        "flop_method",
        "peak_tflops",
        "text_attn_implementation",
    ):
        assert key in env, key
    assert env["preset"] == "tiny" and env["batch_size"] == 8 and env["precision"] == "fp32"
    assert env["compile"] is False and set(env["presets"]) == {"tiny", "small", "base"}
    assert [r["config"] for r in written["rows"]] == list(rows)
