"""Numba user envs (fastppo/envs/numba_env.py): the example reproduces the built-in env, bad actions are
refused like the native ones, Box envs, and register_numba_env's checks."""

from __future__ import annotations

import gymnasium as gym
import numpy as np
import pytest
from gymnasium.vector import AutoresetMode

import fastppo


def test_numba_example_reproduces_the_builtin_env(numba_cartpole):
    """Same physics, same per-env random streams: bit-identical to the native CartPole-v1."""
    env = fastppo.make_vec_env(numba_cartpole, 7, seed=21)
    assert type(env).__name__ == "NumbaVecEnv"
    assert env.metadata["autoreset_mode"] == AutoresetMode.SAME_STEP
    ref = fastppo.make_vec_env("CartPole-v1", 7, seed=21)
    np.testing.assert_array_equal(env.reset()[0], ref.reset()[0])
    rng = np.random.default_rng(2)
    ended = 0
    for _ in range(400):
        a = rng.integers(0, 2, size=7)
        mine, theirs = env.step(a), ref.step(a)
        for x, y in zip(mine[:4], theirs[:4]):
            np.testing.assert_array_equal(x, y)
        assert mine[4].keys() == theirs[4].keys()
        if mine[4]:
            ended += mine[4]["_episode"].sum()
            np.testing.assert_array_equal(mine[4]["final_obs"][mine[4]["_final_obs"]],
                                          theirs[4]["final_obs"][theirs[4]["_final_obs"]])
            np.testing.assert_array_equal(mine[4]["episode"]["r"], theirs[4]["episode"]["r"])
            np.testing.assert_array_equal(mine[4]["episode"]["l"], theirs[4]["episode"]["l"])
    assert ended > 20


@pytest.mark.parametrize("actions,exc,match", [
    (np.array([0, 2, 1]), ValueError, r"actions\[1\] = 2 is out of range"),
    (np.array([0.0, 1.0, 1.0]), TypeError, "actions must have an integer dtype"),
    (np.array([0, 1]), ValueError, r"actions must have shape \(3,\)"),
])
def test_numba_env_rejects_bad_actions_like_the_native_ones(numba_cartpole, actions, exc, match):
    env = fastppo.make_vec_env(numba_cartpole, 3, seed=0)
    env.reset()
    with pytest.raises(exc, match=match):
        env.step(actions)


@pytest.fixture(scope="module")
def numba_point():
    """A one-dimensional point pushed by a Box action, registered as a Numba env."""
    numba = pytest.importorskip("numba")
    from fastppo.envs import register_numba_env, uniform

    @numba.njit
    def reset(state, rng):
        state[0] = uniform(rng, -1.0, 1.0)

    @numba.njit
    def step(state, action):
        state[0] += 0.1 * min(max(action[0], -1.0), 1.0)
        return -state[0] * state[0], abs(state[0]) > 1.5

    @numba.njit
    def observe(state, obs):
        obs[0] = state[0]

    register_numba_env("FastppoTestPoint-v0", reset=reset, step=step, observe=observe,
                       observation_space=gym.spaces.Box(-2, 2, (1,), np.float32),
                       action_space=gym.spaces.Box(-1, 1, (1,), np.float32), state_dim=1, max_episode_steps=20)
    return "FastppoTestPoint-v0"


def test_numba_box_env(numba_point):
    env = fastppo.make_vec_env(numba_point, 4, seed=0)
    obs, _ = env.reset()
    assert (np.abs(obs) <= 1).all()
    ended = 0
    for _ in range(40):
        x = env.get_state()[:, 0]
        obs, rew, te, tr, info = env.step(np.full((4, 1), 1.0))  # float64 actions are accepted
        moved, done = x + 0.1, te | tr
        seen = np.where(done, info["final_obs"][:, 0], obs[:, 0]) if info else obs[:, 0]
        np.testing.assert_allclose(seen, moved.astype(np.float32), rtol=1e-6)
        np.testing.assert_allclose(rew, -(moved**2), rtol=1e-6)  # float32 rewards of float64 costs
        np.testing.assert_array_equal(te, np.abs(moved) > 1.5)
        ended += done.sum()
        if info:
            np.testing.assert_array_equal(info["_episode"], done)
    assert ended > 0
    with pytest.raises(ValueError, match=r"actions\[2\] = \[nan\] is not finite"):
        env.step(np.array([[0.0], [0.0], [np.nan], [0.0]], np.float32))
    with pytest.raises(ValueError, match=r"actions must have shape \(4, 1\)"):
        env.step(np.zeros(4, np.float32))
    with pytest.raises(TypeError, match="actions must have dtype float32 or float64"):
        env.step(np.zeros((4, 1), np.int64))


def test_register_numba_env_checks_its_arguments():
    from fastppo.envs import register_numba_env

    box = gym.spaces.Box(-1, 1, (2,), np.float32)
    with pytest.raises(TypeError, match="observation_space must be a 1-D float32"):
        register_numba_env("Bad-v0", reset=None, step=None, observe=None, observation_space=gym.spaces.Discrete(2),
                           action_space=gym.spaces.Discrete(2), state_dim=2, max_episode_steps=10)
    with pytest.raises(TypeError, match="action_space must be"):
        register_numba_env("Bad-v0", reset=None, step=None, observe=None, observation_space=box,
                           action_space=gym.spaces.MultiBinary(2), state_dim=2, max_episode_steps=10)
    with pytest.raises(ValueError, match="max_episode_steps must be a positive int"):
        register_numba_env("Bad-v0", reset=None, step=None, observe=None, observation_space=box,
                           action_space=gym.spaces.Discrete(2), state_dim=2, max_episode_steps=0)


