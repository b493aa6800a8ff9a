"""`fit`: TG-DP / CAV-MAE Sync pretraining on one process or under torchrun + DDP.

Design:
- Everything derived (micro-batch, total and warmup steps) comes from `RunConfig.resolve` once; the LR is a pure
  function of the step (`optim.lr_at`), and the torch generator is reseeded from (seed, step, rank) before every
  optimiser step, so a resumed run reproduces the model's random masking without saving RNG state: `--resume`
  gives the same following losses as an uninterrupted run.
- DDP wraps the whole model; the EMA teacher's parameters have requires_grad=False, so DDP neither syncs nor waits
  for them, and `update_teacher` (after each optimiser step) is identical on every rank because the student is.
  Non-final micro-steps of gradient accumulation run under `no_sync()`.
- Loss terms are averaged over ranks every step (one small all-reduce) and that average decides the finite-loss
  guard, so all ranks stop together; the optimiser step is skipped, the last good state is checkpointed and
  `NonFiniteLossError` names the step.
- Rank 0 writes `config.yaml`, metrics and checkpoints; the other ranks wait at a barrier after a checkpoint.
- SIGINT/SIGTERM (Ctrl-C, SLURM preemption) only set a flag (`_StopRequest`); the flag rides on the per-step loss
  all-reduce, so every rank finishes the same optimiser step, the state is checkpointed and `fit` returns
  status "interrupted" with the signal number. A second signal stops at once (KeyboardInterrupt, no checkpoint).
"""

from __future__ import annotations

import contextlib
import inspect
import logging
import signal
import threading
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

import numpy as np
import torch
from torch import nn
from torch.nn.parallel import DistributedDataParallel
from torch.utils.data import DataLoader

from tgdp.config import ConfigError
from tgdp.model.health import collapse_warnings, health_metrics
from tgdp.pipeline.store import StoreMismatchError
from tgdp.train.checkpoint import (
    CheckpointError,
    git_revision,
    list_checkpoints,
    load_checkpoint,
    load_latest,
    model_parts,
    save_checkpoint,
)
from tgdp.train.config import ResolvedRun, RunConfig, save_run_config
from tgdp.train.data import (
    ClipDataset,
    DataState,
    TrainStream,
    batch_to_device,
    fbank_stats,
    open_store,
    store_geometry,
)
from tgdp.train.dist import DistInfo, all_reduce_mean, barrier, broadcast_object, cleanup, init_distributed
from tgdp.train.metrics import MetricsLogger, StepTimer
from tgdp.train.optim import build_optimizer, lr_at, set_lr

__all__ = ["NonFiniteLossError", "StoreMismatchError", "check_store", "fit", "step_seed"]

log = logging.getLogger(__name__)

# Settings that do not change what is computed: a resume may change them freely.
_BOOKKEEPING = {
    ("train", k)
    for k in ("log_every", "ckpt_every", "keep_last", "num_workers", "prefetch_factor", "progress", "tensorboard")
}
LOSS_TERMS = ("loss", "rec_loss", "mae_a_loss", "mae_v_loss", "contrastive_loss", "dis_loss")


class NonFiniteLossError(RuntimeError):
    """Training stopped on a NaN/inf loss; `step` is the failing optimiser step, `checkpoint` the saved state."""

    def __init__(self, message: str, step: int, checkpoint: Path | None) -> None:
        super().__init__(message)
        self.step = step
        self.checkpoint = checkpoint


def step_seed(seed: int, step: int, rank: int) -> int:
    """Torch seed for optimiser step `step` on `rank` (masking noise is then a function of the step)."""
    return int(np.random.SeedSequence([seed, step, rank]).generate_state(1, dtype=np.uint64)[0] >> 1)


