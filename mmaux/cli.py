"""The ``mmaux`` command line: synth, validate, train, evaluate, ablate, config."""

from __future__ import annotations

import argparse
import contextlib
import json
import logging
import os
import sys
import traceback
from pathlib import Path

import yaml

from mmaux.config import Config, ConfigError, dump_config, load_config

DESCRIPTION = """\
mmaux trains multimodal (image + text) social-media post classifiers with the image-text
auxiliary losses ITC (contrastive) and ITM (matching). Every command reads params.yaml
(or --params FILE); --set KEY=VALUE overrides any key, e.g. --set aux.itc_weight=0.3.

Typical first session (no network needed):
  mmaux synth                 # write the embedded default data set to data/raw/
  mmaux train                 # train with params.yaml into runs/default/
  mmaux evaluate              # re-evaluate the trained run on the test split
  mmaux ablate --seeds 0 1 2  # text-only / image-only / fused CE / +ITC / +ITM / +ITC+ITM
  mmaux study --preset aux    # the same grid with paired statistics, plots and a report
"""


def _common(p: argparse.ArgumentParser) -> None:
    p.add_argument(
        "--params",
        default="params.yaml",
        metavar="FILE",
        help="configuration file (default: params.yaml)",
    )
    p.add_argument(
        "--set",
        dest="overrides",
        action="append",
        default=[],
        metavar="KEY=VALUE",
        help="override a configuration key; repeatable",
    )


def _cfg(args: argparse.Namespace, extra: list[str] | None = None) -> Config:
    return load_config(args.params, list(args.overrides) + list(extra or []))


def cmd_config(args: argparse.Namespace) -> int:
    """Print the resolved configuration."""
    print(yaml.safe_dump(dump_config(_cfg(args)), sort_keys=False), end="")
    return 0


def cmd_synth(args: argparse.Namespace) -> int:
    from mmaux.data.synth import generate

    cfg = _cfg(args)
    out = Path(args.out or cfg.data.root)
    summary = generate(out, cfg.synth, overwrite=args.overwrite)
    print(f"wrote {summary['n_posts']} posts ({summary['bytes'] / 1e6:.1f} MB) to {out}")
    for split, counts in summary["counts"].items():
        print(f"  {split:<5} " + "  ".join(f"{k}={v}" for k, v in counts.items()))
    return 0


def cmd_validate(args: argparse.Namespace) -> int:
    """Judge the manifest with the data rulebook (``data.rules``): list every error and
    warning; exit 1 on any error, 0 with warnings only."""
    from mmaux.data.manifest import SPLITS, read_dataset_info, write_skip_report
    from mmaux.data.rules import LEAK_KINDS, check_manifest

    cfg = _cfg(args)
    root = Path(cfg.data.root)
    labels = cfg.data.labels or list(read_dataset_info(root)["labels"])
    verdict = check_manifest(
        root / cfg.data.manifest, root, labels, cfg.data.rules, cfg.data.check_images
    )
    errors, warnings = verdict.errors(), verdict.warnings()
    usable = [rv.row for rv in verdict.accepted() if rv.row is not None]
    print(
        f"{verdict.file}: {len(verdict.rows)} rows, {len(usable)} usable posts, "
        f"{len(errors)} error(s), {len(warnings)} warning(s)"
    )
    for split in SPLITS:
        counts = {
            lab: sum(r["split"] == split and r["label"] == lab for r in usable) for lab in labels
        }
        print(f"  {split:<5} " + "  ".join(f"{k}={v}" for k, v in counts.items()))
    leaks = "  ".join(
        f"{k}={verdict.leak_groups[k]}" for k in LEAK_KINDS if k in verdict.leak_groups
    )
    print(f"  leakage across splits (groups): {leaks or 'not checked'}")
    for kind, found in (("error", errors), ("warning", warnings)):
        for finding in found[:20]:
            print(f"  {kind}: {finding} [{finding.rule}]", file=sys.stderr)
        if len(found) > 20:
            print(f"  ... and {len(found) - 20} more {kind}(s)", file=sys.stderr)
    if args.report:
        write_skip_report(errors + warnings, Path(args.report))
        print(f"errors and warnings written to {args.report}", file=sys.stderr)
    return 1 if errors else 0


