"""dedupd.model.runtime on tiny real checkpoints: loading, the random-init guard, families, devices, OOM, failures."""

from __future__ import annotations

import json
import shutil
import subprocess
import sys
from dataclasses import replace
from pathlib import Path
from typing import ClassVar

import numpy as np
import pytest
import torch
from model_builders import OomAbove, build_siglip, build_siglip2
from PIL import Image
from safetensors.torch import load_file, save_file

from dedupd.errors import DedupdError, ModelLoadError
from dedupd.model.runtime import (
    DeviceRunner,
    Embedder,
    attention_candidates,
    build_embedder,
    cpu_supports_bf16,
    dtype_candidates,
    load_embedder,
)
from dedupd.model.settings import EmbedderSettings, cpu_has_amx, local_model_id, resolve_source


def make_images(count: int, seed: int = 0) -> list[Image.Image]:
    """Random RGB images of assorted sizes and aspect ratios."""
    rng = np.random.RandomState(seed)
    sizes = [(96, 64), (40, 120), (64, 64), (200, 50), (33, 47), (128, 96), (16, 16), (75, 150)]
    return [
        Image.fromarray(rng.randint(0, 256, (h, w, 3), dtype=np.uint8), "RGB")
        for w, h in (sizes[i % len(sizes)] for i in range(count))
    ]


def settings_for(folder: Path, **changes: object) -> EmbedderSettings:
    return replace(EmbedderSettings(model=str(folder), device="cpu", batch_size=4), **changes)


def cpu_embedder(folder: Path, devices: list[str] | None = None, **changes: object) -> Embedder:
    # fp32 on every machine, so exact-comparison tests do not depend on the CPU having native bf16.
    return build_embedder(settings_for(folder, **changes), devices or ["cpu"], cpu_bf16=False)


@pytest.fixture(scope="module")
def siglip2(tiny_siglip2: Path) -> Embedder:
    with cpu_embedder(tiny_siglip2) as embedder:
        yield embedder


@pytest.fixture(scope="module")
def reference(siglip2: Embedder) -> np.ndarray:
    return siglip2.embed(make_images(12))


# ---------------------------------------------------------------------------------------------------------------------
# Loading and the random-init guard


def test_loaded_vision_weights_equal_checkpoint(siglip2: Embedder, tiny_siglip2: Path) -> None:
    saved = load_file(tiny_siglip2 / "model.safetensors")
    params = dict(siglip2.runners[0].model.named_parameters())
    assert len(params) > 10
    for name, value in params.items():
        assert torch.equal(value.detach(), saved[f"vision_model.{name}"]), name
    assert not any(name.startswith("text_model") for name in params)


def _copy_with_weights(src: Path, dst: Path, edit) -> Path:
    shutil.copytree(src, dst)
    tensors = load_file(src / "model.safetensors")
    edit(tensors)
    save_file(tensors, dst / "model.safetensors", metadata={"format": "pt"})
    return dst


def test_missing_vision_weight_raises(tiny_siglip2: Path, tmp_path: Path) -> None:
    broken = _copy_with_weights(tiny_siglip2, tmp_path / "m", lambda t: t.pop("vision_model.post_layernorm.weight"))
    with pytest.raises(ModelLoadError, match=r"post_layernorm\.weight") as info:
        cpu_embedder(broken)
    assert "missing" in str(info.value) and "\n" not in str(info.value)


def test_renamed_vision_weight_raises(tiny_siglip2: Path, tmp_path: Path) -> None:
    def rename(tensors: dict) -> None:
        prefix = "vision_model.encoder.layers.0.mlp"
        tensors[f"{prefix}.fc9.weight"] = tensors.pop(f"{prefix}.fc1.weight")

    with pytest.raises(
        ModelLoadError, match=r"missing: encoder\.layers\.0\.mlp\.fc1\.weight; unexpected: .*fc9\.weight"
    ):
        cpu_embedder(_copy_with_weights(tiny_siglip2, tmp_path / "m", rename))


def test_missing_text_weights_are_fine(tiny_siglip2: Path, tmp_path: Path) -> None:
    def drop_text(tensors: dict) -> None:
        for key in [k for k in tensors if k.startswith("text_model.")]:
            del tensors[key]

    with cpu_embedder(_copy_with_weights(tiny_siglip2, tmp_path / "m", drop_text)) as embedder:
        assert embedder.embed(make_images(1)).shape == (1, 32)


