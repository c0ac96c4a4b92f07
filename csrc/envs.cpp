// The built-in envs' binding: validates the buffers once when a batch is made, then each step checks
// the actions (dtype, shape, device, and on the CPU every value) before touching any env, releases
// the GIL and runs the whole vector step natively.
#include <pybind11/numpy.h>
#include <pybind11/pybind11.h>
#include <pybind11/stl.h>

#include <chrono>
#include <cmath>
#include <limits>
#include <type_traits>
#include <optional>
#include <string>

#include "array_arg.h"
#ifdef FASTPPO_WITH_CUDA
#include "cuda/device.h"
#endif
#include "envs/vec_env.h"
#include "normalize.h"
#include "policy_act.h"

namespace fastppo {
namespace {

constexpr EnvId kEnvIds[] = {EnvId::CartPole, EnvId::Acrobot, EnvId::MountainCar, EnvId::MountainCarContinuous,
                             EnvId::Pendulum};

const char* env_name(EnvId id) {
  return dispatch_env(id, [](auto env) { return decltype(env)::kId; });
}

EnvId parse_env_id(const std::string& name) {
  for (EnvId id : kEnvIds)
    if (name == env_name(id)) return id;
  throw_value_error("env_id must name a built-in env, got '" + name + "'");
}

// What Python needs to build the spaces and buffers of env `name`.
py::dict env_info(const std::string& name) {
  return dispatch_env(parse_env_id(name), [](auto env) {
    using E = decltype(env);
    py::dict d;
    d["state_dim"] = E::kStateDim;
    d["obs_dim"] = E::kObsDim;
    d["num_actions"] = E::kNumActions;
    d["max_episode_steps"] = E::kMaxEpisodeSteps;
    d["reset_defaults"] = py::make_tuple(E::kResetA, E::kResetB);
    return d;
  });
}

// A writeable, contiguous CPU array of n values of `dtype` (any shape): the rollout's episode buffers
// and the normalisers' state, which the native rollout writes in place.
ArrayArg cpu_values_arg(py::handle obj, const char* name, ScalarType dtype, const char* dtype_name, int64_t n) {
  ArrayArg a = array_arg(obj, name, py::none(), /*allow_int=*/dtype == ScalarType::Int64);
  check_dtype(a, dtype, dtype_name);
  check_contiguous(a);
  if (a.device != DeviceType::CPU || a.numel() != n || !a.writeable)
    throw_value_error(std::string(name) + " must be a writeable CPU array of " + std::to_string(n) + " values, got " +
                      a.device_str() + " array of shape " + a.shape_str());
  return a;
}

// A RunningMeanStd (fastppo/algos/normalize.py) of `dim` columns: mean and var are updated in place,
// count is read here and written back by collect once the rollout is done. `keep` holds the arrays.
RunningMeanStd rms_arg(py::handle rms, const char* mean_name, const char* var_name, int64_t dim,
                       std::vector<ArrayArg>* keep) {
  RunningMeanStd r;
  r.dim = dim;
  keep->push_back(cpu_values_arg(rms.attr("mean"), mean_name, ScalarType::Float64, "float64", dim));
  r.mean = static_cast<double*>(keep->back().data);
  keep->push_back(cpu_values_arg(rms.attr("var"), var_name, ScalarType::Float64, "float64", dim));
  r.var = static_cast<double*>(keep->back().data);
  r.count = rms.attr("count").cast<double>();
  return r;
}

// The trainer's ObsNormalizer / RewardScaler (fastppo/algos/normalize.py) as their native twins.
ObsNormalizer obs_normalizer_arg(py::handle norm, int64_t obs_dim, std::vector<ArrayArg>* keep) {
  ObsNormalizer o;
  o.rms = rms_arg(norm.attr("rms"), "obs_normalizer.rms.mean", "obs_normalizer.rms.var", obs_dim, keep);
  o.clip = norm.attr("clip").cast<double>();
  o.eps = norm.attr("eps").cast<double>();
  return o;
}

RewardScaler reward_scaler_arg(py::handle scaler, int64_t num_envs, std::vector<ArrayArg>* keep) {
  RewardScaler r;
  r.rms = rms_arg(scaler.attr("rms"), "reward_scaler.rms.mean", "reward_scaler.rms.var", 1, keep);
  keep->push_back(cpu_values_arg(scaler.attr("returns"), "reward_scaler.returns", ScalarType::Float64, "float64",
                                 num_envs));
  r.returns = static_cast<double*>(keep->back().data);
  r.gamma = scaler.attr("gamma").cast<double>();
  r.clip = scaler.attr("clip").cast<double>();
  r.eps = scaler.attr("eps").cast<double>();
  return r;
}

// Whether env `id` has the CPU fast-math step (a physics split into E::trig / E::advance, cpu/envs_cpu.cpp).
bool has_fast_math(EnvId id) {
  return dispatch_env(id, [](auto env) { return kSplitStep<decltype(env)>; });
}

// An action the env cannot take: outside {0, ..., num_actions - 1} (num_actions > 0), or not finite
// (Box actions; finite out-of-range ones are clipped).
template <typename T>
bool bad_action(T v, int64_t num_actions) {
  if constexpr (std::is_integral_v<T>)
    return (v < 0) | (v >= num_actions);
  else
    return !(std::fabs(v) <= std::numeric_limits<T>::max());  // NaN and infinities
}

// The index of the first bad action among n, or -1. A branch-free pass first (vectorised in the AVX2
// clone: the check runs on the calling thread, before the step splits), then a scan for the index.
template <typename T>
FASTPPO_CPU_CLONES int64_t first_bad_action(const T* x, int64_t stride, int64_t n, int64_t num_actions) {
  int64_t any = 0;
  for (int64_t i = 0; i < n; ++i) any |= bad_action(x[i * stride], num_actions);
  if (any)
    for (int64_t i = 0; i < n; ++i)
      if (bad_action(x[i * stride], num_actions)) return i;
  return -1;
}

double now_seconds() {  // the clock of Python's time.perf_counter() on Linux (CLOCK_MONOTONIC)
  return std::chrono::duration<double>(std::chrono::steady_clock::now().time_since_epoch()).count();
}

#ifdef FASTPPO_WITH_CUDA
constexpr bool kWithCuda = true;
#define ENVS_CUDA(call) call
#else
constexpr bool kWithCuda = false;  // the constructor refuses CUDA buffers, so ENVS_CUDA is never reached
#define ENVS_CUDA(call) (void)s
#endif

class EnvBatch {
 public:
  // to_array: called on CPU actions that are not numpy arrays (torch tensors, lists) to get one.
  EnvBatch(const std::string& env_id, int64_t num_envs, py::dict buffers, py::object to_array, bool fast_math)
      : to_array_(std::move(to_array)) {
    p_.env = parse_env_id(env_id);
    p_.fast_math = fast_math;
    if (fast_math && !has_fast_math(p_.env))
      throw_value_error("fast_math=True is available for " + std::string(env_name(EnvId::CartPole)) + " only, got '" +
                        env_id + "'");
    if (num_envs < 1) throw_value_error("num_envs must be >= 1, got " + std::to_string(num_envs));
    p_.N = num_envs;
    const auto [state_dim, obs_dim] = dispatch_env(p_.env, [](auto env) {
      using E = decltype(env);
      return std::make_pair(int64_t(E::kStateDim), int64_t(E::kObsDim));
    });
    auto take = [&](const char* name, ScalarType dtype, const char* dtype_name, int64_t cols) {
      if (!buffers.contains(name)) throw_value_error(std::string("buffers is missing '") + name + "'");
      ArrayArg a = array_arg(buffers[name], name, py::none(), true);
      check_dtype(a, dtype, dtype_name);
      const std::vector<int64_t> shape = cols ? std::vector<int64_t>{num_envs, cols} : std::vector<int64_t>{num_envs};
      if (a.shape != shape)
        throw_value_error(std::string(name) + " must have shape (" + std::to_string(num_envs) +
                          (cols ? ", " + std::to_string(cols) + ")" : ",)") + ", got " + a.shape_str());
      check_contiguous(a);
      if (!a.writeable) throw_value_error(std::string(name) + " must be writeable, got a read-only array");
      if (!bufs_.empty()) check_same_device(a, bufs_.front());
      bufs_.push_back(std::move(a));
      return bufs_.back().data;
    };
    bufs_.reserve(13);
    p_.obs = static_cast<float*>(take("obs", ScalarType::Float32, "float32", obs_dim));
    p_.final_obs = static_cast<float*>(take("final_obs", ScalarType::Float32, "float32", obs_dim));
    p_.rewards = static_cast<float*>(take("rewards", ScalarType::Float32, "float32", 0));
    p_.terminated = static_cast<uint8_t*>(take("terminated", ScalarType::Bool, "bool", 0));
    p_.truncated = static_cast<uint8_t*>(take("truncated", ScalarType::Bool, "bool", 0));
    p_.episode_r = static_cast<double*>(take("episode_r", ScalarType::Float64, "float64", 0));
    p_.episode_l = static_cast<int64_t*>(take("episode_l", ScalarType::Int64, "int64", 0));
    p_.episode_t = static_cast<double*>(take("episode_t", ScalarType::Float64, "float64", 0));
    p_.state = static_cast<double*>(take("state", ScalarType::Float64, "float64", state_dim));
    p_.rng = static_cast<uint64_t*>(take("rng", ScalarType::Int64, "int64", 2));
    p_.elapsed = static_cast<int64_t*>(take("elapsed", ScalarType::Int64, "int64", 0));
    p_.running_return = static_cast<double*>(take("running_return", ScalarType::Float64, "float64", 0));
    p_.start_time = static_cast<double*>(take("start_time", ScalarType::Float64, "float64", 0));
    for (size_t i = 0; i < bufs_.size(); ++i)
      for (size_t j = 0; j < i; ++j) check_writeable_output(bufs_[i], {&bufs_[j]});
    on_cuda_ = bufs_.front().device == DeviceType::CUDA;
    device_ = bufs_.front();
    if (on_cuda_ && !kWithCuda) throw_built_without_cuda("the env buffers are CUDA arrays", "device='cpu'");
    if (on_cuda_ && fast_math)
      throw_value_error("fast_math=True is for CPU envs (the GPU's sin and cos are its own), got CUDA buffers");
  }

