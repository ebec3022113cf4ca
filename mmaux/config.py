"""One validated configuration for every mmaux job, loaded from ``params.yaml``.

The same :class:`Config` object is used by the CLI, the benchmarks and the pipeline
flows. Unknown keys and bad values are rejected with a message naming the key.
"""

from __future__ import annotations

import copy
import math
from collections.abc import Iterable
from pathlib import Path
from typing import Any, Literal

import yaml
from pydantic import BaseModel, ConfigDict, Field, ValidationError, model_validator

EMBEDDED_TEXT = "embedded:minilm-l6"
EMBEDDED_IMAGES = ("embedded:efficientnet-lite0", "embedded:efficientnet-lite2")


class ConfigError(ValueError):
    """A configuration file or override is invalid; the message names the key."""


class _Section(BaseModel):
    model_config = ConfigDict(extra="forbid", validate_assignment=True, allow_inf_nan=False)


Severity = Literal["error", "warn", "off"]


class LeakageConfig(_Section):
    """Posts shared across splits, among rows that pass the row rules (texts compared after
    normalisation: NFKC, case, punctuation, invisible characters and spacing ignored).

    ``error`` rejects the copies outside the earliest split (train < val < test), ``warn``
    keeps them and reports them, ``off`` does not check.
    """

    # The same text with a byte-identical image is the same post: a real leak. The embedded
    # data set has none.
    pairs: Severity = Field("error", description="same text and byte-identical image")
    # In multimodal data the image may change the label of a text (the embedded data set's
    # labels are about text-image match: 19 of its texts recur across splits with another
    # label, by design), so this is a warning; a meme set where it means label noise can
    # make it an error.
    conflicting_texts: Severity = Field("warn", description="same text, different labels")
    # Short, common texts recur across splits in real data (the embedded set shares 36).
    texts: Severity = Field("warn", description="same text")
    # Stock images and templates recur with different captions (memes).
    images: Severity = Field("warn", description="byte-identical image")


class DataRulesConfig(_Section):
    """The data rulebook's limits and severities (see :mod:`mmaux.data.rules`): the same for
    the loader, ``mmaux validate``, the validate stage and the importers."""

    # Far above any post (the embedded set's longest text is 93 characters; the tokenizer
    # reads data.max_text_length tokens); a longer text is a broken row, e.g. a file pasted
    # into one field.
    max_text_chars: int = Field(5000, ge=1, description="longest allowed post text")
    # Read from the image header before decoding: 50 MP covers the largest phone photos
    # (48 MP, 150 MB as RGB), and refuses decompression bombs long before PIL's own 179 MP.
    max_image_pixels: int = Field(
        50_000_000, ge=1, description="largest allowed image width * height"
    )
    # The previous validation.* bounds: a label under 5 % or over 80 % of train is worth a
    # look (a broken import or label map); the embedded set's labels are 23-29 %.
    min_class_fraction: float = Field(
        0.05, ge=0.0, le=1.0, description="each label's minimum share of the train split"
    )
    max_class_fraction: float = Field(
        0.8, ge=0.0, le=1.0, description="each label's maximum share of the train split"
    )
    # A warning: the trainer weights classes (train.class_weights: balanced), and small or
    # skewed sets (a fold without a rare class) are still trainable; "error" stops on it.
    class_balance: Severity = Field("warn", description="labels outside the bounds")
    leakage: LeakageConfig = Field(default_factory=LeakageConfig)

    @model_validator(mode="after")
    def _bounds(self) -> DataRulesConfig:
        if self.min_class_fraction > self.max_class_fraction:
            raise ValueError("min_class_fraction must be <= max_class_fraction")
        return self


class DataConfig(_Section):
    """Where the manifest lives and how posts become tensors."""

    root: Path = Field(Path("data/raw"), description="data root; image paths are relative to it")
    manifest: str = Field("manifest.jsonl", description="manifest file inside root (.jsonl/.csv)")
    labels: list[str] | None = Field(
        None, description="ordered label set; null reads it from <root>/dataset.json"
    )
    on_error: Literal["raise", "skip"] = "raise"
    check_images: Literal["decode", "exists", "none"] = "decode"
    max_text_length: int = Field(64, ge=8, le=512)
    image_size: int | None = Field(
        160, ge=16, le=1024, description="encoder input size; null uses the encoder's own"
    )
    cache_dir: Path = Field(Path("data/processed"), description="preprocessing caches")
    n_train: int | None = Field(
        None,
        ge=2,
        description="train on a seeded, stratified subsample of this many training posts "
        "(the low-resource study); null = the whole train split",
    )
    subsample_seed: int | None = Field(
        None, description="seed of the n_train subsample; null = train.seed"
    )
    rules: DataRulesConfig = Field(default_factory=DataRulesConfig)

    @model_validator(mode="after")
    def _labels_unique(self) -> DataConfig:
        if self.labels is not None:
            if len(self.labels) < 2:
                raise ValueError("labels: need at least two classes")
            if len(set(self.labels)) != len(self.labels):
                raise ValueError("labels: duplicate label names")
        return self


