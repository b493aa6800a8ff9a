"""`tgdp-data validate ROOT`: probe and fully decode each fetched clip's target window, record metrics and a verdict.

Per clip (docs/STORE.md, "tgdp-data validate"), in this order, the first failing check is the drop reason:
  1. the file opens and has an audio or video stream, else `unreadable` (0-byte, garbage, LFS pointer, no moov);
     when the window is known up front (section / import) this is read from the decoding ffmpeg itself
     (`media.probe_decode`, no ffprobe process), else from ffprobe (JSON);
  2. the target window of every present stream decodes with errors fatal (`-xerror`; any error-level log line
     counts), else `corrupt_decode` with the first error line as `reason_detail`;
  3. a video and an audio stream exist, else `no_video_stream` / `no_audio_stream`;
  4. inside the window both streams last ≥ D − tol (D = end − start, tol 0.5 s) and ≥ `min_frames` (16) video
     frames decode, else `too_short`.
An environment error (EACCES/EPERM, ENOSPC, EIO, EMFILE/ENFILE, ENOMEM: raised while opening the file or starting
ffmpeg, or printed by ffmpeg as its first error) says nothing about the clip: the event is `io_error`, transient,
and the next run validates the clip again instead of dropping it for good.
Silence, still video and an audio/video start offset are metrics and flags only (v1 drops nothing on them):
  rms_dbfs, silent_frac (100 ms windows below −60 dBFS; is_silent when ≥ 0.9), still_score (mean |Δ| 0–255 of
  consecutive sampled frames at 32×32 gray; is_still when < 1.0), av_offset_s (ffprobe audio − video start_time;
  is_av_offset when |x| > 0.1 s).

Where the target window lies inside the file (`window_start_s`, recorded in the event with `window_rule`):
  - the fetch event has `section_start_s` → window starts at start_s − section_start_s ("section");
  - else the fetch event says `source == "import"` → the file is the whole video, absolute times ("import");
  - else, if ffprobe's duration exceeds the longest possible padded segment (end + pad − max(0, start − pad)) by
    more than tol, the file must be the whole video → absolute times ("whole_file");
  - else the yt-dlp padded rule: the file holds [max(0, start − 2), end + 2], window at start − max(0, start − 2)
    ("padded").
Which decode decided is recorded as `decode_path`: "start" (the window starts at 0 s, no seek), "seek" (a fast input
seek to the window), or "from_start": after a seeked decode with an error (or fewer than `min_frames` video frames),
the window is decoded again from the file's first packet with the cut made in the filter graph
(`decode_window(from_start=True)`), and that decode gives the verdict. A seek that lands on a frame the decoder
cannot start from (a broken index, x264 intra refresh) then no longer reads as a corrupt or short file.
The verdict is versioned: `valid_rule` names the rule and its thresholds; a clip is re-validated when its fetch
sha256 or the rule changes, or (a valid clip, cache on) when its cached payload was made with other `features.*`
settings (`features_id` in the event), and skipped otherwise (resumable). With nothing to do no worker (no Ray)
starts. Every fetched clip gets exactly one latest event.

One decode per clip: the decode that validates the window already produces the store's inputs (the T sampled frames
at the store size, 16 kHz PCM), so for a valid clip the worker also encodes the store payload (16 JPEGs, fbank;
`features.clip_payload`, the same code `shard` runs) and writes it atomically to the feature cache
ROOT/features/<bb>/<safe_name>.npz, keyed by fetch sha256 + window + `FeatureParams` + valid_rule + ffmpeg version.
`shard` packs cached payloads and decodes only clips without a matching entry. The still score and the audio metrics
come from that same decode. `feature_cache: false` turns the cache off (validate then decodes frames at 64 px).
"""

from __future__ import annotations

import errno
import functools
import hashlib
import json
import math
import os
import re
from collections.abc import Iterator, Mapping
from contextlib import contextmanager
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np
import pyarrow as pa
import pyarrow.compute as pc
from pydantic import Field

from tgdp.config import StrictConfig
from tgdp.core.disk import DISK_FULL_ERRNOS, disk_usage_at
from tgdp.core.errors import TgdpError
from tgdp.core.lock import RunLock
from tgdp.pipeline.features import (
    FeatureParams,
    audio_metrics,
    cache_key,
    clip_payload,
    feature_cache_path,
    still_score,
    write_feature_cache,
)
from tgdp.pipeline.layout import remove_stale_temps, within_root
from tgdp.pipeline.ledger import EventWriter, compact_if_many, latest_table, mask, same_or_both_null
from tgdp.pipeline.media import (
    DecodedClip,
    MediaError,
    ProbeInfo,
    decode_window,
    ffmpeg_version,
    probe,
    probe_decode,
)
from tgdp.pipeline.parallel import map_unordered
from tgdp.pipeline.status import unique_manifest

