"""`tgdp-data fetch ROOT`: download each manifest clip's padded segment with yt-dlp, resumably, accounting for all.

One attempt per clip per run, each recorded as a `fetch` event (`tgdp.pipeline.ledger`):
- ok: `raw_path` (relative to ROOT), `file_bytes`, `sha256`, `section_mode` ("section": the file starts at source
  time `section_start_s`; "full": the section download failed in ffmpeg and the whole stream was fetched, so
  `section_start_s` is 0), format facts from yt-dlp's info dict, tool versions, `session_id`.
- failed: `reason` from `classify_error` (taxonomy in docs/FETCH.md), `transient`, `reason_detail`
  (first error line, ≤500 chars). A 5xx or connection failure (`RETRY_IN_ATTEMPT`) is first retried inside the
  attempt, `retries` times with a short doubling delay (`retry_backoff_s`, capped at `retry_backoff_max_s`);
  `in_attempt_retries` counts them. Transient failures get `next_attempt_after` (exponential backoff, honoured by later
  runs unless `retry_now`); after `max_attempts` transient failures a clip is `gave_up` (still pending-transient,
  never "gone": raise `fetch.max_attempts` to resume it). Permanent failures are not retried.
- A segment that starts past the media's end is `segment_out_of_range` (permanent): checked against the source's
  duration before downloading when the extractor reports it, else (a direct media link) against the downloaded
  file, probed with ffprobe: the media ends at the section start plus the file's duration (the whole video's
  duration in "full" mode), and a segment starting at or after that end has no media.

Crash safety: yt-dlp writes into `ROOT/tmp/fetch/<run>/<slot>/` (wiped on start, under an exclusive lock on
`ROOT/tmp/fetch.lock`); a finished file is hashed and `os.replace`d into `layout.raw_path_for`, so raw/ never holds a
partial file. Its event is written after the rename: if the process dies in between, the next run downloads the clip
again and replaces the same path, so each clip ends with one file and one final state.

Ids are untrusted: the id is URL-quoted into the URL template and handed to the yt-dlp API (never a command line),
and file names come from `layout.safe_name`. The cookie file is passed to yt-dlp only (`cookiefile`): it is never
logged, copied, or written into events or summaries.
"""

from __future__ import annotations

import functools
import math
import re
import shutil
import subprocess
import threading
import time
import urllib.parse
import uuid
from collections import Counter
from collections.abc import Iterator, Mapping
from dataclasses import dataclass, field
from datetime import datetime, timedelta, timezone
from pathlib import Path
from typing import Any, Literal

import numpy as np
import pyarrow as pa
import pyarrow.compute as pc
from pydantic import Field, field_validator

from tgdp.config import StrictConfig
from tgdp.core.lock import RunLock
from tgdp.pipeline import ledger
from tgdp.pipeline.layout import place_raw, raw_target
from tgdp.pipeline.media import MediaError, probe
from tgdp.pipeline.parallel import run_sessions
from tgdp.store.fs import file_sha256

__all__ = [
    "DEFAULT_FORMAT",
    "DEFAULT_URL_TEMPLATE",
    "EVENT_COLUMNS",
    "RETRY_IN_ATTEMPT",
    "FetchConfig",
    "FetchInterrupted",
    "FetchSession",
    "FetchSummary",
    "FetchTask",
    "TokenBucket",
    "build_url",
    "classify_error",
    "fetch",
    "fetch_event",
    "file_sha256",
    "plan_fetch",
    "tool_versions",
]

DEFAULT_URL_TEMPLATE = "https://www.youtube.com/watch?v={ytid}"
DEFAULT_FORMAT = "bv*[height<=360][vcodec^=avc1]+ba[ext=m4a]/bv*[height<=360]+ba/b[height<=360]/bv*+ba/b"