class SynthConfig(_Section):
    """The embedded default data set (see :mod:`mmaux.data.synth`)."""

    seed: int = 13
    n_train: int = Field(480, ge=8)
    n_val: int = Field(320, ge=4)
    n_test: int = Field(320, ge=4)
    image_size: int = Field(160, ge=32, le=512)
    implicit_prob: float = Field(
        0.5, ge=0.0, le=1.0, description="texts that hint at the scene instead of naming it"
    )
    inset_prob: float = Field(
        0.5, ge=0.0, le=1.0, description="images with a smaller inset of another scene"
    )
    label_noise: float = Field(
        0.0, ge=0.0, lt=0.5, description="fraction of posts with a uniformly re-drawn label"
    )


class TextEncoderConfig(_Section):
    name: str = Field(
        EMBEDDED_TEXT,
        description="transformers model name or local path; 'embedded:minilm-l6' is offline",
    )
    trainable_layers: int = Field(
        2, ge=-1, description="top transformer layers to fine-tune; -1 = all, 0 = frozen"
    )
    pooling: Literal["cls", "mean"] = "mean"
    attention: Literal["sdpa", "eager"] = Field(
        "sdpa", description="attention kernel: PyTorch scaled-dot-product (fused) or eager"
    )
    local_files_only: bool = Field(True, description="never reach a model hub")


class ImageEncoderConfig(_Section):
    name: str = Field(
        EMBEDDED_IMAGES[0],
        description="timm model name; 'embedded:efficientnet-lite0|lite2' are offline",
    )
    pretrained: bool = Field(True, description="load pretrained weights (hub unless embedded)")
    weights: Path | None = Field(None, description="local .safetensors/.pth state dict")
    freeze: bool = Field(True, description="freeze the image encoder (as the paper does)")
    kwargs: dict[str, Any] = Field(default_factory=dict, description="extra timm kwargs")


class MMBTConfig(_Section):
    """MMBT: image features as extra tokens of the text transformer (``model.text``)."""

    image_tokens: Literal["grid", "pooled"] = Field(
        "grid",
        description="grid: the image encoder's feature-map cells / patches as tokens; "
        "pooled: one token, its pooled vector",
    )
    max_image_tokens: int = Field(
        49, ge=1, description="a larger grid is average-pooled down to at most this many"
    )


class TransformerSourceConfig(_Section):
    """A transformers model for ViLT / LXMERT: by hub name, local directory, or random."""

    name: str = Field(
        "random",
        description="hub name (network or cache), local save_pretrained directory, or "
        "'random': a randomly initialised model from `config` (offline)",
    )
    config: dict[str, Any] = Field(
        default_factory=dict, description="config overrides (e.g. hidden_size, num_*_layers)"
    )
    local_files_only: bool = Field(True, description="never reach a model hub")


class ModelConfig(_Section):
    family: Literal["late", "mmbt", "vilt", "lxmert"] = Field(
        "late",
        description="late: encoders + fusion head; mmbt: image tokens in the text "
        "transformer; vilt: one transformer over words and patches; lxmert: two streams "
        "with cross-modal layers over the image encoder's grid",
    )
    text: TextEncoderConfig = Field(default_factory=TextEncoderConfig)
    image: ImageEncoderConfig = Field(default_factory=ImageEncoderConfig)
    fusion: Literal["concat", "attention", "gmu", "text", "image"] = Field(
        "concat", description="late family's fusion head; 'text'/'image' are unimodal baselines"
    )
    mmbt: MMBTConfig = Field(default_factory=MMBTConfig)
    vilt: TransformerSourceConfig = Field(default_factory=TransformerSourceConfig)
    lxmert: TransformerSourceConfig = Field(default_factory=TransformerSourceConfig)
    hidden_dim: int = Field(256, ge=8)
    proj_dim: int = Field(128, ge=8, description="ITC projection size")
    dropout: float = Field(0.1, ge=0.0, lt=1.0)
    attention_heads: int = Field(1, ge=1)


