"""The embedded default data set: synthetic posts whose label is a text-image *relationship*.

Every post is a rendered picture of one of six weather/landscape scenes (:data:`CONCEPTS`)
plus a short tweet-like text. The text *claims* a scene ("Ugh, pouring rain again...") with
a positive or negative sentiment; with probability 0.5 the image shows the claimed scene
(``match``), otherwise one of the five other scenes drawn uniformly (``mismatch``). The label
(:data:`LABELS`) is ``{relationship}_{sentiment}``.

Why neither modality alone suffices, by construction:

* **Text alone** sees the claimed scene and the sentiment, but the wording is drawn without
  looking at the relationship (the same random draws are consumed either way), so it can
  tell ``positive`` from ``negative`` but not ``match`` from ``mismatch``: at best 50 %.
* **Image alone** sees one scene; the claimed scene is uniform and the image scene equals
  it with probability 1/2, else is uniform over the rest, so the image scene is uniform and
  independent of the label: chance, 25 %.
* **Both** together decide the relationship (does the picture show what the text says?),
  which is what image-text matching / contrastive auxiliary losses are meant to help with.

Generation is deterministic: the same :class:`~mmaux.config.SynthConfig` gives byte-identical
files. Each post draws from its own RNG derived from ``(seed, split, index)``, so changing
one split's size never changes the posts of another split.
"""

from __future__ import annotations

import hashlib
import math
import random
from collections.abc import Callable
from pathlib import Path
from typing import Any, NamedTuple

import numpy as np
from PIL import Image, ImageDraw

from mmaux.config import SynthConfig
from mmaux.data.manifest import (
    DATASET_INFO,
    SPLITS,
    Post,
    write_dataset_info,
    write_manifest,
)

GENERATOR_VERSION = 2
NAME = "mmaux-synth"
MANIFEST = "manifest.jsonl"
IMAGE_DIR = "images"

LABELS: tuple[str, ...] = (
    "match_positive",
    "match_negative",
    "mismatch_positive",
    "mismatch_negative",
)
CONCEPTS: tuple[str, ...] = ("sunny", "rain", "snow", "night", "forest", "sea")
SENTIMENTS: tuple[str, ...] = ("positive", "negative")
RELATIONSHIPS: tuple[str, ...] = ("match", "mismatch")

DESCRIPTION = (
    "Synthetic social-media posts: a rendered scene image and a short text that claims a "
    "scene with a sentiment. The label is whether the image shows the claimed scene "
    "(match/mismatch) crossed with the text's sentiment; neither modality alone decides it."
)

# Paraphrases of each scene, as they appear in texts. No phrase of one concept occurs (as
# whole words) in the phrases of another concept or in the templates and flavour below.
PHRASES: dict[str, tuple[str, ...]] = {
    "sunny": (
        "sunshine",
        "blue skies",
        "sunny afternoon",
        "bright sun",
        "sunny weather",
        "clear sunny sky",
    ),
    "rain": ("rain", "pouring rain", "rainy morning", "downpour", "drizzle", "rainstorm"),
    "snow": ("snow", "fresh snowfall", "snowy morning", "blizzard", "snow day", "snowflakes"),
    "night": (
        "starry night",
        "moonlight",
        "night sky",
        "midnight stars",
        "crescent moon",
        "moonlit night",
    ),
    "forest": ("forest", "pine woods", "forest trail", "tall pines", "woods", "evergreen forest"),
    "sea": ("ocean", "sea breeze", "beach day", "waves", "seaside", "ocean view"),
}

# Indirect cues: the text implies the scene without naming it (as real posts often do).
CUES: dict[str, tuple[str, ...]] = {
    "sunny": ("sunscreen on", "sunglasses on", "working on my tan", "too hot to think"),
    "rain": ("forgot my umbrella", "soaked to the bone", "puddles everywhere", "wipers on full"),
    "snow": (
        "building a snowman",
        "shovelling the driveway",
        "sledding with the kids",
        "frozen fingers",
    ),
    "night": ("stargazing", "up past midnight", "counting stars", "late night walk"),
    "forest": (
        "mushroom hunting",
        "smell of pine needles",
        "lost on the trail",
        "hiking under the trees",
    ),
    "sea": ("surfing", "sand between my toes", "building sandcastles", "salty hair"),
}

