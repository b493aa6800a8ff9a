"""Every script in benchmarks/ runs at its tiny scale (so none can rot unseen), writing its BENCHMARKS.md section to a
temporary file, never the repository's; and the scale benchmark builds its events through the stages' own event
constructors."""

from __future__ import annotations

import os
import re
import subprocess
import sys
from pathlib import Path

import numpy as np
import pyarrow as pa
import pytest

REPO = Path(__file__).resolve().parents[2]
SCRIPTS = sorted(p.stem for p in (REPO / "benchmarks").glob("*.py") if p.stem not in ("__init__", "harness"))
# Scripts whose tiny run lives in another test (it shares that test's expensive set-up); the test must name them.
ELSEWHERE = {
    "bench_demo": REPO / "tests" / "demo" / "test_demo_chain.py",
    "gpu_check": REPO / "tests" / "bench" / "test_gpu_check.py",
    "fingerprint": REPO / "tests" / "demo" / "test_demo_chain.py",
}
# How each script is run at its tiny scale, and the BENCHMARKS.md section it must write (None: it writes none).
COMMANDS: dict[str, tuple[list[str], str | None]] = {
    "bench_fetch": (["--tiny"], "fetch"),
    "bench_model": (["--tiny"], "model"),
    "bench_pipeline": (["--tiny"], "pipeline"),
    "bench_retrieval": (["--tiny"], "retrieval"),
    "bench_scale": (["--tiny"], "scale"),
    "bench_store": (["--tiny"], "store-s3"),
    "bench_train": (["--tiny"], "train"),
    "distill_study": (["grads", "--tiny"], None),
    "run_all": (["--tiny", "bench_model"], "model"),
}


def _repo_section(name: str | None) -> str | None:
    """The repository's BENCHMARKS.md section `name` (only it: a real `make bench` may rewrite the others meanwhile)."""
    path = REPO / "BENCHMARKS.md"
    if name is None or not path.exists():
        return None
    found = re.search(rf"<!-- bench:{name} -->.*?<!-- /bench:{name} -->", path.read_text(encoding="utf-8"), re.S)
    return found.group(0) if found else None


def test_every_script_is_covered() -> None:
    assert set(SCRIPTS) == set(COMMANDS) | set(ELSEWHERE), "a new benchmark script needs a tiny run here"
    for name, test in ELSEWHERE.items():
        assert f"benchmarks.{name}" in test.read_text(encoding="utf-8") or name in test.read_text(encoding="utf-8")


@pytest.mark.slow
@pytest.mark.parametrize("name", sorted(COMMANDS))
def test_script_runs_at_tiny_scale(name: str, tmp_path: Path, ffmpeg_bin: str) -> None:
    args, section = COMMANDS[name]
    md = tmp_path / "BENCHMARKS.md"
    before = _repo_section(section)
    if name == "bench_store":
        from tgdp.store.seaweed import weed_binary

        if weed_binary() is None:
            pytest.skip("SeaweedFS `weed` not installed (the dev extras bring it)")
    env = dict(os.environ, RAY_USAGE_STATS_ENABLED="0", BENCH_MODEL_BASE="0")
    env.pop("TGDP_BENCH_MD", None)
    cmd = [sys.executable, "-m", f"benchmarks.{name}", *args, "--md", str(md)]
    if name == "distill_study":
        cmd = cmd[:-2]  # it prints tables and writes no section
    proc = subprocess.run(cmd, cwd=REPO, env=env, capture_output=True, text=True, timeout=300)
    assert proc.returncode == 0, proc.stdout[-3000:] + proc.stderr[-3000:]
    if section is not None:
        text = md.read_text(encoding="utf-8")
        assert f"<!-- bench:{section} -->" in text and f"<!-- /bench:{section} -->" in text
        assert "| figure | min | median | max |" in text
    else:
        assert "|" in proc.stdout
    assert _repo_section(section) == before, "a tiny run wrote to the repository's BENCHMARKS.md"


def test_scale_events_follow_the_stage_schemas() -> None:
    from benchmarks.bench_scale import event_table
    from tgdp.pipeline.fetch import EVENT_COLUMNS, fetch_event

    table = event_table("fetch", {"clip_id": pa.array(["a", "b"]), "in_attempt_retries": pa.array([0, 2])}, 2)
    assert table.column_names == list(EVENT_COLUMNS) == list(fetch_event({}))  # what the code writes, in order
    assert table.column("in_attempt_retries").to_pylist() == [0, 2]
    assert table.column("rate_wait_s").type == pa.float64() and table.column("rate_wait_s").null_count == 2
    with pytest.raises(ValueError, match="no longer writes"):
        event_table("fetch", {"clip_id": pa.array(["a"]), "retired_column": pa.array([1])}, 1)


def test_scale_event_logs_read_back_with_every_fetch_column(tmp_path: Path) -> None:
    from benchmarks.bench_scale import write_events
    from tgdp.pipeline import ledger
    from tgdp.pipeline.fetch import EVENT_COLUMNS
    from tgdp.pipeline.validate import ValidateConfig, new_event

    ids = pa.array([f"audioset:id{i:08d}:0" for i in range(300)])
    counts = write_events(tmp_path, ids, shard=True)
    fetched = ledger.read_events(tmp_path, "fetch")
    assert fetched.num_rows == counts["fetch"]
    assert set(EVENT_COLUMNS) <= set(fetched.column_names)
    assert np.nanmax(fetched.column("rate_wait_s").to_numpy(zero_copy_only=False)) > 0
    validated = ledger.read_events(tmp_path, "validate")
    assert set(new_event("", ValidateConfig())) <= set(validated.column_names)
    assert ledger.read_events(tmp_path, "shard").num_rows == counts["shard"] > 0
