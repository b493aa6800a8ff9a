"""The columnar segment parser and manifest builder give exactly what the per-line rules give, odd rows included."""

from __future__ import annotations

from pathlib import Path

import pyarrow.parquet as pq
import pytest

from tgdp.pipeline.layout import clip_id_for
from tgdp.pipeline.manifest import (
    ManifestConfig,
    build_manifest,
    parse_segments_columns,
    parse_segments_text,
)
from tgdp.store.format import video_id_for

AUDIOSET = "\ufeff" + "\n".join(
    [
        "# Segments csv created Sun Mar  5 10:54:31 2017",
        "# num_ytids=3, num_segs=3, num_unique_labels=2, num_positive_labels=3",
        "# YTID, start_seconds, end_seconds, positive_labels",
        '--PJHxphWEs, 30.000, 40.000, "/m/09x0r,/t/dd00088"',
        '-0SdAVK79lg, 30.000, 40.000, "/m/0140xf"\r',
        "",
        '#NAME?, 30.000, 40.000, "/m/09x0r"',
        '-1nilez17Dg,30.000,40.000,"/m/09x0r"',
        '-1nilez17Dh,  30.000, 40.000, "/m/09x0r"',
        "-1nilez17Di, 30.000, 40.000, /m/09x0r",
        '-1nilez17Dj, 40.000, 30.000, "/m/09x0r"',
        '-1nilez17Dk, 3o.000, 40.000, "/m/09x0r"',
        '-1nilez17Dl, 30.000, 40.000, ""',
        '-1nilez17Dm, 30.000, 40.000, "/m/09x0r, /m/0140xf"',
        '-1nilez17Dn, ３0, 40.000, "/m/09x0r"',
        '-1nilez17Do, 30.000, 40.000, "/m/09x0r" ',
        '-1nilez17Dp, 30.000, 40.000, "/m/09x0r",',
        "   ",
        '-1nilez17Dq, 0.5, 10.25, "/m/09x0r,,/m/0140xf"',
        "-1nilez17Dr, 1" + "0" * 400 + ", 2" + "0" * 400 + ', "/m/09x0r"',
        'tooshort, 30.000, 40.000, "/m/09x0r"',
        '-1nilez17Ds, 30.000, 40.000, "/m/09x0r\x00"',
        '-1nilez17Dt, 30.000, 40.000, "/m/09x0r"',
        "",
    ]
)
VGGSOUND = "\n".join(
    [
        "---g-f_I2yQ,1,people marching,test",
        '--0PQM4-hqg,30,"waterfall burbling, splashing",train',
        "--56QUhyDQM,185,playing tennis,train\r",
        "--5OkAjCI7g,40,  spaced label  ,train",
        '--5OkAjCI7h,40,"quoted ""inner"" label",train',
        "--5OkAjCI7i,4.5,people marching,train",
        "--5OkAjCI7j,40,people marching,val",
        "--5OkAjCI7k,40,,train",
        "#NAME?,40,people marching,train",
        "--5OkAjCI7l,40,people\rmarching,train",
        "--5OkAjCI7m,40,people marching,train,extra",
        "--5OkAjCI7n,40,\u00a0people marching,train",
        "",
    ]
)


@pytest.mark.parametrize(("fmt", "text"), [("audioset", AUDIOSET), ("vggsound", VGGSOUND)])
def test_columnar_parser_matches_line_parser(tmp_path: Path, fmt: str, text: str) -> None:
    path = tmp_path / f"{fmt}.csv"
    data = text.encode("utf-8").replace(b"people marching,test", b"people \xff marching,test")  # invalid UTF-8
    path.write_bytes(data)
    slow = parse_segments_text(data.decode("utf-8-sig", errors="replace"), fmt, path.name)
    fast = parse_segments_columns(path, fmt)
    rows = fast.table.to_pylist()
    want = [
        {"ytid": r.ytid, "start_s": r.start_s, "end_s": r.end_s, "labels": list(r.labels), "line": r.line,
         "split": r.split}
        for r in slow.rows
    ]  # fmt: skip
    assert rows == want
    assert [str(i) for i in fast.issues] == [str(i) for i in slow.issues]
    assert (fast.data_lines, fast.header_rows) == (slow.data_lines, slow.header_rows)
    assert len(want) >= 4 and len(slow.issues) >= 5  # both paths were exercised


