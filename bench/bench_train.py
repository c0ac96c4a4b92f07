"""End-to-end training benchmarks: fastppo against Stable-Baselines3 and a CleanRL-style PPO, all in
one process, one after another (never run two benchmarks at once on this machine).

    python bench/bench_train.py sps      # same hyperparameters (CleanRL's CartPole defaults): steps/s
    python bench/bench_train.py solve    # each at its best settings: training seconds to reach 475
    python bench/bench_train.py trpo     # TRPO against sb3-contrib's at the same budget and settings
    python bench/bench_train.py budget   # final return at a fixed budget: Acrobot, MountainCar, Pendulum
    python bench/bench_train.py parts    # fastppo's rollout and update, native against its torch path

Needs `pip install stable-baselines3` (and sb3-contrib for `trpo`). Prints markdown tables for
bench/RESULTS.md.
"""

from __future__ import annotations

import argparse
import statistics
import subprocess
import sys
import time

import numpy as np
import torch

import fastppo

CLEANRL = dict(num_envs=4, n_steps=128, batch_size=128, n_epochs=4, learning_rate="lin_2.5e-4", gamma=0.99,
               gae_lambda=0.95, clip_range=0.2, ent_coef=0.01, vf_coef=0.5, max_grad_norm=0.5)


def _lin(v):
    return lambda progress: progress * v


def sb3_ppo(env_id, num_envs, seed, **kw):
    from stable_baselines3 import PPO
    from stable_baselines3.common.env_util import make_vec_env
    from stable_baselines3.common.vec_env import VecNormalize

    normalize = kw.pop("normalize", False)
    env = make_vec_env(env_id, n_envs=num_envs, seed=seed)
    if normalize:
        env = VecNormalize(env, gamma=kw.get("gamma", 0.99))
    return PPO("MlpPolicy", env, seed=seed, device="cpu", **kw)


# Final returns are means over this many deterministic episodes, the same episodes for every trainer.
EVAL_EPISODES = 50

# rl-baselines3-zoo's tuned PPO settings (hyperparams/ppo.yml) in SB3's own names.
ZOO = {
    "CartPole-v1": dict(num_envs=8, n_steps=32, batch_size=256, gae_lambda=0.8, gamma=0.98, n_epochs=20,
                        ent_coef=0.0, learning_rate=_lin(1e-3), clip_range=_lin(0.2)),
    "Acrobot-v1": dict(num_envs=16, n_steps=256, gae_lambda=0.94, gamma=0.99, n_epochs=4, ent_coef=0.0,
                       normalize=True),
    "MountainCar-v0": dict(num_envs=16, n_steps=16, gae_lambda=0.98, gamma=0.99, n_epochs=4, ent_coef=0.0,
                           normalize=True),
    "Pendulum-v1": dict(num_envs=4, n_steps=1024, gae_lambda=0.95, gamma=0.9, n_epochs=10, ent_coef=0.0,
                        learning_rate=1e-3, clip_range=0.2, use_sde=True, sde_sample_freq=4),
}


def evaluate(model, env_id, n=EVAL_EPISODES, seed=10_000):
    """Mean return of n deterministic episodes of one gymnasium env seeded `seed`: the same episodes for
    every trainer (SB3's evaluate_policy; an SB3 model trained under VecNormalize sees observations
    normalised with its frozen training statistics, a fastppo model normalises inside predict)."""
    from stable_baselines3.common.evaluation import evaluate_policy
    from stable_baselines3.common.env_util import make_vec_env
    from stable_baselines3.common.vec_env import VecNormalize

    env = make_vec_env(env_id, n_envs=1, seed=seed)
    trained_on = model.get_env() if hasattr(model, "get_env") else None
    if isinstance(trained_on, VecNormalize):
        env = VecNormalize(env, training=False, norm_reward=False)
        env.obs_rms = trained_on.obs_rms
    mean, _ = evaluate_policy(model, env, n_eval_episodes=n, deterministic=True)
    return mean