  // Steps every env with `actions`; returns how many episodes ended (-1 on CUDA, where counting
  // would wait for the GPU).
  int64_t step(py::handle actions, py::handle stream) {
    EnvStepArgs a;
    py::object converted;  // keeps a converted array alive through the step
    if (!on_cuda_ && !py::isinstance<py::array>(actions) && !to_array_.is_none()) {
      converted = to_array_(actions);
      actions = converted;
    }
    check_actions(array_arg(actions, "actions", stream, true), &a);
    a.now = now_seconds();
    return run(
        stream, [&] { return envs_step_cpu(p_, a); }, [&](void* s) { ENVS_CUDA(envs_step_cuda(p_, a, s)); });
  }

  // A gymnasium VectorEnv's step() in one call (CPU): (*result, infos), where result is the env's
  // (obs, rewards, terminated, truncated) buffers and infos is {} unless an episode ended, then
  // infos_fn() (BufferedVecEnv._infos, the one place those are built).
  py::tuple step_gym(py::tuple result, py::handle infos_fn, py::handle actions) {
    const int64_t ended = step(actions, py::none());
    py::object infos = ended == 0 ? py::dict() : infos_fn();
    return py::make_tuple(result[0], result[1], result[2], result[3], std::move(infos));
  }

  // Resets the envs in `mask` (None: all), reseeding their streams from `seed` when one is given.
  void reset(std::optional<uint64_t> seed, py::handle mask, double a, double b, py::handle stream) {
    EnvResetArgs r;
    r.reseed = seed.has_value();
    r.seed = seed.value_or(0);
    r.a = a, r.b = b;
    ArrayArg m;
    if (!mask.is_none()) {
      m = array_arg(mask, "options['reset_mask']", stream, true);
      check_dtype(m, ScalarType::Bool, "bool");
      if (m.shape != std::vector<int64_t>{p_.N})
        throw_value_error("options['reset_mask'] must have shape (" + std::to_string(p_.N) + ",), got " +
                          m.shape_str());
      check_same_device(m, device_);
      check_contiguous(m);
      r.mask = static_cast<const uint8_t*>(m.data);
    }
    r.now = now_seconds();
    run(
        stream, [&] { return envs_reset_cpu(p_, r), int64_t(0); },
        [&](void* s) { ENVS_CUDA(envs_reset_cuda(p_, r, s)); });
  }

