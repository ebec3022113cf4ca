"""MSD importer on the raw-format fixture in tests/fixtures/raw/msd/ (and the real sample).

The fixture's ``text/*.txt`` use CRLF line ends, both quote styles, escaped quotes, a blank
line, keyword-filtered posts, malformed lines (truncated, wrong length, unbalanced quote, a
dict, a function call) and bad labels. Images are made here.
"""

from __future__ import annotations

import re
from pathlib import Path

import pytest

from mmaux.cli import main
from mmaux.data.manifest import load_manifest
from mmaux.importers import ImportFailed
from mmaux.importers.msd import KEYWORDS, import_msd, matched_keywords, parse_line, read
from tests.import_helpers import (
    RAW_SAMPLES,
    copy_fixture,
    make_images,
    problems_by_line,
    read_dataset_info,
    read_import_report,
    tree_hash,
)

SAMPLES = RAW_SAMPLES / "msd"
MISSING, CORRUPT = "810000000000000008", "830000000000000006"


@pytest.fixture
def msd(tmp_path) -> Path:
    """The fixture in tmp_path with ``images/{id}.jpg`` for every id in the text files,
    except one missing and one corrupt image."""
    src = copy_fixture("msd", tmp_path)
    ids = [
        post_id
        for path in sorted((src / "text").glob("*.txt"))
        for post_id in re.findall(r"'(8\d{17})'", path.read_text(encoding="utf-8"))
    ]
    make_images(src / "images", ids, missing=[MISSING], corrupt=[CORRUPT])
    return src


def test_parse_line_uses_the_last_element_and_never_evaluates_code():
    record, problem = parse_line("['1', 'it \\'s \" quoted \"', 1, 0]", 4)
    assert problem is None and record == {
        "id": "1",
        "text": 'it \'s " quoted "',
        "label": 0,
        "hashtag_label": 1,
    }
    assert parse_line("['1', __import__('os').getcwd(), 1]", 3) == (
        None,
        "not a Python literal (ValueError)",
    )
    assert parse_line("['1', 'x', True]", 3)[1] == "label True not in {0, 1}"
    assert parse_line("['1', 'x', 1.0]", 3)[1] == "label 1.0 not in {0, 1}"
    assert parse_line("['../up', 'x', 1]", 3)[1] == "bad id '../up'"
    assert matched_keywords("My #JokesOnYou <URL>") == ["joke", "jokes", "<url>"]
    assert len(KEYWORDS) == 11


def test_fails_naming_missing_and_corrupt_images(msd, tmp_path):
    with pytest.raises(ImportFailed) as err:
        import_msd(msd, tmp_path / "out")
    msg = str(err.value)
    assert "2 post(s) have a missing or unreadable image" in msg
    assert f"{MISSING}: " in msg and "image file not found" in msg
    assert f"{CORRUPT}: " in msg and "image cannot be decoded" in msg


def test_drop_keeps_official_splits_filters_keywords_and_reports_rows(msd, tmp_path):
    before = tree_hash(msd)
    out = tmp_path / "out"
    report = import_msd(msd, out, on_missing="drop")
    assert tree_hash(msd) == before  # sources untouched
    assert report.counts == {
        "train": {"not_sarcastic": 2, "sarcastic": 5},
        "val": {"not_sarcastic": 2, "sarcastic": 3},
        "test": {"not_sarcastic": 3, "sarcastic": 1},
    }
    assert sorted(m["id"] for m in report.missing_images) == [MISSING, CORRUPT]
    assert problems_by_line(report) == {
        "train.txt:4": "keyword filter: text contains 'humor'",
        "train.txt:5": "keyword filter: text contains '<url>'",
        "train.txt:7": "keyword filter: text contains 'joke', 'jokes'",
        "train.txt:9": "expected 3 elements, found 4",
        "train.txt:10": "not a Python literal (SyntaxError)",
        "train.txt:11": "label 2 not in {0, 1}",
        "train.txt:12": "empty text",
        "train.txt:13": "keyword filter: text contains 'sarcasm'",
        "train.txt:17": "label '1' not in {0, 1}",
        "valid2.txt:3": "keyword filter: text contains 'ironic'",
        "valid2.txt:4": "keyword filter: text contains 'reposting'",
        "valid2.txt:7": "duplicate id (first at train.txt:2)",
        "valid2.txt:8": "expected 4 elements, found 3",
        "valid2.txt:10": "a dict, not a list",
        "test2.txt:1": "keyword filter: text contains 'exgag'",
        "test2.txt:4": "keyword filter: text contains 'joke'",
        "test2.txt:8": "keyword filter: text contains 'humour'",
        "test2.txt:9": "not a Python literal (SyntaxError)",
        "test2.txt:10": "not a Python literal (ValueError)",
    }
    filtered = [r for r in report.skipped_rows if "keywords" in r]
    assert [r["id"][-3:] for r in filtered] == ["004", "005", "007", "013", "003", "004"] + [
        "001",
        "004",
        "008",
    ]
    assert any("dropped 9 post(s): train 4, val 2, test 3" in n for n in report.notes)
    m = load_manifest(out / "manifest.jsonl")
    assert m.labels == ["not_sarcastic", "sarcastic"] and len(m.posts) == 16
    post = {p.id: p for p in m.posts}
    assert (
        post["810000000000000002"].text
        == "oh great , another monday . can 't wait # mondaymotivation"
    )
    assert post["810000000000000003"].text == "we 're so lucky the train is late again <user>"
    assert post["810000000000000006"].text == 'she said " best day ever " and then it rained'
    assert post["820000000000000008"].text == 'thanks for the "help" , really'
    assert post["830000000000000007"].text.endswith("\u00e9t\u00e9")
    # the last element is the label, the hashtag label goes to meta
    assert post["820000000000000005"].label == "not_sarcastic"
    assert post["820000000000000005"].meta["hashtag_label"] == 1
    assert post["820000000000000006"].label == "sarcastic"
    assert post["810000000000000002"].split == "train"  # its duplicate in valid2 is skipped
    info = read_dataset_info(out)
    assert info["import"]["label_map"] == {"0": "not_sarcastic", "1": "sarcastic"}
    assert info["import"]["dropped_ids"] == [MISSING, CORRUPT]
    saved = read_import_report(out)
    assert saved["split_rule"].startswith("official") and len(saved["skipped_rows"]) == 19


