"""MHP importer on the raw-format fixture in tests/fixtures/raw/mhp/ (and the real sample).

The fixture has three split CSVs (extra and reordered columns, an unnamed index column,
``.jpg``/``.png``/``.0`` image numbers, empty and ``nan`` OCR text, a quoted multi-line
tweet, bad labels and ids, a duplicate id), a padded ``DataSplits.csv`` that moves one id
to another split and lists ids no CSV has, and an unrelated CSV. Images are made here.
"""

from __future__ import annotations

import csv
import pickle
from pathlib import Path

import pytest

from mmaux.cli import main
from mmaux.data.manifest import load_manifest
from mmaux.importers import ImportFailed
from mmaux.importers.mhp import clean_id, import_mhp, parse_label, read_datasplits
from tests.import_helpers import (
    RAW_SAMPLES,
    copy_fixture,
    make_images,
    problems_by_line,
    read_dataset_info,
    read_import_report,
    tree_hash,
)

SAMPLES = RAW_SAMPLES / "mhp"
ID = "12000000000000000{:02d}".format
MISSING, CORRUPT = ID(3), ID(32)


@pytest.fixture
def mhp(tmp_path) -> Path:
    """The fixture in tmp_path with ``images/{id}.jpg``, one missing and one corrupt."""
    src = copy_fixture("mhp", tmp_path)
    ids = [ID(n) for n in [*range(1, 13), *range(21, 25), *range(31, 36)]]
    make_images(src / "images", ids, missing=[MISSING], corrupt=[CORRUPT])
    return src


def test_cell_parsers():
    assert clean_id(" 123.jpg ") == clean_id("123.JPEG") == clean_id("123.0") == "123"
    assert clean_id("1.2e+18") is None and clean_id("../x.jpg") is None
    assert [parse_label(x) for x in ("0", "3", "2.0", "4", "1.5", "", "nan")] == [
        0,
        3,
        2,
        None,
        None,
        None,
        None,
    ]


def test_fails_naming_missing_and_corrupt_images(mhp, tmp_path):
    with pytest.raises(ImportFailed) as err:
        import_mhp(mhp, tmp_path / "out")
    msg = str(err.value)
    assert "2 post(s) have a missing or unreadable image" in msg
    assert f"{MISSING}: " in msg and "image file not found" in msg
    assert f"{CORRUPT}: " in msg and "image cannot be decoded" in msg


def test_datasplits_decide_the_split_and_everything_is_reported(mhp, tmp_path):
    before = tree_hash(mhp)
    out = tmp_path / "out"
    report = import_mhp(mhp, out, on_missing="drop")
    assert tree_hash(mhp) == before  # sources untouched
    assert report.counts == {
        "train": {"none": 1, "hateful": 2, "counter_speech": 3, "reclaimed": 1},
        "val": {"none": 1, "hateful": 2, "counter_speech": 1, "reclaimed": 1},
        "test": {"none": 2, "hateful": 0, "counter_speech": 1, "reclaimed": 0},
    }
    assert sorted(m["id"] for m in report.missing_images) == [MISSING, CORRUPT]
    assert problems_by_line(report) == {
        "train.csv:8": "unknown label '7'",
        "train.csv:9": "empty text",
        "train.csv:10": "not listed in DataSplits.csv",
        "train.csv:11": "bad image_number '1.2e+18'",
        "dev.csv:5": "duplicate id (first at train.csv:2)",
        "test.csv:6": "unknown label ''",
    }
    assert report.skipped_rows[2]["id"] == ID(8)
    notes = " | ".join(report.notes)
    assert f"3 id(s) listed in DataSplits.csv are in no CSV: {ID(97)}, {ID(98)}, {ID(99)}" in notes
    assert "ignored annotation_codes.csv" in notes
    assert report.split_rule == "official (DataSplits.csv: Train/Dev/Test IDs)"
    m = load_manifest(out / "manifest.jsonl")
    assert m.labels == ["none", "hateful", "counter_speech", "reclaimed"] and len(m.posts) == 15
    post = {p.id: p for p in m.posts}
    assert post[ID(11)].split == "val"  # in train.csv, but DataSplits.csv says Dev
    assert post[ID(1)].text == "we should all stand together, no matter what WE STAND TOGETHER"
    assert post[ID(1)].meta["img_text"] == "WE STAND TOGETHER"
    assert post[ID(1)].meta["image_number"] == f"{ID(1)}.jpg"
    assert post[ID(2)].text == "plain tweet without any image text"
    assert post[ID(9)].text == "replying to call out the hate"  # NaN OCR left out
    assert post[ID(9)].meta["img_text"] == "NaN"
    assert post[ID(10)].text == "ONLY THE IMAGE SPEAKS HERE"  # nan tweet text
    assert post[ID(12)].text == "counter speech with spaces"
    assert post[ID(4)].text == 'reclaiming the "word" for ourselves\nacross two lines OUR WORD'
    assert post[ID(5)].label == "hateful" and post[ID(5)].meta["raw_label"] == "1.0"
    assert post[ID(33)].text == "commas, inside, quotes"  # reordered columns in test.csv
    assert post[ID(4)].image == f"images/{ID(4)}.jpg"
    info = read_dataset_info(out)
    assert info["import"]["label_map"] == {
        "0": "none",
        "1": "hateful",
        "2": "counter_speech",
        "3": "reclaimed",
    }
    assert info["import"]["dropped_ids"] == [MISSING, CORRUPT]
    saved = read_import_report(out)
    assert len(saved["skipped_rows"]) == 6 and saved["label_map"]["3"] == "reclaimed"


