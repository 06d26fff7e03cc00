"""dedupd.ingest.preprocess against the checkpoints' own Hugging Face image processors, and the embedder's
prepared path.

Tolerances:
* pixel values with dtype="float32" are compared for exact equality: resizing is the same Pillow call on the same
  8-bit picture, cutting patches and cropping only move uint8 values, and the rescale/normalise lookup table is
  computed with the processor's own float64-multiply, float32-divide operations, so every value is bit-identical.
* with dtype="float16" (the default, what the workers pickle) each value is the processor's float32 value rounded
  once to float16: checked as equality with `reference.astype(float16)`, i.e. a relative error <= 2**-11 (absolute
  <= 2.4e-4 in SigLIP's [-1, 1], <= 9.8e-4 for CLIP/ImageNet normalisation, whose values reach 2.64).
* embeddings: cosine >= 0.999 per image, as the issue asks; same-image comparisons are in fact >= 0.99999.
"""

from __future__ import annotations

import pickle
import subprocess
import sys
from dataclasses import replace
from pathlib import Path

import imagegen
import numpy as np
import pytest
import torch
from model_builders import OomAbove
from PIL import Image

from dedupd.ingest.decode import decode
from dedupd.ingest.preprocess import (
    Prepared,
    PreprocessSpec,
    collate,
    get_image_size_for_max_num_patches,
    preprocess,
    shortest_edge_size,
    size_with_aspect_ratio,
)
from dedupd.model.runtime import FAMILIES, Embedder, build_embedder, draft_side
from dedupd.model.settings import EmbedderSettings

FIXTURES = {"siglip2-naflex": "tiny_siglip2", "siglip": "tiny_siglip", "clip": "tiny_clip", "dinov2": "tiny_dinov2"}
# (width, height): landscape, portrait, square, panorama, odd sizes, tiny both ways, a single pixel, large.
SIZES = [(640, 480), (480, 640), (300, 300), (1200, 200), (33, 47), (20, 10), (10, 20), (1, 1), (2400, 1800)]
MIN_COSINE = 0.999
MEASURED: dict[str, float] = {}  # smallest cosine per check, printed at the end of the module (pytest -s)
slow = pytest.mark.slow  # registered in pyproject.toml; `-m "not slow"` skips it


def images() -> list[Image.Image]:
    out = [imagegen.photo(seed, size) for seed, size in enumerate(SIZES)]
    out.append(imagegen.photo(99, (90, 60)).convert("L"))  # not RGB: converted as the embedder does
    return out


def settings_for(folder: Path, **changes: object) -> EmbedderSettings:
    return replace(EmbedderSettings(model=str(folder), device="cpu", batch_size=4), **changes)


def cpu_embedder(folder: Path, **changes: object) -> Embedder:
    # fp32 on every machine, so the comparisons do not depend on the CPU having native bf16.
    return build_embedder(settings_for(folder, **changes), ["cpu"], cpu_bf16=False)


def cosines(a: np.ndarray, b: np.ndarray) -> np.ndarray:
    a = a / np.linalg.norm(a, axis=1, keepdims=True)
    b = b / np.linalg.norm(b, axis=1, keepdims=True)
    return (a * b).sum(axis=1)


def measured(name: str, values: np.ndarray) -> float:
    low = float(np.min(values))
    MEASURED[name] = min(low, MEASURED.get(name, 1.0))
    return low


@pytest.fixture(scope="module", autouse=True)
def _print_measured():
    yield
    if MEASURED:
        print("\nminimum cosines:", *(f"  {name}: {value:.7f}" for name, value in sorted(MEASURED.items())), sep="\n")


@pytest.fixture(scope="module", params=list(FIXTURES))
def embedder(request) -> Embedder:
    with cpu_embedder(request.getfixturevalue(FIXTURES[request.param])) as loaded:
        yield loaded


@pytest.fixture(scope="module")
def camera_jpegs(tmp_path_factory: pytest.TempPathFactory) -> list[Path]:
    """12 MP camera-like JPEGs: two landscape 4000x3000, one portrait stored sideways with EXIF orientation 6."""
    folder = tmp_path_factory.mktemp("camera")
    paths = []
    for seed in (1, 2):
        path = folder / f"IMG_{seed}.jpg"
        imagegen.save_jpeg(imagegen.photo(seed, (4000, 3000)), path, quality=92)
        paths.append(path)
    portrait = folder / "IMG_3.jpg"
    imagegen.save_oriented_jpeg(imagegen.photo(3, (3000, 4000)), portrait, orientation=6, quality=92)
    return [*paths, portrait]


