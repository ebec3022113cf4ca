"""The LXMERT family on a tiny random configuration: the split forward (single streams once,
cross-modality layers per pairing), ITM pairs, ITC/SimCSE gradients, cached features,
dropout, region boxes and loading."""

from __future__ import annotations

import logging
from typing import Any

import pytest
import torch
from torch import nn

from mmaux.config import config_from_dict
from mmaux.losses import compute_losses, hard_itm_pairs, random_itm_pairs
from mmaux.models import build_model
from mmaux.models.encoders import EncoderLoadError, image_tokens_and_pooled
from mmaux.models.lxmert import LxmertFamily, grid_boxes, region_boxes

TINY = {
    "hidden_size": 32,
    "num_attention_heads": 2,
    "intermediate_size": 64,
    "l_layers": 1,
    "r_layers": 1,
    "x_layers": 1,
}
TEXTS = [
    "a cat sleeps on the mat",
    "heavy rain over the harbour tonight",
    "sunny",
    "the mountain trail was closed after the storm",
    "two dogs",
    "fresh bread from the corner bakery",
]


def make_cfg(*, lxmert: dict[str, Any] | None = None, image: str = "test_resnet", **aux: Any):
    aux = {"itc_weight": 0.2, "itm_weight": 0.2, "simcse_weight": 0.1, **aux}
    return config_from_dict(
        {
            "model": {
                "family": "lxmert",
                "lxmert": {"config": dict(TINY), **(lxmert or {})},
                "image": {"name": image, "pretrained": False},
            },
            "data": {"image_size": 64, "max_text_length": 16},
            "aux": aux,
        }
    )


def build(seed: int = 0, **kwargs: Any):
    torch.manual_seed(seed)
    cfg = make_cfg(**kwargs)
    model, text, image = build_model(cfg, 3)
    assert isinstance(model, LxmertFamily)
    return cfg, model, text


def make_batch(tokenizer, seed: int = 0) -> dict[str, torch.Tensor]:
    gen = torch.Generator().manual_seed(seed)
    # Images that differ in brightness and contrast as well as in their noise: a random
    # encoder maps plain noise images to almost the same features.
    n = len(TEXTS)
    pixels = torch.randn(n, 3, 64, 64, generator=gen) * torch.linspace(0.5, 3, n).view(n, 1, 1, 1)
    pixels = pixels + torch.linspace(-2, 2, n).view(n, 1, 1, 1)
    tok = tokenizer(
        TEXTS, padding="max_length", max_length=16, truncation=True, return_tensors="pt"
    )
    return {
        "input_ids": tok["input_ids"],
        "attention_mask": tok["attention_mask"],
        "pixel_values": pixels,
        "labels": torch.tensor([0, 1, 2, 0, 1, 2]),
    }


def test_build_returns_the_family_its_tokenizer_and_the_timm_encoder():
    cfg, model, text = build()
    assert model.family == "lxmert" and model.needs_image_tokens
    assert model.text_encoder is None and text.model is model.lxmert
    assert model.image_encoder is not None and not model.image_encoder.training
    conf = model.lxmert.config
    assert conf.visual_feat_dim == model.image_encoder.num_features and conf.visual_pos_dim == 4
    assert conf.vocab_size == len(text.tokenizer) and model.fused_dim == 32
    assert model.pretrained_modules() == [model.lxmert]
    assert model.frozen_modules() == [model.image_encoder]
    # A trainable image encoder is pretrained (train.lr) and not frozen.
    torch.manual_seed(0)
    cfg = make_cfg()
    cfg.model.image.freeze = False
    trained, _, _ = build_model(cfg, 3)
    assert trained.pretrained_modules() == [trained.lxmert, trained.image_encoder]
    assert trained.frozen_modules() == []


