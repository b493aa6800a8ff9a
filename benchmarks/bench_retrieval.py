"""Retrieval speed and memory: VGGSound-list size (1,545 clips × 16 × 768) both directions on 2 CPU threads, and
the peak memory of a chunked AudioSet-eval-size run (17,000 clips × 16 × 768 float16), measured in a subprocess on
the first query blocks (the peak is reached there: candidates + one block), with the full-run time projected from
the measured block rate.
"""

from __future__ import annotations

import json
import subprocess
import sys
import time

import numpy as np
import torch

from benchmarks.harness import Figure, bench_args, write_section
from tgdp.eval.retrieval import retrieval_ranks, retrieval_ranks_both

__all__ = ["main"]

D, T = 768, 16
N_VGG, N_AS, CHUNK = 1545, 17_000, 2048

_CHILD = r"""
import json, sys, time, resource
import numpy as np, torch
torch.set_num_threads(2)
from tgdp.eval.retrieval import retrieval_ranks

n, t, d, chunk, blocks = map(int, sys.argv[1:6])
def hwm():
    for line in open("/proc/self/status"):
        if line.startswith("VmHWM"):
            return int(line.split()[1]) / 1024**2
rng = np.random.default_rng(0)
a = np.empty((n, t, d), np.float16)
v = np.empty((n, t, d), np.float16)
for s in range(0, n, 1000):
    a[s:s+1000] = rng.standard_normal((min(1000, n - s), t, d), dtype=np.float32)
    v[s:s+1000] = a[s:s+1000] + rng.standard_normal((min(1000, n - s), t, d), dtype=np.float32)
base = hwm()
t0 = time.perf_counter()
r = retrieval_ranks(v, a, chunk_size=chunk, rows=slice(0, blocks * chunk))
dt = time.perf_counter() - t0
res = {"base_gib": base, "peak_gib": hwm(), "seconds": dt, "rows": int(r.size)}
print(json.dumps(res))
"""


def _data(n: int, seed: int = 0) -> tuple[np.ndarray, np.ndarray]:
    rng = np.random.default_rng(seed)
    a = rng.standard_normal((n, T, D), dtype=np.float32)
    v = a + 2.0 * rng.standard_normal((n, T, D), dtype=np.float32)
    return a.astype(np.float16), v.astype(np.float16)


def main(argv: list[str] | None = None) -> None:
    args = bench_args(argv, __doc__)
    n_vgg, n_as, chunk, reps = (96, 1000, 64, 1) if args.tiny else (N_VGG, N_AS, CHUNK, 3)
    torch.set_num_threads(2)
    a, v = _data(n_vgg)
    retrieval_ranks_both(a[:64], v[:64])  # warm-up (thread pool, allocator)
    times, times_sep, cpu = [], [], []
    for _ in range(reps):
        t0, c0 = time.perf_counter(), time.process_time()
        retrieval_ranks_both(a, v, chunk_size=chunk)  # one similarity pass: rows A→V, columns V→A
        times.append(time.perf_counter() - t0)
        cpu.append(time.process_time() - c0)
    t0 = time.perf_counter()
    retrieval_ranks(v, a, chunk_size=chunk)  # V→A
    retrieval_ranks(a, v, chunk_size=chunk)  # A→V
    times_sep.append(time.perf_counter() - t0)

    blocks = 1
    out = subprocess.run(
        [sys.executable, "-c", _CHILD, str(n_as), str(T), str(D), str(chunk), str(blocks)],
        capture_output=True,
        text=True,
        check=True,
    )
    child = json.loads(out.stdout.strip().splitlines()[-1])
    per_row = child["seconds"] / child["rows"]
    projected_s = per_row * n_as
    gib = 1024**3
    arithmetic = (2 * n_as * T * D * 2 + n_as * T * D * 4 + chunk * T * D * 4 + chunk * n_as * (4 + 1)) / gib
    figures = [
        Figure("VGGSound list 1,545×16×768 f16, both directions", times, unit="s", target="< 1 s on 2 CPU cores"),
        Figure("same, CPU time (both threads; ≈ 2× the uncontended wall time)", cpu, unit="CPU s"),
        Figure("same, two separate one-direction passes", times_sep, unit="s"),
        Figure(
            "17k×16×768 f16 chunked: peak RSS (process)",
            [child["peak_gib"]],
            unit="GiB",
            target="fits a 24 GiB machine",
            extra={},
        ),
        Figure("17k: peak RSS above the input arrays", [child["peak_gib"] - child["base_gib"]], unit="GiB"),
        Figure("17k: projected full run, both directions (2 CPU threads)", [projected_s], unit="s"),
    ]
    notes = (
        f"Random float16 embeddings, strategy diagonal_mean, chunk {chunk} query rows, torch CPU matmul in float32, "
        f"2 threads. The 17k figures come from a subprocess that builds two {n_as}×{T}×{D} float16 arrays "
        f"({2 * n_as * T * D * 2 / gib:.2f} GiB; process RSS {child['base_gib']:.2f} GiB before ranking) and ranks "
        f"the first {child['rows']} V→A queries against all {n_as} candidates in {child['seconds']:.1f} s; the peak "
        "is reached on the first block (float32 candidates [N, T·D] + one query block + one [chunk, N] similarity "
        f"block), so it is the full run's peak. Arithmetic: inputs + float32 candidates + block = {arithmetic:.2f} "
        "GiB. The full-run time (both directions come from one pass) is projected linearly from the measured "
        "per-query rate (each query row costs one [T·D]·[T·D, N] product). The machine is shared by several "
        "engineers; times are wall clock under that load."
    )
    write_section("retrieval", figures, notes)


if __name__ == "__main__":
    main(sys.argv[1:])
