"""`dedupd bench`: how fast this machine runs each part of the pipeline, measured with the real code.

Figures (keys of --json):

* decode_img_s: files -> model-ready inputs through the real DecodePool (JPEG draft + the model's preprocessing in
  the workers), all workers together; decode_img_s_per_worker is that divided by the worker count.
* model_img_s: the embedder alone on inputs decoded beforehand, in batches of --batch-size, after a 2-image warm-up.
* end_to_end_img_s: a real Indexer over the files into a throw-away store (hash, decode workers, model, commit,
  pairs), with the model already loaded and the workers already started (as in the daemon). --no-store stops the
  same stages after the model (no LanceDB commit, no pairs), where lancedb is not installed.
* ceiling_img_s: the best rate the cores allow (see core_budget): min(model only, cores / the CPU-seconds each image
  costs in the model, the decode workers and the hash, in cpu_s_per_img); end_to_end_vs_ceiling is end to end
  against it. On a CPU the stages share the cores, so end_to_end_vs_model stays under 1 even for a perfect pipeline.
* naive_img_s (unless --no-naive): the loop a first script would write: full PIL decode -> the checkpoint's HF
  image processor -> fp32 forward of the same vision tower, in batches, no workers. speedup_vs_naive and
  end_to_end_vs_model are the issue's two ratios.
* hash_mb_s: the pipeline's hash stage (hash_threads files at once) over the files with their pages cached (just
  read); hash_mb_s_1_thread the same with one thread; hash_cold_mb_s after asking the kernel to drop each file's
  cached pages (posix_fadvise DONTNEED; a VM's host may still cache them).
* search_s: --vectors random unit vectors through VectorIndex, each searched against all (top k), seconds.

--repeat R takes R rounds of model only, end to end and naive in turns and reports the best of each (rounds_s has
them all), so that load from other processes during one round touches the compared figures alike.

The model is --model, else the configured model.name. When that is the built-in default
(google/siglip2-base-patch16-naflex) and it cannot be loaded (offline, not in the cache), random:siglip2-base is
measured instead, with a warning and a `model_note` in the figures: the compute per image is the same.

With no FOLDER, --images camera-like 12 MP JPEGs (4000x3000, quality 90, EXIF, a quarter of them Orientation 6) are
generated into a temporary folder. `--model random:siglip2-base` builds the real SigLIP2-base naflex architecture
(hidden 768, 12 layers, patch 16, 256 patches) with random weights and its PIL image processor into a temporary
folder, so the compute per image equals google/siglip2-base-patch16-naflex without downloading it. Its vectors
mean nothing; agreement figures measured with it are only indicative.

--knobs adds the speed knobs: model.max_patches 128 and 64, and int8 dynamic quantisation of the Linear layers
(--precision int8 runs everything with it), each with its model-only speed and cosine agreement with the default.

Heavy libraries are imported inside the functions: importing this module stays cheap.
"""

from __future__ import annotations

import logging
import os
import tempfile
import time
from collections.abc import Callable, Iterator, Sequence
from contextlib import ExitStack, closing, contextmanager
from dataclasses import dataclass, field, replace
from pathlib import Path
from types import SimpleNamespace
from typing import Any

import numpy as np

from dedupd.config import Config
from dedupd.errors import ModelLoadError, UsageError
from dedupd.model.settings import MAX_THREADS, PRECISIONS

log = logging.getLogger("dedupd")

RANDOM_PREFIX = "random:"
RANDOM_MODELS = ("siglip2-base",)
DEFAULT_IMAGES = 32
DEFAULT_VECTORS = 20_000
CAMERA_SIZE = (4000, 3000)
REQUIRED_KEYS = ("decode_img_s", "model_img_s", "end_to_end_img_s", "hash_mb_s", "search_s", "images", "device")
# (name, max_patches, precision, preset) of each speed knob --knobs measures against the default
KNOBS = (
    ("max_patches=128", 128, "auto", "default"),
    ("max_patches=64", 64, "auto", "default"),
    ("int8", None, "int8", "default"),
    ("preset=fast", None, "auto", "fast"),
)


@dataclass
class BenchSettings:
    folder: str | None = None
    images: int | None = None  # generated: how many (default 32); a folder: at most this many
    model: str | None = None  # None: the configured model (model.name)
    fallback_random: bool = False  # the configured default model cannot load: measure random:siglip2-base
    vectors: int = DEFAULT_VECTORS  # 0 skips the search
    batch_size: int | None = None  # per device; None: model.batch_size, else the embedder's default
    workers: int | None = None  # decode workers; None: scan.decode_workers, else default_workers()
    threads: int | None = None  # torch CPU threads; None: model.threads, else model_threads()
    max_patches: int | None = None  # None: model.max_patches, else the checkpoint's
    precision: str | None = None  # auto | float | int8; None: model.precision
    preset: str | None = None  # default | fast; None: model.preset
    naive: bool = True
    store: bool = True  # False: end to end stops after the model (no LanceDB commit, no pairs)
    knobs: bool = False
    k: int = 10
    device: str | None = None  # None: model.device
    gpus: int | None = None  # None: model.gpus
    gpu_memory_fraction: float | None = None  # None: model.gpu_memory_fraction
    seed: int = 0
    repeat: int = 1  # rounds of model only / end to end / naive; the best of each is reported
    size: tuple[int, int] = CAMERA_SIZE  # generated pictures, width x height


