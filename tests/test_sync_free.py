"""A training step between log points reads nothing back to the host.

On CPU every host read of a tensor (``.item()``, ``.tolist()``, ``bool``/``float``/``int`` of
a tensor, ``.numpy()``) is counted with a ``TorchFunctionMode``. Reads inside
``optimizer.step()`` are left out on CPU: the CPU AdamW reads its step counters, which are
host tensors there, while the fused CUDA AdamW keeps them on the GPU. On CUDA (``-m gpu``)
``torch.cuda.set_sync_debug_mode("error")`` turns any synchronisation of a step into an error.
"""

from __future__ import annotations

from collections import Counter

import pytest
import torch
from torch.optim.optimizer import (
    register_optimizer_step_post_hook,
    register_optimizer_step_pre_hook,
)
from torch.overrides import TorchFunctionMode

from mmaux.callbacks import Callback
from mmaux.training import Trainer

HOST_READS = {"item", "tolist", "__bool__", "__float__", "__int__", "__index__", "numpy"}


class HostReads(TorchFunctionMode):
    """Counts host reads of tensors by where the trainer is: (epoch, micro-batch)."""

    def __init__(self, trainer: Trainer):
        super().__init__()
        self.trainer = trainer
        self.calls: Counter[tuple[int, int]] = Counter()
        self.in_optimizer = False

    def __torch_function__(self, func, types, args=(), kwargs=None):
        if getattr(func, "__name__", "") in HOST_READS and not self.in_optimizer:
            st = self.trainer.state
            self.calls[(st.epoch, st.micro_in_epoch)] += 1
        return func(*args, **(kwargs or {}))


class LogPoints(Callback):
    def __init__(self) -> None:
        self.points: set[tuple[int, int]] = set()

    def on_log(self, trainer, step, values) -> None:
        self.points.add((trainer.state.epoch, trainer.state.micro_in_epoch))


@pytest.mark.parametrize(
    "extra",
    [
        (),
        ("aux.itm_negatives=hard", "train.grad_accum_steps=2"),
        ("model.family=mmbt", "aux.itm_negatives=hard", "aux.simcse_weight=0.1"),
    ],
    ids=["random", "hard", "mmbt"],
)
def test_steps_between_log_points_never_read_a_tensor_on_the_host(make_cfg, extra):
    cfg = make_cfg("train.log_every_steps=3", *extra)  # 96 posts / 16: 6 micro-batches/epoch
    logs = LogPoints()
    trainer = Trainer(cfg, callbacks=[logs])
    mode = HostReads(trainer)
    hooks = [
        register_optimizer_step_pre_hook(lambda *a: setattr(mode, "in_optimizer", True)),
        register_optimizer_step_post_hook(lambda *a: setattr(mode, "in_optimizer", False)),
    ]
    try:
        with mode:
            result = trainer.fit()
    finally:
        for h in hooks:
            h.remove()
    assert result.global_step == 12 // cfg.train.grad_accum_steps
    # Key (e, k) holds micro-batch k's forward, backward, optimizer step and, at a log
    # point, the one read of the loss terms; key (e, 0) is set-up and epoch start.
    quiet = [(e, k) for e in (0, 1) for k in range(1, 6) if (e, k) not in logs.points]
    assert len(quiet) >= 6, (quiet, logs.points)
    reads = {key: mode.calls[key] for key in quiet if mode.calls[key]}
    assert not reads, f"host reads between log points (epoch, micro-batch): {reads}"
    assert all(mode.calls[p] >= 1 for p in logs.points)  # the counter does see reads


@pytest.mark.gpu
@pytest.mark.skipif(not torch.cuda.is_available(), reason="needs CUDA")
@pytest.mark.parametrize("negatives", ["random", "hard"])
def test_cuda_steps_run_under_sync_debug_mode_error(make_cfg, negatives):
    from mmaux.assemble import assemble
    from mmaux.distributed import SINGLE
    from mmaux.train_step import (
        LossMeter,
        LossModule,
        build_optimizer,
        forward_backward,
        itm_generator,
        optimizer_step,
    )

    device = torch.device("cuda")
    cfg = make_cfg("train.device=cuda", f"aux.itm_negatives={negatives}")
    asm = assemble(cfg, device)
    model = asm.model
    opt = build_optimizer(model, cfg.train, device)
    gen = itm_generator(device, 0)
    meter = LossMeter(device)
    loader = asm.loader("train", cfg.train.batch_size, device=device)
    batches = [b for _, b in zip(range(4), loader, strict=False)]
    step = LossModule(model, SINGLE)
    params = [p for p in model.parameters() if p.requires_grad]

    def run(batch) -> None:
        batch = asm.to_device(batch, device)
        terms = forward_backward(step, batch, cfg.aux, None, gen, device, "bf16")
        meter.add(terms)
        optimizer_step(model, opt, params, cfg.train.max_grad_norm)

    run(batches[0])  # warm-up: lazy initialisation (optimizer state, cuBLAS) may sync once
    torch.cuda.synchronize()
    torch.cuda.set_sync_debug_mode("error")
    try:
        for batch in batches[1:]:
            run(batch)
    finally:
        torch.cuda.set_sync_debug_mode("default")
    values, _ = meter.read(SINGLE, logit_scale=model.logit_scale)  # the log point
    assert set(values) >= {"loss", "ce", "itc", "itm", "logit_scale"}


@pytest.mark.parametrize("attention", ["sdpa", "eager"])
def test_the_4d_padding_mask_gives_the_encoder_output_of_the_2d_mask(tiny_text_model, attention):
    from transformers import AutoModel

    from mmaux.config import config_from_dict
    from mmaux.models.encoders import load_text_encoder
    from mmaux.models.late import LateFusionModel

    text_cfg = {"name": str(tiny_text_model), "attention": attention}
    no_aux = {"itc_weight": 0, "itm_weight": 0}
    cfg = config_from_dict({"model": {"fusion": "text", "text": text_cfg}, "aux": no_aux})
    text = load_text_encoder(cfg.model.text)
    model = LateFusionModel(cfg, 2, text, None).eval()
    ids = torch.randint(1000, 2000, (3, 7))
    mask = torch.ones(3, 7, dtype=torch.long)
    mask[1, 4:] = 0
    mask[2, 2:] = 0
    reference = AutoModel.from_pretrained(tiny_text_model, attn_implementation=attention).eval()
    with torch.no_grad():
        want = reference(input_ids=ids, attention_mask=mask).last_hidden_state
        got, _ = model.encode_text(ids, mask)
    keep = mask.bool()
    torch.testing.assert_close(got[keep], want[keep], atol=1e-5, rtol=1e-5)
