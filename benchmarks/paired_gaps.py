"""Paired comparisons of finished ablation runs on the same seeds (scipy's paired tests).

Reads ``<ablation dir>/<variant>/seed-<n>/metrics.json`` of one or more ablation
directories (``benchmarks/multioff.py`` writes one per model family), prints each
variant's mean ± sample std of test and val macro-F1, then, for every requested pair
``A:B``, the per-seed gap B − A on the seeds both have, its mean ± std, the paired t-test
and the Wilcoxon signed-rank p-values. Five seeds give the Wilcoxon test a smallest
possible two-sided p of 0.0625: it cannot reject at 0.05, which is said in the output.

    python benchmarks/paired_gaps.py late=results/multioff/ablation-paper-defaults \\
        mmbt=results/multioff/ablation-mmbt-paper-defaults \\
        --pair late/fused-ce:late/fused+itc+itm --pair mmbt/fused-ce:mmbt/fused+itc+itm
"""

from __future__ import annotations

import argparse
import json
import statistics
from pathlib import Path

from scipy import stats


def load_runs(name: str, ablation_dir: Path) -> dict[str, dict[int, dict[str, float]]]:
    """``{"<name>/<variant>": {seed: {test, val, best_epoch, train_s}}}`` of finished runs."""
    out: dict[str, dict[int, dict[str, float]]] = {}
    for path in sorted(Path(ablation_dir).glob("*/seed-*/metrics.json")):
        m = json.loads(path.read_text())
        if "test" not in m:  # unfinished or a tuning trial
            continue
        seed = int(path.parent.name.removeprefix("seed-"))
        out.setdefault(f"{name}/{path.parent.parent.name}", {})[seed] = {
            "test": m["test"]["macro_f1"],
            "val": m["val"]["macro_f1"],
            "best_epoch": m["best_epoch"],
            "train_s": m["train_seconds"],
        }
    return out


def _mean_std(xs: list[float]) -> str:
    std = statistics.stdev(xs) if len(xs) > 1 else 0.0
    return f"{statistics.fmean(xs):.4f} ± {std:.4f}"


def paired(a: dict[int, dict[str, float]], b: dict[int, dict[str, float]]) -> dict[str, object]:
    """Gap B − A in test macro-F1 on the shared seeds, with paired test p-values."""
    seeds = sorted(set(a) & set(b))
    x = [a[s]["test"] for s in seeds]
    y = [b[s]["test"] for s in seeds]
    gaps = [j - i for i, j in zip(x, y, strict=True)]
    out: dict[str, object] = {"seeds": seeds, "gaps": gaps}
    if len(seeds) >= 2:
        out["t_p"] = float(stats.ttest_rel(y, x).pvalue)
        out["wilcoxon_p"] = float(stats.wilcoxon(y, x).pvalue)
    return out


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("dirs", nargs="+", help="NAME=ABLATION_DIR")
    p.add_argument("--pair", action="append", default=[], help="NAME/VARIANT:NAME/VARIANT")
    args = p.parse_args()
    runs: dict[str, dict[int, dict[str, float]]] = {}
    for spec in args.dirs:
        name, _, path = spec.partition("=")
        runs.update(load_runs(name, Path(path)))
    print(
        "| model / variant | seeds | test macro-F1 | val macro-F1 | test per seed "
        "| best epochs | train s/run |"
    )
    print("|---|---|---|---|---|---|---|")
    for key, by_seed in runs.items():
        s = sorted(by_seed)
        test = [by_seed[i]["test"] for i in s]
        val = [by_seed[i]["val"] for i in s]
        per = " / ".join(f"{v:.3f}" for v in test)
        epochs = " / ".join(str(int(by_seed[i]["best_epoch"]) + 1) for i in s)
        secs = statistics.fmean(by_seed[i]["train_s"] for i in s)
        print(
            f"| {key} | {len(s)} | {_mean_std(test)} | {_mean_std(val)} | {per} | {epochs} "
            f"| {secs:.0f} |"
        )
    if args.pair:
        print(
            "\n| B − A (test macro-F1, same seeds) | n | mean ± std | per seed "
            "| paired t p | Wilcoxon p |"
        )
        print("|---|---|---|---|---|---|")
    for spec in args.pair:
        a, _, b = spec.partition(":")
        r = paired(runs[a], runs[b])
        gaps = r["gaps"]
        assert isinstance(gaps, list)
        per = " / ".join(f"{g:+.3f}" for g in gaps)
        t_p, w_p = r.get("t_p", float("nan")), r.get("wilcoxon_p", float("nan"))
        print(f"| {b} − {a} | {len(gaps)} | {_mean_std(gaps)} | {per} | {t_p:.3f} | {w_p:.3f} |")
    if args.pair:
        print("\n(With 5 seeds the smallest two-sided Wilcoxon p is 0.0625.)")


if __name__ == "__main__":
    main()
