"""`fit`: TG-DP / CAV-MAE Sync pretraining on one process or under torchrun + DDP.

Design:
- `fit` checks the store once, picks the checkpoint to continue from (`restore`), builds a `TrainState` and a
  `StepPlan` (tgdp.train.step), then runs `train_step` until `train.steps`, logging, checkpointing and stopping
  around it; it returns a `FitSummary`.
- Everything derived (micro-batch, total and warmup steps) comes from `RunConfig.resolve` once; the step is a
  function of (state, step seed), so `--resume` gives the same following losses as an uninterrupted run.
- On a non-finite rank-mean loss (all ranks agree: it comes from the step's all-reduce) the optimiser step is
  skipped, the last good state is checkpointed and `NonFiniteLossError` names the step.
- Rank 0 writes `config.yaml`, metrics and checkpoints; the other ranks wait for it after a checkpoint and stop with
  it when the write fails (a full disk: one line naming the file and the free space).
- SIGINT/SIGTERM (Ctrl-C, SLURM preemption) only set a flag (`_StopRequest`); the flag rides on the per-step loss
  all-reduce, so every rank finishes the same optimiser step, the state is checkpointed and `fit` returns
  status "interrupted" with the signal number. A second signal stops at once (KeyboardInterrupt, no checkpoint).
"""

from __future__ import annotations

import dataclasses
import functools
import inspect
import logging
import signal
import threading
import time
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, NoReturn

import torch
from torch import nn
from torch.nn.parallel import DistributedDataParallel
from torch.utils.data import DataLoader

from tgdp.config import ConfigError
from tgdp.model.health import collapse_warnings, health_metrics
from tgdp.pipeline.truth import PatchTruth
from tgdp.store import StoreMismatchError
from tgdp.store.fs import is_remote
from tgdp.train.checkpoint import (
    CheckpointError,
    git_revision,
    list_checkpoints,
    load_checkpoint,
    load_latest,
    remove_stale_temporaries,
    save_checkpoint,
)
from tgdp.train.config import (
    CONFIG_HISTORY,
    ResolvedRun,
    RunConfig,
    config_changes,
    record_config_change,
    save_run_config,
)
from tgdp.train.data import (
    ClipDataset,
    DataState,
    TrainStream,
    batch_to_device,
    check_geometry,
    fbank_stats,
    open_store,
)
from tgdp.train.dist import DistInfo, barrier, broadcast_object, cleanup, init_distributed
from tgdp.train.metrics import MetricsLogger, StepTimer
from tgdp.train.selection import selection_metrics
from tgdp.train.step import MicroBatch, StepPlan, StepStats, TrainState, train_step

__all__ = [
    "FitSummary",
    "NonFiniteLossError",
    "StoreMismatchError",
    "check_store",
    "fit",
    "restore",
]

log = logging.getLogger(__name__)

# Settings that do not change what is computed: a resume may change them freely.
_BOOKKEEPING = {
    ("train", k)
    for k in (
        "log_every",
        "ckpt_every",
        "keep_last",
        "num_workers",
        "prefetch_factor",
        "progress",
        "tensorboard",
        "grad_shares",
    )
}


class NonFiniteLossError(RuntimeError):
    """Training stopped on a NaN/inf loss; `step` is the failing optimiser step, `checkpoint` the saved state."""

    def __init__(self, message: str, step: int, checkpoint: Path | None) -> None:
        super().__init__(message)
        self.step = step
        self.checkpoint = checkpoint


def check_store(
    store_path: str | Path, cfg: RunConfig, open_fn: Callable[..., Any] = open_store
) -> tuple[Any, dict[str, int]]:
    """Open the training split and check it against the model; returns (store, geometry) or raises a clear error.

    Rules: every shard matches index.json (`Store.check`: present, byte size, row count), then `check_geometry`
    (fbank length, mel bins, frames per clip > `data.eval_frame`, rows, frame size unless `data.resize_frames`).
    """
    path = store_path if is_remote(store_path) else Path(store_path)
    if isinstance(path, Path) and not path.exists():
        raise StoreMismatchError(f"store not found: {path}")
    try:
        store = open_fn(path, cfg.data.split)
    except Exception as exc:
        raise StoreMismatchError(f"cannot open split {cfg.data.split!r} of store {path}: {exc}") from exc
    if hasattr(store, "check"):  # shards against index.json (sizes, rows): fail here, not in a DataLoader worker
        store.check()
    geo = check_geometry(
        store,
        cfg.model_cfg(),
        where=f"store {path} (split {cfg.data.split!r})",
        model_name=cfg.model_preset,
        resize_frames=cfg.data.resize_frames,
        eval_frame=cfg.data.eval_frame,
        training=True,
    )
    return store, geo


