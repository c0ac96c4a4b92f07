#pragma once

#include <string>

namespace fastppo {

// Usable CUDA devices; 0 with the reason in *why when there are none (no driver, no GPU, ...).
int cuda_device_count(std::string* why);

// The CUDA version the installed driver supports (0: no driver could be loaded) and the one the kernels
// were built with, both as 1000 * major + 10 * minor. Loads the driver if there is one; creates no context.
void cuda_versions(int* driver, int* runtime);

// Throws std::runtime_error naming `what` if the last launch failed.
void check_cuda_launch(const char* what);

// Makes `device` the current CUDA device while it lives, then restores the previous one: kernels
// launch on the current device, whichever device their arrays and stream belong to (arrays on cuda:1
// while the caller's current device is cuda:0 must still run on cuda:1).
class CudaDeviceGuard {
 public:
  explicit CudaDeviceGuard(int device);
  ~CudaDeviceGuard();
  CudaDeviceGuard(const CudaDeviceGuard&) = delete;
  CudaDeviceGuard& operator=(const CudaDeviceGuard&) = delete;

 private:
  int previous_ = -1;  // -1: nothing to restore
};

}  // namespace fastppo
