"""User-defined envs in Numba: write one env's ``reset``, ``step`` and ``observe`` as numba-jittable
functions, register them, and :func:`fastppo.make_vec_env` compiles the batched loop (time limit,
SAME_STEP autoreset, episode statistics) around them and returns a :class:`NumbaVecEnv`, the same
kind of VectorEnv as the built-in envs. A worked example: ``examples/numba_cartpole.py``.

Randomness comes from :func:`uniform` on the per-env stream the loop hands to ``reset``: the same
SplitMix64 streams as the native envs (csrc/core/rng.h), so env i's draws depend only on the seed and i.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Callable

import gymnasium as gym
import numba
import numpy as np

from fastppo._arrays import host_array
from fastppo.envs._buffered import BufferedVecEnv, check_actions

__all__ = ["NumbaEnvSpec", "NumbaVecEnv", "register_numba_env", "registered_numba_envs", "uniform"]

_GOLDEN = np.uint64(0x9E3779B97F4A7C15)
_ENV_GAMMA = np.uint64(0xD1B54A32D192ED03)


@numba.njit(inline="always")
def _mix64(z):
    z = (z ^ (z >> np.uint64(30))) * np.uint64(0xBF58476D1CE4E5B9)
    z = (z ^ (z >> np.uint64(27))) * np.uint64(0x94D049BB133111EB)
    return z ^ (z >> np.uint64(31))


@numba.njit(inline="always")
def _stream_key(seed, env_index):
    return _mix64(_mix64(np.uint64(seed) + _GOLDEN) + (np.uint64(env_index) + np.uint64(1)) * _ENV_GAMMA)


@numba.njit(inline="always")
def uniform(rng, low, high):
    """A float64 uniform in [low, high) from one env's stream ``rng`` (the array ``reset`` receives),
    drawn exactly as the native envs draw (numpy's ``low + (high - low) * random()``)."""
    rng[1] += np.uint64(1)
    x = _mix64(rng[0] + rng[1] * _GOLDEN)
    return low + (high - low) * (float(x >> np.uint64(11)) * (1.0 / 9007199254740992.0))


@dataclass(frozen=True)
class NumbaEnvSpec:
    """One user env. ``reset(state, rng)`` fills the float64 ``state`` (shape ``(state_dim,)``) drawing
    from ``uniform(rng, low, high)``; ``step(state, action) -> (reward, terminated)`` advances ``state``
    in place (``action``: an int64 for Discrete, a float32 row of the Box's shape otherwise);
    ``observe(state, obs)`` writes the float32 observation. The time limit is applied by fastppo."""

    reset: Callable
    step: Callable
    observe: Callable
    observation_space: gym.spaces.Box
    action_space: gym.Space
    state_dim: int
    max_episode_steps: int


_REGISTRY: dict[str, NumbaEnvSpec] = {}
_COMPILED: dict[str, tuple] = {}  # env id -> its batched loops


def register_numba_env(env_id: str, *, reset: Callable, step: Callable, observe: Callable,
                       observation_space: gym.spaces.Box, action_space: gym.Space, state_dim: int,
                       max_episode_steps: int) -> None:
    """Register a Numba env under ``env_id`` for :func:`fastppo.make_vec_env` (see :class:`NumbaEnvSpec`).

    Raises:
        TypeError: a space is not a float32 1-D Box (observations) or a Discrete / float32 Box (actions).
        ValueError: ``state_dim`` or ``max_episode_steps`` is not positive.
    """
    if not (isinstance(observation_space, gym.spaces.Box) and observation_space.dtype == np.float32
            and len(observation_space.shape) == 1):
        raise TypeError(f"observation_space must be a 1-D float32 gymnasium Box, got {observation_space!r}")
    discrete = isinstance(action_space, gym.spaces.Discrete) and action_space.start == 0
    box = isinstance(action_space, gym.spaces.Box) and action_space.dtype == np.float32
    if not (discrete or box):
        raise TypeError(f"action_space must be a gymnasium Discrete starting at 0 or a float32 Box, "
                        f"got {action_space!r}")
    for name, value in (("state_dim", state_dim), ("max_episode_steps", max_episode_steps)):
        if not isinstance(value, int) or value < 1:
            raise ValueError(f"{name} must be a positive int, got {value!r}")
    _COMPILED.pop(env_id, None)
    _REGISTRY[env_id] = NumbaEnvSpec(reset, step, observe, observation_space, action_space, state_dim,
                                     max_episode_steps)


def registered_numba_envs() -> dict[str, NumbaEnvSpec]:
    """The registered Numba envs by id."""
    return dict(_REGISTRY)


def _jit(fn):
    return fn if isinstance(fn, numba.core.registry.CPUDispatcher) else numba.njit(fn)


def _loops(env_id: str):
    if env_id not in _COMPILED:
        _COMPILED[env_id] = _compile(_REGISTRY[env_id])
    return _COMPILED[env_id]


def _compile(spec: NumbaEnvSpec):
    """The batched step and reset loops around one spec's per-env functions (compiled on first call)."""
    reset, step, observe = _jit(spec.reset), _jit(spec.step), _jit(spec.observe)
    max_steps = spec.max_episode_steps

    @numba.njit
    def step_batch(actions, state, rng, obs, final_obs, rewards, terminated, truncated, episode_r, episode_l,
                   episode_t, elapsed, running_return, start_time, now):
        ended = 0
        for i in range(state.shape[0]):
            reward, term = step(state[i], actions[i])
            length = elapsed[i] + 1
            trunc = length >= max_steps  # gymnasium's TimeLimit
            ret = running_return[i] + reward
            rewards[i] = reward
            terminated[i] = term
            truncated[i] = trunc
            done = term or trunc
            episode_r[i] = ret if done else 0.0
            episode_l[i] = length if done else 0
            episode_t[i] = np.round(now - start_time[i], 6) if done else 0.0
            if done:
                ended += 1
                observe(state[i], final_obs[i])
                reset(state[i], rng[i])
                elapsed[i] = 0
                running_return[i] = 0.0
                start_time[i] = now
            else:
                elapsed[i] = length
                running_return[i] = ret
            observe(state[i], obs[i])
        return ended

    @numba.njit
    def reset_batch(mask, reseed, seed, state, rng, obs, elapsed, running_return, start_time, now):
        for i in range(state.shape[0]):
            if not mask[i]:
                continue
            if reseed:
                rng[i, 0] = _stream_key(seed, i)
                rng[i, 1] = 0
            reset(state[i], rng[i])
            observe(state[i], obs[i])
            elapsed[i] = 0
            running_return[i] = 0.0
            start_time[i] = now

    return step_batch, reset_batch


class NumbaVecEnv(BufferedVecEnv):
    """``num_envs`` copies of a registered Numba env, stepped by one compiled loop (single-threaded)."""

    def __init__(self, env_id: str, num_envs: int, *, seed: int | None = None, copy: bool = True):
        spec = _REGISTRY[env_id]
        super().__init__(env_id=env_id, num_envs=num_envs, single_observation_space=spec.observation_space,
                         single_action_space=spec.action_space, state_dim=spec.state_dim,
                         max_episode_steps=spec.max_episode_steps, reset_options={}, seed=seed, copy=copy)
        self._step_loop, self._reset_loop = _loops(env_id)
        b = self._buffers
        self._rng_u64 = b["rng"].view(np.uint64)
        self._step_buffers = (b["state"], self._rng_u64, b["obs"], b["final_obs"], b["rewards"], b["terminated"],
                              b["truncated"], b["episode_r"], b["episode_l"], b["episode_t"], b["elapsed"],
                              b["running_return"], b["start_time"])

    def _batched_step(self):
        return self._step_numba

    def _step_numba(self, actions) -> int:
        actions = _checked_actions(actions, self.single_action_space, self.num_envs, self.env_id)
        return self._step_loop(actions, *self._step_buffers, _now())

    def _reset_batch(self, seed, mask, a, b) -> None:
        if mask is None:
            mask = np.ones(self.num_envs, dtype=bool)
        elif not isinstance(mask, np.ndarray) or mask.shape != (self.num_envs,):
            raise ValueError(f"options['reset_mask'] must be a numpy bool array of shape ({self.num_envs},), "
                             f"got {getattr(mask, 'shape', type(mask).__name__)}")
        buf = self._buffers
        self._reset_loop(mask, seed is not None, np.uint64(seed or 0), buf["state"], self._rng_u64, buf["obs"],
                         buf["elapsed"], buf["running_return"], buf["start_time"], _now())


def _now() -> float:
    import time

    return time.perf_counter()


def _checked_actions(actions, space: gym.Space, num_envs: int, env_id: str) -> np.ndarray:
    """The actions as the compiled loop takes them (int64, or float32 rows), after the checks the native
    binding makes (``check_actions``)."""
    actions = np.asarray(host_array(actions, "actions", require_cpu="an env on the cpu"))
    check_actions(actions, space, num_envs, env_id)
    return actions.astype(np.int64 if isinstance(space, gym.spaces.Discrete) else np.float32, copy=False)
