"""Stable-Baselines3's own example scripts, run as written with SB3 and with the one-line change
(``from stable_baselines3 import PPO`` -> ``from fastppo import PPO``): wall-clock and final return side
by side, each run in a fresh process (imports included in neither timing: the clock starts at the
script's first line after the imports).

    flock /tmp/fastppo-bench.lock python bench/bench_sb3_dropin.py --seeds 0 1 2

Scripts: SB3's PPO quickstart on CartPole-v1 (``make_vec_env(n_envs=4)``, SB3's defaults) and SB3's
VecNormalize example on Pendulum-v1 (``DummyVecEnv`` + ``VecNormalize``, SB3's defaults). The return is
the mean over the same 50 deterministic episodes, evaluated by SB3's ``evaluate_policy`` on a fresh
seeded env (through the trained VecNormalize statistics for Pendulum). Prints a markdown table for
bench/RESULTS.md.
"""

from __future__ import annotations

import argparse
import json
import statistics
import subprocess
import sys
import textwrap

SCRIPTS = {
    "CartPole-v1 quickstart": """
        from stable_baselines3 import PPO
        from stable_baselines3.common.env_util import make_vec_env
        from stable_baselines3.common.evaluation import evaluate_policy
        import time
        start = time.perf_counter()

        vec_env = make_vec_env("CartPole-v1", n_envs=4, seed=SEED)
        model = PPO("MlpPolicy", vec_env, seed=SEED)
        model.learn(total_timesteps=BUDGET)

        seconds = time.perf_counter() - start
        mean, _ = evaluate_policy(model, make_vec_env("CartPole-v1", n_envs=1, seed=10_000), n_eval_episodes=50)
    """,
    "Pendulum-v1 VecNormalize": """
        from stable_baselines3 import PPO
        import gymnasium as gym
        from stable_baselines3.common.evaluation import evaluate_policy
        from stable_baselines3.common.monitor import Monitor
        from stable_baselines3.common.vec_env import DummyVecEnv, VecNormalize
        import time
        start = time.perf_counter()

        vec_env = DummyVecEnv([lambda: gym.make("Pendulum-v1")])
        vec_env = VecNormalize(vec_env, norm_obs=True, norm_reward=True, clip_obs=10.)
        model = PPO("MlpPolicy", vec_env, seed=SEED)
        model.learn(total_timesteps=BUDGET)

        seconds = time.perf_counter() - start
        eval_env = VecNormalize(DummyVecEnv([lambda: Monitor(gym.make("Pendulum-v1"))]), training=False,
                                norm_reward=False)
        eval_env.obs_rms = vec_env.obs_rms
        eval_env.seed(10_000)
        mean, _ = evaluate_policy(model, eval_env, n_eval_episodes=50)
    """,
}
BUDGETS = {"CartPole-v1 quickstart": 50_000, "Pendulum-v1 VecNormalize": 100_000}


def run(name: str, trainer: str, seed: int) -> dict:
    source = textwrap.dedent(SCRIPTS[name]).replace("SEED", str(seed)).replace("BUDGET", str(BUDGETS[name]))
    if trainer == "fastppo":
        source = source.replace("from stable_baselines3 import PPO", "from fastppo import PPO")
    source += "\nimport json; print(json.dumps({'seconds': seconds, 'mean': float(mean)}))\n"
    out = subprocess.run([sys.executable, "-c", source], capture_output=True, text=True, check=True).stdout
    return json.loads(out.strip().splitlines()[-1])


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--seeds", type=int, nargs="+", default=[0, 1, 2])
    args = parser.parse_args()
    print("| script | budget | seed | SB3 s | fastppo s | speed-up | SB3 return | fastppo return |")
    print("|---|---:|---:|---:|---:|---:|---:|---:|")
    summary = {}
    for name in SCRIPTS:
        for seed in args.seeds:
            theirs, ours = run(name, "sb3", seed), run(name, "fastppo", seed)
            ratio = theirs["seconds"] / ours["seconds"]
            summary.setdefault(name, []).append((ratio, theirs["mean"], ours["mean"]))
            print(f"| {name} | {BUDGETS[name]:,} | {seed} | {theirs['seconds']:.1f} | {ours['seconds']:.1f} | "
                  f"{ratio:.1f}x | {theirs['mean']:.1f} | {ours['mean']:.1f} |", flush=True)
    for name, rows in summary.items():
        ratios = [r for r, _, _ in rows]
        print(f"\n{name}: speed-up {min(ratios):.1f}x-{max(ratios):.1f}x; median return SB3 "
              f"{statistics.median(t for _, t, _ in rows):.1f}, fastppo {statistics.median(o for _, _, o in rows):.1f}")


if __name__ == "__main__":
    main()
