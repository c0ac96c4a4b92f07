"""A user-defined env in Numba: CartPole written as three per-env functions, registered with fastppo
and stepped as a vector env. fastppo compiles the batched loop (time limit, SAME_STEP autoreset,
episode statistics) around these functions.

Run:  python examples/numba_cartpole.py

Because it draws its initial state with fastppo.envs.uniform, the per-env streams are the ones the
native envs use: with the same seed and actions it reproduces fastppo's built-in CartPole-v1 exactly
(tests/test_envs.py checks this).
"""

import math

import numba
import numpy as np
from gymnasium import spaces

import fastppo
from fastppo.envs import register_numba_env, uniform

GRAVITY, MASS_CART, MASS_POLE, LENGTH, FORCE_MAG, TAU = 9.8, 1.0, 0.1, 0.5, 10.0, 0.02
TOTAL_MASS = MASS_POLE + MASS_CART
POLE_MASS_LENGTH = MASS_POLE * LENGTH
THETA_THRESHOLD = 12 * 2 * math.pi / 360
X_THRESHOLD = 2.4


@numba.njit
def reset(state, rng):
    """Draw the initial state: every component uniform in [-0.05, 0.05)."""
    for k in range(4):
        state[k] = uniform(rng, -0.05, 0.05)


@numba.njit
def step(state, action):
    """One Euler step of the cart-pole; returns (reward, terminated)."""
    x, x_dot, theta, theta_dot = state[0], state[1], state[2], state[3]
    force = FORCE_MAG if action == 1 else -FORCE_MAG
    costheta, sintheta = math.cos(theta), math.sin(theta)
    temp = (force + POLE_MASS_LENGTH * (theta_dot * theta_dot) * sintheta) / TOTAL_MASS
    thetaacc = (GRAVITY * sintheta - costheta * temp) / (
        LENGTH * (4.0 / 3.0 - MASS_POLE * (costheta * costheta) / TOTAL_MASS))
    xacc = temp - POLE_MASS_LENGTH * thetaacc * costheta / TOTAL_MASS
    state[0] = x + TAU * x_dot
    state[1] = x_dot + TAU * xacc
    state[2] = theta + TAU * theta_dot
    state[3] = theta_dot + TAU * thetaacc
    terminated = (state[0] < -X_THRESHOLD or state[0] > X_THRESHOLD
                  or state[2] < -THETA_THRESHOLD or state[2] > THETA_THRESHOLD)
    return 1.0, terminated


@numba.njit
def observe(state, obs):
    """The observation is the state in float32."""
    for k in range(4):
        obs[k] = state[k]


HIGH = np.array([X_THRESHOLD * 2, np.inf, THETA_THRESHOLD * 2, np.inf], dtype=np.float32)
register_numba_env("NumbaCartPole-v1", reset=reset, step=step, observe=observe,
                   observation_space=spaces.Box(-HIGH, HIGH, dtype=np.float32), action_space=spaces.Discrete(2),
                   state_dim=4, max_episode_steps=500)


def main():
    envs = fastppo.make_vec_env("NumbaCartPole-v1", num_envs=8, seed=0)
    print(envs)
    obs, _ = envs.reset()
    rng = np.random.default_rng(0)
    returns = []
    for _ in range(1000):
        obs, rewards, terminated, truncated, infos = envs.step(rng.integers(0, 2, size=8))
        if "episode" in infos:
            returns.extend(infos["episode"]["r"][infos["_episode"]])
    print(f"{len(returns)} episodes under a random policy, mean return {np.mean(returns):.1f}")


if __name__ == "__main__":
    main()
