"""Tests of the synthetic MVTec-layout generator: layout, determinism, exact masks, visible defects
and no give-away global statistics. References come from Pillow, numpy and scikit-learn."""

from __future__ import annotations

import hashlib
from pathlib import Path

import numpy as np
import pytest
from PIL import Image
from sklearn.metrics import roc_auc_score

from anomaly_kernels.data.defects import DEFECT_TYPES
from anomaly_kernels.data.folder import MVTecFolder
from anomaly_kernels.data.synthetic import (
    DEFAULT_CATEGORIES,
    SyntheticCategory,
    generate_synthetic_dataset,
    render_synthetic_sample,
    sample_seed,
)
from anomaly_kernels.data.textures import TEXTURE_FAMILIES

SMALL = dict(n_train=3, n_test_good=2, n_test_defect_per_type=2, image_size=48)


def _read(path: Path) -> np.ndarray:
    with Image.open(path) as image:
        return np.asarray(image)


def _digest(root: Path) -> dict:
    return {
        str(path.relative_to(root)): hashlib.sha256(path.read_bytes()).hexdigest() for path in sorted(root.rglob("*.png"))
    }


def test_layout_matches_mvtec(tmp_path):
    written = generate_synthetic_dataset(tmp_path, **SMALL)
    assert list(written) == list(DEFAULT_CATEGORIES)
    for category in DEFAULT_CATEGORIES:
        base = tmp_path / category
        assert written[category] == base
        assert sorted(path.name for path in (base / "train" / "good").iterdir()) == ["000.png", "001.png", "002.png"]
        assert sorted(path.name for path in (base / "test").iterdir()) == sorted(("good",) + DEFECT_TYPES)
        for defect in DEFECT_TYPES:
            assert sorted(path.name for path in (base / "ground_truth" / defect).iterdir()) == [
                "000_mask.png", "001_mask.png"
            ]
            mask = Image.open(base / "ground_truth" / defect / "000_mask.png")
            assert mask.mode == "L" and mask.size == (48, 48)
            assert set(np.unique(np.asarray(mask))) == {0, 255}
        image = Image.open(base / "test" / "good" / "000.png")
        assert image.mode == "RGB" and image.size == (48, 48)
        # The folder dataset reads what the generator writes.
        test = MVTecFolder(tmp_path, category, "test", image_size=32)
        assert test.labels.count(1) == 2 * len(DEFECT_TYPES) and test.labels.count(0) == 2


def test_same_seed_writes_identical_bytes(tmp_path):
    generate_synthetic_dataset(tmp_path / "a", **SMALL, seed=7)
    generate_synthetic_dataset(tmp_path / "b", **SMALL, seed=7)
    generate_synthetic_dataset(tmp_path / "c", **SMALL, seed=8)
    first, second, third = (_digest(tmp_path / name) for name in "abc")
    assert first == second and len(first) > 0
    assert first.keys() == third.keys()
    assert all(first[name] != third[name] for name in first if "_mask" not in name)


def test_images_vary_within_a_folder(tmp_path):
    generate_synthetic_dataset(tmp_path, categories=list(TEXTURE_FAMILIES), **SMALL)
    for category in TEXTURE_FAMILIES:
        images = [_read(path).astype(np.int32) for path in sorted((tmp_path / category / "train" / "good").iterdir())]
        for i in range(len(images)):
            for j in range(i + 1, len(images)):
                assert np.abs(images[i] - images[j]).mean() > 3.0, (category, i, j)


def test_written_files_are_the_rendered_samples(tmp_path):
    generate_synthetic_dataset(tmp_path, categories=["wood_like"], **SMALL, seed=5)
    sample = render_synthetic_sample("wood_like", "stain", 48, sample_seed(5, "wood_like", "test/stain", 1))
    np.testing.assert_array_equal(_read(tmp_path / "wood_like/test/stain/001.png"), sample.image)
    np.testing.assert_array_equal(_read(tmp_path / "wood_like/ground_truth/stain/001_mask.png"), sample.mask * 255)
    good = render_synthetic_sample("wood_like", None, 48, sample_seed(5, "wood_like", "train/good", 2))
    np.testing.assert_array_equal(_read(tmp_path / "wood_like/train/good/002.png"), good.image)
    assert not good.mask.any()


@pytest.mark.parametrize("texture", sorted(TEXTURE_FAMILIES))
@pytest.mark.parametrize("defect", DEFECT_TYPES)
def test_mask_is_exactly_the_changed_pixels_and_defects_are_visible(texture, defect):
    for index in range(6):
        sample = render_synthetic_sample(texture, defect, (64, 56), seed=index)
        assert sample.image.shape == (64, 56, 3) and sample.mask.shape == (64, 56)
        difference = np.abs(sample.image.astype(np.int32) - sample.clean.astype(np.int32))
        np.testing.assert_array_equal(difference.max(axis=2) > 0, sample.mask)
        assert sample.mask.sum() >= 6
        assert (difference[~sample.mask] == 0).all()
        # Inside the mask the strongest channel moves by at least 20 grey levels everywhere,
        # and by more on average.
        assert difference.max(axis=2)[sample.mask].min() >= 20
        assert difference.max(axis=2)[sample.mask].mean() >= 24
        # Defect colours stay inside the colour range of the image they are drawn on.
        pixels, clean = sample.image.reshape(-1, 3), sample.clean.reshape(-1, 3)
        assert (pixels.min(axis=0) >= clean.min(axis=0)).all() and (pixels.max(axis=0) <= clean.max(axis=0)).all()


