// One rollout step of an MLP actor-critic, natively: both MLP forwards, sampling, log-probability and
// value for every env, with no per-op framework overhead (torch pays ~10 us per op here and a step is
// ~30 ops). The spec is fastppo/algos/policies.py (ActorCritic.forward) and distributions.py; the
// tests compare the two. CPU only: a policy on a GPU keeps the torch path.
#include <pybind11/pybind11.h>
#include <pybind11/stl.h>

#include <algorithm>
#include <cmath>
#include <string>
#include <vector>

#include "array_arg.h"
#include "envs/rng.h"
#include "parallel.h"

namespace fastppo {
namespace {

struct Layer {
  const float* weight;  // (out, in), row-major as torch.nn.Linear stores it
  const float* bias;    // (out,)
  int64_t in, out;
};

enum class Activation { Tanh, ReLU };

// A float in (0, 1) from the stream of env n: never 0, so log() and the inverse CDF stay finite.
inline float uniform01(uint64_t key, uint64_t counter) {
  return (float(mix64(key + (counter + 1) * kGoldenGamma) >> 40) + 0.5f) * (1.0f / 16777216.0f);
}

class PolicyAct {
 public:
  PolicyAct(py::list actor, py::list critic, const std::string& activation, const std::string& kind,
            std::vector<int64_t> nvec, py::object log_std)
      : kind_gaussian_(kind == "gaussian"), nvec_(std::move(nvec)) {
    if (activation == "tanh") {
      act_ = Activation::Tanh;
    } else if (activation == "relu") {
      act_ = Activation::ReLU;
    } else {
      throw_value_error("activation must be 'tanh' or 'relu' for the native policy, got '" + activation + "'");
    }
    if (kind != "gaussian" && kind != "categorical")
      throw_value_error("kind must be 'categorical' or 'gaussian', got '" + kind + "'");
    load(actor, "actor", actor_);
    load(critic, "critic", critic_);
    if (actor_.front().in != critic_.front().in) throw_value_error("actor and critic must take the same input size");
    if (critic_.back().out != 1) throw_value_error("the critic's last layer must have one output");
    n_out_ = actor_.back().out;
    if (kind_gaussian_) {
      const ArrayArg ls = keep(array_arg(log_std, "log_std", py::none()));
      check_ndim(ls, 1, "(action_dim,)");
      if (ls.dtype != ScalarType::Float32 || ls.shape[0] != n_out_ || ls.strides[0] != 1)
        throw_value_error("log_std must be a contiguous float32 array of the action size");
      log_std_ = static_cast<const float*>(ls.data);
    } else {
      int64_t total = 0;
      for (int64_t k : nvec_) {
        if (k < 1) throw_value_error("nvec entries must be >= 1");
        total += k;
      }
      if (total != n_out_) throw_value_error("sum(nvec) must equal the actor's output size");
    }
    for (const auto& l : actor_) width_ = std::max(width_, l.out);
    for (const auto& l : critic_) width_ = std::max(width_, l.out);
    width_ = std::max(width_, actor_.front().in);
  }

  int64_t obs_dim() const { return actor_.front().in; }
  int64_t n_params() const { return kind_gaussian_ ? 2 * n_out_ : n_out_; }

