// PPO's whole update for the built-in MLP actor-critic, natively: for each minibatch, gather, both
// MLP forwards, log-probabilities / entropy / KL, the fused loss (ppo_loss_cpu, the same kernel as
// fastppo.ppo_loss), both backwards, gradient-norm clipping and an Adam step, with no framework
// overhead between them (torch pays ~10 us per op on a small CPU and a minibatch is ~100 ops).
//
// The spec is the torch path of fastppo/algos/ppo.py (PPO._update with backend="torch"); the tests
// compare the two update for update. The parameters, gradients and Adam moments are torch's own
// memory (numpy views), so checkpoints, the rollout step and the torch path all see the same state.
#include <pybind11/pybind11.h>
#include <pybind11/stl.h>

#include <algorithm>
#include <array>
#include <cmath>
#include <cstring>
#include <string>
#include <type_traits>
#include <vector>

#include "train/distributions.h"
#include "train/mlp_arg.h"
#include "ops/ppo_loss/ppo_loss.h"

namespace fastppo {
namespace {

// The hyperparameters of one update call (PPO's, plus torch.optim.Adam's): the op's names, except
// clip_range_vf, SB3's value clipping (of the prediction), which this update does before the op.
struct PpoUpdateConfig {
  int64_t batch_size = 64;
  double clip_coef = 0.2, vf_coef = 0.5, ent_coef = 0.0;
  double clip_range_vf = -1.0;   // < 0: no value clipping
  bool normalize_advantages = true;
  double kl_coef = -1.0;         // < 0: no KL term (the clipped variant)
  double target_kl = -1.0;       // < 0: no early stopping
  double max_grad_norm = -1.0;   // < 0: no clipping
  double lr = 3e-4, beta1 = 0.9, beta2 = 0.999, eps = 1e-8;
};

class PpoUpdate {
 public:
  PpoUpdate(py::list actor, py::list actor_grads, py::list critic, py::list critic_grads, const std::string& activation,
            const std::string& kind, std::vector<int64_t> nvec, py::object log_std, py::object log_std_grad,
            py::object flat_param, py::object flat_grad, py::object exp_avg, py::object exp_avg_sq,
            py::object adam_steps, py::object obs, py::object actions, py::object old_log_probs, py::object advantages, py::object old_values,
            py::object returns, py::object old_dist_params)
      : gaussian_(policy_kind_arg(kind)), nvec_(std::move(nvec)) {
    kept_.reserve(64);  // keep() hands out references into kept_
    const Activation act = activation_arg(activation);
    actor_ = mlp_arg(actor, actor_grads, "actor", act, kept_);
    critic_ = mlp_arg(critic, critic_grads, "critic", act, kept_);
    n_out_ = actor_.out();
    const ArrayArg* ls = nullptr;
    if (gaussian_ && (log_std.is_none() || log_std_grad.is_none()))
      throw_value_error("kind 'gaussian' needs log_std and log_std_grad, got None");
    if (gaussian_) ls = &keep(float_array_arg(log_std, "log_std", true), {});
    check_actor_critic(actor_, critic_, gaussian_, nvec_, ls);
    if (gaussian_) {
      log_std_ = static_cast<float*>(ls->data);
      log_std_grad_ = static_cast<float*>(keep(float_array_arg(log_std_grad, "log_std_grad", true), {n_out_}).data);
    }
    std::vector<ParamSpan> spans = mlp_spans(actor_, "actor"), critic_spans = mlp_spans(critic_, "critic");
    spans.insert(spans.end(), critic_spans.begin(), critic_spans.end());
    if (gaussian_) spans.push_back({log_std_, log_std_grad_, n_out_, "log_std", "log_std_grad"});
    adam_ = flat_adam_arg(flat_param, flat_grad, exp_avg, exp_avg_sq, adam_steps, spans, kept_);

    // The rollout's arrays are read throughout the epoch while the parameters, gradients, moments and
    // step count are written: none of them may share memory with those.
    const ArrayArg& o = keep(float_array_arg(obs, "obs", false), {});
    check_ndim(o, 2, "(size, obs_dim)");
    check_apart_from_adam(o, adam_);
    size_ = o.shape[0];
    if (o.shape[1] != actor_.in())
      throw_value_error("obs must have " + std::to_string(actor_.in()) + " features, got " + o.shape_str());
    obs_ = static_cast<const float*>(o.data);
    const ArrayArg& a = keep(array_arg(actions, "actions", py::none(), /*allow_int=*/true), {});
    check_contiguous(a);
    check_apart_from_adam(a, adam_);
    per_action_ = gaussian_ ? n_out_ : int64_t(nvec_.size());
    if (a.dtype != (gaussian_ ? ScalarType::Float32 : ScalarType::Int64) || a.numel() != size_ * per_action_ ||
        a.shape[0] != size_ || a.device != DeviceType::CPU)
      throw_value_error("actions must be a CPU " + std::string(gaussian_ ? "float32" : "int64") + " array of " +
                        std::to_string(size_) + " x " + std::to_string(per_action_) + " actions (one per row of obs, " +
                        (gaussian_ ? "the actor's output size" : "len(nvec)") + " per row), got " + a.dtype_name + " " +
                        a.shape_str());
    actions_ = a.data;  // categorical ones are checked by epoch(): the rollout changes between calls
    old_logp_ = column(old_log_probs, "old_log_probs");
    adv_ = column(advantages, "advantages");
    old_values_ = column(old_values, "old_values");
    returns_ = column(returns, "returns");
    if (!old_dist_params.is_none()) {
      const ArrayArg& d = keep(float_array_arg(old_dist_params, "old_dist_params", false), {size_, n_params()});
      check_apart_from_adam(d, adam_);
      old_params_ = static_cast<const float*>(d.data);
    }
  }

