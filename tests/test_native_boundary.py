"""Property-based tests of the native boundary (issue "Reliability and security", part "Fuzzing the
native boundary"): every argument of the native entry points gets odd shapes, strides (negative,
non-contiguous, zero, empty dims), dtypes, aliasing, containers and values. The property, per call:

    it succeeds and its result equals the reference (or the same call on clean copies of the
    arguments), and it left its inputs alone -- or it raises TypeError / ValueError / RuntimeError
    whose message names the offending argument.

Never a crash, another exception type, or a silently wrong result. Entry points: ``fastppo.gae`` and
``fastppo.ppo_loss`` with ``backend="cpp"``, ``_core.EnvBatch`` through ``make_vec_env(..., backend="cpp")``
(step, reset, set_state, restore), ``_core.PolicyAct`` (act, value), ``_core.collect``, and the native
updaters ``_core.PpoUpdate`` (constructor, ``PpoUpdateConfig``, ``epoch``) and ``_core.CriticFit``
(constructor, ``epoch``), whose property also covers what they write: the parameters, gradients, Adam
moments and step count are bit for bit those of the same calls on clean copies, and untouched when a call
is refused.

Each example changes one argument (the others are clean), so the message must name that one. The
example budgets are fixed and derandomised (``_SETTINGS``): the file runs in well under a minute on
two cores."""

from __future__ import annotations

import warnings

import gymnasium as gym
import numpy as np
import pytest
import torch
from hypothesis import HealthCheck, event, given, settings
from hypothesis import strategies as st

import fastppo
from fastppo.ops import gae_reference
from fastppo.ops.ppo_loss import STATS, ppo_loss_reference

pytestmark = pytest.mark.skipif(not fastppo.backends()["cpp"].available, reason="needs the native extension")

ACCEPTED_ERRORS = (TypeError, ValueError, RuntimeError)


def _settings(n: int):
    # derandomize: the same examples on every run (CI time and results bounded); deadline=None: the first
    # call of a kernel pays for thread start-up. too_slow / data_too_large: the strategies build arrays
    # on purpose; they are small, but hypothesis's per-example timing on two busy cores is noisy.
    return settings(max_examples=n, deadline=None, derandomize=True, database=None,
                    suppress_health_check=[HealthCheck.too_slow, HealthCheck.data_too_large])


def outcome(fn, *names):
    """(True, result) if fn() succeeds; (False, error) if it raises an accepted error whose message names
    one of `names`. Any other exception propagates (and fails the test)."""
    try:
        with warnings.catch_warnings():
            # The inputs are odd on purpose (NaN, inf, complex, overflowing casts): a numpy/torch warning
            # raised on the way (the project turns warnings into errors) is not what is under test; the
            # result or the error is.
            warnings.simplefilter("ignore")
            result = fn()
        event("accepted")  # --hypothesis-show-statistics: how often each path ran
        return True, result
    except ACCEPTED_ERRORS as e:
        event(f"refused ({type(e).__name__})")
        msg = str(e)
        assert any(n in msg for n in names), f"{type(e).__name__} does not name {names}: {msg}"
        return False, e


def clean(x):
    """The values an argument carries, as a fresh contiguous numpy array (None for non-arrays)."""
    if isinstance(x, torch.Tensor):
        if x.device.type != "cpu" or x.dtype == torch.bfloat16:
            return None
        return x.detach().resolve_neg().resolve_conj().numpy().copy()
    if isinstance(x, np.ndarray):
        return np.array(x, dtype=x.dtype.newbyteorder("=")) if x.dtype.kind in "biufc" else None
    return None


def same(a, b):
    """Bit-exact equality of two results (NaN equals NaN)."""
    a, b = clean(a) if not isinstance(a, np.ndarray) else a, clean(b) if not isinstance(b, np.ndarray) else b
    assert a.dtype == b.dtype and a.shape == b.shape, (a.dtype, a.shape, b.dtype, b.shape)
    np.testing.assert_array_equal(a, b)


def unchanged(before: dict, args: dict):
    """The inputs still hold the values they came with (a binding must not write its inputs)."""
    for name, value in before.items():
        if value is not None:
            np.testing.assert_array_equal(clean(args[name]), value, err_msg=f"{name} was written")


# --- array variants -------------------------------------------------------------------------------------
# A variant turns a clean, contiguous numpy array into what the caller passes. "Same values" variants
# (layouts, containers) must give exactly the clean result where accepted; the others (dtypes, shapes)
# change what is passed, and the reference is computed from what was passed.

def _strided(a):  # non-contiguous along the last axis, same values
    if a.ndim == 0:
        return a
    b = np.repeat(a, 2, axis=-1)
    return b[..., ::2]


def _reversed(a):  # negative strides on every axis, same values
    return np.flip(np.flip(a).copy())


def _readonly(a):
    b = a.copy()
    b.flags.writeable = False
    return b


def _broadcast(a):  # zero stride along the first axis (values of row 0 repeated)
    return np.broadcast_to(a[:1], a.shape) if a.ndim and a.shape[0] else a


def _tensor_neg(a):  # a torch view with the negative bit set holding a's values (torch's lazy negation)
    if a.dtype.kind not in "fic":
        return torch.from_numpy(a.copy())
    return torch.from_numpy(-a.copy())._neg_view()


VARIANTS = {
    "clean": lambda a: a,
    "strided": _strided,
    "reversed": _reversed,
    "fortran": np.asfortranarray,
    "readonly": _readonly,
    "broadcast": _broadcast,
    "big_endian": lambda a: a.astype(a.dtype.newbyteorder(">")),
    "float16": lambda a: a.astype(np.float16),
    "float32": lambda a: a.astype(np.float32),
    "float64": lambda a: a.astype(np.float64),
    "int8": lambda a: a.astype(np.int8),
    "int32": lambda a: a.astype(np.int32),
    "int64": lambda a: a.astype(np.int64),
    "uint8": lambda a: a.astype(np.uint8),
    "uint64": lambda a: a.astype(np.uint64),
    "bool": lambda a: a.astype(bool),
    "complex64": lambda a: a.astype(np.complex64),
    "object": lambda a: a.astype(object),
    "add_dim": lambda a: a[None],
    "drop_dim": lambda a: a.reshape(-1) if a.ndim > 1 else (a.reshape(-1)[:1].reshape(()) if a.size else np.zeros((), a.dtype)),
    "transpose": lambda a: np.ascontiguousarray(a.T) if a.ndim > 1 else a[:-1],
    "empty": lambda a: a[:0],
    "grow": lambda a: np.concatenate([a, a[:1]]) if a.ndim and a.shape[0] else np.zeros((1, *a.shape[1:]), a.dtype),
    "list": lambda a: a.tolist(),
    "tuple": lambda a: tuple(a.tolist()) if a.ndim else a.item(),
    "none": lambda a: None,
    "scalar": lambda a: 1.0,
    "string": lambda a: "array",
    "tensor": lambda a: torch.from_numpy(a.copy()),
    "tensor_grad": lambda a: (torch.from_numpy(a.copy()).requires_grad_() if a.dtype.kind in "fc"
                              else torch.from_numpy(a.copy())),
    "tensor_strided": lambda a: torch.from_numpy(_strided(a).copy() if a.ndim == 0 else np.repeat(a, 2, -1))[..., ::2],
    "tensor_t": lambda a: torch.from_numpy(np.ascontiguousarray(a.T)).T if a.ndim > 1 else torch.from_numpy(a.copy()),
    "tensor_neg": _tensor_neg,
    "tensor_bf16": lambda a: torch.from_numpy(a.astype(np.float32)).to(torch.bfloat16),
    "tensor_meta": lambda a: torch.empty(a.shape, dtype=torch.float32, device="meta"),
}
VARIANT_NAMES = sorted(VARIANTS)


