// Built-in envs on the GPU: one thread per env, running the same physics headers as the CPU build.
// Compiled with --fmad=false (CMakeLists.txt) so that a*b+c is not fused: fused multiply-adds would
// round differently from gymnasium's float64/float32 arithmetic.
#include <cuda_runtime.h>

#include "core/cuda_device.h"
#include "envs/vec_env.h"

namespace fastppo {
namespace {

constexpr int kThreads = 256;

template <typename E>
__global__ void envs_step_kernel(EnvBatchParams p, EnvStepArgs a) {
  const int64_t i = int64_t(blockIdx.x) * blockDim.x + threadIdx.x;
  if (i < p.N) env_step_one<E>(p, a, i);
}

template <typename E>
__global__ void envs_reset_kernel(EnvBatchParams p, EnvResetArgs r) {
  const int64_t i = int64_t(blockIdx.x) * blockDim.x + threadIdx.x;
  if (i < p.N) env_reset_one<E>(p, r, i);
}

unsigned blocks(int64_t n) { return unsigned((n + kThreads - 1) / kThreads); }

}  // namespace

void envs_step_cuda(const EnvBatchParams& p, const EnvStepArgs& a, void* stream) {
  dispatch_env(p.env, [&](auto env) {
    envs_step_kernel<decltype(env)><<<blocks(p.N), kThreads, 0, static_cast<cudaStream_t>(stream)>>>(p, a);
  });
  check_cuda_launch("env step CUDA kernel");
}

void envs_reset_cuda(const EnvBatchParams& p, const EnvResetArgs& r, void* stream) {
  dispatch_env(p.env, [&](auto env) {
    envs_reset_kernel<decltype(env)><<<blocks(p.N), kThreads, 0, static_cast<cudaStream_t>(stream)>>>(p, r);
  });
  check_cuda_launch("env reset CUDA kernel");
}

}  // namespace fastppo
