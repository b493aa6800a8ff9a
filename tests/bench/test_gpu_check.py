"""`benchmarks/gpu_check.py`: its CPU quick mode end to end (so the GPU script cannot rot), the peak table, the
fail-soft sections, and that its step is `train_step` itself."""

from __future__ import annotations

import json
import os
import subprocess
import sys
import time
from pathlib import Path
from typing import Any

import pytest

import benchmarks.gpu_check as gpu_check
from benchmarks.gpu_check import Budget, peak_tflops, run_section

REPO = Path(__file__).resolve().parents[2]


def _errors(d: dict[str, Any], prefix: str = "") -> list[str]:
    out = []
    for k, v in d.items():
        if isinstance(v, dict):
            if "error" in v or "skipped" in v:
                out.append(f"{prefix}{k}: {v.get('error') or v.get('skipped')}")
            else:
                out += _errors(v, f"{prefix}{k}.")
    return out


def test_peak_table_names_the_device_and_override_wins() -> None:
    assert peak_tflops("NVIDIA H100 80GB HBM3")[0] == 989.0
    assert peak_tflops("NVIDIA H100 PCIe")[0] == 756.0
    assert peak_tflops("NVIDIA H200")[0] == 989.0
    assert peak_tflops("NVIDIA A100-SXM4-80GB")[0] == 312.0
    assert peak_tflops("NVIDIA L40S")[0] == 362.0  # not L4's entry
    value, source = peak_tflops("Some Future GPU")
    assert value is None and "--peak-tflops" in source
    assert peak_tflops("NVIDIA H100 80GB HBM3", override=500.0) == (500.0, "--peak-tflops 500")


def test_sections_are_fail_soft_and_budgeted() -> None:
    results: dict[str, Any] = {}
    budget = Budget(60.0)

    def boom() -> dict[str, Any]:
        raise RuntimeError("CUDA error: device-side assert")

    run_section(results, "broken", boom, budget, 0)
    run_section(results, "fine", lambda: {"x": 1}, budget, 0)
    run_section(results, "too_long", lambda: {"x": 2}, budget, 3600)
    assert results["broken"]["error"] == "RuntimeError: CUDA error: device-side assert"
    assert "boom" in results["broken"]["traceback"]
    assert results["fine"]["x"] == 1 and "section_s" in results["fine"]
    assert results["too_long"]["skipped"].startswith("time budget")


def test_the_step_rig_times_train_step_itself(monkeypatch: pytest.MonkeyPatch) -> None:
    import torch

    import tgdp.train.step as step_mod

    calls: list[int] = []
    real = step_mod.train_step
    monkeypatch.setattr(step_mod, "train_step", lambda *a, **k: calls.append(1) or real(*a, **k))
    rig = gpu_check.StepRig("tiny_tgdp", 2, torch.device("cpu"), precision="fp32")
    teacher = {n: p.detach().clone() for n, p in rig.model.teacher.named_parameters()}
    out = rig.run(1, 1, 2)
    assert len(calls) == 3 and rig.state.step == 3 and out["batch"] == 2 and out["step_s"] > 0
    # the loop's step: the EMA teacher moved with the student
    assert any(not torch.equal(p, teacher[n]) for n, p in rig.model.teacher.named_parameters())


def test_largest_batch_search_doubles_then_bisects(monkeypatch: pytest.MonkeyPatch) -> None:
    """Out-of-memory above 100 (simulated): the search doubles from 8, then bisects to within 1/8 below 100."""
    import torch

    tried: list[int] = []

    class FakeRig:
        def __init__(self, preset: str, batch: int, device: torch.device, **kw: Any) -> None:
            tried.append(batch)
            self.batch = batch

        def step(self) -> None:
            if self.batch > 100:
                raise torch.OutOfMemoryError("CUDA out of memory (simulated)")

    monkeypatch.setattr(gpu_check, "StepRig", FakeRig)
    out = gpu_check.max_batch("tiny_cavmae_sync", torch.device("cpu"), 8, 2048, Budget(600), False, "fp32")
    assert tried[:5] == [8, 16, 32, 64, 128]
    assert out["first_oom"] > 100 >= out["max_batch"] >= 88 and out["max_batch"] % 8 == 0
    assert out["tried"]["128"] is False and out["tried"][str(out["max_batch"])] is True
    # No out-of-memory below the cap: the cap itself is tried and taken.
    tried.clear()
    assert gpu_check.max_batch("tiny_cavmae_sync", torch.device("cpu"), 8, 40, Budget(600), False, "fp32")[
        "max_batch"
    ] == 40 and tried == [8, 16, 32, 40]


