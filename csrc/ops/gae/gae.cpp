// The GAE binding: validates every argument, fills GaeParams, releases the GIL and runs the kernel.
#include "ops/gae/gae.h"

#include <pybind11/pybind11.h>

#include "core/array_arg.h"
#ifdef FASTPPO_WITH_CUDA
#include "core/cuda_device.h"
#endif

namespace fastppo {

static void gae_op(py::handle rewards, py::handle values, py::handle next_values, py::handle terminated,
                   py::handle truncated, py::handle advantages, py::handle returns, double gamma, double lam,
                   py::handle stream) {
  check_unit_interval(gamma, "gamma");
  check_unit_interval(lam, "lam");
  const ArrayArg r = array_arg(rewards, "rewards", stream);
  check_ndim(r, 2, "time-major (T, N)");
  check_float(r);
  ArrayArg v = array_arg(values, "values", stream), nv = array_arg(next_values, "next_values", stream);
  ArrayArg te = array_arg(terminated, "terminated", stream), tr = array_arg(truncated, "truncated", stream);
  ArrayArg adv = array_arg(advantages, "out[0] (advantages)", stream);
  ArrayArg ret = array_arg(returns, "out[1] (returns)", stream);
  for (const ArrayArg* a : {&v, &nv, &te, &tr, &adv, &ret}) {
    check_same_device(*a, r);
    check_same_shape(*a, r);
  }
  for (const ArrayArg* a : {&v, &nv, &adv, &ret}) check_same_dtype(*a, r);
  if (te.dtype != ScalarType::Bool) check_same_dtype(te, r);
  check_same_dtype(tr, te);
  check_writeable_output(adv, {&r, &v, &nv, &te, &tr, &ret});
  check_writeable_output(ret, {&r, &v, &nv, &te, &tr});

  GaeParams p;
  p.rewards = r.as_2d(), p.values = v.as_2d(), p.next_values = nv.as_2d();
  p.terminated = te.as_2d(), p.truncated = tr.as_2d();
  p.advantages = adv.as_2d(), p.returns = ret.as_2d();
  p.T = r.shape[0], p.N = r.shape[1];
  p.gamma = gamma, p.lam = lam;
  p.dtype = r.dtype, p.done_dtype = te.dtype;
  p.unit_stride_n = true;
  for (const Array2D* a : {&p.rewards, &p.values, &p.next_values, &p.terminated, &p.truncated, &p.advantages,
                           &p.returns})
    p.unit_stride_n &= a->stride_n == 1 || p.N == 1;
  if (p.T == 0 || p.N == 0) return;

  if (r.device == DeviceType::CUDA) {
#ifdef FASTPPO_WITH_CUDA
    void* s = cuda_stream(stream);
    py::gil_scoped_release nogil;
    CudaDeviceGuard device(r.device_id);
    gae_cuda(p, s);
#else
    throw_built_without_cuda("rewards is a CUDA array", "CPU arrays");
#endif
    return;
  }
  py::gil_scoped_release nogil;
  gae_cpu(p);
}

void bind_gae(py::module_& m) {
  m.def("gae", &gae_op, py::arg("rewards"), py::arg("values"), py::arg("next_values"), py::arg("terminated"),
        py::arg("truncated"), py::arg("advantages"), py::arg("returns"), py::arg("gamma"), py::arg("lam"),
        py::arg("stream") = py::none(),
        "GAE into caller-provided (advantages, returns); see fastppo.gae for the semantics.");
}

}  // namespace fastppo
