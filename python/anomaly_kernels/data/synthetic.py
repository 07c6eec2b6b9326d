"""A synthetic anomaly-detection dataset written in the MVTec AD folder layout, for offline runs.

Each category is one texture family (see :mod:`anomaly_kernels.data.textures`); its test set holds
normal images and images with one defect of each requested type (see
:mod:`anomaly_kernels.data.defects`), each with its exact mask::

    <root>/<category>/train/good/000.png ...
    <root>/<category>/test/good/000.png ...
    <root>/<category>/test/<defect>/000.png ...
    <root>/<category>/ground_truth/<defect>/000_mask.png ...   (mode "L", 0 or 255)
    <root>/<category>/synthetic.json                           the settings it was made with

Global statistics do not give defects away. Every image gets its own brightness and colour
offset (a common offset in ±0.08 plus ±0.015 per channel, on a [0, 1] scale). A defect image is
drawn like a normal one, then its background is re-toned by a per-channel gamma inside its own
colour range so that the mean colour of the finished image, defect included, equals the mean of
the background as drawn; and defect colours stay inside that range (see
:mod:`anomaly_kernels.data.defects`). Normal and defective images therefore share the
distribution of per-channel mean, minimum and maximum (up to 8-bit rounding and the rare defect
covering the single darkest or brightest pixel), and defects come lighter and darker.

Every image is drawn from its own random stream, seeded by ``(seed, category name, folder,
index)``: the same arguments write byte-identical files (with the same numpy and Pillow builds),
and changing the number of images of one folder leaves the images of the others unchanged.
"""

from __future__ import annotations

import json
import os
import secrets
import shutil
import zlib
from dataclasses import dataclass
from pathlib import Path
from typing import Dict, Optional, Sequence, Tuple, Union

import numpy as np
from PIL import Image

from anomaly_kernels.data.defects import DEFECT_TYPES, make_defect
from anomaly_kernels.data.textures import TEXTURE_FAMILIES, render_texture
from anomaly_kernels.data.transforms import ImageSize, resolve_image_size

DEFAULT_CATEGORIES: Tuple[str, ...] = ("carpet_like", "grid_like", "wood_like")
MIN_IMAGE_SIDE = 32
# Brightness offsets of the images on a [0, 1] scale: common to the channels, and per channel.
BRIGHTNESS_RANGE = 0.08
CHANNEL_RANGE = 0.015
# Newton steps on the per-channel log-gamma that matches a defect image's mean colour to its
# target (3 bring the error far below one 8-bit level), and the largest |log-gamma| allowed.
COMPENSATION_STEPS = 3
LOG_GAMMA_RANGE = 0.5
# Written into every generated category: the settings it was made with, so that a later run can
# tell whether the folder holds the set it asks for.
SETTINGS_FILE = "synthetic.json"


@dataclass(frozen=True)
class SyntheticCategory:
    """One category of the synthetic dataset; ``None`` fields take the dataset-wide value.

    Attributes:
        name: folder name of the category.
        texture: texture family (see ``TEXTURE_FAMILIES``); defaults to ``name``, so a category
            named after a family needs nothing else.
        defect_types: defect folders to write, a subset of ``DEFECT_TYPES``.
        n_train, n_test_good, n_test_defect_per_type: numbers of images.
        image_size: an int (square) or ``(H, W)``.
    """

    name: str
    texture: Optional[str] = None
    defect_types: Optional[Sequence[str]] = None
    n_train: Optional[int] = None
    n_test_good: Optional[int] = None
    n_test_defect_per_type: Optional[int] = None
    image_size: Optional[ImageSize] = None


@dataclass(frozen=True)
class SyntheticSample:
    """One rendered image.

    Attributes:
        image: (H, W, 3) uint8, the image as written.
        clean: (H, W, 3) uint8, the same image rendered without its defect (equal to ``image``
            for normal images).
        mask: (H, W) bool, the defect pixels; exactly the pixels where ``image`` and ``clean``
            differ.
    """

    image: np.ndarray
    clean: np.ndarray
    mask: np.ndarray


def sample_seed(seed: int, category: str, folder: str, index: int) -> np.random.SeedSequence:
    """The seed of image ``index`` of ``folder`` (e.g. "train/good", "test/hole") of ``category``."""
    return np.random.SeedSequence([seed, zlib.crc32(category.encode()), zlib.crc32(folder.encode()), index])


def _to_uint8(image: np.ndarray) -> np.ndarray:
    return np.rint(image * np.float32(255.0)).astype(np.uint8)