class _StopRequest:
    """Context manager: while active, SIGINT/SIGTERM record the signal instead of killing the process (main thread
    only; elsewhere signals keep their handlers). A second signal raises KeyboardInterrupt."""

    SIGNALS = (signal.SIGINT, signal.SIGTERM)

    def __init__(self) -> None:
        self.signum = 0
        self._old: dict[int, Any] = {}

    def _handle(self, signum: int, frame: Any) -> None:
        if self.signum:
            raise KeyboardInterrupt(f"second {signal.Signals(signum).name}: stopping without a checkpoint")
        self.signum = signum

    def __enter__(self) -> _StopRequest:
        if threading.current_thread() is threading.main_thread():
            for sig in self.SIGNALS:
                self._old[sig] = signal.signal(sig, self._handle)
        return self

    def __exit__(self, *exc: object) -> None:
        for sig, old in self._old.items():
            signal.signal(sig, old)


def _ignore_stop_signals(worker_id: int) -> None:
    """DataLoader worker init: Ctrl-C reaches the whole process group and SLURM signals every process of the job
    step, so workers ignore SIGINT/SIGTERM and keep serving until the main process, which decides, shuts them down
    (its normal shutdown; torch's own SIGTERM handler here would kill the worker and crash the main process)."""
    for sig in _StopRequest.SIGNALS:
        signal.signal(sig, signal.SIG_IGN)


def _precision(kind: str, device: torch.device) -> tuple[torch.dtype | None, bool]:
    """(autocast dtype or None, use GradScaler)."""
    if kind == "auto":
        kind = "bf16" if device.type == "cuda" else "fp32"
    if kind == "fp32":
        return None, False
    if kind == "fp16":
        if device.type != "cuda":
            raise ConfigError("train.precision=fp16 needs CUDA (use bf16 or fp32 on CPU)")
        return torch.float16, True
    return torch.bfloat16, False


def _check_resume_config(
    ckpt: dict[str, Any], current: dict[str, Any], path: Path, allow_change: bool
) -> dict[str, list[Any]]:
    """The settings that differ from the checkpoint's config ({"section.key": [old, new]}). A model change is always
    refused; any other change but bookkeeping needs `allow_change`."""
    changed = config_changes(ckpt.get("config") or {}, current)
    model = [k for k in changed if k.startswith("model.")]
    if model:
        raise CheckpointError(
            f"{path}: model config differs from the checkpoint's ({', '.join(model)}); refusing to resume"
        )
    computed = {k: v for k, v in changed.items() if tuple(k.split(".", 1)) not in _BOOKKEEPING}
    if computed and not allow_change:
        listed = ", ".join(f"{k} {v[0]!r} -> {v[1]!r}" for k, v in computed.items())
        raise ConfigError(
            f"{path}: resuming with a changed config ({listed}); resume with the run's settings, or pass "
            f"--allow-config-change to continue under the new ones (recorded in {CONFIG_HISTORY})"
        )
    if computed:
        log.warning("resuming %s with changed %s: the continuation is no longer exact", path, ", ".join(computed))
    return changed


@dataclass(frozen=True)
class FitSummary:
    """What `fit` returns (rank 0 and every other rank alike; `checkpoint` is None on ranks > 0)."""

    status: str  # "completed" or "interrupted" (by a signal; `signal` holds its number)
    signal: int | None
    step: int  # optimiser steps done, counting those before a resume
    total_steps: int
    resumed_from: str | None  # the checkpoint this run continued from
    history: list[dict[str, float]]  # one row per logged step: {"step", loss terms, lr, health, timing, ...}
    checkpoint: str | None  # the last checkpoint written (None when none was written by this rank)
    samples_per_s: float  # over this call's steps, start-up included
    elapsed_s: float
    derived: dict[str, Any]  # ResolvedRun values
    run_dir: str

    def as_dict(self) -> dict[str, Any]:
        return dataclasses.asdict(self)


