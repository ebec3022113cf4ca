"""The data rulebook: one set of rules, and one verdict, for every entry point.

The strict loader (``mmaux train``), ``mmaux validate``, the Great Expectations stage and the
importers all judge data with :func:`check_manifest` (or its parts). Every rule has a stable
key (:data:`RULES`); a finding (:class:`RowProblem`) names the file, line, post id, problem,
rule and severity.

* File and row rules are always errors: bytes that are not UTF-8, rows that do not parse,
  fields, blank id, empty, invisible-only or over-long text, unknown label or split, image
  path outside the data root (symlinks followed), image missing, over the pixel limit (read
  from the header before decoding) or undecodable.
* Data set rules take their severity (``error | warn | off``) from ``data.rules``: duplicate
  ids (always an error), leakage across splits (identical text+image pairs, identical texts
  with conflicting labels, identical texts, byte-identical images) and the class balance of
  the train split. They look only at rows that pass the row rules.

An error rejects its row (a leaked copy outside the earliest split, train < val < test, is
the row rejected); a warning keeps the row and is reported; ``off`` is not checked.
"""

from __future__ import annotations

import csv
import io
import json
import unicodedata
from collections import defaultdict
from collections.abc import Iterator, Sequence
from dataclasses import dataclass, field
from pathlib import Path, PurePosixPath
from typing import Any

from mmaux.config import DataRulesConfig, Severity
from mmaux.data.images import ImageCheck, file_digest, image_check

SPLITS = ("train", "val", "test")
REQUIRED = ("id", "text", "image", "label", "split")
LEAK_KINDS = ("pairs", "conflicting_texts", "texts", "images")


@dataclass(frozen=True)
class Rule:
    """One rule of the rulebook; ``text`` is formatted with the rules' settings."""

    key: str
    text: str

    def describe(self, rules: DataRulesConfig, labels: Sequence[str] = ()) -> str:
        return self.text.format(**rules.model_dump(), labels=", ".join(labels))


RULES: tuple[Rule, ...] = (
    Rule("encoding", "manifest bytes must be UTF-8"),
    Rule("parse", "every row must be a JSON object (or a CSV record)"),
    Rule("fields", "rows have string id, text, image, label, split (meta: an object), no others"),
    Rule("id", "ids must not be blank"),
    Rule("text_empty", "text must not be empty"),
    Rule("text_invisible", "text must have a visible character (not only zero-width/format)"),
    Rule("text_length", "text must be at most {max_text_chars} characters"),
    Rule("label", "labels must be one of {labels}"),
    Rule("split", "splits must be one of train, val, test"),
    Rule("image_path", "image paths must be relative and stay inside the data root"),
    Rule("image_exists", "image files must exist"),
    Rule("image_pixels", "images must have at most {max_image_pixels:,} pixels"),
    Rule("image_decodes", "image files must decode"),
    Rule("duplicate_id", "ids must be unique"),
    Rule("leakage_pairs", "no post (same text and image) may be in two splits"),
    Rule("leakage_conflicting_texts", "no text may be in two splits with different labels"),
    Rule("leakage_texts", "no text may be in two splits"),
    Rule("leakage_images", "no image (byte-identical) may be in two splits"),
    Rule(
        "class_balance",
        "each label must be {min_class_fraction:.0%}-{max_class_fraction:.0%} of the train split",
    ),
    Rule("rows", "the manifest must have at least one usable row"),
)
RULE_ORDER = {r.key: i for i, r in enumerate(RULES)}


def severity(rule: str, rules: DataRulesConfig) -> Severity:
    """The configured severity of a rule (file and row rules are always errors)."""
    if rule.startswith("leakage_"):
        return getattr(rules.leakage, rule.removeprefix("leakage_"))
    if rule == "class_balance":
        return rules.class_balance
    return "error"