  int64_t n_params() const { return gaussian_ ? 2 * n_out_ : n_out_; }

  // One epoch: the minibatches of `order` (a permutation of the rollout) in turn, each Adam step
  // counted in adam_steps; on_gradients (None or a callable) is called between each minibatch's
  // backward and its clipping and step with the minibatch's approx_kl, and returns a bool: False stops
  // the epoch before this step, as target_kl does (the data-parallel run decides target_kl there, from
  // every rank's KL). Returns (updates taken, stopped early by target_kl or on_gradients, the sums
  // over the updates taken of (policy_loss, value_loss, entropy, approx_kl, clipfrac)). An exception
  // from on_gradients propagates, with the steps before it taken and counted.
  py::tuple epoch(py::handle order, const PpoUpdateConfig& config, py::object on_gradients) {
    const PpoUpdateConfig c = config;  // a copy: on_gradients runs Python code, which may change `config`
    const ArrayArg ord = array_arg(order, "order", py::none(), /*allow_int=*/true);
    std::vector<int64_t> order_copy;  // local: a nested epoch() from on_gradients must not rewrite it
    const int64_t* idx = order_arg(ord, size_, order_copy);
    check_config(c);
    if (c.kl_coef >= 0 && !old_params_) throw_value_error("kl_coef needs old_dist_params");
    check_adam_call(adam_, c.lr, c.beta1, c.beta2, c.eps);
    check_actions();
    const py::object callback = on_gradients_arg(std::move(on_gradients));
    const bool call_back = !callback.is_none();
    std::array<double, 5> sums{};
    int64_t updates = 0;
    bool stopped = false;
    {
      ReleaseGilIf whole_epoch(!call_back);
      for (int64_t start = 0; start < size_; start += c.batch_size) {
        const int64_t B = std::min(c.batch_size, size_ - start);
        std::array<float, kNumOut> out;
        bool step;
        {
          ReleaseGilIf nogil(call_back);
          step = minibatch(idx + start, B, c, out.data());
        }
        if (!step) {
          stopped = true;
          break;
        }
        if (call_back) {
          // the GIL held: the gradients are in the flat buffer, not yet clipped
          const py::object go_on = callback(double(out[kOutApproxKl]));
          if (!py::isinstance<py::bool_>(go_on))
            throw_type_error("on_gradients must return a bool (False: stop before this step), got " +
                             py::str(py::type::handle_of(go_on).attr("__name__")).cast<std::string>());
          if (!go_on.cast<bool>()) {
            stopped = true;
            break;
          }
          check_actions();  // Python code ran: the next minibatches index the logits by these
        }
        {
          ReleaseGilIf nogil(call_back);
          adam_.step(c.lr, c.beta1, c.beta2, c.eps, c.max_grad_norm);
        }
        for (int k = 0; k < 5; ++k) sums[k] += double(out[kOutPolicy + k]);
        ++updates;
      }
    }
    return py::make_tuple(updates, stopped, py::make_tuple(sums[0], sums[1], sums[2], sums[3], sums[4]));
  }