  // n_steps vector steps driven by `policy`, all natively: OnPolicyAlgorithm._collect's loop for a
  // built-in env on the CPU when no Python work is needed per step. Each step acts on the current
  // observations (first_obs at step 0, then the envs' own), steps every env and records into the
  // rollout's (T, N, ...) arrays; V(true final observation) goes to final_values where an env was
  // truncated and not terminated; the return and length of each episode that ended go to
  // episode_returns / episode_lengths (capacity T * N). Returns how many episodes ended.
  // Box actions are clipped to [action_low, action_high] for the env (the trainer's rule, as
  // ActionSpec.to_env: the unclipped sample is what the rollout stores and scores).
  // obs_normalizer / reward_scaler: the trainer's ObsNormalizer / RewardScaler (fastppo/algos/normalize.py)
  // or None; their running statistics are updated in place, step by step, as the Python loop does.
  int64_t collect(const PolicyAct& policy, py::handle first_obs, py::dict rollout, py::handle episode_returns,
                  py::handle episode_lengths, uint64_t seed, float action_low, float action_high,
                  py::object obs_normalizer, py::object reward_scaler) {
    if (on_cuda_) throw_value_error("collect needs the envs on the CPU");
    const auto [obs_dim, num_actions] = obs_dim_and_num_actions();
    const std::string env = env_name(p_.env);
    if (policy.obs_dim() != obs_dim)
      throw_value_error("the policy takes " + std::to_string(policy.obs_dim()) + " observations, " + env + " gives " +
                        std::to_string(obs_dim));
    if (num_actions > 0 ? (policy.gaussian() || policy.n_params() != num_actions || policy.action_width() != 1)
                        : (!policy.gaussian() || policy.action_width() != 1))
      throw_value_error("the policy's actions do not fit " + env + "'s action space");
    std::vector<ArrayArg> arrays;
    arrays.reserve(12);
    const int64_t N = p_.N;
    int64_t T = -1;
    // A rollout array: CPU, contiguous, writeable, of this dtype and shape (T, N, cols...) (T from the first).
    auto take = [&](py::handle obj, const char* name, ScalarType dtype, const char* dtype_name,
                    std::vector<int64_t> cols) -> void* {
      ArrayArg a = array_arg(obj, name, py::none(), /*allow_int=*/true);
      check_dtype(a, dtype, dtype_name);
      check_contiguous(a);
      if (T < 0) T = a.shape.empty() ? 0 : a.shape[0];
      std::vector<int64_t> shape{T, N};
      shape.insert(shape.end(), cols.begin(), cols.end());
      if (a.device != DeviceType::CPU || a.shape != shape || !a.writeable)
        throw_value_error(std::string(name) + " must be a writeable CPU array of shape " + shape_str(shape) +
                          ", got " + a.shape_str());
      arrays.push_back(std::move(a));
      return arrays.back().data;
    };
    float* obs = static_cast<float*>(take(rollout["obs"], "obs", ScalarType::Float32, "float32", {obs_dim}));
    void* actions = num_actions > 0 ? take(rollout["actions"], "actions", ScalarType::Int64, "int64", {})
                                    : take(rollout["actions"], "actions", ScalarType::Float32, "float32", {1});
    float* log_probs = static_cast<float*>(take(rollout["log_probs"], "log_probs", ScalarType::Float32, "float32", {}));
    float* values = static_cast<float*>(take(rollout["values"], "values", ScalarType::Float32, "float32", {}));
    float* dist_params = static_cast<float*>(
        take(rollout["dist_params"], "dist_params", ScalarType::Float32, "float32", {policy.n_params()}));
    float* rewards = static_cast<float*>(take(rollout["rewards"], "rewards", ScalarType::Float32, "float32", {}));
    uint8_t* terminated = static_cast<uint8_t*>(take(rollout["terminated"], "terminated", ScalarType::Bool, "bool", {}));
    uint8_t* truncated = static_cast<uint8_t*>(take(rollout["truncated"], "truncated", ScalarType::Bool, "bool", {}));
    float* final_values =
        static_cast<float*>(take(rollout["final_values"], "final_values", ScalarType::Float32, "float32", {}));
    const ArrayArg first = policy.obs_arg(first_obs, "first_obs");
    if (first.shape[0] != N)
      throw_value_error("first_obs must hold one row per env (" + std::to_string(N) + "), got " + first.shape_str());
    const ArrayArg ep_r = cpu_values_arg(episode_returns, "episode_returns", ScalarType::Float64, "float64", T * N);
    const ArrayArg ep_l = cpu_values_arg(episode_lengths, "episode_lengths", ScalarType::Int64, "int64", T * N);
    double* ep_returns = static_cast<double*>(ep_r.data);
    int64_t* ep_lengths = static_cast<int64_t*>(ep_l.data);
    const float* first_rows = static_cast<const float*>(first.data);
    std::vector<ArrayArg> norm_arrays;
    std::optional<ObsNormalizer> obs_norm;
    std::optional<RewardScaler> reward_norm;
    if (!obs_normalizer.is_none()) obs_norm = obs_normalizer_arg(obs_normalizer, obs_dim, &norm_arrays);
    if (!reward_scaler.is_none()) reward_norm = reward_scaler_arg(reward_scaler, N, &norm_arrays);

    int64_t ended = 0;
    {
      py::gil_scoped_release nogil;
      ended = collect_steps(policy, T, first_rows, obs, actions, log_probs, values, dist_params, rewards, terminated,
                            truncated, final_values, ep_returns, ep_lengths, seed, action_low, action_high,
                            obs_norm ? &*obs_norm : nullptr, reward_norm ? &*reward_norm : nullptr);
    }
    if (obs_norm) obs_normalizer.attr("rms").attr("count") = obs_norm->rms.count;
    if (reward_norm) reward_scaler.attr("rms").attr("count") = reward_norm->rms.count;
    return ended;
  }

