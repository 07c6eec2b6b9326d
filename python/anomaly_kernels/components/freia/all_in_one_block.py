"""AllInOneBlock: affine coupling, global affine scaling and a fixed channel mixing in one block.

The block combines three invertible maps on an input of shape (B, C, *S) (``S`` empty for (B, C)
vectors, ``(H, W)`` for feature maps):

1. **Affine coupling** (Dinh et al., RealNVP). The channels are split into ``x1`` (the first
   ``C - C // 2``) and ``x2`` (the last ``C // 2``). A subnetwork sees ``x1`` (and the condition,
   concatenated along the channels) and returns ``2 * (C // 2)`` channels ``a = (a_s, a_t)``;
   ``s = clamp * tanh(0.1 * a_s)``, ``t = 0.1 * a_t`` and ``x2' = x2 * exp(s) + t``. The 0.1
   damping makes a freshly initialised block start close to the identity, ``tanh`` bounds the
   log-scale to (-clamp, clamp) so the inverse stays well conditioned. With ``gin_block=True``
   (general incompressible-flow networks) the per-sample mean of ``s`` is subtracted, so the
   coupling preserves volume.
2. **Global affine scaling** (the actnorm of Kingma & Dhariwal, Glow): ``y = g * x + o`` with one
   learned scale ``g > 0`` and offset ``o`` per channel. ``g`` is a positive function of a free
   parameter (``SOFTPLUS``: ``softplus(p)``; ``SIGMOID``: ``2 * sigmoid(p)``, so ``g`` in (0, 2);
   ``EXP``: ``exp(p)``) initialised so that ``g = global_affine_init``. In GIN mode ``g`` is
   fixed to 1 and only the offset is learned, keeping the whole block volume preserving.
3. **Channel mixing** by a fixed random orthogonal matrix ``W`` (C, C): a permutation matrix by
   default, a random rotation (Q of a QR decomposition of a Gaussian matrix) with
   ``permute_soft=True``, optionally followed by ``learned_householder_permutation`` learned
   Householder reflections. ``W`` is orthogonal, so it adds nothing to the log-determinant and
   ``W^T`` inverts it exactly.

Forward order: coupling -> global affine -> mixing; with ``reverse_permutation=True`` the mixing
comes first: mixing -> coupling -> global affine. ``rev=True`` runs the exact inverse in the
opposite order.

``log |det J|`` per sample, shape (B,):
``sum(s) + prod(S) * sum_c log(g_c)`` (the global scale acts on every spatial position, hence the
factor ``H * W`` for feature maps); the inverse returns the negative.
"""

from __future__ import annotations

import math
from collections.abc import Callable, Sequence

import torch
from torch import nn
from torch.nn import functional as F

from anomaly_kernels.components.freia.invertible_module import InvertibleModule

GLOBAL_AFFINE_TYPES = ("SOFTPLUS", "SIGMOID", "EXP")

# The subnetwork output is damped by this factor so that a new block is close to the identity.
SUBNET_OUTPUT_DAMPING = 0.1


def _inverse_global_activation(global_affine_type: str, scale: float) -> float:
    """Free parameter ``p`` for which the activation of ``global_affine_type`` gives ``scale``."""
    if global_affine_type == "SOFTPLUS":
        # softplus^-1(y) = log(exp(y) - 1), written to stay finite for large y.
        return scale + math.log(-math.expm1(-scale))
    if global_affine_type == "SIGMOID":
        # 2 * sigmoid(p) = y  <=>  p = logit(y / 2).
        return math.log(scale / (2.0 - scale))
    return math.log(scale)


