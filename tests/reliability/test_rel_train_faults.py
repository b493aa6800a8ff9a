"""Training on a real store written by `shard`: killed mid-checkpoint write → resume from the last good one and
continue exactly; a NaN loss from bad data → a clean stop naming the step, with a checkpoint; a damaged shard under
training → an error naming the shard."""

from __future__ import annotations

import json
import shutil
from pathlib import Path
from typing import Any

import numpy as np
import pytest
import torch

from tgdp.store import Store
from tgdp.train import checkpoint as ckpt_mod
from tgdp.train.checkpoint import list_checkpoints, load_checkpoint
from tgdp.train.config import load_run_config
from tgdp.train.loop import FitSummary, NonFiniteLossError, fit

pytestmark = pytest.mark.reliability


def _cfg(*extra: str) -> Any:
    base = ("train.steps=4", "train.batch_size=2", "train.ckpt_every=2", "train.num_workers=0", "train.log_every=1",
            "train.progress=false", "train.tensorboard=false", "data.resize_frames=true")  # fmt: skip
    return load_run_config("tiny_tgdp", [*base, *extra])


def _losses(summary: FitSummary) -> dict[int, float]:
    return {h["step"]: h["loss"] for h in summary.history}


def test_killed_mid_checkpoint_write_resumes_from_last_good(
    tmp_path: Path, clean_run: dict[str, Any], monkeypatch: pytest.MonkeyPatch
) -> None:
    store = clean_run["store"]
    cfg = _cfg("train.steps=2", "train.ckpt_every=1")
    real_save, calls = torch.save, {"n": 0}

    def dying_save(obj: Any, f: Any, *a: Any, **kw: Any) -> None:
        calls["n"] += 1
        real_save(obj, f, *a, **kw)
        if calls["n"] == 2:  # step 2's checkpoint: only part of the bytes reach the temp file, then the process dies
            f.flush()
            f.truncate(2000)
            raise KeyboardInterrupt("killed mid-checkpoint")

    monkeypatch.setattr(ckpt_mod.torch, "save", dying_save)
    with pytest.raises(KeyboardInterrupt):
        fit(cfg, store, tmp_path / "cut")
    monkeypatch.undo()
    assert [p.name for p in list_checkpoints(tmp_path / "cut")] == ["step_00000001.pt"]  # the torn one is not listed
    good = load_checkpoint(list_checkpoints(tmp_path / "cut")[0])
    resumed = fit(cfg, store, tmp_path / "cut", resume=True)
    assert resumed.resumed_from.endswith("step_00000001.pt") and resumed.step == 2
    assert sorted(_losses(resumed)) == [2]
    end = load_checkpoint(Path(resumed.checkpoint))
    assert end["step"] == 2 and end["data_state"] != good["data_state"]
    assert all(torch.isfinite(t).all() for t in end["model"].values())


class _PoisonedStore:
    """A real Store whose fbank segments turn NaN from clip `bad` on (a damaged spectrogram under training)."""

    def __init__(self, store: Store, bad: int) -> None:
        self._store, self._bad = store, bad

    def __getattr__(self, name: str) -> Any:
        return getattr(self._store, name)

    def __len__(self) -> int:
        return len(self._store)

    def segment(self, i: int, t: int, length: int = 416, normalize: bool = True) -> np.ndarray:
        seg = self._store.segment(i, t, length, normalize)
        return np.full_like(seg, np.nan) if i == self._bad else seg


def test_nan_from_data_stops_cleanly_naming_the_step(tmp_path: Path, clean_run: dict[str, Any]) -> None:
    opened: dict[str, int] = {"n": 0}

    def open_poisoned(path: Any, split: str | None = None) -> _PoisonedStore:
        opened["n"] += 1
        return _PoisonedStore(Store.open(path, split or "train"), bad=0)

    run = tmp_path / "run"
    with pytest.raises(NonFiniteLossError, match=r"non-finite loss .* at step \d+") as info:
        fit(_cfg("train.steps=6", "train.ckpt_every=100"), clean_run["store"], run, store_opener=open_poisoned)
    step = info.value.step
    assert f"at step {step}" in str(info.value) and f"last good state (step {step - 1})" in str(info.value)
    ckpt = load_checkpoint(info.value.checkpoint)
    assert ckpt["step"] == step - 1 and all(torch.isfinite(t).all() for t in ckpt["model"].values())
    rows = [json.loads(x) for x in (run / "metrics.jsonl").read_text().splitlines()]
    assert rows[-1]["event"] == "nonfinite_loss" and rows[-1]["step"] == step


def _damage(store: Path, kind: str) -> str:
    index = json.loads((store / "train" / "index.json").read_text())
    target = store / "train" / index["shards"][-1]["file"]
    data = target.read_bytes()
    if kind == "truncate":
        target.write_bytes(data[: len(data) // 3])
    else:
        target.write_bytes(data[:200] + bytes(len(data) - 200))  # header intact, body zeroed
    return target.name


@pytest.mark.parametrize("kind", ["truncate", "zeroed"])
def test_damaged_shard_under_training_names_the_shard(tmp_path: Path, clean_run: dict[str, Any], kind: str) -> None:
    store = tmp_path / "store"
    shutil.copytree(clean_run["store"], store)
    name = _damage(store, kind)
    with pytest.raises(Exception) as info:  # noqa: PT011 - the contract is the message, whatever the type
        fit(_cfg(), store, tmp_path / "run")
    assert name in str(info.value), f"{type(info.value).__name__}: {info.value}"