# ---------------------------------------------------------------------------------------------------------------------
# Embedding contract


def test_embed_shape_dtype_norm(siglip2: Embedder, reference: np.ndarray) -> None:
    assert reference.shape == (12, siglip2.dim) and siglip2.dim == 32
    assert reference.dtype == np.float32
    np.testing.assert_allclose(np.linalg.norm(reference, axis=1), 1.0, atol=1e-5)


def test_embed_is_deterministic(siglip2: Embedder, reference: np.ndarray) -> None:
    np.testing.assert_array_equal(siglip2.embed(make_images(12)), reference)


def test_same_image_same_vector_different_images_differ(siglip2: Embedder) -> None:
    image, other = make_images(2)
    vectors = siglip2.embed([image, image.copy(), other])
    np.testing.assert_allclose(vectors[0], vectors[1], atol=1e-6)
    assert np.abs(vectors[0] - vectors[2]).max() > 1e-3


def test_empty_list(siglip2: Embedder) -> None:
    vectors = siglip2.embed([])
    assert vectors.shape == (0, 32) and vectors.dtype == np.float32


def test_non_rgb_images_are_converted(siglip2: Embedder) -> None:
    image = make_images(1)[0]
    vectors = siglip2.embed([image, image.convert("RGBA"), image.convert("L")])
    np.testing.assert_allclose(vectors[0], vectors[1], atol=1e-6)
    assert vectors.shape == (3, 32)


def test_batch_size_does_not_change_vectors(tiny_siglip2: Path, reference: np.ndarray) -> None:
    for batch_size in (1, 8):
        with cpu_embedder(tiny_siglip2, batch_size=batch_size) as embedder:
            np.testing.assert_allclose(embedder.embed(make_images(12)), reference, atol=1e-5)


def test_bf16_compute_still_gives_normalised_float32(tiny_siglip2: Path, reference: np.ndarray) -> None:
    with build_embedder(settings_for(tiny_siglip2), ["cpu"], cpu_bf16=True) as embedder:
        assert embedder.runners[0].dtype == torch.bfloat16
        vectors = embedder.embed(make_images(12))
    assert vectors.dtype == np.float32
    np.testing.assert_allclose(np.linalg.norm(vectors, axis=1), 1.0, atol=1e-5)
    assert (vectors * reference).sum(axis=1).min() > 0.98


def test_closed_embedder_refuses(tiny_siglip2: Path) -> None:
    embedder = cpu_embedder(tiny_siglip2)
    embedder.close()
    with pytest.raises(RuntimeError, match="closed"):
        embedder.embed(make_images(1))


def test_unprocessable_image_is_an_input_error_not_a_device_failure(tiny_clip: Path) -> None:
    with cpu_embedder(tiny_clip) as embedder:
        with pytest.raises(ValueError, match="preprocess"):
            embedder.embed([Image.new("RGB", (0, 0))])
        assert embedder.devices == ["cpu"]
        assert embedder.embed(make_images(1)).shape == (1, 16)


# ---------------------------------------------------------------------------------------------------------------------
# Families


def _reference_vectors(family: str, folder: Path, images: list[Image.Image]) -> np.ndarray:
    """What the full model computes for the images, the way each family's model card does it."""
    import transformers

    processor = transformers.AutoImageProcessor.from_pretrained(folder, backend="pil")
    inputs = processor(images=images, return_tensors="pt")
    with torch.inference_mode():
        if family == "clip":
            model = transformers.CLIPModel.from_pretrained(folder).eval()
            vectors = model.visual_projection(model.vision_model(**inputs).pooler_output)
        elif family == "dinov2":
            vectors = transformers.Dinov2Model.from_pretrained(folder).eval()(**inputs).pooler_output
        else:
            full = transformers.AutoModel.from_pretrained(folder).eval()
            vectors = full.vision_model(**inputs).pooler_output
    return torch.nn.functional.normalize(vectors, dim=-1).numpy()


