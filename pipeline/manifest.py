"""Source manifest: official AudioSet / VGGSound clip lists → ROOT/manifest/source.parquet (one row per clip).

Inputs are the official files (segment CSVs, a label index, retrieval lists), read from paths or downloaded from
the URLs in the dataset definition (`tgdp.manifests/<dataset>.yaml`). Every input is hashed (sha256 and git blob)
and compared with the definition; its data-row count is compared with the definition (or with AudioSet's
`# num_segs=` header line). A mismatch is a warning, and the count actually read is recorded in source.meta.json,
because public copies differ (Excel-mangled ids, a VGGSound copy with 199,467 rows) and the funnel must start from
what was really read.

Formats (docs/DATA.md):
- `audioset`: `YTID, start, end, "mid1,mid2"`; `#` header lines before the first row; a space after each comma.
- `vggsound`: `ytid,start,label,train|test`, no header, labels with commas quoted; clip = [start, start+10).
- `vgg_list`: `ytid_SSSSSS.mp4,label` (VGGSound test.csv), no header.
- `label_index`: `index,mid,display_name` (AudioSet mids; VGGSound `vgg_N` with ',' in names replaced by '_').
- `cavmae_json`: `{"data": [{"video_id": ...}]}` retrieval lists.

A malformed row is never dropped silently: it becomes a `ManifestIssue(file, line, kind, text)`; by default
`ManifestError` is raised listing them, with `skip_bad` they go to ROOT/manifest/rejected.parquet.
"""

from __future__ import annotations

import csv
import hashlib
import json
import logging
import math
import os
import re
import urllib.error
import urllib.request
from collections import Counter
from collections.abc import Callable, Iterable, Sequence
from dataclasses import dataclass, field
from importlib import resources
from pathlib import Path
from typing import Any, Literal

import numpy as np
import pyarrow as pa
import pyarrow.compute as pc
import pyarrow.parquet as pq
import yaml
from pydantic import Field

from tgdp.config import StrictConfig
from tgdp.core.atomic import atomic_path, atomic_write
from tgdp.core.errors import TgdpError
from tgdp.pipeline.layout import manifest_path
from tgdp.pipeline.ledger import event_positions, mask
from tgdp.store.format import video_id_column

__all__ = [
    "DATASETS",
    "EVAL_SPLITS",
    "SPLITS",
    "TRAIN_SPLITS",
    "InputSpec",
    "ManifestConfig",
    "ManifestError",
    "ManifestIssue",
    "ManifestResult",
    "ParsedColumns",
    "ParsedFile",
    "SegmentRow",
    "SOURCE_SCHEMA",
    "build_manifest",
    "file_hashes",
    "format_audioset_csv",
    "format_audioset_row",
    "format_vggsound_row",
    "infer_split",
    "load_definition",
    "parse_input_spec",
    "parse_label_index",
    "parse_retrieval_ids",
    "parse_segments",
    "parse_segments_columns",
    "parse_segments_text",
    "sniff_format",
    "check_dropped_clips",
    "write_manifest",
]

log = logging.getLogger(__name__)

DATASETS = ("audioset", "vggsound")
SPLITS = ("as_bal_train", "as_unbal_train", "as_eval", "vgg_train", "vgg_test", "synth")
TRAIN_SPLITS = frozenset({"as_bal_train", "as_unbal_train", "vgg_train"})
EVAL_SPLITS = frozenset({"as_eval", "vgg_test"})
_DATASET_SPLITS = {
    "audioset": {"as_bal_train", "as_unbal_train", "as_eval", "synth"},
    "vggsound": {"vgg_train", "vgg_test", "synth"},
}
_VGG_CLIP_S = 10.0
_YTID = re.compile(r"[A-Za-z0-9_-]{11}")
_TIME = re.compile(r"\d+(\.\d+)?")
_INT = re.compile(r"\d+")
_VGG_LIST_ID = re.compile(r"([A-Za-z0-9_-]{11})_(\d{6})(\.mp4)?")
_NUM_SEGS = re.compile(r"num_segs=(\d+)")
# An AudioSet header line is `#` then a space (`# Segments csv created ...`). Excel's error values (`#NAME?`,
# `#VALUE!`, ...) start with `#` and a letter: they are mangled data rows, never comments.
_HEADER_LINE = re.compile(r"#(\s|$)")

SOURCE_SCHEMA = pa.schema(
    [
        ("clip_id", pa.string()),
        ("video_id", pa.string()),
        ("dataset", pa.string()),
        ("split", pa.string()),
        ("ytid", pa.string()),
        ("start_s", pa.float64()),
        ("end_s", pa.float64()),
        ("labels", pa.list_(pa.string())),
        ("leak_eval_overlap", pa.bool_()),
        ("source_file", pa.string()),
        ("source_line", pa.int32()),
    ]
)
_REJECTED_SCHEMA = pa.schema(
    [("file", pa.string()), ("line", pa.int32()), ("kind", pa.string()), ("text", pa.string())]
)


@dataclass(frozen=True)
class ManifestIssue:
    """A row that could not be used: `kind` is one of column_count, bad_ytid, bad_timestamp, end_before_start,
    bad_split, no_labels, unknown_label, duplicate_clip_id."""

    file: str
    line: int
    kind: str
    text: str

    def __str__(self) -> str:
        return f"{self.file}:{self.line}: {self.kind}: {self.text}"


class ManifestError(TgdpError, ValueError):
    """The inputs could not be turned into a manifest; `issues` lists bad rows with file and line."""

    def __init__(self, message: str, issues: Sequence[ManifestIssue] = ()) -> None:
        self.issues = list(issues)
        if self.issues:
            shown = "\n  ".join(str(i) for i in self.issues[:20])
            more = f"\n  ... and {len(self.issues) - 20} more" if len(self.issues) > 20 else ""
            message = f"{message}\n  {shown}{more}"
        super().__init__(message)


@dataclass(frozen=True)
class SegmentRow:
    """One clip as read from a list file; `split` is None when the file's split applies."""

    ytid: str
    start_s: float
    end_s: float
    labels: tuple[str, ...]
    line: int
    split: str | None = None


@dataclass
class ParsedFile:
    rows: list[SegmentRow] = field(default_factory=list)
    issues: list[ManifestIssue] = field(default_factory=list)
    data_lines: int = 0
    header_rows: int | None = None  # AudioSet `# num_segs=N`


# ---------------------------------------------------------------------------------------------------- formatting


def _fmt_time(t: float) -> str:
    return f"{t:.3f}"


def format_audioset_row(ytid: str, start_s: float, end_s: float, labels: Iterable[str]) -> str:
    """One AudioSet data line (no newline): `YTID, 30.000, 40.000, "/m/a,/m/b"`."""
    return f'{ytid}, {_fmt_time(start_s)}, {_fmt_time(end_s)}, "{",".join(labels)}"'


