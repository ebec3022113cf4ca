"""The study: its grid, training-set subsamples, reuse after a kill, cell-labelled logs, the
report files, and the CLI; on real (tiny) training runs."""

from __future__ import annotations

import json
import logging
import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest
import yaml

from mmaux.config import Config, ConfigError, dump_config, load_config
from mmaux.data.manifest import Post
from mmaux.data.subsample import class_quotas, stratified_subsample
from mmaux.study.grid import PRESETS, Cell, cell_config, cells, study_overrides
from mmaux.study.runner import collect, run_study, train_cells

REPO = Path(__file__).resolve().parents[1]


def _study(make_cfg, tmp_path, *overrides):
    return make_cfg(
        "train.epochs=1",
        "tracking.enabled=false",
        f"study.out_dir={tmp_path / 'study'}",
        *overrides,
    )


def _params_file(cfg: Config, path: Path) -> Path:
    """``cfg`` saved as a params file, for the CLI and subprocesses."""
    path.write_text(yaml.safe_dump(dump_config(cfg)))
    return path


# ---------------------------------------------------------------- grid


def test_grid_has_every_cell_seeds_outermost(make_cfg, tmp_path):
    cfg = _study(
        make_cfg,
        tmp_path,
        "study.models={a: {}, b: {model.hidden_dim: 16}}",
        "study.variants=[fused-ce, fused+itc]",
        "study.sizes=[20, all]",
        "study.seeds=[3, 4]",
    )
    grid = cells(cfg)
    assert len(grid) == 2 * 2 * 2 * 2 == len(set(grid))
    assert [c.seed for c in grid[:8]] == [3] * 8  # a prefix holds complete pairs of seed 3
    assert {c.n_train for c in grid} == {20, None}
    for c in grid:
        assert Cell.parse(c.key) == c
    with pytest.raises(ValueError, match="MODEL/VARIANT"):
        Cell.parse("a/fused-ce/100/seed-1")


def test_cell_config_changes_only_what_the_cell_says(make_cfg, tmp_path):
    cfg = _study(make_cfg, tmp_path, "study.models={wide: {model.hidden_dim: 48}}")
    itc = cell_config(cfg, Cell("wide", "fused+itc", 20, 7))
    assert (itc.aux.itc_weight, itc.aux.itm_weight, itc.aux.simcse_weight) == (0.1, 0.0, 0.0)
    assert itc.model.hidden_dim == 48 and itc.data.n_train == 20 and itc.train.seed == 7
    assert itc.train.output_dir == tmp_path / "study" / "cells" / "wide/fused+itc/n-20/seed-7"
    text = cell_config(cfg, Cell("wide", "text-only", None, 7))
    assert text.model.fusion == "text" and text.aux.itc_weight == text.aux.itm_weight == 0
    assert text.data.n_train is None
    mcse = cell_config(cfg, Cell("wide", "fused+itc+simcse", None, 0))
    assert mcse.aux.itc_weight > 0 and mcse.aux.simcse_weight > 0 and mcse.aux.itm_weight == 0
    shared = _study(make_cfg, tmp_path, f"study.cells_dir={tmp_path / 'shared'}")
    assert cell_config(shared, Cell("default", "fused-ce", None, 0)).train.output_dir == (
        tmp_path / "shared" / "default/fused-ce/n-all/seed-0"
    )


def test_a_bad_model_fails_before_any_cell_trains(make_cfg, tmp_path):
    cfg = _study(make_cfg, tmp_path, "study.models={good: {}, bad: {model.no_such_key: 1}}")
    with pytest.raises(ConfigError, match=r"(?s)study\.models\.bad.*no_such_key"):
        train_cells(cfg)
    assert not (tmp_path / "study").exists()


def test_study_config_rejects_bad_grids(make_cfg, tmp_path):
    with pytest.raises(ConfigError, match="variants: unknown"):
        _study(make_cfg, tmp_path, "study.variants=[fused-ce, fused+magic]")
    with pytest.raises(ConfigError, match="seeds"):
        _study(make_cfg, tmp_path, "study.seeds=[1, 1]")
    with pytest.raises(ConfigError, match="sizes"):
        _study(make_cfg, tmp_path, "study.sizes=[1]")
    with pytest.raises(ValueError, match="unknown study preset 'nope'"):
        study_overrides("nope")
    for name in PRESETS:  # every preset is a valid study
        _study(make_cfg, tmp_path, *study_overrides(name))


# ---------------------------------------------------------------- subsamples


def _posts(counts: dict[str, int]) -> list[Post]:
    return [
        Post(f"{label}-{i}", "t", "i.png", label, "train")
        for label, n in counts.items()
        for i in range(n)
    ]


