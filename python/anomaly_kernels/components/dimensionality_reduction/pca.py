"""Principal Component Analysis as a fitted module whose state loads from checkpoints."""

from __future__ import annotations

import numbers

import torch
from torch import Tensor

from anomaly_kernels.components.base import DynamicBufferModule
from anomaly_kernels.components.dimensionality_reduction.random_projection import NotFittedError
from anomaly_kernels._validation import all_finite, check_floating_2d


class PCA(DynamicBufferModule):
    """Principal Component Analysis (PCA).

    ``fit`` centres the dataset (N, D) and takes its thin singular value decomposition in
    float64; the leading right singular vectors become the projection (D, k).

    Args:
        n_components (int | float): an ``int`` >= 1 keeps that many components (``1`` means one
            component); a ``float`` in (0, 1) is a ratio of explained variance: ``fit`` keeps the
            smallest number of components whose cumulative explained-variance ratio is greater
            than the ratio, exactly as ``sklearn.decomposition.PCA`` does.

    Buffers (shapes after ``fit``, empty before):
        singular_vectors: (D, k) principal axes as columns.
        singular_values: (k,) singular values of the centred dataset.
        mean: (D,) mean of the dataset.
        num_components: (1,) ``k`` as int64.

    Buffers have the dtype and device of the fitted dataset (singular vectors are computed in
    float64, then cast). Results of ``transform``/``inverse_transform`` have the dtype of their
    input.

    Example:
        >>> pca = PCA(n_components=2)
        >>> dataset = torch.randn(100, 5)
        >>> pca.fit_transform(dataset).shape
        torch.Size([100, 2])
    """

    def __init__(self, n_components: int | float) -> None:
        super().__init__()
        self.n_components = _validated_n_components(n_components)

        self.register_buffer("singular_vectors", torch.empty(0))
        self.register_buffer("singular_values", torch.empty(0))
        self.register_buffer("mean", torch.empty(0))
        self.register_buffer("num_components", torch.empty(0, dtype=torch.int64))

        self.singular_vectors: Tensor
        self.singular_values: Tensor
        self.mean: Tensor
        self.num_components: Tensor

    def fit(self, dataset: Tensor) -> None:
        """Fit the principal axes to ``dataset``; the caller's tensor is left untouched.

        Args:
            dataset (Tensor): (N, D) floating-point rows, finite, N >= 1 and D >= 1.

        Raises:
            TypeError: ``dataset`` is not a floating-point tensor.
            ValueError: wrong shape, empty, non-finite values, an integer ``n_components`` larger
                than min(N, D), or a variance ratio asked of a dataset with zero variance.
        """
        _check_dataset(dataset, "dataset")
        num_samples, num_features = dataset.shape

        mean64 = dataset.to(torch.float64).mean(dim=0)
        # Out-of-place subtraction: the caller's tensor must never be centred in place.
        centred64 = dataset.to(torch.float64) - mean64
        # Thin SVD: U is (N, min(N, D)), never (N, N), which matters for N in the hundreds of
        # thousands.
        _, singular_values64, right_vectors_t = torch.linalg.svd(centred64, full_matrices=False)
        right_vectors_t = _deterministic_signs(right_vectors_t)

        num_kept = self._number_of_components(singular_values64, num_samples, num_features)

        self.singular_vectors = right_vectors_t[:num_kept].T.contiguous().to(dataset.dtype)
        self.singular_values = singular_values64[:num_kept].to(dataset.dtype)
        self.mean = mean64.to(dataset.dtype)
        self.num_components = torch.tensor([num_kept], dtype=torch.int64, device=dataset.device)

    def fit_transform(self, dataset: Tensor) -> Tensor:
        """Fit to ``dataset`` and return its projection.

        Args:
            dataset (Tensor): (N, D) floating-point rows.

        Returns:
            Tensor: (N, k) projected rows, dtype of ``dataset``.
        """
        self.fit(dataset)
        return self.transform(dataset)

    def transform(self, features: Tensor) -> Tensor:
        """Project ``features`` on the fitted principal axes: ``(features - mean) @ singular_vectors``.

        Args:
            features (Tensor): (N, D) floating-point rows with the fitted D.

        Returns:
            Tensor: (N, k), dtype of ``features``.

        Raises:
            NotFittedError: ``fit`` has not been called (nor a fitted state dict loaded).
        """
        self._check_fitted()
        check_floating_2d(features, "features", expected_columns=self.mean.shape[0])
        compute_dtype = torch.promote_types(features.dtype, self.singular_vectors.dtype)
        centred = features.to(compute_dtype) - self.mean.to(compute_dtype)
        return (centred @ self.singular_vectors.to(compute_dtype)).to(features.dtype)

    def inverse_transform(self, features: Tensor) -> Tensor:
        """Map projected features back to the original axes: ``features @ singular_vectors.T``.

        As documented for this API, the mean is not added back: the result is the
        reconstruction of the centred data.

        Args:
            features (Tensor): (N, k) projected rows.

        Returns:
            Tensor: (N, D), dtype of ``features``.

        Raises:
            NotFittedError: ``fit`` has not been called.
        """
        self._check_fitted()
        check_floating_2d(features, "features", expected_columns=self.singular_vectors.shape[1])
        compute_dtype = torch.promote_types(features.dtype, self.singular_vectors.dtype)
        return (features.to(compute_dtype) @ self.singular_vectors.to(compute_dtype).T).to(features.dtype)

    def forward(self, features: Tensor) -> Tensor:
        """Project ``features`` (N, D) to (N, k); same as :meth:`transform`."""
        return self.transform(features)

    def _number_of_components(self, singular_values64: Tensor, num_samples: int, num_features: int) -> int:
        """Number of components to keep given the singular values (float64) of the centred data."""
        max_components = min(num_samples, num_features)
        if isinstance(self.n_components, int):
            if self.n_components > max_components:
                raise ValueError(
                    f"n_components={self.n_components} must be <= min(n_samples, n_features) = "
                    f"{max_components} for a dataset of shape ({num_samples}, {num_features})"
                )
            return self.n_components

        variances = singular_values64.square()
        total_variance = variances.sum()
        if total_variance <= 0:
            raise ValueError(
                f"n_components={self.n_components} is a variance ratio, but the dataset has zero "
                "variance; pass an integer number of components instead"
            )
        cumulative_ratio = torch.cumsum(variances / total_variance, dim=0)
        ratio = torch.tensor(self.n_components, dtype=torch.float64, device=cumulative_ratio.device)
        # right=True: the first index whose cumulative ratio is strictly greater than the ratio,
        # the rule scikit-learn uses, so both libraries keep the same number of components.
        num_kept = int(torch.searchsorted(cumulative_ratio, ratio, right=True).item()) + 1
        # Rounding can leave the last cumulative value a hair below 1.0.
        return min(num_kept, variances.shape[0])

    def _check_fitted(self) -> None:
        if self.singular_vectors.numel() == 0:
            raise NotFittedError(
                "This PCA instance is not fitted yet; call fit(dataset) or load a fitted state dict first"
            )