# ---------------------------------------------------------------------------------------------------------------------
# The spec


def test_spec_reads_the_processor(embedder: Embedder) -> None:
    spec, processor = embedder.preprocess_spec, embedder.runners[0].processor
    assert spec is not None and spec.family == embedder.family
    assert spec.resample == int(processor.resample)
    assert spec.image_mean == tuple(processor.image_mean) and spec.image_std == tuple(processor.image_std)
    assert spec.rescale_factor == processor.rescale_factor and spec.dtype == "float16"
    if spec.naflex:
        assert (spec.patch_size, spec.max_num_patches) == (processor.patch_size, processor.max_num_patches)
    assert pickle.loads(pickle.dumps(spec)) == spec and hash(spec) == hash(pickle.loads(pickle.dumps(spec)))


def test_max_patches_override_reaches_the_spec(tiny_siglip2: Path) -> None:
    with cpu_embedder(tiny_siglip2, max_patches=16) as embedder:
        assert embedder.preprocess_spec.max_num_patches == 16
        assert embedder.preprocess_spec.pixel_shape == (16, 16 * 16 * 3)


def test_target_sizes_match_transformers() -> None:
    from transformers.image_transforms import get_resize_output_image_size, get_size_with_aspect_ratio
    from transformers.models.siglip2.image_processing_pil_siglip2 import (
        get_image_size_for_max_num_patches as hf_naflex_size,
    )

    sides = [1, 2, 7, 10, 15, 16, 17, 33, 64, 100, 224, 255, 256, 375, 500, 1000, 3000, 4000, 12345]
    for h in sides:
        for w in sides:
            for patch, budget in ((16, 256), (16, 64), (14, 729), (16, 1024)):
                assert get_image_size_for_max_num_patches(h, w, patch, budget) == hf_naflex_size(h, w, patch, budget)
            chw = np.zeros((3, h, w), dtype=np.uint8)
            for edge in (64, 224, 256):
                expected = get_resize_output_image_size(chw, edge, False, input_data_format="channels_first")
                assert shortest_edge_size(h, w, edge) == tuple(expected)
                for cap in (300, 1333):
                    assert size_with_aspect_ratio(h, w, edge, cap) == get_size_with_aspect_ratio((h, w), edge, cap)


# ---------------------------------------------------------------------------------------------------------------------
# Pixels: our preprocess + collate against the processor on the same PIL images


def _compare_with_processor(processor, spec: PreprocessSpec, pictures: list[Image.Image]) -> None:
    rgb = [p if p.mode == "RGB" else p.convert("RGB") for p in pictures]
    reference = {key: value.numpy() for key, value in processor(images=rgb, return_tensors="pt").items()}
    exact = replace(spec, dtype="float32")
    for candidate in (exact, spec):
        ours = collate([preprocess(p, candidate) for p in pictures])
        assert ours.keys() == reference.keys()
        for key, expected in reference.items():
            assert ours[key].shape == expected.shape, key
            if key != "pixel_values":
                assert ours[key].dtype == expected.dtype, key
                np.testing.assert_array_equal(ours[key], expected, err_msg=key)
            elif candidate.dtype == "float32":
                assert ours[key].dtype == np.float32
                np.testing.assert_array_equal(ours[key], expected)  # bit-identical, see the module docstring
            else:
                assert ours[key].dtype == np.float16
                np.testing.assert_array_equal(ours[key], expected.astype(np.float16))  # one rounding to float16
                np.testing.assert_allclose(ours[key], expected, rtol=2**-11, atol=2**-25)


def test_pixels_match_the_processor(embedder: Embedder) -> None:
    _compare_with_processor(embedder.runners[0].processor, embedder.preprocess_spec, images())


