// C entry points into the simulated CUDA launchers, for ctypes: the tests pass host buffers
// where the launchers expect device pointers. Scratch buffers are allocated here as the glue
// files allocate them, filled with NaN (or all-ones bytes), so a kernel that reads scratch it
// never wrote gives a result the tests reject. Each function returns the launcher's
// cudaError_t; sim_last_failure() says what went wrong inside a kernel.
#include <cuda_bf16.h>

#include <cstdint>
#include <limits>
#include <vector>

#include "cuda/banded_resample2d.cuh"
#include "cuda/kcenter.cuh"
#include "cuda/kde_log_sum_exp.cuh"
#include "cuda/mahalanobis.cuh"
#include "cuda/separable_blur2d.cuh"
#include "cuda/sparse_sign_projection.cuh"
#include "cuda_runtime_api.h"
#include "cuda_sim/copy_counter.h"

namespace ak = anomaly_kernels;
namespace akc = anomaly_kernels::cuda;

namespace {

template <typename T>
std::vector<T> unwritten(int64_t n) {
  return std::vector<T>(static_cast<size_t>(n), std::numeric_limits<T>::quiet_NaN());
}

template <typename T>
int mahalanobis(const T* embedding, const T* mean, const T* precision, int packed, int64_t b, int64_t c,
                int64_t p, int group, int streamed, T* out) {
  int64_t elements = 0;
  cudaError_t err = akc::mahalanobis_workspace_elements<T>(b, c, p, group, &elements);
  if (err != cudaSuccess) return err;
  std::vector<T> workspace = unwritten<T>(elements);
  return akc::mahalanobis<T>(embedding, mean, precision, packed != 0, b, c, p, group, workspace.data(), out,
                             nullptr, streamed != 0);
}

template <typename T>
int blur(const T* input, T* output, int64_t planes, int64_t h, int64_t w, const T* ky, int64_t nky, const T* kx,
         int64_t nkx, int same, int border, int tile_rows) {
  const ak::BlurGeometry g = ak::blur_geometry(h, w, nky, nkx, same != 0);
  int64_t elements = 0;
  cudaError_t err = akc::separable_blur2d_scratch_size<T>(planes, h, w, nky, nkx, g, tile_rows, &elements);
  if (err != cudaSuccess) return err;
  std::vector<T> scratch = unwritten<T>(elements);
  return akc::separable_blur2d<T>(input, output, elements > 0 ? scratch.data() : nullptr, planes, h, w, ky, nky, kx,
                                  nkx, g, static_cast<ak::Border>(border), tile_rows, nullptr);
}

}  // namespace

extern "C" {

// Makes a device with these limits current (the same limits give the same device index, so
// the launchers' per-device caches stay right); returns its index.
int sim_use_device(int sms, int smem_optin, int blocks_per_sm) {
  auto& rt = cuda_sim::Runtime::instance();
  for (size_t i = 0; i < rt.devices.size(); ++i) {
    const cuda_sim::Device& d = rt.devices[i];
    if (d.sms == sms && d.smem_optin == smem_optin && d.blocks_per_sm == blocks_per_sm) {
      rt.current = static_cast<int>(i);
      return rt.current;
    }
  }
  cuda_sim::Device d;
  d.sms = sms, d.smem_optin = smem_optin, d.blocks_per_sm = blocks_per_sm;
  rt.devices.push_back(d);
  rt.current = static_cast<int>(rt.devices.size() - 1);
  return rt.current;
}

// 1: threads take turns in reverse launch order (see Scheduler::reverse); 0: launch order.
void sim_set_reverse_order(int reverse) { cuda_sim::Scheduler::instance().reverse = reverse != 0; }

// 1: copies started with cp.async land at the thread's wait for them (Scheduler::late_copies).
void sim_set_late_copies(int late) { cuda_sim::Scheduler::instance().late_copies = late != 0; }

// Counts copies to shared memory from [begin, begin + bytes) into counts (one int32 per 4-byte
// word); a null `counts` stops counting.
void sim_count_copies_from(const void* begin, int64_t bytes, int32_t* counts) {
  auto& c = cuda_sim::CopyCounter::instance();
  c.begin = static_cast<const unsigned char*>(begin);
  c.end = c.begin + (counts ? bytes : 0);
  c.counts = counts;
}

const char* sim_last_failure() { return cuda_sim::Runtime::instance().last_failure.c_str(); }
int sim_pending_error() { return cudaPeekAtLastError(); }

int sim_mahalanobis_f32(const float* e, const float* m, const float* P, int packed, int64_t b, int64_t c, int64_t p,
                        int group, int streamed, float* out) {
  return mahalanobis<float>(e, m, P, packed, b, c, p, group, streamed, out);
}
int sim_mahalanobis_f64(const double* e, const double* m, const double* P, int packed, int64_t b, int64_t c,
                        int64_t p, int group, int streamed, double* out) {
  return mahalanobis<double>(e, m, P, packed, b, c, p, group, streamed, out);
}

int sim_separable_blur2d_f32(const float* x, float* y, int64_t planes, int64_t h, int64_t w, const float* ky,
                             int64_t nky, const float* kx, int64_t nkx, int same, int border, int tile_rows) {
  return blur<float>(x, y, planes, h, w, ky, nky, kx, nkx, same, border, tile_rows);
}
int sim_separable_blur2d_f64(const double* x, double* y, int64_t planes, int64_t h, int64_t w, const double* ky,
                             int64_t nky, const double* kx, int64_t nkx, int same, int border, int tile_rows) {
  return blur<double>(x, y, planes, h, w, ky, nky, kx, nkx, same, border, tile_rows);
}

#define SIM_TYPED_ENTRY_POINTS(T, SUFFIX)                                                                 \
  int sim_banded_resample2d_##SUFFIX(const T* x, T* y, int64_t planes, int64_t h, int64_t w, int64_t out_h,         \
                                     int64_t out_w, const int64_t* start_y, const T* weights_y, int64_t taps_y,     \
                                     const int64_t* start_x, const T* weights_x, int64_t taps_x) {                  \
    return akc::banded_resample2d<T>(x, y, planes, h, w, out_h, out_w, start_y, weights_y, taps_y, start_x,         \
                                     weights_x, taps_x, nullptr);                                                   \
  }                                                                                                                 \
  int sim_kde_log_sum_exp_##SUFFIX(const T* queries, const T* dataset, int64_t m, int64_t n, int64_t d, T* out) {   \
    std::vector<T> partial = unwritten<T>(2 * m * akc::kde_splits(n));                                              \
    return akc::kde_log_sum_exp<T>(queries, dataset, m, n, d, partial.data(), out, nullptr);                        \
  }                                                                                                                 \
  int sim_sparse_sign_projection_##SUFFIX(const T* x, int64_t n, int64_t d, const int64_t* crow, const int64_t* col, \
                                          const int8_t* signs, int64_t nnz, int64_t k, double scale, T* out,        \
                                          int64_t slab_width) {                                                     \
    akc::ProjectionPlan plan;                                                                                       \
    cudaError_t err = akc::sparse_sign_projection_plan(d, k, nnz, sizeof(T), slab_width, &plan);                     \
    if (err != cudaSuccess) return err;                                                                             \
    const int64_t words = akc::sparse_sign_projection_workspace_words(nnz, k, plan.slabs);                          \
    std::vector<int32_t> workspace(static_cast<size_t>(words), -1);                                                 \
    return akc::sparse_sign_projection<T>(x, n, d, crow, col, signs, nnz, k, static_cast<T>(scale), out, plan,      \
                                          workspace.data(), nullptr);                                               \
  }

