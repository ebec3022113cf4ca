"""Loss terms against their definitions, and the ITM / ITC plumbing through a real model."""

from __future__ import annotations

import math

import pytest
import torch
import torch.nn.functional as F
from sklearn.utils.class_weight import compute_class_weight

from mmaux.config import AuxConfig
from mmaux.losses import (
    ITMPairs,
    balanced_class_weights,
    combine,
    compute_losses,
    hard_itm_pairs,
    itc_loss,
    itm_logits,
    random_itm_pairs,
)
from mmaux.models import build_model


def _itc_by_definition(t: torch.Tensor, i: torch.Tensor, log_scale: float) -> float:
    """½ [mean_a -log softmax_b(s·t_a·i_b)[a] + mean_a -log softmax_b(s·i_a·t_b)[a]], in float64."""
    t, i = t.double().tolist(), i.double().tolist()
    s = math.exp(log_scale)
    b = len(t)

    def dot(x, y):
        return sum(p * q for p, q in zip(x, y, strict=True))

    def side(x, y):
        total = 0.0
        for a in range(b):
            sims = [s * dot(x[a], y[c]) for c in range(b)]
            total += -(sims[a] - math.log(sum(math.exp(v) for v in sims)))
        return total / b

    return 0.5 * (side(t, i) + side(i, t))


@pytest.mark.parametrize("seed", range(4))
def test_itc_equals_its_definition_and_is_symmetric(seed):
    g = torch.Generator().manual_seed(seed)
    b, d = 7, 12
    t = torch.nn.functional.normalize(torch.randn(b, d, generator=g), dim=-1)
    i = torch.nn.functional.normalize(torch.randn(b, d, generator=g), dim=-1)
    log_scale = torch.tensor(math.log(1 / 0.07))
    got = itc_loss(t, i, log_scale)
    assert float(got) == pytest.approx(_itc_by_definition(t, i, float(log_scale)), rel=1e-5)
    assert float(itc_loss(i, t, log_scale)) == pytest.approx(float(got), rel=1e-6)
    # Perfectly aligned, well-separated pairs give a lower loss than random ones.
    assert float(itc_loss(t, t, log_scale)) < float(got)


def test_balanced_class_weights_match_sklearn():
    y = [0] * 10 + [1] * 3 + [2] * 7
    import numpy as np

    expected = compute_class_weight("balanced", classes=np.arange(3), y=np.array(y))
    assert balanced_class_weights(y, 3).tolist() == pytest.approx(expected.tolist())
    assert balanced_class_weights([0, 0, 1], 3)[2] == 0  # absent class


def test_combine_convex_and_additive():
    ce, itc, itm = torch.tensor(1.0), torch.tensor(2.0), torch.tensor(3.0)
    convex = AuxConfig(itc_weight=0.1, itm_weight=0.2)
    assert float(combine(ce, itc, itm, convex)) == pytest.approx(0.7 * 1 + 0.1 * 2 + 0.2 * 3)
    additive = AuxConfig(itc_weight=0.1, itm_weight=0.2, weighting="additive")
    assert float(combine(ce, itc, itm, additive)) == pytest.approx(1 + 0.1 * 2 + 0.2 * 3)
    assert float(combine(ce, None, None, convex)) == pytest.approx(1.0)
    assert float(combine(ce, itc, None, convex)) == pytest.approx(0.9 * 1 + 0.1 * 2)


def test_random_itm_pairs_are_half_negative_and_never_self():
    g = torch.Generator().manual_seed(0)
    labels, n = [], 0
    for _ in range(300):
        pairs = random_itm_pairs(32, 0.5, g)
        assert torch.equal(pairs.text_idx, torch.arange(32))
        neg = pairs.labels == 0
        assert torch.all(pairs.image_idx[neg] != pairs.text_idx[neg])
        labels.append(pairs.labels)
        n += 32
    frac = float(torch.cat(labels).float().mean())
    assert abs(frac - 0.5) < 0.02, frac
    # Negatives use every other post of the batch, not a fixed shift.
    shifts = {
        (int(j) - i) % 32
        for p in [random_itm_pairs(32, 0.5, g) for _ in range(50)]
        for i, j in enumerate(p.image_idx)
        if int(j) != i
    }
    assert len(shifts) == 31


