"""FeatureExtractor: intermediate feature maps of a timm CNN, keyed by layer name."""

from __future__ import annotations

import warnings
from typing import Dict, List, Sequence

import timm
import torch
from torch import nn

# timm builds RGB backbones unless told otherwise (``in_chans=3``), and this class never tells it.
_INPUT_CHANNELS = 3


def _feature_module_names(backbone: str) -> List[str]:
    """Names of the modules whose outputs the features-only version of ``backbone`` can return.

    Position ``i`` of the returned list is the ``out_indices`` value that selects that module.
    The model is built on the meta device: only its structure is needed, so no memory is
    allocated and no weights are initialised (milliseconds even for wide_resnet50_2).
    """
    try:
        with torch.device("meta"):
            probe = timm.create_model(backbone, pretrained=False, features_only=True)
    except (RuntimeError, NotImplementedError):
        # A model whose constructor computes on its tensors cannot be built on meta; build it
        # for real (random weights, pretrained=False, so still offline).
        probe = timm.create_model(backbone, pretrained=False, features_only=True)
    # ``info`` is the full list, independent of the default ``out_indices`` of the model.
    return [entry["module"] for entry in probe.feature_info.info]


class FeatureExtractor(nn.Module):
    """Extract intermediate feature maps from a timm CNN.

    The backbone is created with ``timm.create_model(backbone, pretrained=pre_trained,
    features_only=True, out_indices=...)``. Layer names are mapped to ``out_indices`` through
    the backbone's ``feature_info`` (the module names timm can return features from): for
    ResNets ``act1, layer1 … layer4`` are indices ``0 … 4``, so ``layer1`` → 1.

    Args:
        backbone: timm model name, e.g. ``"resnet18"`` or ``"wide_resnet50_2"``.
        layers: names of the modules whose outputs are returned, e.g. ``["layer1", "layer2"]``.
            Unknown names are dropped with a ``UserWarning``; the caller's list is not modified.
        pre_trained: load ImageNet weights. They are downloaded on first use, so this needs
            network access or a populated cache; ``pre_trained=False`` (random weights) works
            offline.

    Attributes:
        backbone: the timm model name.
        layers: the kept layer names, in the order given (unknown names removed).
        idx: ``out_indices`` of the kept layers, in the order of ``layers``.
        out_dims: number of channels of each kept layer, in the order of ``layers``.
        feature_extractor: the timm features-only model.

    Raises:
        TypeError: ``backbone`` is not a string or ``layers`` is not a sequence of strings.
        ValueError: unknown backbone, duplicated layer names, or no valid layer left.
        RuntimeError: ``pre_trained=True`` and the weights could not be loaded.

    Example:
        >>> extractor = FeatureExtractor("resnet18", ["layer1", "layer2", "layer3"], pre_trained=False)
        >>> features = extractor(torch.rand(2, 3, 256, 256))
        >>> list(features)
        ['layer1', 'layer2', 'layer3']
        >>> [tuple(feature.shape) for feature in features.values()]
        [(2, 64, 64, 64), (2, 128, 32, 32), (2, 256, 16, 16)]
        >>> extractor.out_dims
        [64, 128, 256]
    """

    def __init__(self, backbone: str, layers: List[str], pre_trained: bool = True) -> None:
        super().__init__()
        if not isinstance(backbone, str):
            raise TypeError(f"backbone must be a timm model name (str), got {type(backbone).__name__}")
        if isinstance(layers, str) or not isinstance(layers, Sequence):
            raise TypeError(f"layers must be a list of layer names, got {layers!r}")
        if not all(isinstance(layer, str) for layer in layers):
            raise TypeError(f"layers must contain only strings, got {layers!r}")
        duplicates = sorted({layer for layer in layers if list(layers).count(layer) > 1})
        if duplicates:
            raise ValueError(f"layers must not repeat a name, got {duplicates} more than once in {list(layers)}")
        if not timm.is_model(backbone):
            raise ValueError(f"backbone must be a timm model name, got unknown model '{backbone}'")

        self.backbone = backbone
        # A copy: unknown names are removed from it, never from the caller's list.
        self.layers: List[str] = list(layers)
        self._available_layers = _feature_module_names(backbone)
        self.idx = self._map_layer_to_idx()

        # timm returns features in module order whatever the order of out_indices, so ask for
        # them sorted and reorder in forward to the order of ``layers``.
        out_indices = sorted(self.idx)
        try:
            self.feature_extractor = timm.create_model(
                backbone, pretrained=pre_trained, features_only=True, out_indices=out_indices
            )
        except (OSError, RuntimeError) as error:
            if not pre_trained:
                raise
            raise RuntimeError(
                f"could not load the pretrained weights of backbone '{backbone}': {error}. Pretrained "
                "weights are downloaded on first use and need network access (or a populated cache); "
                "pass pre_trained=False to build the backbone with random weights."
            ) from error

        returned_names = list(self.feature_extractor.feature_info.module_name())
        returned_channels = list(self.feature_extractor.feature_info.channels())
        if sorted(returned_names) != sorted(self.layers):
            raise RuntimeError(
                f"timm returned features of {returned_names} for out_indices {out_indices}, expected {self.layers}"
            )
        channels_by_name = dict(zip(returned_names, returned_channels))
        self.out_dims: List[int] = [int(channels_by_name[layer]) for layer in self.layers]
        # Position in the backbone's (module-ordered) output of each entry of ``layers``.
        module_order = sorted(self.layers, key=self._available_layers.index)
        self._output_positions = [module_order.index(layer) for layer in self.layers]

    def _map_layer_to_idx(self, offset: int = 3) -> List[int]:
        """Map the names in ``self.layers`` to the backbone's ``out_indices``.

        The index of a layer is its position in the backbone's ``feature_info``. Names that are
        not there are removed from ``self.layers`` with a ``UserWarning`` naming the available ones.

        Args:
            offset: kept for the documented signature. Indices come from ``feature_info``, which
                is right for every timm backbone, so no fixed offset between the backbone's
                children and its feature indices (3 for ResNets) is assumed; the value is unused.

        Returns:
            One index per kept layer, in the order of ``self.layers``.

        Raises:
            ValueError: none of the requested layers exists in the backbone.
        """
        kept: List[str] = []
        for layer in self.layers:
            if layer in self._available_layers:
                kept.append(layer)
            else:
                warnings.warn(
                    f"Layer '{layer}' not found in backbone '{self.backbone}' and is ignored; "
                    f"available layers: {self._available_layers}",
                    UserWarning,
                    stacklevel=3,
                )
        if not kept:
            raise ValueError(
                f"layers must name at least one feature layer of backbone '{self.backbone}', got {self.layers}; "
                f"available layers: {self._available_layers}"
            )
        self.layers = kept
        return [self._available_layers.index(layer) for layer in kept]

    def forward(self, input_tensor: torch.Tensor) -> Dict[str, torch.Tensor]:
        """Forward-pass ``input_tensor`` through the CNN and collect the requested feature maps.

        Args:
            input_tensor: (B, 3, H, W) floating-point images.

        Returns:
            ``{layer: (B, out_dims[i], H / stride_i, W / stride_i)}`` in the order of ``self.layers``;
            for ResNets the strides of ``layer1 … layer4`` are 4, 8, 16, 32.

        Raises:
            TypeError: ``input_tensor`` is not a floating-point tensor.
            ValueError: ``input_tensor`` is not 4-D with 3 channels.
        """
        if not isinstance(input_tensor, torch.Tensor):
            raise TypeError(f"input_tensor must be a torch.Tensor, got {type(input_tensor).__name__}")
        if not input_tensor.is_floating_point():
            raise TypeError(f"input_tensor must be a floating-point tensor, got dtype {input_tensor.dtype}")
        if input_tensor.dim() != 4 or input_tensor.shape[1] != _INPUT_CHANNELS:
            raise ValueError(
                f"input_tensor must have shape (B, {_INPUT_CHANNELS}, H, W), got {tuple(input_tensor.shape)}"
            )
        features = self.feature_extractor(input_tensor)
        return {layer: features[position] for layer, position in zip(self.layers, self._output_positions)}
