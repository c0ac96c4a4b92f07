"""MuJoCo env stepping speed: fastppo's native MuJoCo envs (``mujoco.batch`` physics, batched task logic)
against gymnasium's SyncVectorEnv and EnvPool's MuJoCo envs, all in one run, with the bare physics
(the env's own ``mujoco.batch`` stepped with no task logic) as the floor of what any engine can reach.
Never run in CI.

    flock /tmp/fastppo-bench.lock python bench/bench_mujoco.py [--rounds 3] [--out FILE]

Every figure is env steps per second (vector steps x num_envs) over random actions drawn in advance,
each cell the best of --rounds round-robin timings of at least --seconds. fastppo's batch and EnvPool
both use every core (``os.cpu_count()`` threads, at most one per env for EnvPool).
"""

from __future__ import annotations

import argparse
import os
import platform

import gymnasium as gym
import numpy as np
from gymnasium.vector import AutoresetMode

import fastppo
from bench_envs import print_table, timed

ENVS = ("HalfCheetah-v5", "Hopper-v5", "Humanoid-v5")
NUM_ENVS = (1, 16, 64)


def random_actions(space: gym.spaces.Box, n: int, batches: int = 64) -> list[np.ndarray]:
    rng = np.random.default_rng(0)
    return [rng.uniform(space.low, space.high, (n, *space.shape)).astype(np.float32) for _ in range(batches)]


def physics_only(env_id: str, n: int):
    """The physics alone: a fastppo env's own ``mujoco.batch`` stepped with its frame skip after a reset,
    with no task logic (and so no resets: its states drift as the env's would between resets)."""
    env = fastppo.make_vec_env(env_id, n, seed=0)
    env.reset(seed=0)
    batch, ctrl, frame_skip = env._batch, env.task.ctrl, env.task.frame_skip

    def step(a):
        ctrl[:] = a
        batch.step(None, nstep=frame_skip)

    return step, env.single_action_space, env.close


def steppers(env_id: str, n: int) -> dict:
    same_step = {"autoreset_mode": AutoresetMode.SAME_STEP}
    out = {}
    for name, env in (("fastppo", fastppo.make_vec_env(env_id, n, seed=0)),
                      ("fastppo copy=False", fastppo.make_vec_env(env_id, n, seed=0, copy=False)),
                      ("gym sync", gym.make_vec(env_id, n, vectorization_mode="sync", vector_kwargs=same_step))):
        env.reset(seed=0)
        out[name] = (env.step, env.single_action_space, env.close)
    out["physics only"] = physics_only(env_id, n)
    try:
        import envpool

        pool = envpool.make_gymnasium(env_id, num_envs=n, batch_size=n, num_threads=min(n, os.cpu_count()), seed=0)
        pool.reset()
        out["envpool"] = (pool.step, pool.action_space, pool.close)
    except ImportError as exc:
        out["envpool"] = f"not installed ({exc})"
    return out


def main():
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--seconds", type=float, default=0.5, help="minimum timed wall clock per cell and round")
    parser.add_argument("--rounds", type=int, default=3, help="round-robin timings per cell; the best is kept")
    parser.add_argument("--out", help="also write the markdown table here")
    args = parser.parse_args()
    import mujoco

    lines = [f"machine: {platform.processor() or platform.machine()}, {os.cpu_count()} cores, fastppo threads "
             f"{fastppo.get_num_threads()}, mujoco {mujoco.__version__}, gymnasium {gym.__version__}", ""]
    cols = ["fastppo", "fastppo copy=False", "physics only", "gym sync", "envpool"]
    ratios = ["fastppo / gym sync", "fastppo / envpool", "fastppo / physics only"]
    lines += ["| env | N | " + " | ".join(cols + ratios) + " |", "|---" * (len(cols) + len(ratios) + 2) + "|"]
    for env_id in ENVS:
        for n in NUM_ENVS:
            found = steppers(env_id, n)
            rates = {name: 0.0 for name, s in found.items() if not isinstance(s, str)}
            for _ in range(args.rounds):
                for name in rates:
                    step, space, _ = found[name]
                    rates[name] = max(rates[name], timed(step, random_actions(space, n), n, args.seconds))
            for s in found.values():
                if not isinstance(s, str):
                    s[2]()
            cell = {**found, **rates}
            row = [env_id, str(n)] + [f"{cell[c]:,.0f}" if c in rates else cell[c] for c in cols]
            row += [f"{rates['fastppo'] / rates[p]:.2f}x" if p in rates else "-"
                    for p in ("gym sync", "envpool", "physics only")]
            lines.append("| " + " | ".join(row) + " |")
            print(lines[-1], flush=True)
    print_table(lines, args.out)


if __name__ == "__main__":
    main()