@dataclass
class _Files:
    paths: list[bytes]
    root: bytes
    source: str
    entries: list = field(default_factory=list)

    @property
    def total_bytes(self) -> int:
        return sum(e.size for e in self.entries)


# ------------------------------------------------------------------------------------------------------------------
# Camera-like pictures


def write_camera_jpegs(folder: Path, count: int, seed: int = 0, size: tuple[int, int] = CAMERA_SIZE) -> list[Path]:
    """count JPEGs at quality 90 with camera EXIF; every fourth is stored rotated with Orientation 6, as portrait
    shots from a camera are. Made on every core: one 12 MP picture takes ~1 s of numpy, and a GPU box's benchmark
    wants hundreds. Each file depends on its seed alone, so the set is the same however it was made."""
    from concurrent.futures import ProcessPoolExecutor

    folder.mkdir(parents=True, exist_ok=True)
    jobs = [(folder, i, seed, size) for i in range(count)]
    workers = min(count, len(os.sched_getaffinity(0)))
    if workers <= 1:
        return [_write_camera_jpeg(*job) for job in jobs]
    import multiprocessing

    with ProcessPoolExecutor(workers, mp_context=multiprocessing.get_context("forkserver")) as pool:
        return list(pool.map(_write_camera_jpeg, *zip(*jobs)))


def _write_camera_jpeg(folder: Path, i: int, seed: int, size: tuple[int, int]) -> Path:
    from PIL import Image

    from dedupd.photos import photo

    image = photo(seed + i, size, sensor_noise=True)
    exif = Image.Exif()
    exif[0x010F] = "dedupd"  # Make
    exif[0x0110] = "bench camera"  # Model
    exif[0x0132] = f"2024:05:{1 + i % 28:02d} 12:00:{i % 60:02d}"  # DateTime
    exif[0x0112] = 6 if i % 4 == 3 else 1  # Orientation
    exif.get_ifd(0x8769)[0x9003] = exif[0x0132]  # DateTimeOriginal
    path = folder / f"IMG_{i:04d}.jpg"
    image.save(path, "JPEG", quality=90, exif=exif.tobytes())
    return path


# ------------------------------------------------------------------------------------------------------------------
# Random-weight checkpoints with the real architecture


def is_random_model(name: str) -> bool:
    return name.startswith(RANDOM_PREFIX)


def build_random_model(name: str, folder: Path, seed: int = 0) -> Path:
    """random:siglip2-base -> a Siglip2VisionModel checkpoint with SigLIP2-base's vision config (the defaults of
    Siglip2VisionConfig: hidden 768, MLP 3072, 12 layers, 12 heads, patch 16, 256 position patches) and the naflex
    processor of google/siglip2-base-patch16-naflex (max_num_patches 256, bilinear, mean/std 0.5), random weights."""
    kind = name.removeprefix(RANDOM_PREFIX)
    if kind not in RANDOM_MODELS:
        names = ", ".join(RANDOM_PREFIX + m for m in RANDOM_MODELS)
        raise UsageError(f"unknown random model '{name}': use one of {names}")
    import torch
    from transformers import Siglip2ImageProcessorPil, Siglip2VisionConfig, Siglip2VisionModel

    from dedupd.model.runtime import quiet_transformers

    torch.manual_seed(seed)
    folder.mkdir(parents=True, exist_ok=True)
    with quiet_transformers():
        Siglip2VisionModel(Siglip2VisionConfig()).eval().save_pretrained(folder)
        Siglip2ImageProcessorPil(max_num_patches=256, patch_size=16).save_pretrained(folder)
    return folder


# ------------------------------------------------------------------------------------------------------------------
# Loading


def embedder_settings(
    ref: str,
    settings: BenchSettings,
    max_patches: int | None = None,
    precision: str | None = None,
    preset: str | None = None,
):
    from dedupd.model.settings import EmbedderSettings, apply_preset

    chosen = EmbedderSettings(
        model=ref,
        batch_size=settings.batch_size,
        gpus=settings.gpus,
        gpu_memory_fraction=settings.gpu_memory_fraction or EmbedderSettings.gpu_memory_fraction,
        device=settings.device,
        max_patches=max_patches if max_patches is not None else settings.max_patches,
        threads=settings.threads,
        precision=precision or settings.precision or "auto",
        preset=preset or settings.preset or "default",
    )
    return apply_preset(chosen)