def vary(variant: str, a):
    """VARIANTS[variant](a), with numpy's cast warnings off: casting NaN to an integer dtype is part of
    building an odd input, not what is under test."""
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        return VARIANTS[variant](a)
SEEDS = st.integers(0, 2**31 - 1)


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


# --- envs ----------------------------------------------------------------------------------------------------
ENV_IDS = ["CartPole-v1", "MountainCarContinuous-v0", "Acrobot-v1"]


def _env_pair(env_id, n, seed, warmup):
    envs = [fastppo.make_vec_env(env_id, n, backend="cpp", seed=seed) for _ in range(2)]
    for env in envs:
        env.reset()
    rng = np.random.default_rng(seed)
    for _ in range(warmup):
        actions = _clean_actions(envs[0], rng)
        for env in envs:
            env.step(actions)
    return envs


def _clean_actions(env, rng):
    if isinstance(env.single_action_space, gym.spaces.Discrete):
        return rng.integers(0, env.single_action_space.n, size=env.num_envs)
    return rng.uniform(-1.5, 1.5, size=(env.num_envs, 1)).astype(np.float32)


def _same_step(a, b):
    """Two step()/reset() results (tuples of arrays and the infos dict) are bit-for-bit equal."""
    for x, y in zip(a, b):
        if isinstance(x, dict):
            assert x.keys() == y.keys()
            # episode times ("t") are wall-clock: the one thing two identical envs do not share
            _same_step(*(tuple(v for k, v in d.items() if k != "t") for d in (x, y)))
        else:
            same(x, y)


def _assert_same_env(env, twin):
    same(env.get_state(), twin.get_state())
    clock = ("episode_t", "start_time")  # wall-clock times
    _same_step(*(tuple(v for k, v in e.snapshot()["buffers"].items() if k not in clock) for e in (env, twin)))


ACTION_VALUES = ["clean", "out_of_range", "negative", "nan", "inf", "huge"]


@_settings(200)
@given(seed=SEEDS, env_id=st.sampled_from(ENV_IDS), n=st.integers(1, 4), warmup=st.integers(0, 3),
       values=st.sampled_from(ACTION_VALUES), variant=st.sampled_from(VARIANT_NAMES))
def test_env_step(seed, env_id, n, warmup, values, variant):
    env, twin = _env_pair(env_id, n, seed, warmup)
    rng = np.random.default_rng(seed + 1)
    actions = _clean_actions(env, rng)
    i = rng.integers(n)
    if values == "out_of_range":
        actions[i] = env.single_action_space.n if actions.dtype.kind == "i" else 7.5
    elif values == "negative":
        actions[i] = -1
    elif values == "nan":
        actions = actions.astype(np.float64)
        actions[i] = np.nan
    elif values == "inf":
        actions = actions.astype(np.float64)
        actions[i] = -np.inf
    elif values == "huge":
        actions[i] = 2**40 if actions.dtype.kind == "i" else 1e30
    passed = vary(variant, actions)
    before = clean(passed)
    ok, res = outcome(lambda: env.step(passed), "actions")
    if not ok:
        return
    if before is not None:
        np.testing.assert_array_equal(clean(passed), before)
    # The twin gets a clean contiguous copy of what was passed, in the env's own action dtype.
    dtype = np.int64 if isinstance(env.single_action_space, gym.spaces.Discrete) else np.float32
    values_passed = np.asarray(clean(passed) if clean(passed) is not None else passed)
    assert values_passed.dtype.kind in ("i" if dtype is np.int64 else "f"), f"accepted {values_passed.dtype} actions"
    copy = np.ascontiguousarray(values_passed, dtype=values_passed.dtype if dtype is np.float32 else dtype)
    _same_step(res, twin.step(copy))
    _assert_same_env(env, twin)


MASK_KINDS = ["none", "bool", "bool_list", "int", "uint8", "float", "wrong_shape", "strided", "reversed", "tensor",
              "tensor_strided", "readonly", "zero_stride", "scalar", "all_false"]
SEED_KINDS = [None, 0, 7, 2**64 - 1, -1, 2**64, 1.5, True, "3", np.int64(5), np.uint64(9)]


@_settings(120)
@given(seed=SEEDS, env_id=st.sampled_from(ENV_IDS), n=st.integers(1, 4), warmup=st.integers(0, 3),
       mask_kind=st.sampled_from(MASK_KINDS), reset_seed=st.sampled_from(SEED_KINDS))
def test_env_reset(seed, env_id, n, warmup, mask_kind, reset_seed):
    env, twin = _env_pair(env_id, n, seed, warmup)
    m = np.random.default_rng(seed).random(n) < 0.5
    mask = {
        "none": None, "bool": m, "bool_list": m.tolist(), "int": m.astype(np.int64), "uint8": m.astype(np.uint8),
        "float": m.astype(np.float32), "wrong_shape": np.append(m, True), "strided": _strided(m),
        "reversed": _reversed(m), "tensor": torch.from_numpy(m.copy()),
        "tensor_strided": torch.from_numpy(np.repeat(m, 2))[::2], "readonly": _readonly(m),
        "zero_stride": _broadcast(m), "scalar": np.bool_(True), "all_false": np.zeros(n, bool),
    }[mask_kind]
    options = None if mask is None else {"reset_mask": mask}
    ok, res = outcome(lambda: env.reset(seed=reset_seed, options=options), "reset_mask", "seed")
    if not ok:
        # a refused reset left the envs as they were
        _assert_same_env(env, twin)
        return
    clean_mask = None if mask is None else np.ascontiguousarray(clean(mask) if clean(mask) is not None
                                                                else np.asarray(mask), dtype=bool)
    clean_seed = None if reset_seed is None else int(reset_seed)
    _same_step(res, twin.reset(seed=clean_seed, options=None if mask is None else {"reset_mask": clean_mask}))
    _assert_same_env(env, twin)
    actions = _clean_actions(env, np.random.default_rng(seed))
    _same_step(env.step(actions), twin.step(actions))


STATE_KINDS = ["clean", "float32", "int", "bool", "complex", "nan", "inf", "list", "tensor", "tensor_grad",
               "tensor_neg", "wrong_shape", "strided", "reversed", "readonly", "zero_stride", "scalar", "none",
               "string", "object"]
ELAPSED_KINDS = [None, 0, 3, -1, 2**62, 1.5, np.nan, "1", "array", "array_float", "wrong_shape", "list"]


@_settings(150)
@given(seed=SEEDS, env_id=st.sampled_from(ENV_IDS), n=st.integers(1, 3), kind=st.sampled_from(STATE_KINDS),
       elapsed=st.sampled_from(ELAPSED_KINDS))
