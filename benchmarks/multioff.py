"""The real-data study on MultiOFF (offensive election memes), offline encoders, one command.

Steps, each reused when its output already exists (an interrupted run continues):

1. import the raw MultiOFF folder (``mmaux import multioff``; the one image missing from the
   public copy is dropped and listed in ``data/import_report.json``);
2. the val/test shift probe: linear models on frozen image features and on TF-IDF text,
   trained on train, scored on val and on test (``shift.json``): do val and test agree
   about which modality carries the label?
3. the aux study of ``params/real-data.yaml`` (CE, +ITC, +ITM, +ITC+ITM, text-only on
   ``--seeds``, default 10) with paired statistics (``study/report.md``);
4. the low-resource study: CE and +ITC+ITM (``--lowres-variants``) at ``--sizes`` training
   posts and all,
   on ``--lowres-seeds`` (default 5), sharing the cells of step 3 (``low-resource/report.md``).

Writes ``OUT/benchmark.json`` (commands, timings, machine). The data set stays where it is.

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
from typing import Any

import numpy as np
import torch

from mmaux.cli import main as cli_main
from mmaux.config import load_config
from mmaux.importers import import_multioff

REPO = Path(__file__).resolve().parents[1]
DEFAULT_SRC = REPO.parent / "shared" / "datasets" / "multioff"


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


def shift_probe(cfg) -> dict[str, dict[str, Any]]:
    """Macro-F1 of linear probes fit on train, on train / val / test: a logistic regression on
    the frozen image encoder's pooled features, and one on TF-IDF word n-grams of the text."""
    from sklearn.feature_extraction.text import TfidfVectorizer
    from sklearn.linear_model import LogisticRegression
    from sklearn.metrics import f1_score

    from mmaux.assemble import load_data
    from mmaux.data.features import cached_image_features, weights_digest
    from mmaux.data.images import build_transform
    from mmaux.models.encoders import load_image_encoder

    manifest = load_data(cfg)
    enc = load_image_encoder(cfg.model.image)
    transform = build_transform(enc.data_config, cfg.data.image_size)
    encoder_id = {"name": cfg.model.image.name, "kwargs": {}, "weights": weights_digest(enc.model)}
    feats, _ = cached_image_features(
        enc.model,
        encoder_id,
        manifest.root,
        [p.image for p in manifest.posts],
        transform,
        cfg.data.cache_dir,
        False,
        torch.device("cpu"),
        progress=True,
    )
    label = manifest.label_index()
    splits = {s: manifest.split(s) for s in ("train", "val", "test")}
    y = {s: np.array([label[p.label] for p in ps]) for s, ps in splits.items()}
    image = {s: feats.pooled[[feats.rows[p.image] for p in ps]].numpy() for s, ps in splits.items()}
    tfidf = TfidfVectorizer(ngram_range=(1, 2), min_df=2, sublinear_tf=True)
    tfidf.fit([p.text for p in splits["train"]])
    text = {s: tfidf.transform([p.text for p in ps]) for s, ps in splits.items()}
    from mmaux.study.stats import test_set_bootstrap

    out: dict[str, dict[str, Any]] = {}
    for name, x in (("image (frozen features)", image), ("text (TF-IDF)", text)):
        probe = LogisticRegression(C=1.0, max_iter=5000, class_weight="balanced")
        probe.fit(x["train"], y["train"])
        out[name] = {"train": round(float(f1_score(y["train"], probe.predict(x["train"]),
                                                   average="macro")), 4)}  # fmt: skip
        for s in ("val", "test"):  # with a 95% CI from resampling the split's posts
            boot = test_set_bootstrap(y[s], [probe.predict(x[s])], len(label), n_resamples=2000)
            out[name][s] = round(boot["mean"], 4)
            out[name][f"{s}_ci"] = [round(boot["ci_low"], 4), round(boot["ci_high"], 4)]
    return out


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--src", type=Path, default=DEFAULT_SRC, help="raw MultiOFF folder")
    parser.add_argument("--out", type=Path, default=REPO / "results" / "multioff")
    parser.add_argument("--params", type=Path, default=REPO / "params" / "real-data.yaml")
    parser.add_argument("--seeds", type=int, default=10, help="seeds of the aux study")
    parser.add_argument("--lowres-seeds", type=int, default=5)
    parser.add_argument("--sizes", type=int, nargs="+", default=[50, 100])
    parser.add_argument(
        "--lowres-variants", nargs="+", default=["fused-ce", "fused+itc+itm"], metavar="VARIANT"
    )
    parser.add_argument("--track", action="store_true", help="MLflow (tracking.* of --params)")
    parser.add_argument("--workers", type=int, default=2, help="cells trained at a time")
    parser.add_argument("--set", dest="overrides", action="append", default=[])
    parser.add_argument(
        "--studies", nargs="+", choices=["aux", "low-resource"], default=["aux", "low-resource"],
        help="which studies to run (finished cells are reused either way)",
    )
    args = parser.parse_args()

    out = args.out.resolve()
    data = out / "data"
    timings: dict[str, float] = {}
    started = time.perf_counter()
    if not (data / "manifest.jsonl").is_file():
        print(import_multioff(args.src, data, on_missing="drop").summary())
    timings["import_s"] = time.perf_counter() - started

    common = [
        f"data.root={data}",
        f"data.cache_dir={out / 'cache'}",
        f"study.cells_dir={out / 'cells'}",
        *args.overrides,
    ]
    base = load_config(args.params, common)

    t0 = time.perf_counter()
    shift_path = out / "shift.json"
    if not shift_path.is_file():
        shift_path.write_text(json.dumps(shift_probe(base), indent=2) + "\n")
    shift = json.loads(shift_path.read_text())
    timings["shift_probe_s"] = time.perf_counter() - t0
    print("val/test shift probe (macro-F1):", json.dumps(shift))

    studies = {
        "aux": [
            "--seeds",
            *map(str, range(args.seeds)),
            "--out",
            str(out / "study"),
            "--set",
            "study.name=multioff-aux",
        ],
        "low-resource": [
            "--preset",
            "low-resource",
            "--sizes",
            *map(str, args.sizes),
            "all",
            "--variants",
            *args.lowres_variants,
            "--seeds",
            *map(str, range(args.lowres_seeds)),
            "--out",
            str(out / "low-resource"),
            "--set",
            "study.name=multioff-low-resource",
        ],
    }
    reports = {}
    for name, extra in studies.items():
        if name not in args.studies:
            continue
        t0 = time.perf_counter()
        argv = ["study", "--params", str(args.params), *extra]
        argv += [x for o in common for x in ("--set", o)]
        argv += ["--workers", str(args.workers), *([] if args.track else ["--no-track"])]
        if cli_main(argv) != 0:
            raise SystemExit(f"study {name} failed")
        timings[f"{name}_s"] = time.perf_counter() - t0
        reports[name] = str(out / ("study" if name == "aux" else name) / "report.md")
    timings["total_s"] = time.perf_counter() - started

    payload = {
        "command": "python benchmarks/multioff.py "
        + f"--params {args.params} --seeds {args.seeds} --lowres-seeds {args.lowres_seeds} "
        + f"--sizes {' '.join(map(str, args.sizes))} --workers {args.workers} "
        + f"--lowres-variants {' '.join(args.lowres_variants)}"
        + f" --studies {' '.join(args.studies)}"
        + "".join(f" --set {o}" for o in args.overrides),
        "shift_probe": shift,
        "reports": reports,
        "timings": timings,
        "peak_rss_gib": resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 2**20,
        "machine": machine(),
    }
    (out / "benchmark.json").write_text(json.dumps(payload, indent=2, default=str) + "\n")
    for name, path in reports.items():
        print(f"\n===== {name}: {path}\n")
        print(Path(path).read_text())
    print(
        f"total {timings['total_s'] / 60:.1f} min "
        + ", ".join(f"{k} {v:.0f} s" for k, v in timings.items() if k != "total_s")
        + f" on {payload['machine']}"
    )


if __name__ == "__main__":
    main()
