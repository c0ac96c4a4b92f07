"""Data-parallel training (torch.distributed, gloo, one machine): 1 process against 2 processes.

    flock /tmp/fastppo-bench.lock python bench/bench_distributed.py scaling   # weak scaling, steps/s
    flock /tmp/fastppo-bench.lock python bench/bench_distributed.py curve     # return at equal samples

``scaling``: the same per-process settings (CartPole-v1's PPO preset, and two larger rollouts and
minibatches; each process single-threaded: FASTPPO_NUM_THREADS=1 and torch's 1 thread) in 1 and in 2
processes, each process running the same number of iterations; steps/s is every process's env steps together over the training time, and
the time spent in collectives per iteration is measured around every call the trainer makes into the
process group (gradient all-reduces, moments, normaliser merges, votes). ``curve``: the same global
rollout and minibatch (16 envs and minibatches of 64 in one process; 8 envs and 32 in each of 2) and
samples, final return over 50 deterministic episodes
of one seeded env, three seeds. Each run is a fresh ``torchrun`` (one process: plain ``python``).
Prints markdown tables for bench/RESULTS.md.
"""

from __future__ import annotations

import argparse
import json
import os
import subprocess
import sys
import tempfile
import time

ENV = "CartPole-v1"


def worker(args) -> None:
    """One rank's training (run by torchrun, or alone): writes its measurements as JSON."""
    import torch

    import fastppo

    kwargs = {**fastppo.presets.get(ENV), "num_envs": args.num_envs, "seed": args.seed}
    kwargs.update({k: v for k, v in (("n_steps", args.n_steps), ("batch_size", args.batch_size),
                                     ("n_epochs", args.n_epochs)) if v is not None})
    model = fastppo.PPO("MlpPolicy", ENV, **kwargs)
    collective_s = [0.0]
    reducer = model.reducer
    if not reducer.local:  # time every call into the process group
        for name in ("gradients", "sum", "any", "broadcast_", "gather_objects"):  # the primitives: no double count
            method = getattr(reducer, name, None)
            if callable(method):
                def timed(*a, _method=method, **k):
                    start = time.perf_counter()
                    try:
                        return _method(*a, **k)
                    finally:
                        collective_s[0] += time.perf_counter() - start
                setattr(reducer, name, timed)
    torch.set_num_threads(1)
    start = time.perf_counter()
    model.learn(args.timesteps)
    seconds = time.perf_counter() - start
    out = {"rank": getattr(reducer, "rank", 0), "seconds": seconds, "timesteps": model.num_timesteps,
           "iterations": model.iteration, "collective_s": collective_s[0]}
    if out["rank"] == 0:
        out["return"] = fastppo.evaluate_policy(model, ENV, n_eval_episodes=50, seed=10_000)[0]
    with open(f"{args.out}.{out['rank']}", "w") as f:
        json.dump(out, f)


def run(processes: int, num_envs: int, timesteps: int, seed: int, sizes: tuple = ()) -> dict:
    """One training run in ``processes`` processes; rank 0's measurements (steps/s over all ranks)."""
    env = {**os.environ, "FASTPPO_NUM_THREADS": "1", "OMP_NUM_THREADS": "1"}
    with tempfile.TemporaryDirectory() as tmp:
        out = os.path.join(tmp, "result")
        args = [__file__, "worker", "--num-envs", str(num_envs), "--timesteps", str(timesteps), "--seed", str(seed),
                "--out", out, *sizes]
        if processes == 1:
            cmd = [sys.executable, *args]
        else:
            cmd = [sys.executable, "-m", "torch.distributed.run", "--standalone", f"--nproc_per_node={processes}",
                   *args]
        subprocess.run(cmd, check=True, env=env, cwd=tmp, timeout=1800, capture_output=True)
        ranks = [json.load(open(f"{out}.{r}")) for r in range(processes)]
    result = ranks[0]
    result["sps"] = result["timesteps"] / max(r["seconds"] for r in ranks)
    result["collective_s_per_iteration"] = max(r["collective_s"] for r in ranks) / result["iterations"]
    return result


def scaling(args) -> None:
    print("| settings per process | processes | iterations | timesteps | steps/s | scaling | collectives per iteration |")
    print("|---|---:|---:|---:|---:|---:|---:|")
    for envs, steps, batch, epochs in ((8, 32, 64, 5), (16, 256, 2048, 4), (64, 256, 8192, 4), (128, 256, 16384, 4)):
        name = f"{envs} envs x {steps} steps, minibatch {batch}, {epochs} epochs"
        sizes = ("--n-steps", str(steps), "--batch-size", str(batch), "--n-epochs", str(epochs))
        iterations = max(4, args.timesteps // (envs * steps))
        for repeat in range(args.repeats):
            one = run(1, envs, iterations * envs * steps, seed=repeat, sizes=sizes)
            two = run(2, envs, 2 * iterations * envs * steps, seed=repeat, sizes=sizes)
            for n, r in ((1, one), (2, two)):
                print(f"| {name} | {n} | {r['iterations']} | {r['timesteps']:,} | {r['sps']:,.0f} | "
                      f"{r['sps'] / one['sps']:.2f}x | {1e3 * r['collective_s_per_iteration']:.2f} ms |", flush=True)


def curve(args) -> None:
    print("| seed | samples | 1 process x 16 envs, minibatch 64 | 2 processes x 8 envs, minibatch 32 each |")
    print("|---:|---:|---:|---:|")
    for seed in range(args.seeds):
        # the same global rollout (16 envs) and minibatch (64 samples: 32 per process)
        one = run(1, 16, args.timesteps, seed)
        two = run(2, 8, args.timesteps, seed, sizes=("--batch-size", "32"))
        print(f"| {seed} | {args.timesteps:,} | {one['return']:.1f} | {two['return']:.1f} |", flush=True)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    sub = parser.add_subparsers(dest="command", required=True)
    s = sub.add_parser("scaling")
    s.add_argument("--timesteps", type=int, default=160_000, help="per process")
    s.add_argument("--repeats", type=int, default=3)
    c = sub.add_parser("curve")
    c.add_argument("--timesteps", type=int, default=70_000)
    c.add_argument("--seeds", type=int, default=3)
    w = sub.add_parser("worker")
    w.add_argument("--num-envs", type=int, required=True)
    w.add_argument("--timesteps", type=int, required=True)
    w.add_argument("--seed", type=int, required=True)
    w.add_argument("--out", required=True)
    for size in ("--n-steps", "--batch-size", "--n-epochs"):
        w.add_argument(size, type=int)
    args = parser.parse_args()
    {"scaling": scaling, "curve": curve, "worker": worker}[args.command](args)


if __name__ == "__main__":
    main()
