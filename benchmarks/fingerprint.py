"""Behaviour fingerprint of the whole chain, for refactors that must not change any output.

Runs the demo chain (synth → serve → fetch → validate → shard → train both tiny presets → embed → retrieval) small
and serial, then prints one JSON object of sha256 digests: every store file, every logged loss of each run, the
final weights (model + teacher tensors, in key order) and the eval embeddings. Two checkouts that print the same
object write byte-identical stores and train to byte-identical weights on the same machine and torch build.

    .venv/bin/python -m benchmarks.fingerprint --out /tmp/fp-a > a.json   # before
    .venv/bin/python -m benchmarks.fingerprint --out /tmp/fp-b --compare a.json   # after: exit 1 on any change
"""

from __future__ import annotations

import argparse
import contextlib
import hashlib
import json
import sys
from pathlib import Path
from typing import Any

__all__ = ["digest", "fingerprint", "main"]

# small enough for ~2 minutes on 2 cores, big enough that every stage and both training paths run
SETTINGS = {
    "num_clips": 24,
    "train_steps": 12,
    "batch_size": 4,
    "backend": "serial",
    "workers": 1,
    "sessions": 1,
    "probe_epochs": 2,
    "vision_probe": False,
}


def _sha(data: bytes) -> str:
    return hashlib.sha256(data).hexdigest()


def _weights_sha(ckpt: Path) -> dict[str, str]:
    import torch

    state = torch.load(ckpt, map_location="cpu", weights_only=False)
    out = {}
    for part in ("model", "teacher"):
        tensors = state.get(part)
        if not tensors:
            continue
        h = hashlib.sha256()
        for key in sorted(tensors):
            h.update(key.encode())
            h.update(tensors[key].detach().contiguous().cpu().numpy().tobytes())
        out[part] = h.hexdigest()
    return out


def _table_sha(path: Path) -> str:
    """The columns of an Arrow file (its metadata holds the run's paths and speed, which differ run to run)."""
    import pyarrow as pa
    import pyarrow.ipc as ipc

    with pa.memory_map(str(path)) as src:
        table = ipc.open_file(src).read_all().replace_schema_metadata(None)
    sink = pa.BufferOutputStream()
    with ipc.new_stream(sink, table.schema) as writer:
        writer.write_table(table)
    return _sha(sink.getvalue().to_pybytes())


def _losses_sha(metrics: Path) -> str:
    rows = []
    for line in metrics.read_text().splitlines():
        rec = json.loads(line)
        rows.append({k: v for k, v in sorted(rec.items()) if "loss" in k or k == "step"})
    return _sha(json.dumps(rows, sort_keys=True).encode())


def fingerprint(out: Path) -> dict[str, Any]:
    """Run the small demo chain under `out` and digest its outputs."""
    from tgdp.experiments.demo import DemoConfig, run_demo

    cfg = DemoConfig(**SETTINGS)  # type: ignore[arg-type]
    with contextlib.redirect_stdout(sys.stderr):  # stdout carries only the fingerprint
        run_demo(out, cfg)
    return digest(out)


def digest(out: Path) -> dict[str, Any]:
    """sha256 digests of a demo folder's store files, each run's logged losses and final weights, and the
    embeddings' columns."""
    out = out.resolve()
    store = {
        str(p.relative_to(out / "store")): _sha(p.read_bytes())
        for p in sorted((out / "store").rglob("*"))
        if p.is_file() and "truth" not in p.parts
    }
    runs: dict[str, Any] = {}
    for run in sorted((out / "train").iterdir()):
        ckpts = sorted(run.glob("checkpoints/*.pt"), key=lambda p: int(p.stem.split("_")[-1]))
        runs[run.name] = {"losses": _losses_sha(run / "metrics.jsonl"), "weights": _weights_sha(ckpts[-1])}
    embeddings = {str(p.relative_to(out / "eval")): _table_sha(p) for p in sorted((out / "eval").rglob("emb_*.arrow"))}
    return {"store": store, "runs": runs, "embeddings": embeddings}


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--out", type=Path, required=True, help="work folder (the demo's outputs)")
    ap.add_argument("--compare", type=Path, help="a fingerprint JSON printed before: exit 1 if anything differs")
    args = ap.parse_args(argv)
    fp = fingerprint(args.out)
    print(json.dumps(fp, indent=2, sort_keys=True))
    if args.compare is None:
        return 0
    before = json.loads(args.compare.read_text())
    diff = [k for k in sorted(set(before) | set(fp)) if before.get(k) != fp.get(k)]
    for key in diff:
        sub = before.get(key) or {}
        now = fp.get(key) or {}
        for name in sorted(set(sub) | set(now)):
            if sub.get(name) != now.get(name):
                print(f"differs: {key}/{name}", file=sys.stderr)
    print("identical" if not diff else f"{len(diff)} part(s) differ", file=sys.stderr)
    return 1 if diff else 0


if __name__ == "__main__":
    sys.exit(main())