class AuxConfig(_Section):
    """Auxiliary image-text losses and how they join the main loss."""

    itc_weight: float = Field(0.1, ge=0.0)
    itm_weight: float = Field(0.1, ge=0.0)
    itm_negatives: Literal["random", "hard"] = "random"
    itm_negative_prob: float = Field(0.5, gt=0.0, lt=1.0)
    temperature: float = Field(0.07, gt=0.0, le=1.0, description="initial ITC temperature")
    learn_temperature: bool = True
    max_logit_scale: float = Field(100.0, gt=1.0, description="clamp on 1/temperature")
    simcse_weight: float = Field(
        0.0, ge=0.0, description="MCSE: weight of SimCSE's unsupervised text-contrastive term"
    )
    simcse_temperature: float = Field(0.05, gt=0.0, le=1.0, description="SimCSE temperature")
    weighting: Literal["convex", "additive"] = Field(
        "convex",
        description="convex: (1-b_itc-b_itm-b_simcse)*CE + ...; additive: CE + ...",
    )

    @model_validator(mode="after")
    def _convex_sum(self) -> AuxConfig:
        if (
            self.weighting == "convex"
            and self.itc_weight + self.itm_weight + self.simcse_weight >= 1
        ):
            raise ValueError(
                "itc_weight + itm_weight + simcse_weight must be < 1 with weighting=convex"
            )
        if self.itm_negatives == "hard" and self.itm_weight > 0 and self.itc_weight <= 0:
            raise ValueError(
                "itm_negatives: 'hard' samples negatives by ITC similarity; needs itc_weight > 0"
            )
        if 1.0 / self.temperature > self.max_logit_scale:
            raise ValueError("temperature: 1/temperature exceeds max_logit_scale")
        return self

    @property
    def enabled(self) -> bool:
        """Whether an image-text task (ITC or ITM) is on."""
        return self.itc_weight > 0 or self.itm_weight > 0

    @property
    def init_logit_scale(self) -> float:
        return math.log(1.0 / self.temperature)


class TrainConfig(_Section):
    epochs: int = Field(20, ge=1)
    lr: float = Field(1e-4, gt=0, description="encoder learning rate")
    head_lr: float = Field(1e-3, gt=0, description="fusion/heads/projections learning rate")
    weight_decay: float = Field(2.5e-4, ge=0)
    batch_size: int = Field(32, ge=2)
    grad_accum_steps: int = Field(1, ge=1)
    max_grad_norm: float | None = Field(1.0, gt=0)
    seed: int = 0
    precision: Literal["auto", "fp32", "bf16"] = "auto"
    device: str = Field("auto", pattern=r"^(auto|cpu|cuda(:\d+)?|mps)$")
    patience: int = Field(4, ge=1, description="early stopping on val macro-F1")
    length_grouping: int = Field(
        0,
        ge=0,
        description="0: plain shuffled batches; k: sort texts by length within groups of "
        "k batches, so batches pad less (faster with long, varied texts)",
    )
    class_weights: Literal["balanced", "none"] = "balanced"
    cache_image_features: bool = Field(True, description="cache frozen image features")
    checkpoint_every_steps: int = Field(0, ge=0, description="0 = at each epoch end only")
    log_every_steps: int = Field(
        10,
        ge=1,
        description="read the loss terms from the device (log, progress bar, callbacks, "
        "stop requests, non-finite check) every N optimizer steps",
    )
    num_workers: int = Field(0, ge=0, description="loader worker processes (kept alive)")
    compile: bool = Field(False, description="torch.compile the model and its losses")
    deterministic: bool = Field(
        True, description="deterministic kernels (false: faster cuDNN/cuBLAS autotuning on GPU)"
    )
    channels_last: bool = Field(
        True, description="channels-last memory format for a trained CNN image encoder (CUDA)"
    )
    progress: bool = True
    output_dir: Path = Path("runs/default")


class EvalConfig(_Section):
    split: Literal["train", "val", "test"] = "test"
    batch_size: int = Field(64, ge=1)


class ValidationConfig(_Section):
    """The validate stage (Great Expectations); its rules are ``data.rules``."""

    docs_dir: Path = Field(Path("reports/data_docs"), description="Data Docs HTML output")


