"""Visible defects for the synthetic anomaly dataset, each with the exact set of pixels it changes.

A :class:`Defect` is a drawn shape (``region``, (H, W) bool) and a per-pixel affine colour
change ``clip(old * gain + shift, low, high)``, where ``[low, high]`` is the per-channel colour
range of the image the defect is drawn on. Keeping defect colours inside the image's own range
means a defect never creates a value darker or brighter than the texture already holds, so the
per-channel minimum and maximum of an image do not give it away.

:meth:`Defect.apply` changes only the region pixels whose change reaches :data:`MIN_CHANGE` in
at least one channel (about 20 grey levels in 8 bits); region pixels without room for such a
change (e.g. a dark hole over the darkest part of the texture) are left as they were. The mask
it returns is exactly the set of changed pixels, also after quantisation to 8 bits.

Defect types (sizes are fractions of the shorter image side ``s``):
    ``scratch``: a thin curved line (quadratic Bézier, 25-55 % of ``s`` long, about 1-2.5 px
        wide at 128 px, wider on larger images), brighter or darker than the surface, with a contrast that varies along it; it
        flips to the other polarity where the surface leaves no room (reversible).
    ``hole``: a slightly irregular ellipse (semi-axis 5-9 % of ``s``) filled with the darkest
        colour of the image's range, surrounded by a brighter rim 1-2 % of ``s`` (at least
        1 px) wide.
    ``stain``: a soft irregular blob (radius 8-15 % of ``s``) blended 60-90 % (strongest in
        its centre) towards a corner of the image's colour range far from the colour it
        covers: another hue, lighter or darker.
    ``color_spot``: a cluster of 1-3 small discs (radius 2.5-5 % of ``s``, at least 2 px) of a
        saturated colour: one channel near the top of its range and the others near the
        bottom, or the reverse.
"""

from __future__ import annotations

import math
from dataclasses import dataclass
from typing import Callable, Dict, Optional, Tuple

import numpy as np

from anomaly_kernels.data.textures import value_noise

MIN_CHANGE = 0.08


@dataclass(frozen=True)
class Defect:
    """A defect: the shape it is drawn in and how it changes the colours there.

    Attributes:
        region: (H, W) bool, the drawn shape.
        gain: (H, W, 3) float32, multiplicative part of the change (1 outside the region).
        shift: (H, W, 3) float32, additive part of the change (0 outside the region).
        reversible: where the change has no room (the colour is already near the end of the
            range it pushes towards), apply the opposite change instead: a bright scratch turns
            dark over the brightest parts of the texture rather than vanishing there.
    """

    region: np.ndarray
    gain: np.ndarray
    shift: np.ndarray
    reversible: bool = False

    def apply(
        self, image: np.ndarray, low: Optional[np.ndarray] = None, high: Optional[np.ndarray] = None
    ) -> Tuple[np.ndarray, np.ndarray]:
        """Draw the defect into a copy of ``image`` (H, W, 3) float in [0, 1].

        ``low`` / ``high`` (3,): the per-channel minimum / maximum of ``image``, when the caller
        has them already; computed otherwise.

        Returns:
            ``(defective, mask)``: the defective image (H, W, 3), equal to ``image`` outside
            ``mask``; and ``mask`` (H, W) bool, the region pixels whose largest channel change
            is at least :data:`MIN_CHANGE`. Inside the mask the colour is
            ``clip(image + change, low, high)``, with ``change = image * (gain - 1) + shift``
            and ``low`` / ``high`` (3,) the per-channel minimum / maximum of ``image``; for a
            reversible defect, ``clip(image - change, low, high)`` where the first is too small.
        """
        low = image.min(axis=(0, 1)) if low is None else low
        high = image.max(axis=(0, 1)) if high is None else high
        change = image * (self.gain - 1) + self.shift
        changed = np.clip(image + change, low, high)
        if self.reversible:
            opposite = np.clip(image - change, low, high)
            too_small = np.abs(changed - image).max(axis=2, keepdims=True) < MIN_CHANGE
            changed = np.where(too_small, opposite, changed)
        mask = self.region & (np.abs(changed - image).max(axis=2) >= MIN_CHANGE)
        return np.where(mask[..., None], changed, image).astype(image.dtype, copy=False), mask


def _pixel_grid(height: int, width: int) -> Tuple[np.ndarray, np.ndarray]:
    """Pixel-centre coordinates ``(y (H, 1), x (1, W))`` as float32."""
    return (
        np.arange(height, dtype=np.float32)[:, None],
        np.arange(width, dtype=np.float32)[None, :],
    )


def _centre(rng: np.random.Generator, height: int, width: int, margin: float) -> Tuple[float, float]:
    """A random point ``(y, x)`` at least ``margin`` pixels inside the image (clamped to the middle)."""
    margin_y = min(margin, (height - 1) / 2)
    margin_x = min(margin, (width - 1) / 2)
    return rng.uniform(margin_y, height - 1 - margin_y), rng.uniform(margin_x, width - 1 - margin_x)


