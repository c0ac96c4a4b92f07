"""Generalized Advantage Estimation (Schulman et al. 2016), time-major, with separate termination
and truncation. The loop-shaped reference below is the spec; every backend is tested against it.

    delta_t = r_t + gamma * (1 - terminated_t) * V(s_{t+1}) - V(s_t)
    A_t     = delta_t + gamma * lam * (1 - terminated_t) * (1 - truncated_t) * A_{t+1},   A_T = 0
    returns = A + V

``next_values[t]`` is V(s_{t+1}), the value of the observation that followed step t: the next row's
value normally, the value of the true final (pre-reset) observation on a truncated step, and the
value after the rollout's last step on row T-1.
"""

from __future__ import annotations

import numpy as np
import torch

from fastppo import _backend
from fastppo._backend import _core
from fastppo._arrays import host_array
from fastppo.ops import _checks

__all__ = ["gae", "gae_reference"]


def gae(rewards, values, next_values, terminated, truncated, *, gamma: float, lam: float,
        backend: str = "auto", out=None):
    """Advantages and returns by GAE(gamma, lam) over a time-major ``(T, N)`` rollout.

    Args:
        rewards, values, next_values: float32 or float64 arrays of shape ``(T, N)`` (numpy arrays or
            torch tensors, all of one dtype and device). Any strides are accepted.
        terminated: ``(T, N)`` bool (or the same float dtype, where any non-zero value, NaN included, is
            set): the episode ended at step t; its
            ``next_values`` entry is not used (no bootstrap).
        truncated: ``(T, N)`` bool (or the same dtype as ``terminated``): the episode was cut at step t
            (a time limit); the trace stops but ``next_values[t]`` is bootstrapped from.
        gamma: discount factor in [0, 1].
        lam: GAE lambda in [0, 1] (1: Monte-Carlo returns minus V; 0: one-step TD error).
        backend: "auto" (the fastest for the arrays' device; ``FASTPPO_BACKEND`` overrides), "torch",
            "numba", "cpp" or "cuda". A forced backend that cannot run raises
            :class:`fastppo.BackendUnavailableError` saying why.
        out: optional ``(advantages, returns)`` pair to write into: same shape, dtype and device as
            ``rewards``, writeable, not overlapping any input. Nothing is allocated when given.

    Returns:
        ``(advantages, returns)``, the same kind of array as ``rewards`` (``out`` itself if given).

    Raises:
        TypeError: an argument is not an array, or has the wrong dtype.
        ValueError: shapes or devices disagree, an output overlaps an input, gamma/lam out of range.
    """
    is_tensor = isinstance(rewards, torch.Tensor)
    if not is_tensor and not isinstance(rewards, np.ndarray):
        raise TypeError(f"rewards must be a numpy array or a torch tensor, got {type(rewards).__name__}")
    on_cuda = is_tensor and rewards.is_cuda
    name = _backend.resolve(backend, on_cuda)
    if out is None:
        empty = torch.empty_like if is_tensor else np.empty_like
        out = (empty(rewards), empty(rewards))
    elif type(out) not in (tuple, list) or len(out) != 2:
        raise TypeError(f"out must be a pair (advantages, returns), got {type(out).__name__}")

    if name == "cpp":
        if is_tensor:
            host = host_array
            _core.gae(host(rewards, "rewards"), host(values, "values"), host(next_values, "next_values"),
                      host(terminated, "terminated"), host(truncated, "truncated"),
                      host(out[0], "out[0] (advantages)"), host(out[1], "out[1] (returns)"), gamma, lam)
        else:  # numpy straight through: at (128, 8) the Python around the kernel is most of the call
            _core.gae(rewards, values, next_values, terminated, truncated, out[0], out[1], gamma, lam)
    elif name == "cuda":
        _checks.check_devices(dict(zip(("values", "next_values", "terminated", "truncated", "out[0] (advantages)",
                                        "out[1] (returns)"), (values, next_values, terminated, truncated, *out))),
                              rewards, "rewards")
        with _backend.on_device(rewards.device):
            _core.gae(*map(_checks.detached, (rewards, values, next_values, terminated, truncated)), *out, gamma,
                      lam, torch.cuda.current_stream().cuda_stream)
    else:
        inputs = _checked_inputs(rewards, values, next_values, terminated, truncated, out, gamma, lam)
        if name == "numba":
            from fastppo.ops.gae_numba import gae_numba

            gae_numba(*inputs, *out, gamma, lam)
        else:
            for dst, value in zip(out, gae_reference(*inputs, gamma=gamma, lam=lam)):
                _checks.write(dst, value)
    return out[0], out[1]


def gae_reference(rewards, values, next_values, terminated, truncated, *, gamma: float, lam: float):
    """The spec: GAE as the equations read, one time step at a time. Torch tensors in and out."""
    advantages = torch.zeros_like(rewards)
    next_advantage = torch.zeros_like(rewards[0:1].sum(0))  # A_T = 0 (a row of zeros, also when T = 0)
    for t in reversed(range(rewards.shape[0])):
        # a flag is set when non-zero (bool, uint8 or float, NaN included), as the kernels read it (as_flag)
        not_terminated = 1.0 - (terminated[t] != 0).to(rewards.dtype)
        not_truncated = 1.0 - (truncated[t] != 0).to(rewards.dtype)
        delta = rewards[t] + gamma * not_terminated * next_values[t] - values[t]
        next_advantage = delta + gamma * lam * not_terminated * not_truncated * next_advantage
        advantages[t] = next_advantage
    return advantages, advantages + values


def _checked_inputs(rewards, values, next_values, terminated, truncated, out, gamma, lam):
    """Validate for the Python backends exactly as csrc/ops/gae/gae.cpp does; return torch views of the inputs."""
    _checks.check_unit_interval(gamma, "gamma")
    _checks.check_unit_interval(lam, "lam")
    r = _checks.as_tensor(rewards, "rewards")
    _checks.check_ndim(r, 2, "time-major (T, N)", "rewards")
    _checks.check_float(r, "rewards")
    v = _checks.as_tensor(values, "values")
    nv = _checks.as_tensor(next_values, "next_values")
    te = _checks.as_tensor(terminated, "terminated")
    tr = _checks.as_tensor(truncated, "truncated")
    for x, name in ((v, "values"), (nv, "next_values")):
        _checks.check_like(x, name, r, "rewards")
    _checks.check_like(te, "terminated", r, "rewards", dtype=False)
    _checks.check_flag_dtype(te, "terminated")
    if te.is_floating_point():
        _checks.check_like(te, "terminated", r, "rewards")
    _checks.check_like(tr, "truncated", te, "terminated")
    inputs = {"rewards": rewards, "values": values, "next_values": next_values, "terminated": terminated,
              "truncated": truncated}
    _checks.check_output(out[0], "out[0] (advantages)", r, "rewards", {**inputs, "out[1] (returns)": out[1]})
    _checks.check_output(out[1], "out[1] (returns)", r, "rewards", inputs)
    return r, v, nv, te, tr
