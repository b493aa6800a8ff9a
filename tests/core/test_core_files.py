"""tgdp.core's atomic files, run lock and device choice."""

from __future__ import annotations

import os
import subprocess
import sys
import threading
from pathlib import Path

import pytest
import torch

from tgdp.core.atomic import TMP_PREFIX, atomic_path, atomic_write, temp_path
from tgdp.core.device import DeviceError, pick_device
from tgdp.core.lock import LockedError, RunLock


def test_atomic_path_commits_on_success_and_removes_the_temporary_on_failure(tmp_path: Path) -> None:
    target = tmp_path / "a.bin"
    atomic_write(target, "old")
    with pytest.raises(OSError), atomic_path(target) as tmp:
        assert tmp == tmp_path / f"{TMP_PREFIX}{os.getpid()}-a.bin" == temp_path(target)
        tmp.write_bytes(b"half")
        raise OSError("disk full")
    assert target.read_text() == "old" and sorted(p.name for p in tmp_path.iterdir()) == ["a.bin"]
    with atomic_path(target) as tmp, open(tmp, "wb") as fh:
        fh.write(b"new")
    assert target.read_bytes() == b"new" and sorted(p.name for p in tmp_path.iterdir()) == ["a.bin"]


class _HeldElsewhere(RuntimeError):
    pass


def test_run_lock_refuses_a_second_run_naming_the_holder_and_frees_on_release(tmp_path: Path) -> None:
    path = tmp_path / "tmp" / "x.lock"
    code = (
        "import sys; from tgdp.core.lock import RunLock; l = RunLock(sys.argv[1], what='x');"
        " print('held', flush=True); sys.stdin.read(); l.release()"
    )
    holder = subprocess.Popen([sys.executable, "-c", code, str(path)], stdin=subprocess.PIPE, stdout=subprocess.PIPE)
    try:
        assert holder.stdout is not None and holder.stdout.readline().strip() == b"held"
        with pytest.raises(LockedError, match=rf"another x run holds {path} \(pid {holder.pid} on .+, started "):
            RunLock(path, what="x")
        with pytest.raises(_HeldElsewhere, match="wait for it or stop it"):  # a caller's own class
            RunLock(path, what="x", error=_HeldElsewhere)
    finally:
        assert holder.stdin is not None
        holder.stdin.close()
        holder.wait(timeout=60)
    assert not path.exists()  # removed by its holder on release
    with RunLock(path, what="x") as lock:
        assert f'"pid": {os.getpid()}' in path.read_text()
    assert lock.fh.closed and not path.exists()


def test_pick_device_auto_cpu_and_a_missing_cuda(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(torch.cuda, "is_available", lambda: False)
    assert pick_device("auto") == torch.device("cpu") and pick_device("cpu", local_rank=3) == torch.device("cpu")
    with pytest.raises(DeviceError, match=r"^train.device=cuda but CUDA is not available$"):
        pick_device("cuda", 0, key="train.device")
    monkeypatch.setattr(torch.cuda, "is_available", lambda: True)
    assert pick_device("auto", local_rank=2) == torch.device("cuda", 2) and str(pick_device("auto")) == "cuda"
    assert pick_device("cuda:1", local_rank=2) == torch.device("cuda", 1)  # an explicit index wins


def test_run_lock_wait_blocks_until_the_holder_releases_then_takes_a_fresh_file(tmp_path: Path) -> None:
    # the shard cache's mode: a second downloader waits for the first instead of failing
    path = tmp_path / ".lock-ab"
    acquired = threading.Event()
    first = RunLock(path, what="shard download", wait=True)

    def second() -> None:
        with RunLock(path, what="shard download", wait=True):
            acquired.set()

    waiter = threading.Thread(target=second)
    waiter.start()
    assert not acquired.wait(timeout=0.5)  # blocked while the first holds it
    first.release()
    assert acquired.wait(timeout=30)
    waiter.join(timeout=30)
    assert not path.exists()