def test_hard_itm_pairs_follow_similarity_and_skip_the_diagonal():
    b = 6
    emb = torch.eye(b, 8)
    image = emb.clone()
    image[1] = torch.nn.functional.normalize(emb[0] + 0.05 * emb[1], dim=0)  # image 1 ~ text 0
    g = torch.Generator().manual_seed(0)
    hits = 0
    for _ in range(200):
        pairs = hard_itm_pairs(emb, image, torch.tensor(math.log(1 / 0.07)), g)
        assert pairs.labels.tolist() == [1] * b + [0] * (2 * b)
        neg = pairs.labels == 0
        assert torch.all(pairs.text_idx[neg] != pairs.image_idx[neg])
        hits += int(pairs.image_idx[b + 0] == 1)  # negative image drawn for text 0
    assert hits > 180


@pytest.fixture
def model_and_batch(make_cfg, synth_root):
    from mmaux.assemble import load_data
    from mmaux.data.dataset import PostDataset, collate_posts
    from mmaux.data.images import build_transform

    cfg = make_cfg(
        "model.image.name=test_efficientnet",
        "model.image.pretrained=false",
        "model.image.freeze=false",
        "model.fusion=attention",
        "model.dropout=0.0",
    )
    torch.manual_seed(0)
    model, text, image = build_model(cfg, 4)
    manifest = load_data(cfg)
    ds = PostDataset(
        manifest,
        manifest.split("train")[:8],
        text.tokenizer,
        32,
        transform=build_transform(image.data_config, 64),
    )
    batch = collate_posts([ds[i] for i in range(8)], text.tokenizer.pad_token_id)
    return cfg, model, batch


def test_itm_negatives_reach_the_itm_head(model_and_batch):
    cfg, model, batch = model_and_batch
    model.eval()
    out = model(batch)
    pairs = ITMPairs(torch.arange(8), torch.tensor([0, 3, 2, 0, 4, 7, 6, 1]))  # 4 negatives
    seen = []
    hook = model.itm_head.register_forward_hook(lambda m, inp, o: seen.append(inp[0].detach()))
    logits, labels = itm_logits(model, out.encoded, out.fused, pairs)
    hook.remove()
    fed = seen[0]
    assert labels.tolist() == [1, 0, 1, 0, 1, 0, 1, 0]
    for row in (0, 2, 4, 6):  # a real pair re-fused (eval mode) is the classification pass
        assert torch.allclose(fed[row], out.fused[row], atol=1e-5)
    for row, (t, i) in zip((1, 3, 5, 7), [(1, 3), (3, 0), (5, 7), (7, 1)], strict=True):
        expected = model.fuse(out.encoded, torch.tensor([t]), torch.tensor([i]))[0]
        assert torch.allclose(fed[row], expected, atol=1e-5)
        # The matched pair's output must not be what the head sees for a broken pair.
        assert not torch.allclose(fed[row], out.fused[t], atol=1e-4)


def test_hard_itm_reuses_the_classification_pass_for_its_real_prefix(model_and_batch):
    cfg, model, batch = model_and_batch
    model.eval()
    out = model(batch)
    t, i = model.itc_embeddings(out.encoded)
    pairs = hard_itm_pairs(t, i, model.logit_scale, torch.Generator().manual_seed(0))
    assert pairs.real_prefix == 8 and pairs.labels.tolist() == [1] * 8 + [0] * 16
    fused_rows = []
    hook = model.fusion.register_forward_hook(lambda m, inp, o: fused_rows.append(o.shape[0]))
    logits, labels = itm_logits(model, out.encoded, out.fused, pairs)
    hook.remove()
    assert fused_rows == [16]  # only the 2B negatives go through the fusion head again
    assert logits.shape == (24, 2)


