"""DynamicBufferModule: buffers whose shape is only known after ``fit`` still load from checkpoints."""

from __future__ import annotations

from abc import ABC

import torch
from torch import nn


class DynamicBufferModule(ABC, nn.Module):
    """``nn.Module`` whose buffers are resized to the shapes stored in a state dict before loading.

    Fitted modules (PCA, GaussianKDE, ...) register empty buffers (``torch.empty(0)``) and give
    them their shapes in ``fit``; a plain ``nn.Module`` would then refuse a fitted checkpoint in a
    fresh module with a size-mismatch error. This class resizes each own persistent buffer whose
    stored shape differs, then defers to ``nn.Module``.

    Example:
        >>> class Fitted(DynamicBufferModule):
        ...     def __init__(self):
        ...         super().__init__()
        ...         self.register_buffer("mean", torch.empty(0))
        >>> fitted = Fitted(); fitted.mean = torch.ones(3)
        >>> fresh = Fitted(); _ = fresh.load_state_dict(fitted.state_dict())
        >>> fresh.mean.shape
        torch.Size([3])
    """

    def get_tensor_attribute(self, attribute_name: str) -> torch.Tensor:
        """Return the attribute ``attribute_name`` if it is a tensor.

        Raises:
            ValueError: the attribute is not a ``torch.Tensor``.
        """
        attribute = getattr(self, attribute_name)
        if isinstance(attribute, torch.Tensor):
            return attribute
        raise ValueError(f"Attribute with name '{attribute_name}' is not a torch Tensor")

    def _load_from_state_dict(self, state_dict: dict, prefix: str, *args) -> None:
        """Resize local buffers to the shapes stored in ``state_dict``, then load as usual."""
        persistent = {
            name: buffer
            for name, buffer in self._buffers.items()
            if buffer is not None and name not in self._non_persistent_buffers_set
        }
        for name, buffer in persistent.items():
            key = prefix + name
            if key in state_dict and state_dict[key].shape != buffer.shape:
                # Replace rather than resize_ so a buffer shared with the caller is never touched.
                self._buffers[name] = buffer.new_empty(state_dict[key].shape)
        super()._load_from_state_dict(state_dict, prefix, *args)
