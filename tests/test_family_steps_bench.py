"""The per-family training-step benchmark runs end to end on CPU (tiny sizes; no timing
checks) and times the trainer's own step functions."""

from __future__ import annotations

import importlib.util
import json
import sys
from pathlib import Path

from tests.pipeline_fixtures import save_tiny_bert

SCRIPT = Path(__file__).resolve().parents[1] / "benchmarks" / "family_steps.py"


def _load_benchmark():
    spec = importlib.util.spec_from_file_location("family_steps", SCRIPT)
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
    for name in (
        "forward_backward",
        "optimizer_step",
        "LossModule",
        "LossMeter",
        "build_optimizer",
        "itm_generator",
        "training_step_fn",
    ):
        assert getattr(bench, name) is getattr(step, name), name


def test_variants_are_the_requested_loss_settings():
    bench = _load_benchmark()
    assert list(bench.VARIANTS) == ["ce", "+itc", "+itm", "+itc+itm(hard)", "+itc+itm", "+simcse"]
    from mmaux.config import load_config

    repo = Path(__file__).resolve().parents[1]
    aux = {v: load_config(repo / "params.yaml", list(o)).aux for v, o in bench.VARIANTS.items()}
    got = {
        v: (a.itc_weight, a.itm_weight, a.itm_negatives if a.itm_weight else None, a.simcse_weight)
        for v, a in aux.items()
    }
    assert got == {
        "ce": (0, 0, None, 0),
        "+itc": (0.1, 0, None, 0),
        "+itm": (0, 0.1, "random", 0),
        "+itc+itm(hard)": (0.1, 0.1, "hard", 0),
        "+itc+itm": (0.1, 0.1, "random", 0),
        "+simcse": (0, 0, None, 0.1),
    }


def test_tiny_run_reports_every_family_and_variant(tmp_path, capsys, monkeypatch):
    bench = _load_benchmark()
    text = save_tiny_bert(tmp_path / "bert")
    out = tmp_path / "out.json"
    # A family whose module does not import is skipped with a note, not an error.
    monkeypatch.setitem(bench.FAMILY_MODULES, "vilt", "mmaux.models._no_such_family_")
    result = bench.main(
        [
            "--families",
            "late",
            "mmbt",
            "vilt",
            "--device",
            "cpu",
            "--steps",
            "1",
            "--warmup",
            "0",
            "--batch-size",
            "4",
            "--text-length",
            "16",
            "--image-size",
            "64",
            "--threads",
            "1",
            "--text-model",
            str(text),
            "--json",
            str(out),
        ]
    )

    written = json.loads(out.read_text())
    assert written["rows"] == json.loads(json.dumps(result["rows"]))
    pairs = [(r["family"], r["variant"]) for r in written["rows"]]
    assert pairs == [(f, v) for f in ("late", "mmbt") for v in bench.VARIANTS]
    for r in written["rows"]:
        assert r["ms_per_step"] > 0 and r["samples_per_s"] > 0, r
        assert r["image_input"] == "cached features"  # frozen EfficientNet-Lite0, as the trainer
        want = {"+itm": 4, "+itc+itm": 4, "+itc+itm(hard)": 8}.get(r["variant"], 0)
        assert r["itm_pairs_re_fused"] == want
        assert all(v == v for v in r["last_losses"].values())  # finite losses were read
    assert set(written["ratios"]) == {"late", "mmbt"}
    for col in written["ratios"].values():
        assert set(col) == {"itc", "itm", "itm_hard_over_itc", "simcse"}
        assert all(isinstance(v, float) for v in col.values())
    ms = {(r["family"], r["variant"]): r["ms_per_step"] for r in written["rows"]}
    ce, itm = ms["mmbt", "ce"], ms["mmbt", "+itm"]
    assert abs(written["ratios"]["mmbt"]["itm"] - (itm - ce) / ce) < 1e-9
    assert "vilt" in written["skipped"] and "vilt" not in written["ratios"]

    env = written["environment"]
    for key in ("torch", "device", "device_name", "torch_threads", "precision", "preset"):
        assert key in env, key
    assert env["device"] == "cpu" and env["precision"] == "fp32" and env["torch_threads"] == 1
    assert env["text_model"] == str(text) and env["families"] == ["late", "mmbt"]

    printed = capsys.readouterr().out
    assert "| family | variant | ms/step | samples/s | ratio over CE |" in printed
    for family, variant in pairs:
        assert f"| {family} | {variant} |" in printed
    assert "vilt" in printed and "skipped" in printed
    assert "threads" in printed and "torch" in printed
