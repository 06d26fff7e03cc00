"""The model as the rest of dedupd sees it: what an embedder must offer, the settings a ModelConfig asks for, the
key its vectors are stored under, and a loader that pays for torch and the weights only on first use."""

from __future__ import annotations

import threading
from collections.abc import Sequence
from dataclasses import replace
from typing import TYPE_CHECKING, Any, Protocol

import numpy as np

from dedupd.config import Config, ModelConfig
from dedupd.ingest.decode_pool import split_cores
from dedupd.model.settings import (
    CPU_BATCH,
    EmbedderSettings,
    apply_preset,
    resolve_source,
    runs_on_cpu,
    vector_model_id,
)

if TYPE_CHECKING:
    from dedupd.ingest.preprocess import Prepared, PreprocessSpec


class EmbedderLike(Protocol):
    """What the indexer, the pipeline and the bench use of an embedder: model/runtime.Embedder, or a deterministic
    stand-in in tests and benchmarks."""

    @property
    def model_id(self) -> str: ...

    @property
    def devices(self) -> Sequence[str]: ...

    @property
    def draft_side(self) -> int | None: ...

    @property
    def batch_items(self) -> int | None:
        """Images per embed() call; None leaves it to model.batch_size."""

    @property
    def preprocess_spec(self) -> PreprocessSpec | None:
        """The preprocessing decode workers run before embed_prepared(); None: hand embed() RGB images."""

    def embed(self, images: list[Any]) -> np.ndarray: ...

    def embed_prepared(self, items: list[Prepared]) -> np.ndarray: ...

    def close(self) -> None: ...


def embedder_settings(model: ModelConfig) -> EmbedderSettings:
    """What the configured model asks for, its preset already applied."""
    settings = EmbedderSettings(
        model=model.name,
        batch_size=model.batch_size,
        gpus=model.gpus,
        gpu_memory_fraction=model.gpu_memory_fraction,
        device=model.device,
        max_patches=model.max_patches,
        threads=model.threads,
        precision=model.precision,
        preset=model.preset,
    )
    return apply_preset(settings)


def model_identity(model: ModelConfig) -> str:
    """The key the configured model's vectors are stored under, without loading the model."""
    settings = embedder_settings(model)
    source = resolve_source(model.name).model_id
    return vector_model_id(source, settings.max_patches, settings.precision, settings.preset)


class LazyEmbedder:
    """Loads the model only once something needs embedding, so a re-scan with nothing new never pays for torch or
    the weights; and then in the background (start()), so importing torch and transformers and reading the weights
    overlap the walk, the hashing and the exact-copy pass instead of preceding the first decode.

    `loaded` is the seam for tests that want a deterministic embedder where the model is not the point.
    """

    def __init__(self, config: Config, loaded: EmbedderLike | None = None):
        self.config = config
        self._embedder = loaded
        self.model_id = loaded.model_id if loaded is not None else model_identity(config.model)
        # Decides the split of the cores between decoding and the model: predicted without torch until loaded.
        self._on_cpu = list(loaded.devices) == ["cpu"] if loaded is not None else runs_on_cpu(self._settings())
        self._loading: threading.Thread | None = None
        self._error: BaseException | None = None
        self._lock = threading.Lock()

    def _settings(self) -> EmbedderSettings:
        return embedder_settings(self.config.model)

    def start(self) -> None:
        """Begin loading in a background thread, once; get() waits for it and raises what it raised."""
        with self._lock:
            if self._embedder is None and self._loading is None:
                self._loading = threading.Thread(target=self._load, name="dedupd-model-load", daemon=True)
                self._loading.start()

    def _load(self) -> None:
        try:
            from dedupd.model.runtime import build_embedder, pick_devices

            settings = self._settings()
            devices = pick_devices(settings)
            self._on_cpu = devices == ["cpu"]
            threads = self._split()[1]
            self._embedder = build_embedder(replace(settings, threads=threads), devices)
        except BaseException as exc:  # noqa: BLE001 - re-raised by get() on the thread that needs the model
            self._error = exc

    def get(self) -> EmbedderLike:
        if self._embedder is None:
            with self._lock:
                loading = self._loading
                if loading is None and self._embedder is None:
                    # Nobody started it: load on this thread. torch's thread count is per OpenMP thread once that
                    # thread has run torch, so the thread that will embed is the one that must set it.
                    self._load()
            if loading is not None:
                loading.join()
            if self._error is not None:
                raise self._error
            assert self._embedder is not None
        return self._embedder

    def decode_workers(self) -> int:
        """Decode processes for this model: scan.decode_workers, else what suits the device it runs on."""
        return self._split()[0]

    def _split(self) -> tuple[int, int | None]:
        return split_cores(self._on_cpu, self.config.scan.decode_workers, self.config.model.threads)

    def batch_items(self) -> int:
        """Images per embed() call: a full batch for each device."""
        return self.get().batch_items or self.config.model.batch_size or CPU_BATCH

    def draft_side(self) -> int | None:
        return self.get().draft_side

    def preprocess_spec(self) -> PreprocessSpec | None:
        """The model's preprocessing, for the decode workers; None where the embedder preprocesses itself.
        Whenever it is not None, every decoded item arrives preprocessed (decode_for_model applies it)."""
        return self.get().preprocess_spec

    def embed(self, pixels: list) -> np.ndarray:
        embedder = self.get()
        if self.preprocess_spec() is not None:
            return embedder.embed_prepared(pixels)
        return embedder.embed(pixels)
