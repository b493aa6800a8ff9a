"""One-shot device check (issue 16): the training step, the loader and a real run, on one GPU within ~8 minutes.

On CUDA it measures, for `cavmae_sync_base` and `tgdp_base`:
- the step (`tgdp.train.step.train_step` itself: forward + backward + the finite-loss guard's host sync +
  optimiser + EMA update, synthetic batch on the device) at batch 48 and at the largest batch that fits: steps/s,
  samples/s, peak memory, MFU = `flops_per_step` / step time / the device's bf16 dense peak (named in the output;
  `--peak-tflops` overrides the table);
- variants at batch 48: bf16 autocast vs fp32, fused Adam, channels_last patch embedding; the teacher forward
  alone; and the SDPA kernels the attention actually dispatched to (profiler op names);
- the loader from a store built here (synthetic ffmpeg clips, 224 px, 128 mel, 1024 frames): samples/s with N
  workers up to the core count, uint8/float16 out of the workers and normalised on the device (the current path)
  vs float32 normalised in the workers (the previous path); JPEG decoding on the CPU vs batched on the GPU;
- a real `tgdp-train` run of `tgdp_base` (200 steps, bf16, fused Adam if it was faster, the largest batch that fits
  and the store allows, the fastest worker count): samples/s and the data-wait fraction;
- torch.compile (inductor) at batch 48, last, as it is the slowest to set up (skipped if the budget is spent).

Every section is fail-soft: an exception is recorded in the JSON (`error`, `traceback`) and the next one runs; a
section that would overrun the time budget is recorded as skipped. Output: a JSON file (`--out`) and, with `--md`,
a BENCHMARKS.md section (`--section-name`, default "gpu").

On CPU (`--device cpu`, or no CUDA) the same code runs the tiny presets at small batches (`--quick` makes every
count minimal; the test suite runs that mode so the script cannot rot). Run on a GPU machine:

    .venv/bin/python -m benchmarks.gpu_check --out gpu_check.json --md BENCHMARKS.md
"""

from __future__ import annotations

import argparse
import contextlib
import json
import os
import platform
import shutil
import subprocess
import sys
import tempfile
import time
import traceback
from collections.abc import Callable
from pathlib import Path
from typing import Any

import torch

from benchmarks.harness import Figure, write_section
from tgdp.core.device import DeviceError, pick_device

__all__ = ["PEAK_BF16_TFLOPS", "main", "peak_tflops", "run_checks"]

# Dense bf16 tensor-core peaks (TFLOPS, no sparsity) from the vendor data sheets, matched in order against
# torch.cuda.get_device_name: the first key contained in the name wins (so "H100 PCIe" before "H100").
PEAK_BF16_TFLOPS: list[tuple[str, float, str]] = [
    ("GH200", 989.0, "NVIDIA GH200 (H100 SXM-class), bf16 dense"),
    ("H200", 989.0, "NVIDIA H200 SXM, bf16 dense"),
    ("H100 PCIe", 756.0, "NVIDIA H100 PCIe, bf16 dense"),
    ("H100 NVL", 835.0, "NVIDIA H100 NVL, bf16 dense"),
    ("H100", 989.0, "NVIDIA H100 SXM, bf16 dense"),
    ("H800", 989.0, "NVIDIA H800 SXM, bf16 dense"),
    ("B200", 2250.0, "NVIDIA B200, bf16 dense"),
    ("A100", 312.0, "NVIDIA A100, bf16 dense"),
    ("A800", 312.0, "NVIDIA A800, bf16 dense"),
    ("L40S", 362.0, "NVIDIA L40S, bf16 dense"),
    ("L4", 121.0, "NVIDIA L4, bf16 dense"),
]

TARGET_MFU = 0.40
TARGET_RATIO_SLACK = 1.05
TARGET_DATA_WAIT = 0.05


def peak_tflops(device_name: str, override: float | None = None) -> tuple[float | None, str]:
    """(bf16 dense peak in TFLOPS, where it came from) for a device name; (None, reason) when unknown."""
    if override is not None:
        return override, f"--peak-tflops {override:g}"
    for key, tflops, what in PEAK_BF16_TFLOPS:
        if key.lower() in device_name.lower():
            return tflops, what
    return None, f"no bf16 peak known for {device_name!r}: pass --peak-tflops"


# ------------------------------------------------------------------------------------------------ plumbing
class Budget:
    """Wall-clock budget shared by the sections."""

    def __init__(self, seconds: float) -> None:
        self.t0 = time.monotonic()
        self.seconds = seconds

    def left(self) -> float:
        return self.seconds - (time.monotonic() - self.t0)


def run_section(results: dict[str, Any], name: str, fn: Callable[[], Any], budget: Budget, need_s: float) -> Any:
    """results[name] = fn(), or {"error", "traceback"} if it raised, or {"skipped"} if the budget is too short."""
    if budget.left() < need_s:
        results[name] = {"skipped": f"time budget: {budget.left():.0f} s left, section needs ~{need_s:.0f} s"}
        print(f"[gpu_check] {name}: skipped (budget)", flush=True)
        return None
    t0 = time.monotonic()
    print(f"[gpu_check] {name} ...", flush=True)
    try:
        out = fn()
    except Exception as exc:  # fail-soft: one broken measurement must not lose the others
        out = {"error": f"{type(exc).__name__}: {exc}", "traceback": traceback.format_exc()[-4000:]}
        print(f"[gpu_check] {name}: ERROR {type(exc).__name__}: {exc}", flush=True)
    if isinstance(out, dict):
        out.setdefault("section_s", round(time.monotonic() - t0, 2))
    results[name] = out
    _free()
    return out


def _free() -> None:
    import gc

    gc.collect()
    if torch.cuda.is_available():
        torch.cuda.empty_cache()


