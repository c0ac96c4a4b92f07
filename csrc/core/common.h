// Definitions shared by every kernel, host and device. Torch-free and pybind11-free.
#pragma once

#include <cstdint>

#if defined(__CUDACC__)
#define FASTPPO_HD __host__ __device__ __forceinline__
#else
#define FASTPPO_HD inline
#endif

// A hot CPU loop compiled twice: the AVX2+FMA clone runs where the CPU has it (picked once, at load
// time), the baseline build stays portable.
#if defined(__x86_64__) && defined(__GNUC__) && !defined(__clang__) && !defined(__CUDACC__)
#define FASTPPO_CPU_CLONES __attribute__((target_clones("arch=x86-64-v3", "default")))
#else
#define FASTPPO_CPU_CLONES
#endif

namespace fastppo {

// Element types the kernels are instantiated for.
enum class ScalarType : uint8_t { Float32, Float64, Bool, Int32, Int64 };

// Where an array's memory lives.
enum class DeviceType : uint8_t { CPU, CUDA };

// A (T, N) time-major array as the kernels see it: a base pointer and strides in elements.
struct Array2D {
  void* data = nullptr;
  int64_t stride_t = 0;
  int64_t stride_n = 0;
};

// Treat a done flag stored as bool/uint8 or as a float as a boolean.
template <typename D>
FASTPPO_HD bool as_flag(D x) {
  return x != D(0);
}

}  // namespace fastppo
