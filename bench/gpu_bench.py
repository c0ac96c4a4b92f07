"""The GPU benchmarks of bench/gpu_check.sh, one JSON document on stdout (and in --out). Never run in CI;
needs a CUDA device and fastppo built with its CUDA kernels (or the fastppo-cuda plugin).

    python bench/gpu_bench.py [--quick] [--out FILE]

- envs: env steps per second of the five built-in envs on the CUDA engine at 4,096 and 65,536 envs,
  stepped as the trainer steps them (``step_sampled``: no per-step value checks, so no host sync) and
  through the checked ``step``; beside them the CPU engine at the same count on every core of the same
  machine (the ratio is GPU / CPU, measured in this run).
- train: PPO on CartPole-v1 with 4,096 envs on the GPU (the resident rollout, GAE and the fused loss
  there; the update eager, ``cuda_graphs=False``): training steps per second, the seconds until
  ``rollout/ep_rew_mean`` first reaches 475, and an evaluation after training; beside it the same
  settings on the CPU (native trainer) for a short budget, on the GPU with
  ``torch_compile={"mode": "reduce-overhead"}`` (inductor and CUDA graphs), and on the GPU with the
  default ``cuda_graphs=True`` (the rollout's step and the update's replayed from CUDA graphs: each run
  says what became of its graphs); an error in either of those two runs is recorded, not raised.
- ops: GAE and the fused PPO loss (forward + backward) against their torch references on the GPU, at the
  CPU tables' sizes plus 10M elements; the median of CUDA-event-timed repeats.
"""

from __future__ import annotations

import argparse
import json
import platform
import statistics
import time

import torch

import fastppo
from fastppo.envs import BuiltinVecEnv
from fastppo.ops import gae_reference, ppo_loss_reference

ENVS = ("CartPole-v1", "Acrobot-v1", "MountainCar-v0", "MountainCarContinuous-v0", "Pendulum-v1")
TRAIN = dict(num_envs=4096, n_steps=16, batch_size=16384, n_epochs=4, gae_lambda=0.95, gamma=0.99,
             learning_rate="lin_1e-3", clip_range=0.2, ent_coef=0.0, vf_coef=0.5)
LOSS_OPTIONS = dict(clip_coef=0.2, vf_coef=0.5, ent_coef=0.01, vf_clip=0.2, normalize_advantages=True)


def _random_actions(env, steps, device):
    space, n = env.single_action_space, env.num_envs
    if hasattr(space, "n"):
        return torch.randint(0, int(space.n), (steps, n), device=device)
    return torch.rand(steps, n, *space.shape, device=device) * 2 - 1


def env_rate(env_id: str, n: int, device: str, steps: int, sampled: bool) -> float:
    env = BuiltinVecEnv(env_id, n, seed=0, device=device, copy=False)
    env.reset()
    actions = _random_actions(env, steps, device)
    step = env.step_sampled if sampled else env.step
    if device == "cpu":
        actions = actions.numpy()
    for t in range(min(steps, 20)):  # warm-up
        step(actions[t])
    torch.cuda.synchronize()
    start = time.perf_counter()
    for t in range(steps):
        step(actions[t])
    torch.cuda.synchronize()
    seconds = time.perf_counter() - start
    env.close()
    return n * steps / seconds


