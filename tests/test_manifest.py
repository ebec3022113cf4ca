"""Manifest loading: every bad-input case gives a clear error naming file, row and problem."""

from __future__ import annotations

import json
import shutil
from pathlib import Path

import pytest
from PIL import Image

from mmaux.data.manifest import (
    ManifestError,
    Post,
    load_manifest,
    write_dataset_info,
    write_manifest,
)

LABELS = ["neg", "pos"]


@pytest.fixture
def root(tmp_path) -> Path:
    """A valid 4-post data set with real PNG images."""
    r = tmp_path / "data"
    (r / "img").mkdir(parents=True)
    for i in range(4):
        Image.new("RGB", (8, 8), (i * 40, 10, 10)).save(r / "img" / f"{i}.png")
    write_dataset_info(r, {"name": "t", "labels": LABELS})
    posts = [
        Post(
            f"p{i}",
            f"text {i}",
            f"img/{i}.png",
            LABELS[i % 2],
            ["train", "train", "val", "test"][i],
        )
        for i in range(4)
    ]
    write_manifest(posts, r / "manifest.jsonl")
    return r


def _append(root: Path, row: dict | str) -> int:
    path = root / "manifest.jsonl"
    lines = path.read_text().splitlines()
    lines.append(row if isinstance(row, str) else json.dumps(row))
    path.write_text("\n".join(lines) + "\n")
    return len(lines)


def _row(**kw) -> dict:
    row = {"id": "new", "text": "hello", "image": "img/0.png", "label": "pos", "split": "train"}
    row.update(kw)
    return row


def test_good_manifest_loads(root):
    m = load_manifest(root / "manifest.jsonl")
    assert [p.id for p in m.posts] == ["p0", "p1", "p2", "p3"]
    assert m.labels == LABELS and m.skipped == []
    assert m.counts()["train"] == {"neg": 1, "pos": 1}
    assert m.image_path(m.posts[0]) == root / "img/0.png"


def _corrupt(root: Path) -> None:
    (root / "img" / "bad.png").write_bytes(b"\x89PNG\r\n\x1a\n not really a png")


def _truncate(root: Path) -> None:
    data = (root / "img" / "0.png").read_bytes()
    (root / "img" / "trunc.png").write_bytes(data[: len(data) // 2])


CASES = [
    (
        "corrupt image",
        _corrupt,
        _row(image="img/bad.png"),
        "image cannot be decoded (UnidentifiedImageError): img/bad.png",
    ),
    ("truncated image", _truncate, _row(image="img/trunc.png"), "image cannot be decoded"),
    ("missing image", None, _row(image="img/nope.png"), "image file not found: img/nope.png"),
    ("empty text", None, _row(text="   "), "empty text"),
    ("unknown label", None, _row(label="maybe"), "unknown label 'maybe'"),
    ("duplicate id", None, _row(id="p1"), "duplicate id (first seen on line 2)"),
    ("parent escape", None, _row(image="../outside.png"), "leaves the data root"),
    ("absolute path", None, _row(image="/etc/passwd"), "leaves the data root"),
    ("bad split", None, _row(split="dev"), "unknown split 'dev'"),
    (
        "missing field",
        None,
        {"id": "x", "text": "t", "label": "pos", "split": "train"},
        "missing field(s): image",
    ),
    ("wrong type", None, _row(text=5), "field 'text' must be a string"),
    ("unknown field", None, _row(colour="red"), "unknown field(s): colour"),
    ("bad json", None, '{"id": "x", ', "not valid JSON"),
    ("wrong type, unknown field", None, _row(text=5, colour="red"), "field 'text' must be a"),
    ("invisible text", None, _row(text="\u200b\u2060"), "text has no visible character"),
    ("text too long", None, _row(text="x" * 5001), "text is 5,001 characters (limit 5,000"),
    (
        "lone surrogate",
        None,
        '{"id": "s", "text": "\\ud800", "image": "img/0.png", "label": "pos", "split": "test"}',
        "a JSON string holds a lone surrogate (U+D800)",
    ),
    ("nul in image path", None, _row(image="img/\x000.png"), "leaves the data root"),
]


@pytest.mark.parametrize(("name", "prepare", "row", "needle"), CASES, ids=[c[0] for c in CASES])
def test_each_bad_row_is_named_and_raised(root, name, prepare, row, needle):
    if prepare:
        prepare(root)
    line = _append(root, row)
    path = root / "manifest.jsonl"
    with pytest.raises(ManifestError) as err:
        load_manifest(path)
    assert len(err.value.problems) == 1
    problem = err.value.problems[0]
    assert problem.line == line and problem.file == str(path)
    assert needle in problem.problem
    assert f"{path}:{line}" in str(err.value) and needle in str(err.value)


def test_symlink_leaving_root_is_rejected(root, tmp_path):
    outside = tmp_path / "outside.png"
    shutil.copy(root / "img" / "0.png", outside)
    (root / "img" / "link.png").symlink_to(outside)
    _append(root, _row(image="img/link.png"))
    with pytest.raises(ManifestError, match="leaves the data root"):
        load_manifest(root / "manifest.jsonl")


def test_all_problems_are_reported_together(root):
    _append(root, _row(id="a", text=""))
    _append(root, _row(id="b", label="zzz"))
    _append(root, _row(id="p0"))
    with pytest.raises(ManifestError) as err:
        load_manifest(root / "manifest.jsonl")
    assert [p.post_id for p in err.value.problems] == ["a", "b", "p0"]
    assert "3 bad row(s)" in str(err.value)


def test_skip_mode_keeps_good_rows_and_reports_the_rest(root):
    _append(root, _row(id="a", text=""))
    _append(root, _row(id="b", image="img/missing.png"))
    m = load_manifest(root / "manifest.jsonl", on_error="skip")
    assert [p.id for p in m.posts] == ["p0", "p1", "p2", "p3"]
    assert [(s.post_id, s.line) for s in m.skipped] == [("a", 5), ("b", 6)]
    assert "empty text" in m.skipped[0].problem
    assert "image file not found" in m.skipped[1].problem


def test_image_checks_can_be_relaxed(root):
    _corrupt(root)
    _append(root, _row(image="img/bad.png"))
    assert len(load_manifest(root / "manifest.jsonl", check_images="exists").posts) == 5


def test_csv_manifest(root):
    csv_path = root / "manifest.csv"
    csv_path.write_text(
        "id,text,image,label,split,meta\n"
        'c1,"hello, world",img/0.png,pos,train,"{""source"": ""x""}"\n'
        "c2,,img/1.png,neg,val,\n"
    )
    with pytest.raises(ManifestError) as err:
        load_manifest(csv_path)
    assert err.value.problems[0].line == 3 and "empty text" in err.value.problems[0].problem
    m = load_manifest(csv_path, on_error="skip")
    assert m.posts[0].text == "hello, world" and m.posts[0].meta == {"source": "x"}


def test_labels_come_from_dataset_json_or_argument(root):
    (root / "dataset.json").unlink()
    with pytest.raises(FileNotFoundError, match="dataset.json"):
        load_manifest(root / "manifest.jsonl")
    assert load_manifest(root / "manifest.jsonl", labels=LABELS).labels == LABELS


def test_missing_manifest_says_how_to_make_one(tmp_path):
    with pytest.raises(FileNotFoundError, match="mmaux synth"):
        load_manifest(tmp_path / "manifest.jsonl", labels=LABELS)
