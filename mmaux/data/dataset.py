"""Torch datasets of posts: tokenised text plus image pixels or cached image features."""

from __future__ import annotations

from collections.abc import Callable, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import torch
from torch.utils.data import Dataset

from mmaux.data.images import DEFAULT_MAX_IMAGE_PIXELS, file_digest, load_rgb
from mmaux.data.manifest import Manifest, Post


@dataclass
class ImagePixels:
    """Decoded, resized, cropped images as uint8 (N, 3, H, W), one row per image file."""

    rows: dict[str, int]
    pixels: torch.Tensor
    normalize: Callable  # uint8 HWC-equivalent tensor pipeline: to float [0, 1] -> normalise


@dataclass
class ImageFeatures:
    """Pre-computed frozen-encoder features, one row per image file (relative path)."""

    rows: dict[str, int]
    pooled: torch.Tensor  # (N, C)
    tokens: torch.Tensor | None = None  # (N, T, C)


def image_groups(root: Path, posts: Sequence[Post]) -> list[int]:
    """One id per post, shared by the posts whose image files have the same bytes (the same
    path, or a copy): ITM never samples such posts as each other's negatives."""
    ids: dict[str, int] = {}
    by_path: dict[str, int] = {}
    out = []
    for p in posts:
        if p.image not in by_path:
            by_path[p.image] = ids.setdefault(file_digest(Path(root) / p.image), len(ids))
        out.append(by_path[p.image])
    return out


class PostDataset(Dataset):
    """Posts of one split. Text is tokenised once up front; images are decoded on access
    (or looked up in :class:`ImageFeatures` when the image encoder is frozen)."""

    def __init__(
        self,
        manifest: Manifest,
        posts: Sequence[Post],
        tokenizer: Any | None,
        max_length: int,
        transform: Callable | None = None,
        features: ImageFeatures | None = None,
        use_image: bool = True,
        pixels: ImagePixels | None = None,
        max_pixels: int | None = DEFAULT_MAX_IMAGE_PIXELS,
        with_image_groups: bool = False,
    ):
        self.root = Path(manifest.root)
        self.max_pixels = max_pixels  # data.rules.max_image_pixels, for images decoded here
        self.posts = list(posts)
        index = manifest.label_index()
        self.labels = [index[p.label] for p in self.posts]
        self.transform = transform
        self.features = features
        self.pixels = pixels
        self.use_image = use_image
        self.input_ids: list[list[int]] | None = None
        if tokenizer is not None and self.posts:
            enc = tokenizer(
                [p.text for p in self.posts],
                truncation=True,
                max_length=max_length,
                padding=False,
            )
            self.input_ids = [list(x) for x in enc["input_ids"]]
        self.groups = image_groups(self.root, self.posts) if with_image_groups else None
        if use_image and features is None and transform is None:
            raise ValueError("PostDataset needs an image transform or cached image features")

    @property
    def text_lengths(self) -> list[int] | None:
        """Token count of each post's text (None without a tokenizer)."""
        return None if self.input_ids is None else [len(x) for x in self.input_ids]

    def __len__(self) -> int:
        return len(self.posts)

    def __getitem__(self, i: int) -> dict[str, Any]:
        post = self.posts[i]
        item: dict[str, Any] = {"index": i, "label": self.labels[i]}
        if self.groups is not None:
            item["image_group"] = self.groups[i]
        if self.input_ids is not None:
            item["input_ids"] = self.input_ids[i]
        if self.use_image:
            if self.features is not None:
                row = self.features.rows[post.image]
                item["image_pooled"] = self.features.pooled[row]
                if self.features.tokens is not None:
                    item["image_tokens"] = self.features.tokens[row]
            elif self.pixels is not None:
                raw = self.pixels.pixels[self.pixels.rows[post.image]]
                item["pixel_values"] = self.pixels.normalize(raw.float().div_(255))
            else:
                assert self.transform is not None
                image = load_rgb(self.root / post.image, self.max_pixels)
                item["pixel_values"] = self.transform(image)
        return item


def collate_posts(items: list[dict[str, Any]], pad_id: int = 0) -> dict[str, torch.Tensor]:
    """Stack a list of items; pad token ids to the longest text in the batch."""
    batch: dict[str, torch.Tensor] = {
        "index": torch.tensor([it["index"] for it in items], dtype=torch.long),
        "labels": torch.tensor([it["label"] for it in items], dtype=torch.long),
    }
    if "image_group" in items[0]:
        batch["image_group"] = torch.tensor([it["image_group"] for it in items], dtype=torch.long)
    if "input_ids" in items[0]:
        length = max(len(it["input_ids"]) for it in items)
        ids = torch.full((len(items), length), pad_id, dtype=torch.long)
        mask = torch.zeros((len(items), length), dtype=torch.long)
        for row, it in enumerate(items):
            n = len(it["input_ids"])
            ids[row, :n] = torch.tensor(it["input_ids"], dtype=torch.long)
            mask[row, :n] = 1
        batch["input_ids"], batch["attention_mask"] = ids, mask
    for key in ("pixel_values", "image_pooled", "image_tokens"):
        if key in items[0]:
            batch[key] = torch.stack([it[key] for it in items])
    return batch
