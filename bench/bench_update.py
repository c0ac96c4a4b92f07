"""The native PPO update on a MuJoCo-sized policy against torch's own matrix products (issue #20): one
epoch of fastppo's native update (``PpoUpdate.epoch``: gather, both forwards, the loss, both backwards,
gradient clipping and Adam, per minibatch) for a 256-256 ReLU actor and critic on HalfCheetah's sizes
(17 observations, 6 actions), over a rollout of 4096 samples, at minibatch sizes 64, 256, 1024 and 4096,
on 1 and 2 threads; and as the floor, torch doing that epoch's matrix products alone (``torch.mm`` of
exactly the shapes the native update multiplies: per minibatch and layer the forward X W^T, the weight
gradient dZ^T X and, past the first layer, dX = dZ W) on 1 and 2 torch threads. Never run in CI.

    flock /tmp/fastppo-bench.lock python bench/bench_update.py [--rounds 5] [--out FILE]

Columns: milliseconds per epoch (each cell timed `rounds` times, round-robin, keeping the best: on a
shared machine that is the figure least disturbed by other processes), the 2-thread speedup of each,
torch's GEMM rate in GFLOP/s, and native / torch at the same thread count (the whole native epoch over
torch's products alone; 2.0 or less is the goal). The rollout comes from a random walk with
HalfCheetah's spaces: the update's cost does not depend on the env, and no MuJoCo is needed.
"""

from __future__ import annotations

import argparse
import os
import platform
import time
import warnings

import gymnasium as gym
import numpy as np
import torch

import fastppo
from bench_envs import print_table
from fastppo import PPO

OBS, ACT, HIDDEN = 17, 6, (256, 256)
ROLLOUT = 4096
BATCH_SIZES = (64, 256, 1024, 4096)
THREADS = (1, 2)


class CheetahShapedEnv(gym.Env):
    """HalfCheetah-v5's observation and action spaces over a random walk."""

    observation_space = gym.spaces.Box(-np.inf, np.inf, (OBS,), np.float32)
    action_space = gym.spaces.Box(-1, 1, (ACT,), np.float32)

    def reset(self, *, seed=None, options=None):
        super().reset(seed=seed)
        self.t = 0
        return self.np_random.standard_normal(OBS).astype(np.float32), {}

    def step(self, action):
        self.t += 1
        obs = self.np_random.standard_normal(OBS).astype(np.float32)
        return obs, float(obs[0] - 0.1 * np.square(action).sum()), False, self.t >= 1000, {}


def native_model() -> PPO:
    """A PPO model with a collected rollout and its native updater set up (begin() called)."""
    model = PPO("MlpPolicy", CheetahShapedEnv(), n_steps=ROLLOUT, batch_size=BATCH_SIZES[0], n_epochs=1, seed=0,
                policy_kwargs=dict(net_arch=list(HIDDEN), activation_fn="relu"))
    assert model.native, "the native update does not apply"
    model._reset_envs()
    model._collect(None)
    model._advantages()
    model._update(1.0)  # sets up the updater's settings (begin) and warms it up
    return model


def layer_sizes() -> list[tuple[int, int]]:
    """(in, out) of every Linear layer of the actor, then the critic."""
    widths = (OBS, *HIDDEN)
    return [(i, o) for head in (ACT, 1) for i, o in zip(widths, (*HIDDEN, head))]


def torch_products(batch: int) -> list[tuple[torch.Tensor, torch.Tensor, torch.Tensor]]:
    """(a, b, out) for every product of one minibatch's forward and backward, as the native update
    multiplies them (transposed operands are views, as torch's own Linear passes them to its GEMM)."""
    gen = torch.Generator().manual_seed(0)
    products = []
    for layer, (i, o) in enumerate(layer_sizes()):
        x, w = torch.randn(batch, i, generator=gen), torch.randn(o, i, generator=gen)
        dz = torch.randn(batch, o, generator=gen)
        products.append((x, w.t(), torch.empty(batch, o)))  # forward: X W^T
        products.append((dz.t(), x, torch.empty(o, i)))  # weight gradient: dZ^T X
        if layer % 3:  # past each net's first layer: dX = dZ W
            products.append((dz, w, torch.empty(batch, i)))
    return products


def epoch_macs() -> int:
    """Multiply-adds of one epoch's products (any minibatch size)."""
    return ROLLOUT * sum(i * o * (3 if layer % 3 else 2) for layer, (i, o) in enumerate(layer_sizes()))


def time_native(model: PPO, batch: int, threads: int) -> float:
    fastppo.set_num_threads(threads)
    model.updater.settings.batch_size = batch
    order = torch.randperm(ROLLOUT)
    start = time.perf_counter()
    model.updater.epoch(order)
    return time.perf_counter() - start


def time_torch(products, threads: int) -> float:
    torch.set_num_threads(threads)
    minibatches = ROLLOUT // products[0][0].shape[0]
    start = time.perf_counter()
    for _ in range(minibatches):
        for a, b, out in products:
            torch.mm(a, b, out=out)
    return time.perf_counter() - start


def main():
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--rounds", type=int, default=5, help="round-robin timings per cell; the best is kept")
    parser.add_argument("--out", help="also write the markdown table here")
    args = parser.parse_args()
    torch_threads = torch.get_num_threads()
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        model = native_model()
    lines = [f"machine: {platform.processor() or platform.machine()}, {os.cpu_count()} cores, load average "
             f"{os.getloadavg()[0]:.2f} at start, torch {torch.__version__}; actor and critic {OBS}-256-256-{ACT}/1 "
             f"ReLU, one epoch over {ROLLOUT} samples ({epoch_macs() / 1e9:.2f} G multiply-adds in its products)", ""]
    lines.append("| minibatch | native 1t ms | native 2t ms | native 2t/1t | torch mm 1t ms | torch mm 2t ms | "
                 "torch 2t/1t | torch GFLOP/s 1t / 2t | native/torch 1t | native/torch 2t |")
    lines.append("|---" * 10 + "|")
    try:
        for batch in BATCH_SIZES:
            products = torch_products(batch)
            best = {}
            for _ in range(args.rounds):
                for threads in THREADS:
                    for name, run in (("native", lambda: time_native(model, batch, threads)),
                                      ("torch", lambda: time_torch(products, threads))):
                        best[name, threads] = min(best.get((name, threads), float("inf")), run())
            ms = {key: 1e3 * t for key, t in best.items()}
            gflops = [2 * epoch_macs() / best["torch", t] / 1e9 for t in THREADS]
            row = [str(batch), f"{ms['native', 1]:.1f}", f"{ms['native', 2]:.1f}",
                   f"{ms['native', 1] / ms['native', 2]:.2f}x", f"{ms['torch', 1]:.1f}", f"{ms['torch', 2]:.1f}",
                   f"{ms['torch', 1] / ms['torch', 2]:.2f}x", f"{gflops[0]:.0f} / {gflops[1]:.0f}",
                   f"{ms['native', 1] / ms['torch', 1]:.2f}", f"{ms['native', 2] / ms['torch', 2]:.2f}"]
            lines.append("| " + " | ".join(row) + " |")
            print(lines[-1], flush=True)
    finally:
        torch.set_num_threads(torch_threads)
        fastppo.set_num_threads(0)
    print_table(lines, args.out)


if __name__ == "__main__":
    main()
