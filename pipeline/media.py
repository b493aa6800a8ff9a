"""ffprobe and one-pass window decoding with ffmpeg (through ffmpeg-python, piped; no intermediate files).

`decode_window` runs ONE ffmpeg process per clip that decodes the target window of every present stream with
errors fatal (`-xerror`), and writes on pipes:
  - audio: first channel only (as CAV-MAE's `sox remix 1`), resampled to 16 kHz, s16le → `pcm` [S] float32;
  - video: every decoded frame is logged (showinfo, no checksums) so frames and their pts are counted without
    converting them; only the T sampled frames pass `select`, then short side → `size` and a centre crop,
    rgb24 → `frames` [T, size, size, 3] uint8.

Frame sampling rule (window-relative times, D = window duration, T frames):
  t_i = (i + 0.5) · D / T, i = 0..T-1; frame i is the FIRST decoded frame with pts ≥ t_i. If the stream ends
  before t_i (a video up to the tolerance shorter than the window), the last selected frame is repeated.
Window times are relative to the container's start time (ffmpeg's default timestamp origin), which is what
`-ss` seeks against.
"""

from __future__ import annotations

import json
import os
import re
import subprocess
import threading
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import ffmpeg
import numpy as np

__all__ = [
    "DecodedClip",
    "MediaError",
    "ProbeInfo",
    "decode_window",
    "ffmpeg_version",
    "probe",
    "sample_times",
]

_ERR_LINE = re.compile(r"\[(error|fatal|panic)\]\s*(.*)")
_SHOWINFO = re.compile(r"\[Parsed_showinfo_(\d+) @ [^\]]+\] \[info\] n:\s*\d+ pts:\s*(-?\d+)")
_TIMEBASE = re.compile(r"\[Parsed_showinfo_(\d+) @ [^\]]+\] \[info\] config in time_base: (\d+)/(\d+)")


class MediaError(Exception):
    """A file that cannot be used; `reason` is a manifest reason code, `detail` the first error line."""

    def __init__(self, reason: str, detail: str = "") -> None:
        super().__init__(f"{reason}: {detail}" if detail else reason)
        self.reason, self.detail = reason, detail[:500]


@dataclass
class ProbeInfo:
    """What ffprobe says about a file (first video and first audio stream)."""

    duration_s: float | None
    format_name: str
    video: dict[str, Any] | None  # codec, width, height, fps, start_time
    audio: dict[str, Any] | None  # codec, sample_rate, channels, start_time


def _float(value: Any) -> float | None:
    try:
        out = float(value)
    except (TypeError, ValueError):
        return None
    return out if np.isfinite(out) else None


def _rate(text: str | None) -> float | None:
    if not text or "/" not in text:
        return _float(text)
    num, den = text.split("/", 1)
    n, d = _float(num), _float(den)
    return n / d if n is not None and d else None  # guards 0/0


def probe(path: Path, timeout: float = 60.0) -> ProbeInfo:
    """ffprobe a file; raises MediaError('unreadable') when it is not media ffprobe can open."""
    path = Path(path)
    if not path.is_file():
        raise MediaError("unreadable", f"no such file: {path.name}")
    if path.stat().st_size == 0:
        raise MediaError("unreadable", "empty file (0 bytes)")
    try:
        info = ffmpeg.probe(str(path), cmd="ffprobe", timeout=timeout, v="error")
    except ffmpeg.Error as exc:
        lines = [x for x in (exc.stderr or b"").decode("utf-8", "replace").splitlines() if x.strip()]
        raise MediaError("unreadable", lines[0] if lines else "ffprobe failed") from None
    except subprocess.TimeoutExpired:
        raise MediaError("unreadable", f"ffprobe timed out after {timeout}s") from None
    except json.JSONDecodeError:
        raise MediaError("unreadable", "ffprobe printed no JSON") from None
    fmt = info.get("format", {})
    video = audio = None
    for stream in info.get("streams", []):
        kind = stream.get("codec_type")
        if kind == "video" and video is None and not stream.get("disposition", {}).get("attached_pic"):
            video = {
                "codec": stream.get("codec_name"),
                "width": stream.get("width"),
                "height": stream.get("height"),
                "fps": _rate(stream.get("avg_frame_rate")) or _rate(stream.get("r_frame_rate")),
                "start_time": _float(stream.get("start_time")),
            }
        elif kind == "audio" and audio is None:
            audio = {
                "codec": stream.get("codec_name"),
                "sample_rate": int(stream.get("sample_rate") or 0),
                "channels": int(stream.get("channels") or 0),
                "start_time": _float(stream.get("start_time")),
            }
    if video is None and audio is None:
        raise MediaError("unreadable", f"no audio or video stream (format {fmt.get('format_name')})")
    return ProbeInfo(_float(fmt.get("duration")), str(fmt.get("format_name", "")), video, audio)


