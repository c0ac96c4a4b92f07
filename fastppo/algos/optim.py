"""Optimiser state on one flat buffer: the policy's parameters as views of one tensor, their gradients as
views of another, and Adam over them. The torch updaters and the native ones (csrc/train/) step the
same memory, so checkpoints and both paths see one state.

SB3's ``policy_kwargs`` ``optimizer_class`` / ``optimizer_kwargs`` choose the optimiser
(:func:`make_optimizer`): Adam with only ``betas`` / ``eps`` (torch's defaults for its other options) is
:class:`FlatAdam`, which the native updates run; anything else is that torch optimiser behind the same
interface (:class:`TorchOptimizer`), on the torch path.
"""

from __future__ import annotations

import copy
import inspect
import math

import numpy as np
import torch
from torch import nn


class FlatParameters:
    """A module's parameters re-seated as views of one flat buffer, their gradients as views of another.

    Clipping and Adam then run on one tensor instead of one per layer: each torch op costs ~10 us on a
    small CPU, and clip_grad_norm_ + Adam over 12 tensors cost ~0.5 ms per minibatch, a third of it.
    The arithmetic is unchanged (both are elementwise or a norm over all elements). Gradients must be
    zeroed in place (``grad.zero_()``), never set to None, or the views would come apart.
    """

    def __init__(self, parameters):
        params = list(parameters)
        self.parameters = params  # the parameters themselves, for a torch optimiser over them
        first = params[0]
        if any(p.dtype != first.dtype or p.device != first.device for p in params):
            raise ValueError("policy parameters must share one dtype and device, got "
                             f"{sorted({(str(p.dtype), str(p.device)) for p in params})}")
        self.param = torch.empty(sum(p.numel() for p in params), dtype=first.dtype, device=first.device)
        self.grad = torch.zeros_like(self.param)
        offset = 0
        with torch.no_grad():
            for p in params:
                n = p.numel()
                self.param[offset:offset + n].copy_(p.flatten())
                p.data = self.param[offset:offset + n].view_as(p)
                p.grad = self.grad[offset:offset + n].view_as(p)
                offset += n
        self.param.requires_grad_(True)
        self.param.grad = self.grad


class FlatAdam:
    """Adam (torch.optim.Adam's formulas, no weight decay) over one :class:`FlatParameters` buffer, with
    optional gradient-norm clipping before the step.

    These torch ops are the spec of the native step (``FlatAdam`` in csrc/train/mlp.h), which the native
    updates take on the same state: numpy views of the moment tensors, and ``step_count``, the number of
    steps taken, a one-element int64 array that both paths increment in place (``steps`` reads and sets
    it as an int). It is not torch.optim.Adam itself: creating or checkpointing a torch optimizer imports
    torch._dynamo, ~2 s on a small CPU, longer than a whole CartPole run.
    """

    def __init__(self, flat: FlatParameters, lr: float, eps: float, betas: tuple[float, float] = (0.9, 0.999)):
        self.flat, self.lr, self.eps, self.betas = flat, float(lr), float(eps), tuple(betas)
        self.step_count = np.zeros(1, np.int64)  # in place only: the native updates hold a view of it
        self.exp_avg = torch.zeros_like(flat.param, requires_grad=False)
        self.exp_avg_sq = torch.zeros_like(flat.param, requires_grad=False)

    @property
    def steps(self) -> int:
        """Adam's steps taken so far."""
        return int(self.step_count[0])

    @steps.setter
    def steps(self, value: int) -> None:
        self.step_count[0] = value

    @torch.no_grad()
    def step(self, max_grad_norm: float | None = None) -> None:
        """Clip the gradient's global norm to ``max_grad_norm`` (as ``clip_grad_norm_``), then step."""
        self._moments(max_grad_norm)
        self.steps += 1
        (beta1, beta2), steps = self.betas, self.steps
        bias1, bias2 = 1 - beta1 ** steps, 1 - beta2 ** steps
        denom = (self.exp_avg_sq.sqrt() / math.sqrt(bias2)).add_(self.eps)
        self.flat.param.addcdiv_(self.exp_avg, denom, value=-self.lr / bias1)

    @torch.no_grad()
    def step_on_device(self, count: torch.Tensor, max_grad_norm: float | None = None) -> None:
        """:meth:`step` with Adam's step count kept in ``count`` (a float64 0-dim tensor on the parameters'
        device, incremented here) instead of ``steps``: no Python number changes between calls, so a CUDA
        graph can replay it (fastppo.algos.graphs); the caller adds one to ``steps`` per call. The same
        formulas, with the bias corrections computed on the device: the same numbers to float32 rounding."""
        self._moments(max_grad_norm)
        count += 1
        beta1, beta2 = self.betas
        bias1, bias2 = 1 - beta1 ** count, 1 - beta2 ** count
        denom = (self.exp_avg_sq.sqrt() / bias2.sqrt().float()).add_(self.eps)
        self.flat.param.addcdiv_(self.exp_avg * (-self.lr / bias1).float(), denom)

    def _moments(self, max_grad_norm: float | None) -> None:
        """The gradient clipped, and Adam's moments updated with it."""
        grad, (beta1, beta2) = self.flat.grad, self.betas
        if max_grad_norm is not None:
            nn.utils.clip_grad_norm_(self.flat.param, max_grad_norm)
        self.exp_avg.lerp_(grad, 1 - beta1)
        self.exp_avg_sq.mul_(beta2).addcmul_(grad, grad, value=1 - beta2)

    def state_dict(self) -> dict:
        return {"lr": self.lr, "eps": self.eps, "betas": self.betas, "steps": self.steps,
                "exp_avg": self.exp_avg.clone(), "exp_avg_sq": self.exp_avg_sq.clone()}

    def load_state_dict(self, state: dict) -> None:
        self.lr, self.eps, self.betas, self.steps = state["lr"], state["eps"], tuple(state["betas"]), state["steps"]
        with torch.no_grad():  # in place: the native updates hold views of these tensors
            self.exp_avg.copy_(state["exp_avg"])
            self.exp_avg_sq.copy_(state["exp_avg_sq"])


