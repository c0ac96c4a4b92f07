"""The actor-critic network and the observation layout it reads."""

from __future__ import annotations

import math

import gymnasium as gym
import numpy as np
import torch
from torch import nn

from fastppo.algos.distributions import ActionSpec

ACTIVATIONS = {"tanh": nn.Tanh, "relu": nn.ReLU, "elu": nn.ELU, "gelu": nn.GELU, "silu": nn.SiLU}


class ObsSpec:
    """Box observations are flattened to float32; Discrete ones become one-hot vectors."""

    def __init__(self, space: gym.Space):
        if isinstance(space, gym.spaces.Box):
            self.kind, self.dim = "box", int(np.prod(space.shape))
        elif isinstance(space, gym.spaces.Discrete):
            self.kind, self.dim, self.n, self.start = "discrete", int(space.n), int(space.n), int(space.start)
        else:
            raise TypeError(f"observation_space must be Box or Discrete, got {type(space).__name__}")

    def flatten(self, obs: np.ndarray, out: np.ndarray) -> np.ndarray:
        """Batched env observations -> (batch, dim) float32 in `out`."""
        if self.kind == "box":
            np.copyto(out, obs.reshape(out.shape), casting="unsafe")
        else:
            out.fill(0.0)
            out[np.arange(out.shape[0]), np.asarray(obs, dtype=np.int64) - self.start] = 1.0
        return out


def _mlp(sizes: list[int], activation: type[nn.Module]) -> list[nn.Module]:
    layers: list[nn.Module] = []
    for fan_in, fan_out in zip(sizes[:-1], sizes[1:]):
        layers += [nn.Linear(fan_in, fan_out), activation()]
    return layers