class TuneConfig(_Section):
    """Optuna search over the auxiliary-loss weights."""

    enabled: bool = Field(True, description="false: train with aux.* from params.yaml as is")
    n_trials: int = Field(8, ge=1, description="finished trials the study should reach")
    epochs: int = Field(8, ge=1, description="training epochs per trial")
    itc_weight: tuple[float, float] = Field((0.0, 0.4), description="search range for b_itc")
    itm_weight: tuple[float, float] = Field((0.0, 0.4), description="search range for b_itm")
    negatives: list[Literal["random", "hard"]] = Field(
        default_factory=lambda: ["random", "hard"], description="ITM negative modes to try"
    )
    temperature: tuple[float, float] | None = Field(
        None, description="search range for the initial ITC temperature (null: fixed)"
    )
    pruner: Literal["median", "hyperband", "none"] = "median"
    seed: int = 0
    storage: Path = Field(Path("tuning/study.journal"), description="Optuna journal file")
    study_name: str = "mmaux-aux-weights"
    best_params: Path = Field(Path("tuning/best_params.json"), description="train reads this")

    @model_validator(mode="after")
    def _ranges(self) -> TuneConfig:
        for name in ("itc_weight", "itm_weight", "temperature"):
            rng = getattr(self, name)
            if rng is not None and not 0.0 <= rng[0] <= rng[1]:
                raise ValueError(f"{name}: need 0 <= low <= high")
        if not self.negatives:
            raise ValueError("negatives: at least one ITM negative mode")
        return self


# The study's aux-loss variants (see :mod:`mmaux.ablation`): unimodal baselines, fused
# CE-only, and fused with each auxiliary task. MCSE is ITC + SimCSE.
VARIANTS = (
    "text-only",
    "image-only",
    "fused-ce",
    "fused+itc",
    "fused+itm",
    "fused+itc+itm",
    "fused+simcse",
    "fused+itc+simcse",
)


class StudyConfig(_Section):
    """A grid of training runs, models x variants x training-set sizes x seeds
    (``mmaux study``), and how its results are compared."""

    name: str = Field("study", description="the parent MLflow run's name")
    models: dict[str, dict[str, Any]] = Field(
        default_factory=lambda: {"default": {}},
        description="model name -> config keys it changes, e.g. {mmbt: {model.family: mmbt}}",
    )
    variants: list[str] = Field(
        default_factory=lambda: ["text-only", "fused-ce", "fused+itc", "fused+itm", "fused+itc+itm"]
    )
    baseline: str = Field("fused-ce", description="the variant every other is compared with")
    sizes: list[int | Literal["all"]] = Field(
        default_factory=lambda: ["all"],
        description="training posts per cell (seeded stratified subsamples); all = whole split",
    )
    seeds: list[int] = Field(default_factory=lambda: [0, 1, 2])
    out_dir: Path = Field(Path("results/study"), description="the report, plots and tables")
    cells_dir: Path | None = Field(
        None,
        description="the cells' run directories; null = <out_dir>/cells. Studies that share "
        "it share their common cells (same configuration = same run, trained once)",
    )
    alpha: float = Field(0.05, gt=0, lt=1, description="significance level, Holm-corrected")
    confidence: float = Field(0.95, gt=0, lt=1, description="confidence of every interval")
    resamples: int = Field(9999, ge=100, description="bootstrap resamples over seeds")
    test_resamples: int = Field(1000, ge=100, description="bootstrap resamples of test posts")
    subgroups: list[str] | None = Field(
        None, description="manifest meta fields to break results down by; null = automatic"
    )
    length_bins: int = Field(3, ge=1, le=10, description="text-length subgroups (quantiles)")

    @model_validator(mode="after")
    def _grid(self) -> StudyConfig:
        unknown = [v for v in self.variants if v not in VARIANTS]
        if unknown:
            raise ValueError(f"variants: unknown {unknown}; expected some of {list(VARIANTS)}")
        if len(set(self.variants)) != len(self.variants):
            raise ValueError("variants: listed twice")
        if self.baseline not in VARIANTS:
            raise ValueError(f"baseline: unknown variant {self.baseline!r}")
        if not self.models:
            raise ValueError("models: at least one model")
        bad = [m for m in self.models if not m or "/" in m or m.strip() != m]
        if bad:
            raise ValueError(f"models: names must be non-empty, without '/' or spaces: {bad}")
        for name in ("sizes", "seeds"):
            values = getattr(self, name)
            if not values or len(set(values)) != len(values):
                raise ValueError(f"{name}: need at least one value, none twice")
        if any(isinstance(n, int) and n < 2 for n in self.sizes):
            raise ValueError("sizes: a training set needs at least 2 posts")
        return self