def test_subsamples_keep_label_shares_and_depend_on_the_seed_only():
    posts = _posts({"a": 60, "b": 30, "c": 10})
    sub = stratified_subsample(posts, 20, seed=1)
    labels = [p.label for p in sub]
    assert len(sub) == 20 and (labels.count("a"), labels.count("b"), labels.count("c")) == (
        12,
        6,
        2,
    )
    assert sub == stratified_subsample(list(posts), 20, seed=1)  # same seed, same set
    assert sub != stratified_subsample(posts, 20, seed=2)
    assert [posts.index(p) for p in sub] == sorted(posts.index(p) for p in sub)
    assert stratified_subsample(posts, None, 0) == posts == stratified_subsample(posts, 500, 0)
    assert class_quotas({"a": 98, "b": 2}, 10) == {"a": 9, "b": 1}  # every label kept
    assert class_quotas({"a": 5, "b": 5, "c": 5}, 2) in (
        {"a": 1, "b": 1, "c": 0},
        {"a": 1, "b": 0, "c": 1},
        {"a": 0, "b": 1, "c": 1},
    )
    with pytest.raises(ValueError, match="cannot draw 0"):
        class_quotas({"a": 1}, 0)


def test_n_train_trains_on_the_subsample(make_cfg):
    from mmaux.training import train

    result = train(make_cfg("train.epochs=1", "data.n_train=24", "train.seed=3"))
    assert result.metrics["n_train_posts"] == 24
    with pytest.raises(ValueError, match="data.n_train=500: .* has only 96 training posts"):
        train(make_cfg("train.epochs=1", "data.n_train=500", "train.output_dir=/tmp/x-none"))


# ---------------------------------------------------------------- params files


def test_a_params_file_can_extend_another(tmp_path):
    (tmp_path / "base.yaml").write_text("train: {epochs: 3, lr: 0.01}\nmodel: {dropout: 0.2}\n")
    (tmp_path / "sub").mkdir()
    (tmp_path / "sub" / "recipe.yaml").write_text("extends: ../base.yaml\ntrain: {epochs: 5}\n")
    cfg = load_config(tmp_path / "sub" / "recipe.yaml", ["model.dropout=0.3"])
    assert (cfg.train.epochs, cfg.train.lr, cfg.model.dropout) == (5, 0.01, 0.3)
    (tmp_path / "a.yaml").write_text("extends: b.yaml\n")
    (tmp_path / "b.yaml").write_text("extends: a.yaml\n")
    with pytest.raises(ConfigError, match="cycle"):
        load_config(tmp_path / "a.yaml")
    (tmp_path / "c.yaml").write_text("extends: missing.yaml\n")
    with pytest.raises(ConfigError, match="missing.yaml does not exist"):
        load_config(tmp_path / "c.yaml")


def test_the_real_data_recipe_is_a_valid_study():
    cfg = load_config(REPO / "params" / "real-data.yaml")
    assert cfg.study.seeds and "fused-ce" in cfg.study.variants
    assert cfg.tune.enabled is False  # the study compares fixed weights


# ---------------------------------------------------------------- end to end


def test_a_tiny_study_reports_and_reuses_its_cells(make_cfg, tmp_path, caplog):
    cfg = _study(
        make_cfg,
        tmp_path,
        "study.variants=[text-only, fused-ce, fused+itc]",
        "study.sizes=[24, all]",
        "study.seeds=[0, 1]",
        "study.resamples=200",
        "study.test_resamples=200",
    )
    with caplog.at_level(logging.INFO, logger="mmaux"):
        results, summary = run_study(cfg)
    out = tmp_path / "study"
    for name in ("report.md", "summary.json", "metrics.json", "cells.jsonl", "study.yaml"):
        assert (out / name).is_file(), name
    for name in ("gaps.png", "low_resource.png", "subgroups.png", "alignment_uniformity.png"):
        assert (out / "plots" / name).read_bytes()[:4] == b"\x89PNG", name
    rows = [json.loads(x) for x in (out / "cells.jsonl").read_text().splitlines()]
    assert len(rows) == 12 and not any(r["reused"] for r in rows)
    assert {r["n_train_posts"] for r in rows} == {24, 96}
    comps = summary["vs_baseline"]
    assert {(c["variant"], c["n_train"]) for c in comps} == {
        ("fused+itc", "24"),
        ("fused+itc", "all"),
    }
    assert all(c["p_permutation_holm"] >= c["p_permutation"] for c in comps)
    assert {c["variant"] for c in summary["vs_text_only"]} == {"fused-ce", "fused+itc"}
    assert {(p["variant"], p["n_train"]) for p in summary["curves"]} >= {("fused-ce", 24)}
    report = (out / "report.md").read_text()
    assert "No aux-loss difference is significant" in report  # 2 seeds cannot reach p < .05
    assert "smallest attainable two-sided p is 0.500" in report
    metrics = json.loads((out / "metrics.json").read_text())
    assert set(metrics["default"]) == {"n_24", "n_all"}
    # every line logged while a cell trained names the cell
    cell_lines = [r.getMessage() for r in caplog.records if r.name.startswith("mmaux.training")]
    assert cell_lines and all(m.startswith("[default · ") for m in cell_lines)
    assert any(m.startswith("[default · fused+itc · n=24 · seed 1]") for m in cell_lines)
    # a second run trains nothing and reports the same numbers
    mtimes = {r["run_dir"]: (Path(r["run_dir"]) / "metrics.json").stat().st_mtime for r in rows}
    again, summary2 = run_study(cfg)
    assert all(r.reused for r in again)
    assert {str(r.run_dir): (r.run_dir / "metrics.json").stat().st_mtime for r in again} == mtimes
    assert summary2["vs_baseline"][0]["mean"] == comps[0]["mean"]


