"""Image inputs: every accepted kind becomes the same model input; bad ones say why not."""

from __future__ import annotations

import re
from pathlib import Path

import numpy as np
import pytest
import torch
from PIL import Image

from vlcam.image import IMAGENET_MEAN, IMAGENET_STD, preprocess, to_pil

SIZE = 32


def _unnormalise(x: torch.Tensor) -> torch.Tensor:
    """Return pixel values in [0, 1] from a preprocessed [1, 3, S, S] tensor."""
    mean = torch.tensor(IMAGENET_MEAN).view(1, 3, 1, 1)
    std = torch.tensor(IMAGENET_STD).view(1, 3, 1, 1)
    return x * std + mean


RGB = np.random.default_rng(0).integers(0, 256, size=(20, 30, 3), dtype=np.uint8)


@pytest.mark.parametrize(
    "make",
    [
        pytest.param(lambda tmp: Image.fromarray(RGB), id="pil-rgb"),
        pytest.param(lambda tmp: RGB, id="uint8-hxwx3"),
        pytest.param(lambda tmp: RGB.astype(np.float32) / 255.0, id="float32-hxwx3"),
        pytest.param(lambda tmp: RGB.astype(np.float64) / 255.0, id="float64-hxwx3"),
        pytest.param(lambda tmp: np.dstack([RGB, np.full((20, 30), 255, np.uint8)]), id="opaque-hxwx4"),
        pytest.param(lambda tmp: Image.fromarray(RGB).convert("RGBA"), id="pil-rgba-opaque"),
        pytest.param(lambda tmp: str(_saved(tmp)), id="path-str"),
        pytest.param(lambda tmp: _saved(tmp), id="pathlib"),
    ],
)
def test_every_kind_of_the_same_image_gives_the_same_input(tmp_path, make) -> None:
    reference, original = preprocess(Image.fromarray(RGB), SIZE)
    x, size = preprocess(make(tmp_path), SIZE)
    assert x.shape == (1, 3, SIZE, SIZE) and x.dtype == torch.float32
    assert size == (20, 30) == original
    torch.testing.assert_close(x, reference, atol=1e-5, rtol=0)


def _saved(tmp: Path) -> Path:
    path = tmp / "img.png"
    Image.fromarray(RGB).save(path)
    return path


@pytest.mark.parametrize("shape", [(20, 30), (20, 30, 1)])
def test_grayscale_arrays_become_equal_rgb_channels(shape) -> None:
    gray = np.random.default_rng(1).integers(0, 256, size=shape, dtype=np.uint8)
    pil = to_pil(gray)
    assert pil.mode == "RGB" and pil.size == (30, 20)
    rgb = np.asarray(pil)
    assert (rgb[..., 0] == gray.reshape(20, 30)).all() and (rgb == rgb[..., :1]).all()


@pytest.mark.parametrize("mode", ["L", "1", "P", "CMYK", "I;16", "I", "F", "LA", "RGBA", "PA"])
def test_every_pil_mode_becomes_rgb(mode) -> None:
    base = Image.fromarray(RGB)
    if mode == "I;16":
        img = Image.fromarray(np.asarray(base.convert("L"), dtype=np.uint16) * 257)
    elif mode == "F":
        img = Image.fromarray(np.asarray(base.convert("L"), dtype=np.float32) / 255.0)
    elif mode == "PA":
        img = base.convert("P").convert("PA")
    else:
        img = base.convert(mode)
    assert img.mode == mode
    out = to_pil(img)
    assert out.mode == "RGB" and out.size == (30, 20)


def test_sixteen_bit_images_are_scaled_not_clipped() -> None:
    img = Image.fromarray(np.array([[0, 32896, 65535]], dtype=np.uint16))
    assert np.asarray(to_pil(img))[0, :, 0].tolist() == [0, 128, 255]


def test_transparent_pixels_are_composited_on_white() -> None:
    rgba = np.zeros((4, 4, 4), dtype=np.uint8)  # black, fully transparent
    rgba[0, 0] = (255, 0, 0, 255)  # one opaque red pixel
    rgba[0, 1] = (0, 0, 0, 128)  # half-transparent black
    for img in (rgba, Image.fromarray(rgba)):
        out = np.asarray(to_pil(img))
        assert out[0, 0].tolist() == [255, 0, 0]
        assert out[3, 3].tolist() == [255, 255, 255]
        assert 120 <= int(out[0, 1, 0]) <= 135


def test_bool_arrays_become_black_and_white() -> None:
    mask = np.array([[True, False]])
    assert np.asarray(to_pil(mask))[0].tolist() == [[255, 255, 255], [0, 0, 0]]


