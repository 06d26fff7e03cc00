"""What the embedder is asked for and the key its vectors are filed under, without importing torch.

`dedupd --help`, the config, status and report import only this; model/runtime.py holds everything torch.
"""

from __future__ import annotations

import hashlib
import os
from dataclasses import dataclass, replace
from pathlib import Path

from dedupd.errors import ModelLoadError

_OFFLINE_HINT = (
    "without network, pass a local checkpoint folder (--model /path/to/folder), or fetch the model on a connected "
    "machine with `hf download {hub_id}` (older hubs: huggingface-cli download) and point HF_HOME at that cache "
    "with HF_HUB_OFFLINE=1"
)
_WEIGHT_SUFFIXES = (".safetensors", ".bin", ".pt", ".pth")
_SAMPLE_BYTES = 1 << 20


@dataclass(frozen=True)
class EmbedderSettings:
    model: str = "google/siglip2-base-patch16-naflex"  # hub id or local folder
    batch_size: int | None = None  # per device; None = default_batch_size() of the first device
    gpus: int | None = None  # None = all visible CUDA GPUs; 0 = CPU only
    gpu_memory_fraction: float = 0.9  # torch.cuda.set_per_process_memory_fraction per device
    device: str = "auto"  # auto | cpu | cuda
    max_patches: int | None = None  # naflex only: override processor max_num_patches
    threads: int | None = None  # torch CPU threads; None = leave default
    precision: str = "auto"  # auto | float | int8: see PRECISIONS
    preset: str = "default"  # default | fast: see apply_preset


# More torch CPU threads than any machine has cores: the bound of model.threads and `bench --threads`, so a typo
# (99999999999999999999) is refused naming its key instead of overflowing inside torch.set_num_threads.
MAX_THREADS = 4096

# auto: the fastest float dtype per device, or int8 where the fast preset finds it faster (apply_preset); float: the
# fastest float dtype per device, always; int8: dynamic quantisation, CPU only. auto and float give the same vectors.
PRECISIONS = ("auto", "float", "int8")
FLOATS = ("auto", "float")
PRESETS = ("default", "fast")
# The fast preset's patch budget: a quarter of SigLIP2-base's 256, ~4x less compute per image (BENCHMARKS.md).
FAST_PATCHES = 64
# Per device: a GPU needs large batches to be busy; on the CPU 16 is as fast per image as 128 (measured, BENCHMARKS.md)
# and lets decoding overlap the model sooner.
GPU_BATCH, CPU_BATCH = 128, 16


def default_batch_size(device: str) -> int:
    return GPU_BATCH if device.startswith("cuda") else CPU_BATCH


def vector_model_id(
    source_id: str, max_patches: int | None = None, precision: str = "auto", preset: str = "default"
) -> str:
    """The key stored vectors are filed under. Knobs that change the vectors are part of it, so a store never mixes
    vectors from two settings (an int8 vector of a photo is not the fp32 one): changing one re-embeds. A preset
    names itself too, so its vectors never mix with those of the same knobs set by hand or of another preset."""
    parts = [preset] if preset != "default" else []
    parts += [f"patches{max_patches}"] if max_patches is not None else []
    parts += [precision] if precision not in FLOATS else []
    return "+".join([source_id, *parts])


def apply_preset(settings: EmbedderSettings) -> EmbedderSettings:
    """settings with the preset's knobs filled in (idempotent). fast: at most FAST_PATCHES patches, and the precision
    fast_precision gives for the device the model runs on here. Decided without torch, so the key is known before
    the model loads."""
    if settings.preset not in PRESETS:
        raise ModelLoadError(f"unknown preset '{settings.preset}': use {' or '.join(PRESETS)}")
    if settings.preset == "default":
        return settings
    patches = min(settings.max_patches or FAST_PATCHES, FAST_PATCHES)
    return replace(settings, max_patches=patches, precision=fast_precision(settings.precision, runs_on_cpu(settings)))


def fast_precision(precision: str, on_cpu: bool) -> str:
    """The fast preset's precision: one set by hand stays; auto becomes int8 for a model on a CPU without AMX and
    float on a GPU or an AMX CPU (int8 has CPU kernels only). Measured at 64 patches, 2 threads (BENCHMARKS.md
    section 9): on an AVX512-BF16 CPU without AMX int8 ran 32-33 img/s against bf16's 27-28 (fp32 14.5), and on
    AVX2 bf16 is emulated."""
    if precision != "auto":
        return precision
    return "int8" if on_cpu and not cpu_has_amx() else "float"


