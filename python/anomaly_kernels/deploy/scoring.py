"""The scoring of fitted PatchCore, PaDiM and DFKDE models as graphs that ``torch.export`` traces.

The models' own ``forward`` methods check their inputs and fitted state with Python branches on
tensor values (``bool(is_fitted)``, finiteness checks) and search the memory bank in chunks
sized from the batch, which an exported graph with a dynamic batch size cannot hold. Each class
here computes the same maps and scores from the same fitted modules with the same operations
(feature extractor, ``generate_embedding``, the native operators, the score formulas), but as
straight-line tensor code: the checks are made once, when the graph is built.

Every scoring module takes images (B, 3, H, W) and returns ``(anomaly_maps (B, 1, H, W) or
None, pred_scores (B,))``: the raw outputs of the Lightning module's ``validation_step``.
"""

from __future__ import annotations

from typing import Optional, Tuple

import torch
import torch.nn.functional as F
from torch import nn

from anomaly_kernels.components.filters.upsample_blur import upsample_blur_band
from anomaly_kernels.models import DfkdeModel, PadimModel, PatchcoreModel
from anomaly_kernels.models.anomaly_map import AnomalyMapGenerator

Scores = Tuple[Optional[torch.Tensor], torch.Tensor]


class MapSmoothing(nn.Module):
    """:class:`AnomalyMapGenerator` for a fixed coarse grid: one native banded resampling.

    The generator upsamples (bilinear) and blurs (reflect border) with
    :func:`~anomaly_kernels.components.filters.upsample_blur2d`, whose bands depend only on the
    grid and output sizes; here they are computed once and kept as buffers.

    Args:
        generator: the model's generator (output size, sigma, blur taps).
        grid: (h, w) of the patch scores.
    """

    def __init__(self, generator: AnomalyMapGenerator, grid: Tuple[int, int]) -> None:
        super().__init__()
        kernel_size = generator.blur.kernel_size[0]
        for axis, size_in, size_out in (("y", grid[0], generator.input_size[0]), ("x", grid[1], generator.input_size[1])):
            start, weights = upsample_blur_band(size_in, size_out, "bilinear", kernel_size, float(generator.sigma), "reflect")
            self.register_buffer(f"start_{axis}", start)
            self.register_buffer(f"weights_{axis}", weights.to(torch.float32))

    def forward(self, patch_scores: torch.Tensor) -> torch.Tensor:
        """(B, 1, h, w) float32 patch scores → (B, 1, H, W) anomaly maps."""
        return torch.ops.anomaly_kernels.banded_resample2d(
            patch_scores, self.start_y, self.weights_y, self.start_x, self.weights_x
        )


def _feature_grid(model: PatchcoreModel) -> Tuple[int, int]:
    """(h, w) of PatchCore's patch grid for its input size (one zero-image pass)."""
    with torch.no_grad():
        probe = torch.zeros(1, 3, *model.input_size, device=model.memory_bank.device)
        height, width = model.generate_embedding(model.feature_extractor(probe)).shape[-2:]
    return int(height), int(width)