def render_synthetic_sample(
    texture: str,
    defect_type: Optional[str],
    image_size: ImageSize,
    seed: Union[int, np.random.SeedSequence],
) -> SyntheticSample:
    """Render one image of ``texture``, normal (``defect_type=None``) or with one defect.

    The background is the texture plus a random brightness/colour offset. For a defect image
    the background is re-toned so the finished image's mean colour matches the mean of the
    background as drawn, keeping its per-channel minimum and maximum (see the module doc).

    Args:
        texture: a texture family name.
        defect_type: a defect type name, or None for a normal image.
        image_size: an int (square) or ``(H, W)``, each side at least 32.
        seed: an int or a ``numpy.random.SeedSequence``.

    Returns:
        A :class:`SyntheticSample`.
    """
    height, width = resolve_image_size(image_size)
    if min(height, width) < MIN_IMAGE_SIDE:
        raise ValueError(f"image_size must be at least {MIN_IMAGE_SIDE} on each side, got {(height, width)}")
    rng = np.random.default_rng(seed)
    surface = render_texture(texture, rng, height, width)
    offset = (rng.uniform(-BRIGHTNESS_RANGE, BRIGHTNESS_RANGE) + rng.uniform(-CHANNEL_RANGE, CHANNEL_RANGE, 3)).astype(
        np.float32
    )
    clean = np.clip(surface + offset, 0.0, 1.0)
    if defect_type is None:
        image = _to_uint8(clean)
        return SyntheticSample(image=image, clean=image.copy(), mask=np.zeros((height, width), dtype=bool))

    defect = make_defect(defect_type, rng, clean)
    # Match the mean colour with a per-channel gamma of the background inside its own range:
    # an offset would also move the darkest and brightest values, which then give defects away.
    target = clean.mean(axis=(0, 1))
    low, high = clean.min(axis=(0, 1)), clean.max(axis=(0, 1))
    span = np.maximum(high - low, np.float32(1e-6))
    level = (clean - low) / span
    log_level = np.log(np.maximum(level, np.float32(1e-12)))

    def toned(log_gamma: np.ndarray) -> np.ndarray:
        return low + span * np.exp(log_level * np.exp(log_gamma).astype(np.float32))

    # Newton steps on log(gamma) with the slope of the background mean at gamma = 1, which the
    # small defect barely changes: each step cuts the mean error by a large factor.
    slope = np.minimum(span * (level * log_level).mean(axis=(0, 1)), -1e-6)
    log_gamma = np.zeros(3)
    for _ in range(COMPENSATION_STEPS):
        defective, _mask = defect.apply(toned(log_gamma), low, high)
        error = defective.mean(axis=(0, 1)) - target
        log_gamma = np.clip(log_gamma - error / slope, -LOG_GAMMA_RANGE, LOG_GAMMA_RANGE)
    background = toned(log_gamma)
    defective, mask = defect.apply(background, low, high)
    return SyntheticSample(image=_to_uint8(defective), clean=_to_uint8(background), mask=mask)


def _check_count(value: int, name: str) -> int:
    if isinstance(value, bool) or not isinstance(value, (int, np.integer)):
        raise TypeError(f"{name} must be an int, got {type(value).__name__}")
    if value < 1:
        raise ValueError(f"{name} must be at least 1, got {value}")
    return int(value)


@dataclass(frozen=True)
class _ResolvedCategory:
    name: str
    texture: str
    defect_types: Tuple[str, ...]
    n_train: int
    n_test_good: int
    n_test_defect_per_type: int
    image_size: Tuple[int, int]


