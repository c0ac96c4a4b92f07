"""Vector-env stepping speed: fastppo's built-in envs against gymnasium's SyncVectorEnv,
AsyncVectorEnv, gymnasium's numpy-vectorised entry point, EnvPool (sync mode, if installed) and a raw
single-env ``env.step`` loop, all in one run; fastppo with its default ``copy=True`` (every result a
fresh array the caller owns, as gymnasium's) and with ``copy=False`` (its buffers, as the trainer uses
them), so the cost of the copies is a measured number; for CartPole also fastppo's opt-in
``fast_math`` step (not bit-exact with gymnasium). The "1 thread" and "fast_math" columns are
``copy=False``, to compare with that column. A script rather than pytest-benchmark so that every peer lands in one
table. Never run in CI.

    flock /tmp/fastppo-bench.lock python bench/bench_envs.py [--seconds 0.5] [--out FILE]

Every figure is steps per second (env steps, i.e. vector steps x num_envs) over random actions drawn
in advance, timed over at least --seconds of wall clock after a warm-up.
"""

from __future__ import annotations

import argparse
import contextlib
import os
import platform
import time

import gymnasium as gym
import numpy as np
from gymnasium.vector import AutoresetMode

import fastppo

ENVS = ("CartPole-v1", "Pendulum-v1")
NUM_ENVS = (1, 8, 64, 256, 4096)
ASYNC_MAX_ENVS = 8  # AsyncVectorEnv runs one process per env: beyond this it measures process thrashing


def actions_for(space: gym.Space, n: int, batches: int = 64) -> list[np.ndarray]:
    rng = np.random.default_rng(0)
    if isinstance(space, gym.spaces.Discrete):
        return [rng.integers(0, space.n, size=n) for _ in range(batches)]
    return [rng.uniform(space.low, space.high, size=(n, *space.shape)).astype(np.float32) for _ in range(batches)]


def timed(step, actions, n: int, seconds: float) -> float:
    """Env steps per second of `step(action)` over `actions`, cycled."""
    for a in actions[:8]:
        step(a)
    calls, k, start = 0, len(actions), time.perf_counter()
    while True:
        for _ in range(16):
            step(actions[calls % k])
            calls += 1
        elapsed = time.perf_counter() - start
        if elapsed >= seconds:
            return calls * n / elapsed


def vector_env_stepper(env, n):
    env.reset(seed=0)
    return env.step, actions_for(env.single_action_space, n), env.close


def single_env_stepper(env_id):
    """A raw gymnasium loop: gym.make's env (with its TimeLimit), step, reset when done."""
    env = gym.make(env_id)
    env.reset(seed=0)

    def step(a):
        _, _, te, tr, _ = env.step(a)
        if te or tr:
            env.reset()

    return step, [a[0] for a in actions_for(env.action_space, 1)], env.close


def envpool_stepper(env_id, n):
    import envpool

    env = envpool.make_gymnasium(env_id, num_envs=n, batch_size=n, seed=0)
    env.reset()
    return env.step, actions_for(env.action_space, n), env.close


@contextlib.contextmanager
def one_native_thread():
    """fastppo's native thread pool limited to one thread inside the block."""
    fastppo.set_num_threads(1)
    try:
        yield
    finally:
        fastppo.set_num_threads(0)


