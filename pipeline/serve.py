"""A local HTTP media server with per-id fault injection, so `fetch` runs for real through yt-dlp offline.

Serves a corpus directory laid out as `DIR/videos/<ytid>.<ext>` at `http://127.0.0.1:PORT/v/<url-quoted ytid>`,
with the right `Content-Type` (yt-dlp's generic extractor treats `video/*` responses as direct media links),
HTTP Range (206 + `Content-Range`, 416) and HEAD. It binds to 127.0.0.1 only.

Files are found through an index built by listing `DIR/videos/` (the id from the URL is only ever a dict key,
never joined into a path), so `../../etc/passwd` or `--exec=...` simply 404. A file is served from its real path,
and only when that path is inside the served directory: a symlink out of it (`videos/x.mp4 -> /etc/passwd`) 404s.

Faults (per ytid, `FaultSpec`): `http` (answer `status`, e.g. 404/410/403/429/500/503), `slow` (send the
headers, then stall `delay_s` seconds before the body), `truncate` (announce the full length, send `keep_fraction`
of it, close), `reset` (close the connection with a TCP RST before answering). `times=N` makes the fault hit only
the first N requests for that id, after which the id is served normally ("fail N times then succeed");
`times=None` means always.
Configure them with `MediaServer(dir, faults={ytid: FaultSpec(...)})`, a JSON file (`{ytid: {kind: ...}}`),
`server.set_faults(...)`, or `POST /_faults` with the same JSON (`{"replace": true, "faults": {...}}` replaces,
otherwise it merges; a `null` value clears one id).

How the generic extractor's failures map onto the fetch taxonomy (`tgdp.pipeline.fetch.classify_error`):
404/410 → `unavailable` (permanent); 403 → `http_403`, 429 → `http_429`, 5xx → `http_5xx`, slow past the socket
timeout → `timeout`, reset/truncated → `network` (all transient).
"""

from __future__ import annotations

import json
import mimetypes
import re
import socket
import struct
import sys
import threading
import time
import urllib.parse
from collections.abc import Mapping
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path
from typing import Any, Literal

from pydantic import Field

from tgdp.config import StrictConfig

__all__ = ["FaultSpec", "MediaServer", "load_faults", "serve_forever"]

_CONTENT_TYPES = {
    ".mp4": "video/mp4",
    ".m4v": "video/mp4",
    ".webm": "video/webm",
    ".mkv": "video/x-matroska",
    ".mov": "video/quicktime",
    ".m4a": "audio/mp4",
    ".wav": "audio/wav",
    ".flac": "audio/flac",
}
_CHUNK = 64 * 1024


class FaultSpec(StrictConfig):
    """One injected fault for one id (see the module docstring for the kinds)."""

    kind: Literal["http", "slow", "truncate", "reset"]
    status: int = Field(500, ge=400, le=599)
    delay_s: float = Field(1.0, ge=0)
    keep_fraction: float = Field(0.5, ge=0, lt=1)
    times: int | None = Field(None, ge=0)


def load_faults(data: Mapping[str, Any] | str | Path) -> dict[str, FaultSpec]:
    """Faults from a mapping `{ytid: {...}}` or a JSON file holding one."""
    if isinstance(data, (str, Path)):
        data = json.loads(Path(data).read_text(encoding="utf-8"))
    if not isinstance(data, Mapping):
        raise ValueError("faults must be a JSON object mapping ytid -> fault spec")
    return {str(k): v if isinstance(v, FaultSpec) else FaultSpec.model_validate(v) for k, v in data.items()}


def _parse_range(header: str | None, size: int) -> tuple[int, int] | None | Literal["bad"]:
    """Inclusive (first, last) for a single `bytes=` range; None for "whole file"; "bad" when unsatisfiable."""
    if not header:
        return None
    m = re.fullmatch(r"\s*bytes\s*=\s*(\d*)\s*-\s*(\d*)\s*", header)
    if not m or (not m.group(1) and not m.group(2)):
        return None  # multi-range or malformed: RFC 9110 allows ignoring Range and sending 200
    if m.group(1):
        first = int(m.group(1))
        last = min(int(m.group(2)), size - 1) if m.group(2) else size - 1
    else:
        n = int(m.group(2))
        first, last = max(0, size - n), size - 1
    if first >= size or first > last:
        return "bad"
    return first, last