def test_a_killed_study_keeps_its_finished_cells(make_cfg, tmp_path):
    cfg = _study(
        make_cfg,
        tmp_path,
        "study.variants=[fused-ce, fused+itm]",
        "study.seeds=[0, 1]",
        "train.epochs=2",
    )
    params = _params_file(cfg, tmp_path / "study-params.yaml")
    first = cell_config(cfg, cells(cfg)[0]).train.output_dir / "metrics.json"
    proc = subprocess.Popen(
        [sys.executable, "-m", "mmaux", "study", "--params", str(params), "--no-track"],
        cwd=tmp_path,
        stdout=subprocess.DEVNULL,
        stderr=subprocess.DEVNULL,
        start_new_session=True,
    )
    deadline = time.time() + 240
    while not first.is_file() and time.time() < deadline and proc.poll() is None:
        time.sleep(0.2)
    assert first.is_file(), "the first cell never finished"
    os.killpg(proc.pid, signal.SIGKILL)  # like a lost machine: no clean-up at all
    proc.wait()
    done, missing = collect(cfg)
    assert cells(cfg)[0] in {r.cell for r in done} and missing  # killed before the end
    mtime = first.stat().st_mtime
    results, _ = run_study(cfg)
    assert len(results) == 4 and all(r.run_dir.joinpath("metrics.json").is_file() for r in results)
    by_cell = {r.cell: r for r in results}
    assert by_cell[cells(cfg)[0]].reused and first.stat().st_mtime == mtime
    assert not all(r.reused for r in results)


def test_cli_study_help_names_variants_and_presets():
    out = subprocess.run(
        [sys.executable, "-m", "mmaux", "study", "--help"],
        capture_output=True,
        text=True,
        check=True,
        cwd=REPO,
    ).stdout
    for name in ("fused+itc+itm", "text-only", "fused+itc+simcse", *PRESETS):
        assert name in out


def test_cli_study_lists_cells_and_reports_finished_ones(make_cfg, tmp_path, capsys):
    from mmaux.cli import main

    cfg = _study(
        make_cfg,
        tmp_path,
        "study.variants=[fused-ce, fused+itc]",
        "study.seeds=[0, 1]",
        "study.resamples=200",
        "study.test_resamples=200",
    )
    params = _params_file(cfg, tmp_path / "p.yaml")
    assert main(["study", "--params", str(params), "--cell", "default/fused-ce/n-all/seed-0"]) == 0
    assert main(["study", "--params", str(params), "--list"]) == 0
    listed = capsys.readouterr().out
    assert "default/fused-ce/n-all/seed-0" in listed and listed.count("finished") == 1
    assert main(["study", "--params", str(params), "--cell", "default/fused+itc/n-all/seed-0"]) == 0
    assert main(["study", "--params", str(params), "--report"]) == 0
    captured = capsys.readouterr()
    assert "2 cell(s) not finished" in captured.err and "seed-1" in captured.err
    rows = (tmp_path / "study" / "cells.jsonl").read_text().splitlines()
    assert len(rows) == 2
    assert main(["study", "--params", str(params), "--cell", "default/fused+itm/n-all/seed-0"]) == 2


def test_cli_study_workers_train_cells_in_parallel_processes(make_cfg, tmp_path, capsys):
    from mmaux.cli import main

    cfg = _study(
        make_cfg,
        tmp_path,
        "study.variants=[fused-ce, fused+itc]",
        "study.seeds=[0, 1]",
        "study.resamples=200",
        "study.test_resamples=200",
    )
    params = _params_file(cfg, tmp_path / "p.yaml")
    assert main(["study", "--params", str(params), "--workers", "2"]) == 0
    logs = sorted((tmp_path / "study" / "logs").glob("*.log"))
    assert len(logs) == 4  # one process per cell, each with its own log
    assert all("test macro-F1" in p.read_text() for p in logs)
    rows = [json.loads(x) for x in (tmp_path / "study" / "cells.jsonl").read_text().splitlines()]
    assert len(rows) == 4
    assert "Aux losses against" in (tmp_path / "study" / "report.md").read_text()
    # a second call finds every cell finished: no worker starts
    for p in logs:
        p.unlink()
    assert main(["study", "--params", str(params), "--workers", "2"]) == 0
    assert not list((tmp_path / "study" / "logs").glob("*.log"))
