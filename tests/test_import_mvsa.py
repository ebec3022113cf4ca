"""MVSA importer on the raw-format fixtures in tests/fixtures/raw/mvsa/ (and the real sample).

Fixture folders: ``single/`` (one annotator), ``multiple/`` (three annotators, CRLF) and
``pairlist/`` (``valid_pairlist.txt`` with numbered splits of row indices, plus a
``labelResultAll.txt`` listing two ids the pair list excludes). Images are made here.
"""

from __future__ import annotations

from pathlib import Path

import pytest

from mmaux.cli import main
from mmaux.data.manifest import load_manifest
from mmaux.importers import ImportFailed
from mmaux.importers.mvsa import (
    LABEL_MAP,
    import_mvsa,
    majority,
    read_indices,
    read_pairlist,
    resolve,
)
from tests.import_helpers import (
    RAW_SAMPLES,
    copy_fixture,
    make_images,
    problems_by_id,
    read_dataset_info,
    read_import_report,
    tree_hash,
)

SAMPLES = RAW_SAMPLES / "mvsa"
ZERO = {"neutral": 0, "positive": 0, "negative": 0}


def _copy(name: str, tmp_path: Path, missing=(), corrupt=()) -> Path:
    """The fixture folder in tmp_path with ``data/{id}.jpg`` for every text file, except
    the ``missing`` ids (no image) and the ``corrupt`` ones (bytes that are no image)."""
    src = copy_fixture(f"mvsa/{name}", tmp_path)
    ids = sorted(text.stem for text in (src / "data").glob("*.txt"))
    make_images(src / "data", ids, missing=missing, corrupt=corrupt)
    return src


@pytest.fixture
def single(tmp_path) -> Path:
    return _copy("single", tmp_path, missing={"1016"}, corrupt={"1015"})


def test_rule_and_majority():
    assert resolve("positive", "positive") == "positive"
    assert resolve("neutral", "negative") == "negative"
    assert resolve("positive", "neutral") == "positive"
    assert resolve("positive", "negative") is None
    assert majority(["neutral", "positive", "neutral"]) == "neutral"
    assert majority(["neutral", "positive", "negative"]) is None


def test_single_fails_naming_missing_and_corrupt_images(single, tmp_path):
    with pytest.raises(ImportFailed) as err:
        import_mvsa(single, tmp_path / "out")
    msg = str(err.value)
    assert "2 post(s) have a missing or unreadable image" in msg
    assert "1015: " in msg and "image cannot be decoded" in msg
    assert "1016: " in msg and "image file not found" in msg
    assert not (tmp_path / "out" / "manifest.jsonl").exists()


def test_single_drop_applies_the_conflict_rule_and_reports_everything(single, tmp_path):
    before = tree_hash(single)
    out = tmp_path / "out"
    report = import_mvsa(single, out, on_missing="drop")
    assert tree_hash(single) == before  # sources untouched
    # usable: positive 1001 1002 1007 1017 1019 (+1015 corrupt), negative 1003 1006 1009
    # 1021 (+1016 missing), neutral 1005 1010 1018; 80/10/10 per label rounds val to 0.
    assert report.counts == {
        "train": {"neutral": 2, "positive": 4, "negative": 3},
        "val": ZERO,
        "test": {"neutral": 1, "positive": 1, "negative": 1},
    }
    assert sorted(m["id"] for m in report.missing_images) == ["1015", "1016"]
    assert problems_by_id(report) == {
        "1004": "text and image labels conflict (positive vs negative)",
        "1008": "text and image labels conflict (negative vs positive)",
        "1011": "text file data/1011.txt not found",
        "1012": "empty text",
        "1013": "unknown label word 'happy'",
        "1014": "'positive' is not 'text,image'",
        "1020": "expected 1 text,image field(s), found 2",
        "1007": "duplicate id (first on line 8)",
    }
    assert report.skipped_rows[0]["file"].endswith("labelResultAll.txt")
    notes = " | ".join(report.notes)
    assert "dropped 2 post(s) whose text and image labels conflict" in notes
    assert "2 text file(s) were not valid UTF-8 and were decoded as latin-1" in notes
    assert "1010, 1017" in notes and "polar + neutral -> the polar one" in notes
    m = load_manifest(out / "manifest.jsonl")
    assert m.labels == ["neutral", "positive", "negative"] and len(m.posts) == 12
    post = {p.id: p for p in m.posts}
    assert post["1010"].text == "Caf\u00e9 au lait, tr\u00e8s bien"
    assert post["1010"].meta["text_encoding"] == "latin-1"
    assert post["1001"].text.endswith("\u2600\ufe0f #goodmorning")  # UTF-8, stripped
    assert post["1001"].meta["text_encoding"] == "utf-8"
    assert post["1017"].label == "positive"  # capitalised words are read
    assert (post["1002"].label, post["1003"].label) == ("positive", "negative")
    assert post["1002"].meta["text_label"] == "neutral"
    assert post["1002"].meta["text_image_agreement"] == "differ"  # a subgroup of the study
    info = read_dataset_info(out)
    assert info["name"] == "mvsa-single"
    assert info["import"]["label_map"] == {"0": "neutral", "1": "positive", "2": "negative"}
    assert info["import"]["dropped_ids"] == ["1015", "1016"]
    saved = read_import_report(out)
    assert saved["label_map"] == LABEL_MAP and len(saved["skipped_rows"]) == 8
    assert saved["split_rule"] == "seeded stratified 80/10/10"