__all__ = [
    "DROP_REASONS",
    "METRIC_COLUMNS",
    "ValidateConfig",
    "ValidateError",
    "ValidateSummary",
    "ValidateTask",
    "new_event",
    "resolve_window",
    "run_validate",
    "validate_clip",
    "validate_lock",
    "validate_tasks",
]

DROP_REASONS = (
    "unreadable",
    "missing_raw",
    "io_error",
    "corrupt_decode",
    "no_video_stream",
    "no_audio_stream",
    "too_short",
)
# Failures of the machine, not of the file (module docstring): transient `io_error`.
_ENV_ERRNOS = frozenset(
    {errno.EACCES, errno.EPERM, errno.ENOSPC, errno.EIO, errno.EMFILE, errno.ENFILE, errno.ENOMEM, errno.EDQUOT}
)
# The same errors as ffmpeg prints them (av_strerror = strerror). ENOMEM is left out here: a corrupt header can make
# ffmpeg fail an allocation, and that is the file's fault.
_ENV_TEXT = re.compile(
    "|".join(re.escape(os.strerror(e)) for e in (errno.EACCES, errno.EPERM, errno.ENOSPC, errno.EIO, errno.EMFILE))
)
METRIC_COLUMNS = (
    "has_video",
    "has_audio",
    "video_frames",
    "audio_dur_s",
    "video_dur_s",
    "av_offset_s",
    "rms_dbfs",
    "silent_frac",
    "still_score",
    "is_silent",
    "is_still",
    "is_av_offset",
)


class ValidateConfig(StrictConfig):
    """Thresholds of the valid predicate and of the flags; all of them are named in `valid_rule`."""

    duration_tol_s: float = Field(
        0.5, ge=0, description="audio and video may be this much shorter than the segment and stay valid"
    )
    min_frames: int = Field(16, ge=1, description="fewest decoded video frames of a valid clip")
    silence_dbfs: float = Field(-60.0, description="RMS level in dBFS below which an audio window counts as silent")
    silent_window_s: float = Field(0.1, gt=0, description="length of the RMS windows of the silence measure")
    silent_frac_flag: float = Field(
        0.9,
        ge=0,
        le=1,
        description="flag is_silent when at least this fraction of windows is silent (a flag, not a drop)",
    )
    still_eps: float = Field(
        1.0, ge=0, description="flag is_still when the mean frame change (0-255) is below this (a flag, not a drop)"
    )
    av_offset_flag_s: float = Field(
        0.1, ge=0, description="flag a start offset between audio and video larger than this (seconds)"
    )
    num_frames: int = Field(16, ge=2, description="frames sampled for the still score (same rule as the store)")
    ffmpeg_threads: int = Field(1, ge=0, description="ffmpeg decode threads per clip (0 = ffmpeg's choice)")
    timeout_s: float = Field(
        300.0, gt=0, description="seconds before one clip's decode is killed (recorded as a timeout)"
    )
    use_ffprobe: bool = Field(
        False, description="probe with a separate ffprobe even when the window is known (~0.09 CPU-s per clip)"
    )
    feature_cache: bool = Field(True, description="write each valid clip's store payload to ROOT/features for shard")

    def valid_rule(self) -> str:
        return (
            f"v1: readable & decodes(-xerror) & has_video & has_audio"
            f" & audio_dur,video_dur >= dur-{self.duration_tol_s}"
            f" & video_frames >= {self.min_frames}; flags only: silent(frac<{self.silence_dbfs}dBFS"
            f">={self.silent_frac_flag}), still(<{self.still_eps}), av_offset(>{self.av_offset_flag_s}s)"
        )


@dataclass(frozen=True, slots=True)
class ValidateTask:
    """One fetched clip to validate (`validate_tasks`): its file (absolute path), segment, what its fetch event says of
    the file's time origin (`section_start_s`, `source`), the download's sha256, where a valid clip's store payload
    goes (None: no cache), and whether it is validated again only because the feature settings changed."""

    clip_id: str
    path: str
    start_s: float
    end_s: float
    section_start_s: float | None = None
    source: str | None = None
    fetch_sha256: str | None = None
    cache_path: str | None = None
    features_changed: bool = False


