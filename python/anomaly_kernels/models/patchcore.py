"""PatchCore (Roth et al., "Towards Total Recall in Industrial Anomaly Detection", CVPR 2022)."""

from __future__ import annotations

from typing import Any, Dict, Optional, Sequence, Tuple

import torch
import torch.distributed as dist
import torch.nn.functional as F
from torch import nn

from anomaly_kernels.components.sampling import KCenterGreedy
from anomaly_kernels.components.sampling.coreset_rules import check_sampling_ratio, check_seed
from anomaly_kernels.components.search import nearest_neighbors
from anomaly_kernels.distributed.coreset import distributed_coreset
from anomaly_kernels.distributed.row_gather import gather_selected_rows
from anomaly_kernels.lightning.ddp import shared_seed
from anomaly_kernels.lightning.one_pass_module import OnePassAnomalyModule
from anomaly_kernels.models._arguments import check_input_size, check_positive_int
from anomaly_kernels.models.anomaly_map import AnomalyMapGenerator
from anomaly_kernels.models.backbone import FrozenBackboneModel
from anomaly_kernels.models.finite_images import check_finite_outputs

# PatchCore smooths its upsampled patch scores with a Gaussian of this standard deviation (pixels).
_MAP_SIGMA = 4.0


def check_coreset_seed(seed: Any) -> int:
    """``seed`` as an int in [0, 2**63), or a TypeError/ValueError naming ``coreset_seed``."""
    return check_seed(seed, "coreset_seed")


def reweighted_image_scores(
    max_scores: torch.Tensor,
    max_features: torch.Tensor,
    nearest_bank_indices: torch.Tensor,
    memory_bank: torch.Tensor,
    num_neighbors: int,
    chunk_size: Optional[int] = None,
) -> torch.Tensor:
    """Image scores of PatchCore (paper, eq. 7) from each image's most anomalous patch.

    For an image, let ``m_test*`` be the patch feature whose distance to the memory bank is the
    largest, ``s* = ‖m_test* − m*‖`` that distance and ``m*`` its nearest bank row. With
    ``N_b(m*)`` the ``b = num_neighbors`` bank rows nearest to ``m*`` (``m*`` itself, at distance
    0, included)::

        s = (1 − exp(‖m_test* − m*‖) / Σ_{m ∈ N_b(m*)} exp(‖m_test* − m‖)) · s*

    The weight grows when ``m_test*`` is far from the neighbourhood of ``m*`` compared with
    ``m*`` itself, i.e. when the nearest bank row sits in a sparse region of the normal data.
    The ratio is evaluated as ``exp(s* − logsumexp_m ‖m_test* − m‖)``, which cannot overflow
    for large distances. With ``b = 1`` the weight would be 0 for every image, so the
    re-weighting is skipped and ``s = s*``; ``b`` is capped at the bank size.

    Args:
        max_scores: (B,) ``s*``, the largest patch distance of each image.
        max_features: (B, D) ``m_test*``, the feature of that patch.
        nearest_bank_indices: (B,) int64, index of ``m*`` in ``memory_bank``.
        memory_bank: (M, D) bank rows.
        num_neighbors: ``b`` >= 1.
        chunk_size: query chunk of the neighbour search (see :func:`nearest_neighbors`).

    Returns:
        (B,) image scores, in [0, s*].

    Raises:
        ValueError: inconsistent shapes or an empty memory bank.
    """
    if memory_bank.dim() != 2 or memory_bank.shape[0] == 0:
        raise ValueError(f"memory_bank must be a non-empty (M, D) tensor, got shape {tuple(memory_bank.shape)}")
    batch_size = max_scores.shape[0] if max_scores.dim() == 1 else -1
    if (
        batch_size < 0
        or max_features.shape != (batch_size, memory_bank.shape[1])
        or nearest_bank_indices.shape != (batch_size,)
    ):
        raise ValueError(
            f"expected max_scores (B,), max_features (B, {memory_bank.shape[1]}) and nearest_bank_indices (B,), "
            f"got {tuple(max_scores.shape)}, {tuple(max_features.shape)} and {tuple(nearest_bank_indices.shape)}"
        )
    num_neighbors = min(check_positive_int("num_neighbors", num_neighbors), memory_bank.shape[0])
    if num_neighbors == 1:
        return max_scores.clone()
    nearest_rows = memory_bank[nearest_bank_indices]
    _, support = nearest_neighbors(nearest_rows, memory_bank, k=num_neighbors, chunk_size=chunk_size)
    # (B, b) distances of the test patch to the neighbourhood of its nearest bank row.
    support_distances = torch.linalg.vector_norm(max_features.unsqueeze(1) - memory_bank[support], dim=2)
    # m* (or a duplicate of it) is in its own neighbourhood, so logsumexp >= s* and the ratio
    # is <= 1 up to rounding; the clamp keeps the weight in [0, 1] under rounding.
    ratio = torch.exp(max_scores - torch.logsumexp(support_distances, dim=1))
    weights = (1.0 - ratio).clamp(0.0, 1.0)
    return weights * max_scores


