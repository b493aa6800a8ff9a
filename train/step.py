"""One optimiser step of TG-DP / CAV-MAE Sync pretraining: `TrainState`, `StepPlan` and `train_step -> StepStats`.

Design:
- `TrainState` is what a checkpoint restores (model = student + EMA teacher, optimiser, grad scaler, step, the data
  stream's position); `state_dict()` / `load_state_dict()` are the checkpoint's training part.
- `StepPlan` is what stays fixed over a run: the module that runs the forward (the model, or its DDP / compiled
  wrapper), the schedule lengths, accumulation, precision and the process group.
- The LR is a pure function of the step (`optim.lr_at`) and the torch generator is reseeded from (seed, step, rank)
  before every step, so a resumed run reproduces the model's random masking without saved RNG state.
- DDP: non-final micro-steps of gradient accumulation run under `no_sync()`; the EMA teacher's parameters have
  requires_grad=False, so DDP neither syncs nor waits for them, and `update_teacher` is identical on every rank
  because the student is.
- Loss terms are averaged over ranks every step (one small all-reduce) and that average decides the finite-loss
  guard, so all ranks agree; a caller's stop request rides on the same all-reduce. A non-finite step leaves the
  state as it was (no optimiser step, step, data position and grad-scaler scale unchanged; the scaler's step is
  closed so the next step can unscale again).
"""

from __future__ import annotations

import contextlib
import math
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field
from typing import Any, NamedTuple

import numpy as np
import torch
from torch import nn
from torch.nn.parallel import DistributedDataParallel

from tgdp.model.health import GRAD_TERMS, encoder_parameters, term_grad_norms
from tgdp.train.checkpoint import model_parts
from tgdp.train.config import OptimConfig
from tgdp.train.data import DataState
from tgdp.train.dist import DistInfo, all_reduce_mean
from tgdp.train.optim import build_optimizer, lr_at, set_lr

__all__ = ["LOSS_TERMS", "MicroBatch", "StepPlan", "StepStats", "TrainState", "step_seed", "train_step"]

LOSS_TERMS = ("loss", "rec_loss", "mae_a_loss", "mae_v_loss", "contrastive_loss", "dis_loss")
# what a `with_globals=True` forward adds: global tokens (health figures), the teacher's priorities and the
# contrastive pass's kept positions (selection figures)
GLOBAL_KEYS = ("g_a", "g_v", "t_a", "t_v", "prio_a", "prio_v", "keep_a", "keep_v")
TERM_KEYS = tuple(f"term_{t}" for t in GRAD_TERMS)  # what a `with_terms=True` forward adds (gradient shares)


def step_seed(seed: int, step: int, rank: int) -> int:
    """Torch seed for optimiser step `step` on `rank` (masking noise is then a function of the step)."""
    return int(np.random.SeedSequence([seed, step, rank]).generate_state(1, dtype=np.uint64)[0] >> 1)


class MicroBatch(NamedTuple):
    """One micro-batch on the device: audio [B, T_seg, F], frames [B, 3, S, S] (normalised float32), the data
    stream's position once it is consumed, and (optional) the store rows [B] and frame indices [B] it came from."""

    audio: torch.Tensor
    frames: torch.Tensor
    data_state: DataState
    rows: torch.Tensor | None = None
    frame_index: torch.Tensor | None = None