def sample_times(duration_s: float, num_frames: int = 16) -> np.ndarray:
    """Frame sampling targets t_i = (i + 0.5)·D/T, window-relative seconds, [T] float64."""
    return (np.arange(num_frames) + 0.5) * (duration_s / num_frames)


@dataclass
class DecodedClip:
    """One decoded window. Times are window-relative seconds."""

    pcm: np.ndarray | None  # [S] float32 in [-1, 1], 16 kHz mono (first channel)
    frames: np.ndarray | None  # [T, size, size, 3] uint8 RGB
    frame_pts_s: np.ndarray | None  # [T] float32, pts of each sampled frame
    video_pts_s: np.ndarray | None  # [N] float64, pts of every decoded frame in the window
    errors: list[str] = field(default_factory=list)
    returncode: int = 0

    @property
    def first_error(self) -> str:
        return self.errors[0] if self.errors else (f"ffmpeg exited with {self.returncode}" if self.returncode else "")


def _select_expr(duration_s: float, num_frames: int) -> str:
    # ld(0) = index k of the next target; a frame is kept when t ≥ t_k, and k jumps to the first target > t
    # (so a frame covering several targets is kept once). `*0+1` makes the kept value exactly 1 (output 0).
    step = repr(duration_s / num_frames)
    return f"if(gte(t,(ld(0)+0.5)*{step})*lt(ld(0),{num_frames}),st(0,floor(t/{step}-0.5)+1)*0+1,0)"


def _read_all(fd: int, sink: list[bytes]) -> None:
    with os.fdopen(fd, "rb", closefd=True) as fh:
        sink.append(fh.read())