def format_audioset_csv(rows: Iterable[tuple[str, float, float, Sequence[str]]], created: str) -> str:
    """A whole AudioSet segment CSV with its three `#` header lines (`created` as in `datetime.ctime()`)."""
    rows = list(rows)
    mids = {m for r in rows for m in r[3]}
    n_pos = sum(len(r[3]) for r in rows)
    n_ytids = len({r[0] for r in rows})
    lines = [
        f"# Segments csv created {created}",
        f"# num_ytids={n_ytids}, num_segs={len(rows)}, num_unique_labels={len(mids)}, num_positive_labels={n_pos}",
        "# YTID, start_seconds, end_seconds, positive_labels",
    ]
    lines += [format_audioset_row(*r) for r in rows]
    return "\n".join(lines) + "\n"


def format_vggsound_row(ytid: str, start_s: int, label: str, split: str) -> str:
    """One vggsound.csv line: `ytid,start,label,train|test` (label quoted by csv rules when it has a comma)."""
    out: list[str] = []

    class _Sink:
        def write(self, s: str) -> None:
            out.append(s)

    csv.writer(_Sink(), lineterminator="").writerow([ytid, int(start_s), label, split])
    return "".join(out)


# ------------------------------------------------------------------------------------------------------- parsing


def _split_fields(line: str, skip_space: bool) -> list[str]:
    return next(csv.reader((line,), skipinitialspace=skip_space))


def _parse_time(text: str) -> float | None:
    text = text.strip()
    if not _TIME.fullmatch(text):
        return None
    value = float(text)
    return value if math.isfinite(value) else None


def _audioset_line(fields: list[str], lineno: int, file: str, raw: str) -> SegmentRow | ManifestIssue:
    if len(fields) != 4:
        return ManifestIssue(file, lineno, "column_count", f"expected 4 columns, got {len(fields)}: {raw[:200]}")
    ytid = fields[0].strip()
    if not _YTID.fullmatch(ytid):
        return ManifestIssue(file, lineno, "bad_ytid", f"{ytid[:40]!r} is not an 11-character YouTube id")
    start, end = _parse_time(fields[1]), _parse_time(fields[2])
    if start is None or end is None:
        return ManifestIssue(file, lineno, "bad_timestamp", f"start/end {fields[1]!r}, {fields[2]!r}")
    if end <= start:
        return ManifestIssue(file, lineno, "end_before_start", f"end {end} <= start {start}")
    labels = tuple(m.strip() for m in fields[3].split(",") if m.strip())
    if not labels:
        return ManifestIssue(file, lineno, "no_labels", raw[:200])
    return SegmentRow(ytid, start, end, labels, lineno)


def _vggsound_line(fields: list[str], lineno: int, file: str, raw: str) -> SegmentRow | ManifestIssue:
    if len(fields) != 4:
        return ManifestIssue(file, lineno, "column_count", f"expected 4 columns, got {len(fields)}: {raw[:200]}")
    ytid, start_text, label, split = (f.strip() for f in fields)
    if not _YTID.fullmatch(ytid):
        return ManifestIssue(file, lineno, "bad_ytid", f"{ytid[:40]!r} is not an 11-character YouTube id")
    if not _INT.fullmatch(start_text):
        return ManifestIssue(file, lineno, "bad_timestamp", f"start {start_text!r} is not whole seconds")
    if split not in ("train", "test"):
        return ManifestIssue(file, lineno, "bad_split", f"split {split!r} is not train|test")
    if not label:
        return ManifestIssue(file, lineno, "no_labels", raw[:200])
    start = float(int(start_text))
    return SegmentRow(ytid, start, start + _VGG_CLIP_S, (label,), lineno, f"vgg_{split}")


def _vgg_list_line(fields: list[str], lineno: int, file: str, raw: str) -> SegmentRow | ManifestIssue:
    if len(fields) != 2:
        return ManifestIssue(file, lineno, "column_count", f"expected 2 columns, got {len(fields)}: {raw[:200]}")
    m = _VGG_LIST_ID.fullmatch(fields[0].strip())
    if m is None:
        return ManifestIssue(file, lineno, "bad_ytid", f"{fields[0][:40]!r} is not ytid_SSSSSS.mp4")
    label = fields[1].strip()
    if not label:
        return ManifestIssue(file, lineno, "no_labels", raw[:200])
    start = float(int(m.group(2)))
    return SegmentRow(m.group(1), start, start + _VGG_CLIP_S, (label,), lineno)


_LINE_PARSERS = {"audioset": (_audioset_line, True), "vggsound": (_vggsound_line, False)}
_LINE_PARSERS["vgg_list"] = (_vgg_list_line, False)


def parse_segments_text(text: str, fmt: str, file: str = "<text>") -> ParsedFile:
    """Parse a segment list (`fmt` = audioset | vggsound | vgg_list) given as text, BOM and CRLF tolerated.

    `#` lines are AudioSet header lines only before the first data row and only when `#` is followed by a space;
    any other `#` line (Excel's `#NAME?` for an id starting with '-', wherever it is) is a `bad_ytid` issue, so it
    never vanishes as a comment. Blank lines are ignored.
    """
    if fmt not in _LINE_PARSERS:
        raise ValueError(f"unknown segment format {fmt!r}; expected one of {sorted(_LINE_PARSERS)}")
    parse_line, skip_space = _LINE_PARSERS[fmt]
    out = ParsedFile()
    text = text.removeprefix("\ufeff")
    in_header = True
    # split on \n only: str.splitlines() would also break on \x0b, \x1c, \u2028 and shift line numbers
    for lineno, raw in enumerate(text.split("\n"), start=1):
        line = raw.rstrip("\r")
        if not line.strip():
            continue
        if in_header and _HEADER_LINE.match(line):
            m = _NUM_SEGS.search(line)
            if m:
                out.header_rows = int(m.group(1))
            continue
        in_header = False
        out.data_lines += 1
        result = _parse_data_line(line, lineno, file, parse_line, skip_space)
        (out.issues if isinstance(result, ManifestIssue) else out.rows).append(result)
    return out


def _parse_data_line(
    line: str, lineno: int, file: str, parse_line: Callable[..., Any], skip_space: bool
) -> SegmentRow | ManifestIssue:
    """One non-blank line after the header: a '#' line is an issue (`_hash_row_issue`), else split and parsed."""
    if line.startswith("#"):
        return _hash_row_issue(line, lineno, file)
    try:
        fields = _split_fields(line, skip_space)
    except csv.Error as exc:
        return ManifestIssue(file, lineno, "column_count", f"{exc}: {line[:200]}")
    return parse_line(fields, lineno, file, line)


