"""Encoders (embedded offline weights, local paths, tiny random ViT) and fusion heads."""

from __future__ import annotations

import pytest
import torch
import torch.nn.functional as F

from mmaux.config import ImageEncoderConfig, TextEncoderConfig
from mmaux.models import build_model
from mmaux.models.encoders import (
    EncoderLoadError,
    image_tokens_and_pooled,
    load_image_encoder,
    load_text_encoder,
)


def test_embedded_text_encoder_loads_offline_and_freezes_lower_layers():
    enc = load_text_encoder(TextEncoderConfig(trainable_layers=2))
    assert enc.hidden_size == 384
    layers = enc.model.encoder.layer
    assert len(layers) == 6
    assert not any(p.requires_grad for p in enc.model.embeddings.parameters())
    assert not any(p.requires_grad for layer in layers[:4] for p in layer.parameters())
    assert all(p.requires_grad for layer in layers[4:] for p in layer.parameters())
    # A real sentence model: paraphrases are closer than unrelated sentences.
    tok = enc.tokenizer(
        ["pouring rain today", "heavy downpour this morning", "a quiet forest"],
        return_tensors="pt",
        padding=True,
    )
    with torch.no_grad():
        h = enc.model(**tok).last_hidden_state
    m = tok["attention_mask"].unsqueeze(-1)
    e = F.normalize((h * m).sum(1) / m.sum(1), dim=-1)
    assert float(e[0] @ e[1]) > float(e[0] @ e[2]) + 0.1


def test_embedded_image_encoder_has_meaningful_imagenet_weights():
    from random import Random

    from mmaux.data.images import build_transform
    from mmaux.data.synth import render_scene

    enc = load_image_encoder(ImageEncoderConfig())
    assert enc.feature_dim == 1280
    assert enc.data_config["mean"] == (0.5, 0.5, 0.5) and enc.data_config["std"] == (0.5, 0.5, 0.5)
    assert not any(p.requires_grad for p in enc.model.parameters()) and not enc.model.training
    tf = build_transform(enc.data_config, 96)
    rng = Random(0)
    imgs = [render_scene(c, rng, 96) for c in ("night", "night", "sea", "sea")]
    with torch.no_grad():
        _, pooled = image_tokens_and_pooled(enc.model, torch.stack([tf(i) for i in imgs]))
    e = F.normalize(pooled, dim=-1)
    same = (float(e[0] @ e[1]) + float(e[2] @ e[3])) / 2
    cross = float((e[0:2] @ e[2:4].T).mean())
    assert same > cross + 0.1, (same, cross)
    # Random initialisation would not separate the scenes like this.
    rand = load_image_encoder(ImageEncoderConfig(pretrained=False))
    assert not torch.equal(rand.model.conv_stem.weight, enc.model.conv_stem.weight)


def test_unknown_or_unreachable_encoders_fail_clearly(tmp_path):
    with pytest.raises(EncoderLoadError, match="unknown embedded text model"):
        load_text_encoder(TextEncoderConfig(name="embedded:nope"))
    unreachable = "neither a local directory nor in the Hugging Face cache"
    with pytest.raises(EncoderLoadError, match=unreachable):
        load_text_encoder(TextEncoderConfig(name="no-such-org/no-such-model"))
    with pytest.raises(EncoderLoadError, match="unknown embedded image model"):
        load_image_encoder(ImageEncoderConfig(name="embedded:resnet"))
    with pytest.raises(EncoderLoadError, match="weights file not found"):
        load_image_encoder(ImageEncoderConfig(name="test_resnet", weights=tmp_path / "x.pth"))


def test_image_weights_from_local_safetensors(tmp_path):
    from safetensors.torch import save_file

    src = load_image_encoder(ImageEncoderConfig(name="test_resnet", pretrained=False))
    path = tmp_path / "w.safetensors"
    save_file({k: v.contiguous() for k, v in src.model.state_dict().items()}, str(path))
    loaded = load_image_encoder(ImageEncoderConfig(name="test_resnet", weights=path))
    for k, v in src.model.state_dict().items():
        assert torch.equal(v, loaded.model.state_dict()[k])


@pytest.mark.parametrize("fusion", ["concat", "attention", "gmu", "text", "image"])
def test_fusion_heads_with_a_tiny_vit(make_cfg, fusion):
    extra = ["aux.itc_weight=0", "aux.itm_weight=0"] if fusion in ("text", "image") else []
    cfg = make_cfg(
        "model.image.name=vit_tiny_patch16_224",
        "model.image.pretrained=false",
        "model.image.kwargs={img_size: 32, depth: 1, embed_dim: 48, num_heads: 2}",
        "model.image.freeze=false",
        f"model.fusion={fusion}",
        "model.dropout=0",
        *extra,
    )
    torch.manual_seed(0)
    model, text, image = build_model(cfg, 3)
    assert (text is None) == (fusion == "image") and (image is None) == (fusion == "text")
    assert image is None or image.data_config["input_size"] == (3, 32, 32)
    model.eval()
    batch = {
        "input_ids": torch.randint(5, 1000, (4, 9)),
        "attention_mask": torch.ones(4, 9, dtype=torch.long),
        "pixel_values": torch.randn(4, 3, 32, 32),
    }
    out = model(batch)
    assert out.logits.shape == (4, 3) and out.fused.shape == (4, 32)
    if out.encoded.image_tokens is not None:
        assert out.encoded.image_tokens.shape[1] == 1 + (32 // 16) ** 2  # cls + patches
    other_image = dict(batch, pixel_values=torch.randn(4, 3, 32, 32))
    other_text = dict(batch, input_ids=torch.randint(5, 1000, (4, 9)))
    image_matters = not torch.allclose(model(other_image).logits, out.logits)
    text_matters = not torch.allclose(model(other_text).logits, out.logits)
    assert image_matters == (fusion != "text")
    assert text_matters == (fusion != "image")


def test_frozen_image_encoder_stays_in_eval_and_gets_no_grads(make_cfg):
    cfg = make_cfg("model.image.name=test_efficientnet", "model.image.pretrained=false")
    model, _, _ = build_model(cfg, 4)
    model.train()
    assert model.training and model.fusion.training
    assert not model.image_encoder.training  # BN statistics of a frozen encoder never move
    assert model.text_encoder.training
    assert all(not p.requires_grad for p in model.image_encoder.parameters())
    enc_ids = {id(p) for p in model.encoder_parameters()}
    pooler = {id(p) for p in model.text_encoder.pooler.parameters()}
    assert pooler and enc_ids == {id(p) for p in model.text_encoder.parameters()} - pooler
    assert all(not p.requires_grad for p in model.text_encoder.pooler.parameters())  # unused
    assert model.head_parameters() and not enc_ids & {id(p) for p in model.head_parameters()}


def test_logit_scale_starts_at_temperature_and_is_clamped(make_cfg):
    import math

    model, _, _ = build_model(
        make_cfg("model.image.name=test_resnet", "model.image.pretrained=false"), 4
    )
    assert float(model.logit_scale.detach()) == pytest.approx(math.log(1 / 0.07))
    with torch.no_grad():
        model.logit_scale.fill_(10.0)
    model.clamp_logit_scale()
    assert float(model.logit_scale.detach()) == pytest.approx(math.log(100))
