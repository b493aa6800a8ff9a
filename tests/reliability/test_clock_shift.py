"""The event order survives a system clock stepped back or forward: real CLI runs with a shifted clock give the same
status, export and fetch plan as an unshifted run (the clock patched in the child process by a `sitecustomize`)."""

from __future__ import annotations

import inspect
import json
import os
import shutil
import subprocess
import sys
from collections.abc import Callable
from pathlib import Path

import pyarrow as pa
import pyarrow.parquet as pq
import pytest
from typer.testing import CliRunner

from tests.fixtures import make_corpus, make_root
from tgdp.pipeline import ledger
from tgdp.pipeline.cli import app
from tgdp.pipeline.export import run_export
from tgdp.pipeline.fetch import FetchConfig, fetch, plan_fetch
from tgdp.pipeline.serve import FaultSpec, MediaServer
from tgdp.pipeline.status import funnel
from tgdp.pipeline.validate import ValidateConfig, run_validate

DAY = 86400

# Shifts the child's time.time/time_ns by TGDP_TEST_CLOCK_SHIFT_S (the driver shifts the package's datetime.now).
SITECUSTOMIZE = """
import os, time
_shift = float(os.environ.get("TGDP_TEST_CLOCK_SHIFT_S", "0"))
_time, _time_ns = time.time, time.time_ns
time.time = lambda: _time() + _shift
time.time_ns = lambda: _time_ns() + int(_shift * 1e9)
"""

# What `outcome` needs in the child.
IMPORTS = """
import json
from pathlib import Path
import pyarrow.parquet as pq
from tgdp.pipeline.export import run_export
from tgdp.pipeline.fetch import FetchConfig, plan_fetch
from tgdp.pipeline.status import funnel
"""

# One child process runs both CLI commands (one interpreter start-up), then `outcome` on its own clock.
DRIVER = """
import datetime as dt, json, sys, time
import tgdp.pipeline.fetch, tgdp.pipeline.ledger, tgdp.pipeline.status, tgdp.pipeline.validate
from tgdp.pipeline.cli import app

class ShiftedDatetime(dt.datetime):  # given to the package's modules only: C extensions keep the real class
    @classmethod
    def now(cls, tz=None):
        return dt.datetime.fromtimestamp(time.time(), tz)

for name, mod in list(sys.modules.items()):
    if name.startswith("tgdp.") and getattr(mod, "datetime", None) is dt.datetime:
        mod.datetime = ShiftedDatetime
root, base = sys.argv[1], sys.argv[2]
for args in commands(root, base):
    try:
        app(args, standalone_mode=False)
    except SystemExit as exc:
        assert not exc.code, exc.code
print(json.dumps(outcome(root, root + "-export")))
"""


def commands(root: str, base: str) -> list[list[str]]:
    """The rerun: fetch --retry-now (the 503 clip refetched), then validate with a stricter rule."""
    fetch = [
        "fetch",
        root,
        "--backend",
        "serial",
        "--retry-now",
        "--no-progress",
        "--set",
        f"fetch.url_template={base}/v/{{ytid}}",
        "--set",
        "fetch.rate_per_hour=0",
        "--set",
        "fetch.retries=0",
    ]
    validate = ["validate", root, "--backend", "serial", "--no-progress", "--set", "validate.min_frames=100"]
    return [fetch, validate]  # fmt: skip


def outcome(root: str, out: str) -> dict:
    """status, export and the fetch plan of ROOT, as seen by a process on the current clock (the child runs this
    function's source after IMPORTS)."""
    f = funnel(Path(root))
    run_export(Path(root), Path(out))
    plan = {
        str(retry): sorted(plan_fetch(Path(root), FetchConfig(retry_now=retry)).column("clip_id").to_pylist())
        for retry in (False, True)
    }
    return {
        "funnel": {k: f[k] for k in ("source", "fetch", "validate", "check")},
        "export_ids": (Path(out) / "clip_ids.txt").read_text(),
        "export_rows": pq.read_metadata(Path(out) / "manifest.parquet").num_rows,
        "export_funnel": json.loads((Path(out) / "funnel.json").read_text())["validate"],
        "plan": plan,
    }


def _rerun_here(root: Path, base: str) -> dict:
    """The unshifted rerun, in this process."""
    for args in commands(str(root), base):
        res = CliRunner().invoke(app, args)
        assert res.exit_code == 0, res.output
    return outcome(str(root), f"{root}-export")


def _rerun(root: Path, base: str, shift_s: int, site: Path) -> dict:
    env = {**os.environ, "TGDP_TEST_CLOCK_SHIFT_S": str(shift_s)}
    env["PYTHONPATH"] = os.pathsep.join([str(site), env.get("PYTHONPATH", "")])
    probe = "import time; print(time.time())"
    seen = float(subprocess.run([sys.executable, "-c", probe], env=env, capture_output=True, text=True).stdout)
    assert abs(seen - (__import__("time").time() + shift_s)) < 60, "the clock shift is not applied"
    driver = IMPORTS + inspect.getsource(commands) + inspect.getsource(outcome) + DRIVER
    out = subprocess.run([sys.executable, "-c", driver, str(root), base], env=env, capture_output=True, text=True)
    assert out.returncode == 0, out.stderr[-3000:]
    return json.loads(out.stdout.strip().splitlines()[-1])