CUE_TEMPLATES: dict[str, tuple[str, ...]] = {
    "positive": (
        "{C}. Loving every minute!",
        "{C} and honestly it is perfect",
        "Best kind of day: {c}",
        "{C} with my favourite people, so happy",
    ),
    "negative": (
        "{C}. Worst day ever.",
        "{C} again, so over it",
        "Ugh. {c}. Kill me now.",
        "{C} and I want to go home",
    ),
}

TEMPLATES: dict[str, tuple[str, ...]] = {
    "positive": (
        "What a gorgeous {p} today, loving it!",
        "Nothing beats {p}. Perfect start to the weekend",
        "{P} and a hot coffee. Life is good.",
        "So grateful for this {p} right now",
        "Finally some {p}! Best feeling ever",
        "Caught this {p} on my walk, absolutely beautiful",
        "{P} all day and I am here for it",
        "Honestly {p} makes everything better",
    ),
    "negative": (
        "Ugh, {p} again. Worst day ever.",
        "Can't stand this {p}. Staying in bed.",
        "{P}?? Seriously, I give up on today.",
        "Another day of {p}, so done with this",
        "Who ordered this {p}? Miserable.",
        "Great, {p}. Exactly what I did not need.",
        "{P} ruined my plans. Again.",
        "Tired of {p}, can it just stop already",
    ),
}

MENTIONS: tuple[str, ...] = (
    "@jess_k",
    "@mike_travels",
    "@the_daily_ana",
    "@tom.r",
    "@lena_photos",
    "@sam_outdoors",
    "@kat_lifestyle",
    "@dev_dan",
)
HASHTAGS: tuple[str, ...] = (
    "#mood",
    "#weekend",
    "#life",
    "#photooftheday",
    "#nofilter",
    "#mondays",
    "#travel",
    "#view",
    "#weather",
    "#latergram",
    "#outdoors",
    "#vibes",
)
TAILS: tuple[str, ...] = ("lol", "smh", "tbh", "fr", "ok", "!!")


class PostSpec(NamedTuple):
    """What one post shows: the claimed scene, the depicted scene, sentiment, relationship."""

    text_concept: str
    image_concept: str
    sentiment: str
    relationship: str

    @property
    def label(self) -> str:
        return f"{self.relationship}_{self.sentiment}"


# --------------------------------------------------------------------------------------
# Random draws


def post_rng(seed: int, split: str, index: int) -> random.Random:
    """The RNG of one post, derived from ``(seed, split, index)`` only."""
    key = f"{NAME}/v{GENERATOR_VERSION}/{seed}/{split}/{index}".encode()
    return random.Random(int.from_bytes(hashlib.sha256(key).digest()[:8], "big"))


def draw_post_spec(rng: random.Random) -> PostSpec:
    """Draw a post's claimed scene, depicted scene, sentiment and relationship.

    Always consumes the same number of draws, so what is drawn after it (the text) is
    independent of the relationship.
    """
    k = len(CONCEPTS)
    text_i = rng.randrange(k)
    sentiment = SENTIMENTS[rng.randrange(2)]
    match = rng.random() < 0.5
    offset = rng.randrange(1, k)  # drawn even when matched: constant RNG consumption
    image_i = text_i if match else (text_i + offset) % k
    return PostSpec(
        CONCEPTS[text_i], CONCEPTS[image_i], sentiment, "match" if match else "mismatch"
    )


