"""The PPO loss (Schulman et al. 2017), clipped surrogate plus value loss, entropy bonus and the
adaptive-KL penalty, fused into one op. The reference below is the spec; every backend is tested
against it, in value, in every stat and in gradients.

    ratio     = exp(new_logp - old_logp)
    pg        = -mean( min(ratio * A, clip(ratio, 1 - clip_coef, 1 + clip_coef) * A) )
    v         = 0.5 * mean( (V - R)^2 )                    or, with vf_clip = c,
                0.5 * mean( max((V - R)^2, (V_old + clip(V - V_old, -c, c) - R)^2) )
    loss      = pg + vf_coef * v - ent_coef * mean(entropy) + kl_coef * mean(kl)
    approx_kl = mean((ratio - 1) - log(ratio));   clipfrac = mean(|ratio - 1| > clip_coef)

With ``normalize_advantages``, A is first replaced by ``(A - mean(A)) / (std(A) + 1e-8)`` over the
batch, with torch's unbiased std (CleanRL's and SB3's convention); a batch of one sample has std 0.

The fused backends (cpp, cuda, numba) compute the loss, the stats and the per-sample gradients
d loss / d new_logp and d loss / d new_values in one pass; the backward multiplies them by the
incoming gradient. d loss / d entropy and d loss / d kl are the constants -ent_coef / B and
kl_coef / B. old_logp, advantages, old_values and returns are treated as constants (no gradient).
"""

from __future__ import annotations

import inspect
from typing import NamedTuple

import torch
from torch.autograd.function import once_differentiable

from fastppo import _backend
from fastppo._backend import _core
from fastppo._arrays import host_array
from fastppo.ops import _checks

__all__ = ["STATS", "ppo_loss", "ppo_loss_reference"]

STATS = ("policy_loss", "value_loss", "entropy", "approx_kl", "clipfrac")
"""The keys of the ``stats`` dict, in the order the fused kernels write them after the loss."""


class LossInputs(NamedTuple):
    """The loss's per-sample inputs, by name (each ``(B,)``; ``kl`` may be None). Inside this module
    they travel only as this record: eight same-shaped tensors in a positional tuple could be swapped
    (``old_values`` for ``returns``) and pass every check."""

    new_logp: torch.Tensor
    old_logp: torch.Tensor
    advantages: torch.Tensor
    new_values: torch.Tensor
    old_values: torch.Tensor
    returns: torch.Tensor
    entropy: torch.Tensor
    kl: torch.Tensor | None = None


class LossConfig(NamedTuple):
    """The loss's scalar options, by name (the keyword arguments of :func:`ppo_loss`)."""

    clip_coef: float
    vf_coef: float
    ent_coef: float
    vf_clip: float | None
    normalize_advantages: bool
    kl_coef: float
    check: bool


_GRAD_FIELDS = ("new_logp", "new_values", "entropy", "kl")
"""The inputs the loss is differentiable with respect to; the others are constants."""


