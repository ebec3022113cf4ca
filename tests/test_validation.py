"""Data validation with Great Expectations: the rulebook's verdicts run as a real GX
checkpoint over real manifests and images."""

from __future__ import annotations

import csv
import json
import shutil
from collections.abc import Callable
from pathlib import Path

import pytest
from PIL import Image

from mmaux.config import DataRulesConfig, LeakageConfig
from mmaux.data.rules import RULES, check_manifest
from mmaux.validation import (
    DataValidationError,
    ValidationReport,
    check_data,
    validate_data,
    verdict_frame,
)
from tests.manifest_fixtures import LABELS, SPLITS, make_good_root
from tests.manifest_fixtures import rows as _rows
from tests.manifest_fixtures import write_rows as _write

CFG = DataRulesConfig()
NULL = "expect_column_values_to_be_null"


@pytest.fixture(scope="module")
def good_root(tmp_path_factory) -> Path:
    return make_good_root(tmp_path_factory.mktemp("good") / "data")


@pytest.fixture(scope="module")
def good_docs(good_root, tmp_path_factory) -> tuple[ValidationReport, Path]:
    docs = tmp_path_factory.mktemp("docs") / "site"
    return validate_data(good_root, "manifest.jsonl", None, CFG, docs_dir=docs), docs


def _copy(good_root: Path, tmp_path: Path) -> Path:
    root = tmp_path / "data"
    shutil.copytree(good_root, root)
    return root


def _failed(report: ValidationReport) -> set[tuple[str, str | None]]:
    return {(f.expectation, f.column) for f in report.failures}


# --------------------------------------------------------------------------- good data


def test_good_manifest_passes_and_writes_data_docs(good_docs):
    report, docs = good_docs
    assert report.success, report.summary()
    assert report.failures == [] and report.warnings == []
    assert report.n_rows == len(SPLITS)
    # one expectation per rule that is not off (all are on by default)
    assert report.evaluated == len(RULES)
    assert report.docs_index == docs.resolve() / "index.html"
    index = report.docs_index.read_text(encoding="utf-8")
    assert "mmaux-data-rules" in index
    assert (docs / "static").is_dir()  # styles travel with the site: self-contained
    summary = report.summary()
    assert summary.startswith("Data validation PASS: 10 manifest row(s)")
    assert f"{report.evaluated}/{report.evaluated} expectations met, 0 warning(s)" in summary
    assert json.loads(json.dumps(report.to_dict()))["docs_index"].endswith("index.html")


def test_rerun_overwrites_data_docs_cleanly(good_root, good_docs):
    _, docs = good_docs
    validate_data(good_root, "manifest.jsonl", LABELS, CFG, docs_dir=docs)
    pages = sorted((docs / "validations").rglob("*.html"))
    # One page for the one suite: the previous run's page was replaced, not accumulated.
    assert len(pages) == 1
    assert pages[0].relative_to(docs / "validations").parts[0] == "mmaux-data-rules"


def test_csv_manifest_passes(good_root, tmp_path):
    root = _copy(good_root, tmp_path)
    with (root / "manifest.csv").open("w", newline="", encoding="utf-8") as fh:
        writer = csv.DictWriter(fh, fieldnames=["id", "text", "image", "label", "split", "meta"])
        writer.writeheader()
        for row in _rows():
            writer.writerow({**row, "meta": json.dumps({"src": "x"})})
    report = validate_data(root, "manifest.csv", LABELS, CFG)
    assert report.success, report.summary()


def test_verdict_frame_has_a_column_per_rule(good_root, tmp_path):
    root = _copy(good_root, tmp_path)
    _write(root, _rows(), {3: "{oops", 5: "[1, 2]"})
    verdict = check_manifest(root / "manifest.jsonl", root, LABELS)
    frame = verdict_frame(verdict)
    assert list(frame.columns) == ["line", "post_id", *(r.key for r in RULES)]
    assert len(frame) == len(SPLITS) + 2
    bad = frame[frame["parse"].notna()]
    assert list(bad["line"]) == [4, 6]
    assert (
        bad["parse"]
        .iloc[0]
        .endswith(":4: not valid JSON (Expecting property name enclosed in double quotes)")
    )
    assert frame.drop(columns=["line", "post_id", "parse"]).isna().all().all()


