// Every operator schema of the anomaly_kernels namespace, in one place. Kernels register their
// implementations per device in cpu/*.cpp and cuda/*_glue.cpp; fake (meta) kernels and autograd
// are registered from Python (anomaly_kernels/ops.py).
#include <torch/csrc/stable/library.h>

STABLE_TORCH_LIBRARY(anomaly_kernels, m) {
  // One k-center-greedy iteration, in place: min_distances[i] = min(min_distances[i],
  // ||features[i] - features[center]||), then returns argmax(min_distances) as a 0-dim int64
  // tensor on the features' device (ties: smallest index). No host synchronisation.
  m.def("kcenter_step_(Tensor features, Tensor(a!) min_distances, Tensor center) -> Tensor");
  // The same pass with the center given as a row vector (D,) that need not belong to features:
  // a shard of a distributed selection receives centers owned by other ranks.
  m.def(
      "kcenter_step_to_(Tensor features, Tensor(a!) min_distances, Tensor center_row) -> Tensor");
  // Passes begin .. end-1 of a whole greedy selection, in place. Pass t applies center
  // centers[t] (recording position t in nearest for the rows it brings closer) and, when pick,
  // stores the farthest row in centers[t + 1]. prune skips rows the triangle inequality proves
  // unaffected (same result as without). Needs min_distances and nearest to reflect centers
  // [0, begin): start from +inf and -1. features: float32 or bfloat16 (distances in float32).
  m.def(
      "kcenter_greedy_(Tensor features, Tensor(a!) min_distances, Tensor(b!) nearest, "
      "Tensor(c!) centers, int begin, int end, bool pick, bool prune) -> ()");
  // input (N, D) @ R.T for a sparse sign matrix R (K, D) in CSR form: row k of R holds
  // scale * signs[p] at column col_indices[p] for p in [crow_indices[k], crow_indices[k + 1]).
  // A signed gather-add per output: K * nnz-per-row instead of K * D multiply-adds per row.
  m.def(
      "sparse_sign_projection(Tensor input, Tensor crow_indices, Tensor col_indices, "
      "Tensor signs, float scale) -> Tensor");
  // Gaussian KDE core: out[i] = log sum_j exp(-0.5 * ||queries[i] - dataset[j]||^2) for queries
  // (M, D) and dataset (N, D) in the whitened space; fused tiles, no (M, N) temporary, finite for
  // far-away queries (log-sum-exp with a running maximum).
  m.def("kde_log_sum_exp(Tensor queries, Tensor dataset) -> Tensor");
  // PaDiM fit: embedding (B, C, H, W) -> (mean (C, H*W), precision (H*W, C, C)) with
  // precision[p] = inverse(cov_p + ridge * I), cov_p the unbiased covariance of the B vectors at
  // position p; accumulated and inverted (Cholesky) in float64, returned in the input dtype.
  // packed: each precision as its upper triangle row by row, (H*W, C*(C+1)/2), half the memory
  // (common/packed_triangle.h).
  m.def("gaussian_fit(Tensor embedding, float ridge, bool packed=False) -> (Tensor, Tensor)");
  // PaDiM scoring: embedding (B, C, H, W), mean (C, H*W), precision (H*W, C, C) symmetric, or
  // packed (H*W, C*(C+1)/2) -> (B, 1, H, W) with dist = sqrt(max(d^T precision[p] d, 0)),
  // d = embedding[b, :, p] - mean[:, p].
  // Fused: no (P, B, C) temporaries; each precision matrix is read once per batch.
  m.def("mahalanobis(Tensor embedding, Tensor mean, Tensor precision) -> Tensor");
  // Separable banded resampling of (B, C, h, w) to (B, C, H, W): out[y, x] =
  // sum_a sum_b weights_y[y, a] * weights_x[x, b] * input[start_y[y] + a, start_x[x] + b].
  // Any separable linear map with short per-output support, e.g. upsampling followed by a blur
  // folded into one operator per axis (anomaly maps: no full-size intermediate image).
  m.def(
      "banded_resample2d(Tensor input, Tensor start_y, Tensor weights_y, Tensor start_x, "
      "Tensor weights_x) -> Tensor");
  // Depthwise separable correlation of (B, C, H, W) with kernel_y (Ky,) along H and kernel_x
  // (Kx,) along W, padding like F.pad(mode=border_type) when same_padding, else "valid".
  m.def(
      "separable_blur2d(Tensor input, Tensor kernel_y, Tensor kernel_x, str border_type, "
      "bool same_padding) -> Tensor");
}