@pytest.mark.parametrize("mode", ["random", "hard"])
def test_itm_reuses_encodings_and_itc_trains_both_encoders(model_and_batch, mode):
    cfg, model, batch = model_and_batch
    aux = AuxConfig(itc_weight=0.3, itm_weight=0.3, itm_negatives=mode)
    calls = {"text": 0, "image": 0, "fusion": 0}

    def count(key):
        def hook(*_):
            calls[key] += 1

        return hook

    hooks = [
        model.text_encoder.register_forward_hook(count("text")),
        model.image_encoder.conv_stem.register_forward_hook(count("image")),
        model.fusion.register_forward_hook(count("fusion")),
    ]
    model.train()
    terms, _ = compute_losses(model, batch, aux, None, torch.Generator().manual_seed(0))
    for h in hooks:
        h.remove()
    # One pass through each encoder; the broken pairs re-run only the fusion head.
    assert calls["text"] == 1 and calls["image"] == 1
    assert calls["fusion"] == 2
    assert terms.itm is not None and terms.itc is not None

    model.zero_grad(set_to_none=True)
    terms.itc.backward()
    text_top = model.text_encoder.encoder.layer[-1].output.dense.weight.grad
    image_stem = model.image_encoder.conv_stem.weight.grad
    assert text_top is not None and text_top.abs().sum() > 0
    assert image_stem is not None and image_stem.abs().sum() > 0
    assert model.text_proj.weight.grad.abs().sum() > 0
    assert model.image_proj.weight.grad.abs().sum() > 0
    assert model.logit_scale.grad is not None
    assert model.classifier.weight.grad is None  # ITC never touches the class head


def test_simcse_alignment_and_uniformity_match_their_definitions():
    import math

    from mmaux.losses import alignment, simcse_loss, uniformity

    torch.manual_seed(0)
    a, b = torch.randn(6, 5), torch.randn(6, 5)
    # SimCSE: -log( e^{cos(a_i, b_i)/t} / sum_j e^{cos(a_i, b_j)/t} ), averaged over i
    t = 0.05
    terms = []
    for i in range(6):
        sims = [float(F.cosine_similarity(a[i], b[j], dim=0)) / t for j in range(6)]
        top = max(sims)
        log_z = top + math.log(sum(math.exp(s - top) for s in sims))
        terms.append(log_z - sims[i])
    assert float(simcse_loss(a, b, t)) == pytest.approx(sum(terms) / 6, rel=1e-5)

    x, y = F.normalize(a, dim=-1), F.normalize(b, dim=-1)
    align = sum(float(((x[i] - y[i]) ** 2).sum()) for i in range(6)) / 6
    assert float(alignment(x, y)) == pytest.approx(align, rel=1e-6)
    pairs = [(i, j) for i in range(6) for j in range(i + 1, 6)]
    mean = sum(math.exp(-2 * float(((x[i] - x[j]) ** 2).sum())) for i, j in pairs) / len(pairs)
    assert float(uniformity(x)) == pytest.approx(math.log(mean), rel=1e-5)
    # Identical rows are perfectly aligned and maximally non-uniform (log 1 = 0).
    assert float(alignment(x, x)) == pytest.approx(0.0, abs=1e-7)
    assert float(uniformity(x[:1].repeat(4, 1))) == pytest.approx(0.0, abs=1e-6)


def test_convex_weighting_gives_ce_what_the_aux_terms_leave():
    from mmaux.losses import combine

    one = torch.tensor(1.0)
    aux = AuxConfig(itc_weight=0.2, itm_weight=0.1, simcse_weight=0.05)
    ce, itc, itm, sim = torch.tensor(2.0), torch.tensor(3.0), torch.tensor(5.0), torch.tensor(7.0)
    expected = 0.65 * 2 + 0.2 * 3 + 0.1 * 5 + 0.05 * 7
    assert float(combine(ce, itc, itm, aux, sim)) == pytest.approx(expected)
    additive = AuxConfig(itc_weight=0.2, itm_weight=0.1, simcse_weight=0.05, weighting="additive")
    assert float(combine(ce, itc, itm, additive, sim)) == pytest.approx(expected - 0.65 * 2 + 2)
    assert float(combine(one, None, None, aux)) == pytest.approx(1.0)  # nothing else on
