"""The model's image preprocessing in numpy and Pillow alone, for the decode worker processes.

`preprocess(image, spec)` turns a decoded (usually JPEG-draft reduced) RGB picture into exactly what the checkpoint's
Hugging Face image processor (PIL backend) would hand the vision tower for that same picture, as a small picklable
`Prepared`; `collate` stacks them into the batch dict the model takes. The inference thread then only moves tensors.

What is replicated, from transformers' `PilBackend` and `Siglip2ImageProcessorPil`:

* every image goes through Pillow `Image.resize(size, resample)` on the 8-bit RGB picture (the processors turn their
  channels-first uint8 array back into that very picture first), with `reducing_gap=None`;
* naflex (SigLIP2): the target size comes from `get_image_size_for_max_num_patches` (the binary search below, copied
  as is: both sides rounded up to whole patches, as many as fit in `max_num_patches`); the normalised image is cut
  into row-major patches, each flattened in (row, column, channel) order, zero rows pad them to `max_num_patches`,
  `pixel_attention_mask` (int32) marks the real ones and `spatial_shapes` (int64) holds the patch grid;
* fixed size: `size` as height x width (SigLIP), or the shortest edge to `shortest_edge` with the long one truncated
  `int(size * long / short)` (CLIP, BiT for DINOv2), then `center_crop` with its zero padding for a too small image;
* rescale as `float32(float64(v) * rescale_factor)` and normalise as `(x - mean) / std` in float32.

Rescale and normalise map each 8-bit value of each channel to one number, so they are one 3 x 256 lookup table built
with exactly those operations: bit-identical to the processor. Cutting patches and cropping happen on the uint8
pixels, which moves values but changes none. With `dtype="float16"` (the default: half the bytes to pickle and
no loss that matters to a network that runs in bf16/fp16 on GPUs anyway) each value is then rounded once to float16.

No torch here: importing this module in a decode worker must stay cheap.
"""

from __future__ import annotations

import math
from dataclasses import dataclass
from functools import lru_cache
from typing import Any

import numpy as np
from PIL import Image

NAFLEX = "siglip2-naflex"
_DTYPES = ("float16", "float32")

# The PIL-backend processor classes whose whole pipeline is the one replicated here. Anything else (a processor
# subclass from remote code, another backend) is refused: it may do more than these steps.
_NAFLEX_PROCESSORS = frozenset({"Siglip2ImageProcessorPil"})
_FIXED_PROCESSORS = frozenset({"SiglipImageProcessorPil", "CLIPImageProcessorPil", "BitImageProcessorPil"})


