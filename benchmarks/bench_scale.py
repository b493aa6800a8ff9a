"""The accounting commands at full AudioSet-2M + VGGSound scale (≈2.28 M clips): wall time and peak RSS.

Generates, into a temporary directory, official-format inputs of full size:
  unbalanced_train_segments.csv (2,041,789 rows), balanced_train_segments.csv (22,160), eval_segments.csv (20,371),
  class_labels_indices.csv (527 mids), vggsound.csv (199,176 rows: 183,730 train + 15,446 test) and its label index,
and event logs with a realistic mix over the union of both manifests (2,283,496 clips):
  fetch:    1% never tried; of the rest 17% permanently gone (unavailable, private, account_terminated, ...), 1.5%
            still pending after transient failures (0.3% at the 5-attempt cap), 6% of the others succeeded or failed
            for good only after 1-2 transient failures (2-3 attempts); ok events carry a sha256 and a raw_path;
  validate: one verdict per fetched clip, 3.5% dropped by reason, 1% with an earlier transient `missing_raw` event;
  shard:    (second ROOT state) one ok event per valid clip, as `tgdp-data shard` writes them.
Each stage's log is one large compacted file (first run), one file per later run, and 200 small flush files (the
tail of an interrupted run), named as the ledger names them. No raw media exist on disk: the state of a user who
deleted the media after sharding, and the worst case for the "raw file still needed?" check before sharding.

Times, each command in a fresh subprocess (wall, CPU = user + sys and peak RSS from GNU time), 3 runs each:
  `tgdp-data manifest` (AudioSet: the three segment CSVs + labels; VGGSound: vggsound.csv + labels),
  `tgdp-data status --json`, `tgdp-data export`, and the planning step of `fetch` and `validate` (which clips to
  do next: `fetch.plan_fetch`, `validate.validate_tasks`), on the union ROOT, before and after shard events.

Usage: python -m benchmarks.bench_scale [--scale 0.1] [--runs 3] [--keep DIR] [--tiny] [--md PATH]  (`make bench` runs
scale 1).
"""

from __future__ import annotations

import argparse
import binascii
import json
import os
import shutil
import subprocess
import sys
import tempfile
import time
from collections.abc import Mapping
from pathlib import Path

import numpy as np
import pyarrow as pa
import pyarrow.parquet as pq

from benchmarks.harness import Figure, bench_args, write_section

FULL = {"unbal": 2_041_789, "bal": 22_160, "eval": 20_371, "vgg_train": 183_730, "vgg_test": 15_446}
_YT = np.frombuffer(b"ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789-_", dtype=np.uint8)
GONE_REASONS = {
    "unavailable": 0.50,
    "private": 0.22,
    "account_terminated": 0.13,
    "removed_by_user": 0.07,
    "copyright": 0.04,
    "geo_blocked": 0.02,
    "age_restricted": 0.02,
}
TRANSIENT_REASONS = {"http_5xx": 0.3, "network": 0.3, "timeout": 0.2, "rate_limited_session": 0.1, "http_403": 0.1}
DROP_REASONS = {"corrupt_decode": 0.45, "too_short": 0.3, "no_audio_stream": 0.15, "unreadable": 0.07}
DROP_REASONS["no_video_stream"] = 0.03


# -------------------------------------------------------------------------------------------------- inputs


def _ytids(rng: np.random.Generator, n: int) -> np.ndarray:
    """n distinct-enough random 11-character YouTube ids (as a numpy array of str)."""
    codes = _YT[rng.integers(0, 64, size=(n, 11))]
    return codes.view("S11").ravel().astype(str)


def _mids(n: int) -> list[str]:
    return [f"/m/{i:05x}" for i in range(n)]


