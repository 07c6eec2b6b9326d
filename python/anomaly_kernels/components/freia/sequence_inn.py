"""SequenceINN: a chain of invertible blocks, each feeding the next.

Shapes are given without the batch dimension: ``SequenceINN(C, H, W)`` takes (B, C, H, W).
"""

from __future__ import annotations

from collections.abc import Iterator, Sequence

import torch
from torch import nn

from anomaly_kernels.components.freia.invertible_module import InvertibleModule


class SequenceINN(InvertibleModule):
    """An invertible network made of blocks applied one after the other.

    Args:
        *dims: input shape without the batch dimension, e.g. ``SequenceINN(C)`` for (B, C) or
            ``SequenceINN(C, H, W)`` for (B, C, H, W).
        force_tuple_output: return ``(z,)`` instead of ``z`` from :meth:`forward`.

    Blocks are added with :meth:`append`; a block may be conditioned on one entry of the
    condition list ``c`` passed to :meth:`forward`.

    Example:
        >>> from anomaly_kernels.components.freia import AllInOneBlock
        >>> def subnet(c_in, c_out):
        ...     return nn.Sequential(nn.Conv2d(c_in, 8, 3, padding=1), nn.ReLU(), nn.Conv2d(8, c_out, 3, padding=1))
        >>> flow = SequenceINN(4, 8, 8)
        >>> for _ in range(3):
        ...     flow.append(AllInOneBlock, subnet_constructor=subnet, permute_soft=True)
        >>> z, log_det = flow(torch.randn(2, 4, 8, 8))
        >>> z.shape, log_det.shape
        (torch.Size([2, 4, 8, 8]), torch.Size([2]))
    """

    def __init__(self, *dims: int, force_tuple_output: bool = False) -> None:
        if not dims or not all(isinstance(size, int) and not isinstance(size, bool) for size in dims):
            raise TypeError(f"SequenceINN takes the input shape as ints, e.g. SequenceINN(C, H, W), got {dims!r}")
        super().__init__([dims])
        self.shapes: list[tuple[int, ...]] = [tuple(dims)]
        self.conditions: list[int | None] = []
        self.module_list = nn.ModuleList()
        self.force_tuple_output = bool(force_tuple_output)

    def append(
        self,
        module_class: type[InvertibleModule],
        cond: int | None = None,
        cond_shape: Sequence[int] | None = None,
        **kwargs,
    ) -> None:
        """Build ``module_class(dims_in=[previous output shape], **kwargs)`` and add it to the chain.

        Args:
            module_class: an :class:`InvertibleModule` subclass with one input and one output.
            cond: index into the condition list ``c`` of :meth:`forward` this block is conditioned on.
            cond_shape: shape of that condition without the batch dimension, e.g. ``(C_c,)``;
                passed to the block as ``dims_c=[cond_shape]``.
            **kwargs: further constructor arguments of ``module_class``.
        """
        if not (isinstance(module_class, type) and issubclass(module_class, InvertibleModule)):
            raise TypeError(f"module_class must be an InvertibleModule subclass, got {module_class!r}")
        if (cond is None) != (cond_shape is None):
            raise ValueError(f"cond and cond_shape go together: got cond={cond!r}, cond_shape={cond_shape!r}")
        if cond is not None:
            if not isinstance(cond, int) or isinstance(cond, bool) or cond < 0:
                raise ValueError(f"cond must be an int >= 0 (an index into the condition list c), got {cond!r}")
            if "dims_c" in kwargs:
                raise ValueError("pass the condition shape as cond_shape, not dims_c")
            kwargs["dims_c"] = [tuple(cond_shape)]
        dims_in = [self.shapes[-1]]
        module = module_class(dims_in, **kwargs)
        output_dims = module.output_dims(dims_in)
        if len(output_dims) != 1:
            raise ValueError(
                f"SequenceINN chains blocks with a single output; {module_class.__name__} returned {len(output_dims)}"
            )
        self.module_list.append(module)
        self.shapes.append(tuple(output_dims[0]))
        self.conditions.append(cond)

    def output_dims(self, input_dims: Sequence[Sequence[int]] | None = None) -> list[tuple[int, ...]]:
        """Shape of ``z`` without the batch dimension, ``[(C', *S')]``, for the input shape ``[(C, *S)]``."""
        if input_dims is not None and [tuple(shape) for shape in input_dims] != [self.shapes[0]]:
            raise ValueError(f"this SequenceINN takes input_dims=[{self.shapes[0]}], got {input_dims!r}")
        return [self.shapes[-1]]

    def forward(
        self,
        x_or_z: torch.Tensor | tuple[torch.Tensor],
        c: Sequence[torch.Tensor] | None = None,
        rev: bool = False,
        jac: bool = True,
    ) -> tuple[torch.Tensor | tuple[torch.Tensor], torch.Tensor]:
        """Run the blocks in order (x -> z), or in reverse order inverting each (``rev=True``: z -> x).

        Args:
            x_or_z: tensor (B, *dims) (or a one-element tuple holding it).
            c: list of conditions; a block appended with ``cond=i`` receives ``c[i]``.
            rev: invert the network.
            jac: passed to every block (see the blocks' documentation).

        Returns:
            ``(out, log_jac_det)``: ``out`` of shape (B, *output_dims) (``(out,)`` with
            ``force_tuple_output``) and the summed ``log |det J|`` of all blocks, shape (B,).
        """
        if isinstance(x_or_z, (tuple, list)):
            if len(x_or_z) != 1:
                raise ValueError(f"x_or_z must be a tensor or a tuple holding one tensor, got {len(x_or_z)} entries")
            x_or_z = x_or_z[0]
        if not isinstance(x_or_z, torch.Tensor):
            raise TypeError(f"x_or_z must be a tensor, got {type(x_or_z).__name__}")
        expected = self.shapes[-1] if rev else self.shapes[0]
        if x_or_z.dim() != len(expected) + 1 or tuple(x_or_z.shape[1:]) != expected:
            raise ValueError(f"x_or_z must have shape (B, {', '.join(map(str, expected))}), got {tuple(x_or_z.shape)}")
        self._check_conditions(c)

        order = reversed(range(len(self.module_list))) if rev else range(len(self.module_list))
        log_jac_det = x_or_z.new_zeros(x_or_z.shape[0])
        hidden: tuple[torch.Tensor, ...] = (x_or_z,)
        for index in order:
            cond = self.conditions[index]
            block_c = None if cond is None else [c[cond]]
            hidden, block_log_det = self.module_list[index](hidden, c=block_c, rev=rev, jac=jac)
            log_jac_det = log_jac_det + block_log_det
        return (hidden if self.force_tuple_output else hidden[0]), log_jac_det

    def _check_conditions(self, c: Sequence[torch.Tensor] | None) -> None:
        """Check that ``c`` holds every condition index the blocks refer to, and nothing is given needlessly."""
        used = [cond for cond in self.conditions if cond is not None]
        if not used:
            if c is not None and len(c) > 0:
                raise ValueError("c was given but no block of this SequenceINN is conditioned (append(..., cond=i))")
            return
        if c is None:
            raise ValueError(
                f"this SequenceINN has conditioned blocks; pass c, a list with at least {max(used) + 1} tensor(s)"
            )
        if isinstance(c, torch.Tensor) or not isinstance(c, (tuple, list)):
            raise TypeError(f"c must be a list of condition tensors, got {type(c).__name__}")
        if len(c) <= max(used):
            raise ValueError(
                f"c must hold at least {max(used) + 1} tensor(s) (blocks use indices {sorted(set(used))}), got {len(c)}"
            )

    def __len__(self) -> int:
        """Number of blocks."""
        return len(self.module_list)

    def __getitem__(self, index: int) -> nn.Module:
        """The block at ``index``."""
        return self.module_list[index]

    def __iter__(self) -> Iterator[nn.Module]:
        """Iterate over the blocks in forward order."""
        return iter(self.module_list)
