"""Fused PPO loss, forward + backward, against the eager composite (the reference) and against
torch.compile of the same composite, at minibatch sizes 256 .. 1M, float32, CleanRL's options
(advantage normalisation, value clipping, entropy bonus). Plus two floors: at 1M, memory bandwidth
(a copy moving the bytes the op must move: read 7 inputs, write 2 per-sample gradients, 36 B/sample);
at 256 and 4096, the cheapest autograd round trip over the same inputs.

Run (never in CI; figures in bench/RESULTS.md):
    flock /tmp/fastppo-bench.lock env PYTHONPATH=. python -m pytest bench/bench_ppo_loss.py \\
        -p no:cacheprovider --benchmark-only --benchmark-group-by=param:n --benchmark-columns=min,median,rounds
"""

from __future__ import annotations

import functools

import pytest
import torch

import fastppo
from fastppo.ops import ppo_loss_reference

SIZES = [256, 4096, 65536, 1 << 20]
OPTIONS = dict(clip_coef=0.2, vf_coef=0.5, ent_coef=0.01, vf_clip=0.2, normalize_advantages=True)


def batch(n):
    g = torch.Generator().manual_seed(0)
    old_logp = torch.randn(n, generator=g) - 1.0
    new_logp = (old_logp + 0.3 * torch.randn(n, generator=g)).requires_grad_()
    old_values = torch.randn(n, generator=g)
    new_values = (old_values + 0.5 * torch.randn(n, generator=g)).requires_grad_()
    return dict(new_logp=new_logp, old_logp=old_logp, advantages=torch.randn(n, generator=g),
                new_values=new_values, old_values=old_values, returns=torch.randn(n, generator=g),
                entropy=torch.rand(n, generator=g).requires_grad_())


def loss_eager(b):
    return ppo_loss_reference(**b, **OPTIONS)


@functools.cache
def compiled_loss(n):
    """torch.compile of the composite, compiled (forward and backward) once per size, outside the timing."""
    fn = torch.compile(lambda b: ppo_loss_reference(**b, **OPTIONS), dynamic=False)
    b = batch(n)
    for _ in range(2):
        torch.autograd.grad(fn(b)[0], [b["new_logp"], b["new_values"], b["entropy"]])
    return fn


def loss_fused(b):
    return fastppo.ppo_loss(**b, **OPTIONS)


IMPLS = {"eager": loss_eager, "compiled": None, "fused": loss_fused}


@pytest.mark.filterwarnings("ignore:`torch.jit.script_method` is deprecated:DeprecationWarning")
@pytest.mark.parametrize("n", SIZES)
@pytest.mark.parametrize("impl", list(IMPLS))
def test_forward_backward(benchmark, impl, n):
    b = batch(n)
    fn = compiled_loss(n) if impl == "compiled" else IMPLS[impl]
    wrt = [b["new_logp"], b["new_values"], b["entropy"]]

    def step():
        return torch.autograd.grad(fn(b)[0], wrt)

    step()
    benchmark(step)


@pytest.mark.parametrize("n", [256, 4096])
def test_autograd_floor(benchmark, n):
    # the cheapest forward + torch.autograd.grad over the same three inputs (three sums): what any
    # autograd-integrated op pays per call before doing any work
    b = batch(n)
    wrt = [b["new_logp"], b["new_values"], b["entropy"]]
    benchmark(lambda: torch.autograd.grad(wrt[0].sum() + wrt[1].sum() + wrt[2].sum(), wrt))


@pytest.mark.parametrize("n", [1 << 20])
def test_bandwidth_floor(benchmark, n):
    # 36 B per sample: read 9 floats' worth and write 9, as one streaming copy (torch's threads)
    src, dst = torch.randn(9 * n // 2), torch.empty(9 * n // 2)
    benchmark(dst.copy_, src)