@pytest.mark.parametrize(
    ("name", "kwargs"),
    [
        # shortest edge below the crop: the processor's centre crop pads with zeros (before normalising)
        ("CLIPImageProcessorPil", dict(size={"shortest_edge": 40}, crop_size={"height": 64, "width": 48})),
        # shortest edge capped by a longest edge, odd crop
        ("CLIPImageProcessorPil", dict(size={"shortest_edge": 64, "longest_edge": 90}, crop_size=(33, 57))),
        # bilinear, no normalisation; plain height x width
        ("SiglipImageProcessorPil", dict(size={"height": 40, "width": 72}, resample=2, do_normalize=False)),
        # no rescale, only normalisation
        ("BitImageProcessorPil", dict(do_rescale=False, image_mean=[1, 2, 3], image_std=[9, 8, 7])),
        # the real SigLIP2 naflex budget, and a bigger one with another filter
        ("Siglip2ImageProcessorPil", {}),
        ("Siglip2ImageProcessorPil", dict(max_num_patches=1024, resample=3)),
    ],
    ids=["clip-pad", "clip-longest-edge", "siglip-bilinear-no-norm", "bit-no-rescale", "naflex-256", "naflex-1024"],
)
def test_pixels_match_other_processor_settings(name: str, kwargs: dict) -> None:
    import transformers

    processor = getattr(transformers, name)(**kwargs)
    family = "siglip2-naflex" if name.startswith("Siglip2") else "clip"
    _compare_with_processor(processor, PreprocessSpec.from_processor(processor, family), images())


def test_unreplicable_processors_are_refused(tiny_clip: Path) -> None:
    from transformers import CLIPImageProcessorPil, Siglip2ImageProcessorPil

    with pytest.raises(ValueError, match="no crop"):
        PreprocessSpec.from_processor(CLIPImageProcessorPil(do_center_crop=False), "clip")
    with pytest.raises(ValueError, match="cannot replicate"):
        PreprocessSpec.from_processor(Siglip2ImageProcessorPil(), "clip")  # wrong family
    with pytest.raises(ValueError, match="do_pad"):
        PreprocessSpec.from_processor(CLIPImageProcessorPil(do_pad=True), "clip")
    with pytest.raises(ValueError, match="cannot replicate"):
        PreprocessSpec.from_processor(type("Custom", (CLIPImageProcessorPil,), {})(), "clip")
    with pytest.raises(ValueError, match="dtype"):
        replace(PreprocessSpec.from_processor(CLIPImageProcessorPil(), "clip"), dtype="int8")


def test_empty_image_is_refused() -> None:
    from transformers import CLIPImageProcessorPil

    with pytest.raises(ValueError, match="empty"):
        preprocess(Image.new("RGB", (0, 0)), PreprocessSpec.from_processor(CLIPImageProcessorPil(), "clip"))


# ---------------------------------------------------------------------------------------------------------------------
# Embeddings: embed_prepared against embed


def test_embed_prepared_matches_embed(embedder: Embedder) -> None:
    pictures = images()
    spec = embedder.preprocess_spec
    expected = embedder.embed(pictures)
    exact = embedder.embed_prepared([preprocess(p, replace(spec, dtype="float32")) for p in pictures])
    np.testing.assert_allclose(exact, expected, atol=1e-5)  # same tensors -> same vectors
    vectors = embedder.embed_prepared([preprocess(p, spec) for p in pictures])
    assert vectors.shape == expected.shape and vectors.dtype == np.float32
    np.testing.assert_allclose(np.linalg.norm(vectors, axis=1), 1.0, atol=1e-5)
    assert measured(f"{embedder.family}: float16 prepared vs embed, same images", cosines(vectors, expected)) >= 0.99999


def test_draft_path_matches_full_resolution_processor(embedder: Embedder, camera_jpegs: list[Path]) -> None:
    """Decode with JPEG draft + our preprocess, against the full 12 MP picture through the HF processor."""
    spec = embedder.preprocess_spec
    drafts = [decode(path, draft_side=embedder.draft_side) for path in camera_jpegs]
    for decoded in drafts:
        # 1/8 scale: the draft is far smaller than the file, and still at least draft_side on its short side.
        assert max(decoded.image.size) == 500 and min(decoded.image.size) >= embedder.draft_side
        assert (decoded.width, decoded.height) in ((4000, 3000), (3000, 4000))
    assert drafts[2].image.size == (375, 500)  # the portrait came out upright
    prepared = embedder.embed_prepared([preprocess(d.image, spec) for d in drafts])
    full = embedder.embed([decode(path).image for path in camera_jpegs])
    low = measured(f"{embedder.family}: draft+preprocess vs full-res processor (tiny)", cosines(prepared, full))
    assert low >= MIN_COSINE
    assert_far_below_photo_distance(prepared, full)