@dataclass(frozen=True)
class RowProblem:
    """One finding: where (file, line, post id), what, which rule and how bad."""

    file: str
    line: int | None
    post_id: str | None
    problem: str
    rule: str = ""
    severity: str = "error"

    def __str__(self) -> str:
        where = self.file if self.line is None else f"{self.file}:{self.line}"
        who = f" (id={self.post_id})" if self.post_id is not None else ""
        return f"{where}{who}: {self.problem}"


# ----------------------------------------------------------------------------- reading


@dataclass(frozen=True)
class RawRow:
    """A non-blank manifest row: parsed, or ``None`` with the file rule that refused it."""

    line: int
    row: dict[str, Any] | None
    rule: str | None = None
    problem: str | None = None


_BOM = "\ufeff"


def _bad_bytes(text: str) -> str | None:
    """Describe the first undecodable byte of a ``surrogateescape``-decoded line (or a lone
    surrogate, which is not Unicode text either), or ``None``."""
    try:
        text.encode("utf-8")
    except UnicodeEncodeError as err:
        ch, col = text[err.start], err.start + 1
        if "\udc80" <= ch <= "\udcff":
            return f"bytes are not UTF-8 (0x{ord(ch) - 0xDC00:02x} at column {col})"
        return f"lone surrogate U+{ord(ch):04X} at column {col}: not Unicode text"
    return None


def _object_row(line: int, row: Any) -> RawRow:
    if not isinstance(row, dict):
        return RawRow(line, None, "parse", f"row is a JSON {type(row).__name__}, not an object")
    try:  # a "\ud800" escape parses, but is no character
        json.dumps(row, ensure_ascii=False).encode("utf-8")
    except UnicodeEncodeError as err:
        problem = f"a JSON string holds a lone surrogate (U+{ord(err.object[err.start]):04X})"
        return RawRow(line, None, "encoding", problem + ": not Unicode text")
    return RawRow(line, row)


def _jsonl_rows(path: Path) -> Iterator[RawRow]:
    with path.open("rb") as fh:
        for line, raw in enumerate(fh, start=1):
            text = raw.decode("utf-8", errors="surrogateescape")
            if line == 1:
                text = text.removeprefix(_BOM)
            bad = _bad_bytes(text)
            if bad:
                yield RawRow(line, None, "encoding", bad)
                continue
            if not text.strip():
                continue
            try:
                row = json.loads(text)
            except json.JSONDecodeError as err:
                yield RawRow(line, None, "parse", f"not valid JSON ({err.msg})")
                continue
            yield _object_row(line, row)


def _csv_rows(path: Path) -> Iterator[RawRow]:
    text = path.read_bytes().decode("utf-8", errors="surrogateescape").removeprefix(_BOM)
    lines = io.StringIO(text, newline="").readlines()
    bad_lines = {n: p for n, raw in enumerate(lines, start=1) if (p := _bad_bytes(raw))}
    # A long text must meet the text-length rule, not csv's 128 KiB field limit.
    csv.field_size_limit(max(csv.field_size_limit(), (1 << 31) - 1))
    reader = csv.reader(iter(lines))
    header = next(reader, None)
    if header is None:
        return
    if bad_lines.get(1):
        yield RawRow(1, None, "encoding", f"header: {bad_lines[1]}")
    while True:
        start = reader.line_num + 1
        try:
            record = next(reader)
        except StopIteration:
            return
        except csv.Error as err:
            yield RawRow(start, None, "parse", f"not a valid CSV record ({err})")
            continue
        if not any(v.strip() for v in record):
            continue
        bad = [n for n in range(start, reader.line_num + 1) if n in bad_lines]
        if bad:
            where = "" if bad[0] == start else f" on line {bad[0]}"
            yield RawRow(start, None, "encoding", bad_lines[bad[0]] + where)
            continue
        if len(record) > len(header):
            yield RawRow(start, None, "parse", "row has more fields than the header")
            continue
        row: dict[str, Any] = dict(zip(header, record, strict=False))
        meta = row.pop("meta", "")
        if meta:
            try:
                row["meta"] = json.loads(meta)
            except json.JSONDecodeError:
                yield RawRow(start, None, "parse", "meta is not valid JSON")
                continue
        yield RawRow(start, row)


