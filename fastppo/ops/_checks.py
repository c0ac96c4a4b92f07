"""Argument checks for the Python backends (torch, numba), worded like the native ones in
csrc/core/array_arg.cpp so that every backend rejects bad input with the same message."""

from __future__ import annotations

import math

import numpy as np
import torch

FLOATS = (torch.float32, torch.float64)


def as_tensor(x, name: str) -> torch.Tensor:
    """A torch view of a numpy array or tensor, for reading (a numpy array with negative strides,
    which torch cannot view, is copied); anything else is a TypeError."""
    if isinstance(x, torch.Tensor):
        return x
    if isinstance(x, np.ndarray):
        if x.dtype.kind not in "fbu" or (x.dtype.kind == "u" and x.itemsize != 1) or not x.dtype.isnative:
            raise TypeError(f"{name} must have dtype float32, float64 or bool, got {x.dtype}")
        if any(s < 0 for s in x.strides) or not x.flags.writeable:
            x = np.array(x)  # a writeable copy: torch neither views negative strides nor read-only memory
        return torch.from_numpy(x)
    raise TypeError(f"{name} must be a numpy array or a torch tensor, got {type(x).__name__}")


def check_output(out, name: str, like: torch.Tensor, like_name: str, inputs: dict) -> None:
    """`out` (numpy or torch) must match `like` and be writeable and disjoint from every input."""
    check_like(as_tensor(out, name), name, like, like_name)
    if isinstance(out, np.ndarray) and not out.flags.writeable:
        raise ValueError(f"{name} must be writeable, got a read-only array")
    strides = [s // out.itemsize for s in out.strides] if isinstance(out, np.ndarray) else list(out.stride())
    dims = sorted((abs(st), n) for st, n in zip(strides, out.shape) if n > 1)
    empty = 0 in out.shape
    if not empty and any(st < (dims[i - 1][0] * dims[i - 1][1] if i else 1) for i, (st, _) in enumerate(dims)):
        raise ValueError(f"{name} must not have overlapping elements (its strides alias); "
                         "pass an array that owns distinct memory per element")
    for other_name, other in inputs.items():
        if _may_overlap(out, other):
            raise ValueError(f"{name} must not overlap {other_name} in memory")


def write(out, value: torch.Tensor) -> None:
    """Copy a computed tensor into a numpy or torch output."""
    if isinstance(out, np.ndarray):
        np.copyto(out, value.numpy())
    else:
        out.copy_(value)


def dtype_name(t: torch.Tensor) -> str:
    return str(t.dtype).removeprefix("torch.")


def shape_str(t: torch.Tensor) -> str:
    return str(tuple(t.shape))


def check_ndim(t: torch.Tensor, ndim: int, layout: str, name: str) -> None:
    if t.dim() != ndim:
        raise ValueError(f"{name} must be a {ndim}-D {layout} array, got shape {shape_str(t)}")


def check_float(t: torch.Tensor, name: str) -> None:
    if t.dtype not in FLOATS:
        raise TypeError(f"{name} must have dtype float32 or float64, got {dtype_name(t)}")


def check_flag_dtype(t: torch.Tensor, name: str) -> None:
    if t.dtype not in (*FLOATS, torch.bool, torch.uint8):
        raise TypeError(f"{name} must have dtype float32, float64 or bool, got {dtype_name(t)}")


def check_same_device(t: torch.Tensor, name: str, like: torch.Tensor, like_name: str) -> None:
    if t.device != like.device:
        raise ValueError(f"{name} must be on the device of {like_name} ({like.device}), got {t.device}")


def check_devices(named: dict, like: torch.Tensor, like_name: str) -> None:
    """Every tensor in ``named`` on ``like``'s device (anything else is left to the binding). For the CUDA
    paths, in Python: torch's DLPack export refuses a tensor on a GPU that is not the current device
    before the binding could name the argument."""
    for name, t in named.items():
        if isinstance(t, torch.Tensor):
            check_same_device(t, name, like, like_name)


def detached(x):
    """A tensor detached (DLPack refuses tensors that require grad); anything else as it is."""
    return x.detach() if isinstance(x, torch.Tensor) else x


def check_like(t: torch.Tensor, name: str, like: torch.Tensor, like_name: str, *, dtype: bool = True) -> None:
    """Same device, shape and (unless dtype=False) dtype as `like`."""
    check_same_device(t, name, like, like_name)
    if t.shape != like.shape:
        raise ValueError(f"{name} must have the shape of {like_name} {shape_str(like)}, got {shape_str(t)}")
    if dtype and t.dtype != like.dtype:
        raise TypeError(f"{name} must have the dtype of {like_name} ({dtype_name(like)}), got {dtype_name(t)}")


def check_unit_interval(x: float, name: str) -> None:
    if not 0.0 <= x <= 1.0:  # also rejects NaN
        raise ValueError(f"{name} must be in [0, 1], got {x!r}")


def check_positive(x: float, name: str) -> None:
    if not (x > 0.0 and math.isfinite(x)):  # also rejects NaN
        raise ValueError(f"{name} must be positive and finite, got {float(x)!r}")


def check_nonnegative(x: float, name: str) -> None:
    if not (x >= 0.0 and math.isfinite(x)):
        raise ValueError(f"{name} must be non-negative and finite, got {float(x)!r}")


def check_finite(t: torch.Tensor, name: str) -> None:
    """Every element finite, else a ValueError naming the first bad index (synchronises on CUDA)."""
    bad = ~torch.isfinite(t.reshape(-1))
    if bad.any():
        i = int(bad.nonzero()[0])
        raise ValueError(f"{name} must be finite, got {float(t.reshape(-1)[i])!r} at index {i}")


def _may_overlap(a, b) -> bool:
    """Whether two arrays' memory ranges intersect (the same bounds test as the native check)."""
    if isinstance(a, np.ndarray) or isinstance(b, np.ndarray):
        if isinstance(a, torch.Tensor) or isinstance(b, torch.Tensor):
            a, b = (x.numpy() if isinstance(x, torch.Tensor) and x.device.type == "cpu" else x for x in (a, b))
        return isinstance(a, np.ndarray) and isinstance(b, np.ndarray) and np.may_share_memory(a, b)
    if a.device != b.device or not a.numel() or not b.numel():
        return False

    def extent(t: torch.Tensor) -> tuple[int, int]:
        lo = hi = t.data_ptr()
        for size, stride in zip(t.shape, t.stride()):
            span = (size - 1) * stride * t.element_size()
            lo, hi = (lo + span, hi) if span < 0 else (lo, hi + span)
        return lo, hi + t.element_size() - 1

    (alo, ahi), (blo, bhi) = extent(a), extent(b)
    return alo <= bhi and blo <= ahi
