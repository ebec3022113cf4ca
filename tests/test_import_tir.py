"""TIR importer on the raw-format fixture in tests/fixtures/raw/tir/ and the real sample rows.

Fixture ``textimage-data.csv`` (27 records on 30 lines; A..D = the four relationships
image_adds_text_repr, image_adds_text_notrepr, image_notadds_text_repr,
image_notadds_text_notrepr):

* usable: A 001 006 009 018 019 020; B 003 010 021 022; C 004 007 023;
  D 002 005 008 024 025 026 (ids 9100000000000000NN)
* ``\\"`` quoting: 002 (9 fields, garbled by a plain reader), 003 (10 fields),
  004 (11 fields), 005 (``\\"`` before a newline inside the tweet), 006 (newline, then
  ``\\"`` and a comma), 007 (tweet starts with ``\\"``); 008 keeps a lone backslash, 009 uses
  CSV's own ``""``; 010 is unquoted with a comma in the tweet (heuristic)
* skipped: line 14 truncated (5 fields), 15 two one-hot ones, 16 none, 17 binary columns
  disagree, 18 a label ``2``, 19 repeats 001, 20 blank tweet, 21 id ``T9...017``
* images (written by the test): 021 missing, 024 corrupt

``textimage.csv`` (ids-only, CRLF, trailing ``,,,`` that rows 003 and 004 lack) with
``rehydrated_text.csv``: usable A 001 006 018; B 003 021; C 004 007; D 002 005 024;
skipped: 930..001 (no text), 930..002 (blank text), 930..003 (truncated, line 14),
930..004 (inconsistent); the text file has one id (940..001) not in textimage.csv.
"""

from __future__ import annotations

import csv
from collections import Counter
from pathlib import Path

import pytest

from mmaux.cli import main
from mmaux.data.manifest import load_manifest
from mmaux.importers import ImportFailed
from mmaux.importers.tir import (
    RELATIONS,
    _heuristic,
    import_tir,
    read_data_file,
    read_ids_file,
    to_posts,
)
from tests.import_helpers import (
    FIXTURES,
    RAW_SAMPLES,
    copy_fixture,
    make_images,
    read_dataset_info,
    read_import_report,
    tree_hash,
)

FIXTURE = FIXTURES / "tir"
SAMPLES = RAW_SAMPLES / "tir"
A, B, C, D = RELATIONS


def tid(n: int) -> str:
    return f"9100000000000000{n:02d}"


@pytest.fixture
def tir_raw(tmp_path) -> Path:
    """The fixture copied with images: T{id}.jpg for every id, 021 missing, 024 corrupt."""
    src = copy_fixture("tir", tmp_path)
    ids = [tid(n) for n in range(1, 27)]
    make_images(src / "images", ids, "T{}.jpg", missing=[tid(21)], corrupt=[tid(24)])
    return src


def test_missing_images_fail_the_import_by_default(tir_raw, tmp_path):
    with pytest.raises(ImportFailed) as err:
        import_tir(tir_raw, tmp_path / "out")
    msg = str(err.value)
    assert "2 post(s) have a missing or unreadable image" in msg
    assert f"{tid(21)}: " in msg and "image file not found" in msg
    assert f"{tid(24)}: " in msg and "image cannot be decoded" in msg
    assert not (tmp_path / "out" / "manifest.jsonl").exists()


