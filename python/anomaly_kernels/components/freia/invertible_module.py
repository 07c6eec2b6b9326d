"""InvertibleModule: the contract every block of an invertible network fulfils.

A block maps a tuple of tensors ``x`` to a tuple ``z`` of the same total size and back, and reports
``log |det J|`` of the map per sample, shape (B,). Shapes are described without the batch
dimension: ``dims_in = [(C, H, W)]`` means one input of shape (B, C, H, W).
"""

from __future__ import annotations

from abc import ABC, abstractmethod
from collections.abc import Sequence

import torch
from torch import nn


def normalise_shape_list(shapes: Sequence[Sequence[int]] | None, argument: str) -> list[tuple[int, ...]]:
    """Turn a list of shapes into a list of ``tuple[int, ...]`` with positive sizes.

    Args:
        shapes: e.g. ``[(C, H, W)]``; ``None`` means no shape (an empty list).
        argument: the argument's name, used in error messages.

    Raises:
        TypeError: ``shapes`` is not a list of integer sequences.
        ValueError: a shape is empty or holds a size < 1.
    """
    if shapes is None:
        return []
    if isinstance(shapes, (str, bytes)) or not isinstance(shapes, Sequence):
        raise TypeError(f"{argument} must be a list of shape tuples such as [(C, H, W)], got {shapes!r}")
    normalised = []
    for shape in shapes:
        if isinstance(shape, (str, bytes)) or not isinstance(shape, Sequence):
            raise TypeError(f"{argument} must be a list of shape tuples such as [(C, H, W)], got entry {shape!r}")
        if len(shape) == 0:
            raise ValueError(f"{argument} holds an empty shape; every shape needs at least a channel size")
        if not all(isinstance(size, int) and not isinstance(size, bool) for size in shape):
            raise TypeError(f"{argument} shapes must hold ints, got {tuple(shape)!r}")
        if any(size < 1 for size in shape):
            raise ValueError(f"{argument} shapes must hold sizes >= 1, got {tuple(shape)!r}")
        normalised.append(tuple(shape))
    return normalised


class InvertibleModule(nn.Module, ABC):
    """Base class of invertible blocks with a tractable log-Jacobian determinant.

    Args:
        dims_in: shapes of the inputs without the batch dimension, e.g. ``[(C, H, W)]`` for one
            input of shape (B, C, H, W) or ``[(C,)]`` for (B, C).
        dims_c: shapes of the conditions without the batch dimension (``None`` or ``[]``: the
            block takes no condition).

    Subclasses implement :meth:`forward` and :meth:`output_dims`.
    """

    def __init__(
        self,
        dims_in: Sequence[Sequence[int]],
        dims_c: Sequence[Sequence[int]] | None = None,
    ) -> None:
        super().__init__()
        self.dims_in = normalise_shape_list(dims_in, "dims_in")
        if not self.dims_in:
            raise ValueError("dims_in must hold at least one input shape, got an empty list")
        self.dims_c = normalise_shape_list(dims_c, "dims_c")

    @abstractmethod
    def forward(
        self,
        x_or_z: tuple[torch.Tensor, ...],
        c: list[torch.Tensor] | None = None,
        rev: bool = False,
        jac: bool = True,
    ) -> tuple[tuple[torch.Tensor, ...], torch.Tensor]:
        """Run the block forward (``rev=False``: x -> z) or backward (``rev=True``: z -> x).

        Args:
            x_or_z: one tensor per entry of ``dims_in``, each of shape (B, *dims_in[i]).
            c: one condition per entry of ``dims_c``, each of shape (B, *dims_c[i]).
            rev: invert the block.
            jac: whether the caller needs the log-Jacobian determinant.

        Returns:
            The outputs (one tensor per entry of ``output_dims(dims_in)``) and
            ``log |det J|`` of the map that was run, shape (B,).
        """

    @abstractmethod
    def output_dims(self, input_dims: Sequence[Sequence[int]]) -> list[tuple[int, ...]]:
        """Shapes of the outputs (without batch dimension) for inputs of shapes ``input_dims``."""
