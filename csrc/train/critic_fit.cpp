// TRPO's critic regression for the built-in MLP, natively: minibatches of mean((V(s) - R)^2) (sb3-contrib's loss),
// each a forward, a backward and an Adam step on the critic's flat buffers, with no framework overhead
// between them. The spec is the torch path of fastppo/algos/trpo.py (TRPO._fit_critic); the tests
// compare the two.
#include <pybind11/pybind11.h>

#include <algorithm>
#include <cstring>
#include <string>
#include <vector>

#include "train/mlp_arg.h"

namespace fastppo {
namespace {

class CriticFit {
 public:
  CriticFit(py::list critic, py::list critic_grads, const std::string& activation, py::object flat_param,
            py::object flat_grad, py::object exp_avg, py::object exp_avg_sq, py::object adam_steps, py::object obs,
            py::object returns) {
    critic_ = mlp_arg(critic, critic_grads, "critic", activation_arg(activation), kept_);
    if (critic_.out() != 1) throw_value_error("the critic's last layer must have one output");
    adam_ = flat_adam_arg(flat_param, flat_grad, exp_avg, exp_avg_sq, adam_steps, mlp_spans(critic_, "critic"),
                          kept_);
    // Read throughout the pass while the parameters, gradients, moments and step count are written.
    const ArrayArg o = float_array_arg(obs, "obs", false);
    check_ndim(o, 2, "(size, obs_dim)");
    check_apart_from_adam(o, adam_);
    if (o.shape[1] != critic_.in())
      throw_value_error("obs must have " + std::to_string(critic_.in()) + " features, got " + o.shape_str());
    const ArrayArg r = float_array_arg(returns, "returns", false);
    if (r.shape != std::vector<int64_t>{o.shape[0]})
      throw_value_error("returns must have shape (" + std::to_string(o.shape[0]) + ",) (one per row of obs), got " +
                        r.shape_str());
    check_apart_from_adam(r, adam_);
    size_ = o.shape[0];
    obs_ = static_cast<const float*>(o.data);
    returns_ = static_cast<const float*>(r.data);
    kept_.push_back(o);
    kept_.push_back(r);
  }

  // One pass over `order` (a permutation of the rollout) in minibatches of batch_size, each followed by
  // Adam's step (counted in adam_steps); on_gradients (None or a callable) is called between each
  // minibatch's backward and its step. Returns the sum of the minibatch losses. An exception from
  // on_gradients propagates, with the steps before it taken and counted.
  double epoch(py::handle order, py::handle batch_size_arg, double lr, double beta1, double beta2, double eps,
               py::object on_gradients) {
    const ArrayArg ord = array_arg(order, "order", py::none(), /*allow_int=*/true);
    std::vector<int64_t> order_copy;  // on_gradients may rewrite the caller's array (or call epoch() again)
    const int64_t* idx = order_arg(ord, size_, order_copy);
    const int64_t batch_size = int_arg(batch_size_arg, "batch_size");
    if (batch_size < 1) throw_value_error("batch_size must be >= 1, got " + std::to_string(batch_size));
    check_adam_call(adam_, lr, beta1, beta2, eps);
    const py::object callback = on_gradients_arg(std::move(on_gradients));
    const bool call_back = !callback.is_none();
    double loss_sum = 0.0;
    {
      ReleaseGilIf whole_pass(!call_back);
      for (int64_t start = 0; start < size_; start += batch_size) {
        const int64_t B = std::min(batch_size, size_ - start);
        {
          ReleaseGilIf nogil(call_back);
          loss_sum += minibatch(idx + start, B);
        }
        if (call_back) callback();  // the GIL held: the gradients are in the flat buffer
        ReleaseGilIf nogil(call_back);
        adam_.step(lr, beta1, beta2, eps, /*max_grad_norm=*/-1.0);
      }
    }
    return loss_sum;
  }

 private:
  // Forward, loss and gradients (into the flat gradient) of the minibatch idx[0..B); returns its loss.
  double minibatch(const int64_t* idx, int64_t B) {
    const int64_t D = critic_.in();
    X_.resize(B * D);
    d_values_.resize(B);
    for (int64_t n = 0; n < B; ++n) std::memcpy(&X_[n * D], obs_ + idx[n] * D, sizeof(float) * D);
    critic_.transpose_weights(weight_t_);
    const float* values = critic_.forward(X_.data(), B, weight_t_, acts_);
    double loss = 0.0;
    for (int64_t n = 0; n < B; ++n) {
      const float diff = values[n] - returns_[idx[n]];
      loss += double(diff) * double(diff);
      d_values_[n] = 2.f * diff / float(B);  // d mean(diff^2) / d value
    }
    std::fill(adam_.grad, adam_.grad + adam_.n, 0.f);
    critic_.backward(X_.data(), B, acts_, d_values_.data(), scratch_);
    return loss / double(B);
  }

  Mlp critic_;
  FlatAdam adam_;
  std::vector<ArrayArg> kept_;  // every array (torch's memory) stays alive with this object
  int64_t size_ = 0;
  const float *obs_ = nullptr, *returns_ = nullptr;
  std::vector<float> X_, d_values_, scratch_;
  std::vector<std::vector<float>> weight_t_, acts_;
};

}  // namespace

void bind_critic_fit(py::module_& m) {
  py::class_<CriticFit>(m, "CriticFit", "TRPO's critic regression for fastppo's MLP, natively (see fastppo/algos/trpo.py).",
                      py::module_local())
      .def(py::init<py::list, py::list, const std::string&, py::object, py::object, py::object, py::object, py::object,
                    py::object, py::object>(),
           py::arg("critic"), py::arg("critic_grads"), py::arg("activation"), py::arg("flat_param"),
           py::arg("flat_grad"), py::arg("exp_avg"), py::arg("exp_avg_sq"), py::arg("adam_steps"), py::arg("obs"),
           py::arg("returns"))
      .def("epoch", &CriticFit::epoch, py::arg("order"), py::arg("batch_size"), py::arg("lr"), py::arg("beta1"),
           py::arg("beta2"), py::arg("eps"), py::arg("on_gradients") = py::none());
}

}  // namespace fastppo