class TorchOptimizer:
    """A torch optimiser over a :class:`FlatParameters`' parameters, with :class:`FlatAdam`'s interface:
    ``lr`` (every parameter group's, settable), ``step(max_grad_norm)`` (clip the global norm, then
    step), ``state_dict`` / ``load_state_dict``. The parameters and their gradients stay views of the
    flat buffers (torch optimisers update them in place), so the updaters zero, reduce and clip the one
    flat gradient as with FlatAdam."""

    def __init__(self, flat: FlatParameters, optimizer_class, lr: float, optimizer_kwargs: dict):
        self.flat = flat
        self.optimizer = optimizer_class(flat.parameters, lr=lr, **optimizer_kwargs)

    @property
    def lr(self) -> float:
        return self.optimizer.param_groups[0]["lr"]

    @lr.setter
    def lr(self, value: float) -> None:
        for group in self.optimizer.param_groups:  # as SB3's _update_learning_rate
            group["lr"] = value

    @torch.no_grad()
    def step(self, max_grad_norm: float | None = None) -> None:
        if max_grad_norm is not None:
            nn.utils.clip_grad_norm_(self.flat.param, max_grad_norm)
        self.optimizer.step()

    def state_dict(self) -> dict:
        return copy.deepcopy(self.optimizer.state_dict())  # a snapshot, as FlatAdam's

    def load_state_dict(self, state: dict) -> None:
        self.optimizer.load_state_dict(state)


def _adam_defaults() -> dict:
    return {name: p.default for name, p in inspect.signature(torch.optim.Adam).parameters.items()
            if p.default is not p.empty}


def _options(optimizer_class, optimizer_kwargs: dict | None, default_eps: float) -> tuple[type, dict]:
    """SB3's rule: the class defaults to Adam, and Adam given no optimizer_kwargs gets ``eps=default_eps``
    (SB3's ActorCriticPolicy: 1e-5); given kwargs are taken as they are (torch's defaults otherwise)."""
    optimizer_class = torch.optim.Adam if optimizer_class is None else optimizer_class
    if optimizer_kwargs is None:
        return optimizer_class, ({"eps": default_eps} if optimizer_class is torch.optim.Adam else {})
    if not isinstance(optimizer_kwargs, dict):
        raise TypeError(f"policy_kwargs['optimizer_kwargs'] must be a dict, got {optimizer_kwargs!r}")
    if "lr" in optimizer_kwargs or "params" in optimizer_kwargs:
        raise ValueError("policy_kwargs['optimizer_kwargs'] must not hold 'lr' or 'params': the learning rate is "
                         "learning_rate, the parameters the policy's")
    return optimizer_class, dict(optimizer_kwargs)


def uses_flat_adam(optimizer_class=None, optimizer_kwargs: dict | None = None) -> bool:
    """Whether SB3's ``optimizer_class`` / ``optimizer_kwargs`` are :class:`FlatAdam`'s arithmetic:
    torch.optim.Adam with any ``betas`` and ``eps`` and torch's defaults for every other option (no
    weight decay, no amsgrad, ...; ``foreach`` / ``fused`` / ``capturable`` choose only how it runs)."""
    optimizer_class, kwargs = _options(optimizer_class, optimizer_kwargs, 1e-5)
    if optimizer_class is not torch.optim.Adam:
        return False
    defaults = _adam_defaults()
    return all(name in ("betas", "eps", "foreach", "fused", "capturable") or defaults.get(name, object()) == value
               for name, value in kwargs.items())


def make_optimizer(flat: FlatParameters, lr: float, optimizer_class=None, optimizer_kwargs: dict | None = None,
                   default_eps: float = 1e-5) -> FlatAdam | TorchOptimizer:
    """The optimiser over ``flat`` for SB3's ``optimizer_class`` / ``optimizer_kwargs`` (None: Adam with
    ``eps=default_eps``): a :class:`FlatAdam` where :func:`uses_flat_adam`, else a :class:`TorchOptimizer`."""
    optimizer_class, kwargs = _options(optimizer_class, optimizer_kwargs, default_eps)
    if uses_flat_adam(optimizer_class, kwargs):
        defaults = _adam_defaults()
        return FlatAdam(flat, lr, eps=kwargs.get("eps", defaults["eps"]), betas=kwargs.get("betas", defaults["betas"]))
    if not (isinstance(optimizer_class, type) and issubclass(optimizer_class, torch.optim.Optimizer)):
        raise TypeError(f"policy_kwargs['optimizer_class'] must be a torch.optim.Optimizer subclass, got "
                        f"{optimizer_class!r}")
    return TorchOptimizer(flat, optimizer_class, lr, kwargs)