def make_text(concept: str, sentiment: str, rng: random.Random, implicit_prob: float = 0.0) -> str:
    """A tweet-like text claiming ``concept`` with ``sentiment`` (ASCII only).

    With probability ``implicit_prob`` the scene is only implied by a cue (:data:`CUES`).
    """
    if concept not in PHRASES:
        raise ValueError(f"unknown concept {concept!r} (expected one of {list(CONCEPTS)})")
    if sentiment not in TEMPLATES:
        raise ValueError(f"unknown sentiment {sentiment!r} (expected one of {list(SENTIMENTS)})")
    implicit = rng.random() < implicit_prob
    cue = rng.choice(CUES[concept])
    cue_template = rng.choice(CUE_TEMPLATES[sentiment])
    phrase = rng.choice(PHRASES[concept])
    template = rng.choice(TEMPLATES[sentiment])
    if implicit:
        text = cue_template.replace("{C}", cue[0].upper() + cue[1:]).replace("{c}", cue)
    else:
        text = template.replace("{P}", phrase[0].upper() + phrase[1:]).replace("{p}", phrase)
    if rng.random() < 0.3:
        text = f"{rng.choice(MENTIONS)} {text}"
    if rng.random() < 0.15:
        text = f"{text} {rng.choice(TAILS)}"
    n_tags = rng.choice((0, 0, 1, 1, 2))
    if n_tags:
        text = f"{text} {' '.join(rng.sample(HASHTAGS, n_tags))}"
    return text


# --------------------------------------------------------------------------------------
# Rendering

RGB = tuple[int, int, int]


def _jit(rng: random.Random, rgb: RGB, d: int = 16) -> RGB:
    """Jitter a colour by up to ``d`` per channel."""
    return tuple(max(0, min(255, c + rng.randint(-d, d))) for c in rgb)  # type: ignore[return-value]


def _gradient(size: int, top: RGB, bottom: RGB) -> Image.Image:
    """A vertical linear gradient (one colour per row: compresses well as PNG)."""
    t = np.linspace(0.0, 1.0, size)[:, None]
    rows = np.asarray(top, dtype=np.float64) * (1.0 - t) + np.asarray(bottom, np.float64) * t
    arr = np.repeat(np.rint(rows).astype(np.uint8)[:, None, :], size, axis=1)
    return Image.fromarray(arr, "RGB")


def _hills(
    draw: ImageDraw.ImageDraw, rng: random.Random, size: int, y0: float, amp: float, fill: RGB
) -> None:
    """A ground area from height ``y0`` down, with a gently uneven top edge."""
    n = 5
    pts = [(round(i * size / (n - 1)), round(y0 + rng.uniform(-amp, amp))) for i in range(n)]
    draw.polygon([*pts, (size, size), (0, size)], fill=fill)


def _ellipse(draw: ImageDraw.ImageDraw, cx: float, cy: float, rx: float, ry: float, fill) -> None:
    draw.ellipse([round(cx - rx), round(cy - ry), round(cx + rx), round(cy + ry)], fill=fill)


def _cloud(
    draw: ImageDraw.ImageDraw, rng: random.Random, cx: float, cy: float, w: float, fill: RGB
) -> None:
    """A cloud of overlapping ellipses about ``w`` wide."""
    for _ in range(rng.randint(3, 5)):
        _ellipse(
            draw,
            cx + rng.uniform(-0.35, 0.35) * w,
            cy + rng.uniform(-0.12, 0.12) * w,
            rng.uniform(0.2, 0.32) * w,
            rng.uniform(0.13, 0.2) * w,
            fill,
        )


