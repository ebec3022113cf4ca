"""Helpers for pipeline tests: a tiny, complete params.yaml pointing into a temp directory."""

from __future__ import annotations

from pathlib import Path

import yaml

REPO = Path(__file__).resolve().parents[1]


def tiny_params(work: Path, data_root: Path, text_model: Path, **sections) -> Path:
    """The real params.yaml shrunk to seconds, with every output inside ``work``."""
    p = yaml.safe_load((REPO / "params.yaml").read_text())
    p["data"].update(
        root=str(data_root), cache_dir="data/processed", image_size=64, max_text_length=32
    )
    p["model"]["text"].update(name=str(text_model), trainable_layers=-1)
    p["model"].update(hidden_dim=32, proj_dim=16)
    p["train"].update(epochs=2, batch_size=16, device="cpu", progress=False)
    p["tune"].update(n_trials=2, epochs=1)
    p["tracking"].update(
        tracking_uri=f"sqlite:///{work / 'mlflow.db'}", artifact_location=str(work / "mlartifacts")
    )
    for section, values in sections.items():
        p[section].update(values)
    path = work / "params.yaml"
    path.write_text(yaml.safe_dump(p, sort_keys=False))
    return path
