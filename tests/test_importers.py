"""Importers on small raw fixtures written here, and on the shared MultiOFF copy if present."""

from __future__ import annotations

from pathlib import Path

import pytest

from mmaux.cli import main
from mmaux.data.manifest import load_manifest
from mmaux.importers import ImportFailed, import_datakey, import_multioff, stratified_split
from tests.import_helpers import (
    SHARED,
    make_image,
    make_images,
    read_dataset_info,
    read_import_report,
    tree_hash,
)

SHARED_MULTIOFF = SHARED / "datasets" / "multioff"


@pytest.fixture
def multioff_raw(tmp_path) -> Path:
    """MultiOFF's layout and quirks: 'Non-offensiv' labels, a missing image, a bad row."""
    src = tmp_path / "multioff"
    make_images(src / "images", ("a1", "a2", "a3", "b1", "b2", "c1", "c2"), "{}.png")
    (src / "Training_meme_dataset.csv").write_text(
        "image_name,sentence,label\n"
        'a1.png,"Vote for him, or else !",offensive\n'
        "a2.png,Glory to Bern . ,Non-offensiv\n"
        "a3.png,Nice rally,Non-offensiv\n"
        "zz.png,unknown label here,maybe\n"
        "../escape.png,tries to leave the folder,offensive\n"
    )
    (src / "Validation_meme_dataset.csv").write_text(
        "image_name,sentence,label\nb1.png,one,offensive\nKbTk7Rq.png,image lost,Non-offensiv\n"
        "b2.png,   ,offensive\n"
    )
    (src / "Testing_meme_dataset.csv").write_text(
        "image_name,sentence,label\nc1.png,test one,offensive\nc2.png,test two,Non-offensiv\n"
    )
    return src


def test_multioff_fails_by_default_naming_every_missing_image(multioff_raw, tmp_path):
    with pytest.raises(ImportFailed) as err:
        import_multioff(multioff_raw, tmp_path / "out")
    msg = str(err.value)
    assert "2 post(s) have a missing or unreadable image" in msg
    assert "KbTk7Rq" in msg and "image file not found" in msg
    assert "leaves the image folder" in msg
    assert not (tmp_path / "out" / "manifest.jsonl").exists()


def test_multioff_drop_keeps_official_splits_and_reports_everything(multioff_raw, tmp_path):
    before = tree_hash(multioff_raw)
    out = tmp_path / "out"
    report = import_multioff(multioff_raw, out, on_missing="drop")
    assert tree_hash(multioff_raw) == before  # sources untouched
    assert report.counts == {
        "train": {"non-offensive": 2, "offensive": 1},
        "val": {"non-offensive": 0, "offensive": 1},
        "test": {"non-offensive": 1, "offensive": 1},
    }
    assert sorted(m["id"] for m in report.missing_images) == ["KbTk7Rq", "escape"]
    assert sorted(r["problem"] for r in report.skipped_rows) == [
        "empty text",
        "unknown label 'maybe'",
    ]
    m = load_manifest(out / "manifest.jsonl")  # the strict loader accepts the result
    assert m.labels == ["non-offensive", "offensive"]
    a2 = next(p for p in m.posts if p.id == "a2")
    assert a2.label == "non-offensive" and a2.meta["raw_label"] == "Non-offensiv"
    assert next(p for p in m.posts if p.id == "a1").text == "Vote for him, or else !"
    info = read_dataset_info(out)
    assert info["import"]["on_missing"] == "drop"
    assert info["import"]["dropped_ids"] == ["KbTk7Rq", "escape"]
    saved = read_import_report(out)
    assert len(saved["missing_images"]) == 2 and saved["split_rule"].startswith("official")
    with pytest.raises(ImportFailed, match="already holds a data set"):
        import_multioff(multioff_raw, out, on_missing="drop")


def test_datakey_finds_images_maps_splits_and_stratifies_unsplit_rows(tmp_path):
    src = tmp_path / "key"
    rows = ["tweet_id,text,label,split"]
    for i in range(40):
        label = "commercial" if i % 4 == 0 else "other"
        split = "" if i >= 10 else ("dev" if i < 3 else "train")
        rows.append(f"{1000 + i},post number {i},{label},{split}")
        if i != 7:
            name = f"T{1000 + i}.jpg" if i % 2 else f"{1000 + i}.png"
            make_image(src / "images" / name)
    rows.append("2000,,other,train")
    rows.append("2001,text,other,holdout")
    (src / "data_key.csv").write_text("\n".join(rows) + "\n")
    report = import_datakey(src / "data_key.csv", tmp_path / "out", on_missing="drop", seed=3)
    assert [m["id"] for m in report.missing_images] == ["1007"]
    assert [r["problem"] for r in report.skipped_rows] == [
        "empty text (id=2000)",
        "unknown split 'holdout'",
    ]
    m = load_manifest(tmp_path / "out" / "manifest.jsonl")
    assert m.labels == ["commercial", "other"] and len(m.posts) == 39
    assert {p.split for p in m.posts if int(p.id) < 1003} == {"val"}  # dev -> val
    unsplit = [p for p in m.posts if int(p.id) >= 1010]
    test_share = sum(p.split == "test" for p in unsplit) / len(unsplit)
    assert 0.05 < test_share < 0.2 and "stratified" in report.split_rule
    again = import_datakey(src / "data_key.csv", tmp_path / "again", on_missing="drop", seed=3)
    assert again.counts == report.counts  # the seeded split is reproducible


def test_stratified_split_is_seeded_and_keeps_label_shares():
    labels = ["a"] * 80 + ["b"] * 20
    s1, s2 = stratified_split(labels, 1), stratified_split(labels, 1)
    assert s1 == s2 and s1 != stratified_split(labels, 2)
    for lab, n in (("a", 80), ("b", 20)):
        got = [s for s, x in zip(s1, labels, strict=True) if x == lab]
        assert got.count("train") == round(0.8 * n) and got.count("val") == round(0.1 * n)


def test_import_command(multioff_raw, tmp_path, capsys):
    assert (
        main(["import", "multioff", "--src", str(multioff_raw), "--out", str(tmp_path / "o1")]) == 2
    )
    assert "KbTk7Rq" in capsys.readouterr().err
    assert (
        main(
            [
                "import",
                "multioff",
                "--src",
                str(multioff_raw),
                "--out",
                str(tmp_path / "o2"),
                "--on-missing",
                "drop",
                "--link",
                "hardlink",
            ]
        )
        == 0
    )
    assert "6 posts written" in capsys.readouterr().out  # 3 train + 1 val + 2 test


@pytest.mark.skipif(not SHARED_MULTIOFF.is_dir(), reason="shared MultiOFF copy not present")
def test_real_multioff(tmp_path):
    with pytest.raises(ImportFailed, match="KbTk7Rq"):
        import_multioff(SHARED_MULTIOFF, tmp_path / "strict")
    report = import_multioff(SHARED_MULTIOFF, tmp_path / "out", on_missing="drop", link="hardlink")
    assert report.counts == {
        "train": {"non-offensive": 258, "offensive": 187},
        "val": {"non-offensive": 91, "offensive": 57},
        "test": {"non-offensive": 91, "offensive": 58},
    }
    assert [m["id"] for m in report.missing_images] == ["KbTk7Rq"]
    assert report.skipped_rows == []
    assert len(load_manifest(tmp_path / "out" / "manifest.jsonl").posts) == 742
