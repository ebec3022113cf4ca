"""The ViLT family: a tiny random ViLT on CPU through the shared model interface."""

from __future__ import annotations

import socket
from collections import Counter

import pytest
import torch
from torch import nn
from torch.overrides import TorchFunctionMode

from mmaux.config import config_from_dict
from mmaux.losses import compute_losses, hard_itm_pairs, random_itm_pairs
from mmaux.models import build_model
from mmaux.models.encoders import EncoderLoadError

TINY = {"hidden_size": 32, "num_hidden_layers": 2, "num_attention_heads": 2}
TINY |= {"intermediate_size": 64, "hidden_dropout_prob": 0.1}
TEXTS = ["a cat on a mat", "two dogs running in the park today", "sunset", "hello world", "x y"]
B, S, L = len(TEXTS), 64, 16


def vilt_cfg(negatives: str = "random", vilt: dict | None = None, **data):
    return config_from_dict(
        {
            "model": {"family": "vilt", "vilt": vilt or {"config": TINY}},
            "data": {"image_size": S, "max_text_length": L, **data},
            "aux": {
                "itc_weight": 0.2,
                "itm_weight": 0.2,
                "simcse_weight": 0.1,
                "itm_negatives": negatives,
            },
        }
    )


@pytest.fixture(scope="module")
def built():
    torch.manual_seed(0)
    return build_model(vilt_cfg(), num_classes=3)


def make_batch(tokenizer) -> dict[str, torch.Tensor]:
    tok = tokenizer(TEXTS, padding="max_length", max_length=L, truncation=True, return_tensors="pt")
    gen = torch.Generator().manual_seed(1)
    return {
        "input_ids": tok["input_ids"],
        "attention_mask": tok["attention_mask"],
        "pixel_values": torch.randn(B, 3, S, S, generator=gen),
        "labels": torch.tensor([0, 1, 2, 0, 1]),
    }


def test_build_returns_the_model_the_tokenizer_and_vilt_preprocessing(built):
    model, text, image = built
    assert model.family == "vilt" and model.image_encoder is None and model.text_encoder is None
    assert model.frozen_modules() == [] and model.pretrained_modules() == [model.vilt]
    assert image.data_config["input_size"] == (3, S, S)
    assert image.data_config["mean"] == image.data_config["std"] == (0.5, 0.5, 0.5)
    assert image.model is model.vilt.embeddings.patch_embeddings
    assert model.vilt.config.vocab_size == len(text.tokenizer)
    assert all(p.requires_grad for p in model.parameters())
    head = {id(p) for p in model.head_parameters()}
    assert head and not head & {id(p) for p in model.vilt.parameters()}


@pytest.mark.parametrize("config_size", [S, 96], ids=["same-grid", "interpolated-grid"])
def test_encode_and_fuse_give_vilts_own_pooled_output(config_size):
    torch.manual_seed(0)
    cfg = vilt_cfg(vilt={"config": {**TINY, "image_size": config_size}})
    model, text, _ = build_model(cfg, 3)
    batch = make_batch(text.tokenizer)
    model.eval()
    with torch.no_grad():
        got = model.fuse(model.encode(batch))
        want = model.vilt(
            input_ids=batch["input_ids"],
            attention_mask=batch["attention_mask"],
            pixel_values=batch["pixel_values"],
        ).pooler_output
    torch.testing.assert_close(got, want, atol=1e-5, rtol=1e-5)


@pytest.mark.parametrize("negatives", ["random", "hard"])
def test_all_losses_run_and_itc_simcse_reach_vilt(built, negatives):
    model, text, _ = built
    model.train().zero_grad()
    batch = make_batch(text.tokenizer)
    aux = vilt_cfg(negatives).aux
    terms, _ = compute_losses(model, batch, aux, None, torch.Generator().manual_seed(0))
    assert all(t is not None and torch.isfinite(t) for t in (terms.itc, terms.itm, terms.simcse))
    terms.total.backward()
    assert all(p.grad is not None for p in model.parameters()), "a parameter got no gradient"
    # ITC and SimCSE alone train the embeddings, the patch projection and the layers.
    model.zero_grad()
    emb = model.vilt.embeddings
    enc = model.encode(batch)
    t, i = model.itc_embeddings(enc)
    first, second = model.simcse_embeddings(enc)
    (t @ i.t()).sum().add(first.sum() + second.sum()).backward()
    reached = [
        emb.text_embeddings.word_embeddings.weight,
        emb.patch_embeddings.projection.weight,
        emb.position_embeddings,
        model.vilt.encoder.layer[0].attention.attention.query.weight,
        model.vilt.encoder.layer[-1].output.dense.weight,
        model.text_proj.weight,
        model.image_proj.weight,
        model.simcse_head[0].weight,
    ]
    for p in reached:
        assert p.grad is not None and p.grad.abs().sum() > 0
    model.zero_grad()


