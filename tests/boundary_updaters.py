"""The native updaters' arguments for tests/test_boundary_updaters.py: clean PpoUpdate / CriticFit
arguments over fresh Adam state, their odd variants and aliases, and the checks of what an epoch wrote."""

from __future__ import annotations

import numpy as np
import torch

from boundary import VARIANT_NAMES, _policy, clean, vary


# The native updaters are built over the policy's, its gradients', Adam's and the rollout's own memory, and
# an epoch writes the parameters, the gradients, Adam's moments and its step count in place. Per example one
# argument is odd (a variant of an array, a list entry, a string, a config field, order, on_gradients, or two
# arguments sharing memory); the property: the constructor and the epoch either succeed and leave exactly
# what the same calls on clean copies of the arguments leave (the five buffers an update writes and the
# returned sums, bit for bit), or one of them raises naming the argument, and then nothing was written.

ADAM_STATE = ("flat_param", "flat_grad", "exp_avg", "exp_avg_sq", "adam_steps")
PPO_INPUTS = ("obs", "actions", "old_log_probs", "advantages", "old_values", "returns", "old_dist_params")
PPO_LISTS = ("actor", "actor_grads", "critic", "critic_grads")


def _readonly_view(a):
    b = a.view()
    b.flags.writeable = False
    return b


# Variants that keep the caller's memory (the only ones a parameter, gradient or Adam buffer can take, since
# the update must write where the policy and FlatAdam read).
VIEW_VARIANTS = {"view": lambda a: a.view(), "tensor_view": torch.from_numpy, "readonly_view": _readonly_view}
UPDATE_VARIANT_NAMES = VARIANT_NAMES + sorted(VIEW_VARIANTS)


def vary_update(variant, a):
    return VIEW_VARIANTS[variant](a) if variant in VIEW_VARIANTS else vary(variant, a)


def _adam_state(parameters, seed):
    """FlatParameters + FlatAdam over `parameters`, mid-run (moments, a step count, a stale gradient), as
    the five arrays the native updaters take."""
    from fastppo.algos.optim import FlatAdam, FlatParameters

    flat = FlatParameters(parameters)
    adam = FlatAdam(flat, lr=1e-2, eps=1e-5)
    rng = np.random.default_rng(seed)
    n = flat.param.numel()
    with torch.no_grad():
        flat.grad.copy_(torch.from_numpy(rng.standard_normal(n, dtype=np.float32)))
        adam.exp_avg.copy_(torch.from_numpy(rng.standard_normal(n, dtype=np.float32) * 1e-2))
        adam.exp_avg_sq.copy_(torch.from_numpy(rng.random(n, dtype=np.float32) * 1e-4))
    adam.steps = int(rng.integers(0, 4))
    return dict(flat_param=flat.param.detach().numpy(), flat_grad=flat.grad.numpy(), exp_avg=adam.exp_avg.numpy(),
                exp_avg_sq=adam.exp_avg_sq.numpy(), adam_steps=adam.step_count)


def _ppo_args(kind, size, seed):
    """PpoUpdate's keyword arguments as NativePpoUpdater passes them, for a small policy and a random rollout
    (the same arrays, in fresh memory, for the same kind, size and seed)."""
    policy = _policy(kind)
    state = _adam_state(policy.parameters(), seed)
    spec = policy.action_spec
    params, grads = policy.native_arrays(), policy.native_arrays(grads=True)
    rng = np.random.default_rng(seed + 1)
    col = lambda: rng.standard_normal(size, dtype=np.float32)  # noqa: E731
    if spec.kind == "gaussian":
        actions = rng.standard_normal((size, *spec.shape), dtype=np.float32)
    else:
        nvec = np.array(spec.nvec)
        actions = np.floor(rng.random((size, len(nvec))) * nvec).astype(np.int64).reshape((size, *spec.shape))
    return dict(actor=params["actor"], actor_grads=grads["actor"], critic=params["critic"],
                critic_grads=grads["critic"], activation=policy.activation, kind=spec.kind, nvec=list(spec.nvec),
                log_std=params["log_std"], log_std_grad=grads["log_std"], **state,
                obs=rng.standard_normal((size, 3), dtype=np.float32), actions=actions, old_log_probs=col() - 1,
                advantages=col(), old_values=col(), returns=col(),
                old_dist_params=rng.standard_normal((size, spec.n_params), dtype=np.float32))


