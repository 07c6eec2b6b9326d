"""PaDiM (Defard et al., "PaDiM: a Patch Distribution Modeling Framework", ICPR 2020)."""

from __future__ import annotations

from typing import Any, Dict, Optional, Sequence, Tuple

import torch
import torch.distributed as dist
import torch.nn.functional as F

from anomaly_kernels.components.stats import MultiVariateGaussian
from anomaly_kernels.components.stats.multi_variate_gaussian import _COVARIANCE_RIDGE
from anomaly_kernels.distributed.gaussian_fit import distributed_gaussian_fit
from anomaly_kernels.lightning.one_pass_module import OnePassAnomalyModule
from anomaly_kernels.models._arguments import check_input_size, check_positive_int
from anomaly_kernels.models.anomaly_map import AnomalyMapGenerator
from anomaly_kernels.models.backbone import FrozenBackboneModel
from anomaly_kernels.models.finite_images import check_finite_outputs

# Number of randomly kept channels the PaDiM paper uses for its two backbones.
DEFAULT_N_FEATURES = {"resnet18": 100, "wide_resnet50_2": 550}
# Seed of the channel selection: the same backbone and layers always keep the same channels.
_CHANNEL_SELECTION_SEED = 0
_MAP_SIGMA = 4.0


class PadimModel(FrozenBackboneModel):
    """PaDiM's torch model: one Gaussian per feature position, Mahalanobis distance as anomaly score.

    Embedding: the maps of the requested layers, deeper ones upsampled (nearest neighbour) to the
    resolution (h, w) of the first layer, concatenated along channels, then reduced to a fixed
    random subset of ``n_features`` channels (``torch.randperm`` with a fixed seed, sorted, kept
    in the buffer ``idx``). The spatial size (h, w) is found at construction by one forward pass
    of a zero image of ``input_size``.

    Fitting (:meth:`fit`): :class:`MultiVariateGaussian` ``(n_features, h·w)`` estimates at every
    position the mean and the inverse of the (ridge-regularised) covariance of the training
    embeddings. Its buffers are pre-sized, so fitted checkpoints load into fresh models.
    :meth:`fit_distributed` fits the same Gaussians from embeddings spread over the ranks of a
    process group.

    Scoring (:meth:`forward`): Mahalanobis distance of every position to its Gaussian
    (B, 1, h, w) → bilinear upsampling to ``input_size`` → Gaussian blur (σ = 4); the image score
    (computed by the Lightning module) is the maximum of the map.

    Args:
        input_size: (H, W) of the input images and anomaly maps.
        layers: backbone layers, the first sets the grid.
        backbone: timm model name.
        pre_trained: load ImageNet weights (needs network access on first use).
        n_features: channels kept, 1 <= n_features <= total channels of the layers; ``None``
            takes the paper's value for resnet18 (100) and wide_resnet50_2 (550).
        packed_precision: store the inverse covariances as their upper triangles (half the
            memory, the same scores; see :class:`MultiVariateGaussian`).

    Raises:
        ValueError: ``n_features`` out of range, or ``None`` for another backbone.
    """

    def __init__(
        self,
        input_size: Tuple[int, int],
        layers: Sequence[str] = ("layer1", "layer2", "layer3"),
        backbone: str = "resnet18",
        pre_trained: bool = True,
        n_features: Optional[int] = None,
        packed_precision: bool = False,
    ) -> None:
        input_size = check_input_size(input_size)
        if n_features is None:
            if backbone not in DEFAULT_N_FEATURES:
                raise ValueError(
                    f"n_features has no default for backbone {backbone!r} (defaults exist for "
                    f"{sorted(DEFAULT_N_FEATURES)}); pass n_features explicitly"
                )
            n_features = DEFAULT_N_FEATURES[backbone]
        n_features = check_positive_int("n_features", n_features)
        super().__init__(backbone, layers, pre_trained)
        self.input_size = input_size

        total_channels = int(sum(self.feature_extractor.out_dims))
        if n_features > total_channels:
            raise ValueError(
                f"n_features must be <= the {total_channels} channels of layers {self.layers} of "
                f"{backbone!r}, got {n_features}"
            )
        self.n_features = n_features
        self.embedding_size = self._embedding_size()
        generator = torch.Generator().manual_seed(_CHANNEL_SELECTION_SEED)
        selected = torch.randperm(total_channels, generator=generator)[:n_features]
        self.register_buffer("idx", selected.sort().values)
        self.idx: torch.Tensor
        self.gaussian = MultiVariateGaussian(
            n_features, self.embedding_size[0] * self.embedding_size[1], packed_precision=packed_precision
        )
        self.anomaly_map_generator = AnomalyMapGenerator(input_size, sigma=_MAP_SIGMA)

    def _embedding_size(self) -> Tuple[int, int]:
        """(h, w) of the first layer's map for images of ``input_size`` (one zero-image forward pass)."""
        probe = torch.zeros(1, 3, *self.input_size)
        features = self.extract_features(probe, self.input_size)
        height, width = features[self.layers[0]].shape[-2:]
        return int(height), int(width)

    @property
    def is_fitted(self) -> bool:
        """Whether the Gaussians were fitted (or loaded)."""
        return bool(self.gaussian.is_fitted)

    def generate_embedding(self, features: Dict[str, torch.Tensor]) -> torch.Tensor:
        """Concatenated, channel-subsampled features.

        Args:
            features: ``{layer: (B, C_layer, h_layer, w_layer)}`` in the order of ``layers``.

        Returns:
            (B, n_features, h, w) with (h, w) the first layer's resolution.
        """
        maps = [features[layer] for layer in self.layers]
        target_size = maps[0].shape[-2:]
        maps = [
            layer_map if layer_map.shape[-2:] == target_size else F.interpolate(layer_map, size=target_size, mode="nearest")
            for layer_map in maps
        ]
        embedding = torch.cat(maps, dim=1)
        return embedding.index_select(1, self.idx.to(embedding.device))

    def embed(self, images: torch.Tensor) -> torch.Tensor:
        """Embeddings (B, n_features, h, w) of ``images`` (B, 3, H, W), without autograd."""
        features = self.extract_features(images, self.input_size)
        with torch.no_grad():
            return self.generate_embedding(features)

    def fit(self, embeddings: torch.Tensor) -> None:
        """Fit the per-position Gaussians to training embeddings (N, n_features, h, w), N >= 2."""
        self.gaussian.fit(embeddings)

    def fit_distributed(
        self, local_embeddings: torch.Tensor, process_group: Optional[dist.ProcessGroup] = None
    ) -> None:
        """Fit the Gaussians of all ranks' training embeddings; call it on every rank of the group.

        :func:`~anomaly_kernels.distributed.distributed_gaussian_fit` reduces summed float64
        moments over the ranks (never averages per-rank covariances), so every rank gets the
        Gaussians a single :meth:`fit` on all ranks' embeddings would give, up to float64
        rounding (about 1e-6 relative after the cast to float32 for well-scaled features).

        Args:
            local_embeddings: (n_r, n_features, h, w) embeddings of this rank (n_r may be 0;
                at least 2 in all).
            process_group: the group (default: the default group).

        Raises:
            ValueError: a wrong shape, fewer than 2 embeddings in all, non-finite values or a
                covariance that is not positive definite (on every rank alike).
        """
        expected = (self.n_features, *self.embedding_size)
        is_tensor = isinstance(local_embeddings, torch.Tensor)
        if not is_tensor or local_embeddings.dim() != 4 or tuple(local_embeddings.shape[1:]) != expected:
            shape = tuple(local_embeddings.shape) if is_tensor else type(local_embeddings).__name__
            raise ValueError(f"local_embeddings must have shape (n, {', '.join(map(str, expected))}), got {shape}")
        with self.gaussian.releasing_placeholder():
            mean, inv_covariance = distributed_gaussian_fit(
                local_embeddings, _COVARIANCE_RIDGE, process_group, packed=self.gaussian.packed_precision
            )
        self.gaussian.mean = mean
        self.gaussian.inv_covariance = inv_covariance
        self.gaussian.is_fitted = torch.tensor(True, device=mean.device)

    def forward(self, images: torch.Tensor) -> torch.Tensor:
        """Anomaly maps (B, 1, H, W) of ``images`` (B, 3, H, W), (H, W) = ``input_size``.

        Raises:
            RuntimeError: the Gaussians are not fitted.
            ValueError: an image holds NaN or ±inf, or its result overflows (the message names
                its index in the batch; see :mod:`anomaly_kernels.models.finite_images`).
        """
        if not self.is_fitted:
            raise RuntimeError("PadimModel is not fitted: call fit(embeddings) or load a checkpoint")
        embedding = self.embed(images)
        with torch.no_grad():
            distances = self.gaussian.mahalanobis(embedding.to(self.gaussian.inv_covariance.dtype))
            anomaly_maps = self.anomaly_map_generator(distances)
        check_finite_outputs(images, anomaly_maps)
        return anomaly_maps