def _resolve_category(
    category: Union[str, SyntheticCategory],
    defaults: Dict[str, object],
) -> _ResolvedCategory:
    if isinstance(category, str):
        category = SyntheticCategory(name=category)
    if not isinstance(category, SyntheticCategory):
        raise TypeError(f"categories must hold str or SyntheticCategory, got {type(category).__name__}")
    name = category.name
    if not isinstance(name, str) or not name or name in (".", "..") or "/" in name or "\\" in name:
        raise ValueError(f"category name must be a plain folder name, got {name!r}")
    texture = name if category.texture is None else category.texture
    if texture not in TEXTURE_FAMILIES:
        raise ValueError(
            f"category {name!r}: texture must be one of {sorted(TEXTURE_FAMILIES)}, got {texture!r} "
            "(name a category after a family or give SyntheticCategory(texture=...))"
        )

    def pick(field: str):
        value = getattr(category, field)
        return defaults[field] if value is None else value

    defect_types = pick("defect_types")
    defect_types = (defect_types,) if isinstance(defect_types, str) else tuple(defect_types)
    if not defect_types:
        raise ValueError(f"category {name!r}: defect_types must not be empty")
    unknown = [defect for defect in defect_types if defect not in DEFECT_TYPES]
    if unknown:
        raise ValueError(f"category {name!r}: unknown defect types {unknown}, expected some of {list(DEFECT_TYPES)}")
    if len(set(defect_types)) != len(defect_types):
        raise ValueError(f"category {name!r}: defect_types has duplicates: {list(defect_types)}")
    image_size = resolve_image_size(pick("image_size"))
    if min(image_size) < MIN_IMAGE_SIDE:
        raise ValueError(f"category {name!r}: image_size must be at least {MIN_IMAGE_SIDE} per side, got {image_size}")
    return _ResolvedCategory(
        name=name,
        texture=texture,
        defect_types=defect_types,
        n_train=_check_count(pick("n_train"), "n_train"),
        n_test_good=_check_count(pick("n_test_good"), "n_test_good"),
        n_test_defect_per_type=_check_count(pick("n_test_defect_per_type"), "n_test_defect_per_type"),
        image_size=image_size,
    )


def _settings(category: _ResolvedCategory, seed: int) -> Dict[str, object]:
    return {
        "seed": int(seed),
        "texture": category.texture,
        "defect_types": list(category.defect_types),
        "n_train": category.n_train,
        "n_test_good": category.n_test_good,
        "n_test_defect_per_type": category.n_test_defect_per_type,
        "image_size": list(category.image_size),
    }


def synthetic_settings(
    category: Union[str, SyntheticCategory],
    n_train: int = 32,
    n_test_good: int = 16,
    n_test_defect_per_type: int = 8,
    image_size: ImageSize = 128,
    seed: int = 0,
    defect_types: Sequence[str] = DEFECT_TYPES,
) -> Dict[str, object]:
    """The settings :func:`generate_synthetic_dataset` records for ``category`` with these arguments.

    Compare them with :func:`read_synthetic_settings` of an existing folder to know whether it
    holds the set these arguments would write.

    Example:
        >>> synthetic_settings("grid_like", image_size=64, seed=3)["image_size"]
        [64, 64]
    """
    defaults: Dict[str, object] = {
        "defect_types": defect_types, "n_train": n_train, "n_test_good": n_test_good,
        "n_test_defect_per_type": n_test_defect_per_type, "image_size": image_size,
    }
    return _settings(_resolve_category(category, defaults), seed)


def read_synthetic_settings(category_dir: Union[str, Path]) -> Optional[Dict[str, object]]:
    """The settings a generated category folder was made with; ``None`` when it has no readable record."""
    try:
        with open(Path(category_dir) / SETTINGS_FILE) as f:
            settings = json.load(f)
    except (OSError, ValueError):
        return None
    return settings if isinstance(settings, dict) else None


def _write_folder(
    category: _ResolvedCategory, category_dir: Path, folder: str, count: int, defect_type: Optional[str], seed: int
) -> None:
    image_dir = category_dir / folder
    image_dir.mkdir(parents=True, exist_ok=True)
    mask_dir = None
    if defect_type is not None:
        mask_dir = category_dir / "ground_truth" / defect_type
        mask_dir.mkdir(parents=True, exist_ok=True)
    for index in range(count):
        sample = render_synthetic_sample(
            category.texture, defect_type, category.image_size, sample_seed(seed, category.name, folder, index)
        )
        Image.fromarray(sample.image).save(image_dir / f"{index:03d}.png")
        if mask_dir is not None:
            mask = sample.mask.astype(np.uint8) * np.uint8(255)
            Image.fromarray(mask).save(mask_dir / f"{index:03d}_mask.png")