# Ordered: the first match wins. The session rate limit and the bot check say "unavailable"/"sign in" too, so they
# come first; specific permanent causes come before the generic "Video unavailable" / 404; anything unrecognised is
# `tool_error` (transient), so an unknown message can never silently shrink the dataset.
_RULES: list[tuple[str, bool, re.Pattern[str]]] = [
    (r, t, re.compile(p, re.I))
    for r, t, p in [
        (
            "rate_limited_session",
            True,
            r"content isn.t available, try again later|rate.limited by youtube|"
            r"following content is not available on this app",
        ),
        ("bot_check", True, r"confirm you.?re not a bot|confirm you are not a bot"),
        ("private", False, r"private video"),
        (
            "account_terminated",
            False,
            r"account associated with this video has been terminated|account .{0,40}terminated",
        ),
        ("removed_by_user", False, r"removed by the (uploader|user)|video has been removed"),
        ("copyright", False, r"copyright"),
        ("geo_blocked", False, r"not (made this video )?available in your country|geo.?restrict|blocked it in your"),
        ("age_restricted", False, r"confirm your age|age.restricted|inappropriate for some users"),
        ("members_only", False, r"members.only|join this channel"),
        ("live_or_upcoming", False, r"live event will begin|premieres in|this live event|is_live|was_live"),
        ("no_formats", False, r"no video formats found"),
        ("http_429", True, r"HTTP Error 429|too many requests"),
        ("http_403", True, r"HTTP Error 403|forbidden"),
        ("http_5xx", True, r"HTTP Error 5\d\d"),
        ("timeout", True, r"timed? ?out"),
        # The server answered with no body: not a network fault, and not worth retrying within the attempt.
        ("empty_download", True, r"did not get any data blocks|downloaded file is empty|empty output file"),
        (
            "network",
            True,
            r"connection (reset|refused|aborted)|remote end closed|incompleteread|bytes read, \d+ more|"
            r"name or service not known|temporary failure in name resolution|network is unreachable|"
            r"transporterror|\bEOF\b",
        ),
        (
            "sabr_or_format_error",
            True,
            r"sabr|requested format is not available|signature extraction|nsig|po token|n challenge",
        ),
        ("unavailable", False, r"video unavailable|HTTP Error 404|HTTP Error 410|not available|does not exist"),
    ]
]
# A server blip (5xx, a reset or a cut-off body) usually clears within seconds: retried inside the attempt with a short
# exponential backoff (`retries` times) before the clip is parked for the cross-run backoff. 429 and the bot check
# are a verdict on the session, so they keep the long backoff only.
RETRY_IN_ATTEMPT = frozenset({"http_5xx", "network"})


# Every fetch event carries all of these (the ledger infers a flush file's columns from its first row).
EVENT_COLUMNS = (
    "clip_id", "status", "reason", "transient", "reason_detail", "attempt", "session_id", "source",
    "raw_path", "file_bytes", "sha256", "section_mode", "section_start_s", "section_end_s", "source_duration_s",
    "format_id", "vcodec", "acodec", "height", "fps", "yt_dlp_version", "ffmpeg_version", "elapsed_s",
    "next_attempt_after", "gave_up", "in_attempt_retries", "rate_wait_s", "ray_node",
)  # fmt: skip


def fetch_event(fields: Mapping[str, Any]) -> dict[str, Any]:
    """The event-log row of a fetch attempt: exactly `EVENT_COLUMNS`, in order (absent ones None); keys outside them
    (the driver's bookkeeping) are left out. Every writer of fetch events (fetch, import, tests, benchmarks) uses it."""
    return {k: fields.get(k) for k in EVENT_COLUMNS}


def classify_error(message: str) -> tuple[str, bool]:
    """Map a yt-dlp / ffmpeg error message to `(reason, transient)`."""
    for reason, transient, pattern in _RULES:
        if pattern.search(message):
            return reason, transient
    return "tool_error", True


def _detail(message: str, secret: str | None = None) -> str:
    """First meaningful line of an error, ≤500 chars, with the cookie path (if any) scrubbed."""
    text = str(message)
    if secret:
        text = text.replace(secret, "<cookies>")
    lines = [re.sub(r"^(ERROR:\s*)+", "", ln.strip()) for ln in text.splitlines()]
    return next((ln for ln in lines if ln), "")[:500]


def build_url(template: str, ytid: str) -> str:
    """The download URL for `ytid`: URL-quoted (no `/`, `?`, `&`, spaces survive) into `template`."""
    return template.replace("{ytid}", urllib.parse.quote(ytid, safe=""))


@functools.lru_cache(maxsize=1)
def tool_versions() -> tuple[str, str]:
    """(yt-dlp version, ffmpeg version) as recorded on every attempt."""
    from yt_dlp.version import __version__ as ytv

    try:
        out = subprocess.run(["ffmpeg", "-version"], capture_output=True, text=True, timeout=30).stdout
        ffv = out.split()[2] if out.startswith("ffmpeg version") else "unknown"
    except (OSError, subprocess.SubprocessError, IndexError):
        ffv = "missing"
    return ytv, ffv


