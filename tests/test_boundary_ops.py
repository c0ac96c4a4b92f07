"""Native-boundary properties (tests/boundary.py) of ``fastppo.gae`` and ``fastppo.ppo_loss`` with
backend="cpp", against their torch references."""

from __future__ import annotations

import numpy as np
import pytest
import torch
from hypothesis import given
from hypothesis import strategies as st

import fastppo
from fastppo.ops import gae_reference
from fastppo.ops.ppo_loss import STATS, ppo_loss_reference
from boundary import (
    SEEDS, VARIANT_NAMES, _readonly, _reversed, _settings, _strided, _tensor_neg, clean, outcome, unchanged, vary)

pytestmark = pytest.mark.skipif(not fastppo.backends()["cpp"].available, reason="needs the native extension")


# --- gae --------------------------------------------------------------------------------------------------
GAE_INPUTS = ("rewards", "values", "next_values", "terminated", "truncated")


def _gae_arrays(rng, T, N, dtype, flag_dtype):
    f = lambda: rng.standard_normal((T, N)).astype(dtype)  # noqa: E731
    flags = lambda: (rng.random((T, N)) < 0.3).astype(flag_dtype)  # noqa: E731
    return dict(rewards=f(), values=f(), next_values=f(), terminated=flags(), truncated=flags())


def _gae_out(kind, clean_args, rng):
    """The out= argument for `kind`, and whether it is expected to be a fresh, valid pair."""
    r = clean_args["rewards"]
    fresh = lambda: np.full_like(r, np.nan)  # noqa: E731
    if kind == "none":
        return None
    if kind == "pair":
        return (fresh(), fresh())
    if kind == "list":
        return [fresh(), fresh()]
    if kind == "tensors":
        return (torch.from_numpy(fresh()), torch.from_numpy(fresh()))
    if kind == "same_twice":
        a = fresh()
        return (a, a)
    if kind == "alias_input":
        return (clean_args["values"], fresh())
    if kind == "alias_rewards_ret":
        return (fresh(), clean_args["rewards"])
    if kind == "overlap_views":
        base = np.full((r.shape[0] + 1, *r.shape[1:]), np.nan, r.dtype)
        return (base[:-1], base[1:])
    if kind == "reversed_self":
        a = fresh()
        return (a, a[::-1])
    if kind == "zero_stride":
        return (np.broadcast_to(np.zeros(r.shape[1:], r.dtype), r.shape), fresh())
    if kind == "writeable_zero_stride":
        z = np.zeros(r.shape[1:] or (1,), r.dtype)
        return (np.lib.stride_tricks.as_strided(z, r.shape, (0, *z.strides)[-r.ndim:]), fresh())
    if kind == "readonly":
        return (_readonly(fresh()), fresh())
    if kind == "strided":
        return (_strided(fresh()), _reversed(fresh()))
    if kind == "wrong_dtype":
        return (fresh().astype(np.float16), fresh())
    if kind == "wrong_shape":
        return (fresh()[None], fresh())
    if kind == "one":
        return (fresh(),)
    if kind == "three":
        return (fresh(), fresh(), fresh())
    if kind == "array":
        return np.stack([fresh(), fresh()])
    if kind == "tensor_neg":
        return (_tensor_neg(fresh()), fresh())
    raise AssertionError(kind)


GAE_OUT_KINDS = ["none", "pair", "list", "tensors", "same_twice", "alias_input", "alias_rewards_ret",
                 "overlap_views", "reversed_self", "zero_stride", "writeable_zero_stride", "readonly", "strided",
                 "wrong_dtype", "wrong_shape", "one", "three", "array", "tensor_neg"]


GAE_GAMMAS = [0.0, 0.5, 0.99, 1.0]
GAE_BAD_SCALARS = [-0.1, 1.5, float("nan"), float("inf"), -float("inf")]


@_settings(250)
@given(seed=SEEDS, T=st.integers(0, 6), N=st.integers(0, 5), dtype=st.sampled_from([np.float32, np.float64]),
       flags_float=st.booleans(), target=st.sampled_from([*GAE_INPUTS, "out", "gamma", "lam"]),
       variant=st.sampled_from(VARIANT_NAMES), out_kind=st.sampled_from(GAE_OUT_KINDS), as_tensors=st.booleans(),
       gamma=st.sampled_from(GAE_GAMMAS), lam=st.sampled_from(GAE_GAMMAS), bad=st.sampled_from(GAE_BAD_SCALARS),
       odd_flags=st.booleans())
