"""Ingest: walk the roots, hash, decode, preprocess and feed the model; the Indexer keeps the store current."""