class FetchConfig(StrictConfig):
    """Settings of one `fetch` run: the `fetch` section of `PipelineConfig` (`--set fetch.<key>=...`)."""

    url_template: str = Field(
        DEFAULT_URL_TEMPLATE, description="media URL with {ytid} (http(s); a local `tgdp-data serve` for tests)"
    )
    pad_s: float = Field(
        2.0, ge=0, description="seconds downloaded before and after the segment (validate assumes the same)"
    )
    format: str = Field(DEFAULT_FORMAT, description="yt-dlp format selector")
    format_sort: list[str] = Field(["res:360", "vcodec:h264", "acodec:aac"], description="yt-dlp format sort order")
    merge_output_format: str = Field("mkv", description="container yt-dlp merges video and audio into")
    sessions: int = Field(1, ge=1, description="download sessions (Ray actors), one per IP/account")
    in_flight: int = Field(2, ge=1, description="clips downloading at once per session (also the rate limit's burst)")
    rate_per_hour: float = Field(300.0, ge=0, description="clip starts per hour per session; 0 = unlimited")
    max_attempts: int = Field(5, ge=1, description="transient failures after which a clip is `gave_up`")
    backoff_s: float = Field(900.0, ge=0, description="first retry delay; doubles per transient failure")
    backoff_max_s: float = Field(86400.0, ge=0, description="cap of the retry delay between runs")
    retry_now: bool = Field(False, description="ignore the backoff of transient failures (the --retry-now flag)")
    socket_timeout: float = Field(30.0, gt=0, description="yt-dlp socket timeout in seconds")
    retries: int = Field(
        3, ge=0, description="yt-dlp retries / fragment_retries / extractor_retries; in-attempt retries of 5xx/reset"
    )
    retry_backoff_s: float = Field(1.0, ge=0, description="first in-attempt retry delay; doubles per retry")
    retry_backoff_max_s: float = Field(8.0, ge=0, description="cap of the in-attempt retry delay")
    duration_tol_s: float = Field(1.0, ge=0, description="a segment may end this far past the video")
    limit: int | None = Field(None, ge=0, description="fetch at most this many pending clips in this run; null = all")
    splits: list[str] = Field([], description="only clips of these manifest splits; empty = all")
    cookies: Path | None = Field(None, exclude=True, repr=False)
    ytdlp_params: dict[str, Any] = Field({}, description="extra yt-dlp options (no cookies or output paths)")
    backend: Literal["ray", "serial"] = Field("ray", description="ray | serial (the --backend flag)")
    address: str | None = Field(None, description="Ray cluster address; null = start a local Ray (the --address flag)")
    workers: int = Field(2, ge=1, description="CPUs of a local Ray (the --workers flag)")
    progress: bool = Field(False, description="progress bar on stderr (the --progress flag)")

    @field_validator("url_template")
    @classmethod
    def _template(cls, v: str) -> str:
        if "{ytid}" not in v or not re.match(r"https?://", v):
            raise ValueError("url_template must be an http(s) URL containing {ytid}")
        return v

    @field_validator("ytdlp_params")
    @classmethod
    def _no_secrets(cls, v: dict[str, Any]) -> dict[str, Any]:
        bad = {"cookiefile", "cookiesfrombrowser", "username", "password", "outtmpl", "paths", "exec"} & set(v)
        if bad:
            raise ValueError(f"ytdlp_params may not set {sorted(bad)} (use --cookies; output paths are fixed)")
        return v


class TokenBucket:
    """Thread-safe token bucket: `rate_per_hour` starts per hour with bursts up to `burst`; 0 = unlimited."""

    def __init__(self, rate_per_hour: float, burst: int = 1) -> None:
        self.rate = rate_per_hour / 3600.0
        self.burst = max(1, burst)
        self.tokens = float(self.burst)
        self.last = time.monotonic()
        self.next_token_s = 0.0  # after the last acquire: seconds until the bucket holds a whole token again
        self._lock = threading.Lock()

    def acquire(self) -> float:
        """Block until a token is available; returns the seconds waited."""
        if self.rate <= 0:
            return 0.0
        waited = 0.0
        while True:
            with self._lock:
                now = time.monotonic()
                self.tokens = min(self.burst, self.tokens + (now - self.last) * self.rate)
                self.last = now
                if self.tokens >= 1:
                    self.tokens -= 1
                    self.next_token_s = (1 - self.tokens) / self.rate if self.tokens < 1 else 0.0
                    return waited
                need = (1 - self.tokens) / self.rate
            time.sleep(need)
            waited += need


