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

`probe_decode` does `probe`'s job inside that same process (input dump + the first frame of each stream from a
second, unseeked input), which saves ffprobe's ~0.09 CPU-s of process start-up per clip.
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
    "probe_decode",
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
    start_time: float | None = None  # the container's (the earliest stream start)


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
    return ProbeInfo(
        _float(fmt.get("duration")), str(fmt.get("format_name", "")), video, audio, _float(fmt.get("start_time"))
    )


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


def _esc(arg: str) -> str:
    return arg.replace(",", r"\,")  # filter-graph level escaping of an option value


# ffmpeg names filters Parsed_<name>_<index>, numbered in parse order: `_graph` knows each logging filter's index.
_SI_ALL, _SI_SEL = 0, 2


def _start_filters(video: bool, audio: bool) -> tuple[int | None, int | None]:
    """Indices of the showinfo/ashowinfo that log each stream's first frame in `_graph(..., starts=True)`."""
    base = 6 * video + audio  # the video chain has 6 filters, the audio chain 1
    return (base + 1 if video else None), (base + 2 * video + 1 if audio else None)


def _graph(
    duration_s: float, num_frames: int, size: int, video: bool, audio: bool, starts: bool, trim_s: float | None = None
) -> str:
    chains = []
    v_in, a_in = "[0:V:0]", "[0:a:0]"
    if trim_s is not None:
        v_in, a_in = "[vtrim]", "[atrim]"
    if video:
        # 0 showinfo (every decoded frame), 1 select, 2 showinfo (selected), 3 setpts, 4 scale, 5 crop.
        # `V` skips attached pictures (cover art), as `probe` does.
        chains += [
            f"{v_in}showinfo=checksum=0[v0]",
            f"[v0]select={_esc(_select_expr(duration_s, num_frames))}[v1]",
            "[v1]showinfo=checksum=0[v2]",
            # setpts: the rawvideo muxer rejects the non-monotonic pts some files carry.
            f"[v2]setpts=N/TB,scale=flags=bicubic:w={_esc(f'if(lt(iw,ih),{size},-2)')}:h={_esc(f'if(lt(iw,ih),-2,{size})')}"
            f",crop={size}:{size}[vout]",
        ]
    if audio:
        chains.append(f"{a_in}channelmap=map=0:channel_layout=mono[aout]")
    if starts:
        # The first frame of each stream from an unseeked second input: its pts − the container start is the stream's
        # start_time (what ffprobe reports), so the A/V start offset needs no separate ffprobe process.
        if video:
            chains.append("[1:V:0]trim=end_frame=1,showinfo=checksum=0[vstart]")
        if audio:
            chains.append("[1:a:0]atrim=end_sample=1,ashowinfo[astart]")
    if trim_s is not None:
        # Decoded from the file start: cut the window here and shift it to t=0, as an input seek would. These chains
        # come last so the showinfo filters keep their indices (`_SI_ALL`, `_SI_SEL`, `_start_filters`).
        a, b = f"{trim_s:.6f}", f"{trim_s + duration_s:.6f}"
        if video:
            chains.append(f"[0:V:0]trim=start={a}:end={b},setpts=PTS-{a}/TB[vtrim]")
        if audio:
            chains.append(f"[0:a:0]atrim=start={a}:end={b},asetpts=PTS-{a}/TB[atrim]")
    return ";".join(chains)


