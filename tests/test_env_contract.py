"""What every fastppo VectorEnv promises a caller (fastppo/envs/_buffered.py, builtin.py, fallback.py):
results the caller owns (gymnasium's copy=True; copy=False opts out), a lifecycle that says so when it is
broken (step before reset, anything after close), the interface beyond gymnasium's (reset options, torch
actions, the one-call native step), and a clear error for every bad input, raised before any env steps."""

from __future__ import annotations

import subprocess
import sys

import numpy as np
import pytest
import torch

import fastppo
from fastppo.envs import BUILTIN_SPACES

HAS_CUDA = fastppo.backends()["cuda"].available
needs_native = pytest.mark.skipif(not fastppo.backends()["cpp"].available, reason="needs the native extension")


def _engines(numba_cartpole):
    return [*((env_id, "cpp") for env_id in BUILTIN_SPACES), (numba_cartpole, "numba"),
            ("CartPole-v1", "gymnasium"), ("Pendulum-v1", "gymnasium")]


def _actions(env, rng):
    space = env.single_action_space
    if hasattr(space, "n"):
        return rng.integers(0, int(space.n), env.num_envs)
    return rng.uniform(space.low, space.high, (env.num_envs, *space.shape)).astype(np.float32)


def _keep_references_and_copies(env, steps=1000, seed=0):
    """A loop that keeps every result as returned, and one copy of each taken at once (past every built-in
    env's time limit, so episodes end and the infos are kept too)."""
    rng = np.random.default_rng(seed)
    obs, _ = env.reset(seed=seed)
    kept, copied = [obs], [obs.copy()]
    for _ in range(steps):
        obs, reward, terminated, truncated, info = env.step(_actions(env, rng))
        result = [obs, reward, terminated, truncated]
        if "final_obs" in info:
            result += [info["final_obs"], info["_final_obs"], info["episode"]["r"], info["episode"]["l"]]
        kept.append(result)
        copied.append([np.array(x, copy=True) for x in result])
    return kept, copied


def _same(kept, copied) -> bool:
    return all(np.array_equal(np.asarray(a), b) for ka, ca in zip(kept[1:], copied[1:]) for a, b in zip(ka, ca)) \
        and np.array_equal(kept[0], copied[0])


def test_results_belong_to_the_caller(numba_cartpole):
    """On every engine a loop that keeps references sees what it would have seen copying each result."""
    for env_id, backend in _engines(numba_cartpole):
        if backend == "cpp" and not fastppo.backends()["cpp"].available:
            continue
        env = fastppo.make_vec_env(env_id, 4, seed=0, backend=backend)
        try:
            kept, copied = _keep_references_and_copies(env)
        finally:
            env.close()
        assert _same(kept, copied), f"{env_id} ({backend}): a kept result changed after later calls"
        assert any(len(k) > 4 for k in kept[1:]), f"{env_id}: no episode ended, the infos went unchecked"


@needs_native
def test_copy_false_returns_the_buffers(numba_cartpole):
    """copy=False opts out: the same arrays every call, rewritten in place (what the check above would
    catch); the trainer uses it."""
    for env_id, backend in (("CartPole-v1", "cpp"), (numba_cartpole, "numba")):
        env = fastppo.make_vec_env(env_id, 4, seed=0, backend=backend, copy=False)
        kept, copied = _keep_references_and_copies(env, steps=20)
        assert kept[1][0] is kept[2][0] and not _same(kept, copied)
        env.close()
    model = fastppo.PPO("MlpPolicy", "CartPole-v1", n_steps=8, batch_size=8)
    assert model.env.copy is False


@needs_native
def test_the_same_numbers_with_and_without_copies():
    a = fastppo.make_vec_env("Acrobot-v1", 3, seed=5)
    b = fastppo.make_vec_env("Acrobot-v1", 3, seed=5, copy=False)
    for env in (a, b):
        env.reset()
    rng = np.random.default_rng(1)
    for _ in range(300):
        actions = rng.integers(0, 3, 3)
        for x, y in zip(a.step(actions)[:4], b.step(actions)[:4]):
            np.testing.assert_array_equal(x, y)


