"""The harness of the native-boundary property tests (tests/test_boundary_*.py): odd variants of an
array argument, the property helper (``outcome``: success, or an accepted error naming the argument),
bit-exact comparisons, and a small MLP policy. The property each test checks, per call:

    it succeeds and its result equals the reference (or the same call on clean copies of the
    arguments), and it left its inputs alone -- or it raises TypeError / ValueError / RuntimeError
    whose message names the offending argument.

Never a crash, another exception type, or a silently wrong result. Each example changes one argument
(the others are clean), so the message must name that one. Budgets are fixed and derandomised
(``_settings``)."""

from __future__ import annotations

import warnings

import gymnasium as gym
import numpy as np
import torch
from hypothesis import HealthCheck, event, settings
from hypothesis import strategies as st


ACCEPTED_ERRORS = (TypeError, ValueError, RuntimeError)


def _settings(n: int):
    # derandomize: the same examples on every run (CI time and results bounded); deadline=None: the first
    # call of a kernel pays for thread start-up. too_slow / data_too_large: the strategies build arrays
    # on purpose; they are small, but hypothesis's per-example timing on two busy cores is noisy.
    return settings(max_examples=n, deadline=None, derandomize=True, database=None,
                    suppress_health_check=[HealthCheck.too_slow, HealthCheck.data_too_large])


def outcome(fn, *names):
    """(True, result) if fn() succeeds; (False, error) if it raises an accepted error whose message names
    one of `names`. Any other exception propagates (and fails the test)."""
    try:
        with warnings.catch_warnings():
            # The inputs are odd on purpose (NaN, inf, complex, overflowing casts): a numpy/torch warning
            # raised on the way (the project turns warnings into errors) is not what is under test; the
            # result or the error is.
            warnings.simplefilter("ignore")
            result = fn()
        event("accepted")  # --hypothesis-show-statistics: how often each path ran
        return True, result
    except ACCEPTED_ERRORS as e:
        event(f"refused ({type(e).__name__})")
        msg = str(e)
        assert any(n in msg for n in names), f"{type(e).__name__} does not name {names}: {msg}"
        return False, e


def clean(x):
    """The values an argument carries, as a fresh contiguous numpy array (None for non-arrays)."""
    if isinstance(x, torch.Tensor):
        if x.device.type != "cpu" or x.dtype == torch.bfloat16:
            return None
        return x.detach().resolve_neg().resolve_conj().numpy().copy()
    if isinstance(x, np.ndarray):
        return np.array(x, dtype=x.dtype.newbyteorder("=")) if x.dtype.kind in "biufc" else None
    return None


def same(a, b):
    """Bit-exact equality of two results (NaN equals NaN)."""
    a, b = clean(a) if not isinstance(a, np.ndarray) else a, clean(b) if not isinstance(b, np.ndarray) else b
    assert a.dtype == b.dtype and a.shape == b.shape, (a.dtype, a.shape, b.dtype, b.shape)
    np.testing.assert_array_equal(a, b)


def unchanged(before: dict, args: dict):
    """The inputs still hold the values they came with (a binding must not write its inputs)."""
    for name, value in before.items():
        if value is not None:
            np.testing.assert_array_equal(clean(args[name]), value, err_msg=f"{name} was written")


# --- array variants -------------------------------------------------------------------------------------
# A variant turns a clean, contiguous numpy array into what the caller passes. "Same values" variants
# (layouts, containers) must give exactly the clean result where accepted; the others (dtypes, shapes)
# change what is passed, and the reference is computed from what was passed.

def _strided(a):  # non-contiguous along the last axis, same values
    if a.ndim == 0:
        return a
    b = np.repeat(a, 2, axis=-1)
    return b[..., ::2]


def _reversed(a):  # negative strides on every axis, same values
    return np.flip(np.flip(a).copy())


def _readonly(a):
    b = a.copy()
    b.flags.writeable = False
    return b


def _broadcast(a):  # zero stride along the first axis (values of row 0 repeated)
    return np.broadcast_to(a[:1], a.shape) if a.ndim and a.shape[0] else a


def _tensor_neg(a):  # a torch view with the negative bit set holding a's values (torch's lazy negation)
    if a.dtype.kind not in "fic":
        return torch.from_numpy(a.copy())
    return torch.from_numpy(-a.copy())._neg_view()


VARIANTS = {
    "clean": lambda a: a,
    "strided": _strided,
    "reversed": _reversed,
    "fortran": np.asfortranarray,
    "readonly": _readonly,
    "broadcast": _broadcast,
    "big_endian": lambda a: a.astype(a.dtype.newbyteorder(">")),
    "float16": lambda a: a.astype(np.float16),
    "float32": lambda a: a.astype(np.float32),
    "float64": lambda a: a.astype(np.float64),
    "int8": lambda a: a.astype(np.int8),
    "int32": lambda a: a.astype(np.int32),
    "int64": lambda a: a.astype(np.int64),
    "uint8": lambda a: a.astype(np.uint8),
    "uint64": lambda a: a.astype(np.uint64),
    "bool": lambda a: a.astype(bool),
    "complex64": lambda a: a.astype(np.complex64),
    "object": lambda a: a.astype(object),
    "add_dim": lambda a: a[None],
    "drop_dim": lambda a: a.reshape(-1) if a.ndim > 1 else (a.reshape(-1)[:1].reshape(()) if a.size else np.zeros((), a.dtype)),
    "transpose": lambda a: np.ascontiguousarray(a.T) if a.ndim > 1 else a[:-1],
    "empty": lambda a: a[:0],
    "grow": lambda a: np.concatenate([a, a[:1]]) if a.ndim and a.shape[0] else np.zeros((1, *a.shape[1:]), a.dtype),
    "list": lambda a: a.tolist(),
    "tuple": lambda a: tuple(a.tolist()) if a.ndim else a.item(),
    "none": lambda a: None,
    "scalar": lambda a: 1.0,
    "string": lambda a: "array",
    "tensor": lambda a: torch.from_numpy(a.copy()),
    "tensor_grad": lambda a: (torch.from_numpy(a.copy()).requires_grad_() if a.dtype.kind in "fc"
                              else torch.from_numpy(a.copy())),
    "tensor_strided": lambda a: torch.from_numpy(_strided(a).copy() if a.ndim == 0 else np.repeat(a, 2, -1))[..., ::2],
    "tensor_t": lambda a: torch.from_numpy(np.ascontiguousarray(a.T)).T if a.ndim > 1 else torch.from_numpy(a.copy()),
    "tensor_neg": _tensor_neg,
    "tensor_bf16": lambda a: torch.from_numpy(a.astype(np.float32)).to(torch.bfloat16),
    "tensor_meta": lambda a: torch.empty(a.shape, dtype=torch.float32, device="meta"),
}
VARIANT_NAMES = sorted(VARIANTS)


def vary(variant: str, a):
    """VARIANTS[variant](a), with numpy's cast warnings off: casting NaN to an integer dtype is part of
    building an odd input, not what is under test."""
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        return VARIANTS[variant](a)
SEEDS = st.integers(0, 2**31 - 1)


def _policy(kind, obs_dim=3):
    from fastppo.algos.policies import ActorCritic

    torch.manual_seed(0)
    space = {"discrete": gym.spaces.Discrete(3), "multidiscrete": gym.spaces.MultiDiscrete([2, 3]),
             "box": gym.spaces.Box(-1, 1, (2,), np.float32)}[kind]
    return ActorCritic(gym.spaces.Box(-5, 5, (obs_dim,), np.float32), space, net_arch=(8,))