def assert_far_below_photo_distance(prepared: np.ndarray, reference: np.ndarray) -> None:
    """The agreement means something only if the model tells photos apart: the draft path's cosine distance must
    stay under 1% of the distance between different photos (measured: <= 2e-5 against 0.01 to 1.4)."""
    error = 1 - cosines(prepared, reference)
    between = 1 - cosines(reference, np.roll(reference, 1, axis=0))
    assert error.max() < 0.01 * between.min(), (error, between)


def test_embed_prepared_uses_the_device_pool_and_oom_halving(tiny_siglip2: Path) -> None:
    pictures = images()[:8]
    with cpu_embedder(tiny_siglip2) as plain:
        expected = plain.embed_prepared([preprocess(p, plain.preprocess_spec) for p in pictures])
    settings = settings_for(tiny_siglip2, batch_size=4)
    with build_embedder(settings, ["cpu", "cpu"], cpu_bf16=False, runner_cls=OomAbove) as embedder:
        items = [preprocess(p, embedder.preprocess_spec) for p in pictures]
        for runner in embedder.runners:
            runner.sizes.clear()
        np.testing.assert_allclose(embedder.embed_prepared(items), expected, atol=1e-5)
        # Two batches of 4 (one per device, unless one device is quick enough to take both): each 4 runs out of
        # memory and is redone as 2 + 2, and the learned limit of 2 sticks.
        sizes = [size for runner in embedder.runners for size in runner.sizes]
        assert max(sizes) == 4 and sum(size for size in sizes if size <= 2) == 8
        for runner in embedder.runners:
            assert runner.failed is None and runner.batch_limit == (2 if runner.sizes else None)
        assert sum(runner.images_done for runner in embedder.runners) == 8
        assert embedder.embed_prepared([]).shape == (0, 32)


def test_items_for_another_model_are_an_input_error(tiny_siglip2: Path, tiny_clip: Path) -> None:
    with cpu_embedder(tiny_siglip2, max_patches=16) as other:
        foreign = [preprocess(p, other.preprocess_spec) for p in images()[:2]]
    with cpu_embedder(tiny_siglip2) as embedder:
        with pytest.raises(ValueError, match="prepared for another model"):
            embedder.embed_prepared(foreign)
        assert embedder.devices == ["cpu"]  # the device is not blamed
    with cpu_embedder(tiny_clip) as embedder, pytest.raises(ValueError, match="prepared for another model"):
        embedder.embed_prepared(foreign)


def test_unreplicable_processor_leaves_no_spec(tiny_clip: Path, tmp_path: Path) -> None:
    import json
    import shutil

    folder = shutil.copytree(tiny_clip, tmp_path / "no-crop")
    config = json.loads((folder / "preprocessor_config.json").read_text())
    (folder / "preprocessor_config.json").write_text(json.dumps({**config, "do_center_crop": False}))
    with cpu_embedder(folder) as embedder:
        assert embedder.preprocess_spec is None
        with pytest.raises(RuntimeError, match="use embed"):
            embedder.embed_prepared([])
        assert embedder.embed([imagegen.photo(0, (64, 64))]).shape == (1, 16)


def test_collate_refuses_mixed_specs() -> None:
    from transformers import Siglip2ImageProcessorPil

    a = PreprocessSpec.from_processor(Siglip2ImageProcessorPil(max_num_patches=64), "siglip2-naflex")
    picture = imagegen.photo(0, (64, 48))
    with pytest.raises(ValueError, match="different specs"):
        collate([preprocess(picture, a), preprocess(picture, replace(a, max_num_patches=16))])
    with pytest.raises(ValueError, match="different specs"):
        collate([preprocess(picture, a), preprocess(picture, replace(a, dtype="float32"))])
    with pytest.raises(ValueError, match="nothing"):
        collate([])


# ---------------------------------------------------------------------------------------------------------------------
# Worker-friendliness: compact, picklable, no torch