def cmd_train(args: argparse.Namespace) -> int:
    from mmaux.metrics import format_report
    from mmaux.training import TrainingInterrupted, train

    extra = [f"train.output_dir={args.out}"] if args.out else []
    cfg = _cfg(args, extra)
    try:
        result = train(cfg, resume=args.resume)
    except TrainingInterrupted as stop:
        print(stop, file=sys.stderr)
        return 130
    if int(os.environ.get("RANK", "0")) > 0:
        return 0  # rank 0 reports
    m = result.metrics
    print(
        f"run: {result.run_dir}  best epoch {result.best_epoch}/{result.epochs_run}  "
        f"{result.global_step} steps in {m['train_seconds']:.1f} s "
        f"({m['steps_per_second']:.2f} steps/s, {m['device']}, {m['precision']})"
    )
    print(f"val macro-F1 {m['val']['macro_f1']:.4f}")
    if "test" in m:
        print("test:\n" + format_report(m["test"]))
    return 0


def cmd_evaluate(args: argparse.Namespace) -> int:
    from mmaux.evaluation import evaluate_run, write_predictions
    from mmaux.metrics import format_report

    run = Path(args.run or _cfg(args).train.output_dir)
    metrics, pred, labels = evaluate_run(run, args.split, args.overrides)
    split = metrics["split"]
    (run / f"eval_{split}.json").write_text(json.dumps(metrics, indent=2) + "\n")
    write_predictions(pred, labels, run / f"predictions_{split}.csv")
    print(f"{run} on {split}:\n{format_report(metrics)}")
    return 0


def cmd_import(args: argparse.Namespace) -> int:
    from mmaux.importers import OPTIONS, ImportFailed, run_import

    try:
        report = run_import(
            args.dataset,
            args.src,
            args.out,
            on_missing=args.on_missing,
            link=args.link,
            seed=args.seed,
            images=args.images,
            **{k: getattr(args, k) for k in OPTIONS},
        )
    except ImportFailed as err:
        print(f"error: {err}", file=sys.stderr)
        return 2
    print(report.summary())
    print(
        f"report: {Path(args.out) / 'import_report.json'}; train on it with "
        f"--set data.root={args.out}"
    )
    return 0


def cmd_ablate(args: argparse.Namespace) -> int:
    from mmaux.ablation import VARIANTS, run_ablation

    cfg = _cfg(args, ["train.progress=false"])
    variants = args.variants or list(VARIANTS)
    summary = run_ablation(cfg, args.seeds, Path(args.out), variants)
    from mmaux.ablation import format_table

    print(format_table(summary))
    print(f"\nwritten to {args.out}/ (runs.jsonl, summary.json, table.md)")
    return 0


