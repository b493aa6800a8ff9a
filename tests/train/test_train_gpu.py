"""On a CUDA device (marker `gpu`; skipped with the reason elsewhere): `train_step` in bf16 and in fp16 with the
GradScaler, and `fit` with `train.device=auto` / `train.precision=auto` choosing CUDA and bf16.

The tests hide CUDA unless CUDA_VISIBLE_DEVICES is set (tests/conftest.py): `make test-gpu` runs these."""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
import torch

from tests.train.train_support import fake_open, tiny_config, write_fake_store
from tgdp.model import build_model
from tgdp.train.checkpoint import list_checkpoints, load_checkpoint
from tgdp.train.data import DataState
from tgdp.train.dist import DistInfo
from tgdp.train.loop import fit
from tgdp.train.step import MicroBatch, StepPlan, TrainState, train_step

pytestmark = pytest.mark.gpu


def _losses_on(device: torch.device, amp_dtype: torch.dtype | None, steps: int = 3) -> list[dict[str, float]]:
    """`steps` train_steps of the tiny TG-DP model on `device` under autocast `amp_dtype` (fp16 with the scaler)."""
    cfg = tiny_config()
    info = DistInfo(rank=0, local_rank=0, world_size=1, device=device, created_group=False)
    torch.manual_seed(0)
    model = build_model(cfg.model_cfg()).to(device)
    state = TrainState.create(model, cfg.optim, device, grad_scaler=amp_dtype == torch.float16)
    plan = StepPlan(
        forward=state.model, total_steps=10, warmup_steps=2, accum=1, optim=cfg.optim, seed=0, info=info,
        amp_dtype=amp_dtype,
    )  # fmt: skip
    g = torch.Generator().manual_seed(1)

    def batches() -> Iterator[MicroBatch]:
        for i in range(steps):
            audio, frames = torch.randn(4, 128, 64, generator=g), torch.randn(4, 3, 96, 96, generator=g)
            yield MicroBatch(audio.to(device), frames.to(device), DataState(0, i + 1))

    stream, out = batches(), []
    for _ in range(steps):
        stats = train_step(state, stream, plan)
        assert stats.finite, stats.losses
        out.append(stats.losses)
    assert state.step == steps and next(state.student.parameters()).device.type == "cuda"
    assert all(p.dtype == torch.float32 for p in state.student.parameters())  # autocast: fp32 master weights
    return out


@pytest.mark.parametrize("amp_dtype", [torch.bfloat16, torch.float16], ids=["bf16", "fp16"])
def test_train_step_on_cuda_under_autocast_follows_fp32(amp_dtype: torch.dtype) -> None:
    cuda = torch.device("cuda")
    fp32, amp = _losses_on(cuda, None), _losses_on(cuda, amp_dtype)
    for ref, got in zip(fp32, amp, strict=True):
        assert set(got) == set(ref)
        # same data and weights: the autocast loss follows fp32 within half precision's rounding
        assert got["loss"] == pytest.approx(ref["loss"], rel=0.05), (ref, got)


def test_fit_on_auto_device_trains_on_cuda_in_bf16(tmp_path: Path) -> None:
    store = write_fake_store(tmp_path / "store", n=24)
    built: list[torch.nn.Module] = []
    dtypes: set[torch.dtype] = set()

    def model_factory(model_cfg: Any) -> torch.nn.Module:
        built.append(build_model(model_cfg))
        linear = next(m for m in built[-1].modules() if isinstance(m, torch.nn.Linear))
        linear.register_forward_hook(lambda _m, _i, out: dtypes.add(out.dtype))  # autocast shows in its output
        return built[-1]

    cfg = tiny_config("train.steps=3", "train.device=auto", "train.precision=auto", "train.ckpt_every=3")
    summary = fit(cfg, store, tmp_path / "run", model_factory=model_factory, store_opener=fake_open)
    assert summary.status == "completed" and summary.step == 3, summary
    assert all(torch.isfinite(torch.tensor(h["loss"])) for h in summary.history)
    [model] = built
    assert next(model.parameters()).device.type == "cuda" and dtypes == {torch.bfloat16}
    assert load_checkpoint(list_checkpoints(tmp_path / "run")[-1])["step"] == 3