  // obs (N, D); writes actions (N,) int64 per categorical (N, k) or (N, d) float32, log_probs (N,),
  // values (N,), dist_params (N, n_params). seed + step pick the random numbers.
  void act(py::handle obs, py::handle actions, py::handle log_probs, py::handle values, py::handle dist_params,
           uint64_t seed, uint64_t step) const {
    const ArrayArg o = array_arg(obs, "obs", py::none());
    check_ndim(o, 2, "(N, obs_dim)");
    const int64_t N = o.shape[0];
    if (o.dtype != ScalarType::Float32 || o.shape[1] != obs_dim())
      throw_value_error("obs must be float32 of shape (N, " + std::to_string(obs_dim()) + "), got " + o.dtype_name +
                        " " + o.shape_str());
    check_contiguous(o);
    const ArrayArg a = array_arg(actions, "actions", py::none(), /*allow_int=*/true);
    const ArrayArg lp = array_arg(log_probs, "log_probs", py::none());
    const ArrayArg v = array_arg(values, "values", py::none());
    const ArrayArg dp = array_arg(dist_params, "dist_params", py::none());
    const int64_t per_env = kind_gaussian_ ? n_out_ : int64_t(nvec_.size());
    const bool scalar_action = !kind_gaussian_ && nvec_.size() == 1;
    const ScalarType want = kind_gaussian_ ? ScalarType::Float32 : ScalarType::Int64;
    if (a.dtype != want || a.numel() != N * per_env || (scalar_action ? a.shape.size() != 1 : a.shape.size() != 2))
      throw_value_error("actions has the wrong dtype or shape for this policy");
    for (const ArrayArg* x : {&lp, &v})
      if (x->dtype != ScalarType::Float32 || x->shape != std::vector<int64_t>{N})
        throw_value_error(std::string(x->name) + " must be float32 of shape (N,)");
    if (dp.dtype != ScalarType::Float32 || dp.shape != std::vector<int64_t>{N, n_params()})
      throw_value_error("dist_params must be float32 of shape (N, " + std::to_string(n_params()) + ")");
    for (const ArrayArg* x : {&a, &lp, &v, &dp}) {
      if (x->device != DeviceType::CPU) throw_value_error(std::string(x->name) + " must be on the CPU");
      check_contiguous(*x);
      check_writeable_output(*x, {&o});
    }
    const float* X = static_cast<const float*>(o.data);
    void* A = a.data;
    float* LP = static_cast<float*>(lp.data);
    float* V = static_cast<float*>(v.data);
    float* DP = static_cast<float*>(dp.data);
    py::gil_scoped_release nogil;
    parallel_for(N, 64, [&](int64_t n0, int64_t n1) {
      std::vector<float> buf0(width_), buf1(width_);
      for (int64_t n = n0; n < n1; ++n) {
        const float* x = X + n * obs_dim();
        V[n] = forward(critic_, x, buf0.data(), buf1.data())[0];
        const float* head = forward(actor_, x, buf0.data(), buf1.data());
        float* params = DP + n * n_params();
        const uint64_t key = stream_key(seed, uint64_t(n));
        const uint64_t counter0 = step * uint64_t(2 * n_out_);
        if (kind_gaussian_) {
          float* act = static_cast<float*>(A) + n * n_out_;
          float logp = 0.f;
          for (int64_t j = 0; j < n_out_; ++j) {
            const float ls = std::min(std::max(log_std_[j], -20.f), 2.f);  // as DiagGaussian clamps
            const float u1 = uniform01(key, counter0 + 2 * j), u2 = uniform01(key, counter0 + 2 * j + 1);
            const float z = std::sqrt(-2.f * std::log(u1)) * std::cos(6.2831853071795864f * u2);  // Box-Muller
            act[j] = head[j] + std::exp(ls) * z;
            logp += -0.5f * z * z - ls - 0.91893853320467274f;
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
            float mx = logits[0];
            for (int64_t i = 1; i < m; ++i) mx = std::max(mx, logits[i]);
            float sum = 0.f;
            for (int64_t i = 0; i < m; ++i) sum += std::exp(logits[i] - mx);
            const float lse = mx + std::log(sum);
            // Inverse CDF: the first action whose cumulative probability exceeds u.
            const float u = uniform01(key, counter0 + k) * sum;
            float cum = 0.f;
            int64_t choice = m - 1;
            for (int64_t i = 0; i < m; ++i) {
              cum += std::exp(logits[i] - mx);
              if (u < cum) {
                choice = i;
                break;
              }
            }
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

 private:
  void load(py::list layers, const char* name, std::vector<Layer>& out) {
    if (layers.size() == 0 || layers.size() % 2) throw_value_error(std::string(name) + " must list (weight, bias) pairs");
    for (size_t i = 0; i < layers.size(); i += 2) {
      const ArrayArg w = keep(array_arg(layers[i], name, py::none()));
      const ArrayArg b = keep(array_arg(layers[i + 1], name, py::none()));
      if (w.dtype != ScalarType::Float32 || b.dtype != ScalarType::Float32 || w.shape.size() != 2 ||
          b.shape.size() != 1 || b.shape[0] != w.shape[0])
        throw_value_error(std::string(name) + " layers must be float32 (out, in) weights with (out,) biases");
      check_contiguous(w);
      check_contiguous(b);
      if (!out.empty() && out.back().out != w.shape[1])
        throw_value_error(std::string(name) + " layer sizes do not chain");
      out.push_back({static_cast<const float*>(w.data), static_cast<const float*>(b.data), w.shape[1], w.shape[0]});
    }
  }

  const ArrayArg& keep(ArrayArg a) {
    kept_.push_back(std::move(a));  // the arrays (torch parameters' memory) stay alive with this object
    return kept_.back();
  }

  // Hidden layers with the activation, the last one linear; returns the output (in buf0 or buf1).
  const float* forward(const std::vector<Layer>& layers, const float* x, float* buf0, float* buf1) const {
    const float* in = x;
    float* bufs[2] = {buf0, buf1};
    for (size_t l = 0; l < layers.size(); ++l) {
      const Layer& L = layers[l];
      float* out = bufs[l % 2];
      for (int64_t o = 0; o < L.out; ++o) {
        const float* w = L.weight + o * L.in;
        float acc = 0.f;
#pragma omp simd reduction(+ : acc)  // vectorised dot product (sums in a different order than torch's)
        for (int64_t i = 0; i < L.in; ++i) acc += w[i] * in[i];
        acc += L.bias[o];
        if (l + 1 < layers.size()) acc = act_ == Activation::Tanh ? std::tanh(acc) : std::max(acc, 0.f);
        out[o] = acc;
      }
      in = out;
    }
    return in;
  }

  std::vector<Layer> actor_, critic_;
  std::vector<ArrayArg> kept_;
  Activation act_ = Activation::Tanh;
  bool kind_gaussian_;
  std::vector<int64_t> nvec_;
  const float* log_std_ = nullptr;
  int64_t n_out_ = 0, width_ = 0;
};

}  // namespace

void bind_policy_act(py::module_& m) {
  py::class_<PolicyAct>(m, "PolicyAct", "A native rollout step for fastppo's MLP ActorCritic (see policies.py).")
      .def(py::init<py::list, py::list, const std::string&, const std::string&, std::vector<int64_t>, py::object>(),
           py::arg("actor"), py::arg("critic"), py::arg("activation"), py::arg("kind"), py::arg("nvec"),
           py::arg("log_std"))
      .def("act", &PolicyAct::act, py::arg("obs"), py::arg("actions"), py::arg("log_probs"), py::arg("values"),
           py::arg("dist_params"), py::arg("seed"), py::arg("step"));
}

}  // namespace fastppo
