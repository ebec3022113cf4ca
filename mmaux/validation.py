"""Validate a data set's manifest with Great Expectations before anything trains.

The strict loader (:func:`mmaux.data.manifest.load_manifest`) stops at bad data; this module
reads the manifest *leniently* (every row, malformed ones included) into a pandas DataFrame
with per-row helper columns, then runs a GX Core suite over it (plus a one-row-per-label
frame for class balance). The result is a complete :class:`ValidationReport` and, when asked,
HTML Data Docs.
"""

from __future__ import annotations

import csv
import hashlib
import json
import os
import shutil
from collections import defaultdict
from collections.abc import Callable
from dataclasses import asdict, dataclass, field
from pathlib import Path, PurePosixPath
from typing import Any

import pandas as pd

from mmaux.config import ValidationConfig
from mmaux.data.images import image_problem
from mmaux.data.manifest import REQUIRED, SPLITS, iter_rows, read_dataset_info

ROW_SUITE = "mmaux-manifest"
BALANCE_SUITE = "mmaux-class-balance"
MAX_EXAMPLES = 5
# What a GX Data Docs site writes under its base directory (removed before a rebuild).
_DOCS_ENTRIES = ("index.html", "static", "expectations", "validations")


@dataclass
class ExpectationFailure:
    """One failed expectation, in plain words."""

    expectation: str
    column: str | None
    description: str
    unexpected_count: int
    examples: list[str] = field(default_factory=list)

    def __str__(self) -> str:
        where = f" [{self.column}]" if self.column else ""
        head = f"{self.description}: {self.unexpected_count} unexpected ({self.expectation}{where})"
        return "\n".join([head] + [f"      e.g. {e}" for e in self.examples])


@dataclass
class ValidationReport:
    """Outcome of :func:`validate_data`."""

    success: bool
    n_rows: int
    failures: list[ExpectationFailure]
    evaluated: int
    docs_index: Path | None = None

    def summary(self) -> str:
        """PASS/FAIL headline, then one entry per failed expectation with examples."""
        verdict = "PASS" if self.success else "FAIL"
        lines = [
            f"Data validation {verdict}: {self.n_rows} manifest row(s), "
            f"{self.evaluated - len(self.failures)}/{self.evaluated} expectations met"
        ]
        lines += [f"  - {f}" for f in self.failures]
        if self.docs_index is not None:
            lines.append(f"  Data Docs: {self.docs_index}")
        return "\n".join(lines)

    def to_dict(self) -> dict[str, Any]:
        """A JSON-serialisable dictionary."""
        d = asdict(self)
        d["docs_index"] = str(self.docs_index) if self.docs_index is not None else None
        return d


class DataValidationError(RuntimeError):
    """The data failed validation; ``report`` holds the details."""

    def __init__(self, report: ValidationReport):
        self.report = report
        super().__init__(report.summary())


# ----------------------------------------------------------------------------- reading


def _csv_header(path: Path) -> list[str]:
    with path.open(encoding="utf-8", newline="") as fh:
        return list(csv.DictReader(fh).fieldnames or [])


def _inside_root(root: Path, rel: str) -> Path | None:
    """``root/rel`` resolved (symlinks followed) if it stays under ``root``, else ``None``."""
    norm = rel.replace("\\", "/")
    if (
        norm.startswith("/")
        or PurePosixPath(norm).is_absolute()
        or (len(rel) > 1 and rel[1] == ":")
    ):
        return None
    full = (root / norm).resolve()
    return full if full.is_relative_to(root.resolve()) else None


def _field_problem(row: dict[str, Any]) -> str | None:
    """Type/shape problems of a parsed row other than missing fields (those are nulls)."""
    unknown = sorted(set(row) - set(REQUIRED) - {"meta"})
    if unknown:
        return f"unknown field(s): {', '.join(unknown)}"
    for k in REQUIRED:
        if row.get(k) is not None and not isinstance(row[k], str):
            return f"field {k!r} must be a string, got {type(row[k]).__name__}"
    if "meta" in row and not isinstance(row["meta"], dict):
        return "meta must be an object"
    if isinstance(row.get("id"), str) and not row["id"].strip():
        return "empty id"
    return None


def _cell(value: Any) -> Any:
    """Raw values for the frame: containers become JSON text so pandas can hash them."""
    if isinstance(value, dict | list):
        return json.dumps(value, sort_keys=True)
    return value


