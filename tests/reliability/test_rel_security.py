"""Security: hostile clip ids through manifest → fetch → validate → shard → export, cookies that never leak, a
loopback-only server, checkpoints loaded with weights_only=True, YAML read with a safe loader."""

from __future__ import annotations

import json
import os
import pickle
import re
import shutil
import socket
from collections.abc import Callable
from pathlib import Path

import pyarrow as pa
import pyarrow.parquet as pq
import pytest
import torch
from typer.testing import CliRunner

from tests.fixtures import make_root
from tests.reliability.rel_support import FEATURES, SHARD, assert_funnel_sums, fetch_cfg
from tgdp.pipeline import ledger
from tgdp.pipeline.cli import app
from tgdp.pipeline.export import run_export
from tgdp.pipeline.fetch import fetch
from tgdp.pipeline.layout import manifest_path, within_root
from tgdp.pipeline.manifest import ManifestConfig, build_manifest
from tgdp.pipeline.serve import FaultSpec, MediaServer
from tgdp.pipeline.shard import run_shard
from tgdp.pipeline.validate import run_validate
from tgdp.store import Store
from tgdp.store.verify import verify_store

pytestmark = pytest.mark.reliability

# Valid 11-character YouTube ids that look like options (AudioSet has thousands starting with '-').
DASH_IDS = ["--exec_abcd", "-o_pwned_xy"]
# Ids no CSV parser accepts, injected straight into the manifest (a tampered or hand-made source.parquet).
HOSTILE = ["--exec=touch pwned1", "$(touch pwned2)", "a;touch pwned3 #`touch pwned4`", "-o x'\"|&<>*?"]
CANARIES = ["pwned1", "pwned2", "pwned3", "pwned4"]


def _listing(path: Path) -> set[str]:
    return {str(p.relative_to(path)) for p in path.rglob("*")}


def test_hostile_ids_through_the_whole_chain(
    tmp_path: Path, make_clip: Callable[..., Path], monkeypatch: pytest.MonkeyPatch
) -> None:
    work = tmp_path / "cwd"
    work.mkdir()
    monkeypatch.chdir(work)  # a relative `touch pwnedN` would land here
    master = make_clip(tmp_path / "master.mp4", duration=3.0)
    corpus = tmp_path / "corpus" / "videos"
    corpus.mkdir(parents=True)
    for y in DASH_IDS + HOSTILE:
        shutil.copyfile(master, corpus / f"{y}.mp4")
    lines = [f'{y}, 0.000, 2.500, "/m/a"' for y in DASH_IDS]
    lines += ['../../etc/pa, 0.000, 2.500, "/m/a"', '$(touch pwn), 0.000, 2.500, "/m/a"']
    src = tmp_path / "eval_segments.csv"
    src.write_text("# c\n# num_segs=4\n# h\n" + "\n".join(lines) + "\n")
    root, store, export = tmp_path / "root", tmp_path / "store", tmp_path / "export"
    result = build_manifest(root, ManifestConfig(dataset="audioset", csv=[str(src)], skip_bad=True))
    assert result.rows == len(DASH_IDS) and {i.kind for i in result.issues} == {"bad_ytid"}
    table = pq.read_table(manifest_path(root))
    first = table.slice(0, 1).to_pylist()[0]
    extra = [{**first, "clip_id": f"audioset:{y}:0", "ytid": y, "video_id": y} for y in HOSTILE]
    pq.write_table(pa.concat_tables([table, pa.Table.from_pylist(extra, schema=table.schema)]), manifest_path(root))
    outside_before = _listing(tmp_path)

    with MediaServer(corpus.parent) as base:
        summary = fetch(root, fetch_cfg(base))
    assert summary.ok == len(DASH_IDS) + len(HOSTILE), summary.as_dict()
    run_validate(root, backend="serial")
    f = assert_funnel_sums(root)
    assert f["validate"]["valid"] == len(DASH_IDS) + len(HOSTILE)
    run_shard(root, store, SHARD, features=FEATURES, backend="serial")
    run_export(root, export)
    assert verify_store(store).ok

    want = {f"audioset:{y}:0" for y in DASH_IDS + HOSTILE}
    assert set(Store.open(store, "eval").clip_ids) == want  # ids survive byte for byte
    assert set((export / "clip_ids.txt").read_text().split("\n")) - {""} == want
    assert not [c for c in CANARIES if (work / c).exists() or (tmp_path / c).exists()]
    assert not (Path("/tmp") / "pwned_xy").exists()
    # Nothing was written outside ROOT, STORE and the export dir; no file there starts with '-'.
    new = {p for p in _listing(tmp_path) - outside_before if p.split("/")[0] not in ("root", "store", "export")}
    assert new == set(), new
    for base_dir in (root, store, export):
        for p in base_dir.rglob("*"):
            # No shell metacharacter, space or leading '-' in any name written: safe in any downstream script.
            assert within_root(base_dir, p) and re.fullmatch(r"[A-Za-z0-9_.][A-Za-z0-9_.-]*", p.name), p