@dataclass(frozen=True)
class PreprocessSpec:
    """Everything `preprocess` needs, read from a loaded image processor; hashable and picklable."""

    family: str
    resample: int  # PIL.Image.Resampling value
    do_rescale: bool
    rescale_factor: float
    do_normalize: bool
    image_mean: tuple[float, float, float]
    image_std: tuple[float, float, float]
    # naflex
    patch_size: int = 0
    max_num_patches: int = 0
    # fixed size: either height x width, or shortest_edge (optionally capped by longest_edge); then the crop
    do_resize: bool = True
    height: int = 0
    width: int = 0
    shortest_edge: int = 0
    longest_edge: int = 0
    do_center_crop: bool = False
    crop_height: int = 0
    crop_width: int = 0
    dtype: str = "float16"  # storage of pixel_values: float16 (compact) or float32 (bit-identical to the processor)

    def __post_init__(self) -> None:
        if self.dtype not in _DTYPES:
            raise ValueError(f"dtype must be one of {_DTYPES}, not {self.dtype!r}")

    @property
    def naflex(self) -> bool:
        return self.family == NAFLEX

    @property
    def pixel_shape(self) -> tuple[int, ...] | None:
        """Shape of one Prepared.pixel_values, or None where it depends on the image (resize without a crop)."""
        if self.naflex:
            return (self.max_num_patches, self.patch_size * self.patch_size * 3)
        if self.do_center_crop:
            return (3, self.crop_height, self.crop_width)
        if self.do_resize and self.height and self.width:
            return (3, self.height, self.width)
        return None

    @classmethod
    def from_processor(cls, processor: Any, family: str, dtype: str = "float16") -> PreprocessSpec:
        """The spec of a transformers image processor (PIL backend); ValueError if it does more than we replicate."""
        name = type(processor).__name__
        naflex = family == NAFLEX
        if name not in (_NAFLEX_PROCESSORS if naflex else _FIXED_PROCESSORS):
            raise ValueError(f"cannot replicate {name} for the {family} family")
        if getattr(processor, "do_pad", None):
            raise ValueError(f"cannot replicate {name}: do_pad is set")
        do_rescale, do_normalize = bool(processor.do_rescale), bool(processor.do_normalize)
        if not (do_rescale or do_normalize):
            raise ValueError(f"cannot replicate {name}: it neither rescales nor normalises (uint8 model input)")
        common: dict[str, Any] = dict(
            family=family,
            resample=int(processor.resample if processor.resample is not None else Image.Resampling.BILINEAR),
            do_rescale=do_rescale,
            rescale_factor=float(processor.rescale_factor),
            do_normalize=do_normalize,
            image_mean=_triple(processor.image_mean, "image_mean"),
            image_std=_triple(processor.image_std, "image_std"),
            do_resize=bool(processor.do_resize),
            dtype=dtype,
        )
        if naflex:
            return cls(**common, patch_size=int(processor.patch_size), max_num_patches=int(processor.max_num_patches))
        size, crop = processor.size, processor.crop_size
        fields: dict[str, Any] = dict(
            height=_field(size, "height"),
            width=_field(size, "width"),
            shortest_edge=_field(size, "shortest_edge"),
            longest_edge=_field(size, "longest_edge"),
            do_center_crop=bool(getattr(processor, "do_center_crop", False)),
        )
        if common["do_resize"] and not (fields["shortest_edge"] or (fields["height"] and fields["width"])):
            raise ValueError(f"cannot replicate {name}: unsupported size {size}")
        if fields["do_center_crop"]:
            fields.update(crop_height=_field(crop, "height"), crop_width=_field(crop, "width"))
            if not (fields["crop_height"] and fields["crop_width"]):
                raise ValueError(f"cannot replicate {name}: unsupported crop_size {crop}")
        spec = cls(**common, **fields)
        if spec.pixel_shape is None:
            raise ValueError(f"cannot replicate {name}: its output size depends on the image (no crop)")
        return spec


def _field(size: Any, key: str) -> int:
    if size is None:
        return 0
    value = size.get(key) if isinstance(size, dict) else getattr(size, key, None)
    return int(value) if value else 0


def _triple(value: Any, what: str) -> tuple[float, float, float]:
    values = [float(value)] * 3 if isinstance(value, int | float) else [float(v) for v in value]
    if len(values) != 3:
        raise ValueError(f"{what} must have 3 values, got {value}")
    return values[0], values[1], values[2]


@dataclass(eq=False)
class Prepared:
    """One preprocessed image: numpy arrays only, cheap to pickle.

    naflex: pixel_values (max_num_patches, patch*patch*3), pixel_attention_mask (max_num_patches,) int32,
    spatial_shapes (2,) int64 patch rows and columns. Fixed size: pixel_values (3, H, W), the other two None.
    """

    pixel_values: np.ndarray
    pixel_attention_mask: np.ndarray | None = None
    spatial_shapes: np.ndarray | None = None

    @property
    def nbytes(self) -> int:
        arrays = (self.pixel_values, self.pixel_attention_mask, self.spatial_shapes)
        return sum(a.nbytes for a in arrays if a is not None)


# ----------------------------------------------------------------------------------------------------------------
# Sizes


