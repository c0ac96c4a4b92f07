// RolloutEnv (rollout_env.h): the native rollout's env, a built-in EnvBatch or a Python-stepped vector env.
#include "train/rollout_env.h"

#include <pybind11/numpy.h>

#include <algorithm>
#include <string>

namespace fastppo {

std::vector<py::object> dict_entries(py::handle obj, const char* arg, const char* expected,
                                     const std::vector<const char*>& keys) {
  if (!py::isinstance<py::dict>(obj))
    throw_type_error(std::string(arg) + " must be " + expected + ", got " + py_type_name(obj));
  const py::dict d = py::reinterpret_borrow<py::dict>(obj);
  std::vector<py::object> out;
  for (const char* k : keys) {
    if (!d.contains(k)) throw_value_error(std::string(arg) + " is missing the key '" + k + "'");
    out.push_back(d[k]);
  }
  for (auto item : d) {
    const std::string key = py::str(item.first);
    if (std::none_of(keys.begin(), keys.end(), [&](const char* k) { return key == k; }))
      throw_value_error(std::string(arg) + " has an unknown key '" + key + "'");
  }
  return out;
}

RolloutEnv::RolloutEnv(py::handle envs, const PolicyAct& policy) {
  if (py::isinstance<py::dict>(envs)) {
    bind_python(py::reinterpret_borrow<py::dict>(envs), policy);
  } else if (py::isinstance<EnvBatch>(envs)) {
    batch_ = &envs.cast<const EnvBatch&>();
    if (batch_->on_cuda()) throw_value_error("collect needs the envs on the CPU");
    const EnvBatchParams& p = batch_->params();
    rows_ = EnvRows{p.N, batch_->obs_dim(), p.obs, p.final_obs, p.rewards, p.terminated, p.truncated, p.episode_r,
                    p.episode_l};
    name_ = batch_->name();
    const int64_t num_actions = batch_->num_actions();
    box_ = num_actions == 0;
    if (box_ ? (!policy.gaussian() || policy.action_width() != 1)
             : (policy.gaussian() || policy.n_params() != num_actions || policy.action_width() != 1))
      throw_value_error("the policy's actions do not fit " + name_ + "'s action space");
    if (policy.obs_dim() != rows_.obs_dim)
      throw_value_error("the policy takes " + std::to_string(policy.obs_dim()) + " observations, " + name_ +
                        " gives " + std::to_string(rows_.obs_dim));
  } else {
    throw_type_error("envs must be an EnvBatch or a dict of a Python env's step and buffers, got " +
                     py_type_name(envs));
  }
}

void RolloutEnv::bind_python(py::dict envs, const PolicyAct& policy) {
  const std::vector<py::object> e = dict_entries(
      envs, "envs", "an EnvBatch or a dict",
      {"step", "obs", "rewards", "terminated", "truncated", "final_obs", "episode_r", "episode_l"});
  if (!PyCallable_Check(e[0].ptr())) throw_type_error("envs['step'] must be callable, got " + py_type_name(e[0]));
  step_ = e[0];
  name_ = "the Python env";
  const ArrayArg obs = array_arg(e[1], "envs['obs']", py::none());
  if (obs.shape.size() != 2)
    throw_value_error("envs['obs'] must be 2-D (num_envs, obs_dim), got shape " + obs.shape_str());
  const int64_t N = obs.shape[0], D = obs.shape[1];
  if (policy.obs_dim() != D)
    throw_value_error("the policy takes " + std::to_string(policy.obs_dim()) + " observations, envs['obs'] holds " +
                      std::to_string(D) + " per env");
  bufs_.reserve(7);  // the rows below point into them
  auto take = [&](size_t i, const char* name, ScalarType dtype, const char* dtype_name,
                  std::vector<int64_t> shape) -> const void* {
    ArrayArg a = cpu_out_arg(e[i], name, dtype, dtype_name, shape);
    std::vector<const ArrayArg*> others;
    for (const ArrayArg& b : bufs_) others.push_back(&b);
    check_writeable_output(a, others);  // each its own memory: the step writes them all
    bufs_.push_back(std::move(a));
    return bufs_.back().data;
  };
  rows_.N = N;
  rows_.obs_dim = D;
  rows_.obs = static_cast<const float*>(take(1, "envs['obs']", ScalarType::Float32, "float32", {N, D}));
  rows_.rewards = static_cast<const float*>(take(2, "envs['rewards']", ScalarType::Float32, "float32", {N}));
  rows_.terminated = static_cast<const uint8_t*>(take(3, "envs['terminated']", ScalarType::Bool, "bool", {N}));
  rows_.truncated = static_cast<const uint8_t*>(take(4, "envs['truncated']", ScalarType::Bool, "bool", {N}));
  rows_.final_obs = static_cast<const float*>(take(5, "envs['final_obs']", ScalarType::Float32, "float32", {N, D}));
  rows_.episode_r = static_cast<const double*>(take(6, "envs['episode_r']", ScalarType::Float64, "float64", {N}));
  rows_.episode_l = static_cast<const int64_t*>(take(7, "envs['episode_l']", ScalarType::Int64, "int64", {N}));
  if (!policy.gaussian())
    throw_value_error("the policy's actions do not fit the Python env: it takes Box actions (a Gaussian policy)");
  py::array_t<float> actions({N, policy.action_width()});
  action_rows_ = actions.mutable_data();
  action_count_ = actions.size();
  actions_ = std::move(actions);
}

std::vector<const ArrayArg*> RolloutEnv::buffers() const {
  std::vector<const ArrayArg*> out;
  for (const ArrayArg& b : batch_ ? batch_->buffers() : bufs_) out.push_back(&b);
  return out;
}

void RolloutEnv::step(const void* actions) const {
  if (batch_) {
    batch_->step_checked_cpu(actions);
    return;
  }
  const float* a = static_cast<const float*>(actions);
  std::copy(a, a + action_count_, action_rows_);
  py::gil_scoped_acquire gil;
  step_(actions_);
}

}  // namespace fastppo