def decode_window(
    path: Path,
    start_s: float,
    duration_s: float,
    *,
    video: bool = True,
    audio: bool = True,
    num_frames: int = 16,
    size: int = 224,
    sample_rate: int = 16000,
    threads: int = 1,
    timeout: float = 300.0,
) -> DecodedClip:
    """Decode [start_s, start_s + duration_s) of `path` once; see the module docstring for what comes back."""
    if not (video or audio):
        raise ValueError("decode_window needs video or audio")
    kwargs: dict[str, Any] = {"t": f"{duration_s:.6f}", "threads": threads}
    if start_s > 0:
        kwargs["ss"] = f"{start_s:.6f}"
    inp = ffmpeg.input(str(path), **kwargs)
    outputs = []
    if video:
        v = (
            inp["v:0"]
            .filter("showinfo", checksum=0)
            .filter("select", _select_expr(duration_s, num_frames))
            .filter("showinfo", checksum=0)
            .filter("setpts", "N")  # the rawvideo muxer rejects the non-monotonic pts some files carry
            .filter("scale", w=f"if(lt(iw,ih),{size},-2)", h=f"if(lt(iw,ih),-2,{size})", flags="bicubic")
            .filter("crop", size, size)
        )
        outputs.append(ffmpeg.output(v, "pipe:1", format="rawvideo", pix_fmt="rgb24", fps_mode="passthrough"))
    audio_r = audio_w = None
    if audio:
        audio_r, audio_w = os.pipe()
        a = inp["a:0"].filter("channelmap", map="0", channel_layout="mono")
        outputs.append(ffmpeg.output(a, f"pipe:{audio_w}", format="s16le", ac=1, ar=sample_rate))
    stream = ffmpeg.merge_outputs(*outputs).global_args(
        "-hide_banner", "-nostdin", "-nostats", "-loglevel", "level+info", "-xerror", "-filter_threads", "1"
    )
    args = stream.compile(cmd="ffmpeg")
    pcm_sink: list[bytes] = []
    err_sink: list[bytes] = []
    proc = subprocess.Popen(
        args,
        stdin=subprocess.DEVNULL,
        stdout=subprocess.PIPE if video else subprocess.DEVNULL,
        stderr=subprocess.PIPE,
        pass_fds=(audio_w,) if audio_w is not None else (),
    )
    readers = []
    if audio_w is not None:
        os.close(audio_w)  # the child holds its copy; ours would keep the pipe open forever
        readers.append(threading.Thread(target=_read_all, args=(audio_r, pcm_sink), daemon=True))
    readers.append(threading.Thread(target=_read_all, args=(os.dup(proc.stderr.fileno()), err_sink), daemon=True))
    proc.stderr.close()
    for t in readers:
        t.start()
    video_bytes = proc.stdout.read() if video else b""
    try:
        proc.wait(timeout=timeout)
    except subprocess.TimeoutExpired:
        proc.kill()
        proc.wait()
        for t in readers:
            t.join()
        return DecodedClip(None, None, None, None, [f"ffmpeg timed out after {timeout}s"], -9)
    finally:
        if video:
            proc.stdout.close()
    for t in readers:
        t.join()
    log = b"".join(err_sink).decode("utf-8", "replace")
    errors = [m.group(2).strip() or line.strip() for line in log.splitlines() if (m := _ERR_LINE.search(line))]

    pcm = None
    if audio:
        raw = b"".join(pcm_sink)
        pcm = np.frombuffer(raw[: len(raw) // 2 * 2], dtype="<i2").astype(np.float32) / 32768.0
    frames = frame_pts = video_pts = None
    if video:
        frames, frame_pts, video_pts = _parse_video(log, video_bytes, duration_s, num_frames, size)
    return DecodedClip(pcm, frames, frame_pts, video_pts, errors, proc.returncode)


def _parse_video(
    log: str, data: bytes, duration_s: float, num_frames: int, size: int
) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    time_base = {int(m.group(1)): int(m.group(2)) / int(m.group(3)) for m in _TIMEBASE.finditer(log)}
    pts: dict[int, list[int]] = {}
    for m in _SHOWINFO.finditer(log):
        pts.setdefault(int(m.group(1)), []).append(int(m.group(2)))
    # Two showinfo instances: the lower-numbered sees every decoded frame, the higher only the selected ones.
    ids = sorted(time_base)
    all_pts = np.asarray(pts.get(ids[0], []), np.float64) * time_base[ids[0]] if ids else np.zeros(0)
    sel_pts = np.asarray(pts.get(ids[-1], []), np.float64) * time_base[ids[-1]] if len(ids) > 1 else np.zeros(0)
    frame_bytes = size * size * 3
    n_sel = min(len(sel_pts), len(data) // frame_bytes)
    selected = np.frombuffer(data[: n_sel * frame_bytes], np.uint8).reshape(n_sel, size, size, 3)
    sel_pts = sel_pts[:n_sel]
    if n_sel == 0:
        return np.zeros((0, size, size, 3), np.uint8), np.zeros(0, np.float32), all_pts
    targets = sample_times(duration_s, num_frames)
    # First selected frame at/after each target (the same rule `select` applied); clamp when the stream ended.
    idx = np.minimum(np.searchsorted(sel_pts, targets - 1e-9, side="left"), n_sel - 1)
    return selected[idx], sel_pts[idx].astype(np.float32), all_pts


_FFMPEG_VERSION: str | None = None


def ffmpeg_version() -> str:
    """`ffmpeg -version` first line's version token (cached)."""
    global _FFMPEG_VERSION
    if _FFMPEG_VERSION is None:
        try:
            out = subprocess.run(["ffmpeg", "-version"], capture_output=True, text=True, timeout=30).stdout
            _FFMPEG_VERSION = out.split()[2] if out.startswith("ffmpeg version") else "unknown"
        except (OSError, subprocess.TimeoutExpired):
            _FFMPEG_VERSION = "unknown"
    return _FFMPEG_VERSION
