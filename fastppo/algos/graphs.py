"""CUDA graphs (``cuda_graphs``, on by default where they apply): a step that launches dozens of small
kernels captured once as one ``torch.cuda.CUDAGraph`` and replayed, so the host issues one launch
instead of waiting on Python for each kernel. Three steps are captured:

- **the rollout's policy step** (:class:`~fastppo.algos.resident.ResidentCollector`, PPO and TRPO): the
  policy forward, sampling, the rollout's rows, the finiteness flag and the env's actions, ~35 launches
  for the built-in MLP, replayed at every env step; captured once per collector (at its first step);
- **PPO's minibatch step** (:class:`~fastppo.algos.ppo.GraphedPpoUpdater`): the forward, the loss,
  backward, gradient clipping and Adam, ~100 launches, replayed for each full minibatch;
- **TRPO's critic regression step** (:class:`~fastppo.algos.trpo.GraphedCriticFit`): the value forward,
  the MSE, backward and Adam, likewise. (TRPO's policy step — conjugate gradient, line search — decides
  on the host.)

:class:`Replayed` holds what the three share: the graph's input, the capture at the first call (whose
step is the capture's warm-up), the replays, and the fallback; :class:`ReplayedMinibatches` adds what the
two minibatch steps share: the pass over the minibatches, Adam's count on the device, the recapture.

A graph reads its inputs where they were at capture and freezes every Python number it saw. So the
inputs are copied into fixed tensors before each replay (the observations, the minibatch's indices),
and what must move between replays lives on the device: the rollout's row (a step counter the graph
advances), Adam's step count (:meth:`~fastppo.algos.optim.FlatAdam.step_on_device`), the pass's stats
or loss sums. The sampling stream is the model's own generator, registered with the graph, which
advances it as eager draws would. The learning rate, the clip range and the loss's coefficients are
frozen: when a schedule (or the adaptive KL's beta) moved one, a minibatch graph is captured anew at
the iteration's first full minibatch (constant ones: one capture per run). A truncated last minibatch
runs eagerly. Numbers: the rollout's are the eager loop's, bit for bit; the minibatch steps' are the
eager ones' to float32 rounding (Adam's bias corrections are computed on the device).

Where graphs do not apply, :func:`rollout_blocker`, :func:`update_blocker` and :func:`critic_blocker` say
why (printed once at ``verbose >= 1``): not on CUDA, ``torch_compile`` (its own compiler, and CUDA
graphs in ``mode="reduce-overhead"``), gSDE for the rollout (its noise is redrawn on a host schedule);
for a minibatch step also data-parallel (the all-reduce sits between backward and the step), an
optimiser other than fastppo's Adam, and PPO's ``target_kl`` (decided on the host after each
minibatch). If a capture fails (a custom module that synchronises with the host, say), a warning gives
torch's reason and that step runs eagerly from then on.

On the CPU, ``tests/test_graphs.py`` runs all three with :func:`capture` replaced by a trace of the step
(``make_fx``: the same freezing of Python values, the same tensors read and the same generator drawn
from at replay) against the eager ones; the CUDA capture itself is tested on a GPU
(``bench/gpu_check.sh``).
"""

from __future__ import annotations

import warnings
from collections.abc import Callable
from typing import TYPE_CHECKING

import torch

from fastppo.algos.distributed import is_main
from fastppo.algos.optim import FlatAdam

if TYPE_CHECKING:
    from fastppo.algos.base import OnPolicyAlgorithm
    from fastppo.algos.ppo import PPO
    from fastppo.algos.trpo import TRPO


def rollout_blocker(algo: OnPolicyAlgorithm) -> str | None:
    """Why the rollout's policy step is not captured as a CUDA graph; None when it is."""
    if algo.config.use_sde:
        return "use_sde: the exploration noise is drawn anew on a schedule kept on the host"
    return _blocker(algo)


def update_blocker(algo: PPO) -> str | None:
    """Why PPO's minibatch step is not captured as a CUDA graph; None when it is."""
    reason = _minibatch_blocker(algo, algo.optimizer)
    if reason is None and algo.config.target_kl is not None:
        return "target_kl: whether to step is decided on the host after each minibatch"
    return reason


def critic_blocker(algo: TRPO) -> str | None:
    """Why TRPO's critic regression step is not captured as a CUDA graph; None when it is."""
    return _minibatch_blocker(algo, algo.critic_optimizer)