class TrackingConfig(_Section):
    """MLflow experiment tracking and the model registry."""

    enabled: bool = True
    tracking_uri: str | None = Field(
        None, description="null: $MLFLOW_TRACKING_URI, else sqlite:///mlflow.db"
    )
    artifact_location: Path = Field(
        Path("mlartifacts"), description="artifact root for experiments this project creates"
    )
    experiment: str = "mmaux"
    registered_model: str = "mmaux-classifier"
    champion_alias: str = "champion"
    # A tracking server that fails must never stall training: every request is bounded.
    request_timeout_s: int = Field(
        15, ge=1, description="seconds per HTTP request to a tracking server"
    )
    max_retries: int = Field(2, ge=0, le=10, description="retries of a failed HTTP request")
    backoff_factor: int = Field(
        1, ge=0, le=120, description="retry backoff: factor * 2**(n-1) s before retry n >= 2"
    )
    retry_interval_s: float = Field(
        30.0, ge=0, description="while the server is down, buffer metrics this long between tries"
    )
    buffer_size: int = Field(
        100_000, ge=1, description="metrics held while the server is down; oldest dropped"
    )


class Config(_Section):
    """The whole job configuration (``params.yaml``)."""

    data: DataConfig = Field(default_factory=DataConfig)
    synth: SynthConfig = Field(default_factory=SynthConfig)
    model: ModelConfig = Field(default_factory=ModelConfig)
    aux: AuxConfig = Field(default_factory=AuxConfig)
    train: TrainConfig = Field(default_factory=TrainConfig)
    eval: EvalConfig = Field(default_factory=EvalConfig)
    validation: ValidationConfig = Field(default_factory=ValidationConfig)
    tune: TuneConfig = Field(default_factory=TuneConfig)
    study: StudyConfig = Field(default_factory=StudyConfig)
    tracking: TrackingConfig = Field(default_factory=TrackingConfig)

    @model_validator(mode="after")
    def _aux_needs_both_modalities(self) -> Config:
        fusion, family = self.model.fusion, self.model.family
        if fusion in ("text", "image") and family != "late":
            raise ValueError(
                f"model.fusion={fusion!r}: unimodal baselines are late-family models; "
                "set model.family=late"
            )
        if fusion in ("text", "image") and self.aux.enabled:
            raise ValueError(
                f"aux: ITC/ITM need both modalities but model.fusion={fusion!r}; "
                "set aux.itc_weight=0 and aux.itm_weight=0 for unimodal baselines"
            )
        if fusion == "image" and self.aux.simcse_weight > 0:
            raise ValueError("aux.simcse_weight: SimCSE needs text; model.fusion='image'")
        if (
            self.aux.simcse_weight > 0
            and family in ("late", "mmbt")
            and self.model.text.trainable_layers == 0
        ):
            raise ValueError(
                "aux.simcse_weight: SimCSE contrasts two dropout views of a text, but a frozen "
                "text encoder (model.text.trainable_layers=0) has no dropout"
            )
        return self


def _format_errors(err: ValidationError, source: str) -> str:
    lines = [f"{source}: invalid configuration"]
    for e in err.errors():
        key = ".".join(str(p) for p in e["loc"]) or "(root)"
        msg = e["msg"]
        if e["type"] == "extra_forbidden":
            msg = "unknown key"
        lines.append(f"  {key}: {msg}")
    return "\n".join(lines)


def parse_override(text: str) -> tuple[list[str], Any]:
    """Parse ``a.b.c=value`` (value read as YAML) into a key path and a value."""
    if "=" not in text:
        raise ConfigError(f"override {text!r}: expected KEY=VALUE, e.g. aux.itc_weight=0.3")
    key, raw = text.split("=", 1)
    path = [p for p in key.strip().split(".") if p]
    if not path:
        raise ConfigError(f"override {text!r}: empty key")
    if not raw.strip():
        return path, None
    try:
        return path, yaml.safe_load(raw)
    except yaml.YAMLError as err:
        problem = getattr(err, "problem", None) or type(err).__name__
        raise ConfigError(
            f"override {text!r}: the value is not valid YAML ({problem}); quote a string"
        ) from None