def write_inputs(out: Path, scale: float, seed: int = 0) -> dict[str, Path]:
    """The official-format CSVs (AudioSet segments + label index, VGGSound + label index) at `scale` of full size."""
    rng = np.random.default_rng(seed)
    out.mkdir(parents=True, exist_ok=True)
    mids = _mids(527)
    with open(out / "class_labels_indices.csv", "w", encoding="utf-8") as fh:
        fh.write("index,mid,display_name\n")
        fh.writelines(f'{i},{m},"Label {i}, kind"\n' for i, m in enumerate(mids))
    files = {"labels": out / "class_labels_indices.csv"}
    for key, name in (("bal", "balanced_train"), ("eval", "eval"), ("unbal", "unbalanced_train")):
        n = max(1, int(FULL[key] * scale))
        ids = _ytids(rng, n)
        starts = rng.integers(0, 30, size=n) * 10
        k = rng.integers(1, 4, size=n)
        lab = rng.integers(0, len(mids), size=(n, 3))
        path = out / f"{name}_segments.csv"
        with open(path, "w", encoding="utf-8") as fh:
            fh.write("# Segments csv created Sun Mar  5 10:54:31 2017\n")
            fh.write(f"# num_ytids={n}, num_segs={n}, num_unique_labels=527, num_positive_labels={int(k.sum())}\n")
            fh.write("# YTID, start_seconds, end_seconds, positive_labels\n")
            fh.writelines(
                f'{ids[i]}, {starts[i]:.3f}, {starts[i] + 10:.3f}, "{",".join(mids[j] for j in lab[i, : k[i]])}"\n'
                for i in range(n)
            )
        files[key] = path
    names = [f"vgg label {i}" if i % 7 else f"vgg label {i}, with comma" for i in range(309)]
    with open(out / "class_labels_indices_vgg.csv", "w", encoding="utf-8") as fh:
        fh.write("index,mid,display_name\n")
        fh.writelines(f"{i},vgg_{i},{nm.replace(',', '_')}\n" for i, nm in enumerate(names))
    files["vgg_labels"] = out / "class_labels_indices_vgg.csv"
    n_tr, n_te = max(1, int(FULL["vgg_train"] * scale)), max(1, int(FULL["vgg_test"] * scale))
    ids = _ytids(rng, n_tr + n_te)
    starts = rng.integers(0, 290, size=n_tr + n_te)
    lab = rng.integers(0, 309, size=n_tr + n_te)
    with open(out / "vggsound.csv", "w", encoding="utf-8") as fh:
        for i in range(n_tr + n_te):
            nm = names[lab[i]]
            nm = f'"{nm}"' if "," in nm else nm
            fh.write(f"{ids[i]},{starts[i]},{nm},{'train' if i < n_tr else 'test'}\n")
    files["vgg"] = out / "vggsound.csv"
    return files


# -------------------------------------------------------------------------------------------------- events


def _choice(rng: np.random.Generator, table: dict[str, float], n: int) -> np.ndarray:
    keys = list(table)
    p = np.array([table[k] for k in keys])
    return np.array(keys, dtype=object)[rng.choice(len(keys), size=n, p=p / p.sum())]


def _hex(rng: np.random.Generator, n: int, nbytes: int = 32) -> pa.Array:
    data = binascii.hexlify(rng.bytes(n * nbytes))
    offsets = np.arange(n + 1, dtype=np.int32) * (2 * nbytes)
    return pa.StringArray.from_buffers(n, pa.py_buffer(offsets), pa.py_buffer(data))


def _raw_paths(ids: list[str]) -> list[str]:
    from tgdp.pipeline.layout import raw_path_for

    return [raw_path_for(Path(), cid, "mkv").as_posix() for cid in ids]  # relative to ROOT, as events record it


def _write_log(root: Path, stage: str, runs: list[pa.Table], t0: float) -> int:
    """Write a stage's runs as the ledger leaves them: run 1 compacted, later runs whole, the last as 200 flushes."""
    directory = root / "events" / stage
    directory.mkdir(parents=True, exist_ok=True)
    ns = int(t0 * 1e9)
    files = 0
    for r, table in enumerate(runs):
        if r == len(runs) - 1 and table.num_rows > 3200:
            head, tail = table.slice(0, table.num_rows - 3200), table.slice(table.num_rows - 3200)
            parts = [head] + [tail.slice(i, 16) for i in range(0, 3200, 16)]
        else:
            parts = [table]
        for part in parts:
            ns += 1_000_000
            suffix = "-compact" if r == 0 else ""
            name = f"{ns:020d}-4242-{files:08x}{suffix}.parquet"
            seq = pa.array(np.arange(part.num_rows, dtype=np.int64))
            pq.write_table(part.append_column("seq", seq), directory / name)
            files += 1
    return files


