"""One multivariate Gaussian per patch position (PaDiM): batched fit and Mahalanobis scoring."""

from __future__ import annotations

import contextlib
import numbers
from typing import Iterator

import torch
from torch import Tensor, nn

from anomaly_kernels import ops
from anomaly_kernels.components.dimensionality_reduction.random_projection import NotFittedError
from anomaly_kernels._validation import all_finite
from anomaly_kernels.packed_precision import pack_upper_triangle, packed_length, unpack_upper_triangle

# Ridge added to every covariance so it is invertible even with fewer images than features.
_COVARIANCE_RIDGE = 0.01


class MultiVariateGaussian(nn.Module):
    """Multi Variate Gaussian Distribution, one per patch position.

    For an embedding E (B, C, H, W) with P = H·W positions, ``fit`` estimates at every position p
    the mean of the B feature vectors E[:, :, p] and the inverse of their covariance
    ``(X - x̄)ᵀ(X - x̄) / (B - 1) + 0.01·I``. Covariances are accumulated in float64, inverted
    through a batched Cholesky factorisation, and stored in the embedding's dtype.

    Buffers (pre-sized so a fitted checkpoint loads into a fresh module):
        mean: (n_features, n_patches), zeros until fitted.
        inv_covariance: (n_patches, n_features, n_features), identities until fitted; with
            ``packed_precision`` the upper triangles alone, (n_patches, C·(C+1)/2) (see
            :mod:`anomaly_kernels.packed_precision`).
        is_fitted: () bool, saved with the state dict so a loaded model knows it is fitted.

    A state dict holding ``inv_covariance`` in either layout loads into a module of either
    layout (it is packed or unpacked on loading), so full checkpoints, anomalib's included,
    load into a packed module and the other way round.

    Args:
        n_features (int): number of channels C of the embedding.
        n_patches (int): number of positions H·W of the embedding.
        packed_precision (bool): store each precision as its upper triangle: half the memory
            (PaDiM with wide_resnet50 at 256 px: 2.48 GB instead of 4.96 GB in float32), the
            same distances (the scoring kernels read the triangle in place). Defaults to False.

    Example:
        >>> gaussian = MultiVariateGaussian(n_features=4, n_patches=6)
        >>> mean, inv_covariance = gaussian.fit(torch.randn(10, 4, 2, 3))
        >>> mean.shape, inv_covariance.shape
        (torch.Size([4, 6]), torch.Size([6, 4, 4]))
        >>> gaussian.mahalanobis(torch.randn(2, 4, 2, 3)).shape
        torch.Size([2, 1, 2, 3])
    """

    # Class default: modules pickled before the option existed hold full precisions.
    packed_precision: bool = False

    def __init__(self, n_features: int, n_patches: int, packed_precision: bool = False) -> None:
        super().__init__()
        for name, value in (("n_features", n_features), ("n_patches", n_patches)):
            if isinstance(value, bool) or not isinstance(value, numbers.Integral) or value < 1:
                raise ValueError(f"{name} must be an int >= 1, got {value!r}")
        if not isinstance(packed_precision, bool):
            raise TypeError(f"packed_precision must be a bool, got {type(packed_precision).__name__}")
        self.n_features = int(n_features)
        self.n_patches = int(n_patches)
        self.packed_precision = packed_precision

        self.register_buffer("mean", torch.zeros(self.n_features, self.n_patches))
        self.register_buffer("inv_covariance", self._identities(torch.device("cpu"), torch.get_default_dtype()))
        self.register_buffer("is_fitted", torch.tensor(False))

        self.mean: Tensor
        self.inv_covariance: Tensor
        self.is_fitted: Tensor

    @staticmethod
    def _cov(
        observations: Tensor,
        rowvar: bool = False,
        bias: bool = False,
        ddof: int | None = None,
        aweights: Tensor | None = None,
    ) -> Tensor:
        """Estimates covariance matrix like numpy.cov.

        Args:
            observations (Tensor): 1-D (N,) or 2-D array of variables and observations. With
                ``rowvar`` True each row is a variable (V, N); otherwise each column is (N, V).
                A 1-D input is one variable whatever ``rowvar`` says.
            rowvar (bool): rows are variables when True. Defaults to False.
            bias (bool): normalise by N instead of N - 1. Defaults to False.
            ddof (int | None): if given, overrides the normalisation implied by ``bias``.
            aweights (Tensor | None): (N,) non-negative observation weights.

        Returns:
            Tensor: (V, V) covariance, squeezed like numpy (a 0-d tensor for one variable).

        Raises:
            ValueError: more than 2 dimensions, bad ``aweights``, or non-positive degrees of
                freedom (numpy would warn and return inf).
        """
        if not isinstance(observations, Tensor):
            raise TypeError(f"observations must be a torch.Tensor, got {type(observations).__name__}")
        if observations.dim() > 2:
            raise ValueError(f"observations must be 1-D or 2-D, got shape {tuple(observations.shape)}")
        variables = observations if observations.dim() == 2 else observations.unsqueeze(0)
        if not rowvar and observations.dim() == 2:
            variables = variables.T
        if not variables.is_floating_point():
            variables = variables.to(torch.get_default_dtype())
        num_observations = variables.shape[1]
        if ddof is None:
            ddof = 0 if bias else 1

        if aweights is None:
            average = variables.mean(dim=1)
            degrees_of_freedom = num_observations - ddof
        else:
            if not isinstance(aweights, Tensor):
                aweights = torch.as_tensor(aweights)
            if aweights.dim() != 1 or aweights.shape[0] != num_observations:
                raise ValueError(
                    f"aweights must be 1-D with one weight per observation ({num_observations}), "
                    f"got shape {tuple(aweights.shape)}"
                )
            if bool((aweights < 0).any()):
                raise ValueError("aweights must be non-negative")
            weights = aweights.to(device=variables.device, dtype=variables.dtype)
            weight_sum = weights.sum()
            average = (variables * weights).sum(dim=1) / weight_sum
            if ddof == 0:
                degrees_of_freedom = weight_sum
            else:
                degrees_of_freedom = weight_sum - ddof * (weights * weights).sum() / weight_sum
        if float(degrees_of_freedom) <= 0:
            raise ValueError(
                f"degrees of freedom must be positive, got {float(degrees_of_freedom)} "
                f"({num_observations} observations, ddof={ddof})"
            )

        centred = variables - average.unsqueeze(1)
        weighted = centred if aweights is None else centred * weights
        return (centred @ weighted.T / degrees_of_freedom).squeeze()

    def forward(self, embedding: Tensor) -> list[Tensor]:
        """Calculate multivariate Gaussian distribution; same as :meth:`fit`.

        Args:
            embedding (Tensor): (B, C, H, W) CNN features, B >= 2.

        Returns:
            list[Tensor]: ``[mean (C, H·W), inv_covariance (H·W, C, C)]`` (packed:
            ``(H·W, C·(C+1)/2)``).
        """
        return self.fit(embedding)

    def fit(self, embedding: Tensor) -> list[Tensor]:
        """Fit multi-variate gaussian distribution to the input embedding.

        The caller's tensor is not modified; all positions are fitted at once by
        :func:`anomaly_kernels.ops.gaussian_fit` (one native pass on the CPU, batched
        cuBLAS/cuSOLVER calls on CUDA), in float64 through a Cholesky factor.

        Args:
            embedding (Tensor): (B, C, H, W) floating point, finite, B >= 2, C == n_features,
                H·W == n_patches.

        Returns:
            list[Tensor]: ``[mean (C, H·W), inv_covariance (H·W, C, C)]`` (packed:
            ``(H·W, C·(C+1)/2)``), the new buffers.
        """
        self._check_embedding(embedding)
        batch_size = embedding.shape[0]
        if batch_size < 2:
            raise ValueError(
                f"embedding must hold at least 2 samples to estimate a covariance, got shape "
                f"{tuple(embedding.shape)}"
            )
        if not all_finite(embedding):
            raise ValueError("embedding must contain only finite values (no NaN or inf)")

        supported = embedding.dtype in (torch.float32, torch.float64)
        with self.releasing_placeholder():
            mean, inv_covariance = self._fit_gaussians(embedding if supported else embedding.float())
        mean, inv_covariance = mean.to(embedding.dtype), inv_covariance.to(embedding.dtype)
        self.mean = mean
        self.inv_covariance = inv_covariance
        self.is_fitted = torch.tensor(True, device=embedding.device)
        return [self.mean, self.inv_covariance]

    def _identities(self, device: torch.device, dtype: torch.dtype) -> Tensor:
        """The unfitted ``inv_covariance``: an identity per position, in this module's layout."""
        identities = torch.eye(self.n_features, device=device, dtype=dtype)
        if self.packed_precision:
            identities = pack_upper_triangle(identities)
        return identities.expand(self.n_patches, *identities.shape).clone()

    @contextlib.contextmanager
    def releasing_placeholder(self) -> Iterator[None]:
        """While a fit computes new Gaussians, an unfitted module's identities are let go.

        :meth:`fit` uses it; code that fits the Gaussians elsewhere (e.g. PaDiM's distributed
        fit) wraps its computation in it too.

        They carry nothing, and keeping them would hold two sets of precisions at the peak of
        the fit (4.96 GB each for wide_resnet50_2 at 256 px, full layout): on a GPU that is the
        difference between fitting in 16 GB or not. A fit that fails puts them back, so the
        module keeps its pre-sized buffer (checkpoints still load into it).
        """
        if bool(self.is_fitted):
            yield
            return
        device, dtype = self.inv_covariance.device, self.inv_covariance.dtype
        self.inv_covariance = self.inv_covariance.new_empty(0)
        try:
            yield
        except BaseException:
            self.inv_covariance = self._identities(device, dtype)
            raise

    def _fit_gaussians(self, embedding: Tensor) -> tuple[Tensor, Tensor]:
        """``ops.gaussian_fit`` with the documented ridge, its failure as a ValueError."""
        try:
            return ops.gaussian_fit(embedding, _COVARIANCE_RIDGE, packed=self.packed_precision)
        except RuntimeError as error:
            if "not positive definite" in str(error):
                raise ValueError(f"{error}; check the embedding's scale") from error
            raise

    def mahalanobis(self, embedding: Tensor) -> Tensor:
        """Mahalanobis distance of every feature vector to its position's Gaussian.

        ``dist[b, 0, h, w] = sqrt(max(δᵀ Σ⁻¹ δ, 0))`` with ``δ = embedding[b, :, h, w] - mean[:, h·W + w]``.

        Args:
            embedding (Tensor): (B, C, H, W) floating point with C == n_features and
                H·W == n_patches.

        Returns:
            Tensor: (B, 1, H, W) distances, dtype of ``embedding``.

        Raises:
            NotFittedError: neither ``fit`` nor a fitted state dict has set the Gaussians.
        """
        if not bool(self.is_fitted):
            raise NotFittedError(
                "MultiVariateGaussian is not fitted yet; call fit(embedding) or load a fitted state dict first"
            )
        self._check_embedding(embedding)
        if embedding.dtype == self.inv_covariance.dtype and embedding.dtype in (torch.float32, torch.float64):
            # Fused native pass: no (P, B, C) temporaries, each precision matrix read once.
            return ops.mahalanobis(embedding, self.mean.to(embedding.device), self.inv_covariance.to(embedding.device))
        batch_size, _, height, width = embedding.shape
        compute_dtype = torch.promote_types(embedding.dtype, self.inv_covariance.dtype)
        samples = embedding.reshape(batch_size, self.n_features, self.n_patches).to(compute_dtype)
        # (P, B, C): positions lead so the quadratic form is one batched product per position.
        delta = (samples - self.mean.to(compute_dtype)).permute(2, 0, 1)
        precision = self.inv_covariance.to(compute_dtype)
        if self.packed_precision:
            precision = unpack_upper_triangle(precision)  # dtypes without a native kernel only
        transformed = torch.bmm(delta, precision)
        squared = (transformed * delta).sum(dim=2)
        distances = squared.clamp_min(0).sqrt()
        return distances.T.reshape(batch_size, 1, height, width).to(embedding.dtype)

    def _in_own_layout(self, precision: Tensor) -> Tensor:
        """``precision`` packed or unpacked to this module's layout; returned as is if it fits neither."""
        c, k = self.n_features, packed_length(self.n_features)
        if precision.dim() < 1 or precision.shape[0] != self.n_patches:
            return precision  # another model's: the usual size-mismatch error names its own shape
        if self.packed_precision and precision.shape[1:] == (c, c):
            return pack_upper_triangle(precision)
        if not self.packed_precision and precision.dim() == 2 and precision.shape[1] == k:
            return unpack_upper_triangle(precision)
        return precision

    def _check_embedding(self, embedding: Tensor) -> None:
        if not isinstance(embedding, Tensor):
            raise TypeError(f"embedding must be a torch.Tensor, got {type(embedding).__name__}")
        if not embedding.is_floating_point():
            raise TypeError(f"embedding must be a floating-point tensor, got dtype {embedding.dtype}")
        if embedding.dim() != 4:
            raise ValueError(f"embedding must be 4-D (B, C, H, W), got shape {tuple(embedding.shape)}")
        _, channels, height, width = embedding.shape
        if channels != self.n_features or height * width != self.n_patches:
            raise ValueError(
                f"embedding must have C == n_features ({self.n_features}) and H*W == n_patches "
                f"({self.n_patches}), got shape {tuple(embedding.shape)}"
            )

    def _load_from_state_dict(
        self,
        state_dict: dict,
        prefix: str,
        local_metadata: dict,
        strict: bool,
        missing_keys: list,
        unexpected_keys: list,
        error_msgs: list,
    ) -> None:
        """Load as usual; a checkpoint without ``is_fitted`` but with the Gaussians counts as fitted.

        Checkpoints written before the flag existed hold a fitted ``mean`` and ``inv_covariance``
        and nothing else; they must load with ``strict=True`` and score right away. An
        ``inv_covariance`` in the other layout (full or packed) is converted to this module's
        (``state_dict`` is the loader's own copy: the caller's dict and tensors stay as they are).
        """
        key = prefix + "inv_covariance"
        stored = state_dict.get(key)
        if isinstance(stored, Tensor):
            state_dict[key] = self._in_own_layout(stored)
        super()._load_from_state_dict(
            state_dict, prefix, local_metadata, strict, missing_keys, unexpected_keys, error_msgs
        )
        flag_key = prefix + "is_fitted"
        has_gaussians = prefix + "mean" in state_dict and prefix + "inv_covariance" in state_dict
        if flag_key not in state_dict and has_gaussians:
            if flag_key in missing_keys:
                missing_keys.remove(flag_key)
            self.is_fitted.fill_(True)
