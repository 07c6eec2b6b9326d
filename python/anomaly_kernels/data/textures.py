"""Procedural texture families for the synthetic anomaly dataset.

Every family is a function ``(rng, height, width) -> (H, W, 3) float32`` with values in
[:data:`TEXTURE_LOW`, :data:`TEXTURE_HIGH`]: a grey-level pattern ``L`` in [0, 1] mapped between a
dark and a light colour of the family's palette. Each call draws its own variation from ``rng``:
noise fields, pattern phase and period, a small rotation and shift of the pattern, and a small
jitter of the palette, so no two images are the same while all look like one product.

Patterns are defined in "reference pixels" of a :data:`REFERENCE_SIZE`-pixel image, so an image of
another size shows the same pattern scaled, not a crop of it.

Families:
    ``carpet_like``: a fine woven grid under fibre noise and large, soft blotches (reddish-brown).
    ``grid_like``: a regular, slightly rotated mesh of dark lines on a light metallic grey.
    ``wood_like``: warped growth-ring stripes with fine grain stretched along them (brown).
    ``leather_like``: soft blobs, pores and a network of thin dark creases (tan).
"""

from __future__ import annotations

import math
from typing import Callable, Dict, Tuple

import numpy as np

REFERENCE_SIZE = 128.0
TEXTURE_LOW = 0.22
TEXTURE_HIGH = 0.78

Texture = Callable[[np.random.Generator, int, int], np.ndarray]


def texture_coordinates(
    rng: np.random.Generator, height: int, width: int, max_rotation_deg: float, shift: float
) -> Tuple[np.ndarray, np.ndarray]:
    """Pattern coordinates ``(u, v)``, each (H, W) float32, in reference pixels.

    The pixel grid is centred, scaled to reference pixels, rotated by a random angle in
    ``[-max_rotation_deg, max_rotation_deg]`` and shifted by a random offset in ``[0, shift)``
    along each axis.
    """
    scale = REFERENCE_SIZE / max(height, width)
    ys = ((np.arange(height, dtype=np.float32) - (height - 1) / 2) * scale)[:, None]
    xs = ((np.arange(width, dtype=np.float32) - (width - 1) / 2) * scale)[None, :]
    angle = math.radians(rng.uniform(-max_rotation_deg, max_rotation_deg))
    cos, sin = np.float32(math.cos(angle)), np.float32(math.sin(angle))
    shift_u, shift_v = (np.float32(value) for value in rng.uniform(0.0, shift, size=2))
    u = cos * xs - sin * ys + shift_u
    v = sin * xs + cos * ys + shift_v
    return u, v


def value_noise(rng: np.random.Generator, u: np.ndarray, v: np.ndarray, cell: float) -> np.ndarray:
    """Smooth random field in [0, 1] sampled at ``(u, v)`` (same shape): value noise with ``cell`` spacing.

    Random values on a lattice of spacing ``cell`` covering the coordinates are interpolated
    bilinearly with smoothstep weights, which hides the lattice's straight seams.
    """
    grid_u = (u - u.min()) / np.float32(cell)
    grid_v = (v - v.min()) / np.float32(cell)
    index_u = grid_u.astype(np.int64)
    index_v = grid_v.astype(np.int64)
    lattice = rng.random((int(index_v.max()) + 2, int(index_u.max()) + 2), dtype=np.float32)
    frac_u = grid_u - index_u
    frac_v = grid_v - index_v
    frac_u = frac_u * frac_u * (3 - 2 * frac_u)
    frac_v = frac_v * frac_v * (3 - 2 * frac_v)
    top = lattice[index_v, index_u] * (1 - frac_u) + lattice[index_v, index_u + 1] * frac_u
    bottom = lattice[index_v + 1, index_u] * (1 - frac_u) + lattice[index_v + 1, index_u + 1] * frac_u
    return top * (1 - frac_v) + bottom * frac_v


def fractal_noise(rng: np.random.Generator, u: np.ndarray, v: np.ndarray, cells: Tuple[float, ...]) -> np.ndarray:
    """Weighted sum of value noise at several cell sizes (weights halve per octave), in [0, 1]."""
    weights = [0.5**octave for octave in range(len(cells))]
    total = sum(value_noise(rng, u, v, cell) * np.float32(weight) for cell, weight in zip(cells, weights))
    return total / np.float32(sum(weights))


def _stretch(field: np.ndarray, centre: float, gain: float) -> np.ndarray:
    """Spread a noise field concentrated around ``centre`` over [0, 1] (clipped)."""
    return np.clip((field - np.float32(centre)) * np.float32(gain) + np.float32(0.5), 0.0, 1.0)


def colourise(
    rng: np.random.Generator, level: np.ndarray, dark: Tuple[float, float, float], light: Tuple[float, float, float]
) -> np.ndarray:
    """Map a grey level (H, W) in [0, 1] to colours (H, W, 3) between a jittered dark and light colour.

    The palette is jittered by up to ±0.02 per channel and clipped to
    [TEXTURE_LOW, TEXTURE_HIGH], so the result stays in that range.
    """
    jitter = rng.uniform(-0.02, 0.02, size=(2, 3))
    low = np.clip(np.asarray(dark) + jitter[0], TEXTURE_LOW, TEXTURE_HIGH).astype(np.float32)
    high = np.clip(np.asarray(light) + jitter[1], TEXTURE_LOW, TEXTURE_HIGH).astype(np.float32)
    level = np.clip(level, 0.0, 1.0)[..., None]
    return low + level * (high - low)


