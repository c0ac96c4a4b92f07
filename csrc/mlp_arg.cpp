#include "mlp_arg.h"

namespace fastppo {

Activation activation_arg(const std::string& activation) {
  if (activation == "tanh") return Activation::Tanh;
  if (activation == "relu") return Activation::ReLU;
  throw_value_error("activation must be 'tanh' or 'relu' for the native MLP, got '" + activation + "'");
}

ArrayArg float_array_arg(py::handle obj, const char* name, bool writeable) {
  ArrayArg a = array_arg(obj, name, py::none());
  if (a.device != DeviceType::CPU) throw_value_error(std::string(name) + " must be on the CPU, got " + a.device_str());
  check_dtype(a, ScalarType::Float32, "float32");
  check_contiguous(a);
  if (writeable && !a.writeable) throw_value_error(std::string(name) + " must be writeable");
  return a;
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

}  // namespace fastppo