def get_image_size_for_max_num_patches(
    image_height: int, image_width: int, patch_size: int, max_num_patches: int, eps: float = 1e-5
) -> tuple[int, int]:
    """transformers' Siglip2 target size, verbatim: the largest patch-aligned scale within max_num_patches."""

    def get_scaled_image_size(scale: float, size: int, patch_size: int) -> int:
        scaled_size = size * scale
        scaled_size = math.ceil(scaled_size / patch_size) * patch_size  # make divisible by patch_size
        scaled_size = max(patch_size, scaled_size)  # ensure at least 1 patch
        return int(scaled_size)

    scale_min, scale_max = eps / 10, 100.0
    while (scale_max - scale_min) >= eps:
        scale = (scale_min + scale_max) / 2
        target_height = get_scaled_image_size(scale, image_height, patch_size)
        target_width = get_scaled_image_size(scale, image_width, patch_size)
        num_patches = (target_height / patch_size) * (target_width / patch_size)
        if num_patches <= max_num_patches:
            scale_min = scale
        else:
            scale_max = scale
    scale = scale_min
    target_height = get_scaled_image_size(scale, image_height, patch_size)
    target_width = get_scaled_image_size(scale, image_width, patch_size)
    return target_height, target_width


def shortest_edge_size(height: int, width: int, size: int) -> tuple[int, int]:
    """transformers' get_resize_output_image_size(default_to_square=False, max_size=None): (height, width)."""
    short, long = (width, height) if width <= height else (height, width)
    new_short, new_long = size, int(size * long / short)
    return (new_long, new_short) if width <= height else (new_short, new_long)


def size_with_aspect_ratio(height: int, width: int, size: int, max_size: int | None) -> tuple[int, int]:
    """transformers' get_size_with_aspect_ratio (shortest_edge with a longest_edge cap): (height, width)."""
    raw_size = None
    if max_size is not None:
        min_original_size = float(min((height, width)))
        max_original_size = float(max((height, width)))
        if max_original_size / min_original_size * size > max_size:
            raw_size = max_size * min_original_size / max_original_size
            size = int(round(raw_size))
    base = raw_size if raw_size is not None else size  # raw_size is only set under a max_size
    if (height <= width and height == size) or (width <= height and width == size):
        oh, ow = height, width
    elif width < height:
        ow, oh = size, int(base * height / width)
    else:
        oh, ow = size, int(base * width / height)
    return oh, ow


def target_size(height: int, width: int, spec: PreprocessSpec) -> tuple[int, int]:
    """(height, width) the processor resizes a height x width image to."""
    if spec.naflex:
        return get_image_size_for_max_num_patches(height, width, spec.patch_size, spec.max_num_patches)
    if spec.shortest_edge and spec.longest_edge:
        return size_with_aspect_ratio(height, width, spec.shortest_edge, spec.longest_edge)
    if spec.shortest_edge:
        return shortest_edge_size(height, width, spec.shortest_edge)
    return spec.height, spec.width


# ----------------------------------------------------------------------------------------------------------------
# Pixels


@lru_cache(maxsize=16)
def _lookup(spec: PreprocessSpec) -> np.ndarray:
    """(3, 256) table: uint8 value of each channel -> rescaled, normalised value, with the processor's float ops."""
    values = np.arange(256, dtype=np.uint8)[None, :].repeat(3, axis=0)
    if spec.do_rescale:
        # transformers' rescale: upcast to float64, multiply, downcast to float32.
        table = (values.astype(np.float64) * spec.rescale_factor).astype(np.float32)
    else:
        table = values.astype(np.float32)
    if spec.do_normalize:
        # transformers' normalize: float32 mean and std, (x - mean) / std in float32.
        mean = np.array(spec.image_mean, dtype=np.float32)[:, None]
        std = np.array(spec.image_std, dtype=np.float32)[:, None]
        table = (table - mean) / std
    table = np.ascontiguousarray(table.astype(spec.dtype))
    table.flags.writeable = False
    return table


def _normalise_into(pixels: np.ndarray, planes: list[np.ndarray], spec: PreprocessSpec) -> None:
    """uint8 pixels, RGB on their last axis -> the three output views (one per channel), through the lookup table."""
    table = _lookup(spec)
    for channel, plane in enumerate(planes):
        # Indices are uint8, always inside the 256-entry table; mode="clip" spares numpy's bounds-checked buffering.
        np.take(table[channel], pixels[..., channel], out=plane, mode="clip")