def check_store(
    store_path: str | Path, cfg: RunConfig, open_fn: Callable[..., Any] = open_store
) -> tuple[Any, dict[str, int]]:
    """Open the training split and check it against the model; returns (store, geometry) or raises a clear error.

    Rules: every shard matches index.json (`Store.check`: present, byte size, row count); the store's fbank
    target_length must be >= the model's audio_length (a segment is cut from it), its mel bins must equal the
    model's, clips need more than `data.eval_frame` frames, and stored frames must equal the model's img_size unless
    `data.resize_frames` (then any size is resized; upsampling logs a warning).
    """
    path = Path(store_path)
    if not path.exists():
        raise StoreMismatchError(f"store not found: {path}")
    try:
        store = open_fn(path, cfg.data.split)
    except Exception as exc:
        raise StoreMismatchError(f"cannot open split {cfg.data.split!r} of store {path}: {exc}") from exc
    if hasattr(store, "check"):  # shards against index.json (sizes, rows): fail here, not in a DataLoader worker
        store.check()
    m = cfg.model_cfg()
    geo = store_geometry(store.meta)
    where = f"store {path} (split {cfg.data.split!r})"
    problems = []
    if geo["target_length"] and geo["target_length"] < m.audio_length:
        problems.append(
            f"fbank target_length {geo['target_length']} < model audio_length {m.audio_length} "
            "(a segment must fit inside the stored spectrogram): shard with "
            f"--set features.target_length={m.audio_length} or more"
        )
    if geo["num_mel_bins"] and geo["num_mel_bins"] != m.num_mel_bins:
        problems.append(
            f"store has {geo['num_mel_bins']} mel bins but the model expects {m.num_mel_bins}: build a matching store "
            f"with `tgdp-data validate ROOT --set features.num_mel_bins={m.num_mel_bins}` and `tgdp-data shard ROOT "
            f"--store NEW_STORE --set features.num_mel_bins={m.num_mel_bins}`, or train with "
            f"--set model.num_mel_bins={geo['num_mel_bins']}"
        )
    if geo["frame_size"] and geo["frame_size"] != m.img_size:
        if not cfg.data.resize_frames:
            problems.append(
                f"frames are {geo['frame_size']} px but the model's img_size is {m.img_size} and "
                "data.resize_frames is false"
            )
        elif geo["frame_size"] < m.img_size:
            log.warning("%s: %d px frames are upsampled to img_size %d", where, geo["frame_size"], m.img_size)
    if geo["num_frames"] and cfg.data.eval_frame >= geo["num_frames"]:
        problems.append(f"data.eval_frame={cfg.data.eval_frame} but clips have {geo['num_frames']} frames")
    if len(store) == 0:
        problems.append("the split is empty")
    if problems:
        raise StoreMismatchError(f"{where} does not match model {cfg.model_preset!r}: " + "; ".join(problems))
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


def _config_dict(cfg: RunConfig) -> dict[str, Any]:
    """RunConfig as a plain dict with the model section fully resolved."""
    d = cfg.model_dump(mode="json")
    d["model"] = cfg.model_cfg().model_dump(mode="json")
    return d


def _check_resume_config(ckpt: dict[str, Any], current: dict[str, Any], path: Path) -> None:
    old = ckpt.get("config") or {}
    if old.get("model") != current["model"]:
        diff = sorted(
            k
            for k in set(old.get("model", {})) | set(current["model"])
            if old.get("model", {}).get(k) != current["model"].get(k)
        )
        raise CheckpointError(
            f"{path}: model config differs from the checkpoint's ({', '.join(diff)}); refusing to resume"
        )
    changed = [
        f"{section}.{key}"
        for section in ("data", "optim", "train")
        for key in set(old.get(section, {})) | set(current[section])
        if (section, key) not in _BOOKKEEPING and old.get(section, {}).get(key) != current[section].get(key)
    ]
    if changed:
        log.warning(
            "resuming %s with changed %s: the continuation is no longer exact", path, ", ".join(sorted(changed))
        )


def fit(
    cfg: RunConfig,
    store_path: str | Path,
    run_dir: str | Path,
    resume: bool = False,
    *,
    model_factory: Callable[[Any], nn.Module] | None = None,
    on_step: Callable[[int, dict[str, float]], None] | None = None,
    open_fn: Callable[..., Any] = open_store,
) -> dict[str, Any]:
    """Train; returns a summary {status, step, total_steps, history, checkpoint, samples_per_s, ...}.

    `model_factory(model_cfg)` replaces `tgdp.model.build_model` (tests); `on_step(step, row)` runs after every
    optimiser step on every rank (an exception there stops the run like a crash would).
    """
    info = init_distributed(cfg.train.device)
    try:
        return _fit(cfg, Path(store_path), Path(run_dir), resume, info, model_factory, on_step, open_fn)
    finally:
        cleanup(info)


