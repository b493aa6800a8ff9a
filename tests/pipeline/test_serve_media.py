"""Local media server: Range/HEAD semantics, id lookup that never touches paths, and every fault kind."""

from __future__ import annotations

import http.client
import json
import socket
import time
import urllib.error
import urllib.parse
import urllib.request
from pathlib import Path

import pytest

from tgdp.pipeline.serve import FaultSpec, MediaServer, load_faults


@pytest.fixture(scope="module")
def corpus(tmp_path_factory: pytest.TempPathFactory) -> Path:
    d = tmp_path_factory.mktemp("corpus")
    (d / "videos").mkdir()
    (d / "videos" / "abc.mp4").write_bytes(bytes(range(256)) * 400)
    (d / "videos" / "-dash.webm").write_bytes(b"w" * 1000)
    (d / "secret.txt").write_text("outside videos/")
    return d


def _get(url: str, headers: dict[str, str] | None = None, method: str = "GET") -> tuple[int, dict, bytes]:
    req = urllib.request.Request(url, headers=headers or {}, method=method)
    try:
        with urllib.request.urlopen(req, timeout=5) as r:
            return r.status, dict(r.headers), r.read()
    except urllib.error.HTTPError as e:
        return e.code, dict(e.headers), e.read()


def test_serve_range_head_and_types(corpus: Path) -> None:
    data = (corpus / "videos" / "abc.mp4").read_bytes()
    with MediaServer(corpus) as base:
        assert base.startswith("http://127.0.0.1:")
        status, headers, body = _get(base + "/v/abc")
        assert (status, headers["Content-Type"], body) == (200, "video/mp4", data)
        assert headers["Accept-Ranges"] == "bytes"
        status, headers, body = _get(base + "/v/abc", {"Range": "bytes=100-199"})
        assert status == 206 and body == data[100:200]
        assert headers["Content-Range"] == f"bytes 100-199/{len(data)}"
        status, headers, body = _get(base + "/v/abc", {"Range": "bytes=-10"})
        assert status == 206 and body == data[-10:]
        status, headers, body = _get(base + "/v/abc", {"Range": "bytes=500-"})
        assert status == 206 and body == data[500:]
        status, headers, _ = _get(base + "/v/abc", {"Range": f"bytes={len(data)}-"})
        assert status == 416 and headers["Content-Range"] == f"bytes */{len(data)}"
        status, headers, body = _get(base + "/v/abc", method="HEAD")
        assert status == 200 and body == b"" and headers["Content-Length"] == str(len(data))
        status, headers, body = _get(base + "/v/" + urllib.parse.quote("-dash", safe=""))
        assert status == 200 and headers["Content-Type"] == "video/webm" and body == b"w" * 1000


def test_serve_ids_never_become_paths(corpus: Path) -> None:
    with MediaServer(corpus) as base:
        for hostile in ["../secret", "../secret.txt", "..%2Fsecret", "/etc/passwd", "../../etc/passwd", "missing"]:
            status, _, body = _get(base + "/v/" + urllib.parse.quote(hostile, safe=""))
            assert status == 404, hostile
            assert b"outside" not in body
        assert _get(base + "/elsewhere")[0] == 404


def test_serve_binds_loopback_only(corpus: Path) -> None:
    server = MediaServer(corpus)
    server.start()
    try:
        assert server._httpd is not None and server._httpd.server_address[0] == "127.0.0.1"
    finally:
        server.stop()


