"""Duplicate groups from what the store holds, with the configured threshold, policy and decisions.

The library layer under the report, status, decide and purge commands and the daemon's report and auto purge.
"""

from __future__ import annotations

import logging
from collections.abc import Sequence

from dedupd.config import Config
from dedupd.dedup import pairs
from dedupd.dedup.companions import CompanionFinder
from dedupd.dedup.groups import Group, Rules
from dedupd.dedup.policy import PolicyContext
from dedupd.errors import UsageError
from dedupd.ingest.indexer import online_roots
from dedupd.ingest.livephoto import content_id
from dedupd.paths import inside_any, normalise_root
from dedupd.store import FileRecord, Store

log = logging.getLogger("dedupd")


def store_groups(
    store: Store, config: Config, model: str, within: Sequence[bytes] | None = None
) -> tuple[list[Group], list[FileRecord], list[bytes]]:
    """The groups over every online root's files (only those inside `within`, where given), those files, and the
    online roots."""
    floor = pairs.stored_floor(store, model)
    if floor is None:
        log.warning("the store holds no vectors for model %s yet (a scan or the daemon adds them)", model)
    elif config.dedup.threshold < floor - 1e-9:
        raise UsageError(
            f"--threshold {config.dedup.threshold} is below the stored pair floor {floor}; "
            f"run `dedupd scan` again with this threshold to search that low"
        )
    roots = online_roots(store)
    files = [f for root in roots for f in store.files(root).values()]
    if within is not None:
        files = [f for f in files if inside_any(f.path, within)]
    groups = pairs.load_groups(
        store, model, files, config.dedup.threshold, config.dedup.keep_policy, rules_for(store, config)
    )
    return groups, files, roots


def rules_for(store: Store, config: Config) -> Rules:
    policy = PolicyContext([normalise_root(p) for p in config.protect], config.dedup.format_preference)
    companions = CompanionFinder(content_id)  # a fresh finder: each report lists the folders as they are now
    return Rules.make(config.dedup.burst_guard, store.decisions(), policy, config.dedup.raw_jpeg, companions)