@pytest.mark.parametrize(
    ("fixture", "family", "dim", "draft"),
    [
        ("tiny_siglip2", "siglip2-naflex", 32, 128),
        ("tiny_siglip", "siglip", 32, 64),
        ("tiny_clip", "clip", 16, 64),
        ("tiny_dinov2", "dinov2", 32, 64),
    ],
)
def test_family_loads_and_embeds(request, fixture: str, family: str, dim: int, draft: int) -> None:
    folder = request.getfixturevalue(fixture)
    images = make_images(5)
    with load_embedder(settings_for(folder)) as embedder:
        assert (embedder.family, embedder.dim, embedder.draft_side, embedder.devices) == (family, dim, draft, ["cpu"])
        vectors, dtype = embedder.embed(images), embedder.runners[0].dtype
    assert vectors.shape == (5, dim) and vectors.dtype == np.float32
    np.testing.assert_allclose(np.linalg.norm(vectors, axis=1), 1.0, atol=1e-5)
    expected = _reference_vectors(family, folder, images)
    if dtype == torch.float32:
        np.testing.assert_allclose(vectors, expected, atol=1e-5)
    else:  # a CPU with native bf16 computes in bf16
        assert (vectors * expected).sum(axis=1).min() > 0.98


def test_fixed_size_siglip2_is_told_from_siglip(tmp_path: Path) -> None:
    folder = build_siglip(tmp_path / "checkpoint", vocab_size=256_000)
    with cpu_embedder(folder) as embedder:
        assert embedder.family == "siglip2"
        assert embedder.embed(make_images(2)).shape == (2, 32)


def test_max_patches_overrides_naflex_budget(tiny_siglip2: Path, reference: np.ndarray) -> None:
    with cpu_embedder(tiny_siglip2, max_patches=16) as embedder:
        assert embedder.draft_side == 64
        vectors = embedder.embed(make_images(12))
    assert np.abs(vectors - reference).max() > 1e-3


def test_unsupported_model_type(tmp_path: Path) -> None:
    (tmp_path / "config.json").write_text(json.dumps({"model_type": "bert"}))
    with pytest.raises(ModelLoadError, match="model_type 'bert' is not supported"):
        cpu_embedder(tmp_path)


# ---------------------------------------------------------------------------------------------------------------------
# Devices, work stealing, OOM and device failure


def test_two_cpu_devices_match_one_and_share_work(tiny_siglip2: Path, reference: np.ndarray) -> None:
    with cpu_embedder(tiny_siglip2, devices=["cpu", "cpu"], batch_size=1) as embedder:
        first, second = embedder.runners
        assert first.model is not second.model
        np.testing.assert_allclose(embedder.embed(make_images(12)), reference, atol=1e-5)
        assert first.images_done > 0 and second.images_done > 0
        assert first.images_done + second.images_done == 12


def test_few_images_are_split_over_devices(tiny_siglip2: Path, reference: np.ndarray) -> None:
    with cpu_embedder(tiny_siglip2, devices=["cpu", "cpu"], batch_size=128) as embedder:
        assert embedder._chunk_size(12) == 6  # two batches of 6 rather than one of 12 left to a single device
        np.testing.assert_allclose(embedder.embed(make_images(12)), reference, atol=1e-5)
        assert sum(runner.images_done for runner in embedder.runners) == 12


def test_oom_halves_the_batch_and_completes(tiny_siglip2: Path, reference: np.ndarray) -> None:
    settings = settings_for(tiny_siglip2, batch_size=8)
    with build_embedder(settings, ["cpu"], cpu_bf16=False, runner_cls=OomAbove) as embedder:
        runner = embedder.runners[0]
        runner.sizes.clear()
        vectors = embedder.embed(make_images(12))  # batches of 8 and 4
        assert runner.sizes == [8, 4, 2, 2, 2, 2, 2, 2]
        assert runner.batch_limit == 2 and runner.failed is None
        np.testing.assert_allclose(vectors, reference, atol=1e-5)
        runner.sizes.clear()
        embedder.embed(make_images(4))
        assert runner.sizes == [2, 2]  # the learned limit sticks