def test_without_datasplits_the_file_names_decide(mhp, tmp_path):
    (mhp / "DataSplits.csv").unlink()
    report = import_mhp(mhp, tmp_path / "out", on_missing="drop")
    assert report.counts == {
        "train": {"none": 2, "hateful": 3, "counter_speech": 3, "reclaimed": 1},
        "val": {"none": 1, "hateful": 1, "counter_speech": 1, "reclaimed": 1},
        "test": {"none": 2, "hateful": 0, "counter_speech": 1, "reclaimed": 0},
    }
    assert "dev.csv -> val" in report.split_rule and len(report.skipped_rows) == 5
    assert problems_by_line(report)["dev.csv:5"] == "duplicate id (first at train.csv:2)"


def test_without_split_names_a_seeded_stratified_split(mhp, tmp_path):
    (mhp / "DataSplits.csv").unlink()
    for old, new in (("train", "a"), ("dev", "b"), ("test", "c")):
        (mhp / f"{old}.csv").rename(mhp / f"{new}.csv")
    report = import_mhp(mhp, tmp_path / "out", on_missing="drop", seed=5)
    # none 5, hateful 4, counter_speech 5, reclaimed 2 -> 80/10/10 per label, rounded
    assert report.counts == {
        "train": {"none": 4, "hateful": 3, "counter_speech": 4, "reclaimed": 2},
        "val": {"none": 0, "hateful": 0, "counter_speech": 0, "reclaimed": 0},
        "test": {"none": 1, "hateful": 1, "counter_speech": 1, "reclaimed": 0},
    }
    assert report.split_rule == "seeded stratified 80/10/10"


def test_an_id_in_two_datasplits_columns_fails(mhp, tmp_path):
    path = mhp / "DataSplits.csv"
    path.write_text(path.read_text().replace(ID(22), ID(2)))
    with pytest.raises(ImportFailed, match=rf"DataSplits.csv:3: id {ID(2)} is in Dev IDs"):
        import_mhp(mhp, tmp_path / "out", on_missing="drop")


def test_pickles_are_never_loaded(tmp_path, mhp, monkeypatch):
    def refuse(*args, **kwargs):
        raise AssertionError("a pickle was loaded")

    monkeypatch.setattr(pickle, "load", refuse)
    monkeypatch.setattr(pickle, "loads", refuse)
    only = tmp_path / "pickled"
    only.mkdir()
    (only / "dog_whistle.pkl").write_bytes(b"\x80\x04 never unpickled")
    with pytest.raises(ImportFailed, match="Pickles are not loaded") as err:
        import_mhp(only, tmp_path / "out")
    assert "Convert the data to CSV in a trusted environment" in str(err.value)
    (mhp / "dog_whistle.pkl").write_bytes(b"\x80\x04 never unpickled")
    report = import_mhp(mhp, tmp_path / "out2", on_missing="drop")
    assert "ignored dog_whistle.pkl: pickles are never loaded" in report.notes


def test_cli_import(mhp, tmp_path, capsys):
    argv = ["import", "mhp", "--src", str(mhp), "--out", str(tmp_path / "out")]
    assert main([*argv, "--on-missing", "drop"]) == 0
    assert "mhp: 15 posts written" in capsys.readouterr().out
    assert main(["import", "mhp", "--src", str(mhp), "--out", str(tmp_path / "o2")]) == 2
    assert MISSING in capsys.readouterr().err


def test_real_sample_datasplits():
    if not SAMPLES.is_dir():
        pytest.skip("shared raw samples not present")
    got = read_datasplits(SAMPLES / "DataSplits.csv")
    with (SAMPLES / "DataSplits.csv").open(newline="") as fh:
        rows = list(csv.reader(fh))
    expected = {}
    for row in rows[1:]:
        for split, cell in zip(("train", "val", "test"), row[1:4], strict=True):
            if cell.strip():
                expected[cell.strip()] = split
    assert got == expected and len(got) == 3 * (len(rows) - 1)