def test_build_manifest_rows_follow_the_row_rules(tmp_path: Path) -> None:
    """Clip ids, video ids, duplicates across files (first wins), unknown labels and issue order."""
    bal = tmp_path / "balanced_train_segments.csv"
    ev = tmp_path / "eval_segments.csv"
    bal.write_text(
        "# YTID, start_seconds, end_seconds, positive_labels\n"
        'aaaaaaaaaaa, 0.0005, 10.000, "/m/a"\n'
        'bbbbbbbbbbb, 2.5, 12.5, "/m/zz"\n'
        'ccccccccccc, 30.000, 40.000, "/m/a,/m/b"\n'
        'ccccccccccc, 30.000, 40.000, "/m/b"\n'
    )
    ev.write_text(
        '# header\nccccccccccc, 30.000, 40.000, "/m/a"\nddddddddddd, 0.0015, 10, "/m/b"\n'
        'ccccccccccc, 0.000, 10.000, "/m/a"\n'
    )
    labels = tmp_path / "labels.csv"
    labels.write_text("index,mid,display_name\n0,/m/a,A\n1,/m/b,B\n")
    cfg = ManifestConfig(dataset="audioset", csv=[str(bal), str(ev)], labels=str(labels), skip_bad=True)
    result = build_manifest(tmp_path / "root", cfg)
    table = pq.read_table(result.manifest)
    got = table.to_pylist()
    assert [r["clip_id"] for r in got] == sorted(r["clip_id"] for r in got)
    expected = {
        clip_id_for("audioset", "aaaaaaaaaaa", 0.0005): ("as_bal_train", 2),
        clip_id_for("audioset", "ccccccccccc", 30.0): ("as_bal_train", 4),
        clip_id_for("audioset", "ddddddddddd", 0.0015): ("as_eval", 3),
        clip_id_for("audioset", "ccccccccccc", 0.0): ("as_eval", 4),
    }
    assert {r["clip_id"]: (r["split"], r["source_line"]) for r in got} == expected
    for r in got:
        assert r["video_id"] == r["ytid"] == video_id_for("audioset", r["ytid"], round(r["start_s"] * 1000))
    # ccccccccccc is in the eval list: its train row is flagged as a leak
    assert {(r["ytid"], r["split"]): r["leak_eval_overlap"] for r in got} == {
        ("aaaaaaaaaaa", "as_bal_train"): False, ("ccccccccccc", "as_bal_train"): True,
        ("ddddddddddd", "as_eval"): False, ("ccccccccccc", "as_eval"): False,
    }  # fmt: skip
    assert [(i.file, i.line, i.kind) for i in result.issues] == [
        ("balanced_train_segments.csv", 3, "unknown_label"),
        ("balanced_train_segments.csv", 5, "duplicate_clip_id"),
        ("eval_segments.csv", 2, "duplicate_clip_id"),
    ]
    assert "also at balanced_train_segments.csv:4" in result.issues[1].text


def test_vggsound_video_ids(tmp_path: Path) -> None:
    csv = tmp_path / "vggsound.csv"
    csv.write_text('---g-f_I2yQ,1,people marching,test\n--0PQM4-hqg,1234567,"a, b",train\n')
    result = build_manifest(tmp_path / "root", ManifestConfig(dataset="vggsound", csv=[str(csv)]))
    got = {r["ytid"]: r for r in pq.read_table(result.manifest).to_pylist()}
    for ytid, r in got.items():
        assert r["video_id"] == video_id_for("vggsound", ytid, round(r["start_s"] * 1000))
        assert r["clip_id"] == clip_id_for("vggsound", ytid, r["start_s"])
    assert got["--0PQM4-hqg"]["labels"] == ["a, b"] and got["---g-f_I2yQ"]["split"] == "vgg_test"
    assert {r["video_id"] for r in got.values()} == {"---g-f_I2yQ_000001", "--0PQM4-hqg_1234567"}


def test_one_video_id_rule_at_non_integer_starts() -> None:
    """The manifest's column, the scalar rule and eval's id from a clip id agree at every start, 12.7 s included
    (eval floored to 12 while the manifest rounded to 13); halves go to even, as the clip id's milliseconds do."""
    import pyarrow as pa

    from tgdp.eval.table import video_id_from_clip_id
    from tgdp.store.format import video_id_column

    starts = [0.0, 1.0, 12.0, 12.4996, 12.5, 12.7, 13.4996, 13.5, 1234567.0]
    ms = [round(s * 1000) for s in starts]
    column = video_id_column("vggsound", pa.array(["abcdefghijk"] * len(ms)), pa.array(ms, pa.int64())).to_pylist()
    scalar = [video_id_for("vggsound", "abcdefghijk", m) for m in ms]
    from_clip = [video_id_from_clip_id(clip_id_for("vggsound", "abcdefghijk", s)) for s in starts]
    assert column == scalar == from_clip
    assert [v[-6:] for v in scalar[:8]] == [
        "000000",
        "000001",
        "000012",
        "000012",
        "000012",
        "000013",
        "000014",
        "000014",
    ]
    assert scalar[-1] == "abcdefghijk_1234567"
    assert video_id_from_clip_id(clip_id_for("audioset", "abcdefghijk", 12.7)) == "abcdefghijk"
