"""The bulk embed on a Ray cluster: decode + preprocess as Ray Data CPU tasks, the model as an actor pool.

The driver (the `dedupd scan` or `dedupd run` process) still walks, hashes, plans and commits: this module only
replaces the pipeline's decode and embed stages with one stage that streams the carriers of new contents through
Ray Data and hands the results back, batch by batch as they arrive, to the pipeline's own commit stage. So vectors
land in the same store under the same (content, model) keys, committed every scan.commit_every items through the
Store (the one writer, under the writer lock); a killed driver loses at most what was in flight, and a rerun finds
the committed contents in the store and embeds only the rest.

The cluster starts on the first carrier hashing yields, not after the whole tree is hashed: the stage hands each
carrier's path to a FeedQueue actor as it arrives, and the dataset's one read task (FeedSource) takes them from
there, so hashing on the driver and embedding on the cluster overlap and one dataset (one model load) serves the
whole pass. The driver holds at most a bounded number of carriers waiting for their answer (_InFlight).

The workers run the same code as the local path: ingest.decode_pool.decode_for_model (decode, then the model's
preprocessing) in the tasks, model.loader.LazyEmbedder in the actors. They must read the photos at the same paths
(a shared filesystem mounted alike on every node) and have dedupd installed.

The driver numbers the blocks of paths it ships, and the read task asks for them by number and yields each as it
comes; the feed does not forget a block at once. So a read task whose worker died and that Ray Data retries yields
the same outputs again: Ray drops a retried streaming task's outputs up to the count it already has, and the blocks
after those are the ones the dead task never reported. A feed actor restarted after its process died has lost the
blocks it held; the driver sees the restart and ships every file still waiting for an answer again.

A file that kills its decode worker (a hostile file crashing a C decoder) fails its whole task on every retry, and
with it every file of that task's block (about DECODE_BATCH files). Locally the decode pool blames the one file;
here, after the streaming pass, the files left without an answer are decoded once more, one file per task and
without the model, and only a file whose own task still died on every retry is recorded unreadable. The rest are
embedded in a second pass. Blame rests on a decode task alone, never on a model replica's death. When Ray itself
fails nobody is blamed: a pass that raises ends the run, as before, and a failed one-file pass leaves those files
pending for the next run, as a stopped run leaves what it did not reach.

Only this package imports ray; nothing reaches it unless a Ray address is configured.
"""

from __future__ import annotations

import asyncio
import contextlib
import functools
import itertools
import logging
import os
import queue
import socket
import threading
import time
import uuid
import warnings
from collections.abc import Callable, Iterable, Iterator
from dataclasses import dataclass, replace
from typing import Any

import numpy as np

# Run under `uv run`, Ray would start every worker through `uv run` with this directory uploaded as its working dir
# (slow, and wrong on a cluster): dedupd's workers use the environment installed on each node.
os.environ.setdefault("RAY_ENABLE_UV_RUN_RUNTIME_ENV", "0")

import pyarrow as pa  # noqa: E402
import ray  # noqa: E402 - after the environment switch above, which Ray reads at import
import ray.data  # noqa: E402
from ray.data.block import BlockMetadata  # noqa: E402
from ray.data.datasource import Datasource, ReadTask  # noqa: E402

from dedupd.config import Config
from dedupd.errors import ClusterError
from dedupd.ingest import pipeline
from dedupd.ingest.decode import decoders
from dedupd.ingest.decode_pool import Decoded, DecodeFn, Failed, decode_for_model
from dedupd.ingest.indexer import Indexer
from dedupd.model.loader import LazyEmbedder, embedder_settings
from dedupd.model.runtime import load_processing
from dedupd.model.settings import fast_precision

log = logging.getLogger("dedupd")
RAY_DATA_LOGGER = "ray.data"
RAY_DATA_PROGRESS_LOGGER = "ray.data._internal.progress"  # warns, once a process, that the bars we turn off are off

