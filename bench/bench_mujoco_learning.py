"""Learning on MuJoCo: fastppo against Stable-Baselines3 at identical settings (CleanRL's continuous-control
defaults), each seed's final return by the same evaluation. Never run in CI.

    flock /tmp/fastppo-bench.lock python bench/bench_mujoco_learning.py parity --envs Hopper-v5 HalfCheetah-v5 \\
        --seeds 1 2 3 4 5 --out bench/mujoco_parity.jsonl
    python bench/bench_mujoco_learning.py table bench/mujoco_parity.jsonl
    flock /tmp/fastppo-bench.lock python bench/bench_mujoco_learning.py sps --envs HalfCheetah-v5 --repeats 3
    python bench/bench_mujoco_learning.py curve --envs HalfCheetah-v5 --seeds 0 --out bench/mujoco_curve.jsonl
    python bench/bench_mujoco_learning.py curve-table bench/mujoco_curve.jsonl

One JSON line per finished run (appended, so a long sweep can be split across invocations with
``--trainers``/``--seeds`` and resumed); ``table`` prints per-seed returns and medians for RESULTS.md.
Settings (both trainers): 1 env x 2048 steps, 10 epochs of minibatches of 64, learning rate 3e-4 annealed
linearly to 0, gamma 0.99, lambda 0.95, clip 0.2, no value clipping, entropy 0, vf_coef 0.5 (SB3's
meaning in both), max gradient norm 0.5, 64-64 tanh with orthogonal initialisation, log-std 0, and
observations and rewards normalised (SB3's VecNormalize; fastppo's normalize_obs / normalize_reward).
Evaluation: 10 deterministic episodes of one gymnasium env seeded 10,000, observations normalised with
the trained statistics, frozen (bench_train.evaluate).
"""

from __future__ import annotations

import argparse
import json
import statistics
import sys
import time

sys.path.insert(0, "bench")

import fastppo  # noqa: E402
from bench_train import evaluate  # noqa: E402

SETTINGS = dict(n_steps=2048, batch_size=64, n_epochs=10, gamma=0.99, gae_lambda=0.95, clip_range=0.2,
                ent_coef=0.0, vf_coef=0.5, max_grad_norm=0.5)
EVAL_EPISODES = 10


def fastppo_model(env_id: str, seed: int):
    return fastppo.PPO("MlpPolicy", env_id, seed=seed, learning_rate="lin_3e-4", normalize_obs=True,
                       normalize_reward=True, **SETTINGS)


def sb3_model(env_id: str, seed: int):
    from stable_baselines3 import PPO
    from stable_baselines3.common.env_util import make_vec_env
    from stable_baselines3.common.vec_env import VecNormalize

    env = VecNormalize(make_vec_env(env_id, n_envs=1, seed=seed), gamma=SETTINGS["gamma"])
    return PPO("MlpPolicy", env, seed=seed, device="cpu", learning_rate=lambda progress: 3e-4 * progress,
               **SETTINGS)


TRAINERS = {"fastppo": fastppo_model, "SB3": sb3_model}


def cmd_parity(args) -> None:
    for env_id in args.envs:
        for seed in args.seeds:
            for trainer in args.trainers:
                model = TRAINERS[trainer](env_id, seed)
                start = time.perf_counter()
                model.learn(args.timesteps)
                seconds = time.perf_counter() - start
                row = dict(env=env_id, trainer=trainer, seed=seed, timesteps=args.timesteps, seconds=round(seconds, 1),
                           ret=round(float(evaluate(model, env_id, n=EVAL_EPISODES)), 1))
                print(json.dumps(row), flush=True)
                if args.out:
                    with open(args.out, "a") as f:
                        f.write(json.dumps(row) + "\n")