def _critic_args(size, seed):
    """CriticFit's arguments as NativeCriticFit passes them (the critic on its own flat buffers)."""
    policy = _policy("discrete")
    state = _adam_state(policy.critic.parameters(), seed)
    params, grads = policy.native_arrays(), policy.native_arrays(grads=True)
    rng = np.random.default_rng(seed + 1)
    return dict(critic=params["critic"], critic_grads=grads["critic"], activation=policy.activation, **state,
                obs=rng.standard_normal((size, 3), dtype=np.float32), returns=rng.standard_normal(size, dtype=np.float32))


CONFIG_FIELDS = ("batch_size", "clip_coef", "vf_coef", "ent_coef", "clip_range_vf", "normalize_advantages",
                 "kl_coef", "target_kl", "max_grad_norm", "lr", "beta1", "beta2", "eps")


def _ppo_config(cfg):
    """A valid PpoUpdateConfig, its options drawn from `cfg`."""
    from fastppo._backend import _core

    rng = np.random.default_rng(cfg)
    c = _core.PpoUpdateConfig()
    c.batch_size = int(rng.choice([1, 3, 4, 64]))
    c.clip_coef, c.vf_coef, c.ent_coef = 0.2, 0.5, float(rng.choice([0.0, 0.01]))
    c.clip_range_vf, c.kl_coef = float(rng.choice([-1.0, 0.2])), float(rng.choice([-1.0, 0.5]))
    c.target_kl, c.max_grad_norm = float(rng.choice([-1.0, -1.0, 0.05])), float(rng.choice([-1.0, 0.5]))
    c.normalize_advantages = bool(rng.integers(2))
    c.lr, c.beta1, c.beta2, c.eps = 1e-2, 0.9, 0.999, 1e-5
    return c


def _copy_config(c):
    from fastppo._backend import _core

    copy = _core.PpoUpdateConfig()
    for field in CONFIG_FIELDS:
        setattr(copy, field, getattr(c, field))
    return copy


def _written(args):
    """The values of the five buffers an update writes, as passed (None for what is not an array)."""
    return {k: clean(args[k]) for k in ADAM_STATE}


def _assert_written(got, want, what):
    for k in ADAM_STATE:
        if got[k] is not None and want[k] is not None:
            assert got[k].dtype == want[k].dtype and got[k].shape == want[k].shape, (what, k)
            np.testing.assert_array_equal(got[k], want[k], err_msg=f"{what}: {k}")


def _assert_refused_cleanly(model, before, args, passed_before):
    """A refused call wrote nothing: not the model's own buffers, nor what was passed instead."""
    _assert_written(_written(model), before, "the model's buffers after a refused call")
    _assert_written(_written(args), passed_before, "the passed buffers after a refused call")


def _clean_copies(ref, args, changed):
    """The reference call's arguments: ref (the same values in fresh memory) with clean copies of what was
    passed for each changed argument (buffers that are written are overwritten in place, values only)."""
    for k in changed:
        v = args[k]
        if k in ADAM_STATE:
            c = clean(v)
            if c is not None and c.shape == ref[k].shape and c.dtype == ref[k].dtype:
                ref[k][...] = c
        elif isinstance(v, (np.ndarray, torch.Tensor)):
            ref[k] = np.ascontiguousarray(clean(v))
        else:
            ref[k] = v


def _same_result(got, want):
    if isinstance(got, tuple):  # PpoUpdate.epoch: (updates, stopped, sums)
        assert got[:2] == want[:2], (got, want)
        np.testing.assert_array_equal(np.array(got[2]), np.array(want[2]))
    else:  # CriticFit.epoch: the loss sum
        np.testing.assert_array_equal(np.float64(got), np.float64(want))