DECODE_BATCH = 8  # files per decode task call: small, so a file that kills its worker costs few retries
DECODE_RETRIES = 3  # a worker killed under a decode task: retried; one file that kills it every time: blamed
PROBE_WINDOW = 256  # one-file decode probes in flight at once while finding a file that kills its worker
DIED_ON_CLUSTER = "decoder process died on the cluster (corrupt or hostile file)"
GPU_BATCH = 128  # per model replica, as the local path's default per GPU
CPU_BATCH = 16
FEED_WAIT_S = 1.0  # how long the read task waits on an empty feed before it asks again
CLOSE_AGAIN_S = 2.0  # a feed actor restarted after its close forgot it: the driver closes it again this often
STALL_S = 120.0  # nothing answered for this long while the driver holds its most: the bound doubles (_InFlight)
LOOK_S = 0.5  # how often a feeder waiting for room looks whether the run was stopped (a stop event notifies no one)
KEEP_BLOCKS = 128  # blocks the feed keeps behind its read task, to hand the same blocks again to a retried read task
WATCH_S = 1.0  # how often the driver asks whether its feed actor was restarted (and lost the blocks it held)
OUT_QUEUE = 64  # items waiting for the stage's consumer (the commit stage), from the feeder and the stream
# Every block leaves its task as soon as it is made. Ray Data otherwise gathers a task's blocks up to 128 MiB, and
# the feed's read task, which runs for the whole pass, would hand on nothing until hashing ended.
BLOCK_BYTES = 1


@dataclass(frozen=True)
class Resources:
    gpus: int
    cpus: int
    nodes: int


class RayCluster:
    """A connection to the Ray runtime named by cluster.ray_address, for the duration of a bulk phase.

    Connecting happens first, before the store is touched, so an unreachable cluster changes nothing."""

    def __init__(self, address: str):
        self.address = address
        self.started = _connect(address)  # False when this process was already connected (tests share one)
        _quiet_ray_data()  # on either path: the datasets this process builds rely on its settings

    def embed_stage(self, indexer: Indexer) -> Callable[[pipeline.Counters], pipeline.Stage]:
        """What Indexer.to_model takes: the Ray stage in place of the local decode and embed stages."""
        return RayEmbed(self, indexer.config, indexer.model, indexer.stop, indexer.decode).stage

    def settle(self, config: Config) -> Config:
        """`config` with the fast preset resolved for where this cluster runs the model (see settled_for)."""
        return settled_for(config, usable(self.resources(), config))

    def resources(self) -> Resources:
        total = ray.cluster_resources()
        nodes = sum(1 for n in ray.nodes() if n.get("Alive"))
        return Resources(int(total.get("GPU", 0)), int(total.get("CPU", 0)), nodes)

    def close(self) -> None:
        if self.started and ray.is_initialized():
            ray.shutdown()

    def __enter__(self) -> RayCluster:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()


def _connect(address: str) -> bool:
    if ray.is_initialized():
        return False
    if address not in ("local", "auto"):
        _reachable(address)  # ray.init retries an unreachable address for ever
    try:
        start_ray(address)
    except Exception as exc:  # noqa: BLE001 - Ray raises plain Exception too (a local runtime that did not start)
        raise ClusterError(f"cluster.ray_address {address}: cannot join the Ray cluster: {_first_line(exc)}") from None
    return True


def start_ray(address: str, **options: Any) -> None:
    """ray.init; a local runtime is tried twice: Ray gives its raylet 30 s to register, which a loaded machine can
    miss (seen at load 13 on 2 cores)."""
    settings = {"logging_level": logging.WARNING, "log_to_driver": False, "include_dashboard": False, **options}
    for attempt in (1, 2):
        try:
            ray.init(address=address, configure_logging=False, **settings)
            return
        except Exception:
            if address != "local" or attempt == 2:
                raise
            log.warning("the local Ray runtime did not start in time; trying once more")
            ray.shutdown()


def _reachable(address: str, timeout: float = 5.0) -> None:
    host, _, port = address.rpartition(":")
    try:
        with socket.create_connection((host, int(port)), timeout=timeout):
            pass
    except (OSError, ValueError) as exc:
        reason = exc.strerror if isinstance(exc, OSError) and exc.strerror else exc
        raise ClusterError(f"cluster.ray_address {address}: cannot reach the Ray cluster: {reason}") from None


def _quiet_ray_data() -> None:
    """dedupd draws its own bar and log lines from the stream; Ray Data's bars and INFO lines would interleave."""
    context = ray.data.DataContext.get_current()
    context.enable_progress_bars = False
    context.max_errored_blocks = -1  # a batch that failed every retry: skipped, its files decoded again one by one
    logging.getLogger(RAY_DATA_LOGGER).setLevel(logging.WARNING)  # Ray's own loggers, not ours
    logging.getLogger(RAY_DATA_PROGRESS_LOGGER).setLevel(logging.ERROR)


# --- the work on the cluster --------------------------------------------------------------------------------------