@pytest.mark.reliability
def test_a_shifted_clock_does_not_reorder_events(tmp_path: Path, make_clip: Callable[..., Path]) -> None:
    master = make_clip(tmp_path / "master.mp4", duration=4.0)
    ytids = ["a1", "a2", "a3", "flaky", "down"]
    corpus = make_corpus(tmp_path / "corpus", master, ytids)
    first = tmp_path / "first"
    make_root(first, [{"ytid": y, "start_s": 1.0, "end_s": 3.0, "labels": ["/m/0"]} for y in ytids])
    site = tmp_path / "site"
    site.mkdir()
    (site / "sitecustomize.py").write_text(SITECUSTOMIZE)
    faults = {"flaky": FaultSpec(kind="http", status=503, times=1), "down": FaultSpec(kind="http", status=503)}
    with MediaServer(corpus, faults=faults) as base:
        cfg = FetchConfig(url_template=base + "/v/{ytid}", backend="serial", rate_per_hour=0, retries=0)
        assert fetch(first, cfg).ok == 3  # flaky and down: a 503, pending http_5xx
        assert run_validate(first, ValidateConfig(), backend="serial").valid == 3
        seen, later = {}, {}
        for shift in (0, -DAY, DAY):
            root = tmp_path / f"root{shift}"
            shutil.copytree(first, root)
            # flaky refetched (down fails again), then validate with a stricter rule; the outcome on the child's clock
            seen[shift] = _rerun(root, base, shift, site) if shift else _rerun_here(root, base)
            later[shift] = outcome(str(root), str(tmp_path / f"export-later{shift}"))  # once the clock is right
    clean = seen[0]
    fe, va = clean["funnel"]["fetch"], clean["funnel"]["validate"]
    counts = (fe["fetched"], fe["pending_transient"], fe["pending_backoff"], va["valid"], va["dropped"])
    assert counts == (4, 1, 1, 0, 4)
    assert clean["export_rows"] == 0 and clean["export_ids"] == ""
    assert clean["plan"] == {"False": [], "True": ["audioset:down:1000"]}  # down backs off; --retry-now tries it
    assert seen[-DAY] == clean
    assert seen[DAY] == clean
    # After the clock is set right, only the backoff of `down` (a wall-clock wait by design) may differ.
    for shift in (-DAY, DAY):
        for res in (later[shift], later[0]):
            res["funnel"]["fetch"].pop("pending_backoff", None)
            res["plan"].pop("False", None)
        assert later[shift] == later[0]


def _old_name(ns: int) -> str:
    return f"{ns:020d}-4242-0badcafe.parquet"  # how event files were named before the sequence


def _ev(cid: str, n: int) -> dict:
    return {"clip_id": cid, "status": "ok", "reason": None, "transient": False, "n": n}


def test_old_time_named_event_files_read_in_order_before_new_ones(tmp_path: Path) -> None:
    d = tmp_path / "events" / "validate"
    d.mkdir(parents=True)
    # an old ROOT: two time-named files, the later one wins
    pq.write_table(pa.Table.from_pylist([_ev("a", 1), _ev("b", 1)]), d / _old_name(1_700_000_000_000_000_000))
    pq.write_table(pa.Table.from_pylist([_ev("a", 2)]), d / _old_name(1_700_000_000_500_000_000))
    assert {c: e["n"] for c, e in ledger.latest(tmp_path, "validate").items()} == {"a": 2, "b": 1}
    # a new event file sorts after them even when its clock reads a time far in the future of theirs or before it
    ledger.append_events(tmp_path, "validate", [_ev("b", 3)])
    ledger.append_events(tmp_path, "validate", [_ev("a", 4)])
    assert {c: e["n"] for c, e in ledger.latest(tmp_path, "validate").items()} == {"a": 4, "b": 3}
    ledger.compact(tmp_path, "validate")
    ledger.append_events(tmp_path, "validate", [_ev("b", 5)])
    assert [e["n"] for e in ledger.read_events(tmp_path, "validate").to_pylist()] == [1, 1, 2, 3, 4, 5]


def test_event_files_are_numbered_whatever_the_clock(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    import time

    for i, ns in enumerate([2_000_000_000_000_000_000, 1_000_000_000_000_000_000, 3_000]):
        monkeypatch.setattr(time, "time_ns", lambda ns=ns: ns)
        ledger.append_events(tmp_path, "fetch", [_ev("a", i)])
    assert ledger.latest(tmp_path, "fetch")["a"]["n"] == 2
    names = sorted(p.name for p in (tmp_path / "events" / "fetch").iterdir())
    assert names == [f"s{i:020d}.parquet" for i in (1, 2, 3)]


def test_event_files_are_numbered_without_hard_links(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    import errno

    def no_links(src: object, dst: object) -> None:
        raise OSError(errno.EPERM, "Operation not permitted")

    monkeypatch.setattr(os, "link", no_links)
    for i in range(3):
        ledger.append_events(tmp_path, "fetch", [_ev("a", i)])
    (tmp_path / "events" / "fetch" / f"s{4:020d}.parquet").touch()  # a name being claimed: not yet an event file
    assert [e["n"] for e in ledger.read_events(tmp_path, "fetch").to_pylist()] == [0, 1, 2]
    ledger.append_events(tmp_path, "fetch", [_ev("a", 3)])  # the claimed name is skipped, not overwritten
    assert ledger.latest(tmp_path, "fetch")["a"]["n"] == 3
