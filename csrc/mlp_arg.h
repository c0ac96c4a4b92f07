// The binding side of the MLP kernels: Python lists of parameter arrays (numpy views of the torch
// parameters' memory, not copies) checked and turned into an Mlp.
#pragma once

#include <string>
#include <vector>

#include "array_arg.h"
#include "mlp.h"

namespace fastppo {

// "tanh" or "relu", else ValueError naming `activation`.
Activation activation_arg(const std::string& activation);

// params: [weight0, bias0, weight1, bias1, ...] as nn.Linear stores them: float32, contiguous, CPU,
// chained sizes. grads: the same layout (written by backward) or an empty list (forward only). The
// arrays are appended to `keep`, which must outlive the Mlp. `name` prefixes error messages.
Mlp mlp_arg(py::list params, py::list grads, const std::string& name, Activation act, std::vector<ArrayArg>& keep);

// A float32, contiguous, CPU array (parameters, optimiser state, rollout columns), else ValueError.
ArrayArg float_array_arg(py::handle obj, const char* name, bool writeable);

}  // namespace fastppo
