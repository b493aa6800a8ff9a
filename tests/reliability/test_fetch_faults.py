"""fetch through the local media server and real yt-dlp: every fault kind, recovery, hostile ids, cookies, import,
the attempt cap, and the status funnel."""

from __future__ import annotations

import json
import shutil
import urllib.request
from collections.abc import Callable
from pathlib import Path

import pytest
from typer.testing import CliRunner

from tests.fixtures import make_corpus, make_root
from tgdp.pipeline import ledger
from tgdp.pipeline.cli import app
from tgdp.pipeline.fetch import FetchConfig, classify_error, fetch
from tgdp.pipeline.importer import import_clips
from tgdp.pipeline.layout import clip_id_for, within_root
from tgdp.pipeline.serve import FaultSpec, MediaServer
from tgdp.pipeline.status import funnel

pytestmark = pytest.mark.reliability


def write_manifest(
    root: Path,
    ytids: list[str],
    start_s: float = 1.0,
    end_s: float = 3.0,
    dataset: str = "synth",
    split: str = "synth",
) -> list[str]:
    """A source manifest of `ytids` (one segment each) written straight to ROOT; returns the clip ids."""
    make_root(
        root,
        [{"ytid": y, "start_s": start_s, "end_s": end_s, "labels": ["/m/0"]} for y in ytids],
        dataset=dataset,
        split=split,
    )
    return [clip_id_for(dataset, y, start_s) for y in ytids]


@pytest.fixture(scope="module")
def master_clip(tmp_path_factory: pytest.TempPathFactory, make_clip: Callable[..., Path]) -> Path:
    return make_clip(tmp_path_factory.mktemp("media") / "master.mp4", duration=4.0)


def cfg(base: str, **kw: object) -> FetchConfig:
    opts: dict = dict(
        url_template=base + "/v/{ytid}", backend="serial", rate_per_hour=0, retries=0, socket_timeout=2, backoff_s=0
    )
    opts.update(kw)
    return FetchConfig(**opts)


def events(root: Path) -> list[dict]:
    return ledger.read_events(root, "fetch").to_pylist()


def raw_files(root: Path) -> list[Path]:
    return sorted(p for p in (root / "raw").rglob("*") if p.is_file()) if (root / "raw").exists() else []


FAULTS = {
    "gone404": (FaultSpec(kind="http", status=404), "unavailable", False),
    "gone410": (FaultSpec(kind="http", status=410), "unavailable", False),
    "e403": (FaultSpec(kind="http", status=403), "http_403", True),
    "e429": (FaultSpec(kind="http", status=429), "http_429", True),
    "e500once": (FaultSpec(kind="http", status=500, times=1), "http_5xx", True),
    "e503": (FaultSpec(kind="http", status=503), "http_5xx", True),
    "reset": (FaultSpec(kind="reset"), "network", True),
    "trunc": (FaultSpec(kind="truncate", keep_fraction=0.5), "network", True),
    "slow": (FaultSpec(kind="slow", delay_s=2.0), "timeout", True),
}


