"""validate on one ROOT at a time, a full disk under the feature cache, and the temporaries of killed runs."""

from __future__ import annotations

import errno
import os
import shutil
import subprocess
import time
from collections.abc import Callable, Iterator
from pathlib import Path

import numpy as np
import pytest
from typer.testing import CliRunner

from tests.fixtures import make_root
from tests.pipeline.lock_support import held_lock
from tgdp.pipeline import features, ledger
from tgdp.pipeline.cli import app
from tgdp.pipeline.validate import ValidateError, run_validate, validate_lock

YTIDS = ["v1", "v2", "v3"]


@pytest.fixture(scope="module")
def clip(tmp_path_factory: pytest.TempPathFactory, make_clip: Callable[..., Path]) -> Path:
    return make_clip(tmp_path_factory.mktemp("media") / "c.mp4", duration=3.0)


def _root(path: Path, clip: Path) -> Path:
    rows = [{"ytid": y, "start_s": 0.0, "end_s": 3.0, "media": clip} for y in YTIDS]
    return make_root(path, rows, section_start_s=0.0)


def _verdicts(root: Path) -> dict[str, tuple]:
    return {c: (e["valid"], e["reason"], e["feature_cache"]) for c, e in ledger.latest(root, "validate").items()}


def _cache(root: Path) -> dict[str, bytes]:
    return {str(p.relative_to(root)): p.read_bytes() for p in sorted((root / "features").rglob("*")) if p.is_file()}


def test_a_second_validate_on_one_root_is_refused_naming_the_holder(tmp_path: Path, clip: Path) -> None:
    import socket

    root = _root(tmp_path / "root", clip)
    # another validate on this ROOT: holds the lock until released
    with held_lock("tgdp.pipeline.validate", "validate_lock", root) as holder:
        with pytest.raises(ValidateError) as err:
            run_validate(root, backend="serial")
        msg = str(err.value)
        assert f"pid {holder.pid}" in msg and socket.gethostname() in msg and "tgdp-data validate" in msg, msg
        assert not ledger.has_events(root, "validate")  # the refused run did no work
    assert run_validate(root, backend="serial").valid == 3
    assert not (root / "tmp" / "validate.lock").exists()
    validate_lock(root).release()  # free again


def test_a_full_disk_under_the_feature_cache_is_an_error_and_the_rerun_converges(
    tmp_path: Path, clip: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    clean = _root(tmp_path / "clean", clip)
    run_validate(clean, backend="serial")
    root = _root(tmp_path / "root", clip)
    real_savez = np.savez
    calls = []

    def savez_then_full(fh, **arrays):  # the second cache entry meets a full disk halfway through its write
        calls.append(fh.name)
        if len(calls) == 2:
            fh.write(b"PK\x03\x04 partial")
            raise OSError(errno.ENOSPC, os.strerror(errno.ENOSPC))
        return real_savez(fh, **arrays)

    monkeypatch.setattr(features.np, "savez", savez_then_full)
    res = CliRunner().invoke(app, ["validate", str(root), "--backend", "serial", "--no-progress"])
    monkeypatch.undo()
    assert res.exit_code == 2, res.output
    lines = [line for line in res.stderr.splitlines() if line.strip()]
    assert len(lines) == 1 and "no space left on device" in lines[0] and "MB free" in lines[0], res.stderr
    failed = Path(calls[1]).name.removeprefix(f".tmp-{os.getpid()}-")
    assert failed in lines[0]
    assert not list((root / "features").rglob(".tmp-*"))  # its temporary is gone
    verdicts = _verdicts(root)
    assert list(verdicts.values()) == [(True, None, "cached")]  # the verdict before the full disk is kept ...
    assert len(_cache(root)) == 1  # ... with its cache entry; the clip that hit the disk has no event
    assert not (root / "tmp" / "validate.lock").exists()
    # space freed: the rerun ends where a run that never failed ends
    run_validate(root, backend="serial")
    assert _verdicts(root) == _verdicts(clean)
    assert _cache(root) == _cache(clean)


def test_stale_feature_temporaries_are_removed_by_the_next_validate(tmp_path: Path, clip: Path) -> None:
    root = _root(tmp_path / "root", clip)
    bucket = root / "features" / "ab"
    bucket.mkdir(parents=True)
    dead = bucket / ".tmp-999999999-c_x.npz"  # no such pid (above the kernel's pid_max)
    dead.write_bytes(b"torn")
    old = bucket / f".tmp-{os.getppid()}-c_y.npz"  # a live pid, but untouched for two hours: reused or elsewhere
    old.write_bytes(b"torn")
    os.utime(old, (time.time() - 7200, time.time() - 7200))
    live = bucket / f".tmp-{os.getpid()}-c_z.npz"  # a writer that is still running
    live.write_bytes(b"in progress")
    run_validate(root, backend="serial")
    assert not dead.exists() and not old.exists() and live.exists()
    res = CliRunner().invoke(app, ["status", str(root)])
    assert "temporary files left" in res.output and str(live.relative_to(root)) in res.output, res.output
    live.unlink()
    res = CliRunner().invoke(app, ["status", str(root)])
    assert "temporary files left" not in res.output
    shutil.rmtree(bucket)


@pytest.fixture
def small_disk(tmp_path: Path) -> Iterator[Callable[[str], Path]]:
    """mount(size) -> a real tmpfs of that size at tmp_path/disk (skips where mounting is not permitted)."""
    disk = tmp_path / "disk"
    disk.mkdir()
    mounted = []

    def mount(size: str) -> Path:
        opts = ["-o", f"remount,size={size}"] if mounted else ["-o", f"size={size}"]
        res = subprocess.run(["mount", "-t", "tmpfs", *opts, "tmpfs", str(disk)], capture_output=True, text=True)
        if res.returncode != 0:
            pytest.skip(f"cannot mount a tmpfs here: {res.stderr.strip()}")
        mounted.append(size)
        return disk

    if shutil.which("mount") is None:
        pytest.skip("no mount command")
    yield mount
    if mounted:
        subprocess.run(["umount", str(disk)], check=False)


def test_a_real_full_tmpfs_under_the_feature_cache(tmp_path: Path, clip: Path, small_disk) -> None:
    clean = _root(tmp_path / "clean", clip)
    run_validate(clean, backend="serial")
    entry = max(len(b) for b in _cache(clean).values())
    root = _root(tmp_path / "root", clip)
    disk = small_disk(f"{entry * 3 // 2}")  # room for one cache entry, not two
    (root / "features").symlink_to(disk, target_is_directory=True)
    res = CliRunner().invoke(app, ["validate", str(root), "--backend", "serial", "--no-progress"])
    assert res.exit_code == 2 and "no space left on device" in res.stderr and "MB free" in res.stderr, res.output
    assert len(res.stderr.strip().splitlines()) == 1
    assert not list(disk.rglob(".tmp-*")) and len(_cache(root)) == 1
    small_disk("16m")  # space freed
    run_validate(root, backend="serial")
    assert _verdicts(root) == _verdicts(clean) and _cache(root) == _cache(clean)
