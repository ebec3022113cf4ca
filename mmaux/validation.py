"""Validate a data set with Great Expectations before anything trains.

The data rulebook (:mod:`mmaux.data.rules`) judges every row, exactly as the loader does;
this module lays its verdict out as a frame with one column per rule (the row's finding as
``file:line (id=...): problem``, or null) and expresses every rule as one GX expectation,
``expect_column_values_to_be_null`` on its column, with GX severity ``critical`` for an
error rule and ``warning`` for a warn rule (``off`` rules are left out). A GX Checkpoint runs
the suite, its ``UpdateDataDocsAction`` writes the Data Docs, and the
:class:`ValidationReport` is read from the checkpoint result: warnings are reported but only
critical failures fail the stage, so its verdict is the loader's.
"""

from __future__ import annotations

import os
import shutil
from collections.abc import Sequence
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any

import pandas as pd

from mmaux.config import DataRulesConfig
from mmaux.data.images import ImageCheck
from mmaux.data.manifest import read_dataset_info
from mmaux.data.rules import RULE_ORDER, RULES, DataVerdict, check_manifest, severity

SUITE = "mmaux-data-rules"
DOCS_SITE = "mmaux"
MAX_EXAMPLES = 5
# What a GX Data Docs site writes under its base directory (removed before a rebuild).
_DOCS_ENTRIES = ("index.html", "static", "expectations", "validations")
_GX_SEVERITY = {"error": "critical", "warn": "warning"}


@dataclass
class ExpectationFailure:
    """One unmet expectation (one rule), in plain words."""

    expectation: str
    column: str | None
    description: str
    unexpected_count: int
    examples: list[str] = field(default_factory=list)
    severity: str = "error"

    def __str__(self) -> str:
        where = f" [{self.column}]" if self.column else ""
        head = f"{self.description}: {self.unexpected_count} unexpected ({self.expectation}{where})"
        return "\n".join([head] + [f"      e.g. {e}" for e in self.examples])


@dataclass
class ValidationReport:
    """Outcome of :func:`validate_data`: errors in ``failures``, warnings in ``warnings``."""

    success: bool
    n_rows: int
    failures: list[ExpectationFailure]
    evaluated: int
    docs_index: Path | None = None
    warnings: list[ExpectationFailure] = field(default_factory=list)
    leak_groups: dict[str, int] = field(default_factory=dict)

    def summary(self) -> str:
        """PASS/FAIL headline, then one entry per unmet expectation with examples."""
        verdict = "PASS" if self.success else "FAIL"
        met = self.evaluated - len(self.failures) - len(self.warnings)
        lines = [
            f"Data validation {verdict}: {self.n_rows} manifest row(s), "
            f"{met}/{self.evaluated} expectations met, {len(self.warnings)} warning(s)"
        ]
        lines += [f"  - {f}" for f in self.failures]
        lines += [f"  - warning: {w}" for w in self.warnings]
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


# ----------------------------------------------------------------------------- the frame


def verdict_frame(verdict: DataVerdict) -> pd.DataFrame:
    """One record per manifest row (``line``, ``post_id``, one column per rule: its finding
    or null), then one per data set finding (class balance, no usable rows) with null line."""
    keys = [r.key for r in RULES]
    records: list[dict[str, Any]] = []
    for rv in verdict.rows:
        rec: dict[str, Any] = {"line": rv.line, "post_id": rv.post_id} | dict.fromkeys(keys)
        records.append(rec)
    by_line = {rv.line: rec for rv, rec in zip(verdict.rows, records, strict=True)}
    for finding in verdict.findings():
        if finding.line is None:
            rec = {"line": None, "post_id": None} | dict.fromkeys(keys)
            records.append(rec)
        else:
            rec = by_line[finding.line]
        rec[finding.rule] = str(finding)
    frame = pd.DataFrame.from_records(records, columns=["line", "post_id", *keys])
    frame["line"] = frame["line"].astype("Int64")
    return frame.astype({k: object for k in ["post_id", *keys]})