def _sync(device: torch.device) -> None:
    if device.type == "cuda":
        torch.cuda.synchronize(device)


# ------------------------------------------------------------------------------------------------ the step
class StepRig:
    """`tgdp.train.step.train_step` itself on the device, over one synthetic micro-batch: the model's `TrainState`
    (optimiser, EMA teacher, grad scaler off) and a single-process `StepPlan`; `run(...)` times training steps.

    Each step is the training loop's: LR schedule, reseeded masking, forward + backward under autocast, the one host
    sync of the finite-loss guard, the optimiser step and the EMA teacher update."""

    def __init__(
        self,
        preset: str,
        batch: int,
        device: torch.device,
        *,
        precision: str = "bf16",
        fused: bool = False,
        channels_last: bool = False,
        compile_backend: str | None = None,
        model: torch.nn.Module | None = None,
    ) -> None:
        from tgdp.model import build_model
        from tgdp.train.config import OptimConfig
        from tgdp.train.data import DataState
        from tgdp.train.dist import DistInfo
        from tgdp.train.step import MicroBatch, StepPlan, TrainState

        self.device, self.batch = device, batch
        if model is None:
            with torch.device(device):
                model = build_model(preset)
        self.model = model.to(device).train()
        cfg = self.model.cfg
        self.amp = torch.bfloat16 if precision == "bf16" else None
        optim = OptimConfig(fused=fused)
        self.state = TrainState.create(self.model, optim, device, grad_scaler=False)
        audio = torch.randn(batch, cfg.audio_length, cfg.num_mel_bins, device=device)
        frames = torch.randn(batch, 3, cfg.img_size, cfg.img_size, device=device)
        if channels_last:
            for m in self.model.modules():
                if isinstance(m, torch.nn.Conv2d):
                    m.to(memory_format=torch.channels_last)
            frames = frames.contiguous(memory_format=torch.channels_last)
        self.micro = MicroBatch(audio, frames, DataState(0, 0))
        forward: torch.nn.Module = self.model
        if compile_backend is not None:
            forward = torch.compile(self.model, backend=compile_backend)
        info = DistInfo(rank=0, local_rank=0, world_size=1, device=device, created_group=False)
        self.plan = StepPlan(
            forward=forward, total_steps=10_000, warmup_steps=0, accum=1, optim=optim, seed=0, info=info,
            amp_dtype=self.amp,
        )  # fmt: skip

    def step(self) -> None:
        from tgdp.train.step import train_step

        stats = train_step(self.state, iter((self.micro,)), self.plan)
        if not stats.finite:  # a skipped optimiser step would time less than a step
            raise FloatingPointError(f"non-finite loss at step {stats.step}: {stats.losses}")

    def run(self, warmup: int, windows: int, steps_per_window: int) -> dict[str, Any]:
        t0 = time.perf_counter()
        self.step()  # first step: allocations, optimiser state, compilation
        _sync(self.device)
        first_s = time.perf_counter() - t0
        for _ in range(max(0, warmup - 1)):
            self.step()
        _sync(self.device)
        if self.device.type == "cuda":
            torch.cuda.reset_peak_memory_stats(self.device)
        times = []
        for _ in range(windows):
            t0 = time.perf_counter()
            for _ in range(steps_per_window):
                self.step()
            _sync(self.device)
            times.append((time.perf_counter() - t0) / steps_per_window)
        out: dict[str, Any] = {
            "batch": self.batch,
            "precision": "bf16" if self.amp is not None else "fp32",
            "first_step_s": first_s,
            "step_s": sorted(times)[len(times) // 2],
            "step_s_windows": times,
        }
        out["steps_per_s"] = 1.0 / out["step_s"]
        out["samples_per_s"] = self.batch / out["step_s"]
        if self.device.type == "cuda":
            out["peak_mem_gb"] = torch.cuda.max_memory_allocated(self.device) / 2**30
        return out


def _with_mfu(res: dict[str, Any], model: torch.nn.Module, peak: float | None) -> dict[str, Any]:
    flops = float(model.flops_per_step(res["batch"])["total"])
    res["flops_per_step"] = flops
    res["achieved_tflops"] = flops / res["step_s"] / 1e12
    res["mfu"] = res["achieved_tflops"] / peak if peak else None
    return res


def sdpa_backends(model: torch.nn.Module, device: torch.device, batch: int, amp: torch.dtype | None) -> dict[str, Any]:
    """Which scaled_dot_product_attention kernels one forward+backward dispatched to (profiler op names)."""
    from torch.profiler import ProfilerActivity, profile

    cfg = model.cfg
    audio = torch.randn(batch, cfg.audio_length, cfg.num_mel_bins, device=device)
    frames = torch.randn(batch, 3, cfg.img_size, cfg.img_size, device=device)
    with profile(activities=[ProfilerActivity.CPU]) as prof:
        with torch.autocast(device.type, dtype=amp, enabled=amp is not None):
            out = model(audio, frames)
        out["loss"].backward()
        _sync(device)
    model.zero_grad(set_to_none=True)
    counts: dict[str, int] = {}
    for evt in prof.key_averages():
        name = evt.key
        if name == "aten::scaled_dot_product_attention":  # the dispatcher entry, not a kernel
            continue
        if "scaled_dot_product" in name or "_flash_attention" in name or "_efficient_attention" in name:
            counts[name] = counts.get(name, 0) + int(evt.count)
    kinds = set()
    for name in counts:
        n = name.lower()
        kinds.add(
            "flash"
            if "flash" in n
            else "efficient"
            if "efficient" in n
            else "cudnn"
            if "cudnn" in n
            else "math"
            if "math" in n
            else "other"
        )
    return {"ops": counts, "backends": sorted(kinds), "precision": "bf16" if amp is not None else "fp32"}


def max_batch(
    preset: str, device: torch.device, start: int, cap: int, budget: Budget, fused: bool, precision: str
) -> dict[str, Any]:
    """Largest batch (multiple of 8, <= cap) whose training step runs without running out of memory: doubling, then
    bisection to within 1/8. On CPU nothing runs out of memory, so the search ends at `cap`."""
    from tgdp.model import build_model

    with torch.device(device):
        model = build_model(preset)

    def try_batch(b: int) -> bool:
        rig = None
        try:
            rig = StepRig(preset, b, device, precision=precision, fused=fused, model=model)
            rig.step()
            rig.step()
            _sync(device)
            return True
        except torch.OutOfMemoryError:
            return False
        finally:
            del rig
            model.zero_grad(set_to_none=True)

    def fits(b: int) -> bool:
        ok = try_batch(b)
        _free()  # here, once the failed step's frames (and the tensors they hold) are gone
        return ok

    tried: dict[int, bool] = {}
    ok, bad = 0, None
    b = start
    while b <= cap and budget.left() > 60:
        tried[b] = fits(b)
        if not tried[b]:
            bad = b
            break
        ok = b
        b *= 2
    if ok and bad is None and ok < cap and budget.left() > 60:
        tried[cap] = fits(cap)
        ok, bad = (cap, None) if tried[cap] else (ok, cap)
    while bad is not None and bad - ok > max(8, ok // 8) and budget.left() > 60:
        mid = (ok + bad) // 2 // 8 * 8
        if mid <= ok:
            break
        tried[mid] = fits(mid)
        ok, bad = (mid, bad) if tried[mid] else (ok, mid)
    _free()
    return {"max_batch": ok, "first_oom": bad, "tried": {str(k): v for k, v in sorted(tried.items())}, "cap": cap}


def preset_step_sections(
    preset: str, res: dict[str, Any], opts: argparse.Namespace, device: torch.device, budget: Budget, peak: float | None
) -> None:
    """One preset at batch `opts.batch`: the baseline (bf16 autocast on CUDA, fp32 on CPU), SDPA kernels, fp32, fused
    Adam, channels_last, the teacher forward; then the largest batch and its step."""
    from tgdp.model import build_model

    b48 = opts.batch
    w, k = opts.windows, opts.steps_per_window

    def make() -> torch.nn.Module:
        with torch.device(device):
            return build_model(preset)

    model_box: dict[str, torch.nn.Module] = {}

    def shared_model() -> torch.nn.Module:
        if "m" not in model_box:
            model_box["m"] = make()
        return model_box["m"]

    def variant(batch: int = b48, **kw: Any) -> Callable[[], dict[str, Any]]:
        def fn() -> dict[str, Any]:
            b = batch
            last = ""
            # At the edge of memory a fragmented allocator may refuse what the search fitted: retry 7/8 smaller.
            for _ in range(3 if batch != b48 else 1):
                rig = None
                try:
                    rig = StepRig(preset, b, device, model=shared_model(), **kw)
                    return _with_mfu(rig.run(opts.warmup, w, k), rig.model, peak)
                except torch.OutOfMemoryError as exc:  # keep the text only: the traceback pins the step's tensors
                    last, b = f"batch {b}: {exc}", max(8, b * 7 // 8 // 8 * 8)
                finally:
                    del rig
                    m = shared_model()
                    m.zero_grad(set_to_none=True)
                    if kw.get("channels_last"):  # the model is shared by the variants: restore the layout
                        for conv in m.modules():
                            if isinstance(conv, torch.nn.Conv2d):
                                conv.to(memory_format=torch.contiguous_format)
                    _free()
            raise torch.OutOfMemoryError(last)

        return fn

    est, prec = opts.est_step_s, opts.base_precision
    full = preset in opts.variant_presets  # the quick CPU mode runs the variants for one preset only
    run_section(res, "base", variant(precision=prec), budget, est)
    precisions = {prec: torch.bfloat16 if prec == "bf16" else None}
    if device.type == "cuda":
        precisions["fp32"] = None
    run_section(
        res,
        "sdpa",
        lambda: {p: sdpa_backends(shared_model(), device, min(b48, 8), amp) for p, amp in precisions.items()},
        budget,
        5,
    )
    if prec != "fp32":
        run_section(res, "fp32", variant(precision="fp32"), budget, est * 2)
    if full:
        run_section(res, "fused_adam", variant(precision=prec, fused=True), budget, est)
        run_section(res, "channels_last", variant(precision=prec, channels_last=True), budget, est)

    def teacher_share() -> dict[str, Any]:
        m = shared_model()
        if getattr(m, "teacher", None) is None:
            return {"teacher": None}
        cfg = m.cfg
        a = torch.randn(b48, cfg.audio_length, cfg.num_mel_bins, device=device)
        f = torch.randn(b48, 3, cfg.img_size, cfg.img_size, device=device)
        times = []
        for _ in range(1 + w):
            _sync(device)
            t0 = time.perf_counter()
            with torch.autocast(device.type, dtype=torch.bfloat16, enabled=prec == "bf16"):
                g_a, _, p_a, _ = m.teacher(a, f)
            _sync(device)
            times.append(time.perf_counter() - t0)
        return {
            "teacher_fwd_s": sorted(times[1:])[len(times[1:]) // 2],
            "grad_enabled_output": bool(g_a.requires_grad),
            "priority_dtype": str(p_a.dtype),
            "precision": prec,
            "batch": b48,
        }

    run_section(res, "teacher_forward", teacher_share, budget, 5)
    model_box.clear()
    _free()
    if not full:
        return
    fused_ok = isinstance(res.get("fused_adam"), dict) and "step_s" in res["fused_adam"]
    base_ok = isinstance(res.get("base"), dict) and "step_s" in res["base"]
    use_fused = fused_ok and (not base_ok or res["fused_adam"]["step_s"] <= res["base"]["step_s"])
    res["fastest_optimizer"] = "fused" if use_fused else "foreach"
    found = run_section(
        res,
        "max_batch_search",
        lambda: max_batch(preset, device, b48, opts.max_batch_cap, budget, use_fused, prec),
        budget,
        opts.est_search_s,
    )
    if isinstance(found, dict) and found.get("max_batch") and found["max_batch"] != b48:
        run_section(
            res,
            "max_batch",
            variant(precision=prec, fused=use_fused, batch=int(found["max_batch"])),
            budget,
            est * 3,
        )
    model_box.clear()
    _free()


def step_sections(
    results: dict[str, Any], opts: argparse.Namespace, device: torch.device, budget: Budget, peak: float | None
) -> None:
    """Step figures for each preset: baseline, variants, largest batch (cheapest and most needed first)."""
    for preset in opts.presets:
        res: dict[str, Any] = {}
        results.setdefault("step", {})[preset] = res
        preset_step_sections(preset, res, opts, device, budget, peak)


def compile_sections(
    results: dict[str, Any], opts: argparse.Namespace, device: torch.device, budget: Budget, peak: float | None
) -> None:
    """torch.compile, run last of all: the slowest to set up and the least likely to be the default."""
    from tgdp.model import build_model

    for preset in opts.compile_presets:
        res = results.setdefault("step", {}).setdefault(preset, {})

        def compiled(preset: str = preset) -> dict[str, Any]:
            with torch.device(device):
                model = build_model(preset)
            backend, prec = opts.compile_backend, opts.base_precision
            rig = StepRig(preset, opts.batch, device, precision=prec, model=model, compile_backend=backend)
            out = _with_mfu(rig.run(opts.warmup + 1, opts.windows, opts.steps_per_window), model, peak)
            out["backend"] = opts.compile_backend
            return out

        run_section(res, "compile", compiled, budget, opts.est_compile_s)


# ------------------------------------------------------------------------------------------------ the loader
def build_bench_store(opts: argparse.Namespace, work: Path) -> dict[str, Any]:
    """A real store of synthetic ffmpeg clips (testsrc2 + sine) written by the shard stage."""
    from benchmarks.bench_train import build_store

    geo = (
        {"frame_size": 224, "num_mel_bins": 128, "target_length": 1024}
        if opts.loader_geometry == "base"
        else {"frame_size": 96, "num_mel_bins": 64, "target_length": 256}
    )
    t0 = time.perf_counter()
    size = "320x240" if opts.loader_geometry == "base" else "128x112"
    store = build_store(
        work / "bench-store", n=opts.store_clips, duration=opts.clip_s, size=size, encoders=opts.cores, **geo
    )
    return {"path": str(store), "clips": opts.store_clips, "build_s": time.perf_counter() - t0, **geo}


def loader_rate(
    store: Path,
    preset: str,
    batch: int,
    workers: int,
    device: torch.device,
    min_batches: int,
    min_s: float,
    previous_path: bool = False,
    device_step: bool = True,
) -> dict[str, Any]:
    """Samples/s of TrainStream -> DataLoader -> device (normalised there), excluding worker start-up.

    device_step=False stops at the DataLoader: what the workers deliver, before the main process touches it."""
    from torch.utils.data import DataLoader

    from tgdp.model import PRESETS
    from tgdp.train.data import ClipDataset, TrainStream, batch_to_device, fbank_stats, open_store

    m = PRESETS[preset]
    stats = fbank_stats(open_store(store, "train").meta)
    # previous_path: float32, normalised in the worker (as before issue 16; still what CPU training with workers does)
    ds = ClipDataset(store, audio_length=m.audio_length, img_size=m.img_size, normalize_in_worker=previous_path)
    stream = TrainStream(ds, micro_batch=batch)
    loader = DataLoader(
        stream,
        batch_size=None,
        num_workers=workers,
        pin_memory=device.type == "cuda",
        prefetch_factor=4 if workers else None,
    )
    it = iter(loader)
    try:
        first = next(it)
        n, t0 = 0, time.perf_counter()
        a = f = first["audio"]
        for b in it:
            if device_step:
                a, f = batch_to_device(b, device, stats)
            n += 1
            if n >= min_batches and time.perf_counter() - t0 >= min_s:
                break
        _sync(device)
        dt = time.perf_counter() - t0
    finally:
        del it
    return {
        "workers": workers,
        "batch": batch,
        "samples_per_s": n * batch / dt,
        "batches": n,
        "audio_dtype_from_workers": str(first["audio"].dtype),
        "frames_dtype_from_workers": str(first["frames"].dtype),
        "device_dtype": str(a.dtype) + "/" + str(f.dtype) if device_step else None,
        "device_step": device_step,
    }


def jpeg_decode(store: Path, device: torch.device, n: int) -> dict[str, Any]:
    """JPEG frames of the store decoded one by one on the CPU (one thread) vs batched on the GPU."""
    import torchvision
    from torchvision.io import ImageReadMode, decode_jpeg

    from tgdp.train.data import open_store

    s = open_store(store, "train")
    frames_n = int(s.meta["frames"]["n"])
    datas = [
        torch.frombuffer(bytearray(s.frame_jpeg(k % len(s), (k * 7) % frames_n)), dtype=torch.uint8) for k in range(n)
    ]
    out: dict[str, Any] = {"images": n, "torchvision": torchvision.__version__, "jpeg_bytes_mean": 0}
    out["jpeg_bytes_mean"] = sum(d.numel() for d in datas) / n
    threads = torch.get_num_threads()
    torch.set_num_threads(1)
    try:
        t0 = time.perf_counter()
        for d in datas:
            decode_jpeg(d, mode=ImageReadMode.RGB)
        out["cpu_images_per_s_one_core"] = n / (time.perf_counter() - t0)
    finally:
        torch.set_num_threads(threads)
    if device.type == "cuda":
        for bs in (32, 128):
            batches = [datas[i : i + bs] for i in range(0, n, bs)]
            decode_jpeg(batches[0], mode=ImageReadMode.RGB, device=device)  # nvjpeg handle set-up
            _sync(device)
            t0 = time.perf_counter()
            for chunk in batches:
                decode_jpeg(chunk, mode=ImageReadMode.RGB, device=device)
            _sync(device)
            out[f"gpu_images_per_s_batch{bs}"] = n / (time.perf_counter() - t0)
    else:
        out["gpu"] = "skipped: no CUDA"
    return out


def loader_sections(
    results: dict[str, Any], opts: argparse.Namespace, device: torch.device, budget: Budget, work: Path
) -> None:
    lres: dict[str, Any] = {}
    results["loader"] = lres
    if opts.store:
        from tgdp.train.data import open_store, store_geometry

        reused = open_store(opts.store, "train")
        geo = store_geometry(reused.meta)
        lres["store"] = {"path": opts.store, "reused": True, "clips": len(reused), **geo}
    else:
        run_section(lres, "store", lambda: build_bench_store(opts, work), budget, opts.est_store_s)
    store_info = lres.get("store") or {}
    if "path" not in store_info:
        return
    store = Path(store_info["path"])
    preset = opts.loader_preset

    def measure(nw: int, previous: bool, device_step: bool = True) -> dict[str, Any]:
        b, mb, ms = opts.loader_batch, opts.loader_batches, opts.loader_s
        runs = [
            loader_rate(store, preset, b, nw, device, mb, ms, previous, device_step) for _ in range(opts.loader_repeats)
        ]
        rates = sorted(r["samples_per_s"] for r in runs)
        return {**runs[0], "samples_per_s": rates[len(rates) // 2], "samples_per_s_runs": rates}

    # The previous path is measured right after the current one at the same worker count (shared machines drift).
    for nw in sorted(set(opts.loader_workers) | set(opts.previous_path_workers)):
        if nw in opts.loader_workers:
            run_section(lres, f"workers_{nw}", lambda nw=nw: measure(nw, False), budget, opts.loader_s + 5)
        if nw in opts.previous_path_workers:
            run_section(lres, f"previous_path_workers_{nw}", lambda nw=nw: measure(nw, True), budget, opts.loader_s + 5)
        if opts.loader_no_device_step:  # the workers' own output rate, both paths
            for prev, key in (
                (False, f"workers_{nw}_no_device_step"),
                (True, f"previous_path_workers_{nw}_no_device_step"),
            ):
                run_section(lres, key, lambda nw=nw, p=prev: measure(nw, p, False), budget, opts.loader_s + 5)
    run_section(lres, "jpeg_decode", lambda: jpeg_decode(store, device, opts.jpeg_images), budget, 10)


# ------------------------------------------------------------------------------------------------ a real run
def real_run(opts: argparse.Namespace, results: dict[str, Any], work: Path, device: torch.device) -> dict[str, Any]:
    """`tgdp-train` (a subprocess, as a user runs it) for `--run-steps` steps at the fastest measured setting."""
    store = (results.get("loader", {}).get("store") or {}).get("path")
    if not store:
        raise RuntimeError("no store (the loader section did not build one)")
    clips = int((results["loader"].get("store") or {}).get("clips") or opts.store_clips)
    step = results.get("step", {}).get(opts.run_preset, {})
    best = (step.get("max_batch_search") or {}).get("max_batch") or opts.batch
    batch = max(8, min(int(best), clips) // 8 * 8)
    rates = {
        int(v["workers"]): v["samples_per_s"]
        for k, v in results.get("loader", {}).items()
        if k.startswith("workers_") and isinstance(v, dict) and "samples_per_s" in v and v.get("device_step", True)
    }
    workers = max(rates, key=rates.get) if rates else min(opts.cores, 8)
    fused = step.get("fastest_optimizer", "fused" if device.type == "cuda" else "foreach") == "fused"
    run_dir = work / "real-run"
    shutil.rmtree(run_dir, ignore_errors=True)
    log_every = max(1, opts.run_steps // 4)
    exe = Path(sys.executable).with_name("tgdp-train")
    cmd = [str(exe)] if exe.exists() else [sys.executable, "-m", "tgdp.train.cli"]
    sets = {
        "train.steps": opts.run_steps,
        "train.batch_size": batch,
        "train.num_workers": workers,
        "train.log_every": log_every,
        "train.ckpt_every": 10 * opts.run_steps,
        "train.progress": "false",
        "train.tensorboard": "false",
        "train.precision": "bf16" if device.type == "cuda" else "fp32",
        "train.device": device.type,
        "optim.fused": str(fused).lower(),
    }
    cmd += ["--config", opts.run_preset, "--store", store, "--run-dir", str(run_dir)]
    cmd += [a for k, v in sets.items() for a in ("--set", f"{k}={v}")]
    t0 = time.perf_counter()
    proc = subprocess.run(cmd, capture_output=True, text=True, timeout=max(30.0, opts.run_timeout_s))
    wall = time.perf_counter() - t0
    if proc.returncode != 0:
        raise RuntimeError(f"tgdp-train exited {proc.returncode}: {proc.stderr[-2000:]}")
    rows = [json.loads(x) for x in (run_dir / "metrics.jsonl").read_text().splitlines()]
    windows = [r for r in rows if "data_wait_frac" in r]
    steady = windows[1:] or windows  # the first window holds start-up (worker fork, cudnn/cuBLAS warm-up)
    total = sum(r["step_time_s"] for r in steady)
    wait = sum(r["data_wait_frac"] * r["step_time_s"] for r in steady) / max(total, 1e-9)
    return {
        "preset": opts.run_preset,
        "steps": opts.run_steps,
        "batch": batch,
        "workers": workers,
        "fused_adam": fused,
        "wall_s": wall,
        "data_wait_frac": wait,
        "samples_per_s": sum(r["samples_per_s"] for r in steady) / len(steady),
        "step_time_s": total / len(steady),
        "windows": [
            {k: r.get(k) for k in ("step", "samples_per_s", "step_time_s", "data_wait_frac", "gpu_mem_gb")}
            for r in windows
        ],
        "command": " ".join(cmd),
    }


# ------------------------------------------------------------------------------------------------ report
def _targets(results: dict[str, Any]) -> dict[str, Any]:
    """The issue's targets, evaluated on what was measured (None where a figure is missing)."""
    from tgdp.model import PRESETS
    from tgdp.model.flops import step_flops

    step = results.get("step", {})
    out: dict[str, Any] = {}
    for preset, res in step.items():
        best = [r for r in res.values() if isinstance(r, dict) and r.get("precision") == "bf16" and r.get("mfu")]
        out[f"{preset}_best_mfu"] = max((r["mfu"] for r in best), default=None)
    presets = list(step)
    if len(presets) == 2:
        sync_p, tg_p = sorted(presets, key=lambda p: PRESETS[p].dual_pass)
        flop_ratio = step_flops(PRESETS[tg_p], 1)["total"] / step_flops(PRESETS[sync_p], 1)["total"]
        out["flop_ratio"] = flop_ratio
        a, b = step[tg_p].get("base") or {}, step[sync_p].get("base") or {}
        if "step_s" in a and "step_s" in b:
            out["step_ratio_batch"] = a["batch"]
            out["step_ratio"] = a["step_s"] / b["step_s"]
            out["step_ratio_over_flop_ratio"] = out["step_ratio"] / flop_ratio
            out["step_ratio_ok"] = out["step_ratio_over_flop_ratio"] <= TARGET_RATIO_SLACK
    for preset in presets:
        v = out.get(f"{preset}_best_mfu")
        out[f"{preset}_mfu_ok"] = None if v is None else v >= TARGET_MFU
    run = results.get("real_run") or {}
    if "data_wait_frac" in run:
        out["data_wait_ok"] = run["data_wait_frac"] < TARGET_DATA_WAIT
    return out


def figures(results: dict[str, Any]) -> list[Figure]:
    """BENCHMARKS.md rows from the results (sections that errored or were skipped are left out)."""
    figs: list[Figure] = []
    peak = results["meta"].get("peak_tflops")
    for preset, res in results.get("step", {}).items():
        for key, r in res.items():
            if not isinstance(r, dict) or "step_s" not in r:
                continue
            label = f"{preset} {key} ({r['precision']}), batch {r['batch']}"
            figs.append(Figure(f"{label}: step", r["step_s_windows"], unit="s"))
            figs.append(Figure(f"{label}: samples/s", [r["batch"] / t for t in r["step_s_windows"]], unit="samples/s"))
            if r.get("mfu") is not None:
                figs.append(
                    Figure(
                        f"{label}: MFU",
                        [100 * r["flops_per_step"] / t / 1e12 / peak for t in r["step_s_windows"]],
                        unit="%",
                        target="≥ 40% at the best batch" if key in ("base", "max_batch") else "",
                    )
                )
            if "peak_mem_gb" in r:
                figs.append(Figure(f"{label}: peak memory", [r["peak_mem_gb"]], unit="GiB"))
        sd = res.get("sdpa")
        if isinstance(sd, dict) and "error" not in sd and "skipped" not in sd:
            kinds = {p: v["backends"] for p, v in sd.items() if isinstance(v, dict) and "backends" in v}
            note = "; ".join(f"{p}: {', '.join(b) or 'none'}" for p, b in kinds.items())
            figs.append(Figure(f"{preset} SDPA kernels used ({note})", [max(map(len, kinds.values()), default=0)]))
        mb = res.get("max_batch_search")
        if isinstance(mb, dict) and "max_batch" in mb:
            figs.append(Figure(f"{preset} largest batch that fits (cap {mb['cap']})", [mb["max_batch"]]))
    t = results.get("targets", {})
    if "step_ratio" in t:
        figs.append(
            Figure(
                f"TG-DP / Sync step time, batch {t['step_ratio_batch']} (FLOP ratio {t['flop_ratio']:.2f})",
                [t["step_ratio"]],
                unit="×",
                target=f"≤ {TARGET_RATIO_SLACK} × FLOP ratio = {TARGET_RATIO_SLACK * t['flop_ratio']:.2f}",
            )
        )
    for key, r in results.get("loader", {}).items():
        if isinstance(r, dict) and "samples_per_s" in r:
            prev = key.startswith("previous")
            path = "float32 normalised in workers" if prev else "uint8/fp16 out, normalised on device"
            if not r.get("device_step", True):
                path = ("float32 normalised in workers" if prev else "uint8/fp16 out") + ", DataLoader output only"
            rates = r.get("samples_per_s_runs") or [r["samples_per_s"]]
            figs.append(Figure(f"loader {r['workers']} workers, batch {r['batch']}, {path}", rates, "samples/s"))
    jd = results.get("loader", {}).get("jpeg_decode")
    if isinstance(jd, dict) and "cpu_images_per_s_one_core" in jd:
        figs.append(Figure("JPEG decode, CPU, one core", [jd["cpu_images_per_s_one_core"]], unit="images/s"))
        for bs in (32, 128):
            if f"gpu_images_per_s_batch{bs}" in jd:
                figs.append(Figure(f"JPEG decode, GPU batch {bs}", [jd[f"gpu_images_per_s_batch{bs}"]], "images/s"))
    run = results.get("real_run")
    if isinstance(run, dict) and "data_wait_frac" in run:
        where = f"{run['preset']}, batch {run['batch']}, {run['workers']} workers"
        figs.append(
            Figure(
                f"tgdp-train {run['steps']} steps ({where}): data wait",
                [100 * run["data_wait_frac"]],
                unit="%",
                target="< 5%",
            )
        )
        figs.append(Figure(f"tgdp-train ({where}): samples/s", [run["samples_per_s"]], unit="samples/s"))
    return figs


def _notes(results: dict[str, Any], extra: str = "") -> str:
    meta = results["meta"]
    errors = [
        f"{k}" for k, v in _walk(results) if isinstance(v, dict) and ("error" in v or "skipped" in v) and k != "meta"
    ]
    peak = meta.get("peak_tflops")
    lines = [
        f"Device: {meta['device_name']}; bf16 dense peak {peak} TFLOPS ({meta['peak_source']})."
        if peak or meta["mode"] == "cuda"
        else f"Device: CPU ({meta['device_name']}), no MFU.",
        f"Mode: {meta['mode']}; total wall {meta.get('wall_s', 0):.0f} s of a {meta['budget_s']:.0f} s budget.",
    ]
    if "step" in results:
        lines.append(
            "Step figures: `tgdp.train.step.train_step` on a synthetic batch on the device (forward + backward + "
            "the finite-loss guard's one host sync + Adam + EMA update), median of "
            f"{meta['windows']} windows of {meta['steps_per_window']} steps after {meta['warmup']} warm-up steps. "
            "MFU = `flops_per_step` (analytic matmul FLOPs, model/flops.py) / step time / peak."
        )
    if "loader" in results:
        store = results["loader"].get("store") or {}
        geo = f"({store.get('clips')} clips, {store.get('frame_size')} px, {store.get('num_mel_bins')} mel)"
        lines.append(
            "Loader: TrainStream → DataLoader → device (normalised there; `previous` = float32 normalised in the "
            f"workers, as before issue 16), store of synthetic ffmpeg clips built by the shard stage {geo}".rstrip()
            + "; worker start-up excluded."
        )
    if "real_run" in results:
        lines.append("Real run: `tgdp-train`, data wait = the loop's data_wait_frac over the windows after the first.")
    lines.append("JSON with every figure, the SDPA op names and any errors: `benchmarks/gpu_check.py --out`.")
    if errors:
        lines.append(f"Errored or skipped sections: {', '.join(errors)} (details in the JSON).")
    if extra:
        lines.append(extra)
    return " ".join(lines)


def _walk(d: dict[str, Any], prefix: str = "") -> list[tuple[str, Any]]:
    out = []
    for k, v in d.items():
        key = f"{prefix}{k}"
        out.append((key, v))
        if isinstance(v, dict) and "error" not in v and "skipped" not in v:
            out.extend(_walk(v, key + "."))
    return out


# ------------------------------------------------------------------------------------------------ entry
def _cores() -> int:
    return len(os.sched_getaffinity(0)) if hasattr(os, "sched_getaffinity") else os.cpu_count() or 1


def parse_args(argv: list[str] | None = None) -> argparse.Namespace:
    p = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    p.add_argument("--device", choices=["auto", "cpu", "cuda"], default="auto")
    p.add_argument("--out", default="gpu_check.json", help="JSON results file")
    p.add_argument("--md", default=None, help="write the figures as a section of this BENCHMARKS.md")
    p.add_argument("--section-name", default=None, help="BENCHMARKS.md section (default gpu, or gpu-check-cpu)")
    p.add_argument("--budget-s", type=float, default=480.0, help="wall-clock budget for all sections")
    p.add_argument("--peak-tflops", type=float, default=None, help="bf16 dense peak of the device (overrides table)")
    p.add_argument(
        "--sections", default="step,loader,run,compile", help="comma list of step, loader, run, compile (in that order)"
    )
    p.add_argument("--quick", action="store_true", help="minimal counts (the CPU test)")
    p.add_argument("--notes", default="", help="text appended to the BENCHMARKS.md section's notes")
    p.add_argument("--work-dir", default=None, help="where the bench store and the run go (default: a temp dir)")
    p.add_argument("--store", default=None, help="reuse this store instead of building one")
    p.add_argument("--loader-geometry", choices=["base", "tiny"], default=None)
    p.add_argument("--loader-batch", type=int, default=None)
    p.add_argument("--loader-workers", default=None, help="comma list (default 0,1,2,4,... up to the cores)")
    p.add_argument("--previous-path-workers", default=None, help="comma list for the float32-in-worker comparison")
    p.add_argument("--loader-repeats", type=int, default=1, help="runs per loader setting (median reported)")
    p.add_argument(
        "--loader-no-device-step", action="store_true", help="also measure the DataLoader output alone (both paths)"
    )
    p.add_argument("--store-clips", type=int, default=None)
    p.add_argument("--run-steps", type=int, default=None)
    p.add_argument("--max-batch-cap", type=int, default=None)
    opts = p.parse_args(argv)
    try:
        cuda = pick_device(opts.device, key="--device").type == "cuda"
    except DeviceError as exc:
        p.error(str(exc))
    opts.cuda = cuda
    opts.cores = _cores()
    quick = opts.quick
    opts.presets = ["cavmae_sync_base", "tgdp_base"] if cuda else ["tiny_cavmae_sync", "tiny_tgdp"]
    opts.batch = 48 if cuda else (4 if quick else 8)
    opts.warmup, opts.windows, opts.steps_per_window = (3, 3, 10) if cuda else ((1, 1, 1) if quick else (2, 3, 3))
    opts.max_batch_cap = opts.max_batch_cap or (2048 if cuda else (opts.batch if quick else 2 * opts.batch))
    opts.compile_backend = "inductor" if cuda else "eager"
    opts.compile_presets = opts.presets[:1] if quick else opts.presets
    opts.variant_presets = opts.presets[:1] if quick else opts.presets
    opts.base_precision = "bf16" if cuda else "fp32"  # bf16 autocast on a CPU without bf16 units is emulated
    opts.est_step_s, opts.est_search_s, opts.est_compile_s = (10, 60, 120) if cuda else (1, 2, 5)
    opts.loader_geometry = opts.loader_geometry or ("base" if cuda or not quick else "tiny")
    opts.loader_preset = "tgdp_base" if opts.loader_geometry == "base" else "tiny_tgdp"
    opts.loader_batch = opts.loader_batch or (48 if cuda else (4 if quick else 32))
    if opts.loader_workers:
        opts.loader_workers = [int(x) for x in opts.loader_workers.split(",")]
    else:
        ws = [0, 1, 2, 4, 8, 12, 16, 24, 32, 48, 64]
        opts.loader_workers = [w for w in ws if w <= opts.cores] if not quick else [0, 1]
        if opts.cores not in opts.loader_workers and not quick:
            opts.loader_workers.append(opts.cores)
    if opts.previous_path_workers is not None:
        opts.previous_path_workers = [int(x) for x in opts.previous_path_workers.split(",") if x]
    else:
        opts.previous_path_workers = [0] if quick else [0, opts.loader_workers[-1]]
    opts.store_clips = opts.store_clips or (256 if cuda else (8 if quick else 48))
    opts.clip_s = 4.0 if cuda else (2.0 if quick else 10.0)
    opts.loader_batches, opts.loader_s = (20, 3.0) if cuda else ((2, 0.0) if quick else (6, 2.0))
    opts.jpeg_images = 512 if cuda else 32
    opts.est_store_s = 120 if cuda else 60
    opts.run_preset = "tgdp_base" if opts.loader_geometry == "base" else "tiny_tgdp"
    opts.run_steps = opts.run_steps or (200 if cuda else (4 if quick else 40))
    opts.run_timeout_s = 300.0
    opts.section_name = opts.section_name or ("gpu" if cuda else "gpu-check-cpu")
    opts.sections = {s.strip() for s in opts.sections.split(",") if s.strip()}
    return opts


def run_checks(opts: argparse.Namespace) -> dict[str, Any]:
    """Run the selected sections within the budget; returns the results dict (also written to --out)."""
    device = torch.device("cuda" if opts.cuda else "cpu")
    budget = Budget(opts.budget_s)
    name = torch.cuda.get_device_name(device) if opts.cuda else (platform.processor() or platform.machine())
    peak, source = peak_tflops(name, opts.peak_tflops) if opts.cuda else (opts.peak_tflops, "CPU: no table entry")
    if not opts.cuda and opts.peak_tflops is not None:
        source = f"--peak-tflops {opts.peak_tflops:g}"
    results: dict[str, Any] = {
        "meta": {
            "mode": "cuda" if opts.cuda else ("cpu quick" if opts.quick else "cpu"),
            "device_name": name,
            "peak_tflops": peak,
            "peak_source": source,
            "torch": torch.__version__,
            "cuda": torch.version.cuda,
            "cores": opts.cores,
            "budget_s": opts.budget_s,
            "presets": opts.presets,
            "batch": opts.batch,
            "warmup": opts.warmup,
            "windows": opts.windows,
            "steps_per_window": opts.steps_per_window,
            "step_fn": "tgdp.train.step.train_step",
            "tf32_matmul": torch.backends.cuda.matmul.allow_tf32,
            "started_utc": time.strftime("%Y-%m-%d %H:%M:%S", time.gmtime()),
        }
    }
    if opts.cuda:
        props = torch.cuda.get_device_properties(device)
        results["meta"]["memory_gib"] = props.total_memory / 2**30
        results["meta"]["capability"] = f"{props.major}.{props.minor}"
    work_ctx: Any = (
        contextlib.nullcontext(opts.work_dir) if opts.work_dir else tempfile.TemporaryDirectory(prefix="gpu-check-")
    )
    with work_ctx as work_s:
        work = Path(work_s)
        work.mkdir(parents=True, exist_ok=True)
        if "step" in opts.sections:
            step_sections(results, opts, device, budget, peak)
        if "loader" in opts.sections:
            loader_sections(results, opts, device, budget, work)
        if "run" in opts.sections:
            est = 150 if opts.cuda else 20
            run_section(results, "real_run", lambda: real_run(opts, results, work, device), budget, est)
        if "compile" in opts.sections:
            compile_sections(results, opts, device, budget, peak)
    results["targets"] = _targets(results)
    results["meta"]["wall_s"] = budget.seconds - budget.left()
    return results


def main(argv: list[str] | None = None) -> dict[str, Any]:
    opts = parse_args(argv)
    if not opts.cuda:
        torch.set_num_threads(max(1, min(2, opts.cores)))
    results = run_checks(opts)
    out = Path(opts.out)
    out.parent.mkdir(parents=True, exist_ok=True)
    out.write_text(json.dumps(results, indent=1, default=str) + "\n", encoding="utf-8")
    print(f"[gpu_check] wrote {out}", flush=True)
    if opts.md:
        write_section(opts.section_name, figures(results), _notes(results, opts.notes), path=Path(opts.md))
    return results


if __name__ == "__main__":
    main()