def ppo_loss(new_logp, old_logp, advantages, new_values, old_values, returns, entropy, *,
             clip_coef: float = 0.2, vf_coef: float = 0.5, ent_coef: float = 0.0, vf_clip: float | None = None,
             normalize_advantages: bool = False, kl=None, kl_coef: float = 0.0, check: bool = False,
             backend: str = "auto"):
    """The PPO loss of a minibatch, and its diagnostics, in one fused pass (formulas in the module doc).

    Args:
        new_logp: ``(B,)`` log-probabilities of the taken actions under the current policy.
        old_logp: ``(B,)`` the same under the policy that collected the rollout.
        advantages: ``(B,)`` advantage estimates.
        new_values, old_values: ``(B,)`` current and rollout-time value predictions.
        returns: ``(B,)`` value targets.
        entropy: ``(B,)`` policy entropy per sample.
            All inputs are float32 or float64 torch tensors (numpy arrays are accepted too) of one
            dtype, device and shape ``(B,)`` with ``B >= 1``; any strides.
        clip_coef: the surrogate clipping coefficient eps (>= 0).
        vf_coef: weight of the value loss (>= 0).
        ent_coef: weight of the entropy bonus (>= 0).
        vf_clip: clip the value update to ``[-vf_clip, vf_clip]`` around ``old_values`` (> 0), or None.
        normalize_advantages: normalise the advantages over the batch first.
        kl: optional ``(B,)`` per-sample KL(old || new), for the adaptive-KL variant.
        kl_coef: beta, the weight of ``mean(kl)`` (>= 0).
        check: also raise if any input holds NaN or inf (a pass over the inputs; a sync on CUDA).
        backend: "auto" (the fastest for the device; ``FASTPPO_BACKEND`` overrides), "torch",
            "numba", "cpp" or "cuda".

    Returns:
        ``(loss, stats)``: ``loss`` is a 0-dim tensor, differentiable with respect to ``new_logp``,
        ``new_values``, ``entropy`` and ``kl``. ``stats`` maps each of :data:`STATS` to a detached
        0-dim tensor on the inputs' device (no host sync): ``value_loss`` is ``v`` before ``vf_coef``.

    Raises:
        TypeError: an input is not an array or has the wrong dtype.
        ValueError: shapes or devices disagree, an empty batch, a coefficient out of range, or (with
            ``check``) a non-finite input.
        fastppo.BackendUnavailableError: a forced backend cannot run here.

    Under ``torch.compile`` the fused backends run as the custom op ``fastppo::ppo_loss``: opaque to
    the compiler, with a fake implementation, so it does not break the graph.
    """
    if not isinstance(new_logp, torch.Tensor):
        inputs = LossInputs(*(_checks.as_tensor(x, name) for x, name in zip(
            (new_logp, old_logp, advantages, new_values, old_values, returns, entropy), LossInputs._fields)),
            kl=None if kl is None else _checks.as_tensor(kl, "kl"))
    else:
        inputs = LossInputs(new_logp=new_logp, old_logp=old_logp, advantages=advantages, new_values=new_values,
                            old_values=old_values, returns=returns, entropy=entropy, kl=kl)
    config = LossConfig(clip_coef=clip_coef, vf_coef=vf_coef, ent_coef=ent_coef, vf_clip=vf_clip,
                        normalize_advantages=normalize_advantages, kl_coef=kl_coef, check=check)
    if torch.compiler.is_compiling():
        if backend == "torch":
            return _checked_reference(inputs, config)
        out, _ = _call_op(inputs, backend, config)
        return out[0], dict(zip(STATS, out[1:].detach().unbind()))
    name = _backend.resolve(backend, inputs.new_logp.is_cuda)
    if name == "torch":
        return _checked_reference(inputs, config)
    loss, *stats = _FusedLoss.apply(inputs.new_logp, inputs.new_values, inputs.entropy, inputs.kl, inputs, config,
                                    name)
    return loss, dict(zip(STATS, stats))


def normalize(advantages: torch.Tensor) -> torch.Tensor:
    """``(A - mean(A)) / (std(A) + 1e-8)`` with torch's unbiased std (CleanRL's and SB3's convention); one
    sample has std 0. The Python side's one advantage normalisation (the reference's, TRPO's)."""
    std = advantages.std() if advantages.numel() > 1 else advantages.new_zeros(())
    return (advantages - advantages.mean()) / (std + 1e-8)