class _Handler(BaseHTTPRequestHandler):
    server: _Server
    protocol_version = "HTTP/1.1"

    def log_message(self, format: str, *args: Any) -> None:  # noqa: A002 - stdlib signature
        if self.server.verbose:
            super().log_message(format, *args)

    def do_HEAD(self) -> None:
        self._serve(head=True)

    def do_GET(self) -> None:
        self._serve(head=False)

    def do_POST(self) -> None:
        if urllib.parse.urlsplit(self.path).path != "/_faults":
            self._plain(404, "not found")
            return
        try:
            length = int(self.headers.get("Content-Length") or 0)
            body = json.loads(self.rfile.read(length) or b"{}")
            faults = body.get("faults", body) if isinstance(body, dict) else body
            replace = bool(body.get("replace")) if isinstance(body, dict) and "faults" in body else False
            clear = [k for k, v in faults.items() if v is None]
            parsed = load_faults({k: v for k, v in faults.items() if v is not None})
        except (ValueError, AttributeError, TypeError) as exc:
            self._plain(400, f"bad faults: {exc}")
            return
        self.server.owner.set_faults(parsed, replace=replace, clear=clear)
        self._plain(200, json.dumps(sorted(self.server.owner.faults)))

    def _plain(self, status: int, text: str) -> None:
        data = text.encode()
        self.send_response(status)
        self.send_header("Content-Type", "text/plain; charset=utf-8")
        self.send_header("Content-Length", str(len(data)))
        self.end_headers()
        if self.command != "HEAD":
            self.wfile.write(data)

    def _reset(self) -> None:
        # SO_LINGER with a zero timeout makes close() send RST: the client sees "connection reset by peer".
        self.connection.setsockopt(socket.SOL_SOCKET, socket.SO_LINGER, struct.pack("ii", 1, 0))
        self.close_connection = True
        self.connection.close()

    def _serve(self, head: bool) -> None:
        path = urllib.parse.urlsplit(self.path).path
        if not path.startswith("/v/"):
            self._plain(404, "not found")
            return
        ytid = urllib.parse.unquote(path[3:])
        fault = self.server.owner.take_fault(ytid)
        if fault is not None and fault.kind == "http":
            self._plain(fault.status, f"injected {fault.status}")
            return
        if fault is not None and fault.kind == "reset":
            self._reset()
            return
        file = self.server.owner.lookup(ytid)
        if file is None:
            self._plain(404, "Video unavailable")
            return
        size = file.stat().st_size
        rng = _parse_range(self.headers.get("Range"), size)
        if rng == "bad":
            self.send_response(416)
            self.send_header("Content-Range", f"bytes */{size}")
            self.send_header("Content-Length", "0")
            self.end_headers()
            return
        first, last = rng if rng is not None else (0, size - 1)
        length = last - first + 1
        self.send_response(206 if rng is not None else 200)
        self.send_header("Content-Type", _CONTENT_TYPES.get(file.suffix.lower()) or _guess_type(file))
        self.send_header("Accept-Ranges", "bytes")
        self.send_header("Content-Length", str(length))
        if rng is not None:
            self.send_header("Content-Range", f"bytes {first}-{last}/{size}")
        self.end_headers()
        if head:
            return
        send = length
        if fault is not None and fault.kind == "truncate":
            send = int(length * fault.keep_fraction)
        try:
            if fault is not None and fault.kind == "slow":
                # Headers go out at once, the body stalls: a deterministic per-request latency (and a read timeout
                # in the client once delay_s exceeds its socket timeout).
                self.wfile.flush()
                time.sleep(fault.delay_s)
            with file.open("rb") as fh:
                fh.seek(first)
                left = send
                while left > 0:
                    data = fh.read(min(_CHUNK, left))
                    if not data:
                        break
                    self.wfile.write(data)
                    left -= len(data)
        except (BrokenPipeError, ConnectionResetError):
            return  # the client read what it wanted (yt-dlp's generic probe reads 512 bytes) and hung up
        if send < length:
            self.wfile.flush()
            self.close_connection = True


def _guess_type(file: Path) -> str:
    return mimetypes.guess_type(file.name)[0] or "application/octet-stream"


