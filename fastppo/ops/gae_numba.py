"""GAE compiled by Numba: the CPU fallback when the native extension is missing. Imported lazily
(importing numba takes a while), and compiled once per dtype combination (cached on disk)."""

from __future__ import annotations

import numba
import numpy as np
import torch


@numba.njit(cache=True, nogil=True)
def _gae_kernel(rewards, values, next_values, terminated, truncated, gamma, gamma_lam, advantages, returns):
    # Row by row backwards in time, envs innermost: time-major rows are contiguous.
    T, N = rewards.shape
    zero = gamma * 0
    for t in range(T - 1, -1, -1):
        for n in range(N):
            v = values[t, n]
            te = terminated[t, n] != 0
            delta = rewards[t, n] + gamma * (zero if te else next_values[t, n]) - v
            a = delta
            if t + 1 < T and not (te or truncated[t, n] != 0):
                a = delta + gamma_lam * advantages[t + 1, n]
            advantages[t, n] = a
            returns[t, n] = a + v


def gae_numba(rewards, values, next_values, terminated, truncated, advantages, returns, gamma, lam):
    """Checked CPU tensors in; results written into advantages and returns (numpy arrays or CPU tensors)."""
    scalar = np.float32 if rewards.dtype == torch.float32 else np.float64
    arrays = [x.detach().numpy() if isinstance(x, torch.Tensor) else x
              for x in (rewards, values, next_values, terminated, truncated, advantages, returns)]
    _gae_kernel(*arrays[:5], scalar(gamma), scalar(gamma * lam), *arrays[5:])
