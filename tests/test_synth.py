"""The synthetic default data set: determinism, validity and the label design."""

from __future__ import annotations

import hashlib
import json
import random
import re
from collections import Counter
from pathlib import Path

import pytest
from PIL import Image

from mmaux.config import SynthConfig
from mmaux.data.manifest import load_manifest, read_dataset_info
from mmaux.data.synth import (
    CONCEPTS,
    CUES,
    LABELS,
    PHRASES,
    draw_post_spec,
    generate,
    make_text,
    post_rng,
    render_scene,
)

SMALL = {"n_train": 24, "n_val": 8, "n_test": 8, "image_size": 64}


def _tree(root: Path) -> dict[str, str]:
    """sha256 of every file under ``root``, by relative path."""
    return {
        p.relative_to(root).as_posix(): hashlib.sha256(p.read_bytes()).hexdigest()
        for p in sorted(root.rglob("*"))
        if p.is_file()
    }


def _claimed(text: str) -> set[str]:
    """Concepts whose phrases or cues occur (as whole words) in ``text``."""
    low = text.lower()
    return {
        c
        for c in CONCEPTS
        if any(re.search(rf"\b{re.escape(p)}\b", low) for p in PHRASES[c] + CUES[c])
    }


def test_same_seed_gives_identical_bytes_and_other_seed_differs(tmp_path: Path) -> None:
    cfg = SynthConfig(seed=5, **SMALL)
    generate(tmp_path / "a", cfg)
    generate(tmp_path / "b", cfg)
    a, b = _tree(tmp_path / "a"), _tree(tmp_path / "b")
    assert a == b
    assert len(a) == 24 + 8 + 8 + 2  # images + manifest + dataset.json

    generate(tmp_path / "c", SynthConfig(seed=6, **SMALL))
    c = _tree(tmp_path / "c")
    assert c.keys() == a.keys()
    assert c["manifest.jsonl"] != a["manifest.jsonl"]
    assert sum(c[k] != a[k] for k in a if k.endswith(".png")) >= 35
    # no two images of a data set are identical
    assert len({h for k, h in a.items() if k.endswith(".png")}) == 40


def test_output_loads_cleanly_with_expected_counts(tmp_path: Path) -> None:
    cfg = SynthConfig(seed=1, **SMALL)
    summary = generate(tmp_path, cfg)
    m = load_manifest(tmp_path / "manifest.jsonl", check_images="decode")
    assert m.skipped == []
    assert m.labels == list(LABELS)
    assert len(m.split("train")) == 24 and len(m.split("val")) == 8
    assert len(m.split("test")) == 8
    assert summary["n_posts"] == 40 and summary["root"] == str(tmp_path)
    assert summary["counts"] == m.counts()
    assert summary["bytes"] == sum(p.stat().st_size for p in tmp_path.rglob("*") if p.is_file())
    info = read_dataset_info(tmp_path)
    assert info["name"] == "mmaux-synth"
    assert info["generator"]["seed"] == 1 and info["generator"]["image_size"] == 64
    assert isinstance(info["generator"]["generator_version"], int)
    post = m.posts[0]
    assert post.id == "syn-train-00001" and post.image == "images/train/syn-train-00001.png"
    with Image.open(m.image_path(post)) as im:
        assert im.size == (64, 64) and im.mode == "RGB"


def test_every_label_occurs_in_a_moderate_train_split(tmp_path: Path) -> None:
    generate(tmp_path, SynthConfig(seed=2, n_train=200, n_val=4, n_test=4, image_size=32))
    m = load_manifest(tmp_path / "manifest.jsonl")
    counts = m.counts()["train"]
    assert set(counts) == set(LABELS)
    assert all(n >= 25 for n in counts.values()), counts


def test_labels_agree_with_meta_and_text_claims_its_concept(tmp_path: Path) -> None:
    generate(tmp_path, SynthConfig(seed=3, n_train=120, n_val=4, n_test=4, image_size=32))
    m = load_manifest(tmp_path / "manifest.jsonl")
    for p in m.posts:
        meta = p.meta
        assert set(meta) == {"text_concept", "image_concept", "sentiment", "relationship"}
        assert p.label == f"{meta['relationship']}_{meta['sentiment']}"
        assert (meta["relationship"] == "match") == (meta["text_concept"] == meta["image_concept"])
        # the text names its claimed scene, and no other scene (so not the image's on mismatch)
        assert _claimed(p.text) == {meta["text_concept"]}, p.text
        assert p.text.isascii()


def test_texts_name_only_their_concept_for_every_phrase_and_template() -> None:
    rng = random.Random(0)
    for concept in CONCEPTS:
        for sentiment in ("positive", "negative"):
            for _ in range(200):
                assert _claimed(make_text(concept, sentiment, rng)) == {concept}
                implicit = make_text(concept, sentiment, rng, implicit_prob=1.0)
                assert _claimed(implicit) == {concept}
                named = [p for p in PHRASES[concept] if re.search(rf"\b{p}\b", implicit.lower())]
                assert not named, implicit