def resolve_window(
    start_s: float,
    end_s: float,
    fetch: Mapping[str, Any],
    probe_duration: float | None,
    cfg: ValidateConfig,
    pad_s: float = 2.0,
) -> tuple[float, str]:
    """Where the target window starts inside the fetched file, and which rule said so (module docstring); `pad_s`:
    the padding fetch used (`fetch.pad_s`)."""
    section = fetch.get("section_start_s")
    if section is not None and not (isinstance(section, float) and math.isnan(section)):
        return max(0.0, start_s - float(section)), "section"
    if fetch.get("source") == "import":
        return start_s, "import"
    padded_start = max(0.0, start_s - pad_s)
    if probe_duration is not None and probe_duration > end_s + pad_s - padded_start + cfg.duration_tol_s:
        return start_s, "whole_file"
    return start_s - padded_start, "padded"


def _empty_metrics() -> dict[str, Any]:
    return {k: None for k in METRIC_COLUMNS}


class _Failed(Exception):
    """The first failing check of `validate_clip` (module docstring): the event's reason and detail."""

    def __init__(self, reason: str, detail: str, transient: bool = False) -> None:
        super().__init__(f"{reason}: {detail}")
        self.reason, self.detail, self.transient = reason, detail, transient

    @classmethod
    def machine(cls, detail: str) -> _Failed:
        """An environment error: transient `io_error`, so the next run validates the clip again."""
        return cls("io_error", detail[:500], transient=True)

    @classmethod
    def of(cls, reason: str, detail: str) -> _Failed:
        """`reason`, unless the detail names a fault of the machine (`_ENV_TEXT`): then `machine`."""
        return cls.machine(detail) if _ENV_TEXT.search(detail) else cls(reason, detail)


@contextmanager
def _machine_oserrors() -> Iterator[None]:
    """An OSError of the environment (`_ENV_ERRNOS`) becomes `_Failed.machine`; any other OSError propagates."""
    try:
        yield
    except OSError as exc:
        if exc.errno in _ENV_ERRNOS:
            raise _Failed.machine(f"{errno.errorcode.get(exc.errno, exc.errno)}: {exc.strerror or exc}") from exc
        raise


def validate_clip(
    task: ValidateTask, cfg: ValidateConfig, features: FeatureParams, pad_s: float = 2.0
) -> dict[str, Any]:
    """One clip → one validate event (pure: reads the file; the only write is a valid clip's store payload to
    `task.cache_path`). `features`: the store payload settings (`features.*`); `pad_s`: `fetch.pad_s`."""
    event = new_event(task.clip_id, cfg, task.fetch_sha256)
    cache_path = task.cache_path if cfg.feature_cache else None
    if cache_path:
        Path(cache_path).unlink(missing_ok=True)  # whatever the verdict, an entry from an earlier run is stale
    if cache_path and features.num_frames != cfg.num_frames:
        cache_path = None  # the still score and the store must sample the same frames to share one decode
    path = Path(task.path)
    start_s, end_s = float(task.start_s), float(task.end_s)
    dur = end_s - start_s
    decode_kw = _decode_kwargs(cfg, features if cache_path else None)
    fetch = {"section_start_s": task.section_start_s, "source": task.source}
    try:
        if not path.is_file():
            # The raw file vanished after fetch: the clip needs fetching again, which is not this file's fault.
            raise _Failed("missing_raw", f"raw file not found: {path.name}", transient=True)
        info, decoded, offset, rule = _probe_window(path, start_s, end_s, fetch, (cfg, pad_s), decode_kw)
        _record_probe(event, info, offset, rule)
        decoded = _decode_verdict(event, path, info, offset, dur, decoded, cfg, decode_kw)
        _record_metrics(event, info, decoded, dur, cfg, decode_kw["sample_rate"])
        _check_streams_and_duration(event, info, offset, dur, rule, cfg)
    except _Failed as failed:
        event.update(reason=failed.reason, transient=failed.transient, reason_detail=failed.detail)
        return event
    event.update(status="ok", valid=True)
    if cache_path:
        _cache_payload(Path(cache_path), dur, task.fetch_sha256, event, decoded, features)
    return event


