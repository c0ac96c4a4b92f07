"""MinAtar learning curves with fastppo's preset ("CnnPolicy" with MinAtar's small encoder; fastppo.presets),
one JSON line every --every steps per run: the mean return of the last 100 training episodes (the online
return MinAtar's paper plots), and at the end an evaluation of the trained policy. Never run in CI.

    flock /tmp/fastppo-bench.lock python bench/minatar_curve.py run --games Breakout SpaceInvaders \\
        --seeds 0 1 2 --timesteps 2000000 --out bench/minatar_curve.jsonl
    python bench/minatar_curve.py table bench/minatar_curve.jsonl

Evaluation: 30 episodes of the stochastic policy (deterministic argmax policies can stall MinAtar's games:
Freeway's chicken waiting forever is a policy with return 0), on envs seeded 10,000.
"""

from __future__ import annotations

import argparse
import json
import statistics
import time

import fastppo

EVAL_EPISODES = 30


def cmd_run(args) -> None:
    for game in args.games:
        env_id = f"MinAtar/{game}-v1"
        for seed in args.seeds:
            model = fastppo.PPO("auto", env_id, seed=seed, **fastppo.presets.get(env_id))
            state = {"next": args.every, "start": time.perf_counter()}

            def write(row):
                print(json.dumps(row), flush=True)
                if args.out:
                    with open(args.out, "a") as f:
                        f.write(json.dumps(row) + "\n")

            class Record(fastppo.Callback):
                def on_iteration_end(self, metrics):
                    if self.model.num_timesteps >= state["next"]:
                        write(dict(env=env_id, seed=seed, steps=self.model.num_timesteps,
                                   seconds=round(time.perf_counter() - state["start"], 1),
                                   train_return=round(metrics.get("rollout/ep_rew_mean", float("nan")), 2)))
                        state["next"] += args.every
                    return True

            model.learn(args.timesteps, callback=Record())
            mean, std = fastppo.evaluate_policy(model, env_id, n_eval_episodes=EVAL_EPISODES, deterministic=False,
                                                seed=10_000)
            write(dict(env=env_id, seed=seed, steps=model.num_timesteps, final=True,
                       seconds=round(time.perf_counter() - state["start"], 1), eval_return=round(float(mean), 2),
                       eval_std=round(float(std), 2)))


def cmd_table(args) -> None:
    rows = [json.loads(line) for line in open(args.file)]
    curves: dict[tuple[str, int], dict[int, float]] = {}
    finals: dict[str, list[float]] = {}
    for row in rows:
        if row.get("final"):
            finals.setdefault(row["env"], []).append(row["eval_return"])
        else:
            curves.setdefault((row["env"], row["seed"]), {})[row["steps"]] = row["train_return"]
    marks = sorted({step for curve in curves.values() for step in curve})
    envs = sorted({env for env, _ in curves})
    print("| env | " + " | ".join(f"{m / 1e6:.2f}M" for m in marks) + " | evaluation (per seed) |")
    print("|---" * (len(marks) + 2) + "|")
    for env in envs:
        cells = []
        for mark in marks:
            values = [curve[mark] for (e, _), curve in sorted(curves.items()) if e == env and mark in curve]
            cells.append(f"{statistics.median(values):.1f} ({min(values):.1f}-{max(values):.1f})" if values else "")
        print(f"| {env} | " + " | ".join(cells) + f" | {', '.join(f'{v:.1f}' for v in finals.get(env, []))} |")


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    sub = parser.add_subparsers(dest="cmd", required=True)
    run = sub.add_parser("run")
    run.add_argument("--games", nargs="+", default=["Breakout"])
    run.add_argument("--seeds", nargs="+", type=int, default=[0, 1, 2])
    run.add_argument("--timesteps", type=int, default=2_000_000)
    run.add_argument("--every", type=int, default=250_000)
    run.add_argument("--out")
    table = sub.add_parser("table")
    table.add_argument("file")
    args = parser.parse_args()
    {"run": cmd_run, "table": cmd_table}[args.cmd](args)


if __name__ == "__main__":
    main()
