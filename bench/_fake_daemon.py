"""`dedupd run` with dedupd.model.pixels.PixelEmbedder in place of the model: the real Service, watchers, decode
workers and store; only the vectors are cheap. usage: python bench/_fake_daemon.py CONFIG.yaml"""

from __future__ import annotations

import sys

from dedupd.config import load_config
from dedupd.logs import setup_logging
from dedupd.model.loader import LazyEmbedder
from dedupd.model.pixels import PixelEmbedder
from dedupd.service.daemon import Service


def main() -> int:
    path = sys.argv[1]
    config = load_config(path)
    setup_logging(config.log_level)
    service = Service(config, path, embedder=LazyEmbedder(config, PixelEmbedder()))
    service.install_signals()
    return service.run()


if __name__ == "__main__":
    sys.exit(main())
