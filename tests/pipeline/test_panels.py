"""The review panels and predicted masks that ``fit`` and ``predict`` write per image.

A panel is image | ground truth (when known) | heat map | predicted mask | contour, at the
image's own resolution, under a header with the score and the labels. The checks read pixels:
each tile is where the layout says and shows what it should.
"""

from __future__ import annotations

import numpy as np
import pytest
import torch
import torch.nn.functional as F
from PIL import Image

from anomaly_kernels.pipeline import fit_and_test, predict_folder
from anomaly_kernels.pipeline.heatmaps import write_panels
from anomaly_kernels.pipeline.panels import BACKGROUND, CONTOUR, outline, panel_layout

WIDTH, HEIGHT = 48, 32  # a non-square image, larger than the (16, 16) map: resized on writing
MAP_SIZE = 16
COLOUR = (40, 200, 60)
TITLES = ("image", "ground truth", "heat map", "predicted mask", "contour")


def _map() -> torch.Tensor:
    """(1, 1, 16, 16) normalised map: hot (0.95) in a block on the right, cold (0.05) elsewhere."""
    anomaly_map = torch.full((1, 1, MAP_SIZE, MAP_SIZE), 0.05)
    anomaly_map[..., 4:12, 9:15] = 0.95
    return anomaly_map


@pytest.fixture
def batch(tmp_path):
    """A predict-step output of one anomalous image with its ground-truth mask file."""
    image = np.zeros((HEIGHT, WIDTH, 3), np.uint8)
    image[:] = COLOUR
    image[::4] = (90, 90, 90)  # stripes, so the image tile is not one colour
    Image.fromarray(image).save(tmp_path / "part.png")
    truth = np.zeros((HEIGHT, WIDTH), np.uint8)
    truth[10:20, 30:40] = 255
    Image.fromarray(truth).save(tmp_path / "part_mask.png")
    return {
        "image_path": [str(tmp_path / "part.png")],
        "mask_path": [str(tmp_path / "part_mask.png")],
        "defect_type": ["hole"],
        "label": torch.tensor([1]),
        "anomaly_maps": _map(),
        "pred_scores": torch.tensor([0.93]),
        "pred_labels": torch.tensor([True]),
    }


def _write(batch, tmp_path, thresholds=(0.5, 0.5)):
    panels, masks = tmp_path / "heatmaps", tmp_path / "masks"
    [path] = write_panels(batch, panels, masks, thresholds)
    with Image.open(path) as panel, Image.open(masks / "part.png.png") as mask:
        return np.asarray(panel.convert("RGB")).copy(), np.asarray(mask).copy(), mask.mode


def _tile(panel, layout, index):
    left, top, right, bottom = layout.tile_box(index)
    return panel[top:bottom, left:right]


def _layout_of(panel, titles):
    """The layout whose size matches the panel (the header text only changes the font size)."""
    for lines in (["part.png", "score 0.930 (threshold 0.500)", "predicted: anomalous   truth: anomalous (hole)"],
                  ["part.png", "score 0.930 (threshold 0.500)", "predicted: anomalous"]):
        layout = panel_layout((WIDTH, HEIGHT), titles, lines)
        if layout.size == (panel.shape[1], panel.shape[0]):
            return layout
    raise AssertionError(f"no layout of {titles} has the panel's size {panel.shape[1::-1]}")


def _expected_mask(anomaly_map, threshold):
    resized = F.interpolate(anomaly_map.float(), size=(HEIGHT, WIDTH), mode="bilinear", align_corners=False)[0, 0]
    return resized.numpy() >= threshold


def test_the_mask_png_is_the_resized_map_at_the_threshold(batch, tmp_path):
    _, mask, mode = _write(batch, tmp_path)
    expected = _expected_mask(batch["anomaly_maps"], 0.5)
    assert mode == "L" and mask.shape == (HEIGHT, WIDTH)  # the image's size, not the map's
    assert set(np.unique(mask)) == {0, 255}
    np.testing.assert_array_equal(mask == 255, expected)
    assert 0 < expected.sum() < expected.size


def test_raw_maps_use_the_raw_pixel_threshold(batch, tmp_path):
    batch["anomaly_maps"] = _map() * 10  # raw scores from 0.5 to 9.5, threshold 4.0
    _, mask, _ = _write(batch, tmp_path, thresholds=(4.0, 4.0))
    np.testing.assert_array_equal(mask == 255, _expected_mask(batch["anomaly_maps"], 4.0))


