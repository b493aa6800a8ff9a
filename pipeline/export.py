"""`tgdp-data export ROOT --out DIR`: the valid clips as an auditable artifact, and the funnel that accounts for all.

Writes:
  DIR/manifest.parquet  source-manifest columns + validator metrics + valid_rule + fetch sha256, valid clips only
                        (sharded or not), sorted by clip id
  DIR/clip_ids.txt      one valid clip id per line, sorted
  DIR/dropped.parquet   every other clip with its state, stage, reason, detail and paths (`tgdp.pipeline.clips`,
                        what `tgdp-data clips` lists): manifest.parquet + dropped.parquet = the source manifest
  DIR/funnel.json/.md   the funnel of `tgdp.pipeline.status` (the same function `tgdp-data status` prints, so the
                        two agree on every count), plus the valid rules and the states per split.
The five files are one commit: they are written into a new version folder `DIR/v-<n>/` (built as `.tmp-<pid>-v-<n>`
and renamed when complete), then the one link `DIR/current -> v-<n>` is replaced atomically; the five names in DIR
are fixed links `DIR/<file> -> current/<file>`. A reader sees the old export or the new one, never a mix (one that
reads several files across a rerun resolves `DIR/current` once). A failed or killed export leaves the previous one
in place; the next export removes the temporaries of killed ones. The previous version is kept beside the current
one (a reader that resolved `current` just before the flip can finish), older ones are removed.
On AudioSet-2M (the manifest holds as_unbal_train) the valid count of the AS train splits is printed beside the
paper's 1,390,395 valid pairs. A clip is valid when its latest validate event is a valid verdict on its current
download (same sha256); deleting the raw media afterwards changes nothing (docs/STORE.md, "Clip states").
Columnar throughout (pyarrow): no Python object per clip.
"""

from __future__ import annotations

import json
import os
import re
import shutil
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np
import pyarrow as pa
import pyarrow.compute as pc
import pyarrow.parquet as pq

from tgdp.core.atomic import atomic_path, atomic_write, temp_path
from tgdp.pipeline.clips import CLIP_EVENT_COLUMNS, clip_rows
from tgdp.pipeline.layout import manifest_path, remove_stale_temps
from tgdp.pipeline.status import STATES, clip_states, funnel_from_states, root_temporaries, strictly_increasing
from tgdp.pipeline.validate import METRIC_COLUMNS

__all__ = ["EXPORT_FILES", "PAPER_VALID_PAIRS", "ExportResult", "funnel_markdown", "run_export"]

EXPORT_FILES = ("manifest.parquet", "clip_ids.txt", "dropped.parquet", "funnel.json", "funnel.md")
_VERSION = re.compile(r"v-(\d{6,})")

PAPER_VALID_PAIRS = 1_390_395  # TG-DP: valid AudioSet-2M audio-visual pairs
_EXTRA = ("valid_rule", "window_start_s", "window_rule", "probe_duration_s", "video_codec", "audio_codec")
_BOOL = {"has_video", "has_audio", "is_silent", "is_still", "is_av_offset"}
_EXPORT_TYPES: dict[str, pa.DataType] = {
    **{k: (pa.bool_() if k in _BOOL else pa.int64() if k == "video_frames" else pa.float64()) for k in METRIC_COLUMNS},
    "valid_rule": pa.dictionary(pa.int32(), pa.string()),
    "window_start_s": pa.float64(),
    "window_rule": pa.dictionary(pa.int32(), pa.string()),
    "probe_duration_s": pa.float64(),
    "video_codec": pa.dictionary(pa.int32(), pa.string()),
    "audio_codec": pa.dictionary(pa.int32(), pa.string()),
}
# per-split columns of funnel.md; `sharded` is a part of `valid`
_COLS = ("valid", "sharded", "dropped", "not_validated", "gone", "fetch_pending", "never_tried")


@dataclass
class ExportResult:
    """Counts of one export; `funnel` is what funnel.json holds; `out` is where it was written."""

    valid: int = 0
    funnel: dict[str, Any] = field(default_factory=dict)
    paper_line: str | None = None
    out: Path | None = None


def _by_split(split: pa.Array, state: np.ndarray) -> dict[str, dict[str, int]]:
    """{split: {column of _COLS: clips}} from the per-clip states."""
    enc = split.dictionary_encode()
    names = enc.dictionary.to_pylist()
    codes = enc.indices.to_numpy(zero_copy_only=False)
    grid = np.bincount(codes.astype(np.int64) * len(STATES) + state, minlength=len(names) * len(STATES))
    grid = grid.reshape(len(names), len(STATES))
    s = {name: i for i, name in enumerate(STATES)}
    out = {}
    for k, name in enumerate(names):
        row = grid[k]
        out[name] = {
            "valid": int(row[s["valid"]] + row[s["sharded"]]),
            "sharded": int(row[s["sharded"]]),
            "dropped": int(row[s["dropped"]]),
            "not_validated": int(row[s["not_validated"]]),
            "gone": int(row[s["gone"]]),
            "fetch_pending": int(sum(row[s[x]] for x in ("pending", "backoff", "gave_up", "file_missing"))),
            "never_tried": int(row[s["never_tried"]]),
        }
    return dict(sorted(out.items()))


