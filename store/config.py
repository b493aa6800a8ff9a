"""`StoreConfig`: where a store is reached and cached (`store.*` in the pipeline and run configs).

Nothing here is a credential: endpoint, region and keys otherwise come from the cloud SDKs' own environment and
config chain (docs/STORE.md, "Remote stores"), and nothing of them is ever written to a config or a log.
"""

from __future__ import annotations

from typing import TYPE_CHECKING

from pydantic import Field, field_validator

from tgdp.config import StrictConfig

if TYPE_CHECKING:
    from tgdp.store.cache import ShardCache

__all__ = ["StoreConfig"]


class StoreConfig(StrictConfig):
    """Remote-store access and the node-local shard cache."""

    endpoint_url: str | None = Field(
        None, description="S3-compatible server URL (else AWS_ENDPOINT_URL or the AWS config); never credentials"
    )
    cache_dir: str | None = Field(
        None, description="node-local shard cache of remote stores (else $TGDP_STORE_CACHE or ~/.cache/tgdp/shards)"
    )
    cache_limit_gb: float = Field(200.0, gt=0, description="evict least recently used cached shards beyond this")
    prefetch_workers: int = Field(
        2,
        ge=0,
        description="block shuffle: concurrent background downloads per process of the next block's shards "
        "(0 = download each shard when its first row is read)",
    )

    @field_validator("endpoint_url")
    @classmethod
    def _no_credentials(cls, v: str | None) -> str | None:
        """A config is saved in every run dir and checkpoint: user info in the endpoint would leak a secret."""
        if v is not None and "@" in v.split("://", 1)[-1].split("/", 1)[0]:
            raise ValueError("store.endpoint_url must not hold credentials (user:secret@); use the environment")
        return v

    def cache(self) -> ShardCache:
        """The shard cache this config names."""
        from tgdp.store.cache import ShardCache, default_cache

        root = default_cache().root if self.cache_dir is None else self.cache_dir
        return ShardCache(root, int(self.cache_limit_gb * (1 << 30)), prefetch_workers=self.prefetch_workers)
