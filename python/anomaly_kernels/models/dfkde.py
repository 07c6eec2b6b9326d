"""DFKDE: deep-feature kernel density estimation, an image-level anomaly classifier."""

from __future__ import annotations

from typing import Any, Dict, Sequence, Union

import torch
import torch.nn.functional as F

from anomaly_kernels.components.dimensionality_reduction import PCA
from anomaly_kernels.components.stats import GaussianKDE
from anomaly_kernels.lightning.one_pass_module import OnePassAnomalyModule
from anomaly_kernels.models._arguments import check_finite_real, check_positive_int
from anomaly_kernels.models.backbone import FrozenBackboneModel
from anomaly_kernels.models.finite_images import check_finite_outputs

FEATURE_SCALING_METHODS = ("norm", "scale")
# Seed of the sub-sampling of training points: the same training set always keeps the same rows.
_SUBSAMPLING_SEED = 0


class DfkdeModel(FrozenBackboneModel):
    """DFKDE's torch model: pooled CNN features → PCA → scaling → Gaussian KDE → anomaly probability.

    Features: every requested layer's map is averaged over its positions (adaptive average
    pooling to 1×1) and the layers are concatenated: one row (C,) per image.

    Fitting (:meth:`fit`, rows (N, C)): at most ``max_training_points`` rows are kept (a random
    subset from a fixed-seed generator when there are more), projected by
    :class:`PCA` (``n_pca_components``), scaled, and fitted by :class:`GaussianKDE` (Scott's
    bandwidth). Scaling: ``"norm"`` divides each row by its own Euclidean norm (rows on the unit
    sphere); ``"scale"`` divides every row by the largest norm of the projected training rows,
    kept in the buffer ``max_length``.

    Scoring (:meth:`forward`): with ``ℓ`` the natural log-density of the KDE at the image's
    transformed feature (finite even where the density underflows),
    ``score = 1 / (1 + exp(threshold_steepness · (ℓ − threshold_offset)))`` = ``sigmoid(−k(ℓ − o))``:
    a probability-like score in (0, 1), decreasing in the density, so higher = more anomalous;
    0.5 at ``ℓ = threshold_offset``.

    Args:
        layers: backbone layers whose pooled features are concatenated.
        backbone: timm model name.
        pre_trained: load ImageNet weights (needs network access on first use).
        n_pca_components: PCA components, an int >= 1 or a variance ratio in (0, 1).
        feature_scaling_method: ``"scale"`` or ``"norm"``.
        max_training_points: largest number of training rows the KDE keeps, >= 1.
        threshold_steepness: slope ``k`` of the score's sigmoid, finite.
        threshold_offset: log-density ``o`` mapped to score 0.5, finite.
    """

    def __init__(
        self,
        layers: Sequence[str] = ("layer4",),
        backbone: str = "resnet18",
        pre_trained: bool = True,
        n_pca_components: Union[int, float] = 16,
        feature_scaling_method: str = "scale",
        max_training_points: int = 40000,
        threshold_steepness: float = 0.05,
        threshold_offset: float = 12.0,
    ) -> None:
        if feature_scaling_method not in FEATURE_SCALING_METHODS:
            raise ValueError(
                f"feature_scaling_method must be one of {list(FEATURE_SCALING_METHODS)}, got {feature_scaling_method!r}"
            )
        max_training_points = check_positive_int("max_training_points", max_training_points)
        threshold_steepness = check_finite_real("threshold_steepness", threshold_steepness)
        threshold_offset = check_finite_real("threshold_offset", threshold_offset)
        pca = PCA(n_components=n_pca_components)
        super().__init__(backbone, layers, pre_trained)
        self.n_pca_components = pca.n_components
        self.feature_scaling_method = feature_scaling_method
        self.max_training_points = max_training_points
        self.threshold_steepness = threshold_steepness
        self.threshold_offset = threshold_offset
        self.feature_dim = int(sum(self.feature_extractor.out_dims))
        if isinstance(self.n_pca_components, int) and self.n_pca_components > self.feature_dim:
            raise ValueError(
                f"n_pca_components must be <= the {self.feature_dim} pooled channels of layers {self.layers}, "
                f"got {self.n_pca_components}"
            )
        self.pca_model = pca
        self.kde_model = GaussianKDE()
        self.register_buffer("max_length", torch.empty(0))
        self.max_length: torch.Tensor

    @property
    def is_fitted(self) -> bool:
        """Whether the KDE holds its training rows (fitted or loaded)."""
        return self.kde_model.dataset.numel() > 0

    def embed(self, images: torch.Tensor) -> torch.Tensor:
        """Pooled features (B, C) of ``images`` (B, 3, H, W), without autograd."""
        features = self.extract_features(images)
        with torch.no_grad():
            pooled = [F.adaptive_avg_pool2d(features[layer], 1).flatten(1) for layer in self.layers]
            return torch.cat(pooled, dim=1)

    def _scale(self, features: torch.Tensor) -> torch.Tensor:
        """Apply the fitted scaling to PCA-projected rows (N, k); returns a new tensor."""
        if self.feature_scaling_method == "norm":
            norms = torch.linalg.vector_norm(features, dim=1, keepdim=True)
            # A row at the PCA mean has no direction; leave it at the origin instead of NaN.
            return features / norms.clamp_min(torch.finfo(features.dtype).tiny)
        return features / self.max_length.to(features.dtype)

    def fit(self, features: torch.Tensor) -> None:
        """Fit PCA, scaling and KDE to training rows ``features`` (N, C); the tensor is not modified.

        Raises:
            ValueError: wrong shape, or fewer rows than a ``n_pca_components``-dimensional KDE
                needs (``n_pca_components + 1``).
        """
        if not isinstance(features, torch.Tensor) or features.dim() != 2 or features.shape[1] != self.feature_dim:
            shape = tuple(features.shape) if isinstance(features, torch.Tensor) else type(features).__name__
            raise ValueError(f"features must have shape (N, {self.feature_dim}), got {shape}")
        if isinstance(self.n_pca_components, int) and features.shape[0] < self.n_pca_components + 1:
            raise ValueError(
                f"DFKDE needs at least n_pca_components + 1 = {self.n_pca_components + 1} training images "
                f"for a {self.n_pca_components}-dimensional density, got {features.shape[0]}"
            )
        if features.shape[0] > self.max_training_points:
            generator = torch.Generator().manual_seed(_SUBSAMPLING_SEED)
            keep = torch.randperm(features.shape[0], generator=generator)[: self.max_training_points]
            features = features[keep.to(features.device)]
        projected = self.pca_model.fit_transform(features)
        if self.feature_scaling_method == "scale":
            max_length = torch.linalg.vector_norm(projected, dim=1).max()
            if not max_length > 0:
                raise ValueError("the training features do not vary: every image has the same PCA projection")
            self.max_length = max_length
        self.kde_model.fit(self._scale(projected))

    def log_density(self, features: torch.Tensor) -> torch.Tensor:
        """Natural log-density (N,) of pooled features (N, C) under the fitted KDE."""
        if not self.is_fitted:
            raise RuntimeError("DfkdeModel is not fitted: call fit(features) or load a checkpoint")
        return self.kde_model.log_density(self._scale(self.pca_model.transform(features)))

    def compute_probabilities(self, log_density: torch.Tensor) -> torch.Tensor:
        """``1 / (1 + exp(k · (ℓ − o)))`` of log-densities ``ℓ``: higher = more anomalous, in (0, 1)."""
        return torch.sigmoid(-self.threshold_steepness * (log_density - self.threshold_offset))

    def forward(self, images: torch.Tensor) -> torch.Tensor:
        """Anomaly scores (B,) of ``images`` (B, 3, H, W).

        Raises:
            RuntimeError: the model is not fitted.
            ValueError: an image holds NaN or ±inf, or its result overflows (the message names
                its index in the batch; see :mod:`anomaly_kernels.models.finite_images`).
        """
        if not self.is_fitted:
            raise RuntimeError("DfkdeModel is not fitted: call fit(features) or load a checkpoint")
        features = self.embed(images)
        with torch.no_grad():
            log_density = self.log_density(features.to(self.kde_model.dataset.dtype))
        # The log-density too: a feature far enough out overflows its squared distances to every
        # training row (log-density -inf), which the sigmoid would turn into a finite score of 1.
        check_finite_outputs(images, log_density)
        return self.compute_probabilities(log_density)