class Armed(DeviceRunner):
    """Works for the load-time probe, then raises `error` once the test arms the replica."""

    armed: ClassVar[dict[int, Exception]] = {}

    def forward(self, inputs):
        if id(self) in self.armed:
            raise self.armed[id(self)]
        return super().forward(inputs)


@pytest.fixture
def armed() -> dict[int, Exception]:
    Armed.armed = {}
    yield Armed.armed
    Armed.armed = {}


def test_oom_at_batch_one_fails_the_device_and_others_take_its_work(tiny_siglip2: Path, reference, armed) -> None:
    settings = settings_for(tiny_siglip2, batch_size=2)
    with build_embedder(settings, ["cpu", "cpu"], cpu_bf16=False, runner_cls=Armed) as embedder:
        broken, healthy = embedder.runners
        armed[id(broken)] = torch.cuda.OutOfMemoryError("CUDA out of memory")  # even a single image does not fit
        np.testing.assert_allclose(embedder.embed(make_images(12)), reference, atol=1e-5)
        assert isinstance(broken.failed, torch.cuda.OutOfMemoryError) and broken.batch_limit == 1
        assert broken.images_done == 0 and healthy.images_done == 12
        assert embedder.devices == ["cpu"]


def test_failed_device_work_goes_to_the_others(tiny_siglip2: Path, reference: np.ndarray, armed) -> None:
    settings = settings_for(tiny_siglip2, batch_size=2)
    with build_embedder(settings, ["cpu", "cpu"], cpu_bf16=False, runner_cls=Armed) as embedder:
        broken, healthy = embedder.runners
        armed[id(broken)] = RuntimeError("CUDA error: an illegal memory access was encountered")
        np.testing.assert_allclose(embedder.embed(make_images(12)), reference, atol=1e-5)
        assert broken.failed is armed[id(broken)] and broken.images_done == 0 and healthy.images_done == 12
        np.testing.assert_allclose(embedder.embed(make_images(12)), reference, atol=1e-5)
        assert healthy.images_done == 24  # a failed device stays out


def test_every_device_failing_falls_back_to_cpu(tiny_siglip2: Path, reference: np.ndarray, armed) -> None:
    settings = settings_for(tiny_siglip2, batch_size=3)
    with build_embedder(settings, ["cpu", "cpu"], cpu_bf16=False, runner_cls=Armed) as embedder:
        for runner in embedder.runners:
            armed[id(runner)] = RuntimeError("CUDA error: device lost")
        np.testing.assert_allclose(embedder.embed(make_images(12)), reference, atol=1e-5)
        fallback = embedder.runners[-1]
        assert type(fallback) is DeviceRunner and fallback.images_done == 12
        assert len(embedder.runners) == 3 and embedder.devices == ["cpu"]


def test_fallback_failing_too_raises_one_line(tiny_siglip2: Path) -> None:
    embedder = cpu_embedder(tiny_siglip2)
    embedder._fallback = None  # as if the CPU fallback had already been used up
    embedder.runners[0].failed = RuntimeError("boom")
    with pytest.raises(DedupdError, match="every device: boom"):
        embedder.embed(make_images(1))


class SdpaBroken(DeviceRunner):
    def forward(self, inputs):
        if self.model.config._attn_implementation == "sdpa":
            raise RuntimeError("sdpa kernel unavailable")
        return super().forward(inputs)


def test_attention_falls_back_when_the_preferred_one_fails(tiny_siglip2: Path, reference: np.ndarray) -> None:
    assert attention_candidates("cpu") == ["sdpa", "eager"]
    assert attention_candidates("cuda:0")[0] == "flash_attention_2"
    with build_embedder(settings_for(tiny_siglip2), ["cpu"], cpu_bf16=False, runner_cls=SdpaBroken) as embedder:
        assert embedder.runners[0].model.config._attn_implementation == "eager"
        np.testing.assert_allclose(embedder.embed(make_images(12)), reference, atol=1e-5)


def test_no_working_device_is_a_load_error(tiny_siglip2: Path) -> None:
    class AlwaysBroken(DeviceRunner):
        def forward(self, inputs):
            raise RuntimeError("broken")

    with pytest.raises(ModelLoadError, match=r"no working dtype/attention on cpu .*float32/eager: broken"):
        build_embedder(settings_for(tiny_siglip2), ["cpu"], runner_cls=AlwaysBroken)