def test_prepared_pickles_compactly() -> None:
    from transformers import CLIPImageProcessorPil, Siglip2ImageProcessorPil

    naflex = PreprocessSpec.from_processor(Siglip2ImageProcessorPil(), "siglip2-naflex")  # the real base budget
    item = preprocess(imagegen.photo(5, (500, 375)), naflex)
    assert item.pixel_values.shape == (256, 768) and item.pixel_values.dtype == np.float16
    assert item.pixel_values.nbytes == 256 * 768 * 2
    assert item.pixel_attention_mask.dtype == np.int32 and item.spatial_shapes.dtype == np.int64
    assert item.nbytes == 256 * 768 * 2 + 256 * 4 + 2 * 8
    data = pickle.dumps(item, protocol=pickle.HIGHEST_PROTOCOL)
    assert len(data) < item.nbytes + 1024  # the arrays' bytes and a few hundred bytes of framing
    back = pickle.loads(data)
    assert isinstance(back, Prepared)
    for key in ("pixel_values", "pixel_attention_mask", "spatial_shapes"):
        np.testing.assert_array_equal(getattr(back, key), getattr(item, key))
        assert getattr(back, key).dtype == getattr(item, key).dtype
    assert back.spatial_shapes.tolist() == [14, 18]  # 4:3 at 256 patches: 224 x 288 pixels
    assert back.pixel_attention_mask.tolist() == [1] * (14 * 18) + [0] * (256 - 14 * 18)
    assert not back.pixel_values[14 * 18 :].any()  # padding rows are zeros, as the processor's

    clip = preprocess(imagegen.photo(5, (500, 375)), PreprocessSpec.from_processor(CLIPImageProcessorPil(), "clip"))
    assert clip.pixel_values.shape == (3, 224, 224) and clip.pixel_values.dtype == np.float16
    assert clip.pixel_attention_mask is None and clip.spatial_shapes is None
    assert len(pickle.dumps(clip, protocol=pickle.HIGHEST_PROTOCOL)) < 3 * 224 * 224 * 2 + 1024


def test_importing_preprocess_does_not_import_torch() -> None:
    code = (
        "import sys, dedupd.ingest.preprocess, dedupd.ingest.decode_pool; "
        "bad = [m for m in ('torch', 'transformers') if m in sys.modules]; "
        "assert not bad, bad"
    )
    subprocess.run([sys.executable, "-c", code], check=True)


# ---------------------------------------------------------------------------------------------------------------------
# A random-weight model of the real SigLIP2-base naflex size: a tiny model could be unusually (in)sensitive


@slow  # 10-25 s on 2 CPU cores: building 93 M random weights and 6 forwards at 256 patches
def test_draft_path_with_real_siglip2_base_architecture(camera_jpegs: list[Path]) -> None:
    """Siglip2VisionModel with the default (base, patch 16) config, random weights, the real 256-patch processor."""
    from transformers import Siglip2ImageProcessorPil, Siglip2VisionConfig, Siglip2VisionModel

    torch.manual_seed(0)
    config = Siglip2VisionConfig()
    shape = (config.hidden_size, config.num_hidden_layers, config.num_attention_heads, config.patch_size)
    assert shape == (768, 12, 12, 16)
    model = Siglip2VisionModel(config).eval()
    processor = Siglip2ImageProcessorPil()
    spec = PreprocessSpec.from_processor(processor, "siglip2-naflex")
    side = draft_side(processor, FAMILIES["siglip2-naflex"])
    assert side == 256

    def vectors(inputs: dict) -> np.ndarray:
        inputs = {k: torch.as_tensor(v) for k, v in inputs.items()}
        inputs["pixel_values"] = inputs["pixel_values"].float()
        with torch.inference_mode():
            return torch.nn.functional.normalize(model(**inputs).pooler_output, dim=-1).numpy()

    paths = camera_jpegs[1:]  # one landscape, one rotated portrait
    full = [decode(path).image for path in paths]
    reference = vectors(dict(processor(images=full, return_tensors="pt")))
    drafted = vectors(collate([preprocess(decode(path, draft_side=side).image, spec) for path in paths]))
    same = vectors(collate([preprocess(image, spec) for image in full]))
    assert measured("siglip2-base arch: float16 prepared vs processor, same images", cosines(same, reference)) > 0.99999
    assert measured("siglip2-base arch: draft+preprocess vs full-res processor", cosines(drafted, reference)) > 0.999
    assert_far_below_photo_distance(drafted, reference)