def test_tampered_raw_path_is_refused_by_validate_and_shard(tmp_path: Path, make_clip: Callable[..., Path]) -> None:
    root = tmp_path / "root"
    secret = make_clip(tmp_path / "outside.mp4", duration=3.0)
    base = {"clip_id": "audioset:AbCdEfGhIjK:0", "status": "ok", "reason": None, "transient": False, "sha256": "x"}
    tampered = {**base, "raw_path": "../outside.mp4", "file_bytes": secret.stat().st_size}
    row = {"ytid": "AbCdEfGhIjK", "end_s": 2.5, "split": "as_eval", "labels": ["/m/a"]}
    make_root(root, [row], events={"fetch": [tampered]})
    with pytest.raises(ValueError, match="outside ROOT"):
        run_validate(root, backend="serial")
    ledger.append_events(
        root, "validate", [{**base, "valid": True, "fetch_sha256": "x", "window_start_s": 0.0, "valid_rule": "v1"}]
    )
    with pytest.raises(ValueError, match="outside ROOT"):
        run_shard(root, tmp_path / "store", SHARD, features=FEATURES, backend="serial")
    assert not (tmp_path / "store" / "eval").exists()


SECRET = "SECRETCOOKIEVALUE7d21"


def _cookies(path: Path, body: str | None = None) -> Path:
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(body or f"# Netscape HTTP Cookie File\n127.0.0.1\tFALSE\t/\tFALSE\t2147483647\tSID\t{SECRET}\n")
    return path


def _assert_clean(texts: list[str], dirs: list[Path], cookies: Path) -> None:
    for text in texts:
        assert SECRET not in text and str(cookies) not in text and cookies.name not in text
    for d in dirs:
        for p in d.rglob("*"):
            if p.is_file():
                data = p.read_bytes()
                assert SECRET.encode() not in data and cookies.name.encode() not in data, p


def test_cookies_never_reach_root_reports_or_logs(
    tmp_path: Path, tiny_corpus: Path, capfd: pytest.CaptureFixture, caplog: pytest.LogCaptureFixture
) -> None:
    cookies = _cookies(tmp_path / "private" / "cookies.txt")
    root = tmp_path / "root"
    from tests.reliability.rel_support import corpus_root

    corpus_root(root, tiny_corpus)
    with MediaServer(tiny_corpus, faults={"nope": FaultSpec(kind="http", status=403)}) as base:
        fetch(root, fetch_cfg(base, cookies=cookies))
    run_validate(root, backend="serial")
    run_export(root, tmp_path / "export")
    status = CliRunner().invoke(app, ["status", str(root), "--json"])
    captured = capfd.readouterr()
    events = json.dumps(ledger.latest(root, "fetch"), default=str)
    texts = [status.output, captured.out, captured.err, caplog.text, events]
    _assert_clean(texts, [root, tmp_path / "export"], cookies)
    assert json.loads(status.output)["fetch"]["fetched"] > 0


def test_malformed_cookies_fail_without_echoing_them(
    tmp_path: Path, tiny_corpus: Path, capfd: pytest.CaptureFixture
) -> None:
    cookies = _cookies(tmp_path / "private" / "cookies.txt", f"{SECRET} not a netscape line\n")
    root = tmp_path / "root"
    from tests.reliability.rel_support import corpus_root

    corpus_root(root, tiny_corpus)
    with MediaServer(tiny_corpus) as base, pytest.raises(ValueError, match="not a Netscape cookies file") as info:
        fetch(root, fetch_cfg(base, cookies=cookies))
    captured = capfd.readouterr()
    _assert_clean([str(info.value), captured.out, captured.err], [root], cookies)