def test_relationship_import_counts_labels_and_reports(tir_raw, tmp_path):
    before = tree_hash(tir_raw)
    out = tmp_path / "out"
    report = import_tir(tir_raw, out, on_missing="drop")
    assert tree_hash(tir_raw) == before  # sources untouched
    # A 6 -> 5/1/0; B 4-1 -> 2/0/1; C 3 -> 2/0/1; D 6-1 -> 4/0/1 (round(0.8n), round(0.1n))
    assert report.counts == {
        "train": {A: 5, B: 2, C: 2, D: 4},
        "val": {A: 1, B: 0, C: 0, D: 0},
        "test": {A: 0, B: 1, C: 1, D: 1},
    }
    assert report.labels == RELATIONS
    assert report.label_map == {r: r for r in RELATIONS}
    assert "stratified 80/10/10" in report.split_rule
    assert sorted((m["id"], m["problem"]) for m in report.missing_images) == [
        (tid(21), "image file not found"),
        (tid(24), "image cannot be decoded (UnidentifiedImageError)"),
    ]
    data = str(tir_raw / "textimage-data.csv")
    assert {r["file"] for r in report.skipped_rows} == {data}
    assert [(r["line"], r["problem"]) for r in report.skipped_rows] == [
        (
            14,
            "5 fields where 9 are expected (tweet_id, user_id, tweet, 6 labels); "
            "the quoting cannot be repaired",
        ),
        (
            15,
            "one-hot relationship columns hold 2 ones (image_adds_text_repr, "
            "image_notadds_text_repr)",
        ),
        (16, "one-hot relationship columns hold 0 ones"),
        (17, "text_is_represented=1 disagrees with the one-hot image_adds_text_notrepr"),
        (18, "label columns must be 0 or 1: image_notadds_text_notrepr='2'"),
        (19, "duplicate tweet_id (first on line 2)"),
        (20, "empty text"),
        (21, "tweet_id 'T910000000000000017' is not a number"),
    ]
    assert [r.get("id") for r in report.skipped_rows[1:]] == [
        *(tid(n) for n in (12, 13, 14, 15, 1, 16)),
        "T910000000000000017",
    ]
    assert report.notes == [
        "tweet text from textimage-data.csv",
        'repaired \\" quoting inside the tweet in 6 row(s)',
        "recovered 1 row(s) with extra fields by joining the middle fields into the tweet "
        "(2 ids first, 6 labels last)",
        "skipped 1 row(s) with empty text",
        "skipped 2 row(s) with a non-numeric or repeated tweet_id",
        "skipped 1 row(s) whose text_is_represented/image_adds disagree with the one-hot",
        "skipped 2 row(s) whose one-hot relationship columns do not hold exactly one 1",
        "skipped 1 row(s) whose fields could not be recovered",
        "skipped 1 row(s) with a label column other than 0/1",
    ]
    info = read_dataset_info(out)
    assert info["name"] == "tir" and info["labels"] == RELATIONS
    assert info["import"]["dropped_ids"] == [tid(21), tid(24)]
    assert info["import"]["label_map"] == {r: r for r in RELATIONS}
    saved = read_import_report(out)
    assert len(saved["skipped_rows"]) == 8 and len(saved["missing_images"]) == 2
    m = load_manifest(out / "manifest.jsonl")
    assert len(m.posts) == 17 and m.counts() == report.counts
    post = next(p for p in m.posts if p.id == tid(3))
    assert post.label == B and post.image == f"images/{tid(3)}.jpg"
    assert post.meta == {
        "source_file": "textimage-data.csv",
        "source_line": 4,
        "relationship": B,
        "text_is_represented": 0,
        "image_adds": 1,
        "image_adds_text_repr": 0,
        "image_adds_text_notrepr": 1,
        "image_notadds_text_repr": 0,
        "image_notadds_text_notrepr": 0,
        "user_id": "2000000003",
        "parse": "repaired_quotes",
    }
    with pytest.raises(ImportFailed, match="already holds a data set"):
        import_tir(tir_raw, out, on_missing="drop")


def test_broken_quoting_multiline_tweets_and_heuristic_rows_are_recovered(tmp_path):
    path = FIXTURE / "textimage-data.csv"
    with path.open(encoding="utf-8", newline="") as fh:  # what a plain reader makes of it
        plain = {r[0]: r for r in csv.reader(fh) if r}
    assert len(plain[tid(3)]) == 10 and len(plain[tid(4)]) == 11
    assert plain[tid(2)][2] != 'This is my "monday morning" face https://t.co/aaaa0002'
    rows, skipped = read_data_file(path)
    got = {r.tweet_id: (r.line, r.parse, r.text) for r in rows}
    assert got[tid(2)] == (
        3,
        "repaired_quotes",
        'This is my "monday morning" face https://t.co/aaaa0002',
    )
    assert got[tid(3)][2] == (
        'RT @newsdesk: "Breaking, the bridge is open" says mayor https://t.co/aaaa0003'
    )
    assert got[tid(4)][2] == 'Menu of the day: "soup, bread, and cheese" https://t.co/aaaa0004'
    assert got[tid(5)] == (
        6,
        "repaired_quotes",
        'Two "quoted" words here\nand the second line https://t.co/aaaa0005',
    )
    assert got[tid(6)] == (
        8,
        "repaired_quotes",
        'Quote of the day:\n"Keep going, always" https://t.co/aaaa0006',
    )
    assert got[tid(7)][1:] == ("repaired_quotes", '"Hello" from the museum https://t.co/aaaa0007')
    assert got[tid(8)] == (11, "csv", "shrug ¯\\_(ツ)_/¯ https://t.co/aaaa0008")
    assert got[tid(9)] == (12, "csv", 'She said "wow" at the view https://t.co/aaaa0009')
    assert got[tid(10)] == (13, "heuristic", "Unquoted tweet, with a comma https://t.co/aaaa0010")
    assert [(s["line"], s["kind"]) for s in skipped] == [(14, "parse")]
    assert got[tid(26)][0] == 30  # line numbers stay the file's after multi-line records
    # the heuristic only accepts numeric ids and 0/1 labels
    assert _heuristic(["1", "2", "a", "b", "0", "0", "0", "0", "0", "1"]) == [
        "1",
        "2",
        "a,b",
        "0",
        "0",
        "0",
        "0",
        "0",
        "1",
    ]
    assert _heuristic(["x1", "2", "a", "b", "0", "0", "0", "0", "0", "1"]) is None
    assert _heuristic(["1", "2", "a", "b", "0", "0", "0", "0", "0", "yes"]) is None
    assert _heuristic(["1", "2", "a", "0", "0"]) is None


