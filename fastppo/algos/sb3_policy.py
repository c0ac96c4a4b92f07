"""Stable-Baselines3 policy classes as fastppo policies: ``PPO(MyPolicy, env)`` with ``MyPolicy`` a subclass
of SB3's ``ActorCriticPolicy`` (a custom ``mlp_extractor``, features extractor, ...), built as SB3 builds it
and adapted to fastppo's policy contract (``forward(obs) -> (dist_params, value)``). Duck-typed: fastppo
never imports SB3. These run on the torch path.
"""

from __future__ import annotations

import gymnasium as gym
import torch
from torch import nn

from fastppo.algos.distributions import ActionSpec
from fastppo.algos.observations import ObsSpec
from fastppo.algos.policies import PolicyMethods

SB3_POLICY_METHODS = ("get_distribution", "predict_values", "evaluate_actions")


class SB3Policy(PolicyMethods, nn.Module):
    """An SB3 actor-critic policy (``module``) with fastppo's policy contract and :class:`PolicyMethods`.

    ``forward`` takes fastppo's flattened observation, gives the SB3 policy the observation as SB3 would
    (Box: ``(batch, *shape)``; Discrete: the 0-based index), and reads its ``get_distribution`` (logits
    for Discrete and MultiDiscrete, ``[mean, log(std)]`` for Box) and ``predict_values``. One difference
    from SB3: fastppo's Gaussian clamps the log-std to [-20, 2]. For TRPO the actor's parameters are those
    whose name lacks "value" and the critic regression steps all of them, as sb3-contrib's TRPO does.
    """

    def __init__(self, module: nn.Module, observation_space: gym.Space, action_space: gym.Space):
        super().__init__()
        self.module = module
        self.observation_space, self.action_space = observation_space, action_space
        self.obs_spec, self.action_spec = ObsSpec(observation_space), ActionSpec(action_space)

    @classmethod
    def build(cls, policy_class: type, observation_space: gym.Space, action_space: gym.Space, lr_schedule,
              use_sde: bool = False, **policy_kwargs) -> SB3Policy:
        """``policy_class(observation_space, action_space, lr_schedule, use_sde=False, **policy_kwargs)``, as
        SB3's algorithms construct it, adapted."""
        missing = [m for m in SB3_POLICY_METHODS if not callable(getattr(policy_class, m, None))]
        problem = ("is not an nn.Module" if not issubclass(policy_class, nn.Module)
                   else f"lacks {', '.join(missing)}" if missing else None)
        if problem:
            raise TypeError(f"policy must be 'MlpPolicy', an nn.Module or an SB3 policy class (an nn.Module class "
                            f"with {', '.join(SB3_POLICY_METHODS)}, as SB3's ActorCriticPolicy); the class "
                            f"{policy_class.__name__} {problem}")
        if use_sde:
            raise ValueError("use_sde with an SB3 policy class is not supported (fastppo's gSDE is its own "
                             "'MlpPolicy''s): use 'MlpPolicy'")
        module = policy_class(observation_space, action_space, lr_schedule, use_sde=False, **policy_kwargs)
        return cls(module, observation_space, action_space)

    def optimizer_options(self) -> dict:
        """The SB3 policy's ``optimizer_class`` / ``optimizer_kwargs`` (SB3's defaults applied, subclasses'
        choices included): fastppo's optimiser is built from them (its ``module.optimizer`` is not used)."""
        return {name: getattr(self.module, name) for name in ("optimizer_class", "optimizer_kwargs")
                if hasattr(self.module, name)}

    def _sb3_obs(self, obs: torch.Tensor) -> torch.Tensor:
        """fastppo's stored observation -> SB3's (what its preprocessing takes)."""
        if self.obs_spec.kind == "dict":  # SB3 one-hots Discrete keys itself
            return {key: part.argmax(-1) if self.obs_spec.keys[key][0].kind == "discrete" else part
                    for key, part in self.obs_spec.unpack(obs).items()}
        if self.obs_spec.kind != "discrete":
            return obs.reshape(obs.shape[0], *self.observation_space.shape)
        return obs.argmax(-1)

    def _dist_params(self, distribution) -> torch.Tensor:
        """An SB3 distribution -> fastppo's flat parameters (see ``ActionSpec.distribution``)."""
        inner = getattr(distribution, "distribution", None)
        if self.action_spec.kind == "categorical":
            parts = inner if isinstance(inner, (list, tuple)) else [inner]  # MultiCategorical: one per dim
            if all(isinstance(d, torch.distributions.Categorical) for d in parts):
                return torch.cat([d.logits for d in parts], -1)
        elif isinstance(inner, torch.distributions.Normal):
            return torch.cat([inner.loc, inner.scale.log()], -1)
        raise TypeError(f"the SB3 policy's get_distribution() gave {type(distribution).__name__}; fastppo takes "
                        f"SB3's Categorical, MultiCategorical and DiagGaussian distributions")

    def forward(self, obs: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        sb3_obs = self._sb3_obs(obs)
        params = self._dist_params(self.module.get_distribution(sb3_obs))
        return params, self.module.predict_values(sb3_obs).reshape(-1)

    def value(self, obs: torch.Tensor) -> torch.Tensor:
        """V(obs), shape ``(batch,)``, without the actor."""
        return self.module.predict_values(self._sb3_obs(obs)).reshape(-1)

    def actor_parameters(self) -> list[nn.Parameter]:
        return [p for name, p in self.module.named_parameters() if "value" not in name]

    def critic_parameters(self) -> list[nn.Parameter]:
        return list(self.module.parameters())