# --------------------------------------------------------------------------- bad data


def _dup_id(root: Path, rows: list[dict]) -> None:
    rows[1]["id"] = "p0"


def _empty_text(root: Path, rows: list[dict]) -> None:
    rows[2]["text"] = "   "


def _unknown_label(root: Path, rows: list[dict]) -> None:
    rows[6]["label"] = "meh"


def _bad_split(root: Path, rows: list[dict]) -> None:
    rows[7]["split"] = "dev"


def _corrupt_image(root: Path, rows: list[dict]) -> None:
    (root / "img" / "bad.png").write_bytes(b"definitely not a PNG")
    rows[8]["image"] = "img/bad.png"


def _missing_image(root: Path, rows: list[dict]) -> None:
    rows[9]["image"] = "img/missing.png"


def _escaping_path(root: Path, rows: list[dict]) -> None:
    outside = root.parent / "x.png"
    Image.new("RGB", (8, 8)).save(outside)  # exists, decodes, but lies outside the root
    (root / "img" / "link.png").symlink_to(outside)
    rows[3]["image"] = "../x.png"
    rows[4]["image"] = "img/link.png"  # a symlink is followed: still outside


def _imbalance(root: Path, rows: list[dict]) -> None:
    rows[1]["label"] = rows[3]["label"] = "neg"  # train: 5 neg, 1 pos (16.7 % < 25 %)


def _leak(root: Path, rows: list[dict]) -> None:
    shutil.copyfile(root / "img" / "0.png", root / "img" / "copy.png")  # same bytes
    rows[8].update(text="  POST   Number 0! ", image="img/copy.png")  # same normalised text


Mutation = Callable[[Path, list[dict]], None]
STRICT_BALANCE = DataRulesConfig(
    min_class_fraction=0.25, max_class_fraction=0.9, class_balance="error"
)
BAD: list[tuple[str, Mutation, str, int, str, DataRulesConfig]] = [
    ("dup-id", _dup_id, "duplicate_id", 1, ":2 (id=p0): duplicate id (first seen on line 1)", CFG),
    ("empty-text", _empty_text, "text_empty", 1, ":3 (id=p2): empty text", CFG),
    ("unknown-label", _unknown_label, "label", 1, ":7 (id=p6): unknown label 'meh'", CFG),
    ("bad-split", _bad_split, "split", 1, ":8 (id=p7): unknown split 'dev'", CFG),
    (
        "corrupt-image",
        _corrupt_image,
        "image_decodes",
        1,
        ":9 (id=p8): image cannot be decoded (UnidentifiedImageError): img/bad.png",
        CFG,
    ),
    (
        "missing-image",
        _missing_image,
        "image_exists",
        1,
        ":10 (id=p9): image file not found: img/missing.png",
        CFG,
    ),
    (
        "escaping-path",
        _escaping_path,
        "image_path",
        2,
        ":4 (id=p3): image path '../x.png' leaves the data root",
        CFG,
    ),
    (
        "imbalance",
        _imbalance,
        "class_balance",
        1,
        "manifest.jsonl: label 'pos' is 16.7% of train (1 of 6)",
        STRICT_BALANCE,
    ),
    (
        "leakage",
        _leak,
        "leakage_pairs",
        1,
        ":9 (id=p8): same text and image as id=p0 (train, line 1)",
        CFG,
    ),
]


@pytest.mark.parametrize(
    ("mutate", "column", "count", "example", "rules"),
    [case[1:] for case in BAD],
    ids=[case[0] for case in BAD],
)
def test_each_problem_fails_only_its_own_expectation(
    good_root, tmp_path, mutate, column, count, example, rules
):
    root = _copy(good_root, tmp_path)
    rows = _rows()
    mutate(root, rows)
    _write(root, rows)
    report = validate_data(root, "manifest.jsonl", None, rules)
    assert not report.success
    assert _failed(report) == {(NULL, column)}, report.summary()
    (failure,) = report.failures
    assert failure.unexpected_count == count
    assert any(example in e for e in failure.examples), failure.examples
    assert all(e.startswith(str(root / "manifest.jsonl")) for e in failure.examples)


