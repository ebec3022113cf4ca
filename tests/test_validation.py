"""Data validation with Great Expectations: real manifests, real images, real GX runs."""

from __future__ import annotations

import csv
import json
import shutil
from collections.abc import Callable
from pathlib import Path
from typing import Any

import pytest
from PIL import Image

from mmaux.config import ValidationConfig
from mmaux.validation import (
    DataValidationError,
    ValidationReport,
    check_data,
    manifest_frame,
    validate_data,
)

LABELS = ["neg", "pos"]
SPLITS = ["train"] * 6 + ["val"] * 2 + ["test"] * 2
CFG = ValidationConfig()


def _rows() -> list[dict[str, Any]]:
    """p0..p5 train (neg/pos alternating), p6-p7 val, p8-p9 test; line n+1 holds p{n}."""
    return [
        {
            "id": f"p{i}",
            "text": f"post number {i}",
            "image": f"img/{i}.png",
            "label": LABELS[i % 2],
            "split": SPLITS[i],
        }
        for i in range(len(SPLITS))
    ]


def _write(root: Path, rows: list[dict[str, Any]], extra_lines: dict[int, str] | None = None):
    lines = [json.dumps(r) for r in rows]
    for at, raw in sorted((extra_lines or {}).items()):
        lines.insert(at, raw)
    (root / "manifest.jsonl").write_text("\n".join(lines) + "\n", encoding="utf-8")


@pytest.fixture(scope="module")
def good_root(tmp_path_factory) -> Path:
    root = tmp_path_factory.mktemp("good") / "data"
    (root / "img").mkdir(parents=True)
    for i in range(len(SPLITS)):
        Image.new("RGB", (8, 8), (i * 25, 255 - i * 25, 7)).save(root / "img" / f"{i}.png")
    (root / "dataset.json").write_text(json.dumps({"name": "t", "labels": LABELS}))
    _write(root, _rows())
    return root


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
    assert report.failures == []
    assert report.n_rows == len(SPLITS)
    assert report.evaluated >= 10
    assert report.docs_index == docs.resolve() / "index.html"
    index = report.docs_index.read_text(encoding="utf-8")
    assert "mmaux-manifest" in index and "mmaux-class-balance" in index
    assert (docs / "static").is_dir()  # styles travel with the site: self-contained
    summary = report.summary()
    assert summary.startswith("Data validation PASS: 10 manifest row(s)")
    assert f"{report.evaluated}/{report.evaluated} expectations met" in summary
    assert json.loads(json.dumps(report.to_dict()))["docs_index"].endswith("index.html")


def test_rerun_overwrites_data_docs_cleanly(good_root, good_docs):
    _, docs = good_docs
    validate_data(good_root, "manifest.jsonl", LABELS, CFG, docs_dir=docs)
    pages = sorted((docs / "validations").rglob("*.html"))
    # One page per suite: the previous run's pages were replaced, not accumulated.
    assert [p.relative_to(docs / "validations").parts[0] for p in pages] == [
        "mmaux-class-balance",
        "mmaux-manifest",
    ]


def test_csv_manifest_passes(good_root, tmp_path):
    root = _copy(good_root, tmp_path)
    with (root / "manifest.csv").open("w", newline="", encoding="utf-8") as fh:
        writer = csv.DictWriter(fh, fieldnames=["id", "text", "image", "label", "split", "meta"])
        writer.writeheader()
        for row in _rows():
            writer.writerow({**row, "meta": json.dumps({"src": "x"})})
    report = validate_data(root, "manifest.csv", LABELS, CFG)
    assert report.success, report.summary()


def test_manifest_frame_is_lenient(good_root, tmp_path):
    root = _copy(good_root, tmp_path)
    _write(root, _rows(), {3: "{oops", 5: "[1, 2]"})
    frame = manifest_frame(root, "manifest.jsonl", LABELS)
    assert len(frame) == len(SPLITS) + 2
    bad = frame[~frame["parse_ok"]]
    assert list(bad["line"]) == [4, 6]
    assert bad["parse_error"].str.contains("not valid JSON").iloc[0]
    ok = frame[frame["parse_ok"]]
    assert ok["image_exists"].tolist() == [True] * len(SPLITS)
    assert ok["text_length"].tolist() == [len(f"post number {i}") for i in range(len(SPLITS))]
    assert not ok["leaks"].any()


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
    rows[8].update(text="  POST   Number 0 ", image="img/copy.png")  # same normalised text


