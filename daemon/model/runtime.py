"""Image embeddings from the vision tower of SigLIP2 (naflex or fixed size), SigLIP, CLIP or DINOv2 checkpoints.

Only the vision tower is built and loaded from a full checkpoint; the loading report is checked so that a vision
weight missing from the checkpoint fails loudly instead of running with random init. Each device (GPU, or the CPU)
holds its own replica and one worker thread; the workers pull batches from one shared queue, so a fast device simply
takes more batches. Attention kernel and compute dtype are picked per device by trying the fastest candidates first
and keeping the first one that produces finite vectors.

torch and transformers are imported inside functions; what light callers need (settings, vector ids) lives in
model/settings.py, which never imports them.
"""

from __future__ import annotations

import copy
import logging
import math
import queue
import re
import threading
from collections.abc import Callable, Iterator, Sequence
from contextlib import contextmanager, nullcontext
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any

import numpy as np

from dedupd.errors import DedupdError, ModelLoadError
from dedupd.model.settings import (
    PRECISIONS,
    EmbedderSettings,
    Source,
    cpu_supports_bf16,
    default_batch_size,
    load_error,
    resolve_source,
    short_reason,
    vector_model_id,
)

if TYPE_CHECKING:
    import torch
    from PIL import Image

    from dedupd.ingest.preprocess import Prepared, PreprocessSpec

log = logging.getLogger("dedupd")

# Text towers and contrastive/classification heads of full checkpoints: leaving them out is the point of loading
# only the vision tower. position_ids are old persistent buffers, recomputed by the model.
_IGNORED_UNEXPECTED = re.compile(
    r"^(text_model\.|text_projection\.|logit_scale$|logit_bias$|classifier\.)|(^|\.)position_ids$"
)


@dataclass(frozen=True)
class Family:
    name: str
    model_class: str  # transformers class holding only the vision tower
    output: str  # field of the forward output that is the image embedding


FAMILIES: dict[str, Family] = {
    "siglip2-naflex": Family("siglip2-naflex", "Siglip2VisionModel", "pooler_output"),
    "siglip2": Family("siglip2", "SiglipVisionModel", "pooler_output"),
    "siglip": Family("siglip", "SiglipVisionModel", "pooler_output"),
    # image_embeds is projected into the space CLIP was trained to compare images in; pooler_output is not.
    "clip": Family("clip", "CLIPVisionModelWithProjection", "image_embeds"),
    # Dinov2Model's pooler_output is the layer-normed CLS token, the usual DINOv2 global descriptor.
    "dinov2": Family("dinov2", "Dinov2Model", "pooler_output"),
}
_MODEL_TYPES = {
    "siglip2": "siglip2-naflex",
    "siglip2_vision_model": "siglip2-naflex",
    "siglip": "siglip",
    "siglip_vision_model": "siglip",
    "clip": "clip",
    "clip_vision_model": "clip",
    "dinov2": "dinov2",
}


# --------------------------------------------------------------------------------------------------------------------
# Capabilities


def dtype_candidates(device: str, cpu_bf16: bool | None = None) -> list[torch.dtype]:
    """Compute dtypes to try on a device, fastest first; fp32 always ends the list as the one that always works."""
    import torch

    if device.startswith("cuda"):
        # Before Ampere bf16 is emulated, slower than fp16.
        native_bf16 = torch.cuda.get_device_capability(device) >= (8, 0)
        return [torch.bfloat16, torch.float16, torch.float32] if native_bf16 else [torch.float16, torch.float32]
    use_bf16 = cpu_supports_bf16() if cpu_bf16 is None else cpu_bf16
    return [torch.bfloat16, torch.float32] if use_bf16 else [torch.float32]


def attention_candidates(device: str) -> list[str]:
    """Attention implementations to try, fastest first; FlashAttention kernels exist only for CUDA."""
    if device.startswith("cuda"):
        return ["flash_attention_2", "sdpa", "eager"]
    return ["sdpa", "eager"]