 private:
  std::pair<int64_t, int64_t> obs_dim_and_num_actions() const {
    return dispatch_env(p_.env, [](auto env) {
      using E = decltype(env);
      return std::make_pair(int64_t(E::kObsDim), int64_t(E::kNumActions));
    });
  }

  // collect's loop, without the GIL, on checked buffers.
  int64_t collect_steps(const PolicyAct& policy, int64_t T, const float* first_rows, float* obs, void* actions,
                        float* log_probs, float* values, float* dist_params, float* rewards, uint8_t* terminated,
                        uint8_t* truncated, float* final_values, double* ep_returns, int64_t* ep_lengths,
                        uint64_t seed, float action_low, float action_high, ObsNormalizer* obs_norm,
                        RewardScaler* reward_norm) {
    const int64_t N = p_.N;
    const auto [obs_dim, num_actions] = obs_dim_and_num_actions();
    int64_t ended = 0;
    std::vector<float> final_rows(N * obs_dim), final_v(N);
    std::vector<float> current(first_rows, first_rows + N * obs_dim);  // the policy's input, normalised
    std::vector<int64_t> bootstrap(N);
    std::vector<float> env_actions(num_actions > 0 ? 0 : N);
    for (int64_t t = 0; t < T; ++t) {
      float* o = obs + t * N * obs_dim;
      std::copy(current.begin(), current.end(), o);
      void* a = num_actions > 0 ? static_cast<void*>(static_cast<int64_t*>(actions) + t * N)
                                : static_cast<void*>(static_cast<float*>(actions) + t * N);
      policy.act_rows(o, N, a, log_probs + t * N, values + t * N, dist_params + t * N * policy.n_params(), seed,
                      uint64_t(t));
      if (num_actions == 0)
        for (int64_t i = 0; i < N; ++i) {
          const float x = static_cast<const float*>(a)[i];
          if (!std::isfinite(x))
            throw_value_error("the policy sampled a non-finite action for env " + std::to_string(i) + " at step " +
                              std::to_string(t) + " (are the weights finite?)");
          env_actions[i] = std::min(std::max(x, action_low), action_high);
        }
      EnvStepArgs args;
      args.actions = num_actions > 0 ? a : env_actions.data();
      args.action_dtype = num_actions > 0 ? ScalarType::Int64 : ScalarType::Float32;
      args.action_stride = 1;
      args.now = now_seconds();
      envs_step_cpu(p_, args);
      if (reward_norm)
        reward_norm->apply(p_.rewards, p_.terminated, p_.truncated, N, rewards + t * N);
      else
        std::copy(p_.rewards, p_.rewards + N, rewards + t * N);
      std::copy(p_.terminated, p_.terminated + N, terminated + t * N);
      std::copy(p_.truncated, p_.truncated + N, truncated + t * N);
      int64_t n_boot = 0;
      for (int64_t i = 0; i < N; ++i) {
        if (!(p_.terminated[i] || p_.truncated[i])) continue;
        ep_returns[ended] = p_.episode_r[i];
        ep_lengths[ended] = p_.episode_l[i];
        ++ended;
        if (p_.truncated[i] && !p_.terminated[i]) {
          std::copy(p_.final_obs + i * obs_dim, p_.final_obs + (i + 1) * obs_dim, &final_rows[n_boot * obs_dim]);
          bootstrap[n_boot++] = i;
        }
      }
      if (n_boot) {  // the time limit is not the end of the task: V(true final observation)
        if (obs_norm) obs_norm->apply(final_rows.data(), n_boot, final_rows.data());  // statistics before this step's
        policy.value_rows(final_rows.data(), n_boot, final_v.data());
        for (int64_t k = 0; k < n_boot; ++k) final_values[t * N + bootstrap[k]] = final_v[k];
      }
      if (obs_norm) {
        obs_norm->rms.update(p_.obs, N);
        obs_norm->apply(p_.obs, N, current.data());
      } else {
        std::copy(p_.obs, p_.obs + N * obs_dim, current.begin());
      }
    }
    return ended;
  }

