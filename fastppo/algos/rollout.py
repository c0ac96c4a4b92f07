"""COLLECT: the rollout storage and the collectors that fill it.

Two collectors implement one interface, ``collect(callback) -> bool`` (False: a callback stopped
training) and ``last_values()`` (V of the observation after the rollout, from the policy that acted), and
write the same :class:`Rollout`:

- :class:`StepCollector`, the spec: a Python loop of vector steps. The policy acts through an actor:
  :class:`TorchActor` (torch ops; any module, any device, gSDE) or :class:`NativeActor` (the built-in MLP
  in one native call per step, ``fastppo._core.PolicyAct``).
- :class:`NativeCollector`: the same loop as one native call (``fastppo._core.collect``), for a built-in
  env on the CPU or a MuJoCo env (:class:`~fastppo.envs.mujoco.MujocoVecEnv`, whose own step then runs in
  Python through :class:`EnvStepper`), with the native policy and no callback that runs per step.

The algorithm chooses once (``OnPolicyAlgorithm._collector``), from ``_backend.native_trainer``'s answer,
the env and whether a callback needs every step.
"""

from __future__ import annotations

from dataclasses import dataclass, fields
from typing import TYPE_CHECKING

import numpy as np
import torch

from fastppo.algos.distributions import ActionSpec
from fastppo.algos.observations import ObsSpec
from fastppo.algos.policies import state_values
from fastppo.envs import SB3VecEnv, to_sb3_infos
from fastppo.envs.builtin import BuiltinVecEnv

if TYPE_CHECKING:
    from fastppo.algos.base import OnPolicyAlgorithm
    from fastppo.algos.callbacks import Callback


@dataclass
class Rollout:
    """Time-major (n_steps, num_envs, ...) storage for one iteration, allocated once."""

    obs: torch.Tensor          # (T, N, *ObsSpec.shape) as the policy saw them: float32 (normalised) or uint8 images
    actions: torch.Tensor      # (T, N, *action_shape), the unclipped samples
    log_probs: torch.Tensor    # (T, N)
    values: torch.Tensor       # (T, N) V(s_t)
    dist_params: torch.Tensor  # (T, N, n_params) the behaviour policy, for KL terms
    rewards: torch.Tensor      # (T, N) (scaled when normalize_reward)
    terminated: torch.Tensor   # (T, N) bool
    truncated: torch.Tensor    # (T, N) bool
    final_values: torch.Tensor  # (T, N) V(true final observation) where truncated
    next_values: torch.Tensor  # (T, N) V(s_{t+1}) for GAE
    advantages: torch.Tensor   # (T, N)
    returns: torch.Tensor      # (T, N)

    @classmethod
    def allocate(cls, T: int, N: int, obs_spec: ObsSpec, spec: ActionSpec, device: torch.device) -> Rollout:
        f = dict(dtype=torch.float32, device=device)
        return cls(
            obs=torch.from_numpy(np.zeros((T, N, *obs_spec.shape), obs_spec.dtype)).to(device), actions=torch.zeros(T, N, *spec.shape, dtype=spec.dtype, device=device),
            log_probs=torch.zeros(T, N, **f), values=torch.zeros(T, N, **f),
            dist_params=torch.zeros(T, N, spec.n_params, **f), rewards=torch.zeros(T, N, **f),
            terminated=torch.zeros(T, N, dtype=torch.bool, device=device),
            truncated=torch.zeros(T, N, dtype=torch.bool, device=device),
            final_values=torch.zeros(T, N, **f), next_values=torch.zeros(T, N, **f),
            advantages=torch.zeros(T, N, **f), returns=torch.zeros(T, N, **f))

    def flat(self) -> dict[str, torch.Tensor]:
        """Every buffer with (T, N) merged into one batch axis (views, no copies)."""
        return {f.name: getattr(self, f.name).flatten(0, 1) for f in fields(self)}

    def host_rows(self) -> dict[str, np.ndarray] | None:
        """numpy views of every buffer on the CPU (a torch ``__setitem__`` costs ~10 us), else None."""
        if self.obs.device.type != "cpu":
            return None
        return {f.name: getattr(self, f.name).numpy() for f in fields(self)}


def host_rows(like: torch.Tensor, pinned: bool) -> np.ndarray:
    """Zeroed host rows of ``like``'s shape and dtype, as numpy; in page-locked memory when ``pinned`` (for
    a rollout on a GPU: copies from them to the device run asynchronously, without a staging copy)."""
    return torch.zeros(like.shape, dtype=like.dtype, pin_memory=pinned).numpy()


# What StepCollector writes from the env every step: for a rollout on a GPU, staged on the host and copied
# to the device once per rollout rather than once per step each.
STAGED = ("rewards", "terminated", "truncated")