def test_env_set_state(seed, env_id, n, kind, elapsed):
    env, twin = _env_pair(env_id, n, seed, 1)
    rng = np.random.default_rng(seed)
    state = env.get_state() + 0.01 * rng.standard_normal(env.get_state().shape)
    passed = {
        "clean": state, "float32": state.astype(np.float32), "int": state.astype(np.int64),
        "bool": state.astype(bool), "complex": state + 1j, "nan": np.where(rng.random(state.shape) < 0.3, np.nan, state),
        "inf": np.full_like(state, np.inf), "list": state.tolist(), "tensor": torch.from_numpy(state.copy()),
        "tensor_grad": torch.from_numpy(state.copy()).requires_grad_(), "tensor_neg": _tensor_neg(state),
        "wrong_shape": state[:, :-1], "strided": _strided(state), "reversed": _reversed(state),
        "readonly": _readonly(state), "zero_stride": _broadcast(state), "scalar": 0.0, "none": None,
        "string": "state", "object": state.astype(object),
    }[kind]
    el = {"array": np.arange(n), "array_float": np.arange(n) + 0.5, "wrong_shape": np.arange(n + 1),
          "list": list(range(n))}.get(elapsed, elapsed) if not isinstance(elapsed, float) else elapsed
    ok, _ = outcome(lambda: env.set_state(passed, elapsed=el), "state", "elapsed")
    if not ok:
        _assert_same_env(env, twin)  # a refused call changed nothing
        return
    values = clean(passed)
    assert values is not None and values.dtype.kind in "biuf", f"set_state accepted {type(passed).__name__}"
    clean_el = None if el is None else np.array(el, dtype=np.int64)
    assert clean_el is None or (np.asarray(el).dtype.kind in "iu" and (clean_el >= 0).all()), f"accepted elapsed={el}"
    twin.set_state(np.ascontiguousarray(values, dtype=np.float64), elapsed=clean_el)
    _assert_same_env(env, twin)
    actions = _clean_actions(env, rng)
    _same_step(env.step(actions), twin.step(actions))


SNAPSHOT_KINDS = ["clean", "missing_key", "unknown_key", "list_value", "tensor_value", "wrong_dtype_float_to_int",
                  "wrong_dtype_float_to_bool", "complex", "wrong_shape", "strided", "reversed", "readonly",
                  "not_a_dict", "buffers_not_a_dict", "no_started", "nan_state", "int_to_float", "object"]


@_settings(120)
@given(seed=SEEDS, env_id=st.sampled_from(ENV_IDS), n=st.integers(1, 3), kind=st.sampled_from(SNAPSHOT_KINDS),
       key=st.sampled_from(["obs", "state", "rng", "elapsed", "terminated", "episode_r"]))
def test_env_restore(seed, env_id, n, kind, key):
    src, _ = _env_pair(env_id, n, seed + 1, 2)
    env, twin = _env_pair(env_id, n, seed, 0)
    snap = src.snapshot()
    b = snap["buffers"]
    v = b[key]
    if kind == "missing_key":
        del b[key]
    elif kind == "unknown_key":
        b["bogus"] = v
    elif kind == "list_value":
        b[key] = v.tolist()
    elif kind == "tensor_value":
        b[key] = torch.from_numpy(v.copy())
    elif kind == "wrong_dtype_float_to_int":
        b[key] = v.astype(np.float64) + 0.5
    elif kind == "wrong_dtype_float_to_bool":
        b[key] = v.astype(np.float64) + 0.5 if v.dtype != bool else v.astype(np.float32)
    elif kind == "int_to_float":
        b[key] = v.astype(np.int64) if v.dtype.kind == "f" else v
    elif kind == "complex":
        b[key] = v.astype(np.complex128)
    elif kind == "wrong_shape":
        b[key] = v[:-1]
    elif kind == "strided":
        b[key] = _strided(v)
    elif kind == "reversed":
        b[key] = _reversed(v)
    elif kind == "readonly":
        b[key] = _readonly(v)
    elif kind == "nan_state":
        b["state"] = np.full_like(b["state"], np.nan)
    elif kind == "object":
        b[key] = v.astype(object)
    elif kind == "not_a_dict":
        snap = list(snap.items())
    elif kind == "buffers_not_a_dict":
        snap["buffers"] = list(b.values())
    elif kind == "no_started":
        del snap["started"]
    ok, _ = outcome(lambda: env.restore(snap), "snapshot")
    if not ok:
        _assert_same_env(env, twin)  # a refused restore changed nothing
        return
    assert kind in ("clean", "strided", "reversed", "readonly", "int_to_float") or (
        kind in ("wrong_dtype_float_to_int", "wrong_dtype_float_to_bool") and v.dtype.kind == "f"), \
        f"restore accepted a {kind} snapshot[{key!r}]"
    # the twin restores clean contiguous copies of what was passed, in the buffers' own dtypes
    dtypes = {k: v.dtype for k, v in src.snapshot()["buffers"].items()}
    twin.restore({"buffers": {k: np.ascontiguousarray(v, dtypes[k]) for k, v in snap["buffers"].items()},
                  "started": snap["started"]})
    _assert_same_env(env, twin)
    actions = _clean_actions(env, np.random.default_rng(seed))
    _same_step(env.step(actions), twin.step(actions))


def test_env_restore_refuses_partial_snapshots():
    """Regression: a snapshot missing a buffer restored the others and left that one as it was (an env
    state that was never recorded); an unknown key raised a bare KeyError."""
    env = fastppo.make_vec_env("CartPole-v1", 2, backend="cpp", seed=0)
    env.reset()
    snap = env.snapshot()
    del snap["buffers"]["rng"]
    with pytest.raises(ValueError, match="snapshot.*rng"):
        env.restore(snap)
    snap = env.snapshot()
    snap["buffers"]["bogus"] = np.zeros(2)
    with pytest.raises(ValueError, match="snapshot.*bogus"):
        env.restore(snap)


def test_env_set_state_refuses_non_arrays_and_complex():
    """Regression: a list raised AttributeError, a complex state was cast (imaginary part dropped), a
    tensor that requires grad raised torch's message, and elapsed was cast from anything."""
    env = fastppo.make_vec_env("CartPole-v1", 2, backend="cpp", seed=0)
    env.reset()
    with pytest.raises(TypeError, match="state"):
        env.set_state([[0.0] * 4] * 2)
    with pytest.raises(TypeError, match="state"):
        env.set_state(np.zeros((2, 4), complex))
    env.set_state(torch.zeros(2, 4, dtype=torch.float64, requires_grad=True))
    with pytest.raises(TypeError, match="elapsed"):
        env.set_state(np.zeros((2, 4)), elapsed=1.5)
    with pytest.raises(ValueError, match="elapsed"):
        env.set_state(np.zeros((2, 4)), elapsed=-1)


def test_env_step_ragged_list_named():
    """Regression: a ragged list of actions raised numpy's ValueError, which does not name actions."""
    env = fastppo.make_vec_env("CartPole-v1", 2, backend="cpp", seed=0)
    env.reset()
    with pytest.raises(ValueError, match="actions"):
        env.step([[0, 1], [1]])