def test_fetch_every_fault_kind_then_recover(tmp_path: Path, master_clip: Path) -> None:
    good = ["good1", "good2"]
    ytids = good + list(FAULTS)
    corpus = make_corpus(tmp_path / "corpus", master_clip, ytids)
    root = tmp_path / "root"
    ids = write_manifest(root, ytids)
    with MediaServer(corpus, faults={k: v[0] for k, v in FAULTS.items()}) as base:
        s1 = fetch(root, cfg(base, socket_timeout=1))
        assert s1.attempted == len(ytids) and s1.ok == 2
        latest = ledger.latest(root, "fetch")
        for y, (_, reason, transient) in FAULTS.items():
            ev = latest[f"synth:{y}:1000"]
            assert (ev["status"], ev["reason"], ev["transient"]) == ("failed", reason, transient), (y, ev)
            assert ev["reason_detail"] and len(ev["reason_detail"]) <= 500
            assert ev["raw_path"] is None
            assert (ev["next_attempt_after"] is not None) == transient
        for y in good:
            ev = latest[f"synth:{y}:1000"]
            assert ev["status"] == "ok" and ev["section_mode"] == "section" and ev["section_start_s"] == 0.0
            path = root / ev["raw_path"]
            assert path.stat().st_size == ev["file_bytes"] and ev["sha256"] and ev["yt_dlp_version"]
            assert ev["ffmpeg_version"] and ev["attempt"] == 1 and ev["session_id"]
        assert len(raw_files(root)) == 2
        assert not list((root / "tmp" / "fetch").iterdir())  # the run's temp dir is gone

        f = funnel(root)
        assert f["fetch"]["gone_by_reason"] == {"unavailable": 2}
        assert f["fetch"]["pending_transient"] == 7 and f["check"]

        # The server recovers except for the permanent ones (e500once already spent its single failure); a rerun
        # retries only the transient clips.
        body = {"replace": True, "faults": {k: v[0].model_dump() for k, v in FAULTS.items() if not v[2]}}
        req = urllib.request.Request(base + "/_faults", data=json.dumps(body).encode(), method="POST")
        urllib.request.urlopen(req, timeout=5).read()
        s2 = fetch(root, cfg(base))
        assert s2.attempted == 7 and s2.ok == 7, s2.as_dict()
        assert s2.skipped == {"done": 2, "gone": 2}
    latest = ledger.latest(root, "fetch")
    assert {cid for cid, ev in latest.items() if ev["status"] == "ok"} == set(ids) - {
        "synth:gone404:1000",
        "synth:gone410:1000",
    }
    assert all(latest[c]["attempt"] == 2 for c in latest if c.split(":")[1] in FAULTS and FAULTS[c.split(":")[1]][2])
    assert len(raw_files(root)) == 9

    # Funnel via the CLI (JSON), with validate events (verdicts on the current download) for some fetched clips.
    sha = {c: ev["sha256"] for c, ev in latest.items()}
    ledger.append_events(
        root,
        "validate",
        [
            {"clip_id": c, "status": st, "reason": r, "transient": False, "valid": v, "fetch_sha256": sha[c]}
            for c, st, r, v in [
                ("synth:good1:1000", "ok", None, True),
                ("synth:good2:1000", "ok", "too_short", False),
                ("synth:e403:1000", "failed", "corrupt_decode", False),
            ]
        ],
    )
    out = CliRunner().invoke(app, ["status", str(root), "--json"])
    assert out.exit_code == 0, out.output
    f = json.loads(out.output)
    fe = f["fetch"]
    assert fe["fetched"] + fe["gone"] + fe["pending_transient"] + fe["never_tried"] == f["source"] == len(ids)
    assert (fe["fetched"], fe["gone"], fe["pending_transient"], fe["never_tried"]) == (9, 2, 0, 0)
    v = f["validate"]
    assert (v["valid"], v["dropped"], v["not_validated"]) == (1, 2, 6)
    assert v["dropped_by_reason"] == {"corrupt_decode": 1, "too_short": 1}
    assert f["check"] is True


def test_fetch_hostile_ids_stay_inside_root(tmp_path: Path, master_clip: Path) -> None:
    pwned = tmp_path / "pwned"
    served = ["-dash", "$(id)", "--help"]
    hostile = [f"--exec=touch {pwned}", "../../etc/passwd", "a b&c?d=1#x", "-o/tmp/evil"]
    corpus = make_corpus(tmp_path / "corpus", master_clip, served)
    root = tmp_path / "root"
    write_manifest(root, served + hostile)
    with MediaServer(corpus) as base:
        summary = fetch(root, cfg(base, limit=None))
    latest = ledger.latest(root, "fetch")
    assert summary.ok == len(served)
    for y in served:
        assert latest[f"synth:{y}:1000"]["status"] == "ok"
    for y in hostile:
        assert latest[f"synth:{y}:1000"]["reason"] == "unavailable"
    assert not pwned.exists() and not Path("/tmp/evil").exists()
    files = raw_files(root)
    assert len(files) == len(served)
    assert all(within_root(root / "raw", p) and not p.name.startswith("-") for p in files)
    # Nothing was written anywhere in ROOT except the expected trees.
    assert {p.name for p in root.iterdir()} <= {"manifest", "events", "raw", "tmp"}