class DFKDE(OnePassAnomalyModule):
    """DFKDE as a Lightning module: image-level anomaly scores from a density of pooled CNN features.

    Training (one epoch, no optimiser; see :class:`OnePassAnomalyModule`) collects one pooled
    feature row per training image (N × C floats, C = 512 for resnet18 layer4) and fits PCA,
    scaling and the KDE at the end of the epoch. ``validation_step`` adds ``pred_scores`` (B,)
    only (no ``anomaly_maps``): the pixel threshold takes the image threshold.

    Args:
        backbone: timm model name.
        layers: backbone layers whose pooled features are concatenated.
        pre_trained: load ImageNet weights (needs network access on first use).
        n_pca_components: PCA components (int >= 1, or a variance ratio in (0, 1)).
        feature_scaling_method: ``"scale"`` (divide by the largest training norm) or ``"norm"``
            (unit norm per row).
        max_training_points: the KDE keeps at most this many training rows (fixed-seed subset).
        threshold_steepness: slope of the score sigmoid.
        threshold_offset: log-density mapped to score 0.5.
        **anomaly_module_options: passed to :class:`AnomalyModule`.
    """

    def __init__(
        self,
        backbone: str = "resnet18",
        layers: Sequence[str] = ("layer4",),
        pre_trained: bool = True,
        n_pca_components: Union[int, float] = 16,
        feature_scaling_method: str = "scale",
        max_training_points: int = 40000,
        threshold_steepness: float = 0.05,
        threshold_offset: float = 12.0,
        **anomaly_module_options: Any,
    ) -> None:
        super().__init__(**anomaly_module_options)
        self.save_hyperparameters()
        self.model: DfkdeModel = DfkdeModel(
            layers=layers,
            backbone=backbone,
            pre_trained=pre_trained,
            n_pca_components=n_pca_components,
            feature_scaling_method=feature_scaling_method,
            max_training_points=max_training_points,
            threshold_steepness=threshold_steepness,
            threshold_offset=threshold_offset,
        )

    def _fit_model(self, features: torch.Tensor) -> None:
        self.model.fit(features)

    def _score(self, images: torch.Tensor) -> Dict[str, torch.Tensor]:
        return {"pred_scores": self.model(images)}


Dfkde = DFKDE