class _Log:
    """yt-dlp logger: keeps the last error lines for `reason_detail`, prints nothing."""

    def __init__(self) -> None:
        self.errors: list[str] = []

    def debug(self, msg: str) -> None:
        pass

    info = debug

    def warning(self, msg: str) -> None:
        pass

    def error(self, msg: str) -> None:
        if msg.strip():
            self.errors.append(msg)


@dataclass(frozen=True, slots=True)
class FetchTask:
    """One clip to download (a row of `plan_fetch`): the attempt number this one is, and the transient failures
    before it (handed back in the event for the driver's backoff)."""

    clip_id: str
    ytid: str
    start_s: float
    end_s: float
    attempt: int = 1
    prior_transient: int = 0


class FetchSession:
    """One download session: a rate limiter shared by its slots, one `YoutubeDL` per slot (thread).

    Called with a `FetchTask`, returns the event dict. `cfg` is the run's validated config (without the cookie path,
    which comes as `cookies`).
    """

    def __init__(self, root: str, cfg: FetchConfig, tmp_dir: str, cookies: str | None, session_id: str) -> None:
        self.root = Path(root)
        self.cfg = cfg
        self.tmp = Path(tmp_dir)
        self.cookies = cookies
        self.session_id = session_id
        self.bucket = TokenBucket(self.cfg.rate_per_hour, burst=self.cfg.in_flight)
        self.versions = tool_versions()
        self._local = threading.local()
        self._all: list[Any] = []
        self._lock = threading.Lock()

    def _slot(self) -> tuple[Any, Path, _Log]:
        slot = getattr(self._local, "slot", None)
        if slot is None:
            import yt_dlp

            with self._lock:
                n = len(self._all)
            directory = self.tmp / f"{self.session_id}-{n}-{uuid.uuid4().hex[:6]}"
            directory.mkdir(parents=True, exist_ok=True)
            log = _Log()
            params: dict[str, Any] = {
                "format": self.cfg.format,
                "format_sort": self.cfg.format_sort,
                "merge_output_format": self.cfg.merge_output_format,
                "outtmpl": str(directory / "dl.%(ext)s"),
                "paths": {"home": str(directory), "temp": str(directory)},
                "quiet": True,
                "no_warnings": True,
                "noprogress": True,
                "logger": log,
                "noplaylist": True,
                "retries": self.cfg.retries,
                "fragment_retries": self.cfg.retries,
                "extractor_retries": self.cfg.retries,
                "skip_unavailable_fragments": False,
                "socket_timeout": self.cfg.socket_timeout,
                # ffmpeg treats an input read error (a truncated body) as EOF and exits 0 with a short file; -xerror
                # makes it fail instead, the section-download analogue of --abort-on-unavailable-fragments.
                # -rw_timeout: ffmpeg's network reads otherwise wait forever on a stalled server.
                # +bitexact on the output: the Matroska/WebM muxer otherwise writes a random SegmentUID, so a refetch
                # of the same source would get a new sha256 (and be validated and sharded again).
                "external_downloader_args": {
                    "ffmpeg_i": ["-xerror", "-rw_timeout", str(int(self.cfg.socket_timeout * 1e6))],
                    "ffmpeg_o": ["-fflags", "+bitexact"],
                },
                "force_keyframes_at_cuts": False,
                "cachedir": False,
                "overwrites": True,
                "continuedl": False,
            }
            params.update(self.cfg.ytdlp_params)
            if self.cookies:
                params["cookiefile"] = self.cookies
            ydl = yt_dlp.YoutubeDL(params)
            slot = (ydl, directory, log)
            self._local.slot = slot
            with self._lock:
                self._all.append(ydl)
        return slot

    def close(self) -> None:
        with self._lock:
            for ydl in self._all:
                ydl.close()
            self._all.clear()

    def __call__(self, task: FetchTask) -> dict[str, Any]:
        t0 = time.monotonic()
        waited = self.bucket.acquire()
        next_token_at = time.time() + self.bucket.next_token_s if self.cfg.rate_per_hour > 0 else None
        retried = 0
        while True:
            event = self._attempt(task)
            if event["status"] == "ok" or event["reason"] not in RETRY_IN_ATTEMPT or retried >= self.cfg.retries:
                break
            time.sleep(min(self.cfg.retry_backoff_max_s, self.cfg.retry_backoff_s * 2**retried))
            retried += 1
        event.update(
            in_attempt_retries=retried,
            rate_wait_s=round(waited, 3),
            _next_token_at=next_token_at,  # for the driver's progress note only (not an event column)
            clip_id=task.clip_id,
            attempt=task.attempt,
            prior_transient=task.prior_transient,  # for the driver's backoff; not an event column
            session_id=self.session_id,
            source="fetch",
            yt_dlp_version=self.versions[0],
            ffmpeg_version=self.versions[1],
            elapsed_s=round(time.monotonic() - t0, 3),
        )
        return event

    def _fail(self, message: str, reason: str | None = None, transient: bool | None = None) -> dict[str, Any]:
        if reason is None:
            reason, transient = classify_error(message)
        return {
            "status": "failed",
            "reason": reason,
            "transient": bool(transient),
            "reason_detail": _detail(message, self.cookies),
        }

    def _attempt(self, task: FetchTask) -> dict[str, Any]:
        """One download of the clip's padded section (or of the whole video, when ffmpeg cannot cut the source),
        moved to its raw path: the attempt's event, ok with the file's facts or failed with a classified reason."""
        ydl, directory, log = self._slot()
        for stale in directory.iterdir():
            _remove(stale)
        log.errors.clear()
        start, end = float(task.start_s), float(task.end_s)
        a, b = max(0.0, start - self.cfg.pad_s), end + self.cfg.pad_s
        try:
            info, facts = self._source_info(ydl, build_url(self.cfg.url_template, task.ytid), start, end)
            result, mode = self._download(ydl, directory, info, (a, b), facts)
            out = self._single_output(directory, facts)
            self._check_in_range(out, start, a if mode == "section" else 0.0, facts)
        except _AttemptFailed as failed:
            return failed.event
        final = raw_target(self.root, task.clip_id, out.suffix)
        size, digest = out.stat().st_size, file_sha256(out)
        place_raw(out, final)
        fmt = result if isinstance(result, dict) else {}
        return {
            **facts,
            "status": "ok",
            "reason": None,
            "transient": False,
            "raw_path": final.relative_to(self.root).as_posix(),
            "file_bytes": size,
            "sha256": digest,
            "section_mode": mode,
            "section_start_s": a if mode == "section" else 0.0,
            "section_end_s": b if mode == "section" else None,
            "format_id": _str(fmt.get("format_id")),
            "vcodec": _str(fmt.get("vcodec")),
            "acodec": _str(fmt.get("acodec")),
            "height": _num(fmt.get("height")),
            "fps": _num(fmt.get("fps")),
        }

    def _source_info(self, ydl: Any, url: str, start: float, end: float) -> tuple[dict[str, Any], dict[str, Any]]:
        """The video's metadata (unprocessed) and the facts the event keeps of it (source_duration_s); the attempt
        fails when extraction fails, the video is live or upcoming, or the segment lies outside its duration."""
        from yt_dlp.utils import DownloadError

        try:
            info = ydl.extract_info(url, download=False, process=False)
        except DownloadError as exc:
            raise _AttemptFailed(self._fail(str(exc))) from exc
        except Exception as exc:  # noqa: BLE001 - any extractor crash is one recorded, retryable attempt
            raise _AttemptFailed(self._fail(f"{type(exc).__name__}: {exc}", "tool_error", True)) from exc
        facts = {"source_duration_s": _num(info.get("duration"))}
        live = info.get("live_status") or ("is_live" if info.get("is_live") else None)
        if live in ("is_live", "is_upcoming", "post_live", "was_live") or info.get("was_live"):
            raise _AttemptFailed({**facts, **self._fail(f"live_status={live}", "live_or_upcoming", False)})
        duration = facts["source_duration_s"]
        if duration is not None and (start >= duration or end > duration + self.cfg.duration_tol_s):
            msg = f"segment [{start}, {end}] outside source duration {duration}"
            raise _AttemptFailed({**facts, **self._fail(msg, "segment_out_of_range", False)})
        return info, facts

    def _download(
        self, ydl: Any, directory: Path, info: dict[str, Any], section: tuple[float, float], facts: dict[str, Any]
    ) -> tuple[Any, str]:
        """Download `section` (s) of the video into `directory`: yt-dlp's result and the section mode, "section",
        or "full" when ffmpeg could not cut this source and the whole video was fetched (docs/FETCH.md)."""
        from yt_dlp.utils import DownloadError, download_range_func

        mode = "section"
        ydl.params["download_ranges"] = download_range_func(None, [section])
        try:
            try:
                result = ydl.process_ie_result(info, download=True)
            except DownloadError as exc:
                reason, _ = classify_error(str(exc))
                if reason != "tool_error":
                    raise _AttemptFailed({**facts, **self._fail(str(exc))}) from exc
                # ffmpeg could not cut this source (section_mode "full", docs/FETCH.md): fetch it whole, trim later.
                for stale in directory.iterdir():
                    _remove(stale)
                mode = "full"
                ydl.params.pop("download_ranges", None)
                result = ydl.process_ie_result(info, download=True)
        except _AttemptFailed:
            raise  # already recorded (above): not a tool crash
        except DownloadError as exc:
            raise _AttemptFailed({**facts, "section_mode": mode, **self._fail(str(exc))}) from exc
        except Exception as exc:  # noqa: BLE001
            event = self._fail(f"{type(exc).__name__}: {exc}", "tool_error", True)
            raise _AttemptFailed({**facts, "section_mode": mode, **event}) from exc
        finally:
            ydl.params.pop("download_ranges", None)
        return result, mode

    def _check_in_range(self, out: Path, start: float, offset: float, facts: dict[str, Any]) -> None:
        """Without the source's duration (a direct link), the downloaded file tells where the media ends: at
        `offset` (the section start, 0 for a whole video) plus its duration; a segment starting there or later is
        `segment_out_of_range`. A file ffprobe cannot read is left for validate to judge."""
        if facts.get("source_duration_s") is not None:
            return  # checked before the download (`_source_info`)
        try:
            duration = probe(out).duration_s
        except MediaError:
            return
        if duration is not None and offset + duration <= start:
            msg = f"segment starts at {start} s, the media ends by {offset + duration:.2f} s"
            raise _AttemptFailed({**facts, **self._fail(msg, "segment_out_of_range", False)})

    def _single_output(self, directory: Path, facts: dict[str, Any]) -> Path:
        """The one finished file the download left in `directory` (partial and temporary files aside); the attempt
        fails when there is not exactly one, or it is empty."""
        outputs = [p for p in directory.iterdir() if p.is_file() and not re.search(r"\.(part|ytdl|temp)$", p.name)]
        if len(outputs) != 1:
            names = sorted(p.name for p in directory.iterdir())
            event = self._fail(f"expected one output file, found {names}", "tool_error", True)
            raise _AttemptFailed({**facts, **event})
        if outputs[0].stat().st_size == 0:
            raise _AttemptFailed({**facts, **self._fail("empty output file (0 bytes)", "empty_download", True)})
        return outputs[0]