def event_table(stage: str, given: Mapping[str, pa.Array], n: int) -> pa.Table:
    """`n` events of `stage` with the columns the ledger writes for it (`ledger.STAGE_SCHEMAS`, without the columns
    the ledger adds itself), in its order and types: each taken from `given` (cast) or all null. A `given` column
    the stage does not declare is an error: the benchmark fell behind the code."""
    from tgdp.pipeline.ledger import STAGE_SCHEMAS

    schema = STAGE_SCHEMAS[stage]
    stale = [k for k in given if k not in schema.names]
    if stale:
        raise ValueError(f"the benchmark builds {stage} event columns the code no longer writes: {stale}")
    added = {"attempted_at", "worker", "stage", "seq"}  # `_common` and `_write_log` add them, as the ledger does
    cols = {f.name: given[f.name].cast(f.type) if f.name in given else pa.nulls(n, f.type) for f in schema}
    return pa.table({k: v for k, v in cols.items() if k not in added})


def _common(table: pa.Table, stage: str, when: float, worker: str) -> pa.Table:
    n = table.num_rows
    ts = pa.array(np.full(n, int(when * 1e6), dtype="int64")).cast(pa.timestamp("us", tz="UTC"))
    return (
        table.append_column("stage", pa.array([stage] * n))
        .append_column("attempted_at", ts)
        .append_column("worker", pa.array([worker] * n))
    )


