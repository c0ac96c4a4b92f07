// The built-in actor-critic's MLPs (fastppo/algos/policies.py: Linear layers, an activation after
// every hidden one) as batched CPU kernels, shared by the native rollout step (policy_act.cpp) and the
// native PPO update (ppo_update.cpp) so that both compute the same forward, bit for bit. Torch-free
// and pybind11-free; float32 only, row-major (batch, features) activations.
#pragma once

#include <cmath>
#include <cstdint>
#include <vector>

#include "core/common.h"
#include "ops/ppo_loss/ppo_loss_math.h"  // ppo_exp: the vectorisable exp

namespace fastppo {

enum class Activation { Tanh, ReLU };

// One nn.Linear: weight (out, in) row-major as torch stores it, bias (out,). The gradients are null
// for a forward-only use (the rollout step).
struct DenseLayer {
  float* weight = nullptr;
  float* bias = nullptr;
  float* grad_weight = nullptr;
  float* grad_bias = nullptr;
  int64_t in = 0, out = 0;
};

// tanh within 2 ulp, branch-free so the row loops vectorise (glibc's tanhf is an opaque scalar call
// that would cost more than the matrix products here). Small |x|: Cephes' odd polynomial; otherwise
// 1 - 2 / (exp(2|x|) + 1) with the sign put back. NaN stays NaN.
inline float mlp_tanh(float x) {
  const float ax = std::fabs(x);
  const float z = x * x;
  const float poly =
      ((((-5.70498872745e-3f * z + 2.06390887954e-2f) * z - 5.37397155531e-2f) * z + 1.33314422036e-1f) * z -
       3.33332819422e-1f) * z * x + x;
  const float big = 1.0f - 2.0f / (ppo_exp(2.0f * ax) + 1.0f);
  return ax < 0.625f ? poly : std::copysign(big, x);
}

// The caller owns the buffers, so one Mlp serves several threads (each with its own acts).
class Mlp {
 public:
  Mlp() = default;
  Mlp(std::vector<DenseLayer> layers, Activation act) : layers_(std::move(layers)), act_(act) {}

  int64_t in() const { return layers_.front().in; }
  int64_t out() const { return layers_.back().out; }
  const std::vector<DenseLayer>& layers() const { return layers_; }

  // A forward-only copy whose weights and biases live in `storage` (which must outlive it).
  Mlp snapshot(std::vector<float>& storage) const;

  // Copies `from`'s weights and biases into this Mlp's own (a snapshot of `from`): same layer sizes.
  void copy_parameters(const Mlp& from) const;

  // Each layer's weight transposed to (in, out), which forward() reads; redo after the weights change.
  void transpose_weights(std::vector<std::vector<float>>& weight_t) const;

  // X (B, in) -> every layer's output into acts[l] (B, layers[l].out); returns acts.back(). Hidden
  // layers apply the activation, the last is linear. acts is resized here and reusable across calls.
  const float* forward(const float* X, int64_t B, const std::vector<std::vector<float>>& weight_t,
                       std::vector<std::vector<float>>& acts) const;

  // Adds the parameter gradients (grad_weight, grad_bias +=) of sum_n <dOut[n], out[n]>, given the
  // forward's acts on X. scratch (work space) is resized here.
  void backward(const float* X, int64_t B, const std::vector<std::vector<float>>& acts, const float* dOut,
                std::vector<float>& scratch) const;

 private:
  std::vector<DenseLayer> layers_;
  Activation act_ = Activation::Tanh;
};

// torch.optim.Adam (no weight decay, no amsgrad) over one flat buffer holding every parameter, with
// torch.nn.utils.clip_grad_norm_ before it. The buffers, and the step count, are the Python optimiser's
// own memory (numpy views of fastppo.algos.optim.FlatAdam's tensors and step_count).
struct FlatAdam {
  float* param = nullptr;
  float* grad = nullptr;
  float* exp_avg = nullptr;
  float* exp_avg_sq = nullptr;
  int64_t* step_count = nullptr;  // steps taken so far
  int64_t n = 0;

  // Scale the gradient by max_grad_norm / (norm + 1e-6) where that is below 1 (skipped when
  // max_grad_norm < 0), then count the step and take it (Adam's step number *step_count, 1-based).
  void step(double lr, double beta1, double beta2, double eps, double max_grad_norm) const;
};

}  // namespace fastppo
