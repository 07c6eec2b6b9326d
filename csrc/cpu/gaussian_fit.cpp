// CPU kernel of anomaly_kernels::gaussian_fit (PaDiM's per-position Gaussians). Each task stages
// a block of consecutive positions (cpu/position_block.h) in float64 and centres them; per
// position it forms the covariance, its Cholesky factor L, the inverse of L and
// precision = L^-T L^-1, all in task-local C x C buffers: no (P, C, C) float64 temporaries and
// no Python loop over positions. The precisions are written full or, on request, packed
// (common/packed_triangle.h).
#include <algorithm>
#include <cmath>
#include <vector>

#include <torch/csrc/stable/ops.h>

#include "common/packed_triangle.h"
#include "common/simd.h"
#include "common/tensor_checks.h"
#include "cpu/huge_pages.h"
#include "cpu/position_block.h"

namespace anomaly_kernels {
namespace {

// mean (c,) = the average of the b rows of x (b, c); x <- x - mean, row by row.
AK_SIMD_CLONES void centre_images(double* x, int64_t b, int64_t c, double* mean) {
  std::fill(mean, mean + c, 0.0);
  for (int64_t img = 0; img < b; ++img)
#pragma omp simd
    for (int64_t ch = 0; ch < c; ++ch) mean[ch] += x[img * c + ch];
  const double inv_b = 1.0 / static_cast<double>(b);
#pragma omp simd
  for (int64_t ch = 0; ch < c; ++ch) mean[ch] *= inv_b;
  for (int64_t img = 0; img < b; ++img)
#pragma omp simd
    for (int64_t ch = 0; ch < c; ++ch) x[img * c + ch] -= mean[ch];
}

// Lower triangle of sum_b x_b x_b^T for x (b, c) row-major, into a (c, c) row-major buffer
// (diagonal tiles also write some entries just above the diagonal; callers read only the lower
// triangle). The result is computed in tiles of kTileRows x kTileCols entries held in
// registers: per image, two vector loads of the image's row and four broadcasts feed eight
// vector multiply-adds, and each tile is stored once per chunk of images. Chunks of
// kImagesPerChunk images keep the part of x the tiles read in cache (c = 550: 280 KB).
constexpr int64_t kTileRows = 4, kTileCols = 16, kImagesPerChunk = 64;

AK_SIMD_CLONES void scatter_tile(const double* x, int64_t c, int64_t img0, int64_t img1, int64_t i0,
                                 int64_t j0, double* a) {
  double acc[kTileRows][kTileCols];
  for (int64_t r = 0; r < kTileRows; ++r)
#pragma omp simd
    for (int64_t jj = 0; jj < kTileCols; ++jj) acc[r][jj] = img0 == 0 ? 0.0 : a[(i0 + r) * c + j0 + jj];
  for (int64_t img = img0; img < img1; ++img) {
    const double* v = x + img * c;
    for (int64_t r = 0; r < kTileRows; ++r) {
      const double vi = v[i0 + r];
#pragma omp simd
      for (int64_t jj = 0; jj < kTileCols; ++jj) acc[r][jj] += vi * v[j0 + jj];
    }
  }
  for (int64_t r = 0; r < kTileRows; ++r)
#pragma omp simd
    for (int64_t jj = 0; jj < kTileCols; ++jj) a[(i0 + r) * c + j0 + jj] = acc[r][jj];
}

// A tile cut by the matrix edge (rows x cols smaller than a whole tile).
void scatter_edge_tile(const double* x, int64_t c, int64_t img0, int64_t img1, int64_t i0,
                       int64_t rows, int64_t j0, int64_t cols, double* a) {
  for (int64_t r = 0; r < rows; ++r)
    for (int64_t jj = 0; jj < cols; ++jj) {
      double sum = img0 == 0 ? 0.0 : a[(i0 + r) * c + j0 + jj];
      for (int64_t img = img0; img < img1; ++img) sum += x[img * c + i0 + r] * x[img * c + j0 + jj];
      a[(i0 + r) * c + j0 + jj] = sum;
    }
}

void scatter_lower(const double* x, int64_t b, int64_t c, double* a) {
  for (int64_t img0 = 0; img0 < b; img0 += kImagesPerChunk) {
    const int64_t img1 = std::min(b, img0 + kImagesPerChunk);
    for (int64_t i0 = 0; i0 < c; i0 += kTileRows) {
      const int64_t rows = std::min(kTileRows, c - i0);
      for (int64_t j0 = 0; j0 < i0 + rows; j0 += kTileCols) {
        const int64_t cols = std::min(kTileCols, c - j0);
        if (rows == kTileRows && cols == kTileCols) {
          scatter_tile(x, c, img0, img1, i0, j0, a);
        } else {
          scatter_edge_tile(x, c, img0, img1, i0, rows, j0, cols, a);
        }
      }
    }
  }
}

// In-place Cholesky of the lower triangle (A = L L^T). Returns false if A is not positive definite.
AK_SIMD_CLONES bool cholesky_lower(double* a, int64_t c) {
  for (int64_t j = 0; j < c; ++j) {
    double* row_j = a + j * c;
    double diag = row_j[j];
#pragma omp simd reduction(- : diag)
    for (int64_t k = 0; k < j; ++k) diag -= row_j[k] * row_j[k];
    if (!(diag > 0.0)) return false;
    const double l_jj = std::sqrt(diag);
    row_j[j] = l_jj;
    for (int64_t i = j + 1; i < c; ++i) {
      double* row_i = a + i * c;
      double s = row_i[j];
#pragma omp simd reduction(- : s)
      for (int64_t k = 0; k < j; ++k) s -= row_i[k] * row_j[k];
      row_i[j] = s / l_jj;
    }
  }
  return true;
}

// inv = L^-1 (lower triangular), row by row by forward substitution. Row i is
// -(sum_{k<i} L_ik inv_k) / L_ii plus 1/L_ii on the diagonal; rows k are zero beyond column k,
// so four of them can be combined over columns [0, k+3] at once.
AK_SIMD_CLONES void invert_lower(const double* l, int64_t c, double* inv) {
  std::fill(inv, inv + c * c, 0.0);
  for (int64_t i = 0; i < c; ++i) {
    const double* l_i = l + i * c;
    double* inv_i = inv + i * c;
    int64_t k = 0;
    for (; k + 4 <= i; k += 4) {
      const double f0 = l_i[k], f1 = l_i[k + 1], f2 = l_i[k + 2], f3 = l_i[k + 3];
      const double *r0 = inv + k * c, *r1 = r0 + c, *r2 = r1 + c, *r3 = r2 + c;
#pragma omp simd
      for (int64_t j = 0; j <= k + 3; ++j) inv_i[j] -= f0 * r0[j] + f1 * r1[j] + f2 * r2[j] + f3 * r3[j];
    }
    for (; k < i; ++k) {
      const double f = l_i[k];
      const double* r = inv + k * c;
#pragma omp simd
      for (int64_t j = 0; j <= k; ++j) inv_i[j] -= f * r[j];
    }
    const double scale = 1.0 / l_i[i];
#pragma omp simd
    for (int64_t j = 0; j < i; ++j) inv_i[j] *= scale;
    inv_i[i] = scale;
  }
}

// Lower triangle of M^T M for lower-triangular M = L^-1 into acc (c, c):
// acc[i][j] = sum_k M_ki M_kj (j <= i). Four rows k per sweep; M_ki is zero for i > k, so
// those terms add nothing.
AK_SIMD_CLONES void gram_of_lower(const double* m, int64_t c, double* acc) {
  std::fill(acc, acc + c * c, 0.0);
  int64_t k = 0;
  for (; k + 4 <= c; k += 4) {
    const double *m0 = m + k * c, *m1 = m0 + c, *m2 = m1 + c, *m3 = m2 + c;
    for (int64_t i = 0; i <= k + 3; ++i) {
      const double f0 = m0[i], f1 = m1[i], f2 = m2[i], f3 = m3[i];
      double* acc_i = acc + i * c;
#pragma omp simd
      for (int64_t j = 0; j <= i; ++j) acc_i[j] += f0 * m0[j] + f1 * m1[j] + f2 * m2[j] + f3 * m3[j];
    }
  }
  for (; k < c; ++k) {
    const double* m_k = m + k * c;
    for (int64_t i = 0; i <= k; ++i) {
      const double f = m_k[i];
      double* acc_i = acc + i * c;
#pragma omp simd
      for (int64_t j = 0; j <= i; ++j) acc_i[j] += f * m_k[j];
    }
  }
}

// Lower triangle of the (b, b) matrix ridge * I + scale * x x^T for x (b, c) row-major: the
// pairwise dot products of the images' centred feature vectors.
AK_SIMD_CLONES void image_gram_lower(const double* x, int64_t b, int64_t c, double scale, double ridge,
                                     double* a) {
  for (int64_t i = 0; i < b; ++i)
    for (int64_t j = 0; j <= i; ++j) {
      const double *xi = x + i * c, *xj = x + j * c;
      double dot = 0;
#pragma omp simd reduction(+ : dot)
      for (int64_t k = 0; k < c; ++k) dot += xi[k] * xj[k];
      a[i * b + j] = scale * dot + (i == j ? ridge : 0.0);
    }
}

// In place, x (b, c) <- L^-1 (scale * x) for the lower-triangular factor l (b, b), row by row by
// forward substitution: each row is one multiply-add sweep per earlier row.
AK_SIMD_CLONES void forward_substitute_rows(const double* l, int64_t b, int64_t c, double scale, double* x) {
  for (int64_t i = 0; i < b; ++i) {
    double* xi = x + i * c;
    const double* l_i = l + i * b;
#pragma omp simd
    for (int64_t k = 0; k < c; ++k) xi[k] *= scale;
    for (int64_t r = 0; r < i; ++r) {
      const double f = l_i[r];
      const double* xr = x + r * c;
#pragma omp simd
      for (int64_t k = 0; k < c; ++k) xi[k] -= f * xr[k];
    }
    const double inv_diag = 1.0 / l_i[i];
#pragma omp simd
    for (int64_t k = 0; k < c; ++k) xi[k] *= inv_diag;
  }
}

// out = scale * (S + shift * I) for the symmetric S whose lower triangle is `lower`, as a full
// (c, c) matrix or, when packed, its upper triangle row by row (common/packed_triangle.h).
// Written row by row (the upper part of a row is a column of the lower triangle): contiguous
// stores into the large output, strided loads from the cached buffer.
template <typename T>
AK_SIMD_CLONES void write_mirrored(const double* lower, int64_t c, double scale, double shift, bool packed, T* out) {
  for (int64_t i = 0; i < c; ++i) {
    const double* lower_i = lower + i * c;
    // row[j] is entry (i, j); a packed row holds only j >= i.
    T* row = packed ? out + packed_offset(i, i, c) - i : out + i * c;
    if (!packed) {
#pragma omp simd
      for (int64_t j = 0; j < i; ++j) row[j] = static_cast<T>(scale * lower_i[j]);
    }
    row[i] = static_cast<T>(scale * (lower_i[i] + shift));
#pragma omp simd
    for (int64_t j = i + 1; j < c; ++j) row[j] = static_cast<T>(scale * lower[j * c + i]);
  }
}

// With fewer images than channels (b <= c) and a positive ridge r, the covariance
// r I + X^T X / (b - 1) of the centred images X (b, c) is inverted through the (b, b) system
// instead (Woodbury identity):
//   (r I + Y^T Y)^-1 = (I - W^T W) / r,  Y = X / sqrt(b - 1),  W = L^-1 Y,  L L^T = r I + Y Y^T,
// a b x b Cholesky and one rank-b product instead of a c x c Cholesky, inverse and product.
// The subtraction loses about log10(1 + variance / r) of float64's 16 digits in the data's
// directions, far from the float32 output precision for feature variances below ~1e6 r.
inline bool prefer_image_space(int64_t b, int64_t c, double ridge) { return ridge > 0.0 && b <= c; }

// Task-local buffers of one position's inversion.
struct Workspace {
  std::vector<double> mean, a, small, inv, gram;
  Workspace(int64_t b, int64_t c, bool image_space)
      : mean(c),
        a(c * c),
        small(image_space ? b * b : 0),
        inv(image_space ? 0 : c * c),
        gram(image_space ? 0 : c * c) {}
};

// precision = (ridge I + x^T x / (b - 1))^-1 for centred x (b, c) through the c x c Cholesky
// factor L: precision = L^-T L^-1. False if the covariance is not positive definite.
template <typename T>
bool invert_in_feature_space(const double* x, int64_t b, int64_t c, double ridge, bool packed, Workspace& work,
                             T* out) {
  double* a = work.a.data();
  scatter_lower(x, b, c, a);
  const double norm = 1.0 / static_cast<double>(b - 1);
  for (int64_t i = 0; i < c; ++i) {
    for (int64_t j = 0; j <= i; ++j) a[i * c + j] *= norm;
    a[i * c + i] += ridge;
  }
  if (!cholesky_lower(a, c)) return false;
  invert_lower(a, c, work.inv.data());
  gram_of_lower(work.inv.data(), c, work.gram.data());
  write_mirrored(work.gram.data(), c, 1.0, 0.0, packed, out);
  return true;
}

// The same through the b x b system (see prefer_image_space); overwrites x with W.
template <typename T>
bool invert_in_image_space(double* x, int64_t b, int64_t c, double ridge, bool packed, Workspace& work, T* out) {
  const double norm = 1.0 / static_cast<double>(b - 1);
  image_gram_lower(x, b, c, norm, ridge, work.small.data());
  if (!cholesky_lower(work.small.data(), b)) return false;
  forward_substitute_rows(work.small.data(), b, c, std::sqrt(norm), x);
  scatter_lower(x, b, c, work.a.data());
  write_mirrored(work.a.data(), c, -1.0 / ridge, -1.0, packed, out);  // (I - W^T W) / ridge
  return true;
}

template <typename T>
void gaussian_fit_cpu_impl(const T* embedding, int64_t b, int64_t c, int64_t p, double ridge, bool packed,
                           T* mean, T* precision, int64_t* failed_position) {
  const int64_t matrix_elements = packed ? packed_elements(c) : c * c;
  torch::stable::parallel_for(0, cpu::position_tasks(p), 1, [&](int64_t first, int64_t last) {
    std::vector<double> centred(cpu::kPositionsPerTask * b * c);  // [position][image][channel]
    const bool image_space = prefer_image_space(b, c, ridge);
    Workspace work(b, c, image_space);
    for (int64_t task = first; task < last; ++task) {
      const int64_t p0 = task * cpu::kPositionsPerTask;
      const int64_t np = cpu::task_positions(task, p);
      cpu::stage_positions(embedding, static_cast<const T*>(nullptr), b, c, p, p0, np, centred.data());
      for (int64_t q = 0; q < np; ++q) {
        double* x = centred.data() + q * b * c;
        centre_images(x, b, c, work.mean.data());
        for (int64_t ch = 0; ch < c; ++ch) mean[ch * p + p0 + q] = static_cast<T>(work.mean[ch]);
        T* out = precision + (p0 + q) * matrix_elements;
        const bool ok = image_space ? invert_in_image_space(x, b, c, ridge, packed, work, out)
                                    : invert_in_feature_space(x, b, c, ridge, packed, work, out);
        if (!ok) *failed_position = p0 + q;  // benign race: any failing position is worth reporting
      }
    }
  });
}

std::tuple<Tensor, Tensor> gaussian_fit_cpu(Tensor embedding, double ridge, bool packed) {
  STD_TORCH_CHECK(embedding.dim() == 4, "embedding must be 4-D (B, C, H, W), got shape ",
                  shape_str(embedding));
  STD_TORCH_CHECK(
      embedding.scalar_type() == ScalarType::Float || embedding.scalar_type() == ScalarType::Double,
      "embedding must be float32 or float64, got ", dtype_name(embedding.scalar_type()));
  STD_TORCH_CHECK(embedding.size(0) >= 2, "embedding must hold at least 2 images (B >= 2), got ",
                  embedding.size(0));
  STD_TORCH_CHECK(embedding.size(1) >= 1, "embedding must have at least one channel");
  STD_TORCH_CHECK(ridge >= 0.0, "ridge must be >= 0, got ", ridge);
  const Tensor e = as_contiguous(embedding);
  const int64_t b = e.size(0), c = e.size(1), p = e.size(2) * e.size(3);
  std::vector<int64_t> mean_shape{c, p};
  std::vector<int64_t> precision_shape = packed ? std::vector<int64_t>{p, packed_elements(c)} : std::vector<int64_t>{p, c, c};
  Tensor mean = torch::stable::new_empty(e, mean_shape);
  Tensor precision = torch::stable::new_empty(e, precision_shape);
  cpu::advise_huge_pages(precision.data_ptr(), precision.numel() * precision.element_size());
  int64_t failed = -1;
  if (p > 0) {
    if (e.scalar_type() == ScalarType::Float) {
      gaussian_fit_cpu_impl(e.const_data_ptr<float>(), b, c, p, ridge, packed,
                            mean.mutable_data_ptr<float>(), precision.mutable_data_ptr<float>(),
                            &failed);
    } else {
      gaussian_fit_cpu_impl(e.const_data_ptr<double>(), b, c, p, ridge, packed,
                            mean.mutable_data_ptr<double>(), precision.mutable_data_ptr<double>(),
                            &failed);
    }
  }
  STD_TORCH_CHECK(failed < 0, "the covariance at position ", failed,
                  " is not positive definite (non-finite or degenerate features?)");
  return {mean, precision};
}

}  // namespace
}  // namespace anomaly_kernels

STABLE_TORCH_LIBRARY_IMPL(anomaly_kernels, CPU, m) {
  m.impl("gaussian_fit", TORCH_BOX(&anomaly_kernels::gaussian_fit_cpu));
}