 private:
  // Every field as the op and torch.optim.Adam check it (fastppo.ppo_loss, FlatAdam); a negative
  // clip_range_vf, kl_coef, target_kl or max_grad_norm is "off", NaN never is. clip_coef and
  // clip_range_vf may be 0 (a linear schedule's last iteration).
  static void check_config(const PpoUpdateConfig& c) {
    if (c.batch_size < 1) throw_value_error("batch_size must be >= 1, got " + std::to_string(c.batch_size));
    check_nonnegative(c.clip_coef, "clip_coef");
    check_nonnegative(c.vf_coef, "vf_coef");
    check_nonnegative(c.ent_coef, "ent_coef");
    if (!(c.clip_range_vf < 0)) check_nonnegative(c.clip_range_vf, "clip_range_vf");
    if (!(c.kl_coef < 0)) check_nonnegative(c.kl_coef, "kl_coef");
    if (std::isnan(c.target_kl)) throw_value_error("target_kl must be a number (negative: off), got nan");
    if (std::isnan(c.max_grad_norm)) throw_value_error("max_grad_norm must be a number (negative: off), got nan");
  }

  const ArrayArg& keep(ArrayArg a, const std::vector<int64_t>& shape) {
    if (!shape.empty() && a.shape != shape)
      throw_value_error(std::string(a.name) + " must have shape " + shape_str(shape) + ", got " + a.shape_str());
    kept_.push_back(std::move(a));
    return kept_.back();
  }

  // Every categorical action within its head's range, as the rollout is now (the backward indexes the
  // logits by the action). The actions array is the rollout's own memory, rewritten every iteration.
  void check_actions() const {
    if (gaussian_) return;
    const int64_t* act = static_cast<const int64_t*>(actions_);
    for (int64_t i = 0; i < size_ * per_action_; ++i)
      if (act[i] < 0 || act[i] >= nvec_[i % per_action_])
        throw_value_error("actions[" + std::to_string(i / per_action_) + "] = " + std::to_string(act[i]) +
                          " is outside [0, " + std::to_string(nvec_[i % per_action_]) + ")");
  }

  const float* column(py::handle obj, const char* name) {
    ArrayArg a = float_array_arg(obj, name, false);
    if (a.shape != std::vector<int64_t>{size_})
      throw_value_error(std::string(name) + " must have shape " + shape_str({size_}) + " (one per row of obs), got " +
                        a.shape_str());
    check_apart_from_adam(a, adam_);
    return static_cast<const float*>(keep(std::move(a), {}).data);
  }

