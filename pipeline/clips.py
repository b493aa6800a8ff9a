"""Find any clip: each manifest clip's state with the stage, reason and detail behind it, and its files.

`clip_rows(root)` is what `tgdp-data clips ROOT [--state S] [--reason R] [--split S]` prints and what `export`
writes for the clips it leaves out (`dropped.parquet`). The state is `status.clip_states`'s (the funnel's, so the
two always agree); the reason and detail come from the last event of the stage that decided it:

  never_tried                               no event (stage null)
  gone, pending, backoff, gave_up,
  file_missing                              fetch: its reason and `reason_detail` (file_missing: the raw file is gone)
  not_validated, dropped, valid             validate (valid: no reason, unless the last shard attempt failed: shard)
  sharded                                   shard: the store and shard file that hold the clip

Paths are absolute: `raw_path` (the media under ROOT/raw), `store` and `shard_file` (sharded clips); `source_file`
is the manifest's (the list file, or the media file under the `files` dataset's folder).
"""

from __future__ import annotations

from collections.abc import Sequence
from pathlib import Path

import numpy as np
import pyarrow as pa
import pyarrow.compute as pc

from tgdp.pipeline import ledger
from tgdp.pipeline.status import STATES, ClipStates, clip_states

__all__ = ["CLIP_EVENT_COLUMNS", "CLIP_SCHEMA", "clip_rows", "filter_clips"]

CLIP_SCHEMA = pa.schema(
    [
        ("clip_id", pa.string()),
        ("split", pa.string()),
        ("state", pa.string()),
        ("stage", pa.string()),
        ("reason", pa.string()),
        ("detail", pa.string()),
        ("source_file", pa.string()),
        ("raw_path", pa.string()),
        ("store", pa.string()),
        ("shard_file", pa.string()),
    ]
)
# what each stage's last event adds to a clip's row: asked of `clip_states` (`extra_columns`), so the event logs
# are read once for the states and the details together
CLIP_EVENT_COLUMNS: dict[str, dict[str, pa.DataType]] = {
    "fetch": {"reason_detail": pa.string(), "raw_path": pa.string()},
    "validate": {"reason_detail": pa.string()},
    "shard": {
        "reason_detail": pa.string(),
        "store": pa.string(),
        "store_split": pa.string(),
        "shard_file": pa.string(),
    },
}
_FETCH_DECIDES = ("gone", "pending", "backoff", "gave_up", "file_missing")
_VALIDATE_DECIDES = ("not_validated", "dropped", "valid")


def _pick(mask: np.ndarray, new: pa.Array, old: pa.Array) -> pa.Array:
    return pc.if_else(pa.array(mask), new, old)


def _absolute(root: Path, rel: pa.Array) -> pa.Array:
    """ROOT-relative paths made absolute (null stays null)."""
    return pc.binary_join_element_wise(pa.scalar(str(Path(root).resolve())), rel.cast(pa.string()), "/")


def clip_rows(root: Path, max_attempts: int | None = 5, cs: ClipStates | None = None) -> pa.Table:
    """Every manifest clip as one `CLIP_SCHEMA` row, in manifest order (module docstring). `cs`: states already
    computed with the manifest's `source_file` and `CLIP_EVENT_COLUMNS` among their columns (export passes its own)."""
    root = Path(root)
    if cs is None:
        cs = clip_states(
            root, max_attempts, manifest_columns=("clip_id", "split", "source_file"), extra_columns=CLIP_EVENT_COLUMNS
        )
    ids = cs.manifest.column("clip_id").combine_chunks()
    n = len(ids)
    state = np.asarray(STATES, dtype=object)[cs.state]
    null = pa.nulls(n, pa.string())
    by_fetch, by_validate = np.isin(state, _FETCH_DECIDES), np.isin(state, _VALIDATE_DECIDES)
    sharded = state == "sharded"
    fetch = cs.fetch.table if ledger.has_events(root, "fetch") else None
    validate = cs.validate.table if cs.validate is not None else None
    shard = cs.shard.table if cs.shard is not None else None
    stage = np.where(by_fetch, "fetch", np.where(by_validate, "validate", np.where(sharded, "shard", None)))
    detail = null
    if fetch is not None:
        detail = _pick(by_fetch, fetch.column("reason_detail").combine_chunks(), detail)
        detail = _pick(state == "file_missing", pa.repeat(pa.scalar("the raw file is gone"), n), detail)
    if validate is not None:
        detail = _pick(by_validate, validate.column("reason_detail").combine_chunks(), detail)
    store = shard_file = null
    if shard is not None:
        shard_failed = (state == "valid") & ledger.mask(pc.is_valid(cs.reason))
        stage = np.where(shard_failed, "shard", stage)
        detail = _pick(shard_failed, shard.column("reason_detail").combine_chunks(), detail)
        store = _pick(sharded, shard.column("store").combine_chunks(), null)
        parts = [shard.column(c).combine_chunks() for c in ("store", "store_split", "shard_file")]
        shard_file = _pick(sharded, pc.binary_join_element_wise(*parts, "/"), null)  # STORE/<split>/<file>
    raw = _absolute(root, fetch.column("raw_path").combine_chunks()) if fetch is not None else null
    source = cs.manifest.column("source_file") if "source_file" in cs.manifest.column_names else null
    columns = {
        "clip_id": ids,
        "split": cs.manifest.column("split"),
        "state": pa.array(state.tolist(), pa.string()),
        "stage": pa.array(stage.tolist(), pa.string()),
        "reason": cs.reason.cast(pa.string()),
        "detail": detail,
        "source_file": source,
        "raw_path": raw,
        "store": store,
        "shard_file": shard_file,
    }
    return pa.table(columns, schema=CLIP_SCHEMA)


def filter_clips(
    table: pa.Table, states: Sequence[str] = (), reasons: Sequence[str] = (), splits: Sequence[str] = ()
) -> pa.Table:
    """The rows whose state, reason and split are among those given (an empty list: any)."""
    unknown = sorted(set(states) - set(STATES))
    if unknown:
        raise ValueError(f"unknown state {unknown}; states are {', '.join(STATES)}")
    keep = np.ones(table.num_rows, dtype=bool)
    for column, wanted in (("state", states), ("reason", reasons), ("split", splits)):
        if wanted:
            keep &= ledger.mask(pc.is_in(table.column(column), value_set=pa.array(list(wanted), pa.string())))
    return table.filter(pa.array(keep))