def write_events(root: Path, clip_ids: pa.Array, seed: int = 1, shard: bool = False) -> dict[str, int]:
    """Fetch and validate (and optionally shard) event logs for `clip_ids`; returns event counts per stage."""
    from tgdp.pipeline.validate import METRIC_COLUMNS, ValidateConfig

    rng = np.random.default_rng(seed)
    n = len(clip_ids)
    ids = np.array(clip_ids.to_pylist(), dtype=object)
    u = rng.random(n)
    never = u < 0.01
    tried = ~never
    v = rng.random(n)
    gone = tried & (v < 0.17)
    pending = tried & (v >= 0.17) & (v < 0.185)
    ok = tried & ~gone & ~pending
    # transient failures before the final event: pending clips 1-3 (0.3% of all at the 5-attempt cap), others 6%
    pre = np.zeros(n, dtype=np.int64)
    retried = (ok | gone) & (rng.random(n) < 0.06)
    pre[retried] = rng.integers(1, 3, size=int(retried.sum()))
    pre[pending] = rng.integers(1, 4, size=int(pending.sum()))
    capped = pending & (rng.random(n) < 0.2)
    pre[capped] = 5
    # the final event is a transient failure for pending clips (it is one of their `pre` failures)
    n_events = pre + (ok | gone).astype(np.int64)
    t0 = time.time() - 30 * 86400
    runs = []
    ok_sha = _hex(rng, n)
    raw = pa.array(_raw_paths(ids[ok].tolist()))
    ok_idx = np.flatnonzero(ok)
    take = np.full(n, -1)
    take[ok_idx] = np.arange(ok_idx.size)
    version = ("2025.10.22", "5.1.9")
    for attempt in range(1, int(n_events.max()) + 1):
        sel = np.flatnonzero(n_events >= attempt)
        rng.shuffle(sel)
        final = attempt == n_events[sel]
        is_ok = final & ok[sel]
        is_gone = final & gone[sel]
        failed_t = ~is_ok & ~is_gone
        m = sel.size
        reason = np.full(m, None, dtype=object)
        reason[is_gone] = _choice(rng, GONE_REASONS, int(is_gone.sum()))
        reason[failed_t] = _choice(rng, TRANSIENT_REASONS, int(failed_t.sum()))
        when = t0 + attempt * 3 * 86400
        detail = np.full(m, None, dtype=object)
        detail[~is_ok] = "ERROR: [generic] " + reason[~is_ok].astype(str) + ": message as yt-dlp prints it"
        sha = pc_take_or_null(ok_sha, np.where(is_ok, sel, -1))
        rawp = pc_take_or_null(raw, np.where(is_ok, take[sel], -1))
        nxt = np.where(failed_t, int((when + 900 * 2**attempt) * 1e6), 0)
        cols = {
            "clip_id": pa.array(ids[sel], pa.string()),
            "status": pa.array(np.where(is_ok, "ok", "failed")),
            "reason": pa.array(reason, pa.string()),
            "transient": pa.array(failed_t),
            "reason_detail": pa.array(detail, pa.string()),
            "attempt": pa.array(np.full(m, attempt), pa.int64()),
            "session_id": pa.array(np.char.add("run-s", (sel % 8).astype(str))),
            "source": pa.array(["fetch"] * m),
            "raw_path": rawp,
            "file_bytes": pa.array(np.where(is_ok, rng.integers(300_000, 3_000_000, size=m), None), pa.int64()),
            "sha256": sha,
            "section_mode": pa.array(np.where(is_ok, "section", None), pa.string()),
            "section_start_s": pa.array(np.where(is_ok, 28.0, np.nan), pa.float64()),
            "section_end_s": pa.array(np.where(is_ok, 42.0, np.nan), pa.float64()),
            "source_duration_s": pa.array(rng.uniform(20, 600, size=m)),
            "format_id": pa.array(np.where(is_ok, "134+140", None), pa.string()),
            "vcodec": pa.array(np.where(is_ok, "avc1.4d401e", None), pa.string()),
            "acodec": pa.array(np.where(is_ok, "mp4a.40.2", None), pa.string()),
            "height": pa.array(np.full(m, 360), pa.int64(), mask=~is_ok),
            "fps": pa.array(np.where(is_ok, 25.0, np.nan)),
            "yt_dlp_version": pa.array([version[0]] * m),
            "ffmpeg_version": pa.array([version[1]] * m),
            "elapsed_s": pa.array(rng.uniform(2, 30, size=m)),
            "next_attempt_after": pa.array(np.where(failed_t, nxt, None), pa.int64()).cast(
                pa.timestamp("us", tz="UTC")
            ),
            "gave_up": pa.array(failed_t & (attempt >= 5)),
            "in_attempt_retries": pa.array(np.where(failed_t, rng.integers(0, 3, size=m), 0), pa.int64()),
            "rate_wait_s": pa.array(rng.uniform(0, 12, size=m).round(3)),
            "ray_node": pa.array(np.char.add("node", (sel % 4).astype(str))),
        }
        runs.append(_common(event_table("fetch", cols, m), "fetch", when, "node1:4242"))
    counts = {"fetch": sum(t.num_rows for t in runs)}
    _write_log(root, "fetch", runs, t0)

    # validate: one verdict per fetched clip; 1% first saw a transient missing_raw
    vcfg = ValidateConfig()
    rule = vcfg.valid_rule()
    fsha = ok_sha.take(pa.array(ok_idx))
    fids = ids[ok_idx]
    k = ok_idx.size
    drop = _choice(rng, DROP_REASONS, k)
    dropped = rng.random(k) < 0.035
    first_transient = rng.random(k) < 0.01
    vruns = []
    for r, sel in enumerate((np.flatnonzero(first_transient), np.arange(k))):
        sel = sel.copy()
        rng.shuffle(sel)
        m = sel.size
        if r == 0:
            valid = np.zeros(m, dtype=bool)
            reason = np.full(m, "missing_raw", dtype=object)
            transient = np.ones(m, dtype=bool)
        else:
            valid = ~dropped[sel]
            reason = np.where(valid, None, drop[sel])
            transient = np.zeros(m, dtype=bool)
        metrics = {c: pa.array(rng.uniform(0, 10, size=m)) for c in METRIC_COLUMNS}
        for c in ("has_video", "has_audio", "is_silent", "is_still", "is_av_offset"):
            metrics[c] = pa.array(rng.random(m) < (0.97 if c.startswith("has") else 0.05))
        metrics["video_frames"] = pa.array(rng.integers(200, 300, size=m))
        cols = {
            "clip_id": pa.array(fids[sel], pa.string()),
            "status": pa.array(np.where(valid, "ok", "failed")),
            "reason": pa.array(reason, pa.string()),
            "transient": pa.array(transient),
            "reason_detail": pa.array(np.where(valid, None, "first ffmpeg error line"), pa.string()),
            "valid": pa.array(valid),
            "valid_rule": pa.array([rule] * m),
            "fetch_sha256": fsha.take(pa.array(sel)),
            "window_start_s": pa.array(np.full(m, 2.0)),
            "window_rule": pa.array(["section"] * m),
            "probe_duration_s": pa.array(np.full(m, 14.0)),
            "video_codec": pa.array(["h264"] * m),
            "audio_codec": pa.array(["aac"] * m),
            "ffmpeg_version": pa.array(["5.1.9"] * m),
            "feature_cache": pa.array(np.where(valid, "cached", None), pa.string()),
            **metrics,
        }
        vruns.append(_common(event_table("validate", cols, m), "validate", t0 + (20 + r) * 86400, "node2:777"))
    counts["validate"] = sum(t.num_rows for t in vruns)
    _write_log(root, "validate", vruns, t0 + 20 * 86400)
    if shard:
        valid_sel = np.flatnonzero(~dropped)
        counts["shard"] = write_shard_events(root, fids[valid_sel], fsha.take(pa.array(valid_sel)), t0)
    return counts


