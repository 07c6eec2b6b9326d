"""Gaussian kernel density estimation with Scott's bandwidth, as a module that loads from checkpoints."""

from __future__ import annotations

import math

import torch
from torch import Tensor

from anomaly_kernels.components.base import DynamicBufferModule
from anomaly_kernels.components.dimensionality_reduction.random_projection import NotFittedError
from anomaly_kernels import ops
from anomaly_kernels._validation import all_finite, check_floating_2d


class GaussianKDE(DynamicBufferModule):
    """Gaussian Kernel Density Estimation.

    The kernel covariance is the data covariance scaled by Scott's factor ``n^(-1/(d+4))`` (the
    default of ``scipy.stats.gaussian_kde``), so for a dataset X (n, d) and query y (d,)::

        density(y) = 1/n · Σ_j (2π)^(-d/2) |K|^(-1/2) exp(-½ (y - x_j)ᵀ K⁻¹ (y - x_j)),
        K = cov(X) · n^(-2/(d+4)).

    ``fit`` stores the factor L = cholesky(K⁻¹) and the training rows already centred and whitened,
    so scoring is a squared Euclidean distance in the whitened space.

    Buffers (shapes after ``fit``, empty before; dtype and device of the fitted dataset):
        bw_transform: (d, d) lower-triangular L with L Lᵀ = K⁻¹.
        dataset: (n, d) training rows as ``(X - mean) @ L``.
        mean: (d,) mean of the training rows; queries are centred with it.
        norm: () kernel normalisation ``prod(diag L) · (2π)^(-d/2)``.

    Args:
        dataset (Tensor | None, optional): (n, d) dataset to fit at construction. Defaults to None.

    Example:
        >>> kde = GaussianKDE(torch.randn(500, 2))
        >>> kde(torch.zeros(3, 2)).shape
        torch.Size([3])
    """

    def __init__(self, dataset: Tensor | None = None) -> None:
        super().__init__()
        self.register_buffer("bw_transform", torch.empty(0))
        self.register_buffer("dataset", torch.empty(0))
        self.register_buffer("mean", torch.empty(0))
        self.register_buffer("norm", torch.empty(0))

        self.bw_transform: Tensor
        self.dataset: Tensor
        self.mean: Tensor
        self.norm: Tensor

        # Buffers must exist before fitting, so the optional dataset is fitted last.
        if dataset is not None:
            self.fit(dataset)

    def fit(self, dataset: Tensor) -> None:
        """Fit a KDE model to the input dataset; the caller's tensor is left untouched.

        Args:
            dataset (Tensor): (n, d) floating-point rows, finite, with n >= d + 1 so the
                covariance can be invertible.

        Raises:
            TypeError: ``dataset`` is not a floating-point tensor.
            ValueError: wrong shape, too few rows, non-finite values, or a singular covariance
                (e.g. a constant or linearly dependent feature).
        """
        check_floating_2d(dataset, "dataset")
        num_samples, num_dims = dataset.shape
        if num_dims == 0:
            raise ValueError(f"dataset must have at least one feature, got shape {tuple(dataset.shape)}")
        if num_samples < num_dims + 1:
            raise ValueError(
                f"dataset must have at least d + 1 = {num_dims + 1} rows to fit a {num_dims}-dimensional "
                f"KDE (its covariance must be invertible), got shape {tuple(dataset.shape)}"
            )
        if not all_finite(dataset):
            raise ValueError("dataset must contain only finite values (no NaN or inf)")

        dataset64 = dataset.to(torch.float64)
        mean64 = dataset64.mean(dim=0)
        # Out-of-place centring: the caller's tensor is never modified.
        centred64 = dataset64 - mean64
        # Rank test of the centred data: a constant or linearly dependent feature leaves a singular
        # value at rounding level, which a Cholesky factorisation of the covariance may still
        # accept. Rounding every entry by a relative eps (of the dtype the data came in: a
        # dependency blurred by float32 rounding is still a dependency) perturbs the singular
        # values by about eps * rms(entries) * (sqrt(n) + sqrt(d)); four times that is the bar.
        singular_values = torch.linalg.svdvals(centred64)
        root_mean_square = dataset64.square().mean().sqrt()
        tolerance = (
            4 * torch.finfo(dataset.dtype).eps * root_mean_square * (math.sqrt(num_samples) + math.sqrt(num_dims))
        )
        rank = int((singular_values > tolerance).sum().item())
        covariance = self.cov(dataset64)
        cov_factor, info = torch.linalg.cholesky_ex(covariance)
        if rank < num_dims or int(info.item()) != 0:
            raise ValueError(
                f"the covariance of dataset is singular (the centred data has rank {rank} < {num_dims} "
                "features: a constant or linearly dependent feature?); a Gaussian KDE needs an "
                "invertible covariance"
            )
        scott_factor = num_samples ** (-1.0 / (num_dims + 4))
        inv_covariance = torch.cholesky_inverse(cov_factor) / scott_factor**2
        # Exact symmetry keeps the second Cholesky well defined.
        inv_covariance = (inv_covariance + inv_covariance.T) / 2
        bw_transform, info = torch.linalg.cholesky_ex(inv_covariance)
        if int(info.item()) != 0:
            raise ValueError("the covariance of dataset is too ill-conditioned to invert for a Gaussian KDE")

        norm = torch.prod(torch.diagonal(bw_transform)) * (2 * math.pi) ** (-num_dims / 2)
        self.bw_transform = bw_transform.to(dataset.dtype)
        self.dataset = (centred64 @ bw_transform).to(dataset.dtype)
        self.mean = mean64.to(dataset.dtype)
        self.norm = norm.to(dataset.dtype)

    def forward(self, features: Tensor) -> Tensor:
        """Get the KDE estimates (densities) at the query points.

        Args:
            features (Tensor): (m, d) floating-point queries in the original feature space.

        Returns:
            Tensor: (m,) densities, dtype of ``features``.

        Raises:
            NotFittedError: the model is not fitted (a ``ValueError``).
            ValueError: ``features`` has the wrong shape.
        """
        return self.log_density(features).exp()

    def log_density(self, features: Tensor) -> Tensor:
        """Natural logarithm of the KDE estimates, finite even where the density underflows.

        Computed as ``log(norm) - log(n) + logsumexp_j(-½ ‖y L - dataset_j‖²)`` by
        :func:`anomaly_kernels.ops.kde_log_sum_exp`; the log-sum-exp keeps far-away queries finite
        instead of ``log(0) = -inf``.

        Args:
            features (Tensor): (m, d) floating-point queries in the original feature space.

        Returns:
            Tensor: (m,) log densities, dtype of ``features``.
        """
        self._check_fitted()
        num_dims = self.bw_transform.shape[0]
        check_floating_2d(features, "features", expected_columns=num_dims)

        compute_dtype = torch.promote_types(features.dtype, self.dataset.dtype)
        bw_transform = self.bw_transform.to(compute_dtype)
        dataset = self.dataset.to(compute_dtype)
        mean = self.mean.to(compute_dtype)
        num_samples = dataset.shape[0]
        log_norm = torch.log(torch.diagonal(bw_transform)).sum() - num_dims / 2 * math.log(2 * math.pi)
        log_offset = log_norm - math.log(num_samples)

        whitened = (features.to(compute_dtype) - mean) @ bw_transform
        if compute_dtype not in (torch.float32, torch.float64):
            whitened, dataset = whitened.float(), dataset.float()
        # One fused native pass over (query, training row) tiles: no (m, n) block in memory.
        return (ops.kde_log_sum_exp(whitened, dataset) + log_offset).to(features.dtype)

    @staticmethod
    def cov(tensor: Tensor) -> Tensor:
        """Calculate the unbiased covariance matrix of observations stored as rows.

        Equals ``numpy.cov(tensor, rowvar=False)``; the input is not modified.

        Args:
            tensor (Tensor): (n, d) floating point, n >= 2 observations of d variables.

        Returns:
            Tensor: (d, d) covariance, normalised by n - 1.
        """
        check_floating_2d(tensor, "tensor")
        if tensor.shape[0] < 2:
            raise ValueError(
                f"tensor must have at least 2 rows (observations) for an unbiased covariance, "
                f"got shape {tuple(tensor.shape)}"
            )
        centred = tensor - tensor.mean(dim=0)
        return centred.T @ centred / (tensor.shape[0] - 1)

    def _check_fitted(self) -> None:
        if self.dataset.numel() == 0:
            raise NotFittedError(
                "GaussianKDE is not fitted yet; call fit(dataset), pass a dataset to the "
                "constructor, or load a fitted state dict"
            )
