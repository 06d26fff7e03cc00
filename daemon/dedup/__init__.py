"""Dedup: neighbour search over the vectors, stored pairs, union-find groups and the keep policy."""
