// The native rollout step of fastppo's MLP actor-critic (see policy_act.cpp), declared here so that
// the native rollout (_core.collect in rollout.cpp) can drive it.
#pragma once

#include <pybind11/pybind11.h>

#include <cstdint>
#include <string>
#include <vector>

#include "core/array_arg.h"
#include "train/mlp.h"

namespace fastppo {

namespace py = pybind11;

class PolicyAct {
 public:
  // actor, critic: [weight0, bias0, ...] arrays, log_std: an array (None if categorical), all checked
  // and kept as views (torch's parameter memory, which persists). The object acts with a snapshot of
  // them, taken here and again by refresh().
  PolicyAct(py::list actor, py::list critic, const std::string& activation, const std::string& kind,
            std::vector<int64_t> nvec, py::object log_std);

  // Re-takes the snapshot from the views given at construction (the parameters as they are now) and
  // re-transposes the weights, in the existing storage: nothing is reallocated.
  void refresh();

  int64_t obs_dim() const { return actor_.in(); }
  int64_t n_params() const { return gaussian_ ? 2 * n_out_ : n_out_; }
  bool gaussian() const { return gaussian_; }
  // Action entries per env: the Box's size, or the number of categoricals.
  int64_t action_width() const { return gaussian_ ? n_out_ : int64_t(nvec_.size()); }

  // The checked binding: obs (N, D); writes actions ((N,) int64 for one categorical, (N, k) for k,
  // (N, d) float32 for a Box), log_probs (N,), values (N,), dist_params (N, n_params).
  void act(py::handle obs, py::handle actions, py::handle log_probs, py::handle values, py::handle dist_params,
           uint64_t seed, uint64_t step) const;

  // The checked binding of value_rows: obs (N, D) -> values (N,) float32.
  void value(py::handle obs, py::handle values) const;

  // The same on raw rows the caller has checked; `seed` and `step` pick the random numbers. No GIL needed.
  void act_rows(const float* X, int64_t N, void* actions, float* log_probs, float* values, float* dist_params,
                uint64_t seed, uint64_t step) const;
  // V of N observation rows.
  void value_rows(const float* X, int64_t N, float* values) const;

  // An observation batch checked for this policy: float32 (N, obs_dim), contiguous, on the CPU.
  ArrayArg obs_arg(py::handle obs, const char* name = "obs") const;

 private:
  std::vector<ArrayArg> views_;  // the parameters' own memory (kept alive with this object)
  Mlp actor_src_, critic_src_;   // over views_
  const float* log_std_src_ = nullptr;
  Mlp actor_, critic_;           // over the snapshot's storage
  std::vector<float> actor_storage_, critic_storage_, log_std_;  // the snapshot's parameters
  std::vector<std::vector<float>> actor_wt_, critic_wt_;
  bool gaussian_;
  std::vector<int64_t> nvec_;
  int64_t n_out_ = 0;
};

}  // namespace fastppo
