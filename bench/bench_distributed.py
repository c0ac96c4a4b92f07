"""Data-parallel training (torch.distributed, gloo, one machine): 1 process against 2 processes.

    flock /tmp/fastppo-bench.lock python bench/bench_distributed.py scaling   # weak scaling, steps/s
    flock /tmp/fastppo-bench.lock python bench/bench_distributed.py curve     # return at equal samples
    flock /tmp/fastppo-bench.lock python bench/bench_distributed.py latency   # one all-reduce, pinned or not

``scaling``: the same per-process settings (CartPole-v1's PPO preset, and larger rollouts and
minibatches; each process single-threaded: FASTPPO_NUM_THREADS=1 and torch's 1 thread) in 1 and in 2
processes, each process running the same number of iterations. Steps/s is every process's env steps
together over the training time; the time spent in collectives per iteration is measured around every
call the trainer makes into the process group (gradient all-reduces, moments, normaliser merges, votes);
"stolen" is the share of the machine's CPU time the hypervisor gave to other guests during the run
(/proc/stat's steal), which slows one process and, through every collective, both. ``--pin`` adds a
third run, with each process pinned to its own core (an experiment: fastppo does not pin).

``latency``: one gloo all-reduce between 2 processes, each pinned to its own core or not.

``curve``: the same global rollout and minibatch (16 envs and minibatches of 64 in one process; 8 envs and
32 in each of 2) and samples, final return over 50 deterministic episodes of one seeded env, three seeds.
Each run is a fresh ``torchrun`` (one process: plain ``python``).
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
    if args.pin:
        pin_to_local_core()
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


def pin_to_local_core() -> None:
    """The experiment fastppo does not ship (docs/architecture.md, data-parallel "Threads"): every thread of
    this process (gloo's included) pinned to core LOCAL_RANK, so that the ranks never share a core."""
    core = {int(os.environ.get("LOCAL_RANK", "0"))}
    for tid in os.listdir("/proc/self/task"):
        try:
            os.sched_setaffinity(int(tid), core)
        except ProcessLookupError:  # ended since the listing
            pass


def latency_worker(args) -> None:
    """One rank of ``latency``: the time of a gloo all-reduce of 1 and of 9,000 floats (PPO's CartPole
    gradient), ``--calls`` each after 50 to warm up; rank 0 prints the median and the 90th percentile."""
    import numpy as np
    import torch
    import torch.distributed as dist

    dist.init_process_group("gloo")
    if args.pin:
        pin_to_local_core()
    for size in (1, 9000):
        x = torch.zeros(size)
        for _ in range(50):
            dist.all_reduce(x)
        times = []
        for _ in range(args.calls):
            start = time.perf_counter()
            dist.all_reduce(x)
            times.append(time.perf_counter() - start)
        if dist.get_rank() == 0:
            ms = 1e3 * np.array(times)
            print(json.dumps({"floats": size, "median_ms": float(np.median(ms)),
                              "p90_ms": float(np.percentile(ms, 90))}), flush=True)
    dist.destroy_process_group()


def latency(args) -> None:
    """Pinned against not pinned, alternating, ``--repeats`` launches of 2 ranks each."""
    print("| launch | ranks pinned to a core each | floats | median | 90th percentile |\n|---:|---|---:|---:|---:|")
    env = {**os.environ, "OMP_NUM_THREADS": "1"}
    for repeat in range(args.repeats):
        for pin in (False, True):
            cmd = [sys.executable, "-m", "torch.distributed.run", "--standalone", "--nproc_per_node=2", __file__,
                   "latency-worker", "--calls", str(args.calls), *(["--pin"] if pin else [])]
            done = subprocess.run(cmd, check=True, env=env, timeout=600, capture_output=True, text=True)
            for line in done.stdout.splitlines():
                r = json.loads(line)
                print(f"| {repeat} | {'yes' if pin else 'no'} | {r['floats']:,} | {r['median_ms']:.2f} ms | "
                      f"{r['p90_ms']:.2f} ms |", flush=True)


def cpu_ticks() -> tuple[int, int]:
    """The machine's (stolen, all) CPU time so far, in ticks (/proc/stat; (0, 0) where there is none)."""
    try:
        with open("/proc/stat") as f:
            ticks = [int(x) for x in f.readline().split()[1:]]
    except OSError:
        return 0, 0
    return ticks[7], sum(ticks[:8])  # user nice system idle iowait irq softirq steal (guest time is in user)


def run(processes: int, num_envs: int, timesteps: int, seed: int, sizes: tuple = (), pin: bool = False) -> dict:
    """One training run in ``processes`` processes; rank 0's measurements (steps/s over all ranks)."""
    env = {**os.environ, "FASTPPO_NUM_THREADS": "1", "OMP_NUM_THREADS": "1"}
    stolen, total = cpu_ticks()
    with tempfile.TemporaryDirectory() as tmp:
        out = os.path.join(tmp, "result")
        args = [__file__, "worker", "--num-envs", str(num_envs), "--timesteps", str(timesteps), "--seed", str(seed),
                "--out", out, *sizes, *(["--pin"] if pin else [])]
        if processes == 1:
            cmd = [sys.executable, *args]
        else:
            cmd = [sys.executable, "-m", "torch.distributed.run", "--standalone", f"--nproc_per_node={processes}",
                   *args]
        subprocess.run(cmd, check=True, env=env, cwd=tmp, timeout=1800, capture_output=True)
        ranks = [json.load(open(f"{out}.{r}")) for r in range(processes)]
    stolen_after, total_after = cpu_ticks()
    result = ranks[0]
    result["stolen"] = (stolen_after - stolen) / max(1, total_after - total)
    result["sps"] = result["timesteps"] / max(r["seconds"] for r in ranks)
    result["collective_s_per_iteration"] = max(r["collective_s"] for r in ranks) / result["iterations"]
    return result


SETTINGS = {"preset": (8, 32, 64, 5), "16x256": (16, 256, 2048, 4), "64x256": (64, 256, 8192, 4),
            "128x256": (128, 256, 16384, 4)}  # envs, steps, minibatch, epochs per process


def scaling(args) -> None:
    print("| settings per process | processes | iterations | timesteps | steps/s | scaling | collectives per "
          "iteration | stolen |")
    print("|---|---:|---:|---:|---:|---:|---:|---:|")
    for envs, steps, batch, epochs in (SETTINGS[name] for name in args.settings):
        name = f"{envs} envs x {steps} steps, minibatch {batch}, {epochs} epochs"
        sizes = ("--n-steps", str(steps), "--batch-size", str(batch), "--n-epochs", str(epochs))
        iterations = max(4, args.timesteps // (envs * steps))
        for repeat in range(args.repeats):
            one = run(1, envs, iterations * envs * steps, seed=repeat, sizes=sizes)
            runs = [("1", one), ("2", run(2, envs, 2 * iterations * envs * steps, seed=repeat, sizes=sizes))]
            if args.pin:
                runs.append(("2, pinned", run(2, envs, 2 * iterations * envs * steps, seed=repeat, sizes=sizes,
                                              pin=True)))
            for n, r in runs:
                print(f"| {name} | {n} | {r['iterations']} | {r['timesteps']:,} | {r['sps']:,.0f} | "
                      f"{r['sps'] / one['sps']:.2f}x | {1e3 * r['collective_s_per_iteration']:.2f} ms | "
                      f"{100 * r['stolen']:.1f}% |", flush=True)


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
    s.add_argument("--settings", nargs="+", choices=list(SETTINGS), default=list(SETTINGS))
    s.add_argument("--pin", action="store_true", help="also run 2 processes with each pinned to its own core")
    lat = sub.add_parser("latency")
    lat.add_argument("--repeats", type=int, default=3)
    lat.add_argument("--calls", type=int, default=1000)
    lw = sub.add_parser("latency-worker")
    lw.add_argument("--calls", type=int, required=True)
    lw.add_argument("--pin", action="store_true")
    c = sub.add_parser("curve")
    c.add_argument("--timesteps", type=int, default=70_000)
    c.add_argument("--seeds", type=int, default=3)
    w = sub.add_parser("worker")
    w.add_argument("--num-envs", type=int, required=True)
    w.add_argument("--timesteps", type=int, required=True)
    w.add_argument("--seed", type=int, required=True)
    w.add_argument("--out", required=True)
    w.add_argument("--pin", action="store_true")
    for size in ("--n-steps", "--batch-size", "--n-epochs"):
        w.add_argument(size, type=int)
    args = parser.parse_args()
    {"scaling": scaling, "curve": curve, "worker": worker, "latency": latency,
     "latency-worker": latency_worker}[args.command](args)


if __name__ == "__main__":
    main()