no_cuda = pytest.mark.skipif(torch.cuda.is_available(), reason="needs a machine without CUDA")


@no_cuda
def test_unusable_gpu_falls_back_to_cpu_at_load(tiny_siglip2: Path, reference: np.ndarray) -> None:
    with build_embedder(settings_for(tiny_siglip2, device="cuda"), ["cuda:0"], cpu_bf16=False) as embedder:
        assert embedder.devices == ["cpu"]
        np.testing.assert_allclose(embedder.embed(make_images(12)), reference, atol=1e-5)


@no_cuda
def test_pick_devices_without_cuda() -> None:
    from dedupd.model.runtime import pick_devices

    assert pick_devices(EmbedderSettings(device="auto")) == ["cpu"]
    assert pick_devices(EmbedderSettings(device="cuda", gpus=0)) == ["cpu"]
    with pytest.raises(ModelLoadError, match="no CUDA GPU is visible"):
        pick_devices(EmbedderSettings(device="cuda"))


# ---------------------------------------------------------------------------------------------------------------------
# Load failures


def _assert_offline_hint(message: str, model: str) -> None:
    assert f"'{model}'" in message and "\n" not in message
    assert "--model /path/to/folder" in message and "HF_HUB_OFFLINE=1" in message and "HF_HOME" in message


def test_unknown_hub_id_offline_is_a_load_error() -> None:
    model = "nonexistent-org/no-such-model-xyz"
    with pytest.raises(ModelLoadError) as info:
        load_embedder(EmbedderSettings(model=model, device="cpu"))
    _assert_offline_hint(str(info.value), model)
    assert info.value.exit_code == 2


def test_missing_folder_is_a_load_error(tmp_path: Path) -> None:
    model = str(tmp_path / "no" / "such-folder")
    with pytest.raises(ModelLoadError, match="does not exist") as info:
        load_embedder(EmbedderSettings(model=model, device="cpu"))
    _assert_offline_hint(str(info.value), model)


def test_folder_without_weights_is_a_load_error(tiny_siglip2: Path, tmp_path: Path) -> None:
    shutil.copy(tiny_siglip2 / "config.json", tmp_path / "config.json")
    with pytest.raises(ModelLoadError, match=str(tmp_path)):
        cpu_embedder(tmp_path)


def test_unknown_device_is_a_load_error(tiny_siglip2: Path) -> None:
    with pytest.raises(ModelLoadError, match="unknown device 'tpu'"):
        load_embedder(settings_for(tiny_siglip2, device="tpu"))


# ---------------------------------------------------------------------------------------------------------------------
# Model identity


def test_model_id_stable_for_a_folder_and_its_copies(tiny_siglip2: Path, tmp_path: Path) -> None:
    model_id = local_model_id(tiny_siglip2)
    name, _, digest = model_id.partition("@")
    assert name == "tiny-siglip2" and len(digest) == 12 and int(digest, 16) >= 0
    assert local_model_id(tiny_siglip2) == model_id
    assert local_model_id(Path(shutil.copytree(tiny_siglip2, tmp_path / "tiny-siglip2"))) == model_id
    assert resolve_source(str(tiny_siglip2)).model_id == model_id


def test_model_id_changes_with_the_weights(tiny_siglip2: Path, tmp_path: Path) -> None:
    reseeded = build_siglip2(tmp_path / "tiny-siglip2", seed=1)  # same names, same sizes, other values
    assert local_model_id(reseeded) != local_model_id(tiny_siglip2)
    reconfigured = Path(shutil.copytree(tiny_siglip2, tmp_path / "b" / "tiny-siglip2"))
    (reconfigured / "config.json").write_text((reconfigured / "config.json").read_text().replace("32", "33", 1))
    assert local_model_id(reconfigured) != local_model_id(tiny_siglip2)


def test_hub_id_is_its_own_model_id() -> None:
    assert resolve_source("google/siglip2-base-patch16-naflex").model_id == "google/siglip2-base-patch16-naflex"


# ---------------------------------------------------------------------------------------------------------------------
# Capabilities and import cost


