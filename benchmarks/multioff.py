"""The paper's comparison on real data: MultiOFF (offensive election memes), offline encoders.

Steps, each reused when its output already exists (so an interrupted run resumes):

1. import the raw MultiOFF folder (``mmaux import multioff``; the one image missing from the
   public copy is dropped and listed in ``data/import_report.json``);
2. tune the ITC/ITM loss weights with Optuna on the **validation split only** (train on
   train, score val macro-F1; the test split is never read);
3. train text-only, image-only, fused CE-only, +ITC, +ITM and +ITC+ITM on the same seeds
   with the tuned weights, early stopping on val macro-F1, and report mean ± std
   macro-F1 / weighted-F1 on the official test split with the paired gap to fused CE-only.

Writes ``OUT/benchmark.json`` (configuration, tuned weights, timings, machine) and
``OUT/table.md``. The data set stays where it is; only its import goes under ``OUT``.

    python benchmarks/multioff.py --src ../shared/datasets/multioff --out results/multioff
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import resource
import time
from pathlib import Path

import torch

from mmaux.ablation import VARIANTS, format_table, run_ablation
from mmaux.config import dump_config, load_config
from mmaux.importers import import_multioff
from mmaux.tuning import load_best_overrides, tune

REPO = Path(__file__).resolve().parents[1]
DEFAULT_SRC = REPO.parent / "shared" / "datasets" / "multioff"

# Changes from params.yaml for this data set, and why:
BENCH_OVERRIDES = [
    # MultiOFF texts are long meme OCR (median 41 tokens, 90th percentile 118): use the
    # authors' max length 128, and batch similar lengths together to pay for less padding.
    "data.max_text_length=128",
    "train.length_grouping=4",
    "train.progress=false",
    # the search: the pipeline's default study (8 finished trials, median pruner)
    "tune.n_trials=8",
    "tune.epochs=8",
]


def machine() -> dict[str, object]:
    info: dict[str, object] = {
        "platform": platform.platform(),
        "cpu_count": os.cpu_count(),
        "torch": torch.__version__,
        "threads": torch.get_num_threads(),
    }
    if torch.cuda.is_available():
        info["gpu"] = torch.cuda.get_device_name(0)
    return info


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--src", type=Path, default=DEFAULT_SRC, help="raw MultiOFF folder")
    parser.add_argument("--out", type=Path, default=REPO / "results" / "multioff")
    parser.add_argument("--seeds", type=int, nargs="+", default=[0, 1, 2, 3, 4])
    parser.add_argument("--variants", nargs="+", default=list(VARIANTS), choices=VARIANTS)
    parser.add_argument(
        "--no-tune",
        action="store_true",
        help="skip the search and use the paper's default weights (0.1 each)",
    )
    parser.add_argument("--params", type=Path, default=REPO / "params.yaml")
    parser.add_argument("--set", dest="overrides", action="append", default=[])
    args = parser.parse_args()

    out = args.out.resolve()
    data = out / "data"
    timings: dict[str, float] = {}
    started = time.perf_counter()
    if not (data / "manifest.jsonl").is_file():
        report = import_multioff(args.src, data, on_missing="drop")
        print(report.summary())
    timings["import_s"] = time.perf_counter() - started

    family = load_config(args.params, [*BENCH_OVERRIDES, *args.overrides]).model.family
    tag = "" if family == "late" else f"-{family}"  # each family tunes and trains apart
    overrides = [
        f"data.root={data}",
        f"data.cache_dir={out / 'cache'}",
        "tracking.enabled=false",
        f"tune.storage={out / f'tuning{tag}' / 'study.journal'}",
        f"tune.best_params={out / f'tuning{tag}' / 'best_params.json'}",
        *BENCH_OVERRIDES,
        *args.overrides,
    ]
    base = load_config(args.params, overrides)

    tuned: list[str] = []
    t0 = time.perf_counter()
    if not args.no_tune:
        best_path = Path(base.tune.best_params)
        if not best_path.is_file():
            result = tune(base, out_dir=out / f"tuning{tag}")
            print(
                f"tuning: best val macro-F1 {result.best_value:.4f} (trial {result.best_trial}; "
                f"{result.n_complete} complete, {result.n_pruned} pruned)"
            )
        tuned = load_best_overrides(best_path)
        base = load_config(args.params, [*overrides, *tuned])
    timings["tune_s"] = time.perf_counter() - t0
    print("aux weights:", tuned or "paper defaults (0.1 / 0.1)")

    t0 = time.perf_counter()
    runs_dir = out / f"ablation{tag}{'-paper-defaults' if args.no_tune else ''}"
    summary = run_ablation(base, args.seeds, runs_dir, args.variants)
    timings["ablation_s"] = time.perf_counter() - t0
    timings["total_s"] = time.perf_counter() - started

    table = format_table(summary)
    payload = {
        "command": "python benchmarks/multioff.py "
        + " ".join(
            [f"--seeds {' '.join(map(str, args.seeds))}"]
            + (["--no-tune"] if args.no_tune else [])
            + [f"--set {o}" for o in args.overrides]
        ),
        "overrides": overrides,
        "tuned": tuned,
        "config": dump_config(base),
        "summary": summary,
        "timings": timings,
        "peak_rss_gib": resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 2**20,
        "machine": machine(),
    }
    (runs_dir / "benchmark.json").write_text(json.dumps(payload, indent=2, default=str) + "\n")
    (runs_dir / "table.md").write_text(table + "\n")
    print(table)
    print(
        f"\nimport {timings['import_s']:.0f} s, tuning {timings['tune_s']:.0f} s, "
        f"training {timings['ablation_s']:.0f} s, total {timings['total_s'] / 60:.1f} min "
        f"on {payload['machine']}"
    )
    print(f"written to {runs_dir}/ (benchmark.json, table.md, runs.jsonl)")


if __name__ == "__main__":
    main()