def _hash_row_issue(line: str, lineno: int, file: str) -> ManifestIssue:
    """A '#' line after the header: Excel's `#NAME?` for an id starting with '-', never a silent comment."""
    first = line.split(",", 1)[0].strip()
    return ManifestIssue(file, lineno, "bad_ytid", f"{first[:40]!r} (a '#' row after the header)")


def _read_text(path: Path) -> str:
    return Path(path).read_bytes().decode("utf-8-sig", errors="replace")


def sniff_format(path: Path, dataset: str) -> str:
    """audioset for AudioSet; for VGGSound, `vgg_list` when the first field looks like `ytid_SSSSSS.mp4`."""
    if dataset == "audioset":
        return "audioset"
    with open(path, encoding="utf-8-sig", errors="replace") as fh:
        for line in fh:
            if line.strip():
                first = line.split(",", 1)[0].strip()
                return "vgg_list" if _VGG_LIST_ID.fullmatch(first) else "vggsound"
    return "vggsound"


def parse_segments(path: Path, fmt: str) -> ParsedFile:
    """Parse a segment list file; issues name the file by its base name."""
    return parse_segments_text(_read_text(path), fmt, Path(path).name)


# Columnar parsing of large segment lists (AudioSet-2M: 2 M rows). A line matching the strict pattern of its format
# (exactly as the official files are written) is parsed in columns; every other line goes through the per-line parser
# above, so odd rows get the same verdict and message, and no row can be parsed differently by the two paths.
_MID = r"[!#-+\--~]+"  # printable ASCII without space, '"' and ','
_FAST = {
    "audioset": (
        r"^(?P<ytid>[A-Za-z0-9_-]{11}), (?P<start>\d{1,15}(?:\.\d{1,15})?), (?P<end>\d{1,15}(?:\.\d{1,15})?), "
        rf'"(?P<labels>{_MID}(?:,{_MID})*)"$'
    ),
    "vggsound": (
        r"^(?P<ytid>[A-Za-z0-9_-]{11}),(?P<start>\d{1,15}),"
        r'(?:"(?P<qlabel>[!#-~](?:[^"\x00-\x1f]*[!#-~])?)"|(?P<label>[!#-+\--~](?:[^,"\x00-\x1f]*[!#-+\--~])?)),'
        r"(?P<split>train|test)$"
    ),
}


@dataclass
class ParsedColumns:
    """A segment list as columns (row order = file order): ytid, start_s, end_s, labels (list), line, split (per-row
    split for vggsound.csv, else null), plus the issues and counts of `ParsedFile`."""

    table: pa.Table
    issues: list[ManifestIssue] = field(default_factory=list)
    data_lines: int = 0
    header_rows: int | None = None


_COLUMNS_SCHEMA = pa.schema(
    [
        ("ytid", pa.string()),
        ("start_s", pa.float64()),
        ("end_s", pa.float64()),
        ("labels", pa.list_(pa.string())),
        ("line", pa.int32()),
        ("split", pa.string()),
    ]
)


def _rows_table(rows: Sequence[SegmentRow]) -> pa.Table:
    return pa.table(
        {
            "ytid": [r.ytid for r in rows],
            "start_s": [r.start_s for r in rows],
            "end_s": [r.end_s for r in rows],
            "labels": [list(r.labels) for r in rows],
            "line": [r.line for r in rows],
            "split": [r.split for r in rows],
        },
        schema=_COLUMNS_SCHEMA,
    )


def parse_segments_columns(path: Path, fmt: str) -> ParsedColumns:
    """`parse_segments` in columns: the same rows, issues and counts, without a Python object per row."""
    file = Path(path).name
    if fmt not in _FAST:
        parsed = parse_segments(path, fmt)
        return ParsedColumns(_rows_table(parsed.rows), parsed.issues, parsed.data_lines, parsed.header_rows)
    lines = _lines(Path(path))
    # The header: everything up to the first line that is neither blank nor '#', parsed by the per-line parser.
    k = _header_end(lines)
    prefix = parse_segments_text("".join(lines.slice(0, k + 1).to_pylist()), fmt, file)
    # each line still ends with its "\n": stripping "\r\n" equals the per-line parser's rstrip("\r")
    rest = pc.utf8_rtrim(lines.slice(k + 1), characters="\r\n").cast(pa.string())
    del lines
    first_line = k + 2
    fast, cols = _fast_audioset(rest) if fmt == "audioset" else _fast_vggsound(rest)
    keep = pa.array(fast)
    table = pa.table(
        {
            "ytid": cols["ytid"].filter(keep),
            "start_s": cols["start_s"].filter(keep),
            "end_s": cols["end_s"].filter(keep),
            "labels": cols["labels"].filter(keep),
            "line": pa.array(np.flatnonzero(fast).astype(np.int32) + first_line),
            "split": cols["split"].filter(keep),
        },
        schema=_COLUMNS_SCHEMA,
    )
    slow_rows, slow_issues, slow_lines = _parse_slow_lines(rest, np.flatnonzero(~fast), first_line, fmt, file)
    if slow_rows:
        table = pa.concat_tables([table, _rows_table(slow_rows)])
        table = table.take(pc.sort_indices(table, sort_keys=[("line", "ascending")]))
    if prefix.rows:  # header lines come before every other line
        table = pa.concat_tables([_rows_table(prefix.rows), table])
    data_lines = prefix.data_lines + int(fast.sum()) + slow_lines
    return ParsedColumns(table, prefix.issues + slow_issues, data_lines, prefix.header_rows)


def _header_end(lines: pa.LargeStringArray) -> int:
    """Index of the first line that is neither blank nor '#' (len(lines) when every line is)."""
    k = 0
    while k < len(lines):
        head = lines[k].as_py().rstrip("\r\n")
        if head.strip() and not head.startswith("#"):
            break
        k += 1
    return k


def _fast_audioset(rest: pa.StringArray) -> tuple[np.ndarray, dict[str, Any]]:
    """AudioSet lines in the official layout (`_FAST`), parsed in columns: (n,) bool, which lines are; and per line
    ytid, start_s, end_s, labels, split (null) — placeholders on the other lines."""
    # a fixed layout once matched: split at ", " instead of extracting regex groups (4x faster)
    fast = mask(pc.match_substring_regex(rest, _FAST["audioset"]))
    fields = pc.split_pattern(pc.if_else(pa.array(fast), rest, 'x, 0, 0, ""'), ", ", max_splits=3)
    start = pc.list_element(fields, 1).cast(pa.float64())
    end = pc.list_element(fields, 2).cast(pa.float64())
    fast &= mask(pc.greater(end, start))
    labels = pc.split_pattern(pc.utf8_slice_codeunits(pc.list_element(fields, 3), 1, -1), ",")
    split = pa.nulls(len(rest), pa.string())
    return fast, {"ytid": pc.list_element(fields, 0), "start_s": start, "end_s": end, "labels": labels, "split": split}