def bench_envs(quick: bool) -> list[dict]:
    rows = []
    for env_id in ENVS:
        for n in (4096, 65536):
            steps = 200 if quick else 1000
            gpu = env_rate(env_id, n, "cuda", steps, sampled=True)
            checked = env_rate(env_id, n, "cuda", steps, sampled=False)
            cpu = env_rate(env_id, n, "cpu", max(steps // 10, 20), sampled=True)
            rows.append(dict(env=env_id, num_envs=n, gpu_steps_per_s=round(gpu), gpu_checked_steps_per_s=round(checked),
                             cpu_steps_per_s=round(cpu), gpu_over_cpu=round(gpu / cpu, 2)))
            print(json.dumps(rows[-1]), flush=True)
    return rows


def train_run(device: str, timesteps: int, seed: int = 0, **options) -> dict:
    model = fastppo.PPO("MlpPolicy", "CartPole-v1", device=device, seed=seed, **TRAIN, **options)
    state = {"solved_at": None, "start": None}

    class Watch(fastppo.Callback):
        def on_iteration_end(self, metrics):
            if state["solved_at"] is None and metrics.get("rollout/ep_rew_mean", 0) >= 475:
                state["solved_at"] = time.perf_counter() - state["start"]
            return True

    model.learn(TRAIN["num_envs"] * TRAIN["n_steps"])  # warm-up: one iteration (allocations, kernels, compiling)
    state["start"] = time.perf_counter()
    model.learn(timesteps, callback=Watch())
    seconds = time.perf_counter() - state["start"]
    mean, _ = fastppo.evaluate_policy(model, "CartPole-v1", n_eval_episodes=10, seed=123)
    return dict(device=device, **options, collector=type(model._collector(None)).__name__,
                updater=type(model.updater).__name__, update_graph=graph_state(getattr(model.updater, "graph", None)),
                rollout_graph=graph_state(getattr(model._collector(None), "graph", None)), timesteps=timesteps,
                seconds=round(seconds, 2), steps_per_s=round(timesteps / seconds),
                seconds_to_ep_rew_mean_475=None if state["solved_at"] is None else round(state["solved_at"], 2),
                eval_return=round(float(mean), 1))


def graph_state(graph) -> str | None:
    """What became of a step's CUDA graph: None (graphs did not apply), "replayed", or the capture's error."""
    if graph is None:
        return None
    return graph.failure or ("replayed" if graph.replay is not None else "not captured")


def bench_train(quick: bool) -> dict:
    gpu = train_run("cuda", 1_000_000 if quick else 5_000_000, cuda_graphs=False)
    print(json.dumps(gpu), flush=True)
    cpu = train_run("cpu", 262_144 if quick else 1_048_576)
    print(json.dumps(cpu), flush=True)
    result = {"gpu": gpu, "cpu": cpu, "gpu_over_cpu": round(gpu["steps_per_s"] / cpu["steps_per_s"], 2)}
    try:  # the policy compiled, with CUDA graphs (torch_compile's "reduce-overhead"): never run before
        compiled = train_run("cuda", 262_144 if quick else 1_000_000, torch_compile={"mode": "reduce-overhead"})
        result.update(gpu_compiled=compiled, compiled_over_eager=round(compiled["steps_per_s"] / gpu["steps_per_s"], 2))
    except Exception as e:  # recorded, so that the rest of the summary still comes back
        result["gpu_compiled"] = {"error": f"{type(e).__name__}: {e}"[:2000]}
    print(json.dumps(result["gpu_compiled"]), flush=True)
    try:  # the default, the rollout's and the update's steps replayed from CUDA graphs: never run before
        graphed = train_run("cuda", 262_144 if quick else 1_000_000)
        result.update(gpu_graphs=graphed, graphs_over_eager=round(graphed["steps_per_s"] / gpu["steps_per_s"], 2))
    except Exception as e:
        result["gpu_graphs"] = {"error": f"{type(e).__name__}: {e}"[:2000]}
    print(json.dumps(result["gpu_graphs"]), flush=True)
    return result


def _median_ms(fn, repeats: int) -> float:
    fn()
    times = []
    for _ in range(repeats):
        start, end = torch.cuda.Event(enable_timing=True), torch.cuda.Event(enable_timing=True)
        start.record()
        fn()
        end.record()
        end.synchronize()
        times.append(start.elapsed_time(end))
    return statistics.median(times)


def bench_ops(quick: bool) -> list[dict]:
    rows, repeats, g = [], (5 if quick else 20), torch.Generator(device="cuda").manual_seed(0)
    for shape in [(128, 8), (2048, 64), (128, 4096), (1024, 1024), (1000, 10_000)]:
        r, v, nv = (torch.randn(shape, device="cuda", generator=g) for _ in range(3))
        te, tr = (torch.rand(shape, device="cuda", generator=g) < 0.01 for _ in range(2))
        fused = _median_ms(lambda: fastppo.gae(r, v, nv, te, tr, gamma=0.99, lam=0.95, backend="cuda"), repeats)
        ref = _median_ms(lambda: gae_reference(r, v, nv, te, tr, gamma=0.99, lam=0.95), repeats)
        rows.append(dict(op="gae", shape=list(shape), cuda_ms=round(fused, 4), torch_ms=round(ref, 4),
                         speedup=round(ref / fused, 1)))
        print(json.dumps(rows[-1]), flush=True)
    for n in (256, 4096, 65536, 1 << 20, 10_000_000):
        old_logp = torch.randn(n, device="cuda", generator=g) - 1
        batch = dict(new_logp=(old_logp + 0.3 * torch.randn(n, device="cuda", generator=g)).requires_grad_(),
                     old_logp=old_logp, advantages=torch.randn(n, device="cuda", generator=g),
                     new_values=torch.randn(n, device="cuda", generator=g).requires_grad_(),
                     old_values=torch.randn(n, device="cuda", generator=g),
                     returns=torch.randn(n, device="cuda", generator=g),
                     entropy=torch.rand(n, device="cuda", generator=g).requires_grad_())
        inputs = [batch["new_logp"], batch["new_values"], batch["entropy"]]

        def run(op):
            return lambda: torch.autograd.grad(op(**batch, **LOSS_OPTIONS)[0], inputs)

        fused = _median_ms(run(lambda **kw: fastppo.ppo_loss(**kw, backend="cuda")), repeats)
        ref = _median_ms(run(ppo_loss_reference), repeats)
        rows.append(dict(op="ppo_loss fwd+bwd", n=n, cuda_ms=round(fused, 4), torch_ms=round(ref, 4),
                         speedup=round(ref / fused, 1)))
        print(json.dumps(rows[-1]), flush=True)
    return rows


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--quick", action="store_true", help="fewer steps and repeats (a smoke run)")
    parser.add_argument("--out")
    args = parser.parse_args()
    if not fastppo.backends()["cuda"].available:
        raise SystemExit(f"no usable CUDA backend: {fastppo.backends()['cuda'].detail}")
    result = {"gpu": torch.cuda.get_device_name(), "torch": torch.__version__, "fastppo": fastppo.__version__,
              "cpu": platform.processor() or platform.machine(), "cpu_threads": torch.get_num_threads()}
    for name, fn in (("envs", bench_envs), ("ops", bench_ops), ("train", bench_train)):
        start = time.perf_counter()
        result[name] = fn(args.quick)
        result[f"{name}_seconds"] = round(time.perf_counter() - start, 1)
        if args.out:  # after every stage: a later one that crashes the process leaves the earlier ones
            with open(args.out, "w") as f:
                f.write(json.dumps(result, indent=1) + "\n")
    print(json.dumps(result, indent=1))


if __name__ == "__main__":
    main()