@pytest.mark.parametrize("size", [(1, 1), (1, 700), (2000, 2000)])
def test_extreme_sizes_resize_to_the_model_input(size) -> None:
    x, original = preprocess(np.full((*size, 3), 200, dtype=np.uint8), SIZE)
    assert x.shape == (1, 3, SIZE, SIZE) and original == size
    torch.testing.assert_close(_unnormalise(x), torch.full_like(x, 200 / 255), atol=1e-5, rtol=0)


def test_the_whole_image_is_resized_without_cropping() -> None:
    img = np.zeros((40, 80, 3), dtype=np.uint8)
    img[:, :40] = 255  # left half white
    pixels = _unnormalise(preprocess(img, SIZE)[0])[0, 0]
    assert (pixels[:, : SIZE // 2 - 1] > 0.99).all() and (pixels[:, SIZE // 2 + 1:] < 0.01).all()


def test_custom_mean_and_std_are_applied() -> None:
    x, _ = preprocess(np.full((4, 4, 3), 255, dtype=np.uint8), 4, mean=(0.5, 0.5, 0.5), std=(0.25, 0.25, 0.25))
    torch.testing.assert_close(x, torch.full((1, 3, 4, 4), 2.0))


@pytest.mark.parametrize("shape", [(3, 8, 8), (1, 3, 8, 8)])
def test_tensors_are_taken_as_already_preprocessed(shape) -> None:
    t = torch.randn(shape)
    x, original = preprocess(t, 224)
    assert x.shape == (1, 3, 8, 8) and original == (8, 8)
    torch.testing.assert_close(x, t.reshape(1, 3, 8, 8))


@pytest.mark.parametrize("shape", [(8, 8), (2, 3, 8, 8), (1, 1, 8, 8), (8, 8, 3)])
def test_other_tensor_shapes_name_the_shape(shape) -> None:
    with pytest.raises(ValueError, match=re.escape(str(tuple(shape)))):
        preprocess(torch.zeros(shape), SIZE)


def test_integer_tensors_are_rejected_with_the_dtype() -> None:
    with pytest.raises(TypeError, match="uint8"):
        preprocess(torch.zeros(3, 8, 8, dtype=torch.uint8), SIZE)


@pytest.mark.parametrize("shape", [(8, 8, 2), (8, 8, 5), (3, 8, 8), (8,), (2, 8, 8, 3)])
def test_bad_array_shapes_name_the_shape(shape) -> None:
    with pytest.raises(ValueError, match=re.escape(str(shape))):
        to_pil(np.zeros(shape, dtype=np.uint8))


@pytest.mark.parametrize("shape", [(0, 5, 3), (5, 0), (0, 0, 1)])
def test_empty_arrays_are_rejected(shape) -> None:
    with pytest.raises(ValueError, match="empty"):
        to_pil(np.zeros(shape, dtype=np.uint8))


def test_empty_pil_images_are_rejected() -> None:
    with pytest.raises(ValueError, match="empty.*0x5"):
        to_pil(Image.new("RGB", (0, 5)))


@pytest.mark.parametrize("dtype", [np.int64, np.uint16, np.complex64, object])
def test_bad_dtypes_name_the_dtype(dtype) -> None:
    with pytest.raises(TypeError, match=np.dtype(dtype).name):
        to_pil(np.zeros((4, 4, 3), dtype=dtype))


@pytest.mark.parametrize("value", [np.nan, np.inf, -np.inf])
def test_non_finite_floats_are_rejected(value) -> None:
    img = np.zeros((4, 4, 3), dtype=np.float32)
    img[1, 1, 1] = value
    with pytest.raises(ValueError, match="non-finite"):
        to_pil(img)


def test_floats_outside_unit_range_name_the_range_found() -> None:
    with pytest.raises(ValueError, match=r"\[-0.5, 255\]"):
        to_pil(np.array([[-0.5, 255.0]], dtype=np.float32))


def test_missing_and_unreadable_files_name_the_path(tmp_path) -> None:
    with pytest.raises(FileNotFoundError, match="missing.png"):
        to_pil(tmp_path / "missing.png")
    junk = tmp_path / "junk.png"
    junk.write_bytes(b"this is not a png")
    with pytest.raises(ValueError, match="junk.png"):
        to_pil(str(junk))
    truncated = tmp_path / "truncated.png"
    Image.fromarray(RGB).save(truncated)
    truncated.write_bytes(truncated.read_bytes()[:60])
    with pytest.raises(ValueError, match="truncated.png"):
        to_pil(truncated)


def test_other_types_name_the_type() -> None:
    with pytest.raises(TypeError, match="list"):
        to_pil([[0, 1], [2, 3]])  # type: ignore[arg-type]


def test_size_must_be_a_positive_int() -> None:
    with pytest.raises(ValueError, match="size.*0"):
        preprocess(RGB, 0)