def run_export(root: Path, out: Path, max_attempts: int | None = 5, progress: bool = False) -> ExportResult:
    """Write the filtered manifest, the id list and the funnel for ROOT into `out`."""
    root, out = Path(root), Path(out)
    cs = clip_states(
        root,
        max_attempts,
        manifest_columns=("clip_id", "split", "source_file"),
        # one read of the event logs for the states, the metrics and dropped.parquet's details
        extra_columns={**CLIP_EVENT_COLUMNS, "validate": {**CLIP_EVENT_COLUMNS["validate"], **_EXPORT_TYPES}},
        progress=progress,
        sha_type=pa.string(),  # the whole sha256 goes into the exported manifest
    )
    funnel = funnel_from_states(cs)
    funnel["temporaries"] = root_temporaries(root)  # as status reports it
    valid_mask = cs.mask("valid", "sharded")
    rules: dict[str, int] = {}
    if cs.validate is not None:
        settled = cs.mask("valid", "sharded", "dropped")
        vc = pc.value_counts(cs.validate.column("valid_rule").cast(pa.string()).filter(pa.array(settled)))
        rules = {str(r["values"]): int(r["counts"]) for r in vc.to_pylist()}
    funnel["valid_rules"] = rules
    funnel["by_split"] = _by_split(cs.manifest.column("split").combine_chunks(), cs.state)
    result = ExportResult(valid=int(valid_mask.sum()), funnel=funnel, out=out)
    per_split = funnel["by_split"]
    if "as_unbal_train" in per_split:
        as_train = sum(per_split.get(s, {}).get("valid", 0) for s in ("as_bal_train", "as_unbal_train"))
        unbal = per_split["as_unbal_train"]["valid"]
        result.paper_line = (
            f"AudioSet-2M valid pairs: {as_train:,} (as_bal_train+as_unbal_train; as_unbal_train alone {unbal:,}) "
            f"vs paper {PAPER_VALID_PAIRS:,} ({as_train / PAPER_VALID_PAIRS:.1%})"
        )
        funnel["paper"] = {"valid_pairs": PAPER_VALID_PAIRS, "as_train_valid": as_train, "as_unbal_valid": unbal}
    out.mkdir(parents=True, exist_ok=True)
    remove_stale_temps(out)  # the half-written version folders of killed exports
    version = f"v-{_next_version(out):06d}"
    staging = temp_path(out / version)
    staging.mkdir()
    try:
        _write_valid(root, staging, cs, valid_mask)
        _write_dropped(root, staging / "dropped.parquet", cs, valid_mask)
        atomic_write(staging / "funnel.json", json.dumps(funnel, indent=1, sort_keys=True) + "\n")
        atomic_write(staging / "funnel.md", funnel_markdown(funnel, result.paper_line))
        os.rename(staging, out / version)
    except BaseException:
        shutil.rmtree(staging, ignore_errors=True)
        raise
    _publish(out, version)
    return result


def _next_version(out: Path) -> int:
    found = [int(m.group(1)) for p in out.iterdir() if (m := _VERSION.fullmatch(p.name))]
    return max(found, default=0) + 1


def _replace_link(path: Path, target: str) -> None:
    """Point the symlink `path` at `target` with one rename (a reader sees the old link or the new one)."""
    if path.is_symlink() and os.readlink(path) == target:
        return
    tmp = temp_path(path)
    tmp.unlink(missing_ok=True)
    os.symlink(target, tmp)
    os.replace(tmp, path)


def _publish(out: Path, version: str) -> None:
    """Commit `version`: flip `current` (the one atomic step), make sure the five names link through it (files of
    an export written before versions existed are replaced once), and drop versions older than the previous one."""
    previous = os.readlink(out / "current") if (out / "current").is_symlink() else None
    _replace_link(out / "current", version)
    for name in EXPORT_FILES:
        _replace_link(out / name, f"current/{name}")
    for p in out.iterdir():
        if _VERSION.fullmatch(p.name) and p.name not in (version, previous) and not p.is_symlink():
            shutil.rmtree(p, ignore_errors=True)


def _write_dropped(root: Path, path: Path, cs: Any, valid_mask: np.ndarray) -> None:
    """dropped.parquet: every clip not in manifest.parquet, with its state, stage, reason and detail
    (`tgdp.pipeline.clips`), so the two files together hold every source clip."""

    rows = clip_rows(root, cs=cs).filter(pa.array(~valid_mask))
    with atomic_path(path) as tmp:
        pq.write_table(rows, tmp)


def _extra_columns(cs: Any, idx: pa.Array) -> list[tuple[str, pa.Array]]:
    """Validator metrics, rule, window and codecs of the last validate event, and the fetch sha256 and raw path."""
    cols = []
    for name in (*METRIC_COLUMNS, *_EXTRA):
        t = _EXPORT_TYPES[name]
        col = cs.validate.column(name).take(idx) if cs.validate is not None else pa.nulls(len(idx), t)
        cols.append((name, col.cast(t.value_type) if pa.types.is_dictionary(t) else col))
    cols.append(("fetch_sha256", cs.fetch.column("sha256").take(idx)))
    cols.append(("raw_path", cs.fetch.column("raw_path").take(idx)))
    return cols


