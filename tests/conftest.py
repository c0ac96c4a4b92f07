import os
import pathlib
import runpy

import pytest
import torch

import fastppo

# CI sets FASTPPO_EXPECT_BACKENDS=cpp,numba and FASTPPO_EXPECT_CUDA_BUILD=1 so a build that silently lost its extension fails loudly
# instead of skipping every native test.
_EXPECTED = [b for b in os.environ.get("FASTPPO_EXPECT_BACKENDS", "").split(",") if b]


def pytest_sessionstart(session):
    status = fastppo.backends()
    missing = {b: status[b].detail for b in _EXPECTED if not status[b].available}
    if missing:
        raise pytest.UsageError(f"FASTPPO_EXPECT_BACKENDS names unavailable backends: {missing}")
    if os.environ.get("FASTPPO_EXPECT_CUDA_BUILD") == "1" and not fastppo._backend._core.with_cuda:
        raise pytest.UsageError("FASTPPO_EXPECT_CUDA_BUILD=1 but fastppo._core was built without CUDA")


CPU_BACKENDS = [b for b in ("torch", "numba", "cpp") if fastppo.backends()[b].available]
HAS_CUDA = fastppo.backends()["cuda"].available
requires_cuda = pytest.mark.skipif(not HAS_CUDA, reason=f"cuda backend: {fastppo.backends()['cuda'].detail}")
# For arrays on cuda:1 while cuda:0 is the current device: the kernels must follow the arrays.
requires_two_gpus = pytest.mark.skipif(not HAS_CUDA or torch.cuda.device_count() < 2,
                                       reason="needs two usable CUDA devices")


def assert_solves_cartpole(model, label: str) -> None:
    """The solved threshold (475) over 10 deterministic episodes, the same episodes for every test."""
    mean, _ = fastppo.evaluate_policy(model, "CartPole-v1", n_eval_episodes=10, seed=123)
    assert mean >= 475, f"{label} did not solve CartPole-v1: mean return {mean}"


class SaveAndStop(fastppo.Callback):
    """Saves the model to ``path`` at the end of iteration ``iteration`` and stops training there."""

    def __init__(self, path, iteration: int = 2):
        self.path, self.iteration = path, iteration

    def on_iteration_end(self, metrics):
        if self.model.iteration == self.iteration:
            self.model.save(self.path)
            return False
        return True


class RecordMetrics(fastppo.Callback):
    """Keeps every iteration's logged metrics in ``self.seen``."""

    def __init__(self):
        self.seen = []

    def on_iteration_end(self, metrics):
        self.seen.append(metrics)
        return True


@pytest.fixture(scope="session")
def numba_cartpole():
    pytest.importorskip("numba")
    root = pathlib.Path(__file__).resolve().parents[1]
    runpy.run_path(str(root / "examples" / "numba_cartpole.py"))  # registers NumbaCartPole-v1
    return "NumbaCartPole-v1"