class PatchcoreScoring(nn.Module):
    """:meth:`PatchcoreModel.forward` without the chunked search: one distance block per batch.

    Nearest bank rows are ranked by ``|b|² − 2 q·b`` (one matrix product, as
    :func:`~anomaly_kernels.components.search.nearest_neighbors` does) and their distances
    recomputed exactly; the image score is PatchCore's re-weighted maximum patch score
    (:func:`~anomaly_kernels.models.reweighted_image_scores`). Memory: a (B·h·w, M) block of
    float32 (784 patches × 16 384 bank rows = 51 MB per image at 224 px).
    """

    def __init__(self, model: PatchcoreModel) -> None:
        super().__init__()
        self.model = model
        self.smoothing = MapSmoothing(model.anomaly_map_generator, _feature_grid(model))
        # Capped at the bank size; 1 means no re-weighting (see reweighted_image_scores).
        self.num_neighbors = min(model.num_neighbors, model.memory_bank.shape[0])

    def _ranking(self, queries: torch.Tensor) -> torch.Tensor:
        """(N, M) ``|b|² − 2 q·b``: squared distances less the per-row constant ``|q|²``."""
        bank = self.model.memory_bank
        return torch.addmm(bank.square().sum(dim=1).unsqueeze(0), queries, bank.T, beta=1.0, alpha=-2.0)

    def _distances(self, queries: torch.Tensor, candidates: torch.Tensor) -> torch.Tensor:
        """(N, k) exact distances of queries (N, D) to the bank rows ``candidates`` (N, k)."""
        return torch.linalg.vector_norm(queries.unsqueeze(1) - self.model.memory_bank[candidates], dim=2)

    def forward(self, images: torch.Tensor) -> Scores:
        embedding = self.model.generate_embedding(self.model.feature_extractor(images))
        batch, dims, height, width = embedding.shape
        rows = embedding.permute(0, 2, 3, 1).reshape(batch * height * width, dims)
        # argmin: ties go to the smallest bank index, as in the chunked search.
        nearest = self._ranking(rows).argmin(dim=1, keepdim=True)
        patch_scores = self._distances(rows, nearest).reshape(batch, height * width)
        anomaly_maps = self.smoothing(patch_scores.reshape(batch, 1, height, width))
        locations = nearest.reshape(batch, height * width)
        return anomaly_maps, self._image_scores(patch_scores, locations, rows.reshape(batch, height * width, dims))

    def _image_scores(self, patch_scores: torch.Tensor, locations: torch.Tensor, features: torch.Tensor) -> torch.Tensor:
        """Re-weighted image scores (B,) from patch scores (B, P), nearest rows (B, P), features (B, P, D)."""
        max_patch = patch_scores.argmax(dim=1, keepdim=True)  # (B, 1)
        max_scores = patch_scores.gather(1, max_patch).squeeze(1)
        if self.num_neighbors == 1:
            return max_scores
        dims = features.shape[2]
        max_features = features.gather(1, max_patch.unsqueeze(2).expand(-1, 1, dims)).squeeze(1)  # (B, D)
        nearest_rows = self.model.memory_bank[locations.gather(1, max_patch).squeeze(1)]  # (B, D)
        # The num_neighbors bank rows nearest to each m*, in increasing exact distance. (topk
        # rather than a stable sort, which ONNX lacks: they differ only in the order of equal
        # distances, i.e. of duplicated bank rows, which changes the sum below by rounding.)
        candidates = self._ranking(nearest_rows).topk(self.num_neighbors, dim=1, largest=False).indices
        order = self._distances(nearest_rows, candidates).topk(self.num_neighbors, dim=1, largest=False).indices
        support = candidates.gather(1, order)
        support_distances = self._distances(max_features, support)
        ratio = torch.exp(max_scores - torch.logsumexp(support_distances, dim=1))
        return (1.0 - ratio).clamp(0.0, 1.0) * max_scores


class PadimScoring(nn.Module):
    """:meth:`PadimModel.forward` (native Mahalanobis, smoothed), and the image score = map maximum."""

    def __init__(self, model: PadimModel) -> None:
        super().__init__()
        self.model = model
        self.smoothing = MapSmoothing(model.anomaly_map_generator, model.embedding_size)

    def forward(self, images: torch.Tensor) -> Scores:
        embedding = self.model.generate_embedding(self.model.feature_extractor(images))
        gaussian = self.model.gaussian
        distances = torch.ops.anomaly_kernels.mahalanobis(embedding, gaussian.mean, gaussian.inv_covariance)
        anomaly_maps = self.smoothing(distances)
        return anomaly_maps, anomaly_maps.flatten(1).amax(dim=1)


class DfkdeScoring(nn.Module):
    """:meth:`DfkdeModel.forward`: pooled features → PCA → scaling → KDE log-density → probability."""

    def __init__(self, model: DfkdeModel) -> None:
        super().__init__()
        self.model = model

    def forward(self, images: torch.Tensor) -> Scores:
        features = self.model.feature_extractor(images)
        pooled = torch.cat([F.adaptive_avg_pool2d(features[layer], 1).flatten(1) for layer in self.model.layers], dim=1)
        return None, self.model.compute_probabilities(self.model.log_density(pooled))