def test_gae(seed, T, N, dtype, flags_float, target, variant, out_kind, as_tensors, gamma, lam, bad, odd_flags):
    """One thing odd per example: an input (a variant of it), out (a kind of pair), gamma or lam."""
    gamma, lam = (bad if target == "gamma" else gamma), (bad if target == "lam" else lam)
    if target != "out":
        out_kind = "none" if T % 2 else "pair"
    if target not in GAE_INPUTS:
        variant = "clean"
        target = "rewards"
    rng = np.random.default_rng(seed)
    clean_args = _gae_arrays(rng, T, N, dtype, dtype if flags_float else bool)
    if odd_flags and flags_float:  # flags that are neither 0 nor 1: the kernels read any non-zero as set
        clean_args["terminated"][rng.random((T, N)) < 0.2] = np.nan
        clean_args["truncated"][rng.random((T, N)) < 0.2] = 0.5
    args = {k: torch.from_numpy(v) if as_tensors else v for k, v in clean_args.items()}
    args[target] = vary(variant, clean_args[target])
    out = _gae_out(out_kind, clean_args, rng)
    before = {k: clean(v) for k, v in args.items()}
    names = (target, "out", "gamma", "lam")
    ok, res = outcome(lambda: fastppo.gae(*args.values(), gamma=gamma, lam=lam, backend="cpp", out=out), *names)
    if not ok:
        return
    unchanged(before, args)
    assert 0.0 <= gamma <= 1.0 and 0.0 <= lam <= 1.0, "an out-of-range gamma/lam was accepted"
    if out is not None:
        assert res[0] is out[0] and res[1] is out[1]
    inputs = {k: torch.from_numpy(clean(v)) for k, v in args.items()}
    ref_adv, ref_ret = gae_reference(*inputs.values(), gamma=gamma, lam=lam)
    tol = dict(rtol=1e-5, atol=1e-5) if inputs["rewards"].dtype == torch.float32 else dict(rtol=1e-12, atol=1e-12)
    for got, ref in zip(res, (ref_adv, ref_ret)):
        torch.testing.assert_close(torch.from_numpy(clean(got)), ref, equal_nan=True, **tol)


def test_gae_float_flags_mean_set_when_nonzero():
    """Regression: a float done flag that is neither 0 nor 1 (0.5, NaN) is "set" for the kernels (as_flag,
    csrc/core/common.h) and the Numba loop; the reference multiplied by (1 - flag) instead."""
    r = np.zeros((3, 2), np.float32)
    flags = np.array([[0.5, np.nan], [0.0, 2.0], [1.0, 0.0]], np.float32)
    got = fastppo.gae(r, r + 1, r + 1, flags, np.zeros_like(flags), gamma=0.9, lam=0.9, backend="cpp")
    ref = gae_reference(*map(torch.from_numpy, (r, r + 1, r + 1, flags, np.zeros_like(flags))), gamma=0.9, lam=0.9)
    for g, e in zip(got, ref):
        np.testing.assert_allclose(g, e.numpy(), rtol=1e-6)


# --- ppo_loss ---------------------------------------------------------------------------------------------
LOSS_INPUTS = ("new_logp", "old_logp", "advantages", "new_values", "old_values", "returns", "entropy", "kl")
DIFFERENTIABLE = ("new_logp", "new_values", "entropy", "kl")


VALID_COEFS = [(0.5, 0.01, 0.0), (0.0, 0.0, 0.3), (1.0, 0.0, 0.0)]
BAD_COEFS = [(-1.0, 0.0, 0.0), (0.5, float("nan"), 0.0), (0.5, 0.0, float("inf")), (float("inf"), 0.0, 0.0)]


@_settings(250)
@given(seed=SEEDS, B=st.integers(1, 6), dtype=st.sampled_from([np.float32, np.float64]),
       target=st.sampled_from([*LOSS_INPUTS, "poison", "clip_coef", "vf_clip", "coefs"]),
       variant=st.sampled_from(VARIANT_NAMES), with_kl=st.booleans(), normalize=st.booleans(), check=st.booleans(),
       poison=st.sampled_from([np.nan, np.inf, -np.inf]), poisoned=st.sampled_from(LOSS_INPUTS),
       clip_coef=st.sampled_from([0.0, -0.1, float("nan"), float("inf")]),
       vf_clip=st.sampled_from([0.0, -1.0, float("inf"), float("nan"), "0.5", [0.5]]),
       ok_vf_clip=st.sampled_from([None, 0.5, 1e-3]), coefs=st.sampled_from(VALID_COEFS),
       bad_coefs=st.sampled_from(BAD_COEFS))