class _Server(ThreadingHTTPServer):
    daemon_threads = True
    owner: MediaServer
    verbose: bool = False

    def handle_error(self, request: Any, client_address: Any) -> None:
        # Clients hanging up mid-body is normal here (probes, injected resets); anything else is still printed.
        if not isinstance(sys.exc_info()[1], (ConnectionError, TimeoutError)):
            super().handle_error(request, client_address)


class MediaServer:
    """`with MediaServer(corpus_dir, faults={...}) as base_url:` serves `base_url + "/v/<ytid>"` on 127.0.0.1."""

    def __init__(
        self,
        directory: Path,
        faults: Mapping[str, FaultSpec | Mapping[str, Any]] | None = None,
        port: int = 0,
        verbose: bool = False,
    ) -> None:
        self.directory = Path(directory)
        self.videos = self.directory / "videos" if (self.directory / "videos").is_dir() else self.directory
        self.port = port
        self.verbose = verbose
        self.faults: dict[str, FaultSpec] = load_faults(faults or {})
        self.hits: dict[str, int] = {}
        self._lock = threading.Lock()
        self._index: dict[str, Path] = {}
        self._httpd: _Server | None = None
        self._thread: threading.Thread | None = None

    # -- state shared with handler threads --------------------------------------------------------------------
    def set_faults(
        self, faults: Mapping[str, FaultSpec | Mapping[str, Any]], replace: bool = False, clear: list[str] = ()
    ) -> None:
        parsed = load_faults(faults)
        with self._lock:
            if replace:
                self.faults = {}
            self.faults.update(parsed)
            for k in clear:
                self.faults.pop(k, None)

    def take_fault(self, ytid: str) -> FaultSpec | None:
        """The fault that applies to this request for `ytid` (counting it against `times`), or None."""
        with self._lock:
            self.hits[ytid] = self.hits.get(ytid, 0) + 1
            fault = self.faults.get(ytid)
            if fault is None:
                return None
            if fault.times is not None:
                if fault.times <= 0:
                    return None
                self.faults[ytid] = fault.model_copy(update={"times": fault.times - 1})
            return fault

    def lookup(self, ytid: str) -> Path | None:
        """The real path of `ytid`'s file, or None; never a path outside the served directory (checked on every
        request, as a link can change after the index is built)."""
        with self._lock:
            hit = self._index.get(ytid)
            if hit is None or not hit.is_file():
                self._index = {p.stem: p for p in sorted(self.videos.iterdir()) if p.is_file()}
                hit = self._index.get(ytid)
            if hit is None:
                return None
            real = hit.resolve()
            return real if real.is_relative_to(self.videos.resolve()) and real.is_file() else None

    # -- lifecycle --------------------------------------------------------------------------------------------
    @property
    def base_url(self) -> str:
        if self._httpd is None:
            raise RuntimeError("server not started")
        return f"http://127.0.0.1:{self._httpd.server_address[1]}"

    def url_template(self) -> str:
        """The `fetch.url_template` that points at this server."""
        return self.base_url + "/v/{ytid}"

    def start(self) -> str:
        if not self.videos.is_dir():
            raise FileNotFoundError(f"{self.videos} is not a directory")
        self._httpd = _Server(("127.0.0.1", self.port), _Handler)
        self._httpd.owner = self
        self._httpd.verbose = self.verbose
        self._thread = threading.Thread(target=self._httpd.serve_forever, name="tgdp-media-server", daemon=True)
        self._thread.start()
        return self.base_url

    def stop(self) -> None:
        if self._httpd is not None:
            self._httpd.shutdown()
            self._httpd.server_close()
            self._httpd = None

    def __enter__(self) -> str:
        return self.start()

    def __exit__(self, *exc: object) -> None:
        self.stop()


def serve_forever(directory: Path, port: int = 8765, faults: Path | None = None, verbose: bool = True) -> None:
    """Blocking entry point for `tgdp-data serve DIR` (Ctrl-C stops it)."""
    server = MediaServer(directory, faults=load_faults(faults) if faults else None, port=port, verbose=verbose)
    base = server.start()
    print(f"serving {server.videos} at {base}/v/<ytid>  (faults: POST {base}/_faults)", flush=True)
    try:
        while True:
            time.sleep(3600)
    except KeyboardInterrupt:
        pass
    finally:
        server.stop()