def pick_devices(settings: EmbedderSettings) -> list[str]:
    """The devices the settings ask for, among those visible."""
    import torch

    if settings.device not in ("auto", "cpu", "cuda"):
        raise ModelLoadError(f"unknown device '{settings.device}': use auto, cpu or cuda")
    if settings.precision not in PRECISIONS:
        raise ModelLoadError(f"unknown precision '{settings.precision}': use {' or '.join(PRECISIONS)}")
    if settings.precision == "int8" and settings.device == "cuda":
        raise ModelLoadError("precision 'int8' runs on the CPU only: set model.device to auto or cpu")
    if settings.device == "cpu" or settings.gpus == 0:
        return ["cpu"]
    visible = torch.cuda.device_count() if torch.cuda.is_available() else 0
    if settings.precision == "int8":
        # Dynamic int8 kernels exist for the CPU only; running GPUs beside it would file float vectors under the
        # int8 key.
        if visible:
            log.warning("precision int8 runs on the CPU only; the %d GPU(s) are not used", visible)
        return ["cpu"]
    if settings.device == "cuda" and visible == 0:
        raise ModelLoadError("device 'cuda' was asked for but no CUDA GPU is visible: use --device cpu or auto")
    wanted = visible if settings.gpus is None else min(settings.gpus, visible)
    return [f"cuda:{index}" for index in range(wanted)] or ["cpu"]


def is_oom(exc: BaseException) -> bool:
    """CUDA (and CPU allocator) out-of-memory, which a smaller batch may avoid."""
    import torch

    return isinstance(exc, torch.cuda.OutOfMemoryError) or "out of memory" in str(exc).lower()


# --------------------------------------------------------------------------------------------------------------------
# Checkpoint identity and loading


@contextmanager
def quiet_transformers() -> Iterator[None]:
    # The load report lists every skipped text-tower weight; the loading-info check below says what matters.
    from transformers.utils import logging as tf_logging

    level, bars = tf_logging.get_verbosity(), tf_logging.is_progress_bar_enabled()
    tf_logging.set_verbosity_error()
    tf_logging.disable_progress_bar()
    try:
        yield
    finally:
        tf_logging.set_verbosity(level)
        if bars:
            tf_logging.enable_progress_bar()


@contextmanager
def _load_errors_mapped(model: str) -> Iterator[None]:
    # Loading fails in many shapes (OSError from the hub, ValueError, RuntimeError on shape mismatch,
    # SafetensorError...); the user needs one line, not a traceback.
    try:
        yield
    except ModelLoadError:
        raise
    except Exception as exc:
        raise load_error(model, exc) from exc


def detect_family(config: Any, model: str) -> str:
    """Family from config.json's model_type."""
    family = _MODEL_TYPES.get(config.model_type)
    if family is None:
        raise ModelLoadError(
            f"cannot load model '{model}': model_type '{config.model_type}' is not supported "
            "(use a SigLIP2, SigLIP, CLIP or DINOv2 checkpoint)"
        )
    if family == "siglip" and _is_fixed_size_siglip2(config, model):
        return "siglip2"
    return family


def _is_fixed_size_siglip2(config: Any, model: str) -> bool:
    # Fixed-size SigLIP2 checkpoints reuse the SigLIP architecture; only the Gemma tokenizer's 256k vocabulary
    # (or the name) tells them apart.
    vocab = getattr(getattr(config, "text_config", None), "vocab_size", None)
    return vocab == 256_000 or "siglip2" in model.rstrip("/").rsplit("/", 1)[-1].lower()


def check_loading_info(info: dict[str, Any], model: str, model_class: str) -> None:
    """Refuse a tower whose vision weights did not all come from the checkpoint (silent random init)."""
    missing = sorted(info.get("missing_keys", ()))
    mismatched = sorted(k[0] if isinstance(k, tuple) else k for k in info.get("mismatched_keys", ()))
    stray = sorted(k for k in info.get("unexpected_keys", ()) if not _IGNORED_UNEXPECTED.search(k))
    if not (missing or mismatched or stray or info.get("error_msgs")):
        return
    parts = [
        f"{label}: {_first(keys)}"
        for label, keys in (("missing", missing), ("wrong shape", mismatched), ("unexpected", stray))
        if keys
    ]
    raise ModelLoadError(
        f"cannot load model '{model}': its vision weights do not match the {model_class} "
        f"architecture, some would be random ({'; '.join(parts) or info['error_msgs'][0]})"
    )