def _sunny(rng: random.Random, s: int) -> Image.Image:
    img = _gradient(s, _jit(rng, (40, 110, 215)), _jit(rng, (150, 205, 250)))
    d = ImageDraw.Draw(img)
    if rng.random() < 0.5:
        _hills(d, rng, s, s * rng.uniform(0.8, 0.9), s * 0.03, _jit(rng, (95, 175, 70), 20))
    cx, cy = s * rng.uniform(0.25, 0.75), s * rng.uniform(0.2, 0.45)
    r = s * rng.uniform(0.1, 0.16)
    sun = _jit(rng, (255, 215, 40), 12)
    n_rays, phase = rng.randint(8, 14), rng.uniform(0, math.pi)
    width = max(1, round(s * rng.uniform(0.012, 0.025)))
    for i in range(n_rays):
        a = phase + 2 * math.pi * i / n_rays
        r0, r1 = r * 1.25, r * rng.uniform(1.7, 2.1)
        d.line(
            [
                (round(cx + r0 * math.cos(a)), round(cy + r0 * math.sin(a))),
                (round(cx + r1 * math.cos(a)), round(cy + r1 * math.sin(a))),
            ],
            fill=sun,
            width=width,
        )
    _ellipse(d, cx, cy, r, r, sun)
    for _ in range(rng.randint(0, 2)):
        _cloud(
            d,
            rng,
            s * rng.uniform(0.1, 0.9),
            s * rng.uniform(0.1, 0.6),
            s * 0.22,
            _jit(rng, (250, 250, 250), 5),
        )
    return img


def _rain(rng: random.Random, s: int) -> Image.Image:
    img = _gradient(s, _jit(rng, (95, 100, 110)), _jit(rng, (160, 165, 172)))
    d = ImageDraw.Draw(img)
    if rng.random() < 0.6:
        _hills(d, rng, s, s * rng.uniform(0.82, 0.92), s * 0.02, _jit(rng, (70, 75, 80)))
    streak = _jit(rng, (70, 120, 215), 20)
    dx, dy = s * rng.uniform(0.03, 0.08), s * rng.uniform(0.08, 0.14)
    width = max(1, round(s / 110))
    for _ in range(rng.randint(45, 80)):
        x, y = rng.uniform(-0.1, 1.0) * s, rng.uniform(0.15, 0.95) * s
        d.line([(round(x), round(y)), (round(x + dx), round(y + dy))], fill=streak, width=width)
    dark = _jit(rng, (60, 62, 70), 10)
    for _ in range(rng.randint(2, 4)):
        _cloud(d, rng, s * rng.uniform(0.05, 0.95), s * rng.uniform(0.05, 0.22), s * 0.45, dark)
    return img


def _snow(rng: random.Random, s: int) -> Image.Image:
    img = _gradient(s, _jit(rng, (130, 150, 180)), _jit(rng, (195, 205, 222)))
    d = ImageDraw.Draw(img)
    _hills(d, rng, s, s * rng.uniform(0.68, 0.82), s * 0.05, _jit(rng, (246, 248, 252), 6))
    flake = (255, 255, 255)
    for _ in range(rng.randint(60, 110)):
        x, y = rng.uniform(0, s), rng.uniform(0, 0.85 * s)
        r = s * rng.uniform(0.007, 0.018)
        _ellipse(d, x, y, r, r, flake)
    return img


def _night(rng: random.Random, s: int) -> Image.Image:
    img = _gradient(s, _jit(rng, (8, 12, 40), 8), _jit(rng, (25, 35, 85), 12))
    d = ImageDraw.Draw(img)
    star = _jit(rng, (255, 250, 215), 6)
    for _ in range(rng.randint(25, 50)):
        x, y = rng.uniform(0, s), rng.uniform(0, 0.8 * s)
        r = s * rng.uniform(0.003, 0.009)
        _ellipse(d, x, y, r, r, star)
    # Crescent moon: a disc minus an offset disc, drawn through a mask.
    r = s * rng.uniform(0.1, 0.16)
    cx, cy = s * rng.uniform(0.25, 0.75), s * rng.uniform(0.2, 0.45)
    mask = Image.new("L", (s, s), 0)
    md = ImageDraw.Draw(mask)
    _ellipse(md, cx, cy, r, r, 255)
    side = rng.choice((-1, 1))
    _ellipse(md, cx + side * r * rng.uniform(0.45, 0.6), cy - r * rng.uniform(0.1, 0.3), r, r, 0)
    img.paste(_jit(rng, (250, 240, 190), 8), (0, 0), mask)
    if rng.random() < 0.6:
        _hills(d, rng, s, s * rng.uniform(0.82, 0.92), s * 0.04, _jit(rng, (5, 8, 20), 5))
    return img