def center_crop(pixels: np.ndarray, height: int, width: int) -> np.ndarray:
    """transformers' center_crop on an (H, W, C) array, zero padding included when the image is smaller."""
    orig_height, orig_width = pixels.shape[:2]
    top = (orig_height - height) // 2
    left = (orig_width - width) // 2
    bottom, right = top + height, left + width
    if top >= 0 and bottom <= orig_height and left >= 0 and right <= orig_width:
        return pixels[top:bottom, left:right]
    new_height, new_width = max(height, orig_height), max(width, orig_width)
    padded = np.zeros((new_height, new_width, pixels.shape[2]), dtype=pixels.dtype)
    top_pad = math.ceil((new_height - orig_height) / 2)
    left_pad = math.ceil((new_width - orig_width) / 2)
    padded[top_pad : top_pad + orig_height, left_pad : left_pad + orig_width] = pixels
    top, bottom, left, right = top + top_pad, bottom + top_pad, left + left_pad, right + left_pad
    return padded[max(0, top) : min(new_height, bottom), max(0, left) : min(new_width, right)]


def preprocess(image: Image.Image, spec: PreprocessSpec) -> Prepared:
    """One RGB picture (any size, e.g. a JPEG draft) -> what the processor gives the model for it."""
    if image.mode != "RGB":
        image = image.convert("RGB")  # what the embedder does before its processor sees an image
    width, height = image.size
    if width < 1 or height < 1:
        raise ValueError(f"cannot preprocess an empty image ({width}x{height})")
    if spec.do_resize:
        new_height, new_width = target_size(height, width, spec)
        if (new_width, new_height) != image.size:
            image = image.resize((new_width, new_height), resample=spec.resample)
    pixels = np.asarray(image)  # (H, W, 3) uint8
    if spec.naflex:
        return _patches(pixels, spec)
    if spec.do_center_crop:
        pixels = center_crop(pixels, spec.crop_height, spec.crop_width)
    values = np.empty((3, *pixels.shape[:2]), dtype=spec.dtype)  # channels first, as the processor's
    _normalise_into(pixels, [values[0], values[1], values[2]], spec)
    return Prepared(values)


def _patches(pixels: np.ndarray, spec: PreprocessSpec) -> Prepared:
    p, limit = spec.patch_size, spec.max_num_patches
    height, width = pixels.shape[:2]
    rows, cols = height // p, width // p
    if rows * cols > limit:
        raise ValueError(f"{rows}x{cols} patches exceed max_num_patches={limit}")
    # (rows*p, cols*p, 3) -> (rows, cols, p, p, 3): each patch flattened row by row, channels innermost, as
    # transformers' convert_image_to_patches does from its channels-first array.
    grid = pixels[: rows * p, : cols * p].reshape(rows, p, cols, p, 3).transpose(0, 2, 1, 3, 4)
    values = np.zeros((limit, p * p * 3), dtype=spec.dtype)
    real = values[: rows * cols].reshape(rows, cols, p, p, 3)  # a view: written in place
    _normalise_into(grid, [real[..., 0], real[..., 1], real[..., 2]], spec)
    mask = np.zeros(limit, dtype=np.int32)
    mask[: rows * cols] = 1
    return Prepared(values, mask, np.array([rows, cols], dtype=np.int64))


def collate(items: list[Prepared]) -> dict[str, np.ndarray]:
    """Prepared items -> the batch dict (same keys, shapes, dtypes) the processor returns for the same images."""
    if not items:
        raise ValueError("nothing to collate")
    first = items[0]
    keys = ["pixel_values"] + [k for k in ("pixel_attention_mask", "spatial_shapes") if getattr(first, k) is not None]
    batch = {}
    for key in keys:
        arrays = [getattr(item, key) for item in items]
        reference = arrays[0]
        for array in arrays:
            if array is None or array.shape != reference.shape or array.dtype != reference.dtype:
                raise ValueError(f"cannot batch {key}: items were prepared with different specs")
        batch[key] = np.stack(arrays)
    return batch
