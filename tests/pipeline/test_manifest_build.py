"""`build_manifest` on CSVs written here (leaks, rejects, splits, downloads) and on ../shared when present."""

from __future__ import annotations

import functools
import http.server
import json
import threading
import urllib.error
from pathlib import Path

import pyarrow.parquet as pq
import pytest

from tgdp.pipeline import manifest as mf
from tgdp.pipeline.manifest import ManifestConfig, ManifestError, build_manifest, file_hashes, load_definition

HEADER = "# Segments csv created Sun Mar  5 10:54:31 2017\n# num_ytids={n}, num_segs={n}\n# YTID, start_seconds, end_seconds, positive_labels\n"  # noqa: E501


def _as_csv(path: Path, lines: list[str], declared: int | None = None) -> Path:
    path.write_text(HEADER.format(n=declared if declared is not None else len(lines)) + "\n".join(lines) + "\n")
    return path


def _labels(path: Path, mids: list[str]) -> Path:
    path.write_text("index,mid,display_name\n" + "".join(f'{i},{m},"Name {i}, x"\n' for i, m in enumerate(mids)))
    return path


@pytest.fixture
def as_files(tmp_path):
    bal = _as_csv(
        tmp_path / "balanced_train_segments.csv",
        ['-aaaaaaaaaa, 30.000, 40.000, "/m/a,/m/b"', 'bbbbbbbbbbb, 0.000, 5.000, "/m/b"'],
    )
    ev = _as_csv(tmp_path / "eval_segments.csv", ['ccccccccccc, 1.000, 11.000, "/m/a"'])
    unbal = _as_csv(
        tmp_path / "unbalanced_train_segments.csv",
        ['ccccccccccc, 50.000, 60.000, "/m/a"', 'ddddddddddd, 2.000, 12.000, "/m/b"'],
        declared=5,
    )
    retr = tmp_path / "retrieval.json"
    retr.write_text(json.dumps({"data": [{"video_id": "ddddddddddd", "labels": "/m/b"}]}))
    return bal, ev, unbal, _labels(tmp_path / "class_labels_indices.csv", ["/m/a", "/m/b"]), retr


def test_audioset_manifest_columns_leaks_and_meta(tmp_path, as_files):
    bal, ev, unbal, labels, retr = as_files
    cfg = ManifestConfig(dataset="audioset", csv=[str(bal), str(ev), str(unbal)], labels=str(labels),
                         retrieval=[str(retr)])  # fmt: skip
    res = build_manifest(tmp_path / "root", cfg)
    table = pq.read_table(res.manifest)
    assert table.schema.equals(mf.SOURCE_SCHEMA)
    rows = {r["clip_id"]: r for r in table.to_pylist()}
    assert list(rows) == sorted(rows)
    assert res.split_counts == {"as_bal_train": 2, "as_eval": 1, "as_unbal_train": 2}
    r = rows["audioset:-aaaaaaaaaa:30000"]
    assert (r["video_id"], r["split"], r["labels"], r["source_file"], r["source_line"]) == (
        "-aaaaaaaaaa", "as_bal_train", ["/m/a", "/m/b"], "balanced_train_segments.csv", 4
    )  # fmt: skip
    # ccc… is an eval ytid (other segment), ddd… is in the retrieval list
    leaks = {cid for cid, r in rows.items() if r["leak_eval_overlap"]}
    assert leaks == {"audioset:ccccccccccc:50000", "audioset:ddddddddddd:2000"}
    assert res.leak_count == 2 and res.rejected is None
    meta = json.loads(res.meta.read_text())
    unbal_meta = next(i for i in meta["inputs"] if i["path"].endswith("unbalanced_train_segments.csv"))
    # a file named like an official one is checked against its definition: hash and row count differ → warnings
    assert unbal_meta["hash_status"] == "mismatch" and unbal_meta["actual_rows"] == 2
    assert unbal_meta["expected_rows"] == 2041789 and unbal_meta["header_rows"] == 5
    assert any("unbalanced_train_segments.csv: read 2 rows, expected 2041789" in w for w in res.warnings)
    assert meta["rows"] == 5 and meta["leak_eval_overlap"] == 2 and meta["warnings"] == res.warnings
    assert meta["manifest_sha256"] == file_hashes(res.manifest)[0]


def test_header_count_is_the_reference_for_unknown_files(tmp_path):
    f = _as_csv(tmp_path / "mine.csv", ['abcdefghijk, 0.000, 10.000, "/m/a"'], declared=2)
    res = build_manifest(tmp_path / "r", ManifestConfig(dataset="audioset", csv=[f"{f}:as_eval"]))
    assert res.split_counts == {"as_eval": 1}
    assert res.warnings == ["mine.csv: read 1 rows, expected 2 (header)"]