def load_bench_embedder(
    ref: str,
    settings: BenchSettings,
    max_patches: int | None = None,
    precision: str | None = None,
    preset: str | None = None,
):
    """The embedder exactly as the scan and the daemon load it (settings.threads already applied)."""
    from dedupd.model.runtime import build_embedder, pick_devices

    chosen = embedder_settings(ref, settings, max_patches, precision, preset)
    return build_embedder(chosen, pick_devices(chosen))


def with_core_split(settings: BenchSettings) -> BenchSettings:
    """settings with decode workers and torch threads chosen as the indexer chooses them (decode_pool.split_cores)."""
    from dedupd.ingest.decode_pool import split_cores
    from dedupd.model.runtime import pick_devices

    on_cpu = pick_devices(embedder_settings(settings.model or "", settings)) == ["cpu"]
    workers, threads = split_cores(on_cpu, settings.workers, settings.threads)
    return replace(settings, workers=workers, threads=threads)


def device_names(embedder) -> str:
    import torch

    names = []
    for device in embedder.devices:
        names.append(torch.cuda.get_device_name(device) if device.startswith("cuda") else "cpu")
    return ", ".join(names) or "cpu"


# ------------------------------------------------------------------------------------------------------------------
# The measurements


def measure_hash(paths: Sequence[bytes], cold: bool = False, threads: int = 1) -> float:
    """MB/s of the pipeline's hash stage over the files with `threads` hashing at once; warm: read once first so
    every page is cached."""
    from dedupd.ingest.hashing import content_hash
    from dedupd.ingest.pipeline import Counters, Work, hash_files
    from dedupd.store import FileRecord

    for path in paths:
        if cold:
            _drop_cache(path)
        else:
            content_hash(path)
    works = [Work(FileRecord(path=p, root=b"/", size=0, mtime_ns=0, device=0, inode=0)) for p in paths]
    total = sum(os.path.getsize(p) for p in paths)
    start = time.perf_counter()
    for _ in hash_files(Counters(), threads)(works):
        pass
    return total / 1e6 / (time.perf_counter() - start)


def _drop_cache(path: bytes) -> None:
    fd = os.open(path, os.O_RDONLY)
    try:
        os.fdatasync(fd)
        os.posix_fadvise(fd, 0, 0, os.POSIX_FADV_DONTNEED)
    finally:
        os.close(fd)


@contextmanager
def warm_pool(workers: int) -> Iterator[Any]:
    """A DecodePool with every worker process started and warm (modules imported), closed on the way out; None
    (decode inline) for 0 workers."""
    from dedupd.ingest.decode_pool import DecodePool

    if workers <= 0:
        yield None
        return
    pool = DecodePool(workers)
    try:
        pool.warm(wait=True)
        yield pool
    finally:
        pool.close()


def decode_all(paths: Sequence[bytes], pool, draft_side, max_pixels: int, spec) -> tuple[list, float]:
    """(decoded pixels in order, seconds) through the pool, or inline without one."""
    from dedupd.ingest.decode import Decoded
    from dedupd.ingest.decode_pool import decode_for_model

    start = time.perf_counter()
    if pool is None:
        results = [decode_for_model(p, draft_side, max_pixels, spec) for p in paths]
    else:
        results = [r for _, r in pool.map((p, (p, draft_side, max_pixels, spec)) for p in paths)]
    elapsed = time.perf_counter() - start
    bad = [r for r in results if not isinstance(r, Decoded)]
    if bad:
        raise UsageError(f"{len(bad)} of {len(paths)} images could not be decoded (first: {bad[0].reason})")
    return [r.image for r in results], elapsed


def embed_fn(embedder, spec) -> Callable[[list], np.ndarray]:
    return embedder.embed_prepared if spec is not None else embedder.embed


def time_model(embed: Callable[[list], np.ndarray], items: list, batch_size: int) -> tuple[np.ndarray, float, float]:
    """(vectors, seconds, CPU seconds of this process: all torch threads) for all items in batches, after a
    warm-up batch of up to 2 items."""
    embed(items[: min(2, len(items))])
    start, cpu = time.perf_counter(), time.process_time()
    parts = [embed(items[i : i + batch_size]) for i in range(0, len(items), batch_size)]
    return np.concatenate(parts), time.perf_counter() - start, time.process_time() - cpu