def read_rows(path: Path) -> Iterator[RawRow]:
    """Every non-blank row of a ``.jsonl`` or ``.csv`` manifest, never raising on bad bytes
    or syntax: those rows come back with the ``encoding`` or ``parse`` rule and a problem."""
    path = Path(path)
    yield from _csv_rows(path) if path.suffix.lower() == ".csv" else _jsonl_rows(path)


# ----------------------------------------------------------------------------- row rules

# Letters and marks that render as nothing (Hangul fillers, braille blank, combining
# grapheme joiner, Khmer inherent vowels), on top of separators, controls and format chars.
_BLANK = frozenset("\u034f\u115f\u1160\u17b4\u17b5\u2800\u3164\uffa0")


def invisible(ch: str) -> bool:
    """Whether a character shows nothing: space, control, zero-width/format (U+200B-U+200D,
    U+2060, U+FEFF, ...), variation selectors or a known blank letter."""
    cat = unicodedata.category(ch)
    code = ord(ch)
    return (
        cat[0] == "Z"
        or cat in ("Cc", "Cf", "Cs")
        or ch.isspace()
        or ch in _BLANK
        or 0xFE00 <= code <= 0xFE0F
        or 0xE0100 <= code <= 0xE01EF
    )


def text_problems(text: str, rules: DataRulesConfig) -> dict[str, str]:
    """Problems of a post text by rule: empty, invisible-only, too long."""
    out: dict[str, str] = {}
    if not text.strip():
        out["text_empty"] = "empty text"
    elif not any(not invisible(ch) for ch in text):
        codes = sorted({f"U+{ord(ch):04X}" for ch in text})
        shown = ", ".join(codes[:4]) + (", ..." if len(codes) > 4 else "")
        out["text_invisible"] = f"text has no visible character (only {shown})"
    if len(text) > rules.max_text_chars:
        out["text_length"] = (
            f"text is {len(text):,} characters (limit {rules.max_text_chars:,}: "
            "data.rules.max_text_chars)"
        )
    return out


def post_problems(
    post_id: str,
    text: str,
    label: str,
    split: str | None,
    labels: Sequence[str],
    rules: DataRulesConfig,
) -> dict[str, str]:
    """Problems of a post's id, text, label and split (``split=None``: not assigned yet)."""
    out: dict[str, str] = {}
    if not post_id.strip():
        out["id"] = "empty id"
    out.update(text_problems(text, rules))
    if label not in labels:
        out["label"] = f"unknown label {label!r} (expected one of {sorted(labels)})"
    if split is not None and split not in SPLITS:
        out["split"] = f"unknown split {split!r} (expected one of {list(SPLITS)})"
    return out


def resolve_image(root: Path, rel: str) -> Path | None:
    """``root/rel`` resolved (symlinks followed), or ``None`` if it is absolute, blank or
    leaves the root."""
    norm = rel.replace("\\", "/")
    if not norm.strip() or "\0" in norm or norm.startswith("/") or (len(rel) > 1 and rel[1] == ":"):
        return None
    pure = PurePosixPath(norm)
    if pure.is_absolute():
        return None
    full = (Path(root) / pure).resolve()
    return full if full.is_relative_to(Path(root).resolve()) else None


def image_path_problem(rel: str) -> str:
    return "empty image path" if not rel.strip() else f"image path {rel!r} leaves the data root"


def image_file_problem(
    path: Path, rules: DataRulesConfig, check: ImageCheck = "decode"
) -> tuple[str, str] | None:
    """``(rule, problem)`` for an image file: ``image_exists``, ``image_pixels`` (header size
    against ``max_image_pixels``, before decoding) or ``image_decodes``; ``None`` if fine."""
    return image_check(path, check, rules.max_image_pixels)