def peers(env_id, n, seconds, rounds):
    """name -> steps/s (or why it was not measured). Every peer is timed `rounds` times, round-robin,
    and keeps its best: on a shared machine that is the figure least disturbed by other processes."""
    same_step = {"autoreset_mode": AutoresetMode.SAME_STEP}
    steppers, out = {}, {}
    steppers["fastppo"] = vector_env_stepper(fastppo.make_vec_env(env_id, n, seed=0), n)
    steppers["fastppo copy=False"] = vector_env_stepper(fastppo.make_vec_env(env_id, n, seed=0, copy=False), n)
    if n >= 256:  # below twice fastppo's per-thread grain (128 envs, 256 for CartPole) the batch runs on one thread
        steppers["fastppo 1 thread"] = vector_env_stepper(fastppo.make_vec_env(env_id, n, seed=0, copy=False), n)
    if env_id == "CartPole-v1":  # the one env with an opt-in fast-math step (not bit-exact with gymnasium)
        steppers["fastppo fast_math"] = vector_env_stepper(
            fastppo.make_vec_env(env_id, n, seed=0, fast_math=True, copy=False), n)
    else:
        out["fastppo fast_math"] = "n/a"
    steppers["gym sync"] = vector_env_stepper(
        gym.make_vec(env_id, n, vectorization_mode="sync", vector_kwargs=same_step), n)
    if n <= ASYNC_MAX_ENVS:
        steppers["gym async"] = vector_env_stepper(
            gym.make_vec(env_id, n, vectorization_mode="async", vector_kwargs=same_step), n)
    else:
        out["gym async"] = "not run (one process per env)"
    if gym.spec(env_id).vector_entry_point is not None:
        steppers["gym numpy-vec"] = vector_env_stepper(
            gym.make_vec(env_id, n, vectorization_mode="vector_entry_point"), n)
    else:
        out["gym numpy-vec"] = "n/a (gymnasium has none)"
    try:
        steppers["envpool"] = envpool_stepper(env_id, n)
    except ImportError as exc:
        out["envpool"] = f"not installed ({exc})"
    if n == 1:
        steppers["gym env.step"] = single_env_stepper(env_id)
    best = dict.fromkeys(steppers, 0.0)
    for _ in range(rounds):
        for name, (step, actions, _) in steppers.items():
            with one_native_thread() if name == "fastppo 1 thread" else contextlib.nullcontext():
                rate = timed(step, actions, n, seconds)
            best[name] = max(best[name], rate)
    for _, _, close in steppers.values():
        close()
    return {**out, **best}


def print_table(lines: list[str], out: str | None) -> None:
    """Print a finished markdown table (its rows were printed as they came) and write it to `out` if given."""
    text = "\n".join(lines)
    print("\n" + text)
    if out:
        with open(out, "w") as f:
            f.write(text + "\n")


def fmt(x) -> str:
    return f"{x / 1e6:.3f}M" if isinstance(x, float) else x


def ratio(rates: dict, peer: str) -> str:
    """fastppo's rate over `peer`'s, where both were measured."""
    return f"{rates['fastppo'] / rates[peer]:.1f}x" if isinstance(rates.get(peer), float) else "-"


def main():
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--seconds", type=float, default=0.25, help="minimum timed wall clock per cell and round")
    parser.add_argument("--rounds", type=int, default=5, help="round-robin timings per cell; the best is kept")
    parser.add_argument("--out", help="also write the markdown table here")
    args = parser.parse_args()
    lines = [f"machine: {platform.processor() or platform.machine()}, {os.cpu_count()} cores, fastppo threads "
             f"{fastppo.get_num_threads()}, gymnasium {gym.__version__}, numpy {np.__version__}", ""]
    cols = ["fastppo", "fastppo copy=False", "fastppo 1 thread", "fastppo fast_math", "gym env.step", "gym sync", "gym async",
            "gym numpy-vec", "envpool"]
    ratios = ["fastppo / numpy-vec", "fastppo / envpool", "fastppo / env.step", "copy=False / fastppo"]
    lines.append("| env | N | " + " | ".join(cols + ratios) + " |")
    lines.append("|---" * (len(cols) + len(ratios) + 2) + "|")
    for env_id in ENVS:
        for n in NUM_ENVS:
            r = peers(env_id, n, args.seconds, args.rounds)
            row = [env_id, str(n)] + [fmt(r.get(c, "-")) for c in cols]
            row += [ratio(r, "gym numpy-vec"), ratio(r, "envpool"), ratio(r, "gym env.step"),
                    f"{r['fastppo copy=False'] / r['fastppo']:.2f}x"]
            lines.append("| " + " | ".join(row) + " |")
            print(lines[-1], flush=True)
    print_table(lines, args.out)


if __name__ == "__main__":
    main()