class TorchActor:
    """The policy's vector step in torch ops (the spec): any module, any device, gSDE."""

    def __init__(self, algo: OnPolicyAlgorithm):
        self.algo = algo
        self._exploration = None

    def begin(self) -> None:
        """Called before each rollout."""

    def act(self, t: int, obs: torch.Tensor, rows: dict[str, np.ndarray] | None):
        """Acts on ``obs`` (the policy's input) and records row ``t``; returns the actions for the env."""
        action, params = self.sample(t, obs)
        if not bool(torch.isfinite(params).all()):
            raise_non_finite_params(t)
        return action.cpu().numpy()

    def sample(self, t: int | torch.Tensor, obs: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        """Acts on ``obs`` and records row ``t`` (an int, or a one-element index tensor: a CUDA graph's
        row), on the policy's device without waiting on it: the actions and the distribution parameters
        (whose finiteness the caller checks)."""
        algo = self.algo
        r, policy = algo.rollout, algo.policy
        params, value = policy(obs)
        n, n_params = algo.num_envs, algo.action_spec.n_params
        if tuple(params.shape) != (n, n_params) or tuple(value.shape) != (n,):
            raise ValueError(f"the policy module's forward() returned dist_params of shape {tuple(params.shape)} and "
                             f"value of shape {tuple(value.shape)}; this env needs ({n}, {n_params}) and ({n},)")
        dist = algo.action_spec.distribution(params)
        if algo.config.use_sde:  # SB3's schedule: new matrices at the rollout's start and every sde_sample_freq steps
            freq = algo.config.sde_sample_freq
            if t == 0 or (freq > 0 and t % freq == 0):
                self._exploration = policy.sample_exploration(algo.num_envs, algo._generator)
            action = dist.mean + policy.sde_noise(obs, self._exploration)
        else:
            action = dist.sample(algo._generator)
        r.obs[t] = obs
        r.actions[t] = action
        r.log_probs[t] = dist.log_prob(action)
        r.values[t] = value
        r.dist_params[t] = params
        return action, params

    def values(self, obs: torch.Tensor) -> torch.Tensor:
        return state_values(self.algo.policy, obs)


def raise_non_finite_params(t: int) -> None:
    raise ValueError(f"the policy module's forward() returned non-finite dist_params at step {t} of the rollout "
                     f"(are its weights finite?)")


class NativeActor:
    """The built-in MLP's vector step in one native call (``fastppo._core.PolicyAct``, tested against
    :class:`TorchActor`). Its random numbers come from a stream keyed by one draw from the algorithm's
    generator per rollout, so runs stay reproducible and resumable.

    The PolicyAct is built once, over the parameters' own memory (the trainers update it in place), and
    refreshed at each rollout's start: the rollout acts with the parameters as they were then."""

    def __init__(self, algo: OnPolicyAlgorithm):
        self.algo = algo
        self.native = algo.policy.native_act()
        self._memory = self._addresses()
        self.seed = 0

    def _addresses(self) -> list[int]:
        return [p.data_ptr() for p in self.algo.policy.parameters()]

    def begin(self) -> None:
        # A snapshot of the parameters for this rollout (they change only in the update). Should something
        # have re-seated a parameter (``p.data = ...``), the views would be stale: build it anew then.
        addresses = self._addresses()
        if addresses != self._memory:
            self.native, self._memory = self.algo.policy.native_act(), addresses
        else:
            self.native.refresh()
        self.seed = int(torch.randint(2**62, (), generator=self.algo._generator))

    def act(self, t: int, obs: torch.Tensor, rows: dict[str, np.ndarray]):
        rows["obs"][t] = obs.numpy()
        self.native.act(rows["obs"][t], rows["actions"][t], rows["log_probs"][t], rows["values"][t],
                        rows["dist_params"][t], self.seed, t)
        return rows["actions"][t]

    def values(self, obs: torch.Tensor) -> torch.Tensor:
        values = np.empty(obs.shape[0], np.float32)
        self.native.value(obs.numpy(), values)
        return torch.from_numpy(values)


class StepCollector:
    """The rollout as a Python loop of vector steps (the spec of :class:`NativeCollector`)."""

    def __init__(self, algo: OnPolicyAlgorithm, actor: TorchActor | NativeActor, stage: bool | None = None):
        """``stage``: collect STAGED arrays in host rows first (default: when the rollout is off the CPU)."""
        self.algo, self.actor = algo, actor
        if stage is None:
            stage = algo.device.type != "cpu"
        self._staged = ({name: host_rows(getattr(algo.rollout, name), pinned=algo.device.type == "cuda")
                         for name in STAGED} if stage else None)

    def collect(self, callback: Callback | None) -> bool:
        try:
            return self._collect(callback)
        finally:
            if self._staged is not None:  # what was collected, even when a callback stopped the loop
                for name, rows in self._staged.items():
                    getattr(self.algo.rollout, name).copy_(torch.from_numpy(rows), non_blocking=True)

    def _collect(self, callback: Callback | None) -> bool:
        algo, actor = self.algo, self.actor
        r, spec = algo.rollout, algo.action_spec
        rows = r.host_rows()

        host = self._staged or rows  # the staged rows, else the rollout's own (on the CPU)

        def put(name: str, t: int, value: np.ndarray) -> None:
            host[name][t] = value

        actor.begin()
        stop = False
        for t in range(algo.n_steps):
            env_action = actor.act(t, algo._last_obs, rows)
            next_obs, reward, terminated, truncated, info = algo.env.step(spec.to_env(env_action))
            algo.num_timesteps += vector_step_size(algo)
            terminated, truncated = np.asarray(terminated, bool), np.asarray(truncated, bool)
            reward = reward_raw = np.asarray(reward)
            check_rewards(reward, algo.num_timesteps, t)
            if "episode" in info:
                done = info["_episode"]
                algo.episode_returns.extend(info["episode"]["r"][done].tolist())
                algo.episode_lengths.extend(info["episode"]["l"][done].tolist())
            if algo.reward_scaler is not None:
                reward = algo.reward_scaler(np.asarray(reward, np.float32), terminated | truncated)
            put("rewards", t, reward)
            put("terminated", t, terminated)
            put("truncated", t, truncated)
            algo._last_obs = algo._policy_input(next_obs, update_stats=True, out=algo._obs_buffer)
            bootstrap = np.flatnonzero(truncated & ~terminated)
            if bootstrap.size:  # V(true final observation): the time limit is not the end of the task
                # normalised with the statistics that include next_obs (just updated), as SB3's VecNormalize
                final = algo._policy_input(algo.obs_spec.stack([info["final_obs"][i] for i in bootstrap]), False)
                r.final_values[t, torch.from_numpy(bootstrap).to(algo.device)] = actor.values(final).to(algo.device)
            if callback is not None and not stop:
                if callback.needs_locals:
                    callback.update_locals(self._sb3_locals(callback, t, env_action, next_obs, reward_raw, terminated,
                                                            truncated, info))
                if not callback._step():
                    if algo.reducer.local:
                        return False
                    stop = True  # data-parallel: the other ranks finish the rollout; the stop is voted at its end
        algo._last_obs = algo._last_obs.clone()  # detach from the reused numpy buffer
        return not stop

    def _sb3_locals(self, callback, t, actions, new_obs, rewards, terminated, truncated, info) -> dict:
        """What SB3's rollout loop shares with its callbacks at step ``t`` (see callbacks.SB3Callback)."""
        algo = self.algo
        return {"self": algo, "env": algo.get_env(), "callback": callback, "rollout_buffer": algo.rollout,
                "n_rollout_steps": algo.n_steps, "n_steps": t, "actions": actions,
                "clipped_actions": algo.action_spec.to_env(actions), "new_obs": new_obs, "rewards": rewards,
                "dones": terminated | truncated,
                "infos": algo.env.last_infos if isinstance(algo.env, SB3VecEnv) else to_sb3_infos(info, terminated, truncated)}

    def last_values(self) -> torch.Tensor:
        """V(the observation after the rollout), by the actor that computed every other value."""
        return self.actor.values(self.algo._last_obs).to(self.algo.device)


def vector_step_size(algo: OnPolicyAlgorithm) -> int:
    """Timesteps one vector step counts: global, as every rank steps."""
    return algo.num_envs * algo.reducer.world_size


def check_rewards(reward: np.ndarray, timestep: int, t: int) -> None:
    """The env's rewards at step ``t`` of the rollout are finite, else a ValueError naming the envs."""
    if not np.isfinite(reward).all():
        bad = np.flatnonzero(~np.isfinite(reward))
        raise ValueError(f"env returned a non-finite reward ({float(reward[bad[0]])!r}) in env(s) {bad.tolist()} at "
                         f"timestep {timestep} (step {t} of the rollout)")


def check_observations(flat: np.ndarray, timestep: int) -> None:
    """The policy's (flattened, float32) input rows are finite, else a ValueError naming the rows."""
    if not np.isfinite(flat).all():
        bad = np.flatnonzero(~np.isfinite(flat).all(axis=1)).tolist()
        raise ValueError(f"env returned a non-finite observation (NaN or inf) in env(s) {bad} at "
                         f"timestep {timestep}")


class EnvStepper:
    """A :class:`~fastppo.envs.mujoco.MujocoVecEnv` as ``_core.collect`` steps a Python env: :meth:`step`
    steps it (no copies: ``step_views``) and writes the buffers the native loop reads after the call, with
    :class:`StepCollector`'s casts and checks: observations (and the final ones of truncated episodes)
    flattened to float32 as ``_policy_input`` does, rewards as float32 (what the rollout stores, and what
    the reward scaler takes), the same ValueErrors for non-finite rewards or observations, and the
    finished episodes' statistics from ``infos["episode"]``."""

    def __init__(self, algo: OnPolicyAlgorithm):
        n, dim = algo.num_envs, algo.obs_spec.dim
        self.algo, self.t = algo, 0
        self.buffers = {"obs": np.zeros((n, dim), np.float32), "rewards": np.zeros(n, np.float32),
                        "terminated": np.zeros(n, bool), "truncated": np.zeros(n, bool),
                        "final_obs": np.zeros((n, dim), np.float32), "episode_r": np.zeros(n, np.float64),
                        "episode_l": np.zeros(n, np.int64)}

    def begin(self) -> dict:
        """The env as ``_core.collect`` takes it, for one rollout."""
        self.t = 0
        return {"step": self.step, **self.buffers}

    def step(self, actions: np.ndarray) -> None:
        """One vector step with the clipped actions (float32 (N, d), the native loop's own array)."""
        algo, b, t = self.algo, self.buffers, self.t
        self.t += 1
        timestep = algo.num_timesteps + (t + 1) * vector_step_size(algo)  # StepCollector's count by now
        obs, reward, terminated, truncated, info = algo.env.step_views(actions)
        reward = np.asarray(reward)
        check_rewards(reward, timestep, t)
        b["rewards"][:] = reward
        b["terminated"][:] = terminated
        b["truncated"][:] = truncated
        if "episode" in info:
            b["episode_r"][:] = info["episode"]["r"]
            b["episode_l"][:] = info["episode"]["l"]
        check_observations(algo.obs_spec.rows(np.asarray(obs), b["obs"]), timestep)
        bootstrap = np.flatnonzero(b["truncated"] & ~b["terminated"])
        if bootstrap.size:  # only these final rows are read (and checked, as StepCollector does)
            rows = np.empty((bootstrap.size, algo.obs_spec.dim), np.float32)
            final = algo.obs_spec.rows(info["final_obs"][bootstrap], rows)
            check_observations(final, timestep)
            b["final_obs"][bootstrap] = final


class NativeCollector:
    """:class:`StepCollector`'s loop with a :class:`NativeActor` in one native call (``fastppo._core.collect``,
    csrc/train/rollout.cpp): the policy's sampling, the normalisers and the episode bookkeeping without
    the interpreter, and the env too for a built-in one on the CPU; a MuJoCo env's step runs in Python
    (:class:`EnvStepper`), one call per vector step (``tests/test_rollout.py`` checks both give the same
    rollout as the step loop)."""

    def __init__(self, algo: OnPolicyAlgorithm, actor: NativeActor):
        self.algo, self.actor = algo, actor
        capacity = algo.n_steps * algo.num_envs
        self._returns, self._lengths = np.empty(capacity, np.float64), np.empty(capacity, np.int64)
        self._last_obs = np.empty((algo.num_envs, algo.obs_spec.dim), np.float32)
        self._last_values = np.empty(algo.num_envs, np.float32)
        spec = algo.action_spec  # Box actions are clipped per dimension for the env (as ActionSpec.to_env)
        self._bounds = (spec.low, spec.high) if spec.kind == "gaussian" else (None, None)
        self._stepper = None if isinstance(algo.env, BuiltinVecEnv) else EnvStepper(algo)

    def collect(self, callback: Callback | None) -> bool:
        from fastppo._backend import _core

        algo = self.algo
        self.actor.begin()
        envs = algo.env.native_batch() if self._stepper is None else self._stepper.begin()
        ended = _core.collect(envs, self.actor.native, algo._last_obs.numpy(), algo.rollout.host_rows(),
                              self._returns, self._lengths, self.actor.seed, *self._bounds,
                              self._last_obs, self._last_values,
                              algo.obs_normalizer.native_state() if algo.obs_normalizer is not None else None,
                              algo.reward_scaler.native_state() if algo.reward_scaler is not None else None)
        algo.num_timesteps += algo.n_steps * vector_step_size(algo)
        if callback is not None:
            callback._steps(algo.n_steps)
        algo.episode_returns.extend(self._returns[:ended].tolist())
        algo.episode_lengths.extend(self._lengths[:ended].tolist())
        algo._last_obs = torch.from_numpy(self._last_obs).clone()  # the native loop's own normalised rows
        return True

    def last_values(self) -> torch.Tensor:
        """V(the observation after the rollout), computed by the native loop with the rest."""
        return torch.from_numpy(self._last_values)