def cmd_curve(args) -> None:
    """fastppo's preset (or CleanRL's defaults) over a long budget, evaluated every --every steps (one JSON
    line each): the return at the end against the best seen on the way, and the end beside published
    numbers."""
    if args.set and args.settings == "cleanrl":
        raise SystemExit("--set replaces the preset's hyperparameters: it does not apply to --settings cleanrl")
    overrides = {}
    for item in args.set:  # KEY=VALUE, the value JSON where it parses (as the CLI's --set)
        key, _, value = item.partition("=")
        try:
            overrides[key] = json.loads(value)
        except json.JSONDecodeError:
            overrides[key] = value
    for env_id in args.envs:
        for seed in args.seeds:
            model = (fastppo_model(env_id, seed) if args.settings == "cleanrl"
                     else fastppo.PPO("MlpPolicy", env_id, seed=seed, **{**fastppo.presets.get(env_id), **overrides}))
            marks = iter(range(args.every, args.timesteps + 1, args.every))
            state = {"next": next(marks, None), "start": time.perf_counter()}

            class Evaluate(fastppo.Callback):
                def on_iteration_end(self, metrics):
                    if state["next"] is not None and self.model.num_timesteps >= state["next"]:
                        seconds = round(time.perf_counter() - state["start"], 1)
                        # one set of 10 episodes per evaluation seed, the first the same as every other row's
                        scores = [fastppo.evaluate_policy(self.model, env_id, n_eval_episodes=EVAL_EPISODES,
                                                          seed=10_000 + EVAL_EPISODES * k)
                                  for k in range(args.eval_seeds)]
                        settings = " ".join([f"fastppo {args.settings}", *args.set])
                        row = dict(env=env_id, trainer=settings, seed=seed, steps=self.model.num_timesteps,
                                   seconds=seconds, ret=round(float(scores[0][0]), 1), std=round(float(scores[0][1]), 1))
                        if args.eval_seeds > 1:
                            row["rets"] = [round(float(mean), 1) for mean, _ in scores]
                        print(json.dumps(row), flush=True)
                        if args.out:
                            with open(args.out, "a") as f:
                                f.write(json.dumps(row) + "\n")
                        state["next"] = next(marks, None)
                    return True

            model.learn(args.timesteps, callback=Evaluate())


def cmd_sps(args) -> None:
    """Training steps per second at an env's fastppo preset, fastppo and SB3 with the same settings (the
    preset's net, normalisation and schedule), alternating, after a warm-up iteration each."""
    from stable_baselines3 import PPO as SB3PPO
    from stable_baselines3.common.env_util import make_vec_env
    from stable_baselines3.common.vec_env import VecNormalize

    print("| env | steps | fastppo steps/s | SB3 steps/s | ratio |\n|---|---|---|---|---|")
    for env_id in args.envs:
        kwargs = fastppo.presets.get(env_id)
        num_envs = kwargs.pop("num_envs")
        normalize = dict(norm_obs=kwargs.pop("normalize_obs", False), norm_reward=kwargs.pop("normalize_reward", False))
        sb3_kwargs = {**kwargs, "policy_kwargs": _sb3_policy_kwargs(kwargs.get("policy_kwargs", {}))}
        for _ in range(args.repeats):
            rates = {}
            for trainer in ("fastppo", "SB3"):
                if trainer == "fastppo":
                    model = fastppo.PPO("MlpPolicy", env_id, num_envs=num_envs, seed=0, **kwargs,
                                        normalize_obs=normalize["norm_obs"], normalize_reward=normalize["norm_reward"])
                else:
                    env = VecNormalize(make_vec_env(env_id, n_envs=num_envs, seed=0), gamma=kwargs.get("gamma", 0.99),
                                       **normalize)
                    model = SB3PPO("MlpPolicy", env, seed=0, device="cpu", **sb3_kwargs)
                model.learn(kwargs["n_steps"] * num_envs)  # warm-up: one iteration
                start = time.perf_counter()
                model.learn(args.timesteps, reset_num_timesteps=False)
                rates[trainer] = args.timesteps / (time.perf_counter() - start)
            print(f"| {env_id} | {args.timesteps:,} | {rates['fastppo']:,.0f} | {rates['SB3']:,.0f} | "
                  f"{rates['fastppo'] / rates['SB3']:.1f}x |", flush=True)


def _sb3_policy_kwargs(policy_kwargs: dict) -> dict:
    """fastppo's policy_kwargs for SB3 (an activation named by string there, a class here)."""
    import torch

    out = dict(policy_kwargs)
    if isinstance(out.get("activation_fn"), str):
        out["activation_fn"] = {"relu": torch.nn.ReLU, "tanh": torch.nn.Tanh}[out["activation_fn"]]
    return out


def cmd_table(args) -> None:
    rows = [json.loads(line) for line in open(args.results) if line.strip()]
    print("| env | trainer | steps | returns by seed | median | mean s per run |\n|---|---|---|---|---|---|")
    for key in sorted({(r["env"], r["trainer"], r["timesteps"]) for r in rows}):
        runs = sorted((r for r in rows if (r["env"], r["trainer"], r["timesteps"]) == key), key=lambda r: r["seed"])
        returns = ", ".join(f"{r['ret']:,.0f} ({r['seed']})" for r in runs)
        print(f"| {key[0]} | {key[1]} | {key[2]:,} | {returns} | {statistics.median(r['ret'] for r in runs):,.0f} | "
              f"{statistics.mean(r['seconds'] for r in runs):.0f} |")