_FORGOTTEN = Failed("a placeholder for a block the feed had forgotten or lost")  # its answer matches no carrier


def decode_batch(
    batch: dict[str, np.ndarray], decode: DecodeFn, draft_side: int | None, max_pixels: int, spec: Any
) -> dict:
    """A Ray Data task: the local path's decode function (decode_for_model) for each file of the batch."""
    results = [decode(bytes(path), draft_side, max_pixels, spec) if path else _FORGOTTEN for path in batch["path"]]
    return {"path": batch["path"], "result": _objects(results)}


def decode_probe(path: bytes, decode: DecodeFn, draft_side: int | None, max_pixels: int, spec: Any) -> bool:
    """A Ray task: decode one file and drop the pixels. Only whether its worker survives matters (see _guilty)."""
    decode(path, draft_side, max_pixels, spec)
    return True


_probe = ray.remote(num_cpus=1, max_retries=DECODE_RETRIES)(decode_probe)


class FeedQueue:
    """A Ray actor: the carriers' paths the driver has handed on, in blocks the driver numbers, for the read task.

    The read task asks for the blocks in order. A block is kept for KEEP_BLOCKS after the read task has moved past
    it, so a retried read task gets the same blocks again, and a block forgotten since is answered by DECODE_BATCH
    empty paths, as many rows as any block holds: Ray drops a retried task's outputs up to the count it already has,
    and an output can be as small as one row (BLOCK_BYTES; one empty path per block was seen to let real rows be
    dropped), so it drops at most what it had, never a row that follows. An async actor may run calls out of their
    submission order, so blocks are kept by number and `close` says how many the driver shipped in all.

    A feed restarted after its process died starts empty. It hands out nothing until the driver, which asks every
    WATCH_S who the feed is (`incarnation`), has seen the restart and said where it `resume`s: every file still
    without an answer is shipped again from that block on, and the blocks below it are gone with the dead feed."""

    def __init__(self) -> None:
        self.blocks: dict[int, list[bytes]] = {}
        self.incarnation_id = uuid.uuid4().hex
        self.restarted = ray.get_runtime_context().was_current_actor_reconstructed
        self.base: int | None = None if self.restarted else 0  # the first block of this feed; None until resumed
        self.forgotten = 0  # the blocks below this number were dropped
        self.received = 0  # blocks from `base` on
        self.least_total = 0  # a close for fewer blocks is a stale one, retried from before a restart
        self.total: int | None = None  # how many blocks the driver shipped in all, once it has closed the feed
        self.ready = asyncio.Event()

    async def incarnation(self) -> tuple[str, bool]:
        return self.incarnation_id, self.restarted

    async def put(self, number: int, paths: list[bytes]) -> None:
        if number >= self.forgotten and number not in self.blocks:
            self.blocks[number] = paths
            self.received += 1
            self.ready.set()

    async def resume(self, first: int, end: int) -> None:
        """The driver has seen this feed restarted: it ships what still waits for an answer as blocks first..end."""
        for number in [n for n in self.blocks if n < first]:
            del self.blocks[number]
        self.base = self.forgotten = first
        self.received, self.least_total = len(self.blocks), end
        if self.total is not None and self.total < end:
            self.total = None  # a close from before the restart
        self.ready.set()

    async def close(self, total: int) -> None:
        if total >= self.least_total:
            self.total = total
            self.ready.set()

    async def take(self, number: int, wait: float) -> list[bytes] | None:
        """Block `number`; empty paths for a block forgotten; [] when it did not come within `wait` seconds; None once
        closed and read to the end."""
        if self.base is not None:
            self._forget(number - KEEP_BLOCKS)
            if number < self.forgotten:
                return [b""] * DECODE_BATCH  # at least the rows it stands for: none of the next is dropped
        if number not in self.blocks and not self._closed():
            self.ready.clear()
            with contextlib.suppress(asyncio.TimeoutError):
                await asyncio.wait_for(self.ready.wait(), wait)
        if number in self.blocks:
            return self.blocks[number]
        return None if self._closed() else []

    def _forget(self, below: int) -> None:
        for number in range(self.forgotten, below):
            self.blocks.pop(number, None)
        self.forgotten = max(self.forgotten, below)

    def _closed(self) -> bool:
        return self.total is not None and self.base is not None and self.base + self.received >= self.total


# num_cpus=0: it only moves paths. Restarted and its calls retried if its process dies (see the class).
_FeedActor = ray.remote(num_cpus=0, max_restarts=-1, max_task_retries=-1)(FeedQueue)