class _AttemptFailed(Exception):
    """Ends a fetch attempt early; `event` is its failed event."""

    def __init__(self, event: dict[str, Any]) -> None:
        super().__init__(event["reason"])
        self.event = event


def _num(v: Any) -> float | None:
    return float(v) if isinstance(v, (int, float)) else None


def _str(v: Any) -> str | None:
    return str(v) if v is not None else None


def _remove(path: Path) -> None:
    if path.is_dir() and not path.is_symlink():
        shutil.rmtree(path, ignore_errors=True)
    else:
        path.unlink(missing_ok=True)


@dataclass
class FetchSummary:
    """Counts of one run (no secrets: safe to print or write)."""

    selected: int = 0
    attempted: int = 0
    ok: int = 0
    failed: Counter = field(default_factory=Counter)
    skipped: Counter = field(default_factory=Counter)
    seconds: float = 0.0

    def as_dict(self) -> dict[str, Any]:
        return {
            "selected": self.selected,
            "attempted": self.attempted,
            "ok": self.ok,
            "failed": dict(self.failed),
            "skipped": dict(self.skipped),
            "seconds": round(self.seconds, 3),
        }


class FetchInterrupted(KeyboardInterrupt):
    """Ctrl-C / SIGINT during `fetch`: the finished attempts are in the event log; the message says what was kept."""

    def __init__(self, summary: FetchSummary) -> None:
        self.summary = summary
        failed = sum(summary.failed.values())
        super().__init__(
            f"fetch interrupted after {summary.attempted} attempt(s) in {summary.seconds:.0f} s: kept {summary.ok} "
            f"fetched clip(s) and {failed} recorded failure(s) in ROOT/events/fetch; raw/ holds complete files only "
            "(the download in progress is dropped with ROOT/tmp/fetch on the next run); rerun the same command to "
            "resume"
        )

    def __str__(self) -> str:
        return str(self.args[0])