def new_event(clip_id: str, cfg: ValidateConfig, fetch_sha256: str | None = None) -> dict[str, Any]:
    """A failed event with no reason yet and no metrics: the checks fill it in (every validate event's columns)."""
    return {
        "clip_id": clip_id,
        "status": "failed",
        "reason": None,
        "transient": False,
        "reason_detail": None,
        "valid": False,
        "valid_rule": cfg.valid_rule(),
        "fetch_sha256": fetch_sha256,
        "window_start_s": None,
        "window_rule": None,
        "probe_duration_s": None,
        "video_codec": None,
        "audio_codec": None,
        "ffmpeg_version": ffmpeg_version(),
        "feature_cache": None,  # "cached", or why a valid clip's payload was not cached
        "features_id": None,  # the feature settings of the cached payload (`features_id`)
        "decode_path": None,  # which decode gave the verdict: start (window at 0), seek, or from_start (module doc)
        **_empty_metrics(),
    }


def _decode_kwargs(cfg: ValidateConfig, store: FeatureParams | None) -> dict[str, Any]:
    """`decode_window` options: the store's frame size and sample rate when the decode also feeds the cache
    (`store`: its feature settings; None: no cache)."""
    return {
        "num_frames": cfg.num_frames,
        # With the cache these are the store's frames; without it they only feed the still score.
        "size": store.frame_size if store is not None else 64,
        "sample_rate": store.sample_rate if store is not None else 16000,
        "threads": cfg.ffmpeg_threads,
        "timeout": cfg.timeout_s,
    }


def _probe_window(
    path: Path,
    start_s: float,
    end_s: float,
    fetch: Mapping[str, Any],
    settings: tuple[ValidateConfig, float],
    decode_kw: dict[str, Any],
) -> tuple[ProbeInfo, DecodedClip | None, float, str]:
    """Check 1 (readable): the file's streams, the window's offset in it and its rule (`resolve_window`;
    `settings`: the config and `fetch.pad_s`).

    When the window is known up front (section / import) one ffmpeg process also decodes it, and that decode comes
    back; else ffprobe's duration places the window and the decode is None.
    """
    cfg, pad_s = settings
    offset, rule = resolve_window(start_s, end_s, fetch, None, cfg, pad_s)
    try:
        with _machine_oserrors():
            with open(path, "rb") as fh:  # a permission or I/O error here is the machine's, not the clip's
                fh.read(1)
            if rule in ("section", "import") and not cfg.use_ffprobe:
                # The window does not depend on the file's duration: one ffmpeg process probes and decodes.
                info, decoded = probe_decode(path, offset, end_s - start_s, **decode_kw)
                return info, decoded, offset, rule
            info = probe(path, timeout=min(60.0, cfg.timeout_s))
    except MediaError as exc:
        raise _Failed.of(exc.reason, exc.detail) from exc
    offset, rule = resolve_window(start_s, end_s, fetch, info.duration_s, cfg, pad_s)
    return info, None, offset, rule


def _record_probe(event: dict[str, Any], info: ProbeInfo, offset: float, rule: str) -> None:
    """The window, the streams and their codecs, and the A/V start offset into the event."""
    has_v, has_a = info.video is not None, info.audio is not None
    event.update(
        window_start_s=offset,
        window_rule=rule,
        probe_duration_s=info.duration_s,
        video_codec=(info.video or {}).get("codec"),
        audio_codec=(info.audio or {}).get("codec"),
        has_video=has_v,
        has_audio=has_a,
    )
    if has_v and has_a and info.video["start_time"] is not None and info.audio["start_time"] is not None:
        event["av_offset_s"] = info.audio["start_time"] - info.video["start_time"]