def _train_and_score(model, env_id, budget, seconds: list, returns: list) -> None:
    """Train `model` (fastppo's or SB3's) for `budget` steps; append the training seconds and the
    final return (`evaluate`, off the clock)."""
    t = time.perf_counter()
    model.learn(budget, progress_bar=False)
    seconds.append(time.perf_counter() - t)
    returns.append(evaluate(model, env_id))


def cmd_sps(args):
    sys.path.insert(0, "bench")
    from cleanrl_style_ppo import Args, train

    rows = {name: [] for name in ["fastppo", *args.peers]}
    for seed in range(args.seeds):
        m = fastppo.PPO("MlpPolicy", "CartPole-v1", seed=seed, **CLEANRL)
        t = time.perf_counter()
        m.learn(args.timesteps, progress_bar=False)
        rows["fastppo"].append(m.num_timesteps / (time.perf_counter() - t))
        if "SB3" in rows:
            kw = {k: v for k, v in CLEANRL.items() if k != "num_envs"}
            kw["learning_rate"] = _lin(2.5e-4)
            s = sb3_ppo("CartPole-v1", 4, seed, policy_kwargs=dict(net_arch=[64, 64]), **kw)
            t = time.perf_counter()
            s.learn(args.timesteps)
            rows["SB3"].append(s.num_timesteps / (time.perf_counter() - t))
        if "CleanRL-style" in rows:
            rows["CleanRL-style"].append(train(Args(total_timesteps=args.timesteps, seed=seed))["sps"])
    base = statistics.median(rows["fastppo"])
    print(f"\nCartPole-v1, CleanRL's defaults (4 envs x 128 steps, 4 epochs x 4 minibatches, 64-64 tanh), "
          f"{args.timesteps} steps, {args.seeds} seeds, torch threads {torch.get_num_threads()}:\n")
    print("| trainer | steps/s (median) | fastppo is |\n|---|---|---|")
    for name, values in rows.items():
        med = statistics.median(values)
        print(f"| {name} | {med:,.0f} | {'1.0x' if name == 'fastppo' else f'{base / med:.1f}x faster'} |")


class _Solve:
    """Evaluate every `every` steps (10 deterministic episodes, off the clock) and stop at >= 475."""

    def __init__(self, evaluate, every):
        self.evaluate, self.every, self.next, self.eval_s, self.solved_at = evaluate, every, every, 0.0, None

    def check(self, steps) -> bool:
        """False (stop) once solved."""
        if steps < self.next:
            return True
        self.next += self.every
        t = time.perf_counter()
        mean = self.evaluate()
        self.eval_s += time.perf_counter() - t
        if mean >= 475:
            self.solved_at = steps
            return False
        return True