class NaiveLoop:
    """The baseline: Image.open().convert('RGB') at full size, the checkpoint's HF image processor, fp32 forward of
    the same vision tower, batch by batch, all in this process. (No EXIF rotation: the cheapest naive loop.)"""

    def __init__(self, ref: str, batch_size: int, device: str = "cpu"):
        import torch

        from dedupd.model.runtime import load_checkpoint
        from dedupd.model.settings import EmbedderSettings

        loaded = load_checkpoint(EmbedderSettings(model=ref))
        self.model = loaded.master.to(device=device, dtype=torch.float32).eval()
        self.processor, self.output = loaded.processor, loaded.family.output
        self.batch_size, self.device = batch_size, device
        self.warm = False

    def forward(self, images: list) -> np.ndarray:
        import torch

        inputs = self.processor(images=images, return_tensors="pt")
        with torch.inference_mode():
            vectors = getattr(self.model(**{k: v.to(self.device) for k, v in inputs.items()}), self.output)
        return torch.nn.functional.normalize(vectors.float(), dim=-1).cpu().numpy()

    def run(self, paths: Sequence[bytes]) -> tuple[np.ndarray, float]:
        from PIL import Image

        if not self.warm:  # one image through the whole loop first
            with Image.open(paths[0]) as im:
                self.forward([im.convert("RGB")])
            self.warm = True
        start = time.perf_counter()
        parts, batch = [], []
        for path in paths:
            with Image.open(path) as im:
                batch.append(im.convert("RGB"))
            if len(batch) >= self.batch_size:
                parts.append(self.forward(batch))
                batch = []
        if batch:
            parts.append(self.forward(batch))
        return np.concatenate(parts), time.perf_counter() - start

    def close(self) -> None:
        self.model = None


def end_to_end(files: _Files, embedder, config: Config, store_dir: Path, workers: int) -> tuple[Any, float]:
    """A real Indexer over the files into a fresh store; the model is loaded and the workers started beforehand."""
    from dedupd.ingest.indexer import Indexer
    from dedupd.model.loader import LazyEmbedder
    from dedupd.store import Store

    store = Store.open(store_dir)
    lazy = LazyEmbedder(config, loaded=embedder)
    indexer = Indexer(store, config, lazy, threaded=True)
    try:
        with warm_pool(workers) as indexer.pool:
            start = time.perf_counter()
            result = indexer.index(files.entries)
            return result, time.perf_counter() - start
    finally:
        indexer.close()


def end_to_end_without_store(files: _Files, embedder, config: Config, workers: int) -> tuple[Any, float]:
    """The Indexer's stages up to the model (hash, plan, decode workers, embed) with no LanceDB commit and no pair
    search, for a machine where lancedb cannot be installed (its wheel is larger than what a lent GPU box takes)."""
    from dedupd.ingest import pipeline
    from dedupd.ingest.decode_pool import hash_threads
    from dedupd.model.loader import LazyEmbedder

    lazy, counters = LazyEmbedder(config, loaded=embedder), pipeline.Counters()
    with warm_pool(workers) as pool:
        decode = pipeline.DecodeSettings(lazy.draft_side, config.scan.max_pixels, lazy.preprocess_spec, lambda: pool)
        stages = pipeline.stages_to_model({}, pipeline.ContentBook({}), counters, decode, lazy, hash_threads())
        start = time.perf_counter()
        for _ in pipeline.run_stages(files.entries, stages):
            pass
        return SimpleNamespace(counters=counters), time.perf_counter() - start


def measure_search(count: int, dim: int, k: int, floor: float, seed: int = 0) -> tuple[float, str]:
    """(seconds, backend) to index `count` random unit vectors and search each against all for its top k (what a
    scan does for its new vectors). Random unit vectors are the worst case for an approximate index's recall, not
    for its speed."""
    from dedupd.dedup.search import VectorIndex

    rng = np.random.default_rng(seed)
    matrix = rng.standard_normal((count, dim), dtype=np.float32)
    matrix /= np.linalg.norm(matrix, axis=1, keepdims=True)
    contents = [f"{i:016x}{seed:016x}" for i in range(count)]
    start = time.perf_counter()
    index = VectorIndex(dim)
    index.add(contents, matrix)
    index.neighbours(contents, matrix, k, floor)
    return time.perf_counter() - start, str(getattr(index, "kind", "flat"))


def cosine_agreement(reference: np.ndarray, other: np.ndarray) -> dict[str, float]:
    cos = np.sum(reference * other, axis=1)
    return {"mean": float(cos.mean()), "min": float(cos.min())}


def cross_cosine(vectors: np.ndarray) -> float:
    """Mean cosine between different images: how close unrelated pictures already are (1.0 = the model cannot tell
    them apart, so an agreement near 1 says little)."""
    n = len(vectors)
    if n < 2:
        return float("nan")
    sims = vectors @ vectors.T
    return float((sims.sum() - np.trace(sims)) / (n * n - n))


# ------------------------------------------------------------------------------------------------------------------
# The command