# --- PolicyAct ------------------------------------------------------------------------------------------------
def _policy(kind, obs_dim=3):
    from fastppo.algos.policies import ActorCritic

    torch.manual_seed(0)
    space = {"discrete": gym.spaces.Discrete(3), "multidiscrete": gym.spaces.MultiDiscrete([2, 3]),
             "box": gym.spaces.Box(-1, 1, (2,), np.float32)}[kind]
    return ActorCritic(gym.spaces.Box(-5, 5, (obs_dim,), np.float32), space, net_arch=(8,))


_POLICIES = {}


def _native(kind):
    if kind not in _POLICIES:
        p = _policy(kind)
        _POLICIES[kind] = (p, p.native_act())
    return _POLICIES[kind]


def _act_outputs(policy, n):
    spec = policy.action_spec
    return dict(actions=np.zeros((n, *spec.shape), np.float32 if spec.kind == "gaussian" else np.int64),
                log_probs=np.zeros(n, np.float32), values=np.zeros(n, np.float32),
                dist_params=np.zeros((n, spec.n_params), np.float32))


ACT_TARGETS = ["obs", "actions", "log_probs", "values", "dist_params"]
ALIAS_KINDS = [None, "values=log_probs", "log_probs=obs_view", "dist_params=obs", "actions_overlap_dist_params",
               "values_in_dist_params", "actions_transposed"]


@_settings(200)
@given(seed=SEEDS, kind=st.sampled_from(["discrete", "multidiscrete", "box"]), n=st.integers(0, 4),
       target=st.sampled_from(ACT_TARGETS), variant=st.sampled_from(VARIANT_NAMES),
       alias=st.sampled_from(ALIAS_KINDS), act_seed=st.integers(0, 2**64 - 1), step=st.integers(0, 2**64 - 1))
def test_policy_act(seed, kind, n, target, variant, alias, act_seed, step):
    policy, native = _native(kind)
    rng = np.random.default_rng(seed)
    obs = rng.standard_normal((n, 3)).astype(np.float32)
    outs = _act_outputs(policy, n)
    args = {"obs": obs, **outs}
    names = (target,)
    if alias is None:
        args[target] = vary(variant, args[target])
    else:
        names = tuple(ACT_TARGETS)
        if alias == "values=log_probs":
            args["values"] = args["log_probs"]
        elif alias == "log_probs=obs_view":
            args["log_probs"] = obs.reshape(-1)[:n] if obs.size >= n else args["log_probs"]
        elif alias == "dist_params=obs":
            args["dist_params"] = np.zeros((n, max(3, policy.action_spec.n_params)), np.float32)
            args["obs"] = args["dist_params"][:, :3]
            args["dist_params"] = args["dist_params"][:, :policy.action_spec.n_params]
        elif alias == "actions_overlap_dist_params" and kind == "box":
            big = np.zeros((n, 4), np.float32)
            args["actions"], args["dist_params"] = big[:, :2], big
        elif alias == "values_in_dist_params":
            args["values"] = args["dist_params"].reshape(-1)[:n]
        elif alias == "actions_transposed" and args["actions"].ndim == 2:
            args["actions"] = np.zeros(args["actions"].shape[::-1], args["actions"].dtype)
    before = clean(args["obs"])
    ok, _ = outcome(lambda: native.act(*args.values(), act_seed, step), *names)
    if ok:
        np.testing.assert_array_equal(clean(args["obs"]), before)
        ref = _act_outputs(policy, n)
        native.act(np.ascontiguousarray(clean(args["obs"]), np.float32), *ref.values(), act_seed, step)
        for name in outs:
            same(args[name], ref[name])
    # value(): the same obs variants, and values aliasing obs
    v_args = {"obs": args["obs"] if target == "obs" else obs, "values": args["values"] if target == "values"
              else np.zeros(n, np.float32)}
    if alias == "log_probs=obs_view":
        v_args["values"] = obs.reshape(-1)[:n]
    ok, _ = outcome(lambda: native.value(*v_args.values()), "obs", "values")
    if ok:
        ref = np.zeros(n, np.float32)
        native.value(np.ascontiguousarray(clean(v_args["obs"]), np.float32), ref)
        same(v_args["values"], ref)


def test_policy_act_outputs_must_not_overlap():
    """Regression: the outputs were checked against obs only, so values and log_probs in one array gave
    log_probs in both; a (k, N) actions array of the right size was accepted for (N, k) actions."""
    policy, native = _native("multidiscrete")
    obs = np.zeros((4, 3), np.float32)
    out = _act_outputs(policy, 4)
    with pytest.raises(ValueError, match="values must not overlap log_probs"):
        native.act(obs, out["actions"], out["log_probs"], out["log_probs"], out["dist_params"], 0, 0)
    with pytest.raises(ValueError, match="actions"):
        native.act(obs, np.zeros((2, 4), np.int64), out["log_probs"], out["values"], out["dist_params"], 0, 0)


# --- collect --------------------------------------------------------------------------------------------------
def _collect_setup(env_id, n, T, seed, norms):
    env = fastppo.make_vec_env(env_id, n, backend="cpp", seed=seed, copy=False)
    obs, _ = env.reset()
    from fastppo.algos.policies import ActorCritic

    torch.manual_seed(seed % 1000)
    policy = ActorCritic(env.single_observation_space, env.single_action_space, net_arch=(8,))
    spec = policy.action_spec
    D, P = obs.shape[1], spec.n_params
    discrete = spec.kind != "gaussian"
    rollout = dict(obs=np.zeros((T, n, D), np.float32),
                   actions=np.zeros((T, n), np.int64) if discrete else np.zeros((T, n, 1), np.float32),
                   log_probs=np.zeros((T, n), np.float32), values=np.zeros((T, n), np.float32),
                   dist_params=np.zeros((T, n, P), np.float32), rewards=np.zeros((T, n), np.float32),
                   terminated=np.zeros((T, n), bool), truncated=np.zeros((T, n), bool),
                   final_values=np.zeros((T, n), np.float32))
    args = dict(envs=env.native_batch(), policy=policy.native_act(), first_obs=obs.copy(), rollout=rollout,
                episode_returns=np.zeros(T * n), episode_lengths=np.zeros(T * n, np.int64), seed=seed,
                action_low=-1.0, action_high=1.0, last_obs=np.zeros((n, D), np.float32),
                last_values=np.zeros(n, np.float32),
                obs_norm=dict(mean=np.zeros(D), var=np.ones(D), count=np.array([1e-4]), clip=10.0, eps=1e-8)
                if norms else None,
                reward_norm=dict(mean=np.zeros(1), var=np.ones(1), count=np.array([1e-4]), returns=np.zeros(n),
                                 gamma=0.99, clip=10.0, eps=1e-8) if norms else None)
    return env, args


def _collect_written(args):
    """Everything collect writes (for comparing two calls)."""
    out = {k: v for k, v in args["rollout"].items()} if isinstance(args["rollout"], dict) else {}
    for k in ("episode_returns", "episode_lengths", "last_obs", "last_values"):
        out[k] = args[k]
    for norm in ("obs_norm", "reward_norm"):
        if isinstance(args[norm], dict):
            out.update({f"{norm}[{k}]": v for k, v in args[norm].items() if isinstance(v, np.ndarray)})
    return out