# ----------------------------------------------------------------------------- GX


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
        sites[DOCS_SITE] = {
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


def rule_suite(gx: Any, rules: DataRulesConfig, labels: Sequence[str]) -> Any:
    """The rulebook as a GX suite: one null expectation per rule that is not ``off``."""
    suite = gx.ExpectationSuite(name=SUITE)
    for rule in RULES:
        level = severity(rule.key, rules)
        if level == "off":
            continue
        suite.add_expectation(
            gx.expectations.ExpectColumnValuesToBeNull(
                column=rule.key,
                description=rule.describe(rules, labels),
                severity=_GX_SEVERITY[level],
                meta={"rule": rule.key, "severity": level},
            )
        )
    return suite


def _checkpoint(gx: Any, context: Any, suite: Any, docs: bool) -> Any:
    from great_expectations.checkpoint import UpdateDataDocsAction

    batch = (
        context.data_sources.add_pandas(SUITE)
        .add_dataframe_asset("manifest-verdicts")
        .add_batch_definition_whole_dataframe("all-rows")
    )
    definition = context.validation_definitions.add(
        gx.ValidationDefinition(data=batch, suite=context.suites.add(suite), name=SUITE)
    )
    actions = [UpdateDataDocsAction(name="data-docs", site_names=[DOCS_SITE])] if docs else []
    return context.checkpoints.add(
        gx.Checkpoint(
            name=SUITE,
            validation_definitions=[definition],
            actions=actions,
            result_format={"result_format": "SUMMARY", "partial_unexpected_count": MAX_EXAMPLES},
        )
    )


def _exception_message(info: dict[str, Any]) -> str | None:
    """GX's exception info is flat, or keyed by metric; return the first message."""
    for item in (info, *info.values()):
        if isinstance(item, dict) and item.get("raised_exception"):
            return str(item.get("exception_message") or "expectation raised an error")
    return None


def _unmet(result: Any) -> ExpectationFailure:
    cfg = result.expectation_config
    res = dict(result.result or {})
    error = _exception_message(result.exception_info or {})
    examples = (
        [f"error: {error}"] if error else [str(v) for v in res.get("partial_unexpected_list") or []]
    )
    return ExpectationFailure(
        expectation=cfg.type,
        column=cfg.kwargs.get("column"),
        description=cfg.description or cfg.type,
        unexpected_count=int(res.get("unexpected_count", 0)),
        examples=examples[:MAX_EXAMPLES],
        severity=(cfg.meta or {}).get("severity", "error"),
    )


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
    rules: DataRulesConfig | None = None,
    docs_dir: Path | None = None,
    check_images: ImageCheck = "decode",
) -> ValidationReport:
    """Validate ``root/manifest`` with the data rulebook through a GX checkpoint; never
    raises on bad data.

    ``labels=None`` reads them from ``root/dataset.json``. With ``docs_dir`` the checkpoint's
    Data Docs action (re)writes the HTML there and ``docs_index`` points at ``index.html``.
    """
    root = Path(root)
    rules = rules or DataRulesConfig()
    if labels is None:
        labels = list(read_dataset_info(root)["labels"])
    verdict = check_manifest(root / manifest, root, labels, rules, check_images)
    frame = verdict_frame(verdict)

    gx = _import_gx()
    from great_expectations.expectations.metadata_types import FailureSeverity

    docs_dir = Path(docs_dir).resolve() if docs_dir is not None else None
    if docs_dir is not None:
        docs_dir.mkdir(parents=True, exist_ok=True)
        _clear_docs(docs_dir)
    context = _new_context(gx, docs_dir)
    checkpoint = _checkpoint(gx, context, rule_suite(gx, rules, labels), docs_dir is not None)
    outcome = checkpoint.run(batch_parameters={"dataframe": frame})
    (result,) = outcome.run_results.values()

    unmet = [_unmet(r) for r in result.results if not r.success]
    unmet.sort(key=lambda f: RULE_ORDER.get(f.column or "", len(RULE_ORDER)))
    failures = [f for f in unmet if f.severity == "error"]
    return ValidationReport(
        success=result.get_max_severity_failure() != FailureSeverity.CRITICAL,
        n_rows=len(verdict.rows),
        failures=failures,
        evaluated=int(result.statistics.get("evaluated_expectations", 0)),
        docs_index=docs_dir / "index.html" if docs_dir is not None else None,
        warnings=[f for f in unmet if f.severity == "warn"],
        leak_groups=dict(verdict.leak_groups),
    )


def check_data(
    root: Path,
    manifest: str,
    labels: list[str] | None,
    rules: DataRulesConfig | None = None,
    docs_dir: Path | None = None,
    check_images: ImageCheck = "decode",
) -> ValidationReport:
    """Like :func:`validate_data`, but raise :class:`DataValidationError` on failure."""
    report = validate_data(root, manifest, labels, rules, docs_dir, check_images)
    if not report.success:
        raise DataValidationError(report)
    return report