def cmd_study(args: argparse.Namespace) -> int:
    from mmaux.study.grid import cell_config, cells, study_overrides
    from mmaux.study.runner import collect, report, run_cell, train_cells

    preset = study_overrides(args.preset)
    chosen = study_overrides(None, args.seeds, args.variants, args.sizes, args.out)
    cfg = load_config(args.params, [*preset, *args.overrides, *chosen])
    grid = cells(cfg)
    if args.list:
        from mmaux.training import finished_run

        for cell in grid:
            state = "finished" if finished_run(cell_config(cfg, cell)) else "to do"
            print(f"{cell.key:<50} {state}")
        return 0
    tracker = None
    if cfg.tracking.enabled and not args.no_track:
        from mmaux.tracking.study import StudyTracker

        tracker = StudyTracker(cfg)
    if args.cell:  # one cell, e.g. on a worker; the report is made later with --report
        from mmaux.study.grid import Cell
        from mmaux.study.workers import PARENT_ENV

        cell = Cell.parse(args.cell)
        if cell not in grid:
            raise ValueError(f"cell {args.cell!r} is not in this study; see mmaux study --list")
        if tracker is None:
            res = run_cell(cfg, cell)
        elif os.environ.get(PARENT_ENV):  # a worker of `--workers`: the parent is held open
            tracker.attach(os.environ[PARENT_ENV])
            res = run_cell(cfg, cell, tracker)
        else:
            with tracker.parent():
                res = run_cell(cfg, cell, tracker)
        print(f"{cell.key}: test macro-F1 {res.metrics['test']['macro_f1']:.4f}")
        return 0
    context = tracker.parent() if tracker is not None else contextlib.nullcontext()
    with context:
        if not args.report and args.workers > 1:
            from mmaux.study.workers import run_workers

            _, missing = collect(cfg)
            failed = run_workers(cfg, missing, args.workers, tracker and tracker.parent_id)
            if failed:
                raise RuntimeError(
                    f"{len(failed)} cell(s) failed, e.g. {failed[0].key}; logs in "
                    f"{cfg.study.out_dir}/logs/. Run again to retry them."
                )
        if args.report or args.workers > 1:
            results, missing = collect(cfg)
            if missing:
                print(f"{len(missing)} cell(s) not finished, left out of the report:",
                      file=sys.stderr)  # fmt: skip
                for cell in missing[:20]:
                    print(f"  {cell.key}", file=sys.stderr)
            if not results:
                raise ValueError("no finished cell to report on")
        else:
            results = train_cells(cfg, trainer=tracker) if tracker else train_cells(cfg)
        summary = report(cfg, results)
        if tracker is not None:
            from mmaux.study.report import report_files

            tracker.log_report(summary, report_files(cfg))
    out = Path(cfg.study.out_dir)
    print((out / "report.md").read_text())
    print(f"written to {out}/ (report.md, summary.json, cells.jsonl, plots/)")
    return 0


