// The native rollout (_core.collect): StepCollector's loop (fastppo/algos/rollout.py) for a built-in env
// on the CPU, or a vector env stepped in Python (rollout_env.h: then only the env's own step runs in
// Python), when no other Python work is needed per step; driven by a PolicyAct, with the trainer's
// normalisers (normalize.h) running on its own numpy arrays in place. Compiled with -ffp-contract=off
// (the normalisers must round as numpy does).
#include <pybind11/pybind11.h>

#include <algorithm>
#include <cmath>
#include <cstdint>
#include <optional>
#include <string>
#include <vector>

#include "core/array_arg.h"
#include "train/normalize.h"
#include "train/policy_act.h"
#include "train/rollout_env.h"

namespace fastppo {
namespace {

double norm_scalar(py::handle v, const char* name) {
  if (py::isinstance<py::bool_>(v) || !(py::isinstance<py::float_>(v) || py::isinstance<py::int_>(v) ||
                                        py::hasattr(v, "__float__")))
    throw_type_error(std::string(name) + " must be a number, got " + py_type_name(v));
  return v.cast<double>();
}

double* norm_array(py::handle v, const char* name, int64_t n, std::vector<ArrayArg>* keep) {
  keep->push_back(cpu_out_arg(v, name, ScalarType::Float64, "float64", {n}));
  return static_cast<double*>(keep->back().data);
}

// obs_norm: {"mean": (D,), "var": (D,), "count": (1,), "clip", "eps"}; the arrays float64, updated in place.
ObsNormalizer obs_norm_arg(py::handle obj, int64_t obs_dim, std::vector<ArrayArg>* keep) {
  const std::vector<py::object> e =
      dict_entries(obj, "obs_norm", "None or a dict", {"mean", "var", "count", "clip", "eps"});
  ObsNormalizer o;
  o.rms.dim = obs_dim;
  o.rms.mean = norm_array(e[0], "obs_norm['mean']", obs_dim, keep);
  o.rms.var = norm_array(e[1], "obs_norm['var']", obs_dim, keep);
  o.rms.count = norm_array(e[2], "obs_norm['count']", 1, keep);
  o.clip = norm_scalar(e[3], "obs_norm['clip']");
  o.eps = norm_scalar(e[4], "obs_norm['eps']");
  return o;
}

// reward_norm: {"mean": (1,), "var": (1,), "count": (1,), "returns": (N,), "gamma", "clip", "eps"}.
RewardScaler reward_norm_arg(py::handle obj, int64_t num_envs, std::vector<ArrayArg>* keep) {
  const std::vector<py::object> e = dict_entries(obj, "reward_norm", "None or a dict",
                                                 {"mean", "var", "count", "returns", "gamma", "clip", "eps"});
  RewardScaler r;
  r.rms.dim = 1;
  r.rms.mean = norm_array(e[0], "reward_norm['mean']", 1, keep);
  r.rms.var = norm_array(e[1], "reward_norm['var']", 1, keep);
  r.rms.count = norm_array(e[2], "reward_norm['count']", 1, keep);
  r.returns = norm_array(e[3], "reward_norm['returns']", num_envs, keep);
  r.gamma = norm_scalar(e[4], "reward_norm['gamma']");
  r.clip = norm_scalar(e[5], "reward_norm['clip']");
  r.eps = norm_scalar(e[6], "reward_norm['eps']");
  return r;
}

// A Box's bound per action dimension (action_low / action_high), copied: float32 (d,) without NaN for
// Box actions, None for categorical ones.
std::vector<float> bound_arg(py::handle obj, const char* name, bool box, int64_t d) {
  if (!box) {
    if (!obj.is_none()) throw_value_error(std::string(name) + " must be None for categorical actions");
    return {};
  }
  if (obj.is_none())
    throw_type_error(std::string(name) + " must be a float32 array of shape " + shape_str({d}) +
                     " (the Box's bound per action dimension), got None");
  const ArrayArg a = array_arg(obj, name, py::none());
  check_dtype(a, ScalarType::Float32, "float32");
  if (a.device != DeviceType::CPU || a.shape != std::vector<int64_t>{d})
    throw_value_error(std::string(name) + " must be a CPU array of shape " + shape_str({d}) + ", got " +
                      a.device_str() + " array of shape " + a.shape_str());
  std::vector<float> out(d);
  for (int64_t j = 0; j < d; ++j) {
    out[j] = static_cast<const float*>(a.data)[j * a.strides[0]];
    if (std::isnan(out[j])) throw_value_error(std::string(name) + " must not hold NaN");
  }
  return out;
}

// The rollout's arrays, checked.
struct RolloutRows {
  int64_t T = 0;
  float* obs;
  void* actions;
  float* log_probs;
  float* values;
  float* dist_params;
  float* rewards;
  uint8_t* terminated;
  uint8_t* truncated;
  float* final_values;
  double* ep_returns;
  int64_t* ep_lengths;
};

// The loop, without the GIL, on checked buffers. Writes the policy's input after the last step to
// last_obs (N, obs_dim) and returns the number of episodes that ended.
int64_t collect_steps(const RolloutEnv& envs, const PolicyAct& policy, const RolloutRows& r, const float* first_rows,
                      uint64_t seed, const std::vector<float>& low, const std::vector<float>& high,
                      ObsNormalizer* obs_norm, RewardScaler* reward_norm, float* last_obs) {
  const EnvRows& p = envs.rows();
  const int64_t N = p.N, T = r.T, obs_dim = p.obs_dim;
  const int64_t d = envs.box() ? policy.action_width() : 0;  // Box: action entries per env
  int64_t ended = 0;
  std::vector<float> final_rows(N * obs_dim), final_v(N);
  std::vector<float> current(first_rows, first_rows + N * obs_dim);  // the policy's input, normalised
  std::vector<int64_t> bootstrap(N);
  std::vector<float> env_actions(N * d);
  for (int64_t t = 0; t < T; ++t) {
    float* o = r.obs + t * N * obs_dim;
    std::copy(current.begin(), current.end(), o);
    void* a = d > 0 ? static_cast<void*>(static_cast<float*>(r.actions) + t * N * d)
                    : static_cast<void*>(static_cast<int64_t*>(r.actions) + t * N);
    policy.act_rows(o, N, a, r.log_probs + t * N, r.values + t * N, r.dist_params + t * N * policy.n_params(), seed,
                    uint64_t(t));
    for (int64_t k = 0; k < N * d; ++k) {  // Box: the env gets the sample clipped per dimension
      const float x = static_cast<const float*>(a)[k];
      if (!std::isfinite(x))
        throw_value_error("the policy sampled a non-finite action for env " + std::to_string(k / d) + " at step " +
                          std::to_string(t) + " (are the weights finite?)");
      env_actions[k] = std::min(std::max(x, low[k % d]), high[k % d]);
    }
    envs.step(d > 0 ? env_actions.data() : a);
    if (reward_norm)
      reward_norm->apply(p.rewards, p.terminated, p.truncated, N, r.rewards + t * N);
    else
      std::copy(p.rewards, p.rewards + N, r.rewards + t * N);
    std::copy(p.terminated, p.terminated + N, r.terminated + t * N);
    std::copy(p.truncated, p.truncated + N, r.truncated + t * N);
    int64_t n_boot = 0;
    for (int64_t i = 0; i < N; ++i) {
      if (!(p.terminated[i] || p.truncated[i])) continue;
      r.ep_returns[ended] = p.episode_r[i];
      r.ep_lengths[ended] = p.episode_l[i];
      ++ended;
      if (p.truncated[i] && !p.terminated[i]) {
        std::copy(p.final_obs + i * obs_dim, p.final_obs + (i + 1) * obs_dim, &final_rows[n_boot * obs_dim]);
        bootstrap[n_boot++] = i;
      }
    }
    if (obs_norm) {
      obs_norm->rms.update(p.obs, N);
      obs_norm->apply(p.obs, N, current.data());
    } else {
      std::copy(p.obs, p.obs + N * obs_dim, current.begin());
    }
    if (n_boot) {  // the time limit is not the end of the task: V(true final observation)
      // normalised with the statistics that include this step's observations, as SB3's VecNormalize
      if (obs_norm) obs_norm->apply(final_rows.data(), n_boot, final_rows.data());
      policy.value_rows(final_rows.data(), n_boot, final_v.data());
      for (int64_t k = 0; k < n_boot; ++k) r.final_values[t * N + bootstrap[k]] = final_v[k];
    }
  }
  std::copy(current.begin(), current.end(), last_obs);
  return ended;
}

// n_steps vector steps driven by `policy`, all natively but for a Python env's own step. Each step acts
// on the current observations (first_obs at step 0, then the envs' own, normalised when obs_norm is
// given), steps every env and records into the rollout's (T, N, ...) arrays; V(true final observation)
// goes to final_values where an env was truncated and not terminated; the return and length of each
// episode that ended go to episode_returns / episode_lengths (capacity T * N). Box actions are clipped
// to [action_low, action_high] per dimension for the env (the trainer's rule, as ActionSpec.to_env: the
// unclipped sample is what the rollout stores and scores). After the last step: last_obs = the policy's
// input, last_values = V(last_obs). Returns how many episodes ended.
int64_t collect(py::handle env_arg, const PolicyAct& policy, py::handle first_obs, py::dict rollout,
                py::handle episode_returns, py::handle episode_lengths, uint64_t seed, py::handle action_low,
                py::handle action_high, py::handle last_obs, py::handle last_values, py::object obs_norm,
                py::object reward_norm) {
  const RolloutEnv envs(env_arg, policy);  // checks the envs, their buffers and that the policy fits them
  const int64_t obs_dim = envs.rows().obs_dim, N = envs.rows().N;
  const int64_t d = policy.action_width();
  const std::vector<float> low = bound_arg(action_low, "action_low", envs.box(), d);
  const std::vector<float> high = bound_arg(action_high, "action_high", envs.box(), d);
  for (size_t j = 0; j < low.size(); ++j)
    if (low[j] > high[j]) throw_value_error("action_low must not exceed action_high (dimension " +
                                            std::to_string(j) + ")");
  std::vector<ArrayArg> arrays;  // every array but the outputs last_obs / last_values, for the overlap check
  arrays.reserve(24);
  RolloutRows r;
  int64_t T = -1;
  // A rollout array: CPU, contiguous, writeable, of this dtype and shape (T, N, cols...) (T from the first).
  auto take = [&](const char* name, ScalarType dtype, const char* dtype_name, std::vector<int64_t> cols) -> void* {
    if (!rollout.contains(name)) throw_value_error(std::string("rollout is missing the key '") + name + "'");
    ArrayArg a = array_arg(rollout[name], name, py::none(), /*allow_int=*/true);
    check_dtype(a, dtype, dtype_name);
    check_contiguous(a);
    if (T < 0) T = a.shape.empty() ? 0 : a.shape[0];
    std::vector<int64_t> shape{T, N};
    shape.insert(shape.end(), cols.begin(), cols.end());
    if (a.device != DeviceType::CPU || a.shape != shape || !a.writeable)
      throw_value_error(std::string(name) + " must be a writeable CPU array of shape " + shape_str(shape) + ", got " +
                        a.shape_str());
    arrays.push_back(std::move(a));
    return arrays.back().data;
  };
  r.obs = static_cast<float*>(take("obs", ScalarType::Float32, "float32", {obs_dim}));
  r.actions = envs.box() ? take("actions", ScalarType::Float32, "float32", {d})
                         : take("actions", ScalarType::Int64, "int64", {});
  r.log_probs = static_cast<float*>(take("log_probs", ScalarType::Float32, "float32", {}));
  r.values = static_cast<float*>(take("values", ScalarType::Float32, "float32", {}));
  r.dist_params = static_cast<float*>(take("dist_params", ScalarType::Float32, "float32", {policy.n_params()}));
  r.rewards = static_cast<float*>(take("rewards", ScalarType::Float32, "float32", {}));
  r.terminated = static_cast<uint8_t*>(take("terminated", ScalarType::Bool, "bool", {}));
  r.truncated = static_cast<uint8_t*>(take("truncated", ScalarType::Bool, "bool", {}));
  r.final_values = static_cast<float*>(take("final_values", ScalarType::Float32, "float32", {}));
  r.T = T;
  const size_t first_obs_index = arrays.size();
  arrays.push_back(policy.obs_arg(first_obs, "first_obs"));
  if (arrays.back().shape[0] != N)
    throw_value_error("first_obs must hold one row per env (" + std::to_string(N) + "), got " +
                      arrays.back().shape_str());
  const float* first_rows = static_cast<const float*>(arrays.back().data);
  arrays.push_back(cpu_out_arg(episode_returns, "episode_returns", ScalarType::Float64, "float64", {T * N}));
  r.ep_returns = static_cast<double*>(arrays.back().data);
  arrays.push_back(cpu_out_arg(episode_lengths, "episode_lengths", ScalarType::Int64, "int64", {T * N}));
  r.ep_lengths = static_cast<int64_t*>(arrays.back().data);
  std::optional<ObsNormalizer> o_norm;
  std::optional<RewardScaler> r_norm;
  if (!obs_norm.is_none()) o_norm = obs_norm_arg(obs_norm, obs_dim, &arrays);
  if (!reward_norm.is_none()) r_norm = reward_norm_arg(reward_norm, N, &arrays);
  // Everything the loop writes (the rollout's arrays, the episode buffers, the normalisers' state) apart
  // from each other and from the envs' buffers; first_obs is only read, before the first write.
  const std::vector<const ArrayArg*> env_buffers = envs.buffers();
  for (size_t i = 0; i < arrays.size(); ++i) {
    if (i == first_obs_index) continue;
    std::vector<const ArrayArg*> others = env_buffers;
    for (size_t j = 0; j < i; ++j)
      if (j != first_obs_index) others.push_back(&arrays[j]);
    check_writeable_output(arrays[i], others);
  }
  const ArrayArg out_obs = cpu_out_arg(last_obs, "last_obs", ScalarType::Float32, "float32", {N, obs_dim});
  const ArrayArg out_values = cpu_out_arg(last_values, "last_values", ScalarType::Float32, "float32", {N});
  std::vector<const ArrayArg*> others = env_buffers;
  for (const ArrayArg& a : arrays) others.push_back(&a);
  check_writeable_output(out_obs, others);
  others.push_back(&out_obs);
  check_writeable_output(out_values, others);

  py::gil_scoped_release nogil;  // a Python env's step takes the GIL back for its call only
  float* last_rows = static_cast<float*>(out_obs.data);
  const int64_t ended = collect_steps(envs, policy, r, first_rows, seed, low, high, o_norm ? &*o_norm : nullptr,
                                      r_norm ? &*r_norm : nullptr, last_rows);
  policy.value_rows(last_rows, N, static_cast<float*>(out_values.data));
  return ended;
}

}  // namespace

void bind_rollout(py::module_& m) {
  m.def("collect", &collect, py::arg("envs"), py::arg("policy"), py::arg("first_obs"), py::arg("rollout"),
        py::arg("episode_returns"), py::arg("episode_lengths"), py::arg("seed"), py::arg("action_low"),
        py::arg("action_high"), py::arg("last_obs"), py::arg("last_values"), py::arg("obs_norm") = py::none(),
        py::arg("reward_norm") = py::none(),
        "A whole rollout driven by a PolicyAct, natively; returns the number of episodes that ended. envs: an "
        "EnvBatch (CPU), or a Python-stepped env as a dict {'step': step(actions), 'obs', 'rewards', "
        "'terminated', 'truncated', 'final_obs', 'episode_r', 'episode_l'} (the numpy buffers step writes). "
        "action_low / action_high: the Box's bounds, float32 (d,) (None for categorical actions). obs_norm / "
        "reward_norm: the normalisers' state as dicts of arrays (updated in place) and scalars, or None.");
}

}  // namespace fastppo
