"""Fixtures for the tests and benchmarks: real media clips, pipeline ROOTs and stores, and the store reader protocol.

- `make_clip`: one small media file made by ffmpeg from lavfi sources (testsrc2 + sine by default).
- `make_root`: a pipeline ROOT from manifest rows, with given media files registered as fetched through the ledger
  (and optionally marked valid), so a test can start at validate or shard without running fetch.
- `make_corpus`: a directory `tgdp.pipeline.serve.MediaServer` serves, one copy of a clip per video id.
- `make_store`: a small real store, written by the shard stage from `make_clip` clips.
- `StoreLike`: what the train and eval data code reads from a store (`tgdp.store.Store` satisfies it).

Not part of the shipped package: `tests.fixtures`, importable from the repository root without pytest (the
benchmarks use it too). docs/TESTING.md shows how the tests use these.
"""

from __future__ import annotations

import shutil
import subprocess
from collections.abc import Mapping, Sequence
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path
from typing import Any, Protocol, runtime_checkable

import pyarrow as pa
import pyarrow.parquet as pq

from tgdp.pipeline.fetch import fetch_event
from tgdp.pipeline.layout import clip_id_for, manifest_path, raw_path_for
from tgdp.pipeline.ledger import append_events
from tgdp.pipeline.manifest import SOURCE_SCHEMA
from tgdp.store.fs import file_sha256

__all__ = ["StoreLike", "make_clip", "make_corpus", "make_root", "make_store", "manifest_row"]


@runtime_checkable
class StoreLike(Protocol):
    """The reader API the train and eval data code uses (`tgdp.store.Store` and the tests' fakes).

    `meta` holds at least `fbank` (`target_length`, `num_mel_bins`, `mean`, `std`) and `frames` (`n`, `size`);
    `segment` is the [length, num_mel_bins] float32 window aligned with frame t (`tgdp.store.segment_start`).
    """

    meta: dict[str, Any]

    @property
    def clip_ids(self) -> list[str]: ...

    def __len__(self) -> int: ...

    def labels(self, i: int) -> list[str]: ...

    def frame_jpeg(self, i: int, t: int) -> bytes: ...

    def segment(self, i: int, t: int, length: int = 416, normalize: bool = True) -> Any: ...


def make_clip(
    path: str | Path,
    duration: float = 3.0,
    video: bool = True,
    audio: bool = True,
    size: str = "64x64",
    fps: int = 8,
    freq: int = 440,
    sr: int = 16000,
    vcodec: str = "libx264",
    acodec: str = "aac",
    *,
    video_source: str | None = None,
    audio_source: str | None = None,
    channels: int | None = None,
    pix_fmt: str = "yuv420p",
    preset: str | None = "ultrafast",
    output_args: Sequence[str] = (),
    ffmpeg: str = "ffmpeg",
) -> Path:
    """Write one media file at `path` (parents created) and return `path`; the container follows the suffix.

    Video is `testsrc2` (`size`, `fps`), audio a `freq` Hz `sine` at `sr` Hz, both `duration` s long.
    `video_source` / `audio_source` replace them with any lavfi graph (which then sets its own duration, e.g.
    `"color=c=gray:s=64x64:r=8:d=3"`, `"anullsrc=r=16000:cl=mono:d=3"`); `channels` sets `-ac`; `preset` applies to
    libx264 only (None: the encoder's default); `output_args` go before the output path (`-b:v 500k`,
    `-x264-params ...`, colour tags).
    """
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    cmd = [ffmpeg, "-hide_banner", "-loglevel", "error", "-y"]
    if video:
        src = video_source or f"testsrc2=size={size}:rate={fps}:duration={duration}"
        cmd += ["-f", "lavfi", "-i", src]
    if audio:
        src = audio_source or f"sine=frequency={freq}:sample_rate={sr}:duration={duration}"
        cmd += ["-f", "lavfi", "-i", src]
    if video:
        cmd += ["-c:v", vcodec, "-pix_fmt", pix_fmt]
        if vcodec == "libx264" and preset is not None:
            cmd += ["-preset", preset]
    if audio:
        cmd += ["-c:a", acodec]
        if channels is not None:
            cmd += ["-ac", str(channels)]
    cmd += [*output_args, "-shortest", str(path)]
    subprocess.run(cmd, check=True)
    return path


def make_corpus(directory: str | Path, master: str | Path, ytids: Sequence[str]) -> Path:
    """`directory`/videos/<ytid>.<ext>: a copy of `master` per video id, the layout `MediaServer` serves."""
    videos = Path(directory) / "videos"
    videos.mkdir(parents=True, exist_ok=True)
    for ytid in ytids:
        shutil.copyfile(master, videos / f"{ytid}{Path(master).suffix}")
    return Path(directory)


def manifest_row(
    ytid: str,
    start_s: float = 0.0,
    end_s: float = 3.0,
    *,
    dataset: str = "audioset",
    split: str = "as_bal_train",
    labels: Sequence[str] = ("/m/09x0r",),
    source_line: int = 0,
    **columns: Any,
) -> dict[str, Any]:
    """One source-manifest row (`tgdp.pipeline.manifest.SOURCE_SCHEMA`), its clip id from (dataset, ytid, start_s).

    `columns` overrides any other column (`video_id`, `leak_eval_overlap`, `source_file`, even `clip_id`)."""
    row = {
        "clip_id": clip_id_for(dataset, ytid, start_s),
        "video_id": ytid,
        "dataset": dataset,
        "split": split,
        "ytid": ytid,
        "start_s": float(start_s),
        "end_s": float(end_s),
        "labels": list(labels),
        "leak_eval_overlap": False,
        "source_file": "testing",
        "source_line": source_line,
    }
    row.update(columns)
    return row


