"""What every model does with an image that holds NaN or infinite values: refuse it, by index.

PatchCore, PaDiM and DFKDE all see images through
:meth:`~anomaly_kernels.models.backbone.FrozenBackboneModel.extract_features`, which calls
:func:`check_finite_images`, and check their results with :func:`check_finite_outputs`, so the
three models, on any device, behave alike:

- an image with a NaN or ±inf pixel raises a ValueError naming its index in the batch, before
  the backbone runs;
- a finite image whose values are so large that the computation overflows (|x| around 1e30 in
  float32) raises a ValueError naming its index too, instead of returning a NaN or infinite
  score or map (each model's ``forward`` checks what it returns).

Why an error rather than a NaN score: a NaN score compares False with every threshold, so
``pred_labels`` would call the image normal and ``pred_masks`` would be empty: a corrupted frame
(a dropped sensor line, a division by zero in preprocessing) would pass inspection without a
word, which is the costliest mistake an anomaly detector can make. NaN also poisons what is
computed from the scores (min-max statistics, thresholds, AUROC). An error that names the
images lets the caller drop or re-acquire them and score the rest of the batch; a whole batch
is refused, because no partial result could be returned through the models' API unnoticed.

The input check also guards the training images (a NaN feature would spoil the memory bank,
the Gaussians or the density). The checks read one boolean back to the host (a
synchronisation per check on a GPU); the per-image reductions are cheap next to the backbone.
"""

from __future__ import annotations

from typing import List

import torch


def _bad_images(values: torch.Tensor) -> torch.Tensor:
    """(B,) bool: which entries along the first dimension of ``values`` (B, ...) hold a non-finite value."""
    return ~torch.isfinite(values).reshape(values.shape[0], -1).all(dim=1)


def _indices(bad: torch.Tensor) -> List[int]:
    return bad.nonzero().flatten().tolist()


def _describe(indices: List[int], batch_size: int) -> str:
    which = f"image {indices[0]}" if len(indices) == 1 else f"images {indices}"
    return f"{which} of the batch of {batch_size}"


def check_finite_images(images: torch.Tensor) -> None:
    """Raise a ValueError naming the images (B, 3, H, W) that hold a NaN or infinite value.

    Example:
        >>> images = torch.zeros(3, 3, 4, 4)
        >>> images[2, 0, 1, 1] = float("nan")
        >>> check_finite_images(images)
        Traceback (most recent call last):
        ...
        ValueError: images must be finite: image 2 of the batch of 3 holds NaN or infinite values; drop or repair it and score the others
    """
    bad = _bad_images(images)
    if bool(bad.any()):
        indices = _indices(bad)
        verb, them = ("holds", "it") if len(indices) == 1 else ("hold", "them")
        raise ValueError(
            f"images must be finite: {_describe(indices, images.shape[0])} {verb} NaN or infinite values; "
            f"drop or repair {them} and score the others"
        )


def check_finite_outputs(images: torch.Tensor, *outputs: torch.Tensor) -> None:
    """Raise a ValueError naming the (finite) images whose scores or maps came out non-finite.

    Finite images far outside the normalised range (|x| around 1e30 in float32) overflow inside
    the backbone or the distance computations; the models call this on what they return, so
    no NaN or infinity ever leaves them.

    Args:
        images: the (B, 3, H, W) input, already known to be finite; its largest magnitude is
            quoted in the message.
        outputs: the model's results, each batch-first ((B,) scores, (B, 1, H, W) maps).
    """
    bad = torch.zeros(images.shape[0], dtype=torch.bool, device=images.device)
    for output in outputs:
        bad |= _bad_images(output).to(bad.device)
    if bool(bad.any()):
        indices = _indices(bad)
        largest = float(images[bad].abs().amax())
        verb = "overflows" if len(indices) == 1 else "overflow"
        raise ValueError(
            f"images give non-finite scores: {_describe(indices, images.shape[0])} (largest |value| {largest:.3g}) "
            f"{verb} the model; give normalised images (values of order 1)"
        )
