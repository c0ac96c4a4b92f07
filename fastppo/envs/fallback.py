"""Any env id that is not built in: gymnasium's own vector env (its vectorised entry point when that
supports SAME_STEP autoreset, else sync or async), wrapped so that it looks like fastppo's envs:
SAME_STEP autoreset, RecordEpisodeStatistics' ``"episode"`` info, ``make_vec_env``'s seed on the first
reset, and for Box observations ``infos["final_obs"]`` as one ``(num_envs, *obs_shape)`` array."""

from __future__ import annotations

import gymnasium as gym
import numpy as np
from gymnasium.vector import AutoresetMode, VectorEnv, VectorWrapper
from gymnasium.wrappers.vector import RecordEpisodeStatistics

__all__ = ["GymnasiumVecEnv", "make_gymnasium_vec_env"]

_SAME_STEP = {"autoreset_mode": AutoresetMode.SAME_STEP}


def make_gymnasium_vec_env(env_id: str, num_envs: int, *, seed: int | None, mode: str,
                           copy: bool = True, env_kwargs: dict | None = None) -> GymnasiumVecEnv:
    """gymnasium's vector env for `env_id`; mode: "gymnasium" (the vectorised entry point if it supports
    SAME_STEP, else "sync"), "vector_entry_point", "sync" or "async". ``copy`` is gymnasium's (sync and
    async envs; a vectorised entry point returns fresh arrays of its own); ``env_kwargs``: the env's
    constructor options."""
    env_kwargs = env_kwargs or {}
    try:
        spec = gym.spec(env_id)
    except gym.error.Error as exc:
        raise ValueError(f"env_id {env_id!r} is not a built-in env, a registered Numba env, or registered "
                         f"with gymnasium ({exc})") from None
    env = None
    if mode in ("gymnasium", "vector_entry_point") and spec.vector_entry_point is not None:
        env = _try_vector_entry_point(env_id, num_envs, env_kwargs)
        if env is None and mode == "vector_entry_point":
            raise ValueError(f"backend 'vector_entry_point': {env_id}'s vectorised entry point does not support "
                             "SAME_STEP autoreset; use backend='sync' or 'async'")
    elif mode == "vector_entry_point":
        raise ValueError(f"backend 'vector_entry_point': {env_id} has no vectorised entry point")
    if env is None:
        vmode = "async" if mode == "async" else "sync"
        env = gym.make_vec(env_id, num_envs, vectorization_mode=vmode, vector_kwargs={**_SAME_STEP, "copy": copy},
                           **env_kwargs)
    return GymnasiumVecEnv(RecordEpisodeStatistics(env), seed)


def _try_vector_entry_point(env_id: str, num_envs: int, env_kwargs: dict) -> VectorEnv | None:
    """The vectorised entry point's env if it autoresets in SAME_STEP mode (by default or when asked
    through its constructor's autoreset_mode argument), else None."""
    try:
        env = gym.make_vec(env_id, num_envs, vectorization_mode="vector_entry_point", **_SAME_STEP, **env_kwargs)
    except TypeError:  # its constructor does not take autoreset_mode
        env = gym.make_vec(env_id, num_envs, vectorization_mode="vector_entry_point", **env_kwargs)
    if env.metadata.get("autoreset_mode") != AutoresetMode.SAME_STEP:
        env.close()
        return None
    return env


class GymnasiumVecEnv(VectorWrapper):
    """A gymnasium vector env presented like fastppo's own (see the module docstring)."""

    def __init__(self, env: VectorEnv, seed: int | None):
        super().__init__(env)
        self._pending_seed = seed
        self._dense_final_obs = isinstance(env.single_observation_space, gym.spaces.Box)

    def reset(self, *, seed=None, options=None):
        """Reset like gymnasium's vector env; the first reset without a seed uses make_vec_env's seed."""
        self._check_open()
        if seed is None and self._pending_seed is not None:
            seed = self._pending_seed
        self._pending_seed = None
        return self.env.reset(seed=seed, options=options)

    def step(self, actions):
        """Step like gymnasium's vector env in SAME_STEP mode."""
        self._check_open()
        obs, rewards, terminated, truncated, infos = self.env.step(actions)
        if self._dense_final_obs and "final_obs" in infos:
            dense = np.zeros_like(obs)
            for i in np.flatnonzero(infos["_final_obs"]):  # only the envs that ended this step
                dense[i] = infos["final_obs"][i]
            infos["final_obs"] = dense
        return obs, rewards, terminated, truncated, infos

    def _check_open(self) -> None:
        if self.env.closed:
            raise RuntimeError(f"{self.spec.id if self.spec else 'the env'}: the env is closed")