def _files(settings: BenchSettings, tmp: Path) -> _Files:
    from dedupd.ingest.walk import ScanOptions, scan
    from dedupd.paths import normalise_root

    if settings.folder:
        if not os.path.isdir(settings.folder):
            raise UsageError(f"{settings.folder}: not a directory")
        root = normalise_root(settings.folder)
        entries = list(scan([root], ScanOptions()))
        if settings.images:
            entries = entries[: settings.images]
        source = f"{len(entries)} images from {os.fsdecode(root)}"
    else:
        count = settings.images or DEFAULT_IMAGES
        log.info("generating %d camera-like %dx%d JPEGs", count, *settings.size)
        write_camera_jpegs(tmp / "photos", count, settings.seed, settings.size)
        root = normalise_root(tmp / "photos")
        entries = list(scan([root], ScanOptions()))
        source = f"{count} generated {settings.size[0]}x{settings.size[1]} JPEGs (q90, EXIF)"
    if not entries:
        raise UsageError("no images to benchmark")
    return _Files([e.path for e in entries], root, source, entries)


def _model_ref(settings: BenchSettings, tmp: Path) -> str:
    model = settings.model or ""  # run_bench has filled it in from model.name
    if is_random_model(model):
        log.info("building %s (random weights)", model)
        return str(build_random_model(model, tmp / "model", settings.seed))
    return model


def resolve_settings(settings: BenchSettings, config: Config) -> BenchSettings:
    """Every setting the command line left open, from the config (model.*, scan.decode_workers), as a scan has it."""
    if settings.model is None:
        from dedupd.config import DEFAULT_MODEL

        settings = replace(settings, model=config.model.name, fallback_random=config.model.name == DEFAULT_MODEL)
    m = config.model
    settings = replace(
        settings,
        batch_size=settings.batch_size or m.batch_size,
        device=settings.device or m.device,
        gpus=settings.gpus if settings.gpus is not None else m.gpus,
        gpu_memory_fraction=settings.gpu_memory_fraction or m.gpu_memory_fraction,
        max_patches=settings.max_patches if settings.max_patches is not None else m.max_patches,
        workers=settings.workers if settings.workers is not None else config.scan.decode_workers,
        threads=settings.threads or m.threads,
        precision=settings.precision or m.precision,
        preset=settings.preset or m.preset,
    )
    model = settings.model or ""
    if is_random_model(model) and model.removeprefix(RANDOM_PREFIX) not in RANDOM_MODELS:
        raise UsageError(
            f"unknown random model '{settings.model}': use one of {', '.join(RANDOM_PREFIX + m for m in RANDOM_MODELS)}"
        )
    return settings


def run_bench(settings: BenchSettings, config: Config | None = None) -> dict[str, Any]:
    """Every measurement; returns the figures (see the module docstring for the keys)."""
    config = (config or Config()).model_copy(deep=True)
    # The threads are applied when the embedder loads, as in a scan; with_core_split chooses the workers too.
    settings = with_core_split(resolve_settings(settings, config))
    load_start = os.getloadavg()[0]
    with tempfile.TemporaryDirectory(prefix="dedupd-bench-") as tmp_name, ExitStack() as stack:
        files = _files(settings, Path(tmp_name))
        settings, ref, embedder, note = _load_embedder(settings, Path(tmp_name))
        stack.callback(embedder.close)
        run = _BenchRun(settings, config, files, ref, embedder, Path(tmp_name), stack)
        out = run.describe(note) | run.hash_figures()
        items = run.decode_figures(out)
        vectors = run.speed_rounds(items, out)
        if settings.knobs:
            out["knobs"] = measure_knobs(
                ref, settings, files.paths, out["workers"], config.scan.max_pixels, vectors, out
            )
        stack.close()  # free the model before the search allocates its vectors
        out |= _search_figures(settings, out["dim"], config)
    out["load_avg"] = [round(load_start, 2), round(os.getloadavg()[0], 2)]
    return out


def _load_embedder(settings: BenchSettings, tmp: Path) -> tuple[BenchSettings, str, Any, str]:
    """(settings, checkpoint folder or id, embedder, note): the default model falls back to random weights of the
    same architecture when it cannot be loaded (offline), with a note saying so."""
    try:
        ref = _model_ref(settings, tmp)
        return settings, ref, load_bench_embedder(ref, settings), ""
    except ModelLoadError as exc:
        if not settings.fallback_random:
            raise ModelLoadError(
                f"{exc} (offline, `--model {RANDOM_PREFIX}siglip2-base` benchmarks the "
                "SigLIP2-base architecture with random weights)"
            ) from exc
        note = f"{settings.model} could not be loaded; the same architecture with random weights was measured"
        log.warning("%s: %s", note, exc)
    settings = replace(settings, model=f"{RANDOM_PREFIX}siglip2-base")
    ref = _model_ref(settings, tmp)
    return settings, ref, load_bench_embedder(ref, settings), note