def _forest(rng: random.Random, s: int) -> Image.Image:
    img = _gradient(s, _jit(rng, (185, 215, 225)), _jit(rng, (225, 235, 220)))
    d = ImageDraw.Draw(img)
    ground_y = s * rng.uniform(0.72, 0.8)
    _hills(d, rng, s, ground_y, s * 0.02, _jit(rng, (60, 120, 45), 15))
    trees = sorted(
        (ground_y + s * rng.uniform(-0.06, 0.18), rng.uniform(-0.05, 1.05) * s)
        for _ in range(rng.randint(5, 9))
    )
    for base, x in trees:  # back to front
        h = s * rng.uniform(0.35, 0.6)
        w = h * rng.uniform(0.4, 0.55)
        trunk_w, trunk_h = w * 0.16, h * 0.15
        d.rectangle(
            [round(x - trunk_w / 2), round(base - trunk_h), round(x + trunk_w / 2), round(base)],
            fill=_jit(rng, (100, 65, 35), 12),
        )
        green = _jit(rng, (25, 95, 40), 18)
        tiers = rng.randint(2, 3)
        top = base - h
        for t in range(tiers):
            y_top = top + (h - trunk_h) * t / (tiers + 1)
            y_bot = top + (h - trunk_h) * (t + 2) / (tiers + 1)
            half = w / 2 * (t + 2) / (tiers + 1)
            d.polygon(
                [
                    (round(x), round(y_top)),
                    (round(x - half), round(y_bot)),
                    (round(x + half), round(y_bot)),
                ],
                fill=green,
            )
    return img


