"""The embedding model: settings (no torch), the torch runtime, and the lazy loader the rest of dedupd uses."""
