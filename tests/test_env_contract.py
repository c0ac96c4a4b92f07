"""What every fastppo VectorEnv promises a caller (fastppo/envs/_buffered.py, fallback.py): results the
caller owns (gymnasium's copy=True; copy=False opts out), and a lifecycle that says so when it is broken
(step before reset, anything after close)."""

from __future__ import annotations

import numpy as np
import pytest

import fastppo
from fastppo.envs import BUILTIN_SPACES

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
