"""map_unordered / run_sessions on the in-process backend, and the session token bucket."""

from __future__ import annotations

import time

import pytest

from tgdp.pipeline.fetch import TokenBucket
from tgdp.pipeline.parallel import map_unordered, run_sessions


def _square(x: int) -> int:
    return x * x


class _Counter:
    closed: list[str] = []

    def __init__(self, sid: str) -> None:
        self.sid = sid

    def __call__(self, item: int) -> tuple[str, int]:
        return self.sid, item

    def close(self) -> None:
        _Counter.closed.append(self.sid)


def test_parallel_map_unordered_serial_is_lazy() -> None:
    seen: list[int] = []

    def gen():
        for i in range(5):
            seen.append(i)
            yield i

    it = map_unordered(_square, gen(), backend="serial", num_workers=2)
    assert next(it) == 0 and seen == [0]
    assert sorted([0, *it]) == [0, 1, 4, 9, 16]
    with pytest.raises(ValueError):
        list(map_unordered(_square, [1], backend="dask"))  # type: ignore[arg-type]
    with pytest.raises(ValueError):
        list(map_unordered(_square, [1], backend="serial", num_workers=0))


def test_parallel_run_sessions_serial_round_robin_and_close() -> None:
    _Counter.closed = []
    out = list(run_sessions(_Counter, range(6), sessions=3, backend="serial", session_prefix="x"))
    assert out == [("x0", 0), ("x1", 1), ("x2", 2), ("x0", 3), ("x1", 4), ("x2", 5)]
    assert sorted(_Counter.closed) == ["x0", "x1", "x2"]


def test_parallel_token_bucket_paces_starts() -> None:
    bucket = TokenBucket(rate_per_hour=3600 * 20, burst=2)  # 20 starts/s after a burst of 2
    t0 = time.monotonic()
    waits = [bucket.acquire() for _ in range(6)]
    elapsed = time.monotonic() - t0
    assert waits[0] == waits[1] == 0.0
    assert elapsed >= 4 / 20 - 0.01  # four paced starts at 20/s
    assert TokenBucket(0).acquire() == 0.0