def _first(keys: Sequence[str], shown: int = 3) -> str:
    more = f" (+{len(keys) - shown} more)" if len(keys) > shown else ""
    return ", ".join(keys[:shown]) + more


def load_vision_tower(ref: str, family: Family, model: str) -> torch.nn.Module:
    """The vision tower alone, in fp32 on the CPU, every weight from the checkpoint."""
    import transformers

    cls = getattr(transformers, family.model_class)
    tower, info = cls.from_pretrained(ref, output_loading_info=True)
    check_loading_info(info, model, family.model_class)
    # fp32 master: each device's replica is cast from full precision, whatever the checkpoint stores.
    return tower.float().eval()


def load_processor(ref: str, family: Family, max_patches: int | None) -> Any:
    """The checkpoint's image processor, PIL backend, with the naflex patch budget override."""
    from transformers import AutoImageProcessor

    # The PIL backend needs no torchvision and gives the same pixels on every machine, so stored vectors stay
    # comparable wherever they were computed.
    processor = AutoImageProcessor.from_pretrained(ref, backend="pil")
    if max_patches is not None and family.name == "siglip2-naflex":
        processor.max_num_patches = max_patches
    elif max_patches is not None:
        log.warning("max_patches only applies to naflex checkpoints; ignored for %s", family.name)
    return processor


def _size_field(size: Any, key: str) -> int | None:
    # transformers 5 keeps sizes in a SizeDict, 4.x in a plain dict.
    value = size.get(key) if isinstance(size, dict) else getattr(size, key, None)
    return int(value) if value else None


def draft_side(processor: Any, family: Family) -> int:
    """Smallest image side the preprocessing resizes to, so decoding can stop shrinking there."""
    if family.name == "siglip2-naflex":
        # A square image gets sqrt(max patches) patches a side; other aspects get fewer on their short side.
        return int(processor.patch_size * math.ceil(math.sqrt(processor.max_num_patches)))
    sizes = [getattr(processor, "size", None), getattr(processor, "crop_size", None)]
    sides = [_size_field(s, k) for s in sizes if s is not None for k in ("shortest_edge", "height", "width")]
    return max((s for s in sides if s), default=224)


# --------------------------------------------------------------------------------------------------------------------
# Per-device runner


def _probe_image() -> Image.Image:
    from PIL import Image

    ramp = np.linspace(0, 255, 64 * 64 * 3, dtype=np.float32).reshape(64, 64, 3)
    return Image.fromarray(ramp.astype(np.uint8), "RGB")


def _slice(inputs: dict[str, Any], start: int, stop: int) -> dict[str, Any]:
    return {key: value[start:stop] for key, value in inputs.items()}


class InputError(ValueError):
    """The images themselves could not be preprocessed (not the device's fault)."""