def _unreadable(row: dict[str, Any]) -> str | None:
    """Missing or non-string required fields: the row's other rules cannot run."""
    missing = [k for k in REQUIRED if row.get(k) is None]
    if missing:
        return f"missing field(s): {', '.join(missing)}"
    for k in REQUIRED:
        if not isinstance(row[k], str):
            return f"field {k!r} must be a string, got {type(row[k]).__name__}"
    return None


def _fields_problem(row: dict[str, Any]) -> str | None:
    unknown = sorted(set(row) - set(REQUIRED) - {"meta"})
    if unknown:
        return f"unknown field(s): {', '.join(unknown)}"
    if "meta" in row and not isinstance(row["meta"], dict):
        return "meta must be an object"
    return None


@dataclass
class _ImageFacts:
    found: tuple[str, str] | None
    digest: str | None


class _Images:
    """Image facts per resolved path, computed once per check."""

    def __init__(self, rules: DataRulesConfig, check: ImageCheck, digests: bool):
        self.rules, self.check, self.digests = rules, check, digests
        self._facts: dict[Path, _ImageFacts] = {}

    def facts(self, full: Path) -> _ImageFacts:
        if full not in self._facts:
            found = image_file_problem(full, self.rules, self.check)
            digest = None
            if self.digests and found is None and self.check != "none":
                digest = file_digest(full)
            self._facts[full] = _ImageFacts(found, digest)
        return self._facts[full]


# ----------------------------------------------------------------------------- leakage


def text_key(text: str) -> str:
    """The text that leakage compares: NFKC, casefolded, punctuation and invisible characters
    dropped, spacing collapsed (punctuation kept when a text has nothing else)."""
    norm = unicodedata.normalize("NFKC", text).casefold()
    plain = "".join(" " if invisible(c) or unicodedata.category(c)[0] == "P" else c for c in norm)
    key = " ".join(plain.split())
    return key or " ".join("".join(" " if invisible(c) else c for c in norm).split())


@dataclass(frozen=True)
class LeakEntry:
    """A row that leakage looks at (one that passed the row rules)."""

    line: int
    post_id: str
    text: str
    label: str
    split: str
    image_digest: str | None


@dataclass
class Leakage:
    """Leakage across splits: groups found per kind and each leaked copy's problems."""

    groups: dict[str, int] = field(default_factory=dict)
    problems: dict[int, dict[str, str]] = field(default_factory=dict)  # entry index -> rule


def _ref(e: LeakEntry) -> str:
    return f"id={e.post_id} ({e.split}, line {e.line})"


def _copy_problem(kind: str, first: LeakEntry, other: LeakEntry, row: LeakEntry) -> str:
    if kind == "pairs":
        return f"same text and image as {_ref(first)}"
    if kind == "conflicting_texts":
        return f"same text as {_ref(other)} with label {other.label!r} (this row: {row.label!r})"
    if kind == "texts":
        return f"same text as {_ref(first)}"
    return f"byte-identical image to {_ref(first)}"