def plan_fetch(root: Path, cfg: FetchConfig, summary: FetchSummary | None = None) -> pa.Table:
    """The clips this run attempts, in manifest order, as a table (clip_id, ytid, start_s, end_s, split, attempt,
    prior_transient); skipped clips are counted in `summary.skipped` by state. Columnar (`status.clip_states`).

    Attempted: never tried, transient failures due now (or backing off, with `retry_now`), and downloads whose raw
    file a later stage still needs but is gone (`file_missing`; valid clips not sharded without raw file or feature
    cache entry). Skipped: done (incl. clips validated or sharded whose media were deleted since), gone, gave_up,
    backoff, `files_dataset` (clips of a `files` manifest still to come in: `tgdp-data import`), and beyond `limit`.
    """
    from tgdp.pipeline.status import FETCHED_STATES, STATES, clip_states

    summary = summary if summary is not None else FetchSummary()
    cols = ["clip_id", "ytid", "start_s", "end_s", "split", "dataset"]
    cs = clip_states(root, cfg.max_attempts, manifest_columns=cols)
    table = cs.manifest
    # a `files` clip is the user's own media, not a YouTube id: it comes in through `import`, never a download
    local = ledger.mask(pc.equal(table.column("dataset"), "files"))
    table = table.drop_columns(["dataset"])
    keep = np.ones(table.num_rows, dtype=bool)
    if cfg.splits:
        unknown = set(cfg.splits) - set(table.column("split").unique().to_pylist())
        if unknown:
            raise ValueError(f"unknown split(s) {sorted(unknown)}")
        keep = np.asarray(pc.is_in(table.column("split"), value_set=pa.array(cfg.splits, pa.string())), dtype=bool)
    state = cs.state
    todo = np.isin(state, [STATES.index(s) for s in ("never_tried", "pending", "file_missing")]) | cs.raw_missing
    if cfg.retry_now:
        todo |= state == STATES.index("backoff")
    skipped = keep & ~todo
    if (keep & todo & local).any():
        summary.skipped["files_dataset"] += int((keep & todo & local).sum())
        todo &= ~local
    names = np.array(["done" if STATES[i] in FETCHED_STATES else STATES[i] for i in range(len(STATES))])
    for name, n in zip(*np.unique(names[state[skipped]], return_counts=True), strict=True):
        summary.skipped[str(name)] += int(n)
    rows = np.flatnonzero(keep & todo)
    if cfg.limit is not None and rows.size > cfg.limit:
        summary.skipped["limit"] += int(rows.size - cfg.limit)
        rows = rows[: cfg.limit]
    idx = pa.array(rows)
    out = table.take(idx)
    out = out.append_column("attempt", pa.array(cs.attempts[rows] + 1))
    return out.append_column("prior_transient", pa.array(cs.transient_failures[rows]))