def read_feed(feed: Any) -> Iterator[pa.Table]:
    """The dataset's one read task: the feed's blocks in order as they come, until it closes. Retried, it starts
    again from block 0 and yields the same blocks, which Ray Data cuts into the same outputs (BLOCK_BYTES)."""
    number = 0
    while (paths := ray.get(feed.take.remote(number, FEED_WAIT_S))) is not None:
        if paths:
            number += 1
            yield pa.table({"path": pa.array(paths, pa.binary())})


class FeedSource(Datasource):
    """A Ray Data source that reads a FeedQueue: a dataset whose rows are not known when it starts."""

    def __init__(self, feed: Any):
        self.feed = feed

    def estimate_inmemory_data_size(self) -> None:
        return None

    def get_read_tasks(self, parallelism: int, per_task_row_limit: int | None = None, data_context: Any = None) -> list:
        feed, unknown = self.feed, BlockMetadata(num_rows=None, size_bytes=None, input_files=None, exec_stats=None)
        return [ReadTask(lambda: read_feed(feed), unknown)]


class ModelReplica:
    """A Ray Data actor: one model replica (one GPU, or CPU threads), loaded once, restarted by Ray if killed."""

    def __init__(self, config: Config, model_id: str):
        self.model = LazyEmbedder(config)
        loaded = self.model.get()  # on the actor's GPU (Ray sets CUDA_VISIBLE_DEVICES), else the CPU
        if loaded.model_id != model_id:
            raise RuntimeError(model_mismatch(socket.gethostname(), loaded.model_id, model_id))

    def __call__(self, batch: dict[str, np.ndarray]) -> dict:
        results = list(batch["result"])
        ok = [i for i, r in enumerate(results) if isinstance(r, Decoded)]
        # Raw float32 bytes, b"" for a file that did not decode: one column type whatever the batch holds (Ray Data
        # refuses a column that mixes tensors and objects).
        vectors = [b""] * len(results)
        if ok:
            for i, vector in zip(ok, self.model.embed([results[i].image for i in ok])):
                vectors[i] = np.asarray(vector, dtype=np.float32).tobytes()
        # Pixels are not sent back: the driver needs the facts (size, format, capture), not megabytes of patches.
        facts = [_without_pixels(r) for r in results]
        return {"path": batch["path"], "vector": _objects(vectors), "result": _objects(facts)}


def model_mismatch(host: str, theirs: str, ours: str) -> str:
    """Why a replica refuses to embed: its checkpoint is not the driver's (the settings are the driver's, settled)."""
    where = "install the same checkpoint at the same path on every node"
    return f"model on {host} is {theirs}, the driver's is {ours}: {where}"


def _without_pixels(result: Decoded | Failed) -> Decoded | Failed:
    return replace(result, image=None) if isinstance(result, Decoded) else result


def _objects(values: list) -> np.ndarray:
    array = np.empty(len(values), dtype=object)
    array[:] = values
    return array


Carriers = dict[bytes, list[pipeline.Work]]  # the carriers waiting for an answer, by path (see _InFlight)


# --- the stage on the driver --------------------------------------------------------------------------------------


