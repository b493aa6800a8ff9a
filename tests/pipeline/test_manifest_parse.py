"""Parser edge cases of the official list formats, and round trips of generated rows (hypothesis)."""

from __future__ import annotations

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from tgdp.pipeline.manifest import (
    format_audioset_csv,
    format_vggsound_row,
    parse_input_spec,
    parse_segments_text,
)

AS_HEADER = (
    "# Segments csv created Sun Mar  5 10:54:31 2017\n"
    "# num_ytids=3, num_segs=3, num_unique_labels=3, num_positive_labels=4\n"
    "# YTID, start_seconds, end_seconds, positive_labels\n"
)


def test_audioset_official_shape():
    text = AS_HEADER + (
        '--PJHxphWEs, 30.000, 40.000, "/m/09x0r,/t/dd00088"\n'
        '---2_BBVHAA, 0.000, 5.000, "/m/012xff"\n'  # shorter than 10 s: kept
        'AbCdEfGhIjK, 10.500, 20.500, "/m/0jbk"\n'
    )
    parsed = parse_segments_text(text, "audioset", "bal.csv")
    assert parsed.issues == []
    assert parsed.header_rows == 3 and parsed.data_lines == 3
    first, short, _ = parsed.rows
    assert (first.ytid, first.start_s, first.end_s, first.labels, first.line) == (
        "--PJHxphWEs",
        30.0,
        40.0,
        ("/m/09x0r", "/t/dd00088"),
        4,
    )
    assert short.end_s - short.start_s == 5.0


def test_bom_crlf_and_blank_lines_keep_line_numbers():
    text = "\ufeff" + AS_HEADER.replace("\n", "\r\n") + '\r\nxyzxyzxyz_-, 1.000, 11.000, "/m/a"\r\n'
    parsed = parse_segments_text(text, "audioset", "x.csv")
    assert parsed.issues == []
    assert [(r.ytid, r.line) for r in parsed.rows] == [("xyzxyzxyz_-", 5)]


@pytest.mark.parametrize(
    ("line", "kind"),
    [
        ('#NAME?, 30.000, 40.000, "/m/a"', "bad_ytid"),  # Excel's rendering of an id starting with '-'
        ('short, 30.000, 40.000, "/m/a"', "bad_ytid"),
        ("AbCdEfGhIjK, 30, 40, /m/a,/m/b", "column_count"),  # unquoted label list
        ('AbCdEfGhIjK, 30.000, "/m/a"', "column_count"),
        ('AbCdEfGhIjK, thirty, 40.000, "/m/a"', "bad_timestamp"),
        ('AbCdEfGhIjK, -1.000, 40.000, "/m/a"', "bad_timestamp"),
        ('AbCdEfGhIjK, 40.000, 40.000, "/m/a"', "end_before_start"),
        ('AbCdEfGhIjK, 40.000, 30.000, "/m/a"', "end_before_start"),
        ('AbCdEfGhIjK, 30.000, 40.000, ""', "no_labels"),
    ],
)
def test_audioset_malformed_rows_are_reported_with_line(line, kind):
    text = AS_HEADER + 'GoodGoodGoo, 0.000, 10.000, "/m/a"\n' + line + "\n"
    parsed = parse_segments_text(text, "audioset", "f.csv")
    assert len(parsed.rows) == 1 and parsed.data_lines == 2
    [issue] = parsed.issues
    assert (issue.file, issue.line, issue.kind) == ("f.csv", 5, kind)


def test_vggsound_rows_quoted_labels_and_bad_split():
    text = (
        "---g-f_I2yQ,1,people marching,test\n"
        'abcdefghijk,30,"female speech, woman speaking",train\n'
        "abcdefghijk,30.5,dog barking,train\n"
        "abcdefghijk,40,dog barking,val\n"
    )
    parsed = parse_segments_text(text, "vggsound", "vggsound.csv")
    assert [(r.ytid, r.start_s, r.end_s, r.labels, r.split) for r in parsed.rows] == [
        ("---g-f_I2yQ", 1.0, 11.0, ("people marching",), "vgg_test"),
        ("abcdefghijk", 30.0, 40.0, ("female speech, woman speaking",), "vgg_train"),
    ]
    assert [(i.line, i.kind) for i in parsed.issues] == [(3, "bad_timestamp"), (4, "bad_split")]


