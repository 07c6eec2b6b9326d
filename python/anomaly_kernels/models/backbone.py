"""FrozenBackboneModel: the base of the models' torch modules, a CNN feature extractor that never trains."""

from __future__ import annotations

from typing import Dict, Optional, Sequence, Tuple

import torch

from anomaly_kernels.components.base import DynamicBufferModule
from anomaly_kernels.components.feature_extractors import FeatureExtractor
from anomaly_kernels.models._arguments import check_backbone_layers
from anomaly_kernels.models.finite_images import check_finite_images

_IMAGE_CHANNELS = 3


class FrozenBackboneModel(DynamicBufferModule):
    """A :class:`FeatureExtractor` whose weights, batch-norm statistics and mode are frozen.

    PatchCore, PaDiM and DFKDE describe normal images with the features of a fixed CNN and fit
    statistics (memory bank, Gaussians, density) to them. The backbone must give the same
    features while the statistics are collected and while images are scored, so its parameters
    do not require gradients and it stays in eval mode even when Lightning puts the model in
    training mode (batch-norm running statistics would otherwise drift during the training epoch).
    Subclasses register their fitted state as buffers; as a :class:`DynamicBufferModule`, buffers
    whose size is only known after fitting are resized when a checkpoint is loaded.

    Args:
        backbone: timm model name, e.g. ``"resnet18"``.
        layers: feature layers to extract; every name must exist in the backbone.
        pre_trained: load ImageNet weights (downloaded on first use: needs network access or a
            populated cache). ``False`` builds random weights offline.

    Attributes:
        backbone: the timm model name.
        layers: the layer names, in the order given.
        feature_extractor: the frozen :class:`FeatureExtractor`.

    Every image reaches the models through :meth:`extract_features`, which refuses images with
    NaN or infinite values with a ValueError naming their index in the batch, in training and at
    inference alike; the models' ``forward`` also refuses finite images whose results overflow
    (:mod:`anomaly_kernels.models.finite_images`).

    Raises:
        TypeError / ValueError: unknown backbone or layer, see
            :func:`anomaly_kernels.models._arguments.check_backbone_layers`.
    """

    def __init__(self, backbone: str, layers: Sequence[str], pre_trained: bool = True) -> None:
        super().__init__()
        if not isinstance(pre_trained, bool):
            raise TypeError(f"pre_trained must be a bool, got {pre_trained!r}")
        self.layers = check_backbone_layers(backbone, layers)
        self.backbone = backbone
        self.feature_extractor = FeatureExtractor(backbone, list(self.layers), pre_trained=pre_trained)
        self.feature_extractor.requires_grad_(False)
        self.feature_extractor.eval()

    def train(self, mode: bool = True) -> "FrozenBackboneModel":
        """Set the training mode of the module; the feature extractor always stays in eval mode."""
        super().train(mode)
        self.feature_extractor.eval()
        return self

    def extract_features(
        self, images: torch.Tensor, input_size: Optional[Tuple[int, int]] = None
    ) -> Dict[str, torch.Tensor]:
        """Feature maps of ``images``, without autograd.

        Args:
            images: (B, 3, H, W) floating-point images, B >= 1.
            input_size: the (H, W) the images must have, or ``None`` for any size.

        Returns:
            ``{layer: (B, C_layer, h_layer, w_layer)}`` in the order of ``layers``.

        Raises:
            TypeError / ValueError: not (B, 3, H, W) floats of ``input_size``.
            ValueError: an image holds NaN or ±inf; the message names its index in the batch
                (see :mod:`anomaly_kernels.models.finite_images` for why every model refuses
                such images instead of scoring them NaN).
        """
        check_images(images, input_size)
        check_finite_images(images)
        with torch.no_grad():
            return self.feature_extractor(images)


def check_images(images: torch.Tensor, input_size: Optional[Tuple[int, int]] = None) -> None:
    """Raise a TypeError/ValueError naming ``images`` unless they are (B, 3, H, W) floats of ``input_size``."""
    if not isinstance(images, torch.Tensor):
        raise TypeError(f"images must be a torch.Tensor (B, 3, H, W), got {type(images).__name__}")
    if not images.is_floating_point():
        raise TypeError(f"images must be a floating-point tensor, got dtype {images.dtype}")
    if images.dim() != 4 or images.shape[1] != _IMAGE_CHANNELS or images.shape[0] == 0:
        raise ValueError(f"images must have shape (B, 3, H, W) with B >= 1, got {tuple(images.shape)}")
    if input_size is not None and tuple(images.shape[2:]) != tuple(input_size):
        raise ValueError(
            f"images must have the model's input_size {tuple(input_size)}, got spatial size {tuple(images.shape[2:])}"
        )
