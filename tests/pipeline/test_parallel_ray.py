"""The Ray backend (one local Ray with num_cpus=2 for the module): map_unordered, session actors, fetch."""

from __future__ import annotations

import os
from collections.abc import Callable, Iterator
from pathlib import Path

import pytest

from tests.fixtures import make_corpus, make_root
from tgdp.pipeline import ledger
from tgdp.pipeline.fetch import FetchConfig, fetch
from tgdp.pipeline.parallel import map_unordered, ray_session, run_sessions
from tgdp.pipeline.serve import MediaServer

pytestmark = [pytest.mark.ray, pytest.mark.slow]


@pytest.fixture(scope="module")
def ray_local() -> Iterator[object]:
    # Ray workers inherit the driver's environment at start: let them import this test module (`tests.pipeline...`).
    old = os.environ.get("PYTHONPATH")
    os.environ["PYTHONPATH"] = os.pathsep.join(p for p in (str(Path(__file__).parents[2]), old) if p)
    try:
        with ray_session(num_cpus=2) as ray:
            yield ray
    finally:
        if old is None:
            os.environ.pop("PYTHONPATH", None)
        else:
            os.environ["PYTHONPATH"] = old


def _cube(x: int) -> int:
    return x**3


class _Echo:
    def __init__(self, sid: str) -> None:
        self.sid, self.pid = sid, os.getpid()

    def __call__(self, item: int) -> tuple[str, int, int]:
        return self.sid, self.pid, item


def test_parallel_ray_map_unordered(ray_local: object) -> None:
    out = list(map_unordered(_cube, iter(range(20)), backend="ray", num_workers=2))
    assert sorted(out) == [x**3 for x in range(20)]


def test_parallel_ray_session_actors(ray_local: object) -> None:
    out = list(run_sessions(_Echo, range(10), sessions=2, in_flight=2, backend="ray", session_prefix="q"))
    assert sorted(i for _, _, i in out) == list(range(10))
    by_session = {sid: pid for sid, pid, _ in out}
    assert set(by_session) == {"q0", "q1"} and len(set(by_session.values())) == 2  # one actor process each


def test_fetch_with_ray_sessions(ray_local: object, tmp_path: Path, make_clip: Callable[..., Path]) -> None:
    ytids = [f"r{i}" for i in range(4)]
    master = make_clip(tmp_path / "m.mp4", duration=4.0)
    make_corpus(tmp_path / "c", master, ytids)
    root = make_root(tmp_path / "root", [{"ytid": y, "start_s": 1.0} for y in ytids], dataset="synth", split="synth")
    with MediaServer(tmp_path / "c") as base:
        cfg = FetchConfig(url_template=base + "/v/{ytid}", backend="ray", sessions=2, in_flight=1, rate_per_hour=0)
        summary = fetch(root, cfg)
    assert summary.ok == len(ytids)
    latest = ledger.latest(root, "fetch")
    assert all(ev["status"] == "ok" and (root / ev["raw_path"]).is_file() for ev in latest.values())
    assert len({ev["session_id"] for ev in latest.values()}) == 2