class RayEmbed:
    """The pipeline stage that replaces decode_images + embed_images for a bulk run on the cluster."""

    def __init__(
        self,
        cluster: RayCluster,
        config: Config,
        model_id: str,
        stop: threading.Event | None = None,
        decode: DecodeFn = decode_for_model,
        in_flight: int | None = None,
    ):
        self.cluster, self.config, self.model_id, self.stop, self.decode = cluster, config, model_id, stop, decode
        self.in_flight = in_flight  # the most carriers held waiting for an answer; None: sized to the cluster
        # What an unreadable verdict is filed with: the driver's decoders (the nodes are expected to run the same).
        self.decoder = decoders(config.scan.max_pixels)

    def stage(self, counters: pipeline.Counters) -> pipeline.Stage:
        def ray_embed(items: Iterable[pipeline.Work]) -> Iterator[pipeline.Work]:
            flow = _Flow(self)
            for kind, payload in flow.run(items):
                if kind == _PASS:
                    yield payload  # unchanged, reused, unreadable, or not handed on: committed at once
                    continue
                for path, vector, result in payload:
                    for work in flow.waiting.answer(bytes(path)):
                        yield _settled(work, vector, result, counters, self.decoder)
            yield from self._leftovers(flow.waiting.works, counters)

        return ray_embed

    def _leftovers(self, carriers: Carriers, counters: pipeline.Counters) -> Iterator[pipeline.Work]:
        """The carriers the pass left without an answer: a file that kills its decoder is blamed, the others get a
        second pass; what is still left stays pending."""
        if carriers and not self.stopped():
            guilty = self._guilty(list(carriers))
            if guilty is not None:
                died = Failed(DIED_ON_CLUSTER)
                yield from (
                    _settled(work, b"", died, counters, self.decoder) for p in guilty for work in carriers.pop(p)
                )
                yield from self._stream(carriers, counters)  # the innocent leftovers: embedded after all
        if carriers:
            log.warning(
                "%d files got no answer from the cluster (the run was stopped, or their tasks failed for a reason "
                "no one file explains); they stay pending for the next run",
                len(carriers),
            )
        yield from itertools.chain.from_iterable(carriers.values())  # pending: committed as such, carried again

    def _stream(self, carriers: Carriers, counters: pipeline.Counters) -> Iterator[pipeline.Work]:
        """A pass over carriers known in advance; each file answered leaves `carriers`."""
        if not carriers or self.stopped():
            return
        paths = list(carriers)
        blocks = max(1, min(len(paths) // DECODE_BATCH, 10_000))
        listed = ray.data.from_items([{"path": p} for p in paths], override_num_blocks=blocks)
        for batch in self.embedding(listed, f"{len(paths)} images").iter_batches(**ITERATION):
            for path, vector, result in zip(batch["path"], batch["vector"], batch["result"]):
                for work in carriers.pop(bytes(path), []):
                    yield _settled(work, vector, result, counters, self.decoder)
            if self.stopped():
                break

    def _guilty(self, paths: list[bytes]) -> list[bytes] | None:
        """The files whose own decode task, one file per task and no model involved, died on every retry: a worker
        lost to a file, told apart from one lost to a model replica's death in the same pipeline. None when Ray
        itself failed and cannot tell. A stop ends the search between windows: those found so far are blamed, and
        the files not probed stay pending."""
        log.info(
            "%d files got no answer from the cluster: decoding each alone to find any that kills its worker", len(paths)
        )
        draft_side, spec = load_processing(embedder_settings(self.config.model))
        args = (self.decode, draft_side, self.config.scan.max_pixels, spec)
        guilty: list[bytes] = []
        try:
            for window in _windows(paths, PROBE_WINDOW):
                if self.stopped():
                    break
                guilty += _probe_window(window, args)
        except ray.exceptions.RayError as exc:
            log.warning(
                "the cluster failed while finding the files that kill their decoder (%s): none is blamed",
                _first_line(exc),
            )
            return None
        return guilty

    def stopped(self) -> bool:
        return self.stop is not None and self.stop.is_set()

    def fed(self, feed: Any) -> ray.data.Dataset:
        """The dataset of one pass whose paths arrive through `feed` while it runs (see FeedSource)."""
        # num_cpus=0: the read task only moves paths, and differing resources keep Ray Data from fusing it with the
        # decode tasks, which would decode everything in this one long task.
        source = ray.data.read_datasource(FeedSource(feed), override_num_blocks=1, num_cpus=0)
        return self.embedding(source, "new images as hashing finds them")

    def embedding(self, source: ray.data.Dataset, what: str) -> ray.data.Dataset:
        """`source` (rows of paths) through the decode tasks and the model replicas: rows of path, vector, facts."""
        settings = embedder_settings(self.config.model)
        draft_side, spec = load_processing(settings)
        resources = usable(self.cluster.resources(), self.config)
        replicas, per_replica = _replicas(resources, self.config)
        log.info(
            "embedding %s on the Ray cluster (%d nodes, %d GPUs, %d CPUs): %d model replicas",
            what,
            resources.nodes,
            resources.gpus,
            resources.cpus,
            replicas,
        )
        source.context.target_max_block_size = BLOCK_BYTES
        actor_config = _actor_config(self.config, resources, per_replica)
        decode = functools.partial(
            decode_batch,
            decode=self.decode,
            draft_side=draft_side,
            max_pixels=self.config.scan.max_pixels,
            spec=spec,
        )
        with warnings.catch_warnings():
            # max_retries is not yet a named map_batches parameter in Ray 2.60; ray_remote_args still carry it.
            warnings.simplefilter("ignore", DeprecationWarning)
            decoded = source.map_batches(decode, batch_size=DECODE_BATCH, num_cpus=1, max_retries=DECODE_RETRIES)
        return decoded.map_batches(
            ModelReplica,
            batch_size=self.batch_size(resources),
            compute=ray.data.ActorPoolStrategy(min_size=1, max_size=replicas),
            num_gpus=1 if resources.gpus else 0,
            num_cpus=1 if resources.gpus else per_replica,
            fn_constructor_kwargs={"config": actor_config, "model_id": self.model_id},
        )

    def batch_size(self, resources: Resources) -> int:
        return self.config.model.batch_size or (GPU_BATCH if resources.gpus else CPU_BATCH)

    def bound(self) -> int:
        """The most carriers the driver holds waiting for an answer: four times what the cluster can hold in its
        decode tasks and model batches, at least 1024; never fewer than two of each stage's batches, or a batch
        could wait for files the driver does not hand on."""
        resources = usable(self.cluster.resources(), self.config)
        replicas, _ = _replicas(resources, self.config)
        batch = self.batch_size(resources)
        floor = 2 * (DECODE_BATCH + batch)
        if self.in_flight is not None:
            return max(floor, self.in_flight)
        return max(floor, 1024, 4 * (resources.cpus * DECODE_BATCH + replicas * batch))


ITERATION: dict[str, Any] = {"batch_size": None, "batch_format": "numpy", "prefetch_batches": 1}
_PASS, _ANSWERS, _ERROR, _FED, _STREAMED = "pass", "answers", "error", "fed", "streamed"


class _InFlight:
    """The carriers handed to the cluster and not yet answered, by path: at most `bound` at once, so the driver
    holds a bounded number however far hashing runs ahead of the cluster. A path handed twice (two carriers naming
    one file) is asked once and both carriers settle with its answer. A carrier whose block failed every retry
    keeps its place until the pass ends (the answers never say which were lost), so when nothing at all is answered
    for `stall_s` while the driver waits, the bound doubles rather than waiting for ever (a model still loading
    answers nothing for a while too: it costs only memory)."""

    def __init__(self, bound: int, stall_s: float = STALL_S) -> None:
        self.works: dict[bytes, list[pipeline.Work]] = {}
        self.held = 0
        self.bound, self.stall_s = bound, stall_s
        self.answers = 0
        self.changed = threading.Condition()

    def full(self) -> bool:
        return self.held >= self.bound

    def admit(self, work: pipeline.Work, give_up: Callable[[], bool]) -> bool:
        """Wait for room, then hold `work`; False, holding nothing, once give_up() says so."""
        with self.changed:
            seen, since = self.answers, time.monotonic()
            while self.full() and not give_up():
                self.changed.wait(LOOK_S)
                if self.answers != seen:
                    seen, since = self.answers, time.monotonic()
                elif time.monotonic() - since >= self.stall_s:
                    self.bound *= 2
                    since = time.monotonic()
                    log.debug("nothing answered for %.0f s: holding up to %d files", self.stall_s, self.bound)
            if give_up():
                return False
            self.works.setdefault(work.record.path, []).append(work)
            self.held += 1
            return True

    def paths(self) -> list[bytes]:
        with self.changed:
            return list(self.works)

    def wake(self) -> None:
        """Have a waiting admit look at give_up() now (the pass ended, or its consumer left)."""
        with self.changed:
            self.changed.notify_all()

    def answer(self, path: bytes) -> list[pipeline.Work]:
        """The carriers waiting for `path`'s answer; none for a second answer (a retried task's) or a placeholder."""
        with self.changed:
            works = self.works.pop(path, [])
            self.held -= len(works)
            self.answers += 1
            self.changed.notify_all()
            return works


class _Flow:
    """One streaming pass on the driver, in three threads. A feeder takes the pipeline's items as hashing yields
    them: carriers go to the cluster through a FeedQueue, the rest straight on. A streamer iterates the dataset.
    The stage's own thread (run) hands both on in arrival order. Nothing reaches the cluster until the first carrier
    does, so a run with nothing to embed starts no dataset."""

    def __init__(self, embed: RayEmbed):
        self.embed = embed
        self.waiting = _InFlight(0)  # sized when the stream starts
        self.out: queue.Queue = queue.Queue(OUT_QUEUE)
        self.abort = threading.Event()  # the stage's consumer has gone: the threads drop what they hold and end
        self.streamed = threading.Event()
        self.feed: Any = None
        self.batch: list[bytes] = []  # paths held until a block's worth is ready, or the feeder would wait
        self.blocks = 0  # how many blocks were shipped: the number of the next
        self.shipping = threading.Lock()  # the feeder ships as hashing goes, the watcher again after a restart
        self.closing = False  # the feeder has handed on all it will
        self.watcher: threading.Thread | None = None

    def run(self, items: Iterable[pipeline.Work]) -> Iterator[tuple[str, Any]]:
        feeder = threading.Thread(target=self._feed, args=(items,), daemon=True, name="ray-feed")
        feeder.start()
        try:
            yield from self._events()
        finally:
            self.abort.set()
            self.waiting.wake()
            feeder.join(timeout=5)
            if self.feed is not None:
                ray.kill(self.feed)  # a watcher asking it is answered at once, with an error
            if self.watcher is not None:
                self.watcher.join(timeout=WATCH_S + CLOSE_AGAIN_S)  # it sees `abort` within one look

    def _events(self) -> Iterator[tuple[str, Any]]:
        fed = streamed = False
        while not (fed and (streamed or self.feed is None)):  # the feeder starts any stream before it says "fed"
            kind, payload = self.out.get()
            if kind == _ERROR:
                raise payload
            fed, streamed = fed or kind == _FED, streamed or kind == _STREAMED
            if kind in (_PASS, _ANSWERS):
                yield kind, payload

    def _feed(self, items: Iterable[pipeline.Work]) -> None:
        try:
            for work in items:
                if self.abort.is_set():
                    return
                if not (pipeline.needs_decode(work) and self._hand_on(work)):
                    self._put(_PASS, work)
            self._ship()
        except BaseException as exc:  # noqa: BLE001 - handed to the stage's thread, which raises it
            self._put(_ERROR, exc)
        finally:
            self._close()
            self._put(_FED, None)

    def _hand_on(self, work: pipeline.Work) -> bool:
        if self.feed is None:
            self._start()
        if self.waiting.full():
            self._ship()  # what is held could be what the cluster waits for
        if not self.waiting.admit(work, self._ended):
            return False  # left pending for the next run
        self.batch.append(work.record.path)
        if len(self.batch) >= DECODE_BATCH:
            self._ship()
        return True

    def _ended(self) -> bool:
        """Stopped, the consumer gone, or the stream over before the feed closed (its read task failed): files
        handed on now would get no answer."""
        return self.abort.is_set() or self.embed.stopped() or self.streamed.is_set()

    def _start(self) -> None:
        self.waiting.bound = self.embed.bound()
        self.feed = _FeedActor.remote()
        threading.Thread(target=self._stream, daemon=True, name="ray-stream").start()
        self.watcher = threading.Thread(target=self._watch, daemon=True, name="ray-feed-watch")
        self.watcher.start()

    def _ship(self) -> None:
        with self.shipping:
            if self.batch:
                self._put_block(self.batch)
                self.batch = []

    def _put_block(self, paths: list[bytes]) -> None:
        self.feed.put.remote(self.blocks, paths)  # not waited for: `close` says how many (see FeedQueue)
        self.blocks += 1

    def _close(self) -> None:
        """Close the feed, again every CLOSE_AGAIN_S until the stream ends (a restarted feed forgot it)."""
        self.closing = True
        while self.feed is not None and not self.abort.is_set():
            self.feed.close.remote(self.blocks)
            if self.streamed.wait(CLOSE_AGAIN_S):
                return

    def _watch(self) -> None:
        """Ask the feed every WATCH_S who it is. A feed restarted since holds none of the blocks shipped to the one
        before, and nothing else would tell: their files would wait for an answer until the pass ends."""
        known = None
        while not self.streamed.wait(WATCH_S) and not self.abort.is_set():
            try:
                incarnation, restarted = ray.get(self.feed.incarnation.remote(), timeout=CLOSE_AGAIN_S)
            except ray.exceptions.RayError:  # restarting still (GetTimeoutError is one), or killed at the end
                continue
            if incarnation != known and (known is not None or restarted):
                self._reship()
            known = incarnation

    def _reship(self) -> None:
        """Ship every file still waiting for an answer to the restarted feed, as blocks from the next number on."""
        with self.shipping:
            first, paths = self.blocks, self.waiting.paths()  # the paths held in `batch` are among them
            self.batch = []
            for block in _windows(paths, DECODE_BATCH):
                self._put_block(block)
            self.feed.resume.remote(first, self.blocks)
        log.info("the feed actor was restarted: %d files waiting for an answer handed on again", len(paths))

    def _stream(self) -> None:
        try:
            for batch in self.embed.fed(self.feed).iter_batches(**ITERATION):
                rows = list(zip(batch["path"], batch["vector"], batch["result"]))
                if not self._put(_ANSWERS, rows) or self.embed.stopped():
                    return
            if not self.closing:
                log.warning(
                    "the dataset on the cluster ended before hashing did (its read task failed): the files "
                    "not yet handed on stay pending for the next run"
                )
        except BaseException as exc:  # noqa: BLE001 - handed to the stage's thread, which raises it
            self._put(_ERROR, exc)
        finally:
            self.streamed.set()
            self.waiting.wake()
            self._put(_STREAMED, None)

    def _put(self, kind: str, payload: object) -> bool:
        return pipeline.put_unless_stopped(self.out, (kind, payload), self.abort)


def usable(resources: Resources, config: Config) -> Resources:
    """The cluster as the model settings let dedupd use it: --gpus N caps the GPUs, and --gpus 0, model.device cpu
    or precision int8 keep the model on CPU actors, as they keep it on the CPU locally."""
    if config.model.gpus == 0 or config.model.device == "cpu" or config.model.precision == "int8":
        return replace(resources, gpus=0)
    return replace(resources, gpus=min(resources.gpus, config.model.gpus or resources.gpus))


def settled_for(config: Config, resources: Resources) -> Config:
    """`config` with the fast preset's choice of int8 or float made for where the replicas run (GPUs in `resources`
    or CPUs), not for the driver's own machine, and written into model.precision. The driver files the vectors
    under the key this gives, every replica loads it as it is, and `dedupd run` embeds its later, local work with it
    too, so one store holds one key. CPU replicas follow the driver's CPU: one key must serve every node."""
    if config.model.preset != "fast":
        return config
    precision = fast_precision(config.model.precision, on_cpu=not resources.gpus)
    return config.model_copy(update={"model": config.model.model_copy(update={"precision": precision})})


def _replicas(resources: Resources, config: Config) -> tuple[int, int]:
    """(model replicas, CPUs each). One replica per GPU; without GPUs, CPU replicas of model.threads cores (default
    4, fewer on a small cluster), leaving at least one core for the decode tasks."""
    if resources.gpus:
        return resources.gpus, 1
    per_replica = max(1, min(config.model.threads or 4, resources.cpus - 1))
    return max(1, (resources.cpus - 1) // per_replica), per_replica


def _actor_config(config: Config, resources: Resources, per_replica: int) -> Config:
    """The config a replica loads with: its own GPU (Ray hides the others) or exactly its CPUs as torch threads."""
    update = {"gpus": None, "threads": None} if resources.gpus else {"gpus": 0, "threads": per_replica}
    model = config.model.model_copy(update=update)
    return config.model_copy(update={"model": model})


def _settled(
    work: pipeline.Work, vector: bytes, result: Decoded | Failed, counters: pipeline.Counters, decoder: str
) -> pipeline.Work:
    if pipeline.store_decoded(work, result, counters, decoder) and vector:
        work.image, work.vector = None, np.frombuffer(vector, dtype=np.float32)
        work.record.status = pipeline.OK
        counters.embedded += 1
    return work


def _windows(paths: list[bytes], size: int) -> Iterator[list[bytes]]:
    for start in range(0, len(paths), size):
        yield paths[start : start + size]


def _probe_window(paths: list[bytes], args: tuple) -> list[bytes]:
    """The files of one window whose probe died: a window at a time, so a run that left many files (a node lost)
    never puts a task per file in flight at once."""
    refs = [(path, _probe.remote(path, *args)) for path in paths]
    return [path for path, ref in refs if _died(ref)]


def _died(ref: ray.ObjectRef) -> bool:
    """Whether the probe's worker died under it on every retry. A probe that raised (RayTaskError: the decode
    function has a bug, the file is not to blame) did not die; any other Ray error is the cluster's, and raises."""
    try:
        ray.get(ref)
    except ray.exceptions.WorkerCrashedError:
        return True
    except ray.exceptions.RayTaskError:
        pass  # it raised, so its worker lived; the file goes back to the embed pass, which fails it alike
    return False


def _first_line(exc: BaseException) -> str:
    lines = str(exc).strip().splitlines()
    return lines[0] if lines else type(exc).__name__
