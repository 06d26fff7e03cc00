"""The bulk embed on a Ray cluster: decode + preprocess as Ray Data CPU tasks, the model as an actor pool.

The driver (the `dedupd scan` or `dedupd run` process) still walks, hashes, plans and commits: this module only
replaces the pipeline's decode and embed stages with one stage that streams the carriers of new contents through
Ray Data and hands the results back, batch by batch as they arrive, to the pipeline's own commit stage. So vectors
land in the same store under the same (content, model) keys, committed every scan.commit_every items through the
Store (the one writer, under the writer lock); a killed driver loses at most what was in flight, and a rerun finds
the committed contents in the store and embeds only the rest.

The workers run the same code as the local path: ingest.decode_pool.decode_for_model (decode, then the model's
preprocessing) in the tasks, model.loader.LazyEmbedder in the actors. They must read the photos at the same paths
(a shared filesystem mounted alike on every node) and have dedupd installed.

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

import functools
import logging
import os
import socket
import threading
import warnings
from collections.abc import Callable, Iterable, Iterator
from dataclasses import dataclass, replace
from typing import Any

import numpy as np

# Run under `uv run`, Ray would start every worker through `uv run` with this directory uploaded as its working dir
# (slow, and wrong on a cluster): dedupd's workers use the environment installed on each node.
os.environ.setdefault("RAY_ENABLE_UV_RUN_RUNTIME_ENV", "0")

import ray  # noqa: E402 - after the environment switch above, which Ray reads at import
import ray.data  # noqa: E402

from dedupd.config import Config
from dedupd.errors import ClusterError
from dedupd.ingest import pipeline
from dedupd.ingest.decode_pool import Decoded, DecodeFn, Failed, decode_for_model
from dedupd.ingest.indexer import Indexer
from dedupd.model.loader import LazyEmbedder, embedder_settings
from dedupd.model.runtime import load_processing

log = logging.getLogger("dedupd")
RAY_DATA_LOGGER = "ray.data"

DECODE_BATCH = 8  # files per decode task call: small, so a file that kills its worker costs few retries
DECODE_RETRIES = 3  # a worker killed under a decode task: retried; one file that kills it every time: blamed
PROBE_WINDOW = 256  # one-file decode probes in flight at once while finding a file that kills its worker
DIED_ON_CLUSTER = "decoder process died on the cluster (corrupt or hostile file)"
GPU_BATCH = 128  # per model replica, as the local path's default per GPU
CPU_BATCH = 16


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
    logging.getLogger(RAY_DATA_LOGGER).setLevel(logging.WARNING)  # Ray's own logger, not ours


# --- the work on the cluster --------------------------------------------------------------------------------------


def decode_batch(
    batch: dict[str, np.ndarray], decode: DecodeFn, draft_side: int | None, max_pixels: int, spec: Any
) -> dict:
    """A Ray Data task: the local path's decode function (decode_for_model) for each file of the batch."""
    results = [decode(bytes(path), draft_side, max_pixels, spec) for path in batch["path"]]
    return {"path": batch["path"], "result": _objects(results)}


def decode_probe(path: bytes, decode: DecodeFn, draft_side: int | None, max_pixels: int, spec: Any) -> bool:
    """A Ray task: decode one file and drop the pixels. Only whether its worker survives matters (see _guilty)."""
    decode(path, draft_side, max_pixels, spec)
    return True


_probe = ray.remote(num_cpus=1, max_retries=DECODE_RETRIES)(decode_probe)


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
    """Why a replica refuses to embed: another checkpoint, or the same one resolved to other settings (the fast
    preset decides int8 or bf16 by the machine: a driver without a GPU or AMX and GPU workers disagree)."""
    if theirs.split("+")[0] != ours.split("+")[0]:
        where = "install the same checkpoint at the same path on every node"
        return f"model on {host} is {theirs}, the driver's is {ours}: {where}"
    return (
        f"model on {host} resolves to {theirs}, the driver's to {ours}: the fast preset takes int8 on a CPU without "
        "AMX and bf16 on a GPU; where the driver and the workers differ, set model.max_patches: 64 instead of "
        "model.preset: fast"
    )


def _without_pixels(result: Decoded | Failed) -> Decoded | Failed:
    return (
        Decoded(None, result.width, result.height, result.format, result.capture, result.frames)
        if isinstance(result, Decoded)
        else result
    )