@dataclass
class _BenchRun:
    """One bench run's phases, sharing the loaded model, the files and what is closed at the end (`stack`)."""

    settings: BenchSettings
    config: Config
    files: _Files
    ref: str
    embedder: Any
    tmp: Path
    stack: ExitStack

    def describe(self, note: str) -> dict[str, Any]:
        import torch

        settings, embedder = self.settings, self.embedder
        out: dict[str, Any] = {
            "images": len(self.files.paths),
            "device": device_names(embedder),
            "source": self.files.source,
            "model": settings.model,
            "model_id": embedder.model_id,
            "family": embedder.family,
            "dim": embedder.dim,
            "precision": embedder_settings(self.ref, settings).precision,  # what the preset resolved to
            "preset": settings.preset,
            "max_patches": _max_patches(embedder),
            "batch_size": embedder.batch_size,
            "workers": settings.workers or 0,
            "threads": torch.get_num_threads(),
            "cpu_cores": len(os.sched_getaffinity(0)),
            "store": settings.store,
        }
        return out | ({"model_note": note} if note else {})

    def hash_figures(self) -> dict[str, Any]:
        from dedupd.ingest.decode_pool import hash_threads

        log.info("hashing")
        paths, threads = self.files.paths, hash_threads()
        return {
            "hash_threads": threads,
            "hash_mb_s": measure_hash(paths, threads=threads),
            "hash_mb_s_1_thread": measure_hash(paths),
            "hash_cold_mb_s": measure_hash(paths, cold=True, threads=threads),
            "bytes": self.files.total_bytes,
        }

    def decode_figures(self, out: dict[str, Any]) -> list:
        """Decodes the files `repeat` times through warm workers; records the best rate, returns the model inputs."""
        spec, workers, decode_s = self.embedder.preprocess_spec, out["workers"], []
        with warm_pool(workers) as pool:
            for _ in range(self.settings.repeat):
                log.info("decoding with %d workers", workers)
                draft, max_pixels = self.embedder.draft_side, self.config.scan.max_pixels
                items, seconds = decode_all(self.files.paths, pool, draft, max_pixels, spec)
                decode_s.append(seconds)
        out["decode_img_s"] = len(self.files.paths) / min(decode_s)
        out["decode_img_s_per_worker"] = out["decode_img_s"] / max(1, workers)
        out["preprocess_in_workers"] = spec is not None
        return items

    def speed_rounds(self, items: list, out: dict[str, Any]) -> np.ndarray:
        """Model only, end to end and the naive loop in turns, so that load from elsewhere on the machine during one
        round touches all three; each figure is the best round. Returns the model-only vectors."""
        embedder, repeat = self.embedder, self.settings.repeat
        self.config.scan.decode_workers = out["workers"]
        self.config.model.batch_size = embedder.batch_size
        naive = self._naive_loop()
        rounds: dict[str, list[float]] = {"model_s": [], "model_cpu_s": [], "end_to_end_s": [], "naive_s": []}
        for i in range(repeat):
            log.info("model only (round %d of %d)", i + 1, repeat)
            embed = embed_fn(embedder, embedder.preprocess_spec)
            vectors, seconds, cpu_s = time_model(embed, items, embedder.batch_items)
            rounds["model_s"].append(seconds)
            rounds["model_cpu_s"].append(cpu_s)
            log.info("end to end (round %d of %d)", i + 1, repeat)
            rounds["end_to_end_s"].append(self._end_to_end_round(out, i))
            if naive is not None:
                log.info("naive loop (round %d of %d)", i + 1, repeat)
                rounds["naive_s"].append(naive.run(self.files.paths)[1])
        out |= _rates(len(self.files.paths), rounds, repeat)
        out |= core_budget(out, min(rounds["model_cpu_s"]))  # unrounded: rounds_s keeps milliseconds only
        out["cross_image_cosine"] = cross_cosine(vectors)
        return vectors

    def _naive_loop(self) -> NaiveLoop | None:
        if not self.settings.naive:
            return None
        device = self.embedder.devices[0] if self.embedder.devices else "cpu"
        return self.stack.enter_context(closing(NaiveLoop(self.ref, self.embedder.batch_items, device)))

    def _end_to_end_round(self, out: dict[str, Any], i: int) -> float:
        files, workers = self.files, out["workers"]
        if self.settings.store:
            result, seconds = end_to_end(files, self.embedder, self.config, self.tmp / f"store{i}", workers)
        else:
            result, seconds = end_to_end_without_store(files, self.embedder, self.config, workers)
        if result.counters.seen != len(files.paths):
            raise RuntimeError(f"end to end indexed {result.counters.seen} of {len(files.paths)} files")
        out["end_to_end_embedded"] = result.counters.embedded
        return seconds


