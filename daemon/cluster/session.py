"""Joining the Ray cluster that cluster.ray_address names, without importing Ray unless it is set."""

from __future__ import annotations

from contextlib import AbstractContextManager, nullcontext
from typing import TYPE_CHECKING

from dedupd.config import Config
from dedupd.errors import ClusterError

if TYPE_CHECKING:
    from dedupd.cluster.ray_embed import RayCluster


def join(config: Config) -> AbstractContextManager[RayCluster | None]:
    """The cluster for a bulk run (left when the block ends), or None when cluster.ray_address is unset. Joining
    comes first, before the store is opened, so a cluster that cannot be reached leaves the store as it was."""
    address = config.cluster.ray_address
    if address is None:
        return nullcontext(None)
    try:
        from dedupd.cluster.ray_embed import RayCluster
    except ImportError as exc:
        raise ClusterError(
            f"cluster.ray_address {address}: Ray is not installed ({exc.name}); install dedupd with "
            "`uv sync --extra ray` (or `pip install 'dedupd[ray]'`)"
        ) from None
    return RayCluster(address)
