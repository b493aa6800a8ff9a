"""Epoch orders: global is the permutation training always used; block reads shards in blocks; both are pure
functions of (seed, epoch), so a resumed run sees the same batches."""

from __future__ import annotations

import numpy as np
import pytest

from tgdp.store.sampling import epoch_order, resolve_mode


def test_global_order_is_the_historic_permutation() -> None:
    rows = [5, 7, 3]
    old = np.random.default_rng([11, 2, 0x5EED]).permutation(15)
    np.testing.assert_array_equal(epoch_order(rows, 11, 2, "global"), old)


@pytest.mark.parametrize("block", [1, 2, 3, 10])
def test_block_order_covers_every_row_once_block_by_block(block: int) -> None:
    rows = [4, 6, 5, 3, 2]
    starts = np.concatenate([[0], np.cumsum(rows)])
    shard_of = np.searchsorted(starts, np.arange(sum(rows)), side="right") - 1
    order = epoch_order(rows, 3, 1, "block", block)
    assert sorted(order.tolist()) == list(range(sum(rows)))
    seen: list[int] = []  # the shards of each block appear contiguously: a block finishes before the next starts
    pos = 0
    while pos < len(order):
        shards = set()
        while pos < len(order) and (len(shards) < block or shard_of[order[pos]] in shards):
            if shard_of[order[pos]] in seen:
                raise AssertionError(f"shard {shard_of[order[pos]]} read again after its block ended")
            shards.add(int(shard_of[order[pos]]))
            pos += 1
        seen += sorted(shards)
    assert sorted(seen) == list(range(len(rows)))
    np.testing.assert_array_equal(order, epoch_order(rows, 3, 1, "block", block))  # resume: same order
    assert not np.array_equal(order, epoch_order(rows, 3, 2, "block", block))  # a new epoch: a new order


def test_auto_is_block_for_remote_stores_only() -> None:
    assert resolve_mode("auto", True) == "block" and resolve_mode("auto", False) == "global"
    assert resolve_mode("global", True) == "global"


def test_an_endpoint_with_credentials_is_refused_without_echoing_them() -> None:
    from pydantic import ValidationError

    from tgdp.store.config import StoreConfig

    assert StoreConfig(endpoint_url="http://127.0.0.1:8333").endpoint_url == "http://127.0.0.1:8333"
    with pytest.raises(ValidationError, match="must not hold credentials") as err:
        StoreConfig(endpoint_url="http://AKIA:topsecret@127.0.0.1:8333")
    assert "must not hold credentials" in str(err.value)
    from typer.testing import CliRunner

    from tgdp.pipeline.cli import app

    out = CliRunner().invoke(app, ["verify", "/nonexistent", "--set", "store.endpoint_url=http://AKIA:topsecret@h:1"])
    assert out.exit_code == 2 and "must not hold credentials" in out.output and "topsecret" not in out.output
