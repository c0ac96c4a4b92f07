"""Argument checks for the Python backends (torch, numba), worded like the native ones in
csrc/array_arg.cpp so that every backend rejects bad input with the same message."""

from __future__ import annotations

import math
import warnings

import numpy as np
import torch

FLOATS = (torch.float32, torch.float64)


def as_tensor(x, name: str) -> torch.Tensor:
    """A zero-copy torch view of a numpy array or tensor; anything else is a TypeError."""
    if isinstance(x, torch.Tensor):
        return x
    if isinstance(x, np.ndarray):
        if x.dtype.kind not in "fbu" or (x.dtype.kind == "u" and x.itemsize != 1) or not x.dtype.isnative:
            raise TypeError(f"{name} must have dtype float32, float64 or bool, got {x.dtype}")
        if not x.flags.writeable:  # inputs may be read-only (np.broadcast_to); torch warns, we only read
            with warnings.catch_warnings():
                warnings.simplefilter("ignore", UserWarning)
                return torch.from_numpy(x)
        return torch.from_numpy(x)
    raise TypeError(f"{name} must be a numpy array or a torch tensor, got {type(x).__name__}")


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


def check_like(t: torch.Tensor, name: str, like: torch.Tensor, like_name: str, *, dtype: bool = True) -> None:
    """Same device, shape and (unless dtype=False) dtype as `like`."""
    if t.device != like.device:
        raise ValueError(f"{name} must be on the device of {like_name} ({like.device}), got {t.device}")
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


def check_output(out: torch.Tensor, name: str, inputs: dict[str, torch.Tensor]) -> None:
    for other_name, other in inputs.items():
        if out.numel() and other.numel() and _overlap(out, other):
            raise ValueError(f"{name} must not overlap {other_name} in memory")


def _overlap(a: torch.Tensor, b: torch.Tensor) -> bool:
    def extent(t: torch.Tensor) -> tuple[int, int]:
        lo = hi = t.data_ptr()
        for size, stride in zip(t.shape, t.stride()):
            span = (size - 1) * stride * t.element_size()
            lo, hi = (lo + span, hi) if span < 0 else (lo, hi + span)
        return lo, hi + t.element_size() - 1

    (alo, ahi), (blo, bhi) = extent(a), extent(b)
    return a.device == b.device and alo <= bhi and blo <= ahi