def _fit(
    cfg: RunConfig,
    store_path: Path,
    run_dir: Path,
    resume: bool,
    info: DistInfo,
    model_factory: Callable[[Any], nn.Module] | None,
    on_step: Callable[[int, dict[str, float]], None] | None,
    open_fn: Callable[..., Any],
) -> dict[str, Any]:
    model_cfg = cfg.model_cfg()
    store, _geo = check_store(store_path, cfg, open_fn)
    resolved: ResolvedRun = cfg.resolve(len(store), info.world_size)
    config_dict = _config_dict(cfg)
    t = cfg.train

    # -- resume / fresh-run guard --------------------------------------------------------------------------------
    ckpt: dict[str, Any] | None = None
    ckpt_path: Path | None = None
    if resume:
        chosen = None
        if info.is_main:
            found = load_latest(run_dir)
            chosen = str(found[0]) if found is not None else None
        chosen = broadcast_object(chosen, info)
        if chosen is None:
            log.warning("--resume: no checkpoint in %s; starting from scratch", run_dir)
        else:
            ckpt_path = Path(chosen)
            ckpt = load_checkpoint(ckpt_path)
            _check_resume_config(ckpt, config_dict, ckpt_path)
    elif list_checkpoints(run_dir):
        raise ConfigError(f"run dir {run_dir} already has checkpoints; pass --resume or choose a new --run-dir")

    # -- model, optimiser, precision --------------------------------------------------------------------------------
    torch.manual_seed(t.seed)  # identical initial weights on every rank
    if model_factory is None:
        from tgdp.model import build_model

        model_factory = build_model
    model = model_factory(model_cfg).to(info.device)
    student, teacher = model_parts(model)
    if teacher is not None:
        teacher.requires_grad_(False)
    amp_dtype, use_scaler = _precision(t.precision, info.device)
    scaler = torch.amp.GradScaler(info.device.type, enabled=use_scaler)
    params = [p for p in model.parameters() if p.requires_grad]
    no_decay_names = model.no_weight_decay() if hasattr(model, "no_weight_decay") else set()
    no_decay = [p for n, p in model.named_parameters() if n in no_decay_names]
    optimizer = build_optimizer(params, cfg.optim, no_decay)
    step = 0
    data_state = DataState()
    if ckpt is not None:
        student.load_state_dict(ckpt["model"])
        if teacher is not None and ckpt.get("teacher") is not None:
            teacher.load_state_dict(ckpt["teacher"])
        optimizer.load_state_dict(ckpt["optimizer"])
        if ckpt.get("scaler"):
            scaler.load_state_dict(ckpt["scaler"])
        step = int(ckpt["step"])
        data_state = DataState.from_dict(ckpt["data_state"])
        log.info("resumed from %s at step %d (epoch %d, batch %d)", ckpt_path, step, data_state.epoch, data_state.batch)
        del ckpt

    train_model: nn.Module = model
    ddp: DistributedDataParallel | None = None
    if info.distributed:
        ddp = DistributedDataParallel(
            model,
            device_ids=[info.device.index] if info.device.type == "cuda" else None,
            find_unused_parameters=t.find_unused_parameters,
        )
        train_model = ddp
    if t.compile:
        train_model = torch.compile(train_model)

    # -- data ----------------------------------------------------------------------------------------------------
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
        start=data_state,
    )
    norm_stats = fbank_stats(store.meta)  # batch_to_device normalises raw (uint8/float16) batches on the device
    loader = DataLoader(
        stream,
        batch_size=None,
        num_workers=t.num_workers,
        pin_memory=info.device.type == "cuda",
        prefetch_factor=t.prefetch_factor if t.num_workers > 0 else None,
        worker_init_fn=_ignore_stop_signals if t.num_workers > 0 else None,
    )

    # -- bookkeeping ---------------------------------------------------------------------------------------------
    if info.is_main:
        run_dir.mkdir(parents=True, exist_ok=True)
        save_run_config(cfg, run_dir / "config.yaml", resolved)
    metrics = MetricsLogger(
        run_dir,
        enabled=info.is_main,
        tensorboard=t.tensorboard,
        progress=t.progress,
        total_steps=resolved.total_steps,
        initial_step=step,
        samples_per_step=resolved.batch_size,
    )
    rev = git_revision() if info.is_main else ""

    def checkpoint(at_step: int, state: DataState) -> Path | None:
        path = None
        if info.is_main:
            path = save_checkpoint(
                run_dir,
                {
                    "model": student.state_dict(),
                    "teacher": teacher.state_dict() if teacher is not None else None,
                    "optimizer": optimizer.state_dict(),
                    "scaler": scaler.state_dict(),
                    "step": at_step,
                    "data_state": state.as_dict(),
                    "config": config_dict,
                    "derived": resolved.as_dict(),
                    "git_rev": rev,
                },
                t.keep_last,
            )
        barrier(info)
        return path

    # Health figures need the contrastive pass's global tokens: asked for on the last micro-batch of a logged step.
    health_ok = "with_globals" in inspect.signature(model.forward).parameters
    gathered = info.distributed and model_cfg.contrastive_gather  # negatives per query: the global batch
    nce_candidates = resolved.micro_batch * (info.world_size if gathered else 1)
    firing: set[str] = set()
    history: list[dict[str, float]] = []
    timer = StepTimer()
    run_t0 = time.perf_counter()
    start_step = step
    last_ckpt: Path | None = None
    ckpt_step = -1
    terms: tuple[str, ...] | None = None
    status = "completed"
    model.train()
    stop = _StopRequest()
    it = iter(loader)
    try:
        stop.__enter__()
        while step < resolved.total_steps:
            step_t0 = time.perf_counter()
            lr = lr_at(step, resolved.total_steps, resolved.warmup_steps, cfg.optim.lr, cfg.optim.min_lr_ratio)
            set_lr(optimizer, lr)
            torch.manual_seed(step_seed(t.seed, step, info.rank))
            state_before = data_state
            sums: torch.Tensor | None = None
            log_now = (step + 1) % t.log_every == 0 or step + 1 == resolved.total_steps
            globals_out: dict[str, torch.Tensor] = {}
            for micro in range(resolved.accum):
                d0 = time.perf_counter()
                batch = next(it)
                timer.data_s += time.perf_counter() - d0
                audio, frames = batch_to_device(batch, info.device, norm_stats)
                sync = ddp is not None and micro < resolved.accum - 1
                with ddp.no_sync() if sync else contextlib.nullcontext():
                    with torch.autocast(info.device.type, dtype=amp_dtype, enabled=amp_dtype is not None):
                        if health_ok and log_now and micro == resolved.accum - 1:
                            out = train_model(audio, frames, with_globals=True)
                            globals_out = {k: out.pop(k) for k in ("g_a", "g_v", "t_a", "t_v") if k in out}
                        else:
                            out = train_model(audio, frames)
                    if terms is None:
                        terms = LOSS_TERMS + tuple(
                            sorted(k for k in out if k.endswith("_loss") and k not in LOSS_TERMS)
                        )
                    scaler.scale(out["loss"] / resolved.accum).backward()
                vals = torch.stack(
                    [out[k].detach().float() if k in out else torch.zeros((), device=info.device) for k in terms]
                )
                sums = vals / resolved.accum if sums is None else sums + vals / resolved.accum
                data_state = stream.state_after(batch)
            assert sums is not None and terms is not None
            # The stop flag rides on the loss all-reduce: any rank signalled -> every rank stops after this step.
            flag = torch.tensor([1.0 if stop.signum else 0.0], device=sums.device)
            reduced = all_reduce_mean(torch.cat([sums, flag]), info)
            grad_norm_t: torch.Tensor | None = None
            if cfg.optim.grad_clip is not None:
                scaler.unscale_(optimizer)
                grad_norm_t = torch.nn.utils.clip_grad_norm_(params, cfg.optim.grad_clip)
                reduced = torch.cat([reduced, grad_norm_t.detach().float().reshape(1)])
            # The step's only host sync: the finite guard must see this step's loss before the optimiser step is
            # launched (skipping it on a NaN keeps the last good state exact), so loss terms, stop flag and grad norm
            # come back in one small copy; everything before it (data copy, forward, backward, clipping) is queued.
            host = reduced.cpu()
            stats, stop_after = host[: len(terms)], bool(host[len(terms)] > 0)
            loss_value = float(stats[0])
            if not np.isfinite(loss_value):
                optimizer.zero_grad(set_to_none=True)
                data_state = state_before
                path = checkpoint(step, state_before)
                msg = (
                    f"non-finite loss ({loss_value}) at step {step + 1}: training stopped before that optimiser step; "
                    f"the last good state (step {step}) is saved to {path or run_dir / 'checkpoints'}"
                )
                log.error(msg)
                metrics.message(msg)
                metrics.log(step + 1, {"event": "nonfinite_loss", "loss": loss_value})
                raise NonFiniteLossError(msg, step + 1, path)
            grad_norm = float(host[-1]) if grad_norm_t is not None else None
            scaler.step(optimizer)
            scaler.update()
            optimizer.zero_grad(set_to_none=True)
            step += 1
            if hasattr(model, "update_teacher"):
                model.update_teacher(step, resolved.total_steps)

            timer.total_s += time.perf_counter() - step_t0
            timer.samples += resolved.batch_size
            timer.steps += 1
            metrics.advance(resolved.batch_size)
            row = {k: float(v) for k, v in zip(terms, stats.tolist(), strict=True)}
            row["lr"] = lr
            if grad_norm is not None:
                row["grad_norm"] = grad_norm
            if log_now:  # computed before the step: (step + 1) then is step now
                if "g_a" in globals_out and "g_v" in globals_out:
                    row.update(
                        health_metrics(
                            globals_out["g_a"],
                            globals_out["g_v"],
                            globals_out.get("t_a"),
                            globals_out.get("t_v"),
                            nce=row.get("contrastive_loss"),
                            batch=nce_candidates,
                        )
                    )
                    fired = collapse_warnings(row)
                    for msg in fired:
                        if msg.split("=")[0] not in firing:
                            metrics.message(f"WARNING step {step}: representation collapse? {msg} (docs/MODEL.md)")
                    firing = {msg.split("=")[0] for msg in fired}
                row.update(timer.summary())
                row.update(epoch=data_state.epoch, samples=step * resolved.batch_size)
                if info.device.type == "cuda":
                    row["gpu_mem_gb"] = torch.cuda.max_memory_allocated(info.device) / 2**30
                metrics.log(step, row)
                history.append({"step": step, **row})
                timer.reset()
            if on_step is not None:
                on_step(step, row)
            if step % t.ckpt_every == 0 and step < resolved.total_steps:
                last_ckpt, ckpt_step = checkpoint(step, data_state), step
            if stop_after and step < resolved.total_steps:
                status = "interrupted"
                break
        if ckpt_step != step and (step > start_step or last_ckpt is None):
            last_ckpt = checkpoint(step, data_state)
        if status == "interrupted":
            metrics.log(step, {"event": "interrupted", "signal": signal.Signals(stop.signum or signal.SIGTERM).name})
    finally:
        stop.__exit__()
        del it
        metrics.close()
    elapsed = time.perf_counter() - run_t0
    return {
        "status": status,
        "signal": int(stop.signum or signal.SIGTERM) if status == "interrupted" else None,
        "step": step,
        "total_steps": resolved.total_steps,
        "resumed_from": str(ckpt_path) if ckpt_path else None,
        "history": history,
        "checkpoint": str(last_ckpt) if last_ckpt else None,
        "samples_per_s": (step - start_step) * resolved.batch_size / max(elapsed, 1e-9),
        "elapsed_s": elapsed,
        "derived": resolved.as_dict(),
        "run_dir": str(run_dir),
    }
