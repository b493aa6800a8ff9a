"""`train_step` and `TrainState` on the tiny TG-DP model, without a loader or a run dir."""

from __future__ import annotations

import dataclasses
import io
from collections.abc import Iterator

import pytest
import torch

from tests.train.train_support import tiny_config
from tgdp.model import build_model
from tgdp.train.data import DataState
from tgdp.train.dist import DistInfo
from tgdp.train.optim import lr_at
from tgdp.train.step import LOSS_TERMS, MicroBatch, StepPlan, TrainState, train_step

CPU = DistInfo(rank=0, local_rank=0, world_size=1, device=torch.device("cpu"), created_group=False)


def _state(seed: int = 0, *overrides: str) -> tuple[TrainState, StepPlan]:
    cfg = tiny_config(*overrides)
    torch.manual_seed(seed)
    state = TrainState.create(build_model(cfg.model_cfg()), cfg.optim, CPU.device, grad_scaler=False)
    plan = StepPlan(
        forward=state.model, total_steps=10, warmup_steps=2, accum=1, optim=cfg.optim, seed=cfg.train.seed, info=CPU
    )
    return state, plan


def _batches(n: int = 8, batch: int = 4, nan: bool = False) -> Iterator[MicroBatch]:
    g = torch.Generator().manual_seed(1)
    for i in range(n):
        audio = torch.randn(batch, 128, 64, generator=g)
        if nan:
            audio[0, 0, 0] = float("nan")
        yield MicroBatch(audio, torch.randn(batch, 3, 96, 96, generator=g), DataState(0, i + 1))


def _params(module: torch.nn.Module) -> dict[str, torch.Tensor]:
    return {n: p.detach().clone() for n, p in module.named_parameters()}


def test_step_stats_and_ema_teacher_update() -> None:
    state, plan = _state()
    assert state.teacher is not None and not any(p.requires_grad for p in state.teacher.parameters())
    teacher_before, student_before = _params(state.teacher), _params(state.student)
    stats = train_step(state, _batches(), plan, with_globals=True)
    assert stats.step == 1 and state.step == 1 and state.data_state == DataState(0, 1)
    assert stats.finite and stats.grad_norm is None and stats.stop is False
    assert tuple(stats.losses)[: len(LOSS_TERMS)] == LOSS_TERMS and stats.loss == stats.losses["loss"]
    assert stats.lr == pytest.approx(lr_at(0, 10, 2, plan.optim.lr, plan.optim.min_lr_ratio))
    assert set(stats.row()) == {*stats.losses, "lr"}
    assert stats.globals["g_a"].shape == stats.globals["g_v"].shape == (4, 64)
    # θ_t ← m·θ_t + (1 − m)·θ_s with the schedule's m at the new step and the updated student.
    m = state.model.momentum(1, plan.total_steps)
    assert m != state.model.momentum(0, plan.total_steps) and m < 0.99  # a visible, step-dependent EMA step
    student_after = _params(state.student)
    assert any(not torch.equal(student_after[n], student_before[n]) for n in student_before)
    teacher_after = _params(state.teacher)
    for name, after in teacher_after.items():
        expected = m * teacher_before[name] + (1 - m) * student_after[name]
        torch.testing.assert_close(after, expected, rtol=1e-6, atol=2e-7)
    # The teacher moved exactly where the student did (frozen sin-cos position embeddings stay put).
    moved = {n for n, t in teacher_after.items() if not torch.equal(t, teacher_before[n])}
    assert moved and moved == {n for n in teacher_after if not torch.equal(student_after[n], student_before[n])}


def test_accumulation_clipping_and_stop_flag() -> None:
    state, plan = _state(0, "optim.grad_clip=1e-3")
    plan = dataclasses.replace(plan, accum=2)
    batches = _batches()
    stats = train_step(state, batches, plan, stop=lambda: True)
    assert state.step == 1 and state.data_state == DataState(0, 2)  # two micro-batches consumed
    assert stats.stop is True and stats.grad_norm is not None and stats.grad_norm > 1e-3
    assert stats.row()["grad_norm"] == stats.grad_norm and not stats.globals
    assert next(batches).data_state == DataState(0, 3)


def test_non_finite_loss_leaves_the_state_unchanged() -> None:
    state, plan = _state()
    before = {k: v.clone() for k, v in state.model.state_dict().items()}
    stats = train_step(state, _batches(nan=True), plan)
    assert not stats.finite and stats.step == 1
    assert state.step == 0 and state.data_state == DataState()
    assert all(p.grad is None for p in state.params)
    for k, v in state.model.state_dict().items():
        torch.testing.assert_close(v, before[k], equal_nan=True)


def test_grad_scaler_with_clipping_continues_after_a_non_finite_step() -> None:
    # fp16 path on CPU: the scaler is enabled (scale 2**16) while the math stays fp32. Clipping unscales the
    # gradients before the finite guard; a skipped step must still close the scaler's step ("unscale_() has
    # already been called" on the next one otherwise) and keep its scale (the loss, not the scale, was bad).
    cfg = tiny_config("optim.grad_clip=1.0")
    torch.manual_seed(0)
    state = TrainState.create(build_model(cfg.model_cfg()), cfg.optim, CPU.device, grad_scaler=True)
    plan = StepPlan(
        forward=state.model, total_steps=10, warmup_steps=2, accum=1, optim=cfg.optim, seed=cfg.train.seed, info=CPU
    )
    assert state.scaler.is_enabled()
    scale = state.scaler.get_scale()
    assert not train_step(state, _batches(nan=True), plan).finite
    assert state.step == 0 and state.scaler.get_scale() == scale
    stats = train_step(state, _batches(), plan)
    assert stats.finite and state.step == 1 and stats.grad_norm is not None
    assert not train_step(state, _batches(nan=True), plan).finite  # and again after a good step
    assert train_step(state, _batches(), plan).finite and state.step == 2


def test_state_dict_round_trip_continues_exactly() -> None:
    a, plan = _state(0)
    batches = list(_batches(4))
    train_step(a, iter(batches[:2]), plan)
    buf = io.BytesIO()  # through bytes as in a checkpoint: state_dict() shares the live optimiser tensors
    torch.save(a.state_dict(), buf)
    buf.seek(0)
    saved = torch.load(buf, weights_only=True)
    assert saved["step"] == 1 and saved["data_state"] == {"epoch": 0, "batch": 1}
    assert saved["teacher"] is not None and not any(k.startswith("student.") for k in saved["model"])

    b, _ = _state(5)  # other initial weights: everything must come from the state dict
    b.load_state_dict(saved)
    assert b.step == 1 and b.data_state == DataState(0, 1)
    for name, tensor in a.model.state_dict().items():
        torch.testing.assert_close(b.model.state_dict()[name], tensor, rtol=0, atol=0)
    plan_b = dataclasses.replace(plan, forward=b.model)
    next_a = train_step(a, iter(batches[1:]), plan)
    next_b = train_step(b, iter(batches[1:]), plan_b)
    assert next_b.losses == next_a.losses  # same optimiser moments, same step seed: the same step
    for name, tensor in a.model.state_dict().items():
        torch.testing.assert_close(b.model.state_dict()[name], tensor, rtol=0, atol=0)