def generate_synthetic_dataset(
    root: Union[str, Path],
    categories: Sequence[Union[str, SyntheticCategory]] = DEFAULT_CATEGORIES,
    n_train: int = 32,
    n_test_good: int = 16,
    n_test_defect_per_type: int = 8,
    image_size: ImageSize = 128,
    seed: int = 0,
    defect_types: Sequence[str] = DEFECT_TYPES,
    overwrite: bool = False,
) -> Dict[str, Path]:
    """Write a synthetic dataset in the MVTec AD layout under ``root`` (see the module doc).

    Args:
        root: output folder (created if missing).
        categories: category names (each a texture family: "carpet_like", "grid_like",
            "wood_like", "leather_like") or :class:`SyntheticCategory` entries with their own
            texture, defect types, counts or size.
        n_train: normal training images per category.
        n_test_good: normal test images per category.
        n_test_defect_per_type: test images per defect type and category.
        image_size: an int (square) or ``(H, W)``, at least 32 per side.
        seed: non-negative int; the same seed writes the same bytes.
        defect_types: defect folders to write (subset of ``DEFECT_TYPES`` = scratch, hole, stain,
            color_spot).
        overwrite: replace the ``train``, ``test``, ``ground_truth`` and ``synthetic.json`` of a category
            that already exists (its other files are kept); without it an existing non-empty
            category folder is an error.

    Each category folder also gets ``synthetic.json``, the settings it was made with (see
    :func:`synthetic_settings`). Each category is written into a hidden sibling folder (``.<name>.partial-*``) and renamed
    into place once complete, so an interrupted run never leaves a category folder holding part
    of the images (a run killed outright may leave the hidden folder, which can be deleted).

    Returns:
        ``{category name: category folder}`` in the order given.

    Raises:
        ValueError: bad counts, sizes, names, textures, defect types, duplicate category names
            or a negative seed.
        TypeError: wrongly typed arguments.
        FileExistsError: a category folder exists, is not empty and ``overwrite`` is False.
    """
    if isinstance(seed, bool) or not isinstance(seed, (int, np.integer)) or seed < 0:
        raise ValueError(f"seed must be a non-negative int, got {seed!r}")
    if isinstance(categories, (str, SyntheticCategory)):
        categories = [categories]
    if len(categories) == 0:
        raise ValueError("categories must name at least one category")
    defaults: Dict[str, object] = {
        "defect_types": defect_types,
        "n_train": n_train,
        "n_test_good": n_test_good,
        "n_test_defect_per_type": n_test_defect_per_type,
        "image_size": image_size,
    }
    resolved = [_resolve_category(category, defaults) for category in categories]
    names = [category.name for category in resolved]
    if len(set(names)) != len(names):
        raise ValueError(f"category names must be unique, got {names}")

    root = Path(root)
    written: Dict[str, Path] = {}
    # Check every target before writing anything, so a refusal leaves the disk untouched.
    for category in resolved:
        category_dir = root / category.name
        if category_dir.exists() and not category_dir.is_dir():
            raise FileExistsError(f"{category_dir} exists and is not a directory")
        if category_dir.is_dir() and any(category_dir.iterdir()) and not overwrite:
            raise FileExistsError(f"{category_dir} is not empty; pass overwrite=True to replace its images")
    root.mkdir(parents=True, exist_ok=True)
    for category in resolved:
        category_dir = root / category.name
        # Written into a hidden folder and renamed when complete: an interrupted run never
        # leaves a category folder that looks finished but holds only part of the images.
        staging = _fresh_sibling(category_dir, "partial")
        staging.mkdir()
        try:
            _write_folder(category, staging, "train/good", category.n_train, None, int(seed))
            _write_folder(category, staging, "test/good", category.n_test_good, None, int(seed))
            for defect_type in category.defect_types:
                _write_folder(
                    category, staging, f"test/{defect_type}", category.n_test_defect_per_type, defect_type, int(seed)
                )
            with open(staging / SETTINGS_FILE, "w") as f:
                json.dump(_settings(category, int(seed)), f, indent=1)
        except BaseException:
            shutil.rmtree(staging, ignore_errors=True)
            raise
        _replace_category(staging, category_dir)
        written[category.name] = category_dir
    return written


_GENERATED_PARTS = ("train", "test", "ground_truth", SETTINGS_FILE)


def _replace_category(staging: Path, category_dir: Path) -> None:
    """Put the complete ``staging`` folder in place of ``category_dir``.

    Files of an existing category folder other than the generated parts are kept (moved into
    the new folder); the old generated parts are deleted only after the new folder is in place.
    """
    if not category_dir.exists():
        os.rename(staging, category_dir)
        return
    retired = _fresh_sibling(category_dir, "old")
    os.rename(category_dir, retired)
    for entry in retired.iterdir():
        if entry.name not in _GENERATED_PARTS:
            os.rename(entry, staging / entry.name)
    os.rename(staging, category_dir)
    shutil.rmtree(retired, ignore_errors=True)


def _fresh_sibling(folder: Path, tag: str) -> Path:
    """An unused hidden name beside ``folder`` (not created)."""
    while True:
        candidate = folder.with_name(f".{folder.name}.{tag}-{os.getpid()}-{secrets.token_hex(4)}")
        if not candidate.exists():
            return candidate