def test_malformed_rows_raise_with_file_and_line(tmp_path, as_files):
    bal, _, _, labels, _ = as_files
    bad = _as_csv(
        tmp_path / "eval_segments.csv",
        ['ccccccccccc, 1.000, 11.000, "/m/a"', '#NAME?, 1.000, 11.000, "/m/a"', 'eeeeeeeeeee, 1.000, 11.000, "/m/zz"',
         'ccccccccccc, 1.000, 12.000, "/m/a"'],
    )  # fmt: skip
    cfg = ManifestConfig(dataset="audioset", csv=[str(bal), str(bad)], labels=str(labels))
    with pytest.raises(ManifestError) as err:
        build_manifest(tmp_path / "root", cfg)
    kinds = [(i.file, i.line, i.kind) for i in err.value.issues]
    assert kinds == [
        ("eval_segments.csv", 5, "bad_ytid"),
        ("eval_segments.csv", 6, "unknown_label"),
        ("eval_segments.csv", 7, "duplicate_clip_id"),
    ]
    assert "eval_segments.csv:5: bad_ytid" in str(err.value)
    assert not (tmp_path / "root" / "manifest" / "source.parquet").exists()

    res = build_manifest(tmp_path / "root", cfg.model_copy(update={"skip_bad": True}))
    assert res.rows == 3
    rejected = pq.read_table(res.rejected).to_pylist()
    assert [(r["file"], r["line"], r["kind"]) for r in rejected] == kinds
    meta = json.loads(res.meta.read_text())
    assert meta["rejected"] == 3 and meta["rejected_by_kind"]["duplicate_clip_id"] == 1


def test_vggsound_full_csv_with_test_list_and_retrieval(tmp_path):
    vgg = tmp_path / "vggsound.csv"
    vgg.write_text(
        '---g-f_I2yQ,1,people marching,test\nabcdefghijk,30,"bird chirping, tweeting",train\n'
        "---g-f_I2yQ,40,people marching,train\nzzzzzzzzzzz,0,dog barking,train\n"
    )
    test = tmp_path / "test.csv"
    test.write_text("---g-f_I2yQ_000001.mp4,people marching\r\n")
    labels = tmp_path / "class_labels_indices_vgg.csv"
    labels.write_text("index,mid,display_name\n0,vgg_0,people marching\n1,vgg_1,bird chirping_ tweeting\n"
                      "2,vgg_2,dog barking\n")  # fmt: skip
    retr = tmp_path / "retr.json"
    retr.write_text(json.dumps({"data": [{"video_id": "zzzzzzzzzzz_000000"}]}))
    cfg = ManifestConfig(dataset="vggsound", csv=[str(vgg), str(test)], labels=str(labels), retrieval=[str(retr)])
    res = build_manifest(tmp_path / "root", cfg)
    rows = {r["clip_id"]: r for r in pq.read_table(res.manifest).to_pylist()}
    # test.csv repeats vggsound.csv's test rows: used as an eval list, not as rows (no duplicate ids)
    assert res.split_counts == {"vgg_test": 1, "vgg_train": 3}
    r = rows["vggsound:abcdefghijk:30000"]
    assert (r["video_id"], r["end_s"], r["labels"]) == ("abcdefghijk_000030", 40.0, ["bird chirping, tweeting"])
    leaks = sorted(c for c, r in rows.items() if r["leak_eval_overlap"])
    assert leaks == ["vggsound:---g-f_I2yQ:40000", "vggsound:zzzzzzzzzzz:0"]
    meta = json.loads(res.meta.read_text())
    roles = {Path(i["path"]).name: i["role"] for i in meta["inputs"]}
    assert roles["test.csv"] == "eval_list" and roles["retr.json"] == "retrieval"


def test_split_errors(tmp_path):
    f = _as_csv(tmp_path / "whatever.csv", ['abcdefghijk, 0.000, 10.000, "/m/a"'])
    with pytest.raises(ManifestError, match="cannot infer the split"):
        build_manifest(tmp_path / "r", ManifestConfig(dataset="audioset", csv=[str(f)]))
    with pytest.raises(ManifestError, match="does not belong"):
        build_manifest(tmp_path / "r", ManifestConfig(dataset="audioset", csv=[f"{f}:vgg_test"]))
    with pytest.raises(ManifestError, match="not found"):
        build_manifest(tmp_path / "r", ManifestConfig(dataset="audioset", csv=[str(tmp_path / "nope.csv")]))


def test_download_offline_fails_clearly(tmp_path, monkeypatch):
    def offline(*args, **kwargs):
        raise urllib.error.URLError("no network")

    monkeypatch.setattr(mf.urllib.request, "urlopen", offline)
    with pytest.raises(ManifestError, match="could not download http.*balanced_train_segments.csv.*--csv"):
        build_manifest(tmp_path / "r", ManifestConfig(dataset="audioset"))
    assert not list((tmp_path / "r" / "manifest" / "downloads").glob("*"))