@dataclass(eq=False)
class TrainState:
    """Everything a checkpoint restores; `student` / `teacher` / `params` are derived from `model`."""

    model: nn.Module
    optimizer: torch.optim.Optimizer
    scaler: torch.amp.GradScaler
    step: int = 0
    data_state: DataState = field(default_factory=DataState)
    student: nn.Module = field(init=False, repr=False)
    teacher: nn.Module | None = field(init=False, repr=False)
    params: list[nn.Parameter] = field(init=False, repr=False)  # trainable: what the optimiser and clipping see

    def __post_init__(self) -> None:
        self.student, self.teacher = model_parts(self.model)
        self.params = [p for p in self.model.parameters() if p.requires_grad]

    @classmethod
    def create(cls, model: nn.Module, optim: OptimConfig, device: torch.device, grad_scaler: bool) -> TrainState:
        """Fresh state at step 0: the teacher frozen, `optim.build_optimizer` over the trainable parameters (with
        the model's `no_weight_decay()` names as its no-decay set)."""
        _, teacher = model_parts(model)
        if teacher is not None:
            teacher.requires_grad_(False)
        scaler = torch.amp.GradScaler(device.type, enabled=grad_scaler)
        params = [p for p in model.parameters() if p.requires_grad]
        no_decay_names = model.no_weight_decay() if hasattr(model, "no_weight_decay") else set()
        no_decay = [p for n, p in model.named_parameters() if n in no_decay_names]
        return cls(model, build_optimizer(params, optim, no_decay), scaler)

    def state_dict(self) -> dict[str, Any]:
        """The checkpoint's training part: model (student, no wrapper prefix), teacher or None, optimizer, scaler,
        step, data_state ({epoch, batch})."""
        return {
            "model": self.student.state_dict(),
            "teacher": self.teacher.state_dict() if self.teacher is not None else None,
            "optimizer": self.optimizer.state_dict(),
            "scaler": self.scaler.state_dict(),
            "step": self.step,
            "data_state": self.data_state.as_dict(),
        }

    def load_state_dict(self, state: dict[str, Any]) -> None:
        """Restore from `state_dict()` output (or a whole checkpoint; extra keys are ignored)."""
        self.student.load_state_dict(state["model"])
        if self.teacher is not None and state.get("teacher") is not None:
            self.teacher.load_state_dict(state["teacher"])
        self.optimizer.load_state_dict(state["optimizer"])
        if state.get("scaler"):
            self.scaler.load_state_dict(state["scaler"])
        self.step = int(state["step"])
        self.data_state = DataState.from_dict(state["data_state"])


@dataclass(frozen=True)
class StepPlan:
    """What a step needs besides the state, fixed for the run."""

    forward: nn.Module  # the model, or its DDP / compiled wrapper
    total_steps: int
    warmup_steps: int
    accum: int
    optim: OptimConfig
    seed: int
    info: DistInfo
    amp_dtype: torch.dtype | None = None  # autocast dtype; None = fp32
    ddp: DistributedDataParallel | None = None  # for `no_sync()` on non-final micro-steps


@dataclass
class StepStats:
    """One step's figures (loss terms averaged over micro-batches and ranks, read back in one host copy)."""

    step: int  # the optimiser step these figures are for (1-based; the failing one when not `finite`)
    lr: float
    losses: dict[str, float]  # "loss" first, then its terms
    grad_norm: float | None  # pre-clip global norm; None without optim.grad_clip
    stop: bool  # some rank asked to stop after this step
    globals: dict[str, torch.Tensor] = field(default_factory=dict)  # g_a/g_v [B, D] (+ t_a/t_v) when asked for
    # with `with_globals`: the last micro-batch's store rows and frame indices ("rows", "frame_index") when known
    grads: dict[str, float] = field(default_factory=dict)  # gnorm_*/gshare_* when `grad_shares` was asked for

    @property
    def loss(self) -> float:
        return self.losses["loss"]

    @property
    def finite(self) -> bool:
        return math.isfinite(self.loss)

    def row(self) -> dict[str, float]:
        """The metrics row: loss terms, lr, grad_norm (when clipping)."""
        row = {**self.losses, "lr": self.lr}
        if self.grad_norm is not None:
            row["grad_norm"] = self.grad_norm
        row.update(self.grads)
        return row