def _fetch_event(root: Path, clip_id: str, media: Path, fields: Mapping[str, Any]) -> dict[str, Any]:
    """An ok fetch event for `media` copied to the clip's raw path (left in place when it is already there)."""
    dest = raw_path_for(root, clip_id, media.suffix)
    if media.resolve() != dest.resolve():
        dest.parent.mkdir(parents=True, exist_ok=True)
        shutil.copyfile(media, dest)
    event: dict[str, Any] = dict(clip_id=clip_id, status="ok", reason=None, transient=False, attempt=1)
    event.update(raw_path=dest.relative_to(root).as_posix(), file_bytes=dest.stat().st_size, sha256=file_sha256(dest))
    event.update(fields)
    return fetch_event(event)


def make_root(
    root: str | Path,
    rows: Sequence[Mapping[str, Any]],
    *,
    dataset: str = "audioset",
    split: str = "as_bal_train",
    source: str = "fetch",
    section_mode: str | None = None,
    section_start_s: float | None = None,
    validated: bool = False,
    events: Mapping[str, Sequence[Mapping[str, Any]]] | None = None,
) -> Path:
    """A pipeline ROOT at `root`: the source manifest of `rows`, plus fetch (and validate) events; returns `root`.

    Each row needs `ytid`; any other manifest column defaults as in `manifest_row` (with `dataset`, `split` and
    `source_line` = its position from the arguments). Two extra keys are not columns:
    - `media`: an existing file registered as fetched: copied to the clip's raw path (kept if already there) and
      recorded as an ok fetch event with its size and sha256, `source`, `section_mode` and `section_start_s`
      (None: validate finds the window by its padded / whole-file rules);
    - `fetch`: fields that override that row's fetch event (e.g. `{"section_start_s": None}`).
    Rows without `media` stay never tried. `validated=True` records every fetched clip as valid (window at
    start_s − section_start_s) without decoding it, so `run_shard` can follow at once; `events` appends more events
    per stage (`{"fetch": [...], "validate": [...]}`) after those.
    """
    root = Path(root)
    full, fetches, validates = [], [], []
    for i, given in enumerate(rows):
        spec = {k: v for k, v in given.items() if k not in ("media", "fetch")}
        spec.setdefault("dataset", dataset)
        spec.setdefault("split", split)
        spec.setdefault("source_line", i)
        row = manifest_row(**spec)
        full.append(row)
        if given.get("media") is None:
            continue
        fields = {"source": source, "section_mode": section_mode, "section_start_s": section_start_s}
        fields.update(given.get("fetch") or {})
        ev = _fetch_event(root, row["clip_id"], Path(given["media"]), fields)
        fetches.append(ev)
        if validated:
            window = row["start_s"] - (ev["section_start_s"] or 0.0)
            validates.append(
                {"clip_id": row["clip_id"], "status": "ok", "reason": None, "transient": False, "valid": True}
                | {"window_start_s": max(0.0, window), "fetch_sha256": ev["sha256"]}
            )
    out = manifest_path(root)
    out.parent.mkdir(parents=True, exist_ok=True)
    pq.write_table(pa.Table.from_pylist(full, schema=SOURCE_SCHEMA), out)
    append_events(root, "fetch", fetches)
    append_events(root, "validate", validates)
    for stage, more in (events or {}).items():
        append_events(root, stage, more)
    return root


def make_store(
    dest: str | Path,
    n: int = 12,
    *,
    duration: float = 3.0,
    size: str = "128x112",
    fps: int = 8,
    prefix: str = "clip",
    split: str = "synth",
    num_labels: int = 3,
    freq_step: int = 40,
    encoders: int = 1,
    ffmpeg: str = "ffmpeg",
    **shard: Any,
) -> Path:
    """A real store at `dest`/store, written by `tgdp.pipeline.shard.run_shard` from `n` `make_clip` clips.

    The ROOT (`dest`/root) comes from `make_root(validated=True)`: fetch and validate have their own tests. Clip i is
    `audioset:{prefix}{i:03d}:0` in `split` (train unless an eval split name), labelled `/m/class{i % num_labels}`,
    with a `220 + freq_step·i` Hz tone; `encoders` ffmpeg encodes run at once. `shard` sets `ShardConfig` fields and
    `FeatureParams` fields (`features.*`) over the tiny presets' geometry (96 px frames, 64 mel bins, 256-frame
    spectrograms).
    """
    from tgdp.pipeline.features import FeatureParams
    from tgdp.pipeline.shard import ShardConfig, run_shard  # torch and torchaudio: only when a store is made

    dest = Path(dest)
    root = dest / "root"
    ytids = [f"{prefix}{i:03d}" for i in range(n)]
    raws = [raw_path_for(root, clip_id_for("audioset", y, 0.0), "mp4") for y in ytids]

    def encode(i: int) -> Path:
        return make_clip(raws[i], duration=duration, size=size, fps=fps, freq=220 + freq_step * i, ffmpeg=ffmpeg)

    with ThreadPoolExecutor(max(1, encoders)) as pool:
        media = list(pool.map(encode, range(n)))
    rows = [
        {"ytid": y, "end_s": duration, "labels": [f"/m/class{i % num_labels}"], "media": media[i]}
        for i, y in enumerate(ytids)
    ]
    make_root(root, rows, split=split, section_start_s=0.0, validated=True)
    features = {"frame_size": 96, "num_mel_bins": 64, "target_length": 256}
    features.update((k, shard.pop(k)) for k in list(shard) if k in FeatureParams.model_fields)
    run_shard(root, dest / "store", ShardConfig(**shard), features=FeatureParams(**features), backend="serial")
    return dest / "store"