def _study_epilog() -> str:
    from mmaux.config import VARIANTS
    from mmaux.study.grid import PRESET_HELP, PRESETS

    lines = ["variants:"]
    lines += [f"  {v}" for v in VARIANTS]
    lines += ["", "presets (--preset NAME; --set and the options above override them):"]
    lines += [f"  {name:<13} {PRESET_HELP[name]}" for name in PRESETS]
    lines += [
        "",
        "examples:",
        "  mmaux study --preset aux --seeds 0 1 2 3 4",
        "  mmaux study --params params/real-data.yaml --preset low-resource",
        "  mmaux study --list                      # cells and which are finished",
        "  mmaux study --cell default/fused+itc/n-all/seed-1   # one cell (a worker)",
        "  mmaux study --report                    # report on the finished cells",
    ]
    return "\n".join(lines)


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog="mmaux", description=DESCRIPTION, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument("-v", "--verbose", action="store_true", help="debug logging")
    sub = parser.add_subparsers(dest="command", required=True, metavar="COMMAND")

    p = sub.add_parser(
        "synth",
        help="write the embedded default data set (synthetic posts)",
        description="Generate the deterministic synthetic data set (same seed, "
        "same bytes) into data.root, sized by the synth section of params.yaml.",
    )
    _common(p)
    p.add_argument("--out", help="output directory (default: data.root)")
    p.add_argument("--overwrite", action="store_true", help="replace an existing data set")
    p.set_defaults(func=cmd_synth)

    p = sub.add_parser(
        "validate",
        help="check the data with the rulebook; list errors and warnings",
        description="Judge the manifest with the data rulebook (data.rules), as training "
        "and the validate stage do: UTF-8 bytes, fields, empty, invisible-only or over-long "
        "text, labels, splits, duplicate ids, images inside the data root, present, within "
        "data.rules.max_image_pixels and decodable, leakage across splits and class "
        "balance. Exit 1 on any error; warnings (by data.rules severities) are listed.",
    )
    _common(p)
    p.add_argument(
        "--report", help="write errors and warnings as JSON Lines (file, line, rule, ...)"
    )
    p.set_defaults(func=cmd_validate)

    p = sub.add_parser(
        "train",
        help="train and evaluate a classifier",
        description="Train with params.yaml, keep the best epoch by validation "
        "macro-F1, evaluate it on val and test. Ctrl-C checkpoints and stops; "
        "--resume continues exactly where it stopped.",
    )
    _common(p)
    p.add_argument("--out", help="run directory (default: train.output_dir)")
    p.add_argument("--resume", action="store_true", help="continue from the run's checkpoint")
    p.set_defaults(func=cmd_train)

    p = sub.add_parser(
        "evaluate",
        help="evaluate a finished run on a split",
        description="Rebuild a finished run's model from its config.yaml and "
        "model.safetensors and evaluate it; writes eval_SPLIT.json and "
        "predictions_SPLIT.csv into the run directory.",
    )
    _common(p)
    p.add_argument("--run", help="run directory (default: train.output_dir)")
    p.add_argument("--split", choices=["train", "val", "test"], help="default: eval.split")
    p.set_defaults(func=cmd_evaluate)

    from mmaux.importers import IMPORTERS

    p = sub.add_parser(
        "import",
        help="convert a public data set into the manifest format",
        description="Read a data set in its published raw format and write a data directory "
        "(manifest.jsonl, dataset.json, images/, import_report.json). Source files are never "
        "modified; missing or unreadable images are listed, and fail the import or are dropped.",
    )
    p.add_argument("dataset", choices=sorted(IMPORTERS), help="raw format")
    p.add_argument("--src", required=True, help="raw data folder (datakey: the CSV file)")
    p.add_argument("--out", required=True, help="output data directory (must be new)")
    p.add_argument("--images", help="image folder (default: images/ in or beside --src)")
    p.add_argument(
        "--on-missing",
        choices=["fail", "drop"],
        default="fail",
        help="what to do with posts whose image is missing or unreadable",
    )
    p.add_argument(
        "--link",
        choices=["copy", "hardlink"],
        default="copy",
        help="copy images, or hard-link them (copies across file systems)",
    )
    p.add_argument("--seed", type=int, default=0, help="seed of the stratified split")
    p.add_argument(
        "--text-file",
        help="CSV with id,text columns supplying rehydrated post text "
        "(MICD; TIR's ids-only textimage.csv)",
    )
    p.add_argument(
        "--task", help="which labels to use where a data set has several (TIR: see its importer)"
    )
    p.add_argument("--fold", type=int, help="which numbered official split to use (MVSA)")
    p.set_defaults(func=cmd_import)

    p = sub.add_parser(
        "ablate",
        help="compare unimodal, fused and aux-loss variants over seeds",
        description="Train text-only, image-only, fused CE-only, +ITC, +ITM and "
        "+ITC+ITM on the same seeds; print mean ± std macro-F1 and the paired gap "
        "to fused CE-only. Finished runs are reused.",
    )
    _common(p)
    p.add_argument("--seeds", type=int, nargs="+", default=[0, 1, 2])
    p.add_argument("--variants", nargs="+", help="subset of variants (default: all six)")
    p.add_argument("--out", default="results/ablation", help="results directory")
    p.set_defaults(func=cmd_ablate)

    p = sub.add_parser(
        "study",
        help="a grid of runs (models x variants x training sizes x seeds) and its statistics",
        description="Train every cell of study.* (params.yaml) and compare the variants: "
        "paired gaps with bootstrap CIs, Wilcoxon and permutation p-values (Holm-corrected), "
        "test-set bootstraps, low-resource curves and subgroups; writes report.md, plots and "
        "summary.json to study.out_dir. Finished cells are reused and an interrupted one "
        "resumed; with tracking on, one MLflow parent run holds a child run per cell.",
        epilog=_study_epilog(),
        formatter_class=argparse.RawDescriptionHelpFormatter,
    )
    _common(p)
    p.add_argument("--preset", help="a named grid (see below)")
    p.add_argument("--seeds", type=int, nargs="+", help="study.seeds")
    p.add_argument("--variants", nargs="+", metavar="VARIANT", help="study.variants")
    p.add_argument("--sizes", nargs="+", metavar="N", help="study.sizes (numbers or 'all')")
    p.add_argument("--out", help="study.out_dir")
    p.add_argument("--list", action="store_true", help="list the cells and which are finished")
    p.add_argument("--cell", metavar="KEY", help="train only this cell (MODEL/VARIANT/n-N/seed-K)")
    p.add_argument("--report", action="store_true", help="report on finished cells; train none")
    p.add_argument("--no-track", action="store_true", help="no MLflow, whatever tracking.enabled")
    p.add_argument(
        "--workers",
        type=int,
        default=1,
        metavar="N",
        help="train N cells at a time, each in its own process with 1/N of the CPU threads",
    )
    p.set_defaults(func=cmd_study)

    p = sub.add_parser(
        "config",
        help="print the resolved configuration",
        description="Print params.yaml after defaults and --set overrides.",
    )
    _common(p)
    p.set_defaults(func=cmd_config)
    return parser