ROLLOUT_KEYS = ["obs", "actions", "log_probs", "values", "dist_params", "rewards", "terminated", "truncated",
                "final_values"]
COLLECT_MUTATIONS = (
    [f"rollout.{k}:{v}" for k in ROLLOUT_KEYS for v in ("missing", "variant")]
    + ["rollout:not_a_dict", "rollout.values=rollout.log_probs", "rollout.rewards=rollout.final_values", "rollout.obs_overlaps_actions",
       "episode_returns=rollout.values", "episode_lengths:variant", "episode_returns:variant", "first_obs:variant",
       "last_obs:variant", "last_values:variant", "last_obs=first_obs", "last_values=rollout.values",
       "last_obs=last_values", "first_obs=rollout.obs", "obs_norm:variant", "reward_norm:variant",
       "obs_norm.missing", "obs_norm.extra", "obs_norm.mean:variant", "obs_norm.var:variant",
       "obs_norm.count:variant", "obs_norm.clip:bad", "reward_norm.returns:variant", "reward_norm.gamma:bad",
       "reward_norm.mean=obs_norm.count", "obs_norm.var=obs_norm.mean", "reward_norm.returns=episode_returns",
       "rollout.rewards=env_rewards"]
)


@_settings(150)
@given(seed=st.integers(0, 2**20), env_id=st.sampled_from(["CartPole-v1", "MountainCarContinuous-v0"]),
       n=st.integers(1, 3), T=st.integers(0, 4), norms=st.booleans(), mutation=st.sampled_from(COLLECT_MUTATIONS),
       variant=st.sampled_from(VARIANT_NAMES), bad=st.sampled_from(["1", None, True, float("nan")]))
def test_collect(seed, env_id, n, T, norms, mutation, variant, bad):
    from fastppo._backend import _core

    env, args = _collect_setup(env_id, n, T, seed, norms)
    twin_env, ref = _collect_setup(env_id, n, T, seed, norms)
    what, _, how = mutation.partition(":")
    names = (what.split("=")[0].split(".")[-1], what.split(".")[0].split("=")[0])
    if "=" in what:  # aliasing: one argument is (a view of) another one's memory
        dst, src = what.split("=")
        names = (dst.split(".")[-1], src.split(".")[-1], dst.split(".")[0], src.split(".")[0])

        def get(path):
            if path == "env_rewards":
                return env._buffers["rewards"]
            head, _, key = path.partition(".")
            return args[head][key] if key else args[head]

        def put(path, value):
            head, _, key = path.partition(".")
            if key:
                args[head][key] = value
            else:
                args[head] = value

        d, s = get(dst), get(src)
        if d is None or s is None:
            return
        if d.dtype == s.dtype and d.size <= s.size:
            put(dst, s.reshape(-1)[:d.size].reshape(d.shape))
        elif d.size * d.itemsize <= s.size * s.itemsize:
            put(dst, s.reshape(-1).view(np.uint8)[:d.size * d.itemsize].view(d.dtype).reshape(d.shape))
        else:
            return
    elif mutation == "rollout:not_a_dict":
        args["rollout"] = list(args["rollout"].values())
    elif mutation == "rollout.obs_overlaps_actions":
        r = args["rollout"]
        if r["obs"].size == 0:
            return
        r["actions"] = r["obs"].reshape(-1).view(np.uint8)[:r["actions"].nbytes].view(r["actions"].dtype).reshape(
            r["actions"].shape) if r["obs"].nbytes >= r["actions"].nbytes else r["actions"]
    else:
        head, _, key = what.partition(".")
        container = args[head] if key else args
        name = key or head
        if container is None or not isinstance(container, dict):
            return
        if how == "missing":
            del container[name]
        elif what.endswith("norm.missing"):
            del args[head]["clip" if head == "obs_norm" else "gamma"]
        elif what.endswith("norm.extra"):
            args[head]["bogus"] = 1.0
        elif how == "bad":
            container[name] = bad
        elif how == "variant":
            container[name] = vary(variant, container[name]) if isinstance(container[name], np.ndarray) \
                else vary(variant, np.asarray(container[name]))
    ok, res = outcome(lambda: _core.collect(*args.values()), *names)
    if not ok:
        return
    # accepted: the same rollout as the clean call on an identical env
    assert not mutation.endswith("missing") and mutation != "rollout:not_a_dict", f"collect accepted {mutation}"
    got = {k: clean(v) for k, v in _collect_written(args).items()}
    assert res == _core.collect(*ref.values())
    want = _collect_written(ref)
    for k, v in got.items():
        if v is not None and k in want and v.shape == want[k].shape:
            np.testing.assert_array_equal(v.astype(want[k].dtype), want[k], err_msg=k)


def test_collect_outputs_must_not_overlap():
    """Regression: the rollout arrays, the episode buffers and the normaliser state were not checked
    against each other (only last_obs / last_values were): values and log_probs in one array, or the
    episode returns in the rollout's values, were silently overwritten."""
    from fastppo._backend import _core

    _, args = _collect_setup("CartPole-v1", 2, 3, 0, False)
    args["rollout"]["values"] = args["rollout"]["log_probs"]
    with pytest.raises(ValueError, match="must not overlap"):
        _core.collect(*args.values())
    _, args = _collect_setup("CartPole-v1", 2, 3, 0, False)
    args["episode_returns"] = args["rollout"]["obs"].reshape(-1).view(np.float64)[:6]
    with pytest.raises(ValueError, match="episode_returns must not overlap obs"):
        _core.collect(*args.values())


# --- PpoUpdate / CriticFit ----------------------------------------------------------------------------------
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


CONFIG_FIELDS = ("batch_size", "clip_coef", "vf_coef", "ent_coef", "vf_clip", "normalize_advantages", "kl_coef",
                 "target_kl", "max_grad_norm", "lr", "beta1", "beta2", "eps")


def _ppo_config(cfg):
    """A valid PpoUpdateConfig, its options drawn from `cfg`."""
    from fastppo._backend import _core

    rng = np.random.default_rng(cfg)
    c = _core.PpoUpdateConfig()
    c.batch_size = int(rng.choice([1, 3, 4, 64]))
    c.clip_coef, c.vf_coef, c.ent_coef = 0.2, 0.5, float(rng.choice([0.0, 0.01]))
    c.vf_clip, c.kl_coef = float(rng.choice([-1.0, 0.2])), float(rng.choice([-1.0, 0.5]))
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


@_settings(350)
@given(seed=SEEDS, kind=st.sampled_from(["discrete", "multidiscrete", "box"]), size=st.integers(0, 9),
       target=st.sampled_from(PPO_TARGETS), variant=st.sampled_from(UPDATE_VARIANT_NAMES), index=st.integers(0, 3),
       alias=st.sampled_from(PPO_ALIASES), order_kind=st.sampled_from(ORDER_KINDS),
       string=st.sampled_from(STRING_VALUES), nvec=st.sampled_from(NVEC_VALUES), cfg=st.integers(0, 2**16))
