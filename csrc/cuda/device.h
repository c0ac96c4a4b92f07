#pragma once

#include <string>

namespace fastppo {

// Usable CUDA devices; 0 with the reason in *why when there are none (no driver, no GPU, ...).
int cuda_device_count(std::string* why);

// Throws std::runtime_error naming `what` if the last launch failed.
void check_cuda_launch(const char* what);

}  // namespace fastppo
