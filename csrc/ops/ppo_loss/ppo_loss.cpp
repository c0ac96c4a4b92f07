// The PPO loss binding: validates every argument, fills PpoLossParams, releases the GIL and runs the
// kernel that writes the loss, the stats and the per-sample gradients in one pass.
#include "ops/ppo_loss/ppo_loss.h"

#include <pybind11/pybind11.h>

#include "core/array_arg.h"
#ifdef FASTPPO_WITH_CUDA
#include "core/cuda_device.h"
#endif

namespace fastppo {

static Array1D as_1d(const ArrayArg& a) { return Array1D{a.data, a.strides.empty() ? 1 : a.strides[0]}; }

static void ppo_loss_op(py::handle new_logp, py::handle old_logp, py::handle advantages, py::handle new_values,
                        py::handle old_values, py::handle returns, py::handle entropy, py::handle kl,
                        py::handle out, py::handle grads, double clip_coef, double vf_coef, double ent_coef,
                        py::handle vf_clip, bool normalize_advantages, double kl_coef, bool check,
                        py::handle workspace, py::handle stream) {
  check_nonnegative(clip_coef, "clip_coef");  // 0: a linear clip schedule's last iteration
  check_nonnegative(vf_coef, "vf_coef");
  check_nonnegative(ent_coef, "ent_coef");
  check_nonnegative(kl_coef, "kl_coef");
  double vf_clip_value = 0.0;
  if (!vf_clip.is_none()) {
    if (!(py::isinstance<py::float_>(vf_clip) || py::isinstance<py::int_>(vf_clip) || py::hasattr(vf_clip, "__float__")))
      throw_type_error("vf_clip must be None or a number, got " +
                       py::str(py::type::of(vf_clip).attr("__name__")).cast<std::string>());
    vf_clip_value = vf_clip.cast<double>();
    check_positive(vf_clip_value, "vf_clip");
  }
  const ArrayArg lp = array_arg(new_logp, "new_logp", stream);
  check_ndim(lp, 1, "per-sample (B,)");
  check_float(lp);
  if (lp.shape[0] == 0) throw_value_error("new_logp must hold at least one sample, got shape (0,)");
  std::vector<ArrayArg> in;
  in.push_back(array_arg(old_logp, "old_logp", stream));
  in.push_back(array_arg(advantages, "advantages", stream));
  in.push_back(array_arg(new_values, "new_values", stream));
  in.push_back(array_arg(old_values, "old_values", stream));
  in.push_back(array_arg(returns, "returns", stream));
  in.push_back(array_arg(entropy, "entropy", stream));
  if (!kl.is_none()) in.push_back(array_arg(kl, "kl", stream));
  for (const ArrayArg& a : in) {
    check_same_device(a, lp);
    check_same_shape(a, lp);
    check_same_dtype(a, lp);
  }
  std::vector<const ArrayArg*> inputs{&lp};
  for (const ArrayArg& a : in) inputs.push_back(&a);
  const ArrayArg o = array_arg(out, "out", stream), g = array_arg(grads, "grads", stream);
  const int64_t n = lp.shape[0];
  for (const ArrayArg* a : {&o, &g}) {
    check_same_device(*a, lp);
    check_same_dtype(*a, lp);
    check_contiguous(*a);
  }
  if (o.shape != std::vector<int64_t>{kNumOut})
    throw_value_error("out must have shape (" + std::to_string(kNumOut) + ",), got " + o.shape_str());
  if (g.shape != std::vector<int64_t>{2 * n + 2})
    throw_value_error("grads must have shape (" + std::to_string(2 * n + 2) + ",) (2 B + 2), got " +
                      g.shape_str());
  check_writeable_output(o, inputs);
  inputs.push_back(&o);
  check_writeable_output(g, inputs);
  if (check && lp.device == DeviceType::CPU)
    for (const ArrayArg* a : inputs)
      if (a != &o) check_finite(*a);

  PpoLossParams p;
  p.new_logp = as_1d(lp), p.old_logp = as_1d(in[0]), p.advantages = as_1d(in[1]);
  p.new_values = as_1d(in[2]), p.old_values = as_1d(in[3]), p.returns = as_1d(in[4]), p.entropy = as_1d(in[5]);
  if (!kl.is_none()) p.kl = as_1d(in[6]);
  p.out = o.data, p.grads = g.data, p.n = n;
  p.clip_coef = clip_coef, p.vf_coef = vf_coef, p.ent_coef = ent_coef, p.kl_coef = kl_coef;
  p.clip_values = !vf_clip.is_none();
  p.vf_clip = vf_clip_value;
  p.normalize_advantages = normalize_advantages;
  p.dtype = lp.dtype;
  p.unit_stride = true;
  for (const ArrayArg* a : inputs) p.unit_stride &= a == &o || n == 1 || a->strides[0] == 1;

  if (lp.device == DeviceType::CUDA) {
#ifdef FASTPPO_WITH_CUDA
    if (workspace.is_none()) throw_value_error("workspace is required for CUDA arrays");
    const ArrayArg ws = array_arg(workspace, "workspace", stream);
    check_same_device(ws, lp);
    check_contiguous(ws);
    if (ws.dtype != ScalarType::Float64 || ws.numel() < ppo_loss_cuda_workspace(n))
      throw_value_error("workspace must be a float64 array of at least " +
                        std::to_string(ppo_loss_cuda_workspace(n)) + " elements, got " + ws.dtype_name + " " +
                        ws.shape_str());
    inputs.push_back(&g);
    check_writeable_output(ws, inputs);  // the kernels write partials while other blocks read inputs
    p.workspace = static_cast<double*>(ws.data);
    void* s = cuda_stream(stream);
    py::gil_scoped_release nogil;
    CudaDeviceGuard device(lp.device_id);
    ppo_loss_cuda(p, s);
#else
    throw_built_without_cuda("new_logp is a CUDA array", "CPU arrays");
#endif
    return;
  }
  py::gil_scoped_release nogil;
  ppo_loss_cpu(p);
}

void bind_ppo_loss(py::module_& m) {
  m.def("ppo_loss", &ppo_loss_op, py::arg("new_logp"), py::arg("old_logp"), py::arg("advantages"),
        py::arg("new_values"), py::arg("old_values"), py::arg("returns"), py::arg("entropy"), py::arg("kl"),
        py::arg("out"), py::arg("grads"), py::arg("clip_coef"), py::arg("vf_coef"), py::arg("ent_coef"),
        py::arg("vf_clip"), py::arg("normalize_advantages"), py::arg("kl_coef"), py::arg("check"),
        py::arg("workspace") = py::none(), py::arg("stream") = py::none(),
        "Fused PPO loss into caller-provided out (loss and stats) and grads (d loss / d new_logp, new_values, "
        "entropy_i, kl_i); "
        "see fastppo.ppo_loss for the semantics.");
  m.def("ppo_loss_cuda_workspace", &ppo_loss_cuda_workspace, py::arg("n"),
        "float64 elements of device scratch ppo_loss needs for a CUDA batch of n.");
}

}  // namespace fastppo