def test_ppo_update(seed, kind, size, target, variant, index, alias, order_kind, string, nvec, cfg):
    from fastppo._backend import _core

    args, ref = _ppo_args(kind, size, seed), _ppo_args(kind, size, seed)
    model = dict(args)  # the model's own memory, whatever is passed instead
    rng = np.random.default_rng(seed)
    order, config = rng.permutation(size), _ppo_config(cfg)
    names, changed = (target,), [target]
    if target == "order":
        order = _odd_order(order_kind, order, variant, rng)
        changed = []
    elif target in PPO_LISTS:
        entries = list(args[target])
        entries[index % len(entries)] = vary_update(variant, entries[index % len(entries)])
        args[target], changed = entries, []
    elif target in ("activation", "kind"):
        args[target] = string
    elif target == "nvec":
        args[target] = nvec
        names = ("nvec", "actions", "sum(nvec)")  # the actions' shape follows len(nvec)
    elif target == "alias":
        applied = _ppo_alias(args, alias, size)
        if applied is None:
            return
        names, changed = applied
    elif target in ("log_std", "log_std_grad"):  # views of the flat buffers, as the list entries
        if args[target] is None:  # a categorical policy
            return
        args[target], changed = vary_update(variant, args[target]), []
    else:
        args[target] = vary_update(variant, args[target])
    if target == "kind":
        names = ("kind", "nvec", "log_std", "actions")  # what the other kind needs
    before, passed_before = _written(model), _written(args)
    inputs_before = {k: clean(args[k]) for k in PPO_INPUTS}
    _clean_copies(ref, args, changed)  # the values passed, before the call writes any
    ok, update = outcome(lambda: _core.PpoUpdate(**args), *names)
    if ok:
        ok, res = outcome(lambda: update.epoch(order, config), *names)
    if not ok:
        _assert_refused_cleanly(model, before, args, passed_before)
        return
    assert target != "alias" or alias in READ_ONLY_ALIASES, f"accepted {alias}"
    unchanged(inputs_before, args)  # the rollout is only read
    ref_order = np.ascontiguousarray(clean(order)) if isinstance(order, (np.ndarray, torch.Tensor)) else order
    assert np.asarray(ref_order).dtype == np.int64, f"accepted a {type(order).__name__} order"
    assert np.array_equal(np.sort(ref_order), np.arange(size)), f"accepted order {ref_order}"
    _same_result(res, _core.PpoUpdate(**ref).epoch(ref_order, _copy_config(config)))
    _assert_written(_written(args), _written(ref), "after the epoch")


CONFIG_VALUES = [0, -1, 1, 3, 2**62, 2**63 - 1, 2**70, True, 0.0, -0.0, 0.3, 1.0, 1.5, -0.5, 1e300, float("nan"),
                 float("inf"), -float("inf"), "0.1", None, np.float32(2.5), np.int64(3), np.float64(0.1), [0.1]]


def _meaningful(field, v):
    """Whether an accepted value of a config field (or CriticFit.epoch's argument) means something."""
    if field == "batch_size":
        return isinstance(v, (int, np.integer)) and v >= 1
    if field == "normalize_advantages":
        return isinstance(v, bool)
    if field == "clip_coef":
        return 0 < v < float("inf")
    if field in ("vf_coef", "ent_coef", "lr", "eps"):
        return 0 <= v < float("inf")
    if field == "vf_clip":
        return v < 0 or 0 < v < float("inf")
    if field == "kl_coef":
        return v < 0 or 0 <= v < float("inf")
    if field in ("target_kl", "max_grad_norm"):
        return not np.isnan(v)
    if field in ("beta1", "beta2"):
        return 0 <= v < 1
    raise AssertionError(field)


@_settings(250)
@given(seed=SEEDS, kind=st.sampled_from(["discrete", "box"]), size=st.integers(1, 8),
       field=st.sampled_from(CONFIG_FIELDS), value=st.sampled_from(CONFIG_VALUES), cfg=st.integers(0, 2**16),
       with_old=st.booleans())
def test_ppo_update_config(seed, kind, size, field, value, cfg, with_old):
    """One config field set to an odd value: refused (by the setter or the epoch) naming the field, or
    accepted with a meaningful value and the numbers of the same call."""
    from fastppo._backend import _core

    args, ref = _ppo_args(kind, size, seed), _ppo_args(kind, size, seed)
    if not with_old:
        args["old_dist_params"] = ref["old_dist_params"] = None
    order, config = np.random.default_rng(seed).permutation(size), _ppo_config(cfg)
    if not with_old:
        config.kl_coef = -1.0
    before = _written(args)
    ok, _ = outcome(lambda: setattr(config, field, value), field)
    if not ok:
        return
    update = _core.PpoUpdate(**args)
    ok, res = outcome(lambda: update.epoch(order, config), field, "kl_coef needs old_dist_params")
    if not ok:
        _assert_written(_written(args), before, "after a refused epoch")
        return
    accepted = getattr(config, field)
    assert _meaningful(field, accepted), f"accepted {field}={accepted!r} (set as {value!r})"
    _same_result(res, _core.PpoUpdate(**ref).epoch(order.copy(), _copy_config(config)))
    _assert_written(_written(args), _written(ref), "after the epoch")


class _Recorder:
    """An on_gradients that records the written buffers at each call (before that minibatch's step)."""

    def __init__(self, args):
        self.args, self.seen = args, []

    def __call__(self):
        self.seen.append(_written(self.args))


CALLBACK_KINDS = ["none", "noop", "int", "str", "raise_1", "raise_2", "rewrite_order", "rewrite_config",
                  "rewrite_actions", "reenter_refused"]


def _check_on_gradients(kind, args, run, ref_run, order, extra):
    """One epoch with an odd on_gradients: run(order, on_gradients) on args, ref_run(order, recorder) on a
    twin. extra: rewrites the callback may make of the call's other inputs."""
    recorder = _Recorder(extra["ref_args"])
    want = ref_run(order.copy(), recorder)
    calls = []
    raised = KeyError("raised by on_gradients")

    def callback():
        calls.append(1)
        if kind.startswith("raise_") and len(calls) == int(kind[-1]):
            raise raised
        if kind == "rewrite_order":
            order[:] = 2**62  # read once at the start: the epoch goes on with the order it was given
        if kind == "rewrite_config" and "config" in extra:
            extra["config"].batch_size, extra["config"].lr = -5, float("nan")
        if kind == "rewrite_actions" and args.get("actions") is not None and args["actions"].dtype == np.int64:
            args["actions"].reshape(-1)[0] = 2**40
        if kind == "reenter_refused":  # a nested call with a bad order raises; the outer epoch goes on
            with pytest.raises(ValueError, match="order"):
                run(np.full(order.size, 2**62), None)

    on_gradients = {"none": None, "int": 1, "str": "reducer"}.get(kind, callback)
    before = _written(args)
    try:
        ok, got = outcome(lambda: run(order, on_gradients), "on_gradients", "actions")
    except KeyError as e:
        assert e is raised and kind.startswith("raise_")
        k = int(kind[-1])
        # the steps before the raising call were taken and counted, the gradient of its minibatch is there
        _assert_written(_written(args), recorder.seen[k - 1], f"after on_gradients raised at call {k}")
        return
    if not ok:
        if kind in ("int", "str"):
            _assert_written(_written(args), before, "after a refused epoch")
        else:  # rewritten actions: refused after the first minibatch's backward, before its step
            assert kind == "rewrite_actions" and calls
            _assert_written(_written(args), recorder.seen[0], "after actions were rewritten mid-epoch")
        return
    assert kind not in ("int", "str"), f"accepted on_gradients={on_gradients!r}"
    assert not (kind.startswith("raise_") and len(calls) >= int(kind[-1]))
    _same_result(got, want)
    _assert_written(_written(args), _written(extra["ref_args"]), "after the epoch")


