"""GAE compiled by Numba: the CPU fallback when the native extension is missing. Imported lazily
(importing numba takes a while), and compiled once per dtype combination (cached on disk)."""

from __future__ import annotations

import numba
import numpy as np
import torch


@numba.njit(cache=True, nogil=True)
def _gae_kernel(rewards, values, next_values, terminated, truncated, gamma, gamma_lam, zero, advantages, returns):
    # Row by row backwards in time, envs innermost: time-major rows are contiguous. The arithmetic of
    # gae_advantage in csrc/ops/gae/gae_math.h, in its order: the flags pick a coefficient that then multiplies
    # (never a select between values), so a NaN or inf in next_values at a terminated step, or in the
    # advantage after a cut, propagates exactly as in the C++ and torch backends. `zero` has the
    # arrays' dtype, so float32 stays float32 throughout.
    T, N = rewards.shape
    for t in range(T - 1, -1, -1):
        for n in range(N):
            v = values[t, n]
            te = terminated[t, n] != 0
            tr = truncated[t, n] != 0
            bootstrap = zero if te else gamma
            carry = zero if (te or tr) else gamma_lam
            next_advantage = advantages[t + 1, n] if t + 1 < T else zero  # A_T = 0
            delta = rewards[t, n] + bootstrap * next_values[t, n] - v
            a = delta + carry * next_advantage
            advantages[t, n] = a
            returns[t, n] = a + v


def gae_numba(rewards, values, next_values, terminated, truncated, advantages, returns, gamma, lam):
    """Checked CPU tensors in; results written into advantages and returns (numpy arrays or CPU tensors)."""
    scalar = np.float32 if rewards.dtype == torch.float32 else np.float64
    arrays = [x.detach().numpy() if isinstance(x, torch.Tensor) else x
              for x in (rewards, values, next_values, terminated, truncated, advantages, returns)]
    _gae_kernel(*arrays[:5], scalar(gamma), scalar(gamma * lam), scalar(0), *arrays[5:])