def find_leakage(entries: Sequence[LeakEntry], rules: DataRulesConfig) -> Leakage:
    """Groups of rows spread over two or more splits, for every kind not ``off``.

    In each group the rows of its earliest split (train < val < test) are the originals;
    every row in a later split is a leaked copy and gets the kind's problem (for
    ``conflicting_texts``, only the copies whose label differs from a row in another split).
    """
    texts = [text_key(e.text) for e in entries]
    keys: dict[str, list[Any]] = {
        "pairs": [
            (t, e.image_digest) if e.image_digest else None
            for t, e in zip(texts, entries, strict=True)
        ],
        "conflicting_texts": list(texts),
        "texts": list(texts),
        "images": [e.image_digest for e in entries],
    }
    out = Leakage()
    order = {s: i for i, s in enumerate(SPLITS)}
    for kind in LEAK_KINDS:
        if getattr(rules.leakage, kind) == "off":
            continue
        groups: dict[Any, list[int]] = defaultdict(list)
        for i, key in enumerate(keys[kind]):
            if key is not None:
                groups[key].append(i)
        out.groups[kind] = 0
        for members in groups.values():
            rows = [entries[i] for i in members]
            earliest = min((e.split for e in rows), key=order.__getitem__)
            first = next(e for e in rows if e.split == earliest)
            copies = []
            for i, e in zip(members, rows, strict=True):
                if e.split == earliest:
                    continue
                other = first
                if kind == "conflicting_texts":
                    clash = [o for o in rows if o.split != e.split and o.label != e.label]
                    if not clash:
                        continue
                    other = clash[0]
                copies.append((i, _copy_problem(kind, first, other, e)))
            if copies:
                out.groups[kind] += 1
            for i, problem in copies:
                out.problems.setdefault(i, {})[f"leakage_{kind}"] = problem
    return out


# ----------------------------------------------------------------------------- verdict


@dataclass
class RowVerdict:
    """One manifest row and its problems by rule (errors and warnings)."""

    line: int
    post_id: str | None
    row: dict[str, Any] | None
    problems: dict[str, str] = field(default_factory=dict)


@dataclass
class DataVerdict:
    """The rulebook's verdict on a manifest: every row, data set findings, leakage counts."""

    file: Path
    root: Path
    labels: list[str]
    rules: DataRulesConfig
    rows: list[RowVerdict]
    dataset: list[RowProblem] = field(default_factory=list)
    leak_groups: dict[str, int] = field(default_factory=dict)

    def _finding(self, rv: RowVerdict, rule: str) -> RowProblem:
        return RowProblem(
            str(self.file), rv.line, rv.post_id, rv.problems[rule], rule, severity(rule, self.rules)
        )

    def is_error(self, rule: str) -> bool:
        return severity(rule, self.rules) == "error"

    def row_ok(self, rv: RowVerdict) -> bool:
        return not any(self.is_error(r) for r in rv.problems)

    def findings(self) -> list[RowProblem]:
        """Every finding: row findings in line and rule order, then the data set's."""
        out = [
            self._finding(rv, rule)
            for rv in self.rows
            for rule in sorted(rv.problems, key=RULE_ORDER.__getitem__)
        ]
        return out + list(self.dataset)

    def errors(self) -> list[RowProblem]:
        return [f for f in self.findings() if f.severity == "error"]

    def warnings(self) -> list[RowProblem]:
        return [f for f in self.findings() if f.severity == "warn"]

    def accepted(self) -> list[RowVerdict]:
        """Rows without an error (warnings allowed)."""
        return [rv for rv in self.rows if self.row_ok(rv)]

    def rejected(self) -> list[RowProblem]:
        """One problem per row with errors (several joined by ``; ``)."""
        out = []
        for rv in self.rows:
            rules = sorted((r for r in rv.problems if self.is_error(r)), key=RULE_ORDER.get)
            if rules:
                problem = "; ".join(rv.problems[r] for r in rules)
                out.append(
                    RowProblem(str(self.file), rv.line, rv.post_id, problem, ",".join(rules))
                )
        return out

    def dataset_errors(self) -> list[RowProblem]:
        return [f for f in self.dataset if f.severity == "error"]


def _class_balance(verdict: DataVerdict) -> list[RowProblem]:
    rules = verdict.rules
    if rules.class_balance == "off":
        return []
    counts = {lab: 0 for lab in verdict.labels}
    for rv in verdict.accepted():
        assert rv.row is not None
        if rv.row["split"] == "train":
            counts[rv.row["label"]] += 1
    total = sum(counts.values())
    lo, hi = rules.min_class_fraction, rules.max_class_fraction
    out = []
    for lab, n in counts.items():
        frac = n / total if total else 0.0
        if not lo <= frac <= hi:
            problem = (
                f"label {lab!r} is {frac:.1%} of train ({n} of {total}); "
                f"allowed {lo:.0%}-{hi:.0%} (data.rules.min/max_class_fraction)"
            )
            out.append(
                RowProblem(
                    str(verdict.file), None, None, problem, "class_balance", rules.class_balance
                )
            )
    return out