def ppo_loss_reference(new_logp, old_logp, advantages, new_values, old_values, returns, entropy, *,
                       clip_coef: float = 0.2, vf_coef: float = 0.5, ent_coef: float = 0.0,
                       vf_clip: float | None = None, normalize_advantages: bool = False, kl=None,
                       kl_coef: float = 0.0):
    """The spec: the PPO loss as the equations read, in plain PyTorch (autograd gives the gradients).
    Torch tensors in; ``(loss, stats)`` out as :func:`ppo_loss` returns them. No argument checks."""
    if normalize_advantages:
        advantages = normalize(advantages)
    logratio = new_logp - old_logp
    ratio = logratio.exp()
    surr1 = ratio * advantages
    surr2 = torch.clamp(ratio, 1 - clip_coef, 1 + clip_coef) * advantages
    policy_loss = -torch.min(surr1, surr2).mean()
    if vf_clip is None:
        value_loss = 0.5 * ((new_values - returns) ** 2).mean()
    else:
        clipped_values = old_values + torch.clamp(new_values - old_values, -vf_clip, vf_clip)
        value_loss = 0.5 * torch.max((new_values - returns) ** 2, (clipped_values - returns) ** 2).mean()
    entropy_mean = entropy.mean()
    loss = policy_loss + vf_coef * value_loss - ent_coef * entropy_mean
    if kl is not None:
        loss = loss + kl_coef * kl.mean()
    with torch.no_grad():
        approx_kl = ((ratio - 1) - logratio).mean()
        clipfrac = ((ratio - 1).abs() > clip_coef).to(ratio.dtype).mean()
    stats = (policy_loss.detach(), value_loss.detach(), entropy_mean.detach(), approx_kl, clipfrac)
    return loss, dict(zip(STATS, stats))


def _checked_reference(inputs: LossInputs, config: LossConfig):
    x = _check_args(inputs, config)
    return ppo_loss_reference(x.new_logp, x.old_logp, x.advantages, x.new_values, x.old_values, x.returns, x.entropy,
                              clip_coef=config.clip_coef, vf_coef=config.vf_coef, ent_coef=config.ent_coef,
                              vf_clip=config.vf_clip, normalize_advantages=config.normalize_advantages, kl=x.kl,
                              kl_coef=config.kl_coef)


def _named(inputs: LossInputs) -> dict:
    """The inputs by name, ``kl`` only when given."""
    return {name: t for name, t in zip(LossInputs._fields, inputs) if name != "kl" or t is not None}


def _check_args(inputs: LossInputs, config: LossConfig) -> LossInputs:
    """Validate for the Python backends exactly as csrc/ops/ppo_loss/ppo_loss.cpp does; return the inputs."""
    _checks.check_nonnegative(config.clip_coef, "clip_coef")  # 0: a linear clip schedule's last iteration
    _checks.check_nonnegative(config.vf_coef, "vf_coef")
    _checks.check_nonnegative(config.ent_coef, "ent_coef")
    _checks.check_nonnegative(config.kl_coef, "kl_coef")
    if config.vf_clip is not None:
        _checks.check_positive(config.vf_clip, "vf_clip")
    named = _named(inputs)
    for name, x in named.items():
        if not isinstance(x, torch.Tensor):
            raise TypeError(f"{name} must be a numpy array or a torch tensor, got {type(x).__name__}")
    first = inputs.new_logp
    _checks.check_ndim(first, 1, "per-sample (B,)", "new_logp")
    _checks.check_float(first, "new_logp")
    if first.numel() == 0:
        raise ValueError("new_logp must hold at least one sample, got shape (0,)")
    for name, x in named.items():
        _checks.check_like(x, name, first, "new_logp")
    if config.check:
        for name, x in named.items():
            _checks.check_finite(x, name)
    return inputs