def _rates(n: int, rounds: dict[str, list[float]], repeat: int) -> dict[str, Any]:
    rates: dict[str, Any] = {
        "model_img_s": n / min(rounds["model_s"]),
        "end_to_end_img_s": n / min(rounds["end_to_end_s"]),
    }
    rates["end_to_end_vs_model"] = rates["end_to_end_img_s"] / rates["model_img_s"]
    if rounds["naive_s"]:
        rates["naive_img_s"] = n / min(rounds["naive_s"])
        rates["speedup_vs_naive"] = rates["end_to_end_img_s"] / rates["naive_img_s"]
    rates["repeat"] = repeat
    rates["rounds_s"] = {k: [round(v, 3) for v in vs] for k, vs in rounds.items() if vs}
    return rates


def core_budget(out: dict[str, Any], model_cpu_s: float) -> dict[str, Any]:
    """What one image costs the machine's cores in each stage, and the best rate any pipeline could reach with them.

    On the CPU the model, the decode workers and the hash share the same cores, so end to end can never reach model
    only: when the model gets cheap (the fast preset), decoding a 12 MP JPEG costs about as much as the model. The
    ceiling is min(model only, cores / CPU-seconds per image of all three); end_to_end_vs_ceiling then says how much
    of what the cores allow the pipeline delivers. On a GPU the model's CPU cost is only the feeding thread's."""
    n, cores = out["images"], out["cpu_cores"]
    cost = {
        "model": model_cpu_s / n,  # the model-only round's CPU seconds, every torch thread counted
        "decode": min(max(1, out["workers"]), cores) / out["decode_img_s"],  # each busy worker holds one core
        "hash": out["bytes"] / n / (out["hash_mb_s_1_thread"] * 1e6),
    }
    ceiling = min(out["model_img_s"], cores / sum(cost.values()))
    return {
        # Four significant figures, not four places: a tiny model's costs are thousandths of a second, and the ceiling
        # must follow from the figures printed beside it.
        "cpu_s_per_img": {stage: float(f"{seconds:.4g}") for stage, seconds in cost.items()},
        "ceiling_img_s": ceiling,
        "end_to_end_vs_ceiling": out["end_to_end_img_s"] / ceiling,
    }


def _search_figures(settings: BenchSettings, dim: int, config: Config) -> dict[str, Any]:
    if not settings.vectors:
        return {"search_s": None}
    log.info("search over %d vectors", settings.vectors)
    search_s, backend = measure_search(settings.vectors, dim, config.dedup.k, config.dedup.floor, settings.seed)
    return {"vectors": settings.vectors, "search_s": search_s, "search_backend": backend}


def _max_patches(embedder) -> int | None:
    spec = embedder.preprocess_spec
    return int(spec.max_num_patches) if spec is not None and spec.naflex else None


def measure_knobs(
    ref: str,
    settings: BenchSettings,
    paths: Sequence[bytes],
    workers: int,
    max_pixels: int,
    reference: np.ndarray,
    base: dict[str, Any],
) -> list[dict[str, Any]]:
    """Model-only speed and agreement (cosine with the default's vector of the same picture) of each speed knob."""
    rows = [{"knob": "default", "model_img_s": base["model_img_s"], "cosine_mean": 1.0, "cosine_min": 1.0}]
    for name, patches, precision, preset in KNOBS:
        log.info("knob %s", name)
        try:
            embedder = load_bench_embedder(ref, settings, max_patches=patches, precision=precision, preset=preset)
        except ModelLoadError as exc:
            rows.append({"knob": name, "error": str(exc)})
            continue
        with closing(embedder):
            if patches is not None and embedder.family != "siglip2-naflex":
                continue
            with warm_pool(workers) as pool:
                items, _ = decode_all(paths, pool, embedder.draft_side, max_pixels, embedder.preprocess_spec)
            embed = embed_fn(embedder, embedder.preprocess_spec)
            timed = [time_model(embed, items, embedder.batch_items) for _ in range(settings.repeat)]
        vectors, seconds = timed[0][0], min(t for _, t, _ in timed)
        agreement = cosine_agreement(reference, vectors)
        rows.append(
            {
                "knob": name,
                "model_img_s": len(paths) / seconds,
                "speedup": len(paths) / seconds / base["model_img_s"],
                "cosine_mean": agreement["mean"],
                "cosine_min": agreement["min"],
            }
        )
    return rows


# ------------------------------------------------------------------------------------------------------------------
# Output


