"""Datasets reading the MVTec AD folder layout, and a flat folder of images for prediction.

The MVTec AD layout of one category::

    <root>/<category>/train/good/*.png                       normal training images
    <root>/<category>/test/good/*.png                        normal test images
    <root>/<category>/test/<defect>/*.png                    anomalous test images
    <root>/<category>/ground_truth/<defect>/<stem>_mask.png  their masks (0 normal, 255 defect)

Images may be PNG, JPEG, BMP, TIFF or (when Pillow can read it) WebP (the extension is matched case-insensitively; hidden files
are ignored); a mask is looked up as ``<stem>_mask`` with the PNG extension first, then the others.
Images of any size and colour mode are read; they are converted to RGB and resized on loading.
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path
from typing import Any, Dict, List, Optional, Sequence, Tuple, Union

import torch
from PIL import features
from torch.utils.data import Dataset

from anomaly_kernels.data.transforms import (
    IMAGENET_MEAN,
    IMAGENET_STD,
    ImageSize,
    empty_mask,
    image_to_tensor,
    mask_to_tensor,
    read_image,
    resolve_image_size,
    resolve_normalization,
)

IMAGE_EXTENSIONS: Tuple[str, ...] = (".png", ".jpg", ".jpeg", ".bmp", ".tif", ".tiff") + (
    (".webp",) if features.check("webp") else ()
)
NORMAL_FOLDER = "good"
SPLITS = ("train", "test")


@dataclass(frozen=True)
class MVTecSample:
    """One image of an MVTec-layout category.

    Attributes:
        image_path: path of the image file.
        mask_path: path of its mask, ``None`` for normal images.
        label: 0 for normal, 1 for anomalous.
        defect_type: the folder the image lies in: "good" or the defect name.
    """

    image_path: Path
    mask_path: Optional[Path]
    label: int
    defect_type: str


def is_image_file(path: Path) -> bool:
    """True for a visible regular file with one of :data:`IMAGE_EXTENSIONS` (any case)."""
    return path.is_file() and not path.name.startswith(".") and path.suffix.lower() in IMAGE_EXTENSIONS


def list_images(folder: Path) -> List[Path]:
    """The image files directly inside ``folder``, sorted by name (not recursive)."""
    return sorted(path for path in folder.iterdir() if is_image_file(path))


def _require_folder(path: Path, what: str) -> None:
    if not path.is_dir():
        raise FileNotFoundError(f"{what} not found: {path} is not a directory")


def _find_mask(ground_truth: Path, defect_type: str, image_path: Path) -> Path:
    """The mask ``ground_truth/<defect_type>/<stem>_mask.<ext>`` of ``image_path``.

    Raises:
        ValueError: no such mask; the message names the image and the expected mask path.
    """
    folder = ground_truth / defect_type
    stem = f"{image_path.stem}_mask"
    for extension in IMAGE_EXTENSIONS:
        candidate = folder / f"{stem}{extension}"
        if candidate.is_file():
            return candidate
    raise ValueError(
        f"anomalous image {image_path} has no mask: expected {folder / (stem + '.png')} "
        f"(or {stem} with another image extension)"
    )


def scan_mvtec_category(root: Union[str, Path], category: str, split: str) -> List[MVTecSample]:
    """List the samples of ``split`` of ``<root>/<category>`` in the MVTec AD layout.

    The train split is ``train/good`` only (label 0). The test split is ``test/good`` (label 0)
    followed by every other folder of ``test`` (label 1) in name order, each image paired with
    its mask. Within a folder images are sorted by file name, so the order is reproducible.

    Raises:
        ValueError: ``split`` is not "train" or "test"; no image in the split; an anomalous
            image without a mask.
        FileNotFoundError: ``root``, the category folder, the split folder or (train)
            ``train/good`` is missing; the message names the path.
    """
    if split not in SPLITS:
        raise ValueError(f"split must be one of {SPLITS}, got {split!r}")
    if not isinstance(category, str) or not category:
        raise ValueError(f"category must be a non-empty folder name, got {category!r}")
    root = Path(root)
    _require_folder(root, "dataset root")
    category_dir = root / category
    if not category_dir.is_dir():
        available = sorted(path.name for path in root.iterdir() if path.is_dir())
        raise FileNotFoundError(
            f"category {category!r} not found: {category_dir} is not a directory (found {available})"
        )
    split_dir = category_dir / split
    _require_folder(split_dir, f"{split} split of category {category!r}")

    samples: List[MVTecSample] = []
    if split == "train":
        good_dir = split_dir / NORMAL_FOLDER
        _require_folder(good_dir, "normal training images")
        samples = [MVTecSample(path, None, 0, NORMAL_FOLDER) for path in list_images(good_dir)]
    else:
        ground_truth = category_dir / "ground_truth"
        folders = sorted((path for path in split_dir.iterdir() if path.is_dir()), key=lambda path: path.name)
        # Normal images first, then each defect type in name order.
        folders.sort(key=lambda path: path.name != NORMAL_FOLDER)
        for folder in folders:
            if folder.name == NORMAL_FOLDER:
                samples.extend(MVTecSample(path, None, 0, NORMAL_FOLDER) for path in list_images(folder))
            else:
                samples.extend(
                    MVTecSample(path, _find_mask(ground_truth, folder.name, path), 1, folder.name)
                    for path in list_images(folder)
                )
    if not samples:
        raise ValueError(f"no images ({', '.join(IMAGE_EXTENSIONS)}) found in the {split} split {split_dir}")
    return samples


class MVTecFolder(Dataset):
    """One split of one category of a dataset in the MVTec AD folder layout (see the module doc).

    Args:
        root: the folder holding the category folders.
        category: the category folder name, e.g. "bottle".
        split: "train" (``train/good`` only) or "test" (``test/good`` and every defect folder).
        image_size: output size, an int (square) or ``(H, W)``.
        mean, std: per-channel normalisation ``(x - mean) / std`` of the [0, 1] images;
            ImageNet statistics by default; ``None`` for both keeps [0, 1] values.

    Items are dicts:
        ``image``: (3, H, W) float32, RGB, bilinear-resized, normalised.
        ``label``: 0-dim int64 tensor, 0 normal, 1 anomalous.
        ``mask``: (1, H, W) float32 in {0, 1}, nearest-resized; all zeros for normal images.
        ``image_path``: str; ``mask_path``: str, "" for normal images.
        ``defect_type``: str, "good" or the defect folder name.
    The default collate function batches them into ``image`` (B, 3, H, W), ``label`` (B,),
    ``mask`` (B, 1, H, W) and lists of strings.

    The folders are scanned when the dataset is built (missing folders, empty splits and missing
    masks raise then); image files are decoded when an item is read (an unreadable file raises
    a ValueError naming it).

    Attributes:
        samples: the :class:`MVTecSample` list, in item order.
        image_size: ``(H, W)``.
    """

    def __init__(
        self,
        root: Union[str, Path],
        category: str,
        split: str = "train",
        image_size: ImageSize = 256,
        mean: Optional[Sequence[float]] = IMAGENET_MEAN,
        std: Optional[Sequence[float]] = IMAGENET_STD,
    ) -> None:
        super().__init__()
        self.image_size = resolve_image_size(image_size)
        self.normalization = resolve_normalization(mean, std)
        self.root = Path(root)
        self.category = category
        self.split = split
        self.samples = scan_mvtec_category(self.root, category, split)

    def __len__(self) -> int:
        return len(self.samples)

    @property
    def labels(self) -> List[int]:
        """The label (0 normal, 1 anomalous) of every item, in item order."""
        return [sample.label for sample in self.samples]

    @property
    def defect_types(self) -> List[str]:
        """The defect folder names present in this split, sorted ("good" excluded)."""
        return sorted({sample.defect_type for sample in self.samples if sample.label == 1})

    def __getitem__(self, index: int) -> Dict[str, Any]:
        if not -len(self) <= index < len(self):
            raise IndexError(f"index {index} out of range for a dataset of {len(self)} images")
        sample = self.samples[index]
        image = read_image(sample.image_path)
        if sample.mask_path is None:
            mask = empty_mask(self.image_size)
        else:
            mask_image = read_image(sample.mask_path, mode="L")
            if mask_image.size != image.size:
                raise ValueError(
                    f"mask {sample.mask_path} is {mask_image.size[0]}x{mask_image.size[1]} (WxH) but its image "
                    f"{sample.image_path} is {image.size[0]}x{image.size[1]}"
                )
            mask = mask_to_tensor(mask_image, self.image_size)
        return {
            "image": image_to_tensor(image, self.image_size, self.normalization),
            "label": torch.tensor(sample.label, dtype=torch.int64),
            "mask": mask,
            "image_path": str(sample.image_path),
            "mask_path": "" if sample.mask_path is None else str(sample.mask_path),
            "defect_type": sample.defect_type,
        }


class PredictFolder(Dataset):
    """The images of a flat folder (or a single image file), for prediction without labels.

    Args:
        path: a folder (its image files, not sub-folders, sorted by name) or one image file.
        image_size: output size, an int (square) or ``(H, W)``.
        mean, std: normalisation as in :class:`MVTecFolder`.

    Items are dicts with ``image`` (3, H, W) float32 and ``image_path`` (str).

    Every image of a folder is decoded once when the dataset is built; what cannot be used is
    listed in :attr:`skipped` instead of failing the whole folder.

    Attributes:
        image_paths: the images, in item order.
        skipped: ``(path, reason)`` of every entry of the folder that is not read: sub-folders,
            files of other types, files that cannot be decoded (hidden files are not listed).

    Raises:
        FileNotFoundError: ``path`` does not exist.
        ValueError: the folder holds no readable image, or the file is not a readable image.
    """

    def __init__(
        self,
        path: Union[str, Path],
        image_size: ImageSize = 256,
        mean: Optional[Sequence[float]] = IMAGENET_MEAN,
        std: Optional[Sequence[float]] = IMAGENET_STD,
    ) -> None:
        super().__init__()
        self.image_size = resolve_image_size(image_size)
        self.normalization = resolve_normalization(mean, std)
        self.path = Path(path)
        self.skipped: List[Tuple[Path, str]] = []
        if self.path.is_dir():
            self.image_paths = self._scan_folder()
            if not self.image_paths:
                found = f"; skipped {_describe(self.skipped)}" if self.skipped else ""
                raise ValueError(f"no readable images ({', '.join(IMAGE_EXTENSIONS)}) found in {self.path}{found}")
        elif self.path.is_file():
            if self.path.suffix.lower() not in IMAGE_EXTENSIONS:
                raise ValueError(f"{self.path} is not an image file: expected one of {IMAGE_EXTENSIONS}")
            read_image(self.path)  # an unreadable file fails now, naming itself
            self.image_paths = [self.path]
        else:
            raise FileNotFoundError(f"prediction input not found: {self.path}")

    def _scan_folder(self) -> List[Path]:
        images = []
        for entry in sorted(self.path.iterdir()):
            if entry.name.startswith("."):
                continue
            if entry.is_dir():
                self.skipped.append((entry, "a folder (sub-folders are not read)"))
            elif entry.suffix.lower() not in IMAGE_EXTENSIONS:
                self.skipped.append((entry, f"not an image type read here ({', '.join(IMAGE_EXTENSIONS)})"))
            else:
                try:
                    read_image(entry)
                except (OSError, ValueError) as error:
                    reason = str(error).splitlines()[0] if str(error) else type(error).__name__
                    self.skipped.append((entry, f"unreadable ({reason})"))
                else:
                    images.append(entry)
        return images

    def __len__(self) -> int:
        return len(self.image_paths)

    def __getitem__(self, index: int) -> Dict[str, Any]:
        if not -len(self) <= index < len(self):
            raise IndexError(f"index {index} out of range for a dataset of {len(self)} images")
        path = self.image_paths[index]
        return {
            "image": image_to_tensor(read_image(path), self.image_size, self.normalization),
            "image_path": str(path),
        }


def _describe(skipped: Sequence[Tuple[Path, str]]) -> str:
    names = ", ".join(path.name for path, _ in skipped[:5])
    return f"{len(skipped)} entries ({names}{', ...' if len(skipped) > 5 else ''})"