def write_shard_events(root: Path, ids: np.ndarray, sha: pa.Array, t0: float) -> int:
    m = len(ids)
    cols = {
        "clip_id": pa.array(ids, pa.string()),
        "status": pa.array(["ok"] * m),
        "reason": pa.array([None] * m, pa.string()),
        "transient": pa.array(np.zeros(m, dtype=bool)),
        "fetch_sha256": sha,
        "store": pa.array(["/data/store"] * m),
        "store_split": pa.array(["train"] * m),
        "shard_file": pa.array(np.char.add("data-", (np.arange(m) // 700).astype(str))),
    }
    table = _common(event_table("shard", cols, m), "shard", t0 + 25 * 86400, "node3:99")
    _write_log(root, "shard", [table], t0 + 25 * 86400)
    return m


def pc_take_or_null(values: pa.Array, idx: np.ndarray) -> pa.Array:
    """values[idx] with null where idx < 0."""
    mask = idx < 0
    return values.take(pa.array(np.where(mask, 0, idx), mask=mask))


# -------------------------------------------------------------------------------------------------- timing


def measure(cmd: list[str], env: dict[str, str] | None = None) -> tuple[float, float, float, str]:
    """(wall s, peak RSS GB, CPU s = user + sys, stdout) of one command, from GNU time (`/usr/bin/time`).

    Not from this process's `wait4`: a child forked from this (large) process counts the parent's pages in its
    maximum RSS until it execs; GNU time forks the command from its own small process."""
    with tempfile.NamedTemporaryFile("r", suffix=".time") as tf:
        timed = ["/usr/bin/time", "-f", "%e %M %U %S", "-o", tf.name, *cmd]
        proc = subprocess.run(timed, capture_output=True, env=env)
        if proc.returncode not in (0, 1):
            raise RuntimeError(f"{' '.join(cmd[:4])} failed ({proc.returncode}): {proc.stderr.decode()[-2000:]}")
        wall, kb, user, system = tf.read().split()[-4:]
    return float(wall), int(kb) / 1024**2, float(user) + float(system), proc.stdout.decode()


# The code before this benchmark's issue (commit fcbe5ae), measured once with this script at --scale 0.1 (the old
# export needs ~13 GB at full scale on a machine shared with other engineers).
BEFORE = (
    "Before (the per-clip Python code of commit fcbe5ae), one run each at scale 0.1 (228,348 clips; 251,632 fetch "
    "and 185,917 validate events), load average 8–11: manifest AudioSet (204,178 + 2,216 + 2,037 rows) 14.9 s / "
    "0.39 GB, manifest VGGSound 4.0 s / 0.17 GB, status 27.7 s / 0.87 GB, export 33.8 s / 1.64 GB, fetch planning "
    "20.7 s / 0.86 GB, validate planning 19.9 s / 1.30 GB (RSS then from os.wait4 in a parent of ~0.3 GB). The "
    "issue's report for that code at full scale (2,041,789 rows; 2.08 M fetch and 1.77 M validate events): manifest "
    "99.8 s / 2.46 GB, status 130 s / 6.2 GB, export 170 s / 13.4 GB; and status and export disagreed once the raw "
    "media were deleted (status: valid 0)."
)


_PLAN = """
import sys, time
from pathlib import Path
root = Path(sys.argv[1])
t = time.perf_counter()
if sys.argv[2] == "fetch":
    from tgdp.pipeline import fetch as f
    if hasattr(f, "plan_fetch"):
        tasks = f.plan_fetch(root, f.FetchConfig())
    else:
        tasks = f._tasks(root, f.FetchConfig(), f.FetchSummary())
else:
    from tgdp.pipeline.validate import ValidateConfig, validate_tasks
    tasks = validate_tasks(root, ValidateConfig())[0]
print(len(tasks), time.perf_counter() - t)
"""


def main(argv: list[str] | None = None) -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--scale", type=float, default=1.0, help="fraction of full size (1 = 2,283,496 clips)")
    ap.add_argument("--runs", type=int, default=3)
    ap.add_argument("--keep", type=Path, default=None, help="generate into (and keep) this directory")
    ap.add_argument("--only", default="manifest,status,export,plan", help="comma-separated subset to time")
    ap.add_argument("--no-write", action="store_true", help="print the figures, leave BENCHMARKS.md alone")
    args = bench_args(argv, __doc__, ap)
    if args.tiny:  # ~500 clips, one run each: the suite's check that every step still runs
        args.scale, args.runs = min(args.scale, 2e-4), 1
    only = set(args.only.split(","))
    tmp = args.keep or Path(tempfile.mkdtemp(prefix="tgdp-bench-scale-"))
    py = sys.executable
    cli = [py, "-m", "tgdp.pipeline.cli"]
    env = dict(os.environ, RAY_USAGE_STATS_ENABLED="0")
    figures: list[Figure] = []
    loads: list[float] = []

    def bench(name: str, cmd: list[str], target: str = "", unit_rss: str = "≤ 2 GB") -> list[str]:
        walls, rss, cpus, outs = [], [], [], []
        for _ in range(args.runs):
            loads.append(os.getloadavg()[0])
            w, r, c, o = measure(cmd, env)
            walls.append(w)
            rss.append(r)
            cpus.append(c)
            outs.append(o)
            print(f"[bench_scale] {name}: {w:.1f} s, {r:.2f} GB, {c:.1f} CPU-s", flush=True)
        figures.append(Figure(f"{name}: wall", walls, unit="s", target=target))
        figures.append(Figure(f"{name}: CPU (user+sys)", cpus, unit="CPU-s"))
        figures.append(Figure(f"{name}: peak RSS", rss, unit="GB", target=unit_rss if target else ""))
        return outs

    try:
        t = time.perf_counter()
        inputs = write_inputs(tmp / "inputs", args.scale)
        print(f"[bench_scale] inputs written in {time.perf_counter() - t:.1f} s", flush=True)
        as_root, vgg_root, root = tmp / "as", tmp / "vgg", tmp / "root"
        as_cmd = [*cli, "manifest", str(as_root), "--dataset", "audioset", "--labels", str(inputs["labels"])]
        for key in ("unbal", "bal", "eval"):
            as_cmd += ["--csv", str(inputs[key])]
        vgg_cmd = [*cli, "manifest", str(vgg_root), "--dataset", "vggsound", "--labels", str(inputs["vgg_labels"])]
        vgg_cmd += ["--csv", str(inputs["vgg"])]
        if "manifest" in only:
            bench("manifest AudioSet (2.08 M rows)", as_cmd, target="≤ 20 s")
            bench("manifest VGGSound (0.2 M rows)", vgg_cmd)
        else:
            measure(as_cmd, env)
            measure(vgg_cmd, env)
        # One ROOT over both datasets: the manifests are per dataset, the accounting is over their union.
        from tgdp.pipeline.layout import manifest_path

        union = pa.concat_tables([pq.read_table(manifest_path(as_root)), pq.read_table(manifest_path(vgg_root))])
        union = union.sort_by("clip_id")
        shutil.rmtree(root, ignore_errors=True)  # a kept directory from an earlier run: never append to its logs
        manifest_path(root).parent.mkdir(parents=True, exist_ok=True)
        pq.write_table(union, manifest_path(root))
        t = time.perf_counter()
        counts = write_events(root, union.column("clip_id").combine_chunks())
        n_clips = union.num_rows
        del union
        print(f"[bench_scale] {n_clips:,} clips, events {counts} in {time.perf_counter() - t:.1f} s", flush=True)
        funnels = []
        if "status" in only:
            funnels += bench("status (fetch+validate events)", [*cli, "status", str(root), "--json"], "≤ 10 s")
        if "export" in only:
            bench("export (fetch+validate events)", [*cli, "export", str(root), "--out", str(tmp / "export")], "≤ 20 s")
        if "plan" in only:
            for stage in ("fetch", "validate"):
                bench(f"{stage} planning step", [py, "-c", _PLAN, str(root), stage])
        # After shard: shard events for every valid clip (raw media deleted), the state of the report.
        from tgdp.pipeline.layout import events_dir

        valid = (
            pq.read_table(tmp / "export" / "manifest.parquet", columns=["clip_id", "fetch_sha256"])
            if (tmp / "export" / "manifest.parquet").is_file()
            else None
        )
        if valid is not None and "status" in only:
            shutil.rmtree(events_dir(root, "shard"), ignore_errors=True)
            counts["shard"] = write_shard_events(
                root,
                np.array(valid.column("clip_id").to_pylist(), dtype=object),
                valid.column("fetch_sha256").combine_chunks(),
                time.time() - 5 * 86400,
            )
            funnels += bench("status (+ shard events)", [*cli, "status", str(root), "--json"], "≤ 10 s")
            bench("export (+ shard events)", [*cli, "export", str(root), "--out", str(tmp / "export2")], "≤ 20 s")
        f = next((json.loads(o) for o in funnels if o.strip().startswith("{")), None)
        load = f"{min(loads):.1f}–{max(loads):.1f}" if loads else "n/a"
        notes = (
            f"Scale {args.scale:g}: {n_clips:,} clips (AudioSet unbalanced {int(FULL['unbal'] * args.scale):,} + "
            f"balanced + eval, VGGSound train + test), events {', '.join(f'{k} {v:,}' for k, v in counts.items())}. "
            "Each figure is one command in a fresh subprocess (imports included); wall, CPU and peak RSS from GNU "
            f"time (`/usr/bin/time -f '%e %M %U %S'`). 1-minute load average during the runs {load} on 2 cores "
            "shared with other engineers, so the wall times are noisy; the RSS figures are not. Inputs and the event "
            "mix are described in the docstring of benchmarks/bench_scale.py; no raw media exist on disk (deleted "
            "after shard)."
        )
        notes += (
            " CPU-seconds (user + sys) are given beside wall time because they depend far less on the other jobs; "
            "where wall exceeds CPU by more than a few seconds, the command was waiting for a core."
        )
        if f is not None:
            notes += f"\n\nFunnel of the generated ROOT (status --json, first run): `{json.dumps(_brief(f))}`"
            notes += (
                " (before the shard events: no media or feature cache on disk, so `raw_missing` counts the valid"
                " clips the next fetch would download again for shard; after them all are `sharded`)"
            )
        notes += "\n\n" + BEFORE
        if not args.no_write:
            write_section("scale", figures, notes)
        else:
            for fig in figures:
                print(fig.row())
            print(notes)
    finally:
        if args.keep is None:
            shutil.rmtree(tmp, ignore_errors=True)


def _brief(f: dict) -> dict:
    keep = {"source": f.get("source")}
    for stage in ("fetch", "validate", "shard"):
        if stage in f:
            keep[stage] = {k: v for k, v in f[stage].items() if not isinstance(v, dict)}
    return keep


if __name__ == "__main__":
    main(sys.argv[1:])