def test_fetch_cookies_never_leak(tmp_path: Path, master_clip: Path) -> None:
    secret = "SECRETCOOKIEVALUE8f3a"
    cookies = tmp_path / "private" / "cookies.txt"
    cookies.parent.mkdir()
    cookies.write_text(
        "# Netscape HTTP Cookie File\n"
        f"127.0.0.1\tFALSE\t/\tFALSE\t2147483647\tSID\t{secret}\n"
        f".youtube.com\tTRUE\t/\tTRUE\t2147483647\tLOGIN_INFO\t{secret}\n"
    )
    corpus = make_corpus(tmp_path / "corpus", master_clip, ["ok1"])
    root = tmp_path / "root"
    write_manifest(root, ["ok1", "bad"])
    with MediaServer(corpus, faults={"bad": FaultSpec(kind="http", status=403)}) as base:
        out = CliRunner().invoke(
            app,
            ["fetch", str(root), "--set", "fetch.url_template=" + base + "/v/{ytid}", "--backend", "serial",
             "--cookies", str(cookies), "--set", "fetch.rate_per_hour=0", "--set", "fetch.retries=0", "--no-progress",
             "--json"],
        )  # fmt: skip
    assert out.exit_code == 0, out.output
    assert json.loads(out.output)["ok"] == 1
    for text in (out.output, json.dumps(events(root), default=str), repr(cfg("http://x", cookies=cookies))):
        assert secret not in text and str(cookies) not in text and "cookies.txt" not in text
    for p in root.rglob("*"):
        if p.is_file():
            data = p.read_bytes()
            assert secret.encode() not in data and b"cookies.txt" not in data, p
    assert "cookies" not in cfg("http://x", cookies=cookies).model_dump()
    with pytest.raises(ValueError):
        FetchConfig(ytdlp_params={"cookiefile": str(cookies)})


def test_fetch_attempt_cap_and_backoff(tmp_path: Path, master_clip: Path) -> None:
    corpus = make_corpus(tmp_path / "corpus", master_clip, ["flaky"])
    root = tmp_path / "root"
    write_manifest(root, ["flaky"])
    with MediaServer(corpus, faults={"flaky": FaultSpec(kind="http", status=500, times=2)}) as base:
        assert fetch(root, cfg(base, backoff_s=3600)).failed == {"http_5xx": 1}
        # Backing off: a rerun leaves it alone unless retry_now.
        assert fetch(root, cfg(base, backoff_s=3600)).skipped == {"backoff": 1}
        assert fetch(root, cfg(base, retry_now=True, max_attempts=2)).failed == {"http_5xx": 1}
        ev = ledger.latest(root, "fetch")["synth:flaky:1000"]
        assert ev["gave_up"] and ev["attempt"] == 2
        assert fetch(root, cfg(base, max_attempts=2)).skipped == {"gave_up": 1}
        f = funnel(root, max_attempts=2)
        assert f["fetch"]["pending_gave_up"] == 1 and f["fetch"]["gone"] == 0 and f["check"]
        # Raising the cap resumes it; the server has stopped failing.
        s = fetch(root, cfg(base, max_attempts=3))
        assert s.ok == 1 and ledger.latest(root, "fetch")["synth:flaky:1000"]["attempt"] == 3


def test_fetch_redoes_clip_whose_file_vanished(tmp_path: Path, master_clip: Path) -> None:
    corpus = make_corpus(tmp_path / "corpus", master_clip, ["v1"])
    root = tmp_path / "root"
    write_manifest(root, ["v1"])
    with MediaServer(corpus) as base:
        assert fetch(root, cfg(base)).ok == 1
        raw_files(root)[0].write_bytes(b"partial")
        assert funnel(root)["fetch"]["pending_by_reason"] == {"file_missing": 1}
        assert fetch(root, cfg(base)).ok == 1
    assert len(raw_files(root)) == 1 and funnel(root)["fetch"]["fetched"] == 1


def test_import_time_origin_segment_vs_whole_video(tmp_path: Path, make_clip: Callable[..., Path]) -> None:
    root = tmp_path / "root"
    ids = write_manifest(root, ["cut01", "whole1"], start_s=5.0, end_s=7.0)
    src = tmp_path / "mine"
    make_clip(src / "cut01.mp4", duration=2.0)  # the labelled segment only (CAV-MAE mirrors)
    make_clip(src / "whole1.mp4", duration=8.0)  # the whole video
    assert import_clips(root, src).imported == 2
    latest = ledger.latest(root, "fetch")
    assert (latest[ids[0]]["section_mode"], latest[ids[0]]["section_start_s"]) == ("import", 5.0)
    assert (latest[ids[1]]["section_mode"], latest[ids[1]]["section_start_s"]) == ("import_full", 0.0)