def _fused_forward(backend: str, inputs: LossInputs, config: LossConfig):
    """(out, grads) from a fused backend: out = (loss, *STATS); grads = d loss / d new_logp (B values),
    d loss / d new_values (B), then d loss / d entropy_i and d loss / d kl_i (one value each, the same
    for every i). The one place the native, Numba and (under torch.compile) reference paths meet."""
    x = inputs.new_logp
    out = x.new_empty(6)
    grads = x.new_empty(2 * x.shape[0] + 2 if x.dim() == 1 else 2)
    if backend == "cpp":
        if x.dtype not in _checks.FLOATS:  # before x.new_empty(...).numpy(), which fails for dtypes numpy lacks
            _checks.check_float(x, "new_logp")
        host = {name: host_array(t, name) for name, t in _named(inputs).items()}
        _core.ppo_loss(**LossInputs(**host)._asdict(), out=out.numpy(), grads=grads.numpy(), **config._asdict())
    elif backend == "cuda":
        named = _named(inputs)
        _checks.check_devices(named, x, "new_logp")
        if config.check:
            for name, t in named.items():
                if isinstance(t, torch.Tensor):
                    _checks.check_finite(t, name)
        n = x.shape[0] if x.dim() == 1 else 1  # a wrong shape is the binding's to reject
        workspace = x.new_empty(_core.ppo_loss_cuda_workspace(max(1, n)), dtype=torch.float64)
        device_inputs = LossInputs(**{name: _checks.detached(t) for name, t in named.items()})
        with _backend.on_device(x.device):
            _core.ppo_loss(**device_inputs._asdict(), out=out, grads=grads, **config._replace(check=False)._asdict(),
                           workspace=workspace, stream=torch.cuda.current_stream().cuda_stream)
    else:
        inputs = _check_args(inputs, config)
        if backend == "numba":
            from fastppo.ops.ppo_loss_numba import ppo_loss_numba

            ppo_loss_numba(inputs, config, out, grads)
        else:  # the reference, for the custom op when "auto" finds no fused backend
            _reference_fused(inputs, config, out, grads)
    return out, grads


def _reference_fused(inputs: LossInputs, config: LossConfig, out, grads):
    with torch.enable_grad():
        logp, values = inputs.new_logp.detach().requires_grad_(), inputs.new_values.detach().requires_grad_()
        loss, stats = ppo_loss_reference(logp, inputs.old_logp, inputs.advantages, values, inputs.old_values,
                                         inputs.returns, inputs.entropy, clip_coef=config.clip_coef,
                                         vf_coef=config.vf_coef, ent_coef=config.ent_coef, vf_clip=config.vf_clip,
                                         normalize_advantages=config.normalize_advantages, kl=inputs.kl,
                                         kl_coef=config.kl_coef)
        d_logp, d_values = torch.autograd.grad(loss, (logp, values))
    out.copy_(torch.stack((loss.detach(), *stats.values())))
    n = inputs.new_logp.shape[0]
    grads.copy_(torch.cat((d_logp, d_values, grads.new_tensor((-config.ent_coef / n, config.kl_coef / n)))))


def _split_grads(scaled, needs: dict) -> dict:
    """Gradients by name of the inputs in ``_GRAD_FIELDS`` from the forward's buffer of per-sample ones,
    already scaled by the incoming gradient (layout in csrc/ops/ppo_loss/ppo_loss.h), None where ``needs[name]`` is
    false; the entropy and kl gradients are one value each, returned as stride-0 views."""
    n = (scaled.shape[0] - 2) // 2
    d_logp, d_values, d_entropy, d_kl = scaled.split_with_sizes((n, n, 1, 1))  # no Python wrapper, unlike split
    grads = dict(new_logp=d_logp, new_values=d_values, entropy=d_entropy.expand(n), kl=d_kl.expand(n))
    return {name: grads[name] if needs[name] else None for name in _GRAD_FIELDS}


class _FusedLoss(torch.autograd.Function):
    """The eager path: a plain autograd.Function costs 3-5x less per call than the custom op's dispatch
    (measured: docs/architecture.md). Outputs: the loss and the five stats (non-differentiable).

    Autograd tracks only tensors passed as arguments, so the four differentiable inputs travel flat
    (in ``_GRAD_FIELDS`` order) next to the record, and are put back into it by name."""

    @staticmethod
    def forward(ctx, new_logp, new_values, entropy, kl, inputs: LossInputs, config: LossConfig, backend: str):
        inputs = inputs._replace(new_logp=new_logp, new_values=new_values, entropy=entropy, kl=kl)
        out, grads = _fused_forward(backend, inputs, config)
        ctx.grads, ctx.inputs, ctx.config, ctx.backend = grads, inputs, config, backend
        ctx.set_materialize_grads(False)
        outputs = out.unbind()
        ctx.mark_non_differentiable(*outputs[1:])
        return outputs

    @staticmethod
    @once_differentiable  # the saved gradients are constants: a second derivative would be wrong
    def backward(ctx, g_loss, *_g_stats):
        if g_loss is None:  # only the (non-differentiable) stats reached the backward
            return (None,) * 7
        grads = ctx.grads
        if grads is None:  # a second backward (retain_graph) after the buffer was handed over: recompute
            grads = _fused_forward(ctx.backend, ctx.inputs, ctx.config)[1]
        if not g_loss.is_cuda and g_loss.item() == 1.0:
            # loss.backward() seeds 1: on the CPU reading that is cheaper than the multiply it saves. The
            # buffer is handed over (autograd may keep it as a leaf's .grad and add into it in place).
            ctx.grads, scaled = None, grads
        else:
            ctx.grads, scaled = grads, grads * g_loss
        d = _split_grads(scaled, dict(zip(_GRAD_FIELDS, ctx.needs_input_grad)))
        return d["new_logp"], d["new_values"], d["entropy"], d["kl"], None, None, None