  // Forward, loss and gradients of one minibatch into the flat gradient. Returns false (and leaves the gradients)
  // when target_kl stops the epoch before this step, as the torch path does.
  bool minibatch(const int64_t* idx, int64_t B, const PpoUpdateConfig& c, float* out) {
    const int64_t D = actor_.in();
    X_.resize(B * D);
    for (int64_t n = 0; n < B; ++n) std::memcpy(&X_[n * D], obs_ + idx[n] * D, sizeof(float) * D);
    actor_.transpose_weights(actor_wt_);
    critic_.transpose_weights(critic_wt_);
    const float* values = critic_.forward(X_.data(), B, critic_wt_, critic_acts_);
    const float* head = actor_.forward(X_.data(), B, actor_wt_, actor_acts_);

    const bool with_kl = c.kl_coef >= 0, clip_values = c.clip_range_vf >= 0;
    cols_.assign(8 * B, 0.f);  // new_logp, old_logp, adv, values, old_values, returns, entropy, kl
    float* new_logp = cols_.data();
    float* entropy = new_logp + 6 * B;
    float* kl = new_logp + 7 * B;
    // SB3's value clipping: the op sees old + clamp(V - old, -c, c) (and no clipping of its own); the
    // gradient reaches V only where the step was inside [-c, c] (torch.clamp's gradient).
    const float vf_c = float(c.clip_range_vf);
    value_inside_.assign(B, 1);
    for (int64_t n = 0; n < B; ++n) {
      const int64_t j = idx[n];
      float v = values[n];
      if (clip_values) {
        const float step = v - old_values_[j];
        v = old_values_[j] + ppo_clamp(step, -vf_c, vf_c);
        value_inside_[n] = (step >= -vf_c) & (step <= vf_c);
      }
      new_logp[B + n] = old_logp_[j], new_logp[2 * B + n] = adv_[j], new_logp[3 * B + n] = v;
      new_logp[4 * B + n] = old_values_[j], new_logp[5 * B + n] = returns_[j];
    }
    distribution_forward(idx, B, head, with_kl, new_logp, entropy, kl);

    PpoLossParams p;
    const float* col[8];
    for (int k = 0; k < 8; ++k) col[k] = cols_.data() + k * B;
    p.new_logp.data = col[0], p.old_logp.data = col[1], p.advantages.data = col[2], p.new_values.data = col[3];
    p.old_values.data = col[4], p.returns.data = col[5], p.entropy.data = col[6];
    p.kl.data = with_kl ? col[7] : nullptr;
    loss_grads_.resize(2 * B + 2);
    p.out = out, p.grads = loss_grads_.data(), p.n = B;
    p.clip_coef = c.clip_coef, p.vf_coef = c.vf_coef, p.ent_coef = c.ent_coef;
    p.kl_coef = with_kl ? c.kl_coef : 0.0;
    p.clip_values = false;
    p.normalize_advantages = c.normalize_advantages && B > 1;
    p.unit_stride = true, p.dtype = ScalarType::Float32;
    ppo_loss_cpu(p);
    if (c.target_kl >= 0 && out[kOutApproxKl] > 1.5 * c.target_kl) return false;

    std::fill(adam_.grad, adam_.grad + adam_.n, 0.f);
    d_head_.assign(B * n_out_, 0.f);
    distribution_backward(idx, B, with_kl);
    actor_.backward(X_.data(), B, actor_acts_, d_head_.data(), scratch_);
    float* d_values = loss_grads_.data() + B;  // d loss / d values (the op's, through the clamp)
    for (int64_t n = 0; n < B; ++n)
      if (!value_inside_[n]) d_values[n] = 0.f;
    critic_.backward(X_.data(), B, critic_acts_, d_values, scratch_);
    return true;
  }

  // New log-probabilities, entropies and KL(old || new) per sample from the actor's head, keeping
  // what distribution_backward needs: per head entry, the log-probability (categorical) or z (Gaussian)
  // and, with the KL term, the old probability or (mean - old mean) / std and the variance ratio.
  void distribution_forward(const int64_t* idx, int64_t B, const float* head, bool with_kl, float* logp,
                            float* entropy, float* kl) {
    const int64_t heads = int64_t(nvec_.size());
    per_entry_.assign(B * n_out_, 0.f);
    old_entry_.assign(with_kl ? B * n_out_ : 0, 0.f);
    var_ratio_.assign(with_kl && gaussian_ ? B * n_out_ : 0, 0.f);
    head_entropy_.assign(gaussian_ ? 0 : B * heads, 0.f);
    for (int64_t n = 0; n < B; ++n) {
      const int64_t j = idx[n];
      const float* h = head + n * n_out_;
      const float* old = with_kl ? old_params_ + j * n_params() : nullptr;
      float* entry = per_entry_.data() + n * n_out_;
      float lp = 0.f, ent = 0.f, k = 0.f;
      if (gaussian_) {
        const float* a = static_cast<const float*>(actions_) + j * n_out_;
        for (int64_t d = 0; d < n_out_; ++d) {
          const float ls = clamp_log_std(log_std_[d]), sd = std::exp(ls);
          const float z = entry[d] = (a[d] - h[d]) / sd;
          lp += gaussian_log_prob(z, ls);
          ent += gaussian_entropy(ls);
          if (old) {
            const float old_sd = std::exp(clamp_log_std(old[n_out_ + d]));
            const float var_ratio = var_ratio_[n * n_out_ + d] = (old_sd / sd) * (old_sd / sd);
            const float shift = old_entry_[n * n_out_ + d] = (h[d] - old[d]) / sd;
            k += gaussian_kl(var_ratio, shift);
          }
        }
      } else {
        const int64_t* a = static_cast<const int64_t*>(actions_) + j * heads;
        int64_t offset = 0;
        for (int64_t c = 0; c < heads; ++c) {
          const int64_t m = nvec_[c];
          const float head_ent = categorical_forward(h + offset, old ? old + offset : nullptr, m, entry + offset,
                                                     old ? &old_entry_[n * n_out_ + offset] : nullptr, &k);
          lp += entry[offset + a[c]];
          head_entropy_[n * heads + c] = head_ent;
          ent += head_ent;
          offset += m;
        }
      }
      logp[n] = lp, entropy[n] = ent, kl[n] = k;
    }
  }

