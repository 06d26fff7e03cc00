"""Shared pytest fixtures."""

from __future__ import annotations

import os

# Tests never touch the network: huggingface_hub reads this once, at import, so it is set before anything imports it.
os.environ["HF_HUB_OFFLINE"] = "1"
os.environ["TRANSFORMERS_OFFLINE"] = "1"

from pathlib import Path

import pytest
from model_builders import build_clip, build_dinov2, build_siglip, build_siglip2

# ====================================================================================================================
# Model fixtures: tiny real checkpoints (full models + image processors) built once per session.
# ====================================================================================================================


@pytest.fixture(scope="session")
def tiny_siglip2(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """Full Siglip2Model naflex checkpoint (vision + text, hidden 32, 2 layers, patch 16, 64 patches)."""
    return build_siglip2(tmp_path_factory.mktemp("models") / "tiny-siglip2")


@pytest.fixture(scope="session")
def tiny_siglip(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """Full SiglipModel checkpoint, fixed 64x64 input."""
    return build_siglip(tmp_path_factory.mktemp("models") / "tiny-siglip")


@pytest.fixture(scope="session")
def tiny_clip(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """Full CLIPModel checkpoint, projection dim 16."""
    return build_clip(tmp_path_factory.mktemp("models") / "tiny-clip")


@pytest.fixture(scope="session")
def tiny_dinov2(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """Dinov2Model checkpoint (DINOv2 has no text tower), 56x56 crops of 14-pixel patches."""
    return build_dinov2(tmp_path_factory.mktemp("models") / "tiny-dinov2")


# ====================================================================================================================
# End of model fixtures.
# ====================================================================================================================