def _itm_head_inputs(model) -> tuple[list[torch.Tensor], object]:
    seen: list[torch.Tensor] = []
    handle = model.itm_head.register_forward_hook(lambda m, args, out: seen.append(args[0]))
    return seen, handle


def test_random_itm_pairs_reach_the_head_as_their_own_fusion(built):
    model, text, _ = built
    batch = make_batch(text.tokenizer)
    seed = next(
        k
        for k in range(100)
        if (random_itm_pairs(B, 0.5, torch.Generator().manual_seed(k)).labels == 0).any()
    )
    pairs = random_itm_pairs(B, 0.5, torch.Generator().manual_seed(seed))
    seen, handle = _itm_head_inputs(model)
    model.eval()
    try:
        with torch.no_grad():
            _, out = compute_losses(
                model, batch, vilt_cfg().aux, None, torch.Generator().manual_seed(seed)
            )
            rows = seen[0]
            assert rows.shape[0] == len(pairs.labels)
            for k, (t, i, label) in enumerate(
                zip(
                    pairs.text_idx.tolist(),
                    pairs.image_idx.tolist(),
                    pairs.labels.tolist(),
                    strict=True,
                )
            ):
                own = model.fuse(out.encoded, torch.tensor([t]), torch.tensor([i]))[0]
                torch.testing.assert_close(rows[k], own, atol=1e-5, rtol=1e-5)
                if label == 0:
                    assert not torch.allclose(rows[k], out.fused[t], atol=1e-4)
    finally:
        handle.remove()


def test_hard_itm_negatives_reach_the_head_as_their_own_fusion(built):
    model, text, _ = built
    batch = make_batch(text.tokenizer)
    seen, handle = _itm_head_inputs(model)
    model.eval()
    try:
        with torch.no_grad():
            aux = vilt_cfg("hard").aux
            _, out = compute_losses(model, batch, aux, None, torch.Generator().manual_seed(3))
            t_emb, i_emb = model.itc_embeddings(out.encoded)
            pairs = hard_itm_pairs(
                t_emb, i_emb, model.logit_scale, torch.Generator().manual_seed(3)
            )
            rows = seen[0]
            assert rows.shape[0] == 3 * B and pairs.labels[B:].eq(0).all()
            torch.testing.assert_close(rows[:B], out.fused)  # the real prefix is reused
            neg = model.fuse(out.encoded, pairs.text_idx[B:], pairs.image_idx[B:])
            torch.testing.assert_close(rows[B:], neg, atol=1e-5, rtol=1e-5)
            assert not torch.allclose(rows[B : 2 * B], out.fused, atol=1e-4)
    finally:
        handle.remove()


@pytest.mark.parametrize("negatives", ["random", "hard"])
@pytest.mark.parametrize("train", [True, False], ids=["train", "eval"])
def test_the_patch_embedding_runs_once_per_step(built, negatives, train):
    model, text, _ = built
    calls = Counter()
    conv = model.vilt.embeddings.patch_embeddings.projection
    handle = conv.register_forward_hook(lambda *a: calls.update(["conv"]))
    model.train(train)
    try:
        with torch.set_grad_enabled(train):
            aux = vilt_cfg(negatives).aux
            terms, _ = compute_losses(
                model, make_batch(text.tokenizer), aux, None, torch.Generator().manual_seed(0)
            )
        assert terms.itm is not None and terms.itc is not None and terms.simcse is not None
    finally:
        handle.remove()
    assert calls["conv"] == 1


def test_dropout_stays_active_in_every_training_epoch(built):
    model, text, _ = built
    drops = [m for m in model.modules() if isinstance(m, nn.Dropout)]
    assert any(m.p > 0 for m in model.vilt.modules() if isinstance(m, nn.Dropout))
    for _ in range(3):  # epochs: train, then the per-epoch evaluation switches to eval
        model.train()
        assert all(m.training for m in drops)
        model.eval()
        assert not any(m.training for m in drops)
    model.train()
    assert all(m.training for m in drops)
    batch = make_batch(text.tokenizer)
    with torch.no_grad():
        a, b = model(batch).logits, model(batch).logits
        enc = model.encode(batch)
        first, second = model.unimodal(enc)[0], model.text_view(enc)
    assert not torch.allclose(a, b)
    assert not torch.allclose(first, second)  # SimCSE's two views differ


def test_random_build_never_touches_the_network(monkeypatch):
    monkeypatch.setenv("HF_HUB_OFFLINE", "1")

    def refuse(*args, **kwargs):
        raise AssertionError("network access during a random ViLT build")

    monkeypatch.setattr(socket.socket, "connect", refuse)
    monkeypatch.setattr(socket, "create_connection", refuse)
    model, _, _ = build_model(vilt_cfg(), 3)
    assert model.vilt.config.hidden_size == TINY["hidden_size"]