def test_difficulty_knobs_do_what_they_say(tmp_path: Path) -> None:
    rng = random.Random(1)
    texts = [make_text("rain", "negative", rng, implicit_prob=0.3) for _ in range(2000)]
    implicit = (
        sum(not any(re.search(rf"\b{p}\b", t.lower()) for p in PHRASES["rain"]) for t in texts)
        / 2000
    )
    assert abs(implicit - 0.3) < 0.04
    # An inset changes the picture but the main scene (and so the label) stays.
    plain = render_scene("sea", random.Random(5), 64, inset_prob=0.0)
    inset = render_scene("sea", random.Random(5), 64, inset_prob=1.0)
    assert plain.tobytes() != inset.tobytes()
    generate(
        tmp_path,
        SynthConfig(seed=2, n_train=400, n_val=4, n_test=4, image_size=32, label_noise=0.2),
    )
    m = load_manifest(tmp_path / "manifest.jsonl")
    noisy = [p for p in m.posts if p.meta.get("noisy_label")]
    assert abs(len(noisy) / len(m.posts) - 0.2) < 0.05
    clean = [p for p in m.posts if not p.meta.get("noisy_label")]
    assert all(p.label == f"{p.meta['relationship']}_{p.meta['sentiment']}" for p in clean)
    assert read_dataset_info(tmp_path)["generator"]["label_noise"] == 0.2


def test_relationship_is_independent_of_text_and_image_marginals() -> None:
    n = 4000
    rows = []
    for i in range(n):
        rng = post_rng(11, "train", i)
        spec = draw_post_spec(rng)
        rows.append((spec, make_text(spec.text_concept, spec.sentiment, rng, 0.5)))
    match = [s.relationship == "match" for s, _ in rows]
    assert abs(sum(match) / n - 0.5) < 0.04
    # the depicted scene is uniform (so the image alone says nothing about the label)
    img = Counter(s.image_concept for s, _ in rows)
    assert set(img) == set(CONCEPTS)
    assert all(abs(k / n - 1 / 6) < 0.03 for k in img.values()), img
    for spec, _ in rows:
        if spec.relationship == "mismatch":
            assert spec.image_concept != spec.text_concept
    # within each sentiment / claimed scene, match is still a coin flip
    for key in ("sentiment", "text_concept"):
        groups: dict[str, list[bool]] = {}
        for (spec, _), mt in zip(rows, match, strict=True):
            groups.setdefault(getattr(spec, key), []).append(mt)
        tol = 0.06 if key == "sentiment" else 0.1
        for name, g in groups.items():
            assert abs(sum(g) / len(g) - 0.5) < tol, (key, name, sum(g) / len(g))
    # no frequent word of the text predicts the relationship
    by_word: dict[str, list[bool]] = {}
    for (_, text), mt in zip(rows, match, strict=True):
        for w in set(re.findall(r"[a-z@#_.']+", text.lower())):
            by_word.setdefault(w, []).append(mt)
    frequent = {w: g for w, g in by_word.items() if len(g) >= 150}
    assert len(frequent) > 50
    for w, g in frequent.items():  # within 4 standard errors of a fair coin
        assert abs(sum(g) / len(g) - 0.5) < 4 * 0.5 / len(g) ** 0.5, (w, sum(g) / len(g))


def test_changing_n_test_keeps_train_files(tmp_path: Path) -> None:
    generate(tmp_path / "a", SynthConfig(seed=4, **SMALL))
    generate(tmp_path / "b", SynthConfig(seed=4, **{**SMALL, "n_test": 12}))
    a, b = _tree(tmp_path / "a"), _tree(tmp_path / "b")
    train = [k for k in a if k.startswith("images/train/")]
    assert len(train) == 24
    assert all(a[k] == b[k] for k in train)
    rows_a = [json.loads(x) for x in (tmp_path / "a/manifest.jsonl").read_text().splitlines()]
    rows_b = [json.loads(x) for x in (tmp_path / "b/manifest.jsonl").read_text().splitlines()]
    assert [r for r in rows_a if r["split"] != "test"] == [
        r for r in rows_b if r["split"] != "test"
    ]
    assert sum(r["split"] == "test" for r in rows_b) == 12


def test_existing_output_needs_overwrite(tmp_path: Path) -> None:
    generate(tmp_path, SynthConfig(seed=0, **SMALL))
    with pytest.raises(FileExistsError, match="overwrite"):
        generate(tmp_path, SynthConfig(seed=0, **SMALL))
    (tmp_path / "notes.txt").write_text("keep me")
    summary = generate(tmp_path, SynthConfig(seed=0, **{**SMALL, "n_train": 10}), overwrite=True)
    assert summary["n_posts"] == 26
    # stale images of the larger previous run are gone; foreign files are kept
    assert len(list((tmp_path / "images/train").glob("*.png"))) == 10
    assert (tmp_path / "notes.txt").read_text() == "keep me"
    load_manifest(tmp_path / "manifest.jsonl")


def test_render_scene_and_make_text_reject_unknown_inputs() -> None:
    rng = random.Random(0)
    img = render_scene("sea", rng, 48)
    assert img.size == (48, 48) and img.mode == "RGB"
    with pytest.raises(ValueError, match="concept"):
        render_scene("desert", rng, 48)
    with pytest.raises(ValueError, match="concept"):
        make_text("desert", "positive", rng)
    with pytest.raises(ValueError, match="sentiment"):
        make_text("sea", "neutral", rng)