@_settings(120)
@given(seed=SEEDS, kind=st.sampled_from(["discrete", "multidiscrete", "box"]), size=st.integers(0, 8),
       callback=st.sampled_from(CALLBACK_KINDS), cfg=st.integers(0, 2**16))
def test_ppo_update_on_gradients(seed, kind, size, callback, cfg):
    from fastppo._backend import _core

    args, ref = _ppo_args(kind, size, seed), _ppo_args(kind, size, seed)
    config = _ppo_config(cfg)
    update, ref_update = _core.PpoUpdate(**args), _core.PpoUpdate(**ref)
    _check_on_gradients(callback, args, lambda o, cb: update.epoch(o, config, cb),
                        lambda o, cb: ref_update.epoch(o, _copy_config(config), cb),
                        np.random.default_rng(seed).permutation(size), {"ref_args": ref, "config": config})


CRITIC_TARGETS = [*ADAM_STATE, "obs", "returns", "critic", "critic_grads", "activation", "order", "alias",
                  "batch_size", "lr", "beta1", "beta2", "eps"]
CRITIC_ALIASES = ["flat_grad=flat_param", "grads=params", "exp_avg=flat_param", "exp_avg_sq=exp_avg",
                  "exp_avg~exp_avg_sq", "adam_steps=flat_grad", "adam_steps=exp_avg", "obs=flat_param",
                  "obs=exp_avg_sq", "returns=exp_avg", "returns=flat_grad", "returns=adam_steps", "returns=obs"]


@_settings(250)
@given(seed=SEEDS, size=st.integers(0, 9), target=st.sampled_from(CRITIC_TARGETS),
       variant=st.sampled_from(UPDATE_VARIANT_NAMES), index=st.integers(0, 3), alias=st.sampled_from(CRITIC_ALIASES),
       order_kind=st.sampled_from(ORDER_KINDS), string=st.sampled_from(STRING_VALUES),
       value=st.sampled_from(CONFIG_VALUES), batch_size=st.sampled_from([1, 3, 4, 64]))
def test_critic_fit(seed, size, target, variant, index, alias, order_kind, string, value, batch_size):
    from fastppo._backend import _core

    args, ref = _critic_args(size, seed), _critic_args(size, seed)
    model = dict(args)
    rng = np.random.default_rng(seed)
    order = rng.permutation(size)
    hyper = dict(batch_size=batch_size, lr=1e-2, beta1=0.9, beta2=0.999, eps=1e-5)
    names, changed = (target,), [target]
    if target == "order":
        order, changed = _odd_order(order_kind, order, variant, rng), []
    elif target in hyper:
        hyper[target], changed = value, []
    elif target in ("critic", "critic_grads"):
        entries = list(args[target])
        entries[index % len(entries)] = vary_update(variant, entries[index % len(entries)])
        args[target], changed = entries, []
    elif target == "activation":
        args[target] = string
    elif target == "alias":
        applied = _ppo_alias(args, alias, size)
        if applied is None:
            return
        names, changed = applied
    else:
        args[target] = vary_update(variant, args[target])
    before, passed_before = _written(model), _written(args)
    inputs_before = {k: clean(args[k]) for k in ("obs", "returns")}
    _clean_copies(ref, args, changed)  # the values passed, before the call writes any
    ok, fit = outcome(lambda: _core.CriticFit(**args), *names)
    if ok:
        ok, res = outcome(lambda: fit.epoch(order, *hyper.values()), *names)
    if not ok:
        _assert_refused_cleanly(model, before, args, passed_before)
        return
    assert target != "alias" or alias in READ_ONLY_ALIASES, f"accepted {alias}"
    if target in hyper:
        assert _meaningful(target, value), f"accepted {target}={value!r}"
    unchanged(inputs_before, args)
    ref_order = np.ascontiguousarray(clean(order)) if isinstance(order, (np.ndarray, torch.Tensor)) else order
    assert np.array_equal(np.sort(ref_order), np.arange(size)), f"accepted order {ref_order}"
    _same_result(res, _core.CriticFit(**ref).epoch(ref_order, *hyper.values()))
    _assert_written(_written(args), _written(ref), "after the epoch")


@_settings(60)
@given(seed=SEEDS, size=st.integers(0, 8), callback=st.sampled_from(CALLBACK_KINDS),
       batch_size=st.sampled_from([1, 3, 64]))
def test_critic_fit_on_gradients(seed, size, callback, batch_size):
    from fastppo._backend import _core

    args, ref = _critic_args(size, seed), _critic_args(size, seed)
    fit, ref_fit = _core.CriticFit(**args), _core.CriticFit(**ref)
    hyper = (batch_size, 1e-2, 0.9, 0.999, 1e-5)
    _check_on_gradients(callback, args, lambda o, cb: fit.epoch(o, *hyper, cb),
                        lambda o, cb: ref_fit.epoch(o, *hyper, cb), np.random.default_rng(seed).permutation(size),
                        {"ref_args": ref})


def _run_both(ppo_args, critic_args, order=None):
    from fastppo._backend import _core

    _core.PpoUpdate(**ppo_args).epoch(np.arange(len(ppo_args["obs"])) if order is None else order,
                                      _ppo_config(0))
    _core.CriticFit(**critic_args).epoch(np.arange(len(critic_args["obs"])), 4, 1e-2, 0.9, 0.999, 1e-5)


def test_updater_buffers_must_not_share_memory():
    """Regression: the five buffers an update writes (flat_param, flat_grad, exp_avg, exp_avg_sq, adam_steps)
    were checked for shape only: one array passed as both moments, the gradients passed as the parameters
    (with flat_grad = flat_param), or the step count inside a moment buffer were accepted, and the step read
    what it had just written."""
    from fastppo._backend import _core

    for make in (lambda: _ppo_args("box", 4, 0), lambda: _critic_args(4, 0)):
        args = make()
        before = _written(args)
        factory = _core.PpoUpdate if "actor" in args else _core.CriticFit
        with pytest.raises(ValueError, match="exp_avg_sq must not overlap exp_avg"):
            factory(**{**args, "exp_avg_sq": args["exp_avg"]})
        bad = dict(args)
        _ppo_alias(bad, "grads=params", 4)
        with pytest.raises(ValueError, match="flat_grad must not overlap flat_param"):
            factory(**bad)
        with pytest.raises(ValueError, match="adam_steps must not overlap exp_avg"):
            factory(**{**args, "adam_steps": args["exp_avg"][:2].view(np.int64)})
        _assert_written(_written(args), before, "after refused constructors")