  // Runs cpu() on the CPU or cuda(stream) on the GPU, without the GIL; returns cpu()'s value, -1 on CUDA.
  template <typename Cpu, typename Cuda>
  int64_t run(py::handle stream, Cpu&& cpu, Cuda&& cuda) const {
    void* s = on_cuda_ ? cuda_stream(stream) : nullptr;  // read while holding the GIL
    py::gil_scoped_release nogil;
    if (!on_cuda_) return cpu();
#ifdef FASTPPO_WITH_CUDA
    CudaDeviceGuard device(device_.device_id);
#endif
    cuda(s);
    return -1;
  }

  void check_actions(const ArrayArg& act, EnvStepArgs* a) const {
    check_same_device(act, device_);
    const int64_t n = dispatch_env(p_.env, [](auto env) { return int64_t(decltype(env)::kNumActions); });
    const char* env = env_name(p_.env);  // for the messages (a std::string here would allocate every step)
    if (n > 0) {
      if (act.dtype != ScalarType::Int32 && act.dtype != ScalarType::Int64)
        throw_type_error(std::string("actions must have an integer dtype (int32 or int64) for ") + env +
                         "'s Discrete(" + std::to_string(n) + ") actions, got " + act.dtype_name);
      if (act.shape != std::vector<int64_t>{p_.N})
        throw_value_error("actions must have shape (" + std::to_string(p_.N) + ",) for " + env + " with " +
                          std::to_string(p_.N) + " envs, got " + act.shape_str());
    } else {
      if (act.dtype != ScalarType::Float32 && act.dtype != ScalarType::Float64)
        throw_type_error(std::string("actions must have dtype float32 or float64 for ") + env +
                         "'s Box actions, got " + act.dtype_name);
      if (act.shape != std::vector<int64_t>{p_.N, 1})
        throw_value_error("actions must have shape (" + std::to_string(p_.N) + ", 1) for " + env + " with " +
                          std::to_string(p_.N) + " envs, got " + act.shape_str());
    }
    a->actions = act.data;
    a->action_dtype = act.dtype;
    a->action_stride = act.strides[0];
    if (act.device == DeviceType::CUDA) return;  // values are checked by the Python wrapper on the GPU
    const int64_t stride = a->action_stride;
    switch (act.dtype) {
      case ScalarType::Int32: return check_action_values(static_cast<const int32_t*>(act.data), stride, n, env);
      case ScalarType::Int64: return check_action_values(static_cast<const int64_t*>(act.data), stride, n, env);
      case ScalarType::Float32: return check_action_values(static_cast<const float*>(act.data), stride, n, env);
      default: return check_action_values(static_cast<const double*>(act.data), stride, n, env);
    }
  }

