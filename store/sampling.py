"""Epoch orders over a store's rows: global (a uniform permutation) or block (shards in a random order, rows
shuffled within blocks of `block_shards` consecutive shards of that order).

Block shuffle is what makes a remote store trainable: an epoch reads each shard once per node, in one block at a
time, so the cache needs room for about `block_shards` shards per rank in flight instead of the whole split. The
price is randomness: a batch mixes clips of at most `block_shards` shards (docs/STORE.md, "Shuffle"). Both orders
are pure functions of (seed, epoch), so a resumed run reads the same batches.
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Literal

import numpy as np

__all__ = ["ShuffleMode", "epoch_order", "resolve_mode"]

ShuffleMode = Literal["auto", "global", "block"]
_SALT = 0x5EED


def resolve_mode(mode: ShuffleMode, remote: bool) -> Literal["global", "block"]:
    """`auto` is global shuffling for a local store and block shuffling for a remote one."""
    if mode == "auto":
        return "block" if remote else "global"
    return mode


def epoch_order(
    shard_rows: Sequence[int], seed: int, epoch: int, mode: Literal["global", "block"], block_shards: int = 4
) -> np.ndarray:
    """Row indices of one epoch, [sum(shard_rows)] int64. Global: `default_rng([seed, epoch, 0x5EED])`'s permutation
    (the order training always used); block: a shard permutation from the same generator, then each block of
    `block_shards` shards' rows permuted together."""
    total = int(sum(shard_rows))
    rng = np.random.default_rng([seed, epoch, _SALT])
    if mode == "global":
        return rng.permutation(total)
    if block_shards < 1:
        raise ValueError(f"block_shards must be >= 1, got {block_shards}")
    starts = np.concatenate([[0], np.cumsum(shard_rows)]).astype(np.int64)
    shards = rng.permutation(len(shard_rows))
    parts = []
    for b in range(0, len(shards), block_shards):
        rows = np.concatenate([np.arange(starts[k], starts[k + 1]) for k in shards[b : b + block_shards]])
        parts.append(rng.permutation(rows))
    return np.concatenate(parts) if parts else np.zeros(0, np.int64)