def restore(
    run_dir: Path, config: dict[str, Any], info: DistInfo, resume: bool, allow_change: bool = False
) -> tuple[Path, dict[str, Any]] | None:
    """The checkpoint to continue from as (path, checkpoint dict), or None for a fresh start.

    With `resume`, rank 0 picks the newest readable checkpoint of `run_dir` (every rank loads the same file) and its
    model config must equal `config["model"]`; any other changed setting but bookkeeping is refused unless
    `allow_change` (the continuation is then no longer exact). Without `resume`, a run dir that already holds
    checkpoints is refused. Load the result with `TrainState.load_state_dict`.
    """
    if not resume:
        if list_checkpoints(run_dir):
            raise ConfigError(f"run dir {run_dir} already has checkpoints; pass --resume or choose a new --run-dir")
        return None
    chosen, found = None, None
    if info.is_main:
        found = load_latest(run_dir)
        chosen = str(found[0]) if found is not None else None
    chosen = broadcast_object(chosen, info)
    if chosen is None:
        log.warning("--resume: no checkpoint in %s; starting from scratch", run_dir)
        return None
    path = Path(chosen)
    ckpt = found[1] if found is not None else load_checkpoint(path)  # rank 0 has read it already
    _check_resume_config(ckpt, config, path, allow_change)
    return path, ckpt


def fit(
    cfg: RunConfig,
    store_path: str | Path,
    run_dir: str | Path,
    resume: bool = False,
    *,
    allow_config_change: bool = False,
    model_factory: Callable[[Any], nn.Module] | None = None,
    store_opener: Callable[..., Any] | None = None,
    on_step: Callable[[int, dict[str, float]], None] | None = None,
) -> FitSummary:
    """Train `cfg` on the store's training split, writing config, metrics and checkpoints to `run_dir`.

    `resume` continues from the newest good checkpoint; a changed config (other than bookkeeping) is refused unless
    `allow_config_change`, and recorded in `run_dir/config-history.json` (`config.yaml` stays the first config).

    Collaborators (`None` = the real one, as the CLI runs): `model_factory(model_cfg)` builds the model
    (`tgdp.model.build_model`); `store_opener(path, split)` opens the store (`Store.open` with the run's `store`
    settings; DataLoader workers call it, so it must pickle); `on_step(step, row)` runs after every optimiser step on
    every rank with the step's metrics row (an exception there stops the run as a crash would).
    """
    info = init_distributed(cfg.train.device)
    try:
        if store_opener is None:  # the real reader: the run's endpoint and shard cache (picklable for workers)
            store_opener = functools.partial(open_store, store_cfg=cfg.store)
        store = store_path if is_remote(store_path) else Path(store_path)
        resume_mode = (resume, allow_config_change)
        return _fit(cfg, store, Path(run_dir), resume_mode, info, model_factory, on_step, store_opener)
    finally:
        cleanup(info)


def _fit(
    cfg: RunConfig,
    store_path: Path,
    run_dir: Path,
    resume_mode: tuple[bool, bool],
    info: DistInfo,
    model_factory: Callable[[Any], nn.Module] | None,
    on_step: Callable[[int, dict[str, float]], None] | None,
    open_fn: Callable[..., Any],
) -> FitSummary:
    store, _geo = check_store(store_path, cfg, open_fn)
    resolved: ResolvedRun = cfg.resolve(len(store), info.world_size)
    config_dict = cfg.model_dump(mode="json")  # its model section is the resolved ModelConfig
    found = restore(run_dir, config_dict, info, *resume_mode)  # before the model is built: a refusal costs nothing
    state, amp_dtype = _build_state(cfg, info, model_factory)
    if found is not None:
        state.load_state_dict(found[1])
        log.info(
            "resumed from %s at step %d (epoch %d, batch %d)",
            found[0],
            state.step,
            state.data_state.epoch,
            state.data_state.batch,
        )
    resumed_from = str(found[0]) if found is not None else None
    # what the config record needs, without the checkpoint's tensors
    prior = (found[0], {k: found[1].get(k) for k in ("step", "config", "derived")}) if found is not None else None
    del found
    plan = _build_plan(state, cfg, resolved, info, amp_dtype)
    stream, loader = _build_loader(cfg, store_path, resolved, info, state.data_state, open_fn)
    if info.is_main:
        _record_config(cfg, run_dir, resolved, prior)
    metrics = MetricsLogger(
        run_dir,
        enabled=info.is_main,
        tensorboard=cfg.train.tensorboard,
        progress=cfg.train.progress,
        total_steps=resolved.total_steps,
        initial_step=state.step,
        samples_per_step=resolved.batch_size,
    )
    run = _Run(cfg, resolved, run_dir, state, plan, metrics, config_dict, on_step)
    run.truth, run.geo = _find_truth(cfg, store_path, store), _geo
    start_step, run_t0 = state.step, time.perf_counter()
    status, signum = run.run(loader, stream, fbank_stats(store.meta))
    elapsed = time.perf_counter() - run_t0
    return FitSummary(
        status=status,
        signal=signum,
        step=state.step,
        total_steps=resolved.total_steps,
        resumed_from=resumed_from,
        history=run.history,
        checkpoint=str(run.last_ckpt) if run.last_ckpt else None,
        samples_per_s=(state.step - start_step) * resolved.batch_size / max(elapsed, 1e-9),
        elapsed_s=elapsed,
        derived=resolved.as_dict(),
        run_dir=str(run_dir),
    )