def cmd_curve_table(args) -> None:
    """The markdown table of ``curve``'s rows: per run, the return at every mark, at the end, the best on the
    way, and whether the end is at least the best (the issue's stability bar)."""
    rows = [json.loads(line) for line in open(args.results) if line.strip()]
    runs = {}
    for r in rows:  # older rows name their settings
        runs.setdefault((r["env"], r.get("settings") or r["trainer"], r["seed"]), []).append(r)
    runs = {key: sorted(run, key=lambda r: r["steps"]) for key, run in sorted(runs.items())}
    print("| env | settings | seed | return every mark (10 deterministic episodes) | at the end | best on the way | "
          "end >= best? |\n|---|---|---|---|---|---|---|")
    for key, run in runs.items():
        returns = [r["ret"] for r in run]
        best = max(returns[:-1], default=float("-inf"))
        print(f"| {key[0]} | {key[1]} | {key[2]} | {', '.join(f'{x:,.0f}' for x in returns)} | {returns[-1]:,.0f} | "
              f"{best:,.0f} | {'yes' if returns[-1] >= best else 'no'} |")
    spread = {key: run for key, run in runs.items() if all("rets" in r for r in run)}
    if spread:  # runs evaluated on several sets of 10 episodes (curve --eval-seeds): the bar on their means
        print("\n| env | settings | seed | sets of 10 episodes | widest spread between the sets at one mark | "
              "mean at the end | best mean on the way | end >= best? | end / best |\n|---|---|---|---|---|---|---|---|---|")
        for key, run in spread.items():
            means = [statistics.mean(r["rets"]) for r in run]
            best = max(means[:-1], default=float("-inf"))
            print(f"| {key[0]} | {key[1]} | {key[2]} | {len(run[-1]['rets'])} | "
                  f"{max(max(r['rets']) - min(r['rets']) for r in run):,.0f} | {means[-1]:,.0f} | {best:,.0f} | "
                  f"{'yes' if means[-1] >= best else 'no'} | {means[-1] / best:.3f} |")


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    sub = parser.add_subparsers(dest="command", required=True)
    parity = sub.add_parser("parity", help="train and evaluate; one JSON line per run")
    parity.add_argument("--envs", nargs="+", default=["Hopper-v5", "HalfCheetah-v5"])
    parity.add_argument("--seeds", nargs="+", type=int, default=[1, 2, 3, 4, 5])
    parity.add_argument("--trainers", nargs="+", choices=list(TRAINERS), default=list(TRAINERS))
    parity.add_argument("--timesteps", type=int, default=200_000)
    parity.add_argument("--out", help="append the JSON lines to this file")
    curve = sub.add_parser("curve", help="fastppo's preset over a long budget, evaluated along the way")
    curve.add_argument("--envs", nargs="+", default=["HalfCheetah-v5", "Hopper-v5", "Walker2d-v5", "Ant-v5"])
    curve.add_argument("--seeds", nargs="+", type=int, default=[0, 1, 2])
    curve.add_argument("--timesteps", type=int, default=1_000_000)
    curve.add_argument("--every", type=int, default=100_000)
    curve.add_argument("--settings", choices=["preset", "cleanrl"], default="preset",
                       help="the env's fastppo preset, or CleanRL's defaults (the parity settings)")
    curve.add_argument("--set", action="append", default=[], metavar="KEY=VALUE",
                       help="replace one of the preset's hyperparameters (the value JSON where it parses)")
    curve.add_argument("--eval-seeds", type=int, default=1,
                       help="evaluate each mark on this many sets of 10 episodes (env seeds 10,000, 10,010, ...)")
    curve.add_argument("--out", help="append the JSON lines to this file")
    sps = sub.add_parser("sps", help="steps/s at the preset's settings, fastppo against SB3")
    sps.add_argument("--envs", nargs="+", default=["HalfCheetah-v5"])
    sps.add_argument("--timesteps", type=int, default=5120)
    sps.add_argument("--repeats", type=int, default=3)
    table = sub.add_parser("table", help="the markdown table of a results file")
    table.add_argument("results")
    curve_table = sub.add_parser("curve-table", help="the markdown table of curve's results file")
    curve_table.add_argument("results")
    args = parser.parse_args()
    {"parity": cmd_parity, "curve": cmd_curve, "sps": cmd_sps, "table": cmd_table,
     "curve-table": cmd_curve_table}[args.command](args)


if __name__ == "__main__":
    main()
