"""Native-boundary properties (tests/boundary.py) of ``_core.EnvBatch`` through ``make_vec_env(...,
backend="cpp")``: step, reset, set_state, restore, each against an identical env given clean arguments."""

from __future__ import annotations

import gymnasium as gym
import numpy as np
import pytest
import torch
from hypothesis import given
from hypothesis import strategies as st

import fastppo
from boundary import (
    SEEDS, VARIANT_NAMES, _broadcast, _readonly, _reversed, _settings, _strided, _tensor_neg, clean, outcome, same,
    vary)

pytestmark = pytest.mark.skipif(not fastppo.backends()["cpp"].available, reason="needs the native extension")


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