def test_import_matches_ytid_clipid_and_reports_unmatched(tmp_path: Path, master_clip: Path) -> None:
    root = tmp_path / "root"
    ids = write_manifest(root, ["yt1", "yt2", "-yt3", "yt4"])
    src = tmp_path / "mine"
    src.mkdir()
    shutil.copyfile(master_clip, src / "yt1.mp4")  # CAV-MAE <ytid>.mp4
    shutil.copyfile(master_clip, src / f"{ids[1]}.mkv")  # named by clip id
    (src / "sub").mkdir()
    shutil.copyfile(master_clip, src / "sub" / "-yt3.mp4")
    shutil.copyfile(master_clip, src / "stranger.mp4")
    (src / "notes.txt").write_text("not media")
    report = import_clips(root, src)
    assert report.imported == 3 and report.unmatched == ["stranger.mp4"]
    latest = ledger.latest(root, "fetch")
    for cid in ids[:3]:
        ev = latest[cid]
        # a 4-s file for the clip [1, 3) is the whole video: its t=0 is source time 0
        assert ev["status"] == "ok" and ev["source"] == "import" and ev["section_start_s"] == 0.0
        assert ev["section_mode"] == "import_full"
        path = root / ev["raw_path"]
        assert path.stat().st_size == ev["file_bytes"] == master_clip.stat().st_size
    assert (root / latest[ids[0]]["raw_path"]).stat().st_ino == (src / "yt1.mp4").stat().st_ino  # hard link
    again = import_clips(root, src)
    assert again.imported == 0 and again.already_fetched == 3
    f = funnel(root)
    assert (f["fetch"]["fetched"], f["fetch"]["never_tried"], f["check"]) == (3, 1, True)


@pytest.mark.parametrize(
    ("message", "reason", "transient"),
    [
        ("ERROR: [youtube] x: Video unavailable. This content isn't available, try again later.",
         "rate_limited_session", True),
        ("ERROR: [youtube] x: Sign in to confirm you’re not a bot. Use --cookies", "bot_check", True),
        ("ERROR: [youtube] x: Video unavailable", "unavailable", False),
        ("ERROR: [youtube] x: Private video. Sign in if you've been granted access to this video", "private", False),
        ("ERROR: [youtube] x: Video unavailable. This video is no longer available because the YouTube account "
         "associated with this video has been terminated.", "account_terminated", False),
        ("ERROR: [youtube] x: Video unavailable. This video has been removed by the uploader",
         "removed_by_user", False),
        ("ERROR: [youtube] x: Video unavailable. This video is no longer available due to a copyright claim by Y",
         "copyright", False),
        ("ERROR: [youtube] x: Video unavailable. The uploader has not made this video available in your country",
         "geo_blocked", False),
        ("ERROR: [youtube] x: Sign in to confirm your age. This video may be inappropriate for some users.",
         "age_restricted", False),
        ("ERROR: [youtube] x: Join this channel to get access to members-only content", "members_only", False),
        ("ERROR: [youtube] x: This live event will begin in 3 hours.", "live_or_upcoming", False),
        ("ERROR: [youtube] x: No video formats found!", "no_formats", False),
        ("ERROR: unable to download video data: HTTP Error 403: Forbidden", "http_403", True),
        ("ERROR: [youtube] x: YouTube is forcing SABR streaming for this client", "sabr_or_format_error", True),
        ("ERROR: [youtube] x: Requested format is not available", "sabr_or_format_error", True),
        ("ERROR: ffmpeg exited with code 1", "tool_error", True),
        ("something nobody has seen before", "tool_error", True),
    ],
)  # fmt: skip
def test_fetch_classify_error(message: str, reason: str, transient: bool) -> None:
    assert classify_error(message) == (reason, transient)


def test_zero_byte_download_has_its_own_reason_and_stops_at_the_cap(tmp_path: Path, master_clip: Path) -> None:
    corpus = make_corpus(tmp_path / "corpus", master_clip, ["fine0000001"])
    (corpus / "videos" / "empty000001.mp4").write_bytes(b"")  # the server answers 200 with no body
    root = tmp_path / "root"
    write_manifest(root, ["fine0000001", "empty000001"])
    with MediaServer(corpus) as base:
        runs = [fetch(root, cfg(base, max_attempts=2)) for _ in range(3)]
    assert [r.failed.get("empty_download", 0) for r in runs] == [1, 1, 0]
    assert runs[2].attempted == 0 and runs[2].skipped == {"done": 1, "gave_up": 1}
    evs = [e for e in events(root) if e["clip_id"] == "synth:empty000001:1000"]
    assert [(e["reason"], e["transient"], e["gave_up"]) for e in evs] == [
        ("empty_download", True, False),
        ("empty_download", True, True),
    ]
    assert classify_error("ERROR: Did not get any data blocks") == ("empty_download", True)