def check_manifest(
    path: str | Path,
    root: str | Path,
    labels: Sequence[str],
    rules: DataRulesConfig | None = None,
    check_images: ImageCheck = "decode",
) -> DataVerdict:
    """Judge every row of a manifest and the data set as a whole; never raises on bad data.

    ``root`` is the data root image paths are relative to; ``labels`` the declared label set.
    """
    path, root = Path(path), Path(root)
    rules = rules or DataRulesConfig()
    if not path.is_file():
        raise FileNotFoundError(f"{path}: manifest not found (run `mmaux synth` or an importer)")
    label_set = set(labels)
    digests = rules.leakage.pairs != "off" or rules.leakage.images != "off"
    images = _Images(rules, check_images, digests)
    verdict = DataVerdict(path, root, list(labels), rules, rows=[])
    first_line: dict[str, int] = {}
    entries: list[LeakEntry] = []
    entry_rows: list[RowVerdict] = []
    for raw in read_rows(path):
        row = raw.row
        post_id = row.get("id") if row is not None and isinstance(row.get("id"), str) else None
        rv = RowVerdict(raw.line, post_id, row)
        verdict.rows.append(rv)
        if row is None:
            assert raw.rule is not None and raw.problem is not None
            rv.problems[raw.rule] = raw.problem
            continue
        unreadable = _unreadable(row)
        if unreadable is not None:
            rv.problems["fields"] = unreadable
            continue
        if (fields := _fields_problem(row)) is not None:
            rv.problems["fields"] = fields
        rv.problems.update(
            post_problems(row["id"], row["text"], row["label"], row["split"], label_set, rules)
        )
        digest = None
        full = resolve_image(root, row["image"])
        if full is None:
            rv.problems["image_path"] = image_path_problem(row["image"])
        else:
            facts = images.facts(full)
            if facts.found is not None:
                rule, problem = facts.found
                rv.problems[rule] = f"{problem}: {row['image']}"
            digest = facts.digest
        if rv.problems:
            continue
        if post_id in first_line:
            rv.problems["duplicate_id"] = f"duplicate id (first seen on line {first_line[post_id]})"
            continue
        assert post_id is not None
        first_line[post_id] = raw.line
        entries.append(
            LeakEntry(raw.line, post_id, row["text"], row["label"], row["split"], digest)
        )
        entry_rows.append(rv)
    leakage = find_leakage(entries, rules)
    for i, problems in leakage.problems.items():
        entry_rows[i].problems.update(problems)
    verdict.leak_groups = leakage.groups
    verdict.dataset = _class_balance(verdict)
    if not verdict.accepted():
        verdict.dataset.append(RowProblem(str(path), None, None, "no usable rows", "rows", "error"))
    return verdict


def leak_notes(verdict: DataVerdict, show: int = 3) -> list[str]:
    """One line per leakage kind found: severity, group count and a few examples."""
    notes = []
    findings = verdict.findings()
    for kind in LEAK_KINDS:
        n = verdict.leak_groups.get(kind, 0)
        if not n:
            continue
        rule = f"leakage_{kind}"
        found = [f for f in findings if f.rule == rule]
        examples = "; ".join(f"id={f.post_id}: {f.problem}" for f in found[:show])
        notes.append(
            f"leakage across splits ({severity(rule, verdict.rules)}, data.rules.leakage."
            f"{kind}): {n} group(s) of {kind.replace('_', ' ')}, {len(found)} row(s), "
            f"e.g. {examples}"
        )
    return notes