class ActorCritic(nn.Module):
    """Separate actor and critic MLPs, the default of SB3's and CleanRL's PPO.

    ``forward(obs) -> (dist_params, value)``: ``dist_params`` are the logits (Discrete, MultiDiscrete) or
    ``[mean, log_std]`` (Box; log-std is a state-independent parameter), ``value`` has shape ``(batch,)``.
    A user-supplied module may replace this class if it has the same ``forward`` contract (and, for
    TRPO, ``actor_parameters()`` and ``critic_parameters()``).
    """

    def __init__(self, observation_space: gym.Space, action_space: gym.Space, net_arch=(64, 64),
                 activation: str = "tanh", ortho_init: bool = True, log_std_init: float = 0.0,
                 use_sde: bool = False):
        super().__init__()
        if activation not in ACTIVATIONS:
            raise ValueError(f"policy_kwargs['activation'] must be one of {sorted(ACTIVATIONS)}, got {activation!r}")
        net_arch = [int(n) for n in net_arch]
        if not net_arch or min(net_arch) < 1:
            raise ValueError(f"policy_kwargs['net_arch'] must be a non-empty list of positive sizes, got {net_arch}")
        obs_dim = ObsSpec(observation_space).dim
        self.action_spec = ActionSpec(action_space)
        self.activation = activation
        act = ACTIVATIONS[activation]
        self.actor = nn.Sequential(*_mlp([obs_dim, *net_arch], act), nn.Linear(net_arch[-1], self.action_spec.n_outputs))
        self.critic = nn.Sequential(*_mlp([obs_dim, *net_arch], act), nn.Linear(net_arch[-1], 1))
        self.log_std, self.use_sde = None, bool(use_sde)
        if self.use_sde and self.action_spec.kind != "gaussian":
            raise ValueError(f"use_sde needs a Box action space, got {type(action_space).__name__}")
        if self.action_spec.kind == "gaussian":
            # gSDE: one log-std per (feature, action) pair, as SB3's full_std
            shape = (net_arch[-1], self.action_spec.n_outputs) if self.use_sde else (self.action_spec.n_outputs,)
            self.log_std = nn.Parameter(torch.full(shape, float(log_std_init)))
        if ortho_init:  # gains as in the PPO implementation details (Huang et al. 2022) and SB3
            for net, head_gain in ((self.actor, 0.01), (self.critic, 1.0)):
                linears = [m for m in net if isinstance(m, nn.Linear)]
                for m in linears:
                    nn.init.orthogonal_(m.weight, head_gain if m is linears[-1] else math.sqrt(2))
                    nn.init.zeros_(m.bias)

    def forward(self, obs: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        if self.use_sde:
            latent = self.actor[:-1](obs)
            out = torch.cat([self.actor[-1](latent), self._sde_log_std(latent)], -1)
        else:
            out = self.actor(obs)
            if self.log_std is not None:
                out = torch.cat([out, self.log_std.expand_as(out)], -1)
        return out, self.critic(obs).squeeze(-1)

    # -- generalised state-dependent exploration (gSDE, Raffin et al. 2021; SB3's use_sde) ----------
    # The action is mean(s) + latent(s) @ E with E ~ N(0, std^2) per (feature, action) entry, drawn
    # per env and held for sde_sample_freq steps: noise that is smooth along a trajectory. Each action
    # is then Normal(mean, sqrt(latent^2 @ std^2 + 1e-6)), which is what forward() returns as the
    # log-std, so log-probs, entropy, KL and every update use the ordinary diagonal Gaussian. As SB3's
    # default (learn_features=False), the latent is not differentiated through the noise scale.
    def _sde_log_std(self, latent: torch.Tensor) -> torch.Tensor:
        variance = latent.detach().square() @ torch.exp(2 * self.log_std)
        return 0.5 * torch.log(variance + 1e-6)

    def sample_exploration(self, num_envs: int, generator: torch.Generator | None = None) -> torch.Tensor:
        """gSDE: fresh exploration matrices, ``(num_envs, latent_dim, action_dim)``."""
        std = torch.exp(self.log_std.detach())
        return torch.randn((num_envs, *std.shape), generator=generator, dtype=std.dtype, device=std.device) * std

    def sde_noise(self, obs: torch.Tensor, exploration: torch.Tensor) -> torch.Tensor:
        """gSDE: the noise latent(obs) @ E for each env's matrix E, ``(num_envs, action_dim)``."""
        return torch.bmm(self.actor[:-1](obs).unsqueeze(1), exploration).squeeze(1)

    def value(self, obs: torch.Tensor) -> torch.Tensor:
        return self.critic(obs).squeeze(-1)

    def actor_parameters(self) -> list[nn.Parameter]:
        """The policy's parameters (what TRPO's trust region constrains)."""
        return [*self.actor.parameters(), *([self.log_std] if self.log_std is not None else [])]

    def critic_parameters(self) -> list[nn.Parameter]:
        return list(self.critic.parameters())

    def native_ok(self) -> bool:
        """Whether the native kernels (fastppo._core.PolicyAct, PpoUpdate) can run this module: the
        extension is built, the activation is one they have, the parameters are float32 on the CPU, and
        no gSDE (which they do not implement)."""
        from fastppo._backend import _core

        weight = self.actor[0].weight
        return (_core is not None and self.activation in ("tanh", "relu") and weight.device.type == "cpu"
                and weight.dtype == torch.float32 and not self.use_sde)

    def native_arrays(self, grads: bool = False) -> dict:
        """numpy views of the parameters' memory (or of their gradients', None where there is none yet),
        as the native kernels take them: ``actor`` and ``critic`` as [weight0, bias0, ...] lists,
        ``log_std`` (None if discrete)."""
        def arrays(tensors):
            return [None if t is None else t.detach().numpy() for t in (p.grad if grads else p for p in tensors)]

        linears = {name: [t for m in net if isinstance(m, nn.Linear) for t in (m.weight, m.bias)]
                   for name, net in (("actor", self.actor), ("critic", self.critic))}
        return {"actor": arrays(linears["actor"]), "critic": arrays(linears["critic"]),
                "log_std": arrays([self.log_std])[0] if self.log_std is not None else None}

    def native_act(self):
        """fastppo._core.PolicyAct over this module's parameter memory: the same forward and sampling as
        ``forward`` + ``ActionSpec.distribution`` in one native call per step, for CPU rollouts. It acts
        with a snapshot of the parameters taken now; its ``refresh()`` takes a new one from the same
        memory (so the parameters must be updated in place, not re-seated). None where it does not apply
        (see ``native_ok``)."""
        if not self.native_ok():
            return None
        from fastppo._backend import _core

        spec, arrays = self.action_spec, self.native_arrays()
        return _core.PolicyAct(arrays["actor"], arrays["critic"], self.activation, spec.kind, list(spec.nvec),
                               arrays["log_std"])