def test_transient_http_is_retried_inside_the_attempt(tmp_path: Path, master_clip: Path) -> None:
    """503 twice then fine, one reset: fetched in the FIRST run (the retries are counted in the event); a server that
    keeps failing is parked for the cross-run backoff after `retries`; 429 is never retried within the attempt."""
    ytids = ["twice503", "reset1", "always503", "once429"]
    corpus = make_corpus(tmp_path / "corpus", master_clip, ytids)
    root = tmp_path / "root"
    write_manifest(root, ytids)
    faults = {
        "twice503": FaultSpec(kind="http", status=503, times=2),
        "reset1": FaultSpec(kind="reset", times=1),
        "always503": FaultSpec(kind="http", status=503),
        "once429": FaultSpec(kind="http", status=429, times=1),
    }
    with MediaServer(corpus, faults=faults) as base:
        s = fetch(root, cfg(base, retries=3, retry_backoff_s=0.01, retry_backoff_max_s=0.02, backoff_s=900))
    assert s.ok == 2 and s.failed == {"http_5xx": 1, "http_429": 1}, s.as_dict()
    latest = ledger.latest(root, "fetch")
    got = {c.split(":")[1]: (e["status"], e["in_attempt_retries"], e["attempt"]) for c, e in latest.items()}
    assert got == {
        "twice503": ("ok", 2, 1),
        "reset1": ("ok", 1, 1),
        "always503": ("failed", 3, 1),
        "once429": ("failed", 0, 1),
    }
    assert latest["synth:always503:1000"]["next_attempt_after"] is not None  # then the long, cross-run backoff


def test_progress_bar_says_when_it_waits_for_the_rate_limit(
    tmp_path: Path, master_clip: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    ytids = ["rate1", "rate2", "rate3"]
    corpus = make_corpus(tmp_path / "corpus", master_clip, ytids)
    root = tmp_path / "root"
    write_manifest(root, ytids)
    with MediaServer(corpus) as base:
        s = fetch(root, cfg(base, rate_per_hour=1200, in_flight=1, progress=True))  # one start per 3 s
    assert s.ok == 3
    assert "rate-limited, next start in" in capsys.readouterr().err
    waits = sorted(e["rate_wait_s"] for e in events(root))
    assert waits[0] == 0.0 and waits[-1] > 0.3  # the first start takes the bucket's token, a later one waits


def test_a_segment_past_the_media_end_is_a_permanent_reason_at_fetch(tmp_path: Path, master_clip: Path) -> None:
    # a direct media link: the extractor reports no duration, so fetch judges the downloaded file (4-s source)
    corpus = make_corpus(tmp_path / "corpus", master_clip, ["far", "edge", "near"])
    root = tmp_path / "root"
    rows = [("far", 100.0, 110.0), ("edge", 4.0, 6.0), ("near", 1.0, 3.0)]
    make_root(root, [{"ytid": y, "start_s": s, "end_s": e, "labels": ["/m/0"]} for y, s, e in rows])
    with MediaServer(corpus) as base:
        summary = fetch(root, cfg(base))
        latest = ledger.latest(root, "fetch")
        for y, start, end in (("far", 100000, "98.00"), ("edge", 4000, "4.00")):  # far: nothing after 98 s (pad 2 s)
            ev = latest[f"audioset:{y}:{start}"]
            assert (ev["status"], ev["reason"], ev["transient"]) == ("failed", "segment_out_of_range", False), ev
            assert f"the media ends by {end} s" in ev["reason_detail"] and ev["raw_path"] is None
        assert latest["audioset:near:1000"]["status"] == "ok" and summary.ok == 1
        assert len(raw_files(root)) == 1
        f = funnel(root)
        assert f["fetch"]["gone_by_reason"] == {"segment_out_of_range": 2} and f["check"]
        assert fetch(root, cfg(base, retry_now=True)).attempted == 0  # permanent: never tried again