@pytest.mark.parametrize("mode", ["random", "hard"])
def test_itc_itm_simcse_losses_and_their_gradients(mode):
    cfg, model, text = build(itm_negatives=mode)
    model.train()
    batch = make_batch(text.tokenizer)
    terms, _ = compute_losses(model, batch, cfg.aux, None, torch.Generator().manual_seed(0))
    for name in ("ce", "itc", "itm", "simcse"):
        value = getattr(terms, name)
        assert value is not None and torch.isfinite(value), name
    enc = model.lxmert.encoder

    def grads(loss: torch.Tensor, module: nn.Module) -> float:
        model.zero_grad(set_to_none=True)
        loss.backward(retain_graph=True)
        return sum(float(p.grad.abs().sum()) for p in module.parameters() if p.grad is not None)

    # ITC keeps gradients on both sides (the authors' code detached the text side).
    assert grads(terms.itc, enc.layer) > 0
    assert grads(terms.itc, model.lxmert.embeddings) > 0
    assert grads(terms.itc, enc.visn_fc) > 0 and grads(terms.itc, enc.r_layers) > 0
    assert grads(terms.itc, model.text_proj) > 0 and grads(terms.itc, model.image_proj) > 0
    assert grads(terms.itc, model.classifier) == 0 and grads(terms.itc, enc.x_layers) == 0
    assert grads(terms.simcse, enc.layer) > 0 and grads(terms.simcse, model.simcse_head) > 0
    assert grads(terms.simcse, enc.r_layers) == 0
    assert grads(terms.itm, enc.x_layers) > 0 and grads(terms.itm, model.itm_head) > 0
    # Every trainable parameter gets a gradient from the joint loss (DDP needs it); the
    # skipped vision half of the last cross-modality layer is frozen.
    model.zero_grad(set_to_none=True)
    terms.total.backward()
    missing = [n for n, p in model.named_parameters() if p.requires_grad and p.grad is None]
    assert missing == []
    frozen = {n for n, p in model.lxmert.named_parameters() if not p.requires_grad}
    assert frozen and all(n.startswith("encoder.x_layers.0.visn_") for n in frozen)


@pytest.mark.parametrize("mode", ["random", "hard"])
def test_itm_labels_match_the_pairs_that_reached_the_head(mode):
    cfg, model, text = build(itm_negatives=mode)
    model.eval()
    batch = make_batch(text.tokenizer)
    b = len(TEXTS)
    seed = next(
        k
        for k in range(100)
        if (random_itm_pairs(b, 0.5, torch.Generator().manual_seed(k)).labels == 0).any()
    )
    seen: list[torch.Tensor] = []
    hook = model.itm_head.register_forward_hook(lambda m, inp, out: seen.append(inp[0]))
    with torch.no_grad():
        _, out = compute_losses(model, batch, cfg.aux, None, torch.Generator().manual_seed(seed))
        hook.remove()
        gen = torch.Generator().manual_seed(seed)
        if mode == "hard":
            t, i = model.itc_embeddings(out.encoded)
            pairs = hard_itm_pairs(t, i, model.logit_scale, gen)
        else:
            pairs = random_itm_pairs(b, cfg.aux.itm_negative_prob, gen)
        fed = seen[0]
        assert fed.shape[0] == pairs.text_idx.shape[0] == (3 * b if mode == "hard" else b)
        assert pairs.labels.tolist() == (pairs.text_idx == pairs.image_idx).long().tolist()
        broken = [k for k in range(len(fed)) if pairs.labels[k] == 0]
        assert broken
        for k in range(len(fed)):
            t_k, i_k = pairs.text_idx[k : k + 1], pairs.image_idx[k : k + 1]
            alone = model.fuse(out.encoded, t_k, i_k)[0]
            torch.testing.assert_close(fed[k], alone, atol=1e-6, rtol=0)
        # A broken pair never sees its matched pair's output. A random LXMERT lets the image
        # move its output by ~1e-4 only (BERT's 0.02 init: cross-attention adds little to
        # the residual), well above the ~1e-8 of batching noise.
        for k in broken:
            gap = (fed[k] - out.fused[pairs.text_idx[k]]).abs().max()
            assert gap > 1e-5, float(gap)


def _count(module: nn.Module, counts: dict[str, int], name: str) -> Any:
    counts.setdefault(name, 0)

    def hook(*_: Any) -> None:
        counts[name] += 1

    return module.register_forward_hook(hook)


