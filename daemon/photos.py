"""Synthetic photos: deterministic, photo-like pictures for `dedupd bench`, the scripts in bench/ and the tests.

Each is a pure function of its seed and size, so a benchmark or a failing test reproduces byte for byte.
"""

from __future__ import annotations

import numpy as np
from PIL import Image, ImageDraw, ImageFilter

# Smooth content is computed on a grid this size and upscaled, which keeps 12 MP
# pictures cheap and makes the picture survive resizing and re-encoding.
_BASE_SIDE = 256
# Shapes are drawn at most this large and then upscaled: a 12 MP picture costs about
# as much as a 1 MP one, and its edges stay soft like a real photo's.
_DETAIL_SIDE = 1024


def photo(seed: int, size: tuple[int, int] = (640, 480), sensor_noise: bool = False) -> Image.Image:
    """An RGB picture whose content is clearly different for every seed.

    Low-frequency gradients and shapes carry most of the energy (so a resized or re-encoded copy stays visually
    close); mild noise stands in for sensor grain. With sensor_noise the grain and a fine texture are drawn per pixel
    instead of from a repeated tile, so the JPEG carries per-pixel detail to code and decode, as a camera's does:
    what `dedupd bench` generates.
    """
    rng = np.random.default_rng(seed)
    scale = min(1.0, _DETAIL_SIDE / max(size))
    detail = (max(2, round(size[0] * scale)), max(2, round(size[1] * scale)))
    img = _backdrop(rng, detail)
    _draw_shapes(img, rng)
    img = img.filter(ImageFilter.GaussianBlur(radius=max(detail) / 400))
    if detail != size:
        img = img.resize(size, Image.Resampling.BICUBIC)
    return _add_sensor_noise(img, rng) if sensor_noise else _add_grain(img, rng)


def _backdrop(rng: np.random.Generator, size: tuple[int, int]) -> Image.Image:
    w, h = size
    scale = _BASE_SIDE / max(w, h)
    bw, bh = max(2, round(w * scale)), max(2, round(h * scale))
    y, x = np.mgrid[0:bh, 0:bw].astype(np.float32)
    x, y = x / bw, y / bh
    channels = [_smooth_channel(rng, x, y) for _ in range(3)]
    base = np.clip(np.stack(channels, axis=-1), 0, 255).astype(np.uint8)
    return Image.fromarray(base).resize(size, Image.Resampling.BICUBIC)


def _smooth_channel(rng: np.random.Generator, x: np.ndarray, y: np.ndarray) -> np.ndarray:
    gx, gy, offset = rng.uniform(-120, 120), rng.uniform(-120, 120), rng.uniform(60, 200)
    fx, fy, phase = rng.uniform(1, 4), rng.uniform(1, 4), rng.uniform(0, 2 * np.pi)
    wave = 40 * np.sin(2 * np.pi * (fx * x + fy * y) + phase)
    return offset + gx * (x - 0.5) + gy * (y - 0.5) + wave


def _draw_shapes(img: Image.Image, rng: np.random.Generator, count: int = 7) -> None:
    draw = ImageDraw.Draw(img)
    w, h = img.size
    for _ in range(count):
        x0, x1 = sorted(rng.uniform(-0.1, 1.1, 2) * w)
        y0, y1 = sorted(rng.uniform(-0.1, 1.1, 2) * h)
        colour = tuple(int(c) for c in rng.integers(0, 256, 3))
        kind = int(rng.integers(0, 3))
        if kind == 0:
            draw.ellipse((x0, y0, x1, y1), fill=colour)
        elif kind == 1:
            draw.rectangle((x0, y0, x1, y1), fill=colour)
        else:
            draw.polygon([(x0, y1), ((x0 + x1) / 2, y0), (x1, y1)], fill=colour)


def _add_grain(img: Image.Image, rng: np.random.Generator, amplitude: int = 6) -> Image.Image:
    # A small tile of noise repeated over the picture: per-pixel noise for 12 MP would
    # dominate the test's run time without making the picture any more realistic.
    tile = rng.integers(-amplitude, amplitude + 1, size=(64, 64, 3), dtype=np.int16)
    w, h = img.size
    grain = np.tile(tile, (-(-h // 64), -(-w // 64), 1))[:h, :w]
    pixels = np.asarray(img, dtype=np.int16) + grain
    return Image.fromarray(np.clip(pixels, 0, 255).astype(np.uint8))


def _add_sensor_noise(img: Image.Image, rng: np.random.Generator) -> Image.Image:
    w, h = img.size
    # fine texture (foliage, fabric) that survives the upscale as detail the JPEG has to code, then colour noise
    texture = rng.standard_normal((max(1, h // 2), max(1, w // 2), 1), dtype=np.float32) * 16.0
    texture_img = Image.fromarray(np.clip(texture[..., 0] + 128, 0, 255).astype(np.uint8)).resize((w, h))
    grain = rng.standard_normal((h, w, 3), dtype=np.float32) * 5.0
    pixels = np.asarray(img, np.float32) + (np.asarray(texture_img, np.float32)[..., None] - 128) + grain
    return Image.fromarray(np.clip(pixels, 0, 255).astype(np.uint8))
