"""Tests of image/mask loading and tensor conversion against numpy and Pillow computations."""

from __future__ import annotations

import numpy as np
import pytest
import torch
from PIL import Image

from anomaly_kernels.data.transforms import (
    IMAGENET_MEAN,
    IMAGENET_STD,
    image_to_tensor,
    mask_to_tensor,
    read_image,
    resolve_image_size,
    resolve_normalization,
)


def test_resolve_image_size_accepts_int_and_pairs():
    assert resolve_image_size(32) == (32, 32)
    assert resolve_image_size((24, 40)) == (24, 40)
    assert resolve_image_size([np.int64(8), 9]) == (8, 9)


@pytest.mark.parametrize(
    "bad, error",
    [(0, ValueError), ((4, -1), ValueError), ((1, 2, 3), ValueError), (True, TypeError), ((4.0, 4), TypeError),
     ("64", TypeError), (None, TypeError)],
)
def test_resolve_image_size_rejects_bad_values(bad, error):
    with pytest.raises(error, match="image_size"):
        resolve_image_size(bad)


def test_resolve_normalization_checks_arguments():
    assert resolve_normalization(None, None) is None
    assert resolve_normalization([0, 0, 0], [1, 1, 1]) == ((0.0, 0.0, 0.0), (1.0, 1.0, 1.0))
    with pytest.raises(ValueError, match="both"):
        resolve_normalization(IMAGENET_MEAN, None)
    with pytest.raises(ValueError, match="mean must hold 3"):
        resolve_normalization((0.5,), IMAGENET_STD)
    with pytest.raises(ValueError, match="std must be positive"):
        resolve_normalization(IMAGENET_MEAN, (0.2, 0.0, 0.2))
    with pytest.raises(ValueError, match="finite"):
        resolve_normalization((0.5, float("nan"), 0.5), IMAGENET_STD)


def test_image_to_tensor_normalises_like_numpy():
    rng = np.random.default_rng(0)
    pixels = rng.integers(0, 256, size=(6, 5, 3), dtype=np.uint8)
    tensor = image_to_tensor(Image.fromarray(pixels), (6, 5), (IMAGENET_MEAN, IMAGENET_STD))
    expected = (pixels.astype(np.float64) / 255 - np.array(IMAGENET_MEAN)) / np.array(IMAGENET_STD)
    assert tensor.dtype == torch.float32 and tensor.shape == (3, 6, 5)
    np.testing.assert_allclose(tensor.permute(1, 2, 0).numpy(), expected, rtol=0, atol=1e-5)
    raw = image_to_tensor(Image.fromarray(pixels), (6, 5), None)
    np.testing.assert_allclose(raw.permute(1, 2, 0).numpy(), pixels / 255.0, atol=1e-6)


def test_image_to_tensor_resizes_to_height_width():
    pixels = np.zeros((10, 20, 3), dtype=np.uint8)
    pixels[:, 10:] = 255  # left half black, right half white
    tensor = image_to_tensor(Image.fromarray(pixels), (4, 6), None)
    assert tensor.shape == (3, 4, 6)
    assert torch.all(tensor[:, :, 0] == 0) and torch.all(tensor[:, :, -1] == 1)


def test_mask_to_tensor_is_binary_and_nearest_resized():
    mask = np.zeros((8, 8), dtype=np.uint8)
    mask[:4, :4] = 255
    mask[6, 6] = 100  # at most 127: not a defect
    tensor = mask_to_tensor(Image.fromarray(mask), (4, 4))
    expected = np.zeros((4, 4), dtype=np.float32)
    expected[:2, :2] = 1
    assert tensor.dtype == torch.float32 and tensor.shape == (1, 4, 4)
    np.testing.assert_array_equal(tensor[0].numpy(), expected)
    upsampled = mask_to_tensor(Image.fromarray(mask), (16, 16))
    assert set(upsampled.unique().tolist()) == {0.0, 1.0}
    assert upsampled.sum().item() == 64  # a 4x4 block scaled by 2 per side


def test_read_image_converts_grey_to_rgb_and_names_bad_files(tmp_path):
    grey = np.arange(12, dtype=np.uint8).reshape(3, 4)
    Image.fromarray(grey).save(tmp_path / "grey.png")
    rgb = np.asarray(read_image(tmp_path / "grey.png"))
    assert rgb.shape == (3, 4, 3)
    np.testing.assert_array_equal(rgb, np.repeat(grey[..., None], 3, axis=2))
    broken = tmp_path / "broken.png"
    broken.write_bytes(b"not an image at all")
    with pytest.raises(ValueError, match="broken.png"):
        read_image(broken)
    with pytest.raises(FileNotFoundError, match="missing.png"):
        read_image(tmp_path / "missing.png")