def _find_truth(cfg: RunConfig, store_path: Path, store: Any) -> PatchTruth | None:
    """The store's per-patch ground truth (`tgdp.pipeline.truth`), when it has one and the training samples keep
    its geometry (no random crop, time shift or mixup)."""
    d = cfg.data
    if d.random_resized_crop or d.time_shifting > 0 or d.mixup > 0 or not hasattr(store, "clip_ids"):
        return None
    return PatchTruth.find(store_path, d.split, list(store.clip_ids))


def _record_config(cfg: RunConfig, run_dir: Path, resolved: ResolvedRun, found: tuple[Path, dict] | None) -> None:
    """`config.yaml` is the config the run started under (written on a fresh start, or when missing); a resume
    whose config or derived values differ from those of the checkpoint it continues from (`found`: its path and
    its step, config and derived values) adds a `config-history.json` entry."""
    run_dir.mkdir(parents=True, exist_ok=True)
    remove_stale_temporaries(run_dir)
    if found is None or not (run_dir / "config.yaml").exists():
        save_run_config(cfg, run_dir / "config.yaml", resolved)
    if found is None:
        return
    config, derived = cfg.model_dump(mode="json"), resolved.as_dict()
    ckpt = found[1]
    changed = config_changes(ckpt.get("config") or {}, config)
    changed.update(config_changes({"derived": ckpt.get("derived") or {}}, {"derived": derived}))
    if changed:
        entry = {"step": int(ckpt["step"]), "checkpoint": found[0].name, "changed": changed}
        record_config_change(run_dir, {**entry, "config": config, "derived": derived})


def _build_state(
    cfg: RunConfig, info: DistInfo, model_factory: Callable[[Any], nn.Module] | None
) -> tuple[TrainState, torch.dtype | None]:
    """A fresh TrainState on the device (same initial weights on every rank) and the autocast dtype."""
    torch.manual_seed(cfg.train.seed)
    if model_factory is None:
        from tgdp.model import build_model

        model_factory = build_model
    model = model_factory(cfg.model_cfg()).to(info.device)
    amp_dtype, use_scaler = _precision(cfg.train.precision, info.device)
    return TrainState.create(model, cfg.optim, info.device, use_scaler), amp_dtype


def _build_plan(
    state: TrainState, cfg: RunConfig, resolved: ResolvedRun, info: DistInfo, amp_dtype: torch.dtype | None
) -> StepPlan:
    """Wrap the (restored) model for DDP and torch.compile as configured; DDP broadcasts rank 0's weights."""
    forward: nn.Module = state.model
    ddp: DistributedDataParallel | None = None
    if info.distributed:
        ddp = DistributedDataParallel(
            state.model,
            device_ids=[info.device.index] if info.device.type == "cuda" else None,
            find_unused_parameters=cfg.train.find_unused_parameters,
        )
        forward = ddp
    if cfg.train.compile:
        forward = torch.compile(forward)
    return StepPlan(
        forward=forward,
        total_steps=resolved.total_steps,
        warmup_steps=resolved.warmup_steps,
        accum=resolved.accum,
        optim=cfg.optim,
        seed=cfg.train.seed,
        info=info,
        amp_dtype=amp_dtype,
        ddp=ddp,
    )