class AllInOneBlock(InvertibleModule):
    """Affine coupling + global affine scaling + fixed channel mixing, exactly invertible.

    Args:
        dims_in: one input shape without the batch dimension: ``[(C,)]`` for (B, C) vectors or
            ``[(C, H, W)]`` for (B, C, H, W) feature maps (any number of spatial dims works).
            ``C >= 2``.
        dims_c: condition shapes ``[(C_c, *S)]`` whose spatial dims ``S`` equal the input's; the
            conditions are concatenated to ``x1`` along the channels. ``None``/``[]``: none.
        subnet_constructor: callable ``(c_in, c_out) -> nn.Module`` building the coupling
            subnetwork, which maps (B, c_in, *S) to (B, c_out, *S); ``c_in = C - C // 2 + sum
            C_c``, ``c_out = 2 * (C // 2)``. A module-level function keeps the block picklable.
        affine_clamping: bound of the coupling log-scale ``s`` in (-clamp, clamp), > 0.
        gin_block: make the block volume preserving (log-det 0): the mean of ``s`` is removed per
            sample and the global scale is fixed to 1.
        global_affine_init: initial per-channel global scale ``g`` (> 0, and < 2 for ``SIGMOID``).
        global_affine_type: parametrisation of ``g``: ``"SOFTPLUS"``, ``"SIGMOID"`` or ``"EXP"``.
        permute_soft: mix channels with a random orthogonal matrix instead of a permutation.
        learned_householder_permutation: number of learned Householder reflections applied after
            the fixed mixing (0: none).
        reverse_permutation: apply the channel mixing before the coupling instead of after.

    The random mixing matrix (buffer ``w_perm``) and the initial Householder vectors are drawn
    from torch's global generator, so ``torch.manual_seed`` makes them reproducible; ``w_perm``
    lives in the state dict so a checkpoint restores the same map. ``w_perm`` is kept in float64
    and cast to the input's dtype when used: its transpose then inverts it to the working
    precision both in float32 and after ``.double()`` (a float32-rounded rotation is orthogonal
    only to ~1e-7). ``.float()``/``.half()`` convert it like any buffer.

    Example:
        >>> def subnet(c_in, c_out):
        ...     return nn.Sequential(nn.Linear(c_in, 16), nn.ReLU(), nn.Linear(16, c_out))
        >>> block = AllInOneBlock([(6,)], subnet_constructor=subnet)
        >>> x = torch.randn(4, 6)
        >>> (z,), log_det = block((x,))
        >>> (x_back,), log_det_rev = block((z,), rev=True)
        >>> torch.allclose(x, x_back, atol=1e-5), torch.allclose(log_det, -log_det_rev)
        (True, True)
    """

    def __init__(
        self,
        dims_in: Sequence[Sequence[int]],
        dims_c: Sequence[Sequence[int]] | None = None,
        subnet_constructor: Callable[[int, int], nn.Module] | None = None,
        affine_clamping: float = 2.0,
        gin_block: bool = False,
        global_affine_init: float = 1.0,
        global_affine_type: str = "SOFTPLUS",
        permute_soft: bool = False,
        learned_householder_permutation: int = 0,
        reverse_permutation: bool = False,
    ) -> None:
        super().__init__(dims_in, dims_c)
        if len(self.dims_in) != 1:
            raise ValueError(f"AllInOneBlock takes exactly one input, got dims_in={self.dims_in}")
        channels, *spatial = self.dims_in[0]
        if channels < 2:
            raise ValueError(
                f"AllInOneBlock needs at least 2 channels to split into two halves, got dims_in={self.dims_in}"
            )
        for shape in self.dims_c:
            if list(shape[1:]) != spatial:
                raise ValueError(
                    f"dims_c shape {shape} must have the same spatial dims as the input {tuple(spatial)} "
                    "(conditions are concatenated along the channels)"
                )
        if subnet_constructor is None:
            raise ValueError(
                "subnet_constructor is required: a callable (c_in, c_out) -> nn.Module building the coupling subnet"
            )
        if not callable(subnet_constructor):
            raise TypeError(
                f"subnet_constructor must be callable (c_in, c_out) -> nn.Module, got {subnet_constructor!r}"
            )
        if not _is_real_number(affine_clamping) or not math.isfinite(affine_clamping) or affine_clamping <= 0:
            raise ValueError(f"affine_clamping must be a finite number > 0, got {affine_clamping!r}")
        if not isinstance(global_affine_type, str) or global_affine_type.upper() not in GLOBAL_AFFINE_TYPES:
            raise ValueError(
                f"global_affine_type must be one of {', '.join(GLOBAL_AFFINE_TYPES)}, got {global_affine_type!r}"
            )
        global_affine_type = global_affine_type.upper()
        if not _is_real_number(global_affine_init) or not math.isfinite(global_affine_init) or global_affine_init <= 0:
            raise ValueError(f"global_affine_init must be a finite number > 0, got {global_affine_init!r}")
        if global_affine_type == "SIGMOID" and global_affine_init >= 2.0:
            raise ValueError(
                f"global_affine_init must be in (0, 2) for global_affine_type='SIGMOID' (g = 2 * sigmoid(p)), "
                f"got {global_affine_init!r}"
            )
        if gin_block and global_affine_init != 1.0:
            raise ValueError(
                "gin_block=True fixes the global scale to 1 to keep the block volume preserving, "
                f"so global_affine_init must be 1.0, got {global_affine_init!r}"
            )
        if (
            not isinstance(learned_householder_permutation, int)
            or isinstance(learned_householder_permutation, bool)
            or learned_householder_permutation < 0
        ):
            raise ValueError(
                f"learned_householder_permutation must be an int >= 0 (number of reflections), "
                f"got {learned_householder_permutation!r}"
            )

        self.channels = channels
        self.spatial_size = math.prod(spatial)
        self.split_len1 = channels - channels // 2
        self.split_len2 = channels // 2
        self.condition_channels = sum(shape[0] for shape in self.dims_c)
        self.clamp = float(affine_clamping)
        self.gin_block = bool(gin_block)
        self.global_affine_type = global_affine_type
        self.permute_soft = bool(permute_soft)
        self.reverse_permutation = bool(reverse_permutation)

        # Per-channel parameters broadcast over the batch and every spatial dim: (1, C, 1, ..., 1).
        broadcast_shape = (1, channels) + (1,) * len(spatial)
        if self.gin_block:
            self.register_parameter("global_scale", None)
        else:
            initial = _inverse_global_activation(global_affine_type, float(global_affine_init))
            self.global_scale = nn.Parameter(torch.full(broadcast_shape, initial))
        self.global_offset = nn.Parameter(torch.zeros(broadcast_shape))

        self.register_buffer("w_perm", _random_channel_mixing(channels, soft=self.permute_soft))
        if learned_householder_permutation > 0:
            self.householder_vectors = nn.Parameter(0.2 * torch.randn(learned_householder_permutation, channels))
        else:
            self.register_parameter("householder_vectors", None)

        subnet = subnet_constructor(self.split_len1 + self.condition_channels, 2 * self.split_len2)
        if not isinstance(subnet, nn.Module):
            raise TypeError(
                "subnet_constructor must return an nn.Module (so its parameters are trained and saved), "
                f"got {type(subnet)}"
            )
        self.subnet = subnet

    def output_dims(self, input_dims: Sequence[Sequence[int]]) -> list[tuple[int, ...]]:
        """Output shapes equal input shapes: ``[(C, *S)] -> [(C, *S)]``."""
        if len(input_dims) != 1:
            raise ValueError(f"AllInOneBlock takes exactly one input, got input_dims={input_dims}")
        return [tuple(input_dims[0])]

    def forward(
        self,
        x_or_z: tuple[torch.Tensor, ...],
        c: list[torch.Tensor] | None = None,
        rev: bool = False,
        jac: bool = True,
    ) -> tuple[tuple[torch.Tensor], torch.Tensor]:
        """Map x -> z (``rev=False``) or z -> x (``rev=True``).

        Args:
            x_or_z: a one-element tuple ``(x,)`` with x of shape (B, C, *S).
            c: list of conditions, one per entry of ``dims_c``, each (B, C_c, *S); ``None`` for
                an unconditioned block.
            rev: run the exact inverse.
            jac: accepted for interface compatibility; the log-determinant is a by-product of
                the coupling and always returned.

        Returns:
            ``((out,), log_jac_det)``: ``out`` of shape (B, C, *S) and ``log |det J|`` of the
            map that was run, shape (B,); ``log_jac_det(rev=True) = -log_jac_det(rev=False)``
            at corresponding points.
        """
        x = self._checked_input(x_or_z)
        condition = self._checked_condition(c, x)
        mixing = self._mixing_matrix()
        scale, global_log_det = self._global_scale_and_log_det()

        if not rev:
            hidden = _mix_channels(mixing, x) if self.reverse_permutation else x
            hidden, coupling_log_det = self._coupling(hidden, condition, rev=False)
            hidden = hidden * scale + self.global_offset if scale is not None else hidden + self.global_offset
            out = hidden if self.reverse_permutation else _mix_channels(mixing, hidden)
            log_det = coupling_log_det + global_log_det
        else:
            hidden = x if self.reverse_permutation else _mix_channels(mixing.t(), x)
            hidden = (hidden - self.global_offset) / scale if scale is not None else hidden - self.global_offset
            hidden, coupling_log_det = self._coupling(hidden, condition, rev=True)
            out = _mix_channels(mixing.t(), hidden) if self.reverse_permutation else hidden
            log_det = -(coupling_log_det + global_log_det)
        return (out,), log_det

    def _coupling(
        self, x: torch.Tensor, condition: torch.Tensor | None, rev: bool
    ) -> tuple[torch.Tensor, torch.Tensor]:
        """Affine coupling (B, C, *S) -> (B, C, *S) and the forward log-det ``sum(s)``, (B,).

        The first half passes unchanged, so ``s`` and ``t`` are the same in both directions and
        the inverse is exact.
        """
        x1, x2 = x[:, : self.split_len1], x[:, self.split_len1 :]
        subnet_input = x1 if condition is None else torch.cat([x1, condition], dim=1)
        subnet_output = self.subnet(subnet_input)
        expected = (x.shape[0], 2 * self.split_len2, *x.shape[2:])
        if tuple(subnet_output.shape) != expected:
            raise ValueError(
                f"the subnet built by subnet_constructor must map {tuple(subnet_input.shape)} to {expected}, "
                f"got {tuple(subnet_output.shape)}"
            )
        subnet_output = SUBNET_OUTPUT_DAMPING * subnet_output
        log_scale = self.clamp * torch.tanh(subnet_output[:, : self.split_len2])
        shift = subnet_output[:, self.split_len2 :]
        non_batch_dims = tuple(range(1, x.dim()))
        if self.gin_block:
            log_scale = log_scale - log_scale.mean(dim=non_batch_dims, keepdim=True)
            # The centred log-scale sums to zero by construction; report it exactly.
            log_det = x.new_zeros(x.shape[0])
        else:
            log_det = log_scale.sum(dim=non_batch_dims)
        if rev:
            y2 = (x2 - shift) * torch.exp(-log_scale)
        else:
            y2 = x2 * torch.exp(log_scale) + shift
        return torch.cat([x1, y2], dim=1), log_det

    def _global_scale_and_log_det(self) -> tuple[torch.Tensor | None, torch.Tensor]:
        """The per-channel global scale (1, C, 1, ..., 1) (``None`` in GIN mode) and its log-det (scalar)."""
        if self.global_scale is None:
            return None, self.global_offset.new_zeros(())
        if self.global_affine_type == "SOFTPLUS":
            scale = F.softplus(self.global_scale)
        elif self.global_affine_type == "SIGMOID":
            scale = 2.0 * torch.sigmoid(self.global_scale)
        else:
            scale = torch.exp(self.global_scale)
        # The same per-channel scale acts at every spatial position.
        return scale, self.spatial_size * torch.log(scale).sum()

    def _mixing_matrix(self) -> torch.Tensor:
        """The orthogonal channel-mixing matrix (C, C): Householder reflections after ``w_perm``."""
        mixing = self.w_perm.to(self.global_offset.dtype)
        if self.householder_vectors is not None:
            for vector in self.householder_vectors:
                # (I - 2 v v^T / v^T v) @ mixing, without forming the reflection matrix.
                mixing = mixing - (2.0 / vector.dot(vector)) * torch.outer(vector, vector @ mixing)
        return mixing

    def _checked_input(self, x_or_z: tuple[torch.Tensor, ...]) -> torch.Tensor:
        """Validate ``(x,)`` against ``dims_in`` and the block's dtype and device; return x."""
        if isinstance(x_or_z, torch.Tensor) or not isinstance(x_or_z, (tuple, list)):
            raise TypeError(f"x_or_z must be a tuple holding one tensor, e.g. (x,), got {type(x_or_z).__name__}")
        if len(x_or_z) != 1 or not isinstance(x_or_z[0], torch.Tensor):
            raise TypeError(f"x_or_z must be a tuple holding exactly one tensor, got {len(x_or_z)} entries")
        x = x_or_z[0]
        expected = self.dims_in[0]
        if x.dim() != len(expected) + 1 or tuple(x.shape[1:]) != expected:
            raise ValueError(f"x_or_z[0] must have shape (B, {', '.join(map(str, expected))}), got {tuple(x.shape)}")
        if x.dtype != self.global_offset.dtype:
            raise TypeError(
                f"x_or_z[0] has dtype {x.dtype} but the block's parameters are {self.global_offset.dtype}; "
                "convert the block (e.g. .double()) or the input"
            )
        if x.device != self.global_offset.device:
            raise ValueError(f"x_or_z[0] is on {x.device} but the block is on {self.global_offset.device}")
        return x

    def _checked_condition(self, c: list[torch.Tensor] | None, x: torch.Tensor) -> torch.Tensor | None:
        """Validate the conditions against ``dims_c``; return them concatenated, (B, sum C_c, *S), or None."""
        if not self.dims_c:
            if c is not None and len(c) > 0:
                raise ValueError("c was given but this block has no condition (it was built without dims_c)")
            return None
        if c is None:
            raise ValueError(f"this block is conditioned on dims_c={self.dims_c}; pass c=[condition]")
        if isinstance(c, torch.Tensor) or not isinstance(c, (tuple, list)):
            raise TypeError(f"c must be a list of tensors, one per dims_c entry, got {type(c).__name__}")
        if len(c) != len(self.dims_c):
            raise ValueError(f"c must hold {len(self.dims_c)} tensor(s) (dims_c={self.dims_c}), got {len(c)}")
        for index, (condition, shape) in enumerate(zip(c, self.dims_c)):
            if not isinstance(condition, torch.Tensor):
                raise TypeError(f"c[{index}] must be a tensor, got {type(condition).__name__}")
            expected = (x.shape[0], *shape)
            if tuple(condition.shape) != expected:
                raise ValueError(f"c[{index}] must have shape {expected}, got {tuple(condition.shape)}")
        return c[0] if len(c) == 1 else torch.cat(list(c), dim=1)

    def extra_repr(self) -> str:
        """Summary of the block's configuration for ``print(block)``."""
        return (
            f"dims_in={self.dims_in}, dims_c={self.dims_c}, affine_clamping={self.clamp}, "
            f"gin_block={self.gin_block}, global_affine_type={self.global_affine_type!r}, "
            f"permute_soft={self.permute_soft}, reverse_permutation={self.reverse_permutation}"
        )


def _is_real_number(value: object) -> bool:
    return isinstance(value, (int, float)) and not isinstance(value, bool)


def _random_channel_mixing(channels: int, soft: bool) -> torch.Tensor:
    """A random orthogonal (C, C) float64 matrix: a permutation matrix, or a random rotation if ``soft``."""
    if soft:
        gaussian = torch.randn(channels, channels, dtype=torch.float64)
        q, r = torch.linalg.qr(gaussian)
        # Fixing the signs of diag(R) makes Q uniformly (Haar) distributed over orthogonal matrices.
        signs = torch.sign(torch.diagonal(r))
        signs[signs == 0] = 1.0
        return q * signs
    permutation = torch.randperm(channels)
    return torch.eye(channels, dtype=torch.float64)[permutation]


def _mix_channels(matrix: torch.Tensor, x: torch.Tensor) -> torch.Tensor:
    """``out[:, i] = sum_j matrix[i, j] * x[:, j]`` for x of shape (B, C, *S)."""
    return torch.einsum("ij,bj...->bi...", matrix, x)
