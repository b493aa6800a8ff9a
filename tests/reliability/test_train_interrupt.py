"""SIGINT / SIGTERM during training (Ctrl-C, SLURM preemption): the loop finishes the optimiser step, saves a
checkpoint, returns status "interrupted", and `--resume` continues exactly; the CLI prints where the checkpoint is
and exits 128 + signal number."""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
from pathlib import Path

import pytest

from tests.train.train_support import build_real_store, fake_open, spawn_two_ranks, tiny_config, write_fake_store
from tests.waiting import wait_for
from tgdp.train.checkpoint import list_checkpoints, load_checkpoint
from tgdp.train.loop import FitSummary, fit


def _losses(summary: FitSummary) -> dict[int, float]:
    return {h["step"]: h["loss"] for h in summary.history}


@pytest.fixture(scope="module")
def uninterrupted(tmp_path_factory: pytest.TempPathFactory) -> tuple[Path, object, dict[int, float]]:
    tmp = tmp_path_factory.mktemp("interrupt")
    store = write_fake_store(tmp / "store", n=16)
    cfg = tiny_config("train.steps=4", "train.batch_size=4", "train.ckpt_every=100")
    return store, cfg, _losses(fit(cfg, store, tmp / "full", store_opener=fake_open))


@pytest.mark.parametrize("sig", [signal.SIGTERM, pytest.param(signal.SIGINT, marks=pytest.mark.slow)])
def test_signal_checkpoints_and_resume_continues_exactly(tmp_path: Path, uninterrupted, sig: signal.Signals) -> None:
    store, cfg, full = uninterrupted

    def preempt(step: int, row: dict) -> None:
        if step == 1:
            os.kill(os.getpid(), sig)  # arrives mid-run, like a scheduler's SIGTERM: after step 1's flag check

    cut = fit(cfg, store, tmp_path / "cut", store_opener=fake_open, on_step=preempt)
    # The step in flight (2) is finished, then checkpointed.
    assert cut.status == "interrupted" and cut.signal == int(sig) and cut.step == 2
    assert [p.name for p in list_checkpoints(tmp_path / "cut")] == ["step_00000002.pt"]
    assert Path(cut.checkpoint) == list_checkpoints(tmp_path / "cut")[0]
    assert load_checkpoint(Path(cut.checkpoint))["step"] == 2
    assert signal.getsignal(signal.SIGINT) is signal.default_int_handler  # handlers restored
    resumed = fit(cfg, store, tmp_path / "cut", resume=True, store_opener=fake_open)
    assert resumed.status == "completed" and resumed.step == 4
    b = _losses(resumed)
    assert sorted(b) == [3, 4] and all(abs(full[s] - b[s]) < 1e-6 for s in b)


@pytest.mark.slow
def test_cli_sigterm_saves_checkpoint_and_says_where(
    ffmpeg_bin: str, tmp_path_factory: pytest.TempPathFactory, tmp_path: Path
) -> None:
    store = build_real_store(tmp_path_factory.mktemp("real"), ffmpeg_bin, n=10)
    run = tmp_path / "run"
    sets = ["train.steps=100000", "train.batch_size=4", "train.num_workers=1", "train.log_every=1",
            "train.progress=false", "train.tensorboard=false"]  # fmt: skip
    cmd = [sys.executable, "-m", "tgdp.train.cli", "-c", "tiny_tgdp", "--store", str(store), "--run-dir", str(run)]
    proc = subprocess.Popen(
        [*cmd, *[x for s in sets for x in ("--set", s)]],
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
        start_new_session=True,  # its own process group, signalled as a whole below
    )
    try:
        metrics = run / "metrics.jsonl"
        logged = wait_for(
            lambda: metrics.is_file() and metrics.read_text().count("\n") >= 2, "two steps in metrics.jsonl",
            timeout_s=120, proc=proc,
        )  # fmt: skip
        assert logged and proc.poll() is None, proc.communicate()
        # SLURM signals every process of the job step, DataLoader workers included: the workers must not die of it.
        os.killpg(proc.pid, signal.SIGTERM)
        out, err = proc.communicate(timeout=120)
    finally:
        if proc.poll() is None:
            proc.kill()
    assert proc.returncode == 128 + signal.SIGTERM, err

    def group_gone() -> bool:  # the workers that ignored the signal are shut down with the main process
        try:
            os.killpg(proc.pid, 0)
        except ProcessLookupError:
            return True
        return False

    wait_for(group_gone, "the DataLoader workers to end with tgdp-train", timeout_s=5)
    [ckpt] = list_checkpoints(run)
    step = load_checkpoint(ckpt)["step"]
    assert step >= 2
    lines = [ln for ln in (out + err).splitlines() if "interrupted" in ln]
    assert len(lines) == 1 and str(ckpt) in lines[0] and "SIGTERM" in lines[0] and "--resume" in lines[0], out + err
    assert "Traceback" not in err
    last = json.loads(metrics.read_text().splitlines()[-1])
    assert last["step"] == step


def _rank_main(rank: int, world: int, port: int, store: str, run_dir: str) -> None:
    import torch

    os.environ.update(
        MASTER_ADDR="127.0.0.1", MASTER_PORT=str(port), RANK=str(rank), LOCAL_RANK=str(rank), WORLD_SIZE=str(world)
    )
    torch.set_num_threads(1)

    def preempt_rank1(step: int, row: dict) -> None:
        if rank == 1 and step == 2:
            os.kill(os.getpid(), signal.SIGTERM)  # only one rank is signalled

    cfg = tiny_config("train.steps=6", "train.batch_size=8", "train.ckpt_every=100")
    summary = fit(cfg, store, run_dir, store_opener=fake_open, on_step=preempt_rank1)
    Path(run_dir, f"rank{rank}.json").write_text(
        json.dumps({k: getattr(summary, k) for k in ("status", "step", "checkpoint")})
    )


@pytest.mark.slow
def test_ddp_ranks_stop_together_when_one_is_signalled(tmp_path: Path) -> None:
    _, ranks = spawn_two_ranks(_rank_main, tmp_path)
    assert [(r["status"], r["step"]) for r in ranks] == [("interrupted", 3), ("interrupted", 3)]
    assert Path(ranks[0]["checkpoint"]).name == "step_00000003.pt" and ranks[1]["checkpoint"] is None
    assert [p.name for p in list_checkpoints(tmp_path / "ddp")] == ["step_00000003.pt"]
