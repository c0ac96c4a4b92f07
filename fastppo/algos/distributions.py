"""Action distributions as plain tensor math on the policy head's output.

torch.distributions validates and broadcasts on every call, which costs more than the tiny networks
PPO usually trains; these compute exactly what the algorithms need (sample, mode, log-prob, entropy,
KL) and nothing else. Each is built from one flat ``params`` tensor ``(..., n_params)``, which is also
what the rollout stores for the KL terms (old policy vs new).
"""

from __future__ import annotations

import math

import gymnasium as gym
import numpy as np
import torch

# Bounds on the Gaussian log-std: exp(-20) keeps the density finite in float32, exp(2) caps the noise.
LOG_STD_MIN, LOG_STD_MAX = -20.0, 2.0
_HALF_LOG_2PI = 0.5 * math.log(2 * math.pi)


class Categorical:
    """One or more independent categoricals (Discrete, MultiDiscrete) over split logits."""

    def __init__(self, params: torch.Tensor, nvec: tuple[int, ...]):
        self.nvec = nvec
        self.log_probs = [x.log_softmax(-1) for x in (params.split(nvec, -1) if len(nvec) > 1 else (params,))]

    def sample(self, generator: torch.Generator | None = None) -> torch.Tensor:
        # Gumbel-max: one uniform draw per logit, no host sync, same stream of numbers on every path.
        draws = []
        for lp in self.log_probs:
            u = torch.rand(lp.shape, generator=generator, dtype=lp.dtype, device=lp.device)
            draws.append((lp - torch.log(-torch.log(u.clamp_min(1e-20)))).argmax(-1))
        return draws[0] if len(draws) == 1 else torch.stack(draws, -1)

    def mode(self) -> torch.Tensor:
        modes = [lp.argmax(-1) for lp in self.log_probs]
        return modes[0] if len(modes) == 1 else torch.stack(modes, -1)

    def _per_dim(self, actions: torch.Tensor):
        if len(self.log_probs) == 1:
            return [(self.log_probs[0], actions)]
        return list(zip(self.log_probs, actions.unbind(-1)))

    def log_prob(self, actions: torch.Tensor) -> torch.Tensor:
        total = 0
        for lp, a in self._per_dim(actions.long()):
            total = total + lp.gather(-1, a.unsqueeze(-1)).squeeze(-1)
        return total

    def entropy(self) -> torch.Tensor:
        return sum(-(lp.exp() * lp).sum(-1) for lp in self.log_probs)

    def kl(self, other: Categorical) -> torch.Tensor:
        """KL(self || other) per sample."""
        return sum((p.exp() * (p - q)).sum(-1) for p, q in zip(self.log_probs, other.log_probs))


class DiagGaussian:
    """Independent Gaussians; params = [mean, log_std] along the last axis."""

    def __init__(self, params: torch.Tensor):
        self.mean, log_std = params.chunk(2, -1)
        self.log_std = log_std.clamp(LOG_STD_MIN, LOG_STD_MAX)
        self.std = self.log_std.exp()

    def sample(self, generator: torch.Generator | None = None) -> torch.Tensor:
        noise = torch.randn(self.mean.shape, generator=generator, dtype=self.mean.dtype, device=self.mean.device)
        return self.mean + self.std * noise

    def mode(self) -> torch.Tensor:
        return self.mean

    def log_prob(self, actions: torch.Tensor) -> torch.Tensor:
        z = (actions - self.mean) / self.std
        return (-0.5 * z * z - self.log_std - _HALF_LOG_2PI).sum(-1)

    def entropy(self) -> torch.Tensor:
        return (0.5 + _HALF_LOG_2PI + self.log_std).sum(-1).expand(self.mean.shape[:-1])

    def kl(self, other: DiagGaussian) -> torch.Tensor:
        """KL(self || other) per sample."""
        var_ratio = (self.std / other.std) ** 2
        mean_term = ((self.mean - other.mean) / other.std) ** 2
        return 0.5 * (var_ratio + mean_term - 1 - var_ratio.log()).sum(-1)


class ActionSpec:
    """What a policy needs to know about an action space: head size, distribution, storage layout."""

    def __init__(self, space: gym.Space):
        if isinstance(space, gym.spaces.Discrete):
            self.kind, self.nvec = "categorical", (int(space.n),)
            self.n_outputs, self.shape, self.dtype = int(space.n), (), torch.long
            self.offset = int(space.start)
        elif isinstance(space, gym.spaces.MultiDiscrete):
            if space.nvec.ndim != 1:
                raise ValueError(f"action_space: only 1-D MultiDiscrete is supported, got nvec of shape {space.nvec.shape}")
            self.kind, self.nvec = "categorical", tuple(int(n) for n in space.nvec)
            self.n_outputs, self.shape, self.dtype = sum(self.nvec), (len(self.nvec),), torch.long
            self.offset = np.asarray(space.start)
        elif isinstance(space, gym.spaces.Box):
            self.kind, self.nvec = "gaussian", ()
            self.n_outputs, self.shape, self.dtype = int(np.prod(space.shape)), (int(np.prod(space.shape)),), torch.float32
            self.low = space.low.reshape(-1).astype(np.float32)
            self.high = space.high.reshape(-1).astype(np.float32)
            self.space_shape = space.shape
        else:
            raise TypeError(f"action_space must be Discrete, MultiDiscrete or Box, got {type(space).__name__}")
        self.n_params = self.n_outputs * (2 if self.kind == "gaussian" else 1)
        self._device_consts: dict[torch.device, tuple] = {}  # to_env's bounds or offset per device

    def distribution(self, params: torch.Tensor):
        return Categorical(params, self.nvec) if self.kind == "categorical" else DiagGaussian(params)

    def to_env(self, actions):
        """Policy actions (batched; a numpy array, or a tensor on any device, which stays there) -> what
        the env's step takes: shifted by Discrete's start, or clipped to the Box and reshaped. The unclipped
        sample is what the rollout stores and scores."""
        if isinstance(actions, torch.Tensor):
            low, high, offset = self._on(actions.device)
            if self.kind == "gaussian":
                return torch.clamp(actions, low, high).reshape(actions.shape[:1] + self.space_shape)
            return actions if offset is None else actions + offset
        if self.kind == "gaussian":
            return np.clip(actions, self.low, self.high).reshape(actions.shape[:1] + self.space_shape)
        return actions + self.offset if np.any(self.offset) else actions

    def _on(self, device: torch.device) -> tuple:
        """The bounds (Box) or the offset (Discrete; None when 0) as tensors on ``device``, made once: a
        host-to-device copy per step would make the GPU rollout wait on the host."""
        cache = self._device_consts
        if device not in cache:
            if self.kind == "gaussian":
                cache[device] = (torch.from_numpy(self.low).to(device), torch.from_numpy(self.high).to(device), None)
            else:
                offset = torch.as_tensor(self.offset, dtype=torch.long).to(device) if np.any(self.offset) else None
                cache[device] = (None, None, offset)
        return cache[device]