def test_ppo_loss(seed, B, dtype, target, variant, with_kl, normalize, check, poison, poisoned, clip_coef, vf_clip,
                  ok_vf_clip, coefs, bad_coefs):
    """One thing odd per example: an input (a variant of it), a non-finite value in an input ("poison"),
    or a scalar option."""
    clip_coef = clip_coef if target == "clip_coef" else 0.2
    vf_clip = vf_clip if target == "vf_clip" else ok_vf_clip
    coefs = bad_coefs if target == "coefs" else coefs
    poison = poison if target == "poison" else None
    if target not in LOSS_INPUTS:
        target, variant = (poisoned if poison is not None else "new_logp"), "clean"
    rng = np.random.default_rng(seed)
    clean_args = {k: (0.5 * rng.standard_normal(B)).astype(dtype) for k in LOSS_INPUTS}
    clean_args["entropy"] = np.abs(clean_args["entropy"])
    if poison is not None and B:  # a non-finite input: with check=True it must be refused, naming it
        clean_args[target][rng.integers(B)] = poison
    with_kl = with_kl or target == "kl"
    args = {k: torch.from_numpy(v.copy()).requires_grad_(k in DIFFERENTIABLE) for k, v in clean_args.items()}
    args[target] = vary(variant, clean_args[target])
    if not with_kl:
        args["kl"] = None
    vf_coef, ent_coef, kl_coef = coefs
    options = dict(clip_coef=clip_coef, vf_coef=vf_coef, ent_coef=ent_coef, vf_clip=vf_clip,
                   normalize_advantages=normalize, kl_coef=kl_coef)
    before = {k: clean(v) for k, v in args.items()}
    names = (target, "clip_coef", "vf_coef", "ent_coef", "kl_coef", "vf_clip", "new_logp")
    ok, res = outcome(lambda: fastppo.ppo_loss(*list(args.values())[:7], kl=args["kl"], check=check, backend="cpp",
                                               **options), *names)
    if not ok:
        return
    unchanged(before, args)
    assert not (check and poison is not None and B and args[target] is not None and not isinstance(args[target], str)
                and np.isin(poison, clean(args[target])).any()), "check=True accepted a non-finite input"
    loss, stats = res
    ref_args = {k: (None if v is None else torch.from_numpy(clean(v)).requires_grad_(k in DIFFERENTIABLE))
                for k, v in args.items()}
    ref_loss, ref_stats = ppo_loss_reference(*list(ref_args.values())[:7], kl=ref_args["kl"], **options)
    tol = dict(rtol=2e-5, atol=2e-5) if ref_args["new_logp"].dtype == torch.float32 else dict(rtol=1e-10, atol=1e-10)
    if any(not np.isfinite(v).all() for v in before.values() if v is not None):
        # A non-finite input (check=False): the fused kernel and torch propagate NaN/inf through min, max
        # and clamp by different rules, so only the finite inputs' results are compared.
        return
    torch.testing.assert_close(loss.detach(), ref_loss.detach(), **tol)
    for k in STATS:
        torch.testing.assert_close(stats[k], ref_stats[k], **tol)
    wrt = [k for k in DIFFERENTIABLE if isinstance(args[k], torch.Tensor) and args[k].requires_grad]
    if wrt:
        grads = torch.autograd.grad(loss, [args[k] for k in wrt], allow_unused=True)
        ref_grads = torch.autograd.grad(ref_loss, [ref_args[k] for k in wrt], allow_unused=True)
        for k, g, e in zip(wrt, grads, ref_grads):
            e = torch.zeros_like(ref_args[k]) if e is None else e
            torch.testing.assert_close(g, e, msg=lambda m: f"d loss / d {k}: {m}", **tol)


def test_negative_bit_tensors_are_refused():
    """Regression: torch exports a tensor with the negative bit set (``x.conj().imag``, ``_neg_view``)
    through DLPack as its un-negated memory, so the kernels read -x: the binding refuses such tensors."""
    x = torch.zeros(4)
    neg = torch.tensor([1 + 1j, 2 + 2j, 3 + 3j, 4 + 4j]).conj().imag  # [-1, -2, -3, -4], negative bit set
    assert neg.is_neg()
    with pytest.raises(TypeError, match="entropy.*negative bit"):
        fastppo.ppo_loss(x, x, x, x, x, x, neg, backend="cpp")
    r = torch.zeros(3, 4)
    with pytest.raises(TypeError, match="rewards.*negative bit"):
        fastppo.gae(neg.expand(3, 4), r, r, r, r, gamma=0.9, lam=0.9, backend="cpp")


def test_ppo_loss_unusable_dtype_named():
    """Regression: a bfloat16 new_logp failed inside the wrapper (``out.numpy()``) with torch's message."""
    x = torch.zeros(4, dtype=torch.bfloat16)
    with pytest.raises(TypeError, match="new_logp"):
        fastppo.ppo_loss(x, x, x, x, x, x, x, backend="cpp")


def test_ppo_loss_vf_clip_not_a_number():
    """Regression: vf_clip="0.5" raised pybind11's cast error, which names no argument."""
    x = torch.zeros(4)
    with pytest.raises(TypeError, match="vf_clip"):
        fastppo.ppo_loss(x, x, x, x, x, x, x, vf_clip="0.5", backend="cpp")
