"""Builders for tiny, real, randomly-initialised vision checkpoints used by the embedder tests.

Each builder writes a full checkpoint (vision + text tower where the family has one) and its image processor with
save_pretrained, so the loader is exercised exactly as on a hub download, only small enough to build in well under
a second. The image processors are the PIL backends: torchvision is not a project dependency.
"""

from __future__ import annotations

from pathlib import Path

from dedupd.model.runtime import DeviceRunner

# Small text towers keep the checkpoints tiny; the token ids must fit the vocabulary or transformers warns.
_TEXT = dict(
    vocab_size=100,
    hidden_size=32,
    intermediate_size=64,
    num_hidden_layers=1,
    num_attention_heads=2,
    max_position_embeddings=16,
    pad_token_id=1,
    bos_token_id=2,
    eos_token_id=3,
)
_VISION = dict(hidden_size=32, intermediate_size=64, num_hidden_layers=2, num_attention_heads=2)


def _save(model, processor, folder: Path) -> Path:
    folder.mkdir(parents=True, exist_ok=True)
    model.save_pretrained(folder)
    processor.save_pretrained(folder)
    return folder


def build_siglip2(folder: Path, seed: int = 0, max_num_patches: int = 64) -> Path:
    """A full Siglip2Model (naflex) checkpoint: 16-pixel patches, position grid of 64 patches."""
    import torch
    from transformers import Siglip2Config, Siglip2ImageProcessorPil, Siglip2Model

    torch.manual_seed(seed)
    config = Siglip2Config(text_config=_TEXT, vision_config={**_VISION, "patch_size": 16, "num_patches": 64})
    processor = Siglip2ImageProcessorPil(max_num_patches=max_num_patches, patch_size=16)
    return _save(Siglip2Model(config).eval(), processor, folder)


def build_siglip(folder: Path, seed: int = 0, vocab_size: int = 100) -> Path:
    """A full SiglipModel checkpoint with a fixed 64x64 input (16 patches of 16 pixels).

    vocab_size=256000 is how SigLIP2 fixed-resolution checkpoints (model_type "siglip") are told apart; the text
    tower then gets one tiny hidden size so the embedding table stays about 8 M floats.
    """
    import torch
    from transformers import SiglipConfig, SiglipImageProcessorPil, SiglipModel

    torch.manual_seed(seed)
    text = {**_TEXT, "vocab_size": vocab_size}
    if vocab_size > 1000:
        text.update(hidden_size=8, intermediate_size=16, num_attention_heads=1)
    config = SiglipConfig(text_config=text, vision_config={**_VISION, "image_size": 64, "patch_size": 16})
    processor = SiglipImageProcessorPil(size={"height": 64, "width": 64})
    return _save(SiglipModel(config).eval(), processor, folder)


def build_clip(folder: Path, seed: int = 0) -> Path:
    """A full CLIPModel checkpoint (projection dim 16) with a 64-pixel shortest edge and 64x64 centre crop."""
    import torch
    from transformers import CLIPConfig, CLIPImageProcessorPil, CLIPModel

    torch.manual_seed(seed)
    config = CLIPConfig(
        # Each tower's config carries its own projection_dim; CLIPVisionModelWithProjection reads the vision one.
        text_config={**_TEXT, "projection_dim": 16},
        vision_config={**_VISION, "image_size": 64, "patch_size": 16, "projection_dim": 16},
        projection_dim=16,
    )
    processor = CLIPImageProcessorPil(size={"shortest_edge": 64}, crop_size={"height": 64, "width": 64})
    return _save(CLIPModel(config).eval(), processor, folder)


def build_dinov2(folder: Path, seed: int = 0) -> Path:
    """A Dinov2Model checkpoint (the full model: DINOv2 has no text tower) with 14-pixel patches on 56x56 crops."""
    import torch
    from transformers import BitImageProcessorPil, Dinov2Config, Dinov2Model

    torch.manual_seed(seed)
    config = Dinov2Config(
        hidden_size=32, num_hidden_layers=2, num_attention_heads=2, mlp_ratio=2, image_size=56, patch_size=14
    )
    processor = BitImageProcessorPil(
        size={"shortest_edge": 64},
        crop_size={"height": 56, "width": 56},
        image_mean=[0.485, 0.456, 0.406],
        image_std=[0.229, 0.224, 0.225],
    )
    return _save(Dinov2Model(config).eval(), processor, folder)


class OomAbove(DeviceRunner):
    """Raises CUDA out-of-memory for batches larger than `limit`, like a GPU that is too small."""

    limit = 2

    def __init__(self, *args, **kwargs) -> None:
        super().__init__(*args, **kwargs)
        self.sizes: list[int] = []

    def forward(self, inputs):
        import torch

        size = len(inputs["pixel_values"])
        self.sizes.append(size)
        if size > self.limit:
            raise torch.cuda.OutOfMemoryError("CUDA out of memory. Tried to allocate 2.00 GiB")
        return super().forward(inputs)
