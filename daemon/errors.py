"""Exceptions that carry a one-line user message and an exit code.

cli.py is the one place that turns these into messages and exit codes; everything else only raises.
"""

from __future__ import annotations


class DedupdError(Exception):
    """A failure the user can act on; str(exc) is the one-line message."""

    exit_code = 1


class UsageError(DedupdError):
    exit_code = 2


class ConfigError(DedupdError):
    exit_code = 2


class ModelLoadError(DedupdError):
    exit_code = 2


class ClusterError(DedupdError):
    """The Ray cluster of cluster.ray_address cannot be used: unreachable, not a Ray cluster, Ray not installed."""

    exit_code = 2


class PurgeFailures(DedupdError):
    """Some purge items failed; the rest were carried out."""

    exit_code = 1