def main(argv: list[str] | None = None) -> int:
    args = build_parser().parse_args(argv)
    rank = int(os.environ.get("RANK", "0"))  # under torchrun, only rank 0 reports progress
    logging.basicConfig(
        level=logging.DEBUG if args.verbose else logging.INFO if rank == 0 else logging.WARNING,
        format="%(levelname)s %(name)s: %(message)s",
    )
    for noisy in ("httpx", "urllib3", "transformers", "timm", "huggingface_hub"):
        logging.getLogger(noisy).setLevel(logging.WARNING)
    os.environ.setdefault("HF_HUB_OFFLINE", "1")
    os.environ.setdefault("TRANSFORMERS_OFFLINE", "1")
    os.environ.setdefault("TOKENIZERS_PARALLELISM", "false")
    try:
        return int(args.func(args) or 0)
    except KeyboardInterrupt:
        print("interrupted", file=sys.stderr)
        return 130
    except Exception as err:
        if not isinstance(err, _user_errors()):
            raise
        if args.verbose:
            traceback.print_exc()
        print(error_message(err), file=sys.stderr)
        return 2


# Errors the user can fix (bad config or overrides, missing or existing files, bad data, an
# unloadable model, the trainer's refusals): one line on stderr, exit code 2, no traceback
# unless --verbose. Other exceptions are bugs and keep their traceback.
_USER_ERRORS: tuple[type[Exception], ...] = (ConfigError, ValueError, OSError)
_LAZY_USER_ERRORS = (("mmaux.models.encoders", "EncoderLoadError"),)  # heavy imports
_LISTED_ERRORS = (("mmaux.data.manifest", "ManifestError"),)  # headline, then the bad rows


def _loaded(names: tuple[tuple[str, str], ...]) -> tuple[type[Exception], ...]:
    """The named exception classes whose modules are imported (else none can be raised)."""
    found = (getattr(sys.modules.get(module), name, None) for module, name in names)
    return tuple(cls for cls in found if isinstance(cls, type))


def _user_errors() -> tuple[type[Exception], ...]:
    return (*_USER_ERRORS, *_loaded(_LAZY_USER_ERRORS))


def error_message(err: BaseException) -> str:
    """``error: ...`` on one line (a multi-line message is joined with "; "); a manifest
    error keeps its listing of bad rows on the following lines."""
    lines = [line.strip() for line in str(err).splitlines() if line.strip()]
    if not lines:
        return f"error: {type(err).__name__}"
    if isinstance(err, _loaded(_LISTED_ERRORS)):
        return "\n".join([f"error: {lines[0]}", *(f"  {line}" for line in lines[1:])])
    return f"error: {'; '.join(lines)}"


if __name__ == "__main__":
    sys.exit(main())
