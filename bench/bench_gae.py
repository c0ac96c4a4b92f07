"""GAE per backend against the torch reference and the memory-bandwidth floor (numpy copying the five
(T, N) input arrays once). Run (never in CI):

    python -m pytest bench/bench_gae.py --benchmark-only --benchmark-group-by=param:shape \
        --benchmark-columns=median,iqr,rounds --benchmark-sort=name

Flags are float32 here (the heaviest case: five 4-byte inputs); bool flags read less memory.
"""

import numpy as np
import pytest
import torch

import fastppo

SHAPES = [(128, 8), (2048, 64), (128, 4096), (1024, 1024)]
BACKENDS = [b for b in ("torch", "numba", "cpp") if fastppo.backends()[b].available]


def _arrays(shape):
    rng = np.random.default_rng(0)
    r, v, nv = (rng.standard_normal(shape).astype(np.float32) for _ in range(3))
    te = (rng.random(shape) < 0.01).astype(np.float32)
    tr = (rng.random(shape) < 0.01).astype(np.float32)
    return r, v, nv, te, tr


@pytest.mark.parametrize("shape", SHAPES, ids=str)
def test_floor_copy_five_arrays(benchmark, shape):
    src = _arrays(shape)
    dst = [np.empty_like(a) for a in src]

    def copy():
        for d, s in zip(dst, src):
            np.copyto(d, s)

    benchmark(copy)


@pytest.mark.parametrize("shape", SHAPES, ids=str)
@pytest.mark.parametrize("backend", BACKENDS)
def test_gae_numpy(benchmark, shape, backend):
    arrays = _arrays(shape)
    out = (np.empty(shape, np.float32), np.empty(shape, np.float32))
    fastppo.gae(*arrays, gamma=0.99, lam=0.95, backend=backend, out=out)  # compile / warm up
    benchmark(fastppo.gae, *arrays, gamma=0.99, lam=0.95, backend=backend, out=out)


@pytest.mark.parametrize("shape", SHAPES[:1], ids=str)
def test_gae_cpp_torch_tensors(benchmark, shape):
    """The trainer's case: CPU torch tensors in, preallocated tensors out (binding overhead included)."""
    arrays = [torch.from_numpy(a) for a in _arrays(shape)]
    out = (torch.empty(shape), torch.empty(shape))
    benchmark(fastppo.gae, *arrays, gamma=0.99, lam=0.95, backend="cpp", out=out)