def _run(
    path: Path,
    start_s: float,
    duration_s: float,
    *,
    video: bool,
    audio: bool,
    starts: bool,
    num_frames: int,
    size: int,
    sample_rate: int,
    threads: int,
    timeout: float,
    from_start: bool = False,
) -> tuple[DecodedClip, str]:
    """One ffmpeg process over the window: the decoded clip (module docstring) and ffmpeg's log."""
    args, trim_s = _input_args(path, start_s, duration_s, starts, threads, from_start)
    args += ["-filter_complex", _graph(duration_s, num_frames, size, video, audio, starts, trim_s)]
    audio_r = audio_w = None
    if audio:
        audio_r, audio_w = os.pipe()
    args += _output_args(video, audio_w, starts, sample_rate)
    ran = _communicate(args, video, audio_r, audio_w, timeout)
    if ran is None:
        return DecodedClip(None, None, None, None, [f"ffmpeg timed out after {timeout}s"], -9), ""
    video_bytes, raw, log, returncode = ran
    errors = [m.group(2).strip() or line.strip() for line in log.splitlines() if (m := _ERR_LINE.search(line))]
    pcm = None
    if audio:
        pcm = np.frombuffer(raw[: len(raw) // 2 * 2], dtype="<i2").astype(np.float32) / 32768.0
    frames = frame_pts = video_pts = None
    if video:
        frames, frame_pts, video_pts = _parse_video(log, video_bytes, duration_s, num_frames, size)
    return DecodedClip(pcm, frames, frame_pts, video_pts, errors, returncode), log


def _input_args(
    path: Path, start_s: float, duration_s: float, starts: bool, threads: int, from_start: bool
) -> tuple[list[str], float | None]:
    """ffmpeg's global and input options, and where the graph cuts the window (None: the input seek does).

    `starts`: a second, unseeked input of the same file, for the streams' first frames (`_graph(starts=True)`).
    """
    args = ["ffmpeg", "-hide_banner", "-nostdin", "-nostats", "-loglevel", "level+info", "-xerror"]
    args += ["-filter_threads", "1"]
    trim_s = None
    if from_start and start_s > 0:
        # No demuxer seek: decode from the first packet and cut the window in the graph (`_graph(trim_s=...)`).
        trim_s = start_s
        args += ["-t", f"{start_s + duration_s:.6f}"]
    else:
        if start_s > 0:
            args += ["-ss", f"{start_s:.6f}"]
        args += ["-t", f"{duration_s:.6f}"]
    args += ["-threads", str(threads), "-i", str(path)]
    if starts:
        args += ["-threads", "1", "-i", str(path)]
    return args, trim_s


def _output_args(video: bool, audio_fd: int | None, starts: bool, sample_rate: int) -> list[str]:
    """ffmpeg's outputs: RGB frames to stdout, mono s16le PCM to the pipe `audio_fd` (None: no audio), and the
    streams' first frames (`starts`) to null: their showinfo lines in the log are what counts."""
    args = []
    if video:
        args += ["-map", "[vout]", "-f", "rawvideo", "-fps_mode", "passthrough", "-pix_fmt", "rgb24", "pipe:1"]
    if audio_fd is not None:
        args += ["-map", "[aout]", "-f", "s16le", "-ac", "1", "-ar", str(sample_rate), f"pipe:{audio_fd}"]
    if starts:
        for label, present in (("vstart", video), ("astart", audio_fd is not None)):
            if present:
                args += ["-map", f"[{label}]", "-f", "null", "-"]
    return args


def _communicate(
    args: list[str], video: bool, audio_r: int | None, audio_w: int | None, timeout: float
) -> tuple[bytes, bytes, str, int] | None:
    """Run ffmpeg and read its three outputs at once (a full pipe would stall it): (video bytes from stdout, PCM
    bytes from the audio pipe `audio_r`/`audio_w`, the stderr log, the return code); None when it timed out."""
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
        return None
    finally:
        if video:
            proc.stdout.close()
    for t in readers:
        t.join()
    return video_bytes, b"".join(pcm_sink), b"".join(err_sink).decode("utf-8", "replace"), proc.returncode


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
    from_start: bool = False,
) -> DecodedClip:
    """Decode [start_s, start_s + duration_s) of `path` once; see the module docstring for what comes back.

    `from_start`: no seek; decode from the file's first packet and cut the window in the filter graph (slower, for
    files whose seek lands on a frame the decoder cannot start from)."""
    if not (video or audio):
        raise ValueError("decode_window needs video or audio")
    kw = dict(num_frames=num_frames, size=size, sample_rate=sample_rate, threads=threads, timeout=timeout)
    return _run(Path(path), start_s, duration_s, video=video, audio=audio, starts=False, from_start=from_start, **kw)[0]


_INPUT = re.compile(r"Input #0, (.+?), from ")
_DURATION = re.compile(r"Duration: (?:(\d+):(\d+):(\d+(?:\.\d+)?)|N/A)(?:, start: (-?\d+(?:\.\d+)?))?")
_STREAM = re.compile(r"Stream #0:\d+\S*: (Video|Audio|Subtitle|Data|Attachment): (\w+)(.*)")
_NO_STREAM = re.compile(r"Stream specifier '[^']*' in filtergraph description .* matches no streams")
_START = re.compile(r"\[Parsed_a?showinfo_(\d+) @ [^\]]+\] \[info\] n:\s*0 pts:\s*-?\d+ pts_time:\s*(-?[\d.e+-]+)")
_LAYOUTS = {"mono": 1, "stereo": 2, "2.1": 3, "quad": 4, "4.0": 4, "5.0": 5, "5.1": 6, "6.1": 7, "7.1": 8}


def _info_from_log(log: str) -> ProbeInfo | None:
    """ProbeInfo from ffmpeg's own input dump (None when the input did not open); start times are filled later."""
    m = _INPUT.search(log)
    if m is None:
        return None
    head = log[m.start() :]
    cut = head.find("Input #1,")
    head = head if cut < 0 else head[:cut]
    duration = fmt_start = None
    if d := _DURATION.search(head):
        if d.group(1) is not None:
            duration = int(d.group(1)) * 3600 + int(d.group(2)) * 60 + float(d.group(3))
        fmt_start = _float(d.group(4))
    video = audio = None
    for line in head.splitlines():
        st = _STREAM.search(line)
        if st is None:
            continue
        kind, codec, rest = st.groups()
        codec = None if codec == "none" else codec  # ffprobe reports no codec_name for an unknown codec
        if kind == "Video" and video is None and "(attached pic)" not in rest:
            size = re.search(r", (\d+)x(\d+)", rest)
            fps = re.search(r", (\d+(?:\.\d+)?)(k?) fps", rest) or re.search(r", (\d+(?:\.\d+)?)(k?) tbr", rest)
            video = {
                "codec": codec,
                "width": int(size.group(1)) if size else None,
                "height": int(size.group(2)) if size else None,
                "fps": float(fps.group(1)) * (1000 if fps.group(2) else 1) if fps else None,
                "start_time": None,
            }
        elif kind == "Audio" and audio is None:
            sr = re.search(r", (\d+) Hz", rest)
            ch = re.search(r", (\d+) channels", rest) or re.search(r", ([\w.()]+),", rest)
            channels = 0
            if ch is not None:
                channels = int(ch.group(1)) if ch.group(1).isdigit() else _LAYOUTS.get(ch.group(1).split("(")[0], 0)
            audio = {"codec": codec, "sample_rate": int(sr.group(1)) if sr else 0, "channels": channels}
            audio["start_time"] = None
    return ProbeInfo(duration, m.group(1), video, audio, fmt_start)


def probe_decode(
    path: Path,
    start_s: float,
    duration_s: float,
    *,
    num_frames: int = 16,
    size: int = 224,
    sample_rate: int = 16000,
    threads: int = 1,
    timeout: float = 300.0,
) -> tuple[ProbeInfo, DecodedClip]:
    """`probe` + `decode_window` in ONE ffmpeg process (no ffprobe start-up, ~0.09 CPU-s per clip).

    Stream info comes from ffmpeg's input dump (duration to 10 ms), per-stream start times from the first frame of an
    unseeked second input. Raises MediaError('unreadable') when ffmpeg cannot open the file or it has no audio or
    video stream. A file lacking one of the streams costs a second run that decodes only the present one.
    """
    path = Path(path)
    if not path.is_file():
        raise MediaError("unreadable", f"no such file: {path.name}")
    if path.stat().st_size == 0:
        raise MediaError("unreadable", "empty file (0 bytes)")
    kw = dict(num_frames=num_frames, size=size, sample_rate=sample_rate, threads=threads, timeout=timeout)
    decoded, log = _run(path, start_s, duration_s, video=True, audio=True, starts=True, **kw)
    info = _info_from_log(log)
    if info is None:
        raise MediaError("unreadable", decoded.first_error or "ffmpeg could not open the file")
    if info.video is None and info.audio is None:
        raise MediaError("unreadable", f"no audio or video stream (format {info.format_name})")
    if decoded.returncode != 0 and _NO_STREAM.search(log) and (info.video is None or info.audio is None):
        video, audio = info.video is not None, info.audio is not None
        decoded, log = _run(path, start_s, duration_s, video=video, audio=audio, starts=True, **kw)
    else:
        video = audio = True
    # Without -copyts ffmpeg shifts every stream of an unseeked input by the container start time.
    firsts = {int(m.group(1)): _float(m.group(2)) for m in _START.finditer(log)}
    base = info.start_time or 0.0
    for stream, idx in zip((info.video, info.audio), _start_filters(video, audio), strict=True):
        if stream is not None and idx is not None and firsts.get(idx) is not None:
            stream["start_time"] = base + firsts[idx]
    return info, decoded


def _parse_video(
    log: str, data: bytes, duration_s: float, num_frames: int, size: int
) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    time_base = {int(m.group(1)): int(m.group(2)) / int(m.group(3)) for m in _TIMEBASE.finditer(log)}
    pts: dict[int, list[int]] = {}
    for m in _SHOWINFO.finditer(log):
        pts.setdefault(int(m.group(1)), []).append(int(m.group(2)))
    # Two showinfo instances: _SI_ALL sees every decoded frame, _SI_SEL only the selected ones.
    all_pts = np.asarray(pts.get(_SI_ALL, []), np.float64) * time_base.get(_SI_ALL, 0.0)
    sel_pts = np.asarray(pts.get(_SI_SEL, []), np.float64) * time_base.get(_SI_SEL, 0.0)
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