def _sea(rng: random.Random, s: int) -> Image.Image:
    img = _gradient(s, _jit(rng, (90, 160, 230)), _jit(rng, (190, 225, 245)))
    d = ImageDraw.Draw(img)
    horizon = s * rng.uniform(0.3, 0.45)
    shore = s * rng.uniform(0.78, 0.88)
    deep, light = _jit(rng, (20, 75, 150), 15), _jit(rng, (60, 140, 200), 15)
    d.rectangle([0, round(horizon), s, s], fill=deep)
    n_bands = rng.randint(4, 7)
    wavelength = s * rng.uniform(0.2, 0.35)
    step = max(2, s // 40)
    for b in range(n_bands):
        y0 = horizon + (shore - horizon) * (b + 0.5) / n_bands
        amp = s * rng.uniform(0.008, 0.02) * (1 + b / n_bands)
        thick = (shore - horizon) / n_bands * rng.uniform(0.3, 0.5)
        phase = rng.uniform(0, 2 * math.pi)
        top = [
            (x, round(y0 + amp * math.sin(2 * math.pi * x / wavelength + phase)))
            for x in range(0, s + step, step)
        ]
        bottom = [(x, round(y + thick)) for x, y in reversed(top)]
        d.polygon(top + bottom, fill=light if b % 2 == 0 else _jit(rng, (240, 248, 255), 6))
    _hills(d, rng, s, shore, s * 0.03, _jit(rng, (230, 205, 150), 12))
    return img


_SCENES: dict[str, Callable[[random.Random, int], Image.Image]] = {
    "sunny": _sunny,
    "rain": _rain,
    "snow": _snow,
    "night": _night,
    "forest": _forest,
    "sea": _sea,
}

_STICKER_COLOURS: tuple[RGB, ...] = (
    (230, 40, 150),
    (150, 60, 210),
    (240, 120, 20),
    (20, 180, 170),
    (220, 30, 40),
)


def _decorate(img: Image.Image, rng: random.Random) -> None:
    """Optional social-media clutter: a small sticker and/or a caption bar."""
    s = img.size[0]
    d = ImageDraw.Draw(img)
    if rng.random() < 0.3:  # sticker in a corner
        w = s * rng.uniform(0.08, 0.13)
        cx = rng.choice((w * 1.1, s - w * 1.1))
        cy = rng.choice((w * 1.1, s - w * 1.1))
        colour = _jit(rng, rng.choice(_STICKER_COLOURS), 10)
        shape = rng.randrange(3)
        if shape == 0:
            box = [round(cx - w / 2), round(cy - w / 2), round(cx + w / 2), round(cy + w / 2)]
            d.rounded_rectangle(
                box,
                radius=max(1, round(w / 5)),
                fill=colour,
                outline=(255, 255, 255),
                width=max(1, s // 80),
            )
        elif shape == 1:
            pts = []
            for i in range(10):
                a = -math.pi / 2 + math.pi * i / 5
                rr = w / 2 if i % 2 == 0 else w / 4.5
                pts.append((round(cx + rr * math.cos(a)), round(cy + rr * math.sin(a))))
            d.polygon(pts, fill=colour)
        else:
            h = w / 2
            d.polygon(
                [
                    (round(cx), round(cy - h)),
                    (round(cx + h), round(cy + h)),
                    (round(cx - h), round(cy + h)),
                ],
                fill=colour,
            )
    if rng.random() < 0.2:  # caption bar with grey "words"
        bar_h = s * rng.uniform(0.1, 0.15)
        y0 = 0.0 if rng.random() < 0.5 else s - bar_h
        dark = rng.random() < 0.5
        d.rectangle(
            [0, round(y0), s, round(y0 + bar_h)], fill=(20, 20, 20) if dark else (250, 250, 250)
        )
        ink = (200, 200, 200) if dark else (90, 90, 90)
        x = s * rng.uniform(0.05, 0.12)
        for _ in range(rng.randint(2, 4)):
            w = s * rng.uniform(0.08, 0.2)
            if x + w > s * 0.95:
                break
            d.rectangle(
                [round(x), round(y0 + bar_h * 0.35), round(x + w), round(y0 + bar_h * 0.65)],
                fill=ink,
            )
            x += w + s * 0.04


def render_scene(
    concept: str, rng: random.Random, size: int, inset_prob: float = 0.0
) -> Image.Image:
    """Render a ``size`` x ``size`` RGB picture of ``concept`` with random variation.

    With probability ``inset_prob`` a smaller picture of another scene is pasted into a
    corner (a collage, as in screenshots and memes); ``concept`` stays the main scene.
    """
    if concept not in _SCENES:
        raise ValueError(f"unknown concept {concept!r} (expected one of {list(CONCEPTS)})")
    if size < 16:
        raise ValueError(f"image size {size} is too small (need >= 16)")
    img = _SCENES[concept](rng, size)
    inset = rng.random() < inset_prob
    other = CONCEPTS[(CONCEPTS.index(concept) + rng.randrange(1, len(CONCEPTS))) % len(CONCEPTS)]
    frac = rng.uniform(0.35, 0.48)
    corner = rng.randrange(4)
    if inset:
        w = max(8, round(size * frac))
        small = _SCENES[other](rng, w)
        border = max(1, size // 64)
        x = border if corner % 2 == 0 else size - w - border
        y = border if corner < 2 else size - w - border
        ImageDraw.Draw(img).rectangle(
            [x - border, y - border, x + w + border - 1, y + w + border - 1], fill=(255, 255, 255)
        )
        img.paste(small, (x, y))
    _decorate(img, rng)
    return img


# --------------------------------------------------------------------------------------
# The data set


def make_post(
    seed: int,
    split: str,
    index: int,
    image_size: int,
    implicit_prob: float = 0.0,
    inset_prob: float = 0.0,
    label_noise: float = 0.0,
) -> tuple[Post, Image.Image]:
    """Post ``index`` (1-based) of ``split``, with its image (not yet saved).

    With probability ``label_noise`` the published label is re-drawn uniformly (annotation
    noise); ``meta`` keeps the true relationship and ``noisy_label`` marks such posts.
    """
    rng = post_rng(seed, split, index)
    spec = draw_post_spec(rng)
    text = make_text(spec.text_concept, spec.sentiment, rng, implicit_prob)
    image = render_scene(spec.image_concept, rng, image_size, inset_prob)
    noisy = rng.random() < label_noise
    label = LABELS[rng.randrange(len(LABELS))] if noisy else spec.label
    post_id = f"syn-{split}-{index:05d}"
    post = Post(
        id=post_id,
        text=text,
        image=f"{IMAGE_DIR}/{split}/{post_id}.png",
        label=label,
        split=split,
        meta={
            "text_concept": spec.text_concept,
            "image_concept": spec.image_concept,
            "sentiment": spec.sentiment,
            "relationship": spec.relationship,
            **({"noisy_label": True} if noisy else {}),
        },
    )
    return post, image


def _owned_images(root: Path) -> list[Path]:
    """Image files under ``root`` that this generator writes."""
    return sorted(
        p for split in SPLITS for p in (root / IMAGE_DIR / split).glob("syn-*.png") if p.is_file()
    )


def _clean(root: Path) -> None:
    """Remove a previous generator output (only the files the generator writes)."""
    for p in _owned_images(root):
        p.unlink()
    for split in SPLITS:
        d = root / IMAGE_DIR / split
        if d.is_dir() and not any(d.iterdir()):
            d.rmdir()
    images = root / IMAGE_DIR
    if images.is_dir() and not any(images.iterdir()):
        images.rmdir()
    for name in (MANIFEST, DATASET_INFO):
        (root / name).unlink(missing_ok=True)


def generate(out_dir: Path, cfg: SynthConfig, overwrite: bool = False) -> dict[str, Any]:
    """Write the synthetic data set to ``out_dir``: images, ``manifest.jsonl``, ``dataset.json``.

    Raises :class:`FileExistsError` if ``out_dir`` already holds a generated data set and
    ``overwrite`` is false; with ``overwrite`` the old output is removed first. Returns a
    summary: ``{"root", "n_posts", "counts": {split: {label: n}}, "bytes"}``.
    """
    root = Path(out_dir)
    existing = [root / n for n in (MANIFEST, DATASET_INFO) if (root / n).exists()]
    if existing or _owned_images(root):
        if not overwrite:
            raise FileExistsError(
                f"{root}: already holds a data set ({MANIFEST}, {DATASET_INFO} or "
                f"{IMAGE_DIR}/); pass overwrite=True (CLI: --overwrite) to regenerate it"
            )
        _clean(root)
    root.mkdir(parents=True, exist_ok=True)
    sizes = {"train": cfg.n_train, "val": cfg.n_val, "test": cfg.n_test}
    counts = {split: {label: 0 for label in LABELS} for split in SPLITS}
    posts: list[Post] = []
    total = 0
    for split in SPLITS:
        (root / IMAGE_DIR / split).mkdir(parents=True, exist_ok=True)
        for index in range(1, sizes[split] + 1):
            post, image = make_post(
                cfg.seed,
                split,
                index,
                cfg.image_size,
                cfg.implicit_prob,
                cfg.inset_prob,
                cfg.label_noise,
            )
            path = root / post.image
            image.save(path, format="PNG", optimize=False, compress_level=6)
            total += path.stat().st_size
            counts[split][post.label] += 1
            posts.append(post)
    info = {
        "name": NAME,
        "labels": list(LABELS),
        "description": DESCRIPTION,
        "concepts": list(CONCEPTS),
        "generator": {
            "generator_version": GENERATOR_VERSION,
            "seed": cfg.seed,
            "n_train": cfg.n_train,
            "n_val": cfg.n_val,
            "n_test": cfg.n_test,
            "image_size": cfg.image_size,
            "implicit_prob": cfg.implicit_prob,
            "inset_prob": cfg.inset_prob,
            "label_noise": cfg.label_noise,
        },
    }
    total += write_dataset_info(root, info).stat().st_size
    total += write_manifest(posts, root / MANIFEST).stat().st_size  # last: marks completion
    return {"root": str(root), "n_posts": len(posts), "counts": counts, "bytes": total}