def test_multiple_takes_the_majority_of_three_annotators(tmp_path):
    src = _copy("multiple", tmp_path)
    report = import_mvsa(src, tmp_path / "out")
    # positive 2001 2009 2010, negative 2002 2007 2012, neutral 2006 2011
    assert report.counts == {
        "train": {"neutral": 2, "positive": 2, "negative": 2},
        "val": ZERO,
        "test": {"neutral": 0, "positive": 1, "negative": 1},
    }
    assert problems_by_id(report) == {
        "2003": "text and image labels conflict (positive vs negative)",
        "2004": "no majority among the text labels ['positive', 'negative', 'neutral']",
        "2005": "no majority among the image labels ['positive', 'negative', 'neutral']",
        "2008": "expected 3 text,image field(s), found 1",
    }
    notes = " | ".join(report.notes)
    assert "dropped 2 post(s) whose 3 annotators tied" in notes
    assert "dropped 1 post(s) whose text and image labels conflict" in notes
    assert "decoded as latin-1 (meta text_encoding): 2010" in notes
    m = load_manifest(tmp_path / "out" / "manifest.jsonl")
    post = {p.id: p for p in m.posts}
    assert post["2010"].text == "Gar\u00e7on, encore un caf\u00e9 s'il vous pla\u00eet"
    assert post["2001"].meta["annotator_text_labels"] == ["positive", "positive", "neutral"]
    assert post["2001"].meta["annotator_agreement"].startswith("text 2/3, image ")
    assert {p.meta["text_image_agreement"] for p in post.values()} <= {"agree", "differ"}
    assert post["2009"].label == "positive"  # text neutral (2 of 3), image positive
    assert post["2011"].label == "neutral"
    assert read_dataset_info(tmp_path / "out")["name"] == "mvsa-multiple"


def test_pairlist_fold_uses_row_indices(tmp_path):
    src = _copy("pairlist", tmp_path)
    before = tree_hash(src)
    report = import_mvsa(src, tmp_path / "out", fold=1)
    assert tree_hash(src) == before
    # rows: train 0 2 4 6 8 12, val 1 9 (3011 has no text), test 5 10 11; 3 and 13 in none
    assert report.counts == {
        "train": {"neutral": 0, "positive": 2, "negative": 4},
        "val": {"neutral": 1, "positive": 0, "negative": 0},
        "test": {"neutral": 2, "positive": 1, "negative": 0},
    }
    assert problems_by_id(report) == {
        "3003": "not in valid_pairlist.txt; text and image labels conflict (positive vs negative)",
        "3016": "not in valid_pairlist.txt",
        "3009": "labels ['3', '1', '1'] not all in 0/1/2",
        "3005": "not in fold 1",
        "3015": "not in fold 1",
        "3011": "text file data/3011.txt not found",
    }
    notes = " | ".join(report.notes)
    assert "valid_pairlist.txt excludes 2 row(s) of labelResultAll.txt" in notes
    assert "2 valid_pairlist.txt row(s) are in none of fold 1's files" in notes
    assert report.split_rule.startswith("official fold 1") and "row indices" in report.split_rule
    m = load_manifest(tmp_path / "out" / "manifest.jsonl")
    split = {p.id: p.split for p in m.posts}
    assert [split[i] for i in ("3001", "3002", "3007", "3013")] == ["train", "val", "test", "test"]
    post = {p.id: p for p in m.posts}
    # the pair list is authoritative: 3013's labelResultAll row conflicts, the list says 1
    assert post["3013"].label == "positive" and "label_result" not in post["3013"].meta
    assert post["3004"].meta["label_result"] == "negative"
    assert post["3004"].meta["pairlist_row"] == 2
    assert post["3007"].meta["text_encoding"] == "latin-1"