def _decode_verdict(
    event: dict[str, Any],
    path: Path,
    info: ProbeInfo,
    offset: float,
    dur: float,
    decoded: DecodedClip | None,
    cfg: ValidateConfig,
    decode_kw: dict[str, Any],
) -> DecodedClip:
    """Check 2 (decodes): the decode of the window that gives the verdict, its `decode_path` in the event.

    `decoded`: the window's decode when `_probe_window` made one. A seeked decode with errors or too few frames is
    redone from the file start (module docstring). `_Failed` (corrupt_decode) when the deciding decode has errors.
    """
    has_v, has_a = info.video is not None, info.audio is not None
    if decoded is None:
        with _machine_oserrors():
            decoded = decode_window(path, offset, dur, video=has_v, audio=has_a, **decode_kw)
    event["decode_path"] = "seek" if offset > 0 else "start"
    few_frames = has_v and (decoded.video_pts_s is None or decoded.video_pts_s.size < cfg.min_frames)
    if offset > 0 and (decoded.errors or decoded.returncode != 0 or few_frames):
        if _ENV_TEXT.search(decoded.first_error):
            raise _Failed.machine(decoded.first_error)
        # A seek can land on a frame the decoder cannot start from (broken index, intra refresh): the errors or the
        # missing frames are then the seek's, not the file's. Decode the window again from the file start (no demuxer
        # seek) and let that decide.
        with _machine_oserrors():
            decoded = decode_window(path, offset, dur, video=has_v, audio=has_a, from_start=True, **decode_kw)
        event["decode_path"] = "from_start"
    if decoded.errors or decoded.returncode != 0:
        raise _Failed.of("corrupt_decode", decoded.first_error)
    return decoded


def _record_metrics(
    event: dict[str, Any], info: ProbeInfo, decoded: DecodedClip, dur: float, cfg: ValidateConfig, sample_rate: int
) -> None:
    """The window's metrics and flags into the event: audio length, level and silence; video frames, length and
    still score; whether the A/V start offset is flagged. Flags only: nothing is dropped here."""
    if decoded.pcm is not None:
        rms, silent, _peak = audio_metrics(decoded.pcm, sample_rate, cfg.silent_window_s, cfg.silence_dbfs)
        event.update(
            audio_dur_s=decoded.pcm.size / float(sample_rate),
            rms_dbfs=rms,
            silent_frac=silent,
            is_silent=silent >= cfg.silent_frac_flag,
        )
    if decoded.video_pts_s is not None:
        pts = decoded.video_pts_s
        event["video_frames"] = int(pts.size)
        if pts.size:
            step = float(pts[-1] - pts[-2]) if pts.size > 1 else 1.0 / float((info.video or {}).get("fps") or 25.0)
            event["video_dur_s"] = float(min(dur, pts[-1] + step) - max(0.0, pts[0]))
        else:
            event["video_dur_s"] = 0.0
        event["still_score"] = still_score(decoded.frames, grid=32)
        event["is_still"] = event["still_score"] < cfg.still_eps
    if event["av_offset_s"] is not None:
        event["is_av_offset"] = abs(event["av_offset_s"]) > cfg.av_offset_flag_s


def _check_streams_and_duration(
    event: dict[str, Any], info: ProbeInfo, offset: float, dur: float, rule: str, cfg: ValidateConfig
) -> None:
    """Checks 3 and 4: `_Failed` when a stream is missing, or the window's audio, video or frame count is short."""
    if info.video is None:
        raise _Failed("no_video_stream", f"streams: audio {info.audio['codec']}")
    if info.audio is None:
        raise _Failed("no_audio_stream", f"streams: video {info.video['codec']}")
    need = dur - cfg.duration_tol_s
    short = []
    if event["audio_dur_s"] < need:
        short.append(f"audio {event['audio_dur_s']:.2f}s")
    if event["video_dur_s"] < need:
        short.append(f"video {event['video_dur_s']:.2f}s")
    if event["video_frames"] < cfg.min_frames:
        short.append(f"{event['video_frames']} frames < {cfg.min_frames}")
    if short:
        detail = f"window [{offset:.2f}, {offset + dur:.2f})s of {info.duration_s}s file ({rule}): " + ", ".join(short)
        raise _Failed("too_short", detail)


_DISK_FULL = "_disk_full"  # a result key (never an event column): the cache write found the disk full


def _cache_payload(
    path: Path, dur: float, fetch_sha256: str | None, event: dict[str, Any], decoded: Any, features: FeatureParams
) -> None:
    """Encode and write the store payload of a valid clip; a failure only costs `shard` a decode, except a full disk,
    which the driver turns into an error (the run stops: every later write would fail too)."""
    payload, reason = clip_payload(decoded.frames, decoded.frame_pts_s, decoded.pcm, features)
    if payload is None:
        event["feature_cache"] = f"not cached: {reason}"
        return
    key = cache_key(fetch_sha256, event["window_start_s"], dur, features, event["valid_rule"], ffmpeg_version())
    try:
        write_feature_cache(path, key, payload)
        event["feature_cache"] = "cached"
        event["features_id"] = features_id(features)
    except OSError as exc:  # the verdict stands, shard falls back to decoding
        event["feature_cache"] = f"not cached: {exc.strerror or exc}"
        if exc.errno in DISK_FULL_ERRNOS:
            event[_DISK_FULL] = str(path)


