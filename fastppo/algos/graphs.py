"""CUDA graphs for PPO's update (``cuda_graphs``, on by default where they apply): a minibatch's step —
the policy forward, the loss, backward, gradient clipping and Adam, ~100 kernel launches for the
built-in MLP — captured once per iteration as one ``torch.cuda.CUDAGraph`` and replayed for each full
minibatch, so the host issues one launch per minibatch instead of waiting on Python for each kernel.

A captured step reads its inputs where they were at capture: the minibatch's indices are copied into one
fixed tensor before each replay, the rollout's buffers are allocated once, and Adam's step count lives
on the device (:meth:`~fastppo.algos.optim.FlatAdam.step_on_device`), since every Python number is
frozen into the graph. The learning rate, the clip range and the loss's coefficients are such numbers:
when a schedule moved one, the graph is captured anew at the iteration's first full minibatch, whose step
is the eager warm-up that capture needs (constant ones: one capture per run). A truncated last minibatch
runs eagerly. The arithmetic is the torch updater's, except that Adam's bias corrections are computed on
the device: the same numbers to float32 rounding.

Where they do not apply, the update runs eagerly and :func:`graph_blocker` says why (printed once at
``verbose >= 1``): not on CUDA, data-parallel (the all-reduce sits between backward and the step),
``target_kl`` (decided on the host after each minibatch), ``torch_compile`` (its own compiler, and CUDA
graphs in ``mode="reduce-overhead"``), or an optimiser other than fastppo's Adam. If capture fails (a
custom module that synchronises with the host, say), the update warns with torch's reason and runs
eagerly from then on.

On the CPU, ``tests/test_graphs.py`` runs this updater with :func:`capture` replaced by a trace of the step
(``make_fx``: the same freezing of Python values, the same tensors read at replay) against the eager
updater; the CUDA capture itself is tested on a GPU (``bench/gpu_check.sh``).
"""

from __future__ import annotations

import warnings
from collections.abc import Callable
from typing import TYPE_CHECKING

import torch

from fastppo.algos.optim import FlatAdam
from fastppo.algos.ppo import TorchPpoUpdater
from fastppo.ops.ppo_loss import STATS

if TYPE_CHECKING:
    from fastppo.algos.ppo import PPO


def graph_blocker(algo: PPO) -> str | None:
    """Why PPO's update is not captured as CUDA graphs; None when it is."""
    config = algo.config
    if not config.cuda_graphs:
        return "cuda_graphs=False"
    if algo.device.type != "cuda":
        return f"the policy is on {algo.device}"
    if not algo.reducer.local:
        return "data-parallel: the gradients' all-reduce runs between backward and the optimiser step"
    if config.target_kl is not None:
        return "target_kl: whether to step is decided on the host after each minibatch"
    if config.torch_compile:
        return "torch_compile compiles the forward (mode='reduce-overhead' makes CUDA graphs of its own)"
    if not isinstance(algo.optimizer, FlatAdam):
        return "the optimiser is not fastppo's Adam (policy_kwargs' optimizer_class / optimizer_kwargs)"
    if algo.rollout_size // config.batch_size < 2:
        return "fewer than two full minibatches per epoch: nothing to replay"
    return None


class CaptureError(RuntimeError):
    """The step ran, but could not be captured (torch's error is the cause)."""


def capture(step: Callable[[], None], device: torch.device) -> Callable[[], None]:
    """Run ``step`` once, for real, as the warm-up on a side stream (lazily made state — cuBLAS handles,
    autograd's streams — must exist before capture), then capture it into a CUDA graph; returns the
    graph's replay. An error of the warm-up is raised as it is (the eager step would raise it too); one of
    the capture as :class:`CaptureError`."""
    current = torch.cuda.current_stream(device)
    side = torch.cuda.Stream(device)
    side.wait_stream(current)
    with torch.cuda.stream(side):
        step()
    current.wait_stream(side)
    graph = torch.cuda.CUDAGraph()
    try:
        with torch.cuda.graph(graph):
            step()
    except Exception as e:  # noqa: BLE001 - whatever stopped the capture is the reason given
        raise CaptureError(f"{type(e).__name__}: {e}") from e
    return graph.replay


class GraphedPpoUpdater(TorchPpoUpdater):
    """:class:`~fastppo.algos.ppo.TorchPpoUpdater` with each full minibatch's step replayed from a CUDA
    graph (see the module)."""

    def __init__(self, algo: PPO):
        super().__init__(algo)
        device = algo.device
        self.indices = torch.zeros(algo.config.batch_size, dtype=torch.long, device=device)  # the replay's input
        self.adam_steps = torch.zeros((), dtype=torch.float64, device=device)  # Adam's count, on the device
        self.sums = torch.zeros(len(STATS), dtype=torch.float64, device=device)  # one epoch's stats, summed
        self.replay: Callable[[], None] | None = None
        self.numbers: tuple | None = None  # the Python numbers the graph froze: the loss's, clip_range_vf, lr
        self.failure: str | None = None  # torch's reason, once a capture failed: eager from then on

    def begin(self, loss_kwargs: dict, clip_range_vf: float | None) -> None:
        super().begin(loss_kwargs, clip_range_vf)
        numbers = (sorted(loss_kwargs.items()), clip_range_vf, self.algo.optimizer.lr)
        if numbers != self.numbers:  # a schedule moved them: capture again
            self.replay, self.numbers = None, numbers
        self.adam_steps.fill_(self.algo.optimizer.steps)

    def epoch(self, order: torch.Tensor) -> tuple[torch.Tensor, int, bool]:
        if self.failure is not None:
            return super().epoch(order)
        batch_size, adam = self.algo.config.batch_size, self.algo.optimizer
        self.sums.zero_()
        n_updates = 0
        for start in range(0, order.numel(), batch_size):
            idx = order[start:start + batch_size]
            if idx.numel() < batch_size:
                self._step(idx)  # the truncated last minibatch: another shape, eagerly
            elif self.replay is not None:
                self.indices.copy_(idx)
                self.replay()
            else:
                self.indices.copy_(idx)
                try:
                    self.replay = capture(lambda: self._step(self.indices), self.algo.device)
                except CaptureError as e:
                    return self._give_up(e, order, n_updates)
            adam.steps += 1  # the device's count moved in the step; the host's (checkpoints, the eager path) too
            n_updates += 1
        return self.sums.clone(), n_updates, False

    def _step(self, idx: torch.Tensor) -> None:
        """One minibatch's step, with nothing on the host that changes between calls."""
        algo = self.algo
        loss, stats = self.minibatch_loss(idx)
        algo._flat.grad.zero_()
        loss.backward()
        algo.optimizer.step_on_device(self.adam_steps, algo.config.max_grad_norm)
        self.sums += torch.stack([stats[k].detach() for k in STATS]).double()

    def _give_up(self, error: CaptureError, order: torch.Tensor, done: int) -> tuple[torch.Tensor, int, bool]:
        """Warn with the capture's error, then finish this epoch eagerly; the warm-up's step was taken."""
        self.failure = str(error)
        warnings.warn(f"cuda_graphs: the update's minibatch step could not be captured as a CUDA graph "
                      f"({self.failure}); the update runs without graphs", RuntimeWarning, stacklevel=4)
        self.algo.optimizer.steps += 1
        sums = self.sums.clone()
        rest, n_rest, stopped = super().epoch(order[(done + 1) * self.algo.config.batch_size:])
        return sums + rest, done + 1 + n_rest, stopped
