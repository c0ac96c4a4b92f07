// The binding side of the MLP kernels: Python lists of parameter arrays (numpy views of the torch
// parameters' memory, not copies) checked and turned into an Mlp.
#pragma once

#include <optional>
#include <string>
#include <vector>

#include "core/array_arg.h"
#include "train/mlp.h"

namespace fastppo {

// "tanh" or "relu", else ValueError naming `activation`.
Activation activation_arg(const std::string& activation);

// params: [weight0, bias0, weight1, bias1, ...] as nn.Linear stores them: float32, contiguous, CPU,
// chained sizes. grads: the same layout (written by backward) or an empty list (forward only). The
// arrays are appended to `keep`, which must outlive the Mlp. `name` names the list in error messages
// ("actor[2]", "actor_grads[2]"; the gradient list is name + "_grads").
Mlp mlp_arg(py::list params, py::list grads, const std::string& name, Activation act, std::vector<ArrayArg>& keep);

// One parameter tensor as a (parameter, gradient, size) span, for flat_adam_arg's layout check.
struct ParamSpan {
  const float* param;
  const float* grad;  // nullptr: the Mlp was built without gradients
  int64_t n;
  std::string name, grad_name;  // for messages: "actor[2]", "actor_grads[2]"
};
// The weight and bias spans of every layer of `mlp`, named as mlp_arg names them.
std::vector<ParamSpan> mlp_spans(const Mlp& mlp, const std::string& name);

// The flat buffers of FlatAdam, checked: float32, contiguous, CPU, writeable, one size. The backward
// writes through the per-parameter views, clipping and Adam read the flat buffers, so every span must
// sit in flat_param at the offset its gradient sits in flat_grad, and the spans must tile the buffers
// exactly (what fastppo.algos.optim.FlatParameters builds). adam_steps: the step count, a writeable CPU
// int64 array of shape (1,) (FlatAdam.step_count), incremented in place by every step. The five
// buffers the step writes must not share memory. Arrays are appended to `keep`.
FlatAdam flat_adam_arg(py::object flat_param, py::object flat_grad, py::object exp_avg, py::object exp_avg_sq,
                       py::object adam_steps, const std::vector<ParamSpan>& spans, std::vector<ArrayArg>& keep);

// An array the update only reads (obs, returns, ...) must not share memory with what it writes: the
// parameters, gradients and Adam moments (all inside adam's flat buffers) and the step count.
void check_apart_from_adam(const ArrayArg& input, const FlatAdam& adam);

// What an update call checks before its first step: the step count adam_steps[0] in [0, 2**62] (a
// negative one makes Adam's bias correction divide by zero), and Adam's hyperparameters as
// torch.optim.Adam checks them (lr >= 0, betas in [0, 1), eps >= 0, all finite).
void check_adam_call(const FlatAdam& adam, double lr, double beta1, double beta2, double eps);

// An int argument as operator.index takes it (not 2.5, nor numpy's float32(2.5), which pybind11's int
// conversion truncates), else TypeError naming it.
int64_t int_arg(py::handle obj, const char* name);

// `order` checked as a CPU int64 array of shape (size,), a permutation of range(size), and copied
// (into `copy`): on_gradients runs Python code mid-epoch, which may rewrite the caller's array.
const int64_t* order_arg(const ArrayArg& order, int64_t size, std::vector<int64_t>& copy);

// fastppo's ActorCritic as the native rollout step (PolicyAct) and update (PpoUpdate) both check it.
// kind: "gaussian" (returns true) or "categorical" (false), else ValueError.
bool policy_kind_arg(const std::string& kind);
// The actor and critic take one input size and the critic has one output; a Gaussian policy's log_std
// (its array, float32) has the actor's output size; a categorical one's nvec entries are >= 1 and sum to it.
void check_actor_critic(const Mlp& actor, const Mlp& critic, bool gaussian, const std::vector<int64_t>& nvec,
                        const ArrayArg* log_std);

// A float32, contiguous, CPU array (parameters, optimiser state, rollout columns), else ValueError.
ArrayArg float_array_arg(py::handle obj, const char* name, bool writeable);

// The native updates' on_gradients: None or a callable (called with no arguments, the GIL held, after
// each minibatch's gradients are in the flat gradient buffer and before clipping and Adam's step: the
// data-parallel seam, fastppo.algos.base.Reducer.gradients), else TypeError.
py::object on_gradients_arg(py::object on_gradients);

// The GIL released for this object's lifetime when `release` is true, else nothing: an update loop
// without a callback runs without the GIL throughout, one with a callback releases it around each
// piece of native work and holds it for the call.
class ReleaseGilIf {
 public:
  explicit ReleaseGilIf(bool release) {
    if (release) released_.emplace();
  }

 private:
  std::optional<py::gil_scoped_release> released_;
};

}  // namespace fastppo