def _validated_n_components(n_components: int | float) -> int | float:
    """Return ``n_components`` as ``int`` (>= 1) or ``float`` in (0, 1); raise otherwise."""
    if isinstance(n_components, bool) or not isinstance(n_components, numbers.Real):
        raise TypeError(
            f"n_components must be an int >= 1 or a float in (0, 1), got {type(n_components).__name__}"
        )
    if isinstance(n_components, numbers.Integral):
        if n_components < 1:
            raise ValueError(f"n_components as an int must be >= 1, got {n_components}")
        return int(n_components)
    ratio = float(n_components)
    if not 0.0 < ratio < 1.0:
        raise ValueError(
            f"n_components as a float is a variance ratio and must lie in (0, 1), got {n_components}"
        )
    return ratio


def _check_dataset(dataset: Tensor, name: str) -> None:
    check_floating_2d(dataset, name)
    if dataset.shape[0] == 0 or dataset.shape[1] == 0:
        raise ValueError(f"{name} must be non-empty (N >= 1, D >= 1), got shape {tuple(dataset.shape)}")
    if not all_finite(dataset):
        raise ValueError(f"{name} must contain only finite values (no NaN or inf)")


def _deterministic_signs(right_vectors_t: Tensor) -> Tensor:
    """Flip each right singular vector (row) so its largest-magnitude entry is positive.

    SVD signs are arbitrary and vary across LAPACK builds and devices; fixing them makes a fit
    reproducible everywhere.
    """
    largest = right_vectors_t.abs().argmax(dim=1, keepdim=True)
    signs = torch.sign(torch.gather(right_vectors_t, 1, largest))
    signs[signs == 0] = 1.0
    return right_vectors_t * signs
