// PPO loss kernels' boundary: a plain params struct, filled and validated by the binding (ppo_loss.cpp).
#pragma once

#include "ops/ppo_loss/ppo_loss_math.h"

namespace fastppo {

// A per-sample (B,) array: base pointer and stride in elements.
struct Array1D {
  const void* data = nullptr;
  int64_t stride = 1;
};

struct PpoLossParams {
  Array1D new_logp, old_logp, advantages, new_values, old_values, returns, entropy, kl;  // kl.data may be null
  void* out = nullptr;    // (kNumOut,): loss, policy_loss, value_loss, entropy, approx_kl, clipfrac
  // (2n + 2,): d loss / d new_logp (n), d loss / d new_values (n), then d loss / d entropy_i and
  // d loss / d kl_i, one value each (the same for every i).
  void* grads = nullptr;
  double* workspace = nullptr;  // CUDA only: ppo_loss_cuda_workspace(n) doubles on the device
  int64_t n = 0;
  double clip_coef = 0.2, vf_coef = 0.5, ent_coef = 0.0, kl_coef = 0.0, vf_clip = 0.0;
  bool clip_values = false, normalize_advantages = false;
  bool unit_stride = false;  // every input has stride 1
  ScalarType dtype = ScalarType::Float32;
};

// CUDA launch shape. The grid depends only on n, so the block partial sums, combined in block order,
// make the result deterministic.
constexpr int kPpoCudaThreads = 256;
constexpr int64_t kPpoCudaMaxBlocks = 1024;
inline int64_t ppo_loss_cuda_blocks(int64_t n) {
  const int64_t b = (n + kPpoCudaThreads - 1) / kPpoCudaThreads;
  return b < 1 ? 1 : (b > kPpoCudaMaxBlocks ? kPpoCudaMaxBlocks : b);
}
// Doubles of device scratch the CUDA path needs: per block, 2 advantage sums and kNumSums loss sums,
// laid out as [2 * blocks advantage partials | kNumSums * blocks loss partials].
inline int64_t ppo_loss_cuda_workspace(int64_t n) { return ppo_loss_cuda_blocks(n) * (2 + kNumSums); }

void ppo_loss_cpu(const PpoLossParams& p);
#ifdef FASTPPO_WITH_CUDA
void ppo_loss_cuda(const PpoLossParams& p, void* stream);
#endif

}  // namespace fastppo
