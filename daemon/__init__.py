"""dedupd: find and safely remove duplicate and near-duplicate photos."""

__version__ = "0.1.0"