def _norm_text(text: str) -> str:
    return " ".join(text.lower().split())


def manifest_frame(root: Path, manifest: str, labels: list[str]) -> pd.DataFrame:
    """Read every manifest row leniently into a DataFrame with derived check columns.

    Columns: ``line``, ``parse_ok``, ``parse_error``, the required fields that the manifest
    has (a column no row has is absent), ``field_problem``, ``text_length`` (stripped),
    ``image_inside_root``, ``image_exists``, ``image_decodable``, ``image_problem``,
    ``content_key``, ``leaks`` and ``leaks_with``. A check that does not apply to a row
    (e.g. decoding a missing image) is null there, so GX skips it. ``labels`` is accepted for
    a uniform signature; label membership is checked by the suite.
    """
    del labels  # checked by the GX suite, not here
    root = Path(root)
    path = root / manifest
    if not path.is_file():
        raise FileNotFoundError(f"{path}: manifest not found")
    present: set[str] = set(_csv_header(path)) if path.suffix.lower() == ".csv" else set()
    image_cache: dict[Path, tuple[bool, str | None, str]] = {}

    def image_facts(full: Path) -> tuple[bool, str | None, str]:
        """(exists, decode problem or None, content hash) for one resolved image path."""
        if full not in image_cache:
            missing = image_problem(full, "exists")
            if missing:
                digest = hashlib.sha256(str(full).encode()).hexdigest()
                image_cache[full] = (False, missing, digest)
            else:
                digest = hashlib.sha256(full.read_bytes()).hexdigest()
                image_cache[full] = (True, image_problem(full, "decode"), digest)
        return image_cache[full]

    records: list[dict[str, Any]] = []
    for line, row, parse_error in iter_rows(path, lenient=True):
        rec: dict[str, Any] = {
            "line": line,
            "parse_ok": row is not None,
            "parse_error": parse_error,
        }
        rec.update(
            field_problem=None,
            text_length=None,
            image_inside_root=None,
            image_exists=None,
            image_decodable=None,
            image_problem=None,
            content_key=None,
        )
        if row is not None:
            present.update(k for k in REQUIRED if k in row)
            rec.update({k: _cell(row.get(k)) for k in REQUIRED})
            rec["field_problem"] = _field_problem(row)
            text, image = row.get("text"), row.get("image")
            if isinstance(text, str):
                rec["text_length"] = len(text.strip())
            if isinstance(image, str):
                full = _inside_root(root, image)
                rec["image_inside_root"] = full is not None
                image_hash = hashlib.sha256(image.encode()).hexdigest()
                if full is not None:
                    exists, problem, image_hash = image_facts(full)
                    rec["image_exists"] = exists
                    if exists:
                        rec["image_decodable"] = problem is None
                    rec["image_problem"] = problem
                if isinstance(text, str):
                    text_hash = hashlib.sha256(_norm_text(text).encode()).hexdigest()
                    rec["content_key"] = text_hash + image_hash
        records.append(rec)

    raw_cols = [k for k in REQUIRED if k in present]
    columns = ["line", "parse_ok", "parse_error", *raw_cols, "field_problem", "text_length"]
    columns += ["image_inside_root", "image_exists", "image_decodable", "image_problem"]
    columns += ["content_key"]
    frame = pd.DataFrame.from_records(records, columns=columns)
    frame["line"] = frame["line"].astype("int64")
    frame["parse_ok"] = frame["parse_ok"].astype(bool)
    frame["text_length"] = frame["text_length"].astype("float64")
    _mark_leaks(frame)
    return frame


def _mark_leaks(frame: pd.DataFrame) -> None:
    """Add ``leaks`` / ``leaks_with``: same content key in another split."""
    frame["leaks"] = pd.Series([None] * len(frame), index=frame.index, dtype=object)
    frame["leaks_with"] = pd.Series([None] * len(frame), index=frame.index, dtype=object)
    if "split" not in frame.columns or frame.empty:
        return
    groups: dict[str, list[int]] = defaultdict(list)
    for idx, key, split in zip(frame.index, frame["content_key"], frame["split"], strict=True):
        if isinstance(key, str) and isinstance(split, str):
            groups[key].append(idx)
    for members in groups.values():
        for idx in members:
            split = frame.at[idx, "split"]
            others = [j for j in members if frame.at[j, "split"] != split]
            frame.at[idx, "leaks"] = bool(others)
            if others:
                frame.at[idx, "leaks_with"] = ", ".join(
                    f"id={frame.at[j, 'id']} ({frame.at[j, 'split']}, line {frame.at[j, 'line']})"
                    for j in others[:3]
                )


