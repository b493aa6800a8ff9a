"""`fit` end to end on the tiny TG-DP model: learning, exact resume, NaN stop, corrupt checkpoint, bad inputs."""

from __future__ import annotations

import json
from pathlib import Path

import pytest
import torch
import yaml

from tests.train.train_support import build_real_store, fake_open, tiny_config, write_fake_store
from tgdp.config import ConfigError
from tgdp.model.tgdp import TgdpModel
from tgdp.train.checkpoint import CheckpointError, list_checkpoints, load_checkpoint
from tgdp.train.loop import FitSummary, NonFiniteLossError, StoreMismatchError, fit


@pytest.fixture()
def store(tmp_path: Path) -> Path:
    return write_fake_store(tmp_path / "store", n=24)


def _losses(summary: FitSummary) -> dict[int, float]:
    return {h["step"]: h["loss"] for h in summary.history}


@pytest.mark.slow
def test_tiny_model_loss_falls_on_a_real_store(
    ffmpeg_bin: str, tmp_path_factory: pytest.TempPathFactory, tmp_path: Path
):
    """Real shard-written store (ffmpeg test clips), real Store reader with a DataLoader worker, tiny TG-DP."""
    real = build_real_store(tmp_path_factory.mktemp("real"), ffmpeg_bin, n=10)
    cfg = tiny_config("train.steps=16", "train.batch_size=4", "optim.lr=2e-3", "train.num_workers=1")
    summary = fit(cfg, real, tmp_path / "run")
    losses = [h["loss"] for h in summary.history]
    assert len(losses) == 16 and all(torch.isfinite(torch.tensor(losses)))
    assert sum(losses[-3:]) / 3 < 0.85 * sum(losses[:3]) / 3
    rows = [json.loads(line) for line in (tmp_path / "run" / "metrics.jsonl").read_text().splitlines()]
    assert [r["step"] for r in rows] == list(range(1, 17))
    for key in ("rec_loss", "contrastive_loss", "dis_loss", "lr", "samples_per_s", "data_wait_frac"):
        assert key in rows[-1]
    assert rows[-1]["dis_loss"] > 0 and 0 <= rows[-1]["data_wait_frac"] <= 1


@pytest.mark.slow
def test_kill_and_resume_matches_uninterrupted_run(store: Path, tmp_path: Path) -> None:
    cfg = tiny_config("train.steps=6", "train.batch_size=4", "train.ckpt_every=2")
    full = fit(cfg, store, tmp_path / "full", store_opener=fake_open)

    def crash(step: int, row: dict) -> None:
        if step == 3:
            raise KeyboardInterrupt("simulated kill")

    with pytest.raises(KeyboardInterrupt):
        fit(cfg, store, tmp_path / "cut", store_opener=fake_open, on_step=crash)
    assert [p.name for p in list_checkpoints(tmp_path / "cut")] == ["step_00000002.pt"]
    # The resumed leg reads through a DataLoader worker: the stream does not depend on the worker count.
    cfg_workers = cfg.model_copy(update={"train": cfg.train.model_copy(update={"num_workers": 1})})
    resumed = fit(cfg_workers, store, tmp_path / "cut", resume=True, store_opener=fake_open)
    assert resumed.resumed_from.endswith("step_00000002.pt")
    a, b = _losses(full), _losses(resumed)
    assert sorted(b) == [3, 4, 5, 6]
    for step in b:
        assert b[step] == pytest.approx(a[step], rel=1e-6, abs=1e-7), step
    end_a = load_checkpoint(Path(full.checkpoint))
    end_b = load_checkpoint(Path(resumed.checkpoint))
    for name, tensor in end_a["model"].items():
        torch.testing.assert_close(end_b["model"][name], tensor, rtol=1e-5, atol=1e-7)
    for name, tensor in end_a["teacher"].items():
        torch.testing.assert_close(end_b["teacher"][name], tensor, rtol=1e-5, atol=1e-7)


def test_config_saved_in_run_dir_and_checkpoint(store: Path, tmp_path: Path) -> None:
    cfg = tiny_config("train.steps=2", "train.batch_size=4", "model.lambda_dis=0.5")
    summary = fit(cfg, store, tmp_path / "run", store_opener=fake_open)
    text = (tmp_path / "run" / "config.yaml").read_text()
    assert "# derived total_steps: 2" in text
    saved = yaml.safe_load(text)
    ckpt = load_checkpoint(Path(summary.checkpoint))
    assert ckpt["config"] == saved
    assert saved["model"]["lambda_dis"] == 0.5 and saved["model"]["embed_dim"] == 64
    assert ckpt["step"] == 2 and ckpt["data_state"] == {"epoch": 0, "batch": 2}
    assert ckpt["derived"]["total_steps"] == 2 and ckpt["git_rev"]
    assert ckpt["teacher"] is not None and "pos_embed_a" in ckpt["model"]
    # The student's keys are the model's student, without a wrapper prefix.
    assert not any(k.startswith(("module.", "student.")) for k in ckpt["model"])


class _NanModel(TgdpModel):
    nan_at_call = 3

    def __init__(self, cfg: object) -> None:
        super().__init__(cfg)
        self.calls = 0

    def forward(self, audio: torch.Tensor, frames: torch.Tensor, step: int | None = None) -> dict:
        out = super().forward(audio, frames)
        self.calls += 1
        if self.calls == self.nan_at_call:
            out["loss"] = out["loss"] * float("nan")
        return out