class DeviceRunner:
    """One model replica on one device: images -> L2-normalised float32 vectors, halving the batch on OOM.

    forward() is the seam tests override to simulate out-of-memory failures.
    """

    def __init__(self, model: torch.nn.Module, processor: Any, family: Family, device: str, dtype: torch.dtype):
        self.model, self.processor, self.family = model, processor, family
        self.device, self.dtype = device, dtype
        self.batch_limit: int | None = None  # learned from OOMs, kept for later batches
        self.images_done = 0
        self.failed: BaseException | None = None
        self.dim = 0  # set by probe()

    def preprocess(self, images: Sequence[Image.Image]) -> dict[str, Any]:
        try:
            rgb = [image if image.mode == "RGB" else image.convert("RGB") for image in images]
            return dict(self.processor(images=rgb, return_tensors="pt"))
        except Exception as exc:
            raise InputError(f"cannot preprocess images: {exc}") from exc

    def collate(self, items: Sequence[Prepared]) -> dict[str, Any]:
        """Items preprocessed elsewhere (ingest/preprocess.py) -> the same tensors preprocess() makes from images."""
        import torch

        from dedupd.ingest.preprocess import collate

        try:
            return {key: torch.from_numpy(value) for key, value in collate(list(items)).items()}
        except Exception as exc:
            raise InputError(f"cannot preprocess images: {exc}") from exc

    def forward(self, inputs: dict[str, Any]) -> torch.Tensor:
        import torch

        moved = {key: self._to_device(value) for key, value in inputs.items()}
        with self._device_context(), torch.inference_mode():
            vectors = getattr(self.model(**moved), self.family.output)
            # Normalising in fp32 keeps unit norm exact whatever the compute dtype.
            return torch.nn.functional.normalize(vectors.float(), dim=-1).cpu()

    def embed(self, images: Sequence[Image.Image]) -> torch.Tensor:
        vectors = self.run(self.preprocess(images), len(images))
        self.images_done += len(images)
        return vectors

    def embed_prepared(self, items: Sequence[Prepared]) -> torch.Tensor:
        vectors = self.run(self.collate(items), len(items))
        self.images_done += len(items)
        return vectors

    def run(self, inputs: dict[str, Any], count: int) -> torch.Tensor:
        """Forward in slices no larger than batch_limit, halving it on each OOM down to single images."""
        import torch

        parts, start = [], 0
        while start < count:
            size = min(count - start, self.batch_limit or count)
            try:
                parts.append(self.forward(_slice(inputs, start, start + size)))
            except Exception as exc:
                if size == 1 or not is_oom(exc):
                    raise
                self._halve(size)
                continue
            start += size
        return torch.cat(parts)

    def probe(self) -> int:
        """Embed one synthetic image; the dtype/kernel combination is usable if the vector is finite."""
        vector = self.run(self.preprocess([_probe_image()]), 1)
        if not bool(vector.isfinite().all()):
            raise RuntimeError(f"non-finite embedding in {self.dtype}")
        self.dim = int(vector.shape[1])
        return self.dim

    def close(self) -> None:
        self.model = None  # type: ignore[assignment]

    def _halve(self, size: int) -> None:
        import torch

        self.batch_limit = max(1, size // 2)
        log.warning("out of memory on %s with %d images; retrying with %d", self.device, size, self.batch_limit)
        if self.device.startswith("cuda"):
            torch.cuda.empty_cache()

    def _to_device(self, value: Any) -> Any:
        if not hasattr(value, "to"):
            return value
        if self.device.startswith("cuda"):
            # A pinned source lets the copy run asynchronously; the cast then happens on the GPU, so the host
            # sends fp32 once instead of casting on a CPU core first. The .cpu() of the result synchronises.
            value = value.pin_memory().to(self.device, non_blocking=True)
        if value.is_floating_point():
            return value.to(self.device, self.dtype)
        return value.to(self.device)

    def _device_context(self) -> Any:
        import torch

        # Some CUDA kernels launch on the thread's current device rather than the tensors' one.
        return torch.cuda.device(self.device) if self.device.startswith("cuda") else nullcontext()


def _replica(
    master: torch.nn.Module, device: str, dtype: torch.dtype, attn: str, share: bool, precision: str = "auto"
) -> torch.nn.Module:
    import torch

    # Setting attention on the master first fails fast, before paying for a copy.
    master.set_attn_implementation(attn)  # type: ignore[operator]  # a transformers PreTrainedModel
    if precision == "int8":
        return int8_model(master)  # a quantised copy; the fp32 master is freed once loading is done
    if share and device == "cpu" and dtype == torch.float32:
        return master
    return copy.deepcopy(master).to(device=device, dtype=dtype)


def int8_model(model: torch.nn.Module) -> torch.nn.Module:
    """A copy of model with its nn.Linear layers dynamically quantised to int8 (weights int8, activations quantised
    per batch at run time). The patch embedding stays fp32: Siglip2's embeddings read its weight's dtype, which a
    quantised Linear no longer has, and it is a negligible share of the compute."""
    import warnings

    import torch
    from torch.ao.quantization import default_dynamic_qconfig, quantize_dynamic

    spec = {
        name: default_dynamic_qconfig
        for name, module in model.named_modules()
        if type(module) is torch.nn.Linear and "embedding" not in name
    }
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")  # torch 2.10+ deprecation notice for quantized tensors
        return quantize_dynamic(model, spec, dtype=torch.qint8)


def build_runner(
    master: torch.nn.Module,
    processor: Any,
    family: Family,
    device: str,
    *,
    share: bool = False,
    cpu_bf16: bool | None = None,
    runner_cls: type[DeviceRunner] = DeviceRunner,
    precision: str = "auto",
) -> DeviceRunner:
    """A probed runner with the fastest dtype and attention that work on the device; raises if none does."""
    import torch

    errors: list[str] = []
    dtypes = [torch.float32] if precision == "int8" else dtype_candidates(device, cpu_bf16)
    for dtype in dtypes:
        for attn in attention_candidates(device):
            try:
                model = _replica(master, device, dtype, attn, share, precision)
                runner = runner_cls(model, copy.deepcopy(processor), family, device, dtype)
                runner.probe()
            except Exception as exc:
                errors.append(f"{str(dtype).removeprefix('torch.')}/{attn}: {' '.join(str(exc).split())[:120]}")
                continue
            log.info("%s: %s attention in %s", device, attn, "int8" if precision == "int8" else dtype)
            return runner
    raise RuntimeError(f"no working dtype/attention on {device} ({'; '.join(errors)})")


# --------------------------------------------------------------------------------------------------------------------
# Embedder


class Embedder:
    """Embeds batches of images on one or more devices; see module docstring."""

    def __init__(
        self,
        *,
        model_id: str,
        family: str,
        dim: int,
        draft_side: int,
        runners: list[DeviceRunner],
        batch_size: int | None,
        fallback: Callable[[], DeviceRunner] | None = None,
        preprocess_spec: PreprocessSpec | None = None,
    ) -> None:
        self.model_id, self.family, self.dim, self.draft_side = model_id, family, dim, draft_side
        self._spec = preprocess_spec
        self._runners = runners
        self.batch_size = max(1, batch_size or default_batch_size(runners[0].device if runners else "cpu"))
        self._fallback = fallback  # builds a CPU runner once every device has failed; used at most once
        self._lock = threading.Lock()
        self._closed = False

    @property
    def devices(self) -> list[str]:
        return [runner.device for runner in self._runners if runner.failed is None]

    @property
    def runners(self) -> list[DeviceRunner]:
        return list(self._runners)

    @property
    def batch_items(self) -> int:
        """Images to hand embed() at a time so that every device gets a full batch of its own."""
        return self.batch_size * max(1, len(self.devices))

    @property
    def preprocess_spec(self) -> PreprocessSpec | None:
        """The loaded processor's preprocessing as a picklable dedupd.ingest.preprocess.PreprocessSpec, for decode
        workers to run preprocess() and hand the results to embed_prepared(); None where that processor cannot be
        replicated exactly (then use embed())."""
        return self._spec

    def embed(self, images: list[Image.Image]) -> np.ndarray:
        """RGB images -> float32 (n, dim), rows L2-normalised, in input order."""
        return self._embed(images, prepared=False)

    def embed_prepared(self, items: list[Prepared]) -> np.ndarray:
        """dedupd.ingest.preprocess.preprocess() results (made with preprocess_spec) -> vectors, exactly as embed()."""
        spec = self._spec
        if spec is None:
            raise RuntimeError("this model's preprocessing cannot run outside the embedder: use embed()")
        expected = spec.pixel_shape
        for item in items:
            if expected is not None and tuple(item.pixel_values.shape) != expected:
                raise InputError(
                    f"cannot preprocess images: pixel_values {tuple(item.pixel_values.shape)} were prepared for "
                    f"another model (this one takes {expected})"
                )
        return self._embed(items, prepared=True)

    def _embed(self, items: Sequence[Any], prepared: bool) -> np.ndarray:
        if self._closed:
            raise RuntimeError("embedder is closed")
        out = np.zeros((len(items), self.dim), dtype=np.float32)
        with self._lock:  # one call at a time: the workers already use every device
            self._embed_into(items, out, prepared)
        return out

    def close(self) -> None:
        self._closed = True
        for runner in self._runners:
            runner.close()
        self._runners = []
        _empty_cuda_cache()

    def __enter__(self) -> Embedder:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()

    def _embed_into(self, images: Sequence[Any], out: np.ndarray, prepared: bool = False) -> None:
        job = _Job(images, self._chunk_size(len(images)), out, prepared=prepared)
        for start in range(0, len(images), job.chunk):
            job.starts.put(start)
        # A worker that fails puts its batch back; if the others had already finished, another round takes it.
        while not job.starts.empty():
            self._round(self._alive_runners(), job)

    def _chunk_size(self, count: int) -> int:
        # Fewer images than batch_size x devices: split them so every device gets a share.
        devices = max(1, len(self.devices))
        return max(1, min(self.batch_size, math.ceil(count / devices)))

    def _alive_runners(self) -> list[DeviceRunner]:
        alive = [runner for runner in self._runners if runner.failed is None]
        if alive:
            return alive
        last = self._runners[-1].failed if self._runners else None
        if self._fallback is None:
            raise DedupdError(f"embedding failed on every device: {last}")
        fallback, self._fallback = self._fallback, None
        log.warning("every device failed (last: %s); falling back to the CPU", last)
        self._runners.append(fallback())
        return self._runners[-1:]

    @staticmethod
    def _round(runners: list[DeviceRunner], job: _Job) -> None:
        if len(runners) == 1:
            _worker(runners[0], job)
        else:
            threads = [threading.Thread(target=_worker, args=(r, job), name=f"embed-{r.device}") for r in runners]
            for thread in threads:
                thread.start()
            for thread in threads:
                thread.join()
        if job.input_errors:
            raise job.input_errors[0]


@dataclass
class _Job:
    """One embed() call: the images (or Prepared items), the batch starts still to do, and where the vectors go."""

    images: Sequence[Any]
    chunk: int
    out: np.ndarray
    starts: queue.SimpleQueue[int] = field(default_factory=queue.SimpleQueue)
    input_errors: list[InputError] = field(default_factory=list)
    prepared: bool = False  # images are dedupd.ingest.preprocess.Prepared items, not PIL images


def _worker(runner: DeviceRunner, job: _Job) -> None:
    """Pull batches until none is left; a failing device gives its batch back and stops for good."""
    while runner.failed is None and not job.input_errors:
        try:
            start = job.starts.get_nowait()
        except queue.Empty:
            return
        batch = job.images[start : start + job.chunk]
        try:
            vectors = runner.embed_prepared(batch) if job.prepared else runner.embed(batch)
            job.out[start : start + len(batch)] = vectors.numpy()
        except InputError as exc:
            job.input_errors.append(exc)
        except Exception as exc:
            runner.failed = exc
            log.warning("device %s failed, its work goes to the others: %s", runner.device, exc)
            job.starts.put(start)


def _empty_cuda_cache() -> None:
    import torch

    if torch.cuda.is_available():
        torch.cuda.empty_cache()


# --------------------------------------------------------------------------------------------------------------------
# Entry points


@dataclass
class Checkpoint:
    source: Source
    family: Family
    processor: Any
    master: torch.nn.Module


def load_checkpoint(settings: EmbedderSettings) -> Checkpoint:
    source, family, processor = _load_processor(settings)
    with quiet_transformers(), _load_errors_mapped(settings.model):
        master = load_vision_tower(source.ref, family, settings.model)
    return Checkpoint(source, family, processor, master)


def _load_processor(settings: EmbedderSettings) -> tuple[Source, Family, Any]:
    source = resolve_source(settings.model)
    with quiet_transformers(), _load_errors_mapped(settings.model):
        from transformers import AutoConfig

        config = AutoConfig.from_pretrained(source.ref)
        family = FAMILIES[detect_family(config, settings.model)]
        return source, family, load_processor(source.ref, family, settings.max_patches)


def load_processing(settings: EmbedderSettings) -> tuple[int, PreprocessSpec | None]:
    """(draft side, preprocessing spec) of the checkpoint, without its weights: what decode workers elsewhere (Ray
    tasks) need from a model whose replicas run in other processes."""
    _, family, processor = _load_processor(settings)
    return draft_side(processor, family), preprocess_spec(processor, family)


def _limit_memory(device: str, fraction: float) -> None:
    import torch

    if device.startswith("cuda"):
        torch.cuda.set_per_process_memory_fraction(fraction, torch.device(device))


def _runners_for(
    loaded: Checkpoint,
    devices: list[str],
    settings: EmbedderSettings,
    cpu_bf16: bool | None,
    runner_cls: type[DeviceRunner],
) -> tuple[list[DeviceRunner], list[str]]:
    """A runner per usable device, and why the others are not usable: one bad device is not fatal."""
    runners, problems = [], []
    for device in devices:
        try:
            _limit_memory(device, settings.gpu_memory_fraction)
            with quiet_transformers():
                runners.append(
                    build_runner(
                        loaded.master,
                        loaded.processor,
                        loaded.family,
                        device,
                        share=len(devices) == 1,
                        cpu_bf16=cpu_bf16,
                        runner_cls=runner_cls,
                        precision=settings.precision,
                    )
                )
        except Exception as exc:
            log.warning("cannot use %s: %s", device, exc)
            problems.append(str(exc))
    return runners, problems


def _cpu_fallback(settings: EmbedderSettings, cpu_bf16: bool | None) -> Callable[[], DeviceRunner]:
    # Reloads from disk rather than keeping an fp32 master in host memory for a failure that rarely happens.
    def build() -> DeviceRunner:
        loaded = load_checkpoint(settings)
        return build_runner(
            loaded.master,
            loaded.processor,
            loaded.family,
            "cpu",
            share=True,
            cpu_bf16=cpu_bf16,
            precision=settings.precision,
        )

    return build


def build_embedder(
    settings: EmbedderSettings,
    devices: list[str],
    *,
    cpu_bf16: bool | None = None,
    runner_cls: type[DeviceRunner] = DeviceRunner,
) -> Embedder:
    """load_embedder with the device list, CPU bf16 choice and runner class given (tests run two CPU 'devices')."""
    import torch

    if settings.threads:
        torch.set_num_threads(settings.threads)
    loaded = load_checkpoint(settings)
    runners, problems = _runners_for(loaded, devices, settings, cpu_bf16, runner_cls)
    if not runners and any(d != "cpu" for d in devices):
        log.warning("no GPU usable; running on the CPU")
        runners, problems = _runners_for(loaded, ["cpu"], settings, cpu_bf16, DeviceRunner)
    if not runners:
        raise ModelLoadError(f"cannot load model '{settings.model}': {short_reason(problems[-1])}")
    return Embedder(
        model_id=vector_model_id(loaded.source.model_id, settings.max_patches, settings.precision, settings.preset),
        family=loaded.family.name,
        dim=runners[0].dim,
        draft_side=draft_side(loaded.processor, loaded.family),
        runners=runners,
        batch_size=settings.batch_size,
        fallback=_cpu_fallback(settings, cpu_bf16),
        preprocess_spec=preprocess_spec(loaded.processor, loaded.family),
    )


def preprocess_spec(processor: Any, family: Family) -> PreprocessSpec | None:
    """The processor as a PreprocessSpec, or None (logged) when it does something dedupd.ingest.preprocess does not."""
    from dedupd.ingest.preprocess import PreprocessSpec

    try:
        return PreprocessSpec.from_processor(processor, family.name)
    except ValueError as exc:
        log.info("preprocessing stays in the embedder: %s", exc)
        return None


def load_embedder(settings: EmbedderSettings) -> Embedder:
    """Load the vision tower named by settings.model on the devices the settings ask for.

    Raises ModelLoadError with a one-line message on any load failure.
    """
    return build_embedder(settings, pick_devices(settings))
