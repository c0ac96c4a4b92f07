// EnvBatch: N copies of a built-in env stepping in caller-provided buffers (the binding of
// vec_env.h; env_batch.cpp). Python drives it through step/step_gym/reset; native drivers (the
// trainer's rollout, train/rollout.cpp) through params() and step_checked_cpu(). Knows no policy and
// no trainer.
#pragma once

#include <pybind11/pybind11.h>

#include <cstdint>
#include <optional>
#include <string>
#include <vector>

#include "core/array_arg.h"
#include "envs/vec_env.h"

namespace fastppo {

class EnvBatch {
 public:
  // buffers: the dict of BufferedVecEnv's arrays (checked once, here). to_array: called on CPU actions
  // that are not numpy arrays (torch tensors, lists) to get one.
  EnvBatch(const std::string& env_id, int64_t num_envs, py::dict buffers, py::object to_array, bool fast_math);

  // Steps every env with `actions`; returns how many episodes ended (-1 on CUDA, where counting
  // would wait for the GPU).
  int64_t step(py::handle actions, py::handle stream);
  // A gymnasium VectorEnv's step() in one call (CPU): (*result, infos), where result is the env's
  // (obs, rewards, terminated, truncated) buffers and infos is {} unless an episode ended, then
  // infos_fn() (BufferedVecEnv._infos, the one place those are built).
  py::tuple step_gym(py::tuple result, py::handle infos_fn, bool copy, py::handle actions);
  // Resets the envs in `mask` (None: all), reseeding their streams from `seed` when one is given.
  void reset(std::optional<uint64_t> seed, py::handle mask, double a, double b, py::handle stream);

  // For native drivers.
  const EnvBatchParams& params() const { return p_; }
  bool on_cuda() const { return on_cuda_; }
  int64_t num_envs() const { return p_.N; }
  int64_t obs_dim() const;
  int64_t num_actions() const;  // Discrete(n): n; Box (one float32 per env): 0
  const char* name() const { return env_name(p_.env); }
  const std::vector<ArrayArg>& buffers() const { return bufs_; }  // for overlap checks
  // One step of every env on the CPU with actions the caller has checked: int64 (N,) in
  // {0, ..., num_actions - 1}, or float32 (N,) finite (Box; out-of-range ones are clipped by the env).
  // Returns how many episodes ended. Needs no GIL.
  int64_t step_checked_cpu(const void* actions) const;

 private:
  template <typename Cpu, typename Cuda>
  int64_t run(py::handle stream, Cpu&& cpu, Cuda&& cuda) const;
  void check_actions(const ArrayArg& act, EnvStepArgs* a) const;
  template <typename T>
  void check_action_values(const T* x, int64_t stride, int64_t num_actions, const char* env) const;

  EnvBatchParams p_;
  py::object to_array_;
  std::vector<ArrayArg> bufs_;  // keeps the buffers alive
  ArrayArg device_;             // the buffers' device, for checks
  bool on_cuda_ = false;
};

}  // namespace fastppo