@pytest.mark.parametrize("backend", ["cpp", "numba", "gymnasium"])
def test_lifecycle_errors(backend, numba_cartpole):
    if backend == "cpp" and not fastppo.backends()["cpp"].available:
        pytest.skip("needs the native extension")
    env_id = numba_cartpole if backend == "numba" else "CartPole-v1"
    env = fastppo.make_vec_env(env_id, 2, seed=0, backend=backend)
    actions = np.zeros(2, np.int64)
    if backend != "gymnasium":  # gymnasium's own envs decide what a step before reset does
        with pytest.raises(RuntimeError, match="call reset"):
            env.step(actions)
    env.reset()
    env.step(actions)
    env.close()
    env.close()  # harmless
    with pytest.raises(RuntimeError, match="the env is closed"):
        env.step(actions)
    with pytest.raises(RuntimeError, match="the env is closed"):
        env.reset()
    if backend != "gymnasium":
        for call in (env.get_state, env.snapshot):
            with pytest.raises(RuntimeError, match="the env is closed"):
                call()
    if backend == "cpp":
        with pytest.raises(RuntimeError, match="the env is closed"):
            env.native_batch()


@needs_native
def test_a_closed_env_cannot_be_trained_on():
    env = fastppo.make_vec_env("CartPole-v1", 2, seed=0)
    model = fastppo.PPO("MlpPolicy", env, n_steps=8, batch_size=8)
    env.close()
    with pytest.raises(RuntimeError, match="the env is closed"):
        model.learn(16, progress_bar=False)


# -- interface --------------------------------------------------------------------------------------
def test_buffers_are_views_with_copy_false_and_torch_actions_work():
    env = fastppo.make_vec_env("CartPole-v1", 5, seed=0, copy=False)
    obs, _ = env.reset()
    view = torch.from_numpy(obs)  # zero-copy
    nxt, *_ = env.step(torch.ones(5, dtype=torch.int64))
    assert nxt is obs and torch.equal(view, torch.from_numpy(nxt))
    env.step([0, 1, 0, 1, 0])  # anything np.asarray takes
    env.step(np.ones(10, np.int32)[::2])  # strided int32
    assert env.observation_space.contains(obs)


def test_reset_options():
    env = fastppo.make_vec_env("CartPole-v1", 50, seed=0)
    obs, _ = env.reset(options={"low": 0.2, "high": 0.3})
    assert ((obs >= 0.2) & (obs <= 0.3)).all()
    before = obs.copy()
    mask = np.zeros(50, bool)
    mask[::2] = True
    obs, _ = env.reset(options={"reset_mask": mask})
    np.testing.assert_array_equal(obs[1::2], before[1::2])
    assert (np.abs(obs[::2]) <= 0.05).all()
    pend = fastppo.make_vec_env("Pendulum-v1", 50, seed=0)
    obs, _ = pend.reset(options={"x_init": 0.1, "y_init": 0.2})
    state = pend.get_state()
    assert (np.abs(state[:, 0]) <= 0.1).all() and (np.abs(state[:, 1]) <= 0.2).all()


# -- bad input --------------------------------------------------------------------------------------
@pytest.mark.parametrize("actions,exc,match", [
    (np.array([0, 2, 1]), ValueError, r"actions\[1\] = 2 is out of range"),
    (np.array([0, -1, 1]), ValueError, r"actions\[1\] = -1 is out of range"),
    (np.array([0.0, 1.0, 1.0]), TypeError, "actions must have an integer dtype"),
    (np.array([0, 1]), ValueError, r"actions must have shape \(3,\)"),
    (np.array([[0], [1], [1]]), ValueError, r"actions must have shape \(3,\)"),
    (np.array(["a", "b", "c"]), TypeError, "actions must have dtype"),
])
def test_bad_discrete_actions_raise_before_stepping(actions, exc, match):
    env = fastppo.make_vec_env("CartPole-v1", 3, seed=0)
    env.reset()
    state = env.get_state()
    with pytest.raises(exc, match=match):
        env.step(actions)
    np.testing.assert_array_equal(env.get_state(), state)  # no env was stepped