def test_cpu_bf16_detection_matches_cpuinfo(tmp_path: Path) -> None:
    flags = set()
    if Path("/proc/cpuinfo").exists():
        for line in Path("/proc/cpuinfo").read_text().splitlines():
            if line.startswith("flags"):
                flags.update(line.split(":", 1)[1].split())
    detected = cpu_supports_bf16()
    assert isinstance(detected, bool) and detected == bool(flags & {"avx512_bf16", "amx_bf16"})
    fake = tmp_path / "cpuinfo"
    fake.write_text("processor\t: 0\nflags\t\t: fpu sse avx512f avx512_bf16\n")
    assert cpu_supports_bf16(fake) is True
    fake.write_text("processor\t: 0\nflags\t\t: fpu sse avx2\n")
    assert cpu_supports_bf16(fake) is False
    assert cpu_supports_bf16(tmp_path / "missing") is False
    assert cpu_has_amx() == ("amx_bf16" in flags)
    fake.write_text("processor\t: 0\nflags\t\t: fpu avx512_bf16 amx_bf16 amx_tile\n")
    assert cpu_has_amx(fake) is True and cpu_supports_bf16(fake) is True
    fake.write_text("processor\t: 0\nflags\t\t: fpu avx512f avx512_bf16\n")
    assert cpu_has_amx(fake) is False  # native bf16 but no tiles: the fast preset takes int8 there


def test_dtype_candidates_on_cpu() -> None:
    assert dtype_candidates("cpu", cpu_bf16=False) == [torch.float32]
    assert dtype_candidates("cpu", cpu_bf16=True) == [torch.bfloat16, torch.float32]


def test_importing_the_module_does_not_import_torch() -> None:
    code = "import sys, dedupd.model.runtime; assert 'torch' not in sys.modules and 'transformers' not in sys.modules"
    subprocess.run([sys.executable, "-c", code], check=True)


# ---------------------------------------------------------------------------------------------------------------------
# Precision, batch sizes and the vectors' key


def _quantised_linears(model: torch.nn.Module) -> int:
    return sum(isinstance(m, torch.ao.nn.quantized.dynamic.Linear) for m in model.modules())


def test_int8_quantises_the_linear_layers_and_agrees_with_fp32(tiny_siglip2: Path, reference: np.ndarray) -> None:
    with cpu_embedder(tiny_siglip2, precision="int8") as embedder:
        model = embedder.runners[0].model
        plain = [n for n, m in model.named_modules() if type(m) is torch.nn.Linear]
        assert _quantised_linears(model) > 4 and plain == ["embeddings.patch_embedding"]
        vectors = embedder.embed(make_images(12))
        assert embedder.model_id.endswith("+int8")
    np.testing.assert_allclose(np.linalg.norm(vectors, axis=1), 1.0, atol=1e-5)
    cosines = (vectors * reference).sum(axis=1)
    assert cosines.min() > 0.99 and np.abs(vectors - reference).max() > 1e-6  # close, but really another path


def test_default_precision_keeps_fp32_linears(siglip2: Embedder) -> None:
    assert _quantised_linears(siglip2.runners[0].model) == 0
    assert "+" not in siglip2.model_id


def test_int8_on_cuda_and_unknown_precision_are_load_errors() -> None:
    from dedupd.model.runtime import pick_devices

    with pytest.raises(ModelLoadError, match="precision 'int8' runs on the CPU only"):
        pick_devices(EmbedderSettings(device="cuda", precision="int8"))
    with pytest.raises(ModelLoadError, match="unknown precision 'fp8'"):
        pick_devices(EmbedderSettings(precision="fp8"))
    assert pick_devices(EmbedderSettings(device="auto", precision="int8")) == ["cpu"]


def test_vector_key_names_every_knob_that_changes_vectors(tiny_siglip2: Path) -> None:
    from dedupd.config import Config, ModelConfig
    from dedupd.model.loader import LazyEmbedder, model_identity

    plain = model_identity(ModelConfig(name=str(tiny_siglip2)))
    assert plain == local_model_id(tiny_siglip2)  # default settings: stores made before these knobs stay valid
    keys = {
        model_identity(ModelConfig(name=str(tiny_siglip2), max_patches=p, precision=q))
        for p in (None, 16)
        for q in ("auto", "int8")
    }
    assert len(keys) == 4
    assert model_identity(ModelConfig(name=str(tiny_siglip2), precision="float")) == plain  # float dtypes: one key
    # What the scan looks vectors up under (no model loaded) is what the loaded embedder files them under.
    config = Config(model={"name": str(tiny_siglip2), "device": "cpu", "max_patches": 16, "precision": "int8"})
    lazy = LazyEmbedder(config)
    assert lazy.model_id == lazy.get().model_id == f"{plain}+patches16+int8"
    lazy.get().close()