def _non_loopback_ip() -> str | None:
    try:
        with socket.socket(socket.AF_INET, socket.SOCK_DGRAM) as s:
            s.connect(("192.0.2.1", 9))  # no packet is sent: this only picks the outgoing interface
            ip = s.getsockname()[0]
    except OSError:
        return None
    return None if ip.startswith("127.") else ip


def test_media_server_binds_loopback_only(tiny_corpus: Path) -> None:
    server = MediaServer(tiny_corpus)
    with server as base:
        assert server._httpd is not None and server._httpd.server_address[0] == "127.0.0.1"
        assert base.startswith("http://127.0.0.1:")
        port = server._httpd.server_address[1]
        ip = _non_loopback_ip()
        if ip is not None:
            with pytest.raises(OSError), socket.create_connection((ip, port), timeout=2):
                pass


class _Payload:
    """Unpickling this runs os.mkdir(target): the side effect a weights_only load must refuse."""

    def __init__(self, target: Path) -> None:
        self.target = str(target)

    def __reduce__(self):
        return (os.mkdir, (self.target,))


def _evil_checkpoint(path: Path, canary: Path) -> Path:
    torch.save({"model": {"w": torch.zeros(1)}, "optimizer": {}, "step": 1, "data_state": {}, "config": {},
                "extra": _Payload(canary)}, path)  # fmt: skip
    return path


def _loaders() -> dict[str, Callable[[Path], object]]:
    from tgdp.eval.embed import load_encoder
    from tgdp.model import build_model
    from tgdp.model.checkpoint import load_released, read_state_dict
    from tgdp.train.checkpoint import load_checkpoint, load_latest

    def released(path: Path) -> object:
        from tgdp.model import PRESETS

        return load_released(build_model(PRESETS["tiny_cavmae_sync"]), path)

    return {
        "model.read_state_dict": read_state_dict,
        "model.load_released": released,
        "train.load_checkpoint": load_checkpoint,
        "train.load_latest": lambda p: load_latest(p.parent.parent),
        "eval.load_encoder": load_encoder,
    }


@pytest.mark.parametrize("loader", ["model.read_state_dict", "model.load_released", "train.load_checkpoint",
                                    "train.load_latest", "eval.load_encoder"])  # fmt: skip
def test_checkpoint_with_pickle_payload_is_refused(tmp_path: Path, loader: str) -> None:
    canary = tmp_path / "payload_ran"
    path = tmp_path / "run" / "checkpoints" / "step_00000001.pt"
    path.parent.mkdir(parents=True)
    _evil_checkpoint(path, canary)
    with pytest.raises(Exception, match=r"(?i)weights.only|unpickl|unsupported|global"):
        _loaders()[loader](path)
    assert not canary.exists()


EVIL_YAML = "num_clips: !!python/object/apply:os.mkdir ['{canary}']\n"


def test_every_yaml_loader_is_safe(tmp_path: Path, ffmpeg_bin: str) -> None:
    from tgdp.config import load_config
    from tgdp.pipeline.fetch import FetchConfig
    from tgdp.pipeline.shard import ShardConfig
    from tgdp.pipeline.synth import SynthConfig
    from tgdp.pipeline.validate import ValidateConfig
    from tgdp.train.config import load_run_config

    canary = tmp_path / "yaml_ran"
    evil = tmp_path / "evil.yaml"
    evil.write_text(EVIL_YAML.format(canary=canary))
    for cls in (SynthConfig, ManifestConfig, FetchConfig, ValidateConfig, ShardConfig):
        with pytest.raises(Exception, match="python/object"):
            load_config(cls, evil)
    with pytest.raises(Exception, match="python/object"):
        load_run_config(evil)
    with pytest.raises(Exception, match="python/object"):
        load_config(SynthConfig, None, [f"num_clips=!!python/object/apply:os.mkdir ['{canary}']"])
    # Through the CLIs: a --config file, validate/shard --set.
    out = CliRunner().invoke(app, ["synth", str(tmp_path / "c"), "--config", str(evil)])
    assert out.exit_code != 0
    for cmd in ("validate", "shard"):
        args = [cmd, str(tmp_path / "r"), f"--set={cmd}.timeout_s=!!python/object/apply:os.mkdir ['{canary}']"]
        if cmd == "shard":
            args += ["--store", str(tmp_path / "s")]
        assert CliRunner().invoke(app, args).exit_code != 0
    assert not canary.exists()
    # pickle itself would have run it: the payload is live, the loaders are what stop it.
    pickle.loads(pickle.dumps(_Payload(canary)))
    assert canary.is_dir()
