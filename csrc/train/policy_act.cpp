// One rollout step of an MLP actor-critic, natively: both MLP forwards, sampling, log-probability and
// value for every env, with no per-op framework overhead (torch pays ~10 us per op here and a step is
// ~30 ops). The spec is fastppo/algos/policies.py (ActorCritic.forward) and distributions.py; the
// tests compare the two. CPU only: a policy on a GPU keeps the torch path. It acts with a snapshot of
// the parameters (weights transposed once, not per step), taken at construction and again by refresh()
// from the same parameter memory: the trainer builds one per model and refreshes it before each rollout.
#include "train/policy_act.h"

#include <pybind11/stl.h>

#include <algorithm>
#include <cmath>
#include <string>
#include <vector>

#include "train/distributions.h"
#include "train/mlp_arg.h"
#include "core/parallel.h"

namespace fastppo {
PolicyAct::PolicyAct(py::list actor, py::list critic, const std::string& activation, const std::string& kind,
                   std::vector<int64_t> nvec, py::object log_std)
  : gaussian_(policy_kind_arg(kind)), nvec_(std::move(nvec)) {
  const Activation act = activation_arg(activation);
  actor_src_ = mlp_arg(actor, py::list(), "actor", act, views_);
  critic_src_ = mlp_arg(critic, py::list(), "critic", act, views_);
  ArrayArg ls;
  if (gaussian_) ls = float_array_arg(log_std, "log_std", false);
  check_actor_critic(actor_src_, critic_src_, gaussian_, nvec_, &ls);
  n_out_ = actor_src_.out();
  if (gaussian_) {
    log_std_src_ = static_cast<const float*>(ls.data);
    views_.push_back(std::move(ls));
    log_std_.resize(n_out_);
  }
  // The snapshot's storage, sized once; refresh() fills it (and the transposed weights) in place.
  actor_ = actor_src_.snapshot(actor_storage_);
  critic_ = critic_src_.snapshot(critic_storage_);
  refresh();
}

void PolicyAct::refresh() {
  actor_.copy_parameters(actor_src_);
  critic_.copy_parameters(critic_src_);
  actor_.transpose_weights(actor_wt_);
  critic_.transpose_weights(critic_wt_);
  if (gaussian_) std::copy(log_std_src_, log_std_src_ + n_out_, log_std_.begin());
}

ArrayArg PolicyAct::obs_arg(py::handle obs, const char* name) const {
  ArrayArg o = array_arg(obs, name, py::none());
  if (o.dtype != ScalarType::Float32 || o.shape.size() != 2 || o.shape[1] != obs_dim() || o.device != DeviceType::CPU)
    throw_value_error(std::string(name) + " must be float32 of shape (N, " + std::to_string(obs_dim()) + ") on the CPU, got " +
                      o.dtype_name + " " + o.shape_str() + " on " + o.device_str());
  check_contiguous(o);
  return o;
}

namespace {

// An output the binding writes: on the CPU, contiguous, writeable, and not overlapping obs or the
// outputs written before it (`others`).
void check_output(const ArrayArg& x, const std::vector<const ArrayArg*>& others) {
  if (x.device != DeviceType::CPU) throw_value_error(std::string(x.name) + " must be on the CPU");
  check_contiguous(x);
  check_writeable_output(x, others);
}

}  // namespace

void PolicyAct::act(py::handle obs, py::handle actions, py::handle log_probs, py::handle values,
                    py::handle dist_params, uint64_t seed, uint64_t step) const {
  const ArrayArg o = obs_arg(obs);
  const int64_t N = o.shape[0];
  const ArrayArg a = array_arg(actions, "actions", py::none(), /*allow_int=*/true);
  const ArrayArg lp = array_arg(log_probs, "log_probs", py::none());
  const ArrayArg v = array_arg(values, "values", py::none());
  const ArrayArg dp = array_arg(dist_params, "dist_params", py::none());
  const bool scalar_action = !gaussian_ && nvec_.size() == 1;
  const ScalarType want = gaussian_ ? ScalarType::Float32 : ScalarType::Int64;
  const std::vector<int64_t> want_shape = scalar_action ? std::vector<int64_t>{N} : std::vector<int64_t>{N, action_width()};
  if (a.dtype != want || a.shape != want_shape)
    throw_value_error(std::string("actions must be ") + (gaussian_ ? "float32" : "int64") + " of shape " +
                      shape_str(want_shape) + " for this policy, got " + a.dtype_name + " " + a.shape_str());
  for (const ArrayArg* x : {&lp, &v})
    if (x->dtype != ScalarType::Float32 || x->shape != std::vector<int64_t>{N})
      throw_value_error(std::string(x->name) + " must be float32 of shape (N,)");
  if (dp.dtype != ScalarType::Float32 || dp.shape != std::vector<int64_t>{N, n_params()})
    throw_value_error("dist_params must be float32 of shape (N, " + std::to_string(n_params()) + ")");
  check_output(a, {&o});
  check_output(lp, {&o, &a});
  check_output(v, {&o, &a, &lp});
  check_output(dp, {&o, &a, &lp, &v});
  const float* X = static_cast<const float*>(o.data);
  void* A = a.data;
  float* LP = static_cast<float*>(lp.data);
  float* V = static_cast<float*>(v.data);
  float* DP = static_cast<float*>(dp.data);
  py::gil_scoped_release nogil;
  act_rows(X, N, A, LP, V, DP, seed, step);
}

void PolicyAct::value(py::handle obs, py::handle values) const {
  const ArrayArg o = obs_arg(obs);
  const ArrayArg v = array_arg(values, "values", py::none());
  if (v.dtype != ScalarType::Float32 || v.shape != std::vector<int64_t>{o.shape[0]})
    throw_value_error("values must be float32 of shape (N,)");
  check_output(v, {&o});
  const float* X = static_cast<const float*>(o.data);
  float* V = static_cast<float*>(v.data);
  py::gil_scoped_release nogil;
  value_rows(X, o.shape[0], V);
}

void PolicyAct::act_rows(const float* X, int64_t N, void* A, float* LP, float* V, float* DP, uint64_t seed,
                         uint64_t step) const {
  parallel_for(N, 64, [&](int64_t n0, int64_t n1) {
    std::vector<std::vector<float>> acts;
    const float* value = critic_.forward(X + n0 * obs_dim(), n1 - n0, critic_wt_, acts);
    std::copy(value, value + (n1 - n0), V + n0);
    const float* heads = actor_.forward(X + n0 * obs_dim(), n1 - n0, actor_wt_, acts);
    for (int64_t n = n0; n < n1; ++n) {
      const float* head = heads + (n - n0) * n_out_;
      float* params = DP + n * n_params();
      const uint64_t key = stream_key(seed, uint64_t(n));
      const uint64_t counter0 = step * uint64_t(2 * n_out_);
      if (gaussian_) {
        float* act = static_cast<float*>(A) + n * n_out_;
        float logp = 0.f;
        for (int64_t j = 0; j < n_out_; ++j) {
          const float ls = clamp_log_std(log_std_[j]);
          const float u1 = uniform01(key, counter0 + 2 * j), u2 = uniform01(key, counter0 + 2 * j + 1);
          const float z = gaussian_standard_normal(u1, u2);
          act[j] = head[j] + std::exp(ls) * z;
          logp += gaussian_log_prob(z, ls);
          params[j] = head[j];
          params[n_out_ + j] = log_std_[j];
        }
        LP[n] = logp;
      } else {
        int64_t* act = static_cast<int64_t*>(A) + n * int64_t(nvec_.size());
        float logp = 0.f;
        int64_t offset = 0;
        for (size_t k = 0; k < nvec_.size(); ++k) {
          const float* logits = head + offset;
          const int64_t m = nvec_[k];
          const float lse = log_sum_exp(logits, m);
          const int64_t choice = categorical_sample(logits, m, lse, uniform01(key, counter0 + k));
          act[k] = choice;
          logp += logits[choice] - lse;
          offset += m;
        }
        std::copy(head, head + n_out_, params);
        LP[n] = logp;
      }
    }
  });
}

void PolicyAct::value_rows(const float* X, int64_t N, float* values) const {
  std::vector<std::vector<float>> acts;
  const float* v = critic_.forward(X, N, critic_wt_, acts);
  std::copy(v, v + N, values);
}

void bind_policy_act(py::module_& m) {
  py::class_<PolicyAct>(m, "PolicyAct", "A native rollout step for fastppo's MLP ActorCritic (see policies.py).",
                      py::module_local())
      .def(py::init<py::list, py::list, const std::string&, const std::string&, std::vector<int64_t>, py::object>(),
           py::arg("actor"), py::arg("critic"), py::arg("activation"), py::arg("kind"), py::arg("nvec"),
           py::arg("log_std"))
      .def("refresh", &PolicyAct::refresh,
           "Re-take the snapshot from the parameter arrays given at construction (as they are now).")
      .def("act", &PolicyAct::act, py::arg("obs"), py::arg("actions"), py::arg("log_probs"), py::arg("values"),
           py::arg("dist_params"), py::arg("seed"), py::arg("step"))
      .def("value", &PolicyAct::value, py::arg("obs"), py::arg("values"), "V of each observation row, into values.");
}

}  // namespace fastppo