def _write_valid(root: Path, out: Path, cs: Any, valid_mask: np.ndarray) -> None:
    """manifest.parquet and clip_ids.txt of the valid clips, sorted by clip id, streamed in batches from
    source.parquet (written sorted by `manifest`), so memory holds one batch of rows, not the filtered manifest."""
    source = pq.ParquetFile(manifest_path(root))
    ids = cs.manifest.column("clip_id")
    ordered = strictly_increasing(ids)
    keep_row = np.zeros(source.metadata.num_rows, dtype=bool)
    keep_row[cs.source_rows[valid_mask]] = True
    clip_of_row = np.full(source.metadata.num_rows, -1, dtype=np.int64)
    clip_of_row[cs.source_rows] = np.arange(len(cs.source_rows))
    schema = pa.schema(
        list(source.schema_arrow)
        + [pa.field(n, t.value_type if pa.types.is_dictionary(t) else t) for n, t in _EXPORT_TYPES.items()]
        + [pa.field("fetch_sha256", pa.string()), pa.field("raw_path", pa.string())]
    )
    # ids are written as they are (one per line, no CSV quoting): hostile ids with quotes or commas survive byte
    # for byte; a batch's ids are joined at once. Both files are committed together, the manifest first.
    with (
        atomic_path(out / "clip_ids.txt") as tmp_i,
        atomic_path(out / "manifest.parquet") as tmp_m,
        pq.ParquetWriter(tmp_m, schema) as writer,
        open(tmp_i, "w", encoding="utf-8", newline="\n") as ids_out,
    ):
        if not ordered:  # a hand-made, unsorted manifest (small): sort in memory
            idx = pa.array(np.flatnonzero(valid_mask))
            table = source.read().take(pa.array(cs.source_rows)).take(idx)
            for name, col in _extra_columns(cs, idx):
                table = table.append_column(name, col)
            batches = [table.sort_by("clip_id")]
        else:
            batches = _valid_batches(cs, source, keep_row, clip_of_row)
        from tqdm import tqdm

        with tqdm(total=int(valid_mask.sum()), unit="clip", desc="writing", leave=False, disable=None) as bar:
            for table in batches:
                table = table.cast(schema)
                writer.write_table(table)
                ids_out.writelines(f"{cid}\n" for cid in table.column("clip_id").to_pylist())
                bar.update(table.num_rows)


def _valid_batches(cs: Any, source: pq.ParquetFile, keep_row: np.ndarray, clip_of_row: np.ndarray) -> Any:
    """The valid rows of source.parquet with their extra columns, one batch of the file at a time."""
    start = 0
    for batch in source.iter_batches(batch_size=1 << 16):
        rows = np.flatnonzero(keep_row[start : start + batch.num_rows])
        clip_idx = pa.array(clip_of_row[start + rows])
        start += batch.num_rows
        if rows.size:
            table = pa.Table.from_batches([batch]).take(pa.array(rows))
            for name, col in _extra_columns(cs, clip_idx):
                table = table.append_column(name, col)
            yield table


def funnel_markdown(funnel: dict[str, Any], paper_line: str | None = None) -> str:
    """The funnel as a Markdown table (overall, then per split)."""
    fe, va, sh = funnel["fetch"], funnel["validate"], funnel["shard"]
    lines = ["# Data funnel", "", "| stage | count |", "|---|---|", f"| source manifest | {funnel['source']:,} |"]
    lines.append(f"| fetched | {fe['fetched']:,} |")
    for reason, n in fe["gone_by_reason"].items():
        lines.append(f"| gone (permanent): {reason} | {n:,} |")
    for reason, n in fe["pending_by_reason"].items():
        lines.append(f"| fetch pending (transient): {reason} | {n:,} |")
    lines.append(f"| never tried | {fe['never_tried']:,} |")
    lines.append(f"| valid | {va['valid']:,} |")
    for reason, n in va["dropped_by_reason"].items():
        lines.append(f"| dropped: {reason} | {n:,} |")
    lines.append(f"| not validated | {va['not_validated']:,} |")
    lines.append(f"| sharded (of valid) | {sh['sharded']:,} |")
    lines.append(f"| not sharded (of valid) | {sh['not_sharded']:,} |")
    lines += ["", "| split | " + " | ".join(_COLS) + " |", "|---|" + "---|" * len(_COLS)]
    for split, c in funnel.get("by_split", {}).items():
        lines.append(f"| {split} | " + " | ".join(f"{c.get(k, 0):,}" for k in _COLS) + " |")
    rules = funnel.get("valid_rules", {})
    lines += ["", "Valid rule(s): " + ("; ".join(f"`{r}` ({n:,})" for r, n in rules.items()) or "none yet")]
    if paper_line:
        lines += ["", paper_line]
    return "\n".join(lines) + "\n"
