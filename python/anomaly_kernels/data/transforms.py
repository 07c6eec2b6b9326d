"""Reading images and masks from disk and turning them into normalised tensors.

Images become float32 tensors (3, H, W): RGB, resized with bilinear filtering, scaled to [0, 1]
and normalised per channel as ``(x - mean) / std`` (ImageNet statistics by default). Masks become
float32 tensors (1, H, W) with values in {0, 1}: resized with nearest-neighbour sampling so they
stay binary, and a pixel is defective where the stored grey value is above 127 (the MVTec masks
store 0 and 255).
"""

from __future__ import annotations

import math
from pathlib import Path
from typing import Optional, Sequence, Tuple, Union

import numpy as np
import torch
from PIL import Image

IMAGENET_MEAN: Tuple[float, float, float] = (0.485, 0.456, 0.406)
IMAGENET_STD: Tuple[float, float, float] = (0.229, 0.224, 0.225)

ImageSize = Union[int, Sequence[int]]
Normalization = Optional[Tuple[Tuple[float, float, float], Tuple[float, float, float]]]


def resolve_image_size(image_size: ImageSize, name: str = "image_size") -> Tuple[int, int]:
    """Turn ``image_size`` (an int for square images, or ``(H, W)``) into a ``(H, W)`` tuple.

    Raises:
        TypeError: not an int nor a sequence of two ints (bools are refused).
        ValueError: a side that is not positive, or a sequence of length other than 2.
    """
    if isinstance(image_size, bool):
        raise TypeError(f"{name} must be an int or a (height, width) pair of ints, got {image_size!r}")
    if isinstance(image_size, (int, np.integer)):
        sides = (int(image_size), int(image_size))
    elif isinstance(image_size, Sequence) and not isinstance(image_size, str):
        if len(image_size) != 2:
            raise ValueError(f"{name} must be an int or a (height, width) pair, got {len(image_size)} values")
        if not all(isinstance(side, (int, np.integer)) and not isinstance(side, bool) for side in image_size):
            raise TypeError(f"{name} must hold ints, got {tuple(image_size)!r}")
        sides = (int(image_size[0]), int(image_size[1]))
    else:
        raise TypeError(f"{name} must be an int or a (height, width) pair of ints, got {type(image_size).__name__}")
    if min(sides) < 1:
        raise ValueError(f"{name} must be positive, got {sides}")
    return sides


def resolve_normalization(
    mean: Optional[Sequence[float]], std: Optional[Sequence[float]]
) -> Normalization:
    """Check the per-channel ``mean`` / ``std`` of the normalisation; ``None`` for both means none.

    Returns:
        ``((m_r, m_g, m_b), (s_r, s_g, s_b))`` or ``None``.

    Raises:
        ValueError: only one of the two is None, a length other than 3, a non-finite value or a
            standard deviation that is not positive.
    """
    if mean is None and std is None:
        return None
    if mean is None or std is None:
        raise ValueError("mean and std must both be given or both be None (no normalisation), got only one")
    checked = []
    for name, values in (("mean", mean), ("std", std)):
        values = tuple(float(value) for value in values)
        if len(values) != 3:
            raise ValueError(f"{name} must hold 3 values (R, G, B), got {len(values)}")
        if not all(math.isfinite(value) for value in values):
            raise ValueError(f"{name} must be finite, got {values}")
        checked.append(values)
    if min(checked[1]) <= 0:
        raise ValueError(f"std must be positive, got {checked[1]}")
    return checked[0], checked[1]


def read_image(path: Union[str, Path], mode: str = "RGB") -> Image.Image:
    """Load the image at ``path`` fully into memory, converted to ``mode`` ("RGB" or "L").

    Grey-scale and RGBA files are converted, so every image comes back with 3 (or 1) channels.

    Raises:
        FileNotFoundError: ``path`` does not exist.
        ValueError: the file exists but cannot be decoded as an image (the message names it).
    """
    path = Path(path)
    if not path.is_file():
        raise FileNotFoundError(f"image file not found: {path}")
    try:
        with Image.open(path) as image:
            image.load()
            return image.convert(mode)
    # Pillow reports truncated or foreign files as OSError / UnidentifiedImageError, and some
    # malformed headers as SyntaxError or ValueError.
    except (OSError, SyntaxError, ValueError) as error:
        raise ValueError(f"cannot read image file {path}: {error}") from error


def image_to_tensor(image: Image.Image, size: Tuple[int, int], normalization: Normalization) -> torch.Tensor:
    """Resize an RGB image to ``size = (H, W)`` (bilinear) and return it as a (3, H, W) float32 tensor.

    Values are scaled to [0, 1] and, when ``normalization = (mean, std)`` is given, mapped to
    ``(x - mean) / std`` per channel.
    """
    if image.mode != "RGB":
        image = image.convert("RGB")
    height, width = size
    if image.size != (width, height):
        image = image.resize((width, height), Image.Resampling.BILINEAR)
    array = np.asarray(image, dtype=np.float32) / 255.0
    tensor = torch.from_numpy(array).permute(2, 0, 1).contiguous()
    if normalization is not None:
        mean, std = normalization
        tensor = (tensor - torch.tensor(mean).view(3, 1, 1)) / torch.tensor(std).view(3, 1, 1)
    return tensor


def mask_to_tensor(mask: Image.Image, size: Tuple[int, int]) -> torch.Tensor:
    """Resize a mask to ``size = (H, W)`` (nearest) and return it as a (1, H, W) float32 tensor in {0, 1}.

    A pixel is defective where the grey value is above 127.
    """
    if mask.mode != "L":
        mask = mask.convert("L")
    height, width = size
    if mask.size != (width, height):
        # Nearest-neighbour keeps the mask binary; any smoothing filter would invent grey edges.
        mask = mask.resize((width, height), Image.Resampling.NEAREST)
    array = (np.asarray(mask) > 127).astype(np.float32)
    return torch.from_numpy(array)[None]


def empty_mask(size: Tuple[int, int]) -> torch.Tensor:
    """The (1, H, W) float32 all-zero mask of a normal image."""
    return torch.zeros(1, size[0], size[1], dtype=torch.float32)
