"""`tgdp-data status ROOT`: the accounting funnel, in which every source clip lands in exactly one bucket.

fetch:    source = fetched + gone (by permanent reason) + pending_transient (by reason; incl. backoff, gave_up)
                   + never_tried
validate: fetched = valid + dropped (by reason) + not_validated         (when events/validate exists)
shard:    valid = sharded + not_sharded                                  (when events/shard exists)

A clip whose last fetch was ok but whose file is gone or has the wrong size counts as pending (`file_missing`), since
the next fetch redoes it. Events for clip ids outside the manifest are reported as `orphan_events`, never counted.
"""

from __future__ import annotations

from collections import Counter
from pathlib import Path
from typing import Any

import pyarrow.parquet as pq

from tgdp.pipeline import ledger
from tgdp.pipeline.fetch import clip_states
from tgdp.pipeline.layout import events_dir, manifest_path

__all__ = ["format_funnel", "funnel"]


def _has_events(root: Path, stage: str) -> bool:
    d = events_dir(root, stage)
    return d.is_dir() and any(p for p in d.glob("*.parquet") if not p.name.startswith("."))


def funnel(root: Path, max_attempts: int = 5) -> dict[str, Any]:
    """The funnel of ROOT as a JSON-able dict; `check` is True when every stage's buckets sum to its input.

    `max_attempts` decides which transient clips count as `gave_up` (use the value the fetch runs used).
    """
    root = Path(root)
    mpath = manifest_path(root)
    if not mpath.is_file():
        raise FileNotFoundError(f"{mpath} not found")
    ids = pq.read_table(mpath, columns=["clip_id"]).column("clip_id").to_pylist()
    source = set(ids)
    states = clip_states(root, max_attempts)
    gone: Counter[str] = Counter()
    pending: Counter[str] = Counter()
    detail: Counter[str] = Counter()
    fetched: list[str] = []
    never = 0
    for cid in source:
        st = states.get(cid)
        if st is None:
            never += 1
        elif st.status == "done":
            fetched.append(cid)
        elif st.status == "gone":
            gone[st.reason or "unknown"] += 1
        else:
            pending[st.reason or "file_missing"] += 1
            detail[st.status] += 1
    out: dict[str, Any] = {
        "source": len(source),
        "duplicate_source_rows": len(ids) - len(source),
        "fetch": {
            "fetched": len(fetched),
            "gone": sum(gone.values()),
            "gone_by_reason": dict(sorted(gone.items())),
            "pending_transient": sum(pending.values()),
            "pending_by_reason": dict(sorted(pending.items())),
            "pending_backoff": detail["backoff"],
            "pending_gave_up": detail["gave_up"],
            "never_tried": never,
        },
        "orphan_events": len(set(states) - source),
    }
    f = out["fetch"]
    checks = [f["fetched"] + f["gone"] + f["pending_transient"] + f["never_tried"] == out["source"]]
    valid: list[str] = []
    if _has_events(root, "validate"):
        last = ledger.latest(root, "validate")
        dropped: Counter[str] = Counter()
        not_validated = 0
        for cid in fetched:
            ev = last.get(cid)
            if ev is None:
                not_validated += 1
            elif ev["status"] == "ok" and ev.get("valid"):
                valid.append(cid)
            elif ev["status"] == "ok":
                dropped[ev.get("reason") or "invalid"] += 1
            else:
                dropped[ev.get("reason") or "failed"] += 1
        out["validate"] = {
            "valid": len(valid),
            "dropped": sum(dropped.values()),
            "dropped_by_reason": dict(sorted(dropped.items())),
            "not_validated": not_validated,
        }
        v = out["validate"]
        checks.append(v["valid"] + v["dropped"] + v["not_validated"] == f["fetched"])
    if _has_events(root, "shard"):
        last = ledger.latest(root, "shard")
        base = valid if "validate" in out else fetched
        sharded = sum(1 for cid in base if last.get(cid, {}).get("status") == "ok")
        out["shard"] = {"sharded": sharded, "not_sharded": len(base) - sharded}
    out["check"] = all(checks)
    return out


def format_funnel(f: dict[str, Any]) -> str:
    """Human-readable funnel (what `tgdp-data status` prints without `--json`)."""
    fe = f["fetch"]
    lines = [f"source clips            {f['source']:>10,}"]
    lines.append(f"  fetched               {fe['fetched']:>10,}")
    lines.append(f"  gone (permanent)      {fe['gone']:>10,}")
    lines += [f"    {r:<20}{n:>10,}" for r, n in fe["gone_by_reason"].items()]
    lines.append(f"  pending (transient)   {fe['pending_transient']:>10,}")
    lines += [f"    {r:<20}{n:>10,}" for r, n in fe["pending_by_reason"].items()]
    lines.append(f"    (backing off {fe['pending_backoff']:,}, gave up at the attempt cap {fe['pending_gave_up']:,})")
    lines.append(f"  never tried           {fe['never_tried']:>10,}")
    if "validate" in f:
        v = f["validate"]
        lines.append(f"validate: valid {v['valid']:,}, dropped {v['dropped']:,}, not validated {v['not_validated']:,}")
        lines += [f"    {r:<20}{n:>10,}" for r, n in v["dropped_by_reason"].items()]
    if "shard" in f:
        lines.append(f"shard: sharded {f['shard']['sharded']:,}, not sharded {f['shard']['not_sharded']:,}")
    if f["orphan_events"]:
        lines.append(f"events for clips not in the manifest: {f['orphan_events']:,}")
    lines.append("sums check: " + ("ok" if f["check"] else "MISMATCH"))
    return "\n".join(lines)