def _fast_vggsound(rest: pa.StringArray) -> tuple[np.ndarray, dict[str, Any]]:
    """vggsound.csv lines in the official layout (`_FAST`), parsed in columns: (n,) bool, which lines are; and per
    line ytid, start_s, end_s (start + 10 s), labels (one), split (vgg_train | vgg_test) — nulls on the others."""
    parts = pc.extract_regex(rest, _FAST["vggsound"])
    fast = mask(pc.is_valid(parts))
    start = pc.struct_field(parts, "start").cast(pa.int64()).cast(pa.float64())
    quoted = pc.struct_field(parts, "qlabel")  # a group that did not take part comes back as ""
    label = pc.if_else(pc.greater(pc.utf8_length(quoted), 0), quoted, pc.struct_field(parts, "label"))
    labels = pa.ListArray.from_arrays(pa.array(np.arange(len(rest) + 1, dtype=np.int32)), label)
    split = pc.binary_join_element_wise("vgg_", pc.struct_field(parts, "split"), "")
    cols = {"ytid": pc.struct_field(parts, "ytid"), "start_s": start, "end_s": pc.add(start, _VGG_CLIP_S)}
    return fast, {**cols, "labels": labels, "split": split}


def _parse_slow_lines(
    rest: pa.StringArray, slow: np.ndarray, first_line: int, fmt: str, file: str
) -> tuple[list[SegmentRow], list[ManifestIssue], int]:
    """The lines at `slow` (indices into `rest`; line number = index + first_line) through the per-line parser:
    blank lines, odd spacing, bad rows, '#' lines after the header, ... → its rows, its issues, the non-blank lines."""
    parse_line, skip_space = _LINE_PARSERS[fmt]
    rows: list[SegmentRow] = []
    issues: list[ManifestIssue] = []
    data_lines = 0
    for i, line in zip(slow.tolist(), rest.take(pa.array(slow)).to_pylist(), strict=True):
        if not line.strip():
            continue
        data_lines += 1
        result = _parse_data_line(line, i + first_line, file, parse_line, skip_space)
        (issues if isinstance(result, ManifestIssue) else rows).append(result)
    return rows, issues, data_lines


def _lines(path: Path) -> pa.LargeStringArray:
    """The file's lines (as `text.split("\\n")` cuts them, each keeping its trailing "\\n") as one Arrow array over
    the file's bytes, decoded as `_read_text` decodes: a leading BOM dropped, invalid UTF-8 replaced by U+FFFD."""
    data = path.read_bytes().removeprefix(b"\xef\xbb\xbf")
    try:
        data.decode("utf-8")
    except UnicodeDecodeError:
        data = data.decode("utf-8", errors="replace").encode("utf-8")
    ends = np.flatnonzero(np.frombuffer(data, dtype=np.uint8) == 10) + 1
    offsets = np.concatenate([[0], ends, [len(data)]]).astype(np.int64)
    return pa.LargeStringArray.from_buffers(len(offsets) - 1, pa.py_buffer(offsets), pa.py_buffer(data))


def parse_label_index(path: Path) -> dict[str, str]:
    """`index,mid,display_name` → {mid: display_name}."""
    out: dict[str, str] = {}
    with open(path, encoding="utf-8-sig", newline="") as fh:
        reader = csv.reader(fh)
        header = next(reader, None)
        if header is None or [h.strip() for h in header[:3]] != ["index", "mid", "display_name"]:
            raise ManifestError(f"{path}: label index must start with the header index,mid,display_name")
        for row in reader:
            if len(row) >= 3 and row[1].strip():
                out[row[1].strip()] = row[2].strip()
    return out


def _ytid_of_video_id(video_id: str) -> str | None:
    if _YTID.fullmatch(video_id):
        return video_id
    m = _VGG_LIST_ID.fullmatch(video_id)
    return m.group(1) if m else None


def parse_retrieval_ids(path: Path) -> tuple[list[str], list[ManifestIssue]]:
    """YouTube ids in a retrieval/eval list: a CAV-MAE datafile (JSON), an AudioSet CSV or a VGGSound list."""
    path = Path(path)
    if path.suffix.lower() == ".json":
        try:
            data = json.loads(_read_text(path))
            entries = data["data"] if isinstance(data, dict) else data
            video_ids = [str(e["video_id"]) for e in entries]
        except (ValueError, KeyError, TypeError) as exc:
            raise ManifestError(f"{path}: not a CAV-MAE datafile ({{'data': [{{'video_id': ...}}]}}): {exc}") from exc
        ids, issues = [], []
        for i, vid in enumerate(video_ids):
            ytid = _ytid_of_video_id(vid)
            if ytid is None:
                issues.append(ManifestIssue(path.name, i + 1, "bad_ytid", f"entry {i}: video_id {vid!r}"))
            else:
                ids.append(ytid)
        return ids, issues
    first = ""
    with open(path, encoding="utf-8-sig", errors="replace") as fh:
        first = next((ln for ln in fh if ln.strip()), "")
    fmt = "audioset" if first.startswith("#") or ", " in first else sniff_format(path, "vggsound")
    parsed = parse_segments(path, fmt)
    return [r.ytid for r in parsed.rows], parsed.issues


# ------------------------------------------------------------------------------------------------- definitions


def load_definition(dataset: str) -> dict[str, Any]:
    """The dataset definition YAML shipped in `tgdp.manifests` (files, URLs, row counts, hashes)."""
    if dataset not in DATASETS:
        raise ManifestError(f"unknown dataset {dataset!r}; expected one of {DATASETS}")
    text = resources.files("tgdp.manifests").joinpath(f"{dataset}.yaml").read_text(encoding="utf-8")
    return yaml.safe_load(text)


def _all_entries(definition: dict[str, Any]) -> dict[str, dict[str, Any]]:
    return {**definition.get("files", {}), **(definition.get("retrieval") or {})}


def _entry_by_name(definition: dict[str, Any], name: str) -> tuple[str, dict[str, Any]] | None:
    for key, entry in _all_entries(definition).items():
        if entry.get("filename") == name:
            return key, entry
    return None


def file_hashes(path: Path) -> tuple[str, str, int]:
    """(sha256, git blob sha1, size) of a file, streamed."""
    size = os.path.getsize(path)
    sha = hashlib.sha256()
    blob = hashlib.sha1(f"blob {size}\0".encode())
    with open(path, "rb") as fh:
        for chunk in iter(lambda: fh.read(1 << 20), b""):
            sha.update(chunk)
            blob.update(chunk)
    return sha.hexdigest(), blob.hexdigest(), size


