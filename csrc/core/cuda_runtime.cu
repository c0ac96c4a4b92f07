#include <cuda_runtime.h>

#include <stdexcept>
#include <string>

#include "core/cuda_device.h"

namespace fastppo {

int cuda_device_count(std::string* why) {
  int count = 0;
  const cudaError_t err = cudaGetDeviceCount(&count);
  if (err != cudaSuccess) {
    cudaGetLastError();  // clear the sticky-free error so later calls start clean
    if (why) *why = cudaGetErrorString(err);
    return 0;
  }
  if (count == 0 && why) *why = "no CUDA device found";
  return count;
}

void cuda_versions(int* driver, int* runtime) {
  if (cudaDriverGetVersion(driver) != cudaSuccess) *driver = 0;
  if (cudaRuntimeGetVersion(runtime) != cudaSuccess) *runtime = CUDART_VERSION;
  cudaGetLastError();
}

CudaDeviceGuard::CudaDeviceGuard(int device) {
  int current = -1;
  if (cudaGetDevice(&current) == cudaSuccess && current == device) return;
  const cudaError_t err = cudaSetDevice(device);
  if (err != cudaSuccess)
    throw std::runtime_error("cannot make cuda:" + std::to_string(device) + " the current device: " +
                             cudaGetErrorString(err));
  previous_ = current;
}

CudaDeviceGuard::~CudaDeviceGuard() {
  if (previous_ >= 0) cudaSetDevice(previous_);
}

void check_cuda_launch(const char* what) {
  const cudaError_t err = cudaGetLastError();
  if (err != cudaSuccess) throw std::runtime_error(std::string(what) + " failed to launch: " + cudaGetErrorString(err));
}

}  // namespace fastppo