def balance_frame(rows: pd.DataFrame, labels: list[str]) -> pd.DataFrame:
    """One row per declared label: its count and fraction of the train split.

    The denominator is the train rows whose label is declared; a label absent from train
    has fraction 0.
    """
    counts = {lab: 0 for lab in labels}
    if {"split", "label"} <= set(rows.columns):
        train = rows[rows["parse_ok"] & (rows["split"] == "train")]
        for lab in train["label"]:
            if isinstance(lab, str) and lab in counts:
                counts[lab] += 1
    total = sum(counts.values())
    return pd.DataFrame(
        {
            "label": list(counts),
            "count": list(counts.values()),
            "n_train": [total] * len(counts),
            "fraction": [c / total if total else 0.0 for c in counts.values()],
        }
    )


# ----------------------------------------------------------------------------- checks


@dataclass
class _Check:
    key: str
    expectation: Any
    description: str
    show: Callable[[pd.Series], str | None] | None = None
    needs: tuple[str, ...] = ()


def _missing(value: Any) -> bool:
    return value is None or (isinstance(value, float) and pd.isna(value))


def _val(column: str) -> Callable[[pd.Series], str | None]:
    def show(row: pd.Series) -> str | None:
        value = row.get(column)
        return None if _missing(value) else str(value)

    return show


def _text_len(row: pd.Series) -> str:
    n = row.get("text_length")
    return "empty text" if n == 0 else f"{int(n)} characters"


def _image_and_problem(row: pd.Series) -> str:
    problem = row.get("image_problem")
    return f"{row.get('image')} ({problem})" if problem else str(row.get("image"))


def _row_checks(gxe: Any, column_cls: Any, labels: list[str], cfg: ValidationConfig):
    parsed = column_cls("parse_error").is_null()  # only rows that parsed
    checks = [
        _Check(
            "columns",
            gxe.ExpectTableColumnsToMatchSet(column_set=list(REQUIRED), exact_match=False),
            f"manifest must have the columns {', '.join(REQUIRED)}",
        ),
        _Check(
            "rows",
            gxe.ExpectTableRowCountToBeBetween(min_value=1),
            "manifest must have at least one row",
        ),
        _Check(
            "parse",
            gxe.ExpectColumnValuesToBeInSet(column="parse_ok", value_set=[True]),
            "every row must parse as a JSON object (or CSV record)",
            _val("parse_error"),
        ),
        _Check(
            "fields",
            gxe.ExpectColumnValuesToBeNull(column="field_problem"),
            "fields must be strings, no unknown fields, meta an object, id not blank",
            _val("field_problem"),
        ),
    ]
    for col in REQUIRED:
        checks.append(
            _Check(
                f"{col}-present",
                gxe.ExpectColumnValuesToNotBeNull(column=col, row_condition=parsed),
                f"every row must have a{'n' if col[0] in 'aeiou' else ''} {col}",
                needs=(col,),
            )
        )
    checks += [
        _Check(
            "id-unique",
            gxe.ExpectColumnValuesToBeUnique(column="id"),
            "ids must be unique",
            needs=("id",),
        ),
        _Check(
            "text-length",
            gxe.ExpectColumnValuesToBeBetween(
                column="text_length", min_value=1, max_value=cfg.max_text_chars
            ),
            f"text must be non-empty and at most {cfg.max_text_chars} characters",
            _text_len,
        ),
        _Check(
            "label",
            gxe.ExpectColumnValuesToBeInSet(column="label", value_set=list(labels)),
            f"labels must be one of {', '.join(labels)}",
            _val("label"),
            needs=("label",),
        ),
        _Check(
            "split",
            gxe.ExpectColumnValuesToBeInSet(column="split", value_set=list(SPLITS)),
            f"splits must be one of {', '.join(SPLITS)}",
            _val("split"),
            needs=("split",),
        ),
        _Check(
            "image-inside-root",
            gxe.ExpectColumnValuesToBeInSet(column="image_inside_root", value_set=[True]),
            "image paths must be relative and stay inside the data root",
            _val("image"),
        ),
        _Check(
            "image-exists",
            gxe.ExpectColumnValuesToBeInSet(column="image_exists", value_set=[True]),
            "image files must exist",
            _image_and_problem,
        ),
        _Check(
            "image-decodable",
            gxe.ExpectColumnValuesToBeInSet(column="image_decodable", value_set=[True]),
            "image files must decode",
            _image_and_problem,
        ),
    ]
    if cfg.leakage:
        checks.append(
            _Check(
                "leakage",
                gxe.ExpectColumnValuesToBeInSet(column="leaks", value_set=[False]),
                "no post (same text and image) may appear in more than one split",
                lambda row: f"{row.get('split')}, same post as {row.get('leaks_with')}",
            )
        )
    return checks


