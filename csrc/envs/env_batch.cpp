// The built-in envs' binding: validates the buffers once when a batch is made, then each step checks
// the actions (dtype, shape, device, and on the CPU every value) before touching any env, releases
// the GIL and runs the whole vector step natively.
#include <pybind11/numpy.h>
#include <pybind11/stl.h>

#include <chrono>
#include <cmath>
#include <limits>
#include <type_traits>
#include <optional>
#include <string>

#include "envs/env_batch.h"

#include "core/array_arg.h"
#ifdef FASTPPO_WITH_CUDA
#include "core/cuda_device.h"
#endif

namespace fastppo {
namespace {

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

// Whether env `id` has the CPU fast-math step (a physics split into E::trig / E::advance, envs_cpu.cpp).
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

}  // namespace

EnvBatch::EnvBatch(const std::string& env_id, int64_t num_envs, py::dict buffers, py::object to_array, bool fast_math)
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

int64_t EnvBatch::step(py::handle actions, py::handle stream) {
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

namespace {

// A fresh numpy array with the contents of `buffer` (one of the env's own numpy arrays), by numpy's own
// copy: cheaper than building an array through pybind11's constructor and copying into it.
py::object fresh_copy(py::handle buffer) {
  PyObject* copy = py::detail::npy_api::get().PyArray_NewCopy_(buffer.ptr(), /*NPY_CORDER=*/0);
  if (!copy) throw py::error_already_set();
  return py::reinterpret_steal<py::object>(copy);
}

}  // namespace

py::tuple EnvBatch::step_gym(py::tuple result, py::handle infos_fn, bool copy, py::handle actions) {
  const int64_t ended = step(actions, py::none());
  py::object infos = ended == 0 ? py::dict() : infos_fn();
  if (!copy) return py::make_tuple(result[0], result[1], result[2], result[3], std::move(infos));
  return py::make_tuple(fresh_copy(result[0]), fresh_copy(result[1]), fresh_copy(result[2]), fresh_copy(result[3]),
                        std::move(infos));
}

void EnvBatch::reset(std::optional<uint64_t> seed, py::handle mask, double a, double b, py::handle stream) {
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

int64_t EnvBatch::obs_dim() const {
  return dispatch_env(p_.env, [](auto env) { return int64_t(decltype(env)::kObsDim); });
}

int64_t EnvBatch::num_actions() const {
  return dispatch_env(p_.env, [](auto env) { return int64_t(decltype(env)::kNumActions); });
}

int64_t EnvBatch::step_checked_cpu(const void* actions) const {
  EnvStepArgs args;
  args.actions = actions;
  args.action_dtype = num_actions() > 0 ? ScalarType::Int64 : ScalarType::Float32;
  args.action_stride = 1;
  args.now = now_seconds();
  return envs_step_cpu(p_, args);
}

// Runs cpu() on the CPU or cuda(stream) on the GPU, without the GIL; returns cpu()'s value, -1 on CUDA.
template <typename Cpu, typename Cuda>
int64_t EnvBatch::run(py::handle stream, Cpu&& cpu, Cuda&& cuda) const {
  void* s = on_cuda_ ? cuda_stream(stream) : nullptr;  // read while holding the GIL
  py::gil_scoped_release nogil;
  if (!on_cuda_) return cpu();
#ifdef FASTPPO_WITH_CUDA
  CudaDeviceGuard device(device_.device_id);
#endif
  cuda(s);
  return -1;
}

void EnvBatch::check_actions(const ArrayArg& act, EnvStepArgs* a) const {
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
void EnvBatch::check_action_values(const T* x, int64_t stride, int64_t num_actions, const char* env) const {
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

void bind_envs(py::module_& m) {
  m.def("env_info", &env_info, py::arg("env_id"), "Dimensions, action count and time limit of a built-in env.");
  py::class_<EnvBatch>(m, "EnvBatch", "N copies of a built-in env stepping in caller-provided buffers.",
                     py::module_local())
      .def(py::init<const std::string&, int64_t, py::dict, py::object, bool>(), py::arg("env_id"),
           py::arg("num_envs"), py::arg("buffers"), py::arg("to_array") = py::none(), py::arg("fast_math") = false)
      .def("step", &EnvBatch::step, py::arg("actions"), py::arg("stream") = py::none(),
           "Step all envs (SAME_STEP autoreset); returns the number of episodes that ended (-1 on CUDA).")
      .def("step_gym", &EnvBatch::step_gym, py::arg("result"), py::arg("infos_fn"), py::arg("copy"),
           py::arg("actions"),
           "step() of the VectorEnv (CPU): step, then (*result, {} or infos_fn()), result copied if copy.")
      .def("reset", &EnvBatch::reset, py::arg("seed"), py::arg("mask"), py::arg("a"), py::arg("b"),
           py::arg("stream") = py::none(), "Reset the envs in mask (None: all), reseeding them if seed is given.");
}

}  // namespace fastppo