def test_download_from_local_server(tmp_path, monkeypatch, as_files):
    bal, ev, _, labels, _ = as_files
    handler = functools.partial(http.server.SimpleHTTPRequestHandler, directory=str(bal.parent))
    handler.log_message = lambda *a: None
    server = http.server.ThreadingHTTPServer(("127.0.0.1", 0), handler)
    threading.Thread(target=server.serve_forever, daemon=True).start()
    base = f"http://127.0.0.1:{server.server_address[1]}"
    definition = load_definition("audioset")
    files = definition["files"]
    del files["unbalanced_train"]
    for entry in files.values():
        entry["url"] = f"{base}/{entry['filename']}"
    monkeypatch.setattr(mf, "load_definition", lambda dataset: definition)
    try:
        res = build_manifest(tmp_path / "r", ManifestConfig(dataset="audioset"))
    finally:
        server.shutdown()
    assert res.split_counts == {"as_bal_train": 2, "as_eval": 1}
    assert (tmp_path / "r" / "manifest" / "downloads" / "balanced_train_segments.csv").read_bytes() == bal.read_bytes()


def test_definitions_ship_with_the_package():
    for name in ("audioset", "vggsound"):
        d = load_definition(name)
        assert d["dataset"] == name
        for entry in {**d["files"], **(d["retrieval"] or {})}.values():
            assert entry["rows"] > 0 and len(entry["git_blob"]) == 40
            assert entry["sha256"] is None or len(entry["sha256"]) == 64
    assert load_definition("vggsound")["retrieval"]["vgg_retrieval"]["rows"] == 1545
    with pytest.raises(ManifestError, match="unknown dataset"):
        load_definition("kinetics")


@pytest.mark.shared
def test_shared_audioset_lists(shared_dir, tmp_path):
    d = shared_dir / "data" / "audioset"
    cfg = ManifestConfig(
        dataset="audioset",
        csv=[str(d / "balanced_train_segments.csv"), str(d / "eval_segments.csv")],
        labels=str(d / "class_labels_indices.csv"),
    )
    res = build_manifest(tmp_path / "root", cfg)
    assert res.split_counts == {"as_bal_train": 22160, "as_eval": 20371}
    assert res.warnings == [] and res.issues == []
    meta = json.loads(res.meta.read_text())
    assert {i["hash_status"] for i in meta["inputs"]} == {"match"}
    ytids = pq.read_table(res.manifest, columns=["ytid"]).column("ytid").to_pylist()
    assert sum(y.startswith("-") for y in ytids) > 100


@pytest.mark.shared
def test_shared_vggsound_test_and_retrieval(shared_dir, tmp_path):
    d = shared_dir / "data" / "vggsound"
    retrieval = d / "vgg_test_5_per_class_for_retrieval_template.json"
    cfg = ManifestConfig(dataset="vggsound", csv=[str(d / "test.csv")], labels=str(d / "class_labels_indices_vgg.csv"),
                         retrieval=[str(retrieval)])  # fmt: skip
    res = build_manifest(tmp_path / "root", cfg)
    assert res.split_counts == {"vgg_test": 15446} and res.warnings == []
    ids, bad = mf.parse_retrieval_ids(retrieval)
    assert len(ids) == 1545 and bad == []
    video_ids = set(pq.read_table(res.manifest, columns=["video_id"]).column("video_id").to_pylist())
    entries = json.loads(retrieval.read_text())["data"]
    assert {e["video_id"] for e in entries} <= video_ids
    meta = json.loads(res.meta.read_text())
    assert [i["actual_rows"] for i in meta["inputs"] if i["role"] == "retrieval"] == [1545]


def test_cli_prints_each_warning_once(tmp_path):
    # a real process: under pytest the log capture hides a second copy printed through logging's last resort
    import subprocess
    import sys

    f = _as_csv(tmp_path / "mine.csv", ['abcdefghijk, 0.000, 10.000, "/m/a"'], declared=2)
    cmd = [sys.executable, "-m", "tgdp.pipeline.cli", "manifest", str(tmp_path / "r"), "--dataset", "audioset"]
    res = subprocess.run([*cmd, "--csv", f"{f}:as_eval"], capture_output=True, text=True, timeout=120)
    assert res.returncode == 0, res.stderr
    assert (res.stdout + res.stderr).count("read 1 rows, expected 2 (header)") == 1, res.stderr


def test_synth_corpus_lists_raise_no_warning(tmp_path):
    from tgdp.pipeline.synth import LABELS_FILE, SEGMENT_FILES, SynthConfig, generate

    out = generate(SynthConfig(num_clips=6, seed=1), tmp_path / "corpus", write_media=False).out
    csvs = [f"{out / name}:{split}" for split, name in SEGMENT_FILES.items()]
    res = build_manifest(tmp_path / "r", ManifestConfig(dataset="audioset", csv=csvs, labels=str(out / LABELS_FILE)))
    assert res.rows == 6 and res.warnings == []
