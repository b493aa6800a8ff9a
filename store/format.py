"""The store format: `index.json` (`StoreIndex`, `ShardEntry`), the row schema (`store_features`), the JSON text
of every store file, the normalisation constants, the fbank segment rule, the video-id rule and the errors
(docs/STORE.md).

A split (STORE/train, STORE/eval) holds `data-XXXXX-of-NNNNN.arrow` (Arrow IPC stream files in the layout
`datasets.save_to_disk` uses, so `datasets.load_from_disk(dir)` opens it too), `dataset_info.json`, `state.json` and
`index.json` (shards, row counts, sha256, store metadata). `index.json` is read and written only through
`StoreIndex`; its `format` must be `STORE_FORMAT`, anything else is refused with a `StoreFormatError` naming the
file. It is written last: its presence marks a complete split, locally and in a bucket.
"""

from __future__ import annotations

import hashlib
import json
import os
from dataclasses import asdict, dataclass
from typing import Any, Protocol

import numpy as np
import pyarrow as pa
import pyarrow.compute as pc

from tgdp.core.errors import TgdpError
from tgdp.store.fs import Location, location

__all__ = [
    "ASSIGNMENT",
    "INDEX_FILE",
    "STORE_FORMAT",
    "ShardEntry",
    "ShardError",
    "StoreError",
    "StoreFormatError",
    "StoreIndex",
    "StoreMismatchError",
    "fbank_values",
    "rows_digest",
    "segment_start",
    "store_features",
    "store_json",
    "video_id_column",
    "video_id_for",
]

STORE_FORMAT = "tgdp-store/1"  # index.json `format`; bump it when a reader of the old format would misread a store
ASSIGNMENT = "rows sorted by clip_id; contiguous shards closed at shard_bytes of payload"
INDEX_FILE = "index.json"
METRICS_F32 = ("audio_dur_s", "video_dur_s", "av_offset_s", "rms_dbfs", "silent_frac", "still_score")
FLAGS = ("is_silent", "is_still", "is_av_offset")


class StoreError(TgdpError, RuntimeError):
    """A store split cannot be read as its index.json describes it; the message names the shard."""


class StoreMismatchError(TgdpError, ValueError):
    """The store cannot feed this model (missing, wrong segment length, mel bins or frame size); the message says
    how to build a store that fits."""


class StoreFormatError(StoreError):
    """index.json is not an index this code reads (another `format`, or a missing or mistyped field)."""


class ShardError(TgdpError, RuntimeError):
    """The store could not be written; the message names the file and the cause."""