def _minibatch_blocker(algo: OnPolicyAlgorithm, optimizer) -> str | None:
    """What keeps a minibatch step (forward, loss, backward, Adam) from graphs."""
    if (reason := _blocker(algo)) is not None:
        return reason
    if not algo.reducer.local:
        return "data-parallel: the gradients' all-reduce runs between backward and the optimiser step"
    if not isinstance(optimizer, FlatAdam):
        return "the optimiser is not fastppo's Adam (policy_kwargs' optimizer_class / optimizer_kwargs)"
    if algo.rollout_size // algo.config.batch_size < 2:
        return "fewer than two full minibatches per epoch: nothing to replay"
    return None


def _blocker(algo: OnPolicyAlgorithm) -> str | None:
    """What keeps every step from graphs."""
    if not algo.config.cuda_graphs:
        return "cuda_graphs=False"
    if algo.device.type != "cuda":
        return f"the policy is on {algo.device}"
    if algo.config.torch_compile:
        return "torch_compile compiles the forward (mode='reduce-overhead' makes CUDA graphs of its own)"
    return None


def applies(algo: OnPolicyAlgorithm, blocker: str | None, what: str) -> bool:
    """Whether graphs apply to ``what`` (``blocker`` None); if not, on a GPU at ``verbose >= 1``, says why."""
    if blocker is not None and algo.device.type == "cuda" and algo.config.verbose >= 1 and is_main(algo):
        print(f"cuda_graphs: {what} runs without CUDA graphs ({blocker})")
    return blocker is None


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


class Replayed:
    """``step(x)`` replayed from a CUDA graph when ``x`` has the shape of the graph's input (captured at the
    first such call, whose step is the capture's warm-up, and again after :meth:`recapture`); run eagerly
    otherwise: a truncated minibatch, or every call once a capture failed (with a warning naming ``what``
    and torch's reason). ``step`` must do the same on every call and leave its results in tensors that
    outlive it; ``generators`` are the non-default ones it draws from."""

    def __init__(self, like: torch.Tensor, what: str, generators: tuple[torch.Generator, ...] = ()):
        self.input = torch.zeros_like(like)
        self.what, self.generators = what, generators
        self.replay: Callable[[], None] | None = None
        self.failure: str | None = None  # torch's reason, once a capture failed

    def recapture(self) -> None:
        """Capture again at the next call (a Python number the step reads has changed)."""
        self.replay = None

    def __call__(self, x: torch.Tensor, step: Callable[[torch.Tensor], None]) -> None:
        if self.failure is not None or x.shape != self.input.shape:
            step(x)
            return
        self.input.copy_(x)
        if self.replay is not None:
            self.replay()
            return
        try:
            self.replay = capture(lambda: step(self.input), self.input.device, self.generators)
        except CaptureError as e:  # the warm-up took this call's step
            self.failure = str(e)
            warnings.warn(f"cuda_graphs: {self.what} could not be captured as a CUDA graph ({e}); it runs without "
                          f"graphs from now on", RuntimeWarning, stacklevel=3)


class ReplayedMinibatches(Replayed):
    """:class:`Replayed` for a pass of minibatch steps that end in ``adam``'s step (PPO's update, TRPO's
    critic): the minibatch's indices are the graph's input, Adam's step count lives on the device while
    the pass runs (:meth:`adam_step`; the host's ``steps`` catches up at its end), and the graph is
    captured again when a Python number it froze has moved (Adam's, or those the caller names)."""

    def __init__(self, adam: FlatAdam, batch_size: int, device: torch.device, what: str):
        super().__init__(torch.zeros(batch_size, dtype=torch.long, device=device), what)
        self.adam = adam
        self.adam_steps = torch.zeros((), dtype=torch.float64, device=device)
        self.numbers: tuple | None = None  # the Python numbers the graph froze

    def run(self, order: torch.Tensor, step: Callable[[torch.Tensor], None], numbers: tuple = ()) -> int:
        """``step(idx)`` for each minibatch of ``order`` in turn (``numbers``: the Python numbers ``step``
        reads besides Adam's); returns how many minibatches."""
        adam, batch_size = self.adam, self.input.numel()
        numbers = (*numbers, adam.lr, adam.eps, adam.betas)
        if numbers != self.numbers:  # a schedule moved one (or set_parameters Adam's)
            self.recapture()
            self.numbers = numbers
        self.adam_steps.fill_(adam.steps)
        n_steps = 0
        for start in range(0, order.numel(), batch_size):
            self(order[start:start + batch_size], step)
            n_steps += 1
        adam.steps += n_steps  # as the device's count moved: checkpoints and the eager path read the host's
        return n_steps

    def adam_step(self, max_grad_norm: float | None = None) -> None:
        """Adam's step inside ``step``, counted on the device."""
        self.adam.step_on_device(self.adam_steps, max_grad_norm)
