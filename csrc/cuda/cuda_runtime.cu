#include <cuda_runtime.h>

#include <stdexcept>
#include <string>

#include "cuda/device.h"

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

void check_cuda_launch(const char* what) {
  const cudaError_t err = cudaGetLastError();
  if (err != cudaSuccess) throw std::runtime_error(std::string(what) + " failed to launch: " + cudaGetErrorString(err));
}

}  // namespace fastppo