def format_table(r: dict[str, Any]) -> str:
    rounds = f"; best of {r['repeat']} rounds" if r.get("repeat", 1) > 1 else ""
    lines = [
        f"dedupd bench: {r['source']}",
        (
            f"  model {r['model']} ({r['family']}, {r['max_patches'] or '-'} patches, {r['precision']}, batch "
            f"{r['batch_size']}); device {r['device']}; {r['cpu_cores']} cores, torch threads {r['threads']}, "
            f"decode workers {r['workers']}"
        ),
        (
            f"  {'decode':<14}{r['decode_img_s']:9.2f} img/s  ({r['decode_img_s_per_worker']:.2f} per worker; "
            f"JPEG draft{' + preprocessing' if r['preprocess_in_workers'] else ''} in the workers)"
        ),
        f"  {'model only':<14}{r['model_img_s']:9.2f} img/s  (inputs decoded beforehand{rounds})",
        (
            f"  {'end to end':<14}{r['end_to_end_img_s']:9.2f} img/s  ({r['end_to_end_vs_model']:.2f}x model only; "
            f"issue target on 2 cores >= 0.85)"
        ),
        (
            f"  {'ceiling':<14}{r['ceiling_img_s']:9.2f} img/s  (end to end is {r['end_to_end_vs_ceiling']:.2f}x; "
            f"CPU-s per image: {_costs(r['cpu_s_per_img'])} on {r['cpu_cores']} cores)"
        ),
    ]
    if r.get("model_note"):
        lines.insert(2, f"  note: {r['model_note']}")
    if "naive_img_s" in r:
        lines.append(
            f"  {'naive loop':<14}{r['naive_img_s']:9.2f} img/s  (end to end is {r['speedup_vs_naive']:.2f}x naive; "
            f"issue target >= 3.5)"
        )
    lines.append(
        f"  {'hash':<14}{r['hash_mb_s']:9.0f} MB/s   ({r['hash_threads']} threads, page cache warm; "
        f"{r['hash_mb_s_1_thread']:.0f} MB/s with 1; {r['hash_cold_mb_s']:.0f} MB/s after dropping the cached pages)"
    )
    if r.get("search_s") is not None:
        lines.append(
            f"  {'search':<14}{r['search_s']:9.2f} s      ({r['vectors']} vectors of dim {r['dim']}, each against all,"
            f" top k, {r.get('search_backend', 'flat')} index)"
        )
    for row in r.get("knobs", []):
        if "error" in row:
            lines.append(f"  knob {row['knob']:<16} failed: {row['error']}")
        else:
            lines.append(
                f"  knob {row['knob']:<16}{row['model_img_s']:7.2f} img/s model only, cosine with default "
                f"mean {row['cosine_mean']:.4f} min {row['cosine_min']:.4f}"
            )
    if r.get("knobs"):
        lines.append(f"  (mean cosine between different images with the default: {r['cross_image_cosine']:.4f})")
    lines.append(f"  load average {r['load_avg'][0]} at start, {r['load_avg'][1]} at end")
    return "\n".join(lines)


def _costs(costs: dict[str, float]) -> str:
    return ", ".join(f"{stage} {seconds:.3f}" for stage, seconds in costs.items())


# Each number flag's field and bounds (at least, at most), checked before any image is generated or model loaded:
# out of range, each once failed deep inside (pydantic, torch, numpy) with an 'unexpected' error. (--batch-size goes
# through the config's model.batch_size check.)
_FLAG_BOUNDS: dict[str, tuple[str, int, int | None]] = {
    "--images": ("images", 1, None),
    "--repeat": ("repeat", 1, None),
    "--vectors": ("vectors", 0, None),
    "--workers": ("workers", 0, None),
    "--threads": ("threads", 1, MAX_THREADS),
    "--max-patches": ("max_patches", 1, None),
}


def check_flags(settings: BenchSettings) -> None:
    """UsageError naming the first number flag out of its bounds."""
    for flag, (name, least, most) in _FLAG_BOUNDS.items():
        value = getattr(settings, name)
        if value is not None and value < least:
            raise UsageError(f"{flag} must be at least {least}")
        if value is not None and most is not None and value > most:
            raise UsageError(f"{flag} must be at most {most}")


def bench_command(settings: BenchSettings, config: Config, as_json: bool, echo: Callable[[str], None] = print) -> int:
    import json

    check_flags(settings)
    if settings.precision is not None and settings.precision not in PRECISIONS:
        raise UsageError(f"--precision must be {' or '.join(PRECISIONS)}")
    result = run_bench(settings, config)
    echo(json.dumps(result, sort_keys=True) if as_json else format_table(result))
    return 0


def settings_from_args(args) -> BenchSettings:
    return BenchSettings(
        folder=args.folder,
        images=args.images,
        model=args.model,
        vectors=args.vectors,
        batch_size=args.batch_size,
        workers=args.workers,
        threads=args.threads,
        max_patches=args.max_patches,
        precision=args.precision,
        preset=args.preset,
        naive=args.naive,
        knobs=args.knobs,
        size=parse_size(args.size),
        repeat=args.repeat,
        store=args.use_store,
    )


def parse_size(text: str | None) -> tuple[int, int]:
    if not text:
        return CAMERA_SIZE
    try:
        width, height = (int(v) for v in text.lower().split("x"))
    except ValueError:
        raise UsageError(f"--size {text}: use WIDTHxHEIGHT, e.g. 4000x3000") from None
    if width < 16 or height < 16:
        raise UsageError(f"--size {text}: at least 16x16")
    return width, height
