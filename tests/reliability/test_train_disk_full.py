"""A full disk under training: every run-dir writer (checkpoint, config.yaml, metrics.jsonl) ends with one line naming
the file and the free space (exit 2), removes its own temporary file, keeps the existing checkpoints, and the rerun
with `--resume` once space is freed ends where an uninterrupted run ends.

ENOSPC is injected at the file's raw write (`_FullFile`: the kernel's answer on a full disk, through the same
buffered-file path the real write takes); `test_real_tmpfs_fills_then_resume_converges` runs the real CLI on a real
small tmpfs where `unshare -m` and `mount` are permitted (root; skipped elsewhere).
"""

from __future__ import annotations

import errno
import functools
import io
import json
import os
import shutil
import subprocess
import sys
from collections.abc import Callable, Iterator
from pathlib import Path

import pytest
import torch
from typer.testing import CliRunner

from tests.train.train_support import fake_open, spawn_two_ranks, tiny_config, write_fake_store
from tgdp.core.atomic import TMP_PREFIX, temp_path
from tgdp.train import checkpoint as checkpoint_mod
from tgdp.train import cli, loop
from tgdp.train.checkpoint import CheckpointError, list_checkpoints, load_checkpoint, save_checkpoint
from tgdp.train.config import save_run_config
from tgdp.train.loop import fit

ROOT = Path(__file__).resolve().parents[2]
SETS = [  # tiny_config's loop settings, spelled out for the CLI
    *("train.steps=4", "train.batch_size=4", "train.ckpt_every=2", "train.keep_last=3", "train.num_workers=0"),
    *("train.log_every=1", "train.progress=false", "train.tensorboard=false", "optim.lr=1e-3"),
]


class _FullFile(io.FileIO):
    """A file on a disk with `room` bytes left: the write that would pass it fails with ENOSPC, as the kernel's does."""

    def __init__(self, path: str | Path, mode: str, room: int) -> None:
        super().__init__(path, mode)
        self.room = room

    def write(self, data: bytes) -> int:  # type: ignore[override]
        if self.tell() + len(data) > self.room:
            raise OSError(errno.ENOSPC, os.strerror(errno.ENOSPC))
        return super().write(data)


def _full_open(real: Callable[..., object], room: int, fail_on: Callable[[str], bool]) -> Callable[..., object]:
    def opener(file: str | Path, mode: str = "r", *args: object, **kwargs: object) -> object:
        if "w" in mode and fail_on(str(file)):
            return io.BufferedWriter(_FullFile(file, mode.replace("b", ""), room))
        return real(file, mode, *args, **kwargs)

    return opener


def _state(step: int) -> dict:
    lin = torch.nn.Linear(64, 64)
    return {"model": lin.state_dict(), "optimizer": {}, "step": step, "data_state": {}, "config": {}}


