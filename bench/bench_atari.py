"""Atari (issue #17): Breakout at CleanRL's PPO settings, fastppo against Stable-Baselines3, in one run.
Never run in CI.

    flock /tmp/fastppo-bench.lock python bench/bench_atari.py [--rounds 3] [--iterations 3]

- **Rollout alone**: env steps per second of 8 Breakout envs on random actions: fastppo's engine
  (ale-py's native vector env, :class:`fastppo.envs.atari.AtariVecEnv`) against gymnasium's wrapper stack
  (``AtariPreprocessing`` + ``FrameStackObservation`` in a ``SyncVectorEnv``, what SB3's
  ``make_atari_env`` amounts to). Best of --rounds.
- **Training**: env steps per second of ``learn`` over --iterations iterations of 8 envs x 128 steps, 4
  epochs of 4 minibatches (the Atari preset), after one warm-up iteration: fastppo's ``PPO("CnnPolicy")``
  against SB3's ``PPO("CnnPolicy")`` on ``make_atari_env`` + ``VecFrameStack(4)``, each round
  alternating the two. fastppo's time is split into the update (the network's backward and Adam, timed
  around ``_update``) and the rest (env steps and the policy's forward).
"""

from __future__ import annotations

import argparse
import platform
import time

import gymnasium as gym
import numpy as np
import torch

import fastppo
from bench_envs import print_table, timed

ENV_ID, N = "BreakoutNoFrameskip-v4", 8


def gymnasium_stack(n: int):
    import ale_py
    from gymnasium.vector import AutoresetMode
    from gymnasium.wrappers import AtariPreprocessing, FrameStackObservation

    gym.register_envs(ale_py)
    make = lambda: FrameStackObservation(AtariPreprocessing(gym.make(ENV_ID), noop_max=30, frame_skip=4), 4)  # noqa: E731
    return gym.vector.SyncVectorEnv([make for _ in range(n)], autoreset_mode=AutoresetMode.SAME_STEP)


def rollout_rates(rounds: int, seconds: float) -> dict[str, float]:
    rng = np.random.default_rng(0)
    actions = [rng.integers(0, 4, N) for _ in range(64)]
    envs = {"fastppo": fastppo.make_vec_env(ENV_ID, N, seed=0), "gymnasium": gymnasium_stack(N)}
    for env in envs.values():
        env.reset(seed=0)
    best = {name: 0.0 for name in envs}
    for _ in range(rounds):
        for name, env in envs.items():
            best[name] = max(best[name], timed(env.step, actions, N, seconds))
    return best


def fastppo_training(iterations: int) -> tuple[float, float]:
    """(env steps per second of learn, the share of that time in _update)."""
    model = fastppo.PPO("CnnPolicy", ENV_ID, **fastppo.presets.get(ENV_ID), seed=0, device="cpu")
    spent, update = [0.0], model._update

    def timed_update(progress):
        start = time.perf_counter()
        out = update(progress)
        spent[0] += time.perf_counter() - start
        return out

    model._update = timed_update
    steps = model.num_envs * model.n_steps
    model.learn(steps)  # warm-up iteration
    spent[0] = 0.0
    start = time.perf_counter()
    model.learn(steps * iterations, reset_num_timesteps=False)
    elapsed = time.perf_counter() - start
    return steps * iterations / elapsed, spent[0] / elapsed


def sb3_training(iterations: int) -> float:
    from stable_baselines3 import PPO
    from stable_baselines3.common.env_util import make_atari_env
    from stable_baselines3.common.vec_env import VecFrameStack

    env = VecFrameStack(make_atari_env(ENV_ID, n_envs=N, seed=0), 4)
    model = PPO("CnnPolicy", env, n_steps=128, batch_size=256, n_epochs=4, learning_rate=2.5e-4, clip_range=0.1,
                ent_coef=0.01, vf_coef=0.5, seed=0, device="cpu")
    steps = N * 128
    model.learn(steps)
    start = time.perf_counter()
    model.learn(steps * iterations, reset_num_timesteps=False)
    return steps * iterations / (time.perf_counter() - start)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--rounds", type=int, default=3)
    parser.add_argument("--iterations", type=int, default=3)
    parser.add_argument("--seconds", type=float, default=2.0)
    parser.add_argument("--out")
    args = parser.parse_args()
    torch.set_num_threads(torch.get_num_threads())
    print(f"# {platform.processor() or platform.machine()}, torch {torch.__version__} ({torch.get_num_threads()} "
          f"threads), fastppo {fastppo.__version__}")
    rates = rollout_rates(args.rounds, args.seconds)
    lines = ["| rollout alone, 8 envs | env steps/s | ratio |", "|---|---|---|",
             f"| fastppo (ale-py vector engine) | {rates['fastppo']:,.0f} | {rates['fastppo'] / rates['gymnasium']:.1f}x |",
             f"| gymnasium wrappers (SyncVectorEnv) | {rates['gymnasium']:,.0f} | 1.0x |", "",
             "| training round | fastppo steps/s | SB3 steps/s | ratio | fastppo's time in the update |",
             "|---|---|---|---|---|"]
    for i in range(args.rounds):
        ours, update_share = fastppo_training(args.iterations)
        theirs = sb3_training(args.iterations)
        lines.append(f"| {i + 1} | {ours:,.0f} | {theirs:,.0f} | {ours / theirs:.2f}x | {update_share:.0%} |")
        print(lines[-1], flush=True)
    print_table(lines, args.out)


if __name__ == "__main__":
    main()