  // Raises, naming the first bad action, if any of the N actions is bad (bad_action).
  template <typename T>
  void check_action_values(const T* x, int64_t stride, int64_t num_actions, const char* env) const {
    const int64_t i = first_bad_action(x, stride, p_.N, num_actions);
    if (i < 0) return;
    const T v = x[i * stride];
    if constexpr (std::is_integral_v<T>)
      throw_value_error("actions[" + std::to_string(i) + "] = " + std::to_string(v) + " is out of range: " + env +
                        " takes actions in {0, ..., " + std::to_string(num_actions - 1) + "}");
    else
      throw_value_error("actions[" + std::to_string(i) + ", 0] = " +
                        py::repr(py::float_(double(v))).cast<std::string>() + " is not finite; " + env +
                        " needs finite actions (finite out-of-range ones are clipped)");
  }

  EnvBatchParams p_;
  py::object to_array_;
  std::vector<ArrayArg> bufs_;  // keeps the buffers alive
  ArrayArg device_;             // the buffers' device, for checks
  bool on_cuda_ = false;
};

}  // namespace

void bind_envs(py::module_& m) {
  py::list ids;
  for (EnvId id : kEnvIds) ids.append(env_name(id));
  m.attr("env_ids") = ids;
  m.def("env_info", &env_info, py::arg("env_id"), "Dimensions, action count and time limit of a built-in env.");
  py::class_<EnvBatch>(m, "EnvBatch", "N copies of a built-in env stepping in caller-provided buffers.")
      .def(py::init<const std::string&, int64_t, py::dict, py::object, bool>(), py::arg("env_id"),
           py::arg("num_envs"), py::arg("buffers"), py::arg("to_array") = py::none(), py::arg("fast_math") = false)
      .def("step", &EnvBatch::step, py::arg("actions"), py::arg("stream") = py::none(),
           "Step all envs (SAME_STEP autoreset); returns the number of episodes that ended (-1 on CUDA).")
      .def("step_gym", &EnvBatch::step_gym, py::arg("result"), py::arg("infos_fn"), py::arg("actions"),
           "step() of the VectorEnv (CPU): step, then (*result, {} or infos_fn()).")
      .def("reset", &EnvBatch::reset, py::arg("seed"), py::arg("mask"), py::arg("a"), py::arg("b"),
           py::arg("stream") = py::none(), "Reset the envs in mask (None: all), reseeding them if seed is given.")
      .def("collect", &EnvBatch::collect, py::arg("policy"), py::arg("first_obs"), py::arg("rollout"),
           py::arg("episode_returns"), py::arg("episode_lengths"), py::arg("seed"), py::arg("action_low") = 0.f,
           py::arg("action_high") = 0.f,
           py::arg("obs_normalizer") = py::none(), py::arg("reward_scaler") = py::none(),
           "A whole rollout driven by a PolicyAct, natively; returns the number of episodes that ended.");
}

}  // namespace fastppo
