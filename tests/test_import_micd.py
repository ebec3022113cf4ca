"""MICD importer on the raw-format fixture in tests/fixtures/raw/micd/ and the real sample rows.

Fixture ``data_key_mic.csv`` (ids 15000000000000000NN, c = commercial, n = non-commercial):

* usable: train c 001 002 004 006, n 003 005 007 008; val n 009, c 010 011;
  test c 012 014, n 013 015
* skipped: line 17 label ``2``, 18 empty label, 19 split ``holdout``, 20 (019) no text in
  the text file, 21 (020) blank text, 22 repeats 003
* images (written by the test): 004 missing, 013 corrupt

``rehydrated_text.csv`` (UTF-8 with a byte-order mark; quoted commas, ``""`` quotes and
newlines, one CRLF inside a text): 001 repeated with the same text (ignored), 002 repeated
with another text (line 21, reported), three ids not in the key, two of them text-only
posts of ``text_data_mic.csv`` (5 rows).
"""

from __future__ import annotations

import csv
from collections import Counter
from pathlib import Path

import pytest

from mmaux.cli import main
from mmaux.data.manifest import load_manifest
from mmaux.importers import ImportFailed
from mmaux.importers.micd import LABELS, import_micd, read
from mmaux.importers.rawio import read_text_file
from tests.import_helpers import (
    FIXTURES,
    RAW_SAMPLES,
    copy_fixture,
    make_images,
    read_dataset_info,
    read_import_report,
    tree_hash,
)

FIXTURE = FIXTURES / "micd"
SAMPLES = RAW_SAMPLES / "micd"
C, N = "commercial", "non-commercial"


def mid(n: int) -> str:
    return f"15000000000000000{n:02d}"


@pytest.fixture
def micd_raw(tmp_path) -> Path:
    """The fixture copied with images {id}_1.jpg for every id, 004 missing, 013 corrupt."""
    src = copy_fixture("micd", tmp_path)
    ids = [mid(n) for n in range(1, 21)]
    make_images(src / "images", ids, "{}_1.jpg", missing=[mid(4)], corrupt=[mid(13)])
    return src


def test_text_file_is_required(micd_raw, tmp_path):
    with pytest.raises(ImportFailed) as err:
        import_micd(micd_raw, tmp_path / "out")
    msg = str(err.value)
    assert "without post text" in msg and "Twitter/Instagram" in msg
    assert "rehydrate" in msg and "--text-file" in msg and "id,text" in msg
    with pytest.raises(ImportFailed, match="text file not found"):
        import_micd(micd_raw, tmp_path / "out", text_file=micd_raw / "missing.csv")
    bad = tmp_path / "bad.csv"
    bad.write_text("tweet,body\n1,x\n")
    with pytest.raises(ImportFailed, match="expected an id,text header"):
        import_micd(micd_raw, tmp_path / "out", text_file=bad)


def test_missing_images_fail_the_import_by_default(micd_raw, tmp_path):
    with pytest.raises(ImportFailed) as err:
        import_micd(micd_raw, tmp_path / "out", text_file=micd_raw / "rehydrated_text.csv")
    msg = str(err.value)
    assert "2 post(s) have a missing or unreadable image" in msg
    assert f"{mid(4)}: " in msg and "image file not found" in msg
    assert f"{mid(13)}: " in msg and "image cannot be decoded" in msg
    assert not (tmp_path / "out" / "manifest.jsonl").exists()


