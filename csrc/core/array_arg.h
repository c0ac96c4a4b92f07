// The binding side of every op: turns a Python array argument (a numpy array, or anything with
// __dlpack__ such as a torch tensor on CPU or CUDA) into a checked, torch-free description, and
// raises Python exceptions that name the argument, what was expected and what came.
#pragma once

#include <pybind11/pybind11.h>

#include <cstdint>
#include <string>
#include <vector>

#include "core/common.h"

namespace fastppo {

namespace py = pybind11;

struct ArrayArg {
  const char* name = "";
  void* data = nullptr;
  ScalarType dtype = ScalarType::Float32;
  std::string dtype_name;  // as the user would write it, for messages
  DeviceType device = DeviceType::CPU;
  int device_id = 0;
  std::vector<int64_t> shape;
  std::vector<int64_t> strides;  // in elements
  int64_t itemsize = 0;
  bool writeable = true;
  py::object keepalive;  // the array or the DLPack capsule that owns `data`

  int64_t numel() const;
  std::string shape_str() const;
  std::string device_str() const;
  // [lowest, highest] byte address touched, for overlap checks.
  std::pair<uintptr_t, uintptr_t> extent() const;
  Array2D as_2d() const;  // requires ndim == 2
};

// A shape as Python writes it: "(3,)", "(2, 4)".
std::string shape_str(const std::vector<int64_t>& shape);

// stream: the consumer's CUDA stream (as an int) for DLPack producers on CUDA, or None.
// allow_int: also accept int32/int64 arrays (actions, counters); otherwise float32, float64 or bool.
ArrayArg array_arg(py::handle obj, const char* name, py::handle stream, bool allow_int = false);

// A writeable, contiguous CPU array of `dtype` and exactly `shape` (what a native loop writes in place,
// or reads from memory a Python callee writes).
ArrayArg cpu_out_arg(py::handle obj, const char* name, ScalarType dtype, const char* dtype_name,
                     const std::vector<int64_t>& shape);

// Checks that raise ValueError / TypeError with a message naming `a`.
void check_ndim(const ArrayArg& a, size_t ndim, const char* layout);
void check_same_shape(const ArrayArg& a, const ArrayArg& like);
void check_float(const ArrayArg& a);
void check_dtype(const ArrayArg& a, ScalarType dtype, const char* dtype_name);
void check_same_dtype(const ArrayArg& a, const ArrayArg& like);
void check_same_device(const ArrayArg& a, const ArrayArg& like);
void check_writeable_output(const ArrayArg& out, const std::vector<const ArrayArg*>& others);
void check_unit_interval(double x, const char* name);
void check_positive(double x, const char* name);     // x > 0 and finite
void check_nonnegative(double x, const char* name);  // x >= 0 and finite
void check_contiguous(const ArrayArg& a);            // compact row-major
// CPU float arrays only: every element is finite, else ValueError naming the first bad index.
void check_finite(const ArrayArg& a);

// The stream argument of a binding (an int from torch.cuda.current_stream().cuda_stream, or None).
void* cuda_stream(py::handle stream);
// What a binding raises when it gets CUDA memory in a build without CUDA. `what` names the arrays
// ("rewards is a CUDA array"), `instead` the alternative ("CPU arrays").
[[noreturn]] void throw_built_without_cuda(const std::string& what, const std::string& instead);

// The name of obj's type, for messages ("float", "list").
std::string py_type_name(py::handle obj);

[[noreturn]] void throw_value_error(const std::string& msg);
[[noreturn]] void throw_type_error(const std::string& msg);

}  // namespace fastppo
