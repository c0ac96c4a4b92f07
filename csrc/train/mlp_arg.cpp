#include "train/mlp_arg.h"

#include <algorithm>
#include <cmath>
#include <set>
#include <tuple>
#include <utility>

namespace fastppo {
namespace {

// A stable C string for an ArrayArg's name (ArrayArg keeps a const char*, and the kept arrays outlive
// the call that named them): the few names an MLP list gives ("actor[0]", ...), kept for good.
const char* interned(const std::string& name) {
  static auto* names = new std::set<std::string>();  // called with the GIL held
  return names->insert(name).first->c_str();
}

std::string indexed(const std::string& name, size_t i) { return name + "[" + std::to_string(i) + "]"; }

std::string repr(double x) { return py::repr(py::float_(x)).cast<std::string>(); }

}  // namespace

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
      total += std::min(k, actor.out() + 1);  // no overflow: any entry above the output size is too many
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
  const std::string grads_name = name + "_grads";
  if (with_grads && grads.size() != params.size())
    throw_value_error(grads_name + " must match " + name + " one for one, got " + std::to_string(grads.size()) +
                      " arrays for " + std::to_string(params.size()));
  std::vector<DenseLayer> layers;
  for (size_t i = 0; i < params.size(); i += 2) {
    const std::string layer = name + " layer " + std::to_string(i / 2);
    const ArrayArg w = float_array_arg(params[i], interned(indexed(name, i)), with_grads);
    const ArrayArg b = float_array_arg(params[i + 1], interned(indexed(name, i + 1)), with_grads);
    if (w.shape.size() != 2 || b.shape.size() != 1 || b.shape[0] != w.shape[0])
      throw_value_error(layer + " (" + indexed(name, i) + ", " + indexed(name, i + 1) +
                        "): expected an (out, in) weight and an (out,) bias, got " + w.shape_str() + " and " +
                        b.shape_str());
    if (!layers.empty() && layers.back().out != w.shape[1])
      throw_value_error(layer + " (" + indexed(name, i) + ") takes " + std::to_string(w.shape[1]) +
                        " inputs but the layer before gives " + std::to_string(layers.back().out));
    DenseLayer L;
    L.weight = static_cast<float*>(w.data);
    L.bias = static_cast<float*>(b.data);
    L.in = w.shape[1];
    L.out = w.shape[0];
    if (with_grads) {
      const ArrayArg gw = float_array_arg(grads[i], interned(indexed(grads_name, i)), true);
      const ArrayArg gb = float_array_arg(grads[i + 1], interned(indexed(grads_name, i + 1)), true);
      if (gw.shape != w.shape || gb.shape != b.shape)
        throw_value_error(indexed(grads_name, gw.shape != w.shape ? i : i + 1) + " must have the shape of " +
                          indexed(name, gw.shape != w.shape ? i : i + 1) + ", got " +
                          (gw.shape != w.shape ? gw : gb).shape_str());
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

const int64_t* order_arg(const ArrayArg& order, int64_t size, std::vector<int64_t>& copy) {
  check_dtype(order, ScalarType::Int64, "int64");
  check_contiguous(order);
  if (order.device != DeviceType::CPU || order.shape != std::vector<int64_t>{size})
    throw_value_error("order must be a CPU int64 array of shape (" + std::to_string(size) + ",), got " +
                      order.shape_str() + " on " + order.device_str());
  const int64_t* idx = static_cast<const int64_t*>(order.data);
  copy.assign(idx, idx + size);
  std::vector<bool> seen(size_t(size), false);
  for (int64_t i = 0; i < size; ++i) {
    if (copy[i] < 0 || copy[i] >= size)
      throw_value_error("order[" + std::to_string(i) + "] = " + std::to_string(copy[i]) + " is outside [0, " +
                        std::to_string(size) + ")");
    if (seen[size_t(copy[i])])
      throw_value_error("order must be a permutation of range(" + std::to_string(size) + "), but order[" +
                        std::to_string(i) + "] = " + std::to_string(copy[i]) + " repeats an earlier entry");
    seen[size_t(copy[i])] = true;
  }
  return copy.data();
}

int64_t int_arg(py::handle obj, const char* name) {
  if (PyIndex_Check(obj.ptr())) {
    try {
      return obj.cast<int64_t>();
    } catch (const py::cast_error&) {
    }
  }
  throw_type_error(std::string(name) + " must be an int (int64), got " +
                   py::str(py::type::handle_of(obj).attr("__name__")).cast<std::string>());
}

void check_apart_from_adam(const ArrayArg& input, const FlatAdam& adam) {
  if (input.numel() == 0) return;
  const auto [lo, hi] = input.extent();
  const std::pair<const char*, const void*> written[] = {{"flat_param", adam.param}, {"flat_grad", adam.grad},
                                                         {"exp_avg", adam.exp_avg}, {"exp_avg_sq", adam.exp_avg_sq}};
  for (const auto& [name, data] : written) {
    const auto begin = reinterpret_cast<uintptr_t>(data), end = begin + sizeof(float) * uintptr_t(adam.n) - 1;
    if (lo <= end && begin <= hi)
      throw_value_error(std::string(input.name) + " must not overlap " + name + " in memory (the update writes it)");
  }
  const auto steps = reinterpret_cast<uintptr_t>(adam.step_count);
  if (lo <= steps + sizeof(int64_t) - 1 && steps <= hi)
    throw_value_error(std::string(input.name) + " must not overlap adam_steps in memory (the update writes it)");
}

void check_adam_call(const FlatAdam& adam, double lr, double beta1, double beta2, double eps) {
  const int64_t t = *adam.step_count;
  if (t < 0 || t > (int64_t(1) << 62))
    throw_value_error("adam_steps[0] must be a step count in [0, 2**62], got " + std::to_string(t));
  check_nonnegative(lr, "lr");
  if (!(beta1 >= 0.0 && beta1 < 1.0)) throw_value_error("beta1 must be in [0, 1), got " + repr(beta1));
  if (!(beta2 >= 0.0 && beta2 < 1.0)) throw_value_error("beta2 must be in [0, 1), got " + repr(beta2));
  check_nonnegative(eps, "eps");
}

std::vector<ParamSpan> mlp_spans(const Mlp& mlp, const std::string& name) {
  std::vector<ParamSpan> spans;
  size_t i = 0;
  for (const DenseLayer& L : mlp.layers()) {
    spans.push_back({L.weight, L.grad_weight, L.in * L.out, indexed(name, i), indexed(name + "_grads", i)});
    spans.push_back({L.bias, L.grad_bias, L.out, indexed(name, i + 1), indexed(name + "_grads", i + 1)});
    i += 2;
  }
  return spans;
}

FlatAdam flat_adam_arg(py::object flat_param, py::object flat_grad, py::object exp_avg, py::object exp_avg_sq,
                       py::object adam_steps, const std::vector<ParamSpan>& spans, std::vector<ArrayArg>& keep) {
  const ArrayArg arrays[4] = {float_array_arg(flat_param, "flat_param", true),
                              float_array_arg(flat_grad, "flat_grad", true), float_array_arg(exp_avg, "exp_avg", true),
                              float_array_arg(exp_avg_sq, "exp_avg_sq", true)};
  for (size_t i = 0; i < 4; ++i) {
    const ArrayArg& a = arrays[i];
    if (a.shape.size() != 1)
      throw_value_error(std::string(a.name) + " must be one flat (1-D) buffer, got shape " + a.shape_str());
    if (a.shape != arrays[0].shape)
      throw_value_error(std::string(a.name) + " must have shape " + arrays[0].shape_str() + " (that of flat_param), got " +
                        a.shape_str());
    // The step writes all four (and the backward the gradient): one buffer's memory in another's would be
    // read after it was written.
    std::vector<const ArrayArg*> before;
    for (size_t j = 0; j < i; ++j) before.push_back(&arrays[j]);
    check_writeable_output(a, before);
  }
  for (const ArrayArg& a : arrays) keep.push_back(a);
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
  check_writeable_output(steps, {&arrays[0], &arrays[1], &arrays[2], &arrays[3]});
  adam.step_count = static_cast<int64_t*>(steps.data);
  keep.push_back(steps);
  std::vector<std::tuple<int64_t, int64_t, size_t>> tiles;  // (offset, size, span)
  for (size_t k = 0; k < spans.size(); ++k) {
    const ParamSpan& s = spans[k];
    if (!s.grad) throw_value_error(s.grad_name + " is missing: the update writes every parameter's gradient");
    // Compared as addresses: the arrays need not point into the buffers at all.
    const auto at = [](const float* p, const float* base) {
      return (reinterpret_cast<intptr_t>(p) - reinterpret_cast<intptr_t>(base)) / intptr_t(sizeof(float));
    };
    const auto aligned = [](const float* p, const float* base) {
      return (reinterpret_cast<intptr_t>(p) - reinterpret_cast<intptr_t>(base)) % intptr_t(sizeof(float)) == 0;
    };
    const int64_t off = at(s.param, adam.param);
    if (!aligned(s.param, adam.param) || !aligned(s.grad, adam.grad) || off < 0 || off + s.n > adam.n ||
        at(s.grad, adam.grad) != off)
      throw_value_error(s.name + " and " + s.grad_name + ": every parameter and its gradient must be views of "
                        "flat_param and flat_grad at one offset");
    tiles.emplace_back(off, s.n, k);
  }
  std::sort(tiles.begin(), tiles.end());
  int64_t next = 0;
  for (const auto& [off, n, k] : tiles) {
    if (off != next)
      throw_value_error("the parameters must tile flat_param exactly (a gap or an overlap at " + spans[k].name +
                        ")");
    next += n;
  }
  if (next != adam.n) throw_value_error("flat_param has elements no parameter uses");
  return adam;
}

}  // namespace fastppo