def _build_loader(
    cfg: RunConfig,
    store_path: Path,
    resolved: ResolvedRun,
    info: DistInfo,
    start: DataState,
    open_fn: Callable[..., Any],
) -> tuple[TrainStream, DataLoader]:
    """This rank's endless micro-batch stream from `start`, and the DataLoader that runs it."""
    t, model_cfg = cfg.train, cfg.model_cfg()
    dataset = ClipDataset(
        store_path,
        audio_length=model_cfg.audio_length,
        img_size=model_cfg.img_size,
        mode="train",
        data=cfg.data,
        seed=t.seed,
        open_fn=open_fn,
        # CPU training with workers: normalising in the main process would serialise work the workers do in parallel.
        normalize_in_worker=info.device.type == "cpu" and t.num_workers > 0,
    )
    stream = TrainStream(
        dataset,
        micro_batch=resolved.micro_batch,
        rank=info.rank,
        world_size=info.world_size,
        seed=t.seed,
        shuffle=cfg.data.shuffle,
        start=start,
        shuffle_mode=cfg.data.shuffle_mode,
        block_shards=cfg.data.block_shards,
    )
    loader = DataLoader(
        stream,
        batch_size=None,
        num_workers=t.num_workers,
        pin_memory=info.device.type == "cuda",
        prefetch_factor=t.prefetch_factor if t.num_workers > 0 else None,
        worker_init_fn=_ignore_stop_signals if t.num_workers > 0 else None,
    )
    return stream, loader


def _micro_batches(
    it: Iterator[dict[str, Any]],
    stream: TrainStream,
    device: torch.device,
    norm_stats: tuple[float, float],
    timer: StepTimer,
) -> Iterator[MicroBatch]:
    """Loader batches -> MicroBatch on `device` (normalised there); the wait for the loader goes to `timer.data_s`.

    `it` is created by the caller, before the first step: with workers that starts them, and without workers its
    creation draws from the torch generator, which must happen before (not inside) the first seeded step."""
    while True:
        t0 = time.perf_counter()
        batch = next(it, None)
        timer.data_s += time.perf_counter() - t0
        if batch is None:
            return
        audio, frames = batch_to_device(batch, device, norm_stats)
        yield MicroBatch(audio, frames, stream.state_after(batch), batch.get("index"), batch.get("frame"))