def _objects(values: list) -> np.ndarray:
    array = np.empty(len(values), dtype=object)
    array[:] = values
    return array


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
    ):
        self.cluster, self.config, self.model_id, self.stop, self.decode = cluster, config, model_id, stop, decode

    def stage(self, counters: pipeline.Counters) -> pipeline.Stage:
        def ray_embed(items: Iterable[pipeline.Work]) -> Iterator[pipeline.Work]:
            carriers: dict[bytes, pipeline.Work] = {}
            for work in items:
                if pipeline.needs_decode(work):
                    carriers[work.record.path] = work
                else:
                    yield work  # unchanged, reused or unreadable: committed at once, no cluster work
            if carriers:
                yield from self._embed(carriers, counters)

        return ray_embed

    def _embed(self, carriers: dict[bytes, pipeline.Work], counters: pipeline.Counters) -> Iterator[pipeline.Work]:
        yield from self._stream(carriers, counters)
        if carriers and not self._stopped():
            guilty = self._guilty(list(carriers))
            if guilty is not None:
                yield from (_settled(carriers.pop(p), b"", Failed(DIED_ON_CLUSTER), counters) for p in guilty)
                yield from self._stream(carriers, counters)  # the innocent leftovers: embedded after all
        if carriers:
            log.warning(
                "%d files got no answer from the cluster (the run was stopped, or their tasks failed for a reason "
                "no one file explains); they stay pending for the next run",
                len(carriers),
            )
        yield from carriers.values()  # pending: committed as such, carried again next run

    def _stream(self, carriers: dict[bytes, pipeline.Work], counters: pipeline.Counters) -> Iterator[pipeline.Work]:
        """One pass of the carriers through decode tasks and model replicas; each file answered leaves `carriers`."""
        if not carriers or self._stopped():
            return
        dataset = self._dataset(list(carriers))
        for batch in dataset.iter_batches(batch_size=None, batch_format="numpy", prefetch_batches=1):
            for path, vector, result in zip(batch["path"], batch["vector"], batch["result"]):
                work = carriers.pop(bytes(path), None)
                if work is None:
                    continue  # a retried task's second answer for a file already handed on
                yield _settled(work, vector, result, counters)
            if self._stopped():
                break

    def _guilty(self, paths: list[bytes]) -> list[bytes] | None:
        """The files whose own decode task, one file per task and no model involved, died on every retry: a worker
        lost to a file, told apart from one lost to a model replica's death in the same pipeline. None when Ray
        itself failed and cannot tell."""
        log.info(
            "%d files got no answer from the cluster: decoding each alone to find any that kills its worker", len(paths)
        )
        draft_side, spec = load_processing(embedder_settings(self.config.model))
        args = (self.decode, draft_side, self.config.scan.max_pixels, spec)
        try:
            return [path for window in _windows(paths, PROBE_WINDOW) for path in _probe_window(window, args)]
        except ray.exceptions.RayError as exc:
            log.warning(
                "the cluster failed while finding the files that kill their decoder (%s): none is blamed",
                _first_line(exc),
            )
            return None

    def _stopped(self) -> bool:
        return self.stop is not None and self.stop.is_set()

    def _dataset(self, paths: list[bytes]) -> ray.data.Dataset:
        settings = embedder_settings(self.config.model)
        draft_side, spec = load_processing(settings)
        resources = usable(self.cluster.resources(), self.config)
        replicas, per_replica = _replicas(resources, self.config)
        log.info(
            "embedding %d images on the Ray cluster (%d nodes, %d GPUs, %d CPUs): %d model replicas",
            len(paths),
            resources.nodes,
            resources.gpus,
            resources.cpus,
            replicas,
        )
        actor_config = _actor_config(self.config, resources, per_replica)
        batch = self.config.model.batch_size or (GPU_BATCH if resources.gpus else CPU_BATCH)
        blocks = max(1, min(len(paths) // DECODE_BATCH, 10_000))
        with warnings.catch_warnings():
            # max_retries is not yet a named map_batches parameter in Ray 2.60; ray_remote_args still carry it.
            warnings.simplefilter("ignore", DeprecationWarning)
            dataset: ray.data.Dataset = ray.data.from_items([{"path": p} for p in paths], override_num_blocks=blocks)
            decode = functools.partial(
                decode_batch,
                decode=self.decode,
                draft_side=draft_side,
                max_pixels=self.config.scan.max_pixels,
                spec=spec,
            )
            dataset = dataset.map_batches(decode, batch_size=DECODE_BATCH, num_cpus=1, max_retries=DECODE_RETRIES)
            return dataset.map_batches(
                ModelReplica,
                batch_size=batch,
                compute=ray.data.ActorPoolStrategy(min_size=1, max_size=replicas),
                num_gpus=1 if resources.gpus else 0,
                num_cpus=1 if resources.gpus else per_replica,
                fn_constructor_kwargs={"config": actor_config, "model_id": self.model_id},
            )


def usable(resources: Resources, config: Config) -> Resources:
    """The cluster as the model settings let dedupd use it: --gpus N caps the GPUs, and --gpus 0 or model.device cpu
    keep the model on CPU actors, as they keep it on the CPU locally."""
    if config.model.gpus == 0 or config.model.device == "cpu":
        return replace(resources, gpus=0)
    return replace(resources, gpus=min(resources.gpus, config.model.gpus or resources.gpus))


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
    work: pipeline.Work, vector: bytes, result: Decoded | Failed, counters: pipeline.Counters
) -> pipeline.Work:
    pipeline.store_decoded(work, result, counters)
    if isinstance(result, Decoded) and vector:
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
