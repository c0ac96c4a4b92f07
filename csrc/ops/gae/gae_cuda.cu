// GAE on the GPU. Many envs: one thread per env walks back in time (consecutive threads read
// consecutive envs, so every row load is coalesced). Few envs: one thread per env leaves the GPU
// idle and each step pays a dependent global-memory round trip, so a block per env splits time into
// kChunks chunks and runs the three-phase chunked scan of gae_math.h (phase 2 in shared memory).
#include <cuda_runtime.h>

#include "core/cuda_device.h"
#include "ops/gae/gae.h"

namespace fastppo {
namespace {

constexpr int kChunks = 128;            // time chunks (threads) per env in the chunked kernel
constexpr int64_t kChunkedMaxEnvs = 512;  // at or below this many envs ...
constexpr int64_t kChunkedMinSteps = 256;  // ... and at least this many steps, use the chunked kernel

template <typename T, typename D>
__global__ void gae_per_env_kernel(GaeParams p) {
  const int64_t n = int64_t(blockIdx.x) * blockDim.x + threadIdx.x;
  if (n < p.N) gae_column<T, D>(p, n).scan(0, p.T, T(0), true, nullptr);
}

template <typename T, typename D>
__global__ void gae_chunked_kernel(GaeParams p) {
  __shared__ T head[kChunks];
  __shared__ T carry_product[kChunks];
  const auto col = gae_column<T, D>(p, blockIdx.x);
  const int c = threadIdx.x;
  const int64_t t0 = p.T * c / kChunks, t1 = p.T * (c + 1) / kChunks;
  T prod;
  head[c] = col.scan(t0, t1, T(0), false, &prod);
  carry_product[c] = prod;
  __syncthreads();
  if (c == 0) {  // phase 2: head[k] becomes the advantage carried into chunk k
    T after = T(0);
    for (int k = kChunks - 1; k >= 0; --k) {
      const T start = head[k] + carry_product[k] * after;
      head[k] = after;
      after = start;
    }
  }
  __syncthreads();
  col.fix_up(t0, t1, head[c]);
}

template <typename T, typename D>
void launch(const GaeParams& p, cudaStream_t stream) {
  if (p.N <= kChunkedMaxEnvs && p.T >= kChunkedMinSteps) {
    gae_chunked_kernel<T, D><<<unsigned(p.N), kChunks, 0, stream>>>(p);
  } else {
    const int threads = 256;
    gae_per_env_kernel<T, D><<<unsigned((p.N + threads - 1) / threads), threads, 0, stream>>>(p);
  }
  check_cuda_launch("gae CUDA kernel");
}

}  // namespace

void gae_cuda(const GaeParams& p, void* stream) {
  auto s = static_cast<cudaStream_t>(stream);
  const bool f32 = p.dtype == ScalarType::Float32;
  if (p.done_dtype == ScalarType::Bool)
    f32 ? launch<float, uint8_t>(p, s) : launch<double, uint8_t>(p, s);
  else if (f32)
    launch<float, float>(p, s);
  else
    launch<double, double>(p, s);
}

}  // namespace fastppo
