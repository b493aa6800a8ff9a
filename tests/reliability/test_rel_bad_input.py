"""Bad input: malformed manifest CSVs (every row accounted: kept or rejected with file, line and kind), property
tests of the parser and of event-log compaction, and configs that reject unknown keys, wrong types and
out-of-range values with the key named."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import pyarrow.parquet as pq
import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st
from pydantic import BaseModel

from tgdp.config import ConfigError, load_config, validate_config
from tgdp.pipeline import ledger
from tgdp.pipeline.layout import manifest_path
from tgdp.pipeline.manifest import ManifestConfig, ManifestError, build_manifest, parse_segments_text

pytestmark = pytest.mark.reliability

LABELS = "index,mid,display_name\n0,/m/a,A\n1,/m/b,B\n"
GOOD = ['-dashfirst1, 1.000, 11.000, "/m/a"', 'AbCdEfGhIjK, 0.000, 10.000, "/m/a,/m/b"']
BAD = {
    'short_id, 1.000, 11.000, "/m/a"': "bad_ytid",
    'AbCdEfGhIjK, 1.000, 11.000, "/m/a", extra': "column_count",
    "AbCdEfGhIjK, 1.000": "column_count",
    'AbCdEfGhIjK, 1.0e1, 20.000, "/m/a"': "bad_timestamp",
    'AbCdEfGhIjK, nan, 20.000, "/m/a"': "bad_timestamp",
    'AbCdEfGhIjK, 20.000, 10.000, "/m/a"': "end_before_start",
    'AbCdEfGhIjK, 30.000, 40.000, "/m/zzz"': "unknown_label",
    'AbCdEfGhIjK, 0.000, 10.000, "/m/b"': "duplicate_clip_id",
    '--exec=a_b_, 0.000, 10.000, "/m/a"': "bad_ytid",
    '../../etc/p, 0.000, 10.000, "/m/a"': "bad_ytid",
    '$(touch x)1, 0.000, 10.000, "/m/a"': "bad_ytid",
}


def _csv(lines: list[str]) -> str:
    head = "# created\n# num_ytids=0, num_segs=%d, num_unique_labels=2, num_positive_labels=0\n# YTID, a, b, c\n"
    return "\ufeff" + (head % len(lines) + "\n".join(lines) + "\n").replace("\n", "\r\n")  # BOM + CRLF


def test_malformed_manifest_rows_all_accounted(tmp_path: Path) -> None:
    lines = GOOD + list(BAD)
    src = tmp_path / "balanced_train_segments.csv"
    src.write_text(_csv(lines), encoding="utf-8", newline="")
    (tmp_path / "labels.csv").write_text(LABELS)
    cfg = dict(dataset="audioset", csv=[str(src)], labels=str(tmp_path / "labels.csv"))
    root = tmp_path / "root"
    with pytest.raises(ManifestError) as info:
        build_manifest(root, ManifestConfig(**cfg))
    assert not manifest_path(root).exists()  # nothing written when rows are bad and --skip-bad is not given
    reported = {(i.line, i.kind) for i in info.value.issues}
    assert reported == {(4 + len(GOOD) + k, kind) for k, kind in enumerate(BAD.values())}
    assert all(f"{src.name}:{line}: {kind}" in str(info.value) for line, kind in reported)

    result = build_manifest(root, ManifestConfig(**cfg, skip_bad=True))
    table = pq.read_table(manifest_path(root))
    assert result.rows == len(GOOD) and table.num_rows == len(GOOD)
    assert sorted(table.column("ytid").to_pylist()) == sorted(g.split(",")[0] for g in GOOD)
    rejected = pq.read_table(root / "manifest" / "rejected.parquet").to_pylist()
    assert len(rejected) + result.rows == len(lines)  # every data row is kept or rejected, none vanishes
    meta = json.loads((root / "manifest" / "source.meta.json").read_text())
    assert meta["inputs"][-1]["actual_rows"] == len(lines) and meta["rejected"] == len(BAD)
    assert sum(meta["rejected_by_kind"].values()) == len(BAD)


_line_chars = st.sampled_from(list('aZ09_-,." /:#\t\\$()=') + ["\r", "\ufeff", "é", "\x00", "\x0b"])


@settings(max_examples=150, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(
    lines=st.lists(st.text(_line_chars, max_size=60), max_size=25),
    fmt=st.sampled_from(["audioset", "vggsound", "vgg_list"]),
    bom=st.booleans(),
)
def test_parser_never_loses_a_line(lines: list[str], fmt: str, bom: bool) -> None:
    """Any text: no exception; each data line becomes exactly one row or one issue, at its own line number."""
    text = ("\ufeff" if bom else "") + "\n".join(lines)
    parsed = parse_segments_text(text, fmt, "fuzz.csv")
    assert len(parsed.rows) + len(parsed.issues) == parsed.data_lines
    numbers = [r.line for r in parsed.rows] + [i.line for i in parsed.issues]
    assert len(set(numbers)) == len(numbers) and all(1 <= n <= max(1, len(lines)) for n in numbers)
    for row in parsed.rows:
        assert len(row.ytid) == 11 and not set(row.ytid) - set(
            "ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789_-"
        )
        assert 0 <= row.start_s < row.end_s and row.labels


# -- event-log compaction ----------------------------------------------------------------------------------------

_event = st.fixed_dictionaries(
    {
        "clip_id": st.sampled_from(["a", "b", "-c", "../d"]),
        "status": st.sampled_from(["ok", "failed"]),
        "n": st.integers(0, 5),
        "extra": st.one_of(st.none(), st.integers(0, 9)),
    }
)
_op = st.one_of(st.tuples(st.just("append"), st.lists(_event, min_size=1, max_size=4)), st.just(("compact", None)))


def _as_event(e: dict[str, Any]) -> dict[str, Any]:
    failed = e["status"] == "failed"
    return {**e, "reason": "http_5xx" if failed else None, "transient": failed}


@settings(max_examples=40, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture])
@given(ops=st.lists(_op, min_size=1, max_size=10))
def test_compaction_never_changes_latest(tmp_path_factory: pytest.TempPathFactory, ops: list) -> None:
    root = tmp_path_factory.mktemp("ledger")
    model: dict[str, dict[str, Any]] = {}
    count = 0
    for kind, events in ops:
        if kind == "append":
            ledger.append_events(root, "fetch", [_as_event(e) for e in events])
            for e in events:
                model[e["clip_id"]] = e
            count += len(events)
        else:
            ledger.compact(root, "fetch")
        got = ledger.latest(root, "fetch")
        assert {c: (r["status"], r["n"], r["extra"]) for c, r in got.items()} == {
            c: (e["status"], e["n"], e["extra"]) for c, e in model.items()
        }
        assert ledger.read_events(root, "fetch").num_rows == count  # no event lost or duplicated


def test_compaction_interrupted_before_cleanup_duplicates_nothing(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """A compaction killed after publishing the merged file but before deleting the originals must not make the
    log count every event twice (attempt counts decide `gave_up`)."""
    for i in range(3):
        ledger.append_events(tmp_path, "fetch", [_as_event({"clip_id": "a", "status": "failed", "n": i, "extra": 0})])
    real_unlink = Path.unlink

    def killed(self: Path, missing_ok: bool = False) -> None:
        if self.parent.name == "fetch" and not self.name.startswith("."):
            raise KeyboardInterrupt("killed before cleanup")
        real_unlink(self, missing_ok=missing_ok)

    monkeypatch.setattr(Path, "unlink", killed)
    with pytest.raises(KeyboardInterrupt):
        ledger.compact(tmp_path, "fetch")
    monkeypatch.undo()
    assert ledger.read_events(tmp_path, "fetch").num_rows == 3
    import pyarrow as pa

    # the attempts that status.clip_states (and so fetch planning) counts per clip
    assert ledger.latest_table(tmp_path, "fetch", pa.array(["a"]), {"status": pa.string()}).events.tolist() == [3]
    ledger.compact(tmp_path, "fetch")  # the next compaction finishes the job
    assert ledger.read_events(tmp_path, "fetch").num_rows == 3
    assert len(list((tmp_path / "events" / "fetch").glob("*.parquet"))) == 1


# -- configs -----------------------------------------------------------------------------------------------------


def _stage_configs() -> dict[str, tuple[type[BaseModel], dict[str, Any]]]:
    from tgdp.pipeline.fetch import FetchConfig
    from tgdp.pipeline.shard import ShardConfig
    from tgdp.pipeline.synth import SynthConfig
    from tgdp.pipeline.validate import ValidateConfig

    return {
        "synth": (SynthConfig, {}),
        "manifest": (ManifestConfig, {"dataset": "audioset"}),
        "fetch": (FetchConfig, {}),
        "validate": (ValidateConfig, {}),
        "shard": (ShardConfig, {}),
    }


BAD_VALUES = [
    ("synth", "num_clips", 0),
    ("synth", "difficulty", 1.5),
    ("synth", "seed", -1),
    ("manifest", "dataset", "imagenet"),
    ("manifest", "download_timeout_s", -1),
    ("fetch", "max_attempts", 0),
    ("fetch", "socket_timeout", 0),
    ("fetch", "url_template", "file:///etc/passwd?{ytid}"),
    ("validate", "min_frames", 0),
    ("validate", "duration_tol_s", -1.0),
    ("validate", "timeout_s", 0),
    ("shard", "num_frames", 0),
    ("shard", "jpeg_quality", 101),
    ("shard", "shard_bytes", 0),
]


@pytest.mark.parametrize("stage", ["synth", "manifest", "fetch", "validate", "shard"])
def test_stage_config_unknown_key_and_wrong_type_named(stage: str) -> None:
    cls, required = _stage_configs()[stage]
    with pytest.raises(ConfigError, match="unknown key 'no_such_key'"):
        validate_config(cls, {**required, "no_such_key": 1})
    field = next(k for k, f in cls.model_fields.items() if f.annotation in (int, float) and k not in required)
    with pytest.raises(ConfigError, match=rf"{field}: .*got 'abc'"):
        validate_config(cls, {**required, field: "abc"})


@pytest.mark.parametrize(("stage", "key", "value"), BAD_VALUES)
def test_stage_config_out_of_range_named(stage: str, key: str, value: Any) -> None:
    cls, required = _stage_configs()[stage]
    with pytest.raises(ConfigError, match=rf"\b{key}\b"):
        validate_config(cls, {**required, key: value})


@pytest.mark.parametrize(
    ("override", "key"),
    [
        ("model.mask_ratio_a=1.0", "mask_ratio_a"),
        ("model.contrastive_mask_ratio=1.0", "contrastive_mask_ratio"),
        ("optim.lr=-1e-4", "lr"),
        ("train.steps=abc", "steps"),
        ("train.no_such_key=1", "no_such_key"),
        ("model.no_such_key=1", "no_such_key"),
    ],
)
def test_model_and_run_config_reject_bad_values(override: str, key: str) -> None:
    from tgdp.train.config import load_run_config

    with pytest.raises(ConfigError, match=rf"\b{key}\b"):
        load_run_config("tiny_tgdp", [override]).model_cfg()


@pytest.mark.parametrize(("key", "value"), [("mask_ratio_v", 1.0), ("gumbel_tau", 0.0), ("embed_dim", -8)])
def test_model_config_direct(key: str, value: Any) -> None:
    from tgdp.model import ModelConfig

    with pytest.raises(ConfigError, match=rf"\b{key}\b"):
        validate_config(ModelConfig, {key: value})
    with pytest.raises(ConfigError, match="unknown key 'mask_ratio'"):
        validate_config(ModelConfig, {"mask_ratio": 0.5})


def test_stage_config_from_yaml_names_nested_key(tmp_path: Path) -> None:
    from tgdp.pipeline.synth import SynthConfig

    (tmp_path / "s.yaml").write_text("num_clips: 4\nsizes: [[63, 64]]\n")
    with pytest.raises(ConfigError, match="sizes"):
        load_config(SynthConfig, tmp_path / "s.yaml")
