"""A reviewer's panel of one scored image: image | ground truth | heat map | predicted mask | contour.

Every tile has the image's original resolution (the anomaly map is resized to it, bilinearly),
so a defect can be checked where it is; a header states the score and the predicted (and, when
known, the true) label, and a caption names each tile. The colours are fixed: the heat map runs
from dark blue (normal) through cyan and yellow to red (anomalous), masks are white on black,
and the predicted region's outline is drawn in red on the image.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import List, Optional, Sequence, Tuple

import numpy as np
import torch
import torch.nn.functional as F
from PIL import Image, ImageDraw, ImageFont

# A perceptually ordered dark-blue -> cyan -> yellow -> red ramp (anchor colours, interpolated).
_RAMP = np.array(
    [[0, 0, 96], [0, 64, 255], [0, 200, 255], [96, 255, 128], [255, 230, 0], [255, 96, 0], [200, 0, 0]],
    dtype=np.float32,
)
BACKGROUND = (24, 24, 24)
TEXT = (235, 235, 235)
ANOMALOUS = (255, 90, 70)
NORMAL = (110, 220, 110)
CONTOUR = (255, 0, 0)
# Text height in pixels per image height, and its bounds: readable on 64 px and 1024 px images.
_TEXT_SCALE, _TEXT_MIN, _TEXT_MAX = 1 / 16, 10, 40

# One line of text: (segment, colour) pairs drawn one after the other.
Line = Sequence[Tuple[str, Tuple[int, int, int]]]


def colorize(heat: np.ndarray) -> np.ndarray:
    """(H, W) values in [0, 1] -> (H, W, 3) uint8 colours along the ramp."""
    position = np.clip(heat, 0.0, 1.0) * (len(_RAMP) - 1)
    low = np.floor(position).astype(int).clip(0, len(_RAMP) - 2)
    frac = (position - low)[..., None]
    return (_RAMP[low] * (1 - frac) + _RAMP[low + 1] * frac).round().astype(np.uint8)


def overlay(image: np.ndarray, heat: np.ndarray, alpha: float = 0.45) -> np.ndarray:
    """Blend (H, W, 3) uint8 ``image`` with the colourised (H, W) ``heat`` in [0, 1]."""
    coloured = colorize(heat).astype(np.float32)
    return (image.astype(np.float32) * (1 - alpha) + coloured * alpha).round().astype(np.uint8)


def resize_map(anomaly_map: torch.Tensor, size: Tuple[int, int]) -> np.ndarray:
    """An (h, w) anomaly map resized bilinearly to ``size`` = (H, W): (H, W) float32."""
    resized = F.interpolate(anomaly_map.detach().float().cpu()[None, None], size=size, mode="bilinear",
                            align_corners=False)
    return resized[0, 0].numpy()


def outline(mask: np.ndarray, thickness: int = 1) -> np.ndarray:
    """(H, W) bool: the pixels of ``mask`` (H, W) bool within ``thickness`` of its border.

    A pixel is on the border when one of its four neighbours is outside the mask; the image
    edge does not count as outside, so a mask touching the edge is not outlined there.

    Example:
        >>> mask = np.zeros((5, 5), bool); mask[1:4, 1:4] = True
        >>> outline(mask).astype(int)[2]
        array([0, 1, 0, 1, 0])
    """
    inner = mask.copy()
    for _ in range(thickness):
        padded = np.pad(inner, 1, mode="edge")
        inner = inner & padded[:-2, 1:-1] & padded[2:, 1:-1] & padded[1:-1, :-2] & padded[1:-1, 2:]
    return mask & ~inner


def _font(size: int) -> ImageFont.ImageFont:
    # Pillow's own font, scalable where Pillow has FreeType (its wheels do); bitmap otherwise.
    return ImageFont.load_default(size=size)


def _text_width(font: ImageFont.ImageFont, text: str) -> float:
    return font.getlength(text)


def _line_height(font: ImageFont.ImageFont) -> int:
    ascent, descent = font.getmetrics()
    return int(ascent + descent) + 2


def _wrap(text: str, font: ImageFont.ImageFont, width: int) -> List[str]:
    """``text`` broken at spaces into lines no wider than ``width`` (a single long word stays whole)."""
    lines: List[str] = []
    for word in text.split():
        if lines and _text_width(font, f"{lines[-1]} {word}") <= width:
            lines[-1] = f"{lines[-1]} {word}"
        else:
            lines.append(word)
    return lines


@dataclass(frozen=True)
class PanelLayout:
    """Where the parts of a panel go: a header, then a caption row, then the tiles side by side.

    Attributes:
        tile_size: (width, height) of every tile: the image's original size.
        titles: one caption per tile, left to right.
        gap: pixels between tiles and around the panel's edge.
        caption_width: the width a caption line may take (a tile less two gaps).
        header_height, caption_height: heights of the text bands above the tiles.
        font_size: size of the header's and captions' text.
    """

    tile_size: Tuple[int, int]
    titles: Tuple[str, ...]
    gap: int
    caption_width: int
    header_height: int
    caption_height: int
    font_size: int

    @property
    def size(self) -> Tuple[int, int]:
        """(width, height) of the whole panel."""
        width, height = self.tile_size
        count = len(self.titles)
        return count * width + (count + 1) * self.gap, self.header_height + self.caption_height + height + self.gap

    def tile_box(self, index: int) -> Tuple[int, int, int, int]:
        """(left, top, right, bottom) of tile ``index`` (right and bottom exclusive)."""
        width, height = self.tile_size
        left = self.gap + index * (width + self.gap)
        top = self.header_height + self.caption_height
        return left, top, left + width, top + height


def panel_layout(image_size: Tuple[int, int], titles: Sequence[str], header_lines: Sequence[str]) -> PanelLayout:
    """The layout of a panel of ``titles`` tiles of ``image_size`` = (width, height).

    The text size follows the image height (1/16 of it, 10 to 40 px) and shrinks until every
    header line fits the panel's width and every caption word fits a tile.
    """
    width, height = image_size
    gap = max(2, min(width, height) // 64)
    panel_width = len(titles) * width + (len(titles) + 1) * gap
    caption_width = width - 2 * gap  # keeps neighbouring captions apart
    size = int(min(_TEXT_MAX, max(_TEXT_MIN, round(height * _TEXT_SCALE))))
    while size > 6:
        font = _font(size)
        fits_header = all(_text_width(font, line) <= panel_width - 2 * gap for line in header_lines)
        fits_tiles = all(_text_width(font, word) <= caption_width for title in titles for word in title.split())
        if fits_header and fits_tiles:
            break
        size -= 1
    font = _font(size)
    caption_lines = max(len(_wrap(title, font, caption_width)) for title in titles)
    return PanelLayout(
        tile_size=(width, height), titles=tuple(titles), gap=gap, caption_width=caption_width,
        header_height=gap + len(header_lines) * _line_height(font),
        caption_height=caption_lines * _line_height(font) + gap, font_size=size,
    )


def render_panel(
    image: np.ndarray,
    heat: np.ndarray,
    mask: np.ndarray,
    header: Sequence[Line],
    truth: Optional[np.ndarray] = None,
) -> Image.Image:
    """Draw the panel of one image.

    Args:
        image: (H, W, 3) uint8, the image at its original resolution.
        heat: (H, W) anomaly map for display, in [0, 1] (0.5 at the threshold for normalised maps).
        mask: (H, W) bool, the predicted anomalous pixels.
        header: the lines written above the tiles (score, labels, name).
        truth: (H, W) bool ground-truth mask, or ``None`` to leave its tile out.

    Returns:
        An RGB image of :func:`panel_layout`'s size: tiles image, ground truth (when given),
        heat map over the image, predicted mask, predicted outline over the image.
    """
    height, width = mask.shape
    thickness = max(1, round(min(height, width) / 256))
    contour = image.copy()
    contour[outline(mask, thickness)] = CONTOUR
    tiles = [("image", image)]
    if truth is not None:
        tiles.append(("ground truth", _binary(truth)))
    tiles += [("heat map", overlay(image, heat)), ("predicted mask", _binary(mask)), ("contour", contour)]

    header_text = ["".join(segment for segment, _ in line) for line in header]
    layout = panel_layout((width, height), [title for title, _ in tiles], header_text)
    panel = Image.new("RGB", layout.size, BACKGROUND)
    draw = ImageDraw.Draw(panel)
    font = _font(layout.font_size)
    line_height = _line_height(font)
    for row, line in enumerate(header):
        x, y = float(layout.gap), layout.gap + row * line_height
        for segment, colour in line:
            draw.text((x, y), segment, fill=colour, font=font)
            x += _text_width(font, segment)
    for index, (title, tile) in enumerate(tiles):
        left, top, _, _ = layout.tile_box(index)
        for row, text in enumerate(_wrap(title, font, layout.caption_width)):
            draw.text((left, layout.header_height + row * line_height), text, fill=TEXT, font=font)
        panel.paste(Image.fromarray(tile), (left, top))
    return panel


def _binary(mask: np.ndarray) -> np.ndarray:
    """(H, W) bool -> (H, W, 3) uint8, white where True, black elsewhere."""
    return np.repeat((mask.astype(np.uint8) * 255)[..., None], 3, axis=2)
