#include "train/mlp_arg.h"

#include <algorithm>
#include <utility>

namespace fastppo {

Activation activation_arg(const std::string& activation) {
  if (activation == "tanh") return Activation::Tanh;
  if (activation == "relu") return Activation::ReLU;
  throw_value_error("activation must be 'tanh' or 'relu' for the native MLP, got '" + activation + "'");
}

bool policy_kind_arg(const std::string& kind) {
  if (kind != "gaussian" && kind != "categorical")
    throw_value_error("kind must be 'categorical' or 'gaussian', got '" + kind + "'");
  return kind == "gaussian";
}

void check_actor_critic(const Mlp& actor, const Mlp& critic, bool gaussian, const std::vector<int64_t>& nvec,
                        const ArrayArg* log_std) {
  if (actor.in() != critic.in())
    throw_value_error("actor and critic must take the same input size, got " + std::to_string(actor.in()) + " and " +
                      std::to_string(critic.in()));
  if (critic.out() != 1)
    throw_value_error("the critic's last layer must have one output, got " + std::to_string(critic.out()));
  if (gaussian) {
    if (log_std->shape != std::vector<int64_t>{actor.out()})
      throw_value_error("log_std must have the action size, shape " + shape_str({actor.out()}) + ", got " +
                        log_std->shape_str());
  } else {
    int64_t total = 0;
    for (int64_t k : nvec) {
      if (k < 1) throw_value_error("nvec entries must be >= 1, got " + std::to_string(k));
      total += k;
    }
    if (total != actor.out())
      throw_value_error("sum(nvec) must equal the actor's output size " + std::to_string(actor.out()) + ", got " +
                        std::to_string(total));
  }
}

ArrayArg float_array_arg(py::handle obj, const char* name, bool writeable) {
  ArrayArg a = array_arg(obj, name, py::none());
  if (a.device != DeviceType::CPU) throw_value_error(std::string(name) + " must be on the CPU, got " + a.device_str());
  check_dtype(a, ScalarType::Float32, "float32");
  check_contiguous(a);
  if (writeable && !a.writeable) throw_value_error(std::string(name) + " must be writeable");
  return a;
}

py::object on_gradients_arg(py::object on_gradients) {
  if (!on_gradients.is_none() && !PyCallable_Check(on_gradients.ptr()))
    throw_type_error("on_gradients must be callable or None, got " + std::string(py::str(py::type::handle_of(on_gradients).attr("__name__"))));
  return on_gradients;
}

Mlp mlp_arg(py::list params, py::list grads, const std::string& name, Activation act, std::vector<ArrayArg>& keep) {
  if (params.size() == 0 || params.size() % 2)
    throw_value_error(name + " must list (weight, bias) pairs, got " + std::to_string(params.size()) + " arrays");
  const bool with_grads = grads.size() != 0;
  if (with_grads && grads.size() != params.size())
    throw_value_error(name + " gradients must match its parameters one for one, got " + std::to_string(grads.size()) +
                      " for " + std::to_string(params.size()));
  std::vector<DenseLayer> layers;
  for (size_t i = 0; i < params.size(); i += 2) {
    const std::string layer = name + " layer " + std::to_string(i / 2);
    const ArrayArg w = float_array_arg(params[i], "weight", with_grads);
    const ArrayArg b = float_array_arg(params[i + 1], "bias", with_grads);
    if (w.shape.size() != 2 || b.shape.size() != 1 || b.shape[0] != w.shape[0])
      throw_value_error(layer + ": expected an (out, in) weight and an (out,) bias, got " + w.shape_str() + " and " +
                        b.shape_str());
    if (!layers.empty() && layers.back().out != w.shape[1])
      throw_value_error(layer + " takes " + std::to_string(w.shape[1]) + " inputs but the layer before gives " +
                        std::to_string(layers.back().out));
    DenseLayer L;
    L.weight = static_cast<float*>(w.data);
    L.bias = static_cast<float*>(b.data);
    L.in = w.shape[1];
    L.out = w.shape[0];
    if (with_grads) {
      const ArrayArg gw = float_array_arg(grads[i], "grad_weight", true);
      const ArrayArg gb = float_array_arg(grads[i + 1], "grad_bias", true);
      if (gw.shape != w.shape || gb.shape != b.shape)
        throw_value_error(layer + ": gradients must have the parameters' shapes");
      L.grad_weight = static_cast<float*>(gw.data);
      L.grad_bias = static_cast<float*>(gb.data);
      keep.push_back(gw);
      keep.push_back(gb);
    }
    keep.push_back(w);
    keep.push_back(b);
    layers.push_back(L);
  }
  return Mlp(std::move(layers), act);
}

const int64_t* order_arg(const ArrayArg& order, int64_t size) {
  check_dtype(order, ScalarType::Int64, "int64");
  check_contiguous(order);
  if (order.device != DeviceType::CPU || order.shape != std::vector<int64_t>{size})
    throw_value_error("order must be a CPU int64 array of shape (" + std::to_string(size) + ",), got " +
                      order.shape_str() + " on " + order.device_str());
  const int64_t* idx = static_cast<const int64_t*>(order.data);
  for (int64_t i = 0; i < size; ++i)
    if (idx[i] < 0 || idx[i] >= size)
      throw_value_error("order[" + std::to_string(i) + "] = " + std::to_string(idx[i]) + " is outside [0, " +
                        std::to_string(size) + ")");
  return idx;
}

std::vector<ParamSpan> mlp_spans(const Mlp& mlp) {
  std::vector<ParamSpan> spans;
  for (const DenseLayer& L : mlp.layers()) {
    spans.push_back({L.weight, L.grad_weight, L.in * L.out});
    spans.push_back({L.bias, L.grad_bias, L.out});
  }
  return spans;
}

FlatAdam flat_adam_arg(py::object flat_param, py::object flat_grad, py::object exp_avg, py::object exp_avg_sq,
                       py::object adam_steps, const std::vector<ParamSpan>& spans, std::vector<ArrayArg>& keep) {
  const ArrayArg arrays[4] = {float_array_arg(flat_param, "flat_param", true),
                              float_array_arg(flat_grad, "flat_grad", true), float_array_arg(exp_avg, "exp_avg", true),
                              float_array_arg(exp_avg_sq, "exp_avg_sq", true)};
  for (const ArrayArg& a : arrays) {
    if (a.shape.size() != 1 || a.shape != arrays[0].shape)
      throw_value_error(std::string(a.name) + " must have shape " + arrays[0].shape_str() + " (one flat buffer), got " +
                        a.shape_str());
    keep.push_back(a);
  }
  FlatAdam adam;
  adam.param = static_cast<float*>(arrays[0].data);
  adam.grad = static_cast<float*>(arrays[1].data);
  adam.exp_avg = static_cast<float*>(arrays[2].data);
  adam.exp_avg_sq = static_cast<float*>(arrays[3].data);
  adam.n = arrays[0].shape[0];
  const ArrayArg steps = array_arg(adam_steps, "adam_steps", py::none(), /*allow_int=*/true);
  if (steps.dtype != ScalarType::Int64 || steps.shape != std::vector<int64_t>{1} || steps.device != DeviceType::CPU ||
      !steps.writeable)
    throw_value_error("adam_steps must be a writeable CPU int64 array of shape (1,) (the step count), got " +
                      steps.dtype_name + " " + steps.shape_str() + " on " + steps.device_str() +
                      (steps.writeable ? "" : ", read-only"));
  adam.step_count = static_cast<int64_t*>(steps.data);
  keep.push_back(steps);
  std::vector<std::pair<int64_t, int64_t>> tiles;  // (offset, size)
  for (const ParamSpan& s : spans) {
    const int64_t off = s.param - adam.param;
    if (off < 0 || off + s.n > adam.n || s.grad - adam.grad != off)
      throw_value_error("every parameter and its gradient must be views of flat_param and flat_grad at one offset");
    tiles.emplace_back(off, s.n);
  }
  std::sort(tiles.begin(), tiles.end());
  int64_t next = 0;
  for (const auto& [off, n] : tiles) {
    if (off != next) throw_value_error("the parameters must tile flat_param exactly (a gap or an overlap)");
    next += n;
  }
  if (next != adam.n) throw_value_error("flat_param has elements no parameter uses");
  return adam;
}

}  // namespace fastppo
