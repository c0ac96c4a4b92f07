// fastppo._core: the one native module. Each part registers itself from its own binding file: the ops
// (ops/<op>/<op>.cpp), the envs (envs/env_batch.cpp) and the trainer's native parts (train/). Its classes
// are py::module_local(): a CUDA plugin's build of this module (fastppo_cudaNN._core) loads beside it.
#include <pybind11/pybind11.h>

#include <string>

#include "core/parallel.h"
#ifdef FASTPPO_WITH_CUDA
#include "core/cuda_device.h"
#endif

namespace py = pybind11;

namespace fastppo {
void bind_gae(py::module_& m);       // ops/gae
void bind_ppo_loss(py::module_& m);  // ops/ppo_loss
void bind_envs(py::module_& m);      // envs
void bind_policy_act(py::module_& m);  // train
void bind_ppo_update(py::module_& m);
void bind_critic_fit(py::module_& m);
void bind_rollout(py::module_& m);
}

PYBIND11_MODULE(_core, m) {
  m.doc() = "fastppo native kernels (torch-free); use the functions in fastppo, not these.";
  m.attr("__version__") = FASTPPO_VERSION;  // the release it was built from (a CUDA plugin must match fastppo)
#ifdef FASTPPO_WITH_CUDA
  m.attr("with_cuda") = true;
  m.def("cuda_device_count", [] {
    std::string why;
    const int n = fastppo::cuda_device_count(&why);
    return py::make_tuple(n, why);
  }, "(number of usable CUDA devices, reason when there are none)");
  m.def("cuda_versions", [] {
    int driver = 0, runtime = 0;
    fastppo::cuda_versions(&driver, &runtime);
    return py::make_tuple(driver, runtime);
  }, "(CUDA version the driver supports, 0 without a driver; CUDA version the kernels were built with)");
#else
  m.attr("with_cuda") = false;
#endif
  m.def("num_threads", &fastppo::num_threads, "Threads the native CPU kernels use.");
  m.def("set_num_threads", &fastppo::set_num_threads, py::arg("n"),
        "Set the native CPU kernels' thread count (n < 1: the default). Not while an op is running.");
  fastppo::bind_gae(m);
  fastppo::bind_envs(m);
  fastppo::bind_ppo_loss(m);
  fastppo::bind_policy_act(m);
  fastppo::bind_ppo_update(m);
  fastppo::bind_critic_fit(m);
  fastppo::bind_rollout(m);
}