@pytest.mark.parametrize(
    ("task", "labels", "counts"),
    [
        # represented = A 6 + C 3 = 9 -> 7/1/1; not = B 3 + D 5 (after drops) = 8 -> 6/1/1
        ("text_is_represented", ["not_represented", "represented"], (6, 7)),
        # adds = A 6 + B 3 = 9 -> 7/1/1; not = C 3 + D 5 = 8 -> 6/1/1
        ("image_adds", ["not_adds", "adds"], (6, 7)),
    ],
)
def test_binary_tasks(tir_raw, tmp_path, task, labels, counts):
    report = import_tir(tir_raw, tmp_path / "out", on_missing="drop", task=task)
    neg, pos = labels
    assert report.labels == labels
    assert report.label_map == {"0": neg, "1": pos}
    assert report.counts == {
        "train": {neg: counts[0], pos: counts[1]},
        "val": {neg: 1, pos: 1},
        "test": {neg: 1, pos: 1},
    }
    m = load_manifest(tmp_path / "out" / "manifest.jsonl")
    assert m.labels == labels
    for post in m.posts:  # the relationship stays available for per-relationship analysis
        assert post.meta["relationship"] in RELATIONS
        assert post.label == (pos if post.meta[task] == 1 else neg)
    info = read_dataset_info(tmp_path / "out")
    assert info["name"] == f"tir:{task}" and info["import"]["label_map"] == {"0": neg, "1": pos}


def test_unknown_task_lists_the_valid_ones(tir_raw, tmp_path):
    with pytest.raises(ImportFailed, match="relationship, text_is_represented, image_adds"):
        import_tir(tir_raw, tmp_path / "out", task="sentiment")


def test_ids_only_file_needs_rehydrated_text(tir_raw, tmp_path):
    (tir_raw / "textimage-data.csv").unlink()
    with pytest.raises(ImportFailed) as err:
        import_tir(tir_raw, tmp_path / "out")
    msg = str(err.value)
    assert "textimage.csv" in msg and "rehydrated from Twitter" in msg and "--text-file" in msg
    with pytest.raises(ImportFailed, match="text file not found"):
        import_tir(tir_raw, tmp_path / "out", text_file=tir_raw / "nope.csv")


def test_text_file_is_refused_when_the_data_file_has_the_text(tir_raw, tmp_path):
    with pytest.raises(ImportFailed, match="only for the ids-only textimage.csv"):
        import_tir(tir_raw, tmp_path / "out", text_file=tir_raw / "rehydrated_text.csv")