def _balance_checks(gxe: Any, cfg: ValidationConfig) -> list[_Check]:
    lo, hi = cfg.min_class_fraction, cfg.max_class_fraction

    def show(row: pd.Series) -> str:
        return f"{row['fraction']:.1%} of train ({row['count']} of {row['n_train']})"

    return [
        _Check(
            "class-balance",
            gxe.ExpectColumnValuesToBeBetween(column="fraction", min_value=lo, max_value=hi),
            f"each label must be {lo:.0%}-{hi:.0%} of the train split",
            show,
        )
    ]


# ----------------------------------------------------------------------------- GX plumbing


def _import_gx() -> Any:
    os.environ["GX_ANALYTICS_ENABLED"] = "false"
    import great_expectations as gx

    return gx


def _new_context(gx: Any, docs_dir: Path | None) -> Any:
    from great_expectations.data_context.types.base import ProgressBarsConfig

    context = gx.get_context(mode="ephemeral")
    context.variables.progress_bars = ProgressBarsConfig(globally=False, metric_calculations=False)
    sites: dict[str, Any] = {}
    if docs_dir is not None:
        sites["mmaux"] = {
            "class_name": "SiteBuilder",
            "show_how_to_buttons": False,
            "site_index_builder": {"class_name": "DefaultSiteIndexBuilder"},
            "store_backend": {
                "class_name": "TupleFilesystemStoreBackend",
                "base_directory": str(docs_dir),
            },
        }
    # Replace the ephemeral context's default site (a temporary directory) with ours or none.
    context.variables.data_docs_sites = sites
    return context


def _run_suite(
    gx: Any,
    context: Any,
    name: str,
    frame: pd.DataFrame,
    checks: list[_Check],
    index_columns: list[str],
) -> Any:
    suite = context.suites.add(gx.ExpectationSuite(name=name))
    for check in checks:
        check.expectation.description = check.description
        check.expectation.meta = {"mmaux_check": check.key}
        suite.add_expectation(check.expectation)
    batch = (
        context.data_sources.add_pandas(name)
        .add_dataframe_asset(name)
        .add_batch_definition_whole_dataframe(name)
    )
    vd = context.validation_definitions.add(
        gx.ValidationDefinition(data=batch, suite=suite, name=name)
    )
    result_format = {
        "result_format": "SUMMARY",
        "unexpected_index_column_names": index_columns,
        "partial_unexpected_count": MAX_EXAMPLES,
    }
    return vd.run(batch_parameters={"dataframe": frame}, result_format=result_format)


def _example_rows(result: dict[str, Any], frame: pd.DataFrame, key_column: str) -> list[pd.Series]:
    rows: list[pd.Series] = []
    for item in (result.get("partial_unexpected_index_list") or [])[:MAX_EXAMPLES]:
        if not isinstance(item, dict) or key_column not in item:
            continue
        key = item[key_column]
        if key_column == "line":
            try:
                key = int(key)
            except (TypeError, ValueError):
                continue
        match = frame[frame[key_column] == key]
        if not match.empty:
            rows.append(match.iloc[0])
    return rows


def _row_ref(row: pd.Series) -> str:
    if "line" not in row:
        return f"label {row['label']}"
    who = row.get("id")
    if _missing(who):
        return f"line {row['line']}"
    return f"line {row['line']} (id={who if str(who).strip() else repr(who)})"


def _exception_message(info: dict[str, Any]) -> str | None:
    """GX's exception info is flat, or keyed by metric; return the first message."""
    for item in (info, *info.values()):
        if isinstance(item, dict) and item.get("raised_exception"):
            return str(item.get("exception_message") or "expectation raised an error")
    return None


