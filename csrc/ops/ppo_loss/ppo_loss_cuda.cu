// PPO loss on the GPU. One kernel computes every sample's terms and gradients (ppo_loss_math.h) with a
// grid-stride loop and reduces its sums per block; a one-block kernel adds the block partials in block
// order and writes the loss and stats. With advantage normalisation a first kernel reduces the
// advantages' shifted moments the same way. The grid depends only on n and every sum is combined in a
// fixed order, in double, so the result is deterministic; nothing waits on the host.
#include <cuda_runtime.h>

#include "core/cuda_device.h"
#include "ops/ppo_loss/ppo_loss.h"

namespace fastppo {
namespace {

// Block-wide sum of K doubles per thread (a fixed tree, so the same inputs give the same bits).
// Thread 0 gets the totals in v.
template <int K>
__device__ void block_sum(double (&v)[K]) {
  __shared__ double sh[K][kPpoCudaThreads];
  for (int k = 0; k < K; ++k) sh[k][threadIdx.x] = v[k];
  __syncthreads();
  for (int width = kPpoCudaThreads / 2; width > 0; width /= 2) {
    if (threadIdx.x < width)
      for (int k = 0; k < K; ++k) sh[k][threadIdx.x] += sh[k][threadIdx.x + width];
    __syncthreads();
  }
  for (int k = 0; k < K; ++k) v[k] = sh[k][0];
  __syncthreads();  // sh may be reused by the next call
}

// Sums the K-wide partials of `blocks` blocks, stored block-major, into v (valid in thread 0).
template <int K>
__device__ void sum_partials(const double* partials, int64_t blocks, double (&v)[K]) {
  for (int k = 0; k < K; ++k) v[k] = 0.0;
  for (int64_t b = threadIdx.x; b < blocks; b += kPpoCudaThreads)
    for (int k = 0; k < K; ++k) v[k] += partials[b * K + k];
  block_sum<K>(v);
}

template <typename T>
__device__ T at(const Array1D& a, int64_t i) {
  return static_cast<const T*>(a.data)[i * a.stride];
}

template <typename T>
__global__ void adv_moments_kernel(PpoLossParams p) {
  const double shift = double(at<T>(p.advantages, 0));
  double v[2] = {0.0, 0.0};
  for (int64_t i = int64_t(blockIdx.x) * kPpoCudaThreads + threadIdx.x; i < p.n;
       i += int64_t(gridDim.x) * kPpoCudaThreads) {
    const double d = double(at<T>(p.advantages, i)) - shift;
    v[0] += d, v[1] += d * d;
  }
  block_sum<2>(v);
  if (threadIdx.x == 0) p.workspace[2 * blockIdx.x] = v[0], p.workspace[2 * blockIdx.x + 1] = v[1];
}

template <typename T, bool kClipValues>
__global__ void loss_kernel(PpoLossParams p) {
  __shared__ T adv[2];
  const int64_t blocks = gridDim.x;
  if (p.normalize_advantages) {  // every block re-adds the advantage partials: cheaper than a launch
    double m[2];
    sum_partials<2>(p.workspace, blocks, m);
    if (threadIdx.x == 0) {
      double mean, denom;
      ppo_adv_moments(double(at<T>(p.advantages, 0)), m[0], m[1], p.n, &mean, &denom);
      adv[0] = T(mean), adv[1] = T(denom);
    }
  } else if (threadIdx.x == 0) {
    adv[0] = T(0), adv[1] = T(1);
  }
  __syncthreads();
  const PpoCoefs<T> c{T(p.clip_coef), T(p.vf_clip), adv[0], adv[1]};
  const T policy_scale = T(1.0 / double(p.n)), value_scale = T(p.vf_coef / double(p.n));
  T* d_logp = static_cast<T*>(p.grads);
  T* d_values = d_logp + p.n;
  double v[kNumSums] = {};
  for (int64_t i = int64_t(blockIdx.x) * kPpoCudaThreads + threadIdx.x; i < p.n;
       i += int64_t(gridDim.x) * kPpoCudaThreads) {
    const PpoSample<T> s = ppo_sample<kClipValues, T>(at<T>(p.new_logp, i), at<T>(p.old_logp, i),
                                                       at<T>(p.advantages, i), at<T>(p.new_values, i),
                                                       at<T>(p.old_values, i), at<T>(p.returns, i), c);
    d_logp[i] = s.d_policy * policy_scale;
    d_values[i] = s.d_value * value_scale;
    v[kSumPolicy] += s.policy, v[kSumValue] += s.value, v[kSumApproxKl] += s.approx_kl;
    v[kSumClipped] += s.clipped, v[kSumEntropy] += at<T>(p.entropy, i);
    if (p.kl.data) v[kSumKl] += at<T>(p.kl, i);
  }
  block_sum<kNumSums>(v);
  double* partials = p.workspace + 2 * blocks;  // after the advantage partials (ppo_loss.h)
  if (threadIdx.x == 0)
    for (int k = 0; k < kNumSums; ++k) partials[blockIdx.x * kNumSums + k] = v[k];
}

template <typename T>
__global__ void finish_kernel(PpoLossParams p, int64_t blocks) {
  double v[kNumSums];
  sum_partials<kNumSums>(p.workspace + 2 * blocks, blocks, v);
  if (threadIdx.x == 0)
    ppo_finish<T>(v, p.n, p.vf_coef, p.ent_coef, p.kl_coef, static_cast<T*>(p.out), static_cast<T*>(p.grads));
}

template <typename T>
void launch(const PpoLossParams& p, cudaStream_t stream) {
  const int64_t blocks = ppo_loss_cuda_blocks(p.n);
  if (p.normalize_advantages) {
    adv_moments_kernel<T><<<unsigned(blocks), kPpoCudaThreads, 0, stream>>>(p);
    check_cuda_launch("ppo_loss advantage-moments CUDA kernel");
  }
  if (p.clip_values)
    loss_kernel<T, true><<<unsigned(blocks), kPpoCudaThreads, 0, stream>>>(p);
  else
    loss_kernel<T, false><<<unsigned(blocks), kPpoCudaThreads, 0, stream>>>(p);
  check_cuda_launch("ppo_loss CUDA kernel");
  finish_kernel<T><<<1, kPpoCudaThreads, 0, stream>>>(p, blocks);
  check_cuda_launch("ppo_loss finishing CUDA kernel");
}

}  // namespace

void ppo_loss_cuda(const PpoLossParams& p, void* stream) {
  auto s = static_cast<cudaStream_t>(stream);
  if (p.dtype == ScalarType::Float32)
    launch<float>(p, s);
  else
    launch<double>(p, s);
}

}  // namespace fastppo
