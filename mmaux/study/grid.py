"""A study's grid: models x aux variants x training-set sizes x seeds, one cell per run.

Each :class:`Cell` is an independent unit of work: :func:`cell_config` gives the exact
configuration it trains, so a worker that gets only the params file and the cell key
(``late/fused+itc/n-100/seed-3``) trains the same run.
"""

from __future__ import annotations

import json
from collections.abc import Iterator
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Any

from mmaux.ablation import variant_config
from mmaux.config import VARIANTS, Config, ConfigError, config_from_dict, dump_config

# Named grids for `mmaux study --preset NAME` (they set study.* keys; --set still wins).
PRESETS: dict[str, dict[str, Any]] = {
    "aux": {
        "variants": ["text-only", "fused-ce", "fused+itc", "fused+itm", "fused+itc+itm"],
        "sizes": ["all"],
    },
    "paper": {"variants": list(VARIANTS[:6]), "sizes": ["all"]},
    "low-resource": {
        "variants": ["text-only", "fused-ce", "fused+itc+itm"],
        "sizes": [50, 100, 200, 400, "all"],
    },
    "mcse": {
        "variants": ["fused-ce", "fused+itc", "fused+simcse", "fused+itc+simcse"],
        "sizes": ["all"],
    },
    "families": {
        "models": {
            "late": {"model.family": "late", "model.fusion": "attention"},
            "mmbt": {"model.family": "mmbt"},
            "vilt": {"model.family": "vilt"},
            "lxmert": {"model.family": "lxmert"},
        },
        "variants": ["fused-ce", "fused+itc", "fused+itm", "fused+itc+itm"],
        "sizes": ["all"],
    },
}
PRESET_HELP = {
    "aux": "CE, +ITC, +ITM, +ITC+ITM and text-only on the whole training split",
    "paper": "the paper's six: text-only, image-only, CE, +ITC, +ITM, +ITC+ITM",
    "low-resource": "text-only, CE and +ITC+ITM at 50, 100, 200, 400 and all training posts",
    "mcse": "CE, +ITC, +SimCSE and MCSE (+ITC+SimCSE)",
    "families": "late fusion, MMBT, ViLT and LXMERT with CE, +ITC, +ITM, +ITC+ITM",
}


@dataclass(frozen=True, order=True)
class Cell:
    """One training run of a study."""

    model: str
    variant: str
    n_train: int | None  # None: the whole training split
    seed: int

    @property
    def size(self) -> str:
        return "all" if self.n_train is None else str(self.n_train)

    @property
    def key(self) -> str:
        """``model/variant/n-SIZE/seed-K``: the cell's name and its directory under cells/."""
        return f"{self.model}/{self.variant}/n-{self.size}/seed-{self.seed}"

    @property
    def label(self) -> str:
        """What every log line of the cell starts with."""
        return f"{self.model} · {self.variant} · n={self.size} · seed {self.seed}"

    def tags(self) -> dict[str, str]:
        """The MLflow tags of the cell's run."""
        return {
            "model": self.model,
            "variant": self.variant,
            "n_train": self.size,
            "seed": str(self.seed),
            "mmaux.cell": self.key,
        }

    def as_dict(self) -> dict[str, Any]:
        return asdict(self)

    @classmethod
    def parse(cls, key: str) -> Cell:
        """The cell named ``model/variant/n-SIZE/seed-K``."""
        parts = key.strip("/").split("/")
        try:
            model, variant, size, seed = parts
            if not (size.startswith("n-") and seed.startswith("seed-")):
                raise ValueError
            n = None if size == "n-all" else int(size[2:])
            return cls(model, variant, n, int(seed[5:]))
        except ValueError:
            raise ValueError(f"cell {key!r}: expected MODEL/VARIANT/n-SIZE/seed-K") from None


def cells(cfg: Config) -> list[Cell]:
    """Every cell of ``cfg.study``, in the order they run: seeds outermost, so that an
    interrupted study already holds complete paired comparisons for its first seeds."""
    s = cfg.study
    sizes = [None if n == "all" else int(n) for n in s.sizes]
    return [
        Cell(model, variant, n, seed)
        for seed in s.seeds
        for n in sizes
        for model in s.models
        for variant in s.variants
    ]


def _override(key: str, value: Any) -> str:
    return f"{key}={json.dumps(value)}"  # JSON is YAML: the value keeps its type


def cell_dir(cfg: Config, cell: Cell) -> Path:
    root = cfg.study.cells_dir or Path(cfg.study.out_dir) / "cells"
    return Path(root) / cell.key


def cell_config(cfg: Config, cell: Cell) -> Config:
    """The exact configuration cell ``cell`` trains: the study's base, the model's keys,
    the variant's aux terms, the training-set size, the seed and the cell's directory."""
    if cell.model not in cfg.study.models:
        raise ValueError(f"cell {cell.key}: no model {cell.model!r} in study.models")
    raw = dump_config(cfg)
    overrides = [_override(k, v) for k, v in cfg.study.models[cell.model].items()]
    overrides.append(_override("data.n_train", cell.n_train))
    try:
        base = config_from_dict(raw, overrides, source=f"study.models.{cell.model}")
    except ConfigError as err:
        raise ConfigError(str(err)) from None
    out = cell_dir(cfg, cell)
    run = variant_config(base, cell.variant, cell.seed, out.parent.parent)
    raw = dump_config(run)
    raw["train"]["output_dir"] = str(out)
    return config_from_dict(raw, source=f"study cell {cell.key}")


def iter_configs(cfg: Config) -> Iterator[tuple[Cell, Config]]:
    """Every cell with its configuration (all are built first by callers that want to fail
    before training anything)."""
    for cell in cells(cfg):
        yield cell, cell_config(cfg, cell)


def study_overrides(
    preset: str | None = None,
    seeds: list[int] | None = None,
    variants: list[str] | None = None,
    sizes: list[str] | None = None,
    out: str | None = None,
) -> list[str]:
    """``study.*`` overrides of a preset and of explicit choices (later ones win)."""
    found: list[str] = []
    if preset is not None:
        if preset not in PRESETS:
            raise ValueError(
                f"unknown study preset {preset!r}; expected one of {', '.join(PRESETS)}"
            )
        found += [_override(f"study.{k}", v) for k, v in PRESETS[preset].items()]
    if seeds:
        found.append(_override("study.seeds", list(seeds)))
    if variants:
        found.append(_override("study.variants", list(variants)))
    if sizes:
        found.append(_override("study.sizes", [s if s == "all" else int(s) for s in sizes]))
    if out:
        found.append(_override("study.out_dir", str(out)))
    return found
