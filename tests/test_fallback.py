"""The gymnasium fallback (fastppo/envs/fallback.py): any id gymnasium knows, presented like fastppo's own
envs (SAME_STEP autoreset, episode statistics, the first reset's seed, dense final observations)."""

from __future__ import annotations

import gymnasium as gym
import numpy as np
import pytest
from gymnasium.vector import AutoresetMode

import fastppo
from test_envs import random_actions

# An id fastppo does not build in, with a short time limit so episodes end within the test.
gym.register("FastppoTestCartPole-v0", entry_point="gymnasium.envs.classic_control.cartpole:CartPoleEnv",
             vector_entry_point="gymnasium.envs.classic_control.cartpole:CartPoleVectorEnv", max_episode_steps=30)


@pytest.mark.parametrize("env_id,backend", [("FastppoTestCartPole-v0", "auto"), ("CartPole-v1", "sync"),
                                            ("Pendulum-v1", "gymnasium")])
def test_gymnasium_fallback_has_the_same_interface(env_id, backend):
    env = fastppo.make_vec_env(env_id, 3, seed=0, backend=backend)
    assert isinstance(env, gym.vector.VectorEnv)
    assert env.metadata["autoreset_mode"] == AutoresetMode.SAME_STEP
    obs, _ = env.reset()
    np.testing.assert_array_equal(obs, fastppo.make_vec_env(env_id, 3, seed=0, backend=backend).reset()[0])
    rng = np.random.default_rng(0)
    ended = 0
    for _ in range(250):
        obs, rew, te, tr, info = env.step(random_actions(env.single_action_space, 3, rng))
        if info.get("_episode", np.zeros(3, bool)).any():
            done = te | tr
            np.testing.assert_array_equal(info["_episode"], done)
            assert info["final_obs"].shape == obs.shape  # dense, like the built-in envs
            assert (info["episode"]["l"][done] > 0).all()
            ended += done.sum()
    assert ended > 0
    env.close()


def test_gymnasium_fallback_non_box_observations():
    """FrozenLake's observations are Discrete: final_obs stays gymnasium's object array."""
    env = fastppo.make_vec_env("FrozenLake-v1", 4, seed=0)
    env.reset()
    rng = np.random.default_rng(0)
    for _ in range(100):
        obs, rew, te, tr, info = env.step(rng.integers(0, 4, size=4))
        if info.get("_final_obs", np.zeros(4, bool)).any():
            assert info["final_obs"].dtype == object
            break
    else:
        raise AssertionError("no FrozenLake episode ended in 100 random steps")


def test_gymnasium_fallback_async():
    env = fastppo.make_vec_env("CartPole-v1", 2, seed=0, backend="async")
    try:
        env.reset()
        obs, *_ = env.step(np.array([0, 1]))
        assert obs.shape == (2, 4)
    finally:
        env.close()