def _elliptic_radius(
    y: np.ndarray, x: np.ndarray, centre: Tuple[float, float], axes: Tuple[float, float], angle: float
) -> np.ndarray:
    """Normalised elliptic radius (H, W): 1 on the ellipse of semi-axes ``axes`` rotated by ``angle``."""
    dy, dx = y - np.float32(centre[0]), x - np.float32(centre[1])
    cos, sin = np.float32(math.cos(angle)), np.float32(math.sin(angle))
    along = (cos * dx + sin * dy) / np.float32(axes[0])
    across = (-sin * dx + cos * dy) / np.float32(axes[1])
    return np.sqrt(along * along + across * across)


def _defect(region: np.ndarray, gain: np.ndarray, shift: np.ndarray, reversible: bool = False) -> Defect:
    """Broadcast ``gain`` / ``shift`` to (H, W, 3) and neutralise them outside ``region``."""
    height, width = region.shape
    gain = np.broadcast_to(np.asarray(gain, dtype=np.float32), (height, width, 3))
    shift = np.broadcast_to(np.asarray(shift, dtype=np.float32), (height, width, 3))
    inside = region[..., None]
    return Defect(
        region=region,
        gain=np.where(inside, gain, np.float32(1.0)).astype(np.float32),
        shift=np.where(inside, shift, np.float32(0.0)).astype(np.float32),
        reversible=reversible,
    )


def scratch(rng: np.random.Generator, image: np.ndarray) -> Defect:
    """A thin curved bright or dark line for ``image`` (H, W, 3); see the module doc."""
    height, width = image.shape[:2]
    side = min(height, width)
    length = rng.uniform(0.25, 0.55) * side
    direction = rng.uniform(0.0, math.pi)
    centre = np.array(_centre(rng, height, width, margin=0.3 * side))
    along = np.array([math.sin(direction), math.cos(direction)])
    across = np.array([along[1], -along[0]])
    start = centre - along * length / 2
    end = centre + along * length / 2
    control = centre + across * rng.uniform(-0.3, 0.3) * length
    steps = max(16, int(length))
    t = np.linspace(0.0, 1.0, steps)[:, None]
    curve = ((1 - t) ** 2 * start + 2 * (1 - t) * t * control + t**2 * end).astype(np.float32)
    half_width = max(0.55, rng.uniform(0.5, 1.2) * side / 128.0)

    # Distances are computed only in the curve's bounding box: the full image times every
    # segment would be large for big images.
    reach = half_width + 1.0
    top = max(int(math.floor(curve[:, 0].min() - reach)), 0)
    bottom = min(int(math.ceil(curve[:, 0].max() + reach)) + 1, height)
    left = max(int(math.floor(curve[:, 1].min() - reach)), 0)
    right = min(int(math.ceil(curve[:, 1].max() + reach)) + 1, width)
    ys, xs = np.mgrid[top:bottom, left:right].astype(np.float32)
    points = np.stack([ys.ravel(), xs.ravel()], axis=1)[:, None, :]  # (P, 1, 2)
    seg_start, seg_vector = curve[:-1][None], (curve[1:] - curve[:-1])[None]  # (1, S, 2)
    seg_length2 = np.maximum((seg_vector**2).sum(-1), np.float32(1e-12))
    position = np.clip(((points - seg_start) * seg_vector).sum(-1) / seg_length2, 0.0, 1.0)
    offset = points - (seg_start + position[..., None] * seg_vector)
    distance = np.sqrt((offset**2).sum(-1))  # (P, S)
    nearest = distance.argmin(axis=1)
    box_mask = distance[np.arange(len(nearest)), nearest] <= half_width

    mask = np.zeros((height, width), dtype=bool)
    mask[top:bottom, left:right] = box_mask.reshape(ys.shape)
    # The contrast varies along the scratch (by curve parameter) between 0.3 and 0.6.
    strength = np.zeros((height, width), dtype=np.float32)
    along_curve = (nearest + position[np.arange(len(nearest)), nearest]) / (steps - 1)
    wobble = 0.3 + 0.15 * (1 + np.sin(2 * math.pi * (along_curve * rng.uniform(1.0, 3.0) + rng.uniform())))
    strength[top:bottom, left:right] = wobble.reshape(ys.shape)
    sign = 1.0 if rng.random() < 0.5 else -1.0
    return _defect(mask, 1.0, (sign * strength)[..., None], reversible=True)


def hole(rng: np.random.Generator, image: np.ndarray) -> Defect:
    """A dark irregular ellipse with a bright rim for ``image`` (H, W, 3); see the module doc."""
    height, width = image.shape[:2]
    side = min(height, width)
    major = rng.uniform(0.05, 0.09) * side
    axes = (major, major * rng.uniform(0.6, 1.0))
    angle = rng.uniform(0.0, math.pi)
    rim = max(1.0, rng.uniform(0.01, 0.02) * side)
    centre = _centre(rng, height, width, margin=major + rim + 1.0)
    y, x = _pixel_grid(height, width)
    radius = _elliptic_radius(y, x, centre, axes, angle)
    # Irregular outline: the radius is modulated by a few lobes around the centre.
    theta = np.arctan2(y - np.float32(centre[0]), x - np.float32(centre[1]))
    lobes = int(rng.integers(3, 6))
    radius = radius * (1 + np.float32(0.12) * np.sin(lobes * theta + np.float32(rng.uniform(0.0, 2 * math.pi))))
    interior = radius <= 1.0
    rim_mask = (radius > 1.0) & (radius <= 1.0 + rim / axes[1])
    darkness = rng.uniform(0.1, 0.2)
    brightness = rng.uniform(0.25, 0.35)
    gain = np.where(interior, np.float32(darkness), np.float32(1.0))[..., None]
    shift = np.where(rim_mask, np.float32(brightness), np.float32(0.0))[..., None]
    return _defect(interior | rim_mask, gain, shift)