def _failures(
    validation: Any, checks: list[_Check], frame: pd.DataFrame, key_column: str
) -> list[ExpectationFailure]:
    by_key = {c.key: c for c in checks}
    order = {c.key: i for i, c in enumerate(checks)}
    out: list[tuple[int, ExpectationFailure]] = []
    for res in validation.results:
        if res.success:
            continue
        cfg = res.expectation_config
        key = (cfg.meta or {}).get("mmaux_check", "")
        check = by_key.get(key)
        column = cfg.kwargs.get("column")
        description = check.description if check else (cfg.description or cfg.type)
        result = dict(res.result or {})
        examples: list[str] = []
        error = _exception_message(res.exception_info or {})
        if error is not None:
            examples.append(f"error: {error}")
            count = 0
        elif cfg.type == "expect_table_columns_to_match_set":
            missing = result.get("details", {}).get("mismatched", {}).get("missing", [])
            examples = [f"missing column: {c}" for c in missing]
            count = len(missing)
        elif "unexpected_count" in result:
            count = int(result["unexpected_count"])
            for row in _example_rows(result, frame, key_column):
                shown = check.show(row) if check and check.show else None
                examples.append(_row_ref(row) + (f": {shown}" if shown else ""))
        else:
            count = 1
            if "observed_value" in result:
                examples.append(f"observed: {result['observed_value']}")
        failure = ExpectationFailure(cfg.type, column, description, count, examples)
        out.append((order.get(key, len(order)), failure))
    return [f for _, f in sorted(out, key=lambda t: t[0])]


def _clear_docs(docs_dir: Path) -> None:
    for name in _DOCS_ENTRIES:
        target = docs_dir / name
        if target.is_dir() and not target.is_symlink():
            shutil.rmtree(target)
        elif target.exists() or target.is_symlink():
            target.unlink()


# ----------------------------------------------------------------------------- public API


def validate_data(
    root: Path,
    manifest: str,
    labels: list[str] | None,
    cfg: ValidationConfig,
    docs_dir: Path | None = None,
) -> ValidationReport:
    """Validate ``root/manifest`` with Great Expectations; never raises on bad data.

    ``labels=None`` reads them from ``root/dataset.json``. With ``docs_dir`` the HTML Data
    Docs are (re)written there and ``docs_index`` points at their ``index.html``.
    """
    root = Path(root)
    if labels is None:
        labels = list(read_dataset_info(root)["labels"])
    rows = manifest_frame(root, manifest, labels)
    balance = balance_frame(rows, labels)

    gx = _import_gx()
    from great_expectations.expectations.row_conditions import Column

    docs_dir = Path(docs_dir).resolve() if docs_dir is not None else None
    context = _new_context(gx, docs_dir)
    row_checks = [
        c
        for c in _row_checks(gx.expectations, Column, labels, cfg)
        if all(col in rows.columns for col in c.needs)
    ]
    balance_checks = _balance_checks(gx.expectations, cfg)
    row_result = _run_suite(gx, context, ROW_SUITE, rows, row_checks, ["line", "id"])
    balance_result = _run_suite(gx, context, BALANCE_SUITE, balance, balance_checks, ["label"])

    failures = _failures(row_result, row_checks, rows, "line")
    failures += _failures(balance_result, balance_checks, balance, "label")
    evaluated = sum(
        int(r.statistics.get("evaluated_expectations", 0)) for r in (row_result, balance_result)
    )
    docs_index = None
    if docs_dir is not None:
        docs_dir.mkdir(parents=True, exist_ok=True)
        _clear_docs(docs_dir)
        context.build_data_docs(site_names=["mmaux"])
        docs_index = docs_dir / "index.html"
    return ValidationReport(
        success=bool(row_result.success and balance_result.success) and not failures,
        n_rows=len(rows),
        failures=failures,
        evaluated=evaluated,
        docs_index=docs_index,
    )


def check_data(
    root: Path,
    manifest: str,
    labels: list[str] | None,
    cfg: ValidationConfig,
    docs_dir: Path | None = None,
) -> ValidationReport:
    """Like :func:`validate_data`, but raise :class:`DataValidationError` on failure."""
    report = validate_data(root, manifest, labels, cfg, docs_dir)
    if not report.success:
        raise DataValidationError(report)
    return report