@pytest.mark.parametrize("mode", ["random", "hard"])
@pytest.mark.parametrize("simcse", [0.0, 0.1])
def test_only_the_cross_modality_layers_rerun_for_itm_negatives(mode, simcse):
    cfg, model, text = build(itm_negatives=mode, simcse_weight=simcse)
    model.train()
    batch = make_batch(text.tokenizer)
    enc = model.lxmert.encoder
    counts: dict[str, int] = {}
    first_conv = next(m for m in model.image_encoder.modules() if isinstance(m, nn.Conv2d))
    hooks = [
        _count(first_conv, counts, "image"),
        _count(model.lxmert.embeddings, counts, "embeddings"),
        _count(enc.visn_fc, counts, "visn_fc"),
        _count(model.lxmert.pooler, counts, "pooler"),
    ]
    hooks += [_count(layer, counts, f"l{k}") for k, layer in enumerate(enc.layer)]
    hooks += [_count(layer, counts, f"r{k}") for k, layer in enumerate(enc.r_layers)]
    # The last cross-modality layer runs its language half only (lang_self_att fires once
    # per pass through every cross-modality layer).
    hooks += [_count(layer.lang_self_att, counts, f"x{k}") for k, layer in enumerate(enc.x_layers)]
    terms, _ = compute_losses(model, batch, cfg.aux, None, torch.Generator().manual_seed(1))
    for h in hooks:
        h.remove()
    assert terms.itm is not None
    text_passes = 2 if simcse else 1  # SimCSE's second view re-runs embeddings + l_layers
    assert counts["image"] == 1 and counts["visn_fc"] == 1 and counts["r0"] == 1
    assert counts["embeddings"] == text_passes and counts["l0"] == text_passes
    assert counts["x0"] == 2 and counts["pooler"] == 2  # classification + ITM negatives


def test_cached_features_give_the_same_logits_as_pixels():
    cfg, model, text = build()
    model.eval()
    batch = make_batch(text.tokenizer)
    with torch.no_grad():
        tokens, pooled = image_tokens_and_pooled(model.image_encoder, batch["pixel_values"])
        cached = {k: v for k, v in batch.items() if k != "pixel_values"}
        cached.update(image_tokens=tokens, image_pooled=pooled)
        from_pixels = model(batch)
        from_cache = model(cached)
    assert tokens.shape == (len(TEXTS), 4, model.image_encoder.num_features)  # a 2x2 grid
    torch.testing.assert_close(from_cache.logits, from_pixels.logits, atol=1e-6, rtol=0)
    with pytest.raises(ValueError, match="image tokens"):
        model({k: v for k, v in cached.items() if k != "image_tokens"})


def test_dropout_is_active_in_every_training_epoch():
    cfg, model, text = build()
    batch = make_batch(text.tokenizer)
    for _ in range(2):  # epoch, validation, next epoch
        model.train()
        drops = [m for m in model.lxmert.modules() if isinstance(m, nn.Dropout)]
        drops += [m for m in model.head.modules() if isinstance(m, nn.Dropout)]
        assert drops and all(m.training for m in drops)
        assert not model.image_encoder.training  # frozen: BN statistics stay fixed
        with torch.no_grad():
            a, b = model(batch).logits, model(batch).logits
        assert not torch.allclose(a, b)  # dropout really changes the output
        model.eval()
        assert not any(m.training for m in drops)
        with torch.no_grad():
            torch.testing.assert_close(model(batch).logits, model(batch).logits)


def test_region_boxes_of_a_grid():
    expected = torch.tensor(
        [
            [0.0, 0.0, 0.5, 0.5],
            [0.5, 0.0, 1.0, 0.5],
            [0.0, 0.5, 0.5, 1.0],
            [0.5, 0.5, 1.0, 1.0],
        ]
    )
    assert torch.equal(grid_boxes(2, 2), expected)
    # A ViT's prefix token (CLS) covers the whole image; a stale patch-grid hint is ignored.
    vit = region_boxes(5, prefix=1, hint=(10, 10))
    assert torch.equal(vit, torch.cat([torch.tensor([[0.0, 0.0, 1.0, 1.0]]), expected]))
    assert torch.equal(region_boxes(6, hint=(2, 3))[1], torch.tensor([1 / 3, 0.0, 2 / 3, 0.5]))
    with pytest.raises(ValueError, match="not a square"):
        region_boxes(6)
    # The model feeds exactly these boxes for test_resnet's 2x2 grid at 64 px, built once.
    cfg, model, text = build()
    model.eval()
    seen: list[torch.Tensor] = []
    fc = model.lxmert.encoder.visn_fc.box_fc
    hook = fc.register_forward_hook(lambda m, inp, out: seen.append(inp[0]))
    batch = make_batch(text.tokenizer)
    with torch.no_grad():
        model(batch)
        model(batch)
    hook.remove()
    assert seen[0].shape == (len(TEXTS), 4, 4)
    assert all(torch.equal(s, expected.expand(len(TEXTS), 4, 4)) for s in seen)
    assert list(model._boxes) == [(4, "cpu")]