  // d loss / d head into d_head_ (and d loss / d log_std into its gradient), from the fused loss's
  // per-sample gradients (g_logp[n], and the same g_entropy and g_kl for every sample) and what
  // distribution_forward kept.
  void distribution_backward(const int64_t* idx, int64_t B, bool with_kl) {
    const float* g_logp = loss_grads_.data();
    const float g_ent = loss_grads_[2 * B], g_kl = with_kl ? loss_grads_[2 * B + 1] : 0.f;
    const int64_t heads = int64_t(nvec_.size());
    std::vector<float> g_log_std(gaussian_ ? n_out_ : 0, 0.f);
    for (int64_t n = 0; n < B; ++n) {
      const float* entry = per_entry_.data() + n * n_out_;
      float* dh = d_head_.data() + n * n_out_;
      if (gaussian_) {
        for (int64_t d = 0; d < n_out_; ++d) {
          const float sd = std::exp(clamp_log_std(log_std_[d])), z = entry[d];
          // log-prob: d/d mean = z / sd, d/d log_std = z^2 - 1; entropy: d/d log_std = 1;
          // KL(old || new): d/d mean = (mean - old mean) / sd^2, d/d log_std = 1 - var_ratio - shift^2.
          dh[d] = g_logp[n] * z / sd;
          g_log_std[d] += g_logp[n] * (z * z - 1.f) + g_ent;
          if (with_kl) {
            const float shift = old_entry_[n * n_out_ + d];
            dh[d] += g_kl * shift / sd;
            g_log_std[d] += g_kl * (1.f - var_ratio_[n * n_out_ + d] - shift * shift);
          }
        }
      } else {
        const int64_t* a = static_cast<const int64_t*>(actions_) + idx[n] * heads;
        int64_t offset = 0;
        for (int64_t c = 0; c < heads; ++c) {
          // log-prob: onehot - p; entropy: -p (log p + H); KL(old || new): p - q.
          for (int64_t i = offset; i < offset + nvec_[c]; ++i) {
            const float pi = std::exp(entry[i]);
            dh[i] = g_logp[n] * ((i - offset == a[c] ? 1.f : 0.f) - pi) -
                    g_ent * pi * (entry[i] + head_entropy_[n * heads + c]);
            if (with_kl) dh[i] += g_kl * (pi - old_entry_[n * n_out_ + i]);
          }
          offset += nvec_[c];
        }
      }
    }
    for (int64_t d = 0; d < int64_t(g_log_std.size()); ++d) {
      const bool inside = log_std_[d] >= kLogStdMin && log_std_[d] <= kLogStdMax;  // torch.clamp's gradient
      log_std_grad_[d] += inside ? g_log_std[d] : 0.f;
    }
  }