@dataclass
class ValidateSummary:
    """Accounting of one validate run over the fetched clips."""

    fetched: int = 0
    skipped_up_to_date: int = 0
    validated: int = 0
    features_changed: int = 0  # valid clips validated again because the feature settings changed
    valid: int = 0
    dropped: dict[str, int] = field(default_factory=dict)
    valid_rule: str = ""


def validate_tasks(
    root: Path, cfg: ValidateConfig, force: bool = False, *, features: FeatureParams | None = None
) -> tuple[list[ValidateTask], int, int]:
    """(tasks to run, number of fetched clips, number up to date) for clips whose latest fetch event is ok.

    Up to date: the latest validate event is a non-transient verdict under the current rule on the current download
    (same sha256) and, for a valid clip with the feature cache on, made with the current feature settings
    (`features_id` of `features`, the `features.*` settings; a task validated again for that has `features_changed`).
    Computed in columns (`ledger.latest_table`); a record is made only per task, sorted by clip id.
    """
    root = Path(root)
    features = features if features is not None else FeatureParams()
    table, _, _ = unique_manifest(root, ["start_s", "end_s"])  # a hand-made manifest's repeated ids: the first row
    ids = table.column("clip_id").combine_chunks()
    fe = latest_table(root, "fetch", ids, _FETCH_COLUMNS)
    fetched = mask(pc.and_(pc.equal(fe.column("status"), "ok"), pc.is_valid(fe.column("raw_path"))))
    rule = cfg.valid_rule()
    up = np.zeros(len(ids), dtype=bool)
    refeature = np.zeros(len(ids), dtype=bool)
    if not force:
        va = latest_table(root, "validate", ids, _VALIDATE_COLUMNS)
        vsha, fsha = va.column("fetch_sha256"), fe.column("sha256")
        same = same_or_both_null(vsha, fsha)
        up = va.has_event & same & mask(pc.equal(va.column("valid_rule"), rule)) & ~mask(va.column("transient"))
        refeature = up & _other_features(va, cfg, features)
        up &= ~refeature
    todo = np.flatnonzero(fetched & ~up)
    picked = pa.table(
        {
            "clip_id": ids.take(pa.array(todo)),
            "start_s": table.column("start_s").take(pa.array(todo)),
            "end_s": table.column("end_s").take(pa.array(todo)),
            "raw_path": fe.column("raw_path").take(pa.array(todo)),
            "section_start_s": fe.column("section_start_s").take(pa.array(todo)),
            "source": fe.column("source").take(pa.array(todo)),
            "sha256": fe.column("sha256").take(pa.array(todo)),
            "features_changed": pa.array(refeature[todo]),
        }
    ).sort_by("clip_id")
    tasks = []
    for row in picked.to_pylist():
        clip_id = row["clip_id"]
        path = root / row["raw_path"]
        if not within_root(root, path):
            raise ValueError(f"fetch event for {clip_id!r} points outside ROOT: {row['raw_path']!r}")
        tasks.append(
            ValidateTask(
                clip_id=clip_id,
                path=str(path),
                start_s=row["start_s"],
                end_s=row["end_s"],
                section_start_s=row["section_start_s"],
                source=row["source"],
                fetch_sha256=row["sha256"],
                cache_path=str(feature_cache_path(root, clip_id)) if cfg.feature_cache else None,
                features_changed=row["features_changed"],
            )
        )
    n_fetched = int(fetched.sum())
    return tasks, n_fetched, n_fetched - len(tasks)


_DICT = pa.dictionary(pa.int32(), pa.string())
_FETCH_COLUMNS = {
    "status": _DICT,
    "sha256": pa.string(),
    "raw_path": pa.string(),
    "section_start_s": pa.float64(),
    "source": _DICT,
}
_VALIDATE_COLUMNS = {
    "valid_rule": _DICT,
    "fetch_sha256": pa.string(),
    "transient": pa.bool_(),
    "valid": pa.bool_(),
    "features_id": _DICT,
}


def features_id(params: FeatureParams) -> str:
    """A short digest of the store feature settings a cached payload was made with (recorded as `features_id`)."""
    blob = json.dumps(params.model_dump(), sort_keys=True).encode()
    return hashlib.sha1(blob).hexdigest()[:12]


