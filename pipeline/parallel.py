"""Parallel execution for the pipeline: the only module that imports Ray, and the only one with a worker pool.

Three shapes of work:
- `map_unordered(fn, items, ...)`: CPU-bound per-item work (validate, shard), one Ray task per item with
  `num_workers` in flight, results yielded as they finish (order not kept).
- `run_sessions(make_session, items, ...)`: I/O-bound work whose throughput is bounded per download session (per
  egress IP / account), not per core (docs/FETCH.md). Each session is one long-lived Ray actor holding its own state
  (a yt-dlp instance, a rate limiter); it runs `in_flight` items at once on threads. Actors reserve no CPU, so a
  2-core machine can host several sessions. Scale by adding sessions, not threads.
- `map_threads(fn, items, workers)`: a few local subprocesses at a time (synth's ffmpeg encodes, the `files`
  manifest's ffprobe calls), in item order, on threads: no Ray, since the work runs outside Python.

Dict results (events) from the Ray backend carry `ray_node`, the node that produced them.
Both have a `backend="serial"` path that runs the same callables in-process without Ray (tests, debugging).
Ray is started with `ray.init(num_cpus=..., include_dashboard=False, ignore_reinit_error=True,
log_to_driver=False, logging_level=WARNING)` when not already running (or connected to `address`), and shut down
again only when this module started it. Its start-up notices ("Started a local Ray instance", and the "Token
authentication is enabled" warning, which says the secure default is on) are not printed on every command.
Callables and items must be picklable for the Ray backend (module-level functions, partials).
"""

from __future__ import annotations

import logging
import os
from collections.abc import Callable, Iterable, Iterator
from contextlib import contextmanager
from typing import Any, Literal, TypeVar

__all__ = ["Backend", "map_threads", "map_unordered", "ray_session", "run_sessions"]

T = TypeVar("T")
R = TypeVar("R")
Backend = Literal["ray", "serial"]


def _check_backend(backend: str) -> None:
    if backend not in ("ray", "serial"):
        raise ValueError(f"backend must be 'ray' or 'serial', got {backend!r}")


@contextmanager
def ray_session(num_cpus: int | None = None, address: str | None = None) -> Iterator[Any]:
    """Yield the `ray` module with Ray running; shut it down on exit only if this call started it."""
    import ray

    started = False
    if not ray.is_initialized():
        os.environ.setdefault("RAY_USAGE_STATS_ENABLED", "0")
        kwargs: dict[str, Any] = dict(
            include_dashboard=False, ignore_reinit_error=True, log_to_driver=False, logging_level=logging.WARNING
        )
        # Token authentication stays on (Ray's default); only its notice goes, which a pipeline command would
        # print on every start.
        logging.getLogger("ray._private.authentication").setLevel(logging.ERROR)
        if address:
            ray.init(address=address, **kwargs)
        else:
            ray.init(num_cpus=num_cpus, **kwargs)
        started = True
    try:
        yield ray
    finally:
        if started:
            ray.shutdown()


def _apply(fn: Callable[[T], R], item: T) -> R:
    return _placed(fn(item))


def _placed(out: R) -> R:
    """Tag a dict result (an event) with `ray_node`, the id of the Ray node that produced it: on a cluster the
    event log then says where each clip was fetched or validated (the ledger's `worker` is the driver)."""
    if isinstance(out, dict):
        import ray

        out.setdefault("ray_node", ray.get_runtime_context().get_node_id())
    return out