def apply_overrides(raw: dict[str, Any], overrides: list[str]) -> dict[str, Any]:
    """A copy of a raw (unvalidated) params dictionary with ``a.b=value`` overrides applied;
    ``raw`` itself, nested sections included, is never modified."""
    raw = copy.deepcopy(raw)
    for text in overrides:
        path, value = parse_override(text)
        node = raw
        for i, part in enumerate(path[:-1]):
            child = node.setdefault(part, {})
            if not isinstance(child, dict):
                raise ConfigError(f"override {text!r}: {'.'.join(path[: i + 1])} is not a section")
            node = child
        node[path[-1]] = value
    return raw


def config_from_dict(
    raw: dict[str, Any], overrides: list[str] | None = None, source: str = "params"
) -> Config:
    """Validate a raw dictionary (plus overrides) into a :class:`Config`; ``raw`` is never
    modified."""
    raw = apply_overrides(raw or {}, list(overrides or []))
    try:
        return Config.model_validate(raw)
    except ValidationError as err:
        raise ConfigError(_format_errors(err, source)) from None


def _deep_merge(base: dict[str, Any], top: dict[str, Any]) -> dict[str, Any]:
    """``top`` over ``base``: sections merge key by key, any other value replaces."""
    out = copy.deepcopy(base)
    for key, value in top.items():
        if isinstance(value, dict) and isinstance(out.get(key), dict):
            out[key] = _deep_merge(out[key], value)
        else:
            out[key] = copy.deepcopy(value)
    return out


def read_params(path: str | Path, _seen: tuple[Path, ...] = ()) -> dict[str, Any]:
    """A params file as a raw dictionary. A file may start from another one with a
    top-level ``extends: OTHER.yaml`` (relative to the file): its own keys override those of
    OTHER, section by section (a recipe such as ``params/real-data.yaml``)."""
    path = Path(path)
    if path.resolve() in _seen:
        chain = " -> ".join(str(p) for p in (*_seen, path.resolve()))
        raise ConfigError(f"{path}: 'extends' forms a cycle ({chain})")
    try:
        raw = yaml.safe_load(path.read_text()) or {}
    except yaml.YAMLError as err:
        raise ConfigError(f"{path}: not valid YAML: {err}") from None
    except OSError as err:
        raise ConfigError(f"{path}: cannot read it ({err.strerror or err})") from None
    if not isinstance(raw, dict):
        raise ConfigError(f"{path}: top level must be a mapping of sections")
    parent = raw.pop("extends", None)
    if parent is None:
        return raw
    if not isinstance(parent, str):
        raise ConfigError(f"{path}: extends: expected the path of a params file")
    parent_path = path.parent / parent
    if not parent_path.is_file():
        raise ConfigError(f"{path}: extends: {parent_path} does not exist")
    return _deep_merge(read_params(parent_path, (*_seen, path.resolve())), raw)


def load_config(path: str | Path = "params.yaml", overrides: list[str] | None = None) -> Config:
    """Load ``params.yaml`` (missing file = all defaults; ``extends`` followed) and apply
    ``key=value`` overrides."""
    path = Path(path)
    raw: dict[str, Any] = {}
    if path.exists():
        raw = read_params(path)
    elif str(path) != "params.yaml":
        raise ConfigError(f"{path}: no such configuration file")
    return config_from_dict(raw, overrides, source=str(path))


def dump_config(cfg: Config) -> dict[str, Any]:
    """A JSON/YAML-safe dictionary of the configuration."""
    return cfg.model_dump(mode="json")


# (section, key) pairs that change how a run is shown, logged or stored, never what it
# computes: left out wherever runs are compared (resume, reuse, the study hash).
RESULT_NEUTRAL_KEYS: frozenset[tuple[str, str]] = frozenset(
    {("train", k) for k in ("progress", "num_workers", "output_dir", "log_every_steps")}
    | {("data", "cache_dir")}
    | {("study", k) for k in StudyConfig.model_fields}  # how runs are compared, not trained
)


def without_keys(raw: dict[str, Any], keys: Iterable[tuple[str, str]]) -> dict[str, Any]:
    """A copy of a dumped configuration (section -> key -> value) without ``keys``."""
    drop = set(keys)
    return {
        sec: {k: v for k, v in body.items() if (sec, k) not in drop} for sec, body in raw.items()
    }