def test_a_vit_grid_keeps_its_cls_token_as_a_whole_image_region():
    cfg, model, text = build(image="test_vit")
    model.eval()
    batch = make_batch(text.tokenizer)
    seen: list[torch.Tensor] = []
    hook = model.lxmert.encoder.visn_fc.box_fc.register_forward_hook(
        lambda m, inp, out: seen.append(inp[0])
    )
    with torch.no_grad():
        out = model(batch)
    hook.remove()
    assert out.logits.shape == (len(TEXTS), 3)
    assert seen[0].shape == (len(TEXTS), 17, 4)  # CLS + 4x4 patches at 64 px
    assert torch.equal(seen[0][0, 0], torch.tensor([0.0, 0.0, 1.0, 1.0]))
    assert torch.equal(seen[0][0, 1:], grid_boxes(4, 4))


@pytest.mark.parametrize("layers", [1, 2])
def test_the_split_forward_is_lxmerts_own_forward(layers):
    sizes = {**TINY, "l_layers": layers, "r_layers": layers, "x_layers": layers}
    cfg, model, text = build(lxmert={"config": sizes})
    model.eval()
    batch = make_batch(text.tokenizer)
    with torch.no_grad():
        enc = model.encode(batch)
        tokens, _ = image_tokens_and_pooled(model.image_encoder, batch["pixel_values"])
        boxes = grid_boxes(2, 2).expand(len(TEXTS), 4, 4)
        ref = model.lxmert(
            input_ids=batch["input_ids"],
            attention_mask=batch["attention_mask"],
            visual_feats=tokens,
            visual_pos=boxes,
        )
        lang = model.cross(enc.lang, enc.lang_mask, enc.vision)
        torch.testing.assert_close(model.lxmert.pooler(lang), ref.pooled_output)
        torch.testing.assert_close(lang, ref.language_output)
        # Unimodal vectors: after the single-modality layers, before any cross-modality one.
        full = model.lxmert(
            input_ids=batch["input_ids"],
            attention_mask=batch["attention_mask"],
            visual_feats=tokens,
            visual_pos=boxes,
            output_hidden_states=True,
        )
        text_vec, image_vec = model.unimodal(enc)
        m = batch["attention_mask"].unsqueeze(-1).float()
        torch.testing.assert_close(
            text_vec, (full.language_hidden_states[layers - 1] * m).sum(1) / m.sum(1)
        )
        torch.testing.assert_close(image_vec, full.vision_hidden_states[layers - 1].mean(1))


def test_pretrained_lxmert_from_a_local_directory(tmp_path, caplog):
    from transformers import LxmertConfig, LxmertModel

    _, _, text = build()
    conf = LxmertConfig(**TINY, vocab_size=len(text.tokenizer), visual_feat_dim=50)
    torch.manual_seed(1)
    saved = LxmertModel(conf)
    saved.save_pretrained(tmp_path / "lx")
    text.tokenizer.save_pretrained(tmp_path / "lx")
    with caplog.at_level(logging.WARNING, logger="mmaux.models.lxmert"):
        cfg, model, loaded_text = build(lxmert={"name": str(tmp_path / "lx"), "config": {}})
    assert "visn_fc" in caplog.text and "randomly initialised" in caplog.text
    fc = model.lxmert.encoder.visn_fc.visn_fc
    assert fc.in_features == 96 and model.lxmert.config.visual_feat_dim == 96
    for name, p in saved.state_dict().items():
        if not name.startswith("encoder.visn_fc.visn_fc."):
            assert torch.equal(model.lxmert.state_dict()[name], p), name
    assert len(loaded_text.tokenizer) == len(text.tokenizer)
    with torch.no_grad():
        assert model.eval()(make_batch(loaded_text.tokenizer)).logits.shape == (len(TEXTS), 3)


def test_lxmert_load_errors_are_one_line(tmp_path):
    cases = [
        ({"name": str(tmp_path / "nope")}, "no such directory"),
        ({"name": str(tmp_path)}, "no config.json"),
        ({"name": "no-such-org/no-such-lxmert"}, "neither a local directory nor in the"),
        ({"config": {**TINY, "visual_feat_dim": 7}}, "set from the image encoder"),
        ({"config": {**TINY, "x_layers": 0}}, "at least one cross-modality layer"),
    ]
    for lx, match in cases:
        with pytest.raises(EncoderLoadError, match=match) as err:
            build(lxmert=lx)
        assert "\n" not in str(err.value)