@pytest.mark.parametrize("actions,exc,match", [
    (np.array([[0.0], [np.nan]], np.float32), ValueError, r"actions\[1, 0\] = nan is not finite"),
    (np.array([[np.inf], [0.0]]), ValueError, r"actions\[0, 0\] = inf is not finite"),
    (np.array([0.0, 0.0], np.float32), ValueError, r"actions must have shape \(2, 1\)"),
    (np.array([[0], [1]]), TypeError, "actions must have dtype float32 or float64"),
])
def test_bad_continuous_actions_raise_before_stepping(actions, exc, match):
    env = fastppo.make_vec_env("Pendulum-v1", 2, seed=0)
    env.reset()
    state = env.get_state()
    with pytest.raises(exc, match=match):
        env.step(actions)
    np.testing.assert_array_equal(env.get_state(), state)


def test_out_of_range_continuous_actions_are_clipped_like_gymnasium():
    envs = [fastppo.make_vec_env("Pendulum-v1", 1, seed=0) for _ in range(2)]
    for e in envs:
        e.reset()
    a = envs[0].step(np.array([[7.5]], np.float32))
    b = envs[1].step(np.array([[2.0]], np.float32))
    np.testing.assert_array_equal(a[0], b[0])
    np.testing.assert_array_equal(a[1], b[1])


@pytest.mark.parametrize("kwargs,exc,match", [
    (dict(env_id="CartPole-v1", num_envs=0), ValueError, "num_envs must be >= 1, got 0"),
    (dict(env_id="CartPole-v1", num_envs=-3), ValueError, "num_envs must be >= 1"),
    (dict(env_id="CartPole-v1", num_envs=2.0), TypeError, "num_envs must be an int"),
    (dict(env_id="CartPole-v1", num_envs=True), TypeError, "num_envs must be an int"),
    (dict(env_id="NoSuchEnv-v9", num_envs=2), ValueError, "env_id 'NoSuchEnv-v9' is not a built-in env"),
    (dict(env_id=3, num_envs=2), TypeError, "env_id must be a str"),
    (dict(env_id="CartPole-v1", num_envs=2, backend="fast"), ValueError, "backend must be one of"),
    (dict(env_id="CartPole-v1", num_envs=2, device="tpu"), ValueError, "device must be"),
    (dict(env_id="CartPole-v0", num_envs=2, backend="cpp"), ValueError, "is not built in"),
    (dict(env_id="CartPole-v1", num_envs=2, backend="numba"), ValueError, "not a registered Numba env"),
    (dict(env_id="CartPole-v1", num_envs=2, backend="cuda"), ValueError, "backend 'cuda' needs a CUDA device"),
    (dict(env_id="CartPole-v1", num_envs=2, seed=-1), TypeError, "seed must be None or an int"),
    (dict(env_id="CartPole-v1", num_envs=2, fast_math=1), TypeError, "fast_math must be a bool, got int"),
    (dict(env_id="Pendulum-v1", num_envs=2, fast_math=True), ValueError,
     "fast_math=True is available for CartPole-v1 only, got 'Pendulum-v1'"),
    (dict(env_id="CartPole-v1", num_envs=2, fast_math=True, backend="sync"), ValueError,
     "fast_math=True is for the built-in envs on the CPU \\(backend 'cpp'\\), got backend 'sync'"),
])
def test_bad_make_arguments(kwargs, exc, match):
    with pytest.raises(exc, match=match):
        fastppo.make_vec_env(**kwargs)