def test_updater_rollout_must_not_share_written_memory():
    """Regression: the rollout arrays (read throughout the epoch) were not checked against the buffers the
    epoch writes: obs in the parameters' memory was accepted and changed under the update."""
    from fastppo._backend import _core

    args = _ppo_args("discrete", 4, 0)
    with pytest.raises(ValueError, match="obs must not overlap flat_param"):
        _core.PpoUpdate(**{**args, "obs": args["flat_param"][:12].reshape(4, 3)})
    with pytest.raises(ValueError, match="old_dist_params must not overlap exp_avg_sq"):
        _core.PpoUpdate(**{**args, "old_dist_params": args["exp_avg_sq"][:12].reshape(4, 3)})
    args = _critic_args(4, 0)
    with pytest.raises(ValueError, match="returns must not overlap flat_grad"):
        _core.CriticFit(**{**args, "returns": args["flat_grad"][:4]})
    _core.CriticFit(**{**args, "returns": args["obs"].reshape(-1)[:4]})  # arrays only read may share memory


def test_updater_step_count_and_hyperparameters_checked():
    """Regression: a negative step count made Adam's bias correction divide by zero, and NaN or out-of-range
    hyperparameters (clip_coef, betas, lr, ...) ran, writing NaN into the parameters; the epoch refuses them
    (as fastppo.ppo_loss and torch.optim.Adam do) before writing anything."""
    from fastppo._backend import _core

    ppo, critic = _ppo_args("discrete", 4, 0), _critic_args(4, 0)
    update, fit = _core.PpoUpdate(**ppo), _core.CriticFit(**critic)
    written = lambda: {f"{name} {k}": v for name, args in (("ppo", ppo), ("critic", critic))  # noqa: E731
                       for k, v in _written(args).items()}
    before = written()
    for args in (ppo, critic):
        args["adam_steps"][0] = -1
    with pytest.raises(ValueError, match=r"adam_steps\[0\] must be a step count"):
        update.epoch(np.arange(4), _ppo_config(0))
    with pytest.raises(ValueError, match=r"adam_steps\[0\] must be a step count"):
        fit.epoch(np.arange(4), 4, 1e-2, 0.9, 0.999, 1e-5)
    for args, name in ((ppo, "ppo"), (critic, "critic")):
        args["adam_steps"][0] = before[f"{name} adam_steps"][0]
    for field, value in (("clip_coef", float("nan")), ("vf_clip", float("nan")), ("target_kl", float("nan")),
                         ("max_grad_norm", float("nan")), ("ent_coef", -0.1), ("kl_coef", float("inf")),
                         ("beta1", 1.0), ("beta2", -0.5), ("lr", float("nan")), ("eps", -1e-8)):
        config = _ppo_config(0)
        setattr(config, field, value)
        with pytest.raises(ValueError, match=field):
            update.epoch(np.arange(4), config)
    for i, value in enumerate((float("nan"), 1.0, 1.0, -1.0)):
        hyper = [1e-2, 0.9, 0.999, 1e-5]
        hyper[i] = value
        with pytest.raises(ValueError, match=("lr", "beta1", "beta2", "eps")[i]):
            fit.epoch(np.arange(4), 4, *hyper)
    after = written()
    for k, v in before.items():
        np.testing.assert_array_equal(after[k], v, err_msg=k)


def test_updater_int_arguments_named_and_not_truncated():
    """Regression: PpoUpdateConfig's setters raised pybind11's "incompatible function arguments", which names
    no field, and batch_size=np.float32(2.5) was truncated to 2 (CriticFit.epoch)."""
    from fastppo._backend import _core

    config = _core.PpoUpdateConfig()
    for field, value in (("batch_size", 1.5), ("batch_size", np.float32(2.5)), ("batch_size", 2**70),
                         ("lr", "0.1"), ("clip_coef", None)):
        with pytest.raises(TypeError, match=field):
            setattr(config, field, value)
    config.batch_size = np.int64(3)
    assert config.batch_size == 3
    fit = _core.CriticFit(**_critic_args(4, 0))
    with pytest.raises(TypeError, match="batch_size must be an int"):
        fit.epoch(np.arange(4), np.float32(2.5), 1e-2, 0.9, 0.999, 1e-5)


def test_updater_parameter_lists_named():
    """Regression: a bad parameter array was named "weight" / "bias" / "grad_weight" (which list, which
    entry?), and a span outside the flat buffers did not say which parameter."""
    from fastppo._backend import _core

    args = _ppo_args("box", 4, 0)
    with pytest.raises(TypeError, match=r"actor\[2\] must have dtype float32"):
        _core.PpoUpdate(**{**args, "actor": [*args["actor"][:2], args["actor"][2].astype(np.float64),
                                             args["actor"][3]]})
    with pytest.raises(ValueError, match=r"critic\[1\] and critic_grads\[1\]: .*views of flat_param"):
        _core.PpoUpdate(**{**args, "critic": [args["critic"][0], args["critic"][1].copy(), *args["critic"][2:]]})
    with pytest.raises(ValueError, match=r"critic_grads\[0\] is missing"):
        _core.CriticFit(**{**_critic_args(4, 0), "critic_grads": []})
    with pytest.raises(ValueError, match="kind 'gaussian' needs log_std"):
        _core.PpoUpdate(**{**_ppo_args("discrete", 4, 0), "kind": "gaussian"})


def test_on_gradients_cannot_unsettle_the_epoch():
    """Regression: epoch() read `order` and the config from the caller's objects between minibatches, and
    checked the actions once: an on_gradients (Python code, run mid-epoch) that rewrote them sent the
    native loop out of bounds (order entries, a negative batch_size, an action beyond its head)."""
    from fastppo._backend import _core

    for kind in ("order", "config", "actions", "nested"):
        args, ref = _ppo_args("discrete", 8, 1), _ppo_args("discrete", 8, 1)
        update, config, order = _core.PpoUpdate(**args), _ppo_config(3), np.arange(8)
        config.batch_size, config.target_kl = 2, -1.0
        want = _core.PpoUpdate(**ref).epoch(order.copy(), _copy_config(config))

        def rewrite():
            if kind == "order":
                order[:] = 2**62
            elif kind == "config":
                config.batch_size = -5
            elif kind == "actions":
                args["actions"][3] = 2**40
            else:  # re-entered with an order it refuses: refused before it copies or reads anything
                with pytest.raises(ValueError, match="order"):
                    update.epoch(np.full(8, 2**62), config)

        if kind == "actions":
            with pytest.raises(ValueError, match=r"actions\[3\] = 1099511627776 is outside"):
                update.epoch(order, config, rewrite)
            assert args["adam_steps"][0] == ref["adam_steps"][0] - 4  # the first minibatch's step not taken
            continue
        _same_result(update.epoch(order, config, rewrite), want)
        _assert_written(_written(args), _written(ref), kind)


def test_order_must_be_a_permutation():
    """Regression: epoch() checked only that each order entry was in range (docs/architecture.md says a
    permutation): an order with repeats trained on some rows twice and never on others."""
    from fastppo._backend import _core

    update, fit = _core.PpoUpdate(**_ppo_args("discrete", 4, 0)), _core.CriticFit(**_critic_args(4, 0))
    with pytest.raises(ValueError, match=r"order must be a permutation of range\(4\), but order\[2\] = 1 repeats"):
        update.epoch(np.array([0, 1, 1, 3]), _ppo_config(0))
    with pytest.raises(ValueError, match="order must be a permutation"):
        fit.epoch(np.zeros(4, np.int64), 4, 1e-2, 0.9, 0.999, 1e-5)