def runs_on_cpu(settings: EmbedderSettings) -> bool:
    """Whether the model will run on the CPU, told without importing torch: asked for, or no NVIDIA GPU visible
    (the driver lists none, or CUDA_VISIBLE_DEVICES hides them all)."""
    if settings.device == "cpu" or settings.gpus == 0 or settings.precision == "int8":
        return True
    if settings.device == "cuda":
        return False  # asked for; pick_devices refuses to start when none is there
    if os.environ.get("CUDA_VISIBLE_DEVICES", "unset").strip() in ("", "-1"):
        return True
    try:
        return not os.listdir("/proc/driver/nvidia/gpus")
    except OSError:
        return True


def cpu_supports_bf16(cpuinfo: Path = Path("/proc/cpuinfo")) -> bool:
    """True when the CPU computes bf16 natively; elsewhere torch emulates it and bf16 is slower than fp32."""
    return bool(_cpu_flags(cpuinfo) & {"avx512_bf16", "amx_bf16"})


def cpu_has_amx(cpuinfo: Path = Path("/proc/cpuinfo")) -> bool:
    """True when the CPU has AMX tiles for bf16, where bf16 matrix products outrun int8's dynamic quantisation."""
    return "amx_bf16" in _cpu_flags(cpuinfo)


def _cpu_flags(cpuinfo: Path) -> set[str]:
    try:
        text = cpuinfo.read_text(errors="replace")
    except OSError:
        return set()
    flags: set[str] = set()
    for line in text.splitlines():
        key, _, value = line.partition(":")
        if key.strip() == "flags":
            flags.update(value.split())
    return flags


# --------------------------------------------------------------------------------------------------------------------
# Checkpoint identity


def load_error(model: str, reason: object) -> ModelLoadError:
    """One line naming the model, the cause, and the offline way out."""
    hint = _OFFLINE_HINT.format(hub_id="<model id>" if _looks_like_path(model) else model)
    return ModelLoadError(f"cannot load model '{model}': {short_reason(reason)}; {hint}")


def short_reason(reason: object) -> str:
    text = " ".join(str(reason).split()).rstrip(".")
    if "couldn't connect to" in text:
        # transformers' wording points at its own docs; the hint that follows is the actionable part.
        return "not in the local Hugging Face cache and the hub cannot be reached"
    return text if len(text) <= 300 else text[:297] + "..."


def _looks_like_path(model: str) -> bool:
    # Hub ids are "name" or "org/name"; anything else containing a separator was meant as a folder.
    return model.startswith(("/", ".", "~")) or "\\" in model or model.count("/") > 1


def _weight_files(folder: Path) -> list[Path]:
    return sorted(p for p in folder.iterdir() if p.is_file() and p.name.endswith(_WEIGHT_SUFFIXES))


def _edge_bytes(path: Path) -> bytes:
    # Head and tail catch most same-shape weight changes (fine-tunes) without hashing gigabytes at every start.
    with path.open("rb") as handle:
        head = handle.read(_SAMPLE_BYTES)
        handle.seek(max(0, path.stat().st_size - _SAMPLE_BYTES))
        return head + handle.read(_SAMPLE_BYTES)


def local_model_id(folder: Path) -> str:
    """'<folder name>@<12 hex>' from config.json and the weight files' names, sizes and edge bytes."""
    digest = hashlib.sha256()
    config = folder / "config.json"
    digest.update(config.read_bytes() if config.is_file() else b"")
    for weights in _weight_files(folder):
        digest.update(f"\0{weights.name}\0{weights.stat().st_size}\0".encode())
        digest.update(_edge_bytes(weights))
    return f"{folder.resolve().name}@{digest.hexdigest()[:12]}"


@dataclass(frozen=True)
class Source:
    ref: str  # what transformers loads from: a folder path or a hub id
    model_id: str


def resolve_source(model: str) -> Source:
    """Tell a local folder from a hub id; a path that is not a folder fails here, before any hub lookup."""
    path = Path(model).expanduser()
    if path.is_dir():
        return Source(str(path), local_model_id(path))
    if path.exists():
        raise load_error(model, f"{path} is a file, not a checkpoint folder")
    if _looks_like_path(model):
        raise load_error(model, f"folder {path} does not exist")
    return Source(model, model)