def carpet_like(rng: np.random.Generator, height: int, width: int) -> np.ndarray:
    """Woven carpet: fine crossed weave, fibre noise and soft blotches; (H, W, 3) float32."""
    u, v = texture_coordinates(rng, height, width, max_rotation_deg=6.0, shift=8.0)
    period = np.float32(rng.uniform(4.6, 5.4))
    weave = 0.5 + 0.5 * np.sin(np.float32(2 * math.pi) * u / period) * np.sin(np.float32(2 * math.pi) * v / period)
    fibres = _stretch(fractal_noise(rng, u, v, (2.0, 1.0)), 0.5, 2.5)
    blotches = _stretch(fractal_noise(rng, u, v, (28.0, 14.0)), 0.5, 2.0)
    level = 0.35 * weave + 0.35 * fibres + 0.30 * blotches
    return colourise(rng, level, dark=(0.36, 0.28, 0.25), light=(0.76, 0.58, 0.50))


def grid_like(rng: np.random.Generator, height: int, width: int) -> np.ndarray:
    """Metal mesh: a regular grid of dark lines on light grey with faint noise; (H, W, 3) float32."""
    period = rng.uniform(10.0, 12.0)
    u, v = texture_coordinates(rng, height, width, max_rotation_deg=5.0, shift=period)
    period = np.float32(period)
    half_width = np.float32(rng.uniform(1.4, 1.8))

    def line_profile(coordinate: np.ndarray) -> np.ndarray:
        # Distance to the nearest line, turned into a 1-pixel soft edge so lines do not alias.
        distance = np.abs(np.mod(coordinate, period) - period / 2)
        return np.clip(half_width + 0.5 - distance, 0.0, 1.0)

    lines = np.maximum(line_profile(u), line_profile(v))
    noise = fractal_noise(rng, u, v, (6.0, 2.0)) - 0.5
    level = 0.85 - 0.6 * lines + 0.35 * noise
    return colourise(rng, level, dark=(0.26, 0.26, 0.28), light=(0.74, 0.74, 0.71))


def wood_like(rng: np.random.Generator, height: int, width: int) -> np.ndarray:
    """Wood: warped growth-ring stripes with fine grain along them; (H, W, 3) float32."""
    u, v = texture_coordinates(rng, height, width, max_rotation_deg=8.0, shift=16.0)
    period = np.float32(rng.uniform(9.0, 13.0))
    phase = np.float32(rng.uniform(0.0, 2 * math.pi))
    warp = np.float32(10.0) * (fractal_noise(rng, u, v, (48.0, 24.0)) - 0.5)
    rings = 0.5 + 0.5 * np.sin(np.float32(2 * math.pi) * (v + warp) / period + phase)
    rings = rings * np.sqrt(rings)
    # Grain: value noise on coordinates stretched 16x along the stripes.
    grain = _stretch(value_noise(rng, u / np.float32(16.0), v, 1.0), 0.5, 1.5)
    level = 0.2 + 0.55 * rings + 0.3 * (grain - 0.5)
    return colourise(rng, level, dark=(0.42, 0.28, 0.23), light=(0.78, 0.58, 0.40))


def leather_like(rng: np.random.Generator, height: int, width: int) -> np.ndarray:
    """Leather: soft blobs, pores and a network of thin dark creases; (H, W, 3) float32."""
    u, v = texture_coordinates(rng, height, width, max_rotation_deg=180.0, shift=16.0)
    blobs = _stretch(fractal_noise(rng, u, v, (12.0, 6.0)), 0.5, 2.0)
    pores = value_noise(rng, u, v, 1.5)
    crease_field = fractal_noise(rng, u, v, (10.0, 5.0))
    # Creases: the thin band where a smooth field crosses its middle value.
    creases = np.clip(1.0 - np.abs(crease_field - 0.5) * 14.0, 0.0, 1.0)
    level = 0.3 + 0.4 * blobs + 0.3 * (pores - 0.5) - 0.35 * creases
    return colourise(rng, level, dark=(0.40, 0.30, 0.24), light=(0.76, 0.62, 0.50))


TEXTURE_FAMILIES: Dict[str, Texture] = {
    "carpet_like": carpet_like,
    "grid_like": grid_like,
    "wood_like": wood_like,
    "leather_like": leather_like,
}


def render_texture(name: str, rng: np.random.Generator, height: int, width: int) -> np.ndarray:
    """Render one image of texture family ``name``: (H, W, 3) float32 in [TEXTURE_LOW, TEXTURE_HIGH].

    Raises:
        ValueError: unknown family.
    """
    if name not in TEXTURE_FAMILIES:
        raise ValueError(f"texture must be one of {sorted(TEXTURE_FAMILIES)}, got {name!r}")
    return TEXTURE_FAMILIES[name](rng, height, width)