def _ppo_alias(args, alias, size):
    """Makes one argument (a view of) another one's memory; returns the names the refusal may give and the
    arguments that changed, or None where the alias does not apply to these shapes."""
    dst, _, src = alias.partition("=")
    n = args["flat_param"].size
    if alias == "grads=params":
        for g, p in (("actor_grads", "actor"), ("critic_grads", "critic"), ("log_std_grad", "log_std"),
                     ("flat_grad", "flat_param")):
            if g in args:
                args[g] = args[p]
        return ("flat_grad", "flat_param"), ["flat_grad"]
    if alias == "exp_avg~exp_avg_sq":  # one element shared
        base = np.zeros(2 * n - 1, np.float32)
        base[n - 1:] = args["exp_avg_sq"]
        base[:n] = args["exp_avg"]
        args["exp_avg"], args["exp_avg_sq"] = base[:n], base[n - 1:]
        return ("exp_avg", "exp_avg_sq"), ["exp_avg", "exp_avg_sq"]
    if alias == "critic[0]=actor[0]":
        if "actor" not in args or args["critic"][0].shape != args["actor"][0].shape:
            return None
        args["critic"] = [args["actor"][0], *args["critic"][1:]]
        return ("critic", "actor"), []
    if alias in ("actor=actor_grads", "actor_grads=critic_grads"):
        if dst not in args:
            return None
        args[dst] = list(args[src])
        return (dst, src), []
    if dst not in args or src not in args:
        return None
    d, s = args[dst], args[src]
    if d is None or s is None or d.size == 0:  # nothing to share
        return None
    flat_s = s.reshape(-1)
    if dst == "adam_steps":  # 8 bytes of a float32 buffer
        args[dst] = flat_s[-2:].view(np.int64) if "=flat_param" not in alias else flat_s[:2].view(np.int64)
    elif src == "adam_steps":
        if d.size > 2 or d.dtype != np.float32:
            return None
        args[dst] = flat_s.view(np.float32)[:d.size].reshape(d.shape)
    elif d.nbytes > s.nbytes:
        return None
    elif d.dtype == s.dtype:
        args[dst] = flat_s[-d.size:].reshape(d.shape)
    else:
        args[dst] = flat_s.view(np.uint8)[:d.nbytes].view(d.dtype).reshape(d.shape)
    return (dst, src), [dst]


PPO_ALIASES = ["flat_grad=flat_param", "grads=params", "exp_avg=flat_param", "exp_avg_sq=exp_avg",
               "exp_avg_sq=flat_grad", "exp_avg=flat_grad", "exp_avg~exp_avg_sq", "adam_steps=flat_param",
               "adam_steps=exp_avg_sq", "obs=flat_param", "obs=exp_avg", "old_log_probs=flat_grad",
               "advantages=exp_avg_sq", "returns=flat_param", "old_values=exp_avg", "old_dist_params=flat_grad",
               "actions=flat_param", "old_log_probs=adam_steps", "returns=old_values", "advantages=old_log_probs",
               "obs=old_dist_params", "critic[0]=actor[0]", "actor=actor_grads", "actor_grads=critic_grads"]
# Two arguments that are only read may share memory; these must be accepted.
READ_ONLY_ALIASES = {"returns=old_values", "advantages=old_log_probs", "obs=old_dist_params", "returns=obs"}
PPO_TARGETS = [*ADAM_STATE, *PPO_INPUTS, *PPO_LISTS, "log_std", "log_std_grad", "order", "alias", "activation",
               "kind", "nvec"]
STRING_VALUES = ["tanh", "relu", "gelu", "gaussian", "categorical", "", None, 1, b"tanh", ["tanh"]]
NVEC_VALUES = [[3], [2, 3], [1, 2], [3, 0], [-1, 4], [], [2**62, 2**62], [1.5], "3", None, np.array([2, 3])]
ORDER_KINDS = ["variant", "duplicates", "out_of_range", "negative", "short", "long", "huge"]


def _odd_order(kind, order, variant, rng):
    size = order.size
    if kind == "variant":
        return vary_update(variant, order)
    if kind == "duplicates":  # in range but (mostly) not a permutation
        return rng.integers(0, max(size, 1), size)
    order = order.copy()
    if kind in ("out_of_range", "negative", "huge") and size:
        order[rng.integers(size)] = {"out_of_range": size, "negative": -1, "huge": 2**62}[kind]
    elif kind == "short":
        order = order[:-1]
    elif kind == "long":
        order = np.append(order, 0)
    return order
