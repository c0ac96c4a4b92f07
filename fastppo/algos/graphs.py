"""CUDA graphs (``cuda_graphs``, on by default where they apply): a step that launches dozens of small
kernels captured once as one ``torch.cuda.CUDAGraph`` and replayed, so the host issues one launch
instead of waiting on Python for each kernel. Two steps are captured:

- **the rollout's policy step** (:class:`~fastppo.algos.resident.ResidentCollector`, PPO and TRPO): the
  policy forward, sampling, the rollout's rows, the finiteness flag and the env's actions, ~35 launches
  for the built-in MLP, replayed at every env step; captured once per collector (at its first step);
- **PPO's minibatch step** (:class:`~fastppo.algos.ppo.GraphedPpoUpdater`): the forward, the loss,
  backward, gradient clipping and Adam, ~100 launches, replayed for each full minibatch.

A graph reads its inputs where they were at capture and freezes every Python number it saw. So the
inputs are copied into fixed tensors before each replay (the observations, the minibatch's indices),
and what must move between replays lives on the device: the rollout's row (a step counter the graph
advances), Adam's step count (:meth:`~fastppo.algos.optim.FlatAdam.step_on_device`), the epoch's stats
sums; the sampling stream is the model's own generator, registered with the graph, which advances it
as the eager draws would. The learning rate, the clip range and the loss's coefficients are frozen: when
a schedule (or the adaptive KL's beta) moved one, the update's graph is captured anew at the iteration's
first full minibatch, whose step is the eager warm-up that capture needs (constant ones: one capture
per run). A truncated last minibatch runs eagerly. Numbers: the rollout's are the eager loop's, bit for
bit; the update's are the eager updater's to float32 rounding (Adam's bias corrections are computed on
the device).

Where graphs do not apply, :func:`rollout_blocker` and :func:`update_blocker` say why (printed once at
``verbose >= 1``): not on CUDA, ``torch_compile`` (its own compiler, and CUDA graphs in
``mode="reduce-overhead"``), gSDE (new exploration noise on a host schedule); for the update also
data-parallel (the all-reduce sits between backward and the step), ``target_kl`` (decided on the host
after each minibatch), an optimiser other than fastppo's Adam. If a capture fails (a custom module that
synchronises with the host, say), a warning gives torch's reason and that step runs eagerly from then on.

On the CPU, ``tests/test_graphs.py`` runs both with :func:`capture` replaced by a trace of the step
(``make_fx``: the same freezing of Python values, the same tensors read and the same generator drawn
from at replay) against the eager loop; the CUDA capture itself is tested on a GPU
(``bench/gpu_check.sh``).
"""

from __future__ import annotations

from collections.abc import Callable
from typing import TYPE_CHECKING

import torch

from fastppo.algos.optim import FlatAdam

if TYPE_CHECKING:
    from fastppo.algos.base import OnPolicyAlgorithm
    from fastppo.algos.ppo import PPO


def rollout_blocker(algo: OnPolicyAlgorithm) -> str | None:
    """Why the rollout's policy step is not captured as a CUDA graph; None when it is."""
    if algo.config.use_sde:
        return "use_sde: the exploration noise is drawn anew on a schedule kept on the host"
    return _blocker(algo)


def update_blocker(algo: PPO) -> str | None:
    """Why PPO's minibatch step is not captured as a CUDA graph; None when it is."""
    config = algo.config
    if not algo.reducer.local:
        return "data-parallel: the gradients' all-reduce runs between backward and the optimiser step"
    if config.target_kl is not None:
        return "target_kl: whether to step is decided on the host after each minibatch"
    if not isinstance(algo.optimizer, FlatAdam):
        return "the optimiser is not fastppo's Adam (policy_kwargs' optimizer_class / optimizer_kwargs)"
    if algo.rollout_size // config.batch_size < 2:
        return "fewer than two full minibatches per epoch: nothing to replay"
    return _blocker(algo)


def _blocker(algo: OnPolicyAlgorithm) -> str | None:
    """What keeps both steps from graphs."""
    if not algo.config.cuda_graphs:
        return "cuda_graphs=False"
    if algo.device.type != "cuda":
        return f"the policy is on {algo.device}"
    if algo.config.torch_compile:
        return "torch_compile compiles the forward (mode='reduce-overhead' makes CUDA graphs of its own)"
    return None


class CaptureError(RuntimeError):
    """The step ran, but could not be captured (torch's error is the cause)."""


def capture(step: Callable[[], None], device: torch.device,
            generators: tuple[torch.Generator, ...] = ()) -> Callable[[], None]:
    """Run ``step`` once, for real, as the warm-up on a side stream (lazily made state — cuBLAS handles,
    autograd's streams — must exist before capture), then capture it into a CUDA graph, with
    ``generators`` (non-default ones the step draws from) registered so that each replay advances them;
    returns the graph's replay. An error of the warm-up is raised as it is (the eager step would raise it
    too); one of the capture as :class:`CaptureError`."""
    current = torch.cuda.current_stream(device)
    side = torch.cuda.Stream(device)
    side.wait_stream(current)
    with torch.cuda.stream(side):
        step()
    current.wait_stream(side)
    graph = torch.cuda.CUDAGraph()
    try:
        for generator in generators:
            graph.register_generator_state(generator)
        with torch.cuda.graph(graph):
            step()
    except Exception as e:  # noqa: BLE001 - whatever stopped the capture is the reason given
        raise CaptureError(f"{type(e).__name__}: {e}") from e
    return graph.replay
