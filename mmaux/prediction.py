"""Classify posts with a trained model: one :class:`Predictor` for ``mmaux evaluate``, the
MLflow pyfunc model and any other caller.

Posts become batches through the training code itself (:class:`PostDataset`,
:func:`collate_posts`, the encoder's :func:`build_transform`, the tokenizer settings of
``data.max_text_length``), so a served model preprocesses exactly as training did.
"""

from __future__ import annotations

import json
from collections.abc import Sequence
from dataclasses import dataclass, field
from functools import partial
from pathlib import Path
from typing import TYPE_CHECKING

import torch
import yaml
from torch.utils.data import DataLoader

from mmaux.config import Config, config_from_dict
from mmaux.data.dataset import PostDataset, collate_posts
from mmaux.data.images import build_transform
from mmaux.data.manifest import Manifest, Post
from mmaux.evaluation import Predictions, predict
from mmaux.models import MultimodalModel, build_model
from mmaux.models.encoders import ImageEncoder, TextEncoder
from mmaux.runtime import resolve_device, resolve_precision

if TYPE_CHECKING:
    import pandas as pd

#: The files of a finished run a predictor is rebuilt from.
RUN_FILES = {"config": "config.yaml", "labels": "labels.json", "weights": "model.safetensors"}


def run_files(run_dir: Path) -> dict[str, Path]:
    """The model files of a finished run; raises if one is missing."""
    files = {key: Path(run_dir) / name for key, name in RUN_FILES.items()}
    missing = [str(p) for p in files.values() if not p.is_file()]
    if missing:
        raise FileNotFoundError(f"{run_dir}: not a finished run (missing {', '.join(missing)})")
    return files


@dataclass
class Predictor:
    """A classifier in eval mode with the preprocessing it was trained with: from a finished
    run (:meth:`from_run`, :meth:`from_files`) or from a model in memory (the constructor,
    with the encoders :func:`~mmaux.models.build_model` returned)."""

    cfg: Config
    labels: list[str]
    model: MultimodalModel
    text: TextEncoder | None = None
    image: ImageEncoder | None = None
    device: torch.device = field(default_factory=lambda: torch.device("cpu"))
    precision: str = "fp32"

    def __post_init__(self) -> None:
        self.model.to(self.device).eval()
        uses_text, uses_image = self.model.uses_text, self.model.uses_image
        self.tokenizer = self.text.tokenizer if self.text is not None and uses_text else None
        self.transform = (
            build_transform(self.image.data_config, self.cfg.data.image_size)
            if self.image is not None and uses_image
            else None
        )

    @classmethod
    def from_files(
        cls,
        config: Path,
        labels: Path,
        weights: Path,
        overrides: list[str] | None = None,
        device: str | None = None,
    ) -> Predictor:
        """Rebuild a trained model from its config.yaml, labels.json and model.safetensors
        (on ``device``, default ``train.device``).

        The weights file holds trained weights only: frozen encoders come from their own
        source, and one with ``pretrained=false`` is re-initialised with the training seed,
        as the trainer built it (the global RNG is left as it was)."""
        from mmaux.checkpoint import load_weights

        cfg = config_from_dict(yaml.safe_load(Path(config).read_text()), overrides, str(config))
        names = json.loads(Path(labels).read_text())
        with torch.random.fork_rng(devices=[]):
            torch.manual_seed(cfg.train.seed)
            model, text, image = build_model(cfg, len(names))
        load_weights(model, Path(weights))
        dev = resolve_device(device or cfg.train.device)
        precision = resolve_precision(cfg.train.precision, dev)
        return cls(cfg, list(names), model, text, image, dev, precision)

    @classmethod
    def from_run(
        cls, run_dir: Path, overrides: list[str] | None = None, device: str | None = None
    ) -> Predictor:
        """:meth:`from_files` on a finished run directory."""
        files = run_files(run_dir)
        return cls.from_files(files["config"], files["labels"], files["weights"], overrides, device)

    @property
    def pad_id(self) -> int:
        return int(getattr(self.tokenizer, "pad_token_id", 0) or 0)

    def dataset(self, posts: Sequence[Post], root: Path = Path(".")) -> PostDataset:
        """The training dataset class over ``posts`` (images relative to ``root``, decoded
        and transformed on access; labels must be in :attr:`labels`)."""
        manifest = Manifest(root=Path(root), labels=self.labels, posts=list(posts))
        return PostDataset(
            manifest,
            manifest.posts,
            self.tokenizer,
            self.cfg.data.max_text_length,
            transform=self.transform,
            use_image=self.transform is not None,
            max_pixels=self.cfg.data.rules.max_image_pixels,
        )

    def loader(self, dataset: PostDataset, num_workers: int = 0) -> DataLoader:
        """Ordered batches of ``eval.batch_size`` posts."""
        return DataLoader(
            dataset,
            batch_size=self.cfg.eval.batch_size,
            shuffle=False,
            collate_fn=partial(collate_posts, pad_id=self.pad_id),
            num_workers=num_workers,
            multiprocessing_context="forkserver" if num_workers > 0 else None,
        )

    def predict(
        self, posts: Sequence[Post], root: Path = Path("."), num_workers: int = 0
    ) -> Predictions:
        """Class probabilities (and the cross-entropy against the posts' labels)."""
        loader = self.loader(self.dataset(posts, root), num_workers)
        return predict(self.model, loader, self.device, self.precision)

    def predict_frame(self, frame: pd.DataFrame) -> pd.DataFrame:
        """``text`` + ``image`` (file path, absolute or relative to the working directory)
        columns -> ``label`` and one ``p_<label>`` column per class."""
        import numpy as np
        import pandas as pd

        need = [c for c, on in (("text", self.tokenizer), ("image", self.transform)) if on]
        missing = [c for c in need if c not in frame.columns]
        if missing:
            raise ValueError(f"model input lacks column(s) {missing}; expected text and image")
        n = len(frame)
        texts = frame["text"].fillna("").astype(str) if "text" in frame else [""] * n
        images = frame["image"].astype(str) if "image" in frame else [""] * n
        # Raw posts have no label: any known one will do, the loss is ignored.
        posts = [
            Post(id=str(i), text=t, image=im, label=self.labels[0], split="predict")
            for i, (t, im) in enumerate(zip(texts, images, strict=True))
        ]
        probs = (
            self.predict(posts).probs.astype(np.float64)
            if posts
            else np.zeros((0, len(self.labels)))
        )
        out = pd.DataFrame(probs, columns=[f"p_{n}" for n in self.labels], index=frame.index)
        out.insert(0, "label", [self.labels[i] for i in probs.argmax(1)] if n else [])
        return out