SIM_TYPED_ENTRY_POINTS(float, f32)
SIM_TYPED_ENTRY_POINTS(double, f64)

// plan_out: the slab width, slab count, output chunk and pattern place (1: shared memory) the
// projection kernel would use.
int sim_sparse_sign_projection_plan(int64_t d, int64_t k, int64_t nnz, int elem_bytes, int64_t slab_width,
                                    int64_t* plan_out) {
  akc::ProjectionPlan plan;
  const cudaError_t err = akc::sparse_sign_projection_plan(d, k, nnz, elem_bytes, slab_width, &plan);
  plan_out[0] = plan.width;
  plan_out[1] = plan.slabs;
  plan_out[2] = plan.chunk;
  plan_out[3] = plan.pattern_shared ? 1 : 0;
  return err;
}

int sim_kcenter_step(const float* features, int64_t n, int64_t d, float* min_distances, const int64_t* center,
                     const float* center_row, int64_t* argmax) {
  std::vector<unsigned char> scratch(static_cast<size_t>(akc::kcenter_step_scratch_bytes()), 0xFF);
  return akc::kcenter_step(features, n, d, min_distances, center, center_row, argmax, scratch.data(), nullptr);
}

// rows_are_bf16: features holds n x d bfloat16 (uint16) words instead of floats. error_out:
// the device-side error (kind, where, value).
int sim_kcenter_greedy(const void* features, int rows_are_bf16, int64_t n, int64_t d, float* min_distances,
                       int32_t* nearest, int64_t* centers, int64_t begin, int64_t end, int pick, int prune,
                       int allow_cooperative, int max_blocks_per_sm, int64_t triangle_bytes, int64_t* error_out) {
  akc::KCenterLaunch launch;
  launch.allow_cooperative = allow_cooperative != 0;
  launch.max_blocks_per_sm = max_blocks_per_sm;
  launch.triangle_bytes = triangle_bytes;
  const int64_t feature_bytes = n * d * (rows_are_bf16 ? 2 : 4);
  const int64_t bytes = akc::kcenter_greedy_scratch_bytes(begin, end, pick != 0, prune != 0, feature_bytes, launch);
  std::vector<int64_t> scratch(static_cast<size_t>((bytes + 7) / 8), -1);
  akc::KCenterError error;
  const cudaError_t err =
      rows_are_bf16 ? akc::kcenter_greedy(static_cast<const __nv_bfloat16*>(features), n, d, min_distances, nearest,
                                          centers, begin, end, pick != 0, prune != 0, scratch.data(), launch, &error,
                                          nullptr)
                    : akc::kcenter_greedy(static_cast<const float*>(features), n, d, min_distances, nearest, centers,
                                          begin, end, pick != 0, prune != 0, scratch.data(), launch, &error, nullptr);
  error_out[0] = error.kind, error_out[1] = error.where, error_out[2] = error.value;
  return err;
}

}  // extern "C"
