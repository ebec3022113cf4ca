"""Every model family behind the one interface: ITM pairs, gradients, dropout, resume,
duplicate images and the MLflow model, on tiny random configurations of each family."""

from __future__ import annotations

import dataclasses
import shutil

import mlflow
import numpy as np
import pytest
import torch
from safetensors.torch import load_file
from torch import nn

from mmaux.assemble import assemble
from mmaux.callbacks import Callback
from mmaux.checkpoint import find_checkpoint
from mmaux.data.dataset import image_groups
from mmaux.data.manifest import load_manifest
from mmaux.losses import compute_losses, hard_itm_pairs, random_itm_pairs
from mmaux.training import Trainer, TrainingInterrupted, train

TINY = "{hidden_size: 32, num_attention_heads: 2, intermediate_size: 64"
FAMILIES = {
    "late": ("model.family=late", "model.fusion=attention"),
    "mmbt": ("model.family=mmbt",),
    "vilt": ("model.family=vilt", f"model.vilt.config={TINY}, num_hidden_layers: 2}}"),
    "lxmert": (
        "model.family=lxmert",
        f"model.lxmert.config={TINY}, l_layers: 1, r_layers: 1, x_layers: 1}}",
    ),
}
AUX = ("aux.itc_weight=0.2", "aux.itm_weight=0.2", "aux.simcse_weight=0.1")


def family_cfg(make_cfg, family: str, *extra: str):
    return make_cfg(*FAMILIES[family], *AUX, *extra)


def first_batch(asm, split: str = "train") -> dict[str, torch.Tensor]:
    loader = asm.loader(split, asm.cfg.train.batch_size)
    return asm.to_device(next(iter(loader)), torch.device("cpu"))


@pytest.mark.parametrize("family", list(FAMILIES))
@pytest.mark.parametrize("mode", ["random", "hard"])
def test_itm_labels_match_the_pairs_that_reached_the_head(make_cfg, family, mode):
    cfg = family_cfg(make_cfg, family, f"aux.itm_negatives={mode}")
    asm = assemble(cfg, torch.device("cpu"), splits=("train",))
    model, batch = asm.model.eval(), first_batch(asm)
    seen: list[torch.Tensor] = []
    hook = model.itm_head.register_forward_hook(lambda m, inp, out: seen.append(inp[0]))
    terms, out = compute_losses(model, batch, cfg.aux, None, torch.Generator().manual_seed(3))
    hook.remove()
    # The same draw, made again: the pairs compute_losses fed to the head.
    gen, groups = torch.Generator().manual_seed(3), batch["image_group"]
    b = batch["labels"].shape[0]
    if mode == "hard":
        t, i = model.itc_embeddings(out.encoded)
        pairs = hard_itm_pairs(t, i, model.logit_scale, gen, groups)
    else:
        pairs = random_itm_pairs(b, cfg.aux.itm_negative_prob, gen, "cpu", groups)
    fed = seen[0]
    assert fed.shape[0] == pairs.text_idx.shape[0] == (3 * b if mode == "hard" else b)
    same = groups[pairs.text_idx] == groups[pairs.image_idx]
    assert pairs.labels.tolist() == same.long().tolist()
    broken = [k for k in range(len(fed)) if pairs.labels[k] == 0]
    assert len(broken) >= 2
    for k in range(len(fed)):
        t_k, i_k = pairs.text_idx[k : k + 1], pairs.image_idx[k : k + 1]
        torch.testing.assert_close(fed[k], model.fuse(out.encoded, t_k, i_k)[0], atol=1e-4, rtol=0)
    for k in broken:  # a broken pair never sees its matched pair's output
        assert not torch.allclose(fed[k], out.fused[pairs.text_idx[k]], atol=1e-4)


@pytest.mark.parametrize("family", list(FAMILIES))
def test_itc_and_simcse_gradients_reach_both_sides(make_cfg, family):
    cfg = family_cfg(make_cfg, family)
    asm = assemble(cfg, torch.device("cpu"), splits=("train",))
    model, batch = asm.model.train(), first_batch(asm)
    terms, _ = compute_losses(model, batch, cfg.aux, None, torch.Generator().manual_seed(0))
    pretrained = {id(p) for p in model.encoder_parameters()}

    def grads(loss: torch.Tensor) -> dict[str, float]:
        model.zero_grad(set_to_none=True)
        loss.backward(retain_graph=True)
        return {
            n: float(p.grad.abs().sum()) if p.grad is not None else 0.0
            for n, p in model.named_parameters()
            if p.requires_grad
        }

    itc = grads(terms.itc)
    assert itc["text_proj.weight"] > 0 and itc["image_proj.weight"] > 0
    assert itc["logit_scale"] != 0
    assert itc["classifier.weight"] == 0  # ITC never touches the class head
    # The pretrained transformer (text side) learns from ITC; for families whose image side
    # trains (ViLT's patch embedding, LXMERT's visual layers) it learns too.
    names = dict(model.named_parameters())
    assert any(itc[n] > 0 for n, p in names.items() if id(p) in pretrained)
    simcse = grads(terms.simcse)
    assert simcse["simcse_head.0.weight"] > 0
    assert any(simcse[n] > 0 for n, p in names.items() if id(p) in pretrained)
    assert simcse["image_proj.weight"] == 0 and simcse["classifier.weight"] == 0