# --- the custom op, for torch.compile -----------------------------------------------------------------
# A custom op's schema takes flat arguments: the records are spread into them by name here
# (_call_op) and rebuilt by name inside (_ppo_loss_impl); nothing else sees the flat form.

def _ppo_loss_impl(new_logp: torch.Tensor, old_logp: torch.Tensor, advantages: torch.Tensor,
                   new_values: torch.Tensor, old_values: torch.Tensor, returns: torch.Tensor,
                   entropy: torch.Tensor, kl: torch.Tensor | None, backend: str, clip_coef: float,
                   vf_coef: float, ent_coef: float, vf_clip: float | None, normalize_advantages: bool,
                   kl_coef: float, check: bool) -> tuple[torch.Tensor, torch.Tensor]:
    inputs = LossInputs(new_logp=new_logp, old_logp=old_logp, advantages=advantages, new_values=new_values,
                        old_values=old_values, returns=returns, entropy=entropy, kl=kl)
    config = LossConfig(clip_coef=clip_coef, vf_coef=vf_coef, ent_coef=ent_coef, vf_clip=vf_clip,
                        normalize_advantages=normalize_advantages, kl_coef=kl_coef, check=check)
    return _fused_forward(_backend.resolve(backend, new_logp.is_cuda), inputs, config)


_OP_ARGS = tuple(inspect.signature(_ppo_loss_impl).parameters)
"""The custom op's argument names in schema order (setup_context and backward see them positionally)."""
assert set(_OP_ARGS) == {*LossInputs._fields, "backend", *LossConfig._fields}

_ppo_loss_op = torch.library.custom_op("fastppo::ppo_loss", mutates_args=())(_ppo_loss_impl)


def _call_op(inputs: LossInputs, backend: str, config: LossConfig):
    return _ppo_loss_op(new_logp=inputs.new_logp, old_logp=inputs.old_logp, advantages=inputs.advantages,
                        new_values=inputs.new_values, old_values=inputs.old_values, returns=inputs.returns,
                        entropy=inputs.entropy, kl=inputs.kl, backend=backend, clip_coef=config.clip_coef,
                        vf_coef=config.vf_coef, ent_coef=config.ent_coef, vf_clip=config.vf_clip,
                        normalize_advantages=config.normalize_advantages, kl_coef=config.kl_coef,
                        check=config.check)


@_ppo_loss_op.register_fake
def _(new_logp, *_args, **_kwargs):
    return new_logp.new_empty(6), new_logp.new_empty(2 * new_logp.shape[0] + 2)


def _setup_context(ctx, inputs, output):
    ctx.save_for_backward(output[1])
    ctx.has_kl = dict(zip(_OP_ARGS, inputs))["kl"] is not None


def _op_backward(ctx, g_out, _g_grads):
    (grads,) = ctx.saved_tensors
    needs = dict(zip(_OP_ARGS, ctx.needs_input_grad))
    needs["kl"] = needs["kl"] and ctx.has_kl
    by_name = dict.fromkeys(_OP_ARGS) | _split_grads(grads * g_out[0], needs)
    return tuple(by_name.values())


_ppo_loss_op.register_autograd(_op_backward, setup_context=_setup_context)