class PaDiM(OnePassAnomalyModule):
    """PaDiM as a Lightning module: per-position Gaussians of normal features, Mahalanobis maps.

    Training (one epoch, no optimiser; see :class:`OnePassAnomalyModule`) collects the embeddings
    of all training images and fits the Gaussians at the end of the epoch. The collection holds
    N × n_features × h × w floats on the model's device (resnet18 at 256 px, 100 features,
    64×64 positions: 1.6 MB per image, 328 MB for 200 images; wide_resnet50_2 with 550 features:
    9 MB per image); the fitted inverse covariances take h·w·n_features² floats (164 MB for
    resnet18 at 256 px, 4.96 GB for wide_resnet50_2; half with ``packed_precision``; the
    identities an unfitted model holds are released while it fits, so the two never coexist).
    ``validation_step`` adds ``anomaly_maps`` (B, 1, H, W) and ``pred_scores`` (B,) = the
    maximum of each map.

    Several processes (DDP): each rank holds only its own images' embeddings; the Gaussians
    come from count, Σx and the second moments about the global mean, summed over the ranks in
    float64 (:meth:`PadimModel.fit_distributed`); every rank, and rank 0's checkpoint, holds
    the Gaussians of the whole training set. A one-process fit keeps the native
    :func:`~anomaly_kernels.ops.gaussian_fit`.

    Args:
        backbone: timm model name.
        layers: backbone layers whose features are combined.
        pre_trained: load ImageNet weights (needs network access on first use).
        n_features: channels kept; ``None``: 100 for resnet18, 550 for wide_resnet50_2.
        input_size: (H, W) of the input images and anomaly maps.
        packed_precision: store the inverse covariances as their upper triangles (half the
            memory, the same scores).
        **anomaly_module_options: passed to :class:`AnomalyModule`.
    """

    def __init__(
        self,
        backbone: str = "resnet18",
        layers: Sequence[str] = ("layer1", "layer2", "layer3"),
        pre_trained: bool = True,
        n_features: Optional[int] = None,
        input_size: Tuple[int, int] = (256, 256),
        packed_precision: bool = False,
        **anomaly_module_options: Any,
    ) -> None:
        super().__init__(**anomaly_module_options)
        self.save_hyperparameters()
        self.model: PadimModel = PadimModel(
            input_size=input_size,
            layers=layers,
            backbone=backbone,
            pre_trained=pre_trained,
            n_features=n_features,
            packed_precision=packed_precision,
        )

    def _fit_model(self, features: torch.Tensor) -> None:
        if features.shape[0] < 2:
            raise ValueError(
                f"PaDiM needs at least 2 training images to estimate covariances, got {features.shape[0]}"
            )
        self.model.fit(features)

    def _fit_model_distributed(self, features: Optional[torch.Tensor], group: dist.ProcessGroup) -> None:
        if features is None:
            features = torch.empty(0, self.model.n_features, *self.model.embedding_size, device=self.device)
        self.model.fit_distributed(features, group)

    def _score(self, images: torch.Tensor) -> Dict[str, torch.Tensor]:
        anomaly_maps = self.model(images)
        return {"anomaly_maps": anomaly_maps, "pred_scores": anomaly_maps.flatten(1).amax(dim=1)}


Padim = PaDiM
