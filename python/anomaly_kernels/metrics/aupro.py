"""AUPRO: area under the per-region-overlap curve up to a false-positive-rate limit (MVTec AD)."""

from __future__ import annotations

import warnings
from typing import Any

import torch

from anomaly_kernels.metrics._inputs import check_binary_target, check_scores
from anomaly_kernels.metrics.connected_regions import connected_components
from anomaly_kernels.metrics.threshold_curve import ThresholdCurveMetric


def _as_batch_of_maps(tensor: torch.Tensor, name: str) -> torch.Tensor:
    """(B, 1, H, W) or (B, H, W) → (B, H, W) view; anything else is a ValueError naming ``name``."""
    if tensor.dim() == 4 and tensor.shape[1] == 1:
        return tensor[:, 0]
    if tensor.dim() == 3:
        return tensor
    raise ValueError(f"{name} must be (B, 1, H, W) or (B, H, W), got shape {tuple(tensor.shape)}")


class AUPRO(ThresholdCurveMetric):
    """Area under the per-region overlap (PRO) curve, normalised, up to ``fpr_limit`` (Bergmann et al.).

    Ground truth: each connected region (8-connectivity) of each mask is one defect. For a
    threshold ``t``, the overlap of a region is the fraction of its pixels with ``score >= t``;
    ``PRO(t)`` is the mean overlap over all regions of all images. The x-axis is the
    false-positive rate ``FPR(t)``: the fraction of normal pixels (mask 0, in every image) with
    ``score >= t``. The curve runs from (0, 0) through every candidate threshold, from the highest
    to the lowest; ``compute`` integrates PRO over FPR with the trapezoidal rule up to
    ``fpr_limit`` (PRO interpolated linearly at the limit) and divides by ``fpr_limit``, so a
    perfect detector scores 1.

    Since ``PRO(t) = (1/R) · sum over region pixels p with score >= t of 1 / |region(p)|``, the
    metric needs no per-region storage: each anomalous pixel is a positive sample of weight
    ``1 / |region|``. Exact mode keeps every pixel (thresholds = distinct scores); binned mode
    (``num_bins`` set) keeps a fixed-size histogram, whose candidate thresholds are the smallest
    score of each bin, with exact FPR and PRO at each.

    ``update(preds, target)``: anomaly maps (B, 1, H, W) or (B, H, W) and masks of the same
    shape (either form); masks hold 0 and 1. Regions are labelled per image in torch (see
    :func:`~anomaly_kernels.metrics.connected_regions.connected_components`).

    Without any region, or without any normal pixel, the curve is undefined: ``compute`` warns
    and returns 0.

    Args:
        fpr_limit: upper FPR bound of the integration, in (0, 1]; 0.3 as in MVTec AD.
        num_bins: ``None`` (exact) or the histogram size of binned mode (≥ 2).
        **kwargs: passed to :class:`torchmetrics.Metric`.

    Example:
        >>> aupro = AUPRO()
        >>> masks = torch.zeros(1, 1, 4, 4); masks[0, 0, :2, :2] = 1
        >>> aupro.update(masks * 2 + 0.1, masks)  # regions score above every normal pixel
        >>> aupro.compute()
        tensor(1.)
    """

    higher_is_better = True

    def __init__(self, fpr_limit: float = 0.3, num_bins: int | None = None, **kwargs: Any) -> None:
        super().__init__(num_bins=num_bins, **kwargs)
        if isinstance(fpr_limit, bool) or not isinstance(fpr_limit, (int, float)):
            raise TypeError(f"fpr_limit must be a real number in (0, 1], got {fpr_limit!r}")
        if not 0 < fpr_limit <= 1:
            raise ValueError(f"fpr_limit must be in (0, 1], got {fpr_limit}")
        self.fpr_limit = float(fpr_limit)
        self.add_state("region_count", default=torch.tensor(0, dtype=torch.int64), dist_reduce_fx="sum")

    def update(self, preds: torch.Tensor, target: torch.Tensor) -> None:
        """Collect anomaly maps and their masks, labelling the connected regions of each mask.

        Args:
            preds: (B, 1, H, W) or (B, H, W) anomaly maps.
            target: (B, 1, H, W) or (B, H, W) masks with values 0 and 1.

        Raises:
            TypeError: non-tensor or non-real input.
            ValueError: wrong dimensions, other shapes, NaN/infinite scores or mask values outside {0, 1}.
        """
        check_scores(preds)
        maps = _as_batch_of_maps(preds, "preds")
        if not isinstance(target, torch.Tensor):
            raise TypeError(f"target must be a torch.Tensor of masks, got {type(target).__name__}")
        masks = _as_batch_of_maps(target, "target")
        if masks.shape != maps.shape:
            raise ValueError(
                f"preds and target must show the same (B, H, W) maps, got shapes {tuple(preds.shape)} "
                f"and {tuple(target.shape)}"
            )
        check_binary_target(masks, maps)
        regions, count = connected_components(masks.detach().to(maps.device))
        region_size = torch.bincount(regions.flatten(), minlength=count + 1).to(torch.float64)
        # Background (region 0) gets weight 0 = normal pixel; region pixels weigh 1 / |region|.
        weight_of_region = torch.cat([region_size.new_zeros(1), 1.0 / region_size[1:]])
        self._collect(maps, weight_of_region[regions.flatten()])
        self.region_count = self.region_count + count

    def compute(self) -> torch.Tensor:
        """Return the 0-dim float32 normalised area under the PRO curve up to ``fpr_limit``.

        Raises:
            RuntimeError: nothing was collected.
        """
        curve = self._curve()
        regions, normal_pixels = int(self.region_count.sum()), float(curve.negative[-1])
        if regions == 0 or normal_pixels == 0:
            warnings.warn(
                f"AUPRO is undefined with {regions} anomalous regions and {int(normal_pixels)} normal pixels; "
                "returning 0.",
                UserWarning,
                stacklevel=2,
            )
            return torch.tensor(0.0)
        zero = curve.positive.new_zeros(1)
        fpr = torch.cat([zero, curve.negative / normal_pixels])
        pro = torch.cat([zero, curve.positive / regions])
        limit = self.fpr_limit
        # fpr is non-decreasing and starts at 0 <= limit: `inside` >= 1 points lie at or below the limit.
        inside = int(torch.searchsorted(fpr, torch.tensor([limit], dtype=fpr.dtype, device=fpr.device), right=True))
        area = float(torch.trapezoid(pro[:inside], fpr[:inside])) if inside > 1 else 0.0
        if inside < fpr.numel():
            fpr_before, fpr_after = float(fpr[inside - 1]), float(fpr[inside])
            pro_before, pro_after = float(pro[inside - 1]), float(pro[inside])
            pro_at_limit = pro_before + (pro_after - pro_before) * (limit - fpr_before) / (fpr_after - fpr_before)
            area += (limit - fpr_before) * (pro_before + pro_at_limit) / 2
        return torch.tensor(area / limit, dtype=torch.float32)

    def _merge_extra_states(self, incoming_state: dict[str, Any]) -> None:
        """Regions of the merged samples add up."""
        self.region_count = self.region_count + torch.as_tensor(incoming_state["region_count"]).sum().to(
            self.region_count.device
        )