def _range_colour(image: np.ndarray, fractions: np.ndarray) -> np.ndarray:
    """Colours at ``fractions`` (..., 3) of the per-channel range of ``image`` (H, W, 3)."""
    low, high = image.min(axis=(0, 1)), image.max(axis=(0, 1))
    return (low + (high - low) * fractions).astype(np.float32)


# Corners of the colour range box, pulled 10 % inwards so a blend keeps some texture.
_RANGE_CORNERS = np.array([[r, g, b] for r in (0.1, 0.9) for g in (0.1, 0.9) for b in (0.1, 0.9)])


def stain(rng: np.random.Generator, image: np.ndarray) -> Defect:
    """A soft irregular blob blended towards another colour, for ``image`` (H, W, 3); see the module doc."""
    height, width = image.shape[:2]
    side = min(height, width)
    size = rng.uniform(0.08, 0.15) * side
    axes = (size, size * rng.uniform(0.6, 1.0))
    angle = rng.uniform(0.0, math.pi)
    centre = _centre(rng, height, width, margin=size * 1.2 + 1.0)
    y, x = _pixel_grid(height, width)
    radius = _elliptic_radius(y, x, centre, axes, angle)
    yy, xx = np.broadcast_arrays(y, x)
    # A smooth random field bends the outline; at the centre the radius stays below 0.2.
    radius = radius + np.float32(0.4) * (value_noise(rng, xx, yy, max(size / 2, 2.0)) - np.float32(0.5))
    region = radius <= 1.0
    # The stain colour: a corner of the image's colour range far from the colour it covers
    # (any corner at least 60 % as far as the farthest), so it reads as a different colour.
    corners = _range_colour(image, _RANGE_CORNERS)
    distance = np.linalg.norm(corners - image[region].mean(axis=0), axis=1)
    target = corners[rng.choice(np.flatnonzero(distance >= 0.6 * distance.max()))]
    # Soft: the blend is strongest in the middle and fades to 60 % at the outline.
    alpha = (0.6 + 0.3 * (1 - np.clip(radius, 0.0, 1.0) ** 2))[..., None]
    return _defect(region, 1 - alpha, alpha * target)


def color_spot(rng: np.random.Generator, image: np.ndarray) -> Defect:
    """A cluster of small discs of a saturated colour, for ``image`` (H, W, 3); see the module doc."""
    height, width = image.shape[:2]
    side = min(height, width)
    cluster_centre = _centre(rng, height, width, margin=0.18 * side)
    y, x = _pixel_grid(height, width)
    region = np.zeros((height, width), dtype=bool)
    for _ in range(int(rng.integers(1, 4))):
        spot_radius = max(2.0, rng.uniform(0.025, 0.05) * side)
        offset = rng.uniform(-0.08, 0.08, size=2) * side
        cy, cx = cluster_centre[0] + offset[0], cluster_centre[1] + offset[1]
        region |= (y - np.float32(cy)) ** 2 + (x - np.float32(cx)) ** 2 <= np.float32(spot_radius**2)
    # One channel at the top of its range and the others at the bottom, or the reverse: the
    # most saturated colours the image's range allows.
    fractions = np.full(3, 0.05)
    fractions[int(rng.integers(0, 3))] = 0.95
    if rng.random() < 0.5:
        fractions = 1 - fractions
    return _defect(region, 0.0, _range_colour(image, fractions))


DEFECT_FAMILIES: Dict[str, Callable[[np.random.Generator, np.ndarray], Defect]] = {
    "scratch": scratch,
    "hole": hole,
    "stain": stain,
    "color_spot": color_spot,
}
DEFECT_TYPES: Tuple[str, ...] = tuple(DEFECT_FAMILIES)


def make_defect(name: str, rng: np.random.Generator, image: np.ndarray) -> Defect:
    """Draw one defect of type ``name`` for ``image`` (H, W, 3) float in [0, 1].

    The image gives the size, and the colour range and local colour that stains and colour
    spots are coloured from; the defect is drawn by :meth:`Defect.apply`.

    Raises:
        ValueError: unknown defect type, or ``image`` not of shape (H, W, 3).
    """
    if name not in DEFECT_FAMILIES:
        raise ValueError(f"defect type must be one of {list(DEFECT_TYPES)}, got {name!r}")
    if image.ndim != 3 or image.shape[2] != 3:
        raise ValueError(f"image must be (H, W, 3), got shape {image.shape}")
    return DEFECT_FAMILIES[name](rng, image)