class PatchcoreModel(FrozenBackboneModel):
    """PatchCore's torch model: locally aware patch features, a coreset memory bank, NN scoring.

    Patch features: each requested layer's map is averaged over 3×3 neighbourhoods (stride 1,
    zero padding 1, padding counted in the average), the maps of deeper layers are upsampled
    bilinearly to the resolution (h, w) of the first layer, and the channels are concatenated:
    one D-dimensional feature per position, D = sum of the layers' channels (1536 for
    wide_resnet50_2 layer2+layer3, with h, w = input/8).

    Memory bank: buffer ``memory_bank`` (M, D), empty (0, D) until :meth:`subsample_embedding`;
    a fitted checkpoint loads into a fresh model (the buffer is resized on load).

    Scoring (:meth:`forward`): every test patch's Euclidean distance to its nearest bank row
    (exact, chunked: see :func:`nearest_neighbors`) gives the patch scores (B, 1, h, w), which
    :class:`AnomalyMapGenerator` upsamples to ``input_size`` and blurs (σ = 4, 33 taps, reflect);
    the image score is the re-weighted maximum patch score (:func:`reweighted_image_scores`).

    Args:
        input_size: (H, W) of the input images and the anomaly maps.
        layers: feature layers of the backbone, the first sets the patch grid.
        backbone: timm model name.
        pre_trained: load ImageNet weights (needs network access on first use).
        num_neighbors: ``b`` of the image-score re-weighting, >= 1.

    Attributes:
        nn_chunk_size: query rows per chunk of the nearest-neighbour search; ``None`` bounds each
            chunk's distance block to 2**24 entries.
    """

    def __init__(
        self,
        input_size: Tuple[int, int],
        layers: Sequence[str] = ("layer2", "layer3"),
        backbone: str = "wide_resnet50_2",
        pre_trained: bool = True,
        num_neighbors: int = 9,
    ) -> None:
        input_size = check_input_size(input_size)
        num_neighbors = check_positive_int("num_neighbors", num_neighbors)
        super().__init__(backbone, layers, pre_trained)
        self.input_size = input_size
        self.num_neighbors = num_neighbors
        self.nn_chunk_size: Optional[int] = None
        self.embedding_dim = int(sum(self.feature_extractor.out_dims))
        self.feature_pooler = nn.AvgPool2d(kernel_size=3, stride=1, padding=1)
        self.anomaly_map_generator = AnomalyMapGenerator(input_size, sigma=_MAP_SIGMA)
        self.register_buffer("memory_bank", torch.empty(0, self.embedding_dim))
        self.memory_bank: torch.Tensor

    @property
    def is_fitted(self) -> bool:
        """Whether the memory bank holds rows."""
        return self.memory_bank.shape[0] > 0

    def generate_embedding(self, features: Dict[str, torch.Tensor]) -> torch.Tensor:
        """Locally aware patch features from the layers' maps.

        Args:
            features: ``{layer: (B, C_layer, h_layer, w_layer)}`` in the order of ``layers``.

        Returns:
            (B, D, h, w) with (h, w) the first layer's resolution and D = Σ C_layer.
        """
        maps = [self.feature_pooler(features[layer]) for layer in self.layers]
        target_size = maps[0].shape[-2:]
        maps = [
            layer_map
            if layer_map.shape[-2:] == target_size
            else F.interpolate(layer_map, size=target_size, mode="bilinear", align_corners=False)
            for layer_map in maps
        ]
        return torch.cat(maps, dim=1)

    @staticmethod
    def reshape_embedding(embedding: torch.Tensor) -> torch.Tensor:
        """(B, D, h, w) → (B·h·w, D): one row per patch, image-major then row-major positions."""
        return embedding.permute(0, 2, 3, 1).reshape(-1, embedding.shape[1])

    def embed(self, images: torch.Tensor) -> torch.Tensor:
        """Patch features of ``images`` (B, 3, H, W) as rows (B·h·w, D), without autograd."""
        features = self.extract_features(images, self.input_size)
        with torch.no_grad():
            return self.reshape_embedding(self.generate_embedding(features))

    def _check_embedding(self, embedding: torch.Tensor, name: str) -> None:
        if not isinstance(embedding, torch.Tensor) or embedding.dim() != 2 or embedding.shape[1] != self.embedding_dim:
            shape = tuple(embedding.shape) if isinstance(embedding, torch.Tensor) else type(embedding).__name__
            raise ValueError(f"{name} must have shape (N, {self.embedding_dim}), got {shape}")

    def subsample_embedding(self, embedding: torch.Tensor, sampling_ratio: float, seed: Optional[int] = None) -> None:
        """Fill the memory bank with the k-center-greedy coreset of ``embedding``.

        Args:
            embedding: (N, D) training patch features.
            sampling_ratio: fraction in (0, 1]; the bank keeps ``int(N * sampling_ratio)`` rows
                (at least 1 is required).
            seed: the ``seed`` of :class:`KCenterGreedy`. ``None``: the projection and start
                row come from torch's RNG (seed it for reproducible banks). An int: projection
                ``random_state=seed`` and start row from ``Generator().manual_seed(seed)``, the
                choice :meth:`subsample_embedding_distributed` makes over ranks with the same seed.
        """
        self._check_embedding(embedding, "embedding")
        if seed is not None:
            seed = check_coreset_seed(seed)
        sampler = KCenterGreedy(embedding=embedding, sampling_ratio=sampling_ratio, seed=seed)
        self.memory_bank = sampler.sample_coreset().contiguous()

    def subsample_embedding_distributed(
        self,
        local_embedding: torch.Tensor,
        sampling_ratio: float,
        seed: int,
        process_group: Optional[dist.ProcessGroup] = None,
    ) -> None:
        """Fill every rank's memory bank with the coreset of all ranks' patch features.

        Call it on every rank of the group with that rank's rows. The sharded selection
        (:func:`~anomaly_kernels.distributed.distributed_coreset`) numbers rows in rank order and
        picks what :meth:`subsample_embedding` with the same ``seed`` picks from all ranks' rows
        concatenated; the selected rows are then fetched from the ranks that hold them
        (:func:`~anomaly_kernels.distributed.gather_selected_rows`), so every rank ends with the
        same full bank, in selection order.

        Args:
            local_embedding: (n_r, D) patch features of this rank (n_r may be 0).
            sampling_ratio: fraction of all ranks' rows to keep, in (0, 1].
            seed: the projection and start-row seed, the same on every rank.
            process_group: the group (default: the default group).
        """
        self._check_embedding(local_embedding, "local_embedding")
        indices = distributed_coreset(local_embedding, sampling_ratio, check_coreset_seed(seed), process_group)
        self.memory_bank = gather_selected_rows(local_embedding, indices, process_group).contiguous()

    def nearest_neighbors(self, embedding: torch.Tensor, n_neighbors: int) -> Tuple[torch.Tensor, torch.Tensor]:
        """Distances (N, n) and indices (N, n) of the ``n_neighbors`` bank rows nearest to each row."""
        return nearest_neighbors(embedding, self.memory_bank, k=n_neighbors, chunk_size=self.nn_chunk_size)

    def compute_anomaly_score(
        self, patch_scores: torch.Tensor, locations: torch.Tensor, embedding: torch.Tensor
    ) -> torch.Tensor:
        """Re-weighted image scores (B,) from patch scores (B, P), their nearest bank rows (B, P) and features (B, P, D)."""
        batch = torch.arange(patch_scores.shape[0], device=patch_scores.device)
        max_patches = patch_scores.argmax(dim=1)
        return reweighted_image_scores(
            max_scores=patch_scores[batch, max_patches],
            max_features=embedding[batch, max_patches],
            nearest_bank_indices=locations[batch, max_patches],
            memory_bank=self.memory_bank,
            num_neighbors=self.num_neighbors,
            chunk_size=self.nn_chunk_size,
        )

    def forward(self, images: torch.Tensor) -> Tuple[torch.Tensor, torch.Tensor]:
        """Score images against the memory bank.

        Args:
            images: (B, 3, H, W) with (H, W) = ``input_size``.

        Returns:
            ``(anomaly_maps (B, 1, H, W), pred_scores (B,))``.

        Raises:
            RuntimeError: the memory bank is empty (not fitted).
            ValueError: an image holds NaN or ±inf, or its result overflows (the message names
                its index in the batch; see :mod:`anomaly_kernels.models.finite_images`).
        """
        if not self.is_fitted:
            raise RuntimeError("PatchcoreModel has an empty memory bank: call subsample_embedding or load a checkpoint")
        features = self.extract_features(images, self.input_size)
        with torch.no_grad():
            embedding = self.generate_embedding(features)
            batch_size, _, height, width = embedding.shape
            rows = self.reshape_embedding(embedding).to(self.memory_bank.dtype)
            distances, locations = self.nearest_neighbors(rows, n_neighbors=1)
            patch_scores = distances.reshape(batch_size, height * width)
            locations = locations.reshape(batch_size, height * width)
            anomaly_maps = self.anomaly_map_generator(patch_scores.reshape(batch_size, 1, height, width))
            pred_scores = self.compute_anomaly_score(patch_scores, locations, rows.reshape(batch_size, height * width, -1))
        check_finite_outputs(images, anomaly_maps, pred_scores)
        return anomaly_maps, pred_scores