def test_vgg_list_format():
    text = 'glLQrEijrKg_000300.mp4,playing hammond organ\r\n0_8-g2rof7E_000049.mp4,"heart sounds, heartbeat"\r\n'
    text += "nonsense.mp4,x\r\n"
    parsed = parse_segments_text(text, "vgg_list", "test.csv")
    assert [(r.ytid, r.start_s, r.labels) for r in parsed.rows] == [
        ("glLQrEijrKg", 300.0, ("playing hammond organ",)),
        ("0_8-g2rof7E", 49.0, ("heart sounds, heartbeat",)),
    ]
    assert [(i.line, i.kind) for i in parsed.issues] == [(3, "bad_ytid")]


def test_unknown_format_and_input_spec():
    with pytest.raises(ValueError, match="unknown segment format"):
        parse_segments_text("", "json", "x")
    assert parse_input_spec("a/b.csv:as_eval").split == "as_eval"
    spec = parse_input_spec("C:/data/x.csv")
    assert spec.split is None and str(spec.path) == "C:/data/x.csv"


_YTID = st.text("ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789_-", min_size=10, max_size=10)
_ytids = st.builds(lambda lead, rest: lead + rest, st.sampled_from(["-", "a", "Z", "0", "_"]), _YTID)
_mid = st.from_regex(r"/[mt]/[a-z0-9_]{2,8}", fullmatch=True)


@settings(max_examples=60, deadline=None)
@given(
    rows=st.lists(
        st.tuples(
            _ytids,
            st.integers(0, 10**7),
            st.integers(1, 20_000),
            st.lists(_mid, min_size=1, max_size=4),
        ),
        min_size=1,
        max_size=20,
    ),
    crlf=st.booleans(),
    bom=st.booleans(),
)
def test_audioset_round_trip(rows, crlf, bom):
    data = [(y, s / 1000, (s + d) / 1000, labels) for y, s, d, labels in rows]
    text = format_audioset_csv(data, "Sun Mar  5 10:54:31 2017")
    if crlf:
        text = text.replace("\n", "\r\n")
    if bom:
        text = "\ufeff" + text
    parsed = parse_segments_text(text, "audioset", "gen.csv")
    assert parsed.issues == []
    assert parsed.header_rows == len(data)
    got = [(r.ytid, r.start_s, r.end_s, list(r.labels), r.line) for r in parsed.rows]
    assert got == [(y, s, e, labels, i + 4) for i, (y, s, e, labels) in enumerate(data)]


_label = st.from_regex(r"[a-z][a-z ,\"']{0,24}[a-z]", fullmatch=True)


@settings(max_examples=60, deadline=None)
@given(
    rows=st.lists(
        st.tuples(_ytids, st.integers(0, 999_999), _label, st.sampled_from(["train", "test"])),
        min_size=1,
        max_size=20,
    )
)
def test_vggsound_round_trip(rows):
    text = "\n".join(format_vggsound_row(*r) for r in rows) + "\n"
    parsed = parse_segments_text(text, "vggsound", "vggsound.csv")
    assert parsed.issues == []
    got = [(r.ytid, int(r.start_s), r.labels[0], r.split, r.end_s - r.start_s) for r in parsed.rows]
    assert got == [(y, s, lb, f"vgg_{sp}", 10.0) for y, s, lb, sp in rows]


@pytest.mark.parametrize("header", [AS_HEADER, ""])
@pytest.mark.parametrize("fmt", ["audioset", "vggsound"])
def test_hash_rows_after_the_header_are_rejected_not_comments(header, fmt):
    # Excel turns ids starting with '-' into '#NAME?'; sorted lists put those first, right after the header (or at
    # the top of a header-less file), where they used to pass for comment lines and vanish without a trace.
    if fmt == "audioset":
        bad, good = '#NAME?, 30.000, 40.000, "/m/a"', 'GoodGoodGoo, 0.000, 10.000, "/m/a"'
    else:
        header, bad, good = "", "#NAME?,30,dog barking,train", "GoodGoodGoo,0,dog barking,train"
    text = header + bad + "\n#VALUE!\n" + good + "\n"
    parsed = parse_segments_text(text, fmt, "f.csv")
    offset = header.count("\n")
    assert [(i.line, i.kind) for i in parsed.issues] == [(offset + 1, "bad_ytid"), (offset + 2, "bad_ytid")]
    assert len(parsed.rows) == 1 and parsed.data_lines == 3
    if header:
        assert parsed.header_rows == 3