def map_unordered(
    fn: Callable[[T], R],
    items: Iterable[T],
    *,
    backend: Backend = "ray",
    num_workers: int = 2,
    address: str | None = None,
) -> Iterator[R]:
    """Yield `fn(item)` for every item, in completion order, with at most `num_workers` running at once.

    An exception raised by `fn` propagates (and stops the iteration): per-item failures that should be recorded
    belong in `fn`'s return value. Items are consumed lazily, so `items` may be a large generator.
    """
    _check_backend(backend)
    if num_workers < 1:
        raise ValueError("num_workers must be >= 1")
    if backend == "serial":
        for item in items:
            yield fn(item)
        return
    with ray_session(num_cpus=num_workers, address=address) as ray:
        remote = ray.remote(num_cpus=1, max_retries=0)(_apply)
        fn_ref = ray.put(fn)
        pending: list[Any] = []
        source = iter(items)
        exhausted = False
        while True:
            while not exhausted and len(pending) < num_workers:
                try:
                    pending.append(remote.remote(fn_ref, next(source)))
                except StopIteration:
                    exhausted = True
            if not pending:
                return
            done, pending = ray.wait(pending, num_returns=1)
            yield ray.get(done[0])


def map_threads(fn: Callable[[T], R], items: Iterable[T], workers: int) -> list[R]:
    """`[fn(item) for item in items]` with `workers` running at once on threads, in item order; the first
    exception (in item order) propagates once the running calls have finished."""
    from concurrent.futures import ThreadPoolExecutor

    with ThreadPoolExecutor(max(1, workers)) as pool:
        return list(pool.map(fn, items))


class _SessionHost:
    """Ray actor body: owns one session object and runs items through it (threaded: `max_concurrency`)."""

    def __init__(self, make_session: Callable[[str], Callable[[Any], Any]], session_id: str) -> None:
        self.session = make_session(session_id)

    def run(self, item: Any) -> Any:
        return _placed(self.session(item))

    def close(self) -> None:
        close = getattr(self.session, "close", None)
        if close is not None:
            close()


def run_sessions(
    make_session: Callable[[str], Callable[[T], R]],
    items: Iterable[T],
    *,
    sessions: int = 1,
    in_flight: int = 2,
    backend: Backend = "ray",
    address: str | None = None,
    num_cpus: int = 2,
    session_prefix: str = "s",
) -> Iterator[R]:
    """Run `session(item)` for every item across `sessions` sessions, each with `in_flight` items at a time.

    `make_session(session_id)` builds one session (a callable, optionally with `close()`); it runs inside the
    session's actor, so it may hold unpicklable state. Results are yielded in completion order.
    Serial backend: sessions live in-process and items run one at a time, round-robin over the sessions.
    """
    _check_backend(backend)
    if sessions < 1 or in_flight < 1:
        raise ValueError("sessions and in_flight must be >= 1")
    ids = [f"{session_prefix}{i}" for i in range(sessions)]
    if backend == "serial":
        hosts = [make_session(sid) for sid in ids]
        try:
            for i, item in enumerate(items):
                yield hosts[i % sessions](item)
        finally:
            for host in hosts:
                close = getattr(host, "close", None)
                if close is not None:
                    close()
        return
    with ray_session(num_cpus=num_cpus, address=address) as ray:
        actor_cls = ray.remote(_SessionHost)
        actors = [
            # SPREAD: on a cluster, sessions land on different nodes (egress IPs) where Ray can place them, since
            # download throughput is limited per session/IP, not per core.
            actor_cls.options(
                num_cpus=0, max_concurrency=in_flight, max_restarts=0, scheduling_strategy="SPREAD"
            ).remote(make_session, sid)
            for sid in ids
        ]
        load = [0] * sessions
        owner: dict[Any, int] = {}
        source = iter(items)
        exhausted = False
        try:
            while True:
                while not exhausted:
                    free = min(range(sessions), key=lambda k: load[k])
                    if load[free] >= in_flight:
                        break
                    try:
                        item = next(source)
                    except StopIteration:
                        exhausted = True
                        break
                    ref = actors[free].run.remote(item)
                    owner[ref] = free
                    load[free] += 1
                if not owner:
                    break
                done, _ = ray.wait(list(owner), num_returns=1)
                load[owner.pop(done[0])] -= 1
                yield ray.get(done[0])
        finally:
            closing = [a.close.remote() for a in actors]
            try:
                ray.get(closing, timeout=30)
            except Exception:  # noqa: BLE001 - a dead actor must not hide the original error
                pass
            for a in actors:
                ray.kill(a)