class PatchCore(OnePassAnomalyModule):
    """PatchCore as a Lightning module: coreset memory bank of training patches, NN anomaly scores.

    Training (one epoch, no optimiser; see :class:`OnePassAnomalyModule`) collects the patch
    features of every training image, N = images · h · w rows of D floats, on the model's device
    (wide_resnet50_2 layer2+3 at 224 px: 784 rows × 1536 floats = 4.8 MB per image), then keeps
    the k-center-greedy coreset of ``int(N * coreset_sampling_ratio)`` rows as the memory bank.
    ``validation_step`` adds ``anomaly_maps`` (B, 1, H, W) and ``pred_scores`` (B,).

    Several processes (DDP): each rank keeps only its own images' patch features; the coreset
    is selected over all ranks' rows by the sharded k-center greedy (rows numbered in rank
    order, the same projection and start row on every rank), and the selected rows are
    gathered so that every rank, and rank 0's checkpoint, holds the full memory bank. The
    projection and start row come from ``coreset_seed``; without one, rank 0 draws a seed from
    torch's RNG and shares it. With ``coreset_seed`` set, a one-process fit makes the same
    seeded choice, so it keeps the same bank as a multi-process fit over the same rows in rank
    order (see :class:`~anomaly_kernels.distributed.ContiguousDistributedSampler`).

    Args:
        backbone: timm model name.
        layers: backbone layers whose features are combined.
        pre_trained: load ImageNet weights (needs network access on first use).
        coreset_sampling_ratio: fraction of training patches kept in the memory bank, in (0, 1].
        num_neighbors: ``b`` of the image-score re-weighting (PatchCore eq. 7), >= 1.
        input_size: (H, W) of the input images and anomaly maps.
        coreset_seed: ``None`` (default): the coreset's projection and start row come from
            torch's RNG, as in anomalib. An int in [0, 2**63): the seeded, device-count
            independent selection described above.
        **anomaly_module_options: passed to :class:`AnomalyModule`.

    Example:
        >>> module = PatchCore(backbone="resnet18", layers=("layer1", "layer2"), pre_trained=False,
        ...                    input_size=(64, 64))
        >>> module.model.embed(torch.rand(2, 3, 64, 64)).shape
        torch.Size([512, 192])
    """

    def __init__(
        self,
        backbone: str = "wide_resnet50_2",
        layers: Sequence[str] = ("layer2", "layer3"),
        pre_trained: bool = True,
        coreset_sampling_ratio: float = 0.1,
        num_neighbors: int = 9,
        input_size: Tuple[int, int] = (256, 256),
        coreset_seed: Optional[int] = None,
        **anomaly_module_options: Any,
    ) -> None:
        coreset_sampling_ratio = check_sampling_ratio(coreset_sampling_ratio, "coreset_sampling_ratio")
        if coreset_seed is not None:
            coreset_seed = check_coreset_seed(coreset_seed)
        super().__init__(**anomaly_module_options)
        self.save_hyperparameters()
        self.coreset_sampling_ratio = coreset_sampling_ratio
        self.coreset_seed = coreset_seed
        self.model: PatchcoreModel = PatchcoreModel(
            input_size=input_size,
            layers=layers,
            backbone=backbone,
            pre_trained=pre_trained,
            num_neighbors=num_neighbors,
        )

    def _fit_model(self, features: torch.Tensor) -> None:
        self.model.subsample_embedding(features, self.coreset_sampling_ratio, seed=self.coreset_seed)

    def _fit_model_distributed(self, features: Optional[torch.Tensor], group: dist.ProcessGroup) -> None:
        if features is None:
            features = torch.empty(0, self.model.embedding_dim, device=self.device)
        seed = self.coreset_seed if self.coreset_seed is not None else shared_seed(group, self.device)
        self.model.subsample_embedding_distributed(features, self.coreset_sampling_ratio, seed, group)

    def _score(self, images: torch.Tensor) -> Dict[str, torch.Tensor]:
        anomaly_maps, pred_scores = self.model(images)
        return {"anomaly_maps": anomaly_maps, "pred_scores": pred_scores}


Patchcore = PatchCore