def test_pairlist_alone_without_fold_is_stratified(tmp_path):
    src = _copy("pairlist", tmp_path)
    (src / "labelResultAll.txt").unlink()
    report = import_mvsa(src, tmp_path / "out")
    # positive 3001 3005 3008 3013 3015, neutral 3002 3007 3012, negative 3004 3006 3010 3014
    assert report.counts == {
        "train": {"neutral": 2, "positive": 4, "negative": 3},
        "val": ZERO,
        "test": {"neutral": 1, "positive": 1, "negative": 1},
    }
    assert problems_by_id(report) == {
        "3009": "labels ['3', '1', '1'] not all in 0/1/2",
        "3011": "text file data/3011.txt not found",
    }
    assert any("pass fold=K" in n for n in report.notes)
    assert not any("excludes" in n for n in report.notes)
    assert read_dataset_info(tmp_path / "out")["name"] == "mvsa"


@pytest.mark.parametrize(
    ("fold", "message"),
    [
        (2, r"train_2.txt:2: row index 14 out of range: valid_pairlist.txt has 14 rows"),
        (3, r"val_3.txt: row index 1 is also in train_3.txt"),
        (4, r"train_4.txt: missing"),
    ],
)
def test_bad_folds_fail(tmp_path, fold, message):
    src = _copy("pairlist", tmp_path)
    with pytest.raises(ImportFailed, match=message):
        import_mvsa(src, tmp_path / "out", fold=fold)


def test_fold_needs_the_pair_list(single, tmp_path):
    with pytest.raises(ImportFailed, match="valid_pairlist.txt: missing"):
        import_mvsa(single, tmp_path / "out", fold=1, on_missing="drop")


def test_cli_import_with_fold(tmp_path, capsys):
    src = _copy("pairlist", tmp_path)
    argv = ["import", "mvsa", "--src", str(src), "--out", str(tmp_path / "out"), "--fold", "1"]
    assert main(argv) == 0
    assert "mvsa-single: 10 posts written" in capsys.readouterr().out
    assert len(load_manifest(tmp_path / "out" / "manifest.jsonl").posts) == 10


def test_real_sample_pairlist_and_split_indices():
    if not SAMPLES.is_dir():
        pytest.skip("shared raw samples not present")
    pairs, skipped, n_rows = read_pairlist(SAMPLES / "valid_pairlist.txt")
    lines = (SAMPLES / "valid_pairlist.txt").read_text().split()
    assert n_rows == len(lines) and not skipped and len(pairs) == len(lines)
    expected = {name: 0 for name in LABEL_MAP.values()}
    for line in lines:
        expected[LABEL_MAP[line.split(",")[1]]] += 1
    got = {name: sum(p.label == name for p in pairs) for name in LABEL_MAP.values()}
    assert got == expected
    assert [p.id for p in pairs][:3] == [line.split(",")[0] for line in lines[:3]]
    indices = read_indices(SAMPLES / "train_1.txt", 4511)  # the full list's row count
    assert len(indices) == len((SAMPLES / "train_1.txt").read_text().split())
    with pytest.raises(ImportFailed, match="out of range"):  # the sample list is cut short
        read_indices(SAMPLES / "train_1.txt", n_rows)