def test_serve_faults_each_kind(corpus: Path) -> None:
    size = (corpus / "videos" / "abc.mp4").stat().st_size
    faults = {
        "abc": FaultSpec(kind="http", status=429, times=2),
        "-dash": FaultSpec(kind="reset"),
    }
    with MediaServer(corpus, faults=faults) as base:
        assert _get(base + "/v/abc")[0] == 429
        assert _get(base + "/v/abc")[0] == 429
        assert _get(base + "/v/abc")[0] == 200  # "fail N times then succeed"
        with pytest.raises((ConnectionError, urllib.error.URLError, http.client.HTTPException)):
            urllib.request.urlopen(base + "/v/-dash", timeout=5).read()

        port = int(base.rsplit(":", 1)[1])
        # Admin endpoint: replace all faults with a truncation and a slow body.
        body = json.dumps({"replace": True, "faults": {"abc": {"kind": "truncate", "keep_fraction": 0.25}}}).encode()
        req = urllib.request.Request(base + "/_faults", data=body, method="POST")
        with urllib.request.urlopen(req, timeout=5) as r:
            assert json.loads(r.read()) == ["abc"]
        conn = http.client.HTTPConnection("127.0.0.1", port, timeout=5)
        conn.request("GET", "/v/abc")
        resp = conn.getresponse()
        assert resp.getheader("Content-Length") == str(size)
        with pytest.raises(http.client.IncompleteRead) as err:
            resp.read()
        assert len(err.value.partial) == int(size * 0.25)
        conn.close()

        urllib.request.urlopen(
            urllib.request.Request(
                base + "/_faults", data=json.dumps({"abc": {"kind": "slow", "delay_s": 0.4}}).encode(), method="POST"
            ),
            timeout=5,
        ).read()
        t0 = time.monotonic()
        assert _get(base + "/v/abc")[0] == 200
        assert time.monotonic() - t0 >= 0.4
        with pytest.raises((TimeoutError, socket.timeout, urllib.error.URLError)):
            urllib.request.urlopen(base + "/v/abc", timeout=0.1).read()
        # null clears one id; bad specs are a 400, not a crash.
        urllib.request.urlopen(
            urllib.request.Request(base + "/_faults", data=json.dumps({"abc": None}).encode(), method="POST"), timeout=5
        ).read()
        assert _get(base + "/v/abc")[0] == 200
        bad = urllib.request.Request(base + "/_faults", data=b'{"abc": {"kind": "nope"}}', method="POST")
        with pytest.raises(urllib.error.HTTPError) as err:
            urllib.request.urlopen(bad, timeout=5)
        assert err.value.code == 400


def test_serve_faults_from_json_file(tmp_path: Path) -> None:
    path = tmp_path / "faults.json"
    path.write_text(json.dumps({"x": {"kind": "http", "status": 404}, "y": {"kind": "slow", "delay_s": 0.5}}))
    faults = load_faults(path)
    assert faults["x"].status == 404 and faults["y"].delay_s == 0.5
    with pytest.raises(ValueError):
        load_faults({"x": {"kind": "http", "status": 200}})
    with pytest.raises(ValueError):
        load_faults({"x": {"kind": "http", "bogus": 1}})


def test_serve_never_follows_a_link_out_of_its_directory(tmp_path: Path) -> None:
    videos = tmp_path / "corpus" / "videos"
    videos.mkdir(parents=True)
    (videos / "real.mp4").write_bytes(b"r" * 100)
    outside = tmp_path / "private.txt"
    outside.write_text("outside the corpus")
    (videos / "passwd.mp4").symlink_to("/etc/passwd")
    (videos / "private.mp4").symlink_to(outside)
    (videos / "escape").symlink_to(tmp_path)  # a linked folder is not a file: never indexed
    (videos / "alias.mp4").symlink_to(videos / "real.mp4")  # a link that stays inside is served
    with MediaServer(tmp_path / "corpus") as base:
        for ytid in ("passwd", "private"):
            status, _, body = _get(base + "/v/" + ytid)
            assert status == 404 and b"outside" not in body and b"root:" not in body, ytid
        assert _get(base + "/v/alias")[:3:2] == (200, b"r" * 100)
        # a link swapped after the index was built is checked again
        (videos / "real.mp4").unlink()
        (videos / "real.mp4").symlink_to(outside)
        assert _get(base + "/v/real")[0] == 404