def segment_start(t: int, num_frames: int = 16, target_length: int = 1024, length: int = 416) -> int:
    """First fbank frame of the `length`-frame segment aligned with video frame `t` (docs/STORE.md, Reader).

    Centre round(t·target_length/num_frames), start max(0, centre − length//2), shifted left so that
    start + length ≤ target_length. For the defaults: t 0–3 → 0, 4 → 48, 5 → 112, …, 12 → 560, 13–15 → 608.
    """
    centre = round(t * target_length / num_frames)
    start = max(0, centre - length // 2)
    if start + length > target_length:
        start = max(0, target_length - length)
    return int(start)


def fbank_values(batch: pa.RecordBatch) -> tuple[np.ndarray, np.ndarray]:
    """The `fbank` column of a record batch → (values, starts): values [rows·L·M] float16, every row's [L, M]
    spectrogram back to back (a read-only view of the batch's buffer), and starts [rows], where each row's begin.
    Works whether or not `datasets` registered its Array2D extension type in this process."""
    fb = batch.column("fbank")
    if isinstance(fb, pa.ExtensionArray):
        fb = fb.storage
    inner = fb.flatten()
    values = inner.flatten().to_numpy(zero_copy_only=False)  # no nulls: still a zero-copy view
    outer_off = fb.offsets.to_numpy() - fb.offsets[0].as_py()
    inner_off = inner.offsets.to_numpy() - inner.offsets[0].as_py()
    return values, inner_off[outer_off[:-1]]


class _Shape(Protocol):
    num_frames: int
    target_length: int
    num_mel_bins: int


def store_features(cfg: _Shape) -> Any:
    """`datasets.Features` of a store row for `cfg`'s frame count and fbank shape (imports `datasets`; the writer
    and `datasets.load_from_disk` need its Arrow types)."""
    import datasets

    v = datasets.Value
    return datasets.Features(
        {
            "clip_id": v("string"),
            "video_id": v("string"),
            "dataset": v("string"),
            "split": v("string"),
            "ytid": v("string"),
            "start_s": v("float64"),
            "end_s": v("float64"),
            "labels": datasets.List(v("string")),
            "leak_eval_overlap": v("bool"),
            "source_file": v("string"),
            "source_line": v("int32"),
            "frames_jpeg": datasets.List(v("binary"), length=cfg.num_frames),
            "frame_pts_s": datasets.List(v("float32"), length=cfg.num_frames),
            "fbank": datasets.Array2D((cfg.target_length, cfg.num_mel_bins), "float16"),
            "fbank_frames": v("int32"),
            "window_start_s": v("float64"),
            "video_frames": v("int32"),
            **{k: v("float32") for k in METRICS_F32},
            **{k: v("bool") for k in FLAGS},
            "fetch_sha256": v("string"),
        }
    )


def video_id_for(dataset: str, ytid: str, start_ms: int) -> str:
    """The CAV-MAE `video_id` of a clip (a row's `video_id`, what retrieval lists name): AudioSet (and any other
    dataset) = ytid; VGGSound = `f"{ytid}_{second:06d}"`, second = the clip id's start `start_ms` rounded to the
    nearest whole second, halves to even. VGGSound starts are whole seconds, so its ids are exact; the rule is on
    the clip id's milliseconds so that a video id derived from a clip id equals the stored one."""
    if dataset != "vggsound":
        return ytid
    return f"{ytid}_{round(int(start_ms) / 1000):06d}"


def video_id_column(dataset: str, ytid: pa.Array, start_ms: pa.Array) -> pa.Array:
    """`video_id_for` over columns: ytid (string) and start_ms (int64) -> video_id (string)."""
    if dataset != "vggsound":
        return ytid
    sec = pc.round(pc.divide(start_ms.cast(pa.float64()), 1000.0), round_mode="half_to_even")
    return pc.binary_join_element_wise(ytid, pc.utf8_lpad(sec.cast(pa.int64()).cast(pa.string()), 6, "0"), "_")


def rows_digest(digests: list[str]) -> str:
    """sha256 over the input digests of a run of rows (a staged shard's `digest`, a split's `inputs_sha256`)."""
    return hashlib.sha256("\n".join(digests).encode()).hexdigest()


def store_json(obj: Any) -> str:
    """The text of every JSON file of a store: indent 1, sorted keys, newline-terminated, so identical inputs give
    identical bytes."""
    return json.dumps(obj, indent=1, sort_keys=True) + "\n"


@dataclass(frozen=True)
class ShardEntry:
    """One shard of a split as index.json lists it."""

    file: str
    rows: int
    bytes: int
    sha256: str
    first_clip_id: str
    last_clip_id: str


_INDEX_TYPES = {"split": str, "num_rows": int, "meta": dict, "config": dict, "inputs_sha256": str, "assignment": str}
_SHARD_TYPES = {"file": str, "rows": int, "bytes": int, "sha256": str, "first_clip_id": str, "last_clip_id": str}


@dataclass
class StoreIndex:
    """A split's index.json (docs/STORE.md, "Store layout"), written last: its presence marks a complete split.

    `meta` is the store metadata (fbank, frames, audio, ffmpeg_version; also in the Arrow schema metadata),
    `config` the settings that wrote it (the pipeline's `features.*` and `shard` sections, one flat dict),
    `inputs_sha256` a digest of every row's inputs and the metadata.
    """

    split: str
    num_rows: int
    shards: list[ShardEntry]
    meta: dict[str, Any]
    config: dict[str, Any]
    inputs_sha256: str
    assignment: str = ASSIGNMENT
    format: str = STORE_FORMAT

    def to_dict(self) -> dict[str, Any]:
        return asdict(self)

    def to_json(self) -> str:
        return store_json(self.to_dict())

    @classmethod
    def from_dict(cls, data: Any, source: str | os.PathLike = "index.json") -> StoreIndex:
        """Check `format` first (an unknown one is refused, naming `source`), then every field's type."""
        found = data.get("format") if isinstance(data, dict) else None
        if found != STORE_FORMAT:
            raise StoreFormatError(
                f"{source}: store format {found!r} is not supported (this tgdp reads {STORE_FORMAT!r}); "
                "rebuild the store with `tgdp-data shard`"
            )
        _check_fields(data, {**_INDEX_TYPES, "format": str, "shards": list}, source)
        for k, shard in enumerate(data["shards"]):
            _check_fields(shard, _SHARD_TYPES, f"{source} shards[{k}]")
        fields = {k: data[k] for k in _INDEX_TYPES}
        return cls(**fields, shards=[ShardEntry(**s) for s in data["shards"]])

    @classmethod
    def from_json(cls, text: str, source: str | os.PathLike = "index.json") -> StoreIndex:
        try:
            data = json.loads(text)
        except ValueError as exc:
            raise StoreFormatError(f"{source}: not JSON ({exc}); run `tgdp-data verify`") from exc
        return cls.from_dict(data, source)

    @classmethod
    def read(cls, split: str | os.PathLike | Location) -> StoreIndex:
        """The index of the split at `split` (a directory or URI); FileNotFoundError when there is none."""
        loc = location(split)
        data = loc.read_bytes(INDEX_FILE, missing=f"{loc} is not a store split (no index.json); run `tgdp-data shard`")
        return cls.from_json(data.decode("utf-8"), loc.child(INDEX_FILE))


def _check_fields(data: Any, types: dict[str, type], source: Any) -> None:
    if not isinstance(data, dict):
        raise StoreFormatError(f"{source}: expected a JSON object, found {type(data).__name__}")
    missing = sorted(set(types) - set(data))
    unknown = sorted(set(data) - set(types))
    wrong = [k for k, t in types.items() if k in data and (not isinstance(data[k], t) or isinstance(data[k], bool))]
    if missing or unknown or wrong:
        raise StoreFormatError(f"{source}: malformed index (missing {missing}, unknown {unknown}, mistyped {wrong})")