def cmd_solve(args):
    from stable_baselines3.common.callbacks import BaseCallback

    results = {"fastppo": [], "SB3 (rl-zoo)": []}
    budget = fastppo.presets.total_timesteps("CartPole-v1")  # rl-zoo's 1e5: the schedules' horizon
    for seed in range(args.seeds):
        m = fastppo.PPO("MlpPolicy", "CartPole-v1", seed=seed, **fastppo.presets.get("CartPole-v1"))
        solve = _Solve(lambda: evaluate(m, "CartPole-v1", 10), args.chunk)

        class Stop(fastppo.Callback):
            def on_iteration_end(self, metrics, solve=solve):
                return solve.check(self.model.num_timesteps)

        t = time.perf_counter()
        m.learn(budget, callback=Stop(), progress_bar=False)
        results["fastppo"].append((time.perf_counter() - t - solve.eval_s, solve.solved_at))

        zoo = dict(ZOO["CartPole-v1"])
        s = sb3_ppo("CartPole-v1", zoo.pop("num_envs"), seed, **zoo)
        sb3_solve = _Solve(lambda: evaluate(s, "CartPole-v1", 10), args.chunk)

        class StopSB3(BaseCallback):
            def _on_rollout_end(self, solve=sb3_solve):
                self.go = solve.check(self.model.num_timesteps)

            def _on_step(self):
                return getattr(self, "go", True)

        t = time.perf_counter()
        s.learn(budget, callback=StopSB3())
        results["SB3 (rl-zoo)"].append((time.perf_counter() - t - sb3_solve.eval_s, sb3_solve.solved_at))

    t = time.perf_counter()
    out = subprocess.run([sys.executable, "-m", "fastppo", "train", "CartPole-v1", "--json", "--no-progress", "--run-dir",
                          "/tmp/fastppo-bench-run"], capture_output=True, text=True, check=True)
    process_s = time.perf_counter() - t
    print(f"\nCartPole-v1, time to a mean evaluation return >= 475 (10 deterministic episodes every "
          f"{args.chunk} steps, evaluation off the clock; budget {budget:,} steps), {args.seeds} seeds:\n")
    print("| trainer | training seconds (median) | solved at steps (median) | per seed (s) |\n|---|---|---|---|")
    med = {}
    for name, vals in results.items():
        secs = [v[0] if v[1] is not None else float("inf") for v in vals]
        med[name] = statistics.median(secs)
        steps = [v[1] for v in vals if v[1] is not None]
        print(f"| {name} | {med[name]:.2f} | {statistics.median(steps) if steps else 'unsolved'} | "
              f"{', '.join(f'{x:.2f}' for x in secs)} |")
    print(f"\nfastppo reaches 475 {med['SB3 (rl-zoo)'] / med['fastppo']:.1f}x sooner. The whole `fastppo train "
          f"CartPole-v1` process (imports, training, final evaluation): {process_s:.1f} s; its summary: "
          f"{out.stdout.strip().splitlines()[-1]}")


def cmd_trpo(args):
    from sb3_contrib import TRPO as SB3TRPO
    from stable_baselines3.common.env_util import make_vec_env
    from stable_baselines3.common.vec_env import VecNormalize

    # sb3-contrib's rl-zoo settings (hyperparams/trpo.yml); Pendulum there adds gSDE, which fastppo runs only
    # on its torch path, so both run it with plain Gaussian noise and normalisation here.
    settings = {
        "CartPole-v1": (100_000, dict(n_steps=512, batch_size=512, cg_damping=1e-3, gae_lambda=0.98, gamma=0.99,
                                      learning_rate=1e-3, n_critic_updates=20), 2, False),
        "Pendulum-v1": (100_000, dict(n_steps=1024, batch_size=512, gae_lambda=0.95, gamma=0.9, learning_rate=1e-3,
                                      n_critic_updates=20), 2, True),
    }
    print("\n| env | budget | fastppo TRPO return | fastppo s | sb3-contrib TRPO return | sb3-contrib s | "
          "wall-clock ratio |\n|---|---|---|---|---|---|---|")
    for env_id, (budget, kw, n_envs, normalize) in settings.items():
        f_ret, f_s, s_ret, s_s = [], [], [], []
        for seed in range(args.seeds):
            m = fastppo.TRPO("MlpPolicy", env_id, seed=seed, num_envs=n_envs, normalize_obs=normalize,
                             normalize_reward=normalize, **kw)
            _train_and_score(m, env_id, budget, f_s, f_ret)
            env = make_vec_env(env_id, n_envs=n_envs, seed=seed)
            if normalize:
                env = VecNormalize(env, gamma=kw["gamma"])
            s = SB3TRPO("MlpPolicy", env, seed=seed, device="cpu", **kw)
            _train_and_score(s, env_id, budget, s_s, s_ret)
        med = statistics.median
        print(f"| {env_id} | {budget:,} | {med(f_ret):.1f} | {med(f_s):.1f} | {med(s_ret):.1f} | {med(s_s):.1f} | "
              f"{med(s_s) / med(f_s):.1f}x |")