def infer_split(name: str, dataset: str) -> str | None:
    """Split from a file name; None for vggsound.csv (split per row) and for names it doesn't know."""
    stem = Path(name).name.lower()
    if dataset == "audioset":
        if "unbalanced" in stem:
            return "as_unbal_train"
        if "balanced_train" in stem:
            return "as_bal_train"
        if stem.startswith("eval") or "eval_segments" in stem:
            return "as_eval"
        if stem in ("train_segments.csv", "synth_train_segments.csv"):  # `tgdp-data synth` train list
            return "as_bal_train"
        return None
    if stem.startswith("test") or "vgg_test" in stem:
        return "vgg_test"
    if stem.startswith("train") or "vgg_train" in stem:
        return "vgg_train"
    return None


# ---------------------------------------------------------------------------------------------------- building


class ManifestConfig(StrictConfig):
    """`tgdp-data manifest` options; `csv` items are `PATH` or `PATH:split`. No csv → download the definition's."""

    dataset: Literal["audioset", "vggsound", "files"] = Field(
        description="which clip lists to read: audioset or vggsound, or files: your own media (the --dataset flag)"
    )
    csv: list[str] = Field(
        [],
        description="segment lists, PATH or PATH:split (the --csv flag); empty = download the official lists; "
        "files: at most one CSV file,id,start_s,end_s,labels,split",
    )
    labels: str | None = Field(
        None, description="label index CSV (index,mid,display_name) to check labels against (the --labels flag)"
    )
    retrieval: list[str] = Field(
        [], description="retrieval/eval lists whose ytids flag train clips as leak_eval_overlap (the --retrieval flag)"
    )
    skip_bad: bool = Field(False, description="put malformed rows in rejected.parquet instead of failing the build")
    download_timeout_s: float = Field(60.0, gt=0, description="timeout in seconds of each official-list download")
    from_dir: str | None = Field(None, description="files: the folder of media, each file a clip (the --from flag)")
    eval_fraction: float = Field(
        0.0, ge=0.0, lt=1.0, description="files: share of ids put in the eval split when the CSV gives none"
    )


@dataclass(frozen=True)
class InputSpec:
    path: Path
    split: str | None  # explicit `PATH:split`, else inferred


def parse_input_spec(item: str) -> InputSpec:
    """`PATH` or `PATH:split` (the suffix counts as a split only when it names one, so `C:\\x` paths survive)."""
    head, sep, tail = item.rpartition(":")
    if sep and tail in SPLITS:
        return InputSpec(Path(head), tail)
    return InputSpec(Path(item), None)


@dataclass
class ManifestResult:
    """What `build_manifest` wrote and counted."""

    manifest: Path
    meta: Path
    rejected: Path | None
    rows: int
    split_counts: dict[str, int]
    leak_count: int
    issues: list[ManifestIssue]
    warnings: list[str]


def _download(url: str, dest: Path, timeout: float) -> Path:
    dest.parent.mkdir(parents=True, exist_ok=True)
    try:
        with (
            atomic_path(dest) as tmp,
            urllib.request.urlopen(url, timeout=timeout) as resp,
            open(tmp, "wb") as fh,
        ):
            for chunk in iter(lambda: resp.read(1 << 20), b""):
                fh.write(chunk)
    except (urllib.error.URLError, OSError, TimeoutError) as exc:
        raise ManifestError(
            f"could not download {url} ({exc}); offline? pass the file with --csv/--labels/--retrieval PATH"
        ) from exc
    return dest


def _fetch_entry(entry: dict[str, Any], root: Path, timeout: float) -> Path:
    url = entry.get("url")
    if not url:
        raise ManifestError(f"{entry['filename']} has no download URL; pass a local copy")
    dest = Path(root) / "manifest" / "downloads" / entry["filename"]
    if dest.is_file():  # an earlier run's download; the hash check below still applies
        return dest
    log.info("downloading %s", url)
    return _download(url, dest, timeout)


def _check_input(
    path: Path, definition: dict[str, Any], role: str, actual_rows: int, header_rows: int | None, warnings: list[str]
) -> dict[str, Any]:
    sha, blob, size = file_hashes(path)
    info: dict[str, Any] = {"path": str(path), "role": role, "sha256": sha, "git_blob": blob, "bytes": size}
    match = _entry_by_name(definition, path.name)
    expected_rows, expected_from = None, None
    if match is not None:
        key, entry = match
        info["definition"] = key
        ref_sha, ref_blob = entry.get("sha256"), entry.get("git_blob")
        if ref_sha:
            info["hash_status"] = "match" if sha == ref_sha else "mismatch"
        elif ref_blob:
            info["hash_status"] = "match_git_blob" if blob == ref_blob else "mismatch"
        else:
            info["hash_status"] = "no_reference"
        if info["hash_status"] == "mismatch":
            warnings.append(
                f"{path.name}: content differs from the official file (sha256 {sha[:12]}…, git blob {blob[:12]}…; "
                f"expected {ref_sha or ref_blob}); a modified copy (Excel #NAME? ids, reformatted times)?"
            )
        expected_rows, expected_from = entry.get("rows"), "definition"
    else:
        info["hash_status"] = "no_reference"
    if header_rows is not None and expected_rows is None:
        expected_rows, expected_from = header_rows, "header"
    info.update(expected_rows=expected_rows, expected_rows_from=expected_from, actual_rows=actual_rows)
    if header_rows is not None:
        info["header_rows"] = header_rows
    if expected_rows is not None and expected_rows != actual_rows:
        warnings.append(f"{path.name}: read {actual_rows} rows, expected {expected_rows} ({expected_from})")
    return info


def _resolve_inputs(cfg: ManifestConfig, root: Path, definition: dict[str, Any]) -> tuple[list, Path | None, list]:
    if cfg.csv:
        specs = [parse_input_spec(c) for c in cfg.csv]
        labels = Path(cfg.labels) if cfg.labels else None
        retrieval = [Path(r) for r in cfg.retrieval]
    else:
        files = definition.get("files", {})
        specs = [
            InputSpec(_fetch_entry(e, root, cfg.download_timeout_s), e.get("split"))
            for e in files.values()
            if e["role"] == "segments"
        ]
        labels = Path(cfg.labels) if cfg.labels else None
        if labels is None:
            labels = next(
                (_fetch_entry(e, root, cfg.download_timeout_s) for e in files.values() if e["role"] == "labels"), None
            )
        retrieval = [Path(r) for r in cfg.retrieval] or [
            _fetch_entry(e, root, cfg.download_timeout_s)
            for e in (definition.get("retrieval") or {}).values()
            if e.get("url")
        ]
    for p in [s.path for s in specs] + ([labels] if labels else []) + retrieval:
        if not Path(p).is_file():
            raise ManifestError(f"input file not found: {p}")
    return specs, labels, retrieval