@pytest.mark.skipif(HAS_CUDA, reason="checks the error when CUDA is unavailable")
def test_cuda_device_without_cuda_says_why():
    with pytest.raises(fastppo.BackendUnavailableError, match="backend 'cuda' is unavailable"):
        fastppo.make_vec_env("CartPole-v1", 2, device="cuda")


def test_bad_reset_and_step_order():
    env = fastppo.make_vec_env("CartPole-v1", 2, seed=0)
    with pytest.raises(RuntimeError, match="call reset"):
        env.step(np.zeros(2, np.int64))
    with pytest.raises(TypeError, match="seed must be None or an int"):
        env.reset(seed=1.5)
    with pytest.raises(ValueError, match="unknown key 'lo'"):
        env.reset(options={"lo": 0.1})
    with pytest.raises(ValueError, match="must not exceed"):
        env.reset(options={"low": 0.1, "high": 0.0})
    with pytest.raises(TypeError, match=r"reset_mask'\] must be a bool array"):
        env.reset(options={"reset_mask": np.ones(2, np.int64)})
    with pytest.raises(ValueError, match=r"reset_mask'\] must have shape \(2,\)"):
        env.reset(options={"reset_mask": np.ones(3, bool)})
    with pytest.raises(ValueError, match="state must have shape"):
        env.set_state(np.zeros((2, 3)))
    with pytest.raises(ValueError, match="state must be finite"):
        env.set_state(np.array([[0.0, 0.0, 0.0, 0.0], [0.0, np.inf, 0.0, 0.0]]))


def test_native_step_call_matches_the_python_step():
    # on the CPU with copy=False a built-in env's step() is one native call (EnvBatch.step_gym) shadowing
    # the method; BufferedVecEnv.step is the same step through Python: the two must return the same things
    from fastppo.envs._buffered import BufferedVecEnv

    fast, slow = (fastppo.make_vec_env("CartPole-v1", 4, seed=2, copy=False) for _ in range(2))
    fast.reset(), slow.reset()
    assert fast.step is not BufferedVecEnv.step.__get__(fast)
    rng, ended = np.random.default_rng(1), 0
    for _ in range(200):
        a = rng.integers(0, 2, size=4)
        got, want = fast.step(a), BufferedVecEnv.step(slow, a)
        for x, y in zip(got[:4], want[:4]):
            np.testing.assert_array_equal(x, y)
        assert got[4].keys() == want[4].keys()
        if got[4]:
            ended += 1
            for key in ("final_obs", "_final_obs", "_episode"):
                np.testing.assert_array_equal(got[4][key], want[4][key])
            for key in ("r", "l"):  # ("t" is wall time: the two envs' clocks differ by when they ran)
                np.testing.assert_array_equal(got[4]["episode"][key], want[4]["episode"][key])
    assert ended > 0


def test_step_override_in_a_subclass_is_kept():
    calls = []

    class Counting(fastppo.envs.BuiltinVecEnv):
        def step(self, actions):
            calls.append(1)
            return super().step(actions)

    env = Counting("CartPole-v1", 2, seed=0)
    env.reset()
    env.step(np.zeros(2, np.int64))
    assert calls == [1]


def test_acrobot_far_out_angle_wraps_without_looping_forever(tmp_path):
    # gymnasium's wrap subtracts 2 pi until the angle is in range: from 1e18 that loop would never end.
    # In a subprocess with a timeout, so that a regression fails here instead of hanging the suite.
    code = ("import numpy as np, fastppo\n"
            "env = fastppo.make_vec_env('Acrobot-v1', 2, seed=0)\n"
            "env.reset()\n"
            "env.set_state(np.array([[1e18, -3e17, 0.0, 0.0], [0.1, 0.2, 0.0, 0.0]]))\n"
            "env.step(np.zeros(2, np.int64))\n"
            "print(float(np.abs(env.get_state()[:, :2]).max()))\n")
    # cwd: not the source tree, whose unbuilt fastppo/ would shadow the installed package
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=120, check=True,
                         cwd=tmp_path)
    assert float(out.stdout) <= np.pi