def test_defects_come_brighter_and_darker():
    signs = {defect: set() for defect in ("scratch", "stain")}
    for defect in signs:
        for index in range(12):
            sample = render_synthetic_sample("carpet_like", defect, 48, seed=index)
            change = sample.image.astype(np.int32)[sample.mask] - sample.clean.astype(np.int32)[sample.mask]
            signs[defect].add(int(np.sign(change.sum())))
    assert all(found == {-1, 1} for found in signs.values()), signs
    # Holes: a darker inside and a brighter rim.
    sample = render_synthetic_sample("carpet_like", "hole", 48, seed=0)
    change = sample.image.astype(np.int32).sum(axis=2) - sample.clean.astype(np.int32).sum(axis=2)
    assert change.min() < -60 and change.max() > 60


@pytest.mark.parametrize("category", list(DEFAULT_CATEGORIES) + ["leather_like"])
def test_global_colour_statistics_do_not_separate_defects(tmp_path, category):
    n_good, n_per_defect = 80, 20
    generate_synthetic_dataset(
        tmp_path, categories=[category], n_train=1, n_test_good=n_good, n_test_defect_per_type=n_per_defect,
        image_size=48,
    )
    test_dir = tmp_path / category / "test"
    means, lows, highs, labels = [], [], [], []
    for folder in sorted(test_dir.iterdir()):
        for path in sorted(folder.iterdir()):
            pixels = _read(path).reshape(-1, 3).astype(np.float64)
            means.append(pixels.mean(axis=0))
            lows.append(pixels.min(axis=0))
            highs.append(pixels.max(axis=0))
            labels.append(int(folder.name != "good"))
    means, lows, highs, labels = np.array(means), np.array(lows), np.array(highs), np.array(labels)
    assert labels.sum() == n_per_defect * len(DEFECT_TYPES) and len(labels) - labels.sum() == n_good
    statistics = {"mean intensity": means.mean(axis=1)}
    for channel in range(3):
        statistics[f"mean of channel {channel}"] = means[:, channel]
        statistics[f"min of channel {channel}"] = lows[:, channel]
        statistics[f"max of channel {channel}"] = highs[:, channel]
    for name, statistic in statistics.items():
        auc = roc_auc_score(labels, statistic)
        assert max(auc, 1 - auc) <= 0.65, (category, name, auc)


def test_per_category_options(tmp_path):
    generate_synthetic_dataset(
        tmp_path,
        categories=[
            "grid_like",
            SyntheticCategory("panel", texture="leather_like", defect_types="hole", n_train=2, image_size=(40, 56)),
        ],
        **SMALL,
    )
    panel = tmp_path / "panel"
    assert len(list((panel / "train" / "good").iterdir())) == 2
    assert sorted(path.name for path in (panel / "test").iterdir()) == ["good", "hole"]
    assert _read(panel / "test" / "hole" / "000.png").shape == (40, 56, 3)
    assert _read(tmp_path / "grid_like" / "test" / "good" / "000.png").shape == (48, 48, 3)


def test_existing_category_needs_overwrite(tmp_path):
    generate_synthetic_dataset(tmp_path, categories=["grid_like"], **{**SMALL, "n_train": 4})
    with pytest.raises(FileExistsError, match="overwrite"):
        generate_synthetic_dataset(tmp_path, categories=["grid_like"], **SMALL)
    generate_synthetic_dataset(tmp_path, categories=["grid_like"], **SMALL, overwrite=True)
    assert len(list((tmp_path / "grid_like" / "train" / "good").iterdir())) == SMALL["n_train"]


@pytest.mark.parametrize(
    "kwargs, error, match",
    [
        ({"categories": ["marble"]}, ValueError, "texture must be one of"),
        ({"categories": []}, ValueError, "at least one"),
        ({"categories": ["grid_like", "grid_like"]}, ValueError, "unique"),
        ({"categories": [SyntheticCategory("../up", texture="grid_like")]}, ValueError, "plain folder name"),
        ({"categories": [3]}, TypeError, "SyntheticCategory"),
        ({"n_train": 0}, ValueError, "n_train"),
        ({"n_test_good": 1.5}, TypeError, "n_test_good"),
        ({"image_size": 16}, ValueError, "at least 32"),
        ({"defect_types": ("scratch", "dust")}, ValueError, "dust"),
        ({"defect_types": ()}, ValueError, "must not be empty"),
        ({"seed": -1}, ValueError, "seed"),
    ],
)
def test_bad_arguments_are_rejected_before_writing(tmp_path, kwargs, error, match):
    with pytest.raises(error, match=match):
        generate_synthetic_dataset(tmp_path, **kwargs)
    assert list(tmp_path.iterdir()) == []


def test_render_rejects_unknown_names():
    with pytest.raises(ValueError, match="texture"):
        render_synthetic_sample("marble", None, 48, 0)
    with pytest.raises(ValueError, match="defect type"):
        render_synthetic_sample("grid_like", "dust", 48, 0)
    with pytest.raises(ValueError, match="at least 32"):
        render_synthetic_sample("grid_like", None, (20, 64), 0)


def test_package_exports():
    import anomaly_kernels.data as data

    for name in ("MVTecFolder", "MVTecDataModule", "PredictFolder", "generate_synthetic_dataset", "DEFECT_TYPES"):
        assert hasattr(data, name), name