def _label_ok(label: str, known: dict[str, str], names: set[str]) -> bool:
    # AudioSet rows carry mids; VGGSound rows carry names, which the CAV-MAE index stores with ',' → '_'
    return label in known or label in names or label.replace(",", "_") in names


@dataclass
class _SegmentFiles:
    """The segment files of one build, read in input order (file k = the k-th segment file).

    inputs_meta[k]: file k's input record; parts: one table per file that supplies rows (`_COLUMNS_SCHEMA` columns
    plus source_file, file_index = k); file_issues[k]: file k's parse issues; row_issues[k]: (line, issue) pairs
    found after parsing (unknown labels, duplicate clip ids); eval_ytids: ytids of the eval lists read as reference.
    """

    inputs_meta: list[dict[str, Any]] = field(default_factory=list)
    parts: list[pa.Table] = field(default_factory=list)
    file_issues: list[list[ManifestIssue]] = field(default_factory=list)
    row_issues: dict[int, list[tuple[int, ManifestIssue]]] = field(default_factory=dict)
    eval_ytids: list[pa.Array] = field(default_factory=list)

    def issues(self) -> list[ManifestIssue]:
        """Per file: its parse issues, then its row issues in line order."""
        out: list[ManifestIssue] = []
        for k, parse_issues in enumerate(self.file_issues):
            out.extend(parse_issues)
            out.extend(i for _, i in sorted(self.row_issues.get(k, []), key=lambda t: t[0]))
        return out


def build_manifest(root: Path, cfg: ManifestConfig, force: bool = False) -> ManifestResult:
    """Read, check and join the inputs; write source.parquet, source.meta.json (and rejected.parquet).

    An input without data rows, or a result without clips, is a ManifestError. Replacing ROOT's manifest with one
    that drops clips which already have events needs `force` (their events would no longer be accounted for)."""
    root = Path(root)
    if cfg.dataset == "files":  # a folder of the user's own media, no definition (tgdp.pipeline.files)
        from tgdp.pipeline.files import build_files_manifest

        return build_files_manifest(root, cfg, force)
    definition = load_definition(cfg.dataset)
    specs, labels_path, retrieval_paths = _resolve_inputs(cfg, root, definition)
    warnings: list[str] = []
    inputs_meta: list[dict[str, Any]] = []
    known_labels = _read_label_index(labels_path, definition, inputs_meta, warnings)

    bar = _steps_bar(len(specs) + 2)
    read = _read_segment_files(specs, cfg.dataset, definition, known_labels, warnings, bar)
    inputs_meta.extend(read.inputs_meta)
    bar.set_description("ids, duplicates, leaks")
    rows, clip_id = _drop_duplicate_clips(_concat_parts(read.parts), cfg.dataset, read.row_issues)
    bar.update(1)
    retrieval_ytids, retrieval_issues = _read_retrieval_lists(retrieval_paths, definition, inputs_meta, warnings)
    issues = read.issues() + retrieval_issues
    if issues and not cfg.skip_bad:
        bar.close()
        raise ManifestError(f"{len(issues)} malformed row(s); fix the input or set manifest.skip_bad=true", issues)

    bar.set_description("sort and write")
    table, leak_count = _source_table(rows, clip_id, cfg.dataset, read.eval_ytids + retrieval_ytids)
    del rows
    bar.update(1)
    bar.close()
    if not table.num_rows:  # every row rejected (skip_bad): an empty manifest would pass for a finished build
        raise ManifestError(_no_clips(issues), issues)
    check_dropped_clips(root, table.column("clip_id"), force, warnings)
    return write_manifest(
        root, table, issues, dataset=cfg.dataset, inputs=inputs_meta, warnings=warnings, leak_count=leak_count
    )


def _no_clips(issues: list[ManifestIssue]) -> str:
    """Why a build has no clips, with the fix when the ids are not YouTube ids."""
    kinds = ", ".join(f"{k} {n}" for k, n in sorted(Counter(i.kind for i in issues).items())) or "no rows"
    hint = (
        "; for ids that are not YouTube ids use --dataset files --from DIR"
        if any(i.kind == "bad_ytid" for i in issues)
        else ""
    )
    return f"no clips: every row was rejected ({kinds}); nothing written{hint}"


def write_manifest(
    root: Path,
    table: pa.Table,
    issues: list[ManifestIssue],
    *,
    dataset: str,
    inputs: list[dict[str, Any]],
    warnings: list[str],
    leak_count: int,
) -> ManifestResult:
    """Write source.parquet (`table`), rejected.parquet (`issues`; removed when none) and source.meta.json (what the
    build read, counted and warned about), for every dataset; what was written."""
    out = manifest_path(root)
    out.parent.mkdir(parents=True, exist_ok=True)
    _write_parquet(table, out)
    rejected_path = _write_rejected(issues, out.parent / "rejected.parquet")
    split_counts = dict(sorted((r["values"], r["counts"]) for r in pc.value_counts(table.column("split")).to_pylist()))
    meta = {
        "dataset": dataset,
        "inputs": inputs,
        "rows": table.num_rows,
        "split_counts": split_counts,
        "leak_eval_overlap": leak_count,
        "rejected": len(issues),
        "rejected_by_kind": dict(sorted(Counter(i.kind for i in issues).items())),
        "warnings": warnings,
        "manifest_sha256": file_hashes(out)[0],
    }
    meta_path = out.parent / "source.meta.json"
    atomic_write(meta_path, json.dumps(meta, indent=2, sort_keys=False) + "\n")
    # Warnings are returned (and kept in source.meta.json), not logged: the CLI prints them once.
    return ManifestResult(
        manifest=out,
        meta=meta_path,
        rejected=rejected_path,
        rows=table.num_rows,
        split_counts=split_counts,
        leak_count=leak_count,
        issues=issues,
        warnings=warnings,
    )


_EVENT_STAGES = ("fetch", "validate", "shard")


