"""map_unordered / run_sessions on the in-process backend, and the session token bucket."""

from __future__ import annotations

import time

import pytest

from tgdp.pipeline.fetch import TokenBucket
from tgdp.pipeline.parallel import map_threads, map_unordered, run_sessions


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


def test_map_threads_keeps_item_order_and_bounds_the_threads() -> None:
    import threading

    running, peak, lock = [0], [0], threading.Lock()

    def slow_square(x: int) -> int:
        with lock:
            running[0] += 1
            peak[0] = max(peak[0], running[0])
        time.sleep(0.01 * (5 - x))  # later items finish first
        with lock:
            running[0] -= 1
        return x * x

    assert map_threads(slow_square, range(5), workers=2) == [0, 1, 4, 9, 16]
    assert peak[0] <= 2
    with pytest.raises(ZeroDivisionError):
        map_threads(lambda x: 1 // x, [1, 0, 2], workers=2)


def test_task_records_and_bound_settings_travel_to_workers() -> None:
    """What Ray ships (pickled): the typed task records, and each stage's worker with the run's settings bound once."""
    import functools
    import pickle

    from tgdp.pipeline.features import FeatureParams
    from tgdp.pipeline.fetch import FetchConfig, FetchTask
    from tgdp.pipeline.shard import ShardConfig, ShardTask, shard_clip
    from tgdp.pipeline.validate import ValidateConfig, ValidateTask, validate_clip

    tasks = [
        FetchTask("c", "y", 1.0, 2.0, attempt=2, prior_transient=1),
        ValidateTask("c", "/r/raw/c.mkv", 1.0, 2.0, section_start_s=0.0, source="fetch", fetch_sha256="ab"),
        ShardTask("c", "/r/raw/c.mkv", 1.0, 1.0, row={"clip_id": "c", "labels": ["/m/x"]}, cache_path="/r/f.npz"),
    ]
    for task in tasks:
        assert pickle.loads(pickle.dumps(task)) == task
        with pytest.raises(AttributeError):
            task.clip_id = "other"  # frozen: a worker cannot change what the driver planned
    features = FeatureParams(num_mel_bins=64)
    for work in (
        functools.partial(validate_clip, cfg=ValidateConfig(min_frames=8), features=features, pad_s=1.5),
        functools.partial(shard_clip, cfg=ShardConfig(timeout_s=9.0), features=features),
    ):
        back = pickle.loads(pickle.dumps(work))
        assert back.func is work.func and back.keywords == work.keywords
    assert pickle.loads(pickle.dumps(FetchConfig(rate_per_hour=0))) == FetchConfig(rate_per_hour=0)
