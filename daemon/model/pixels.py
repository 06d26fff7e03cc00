"""A deterministic embedder with no model: the seam the tests and the benchmarks use where the model is not the point.

An 8x8 thumbnail of the picture, mean-removed and normalised: resized or re-encoded copies land very close, different
pictures far apart, and embedding costs next to nothing. It satisfies model/loader.EmbedderLike.
"""

from __future__ import annotations

from typing import Any

import numpy as np


class PixelEmbedder:
    model_id = "test/pixels-v1"
    dim = 192
    draft_side = 64
    devices = ("cpu",)
    batch_items = None  # model.batch_size decides
    preprocess_spec = None  # the pipeline hands embed() RGB images

    def __init__(self) -> None:
        self.calls = 0
        self.images = 0

    def embed(self, images: list[Any]) -> np.ndarray:
        from PIL import Image

        self.calls += 1
        self.images += len(images)
        rows = [
            np.asarray(im.convert("RGB").resize((8, 8), Image.Resampling.BOX), dtype=np.float32).ravel()
            for im in images
        ]
        matrix = np.stack(rows) if rows else np.zeros((0, self.dim), np.float32)
        matrix -= matrix.mean(axis=1, keepdims=True)
        return matrix / np.linalg.norm(matrix, axis=1, keepdims=True).clip(1e-6)

    def embed_prepared(self, items: list[Any]) -> np.ndarray:
        raise NotImplementedError("preprocess_spec is None: only embed() is ever called")

    def close(self) -> None:
        pass