def check_dropped_clips(root: Path, ids: pa.ChunkedArray | pa.Array, force: bool, warnings: list[str]) -> None:
    """Refuse (without `force`) a new manifest that leaves out clips of ROOT's current one that have events."""
    old_path = manifest_path(root)
    if not old_path.exists():
        return
    new_ids = ids.combine_chunks() if isinstance(ids, pa.ChunkedArray) else ids
    outside: set[str] = set()
    for _, orphans in event_positions(root, _EVENT_STAGES, new_ids).values():
        outside |= orphans
    if not outside:
        return
    old_ids = pq.read_table(old_path, columns=["clip_id"]).column("clip_id")
    dropped = sorted(set(pc.filter(old_ids, pc.is_in(old_ids, value_set=pa.array(sorted(outside)))).to_pylist()))
    if not dropped:
        return
    msg = f"the new manifest drops {len(dropped)} clip(s) of {old_path} that already have events (e.g. {dropped[0]})"
    if not force:
        raise ManifestError(f"{msg}; pass --force to replace it anyway")
    warnings.append(f"{msg}; replaced (--force)")


def _read_label_index(
    path: Path | None, definition: dict[str, Any], inputs_meta: list[dict[str, Any]], warnings: list[str]
) -> dict[str, str]:
    """{mid: display_name} of the label index ({} without one); its input record is appended."""
    if path is None:
        return {}
    known_labels = parse_label_index(path)
    inputs_meta.append(_check_input(path, definition, "labels", len(known_labels), None, warnings))
    return known_labels


def _read_segment_files(
    specs: Sequence[InputSpec],
    dataset: str,
    definition: dict[str, Any],
    known_labels: dict[str, str],
    warnings: list[str],
    bar: Any,
) -> _SegmentFiles:
    """Parse and check each segment file in input order: its input record, its split, its labels.

    With vggsound.csv among the inputs, a `vgg_list` file (test.csv) repeats its test rows: it is read as an eval
    list (its ytids count as eval for the leak flag), not as rows.
    """
    formats = {s.path: sniff_format(s.path, dataset) for s in specs}
    has_full_vgg = any(f == "vggsound" for f in formats.values())
    read = _SegmentFiles()
    for spec in specs:
        fmt = formats[spec.path]
        bar.set_description(f"parse {spec.path.name}")
        parsed = parse_segments_columns(spec.path, fmt)
        bar.update(1)
        file = spec.path.name
        split = spec.split or infer_split(file, dataset)
        as_reference = fmt == "vgg_list" and has_full_vgg
        role = "eval_list" if as_reference else "segments"
        if parsed.data_lines == 0:
            raise ManifestError(f"{spec.path}: no data rows (only blank, header or '#' lines); ROOT is unchanged")
        info = _check_input(spec.path, definition, role, parsed.data_lines, parsed.header_rows, warnings)
        info.update(format=fmt, split=split, rejected_rows=len(parsed.issues))
        read.inputs_meta.append(info)
        read.file_issues.append(list(parsed.issues))
        if as_reference:
            read.eval_ytids.append(parsed.table.column("ytid").combine_chunks())
            continue
        if split is None and fmt != "vggsound":
            raise ManifestError(f"{spec.path}: cannot infer the split from the file name; pass PATH:split")
        if split is not None and split not in _DATASET_SPLITS[dataset]:
            raise ManifestError(f"{spec.path}: split {split!r} does not belong to dataset {dataset}")
        k = len(read.file_issues) - 1
        deduped = _dedupe_labels(parsed.table, file, warnings)
        rows, read.row_issues[k] = _drop_unknown_labels(deduped, file, known_labels)
        read.parts.append(_tag_rows(rows, split, file, k))
        if fmt == "vggsound":
            info["split_rows"] = _check_split_rows(file, parsed.table, definition, warnings)
    return read


def _dedupe_labels(rows: pa.Table, file: str, warnings: list[str]) -> pa.Table:
    """Each row's labels with repeats removed (first occurrence kept, order kept), and one warning per file that had
    any: a line listing one label 200k times must not carry 200k labels into every later stage."""
    labels = rows.column("labels").combine_chunks()
    if len(labels) == 0 or (pc.max(pc.list_value_length(labels)).as_py() or 0) < 2:  # nothing can repeat
        return rows
    flat = pc.list_flatten(labels)
    # (row, label code) as one int64 key per label; a sorted copy shows repeats as equal neighbours
    codes = pc.dictionary_encode(flat).indices.to_numpy().astype(np.int64)
    parents = pc.list_parent_indices(labels).to_numpy().astype(np.int64)
    keys = parents * (int(codes.max()) + 1) + codes
    ordered = np.sort(keys)
    if not (ordered[1:] == ordered[:-1]).any():
        return rows
    keep = np.zeros(len(flat), dtype=bool)
    keep[np.unique(keys, return_index=True)[1]] = True  # the first position of each (row, label)
    hit = np.unique(parents[~keep])
    offsets = np.zeros(len(labels) + 1, dtype=np.int32)
    np.cumsum(np.bincount(parents[keep], minlength=len(labels)), out=offsets[1:])
    deduped = pa.ListArray.from_arrays(pa.array(offsets), flat.filter(pa.array(keep)))
    line = rows.column("line")[int(hit[0])].as_py()
    warnings.append(
        f"{file}: {hit.size} row(s) listed a label more than once ({int((~keep).sum())} repeats, first at line "
        f"{line}); each label is kept once"
    )
    return rows.set_column(rows.schema.get_field_index("labels"), "labels", deduped)


def _drop_unknown_labels(
    rows: pa.Table, file: str, known_labels: dict[str, str]
) -> tuple[pa.Table, list[tuple[int, ManifestIssue]]]:
    """Rows whose labels are all in the label index (every row when there is no index), and an `unknown_label`
    (line, issue) for each row dropped."""
    found: list[tuple[int, ManifestIssue]] = []
    if not known_labels or not rows.num_rows:
        return rows, found
    label_names = set(known_labels.values())
    known = pa.array(list(known_labels), pa.string())
    names = pa.array(sorted(label_names), pa.string())
    labels = rows.column("labels").combine_chunks()
    flat = pc.list_flatten(labels)
    ok = pc.or_(pc.is_in(flat, value_set=known), pc.is_in(flat, value_set=names))
    ok = pc.or_(ok, pc.is_in(pc.replace_substring(flat, ",", "_"), value_set=names))
    bad_rows = np.unique(pc.list_parent_indices(labels).filter(pc.invert(ok)).to_numpy())
    for r in bad_rows.tolist():
        unknown = [lb for lb in labels[r].as_py() if not _label_ok(lb, known_labels, label_names)]
        line = rows.column("line")[r].as_py()
        found.append((line, ManifestIssue(file, line, "unknown_label", f"{unknown} not in the label index")))
    if bad_rows.size:
        drop = np.zeros(rows.num_rows, dtype=bool)
        drop[bad_rows] = True
        rows = rows.filter(pa.array(~drop))
    return rows, found