def test_checkpoint_write_on_a_full_disk_names_path_and_space_and_keeps_the_old_ones(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    save_checkpoint(tmp_path, _state(1), keep_last=1)
    before = (tmp_path / "checkpoints" / "step_00000001.pt").read_bytes()
    monkeypatch.setattr(checkpoint_mod, "open", _full_open(open, 4096, lambda f: True), raising=False)
    with pytest.raises(CheckpointError) as info:
        save_checkpoint(tmp_path, _state(2), keep_last=1)
    msg = str(info.value)
    assert str(tmp_path / "checkpoints" / "step_00000002.pt") in msg and "No space left on device" in msg
    assert "MiB free of" in msg and "newest: step_00000001.pt" in msg and "--resume" in msg
    assert "\n" not in msg
    assert sorted(p.name for p in (tmp_path / "checkpoints").iterdir()) == ["step_00000001.pt"]  # no .tmp
    assert (tmp_path / "checkpoints" / "step_00000001.pt").read_bytes() == before  # keep_last did not run
    assert load_checkpoint(list_checkpoints(tmp_path)[-1])["step"] == 1


def test_config_yaml_write_on_a_full_disk_keeps_the_old_file(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    path = tmp_path / "config.yaml"
    save_run_config(tiny_config(), path)
    before = path.read_text()
    real_write = Path.write_text

    def full(self: Path, text: str, *args: object, **kwargs: object) -> int:
        real_write(self, text[:10], *args, **kwargs)  # part of it landed, then the disk was full
        raise OSError(errno.ENOSPC, os.strerror(errno.ENOSPC))

    monkeypatch.setattr(Path, "write_text", full)
    with pytest.raises(OSError) as info:
        save_run_config(tiny_config("train.seed=3"), path)
    assert info.value.filename == str(path) and "MiB free of" in info.value.strerror
    assert sorted(p.name for p in tmp_path.iterdir()) == ["config.yaml"] and path.read_text() == before


@pytest.fixture(autouse=True)
def _one_thread() -> Iterator[None]:
    """Runs in this process use one intra-op thread, as `clean` does (see there)."""
    threads = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(threads)


@pytest.fixture(scope="module")
def clean(tmp_path_factory: pytest.TempPathFactory) -> tuple[Path, Path]:
    """(store, run dir of an uninterrupted run on it)."""
    base = tmp_path_factory.mktemp("clean")
    store = write_fake_store(base / "store", n=16)
    # One intra-op thread here and in the CLI runs compared with it (OMP_NUM_THREADS=1): another test may have left
    # this process at another count, and a different float reduction order moves Adam's noise-gradient elements.
    threads = torch.get_num_threads()
    torch.set_num_threads(1)
    try:
        fit(tiny_config(*SETS), store, base / "run", store_opener=fake_open)
    finally:
        torch.set_num_threads(threads)
    return store, base / "run"


def _cli(store: Path, run: Path, *extra: str) -> list[str]:
    sets = [x for s in SETS for x in ("--set", s)]
    return ["--config", "tiny_tgdp", "--store", str(store), "--run-dir", str(run), *sets, *extra]


def _losses(run: Path) -> dict[int, float]:
    rows = [json.loads(x) for x in (run / "metrics.jsonl").read_text().splitlines()]
    return {r["step"]: r["loss"] for r in rows if "loss" in r}


def _final_model(run: Path) -> dict[str, torch.Tensor]:
    return load_checkpoint(list_checkpoints(run)[-1])["model"]


@pytest.mark.parametrize("writer", ["checkpoint", "metrics"])
def test_cli_full_disk_is_one_line_then_resume_converges(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch, clean: tuple[Path, Path], writer: str
) -> None:
    store, clean_run = clean
    monkeypatch.setattr(loop, "fit", functools.partial(fit, store_opener=fake_open))
    runner = CliRunner()
    run = tmp_path / "run"
    if writer == "checkpoint":  # the second checkpoint (step 4) finds the disk full
        target = str(temp_path(run / "checkpoints" / "step_00000004.pt"))
        monkeypatch.setattr(checkpoint_mod, "open", _full_open(open, 4096, lambda f: f == target), raising=False)
    else:  # metrics.jsonl: the row of step 3 does not fit
        real, room = Path.open, sum(len(x) for x in (clean_run / "metrics.jsonl").open("rb").readlines()[:2])

        def metrics_open(self: Path, mode: str = "r", *args: object, **kwargs: object) -> object:
            if self.name == "metrics.jsonl" and "a" in mode:
                return io.TextIOWrapper(io.BufferedWriter(_FullFile(self, "a", room + 8)), encoding="utf-8")
            return real(self, mode, *args, **kwargs)

        monkeypatch.setattr(Path, "open", metrics_open)
    failed = runner.invoke(cli.app, _cli(store, run))
    monkeypatch.undo()  # space is freed
    monkeypatch.setattr(loop, "fit", functools.partial(fit, store_opener=fake_open))
    assert failed.exit_code == 2, failed.output
    lines = failed.output.strip().splitlines()
    assert len(lines) == 1 and lines[0].startswith("error: ") and "Traceback" not in failed.output, failed.output
    assert "No space left on device" in lines[0] and "MiB free of" in lines[0]
    name = "checkpoints/step_00000004.pt" if writer == "checkpoint" else "metrics.jsonl"
    assert str(run / name) in lines[0]
    assert not [p for p in run.rglob("*") if p.name.startswith(TMP_PREFIX)]
    assert [p.name for p in list_checkpoints(run)] == ["step_00000002.pt"]

    stale = run / "checkpoints" / f"{TMP_PREFIX}999999-step_00000099.pt"  # as a SIGKILLed writer leaves it
    stale.write_bytes(b"torn")
    resumed = runner.invoke(cli.app, _cli(store, run, "--resume"))
    assert not stale.exists()
    assert resumed.exit_code == 0, resumed.output
    assert "done: step 4/4" in resumed.output
    assert _losses(run)[4] == pytest.approx(_losses(clean_run)[4], rel=1e-6)
    clean_model = _final_model(clean_run)
    for key, tensor in _final_model(run).items():
        torch.testing.assert_close(tensor, clean_model[key], rtol=1e-5, atol=1e-7)


_CLI = (
    "import functools, sys; from tgdp.train import cli, loop; from tests.train.train_support import fake_open; "
    "loop.fit = functools.partial(loop.fit, store_opener=fake_open); cli.app()"
)


def _mount_allowed() -> bool:
    if shutil.which("unshare") is None:
        return False
    probe = "d=$(mktemp -d) && mount -t tmpfs -o size=1m tmpfs $d && umount $d"
    return subprocess.run(["unshare", "-m", "sh", "-c", probe], capture_output=True).returncode == 0


@pytest.mark.slow
@pytest.mark.reliability
def test_real_tmpfs_fills_then_resume_converges(tmp_path: Path, clean: tuple[Path, Path]) -> None:
    """A 10 MiB tmpfs holds one tiny checkpoint (6.5 MiB) but not two: the step-4 write fails, the resume with the
    disk still full fails naming the file, and after a remount at 40 MiB the resume ends where a clean run ends."""
    if not _mount_allowed():
        pytest.skip("mount in a private mount namespace is not permitted here")
    store, clean_run = clean
    mnt, out = tmp_path / "mnt", tmp_path / "out"
    mnt.mkdir(), out.mkdir()
    train = f"{sys.executable} -c {_quote(_CLI)} " + " ".join(_quote(a) for a in _cli(store, mnt / "run"))
    script = f"""
mount -t tmpfs -o size=10m tmpfs {mnt}
{train} 2> {out}/err1; echo $? > {out}/rc1
ls -A {mnt}/run {mnt}/run/checkpoints > {out}/ls1
{train} --resume 2> {out}/err2; echo $? > {out}/rc2
mount -o remount,size=40m tmpfs {mnt}
{train} --resume > {out}/out3 2> {out}/err3; echo $? > {out}/rc3
mkdir -p {out}/run/checkpoints && cp {mnt}/run/checkpoints/*.pt {out}/run/checkpoints/ 2>/dev/null || true
"""
    env = {**os.environ, "PYTHONPATH": str(ROOT), "COLUMNS": "200", "OMP_NUM_THREADS": "1"}
    subprocess.run(["unshare", "-m", "sh", "-c", script], cwd=ROOT, env=env, timeout=600)
    read = lambda name: (out / name).read_text().strip()  # noqa: E731
    ckpt4 = f"{mnt}/run/checkpoints/step_00000004.pt"
    for n in (1, 2):  # before the space is freed: one line naming the file and the free space, exit 2
        err = [x for x in read(f"err{n}").splitlines() if x.startswith("error: ")]
        assert read(f"rc{n}") == "2" and len(err) == 1, read(f"err{n}")[-2000:]
        assert ckpt4 in err[0] and "MiB free of 10.0 MiB" in err[0], err[0]
        assert "Traceback" not in read(f"err{n}")
    assert ".tmp" not in read("ls1") and "step_00000002.pt" in read("ls1")
    assert read("rc3") == "0" and "done: step 4/4" in read("out3"), read("err3")
    resumed, clean_model = load_checkpoint(list_checkpoints(out / "run")[-1]), _final_model(clean_run)
    assert resumed["step"] == 4
    for key, tensor in resumed["model"].items():
        torch.testing.assert_close(tensor, clean_model[key], rtol=1e-5, atol=1e-7)


def _quote(text: str) -> str:
    import shlex

    return shlex.quote(text)


def _rank_main(rank: int, world: int, port: int, store: str, run_dir: str) -> None:
    os.environ.update(
        MASTER_ADDR="127.0.0.1", MASTER_PORT=str(port), RANK=str(rank), LOCAL_RANK=str(rank), WORLD_SIZE=str(world)
    )
    torch.set_num_threads(1)
    if rank == 0:  # only rank 0 writes checkpoints: its first one finds the disk full
        checkpoint_mod.open = _full_open(open, 4096, lambda f: Path(f).name.startswith(TMP_PREFIX))  # type: ignore[attr-defined]
    result: dict[str, object] = {}
    try:
        cfg = tiny_config("train.steps=4", "train.batch_size=8", "train.ckpt_every=2")
        fit(cfg, store, run_dir, store_opener=fake_open)
    except CheckpointError as exc:
        result = {"error": str(exc)}
    Path(run_dir, f"rank{rank}.json").write_text(json.dumps(result))


@pytest.mark.slow
def test_ddp_ranks_stop_together_when_rank0_cannot_write(tmp_path: Path) -> None:
    """Rank 0's failed checkpoint reaches rank 1 where they meet after it (rank 1 would otherwise wait forever)."""
    _, (rank0, rank1) = spawn_two_ranks(_rank_main, tmp_path)
    assert "step_00000002.pt: cannot write the checkpoint: No space left on device" in rank0["error"]
    assert rank1["error"].startswith("rank 0 could not write the checkpoint: ") and "MiB free" in rank1["error"]
    assert list_checkpoints(tmp_path / "ddp") == [] and not list((tmp_path / "ddp" / "checkpoints").iterdir())