  Mlp actor_, critic_;
  std::vector<ArrayArg> kept_;  // every array (torch's memory) stays alive with this object
  bool gaussian_;
  std::vector<int64_t> nvec_;
  int64_t n_out_ = 0, size_ = 0, per_action_ = 0;
  float *log_std_ = nullptr, *log_std_grad_ = nullptr;
  FlatAdam adam_;
  const float *obs_ = nullptr, *old_logp_ = nullptr, *adv_ = nullptr, *old_values_ = nullptr, *returns_ = nullptr;
  const float* old_params_ = nullptr;
  const void* actions_ = nullptr;
  // Per-minibatch work buffers, reused.
  std::vector<float> X_, cols_, loss_grads_, d_head_, scratch_;
  std::vector<unsigned char> value_inside_;  // per sample: the value step was inside [-c, c]
  std::vector<float> per_entry_, old_entry_, var_ratio_, head_entropy_;  // distribution_forward -> backward
  std::vector<std::vector<float>> actor_wt_, critic_wt_, actor_acts_, critic_acts_;
};

// A read-write field whose setter names it when the value does not convert (a def_readwrite setter
// raises pybind11's "incompatible function arguments", which names no field).
template <typename T>
void config_field(py::class_<PpoUpdateConfig>& cls, const char* name, T PpoUpdateConfig::*field, const char* what) {
  cls.def_property(
      name, py::cpp_function([field](const PpoUpdateConfig& c) { return c.*field; }),
      py::cpp_function([field, name, what](PpoUpdateConfig& c, py::handle value) {
        try {
          if constexpr (std::is_same_v<T, int64_t>)
            c.*field = int_arg(value, name);  // what operator.index takes (not 2.5, nor float32(2.5))
          else
            c.*field = value.cast<T>();
        } catch (const py::cast_error&) {
          throw_type_error(std::string(name) + " must be " + what + ", got " +
                           py::str(py::type::handle_of(value).attr("__name__")).cast<std::string>());
        }
      }));
}

}  // namespace

void bind_ppo_update(py::module_& m) {
  py::class_<PpoUpdateConfig> config(m, "PpoUpdateConfig", "Hyperparameters of PpoUpdate.epoch (negative: off).",
                                        py::module_local());
  config.def(py::init<>());
  config_field(config, "batch_size", &PpoUpdateConfig::batch_size, "an int (int64)");
  config_field(config, "clip_coef", &PpoUpdateConfig::clip_coef, "a number");
  config_field(config, "vf_coef", &PpoUpdateConfig::vf_coef, "a number");
  config_field(config, "ent_coef", &PpoUpdateConfig::ent_coef, "a number");
  config_field(config, "clip_range_vf", &PpoUpdateConfig::clip_range_vf, "a number");
  config_field(config, "normalize_advantages", &PpoUpdateConfig::normalize_advantages, "a bool");
  config_field(config, "kl_coef", &PpoUpdateConfig::kl_coef, "a number");
  config_field(config, "target_kl", &PpoUpdateConfig::target_kl, "a number");
  config_field(config, "max_grad_norm", &PpoUpdateConfig::max_grad_norm, "a number");
  config_field(config, "lr", &PpoUpdateConfig::lr, "a number");
  config_field(config, "beta1", &PpoUpdateConfig::beta1, "a number");
  config_field(config, "beta2", &PpoUpdateConfig::beta2, "a number");
  config_field(config, "eps", &PpoUpdateConfig::eps, "a number");
  py::class_<PpoUpdate>(m, "PpoUpdate",
                        "PPO's minibatch updates of fastppo's MLP ActorCritic, natively (see fastppo/algos/ppo.py).",
                        py::module_local())
      .def(py::init<py::list, py::list, py::list, py::list, const std::string&, const std::string&,
                    std::vector<int64_t>, py::object, py::object, py::object, py::object, py::object, py::object,
                    py::object, py::object, py::object, py::object, py::object, py::object, py::object, py::object>(),
           py::arg("actor"), py::arg("actor_grads"), py::arg("critic"), py::arg("critic_grads"), py::arg("activation"),
           py::arg("kind"), py::arg("nvec"), py::arg("log_std"), py::arg("log_std_grad"), py::arg("flat_param"),
           py::arg("flat_grad"), py::arg("exp_avg"), py::arg("exp_avg_sq"), py::arg("adam_steps"), py::arg("obs"), py::arg("actions"),
           py::arg("old_log_probs"), py::arg("advantages"), py::arg("old_values"), py::arg("returns"),
           py::arg("old_dist_params"))
      .def("epoch", &PpoUpdate::epoch, py::arg("order"), py::arg("config"), py::arg("on_gradients") = py::none());
}

}  // namespace fastppo