def _tag_rows(rows: pa.Table, split: str | None, file: str, file_index: int) -> pa.Table:
    """The file's split on every row (None: vggsound.csv's per-row split stays), plus source_file and file_index."""
    n = rows.num_rows
    rows = rows.set_column(5, "split", pa.repeat(pa.scalar(split, pa.string()), n) if split else rows.column(5))
    rows = rows.append_column("source_file", pa.repeat(pa.scalar(file), n))
    return rows.append_column("file_index", pa.repeat(pa.scalar(file_index, pa.int32()), n))


def _check_split_rows(file: str, table: pa.Table, definition: dict[str, Any], warnings: list[str]) -> dict[str, int]:
    """vggsound.csv's rows per split (as parsed), each compared with the definition's `split_rows`."""
    match = _entry_by_name(definition, file)
    expected_split = (match[1].get("split_rows") or {}) if match else {}
    got = {r["values"]: r["counts"] for r in pc.value_counts(table.column("split")).to_pylist()}
    for sp, n in expected_split.items():
        if got.get(sp, 0) != n:
            warnings.append(f"{file}: {got.get(sp, 0)} {sp} rows, expected {n}")
    return dict(sorted(got.items()))


def _concat_parts(parts: list[pa.Table]) -> pa.Table:
    """The files' rows in input order, as one table (an empty one with the same columns when no file has rows)."""
    if parts:
        return pa.concat_tables(parts).combine_chunks()
    rows = _COLUMNS_SCHEMA.empty_table()
    rows = rows.append_column("source_file", pa.array([], pa.string()))
    return rows.append_column("file_index", pa.array([], pa.int32()))


def _start_ms(start_s: pa.ChunkedArray) -> pa.ChunkedArray:
    """A clip id's start: start_s in whole milliseconds, halves to even (`layout.clip_id_for`)."""
    return pc.round(pc.multiply(start_s, 1000.0), round_mode="half_to_even").cast(pa.int64())


def _drop_duplicate_clips(
    rows: pa.Table, dataset: str, row_issues: dict[int, list[tuple[int, ManifestIssue]]]
) -> tuple[pa.Table, pa.Array]:
    """Rows with a clip id (`dataset:ytid:start_ms`) not seen before, and those ids.

    The first row of a clip id (in input order) wins, as a dict of seen ids would decide; each later row becomes a
    `duplicate_clip_id` issue in `row_issues` under its file's index.
    """
    ms = _start_ms(rows.column("start_s")).cast(pa.string())
    clip_id = pc.binary_join_element_wise(dataset, rows.column("ytid"), ms, ":")
    uniq = pc.unique(clip_id)
    code = pc.index_in(clip_id, value_set=uniq).to_numpy()
    first = np.unique(code, return_index=True)[1]
    dup = np.flatnonzero(first[code] != np.arange(code.size))
    if not dup.size:
        return rows, clip_id
    files, lines = rows.column("source_file"), rows.column("line")
    fidx = rows.column("file_index").to_numpy()
    for r in dup.tolist():
        f0 = int(first[code[r]])
        text = f"{clip_id[r].as_py()} also at {files[f0].as_py()}:{lines[f0].as_py()}"
        line = lines[r].as_py()
        row_issues[int(fidx[r])].append((line, ManifestIssue(files[r].as_py(), line, "duplicate_clip_id", text)))
    keep = np.ones(code.size, dtype=bool)
    keep[dup] = False
    return rows.filter(pa.array(keep)), clip_id.filter(pa.array(keep))


def _read_retrieval_lists(
    paths: Sequence[Path], definition: dict[str, Any], inputs_meta: list[dict[str, Any]], warnings: list[str]
) -> tuple[list[pa.Array], list[ManifestIssue]]:
    """The ytids of each retrieval list and the entries that name no ytid; each list's input record is appended."""
    ytids: list[pa.Array] = []
    issues: list[ManifestIssue] = []
    for path in paths:
        ids, bad = parse_retrieval_ids(path)
        issues.extend(bad)
        ytids.append(pa.array(ids, pa.string()))
        inputs_meta.append(_check_input(path, definition, "retrieval", len(ids) + len(bad), None, warnings))
    return ytids, issues


def _source_table(rows: pa.Table, clip_id: pa.Array, dataset: str, eval_ytids: list[pa.Array]) -> tuple[pa.Table, int]:
    """source.parquet's table (`SOURCE_SCHEMA`, sorted by clip id) and its number of leaking rows.

    A train row leaks (`leak_eval_overlap`) when its ytid is also an eval row's or is in `eval_ytids` (the eval and
    retrieval lists).
    """
    eval_rows = pc.is_in(rows.column("split"), value_set=pa.array(sorted(EVAL_SPLITS)))
    leak_ytids = [*eval_ytids, rows.column("ytid").filter(eval_rows)]
    order = pc.sort_indices(clip_id)
    rows, clip_id = rows.take(order), clip_id.take(order)
    ytid, split_col, start = rows.column("ytid"), rows.column("split"), rows.column("start_s")
    leak_set = pc.unique(pa.chunked_array(leak_ytids, pa.string()))
    leak = pc.and_(pc.is_in(split_col, value_set=pa.array(sorted(TRAIN_SPLITS))), pc.is_in(ytid, value_set=leak_set))
    leak_count = pc.sum(leak.cast(pa.int64())).as_py() or 0
    table = pa.table(
        {
            "clip_id": clip_id,
            "video_id": video_id_column(dataset, ytid, _start_ms(start)),
            "dataset": pa.repeat(pa.scalar(dataset), rows.num_rows),
            "split": split_col,
            "ytid": ytid,
            "start_s": start,
            "end_s": rows.column("end_s"),
            "labels": rows.column("labels"),
            "leak_eval_overlap": leak,
            "source_file": rows.column("source_file"),
            "source_line": rows.column("line"),
        },
        schema=SOURCE_SCHEMA,
    )
    return table, int(leak_count)


def _write_rejected(issues: list[ManifestIssue], path: Path) -> Path | None:
    """rejected.parquet: one row per issue (None and no file when there are none)."""
    if not issues:
        path.unlink(missing_ok=True)  # a stale file from an earlier run would mislead the funnel
        return None
    rej = pa.table(
        {
            "file": [i.file for i in issues],
            "line": pa.array([i.line for i in issues], pa.int32()),
            "kind": [i.kind for i in issues],
            "text": [i.text for i in issues],
        },
        schema=_REJECTED_SCHEMA,
    )
    _write_parquet(rej, path)
    return path


def _steps_bar(total: int) -> Any:
    """A progress bar over the build steps (shown on a terminal only)."""
    from tqdm import tqdm

    return tqdm(total=total, unit="step", leave=False, disable=None)


def _write_parquet(table: pa.Table, path: Path) -> None:
    with atomic_path(path) as tmp:
        pq.write_table(table, tmp)