def test_a_saved_vilt_loads_from_its_directory(built, tmp_path):
    model, text, _ = built
    model.vilt.save_pretrained(tmp_path)
    text.tokenizer.save_pretrained(tmp_path)
    loaded, text2, image2 = build_model(vilt_cfg(vilt={"name": str(tmp_path)}), 3)
    want = model.vilt.state_dict()
    got = loaded.vilt.state_dict()
    assert got.keys() == want.keys()
    assert all(torch.equal(got[k], want[k]) for k in want)
    assert len(text2.tokenizer) == len(text.tokenizer)
    assert image2.data_config["input_size"] == (3, S, S)


@pytest.mark.parametrize(
    ("name", "needle"),
    [
        ("/no/such/vilt-dir", "no such directory"),
        ("nobody-xyz/no-such-vilt-model", "local_files_only=true forbids downloads"),
    ],
)
def test_bad_sources_raise_a_clear_load_error(name, needle):
    with pytest.raises(EncoderLoadError, match=needle) as info:
        build_model(vilt_cfg(vilt={"name": name}), 3)
    assert name in str(info.value) and "\n" not in str(info.value)


def test_a_directory_without_a_model_raises_a_clear_load_error(tmp_path):
    with pytest.raises(EncoderLoadError, match="no config.json"):
        build_model(vilt_cfg(vilt={"name": str(tmp_path)}), 3)


def test_another_architecture_is_refused_not_half_loaded(tiny_text_model):
    with pytest.raises(EncoderLoadError, match="is a 'bert' model, not ViLT"):
        build_model(vilt_cfg(vilt={"name": str(tiny_text_model)}), 3)


def test_a_vilt_task_checkpoint_loads_its_backbone(built, tmp_path):
    from transformers import ViltForMaskedLM

    model, text, _ = built
    mlm = ViltForMaskedLM(model.vilt.config)
    mlm.save_pretrained(tmp_path)
    text.tokenizer.save_pretrained(tmp_path)
    loaded, _, _ = build_model(vilt_cfg(vilt={"name": str(tmp_path)}), 3)
    want = mlm.vilt.state_dict()
    assert all(torch.equal(v, want[k]) for k, v in loaded.vilt.state_dict().items())


def test_an_unknown_config_key_is_refused():
    with pytest.raises(EncoderLoadError, match="unknown ViltConfig key.*hiden_size"):
        build_model(vilt_cfg(vilt={"config": {**TINY, "hiden_size": 16}}), 3)


def test_an_image_size_the_patch_does_not_divide_is_refused():
    with pytest.raises(EncoderLoadError, match="data.image_size=72"):
        build_model(vilt_cfg(vilt={"config": {**TINY, "patch_size": 32}}, image_size=72), 3)


def test_text_longer_than_the_position_table_is_refused():
    with pytest.raises(EncoderLoadError, match="data.max_text_length=64"):
        cfg = vilt_cfg(vilt={"config": {**TINY, "max_position_embeddings": 40}}, max_text_length=64)
        build_model(cfg, 3)


HOST_READS = {"item", "tolist", "__bool__", "__float__", "__int__", "__index__", "numpy"}


class HostReads(TorchFunctionMode):
    """Counts host reads of tensors (as tests/test_sync_free.py does on CPU)."""

    def __init__(self) -> None:
        super().__init__()
        self.calls: Counter[str] = Counter()

    def __torch_function__(self, func, types, args=(), kwargs=None):
        name = getattr(func, "__name__", "")
        if name in HOST_READS:
            self.calls[name] += 1
        return func(*args, **(kwargs or {}))


@pytest.mark.parametrize("negatives", ["random", "hard"])
def test_a_training_step_reads_nothing_back_to_the_host(built, negatives):
    model, text, _ = built
    model.train()
    batch = make_batch(text.tokenizer)
    aux = vilt_cfg(negatives).aux
    gen = torch.Generator().manual_seed(0)
    mode = HostReads()
    with mode:
        terms, _ = compute_losses(model, batch, aux, None, gen)
        terms.total.backward()
    model.zero_grad()
    assert not mode.calls, f"host reads in a ViLT step: {dict(mode.calls)}"
    probe = HostReads()
    with probe:
        terms.total.item()
    assert probe.calls["item"] == 1  # the counter does see reads


def test_simcse_without_itc_never_runs_the_image_only_pass():
    torch.manual_seed(0)
    cfg = config_from_dict(
        {
            "model": {"family": "vilt", "vilt": {"config": TINY}},
            "data": {"image_size": S, "max_text_length": L},
            "aux": {"itc_weight": 0, "itm_weight": 0, "simcse_weight": 0.1},
        }
    )
    model, text, _ = build_model(cfg, 3)
    lengths: list[int] = []  # sequence length of each transformer pass
    hook = model.vilt.encoder.register_forward_hook(
        lambda m, args, out: lengths.append(args[0].shape[1])
    )
    terms, _ = compute_losses(
        model.train(), make_batch(text.tokenizer), cfg.aux, None, torch.Generator()
    )
    hook.remove()
    assert terms.simcse is not None and terms.itc is None
    n_image = 1 + (S // model.vilt.config.patch_size) ** 2
    assert lengths == [L + n_image, L, L]  # the joint pass, then two text-only views