def test_nan_loss_stops_cleanly_with_checkpoint(store: Path, tmp_path: Path) -> None:
    cfg = tiny_config("train.steps=4", "train.batch_size=4", "train.ckpt_every=2")
    with pytest.raises(NonFiniteLossError, match="at step 3") as info:
        fit(cfg, store, tmp_path / "run", store_opener=fake_open, model_factory=_NanModel)
    assert info.value.step == 3
    assert "last good state (step 2)" in str(info.value)
    ckpt = load_checkpoint(info.value.checkpoint)
    assert ckpt["step"] == 2 and ckpt["data_state"] == {"epoch": 0, "batch": 2}
    assert all(torch.isfinite(t).all() for t in ckpt["model"].values())
    events = [json.loads(x) for x in (tmp_path / "run" / "metrics.jsonl").read_text().splitlines()]
    assert events[-1]["event"] == "nonfinite_loss" and events[-1]["step"] == 3
    # The saved state resumes.
    resumed = fit(cfg, store, tmp_path / "run", resume=True, store_opener=fake_open)
    assert resumed.step == 4 and sorted(_losses(resumed)) == [3, 4]


def test_corrupt_latest_checkpoint_resumes_from_previous(store: Path, tmp_path: Path) -> None:
    cfg = tiny_config("train.steps=4", "train.batch_size=4", "train.ckpt_every=2")
    first = fit(cfg, store, tmp_path / "run", store_opener=fake_open)
    last = list_checkpoints(tmp_path / "run")[-1]
    assert last.name == "step_00000004.pt"
    last.write_bytes(last.read_bytes()[:1000])
    again = fit(cfg, store, tmp_path / "run", resume=True, store_opener=fake_open)
    assert again.resumed_from.endswith("step_00000002.pt")
    for step, loss in _losses(again).items():
        assert loss == pytest.approx(_losses(first)[step], rel=1e-6)


def test_bad_inputs_fail_before_training(store: Path, tmp_path: Path) -> None:
    cfg = tiny_config("train.steps=2", "train.batch_size=4")
    with pytest.raises(StoreMismatchError, match="store not found"):
        fit(cfg, tmp_path / "nope", tmp_path / "r0", store_opener=fake_open)
    with pytest.raises(StoreMismatchError, match="split 'valid'"):
        fit(tiny_config("data.split=valid"), store, tmp_path / "r0", store_opener=fake_open)
    short = write_fake_store(tmp_path / "short", n=8, target_length=100)
    with pytest.raises(StoreMismatchError, match="target_length 100 < model audio_length 128"):
        fit(cfg, short, tmp_path / "r1", store_opener=fake_open)
    mel = write_fake_store(tmp_path / "mel", n=8, num_mel_bins=128)
    with pytest.raises(StoreMismatchError, match="128 mel bins but the model expects 64"):
        fit(cfg, mel, tmp_path / "r2", store_opener=fake_open)
    small = write_fake_store(tmp_path / "small", n=8, frame_size=64)
    with pytest.raises(StoreMismatchError, match="data.resize_frames is false"):
        fit(tiny_config("data.resize_frames=false"), small, tmp_path / "r3", store_opener=fake_open)
    assert not any((tmp_path / r).exists() for r in ("r0", "r1", "r2", "r3"))
    # A finished run dir is not silently overwritten, and a resume refuses a different model.
    fit(cfg, store, tmp_path / "done", store_opener=fake_open)
    with pytest.raises(ConfigError, match="already has checkpoints"):
        fit(cfg, store, tmp_path / "done", store_opener=fake_open)
    with pytest.raises(CheckpointError, match="contrastive_mask_ratio"):
        fit(
            tiny_config("train.steps=2", "train.batch_size=4", "model.contrastive_mask_ratio=0.2"),
            store,
            tmp_path / "done",
            resume=True,
            store_opener=fake_open,
        )


def test_accumulation_matches_full_batch(store: Path, tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    """accum=2 x 4 == 1 x 8 when the loss is a per-sample mean (contrastive weight 0, fixed masks)."""
    import tgdp.model.cavmae_sync as sync

    monkeypatch.setattr(sync, "random_order", lambda b, n, device, generator=None: torch.arange(n).repeat(b, 1))
    over = ("train.steps=1", "train.batch_size=8", "model.lambda_contra=0")
    one = fit(tiny_config(*over), store, tmp_path / "one", store_opener=fake_open)
    two = fit(tiny_config(*over, "train.accum=2"), store, tmp_path / "two", store_opener=fake_open)
    for step, loss in _losses(one).items():
        assert _losses(two)[step] == pytest.approx(loss, rel=1e-5)
    a = load_checkpoint(list_checkpoints(tmp_path / "one")[0])["optimizer"]["state"]
    b = load_checkpoint(list_checkpoints(tmp_path / "two")[0])["optimizer"]["state"]
    for k in a:  # exp_avg after step 1 = (1 - beta1) * gradient
        torch.testing.assert_close(b[k]["exp_avg"], a[k]["exp_avg"], rtol=1e-4, atol=1e-9)


def test_grad_clip_norm_is_logged_from_the_steps_one_host_copy(store: Path, tmp_path: Path) -> None:
    """With clipping on, the pre-clip grad norm comes back with the loss terms and lands in every row."""
    summary = fit(tiny_config("train.steps=3", "optim.grad_clip=1e-3"), store, tmp_path / "run", store_opener=fake_open)
    norms = [h["grad_norm"] for h in summary.history]
    assert len(norms) == 3 and all(n > 1e-3 and n == n for n in norms)
    assert all(h["loss"] == h["loss"] for h in summary.history)