def test_import_keeps_official_splits_and_reports_everything(micd_raw, tmp_path):
    before = tree_hash(micd_raw)
    out = tmp_path / "out"
    text_file = micd_raw / "rehydrated_text.csv"
    report = import_micd(micd_raw, out, on_missing="drop", text_file=text_file)
    assert tree_hash(micd_raw) == before  # sources untouched
    assert report.counts == {
        "train": {N: 4, C: 3},
        "val": {N: 1, C: 2},
        "test": {N: 1, C: 2},
    }
    assert report.labels == LABELS == [N, C]
    assert report.label_map == {"0": N, "1": C}
    assert report.split_rule == "official (split column of data_key_mic.csv)"
    assert sorted((m["id"], m["problem"]) for m in report.missing_images) == [
        (mid(4), "image file not found"),
        (mid(13), "image cannot be decoded (UnidentifiedImageError)"),
    ]
    key = str(micd_raw / "data_key_mic.csv")
    assert [(r["file"], r["line"], r.get("id"), r["problem"]) for r in report.skipped_rows] == [
        (
            str(text_file),
            21,
            mid(2),
            f"id {mid(2)} repeated with a different text (first on line 3, which is used)",
        ),
        (key, 17, mid(16), f"unknown label '2' (id {mid(16)})"),
        (key, 18, mid(17), f"unknown label '' (id {mid(17)})"),
        (key, 19, mid(18), f"unknown split 'holdout' (id {mid(18)})"),
        (key, 20, mid(19), f"no text for id {mid(19)} in text_file"),
        (key, 21, mid(20), f"empty text for id {mid(20)} in text_file"),
        (key, 22, mid(3), f"duplicate id {mid(3)} (first on line 4)"),
    ]
    assert report.notes == [
        f"post text from {text_file}",
        "skipped 1 post(s) whose text in text_file is empty",
        "skipped 1 row(s) with an empty, unusable or repeated id",
        "skipped 2 row(s) with an unknown label",
        "skipped 1 post(s) with no text in text_file",
        "skipped 1 row(s) with an unknown split",
        "1 row(s) of text_file not used (see skipped rows)",
        "left out 5 text-only post(s) of text_data_mic.csv: they have no image, and an "
        "mmaux data set pairs text with an image",
        "text_file holds 3 id(s) not in data_key_mic.csv, not used (2 of them text-only posts)",
    ]
    info = read_dataset_info(out)
    assert info["name"] == "micd" and info["labels"] == [N, C]
    assert info["import"]["dropped_ids"] == [mid(4), mid(13)]
    assert info["import"]["label_map"] == {"0": N, "1": C}
    saved = read_import_report(out)
    assert len(saved["skipped_rows"]) == 7 and len(saved["notes"]) == 9
    m = load_manifest(out / "manifest.jsonl")
    assert len(m.posts) == 13 and m.counts() == report.counts
    posts = {p.id: p for p in m.posts}
    assert mid(19) not in posts and not any(p.startswith("16") for p in posts)  # text-only
    assert posts[mid(1)].text == "Tried the new ramen place downtown #ad"  # BOM stripped
    assert posts[mid(2)].text.startswith("Sunrise in the hills, thanks")  # first text kept
    assert posts[mid(3)].text == "Lazy Sunday.\nCoffee, blanket, movie."
    assert posts[mid(5)].text == 'My "no makeup" look today'
    assert posts[mid(15)].text == "Grandma's soup,\nthe best"  # CRLF inside the text
    assert posts[mid(10)].image == f"images/{mid(10)}.jpg"
    assert posts[mid(10)].meta == {
        "domain": "tech",
        "year": 2021,
        "month": 5,
        "source_file": "data_key_mic.csv",
        "source_line": 11,
        "raw_label": "1",
    }
    assert {p.split for p in m.posts if p.id in (mid(9), mid(10), mid(11))} == {"val"}


def test_text_file_reader_handles_bom_quotes_and_repeats():
    texts, skipped = read_text_file(FIXTURE / "rehydrated_text.csv")
    assert len(texts) == 19 and texts[mid(20)] == ""
    assert texts["1700000000000000001"] == "a post that no file names"
    assert [(s["line"], s["id"]) for s in skipped] == [(21, mid(2))]


def test_import_through_the_cli(micd_raw, tmp_path, capsys):
    args = ["import", "micd", "--src", str(micd_raw), "--on-missing", "drop"]
    assert main([*args, "--out", str(tmp_path / "o1")]) == 2
    assert "--text-file" in capsys.readouterr().err
    text = str(micd_raw / "rehydrated_text.csv")
    assert main([*args, "--out", str(tmp_path / "o2"), "--text-file", text]) == 0
    assert "13 posts written" in capsys.readouterr().out
    assert main([*args, "--out", str(tmp_path / "o3"), "--task", "x", "--text-file", text]) == 2
    assert "--task is not an option of the micd importer" in capsys.readouterr().err


@pytest.mark.skipif(not SAMPLES.is_dir(), reason="MICD raw samples not present")
def test_real_sample_rows(tmp_path):
    key = SAMPLES / "data_key_mic.csv"
    lines = key.read_text(encoding="utf-8").splitlines()[1:]
    expected = Counter()
    for ln in lines:  # independent count: id,domain,year,month,label,split
        f = ln.split(",")
        expected[(f[5], {"0": N, "1": C}[f[4]])] += 1
    text_file = tmp_path / "text.csv"
    with text_file.open("w", encoding="utf-8", newline="") as fh:
        writer = csv.writer(fh)
        writer.writerow(["id", "text"])
        writer.writerows([ln.split(",")[0], f"post {i}, rehydrated"] for i, ln in enumerate(lines))
    texts, _ = read_text_file(text_file)
    posts, skipped, key_ids = read(SAMPLES, texts, tmp_path / "images")
    assert skipped == [] and len(posts) == len(lines) == len(key_ids)
    assert Counter((p.split, p.label) for p in posts) == expected
    assert all(p.text.startswith("post ") and p.meta["domain"] for p in posts)
    # no images in the sample: every post is reported missing, no row is skipped
    report = import_micd(
        SAMPLES, tmp_path / "out", on_missing="drop", images=tmp_path / "none", text_file=text_file
    )
    assert len(report.missing_images) == len(lines) and report.skipped_rows == []
    n_text_only = len((SAMPLES / "text_data_mic.csv").read_text().splitlines()) - 1
    assert f"left out {n_text_only} text-only post(s)" in " ".join(report.notes)