def test_fast_preset_resolves_to_its_knobs_and_files_vectors_under_its_own_key(tiny_siglip2: Path) -> None:
    from dedupd.config import Config, ModelConfig
    from dedupd.model.loader import LazyEmbedder, model_identity

    plain = model_identity(ModelConfig(name=str(tiny_siglip2)))
    compute = "" if cpu_has_amx() else "+int8"  # bf16 on AMX, else int8 (faster even with AVX512-BF16)
    fast = model_identity(ModelConfig(name=str(tiny_siglip2), device="cpu", preset="fast"))
    assert fast == f"{plain}+fast+patches64{compute}"
    # the same knobs set by hand are another key: the preset's vectors never mix with them
    assert fast != model_identity(ModelConfig(name=str(tiny_siglip2), device="cpu", max_patches=64, precision="int8"))
    config = Config(model={"name": str(tiny_siglip2), "device": "cpu", "preset": "fast"})
    lazy = LazyEmbedder(config)
    embedder = lazy.get()
    try:
        assert lazy.model_id == embedder.model_id == fast
        assert embedder.preprocess_spec is not None and embedder.preprocess_spec.max_num_patches == 64
        assert (_quantised_linears(embedder.runners[0].model) > 0) == (compute == "+int8")
    finally:
        embedder.close()


def test_apply_preset_keeps_a_smaller_budget_and_uses_native_half_off_the_cpu() -> None:
    from dedupd.model.settings import apply_preset

    assert apply_preset(EmbedderSettings(max_patches=300)) == EmbedderSettings(max_patches=300)  # default: as is
    cpu = apply_preset(EmbedderSettings(preset="fast", device="cpu", max_patches=32))
    assert cpu.max_patches == 32 and cpu.precision == ("float" if cpu_has_amx() else "int8")
    assert apply_preset(cpu) == cpu
    gpu = apply_preset(EmbedderSettings(preset="fast", device="cuda"))
    assert gpu.max_patches == 64 and gpu.precision == "float"  # int8 has no GPU kernels: bf16/fp16 there
    kept = apply_preset(EmbedderSettings(preset="fast", device="cpu", precision="float"))
    assert kept.precision == "float"  # never swapped for int8, even on a CPU without AMX
    with pytest.raises(ModelLoadError, match="unknown preset 'turbo'"):
        apply_preset(EmbedderSettings(preset="turbo"))


def test_batch_size_defaults_per_device_and_batch_items_feed_every_device(tiny_siglip2: Path) -> None:
    from dedupd.model.settings import CPU_BATCH, default_batch_size

    assert default_batch_size("cuda:1") == 128 and default_batch_size("cpu") == CPU_BATCH == 16
    with cpu_embedder(tiny_siglip2, batch_size=None) as embedder:
        assert (embedder.batch_size, embedder.batch_items) == (16, 16)
    with cpu_embedder(tiny_siglip2, devices=["cpu", "cpu"], batch_size=5) as embedder:
        assert embedder.batch_items == 10
        assert embedder._chunk_size(embedder.batch_items) == 5  # each device gets a whole batch


@pytest.mark.skipif(not torch.cuda.is_available(), reason="needs a CUDA GPU")
def test_cuda_runner_matches_the_cpu(tiny_siglip2: Path, reference: np.ndarray) -> None:
    # Pinned, non-blocking copies and bf16/fp16 compute: the vectors still agree with fp32 on the CPU.
    with build_embedder(settings_for(tiny_siglip2, device="cuda"), ["cuda:0"]) as embedder:
        assert embedder.devices == ["cuda:0"]
        vectors = embedder.embed(make_images(12))
    assert (vectors * reference).sum(axis=1).min() > 0.99
