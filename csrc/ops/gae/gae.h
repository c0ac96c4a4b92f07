// GAE kernels' boundary: a plain params struct, filled and validated by the binding (gae.cpp).
#pragma once

#include "ops/gae/gae_math.h"

namespace fastppo {

struct GaeParams {
  Array2D rewards, values, next_values, terminated, truncated, advantages, returns;
  int64_t T = 0, N = 0;
  double gamma = 0.99, lam = 0.95;
  ScalarType dtype = ScalarType::Float32;       // rewards, values, next_values, advantages, returns
  ScalarType done_dtype = ScalarType::Bool;     // terminated, truncated (bool, or the same float type)
  bool unit_stride_n = false;                   // every array is contiguous along the env axis
};

// The column view of env n, for the per-env and time-chunked paths.
template <typename T, typename D>
FASTPPO_HD GaeColumn<T, D> gae_column(const GaeParams& p, int64_t n) {
  return GaeColumn<T, D>{
      static_cast<const T*>(p.rewards.data) + n * p.rewards.stride_n,
      static_cast<const T*>(p.values.data) + n * p.values.stride_n,
      static_cast<const T*>(p.next_values.data) + n * p.next_values.stride_n,
      static_cast<const D*>(p.terminated.data) + n * p.terminated.stride_n,
      static_cast<const D*>(p.truncated.data) + n * p.truncated.stride_n,
      static_cast<T*>(p.advantages.data) + n * p.advantages.stride_n,
      static_cast<T*>(p.returns.data) + n * p.returns.stride_n,
      p.rewards.stride_t, p.values.stride_t, p.next_values.stride_t, p.terminated.stride_t,
      p.truncated.stride_t, p.advantages.stride_t, p.returns.stride_t,
      T(p.gamma), T(p.gamma * p.lam)};
}

// Time chunks per env for the chunked scan: long enough that each chunk amortises phase 2.
constexpr int64_t kGaeMinChunk = 32;

void gae_cpu(const GaeParams& p);
#ifdef FASTPPO_WITH_CUDA
void gae_cuda(const GaeParams& p, void* stream);
#endif

}  // namespace fastppo