def _task_records(table: pa.Table) -> Iterator[FetchTask]:
    """`plan_fetch`'s rows as task records, made one batch at a time (a first run over 2 M clips never holds 2 M)."""
    fields = ("clip_id", "ytid", "start_s", "end_s", "attempt", "prior_transient")
    for batch in table.select(list(fields)).to_batches(max_chunksize=4096):
        columns = [batch.column(name).to_pylist() for name in fields]
        yield from (FetchTask(*values) for values in zip(*columns, strict=True))


class _Progress:
    """The fetch bar: done/ok/failed, and "rate-limited, next start in N s" while the rate limit is what it waits for.

    The token buckets live in the sessions (Ray actors), so each event brings back when its session's next token is
    due (`_next_token_at`, wall clock; not recorded); a 0.5-s ticker keeps the note current while sessions sleep."""

    def __init__(self, total: int, cfg: FetchConfig) -> None:
        from tqdm import tqdm

        self.bar = tqdm(total=total, unit="clip", dynamic_ncols=True, smoothing=0.1)
        self.total, self.done, self.ok, self.failed = total, 0, 0, 0
        self.limited = cfg.rate_per_hour > 0
        self.next_at: dict[str, float] = {}
        self._stop = threading.Event()
        self._lock = threading.Lock()
        self._ticker = threading.Thread(target=self._tick, name="tgdp-fetch-progress", daemon=True)
        self._ticker.start()

    def note(self) -> str:
        text = f"ok={self.ok}, failed={self.failed}"
        if self.limited and self.next_at and self.done < self.total:
            wait = min(self.next_at.values()) - time.time()
            if wait > 0.05:
                text += f", rate-limited, next start in {math.ceil(wait)} s"
        return text

    def _tick(self) -> None:
        while not self._stop.wait(0.5):
            with self._lock:
                self.bar.set_postfix_str(self.note(), refresh=True)

    def update(self, ok: bool, session: str | None, next_token_at: float | None) -> None:
        with self._lock:
            if session is not None and next_token_at is not None:
                self.next_at[session] = next_token_at
            self.done += 1
            self.ok += ok
            self.failed += not ok
            self.bar.update(1)
            self.bar.set_postfix_str(self.note(), refresh=False)

    def close(self) -> None:
        self._stop.set()
        self._ticker.join()
        self.bar.close()