@pytest.mark.slow
@pytest.mark.timeout(240)
def test_cpu_quick_mode_end_to_end(ffmpeg_bin: str, tmp_path: Path) -> None:
    """Every section runs on the tiny presets: step variants, SDPA kernels, largest batch, compile (eager backend),
    loader (store built by the shard stage), JPEG decode and a real `tgdp-train` run; JSON and md section written."""
    out, md = tmp_path / "gpu_check.json", tmp_path / "BENCHMARKS.md"
    env = {**os.environ, "CUDA_VISIBLE_DEVICES": ""}
    cmd = [sys.executable, "-m", "benchmarks.gpu_check", "--device", "cpu", "--quick", "--peak-tflops", "0.5"]
    cmd += ["--out", str(out), "--md", str(md), "--work-dir", str(tmp_path / "work")]
    t0 = time.monotonic()
    proc = subprocess.run(cmd, cwd=REPO, env=env, capture_output=True, text=True, timeout=230)
    assert proc.returncode == 0, proc.stderr[-3000:]
    res = json.loads(out.read_text())
    assert _errors(res) == [], _errors(res)
    assert res["meta"]["mode"] == "cpu quick" and res["meta"]["wall_s"] <= time.monotonic() - t0
    assert res["meta"]["peak_tflops"] == 0.5 and res["meta"]["peak_source"] == "--peak-tflops 0.5"
    sync, tg = res["step"]["tiny_cavmae_sync"], res["step"]["tiny_tgdp"]
    for r in (sync["base"], tg["base"], sync["fused_adam"], sync["channels_last"], sync["compile"]):
        assert r["step_s"] > 0 and r["samples_per_s"] == pytest.approx(r["batch"] / r["step_s"])
        assert r["flops_per_step"] > 0 and r["mfu"] == pytest.approx(r["achieved_tflops"] / 0.5)
    assert tg["base"]["flops_per_step"] > sync["base"]["flops_per_step"]
    assert sync["sdpa"]["fp32"]["backends"] and "math" not in sync["sdpa"]["fp32"]["backends"]
    assert tg["teacher_forward"]["grad_enabled_output"] is False
    assert tg["teacher_forward"]["priority_dtype"] == "torch.float32"
    assert sync["max_batch_search"]["max_batch"] >= res["meta"]["batch"]
    loader = res["loader"]
    assert loader["workers_1"]["samples_per_s"] > 0
    assert loader["workers_1"]["frames_dtype_from_workers"] == "torch.uint8"
    assert loader["workers_1"]["audio_dtype_from_workers"] == "torch.float16"
    assert loader["workers_1"]["device_dtype"] == "torch.float32/torch.float32"
    assert loader["previous_path_workers_0"]["frames_dtype_from_workers"] == "torch.float32"
    assert loader["jpeg_decode"]["cpu_images_per_s_one_core"] > 0
    run = res["real_run"]
    assert run["steps"] == 4 and 0.0 <= run["data_wait_frac"] <= 1.0 and run["samples_per_s"] > 0
    assert res["targets"]["flop_ratio"] > 1 and res["targets"]["step_ratio"] > 0
    text = md.read_text()
    assert "<!-- bench:gpu-check-cpu -->" in text and "TG-DP / Sync step time" in text and "data wait" in text
    assert "base (fp32), batch 4: MFU" in text and "--peak-tflops 0.5" in text