def test_ids_only_file_with_text_file(tir_raw, tmp_path):
    (tir_raw / "textimage-data.csv").unlink()
    assert b"\r\n" in (tir_raw / "textimage.csv").read_bytes()  # the CRLF quirk is kept
    out = tmp_path / "out"
    report = import_tir(tir_raw, out, on_missing="drop", text_file=tir_raw / "rehydrated_text.csv")
    # A 3 -> 2/0/1; B 2-1 -> 1/0/0; C 2 -> 2/0/0; D 3-1 -> 2/0/0
    assert report.counts == {
        "train": {A: 2, B: 1, C: 2, D: 2},
        "val": {A: 0, B: 0, C: 0, D: 0},
        "test": {A: 1, B: 0, C: 0, D: 0},
    }
    ids_csv = str(tir_raw / "textimage.csv")
    assert [(r["file"], r["line"], r.get("id"), r["problem"]) for r in report.skipped_rows] == [
        (
            ids_csv,
            14,
            None,
            "4 fields where 7 are expected (tweet_id and 6 labels, then empty columns)",
        ),
        (ids_csv, 12, "930000000000000001", "no text for id 930000000000000001 in text_file"),
        (ids_csv, 13, "930000000000000002", "empty text for id 930000000000000002 in text_file"),
        (
            ids_csv,
            15,
            "930000000000000004",
            "text_is_represented=1 disagrees with the one-hot image_adds_text_notrepr",
        ),
    ]
    assert "text_file holds 1 id(s) not in textimage.csv, not used" in report.notes
    assert report.notes[0].startswith("tweet text from ") and "rehydrated" in report.notes[0]
    m = load_manifest(out / "manifest.jsonl")
    texts = {p.id: p.text for p in m.posts}
    assert texts[tid(5)] == 'Two "quoted" words here\nand the second line https://t.co/aaaa0005'
    assert texts[tid(3)] == (
        'RT @newsdesk: "Breaking, the bridge is open" says mayor https://t.co/aaaa0003'
    )
    post = next(p for p in m.posts if p.id == tid(4))  # a row lacking the trailing ",,,"
    assert post.label == C and "user_id" not in post.meta
    assert post.meta["source_file"] == "textimage.csv" and post.meta["source_line"] == 5


def test_import_through_the_cli(tir_raw, tmp_path, capsys):
    args = ["import", "tir", "--src", str(tir_raw), "--on-missing", "drop"]
    assert main([*args, "--out", str(tmp_path / "o1"), "--task", "image_adds"]) == 0
    assert "17 posts written" in capsys.readouterr().out
    assert main([*args, "--out", str(tmp_path / "o2"), "--task", "nope"]) == 2
    assert "unknown TIR task" in capsys.readouterr().err
    assert main(["import", "tir", "--src", str(tir_raw), "--out", str(tmp_path / "o3")]) == 2
    assert tid(21) in capsys.readouterr().err
    (tir_raw / "textimage-data.csv").unlink()
    assert main([*args, "--out", str(tmp_path / "o4")]) == 2
    assert "--text-file" in capsys.readouterr().err
    text = str(tir_raw / "rehydrated_text.csv")
    assert main([*args, "--out", str(tmp_path / "o5"), "--text-file", text]) == 0
    assert "8 posts written" in capsys.readouterr().out


@pytest.mark.skipif(not SAMPLES.is_dir(), reason="TIR raw samples not present")
def test_real_sample_rows(tmp_path):
    data = SAMPLES / "textimage-data.csv"
    rows, skipped = read_data_file(data)
    lines = data.read_text(encoding="utf-8").splitlines()[1:]  # one tweet per line here
    assert skipped == [] and len(rows) == len(lines)
    assert [r.tweet_id for r in rows] == [ln.split('","')[0].strip('"') for ln in lines]
    with data.open(encoding="utf-8", newline="") as fh:
        plain = [r for r in csv.reader(fh)][1:]
    broken = {r[0] for r in plain if len(r) != 9}  # a plain reader splits these rows
    assert len(broken) == 3
    for row in rows:
        assert "\\" not in row.text
        if row.tweet_id in broken:
            assert row.parse == "repaired_quotes" and row.text.count('"') >= 2
    # label distribution, computed independently from the last six quoted fields
    expected = Counter()
    for ln in lines:
        flags = [f.strip('"') for f in ln.split('","')[-6:]]
        expected[RELATIONS[flags[2:].index("1")]] += 1
    posts, bad = to_posts(rows, data, "relationship", tmp_path)
    assert bad == [] and Counter(p.label for p in posts) == expected
    # the ids-only file agrees with it row by row
    ids_rows, ids_skipped = read_ids_file(SAMPLES / "textimage.csv")
    assert ids_skipped == []
    by_id = {r.tweet_id: r.labels for r in ids_rows}
    assert all(by_id[r.tweet_id] == r.labels for r in rows if r.tweet_id in by_id)
    # no images in the sample: every post is reported missing, no row is skipped
    report = import_tir(SAMPLES, tmp_path / "out", on_missing="drop", images=tmp_path / "none")
    assert len(report.missing_images) == len(lines) and report.skipped_rows == []