def test_leaked_pair_also_warns_about_its_text_and_image(good_root, tmp_path):
    root = _copy(good_root, tmp_path)
    rows = _rows()
    _leak(root, rows)
    _write(root, rows)
    report = validate_data(root, "manifest.jsonl", None, CFG)
    assert {(w.column, w.unexpected_count, w.severity) for w in report.warnings} == {
        ("leakage_texts", 1, "warn"),
        ("leakage_images", 1, "warn"),
    }
    assert report.leak_groups == {"pairs": 1, "conflicting_texts": 0, "texts": 1, "images": 1}
    assert "  - warning: no text may be in two splits: 1 unexpected" in report.summary()


def test_malformed_json_line_fails_only_parsing(good_root, tmp_path):
    root = _copy(good_root, tmp_path)
    _write(root, _rows(), {4: '{"id": "p99", "text": '})
    report = validate_data(root, "manifest.jsonl", LABELS, CFG)
    assert _failed(report) == {(NULL, "parse")}
    (failure,) = report.failures
    assert failure.unexpected_count == 1
    assert failure.examples[0].startswith(f"{root / 'manifest.jsonl'}:5: not valid JSON")
    assert report.n_rows == len(SPLITS) + 1


def test_label_absent_from_train_warns_or_fails_by_configuration(good_root):
    report = validate_data(good_root, "manifest.jsonl", [*LABELS, "rare"], CFG)
    assert report.success and report.failures == []
    (warning,) = report.warnings
    assert warning.column == "class_balance" and warning.severity == "warn"
    assert warning.examples[0].endswith(
        "label 'rare' is 0.0% of train (0 of 6); allowed 5%-80% (data.rules.min/max_class_fraction)"
    )
    strict = DataRulesConfig(class_balance="error")
    report = validate_data(good_root, "manifest.jsonl", [*LABELS, "rare"], strict)
    assert _failed(report) == {(NULL, "class_balance")} and not report.success


def test_empty_manifest_fails_the_rows_rule(good_root, tmp_path):
    root = _copy(good_root, tmp_path)
    (root / "manifest.jsonl").write_text("\n")
    report = validate_data(root, "manifest.jsonl", LABELS, CFG)
    assert _failed(report) == {(NULL, "rows")}
    assert report.failures[0].examples == [f"{root / 'manifest.jsonl'}: no usable rows"]


def test_leakage_check_can_be_turned_off(good_root, tmp_path):
    root = _copy(good_root, tmp_path)
    rows = _rows()
    _leak(root, rows)
    _write(root, rows)
    off = DataRulesConfig(
        leakage=LeakageConfig(pairs="off", conflicting_texts="off", texts="off", images="off")
    )
    report = validate_data(root, "manifest.jsonl", None, off)
    assert report.success and report.warnings == [], report.summary()
    assert report.evaluated == len(RULES) - 4


def test_check_data_raises_a_readable_error(good_root, tmp_path):
    root = _copy(good_root, tmp_path)
    rows = _rows()
    _dup_id(root, rows)
    _missing_image(root, rows)
    _write(root, rows)
    with pytest.raises(DataValidationError) as info:
        check_data(root, "manifest.jsonl", LABELS, CFG)
    msg = str(info.value)
    path = root / "manifest.jsonl"
    assert msg == info.value.report.summary()
    assert msg.startswith("Data validation FAIL: 10 manifest row(s)")
    assert f"ids must be unique: 1 unexpected ({NULL} [duplicate_id])" in msg
    assert f"e.g. {path}:2 (id=p0): duplicate id (first seen on line 1)" in msg
    assert "image files must exist: 1 unexpected" in msg
    assert f"e.g. {path}:10 (id=p9): image file not found: img/missing.png" in msg
    assert len(info.value.report.failures) == 2
    assert json.loads(json.dumps(info.value.report.to_dict()))["success"] is False


def test_check_data_returns_the_report_on_good_data(good_root):
    assert check_data(good_root, "manifest.jsonl", LABELS, CFG).success