@dataclass(eq=False)
class _Run:
    """The step loop of one `fit` call with its logging, health checks, checkpoints and stop rules."""

    cfg: RunConfig
    resolved: ResolvedRun
    run_dir: Path
    state: TrainState
    plan: StepPlan
    metrics: MetricsLogger
    config: dict[str, Any]  # saved in every checkpoint
    on_step: Callable[[int, dict[str, float]], None] | None
    history: list[dict[str, float]] = field(default_factory=list)
    last_ckpt: Path | None = None
    timer: StepTimer = field(default_factory=StepTimer)
    firing: set[str] = field(default_factory=set)  # collapse warnings raised at the last logged step
    truth: PatchTruth | None = None  # the store's ground truth: selection figures at logged steps
    geo: dict[str, int] = field(default_factory=dict)  # store_geometry of the training split
    rev: str = field(init=False, default="")
    health_ok: bool = field(init=False, default=False)
    grads_ok: bool = field(init=False, default=False)
    nce_candidates: int = field(init=False, default=0)

    @property
    def info(self) -> DistInfo:
        return self.plan.info

    def __post_init__(self) -> None:
        self.rev = git_revision() if self.info.is_main else ""
        # Health figures need the contrastive pass's global tokens: asked for on the last micro-batch of a logged step.
        params = inspect.signature(self.state.model.forward).parameters
        self.health_ok = "with_globals" in params
        self.grads_ok = "with_terms" in params and self.cfg.train.grad_shares
        gathered = self.info.distributed and self.cfg.model_cfg().contrastive_gather  # negatives: the global batch
        self.nce_candidates = self.resolved.micro_batch * (self.info.world_size if gathered else 1)

    def run(self, loader: DataLoader, stream: TrainStream, norm_stats: tuple[float, float]) -> tuple[str, int | None]:
        """Steps until `train.steps` or a stop signal; returns (status, signal number or None)."""
        self.state.model.train()
        stop = _StopRequest()
        it = iter(loader)
        batches = _micro_batches(it, stream, self.info.device, norm_stats, self.timer)
        try:
            with stop:
                status = self._steps(batches, stop)
                if status == "interrupted":
                    signame = signal.Signals(stop.signum or signal.SIGTERM).name
                    self.metrics.log(self.state.step, {"event": "interrupted", "signal": signame})
        finally:
            batches.close()
            del it
            self.metrics.close()
        return status, (int(stop.signum or signal.SIGTERM) if status == "interrupted" else None)

    def _steps(self, batches: Iterator[MicroBatch], stop: _StopRequest) -> str:
        state, total, t = self.state, self.plan.total_steps, self.cfg.train
        start_step, ckpt_step = state.step, -1
        status = "completed"

        def stop_requested() -> bool:
            return bool(stop.signum)

        while state.step < total:
            step_t0 = time.perf_counter()
            log_now = (state.step + 1) % t.log_every == 0 or state.step + 1 == total
            stats = train_step(
                state,
                batches,
                self.plan,
                stop=stop_requested,
                with_globals=self.health_ok and log_now,
                grad_shares=self.grads_ok and log_now,
            )
            if not stats.finite:
                self._stop_nonfinite(stats)
            self.timer.total_s += time.perf_counter() - step_t0
            self.timer.samples += self.resolved.batch_size
            self.timer.steps += 1
            self.metrics.advance(self.resolved.batch_size)
            row = stats.row()
            if log_now:
                self._log(row, stats)
            if self.on_step is not None:
                self.on_step(state.step, row)
            if state.step % t.ckpt_every == 0 and state.step < total:
                self.last_ckpt, ckpt_step = self.checkpoint(), state.step
            if stats.stop and state.step < total:
                status = "interrupted"
                break
        if ckpt_step != state.step and (state.step > start_step or self.last_ckpt is None):
            self.last_ckpt = self.checkpoint()
        return status

    def checkpoint(self) -> Path | None:
        """Save the state (rank 0) with the run's config, derived values and git revision; all ranks then meet."""
        path, failed = None, None
        try:
            if self.info.is_main:
                extra = {"config": self.config, "derived": self.resolved.as_dict(), "git_rev": self.rev}
                path = save_checkpoint(self.run_dir, {**self.state.state_dict(), **extra}, self.cfg.train.keep_last)
        except Exception as exc:  # a full disk: every rank must stop, not wait for rank 0 at a barrier
            failed = exc
        # rank 0's failure reaches every rank (and this is the ranks' meeting point)
        message = broadcast_object(str(failed) if failed is not None else None, self.info)
        if message is not None:  # every rank holds the message before any tears the group down (gloo aborts)
            barrier(self.info)
        if failed is not None:
            raise failed
        if message is not None:
            raise CheckpointError(f"rank 0 could not write the checkpoint: {message}")
        return path

    def _stop_nonfinite(self, stats: StepStats) -> NoReturn:
        """The failed step left the state at the last good step: checkpoint it, record the event, raise."""
        path = self.checkpoint()
        msg = (
            f"non-finite loss ({stats.loss}) at step {stats.step}: training stopped before that optimiser step; "
            f"the last good state (step {self.state.step}) is saved to {path or self.run_dir / 'checkpoints'}"
        )
        log.error(msg)
        self.metrics.message(msg)
        self.metrics.log(stats.step, {"event": "nonfinite_loss", "loss": stats.loss})
        raise NonFiniteLossError(msg, stats.step, path)

    def _log(self, row: dict[str, float], stats: StepStats) -> None:
        """Complete a logged step's row (health, collapse warnings, timing, position) and write it."""
        state, g = self.state, stats.globals
        if "g_a" in g and "g_v" in g:
            nce = row.get("contrastive_loss")
            row.update(
                health_metrics(g["g_a"], g["g_v"], g.get("t_a"), g.get("t_v"), nce=nce, batch=self.nce_candidates)
            )
            fired = collapse_warnings(row)
            for msg in fired:
                if msg.split("=")[0] not in self.firing:
                    self.metrics.message(f"WARNING step {state.step}: representation collapse? {msg} (docs/MODEL.md)")
            self.firing = {msg.split("=")[0] for msg in fired}
        if self.truth is not None:
            geo = self.geo
            row.update(selection_metrics(self.truth, g, self.cfg.model_cfg(), geo["num_frames"], geo["target_length"]))
        row.update(self.timer.summary())
        row.update(epoch=state.data_state.epoch, samples=state.step * self.resolved.batch_size)
        if self.info.device.type == "cuda":
            row["gpu_mem_gb"] = torch.cuda.max_memory_allocated(self.info.device) / 2**30
        self.metrics.log(state.step, row)
        self.history.append({"step": state.step, **row})
        self.timer.reset()