def _other_features(va: Any, cfg: ValidateConfig, features: FeatureParams) -> np.ndarray:
    """(n,) bool: valid verdicts whose cached store payload was made with other feature settings (`features_id`):
    with the cache on their features are computed again, else shard would decode them all. A verdict without a
    recorded `features_id` (cache off, not cached, or an older validate) is left alone."""
    if not cfg.feature_cache:
        return np.zeros(len(va.has_event), dtype=bool)
    other = pc.not_equal(va.column("features_id").cast(pa.string()), features_id(features))
    return mask(va.column("valid")) & mask(other)


class ValidateError(TgdpError, RuntimeError):
    """An expected validate failure, reported in one line: another run holds ROOT's validate lock, a full disk."""


VALIDATE_LOCK = "validate.lock"


def validate_lock(root: Path | str) -> RunLock:
    """Take ROOT's validate lock (`ROOT/tmp/validate.lock`) for one run; ValidateError names the holder."""
    return RunLock(Path(root) / "tmp" / VALIDATE_LOCK, what="`tgdp-data validate`", error=ValidateError)


def _disk_full_error(path: str) -> ValidateError:
    usage = disk_usage_at(Path(path).parent)
    free = f"{usage.free / 1e6:.1f} MB free" if usage is not None else "free space unknown"
    return ValidateError(
        f"{path}: no space left on device writing the feature cache ({free}); the verdicts so far "
        "are kept: free space (or --set validate.feature_cache=false) and rerun validate"
    )


def run_validate(
    root: Path,
    cfg: ValidateConfig | None = None,
    *,
    features: FeatureParams | None = None,
    pad_s: float = 2.0,
    backend: str = "serial",
    num_workers: int = 2,
    address: str | None = None,
    force: bool = False,
    progress: bool = False,
) -> ValidateSummary:
    """Validate every fetched clip not yet validated under the current rule and fetch sha256; events → ledger.
    `features`: the store payload settings (`features.*`, default `FeatureParams()`), which the feature cache is
    made with; `pad_s`: the padding fetch used (`fetch.pad_s`).

    One run per ROOT (`validate_lock`); it first removes the feature-cache temporaries of killed runs. A full disk
    while writing the cache stops the run with a ValidateError naming the path and the free space; the clip it hit
    gets no event, so the rerun validates and caches it."""
    cfg = cfg or ValidateConfig()
    work = functools.partial(validate_clip, cfg=cfg, features=features or FeatureParams(), pad_s=pad_s)
    lock = validate_lock(root)
    try:
        remove_stale_temps(Path(root) / "features", depth=1)  # no other validate runs: nobody else writes there
        return _run_locked(root, work, backend, num_workers, address, force, progress)
    finally:
        lock.release()


def _run_locked(
    root: Path,
    work: functools.partial[dict[str, Any]],
    backend: str,
    num_workers: int,
    address: str | None,
    force: bool,
    progress: bool,
) -> ValidateSummary:
    """`work`: `validate_clip` with the run's settings bound (validated once, shipped to the workers once)."""
    cfg = work.keywords["cfg"]
    tasks, fetched, up_to_date = validate_tasks(root, cfg, force=force, features=work.keywords["features"])
    summary = ValidateSummary(fetched=fetched, skipped_up_to_date=up_to_date, valid_rule=cfg.valid_rule())
    summary.features_changed = sum(t.features_changed for t in tasks)
    # no task, no Ray: a rerun with nothing to do must not start a cluster
    results: Iterator[dict[str, Any]] = (
        map_unordered(work, tasks, backend=backend, num_workers=num_workers, address=address) if tasks else iter(())
    )
    bar = None
    if progress:
        from tqdm import tqdm

        bar = tqdm(total=len(tasks), unit="clip", desc="validate")
    with EventWriter(root, "validate") as writer:
        for event in results:
            if event.get(_DISK_FULL):
                getattr(results, "close", lambda: None)()  # stop the workers: every later write would fail too
                raise _disk_full_error(event[_DISK_FULL])
            event.pop(_DISK_FULL, None)
            writer.add(event)
            summary.validated += 1
            if event["valid"]:
                summary.valid += 1
            else:
                summary.dropped[event["reason"]] = summary.dropped.get(event["reason"], 0) + 1
            if bar is not None:
                bar.update(1)
    if bar is not None:
        bar.close()
    compact_if_many(root, "validate")  # thousands of small flush files would slow every later read
    return summary