def cmd_budget(args):
    budgets = {"Acrobot-v1": 100_000, "MountainCar-v0": 200_000, "Pendulum-v1": 100_000}
    budgets = {k: v for k, v in budgets.items() if not args.envs or k in args.envs}
    print("\n| env | budget | fastppo return | fastppo s | SB3 (rl-zoo) return | SB3 s |\n|---|---|---|---|---|---|")
    for env_id, budget in budgets.items():
        f_ret, f_s, s_ret, s_s = [], [], [], []
        for seed in range(args.seeds):
            m = fastppo.PPO("MlpPolicy", env_id, seed=seed, **fastppo.presets.get(env_id))
            _train_and_score(m, env_id, budget, f_s, f_ret)
            zoo = dict(ZOO[env_id])
            s = sb3_ppo(env_id, zoo.pop("num_envs"), seed, **zoo)
            _train_and_score(s, env_id, budget, s_s, s_ret)
        med = statistics.median
        print(f"| {env_id} | {budget:,} | {med(f_ret):.1f} | {med(f_s):.1f} | {med(s_ret):.1f} | {med(s_s):.1f} |")


def cmd_parts(args):
    """Milliseconds per iteration of the two halves of fastppo's loop at CleanRL's settings, the native
    path against the torch path (its spec) in one process: `_collect` and `_update`. Both models step the
    same native envs (an env instance, so that backend="torch" does not swap them for gymnasium's)."""
    rows = []
    for part in ("_collect", "_update"):
        times = {}
        for backend in ("cpp", "torch"):
            env = fastppo.make_vec_env("CartPole-v1", CLEANRL["num_envs"], seed=0)
            m = fastppo.PPO("MlpPolicy", env, seed=0, backend=backend,
                            **{k: v for k, v in CLEANRL.items() if k != "num_envs"})
            assert m.native == (backend == "cpp")
            m._reset_envs()
            m._collect(None)
            call = (lambda: m._collect(None)) if part == "_collect" else (lambda: m._update(1.0))
            with m.torch_thread_scope():
                call()  # warm-up
                t = time.perf_counter()
                for _ in range(args.repeats):
                    call()
                times[backend] = (time.perf_counter() - t) / args.repeats * 1e3
        rows.append((part, times["cpp"], times["torch"]))
    print(f"\nCartPole-v1, CleanRL's settings ({CLEANRL['num_envs']} envs x {CLEANRL['n_steps']} steps, "
          f"{CLEANRL['n_epochs']} epochs x {CLEANRL['n_steps'] * CLEANRL['num_envs'] // CLEANRL['batch_size']} "
          f"minibatches), mean of {args.repeats} iterations:\n")
    print("| part | native ms | torch path ms | native is |\n|---|---|---|---|")
    for part, native, reference in rows:
        print(f"| `{part}` | {native:.2f} | {reference:.2f} | {reference / native:.1f}x faster |")


def main():
    p = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    p.add_argument("what", choices=["sps", "solve", "budget", "trpo", "parts"])
    p.add_argument("--seeds", type=int, default=3)
    p.add_argument("--timesteps", type=int, default=20_480, help="sps: steps per run")
    p.add_argument("--peers", nargs="*", default=["SB3", "CleanRL-style"], choices=["SB3", "CleanRL-style"],
                   help="sps: the trainers measured beside fastppo (none: fastppo alone)")
    p.add_argument("--chunk", type=int, default=2_048, help="solve: steps between evaluations")
    p.add_argument("--envs", nargs="*", help="budget: only these env ids")
    p.add_argument("--repeats", type=int, default=20, help="parts: iterations timed per part")
    args = p.parse_args()
    np.set_printoptions(precision=3)
    {"sps": cmd_sps, "solve": cmd_solve, "budget": cmd_budget, "trpo": cmd_trpo, "parts": cmd_parts}[args.what](args)


if __name__ == "__main__":
    main()