def test_the_panel_shows_every_part_at_the_image_resolution(batch, tmp_path):
    panel, mask, _ = _write(batch, tmp_path)
    layout = _layout_of(panel, TITLES)
    width, height = layout.size
    assert width == 5 * WIDTH + 6 * layout.gap and height == layout.header_height + layout.caption_height + HEIGHT + layout.gap
    with Image.open(batch["image_path"][0]) as source:
        image = np.asarray(source.convert("RGB"))
    with Image.open(batch["mask_path"][0]) as truth_file:
        truth = np.asarray(truth_file) > 127
    predicted = mask == 255

    np.testing.assert_array_equal(_tile(panel, layout, 0), image)
    np.testing.assert_array_equal(_tile(panel, layout, 1), np.repeat(truth[..., None] * 255, 3, axis=2))

    heat = _tile(panel, layout, 2).astype(int)
    hot, cold = heat[predicted], heat[~predicted]
    assert (hot[:, 0] > hot[:, 2]).mean() > 0.9  # red-yellow where the map is high
    assert (cold[:, 2] > cold[:, 0]).mean() > 0.9  # blue where it is low

    np.testing.assert_array_equal(_tile(panel, layout, 3), np.repeat(mask[..., None], 3, axis=2))

    contour = _tile(panel, layout, 4)
    border = outline(predicted)
    assert border.any() and (contour[border] == CONTOUR).all()
    np.testing.assert_array_equal(contour[~border], image[~border])  # the image elsewhere, inside too

    # Text: the header and the caption above every tile hold pixels other than the background.
    assert (panel[: layout.header_height] != BACKGROUND).any(axis=2).sum() > 50
    for index in range(5):
        left, _, right, _ = layout.tile_box(index)
        caption = panel[layout.header_height: layout.header_height + layout.caption_height, left:right]
        assert (caption != BACKGROUND).any(), TITLES[index]


def test_without_ground_truth_the_panel_has_four_tiles(batch, tmp_path):
    for key in ("mask_path", "label", "defect_type"):  # what predict's batches lack
        del batch[key]
    panel, mask, _ = _write(batch, tmp_path)
    layout = _layout_of(panel, ("image", "heat map", "predicted mask", "contour"))
    assert layout.size[0] == 4 * WIDTH + 5 * layout.gap
    np.testing.assert_array_equal(_tile(panel, layout, 2), np.repeat(mask[..., None], 3, axis=2))


def test_the_score_and_label_are_written(batch, tmp_path):
    first, _, _ = _write(batch, tmp_path)
    batch["pred_scores"] = torch.tensor([0.12])
    batch["pred_labels"] = torch.tensor([False])
    second, _, _ = _write(batch, tmp_path)
    layout = _layout_of(first, TITLES)
    header = slice(0, layout.header_height)
    assert not np.array_equal(first[header], second[header])
    for index in range(5):
        np.testing.assert_array_equal(_tile(first, layout, index), _tile(second, layout, index))
    # The predicted label is coloured: red for anomalous, green for normal.
    red, green = (first[header].astype(int), second[header].astype(int))
    assert ((red[..., 0] > 200) & (red[..., 1] < 140)).any() and not ((red[..., 1] > 200) & (red[..., 0] < 140)).any()
    assert ((green[..., 1] > 200) & (green[..., 0] < 140)).any()


def test_outline_marks_the_border_of_the_mask():
    mask = np.zeros((9, 9), bool)
    mask[2:7, 2:7] = True
    ring = outline(mask)
    assert ring.sum() == 16 and not ring[3:6, 3:6].any() and ring[2, 2:7].all()
    thick = outline(mask, thickness=2)
    assert thick.sum() == 24 and not thick[4, 4] and not outline(np.zeros((4, 4), bool)).any()


def test_the_caller_batch_is_not_modified(batch, tmp_path):
    before = batch["anomaly_maps"].clone()
    _write(batch, tmp_path)
    assert torch.equal(batch["anomaly_maps"], before)


# --- end to end: what fit and predict write ------------------------------------------------


@pytest.fixture(scope="module")
def fitted(tmp_path_factory):
    output = tmp_path_factory.mktemp("run")
    result = fit_and_test(
        model="padim", output_dir=output, image_size=32, backbone="resnet18", pretrained="none", progress=False,
        model_options={"layers": ("layer1",), "n_features": 16},
    )
    return result, output


def test_fit_writes_a_panel_and_a_mask_per_test_image(fitted):
    result, output = fitted
    test_folder = output / "synthetic" / "carpet_like" / "test"
    images = sorted(p.relative_to(test_folder).as_posix() for p in test_folder.rglob("*.png"))
    for folder in ("heatmaps", "masks"):
        written = sorted(p.relative_to(output / folder).as_posix() for p in (output / folder).rglob("*.png"))
        assert written == [f"{name}.png" for name in images]
    anomalous = next(p for p in sorted(test_folder.glob("hole/*.png")))
    with Image.open(anomalous) as image, Image.open(output / "heatmaps" / "hole" / f"{anomalous.name}.png") as panel:
        assert panel.width == 5 * image.width + 6 * 2 and panel.height > image.height  # with the ground truth
    with Image.open(output / "masks" / "hole" / f"{anomalous.name}.png") as mask:
        assert mask.mode == "L" and mask.size == (32, 32)


def test_predict_writes_panels_at_each_image_size(fitted, tmp_path):
    result, output = fitted
    source = sorted((output / "synthetic" / "carpet_like" / "test" / "hole").glob("*.png"))[0]
    images = tmp_path / "images"
    images.mkdir()
    with Image.open(source) as image:
        image.resize((80, 40)).save(images / "wide.png")
    summary = predict_folder(result.checkpoint, images, tmp_path / "out", progress=False)
    with Image.open(summary["heatmaps"] / "wide.png.png") as panel:
        assert panel.width == 4 * 80 + 5 * 2  # no ground truth in predict
    with Image.open(tmp_path / "out" / "masks" / "wide.png.png") as mask:
        assert mask.size == (80, 40)