def test_keyword_filter_off_keeps_those_posts(msd, tmp_path):
    report = import_msd(msd, tmp_path / "out", on_missing="drop", keyword_filter=False)
    assert report.counts == {
        "train": {"not_sarcastic": 4, "sarcastic": 7},
        "val": {"not_sarcastic": 3, "sarcastic": 4},
        "test": {"not_sarcastic": 3, "sarcastic": 4},
    }
    assert not any("keywords" in r for r in report.skipped_rows)
    assert report.notes == ["keyword filter off: posts mentioning the filter keywords are kept"]


def test_files_directly_in_src_and_dataset_image_folder(msd, tmp_path):
    for path in (msd / "text").iterdir():
        path.rename(msd / path.name)
    (msd / "text").rmdir()
    (msd / "images").rename(msd / "dataset_image")
    report = import_msd(msd, tmp_path / "out", on_missing="drop")
    assert report.n_posts == 16
    (msd / "valid2.txt").unlink()
    with pytest.raises(ImportFailed, match="missing valid2.txt"):
        import_msd(msd, tmp_path / "out2", on_missing="drop")


def test_cli_import(msd, tmp_path, capsys):
    images = tmp_path / "elsewhere"
    (msd / "images").rename(images)
    argv = ["import", "msd", "--src", str(msd), "--out", str(tmp_path / "out")]
    assert main([*argv, "--images", str(images), "--on-missing", "drop"]) == 0
    assert "msd: 16 posts written" in capsys.readouterr().out
    assert main([*argv[:-1], str(tmp_path / "o2"), "--fold", "1"]) == 2  # not an MSD option


def test_real_sample_rows_parse():
    if not SAMPLES.is_dir():
        pytest.skip("shared raw samples not present")
    posts, skipped, notes = read(SAMPLES)
    lines = {
        name: [x for x in (SAMPLES / name).read_text(encoding="utf-8").splitlines() if x.strip()]
        for name in ("train.txt", "valid2.txt", "test2.txt")
    }
    pattern = re.compile(r"sarcas(m|tic)|iron(y|ic)|jokes?|humou?r|exgag|reposting|<url>")
    flagged = {n: sum(bool(pattern.search(x.lower())) for x in rows) for n, rows in lines.items()}
    assert all(r["problem"].startswith("keyword filter") for r in skipped)
    assert len(skipped) == sum(flagged.values())
    assert len(posts) + len(skipped) == sum(len(rows) for rows in lines.values())
    per_split = ", ".join(
        f"{s} {flagged[n]}" for s, n in zip(("train", "val", "test"), lines, strict=True)
    )
    assert per_split in notes[0]
    last = [int(re.search(r"(\d)\]\s*$", x).group(1)) for rows in lines.values() for x in rows]
    kept = [
        lab
        for x, lab in zip(sum(lines.values(), []), last, strict=True)
        if not pattern.search(x.lower())
    ]
    assert sorted(p.label for p in posts) == sorted(
        "sarcastic" if lab else "not_sarcastic" for lab in kept
    )
    texts = {p.id: p.text for p in posts}
    escaped = [x.split("'")[1] for rows in lines.values() for x in rows if "\\'" in x]
    recovered = [texts[i] for i in escaped if i in texts]
    assert escaped and len(recovered) == len(escaped)  # the sample's escaped rows are kept
    assert all("\\" not in t and (" 't " in t or " 're " in t) for t in recovered)