Mutation = Callable[[Path, list[dict]], None]
BAD: list[tuple[str, Mutation, str, str, int, str, ValidationConfig]] = [
    ("dup-id", _dup_id, "expect_column_values_to_be_unique", "id", 2, "line 2 (id=p0)", CFG),
    (
        "empty-text",
        _empty_text,
        "expect_column_values_to_be_between",
        "text_length",
        1,
        "line 3 (id=p2): empty text",
        CFG,
    ),
    (
        "unknown-label",
        _unknown_label,
        "expect_column_values_to_be_in_set",
        "label",
        1,
        "line 7 (id=p6): meh",
        CFG,
    ),
    (
        "bad-split",
        _bad_split,
        "expect_column_values_to_be_in_set",
        "split",
        1,
        "line 8 (id=p7): dev",
        CFG,
    ),
    (
        "corrupt-image",
        _corrupt_image,
        "expect_column_values_to_be_in_set",
        "image_decodable",
        1,
        "line 9 (id=p8): img/bad.png (image cannot be decoded",
        CFG,
    ),
    (
        "missing-image",
        _missing_image,
        "expect_column_values_to_be_in_set",
        "image_exists",
        1,
        "line 10 (id=p9): img/missing.png (image file not found)",
        CFG,
    ),
    (
        "escaping-path",
        _escaping_path,
        "expect_column_values_to_be_in_set",
        "image_inside_root",
        2,
        "line 4 (id=p3): ../x.png",
        CFG,
    ),
    (
        "imbalance",
        _imbalance,
        "expect_column_values_to_be_between",
        "fraction",
        1,
        "label pos: 16.7% of train (1 of 6)",
        ValidationConfig(min_class_fraction=0.25, max_class_fraction=0.9),
    ),
    (
        "leakage",
        _leak,
        "expect_column_values_to_be_in_set",
        "leaks",
        2,
        "line 1 (id=p0): train, same post as id=p8 (test, line 9)",
        CFG,
    ),
]


@pytest.mark.parametrize(
    ("mutate", "expectation", "column", "count", "example", "cfg"),
    [case[1:] for case in BAD],
    ids=[case[0] for case in BAD],
)
def test_each_problem_fails_only_its_own_expectation(
    good_root, tmp_path, mutate, expectation, column, count, example, cfg
):
    root = _copy(good_root, tmp_path)
    rows = _rows()
    mutate(root, rows)
    _write(root, rows)
    report = validate_data(root, "manifest.jsonl", None, cfg)
    assert not report.success
    assert _failed(report) == {(expectation, column)}, report.summary()
    (failure,) = report.failures
    assert failure.unexpected_count == count
    assert any(e.startswith(example) for e in failure.examples), failure.examples


def test_malformed_json_line_fails_only_parsing(good_root, tmp_path):
    root = _copy(good_root, tmp_path)
    _write(root, _rows(), {4: '{"id": "p99", "text": '})
    report = validate_data(root, "manifest.jsonl", LABELS, CFG)
    assert _failed(report) == {("expect_column_values_to_be_in_set", "parse_ok")}
    (failure,) = report.failures
    assert failure.unexpected_count == 1
    assert failure.examples[0].startswith("line 5: not valid JSON")
    assert report.n_rows == len(SPLITS) + 1


def test_label_absent_from_train_fails_balance(good_root):
    report = validate_data(good_root, "manifest.jsonl", [*LABELS, "rare"], CFG)
    assert _failed(report) == {("expect_column_values_to_be_between", "fraction")}
    assert report.failures[0].examples == ["label rare: 0.0% of train (0 of 6)"]


def test_leakage_check_can_be_turned_off(good_root, tmp_path):
    root = _copy(good_root, tmp_path)
    rows = _rows()
    _leak(root, rows)
    _write(root, rows)
    report = validate_data(root, "manifest.jsonl", None, ValidationConfig(leakage=False))
    assert report.success, report.summary()


def test_check_data_raises_a_readable_error(good_root, tmp_path):
    root = _copy(good_root, tmp_path)
    rows = _rows()
    _dup_id(root, rows)
    _missing_image(root, rows)
    _write(root, rows)
    with pytest.raises(DataValidationError) as info:
        check_data(root, "manifest.jsonl", LABELS, CFG)
    msg = str(info.value)
    assert msg == info.value.report.summary()
    assert msg.startswith("Data validation FAIL: 10 manifest row(s)")
    assert "ids must be unique: 2 unexpected (expect_column_values_to_be_unique [id])" in msg
    assert "e.g. line 2 (id=p0)" in msg
    assert "image files must exist: 1 unexpected" in msg
    assert "e.g. line 10 (id=p9): img/missing.png (image file not found)" in msg
    assert len(info.value.report.failures) == 2
    assert json.loads(json.dumps(info.value.report.to_dict()))["success"] is False


def test_check_data_returns_the_report_on_good_data(good_root):
    assert check_data(good_root, "manifest.jsonl", LABELS, CFG).success
