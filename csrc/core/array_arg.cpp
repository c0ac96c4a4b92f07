#include "core/array_arg.h"

#include <pybind11/numpy.h>

#include <algorithm>
#include <cmath>
#include <sstream>
#include <stdexcept>

namespace fastppo {
namespace {

// The DLPack C ABI (v0.8, the unversioned "dltensor" capsule every producer still exports), declared
// here rather than vendored: only these fields are read.
struct DLDevice {
  int32_t device_type;
  int32_t device_id;
};
struct DLDataType {
  uint8_t code;
  uint8_t bits;
  uint16_t lanes;
};
struct DLTensor {
  void* data;
  DLDevice device;
  int32_t ndim;
  DLDataType dtype;
  int64_t* shape;
  int64_t* strides;
  uint64_t byte_offset;
};
struct DLManagedTensor {
  DLTensor dl_tensor;
  void* manager_ctx;
  void (*deleter)(DLManagedTensor*);
};
enum : int32_t { kDLCPU = 1, kDLCUDA = 2, kDLCUDAHost = 3, kDLCUDAManaged = 13 };
enum : uint8_t { kDLInt = 0, kDLUInt = 1, kDLFloat = 2, kDLBool = 6 };

std::string repr(double x) { return py::repr(py::float_(x)).cast<std::string>(); }

const char* accepted(bool allow_int) {
  return allow_int ? "float32, float64, bool, int32 or int64" : "float32, float64 or bool";
}

ArrayArg from_numpy(const py::array& arr, const char* name, bool allow_int) {
  ArrayArg a;
  a.name = name;
  const py::dtype dt = arr.dtype();
  const char kind = dt.kind();
  a.itemsize = dt.itemsize();
  const bool native = dt.byteorder() != '>';
  // Names are spelled out rather than taken from str(dtype), which runs Python code (microseconds).
  if (kind == 'f' && a.itemsize == 4 && native) {
    a.dtype = ScalarType::Float32, a.dtype_name = "float32";
  } else if (kind == 'f' && a.itemsize == 8 && native) {
    a.dtype = ScalarType::Float64, a.dtype_name = "float64";
  } else if (kind == 'b' || (kind == 'u' && a.itemsize == 1)) {
    a.dtype = ScalarType::Bool, a.dtype_name = kind == 'b' ? "bool" : "uint8";
  } else if (allow_int && kind == 'i' && (a.itemsize == 4 || a.itemsize == 8) && native) {
    a.dtype = a.itemsize == 4 ? ScalarType::Int32 : ScalarType::Int64;
    a.dtype_name = a.itemsize == 4 ? "int32" : "int64";
  } else {
    throw_type_error(std::string(name) + " must have dtype " + accepted(allow_int) + ", got " +
                     py::str(dt).cast<std::string>());
  }
  a.data = const_cast<void*>(arr.data());
  a.writeable = arr.writeable();
  for (py::ssize_t d = 0; d < arr.ndim(); ++d) {
    a.shape.push_back(arr.shape(d));
    if (arr.strides(d) % a.itemsize != 0)
      throw_value_error(std::string(name) + " has a stride that is not a whole number of elements; pass a copy");
    a.strides.push_back(arr.strides(d) / a.itemsize);
  }
  a.keepalive = arr;
  return a;
}

ArrayArg from_dlpack(py::handle obj, const char* name, py::handle stream, bool allow_int) {
  // torch exports a tensor with the negative bit set (x.conj().imag, a lazily negated view) as its
  // memory, which holds -x: the kernels would read the wrong sign.
  if (py::hasattr(obj, "is_neg") && obj.attr("is_neg")().cast<bool>())
    throw_type_error(std::string(name) + " is a tensor with the negative bit set (a lazily negated view), which "
                     "DLPack cannot export; pass x.resolve_neg()");
  py::object capsule;
  try {
    py::tuple dev = obj.attr("__dlpack_device__")();
    const bool cuda = dev[0].cast<int32_t>() == kDLCUDA;
    if (cuda && !stream.is_none()) {
      // The consumer's stream as DLPack names it: 1 is CUDA's legacy default stream, which
      // torch.cuda.current_stream().cuda_stream reports as 0 (a value DLPack reserves; torch refuses it).
      const uintptr_t s = stream.cast<uintptr_t>();
      capsule = obj.attr("__dlpack__")(py::arg("stream") = s == 0 ? uintptr_t(1) : s);
    } else {
      capsule = obj.attr("__dlpack__")();
    }
  } catch (py::error_already_set& e) {  // e.g. a meta tensor, or one that requires grad
    throw_type_error(std::string(name) + " must be a CPU or CUDA array readable through DLPack, got a " +
                     py_type_name(obj) + " that is not (" + e.what() + ")");
  }
  auto* managed = static_cast<DLManagedTensor*>(PyCapsule_GetPointer(capsule.ptr(), "dltensor"));
  if (!managed) throw py::error_already_set();
  const DLTensor& t = managed->dl_tensor;
  ArrayArg a;
  a.name = name;
  a.keepalive = capsule;  // the capsule's destructor calls the producer's deleter
  switch (t.device.device_type) {
    case kDLCPU:
    case kDLCUDAHost:
      a.device = DeviceType::CPU;
      break;
    case kDLCUDA:
    case kDLCUDAManaged:
      a.device = DeviceType::CUDA;
      break;
    default:
      throw_type_error(std::string(name) + " lives on an unsupported device (DLPack device type " +
                       std::to_string(t.device.device_type) + "); expected CPU or CUDA");
  }
  a.device_id = t.device.device_id;
  if (t.dtype.lanes != 1) throw_type_error(std::string(name) + " must not be a vector dtype");
  a.itemsize = t.dtype.bits / 8;
  if (t.dtype.code == kDLFloat && t.dtype.bits == 32) {
    a.dtype = ScalarType::Float32, a.dtype_name = "float32";
  } else if (t.dtype.code == kDLFloat && t.dtype.bits == 64) {
    a.dtype = ScalarType::Float64, a.dtype_name = "float64";
  } else if ((t.dtype.code == kDLBool || t.dtype.code == kDLUInt) && t.dtype.bits == 8) {
    a.dtype = ScalarType::Bool, a.dtype_name = t.dtype.code == kDLBool ? "bool" : "uint8";
  } else if (allow_int && t.dtype.code == kDLInt && (t.dtype.bits == 32 || t.dtype.bits == 64)) {
    a.dtype = t.dtype.bits == 32 ? ScalarType::Int32 : ScalarType::Int64;
    a.dtype_name = t.dtype.bits == 32 ? "int32" : "int64";
  } else {
    static const char* codes[] = {"int", "uint", "float", "opaque", "bfloat", "complex", "bool"};
    const std::string code = t.dtype.code < 7 ? codes[t.dtype.code] : "code" + std::to_string(t.dtype.code);
    throw_type_error(std::string(name) + " must have dtype " + accepted(allow_int) + ", got " + code +
                     std::to_string(t.dtype.bits));
  }
  a.data = static_cast<char*>(t.data) + t.byte_offset;
  int64_t compact = 1;
  a.shape.assign(t.shape, t.shape + t.ndim);
  a.strides.resize(t.ndim);
  for (int d = t.ndim - 1; d >= 0; --d) {  // NULL strides mean compact row-major
    a.strides[d] = t.strides ? t.strides[d] : compact;
    compact *= t.shape[d];
  }
  return a;
}

}  // namespace

std::string py_type_name(py::handle obj) { return py::str(py::type::of(obj).attr("__name__")); }

void throw_value_error(const std::string& msg) { throw py::value_error(msg); }

void* cuda_stream(py::handle stream) {
  return stream.is_none() ? nullptr : reinterpret_cast<void*>(stream.cast<uintptr_t>());
}

void throw_built_without_cuda(const std::string& what, const std::string& instead) {
  throw_value_error(what + ", but this fastppo._core has no CUDA kernels (pip install 'fastppo[cuda12]' or "
                    "'fastppo[cuda13]', or build from source with nvcc); use " + instead);
}
void throw_type_error(const std::string& msg) { throw py::type_error(msg); }

int64_t ArrayArg::numel() const {
  int64_t n = 1;
  for (int64_t s : shape) n *= s;
  return n;
}

std::string shape_str(const std::vector<int64_t>& shape) {
  std::ostringstream os;
  os << "(";
  for (size_t i = 0; i < shape.size(); ++i) os << (i ? ", " : "") << shape[i];
  os << (shape.size() == 1 ? ",)" : ")");
  return os.str();
}

std::string ArrayArg::shape_str() const { return fastppo::shape_str(shape); }

std::string ArrayArg::device_str() const {
  return device == DeviceType::CPU ? std::string("cpu") : "cuda:" + std::to_string(device_id);
}

std::pair<uintptr_t, uintptr_t> ArrayArg::extent() const {
  auto lo = reinterpret_cast<intptr_t>(data), hi = lo;
  if (numel() == 0) return {uintptr_t(lo), uintptr_t(lo)};
  for (size_t d = 0; d < shape.size(); ++d) {
    const intptr_t span = (shape[d] - 1) * strides[d] * itemsize;
    (span < 0 ? lo : hi) += span;
  }
  return {uintptr_t(lo), uintptr_t(hi + itemsize - 1)};
}

Array2D ArrayArg::as_2d() const { return Array2D{data, strides[0], strides[1]}; }

ArrayArg array_arg(py::handle obj, const char* name, py::handle stream, bool allow_int) {
  if (py::isinstance<py::array>(obj)) return from_numpy(py::reinterpret_borrow<py::array>(obj), name, allow_int);
  if (py::hasattr(obj, "__dlpack__")) return from_dlpack(obj, name, stream, allow_int);
  throw_type_error(std::string(name) + " must be a numpy array or a torch tensor, got " + py_type_name(obj));
}

void check_ndim(const ArrayArg& a, size_t ndim, const char* layout) {
  if (a.shape.size() != ndim)
    throw_value_error(std::string(a.name) + " must be a " + std::to_string(ndim) + "-D " + layout +
                      " array, got shape " + a.shape_str());
}

void check_same_shape(const ArrayArg& a, const ArrayArg& like) {
  if (a.shape != like.shape)
    throw_value_error(std::string(a.name) + " must have the shape of " + like.name + " " + like.shape_str() +
                      ", got " + a.shape_str());
}

void check_float(const ArrayArg& a) {
  if (a.dtype != ScalarType::Float32 && a.dtype != ScalarType::Float64)
    throw_type_error(std::string(a.name) + " must have dtype float32 or float64, got " + a.dtype_name);
}

void check_dtype(const ArrayArg& a, ScalarType dtype, const char* dtype_name) {
  if (a.dtype != dtype)
    throw_type_error(std::string(a.name) + " must have dtype " + dtype_name + ", got " + a.dtype_name);
}

void check_same_dtype(const ArrayArg& a, const ArrayArg& like) {
  if (a.dtype != like.dtype)
    throw_type_error(std::string(a.name) + " must have the dtype of " + like.name + " (" + like.dtype_name +
                     "), got " + a.dtype_name);
}

void check_same_device(const ArrayArg& a, const ArrayArg& like) {
  if (a.device != like.device || (a.device == DeviceType::CUDA && a.device_id != like.device_id))
    throw_value_error(std::string(a.name) + " must be on the device of " + like.name + " (" + like.device_str() +
                      "), got " + a.device_str());
}

void check_writeable_output(const ArrayArg& out, const std::vector<const ArrayArg*>& others) {
  if (!out.writeable) throw_value_error(std::string(out.name) + " must be writeable, got a read-only array");
  // No two elements of an output may share memory (zero or interleaved strides): the kernels write
  // each element once and read rows they wrote, assuming distinct rows are distinct memory.
  std::vector<std::pair<int64_t, int64_t>> dims;  // (|stride|, size) of the dimensions longer than 1
  for (size_t d = 0; d < out.shape.size(); ++d)
    if (out.shape[d] > 1) dims.emplace_back(std::abs(out.strides[d]), out.shape[d]);
  std::sort(dims.begin(), dims.end());
  for (size_t d = 0; d < dims.size() && out.numel() > 0; ++d)
    if (dims[d].first < (d ? dims[d - 1].first * dims[d - 1].second : 1))
      throw_value_error(std::string(out.name) + " must not have overlapping elements (its strides alias); "
                        "pass an array that owns distinct memory per element");
  const auto [lo, hi] = out.extent();
  for (const ArrayArg* o : others) {
    if (o->numel() == 0 || out.numel() == 0) continue;
    const auto [olo, ohi] = o->extent();
    if (lo <= ohi && olo <= hi)
      throw_value_error(std::string(out.name) + " must not overlap " + o->name + " in memory");
  }
}

void check_unit_interval(double x, const char* name) {
  if (!(x >= 0.0 && x <= 1.0))  // also rejects NaN
    throw_value_error(std::string(name) + " must be in [0, 1], got " + repr(x));
}

void check_positive(double x, const char* name) {
  if (!(x > 0.0 && std::isfinite(x)))
    throw_value_error(std::string(name) + " must be positive and finite, got " + repr(x));
}

void check_nonnegative(double x, const char* name) {
  if (!(x >= 0.0 && std::isfinite(x)))
    throw_value_error(std::string(name) + " must be non-negative and finite, got " + repr(x));
}

void check_contiguous(const ArrayArg& a) {
  if (a.numel() == 0) return;  // nothing to address: numpy gives empty arrays arbitrary strides
  int64_t compact = 1;
  for (int d = int(a.shape.size()) - 1; d >= 0; --d) {
    if (a.shape[d] > 1 && a.strides[d] != compact)
      throw_value_error(std::string(a.name) + " must be contiguous (compact row-major), got shape " +
                        a.shape_str() + " with other strides");
    compact *= a.shape[d];
  }
}

ArrayArg cpu_out_arg(py::handle obj, const char* name, ScalarType dtype, const char* dtype_name,
                     const std::vector<int64_t>& shape) {
  ArrayArg a = array_arg(obj, name, py::none(), /*allow_int=*/dtype == ScalarType::Int64);
  check_dtype(a, dtype, dtype_name);
  if (a.device != DeviceType::CPU || a.shape != shape || !a.writeable)
    throw_value_error(std::string(name) + " must be a writeable CPU array of shape " + shape_str(shape) + ", got " +
                      (a.writeable ? "" : "a read-only ") + a.device_str() + " array of shape " + a.shape_str());
  check_contiguous(a);
  return a;
}

template <typename T>
static int64_t first_non_finite(const ArrayArg& a) {
  const auto* x = static_cast<const T*>(a.data);
  const int64_t n = a.numel(), s = a.strides.empty() ? 1 : a.strides[0];
  for (int64_t i = 0; i < n; ++i)
    if (!std::isfinite(x[i * s])) return i;
  return -1;
}

void check_finite(const ArrayArg& a) {
  if (a.device != DeviceType::CPU || a.shape.size() > 1 || a.dtype == ScalarType::Bool)
    throw std::logic_error("check_finite takes a 1-D CPU float array");
  const int64_t i = a.dtype == ScalarType::Float32 ? first_non_finite<float>(a) : first_non_finite<double>(a);
  if (i >= 0) {
    const double v = a.dtype == ScalarType::Float32 ? double(static_cast<const float*>(a.data)[i * a.strides[0]])
                                                    : static_cast<const double*>(a.data)[i * a.strides[0]];
    throw_value_error(std::string(a.name) + " must be finite, got " + repr(v) + " at index " + std::to_string(i));
  }
}

}  // namespace fastppo