def fetch(root: Path, cfg: FetchConfig | None = None) -> FetchSummary:
    """Fetch every selected, not-yet-settled clip of ROOT's source manifest; returns the run's counts."""
    root = Path(root).resolve()
    cfg = cfg or FetchConfig()
    if cfg.cookies is not None and not Path(cfg.cookies).is_file():
        raise FileNotFoundError("the --cookies file does not exist")
    if cfg.cookies is not None:
        _check_cookies(Path(cfg.cookies))
    t0 = time.monotonic()
    summary = FetchSummary()
    lock = RunLock(root / "tmp" / "fetch.lock", what="fetch/import")
    try:
        tmp_root = root / "tmp" / "fetch"
        if tmp_root.exists():
            for stale in tmp_root.iterdir():  # leftovers of a killed run: never visible under raw/
                _remove(stale)
        run_dir = tmp_root / uuid.uuid4().hex[:12]
        run_dir.mkdir(parents=True)
        tasks = plan_fetch(root, cfg, summary)
        summary.selected = tasks.num_rows
        make = functools.partial(
            FetchSession,
            str(root),
            cfg.model_copy(update={"cookies": None}),  # validated once; the cookie path travels on its own
            str(run_dir),
            str(Path(cfg.cookies).resolve()) if cfg.cookies else None,
        )
        bar = _Progress(tasks.num_rows, cfg) if cfg.progress else None
        try:
            with ledger.EventWriter(root, "fetch", flush_every=16, flush_seconds=5.0) as writer:
                results: Iterator[dict[str, Any]] = run_sessions(
                    make,
                    _task_records(tasks),
                    sessions=cfg.sessions,
                    in_flight=cfg.in_flight,
                    backend=cfg.backend,
                    address=cfg.address,
                    num_cpus=cfg.workers,
                    session_prefix=f"{run_dir.name}-s",
                )
                for event in results:
                    if event["status"] == "failed" and event["transient"]:
                        n = int(event.get("prior_transient") or 0) + 1
                        delay = min(cfg.backoff_max_s, cfg.backoff_s * 2 ** (n - 1))
                        event["next_attempt_after"] = datetime.now(timezone.utc) + timedelta(seconds=delay)
                        event["gave_up"] = n >= cfg.max_attempts
                    else:
                        event["gave_up"] = False
                    writer.add(fetch_event(event))
                    summary.attempted += 1
                    if event["status"] == "ok":
                        summary.ok += 1
                    else:
                        summary.failed[event["reason"]] += 1
                    if bar is not None:
                        bar.update(event["status"] == "ok", event.get("session_id"), event.get("_next_token_at"))
        except KeyboardInterrupt:
            # The EventWriter has flushed on the way out: every finished attempt is in the log.
            if bar is not None:
                bar.close()
            summary.seconds = time.monotonic() - t0
            raise FetchInterrupted(summary) from None
        if bar is not None:
            bar.close()
        _remove(run_dir)
        ledger.compact_if_many(root, "fetch")
    finally:
        lock.release()
    summary.seconds = time.monotonic() - t0
    return summary


def _check_cookies(path: Path) -> None:
    """Refuse a malformed cookie file before yt-dlp sees it: yt-dlp echoes bad lines (cookie values) to stderr and
    fails with an error naming the file. Our message names neither the path nor any content."""
    with open(path, encoding="utf-8", errors="replace") as fh:
        for n, line in enumerate(fh, start=1):
            text = line.rstrip("\r\n")
            if text.startswith("#HttpOnly_"):
                text = text[len("#HttpOnly_") :]
            elif not text.strip() or text.startswith("#"):
                continue
            fields = len(text.split("\t"))
            if fields != 7:
                raise ValueError(
                    f"the --cookies file is not a Netscape cookies file: line {n} has {fields} tab-separated fields, "
                    "expected 7"
                )
