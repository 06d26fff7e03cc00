"""Purge: verify and act on duplicates, journal every act, recover and undo."""
