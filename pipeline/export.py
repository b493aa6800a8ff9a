"""`tgdp-data export ROOT --out DIR`: the valid clips as an auditable artifact, and the funnel that accounts for all.

Writes (each atomically: temporary name, then rename):
  DIR/manifest.parquet  source-manifest columns + validator metrics + valid_rule + fetch sha256, valid clips only
  DIR/clip_ids.txt      one valid clip id per line, sorted
  DIR/funnel.json/.md   source → fetch ok / failed permanent by reason / pending → validate valid / dropped by
                        reason / pending, overall and per split; every source clip lands in exactly one bucket.
On AudioSet-2M (the manifest holds as_unbal_train) the valid count of the AS train splits is printed beside the
paper's 1,390,395 valid pairs. A clip counts as validated only when its latest validate event was made on the
current fetch (same sha256); otherwise it is pending.
"""

from __future__ import annotations

import json
import os
from collections import Counter
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import pyarrow as pa
import pyarrow.parquet as pq

from tgdp.pipeline.layout import manifest_path
from tgdp.pipeline.ledger import latest
from tgdp.pipeline.validate import METRIC_COLUMNS

__all__ = ["PAPER_VALID_PAIRS", "ExportResult", "funnel_markdown", "run_export"]

PAPER_VALID_PAIRS = 1_390_395  # TG-DP: valid AudioSet-2M audio-visual pairs
_EXTRA = ("valid_rule", "window_start_s", "window_rule", "probe_duration_s", "video_codec", "audio_codec")


@dataclass
class ExportResult:
    """Counts of one export; `funnel` is what funnel.json holds."""

    valid: int = 0
    funnel: dict[str, Any] = field(default_factory=dict)
    paper_line: str | None = None


def _bucket(fetch: dict | None, val: dict | None) -> tuple[str, str | None]:
    if fetch is None or fetch.get("status") != "ok":
        if fetch is not None and fetch.get("status") == "failed" and not fetch.get("transient"):
            return "fetch_failed", fetch.get("reason")
        return "fetch_pending", None
    if val is None or val.get("fetch_sha256") != fetch.get("sha256") or val.get("transient"):
        return "validate_pending", None
    if val.get("valid"):
        return "valid", None
    return "dropped", val.get("reason")


def _write_atomic(path: Path, write: Any) -> None:
    tmp = path.with_name(f".tmp-{path.name}")
    write(tmp)
    os.replace(tmp, path)


def run_export(root: Path, out: Path) -> ExportResult:
    """Write the filtered manifest, the id list and the funnel for ROOT into `out`."""
    root, out = Path(root), Path(out)
    source = pq.read_table(manifest_path(root))
    fetches, validates = latest(root, "fetch"), latest(root, "validate")
    rows = source.to_pylist()
    overall: Counter[str] = Counter()
    fetch_failed: Counter[str] = Counter()
    dropped: Counter[str] = Counter()
    per_split: dict[str, Counter[str]] = {}
    rules: Counter[str] = Counter()
    keep = []
    for row in rows:
        cid = row["clip_id"]
        fe, va = fetches.get(cid), validates.get(cid)
        bucket, reason = _bucket(fe, va)
        overall[bucket] += 1
        per_split.setdefault(row["split"], Counter())[bucket] += 1
        if bucket == "fetch_failed":
            fetch_failed[reason or "unknown"] += 1
        elif bucket == "dropped":
            dropped[reason or "unknown"] += 1
        if bucket in ("valid", "dropped"):
            rules[va.get("valid_rule")] += 1
        if bucket == "valid":
            extra = {k: va.get(k) for k in (*METRIC_COLUMNS, *_EXTRA)}
            extra["fetch_sha256"] = fe.get("sha256")
            extra["raw_path"] = fe.get("raw_path")
            keep.append({**row, **extra})
    fetch_ok = overall["valid"] + overall["dropped"] + overall["validate_pending"]
    funnel: dict[str, Any] = {
        "source": len(rows),
        "fetch": {
            "ok": fetch_ok,
            "failed_permanent": dict(sorted(fetch_failed.items())),
            "pending": overall["fetch_pending"],
        },
        "validate": {
            "valid": overall["valid"],
            "dropped": dict(sorted(dropped.items())),
            "pending": overall["validate_pending"],
        },
        "valid_rules": dict(rules),
        "by_split": {s: dict(sorted(c.items())) for s, c in sorted(per_split.items())},
    }
    result = ExportResult(valid=len(keep), funnel=funnel)
    splits = set(per_split)
    if "as_unbal_train" in splits:
        as_train = sum(per_split.get(s, Counter())["valid"] for s in ("as_bal_train", "as_unbal_train"))
        unbal = per_split["as_unbal_train"]["valid"]
        result.paper_line = (
            f"AudioSet-2M valid pairs: {as_train:,} (as_bal_train+as_unbal_train; as_unbal_train alone {unbal:,}) "
            f"vs paper {PAPER_VALID_PAIRS:,} ({as_train / PAPER_VALID_PAIRS:.1%})"
        )
        funnel["paper"] = {"valid_pairs": PAPER_VALID_PAIRS, "as_train_valid": as_train, "as_unbal_valid": unbal}

    out.mkdir(parents=True, exist_ok=True)
    keep.sort(key=lambda r: r["clip_id"])
    if keep:
        table = pa.Table.from_pylist(keep)
    else:
        fields = list(source.schema) + [pa.field(k, pa.null()) for k in (*METRIC_COLUMNS, *_EXTRA)]
        table = pa.schema(fields).empty_table()
    _write_atomic(out / "manifest.parquet", lambda p: pq.write_table(table, p))
    ids = "".join(f"{r['clip_id']}\n" for r in keep)
    _write_atomic(out / "clip_ids.txt", lambda p: p.write_text(ids, encoding="utf-8"))
    text = json.dumps(funnel, indent=1, sort_keys=True) + "\n"
    _write_atomic(out / "funnel.json", lambda p: p.write_text(text, encoding="utf-8"))
    md = funnel_markdown(funnel, result.paper_line)
    _write_atomic(out / "funnel.md", lambda p: p.write_text(md, encoding="utf-8"))
    return result


def funnel_markdown(funnel: dict[str, Any], paper_line: str | None = None) -> str:
    """The funnel as a Markdown table (overall, then per split)."""
    lines = ["# Data funnel", "", "| stage | count |", "|---|---|", f"| source manifest | {funnel['source']:,} |"]
    lines.append(f"| fetch ok | {funnel['fetch']['ok']:,} |")
    for reason, n in funnel["fetch"]["failed_permanent"].items():
        lines.append(f"| fetch failed: {reason} | {n:,} |")
    lines.append(f"| fetch pending (never tried or transient) | {funnel['fetch']['pending']:,} |")
    lines.append(f"| valid | {funnel['validate']['valid']:,} |")
    for reason, n in funnel["validate"]["dropped"].items():
        lines.append(f"| dropped: {reason} | {n:,} |")
    lines.append(f"| validate pending | {funnel['validate']['pending']:,} |")
    lines += ["", "| split | " + " | ".join(_COLS) + " |", "|---|" + "---|" * len(_COLS)]
    for split, c in funnel["by_split"].items():
        lines.append(f"| {split} | " + " | ".join(f"{c.get(k, 0):,}" for k in _COLS) + " |")
    lines += ["", "Valid rule(s): " + "; ".join(f"`{r}` ({n:,})" for r, n in funnel["valid_rules"].items())]
    if paper_line:
        lines += ["", paper_line]
    return "\n".join(lines) + "\n"


_COLS = ("valid", "dropped", "validate_pending", "fetch_failed", "fetch_pending")