def train_step(
    state: TrainState,
    batches: Iterator[MicroBatch],
    plan: StepPlan,
    *,
    stop: Callable[[], bool] | None = None,
    with_globals: bool = False,
    grad_shares: bool = False,
) -> StepStats:
    """One optimiser step over `plan.accum` micro-batches from `batches`, then the EMA teacher update.

    `stop()` is read after the backward passes and shared with every rank; `with_globals` asks the last micro-batch's
    forward for its global tokens (`StepStats.globals`); `grad_shares` measures each loss term's gradient on the
    shared encoder for that micro-batch (`StepStats.grads`, `tgdp.model.health.term_grad_norms`: extra autograd
    calls that leave the step's gradients, RNG and result unchanged). A non-finite rank-mean loss skips the
    optimiser step and leaves `state` unchanged (gradients cleared); check `StepStats.finite`.
    """
    lr = lr_at(state.step, plan.total_steps, plan.warmup_steps, plan.optim.lr, plan.optim.min_lr_ratio)
    set_lr(state.optimizer, lr)
    torch.manual_seed(step_seed(plan.seed, state.step, plan.info.rank))
    asks = _Asks(with_globals, grad_shares)
    sums, terms, globals_out, data_state = _accumulate(state, batches, plan, asks)
    # a fill on the device, not a host→device copy (which would wait for the queued backward)
    flag = torch.full((1,), 1.0 if stop is not None and stop() else 0.0, dtype=torch.float32, device=sums.device)
    reduced = all_reduce_mean(torch.cat([sums, flag]), plan.info)
    clip = plan.optim.grad_clip
    if clip is not None:
        state.scaler.unscale_(state.optimizer)
        grad_norm = torch.nn.utils.clip_grad_norm_(state.params, clip)
        reduced = torch.cat([reduced, grad_norm.detach().float().reshape(1)])
    # The step's only host sync: the finite guard must see this step's loss before the optimiser step is launched
    # (skipping it on a NaN keeps the last good state exact), so loss terms, stop flag and grad norm come back in
    # one small copy; everything before it (data copy, forward, backward, clipping) is queued.
    host = reduced.cpu()
    stats = StepStats(
        step=state.step + 1,
        lr=lr,
        losses={k: float(v) for k, v in zip(terms, host[: len(terms)].tolist(), strict=True)},
        grad_norm=float(host[-1]) if clip is not None else None,
        stop=bool(host[len(terms)] > 0),
        globals=globals_out,
        grads=asks.grads,
    )
    if not stats.finite:
        state.optimizer.zero_grad(set_to_none=True)
        if state.scaler.is_enabled():
            # Close the scaler's step (clipping has unscaled this optimizer): the next unscale_ would raise otherwise.
            # The loss, not the scale, was bad, so the scale stays.
            state.scaler.update(state.scaler.get_scale())
        return stats
    state.scaler.step(state.optimizer)
    state.scaler.update()
    state.optimizer.zero_grad(set_to_none=True)
    state.step += 1
    state.data_state = data_state
    if hasattr(state.model, "update_teacher"):
        state.model.update_teacher(state.step, plan.total_steps)
    return stats


@dataclass
class _Asks:
    """What the last micro-batch of a step is asked for besides the loss, and where the gradient figures go."""

    with_globals: bool = False
    grad_shares: bool = False
    grads: dict[str, float] = field(default_factory=dict)


def _last_forward(state: TrainState, plan: StepPlan, mb: MicroBatch, asks: _Asks) -> tuple[dict, dict]:
    """The last micro-batch's forward with what `asks` wants; returns (out, globals) and fills `asks.grads`."""
    kw = {}
    if asks.with_globals:
        kw["with_globals"] = True
    if asks.grad_shares:
        kw["with_terms"] = True
    out = plan.forward(mb.audio, mb.frames, **kw)
    globals_out = {k: out.pop(k) for k in GLOBAL_KEYS if k in out}
    if asks.with_globals and mb.rows is not None and mb.frame_index is not None:
        globals_out.update(rows=mb.rows, frame_index=mb.frame_index)
    terms = {k: out.pop(k) for k in TERM_KEYS if k in out}
    if asks.grad_shares and terms:
        scale = float(state.scaler.get_scale()) if state.scaler.is_enabled() else 1.0
        asks.grads = term_grad_norms(terms, encoder_parameters(state.student), scale)
    return out, globals_out


def _accumulate(
    state: TrainState, batches: Iterator[MicroBatch], plan: StepPlan, asks: _Asks
) -> tuple[torch.Tensor, tuple[str, ...], dict[str, torch.Tensor], DataState]:
    """Forward + backward over the step's micro-batches; returns (mean loss terms [K], term names, the last
    micro-batch's global tokens when asked for, the data position after the last micro-batch)."""
    sums: torch.Tensor | None = None
    terms: tuple[str, ...] = ()
    globals_out: dict[str, torch.Tensor] = {}
    data_state = state.data_state
    device = plan.info.device
    for micro in range(plan.accum):
        mb = next(batches)
        data_state = mb.data_state
        last = micro == plan.accum - 1
        with plan.ddp.no_sync() if plan.ddp is not None and not last else contextlib.nullcontext():
            with torch.autocast(device.type, dtype=plan.amp_dtype, enabled=plan.amp_dtype is not None):
                if last and (asks.with_globals or asks.grad_shares):
                    out, globals_out = _last_forward(state, plan, mb, asks)
                else:
                    out = plan.forward(mb.audio, mb.frames)
            if not terms:
                terms = LOSS_TERMS + tuple(sorted(k for k in out if k.endswith("_loss") and k not in LOSS_TERMS))
            state.scaler.scale(out["loss"] / plan.accum).backward()
        vals = torch.stack([out[k].detach().float() if k in out else torch.zeros((), device=device) for k in terms])
        sums = vals / plan.accum if sums is None else sums + vals / plan.accum
    assert sums is not None, "plan.accum must be >= 1"
    return sums, terms, globals_out, data_state