class StopAt(Callback):
    def __init__(self, step: int):
        self.step = step

    def on_step_end(self, trainer, step):
        if step == self.step:
            trainer.request_stop()


@pytest.mark.parametrize("family", ["mmbt", "vilt", "lxmert"])
def test_resume_is_bit_identical(make_cfg, tmp_path, family):
    extra = ("train.epochs=2", "aux.itm_negatives=hard")
    full = train(family_cfg(make_cfg, family, f"train.output_dir={tmp_path / 'full'}", *extra))
    cfg = family_cfg(make_cfg, family, f"train.output_dir={tmp_path / 'cut'}", *extra)
    with pytest.raises(TrainingInterrupted):
        Trainer(cfg, callbacks=[StopAt(4)]).fit()
    assert find_checkpoint(cfg.train.output_dir / "checkpoint") is not None
    resumed = Trainer(cfg).fit(resume=True)
    assert resumed.metrics["test"] == full.metrics["test"]
    a = load_file(resumed.run_dir / "model.safetensors")
    b = load_file(full.run_dir / "model.safetensors")
    assert a.keys() == b.keys() and all(torch.equal(a[k], b[k]) for k in a)
    steps = (cfg.train.output_dir / "steps.jsonl").read_text()
    assert steps == (full.run_dir / "steps.jsonl").read_text()
    epochs = [line for line in (full.run_dir / "epochs.jsonl").read_text().splitlines()]
    assert all('"train_simcse"' in e and '"val_alignment"' in e for e in epochs)


def test_posts_sharing_an_image_are_never_each_others_negatives():
    groups = torch.tensor([0, 0, 0, 1, 1, 2, 3, 3])
    same = groups[:, None] == groups[None, :]
    emb = nn.functional.normalize(torch.randn(8, 4), dim=-1)
    for seed in range(50):
        gen = torch.Generator().manual_seed(seed)
        for pairs in (
            random_itm_pairs(8, 0.9, gen, groups=groups),
            hard_itm_pairs(emb, emb, torch.tensor(2.0), gen, groups),
        ):
            label = same[pairs.text_idx, pairs.image_idx]
            assert pairs.labels.tolist() == label.long().tolist()
        assert (~same[pairs.text_idx[8:], pairs.image_idx[8:]]).all()  # hard: all negatives
    # A batch that shows one image only has no negative to draw: every pair stays real.
    one = torch.zeros(4, dtype=torch.long)
    pairs = random_itm_pairs(4, 1.0, torch.Generator().manual_seed(0), groups=one)
    assert pairs.labels.tolist() == [1, 1, 1, 1]
    pairs = hard_itm_pairs(emb[:4], emb[:4], torch.tensor(2.0), torch.Generator(), one)
    assert pairs.labels.tolist() == [1] * 12


def test_image_groups_follow_file_content_not_names(synth_root, tmp_path):
    root = tmp_path / "data"
    shutil.copytree(synth_root, root)
    manifest = load_manifest(root / "manifest.jsonl", root=root)
    posts = manifest.split("train")[:4]
    copy = root / "copy-of-first.png"
    shutil.copy(root / posts[0].image, copy)
    posts.append(dataclasses.replace(posts[1], image=copy.name))
    groups = image_groups(root, posts)
    assert groups[4] == groups[0] and len(set(groups[:4])) == 4


@pytest.mark.parametrize("family", ["mmbt", "vilt", "lxmert"])
def test_the_mlflow_model_round_trips_each_family(make_cfg, tmp_path, family, synth_root):
    import pandas as pd

    from mmaux.evaluation import evaluate_run
    from mmaux.tracking.export import log_model

    cfg = family_cfg(make_cfg, family, "train.epochs=1")
    result = train(cfg)
    metrics, pred, labels = evaluate_run(result.run_dir, "test")
    assert metrics["macro_f1"] == pytest.approx(result.metrics["test"]["macro_f1"])
    posts = load_manifest(synth_root / "manifest.jsonl", root=synth_root).split("test")
    frame = pd.DataFrame(
        {"text": [p.text for p in posts], "image": [str(synth_root / p.image) for p in posts]}
    )
    mlflow.set_tracking_uri(f"sqlite:///{tmp_path / 'mlflow.db'}")
    try:
        with mlflow.start_run():
            info = log_model(result.run_dir)
        out = mlflow.pyfunc.load_model(info.model_uri).predict(frame)
    finally:
        mlflow.set_tracking_uri(None)
    probs = np.stack([out[f"p_{n}"].to_numpy() for n in labels], axis=1)
    np.testing.assert_allclose(probs, pred.probs, atol=1e-5)
