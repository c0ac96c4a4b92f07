// The env side of the native rollout (_core.collect, rollout.cpp): a built-in EnvBatch, or a vector env
// stepped in Python (fastppo's MuJoCo envs: the task logic is numpy) given as a callable that writes
// numpy buffers. Either way, after step() the loop reads the step's results from the same raw rows.
#pragma once

#include <pybind11/pybind11.h>

#include <cstdint>
#include <string>
#include <vector>

#include "core/array_arg.h"
#include "envs/env_batch.h"
#include "train/policy_act.h"

namespace fastppo {

// One vector step's results, as the loop reads them: observations after autoreset (N, obs_dim),
// final observations (N, obs_dim; rows valid where an episode ended), rewards, terminated, truncated
// (N,) and the ended episodes' return and length (N,; valid where an episode ended).
struct EnvRows {
  int64_t N = 0, obs_dim = 0;
  const float* obs = nullptr;
  const float* final_obs = nullptr;
  const float* rewards = nullptr;
  const uint8_t* terminated = nullptr;
  const uint8_t* truncated = nullptr;
  const double* episode_r = nullptr;
  const int64_t* episode_l = nullptr;
};

class RolloutEnv {
 public:
  // envs: an EnvBatch on the CPU, or a dict {"step": step(actions), "obs": float32 (N, D), "rewards":
  // float32 (N,), "terminated" / "truncated": bool (N,), "final_obs": float32 (N, D), "episode_r":
  // float64 (N,), "episode_l": int64 (N,)}, the buffers step() writes (checked here, once). The policy
  // must fit the env's spaces; a Python-stepped env takes Box actions, float32 (N, d).
  RolloutEnv(py::handle envs, const PolicyAct& policy);

  const EnvRows& rows() const { return rows_; }
  const std::string& name() const { return name_; }
  // Box actions (float32 (N, d)), else one categorical (int64 (N,)).
  bool box() const { return box_; }
  // The env's buffers, for the caller's overlap checks.
  std::vector<const ArrayArg*> buffers() const;

  // Steps every env with the caller's checked actions: int64 (N,) in the env's range, or float32 (N, d)
  // finite. Called without the GIL; a Python env's step takes it for the call, and a Python exception
  // it raises propagates (py::error_already_set).
  void step(const void* actions) const;

 private:
  void bind_python(py::dict envs, const PolicyAct& policy);

  const EnvBatch* batch_ = nullptr;  // the built-in env, or
  py::object step_;                  // the Python env's step and
  py::object actions_;               // the numpy array it is called with (float32 (N, d), reused)
  float* action_rows_ = nullptr;
  int64_t action_count_ = 0;
  std::vector<ArrayArg> bufs_;       // its checked buffers (kept alive)
  EnvRows rows_;
  std::string name_;
  bool box_ = true;
};

// The entries of a dict argument `arg` in `keys` order, after checking that it has exactly those keys
// (TypeError "`arg` must be `expected`" if it is not a dict, ValueError naming a missing or unknown key).
std::vector<py::object> dict_entries(py::handle obj, const char* arg, const char* expected,
                                     const std::vector<const char*>& keys);

}  // namespace fastppo
