"""Pipeline stages around the model: when the model loads, when decode workers start, how batches are sized, and
how the cores are split between decoding and a model on the CPU."""

from __future__ import annotations

import torch
from PIL import Image
from support import PixelEmbedder, make_library

from dedupd import commands
from dedupd.config import Config, load_config
from dedupd.ingest import pipeline
from dedupd.ingest.decode_pool import default_workers, model_threads, split_cores
from dedupd.ingest.hashing import content_hash
from dedupd.model.loader import LazyEmbedder
from dedupd.store import FileRecord


def _work(path: bytes, carrier: bool, content: str = "") -> pipeline.Work:
    record = FileRecord(path=path, root=b"/r", size=1, mtime_ns=1, device=1, inode=1, content=content)
    return pipeline.Work(record, carrier=carrier)


def test_nothing_to_decode_loads_no_model_and_starts_no_pool() -> None:
    asked: list[str] = []
    settings = pipeline.DecodeSettings(
        draft_side=lambda: asked.append("model") or 64,
        max_pixels=10**8,
        pool=lambda: asked.append("pool") or None,
    )
    items = [_work(b"/r/a.jpg", carrier=False), _work(b"/r/b.jpg", carrier=False)]
    out = list(pipeline.decode_images(settings, pipeline.Counters())(items))
    assert [w.record.path for w in out] == [b"/r/a.jpg", b"/r/b.jpg"] and asked == []


def test_the_pool_is_sized_after_the_model_has_loaded(tmp_path) -> None:
    Image.new("RGB", (40, 30), "red").save(tmp_path / "a.jpg")
    asked: list[str] = []
    settings = pipeline.DecodeSettings(
        draft_side=lambda: asked.append("model") or 64,
        max_pixels=10**8,
        pool=lambda: asked.append("pool") or None,
    )
    photo = str(tmp_path / "a.jpg").encode()
    items = [_work(b"/r/skip.jpg", carrier=False), _work(photo, carrier=True, content=content_hash(photo))]
    counters = pipeline.Counters()
    out = list(pipeline.decode_images(settings, counters)(items))
    assert asked[:2] == ["model", "pool"] and asked.count("pool") == 1
    assert len(out) == 2 and counters.decoded == 1 and out[1].image.size == (40, 30)


class ThreeAtATime(PixelEmbedder):
    """An embedder over several devices wants this many images per call."""

    batch_items = 3

    def __init__(self) -> None:
        super().__init__()
        self.sizes: list[int] = []

    def embed(self, images):
        self.sizes.append(len(images))
        return super().embed(images)


def test_embed_calls_take_the_embedders_batch_items(tmp_path) -> None:
    lib = make_library(tmp_path / "photos", distinct=5)
    cfg = load_config(None, {"store": str(tmp_path / "store")})
    embedder = ThreeAtATime()
    commands.scan(
        str(lib.root),
        cfg,
        None,
        False,
        None,
        echo=lambda _: None,
        threaded=False,
        embedder=commands.LazyEmbedder(cfg, embedder),
    )
    sizes = embedder.sizes
    assert sum(sizes) >= 7 and max(sizes) == 3 and all(s == 3 for s in sizes[:-1])


def test_cores_split_between_decoding_and_the_model() -> None:
    # Model on a GPU: decoding is the bottleneck, every core but one decodes.
    assert [default_workers(c) for c in (1, 2, 16)] == [1, 1, 15]
    # Model on the CPU: half the cores decode, at least two (decoding real photos can cost more than a fast model),
    # and torch gets every core (a worker only takes one while it is ahead of the model).
    assert [default_workers(c, model_on_cpu=True) for c in (1, 2, 3, 8, 16)] == [1, 2, 2, 4, 8]
    assert [model_threads(c) for c in (1, 2, 8, 16)] == [1, 2, 8, 16]
    # What the indexer and the bench both use: configured values win, a GPU model leaves torch its own threads.
    assert split_cores(True, cores=16) == (8, 16) and split_cores(False, cores=16) == (15, None)
    assert split_cores(True, workers=0, cores=16) == (0, 16) and split_cores(True, threads=3, cores=16) == (8, 3)


def test_a_model_on_the_cpu_gets_every_core_beside_the_decoders(tiny_siglip2) -> None:
    before = torch.get_num_threads()
    try:
        # Two decode workers on this machine's cores: torch still gets every core (model_threads()).
        config = Config(model={"name": str(tiny_siglip2), "device": "cpu"}, scan={"decode_workers": 2})
        lazy = LazyEmbedder(config)
        lazy.get().close()
        assert lazy.decode_workers() == 2 and torch.get_num_threads() == model_threads()
        config = Config(model={"name": str(tiny_siglip2), "device": "cpu", "threads": 3})
        LazyEmbedder(config).get().close()
        assert torch.get_num_threads() == 3
    finally:
        torch.set_num_threads(before)


def _hash_stage(paths: list[bytes], threads: int) -> tuple[list[tuple[bytes, str, str]], pipeline.Counters]:
    counters = pipeline.Counters()
    out = pipeline.hash_files(counters, threads)([_work(p, carrier=False) for p in paths])
    return [(w.record.path, w.record.content, w.record.status) for w in out], counters


def test_parallel_hashing_gives_the_sequential_result_in_order(tmp_path) -> None:
    paths = []
    for i in range(40):
        (tmp_path / f"{i}.jpg").write_bytes(bytes([i]) * (1000 + 37 * i))
        paths.append(str(tmp_path / f"{i}.jpg").encode())
    paths.insert(7, str(tmp_path / "gone.jpg").encode())  # vanished since the walk: dropped
    (tmp_path / "dir.jpg").mkdir()
    paths.insert(20, str(tmp_path / "dir.jpg").encode())  # unreadable: kept, with its reason
    sequential, seq_counters = _hash_stage(paths, threads=1)
    parallel, par_counters = _hash_stage(paths, threads=4)
    assert parallel == sequential and len(parallel) == 41
    assert [p for p, _, _ in parallel] == [p for p in paths if not p.endswith(b"gone.jpg")]
    assert par_counters.hashed == seq_counters.hashed == 40
    assert [s for _, _, s in parallel].count("unreadable") == 1


def test_ordered_map_really_runs_calls_at_once() -> None:
    import threading

    barrier = threading.Barrier(3, timeout=10)  # passes only if three calls are in flight together

    def meet(work: pipeline.Work) -> bool:
        barrier.wait()
        return True

    items = [_work(f"/r/{i}".encode(), carrier=False) for i in range(6)]
    out = list(pipeline._ordered_map(meet, items, lambda w: True, threads=3))
    assert [w for w, _ in out] == items and all(ok for _, ok in out)
