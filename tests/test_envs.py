"""Built-in vector envs against gymnasium's own: step-for-step dynamics, initial-state and episode
distributions, SAME_STEP autoreset and episode statistics, seeding and threads, CUDA against the CPU.
(The interface and bad input: test_env_contract.py; the fallback: test_fallback.py; Numba envs:
test_numba_env.py.)"""

from __future__ import annotations

import math

import gymnasium as gym
import numpy as np
import pytest
import torch
from gymnasium.vector import AutoresetMode
from gymnasium.wrappers.vector import RecordEpisodeStatistics

import fastppo
from fastppo.envs import BUILTIN_SPACES
from conftest import requires_two_gpus

ENV_IDS = list(BUILTIN_SPACES)
HAS_CUDA = fastppo.backends()["cuda"].available
requires_cuda = pytest.mark.skipif(not HAS_CUDA, reason=f"cuda backend: {fastppo.backends()['cuda'].detail}")
requires_cpp = pytest.mark.skipif(not fastppo.backends()["cpp"].available, reason="native extension missing")
pytestmark = requires_cpp


# -- helpers ----------------------------------------------------------------------------------------
def gym_state(env: gym.Env, env_id: str) -> np.ndarray:
    """gymnasium's internal state in fastppo's layout (see BuiltinVecEnv)."""
    raw = np.asarray(env.unwrapped.state)
    state = raw.astype(np.float64)
    if env_id == "MountainCarContinuous-v0":
        state = np.append(state, 1.0 if raw.dtype == np.float32 else 0.0)
    return state


def random_state(env_id: str, rng: np.random.Generator) -> np.ndarray:
    """A state anywhere in (and a little beyond) the region an episode visits, to reach every branch:
    terminations, walls, velocity clips, angle wrapping."""
    lo, hi = {
        "CartPole-v1": ([-2.6, -3, -0.25, -3], [2.6, 3, 0.25, 3]),
        "Acrobot-v1": ([-math.pi, -math.pi, -4 * math.pi, -9 * math.pi], [math.pi, math.pi, 4 * math.pi, 9 * math.pi]),
        "MountainCar-v0": ([-1.2, -0.07], [0.6, 0.07]),
        "MountainCarContinuous-v0": ([-1.2, -0.07], [0.6, 0.07]),
        "Pendulum-v1": ([-10, -8], [10, 8]),
    }[env_id]
    state = rng.uniform(lo, hi)
    if env_id == "MountainCarContinuous-v0" and rng.random() < 0.5:
        state = state.astype(np.float32)  # gymnasium's state after a step
    return state


def random_actions(space: gym.Space, n: int, rng: np.random.Generator) -> np.ndarray:
    if isinstance(space, gym.spaces.Discrete):
        return rng.integers(0, space.n, size=n)
    # 1.5x the bounds: out-of-range actions must be clipped exactly as gymnasium clips them
    return rng.uniform(1.5 * space.low[0], 1.5 * space.high[0], size=(n, 1)).astype(np.float32)


def ks_statistic(a: np.ndarray, b: np.ndarray) -> float:
    """Two-sample Kolmogorov-Smirnov statistic."""
    grid = np.sort(np.concatenate([a, b]))
    cdf_a = np.searchsorted(np.sort(a), grid, side="right") / len(a)
    cdf_b = np.searchsorted(np.sort(b), grid, side="right") / len(b)
    return float(np.abs(cdf_a - cdf_b).max())


def ks_critical(n: int, m: int, alpha: float = 1e-3) -> float:
    """The KS rejection threshold at level alpha (asymptotic; conservative for discrete data)."""
    return math.sqrt(-0.5 * math.log(alpha / 2)) * math.sqrt((n + m) / (n * m))


def rollout(env, actions_seq):
    """Every step's (obs, rewards, terminated, truncated, final_obs where done) as copies."""
    out = []
    for actions in actions_seq:
        obs, rew, te, tr, info = env.step(actions)
        final = np.where((te | tr)[:, None], info["final_obs"], 0) if info else np.zeros_like(obs)
        out.append((obs.copy(), rew.copy(), te.copy(), tr.copy(), final))
    return out


# -- spaces and dynamics ----------------------------------------------------------------------------
@pytest.mark.parametrize("env_id", ENV_IDS)
def test_spaces_and_time_limit_match_gymnasium(env_id):
    ref = gym.make(env_id)
    env = fastppo.make_vec_env(env_id, 3)
    assert env.single_observation_space == ref.observation_space
    assert env.single_action_space == ref.action_space
    assert env.max_episode_steps == gym.spec(env_id).max_episode_steps
    assert env.metadata["autoreset_mode"] == AutoresetMode.SAME_STEP
    assert isinstance(env, gym.vector.VectorEnv) and env.num_envs == 3


@pytest.mark.parametrize("env_id", ENV_IDS)
def test_step_for_step_agreement_with_gymnasium(env_id):
    """8 gymnasium envs and 8 of ours, 1000 random (partly out-of-range) actions. Before each step our
    state is set to gymnasium's, and 2% of the time gymnasium's state first jumps to a random one, so
    every branch of the dynamics is visited. We do the same float64/float32 operations in the same
    order, so the results are expected bit for bit; the 1e-6 tolerance on float32 observations and
    rewards only allows a last-bit difference between this platform's libm sin/cos and numpy's."""
    n, steps = 8, 1000
    rng = np.random.default_rng(7)
    refs = [gym.make(env_id, disable_env_checker=True) for _ in range(n)]
    for k, ref in enumerate(refs):
        ref.reset(seed=k)
    env = fastppo.make_vec_env(env_id, n, seed=0)
    env.reset()
    ended = 0
    for _ in range(steps):
        for ref in refs:
            if rng.random() < 0.02:
                ref.unwrapped.state = random_state(env_id, rng)
        env.set_state(np.stack([gym_state(r, env_id) for r in refs]),
                      elapsed=np.array([r._elapsed_steps for r in refs]))
        actions = random_actions(env.single_action_space, n, rng)
        obs, rew, te, tr, info = env.step(actions)
        for i, ref in enumerate(refs):
            r_obs, r_rew, r_te, r_tr, _ = ref.step(actions[i])
            assert (te[i], tr[i]) == (r_te, r_tr)
            mine = info["final_obs"][i] if (te[i] or tr[i]) else obs[i]
            np.testing.assert_allclose(mine, r_obs, rtol=1e-6, atol=1e-6)
            np.testing.assert_allclose(rew[i], np.float32(r_rew), rtol=1e-6, atol=1e-6)
            if r_te or r_tr:
                ended += 1
                ref.reset(seed=int(rng.integers(2**31)))
    assert ended > 0  # the time limit or a termination was exercised


@pytest.mark.parametrize("env_id,steps", [("CartPole-v1", 1500), ("MountainCar-v0", 1500), ("Pendulum-v1", 1500),
                                           ("MountainCarContinuous-v0", 1500), ("Acrobot-v1", 300)])
def test_long_runs_agree_without_resync(env_id, steps):
    """The same, but our state is copied from gymnasium only when gymnasium resets (our RNG differs),
    so errors would accumulate. Bit-exact on x86-64 Linux; the 1e-5 tolerance covers last-bit libm
    differences elsewhere, which chaotic Acrobot would amplify over long horizons (hence 300 steps)."""
    n = 4
    rng = np.random.default_rng(3)
    refs = [gym.make(env_id, disable_env_checker=True) for _ in range(n)]
    for k, ref in enumerate(refs):
        ref.reset(seed=100 + k)
    env = fastppo.make_vec_env(env_id, n, seed=0)
    env.reset()
    env.set_state(np.stack([gym_state(r, env_id) for r in refs]), elapsed=0)
    for _ in range(steps):
        actions = random_actions(env.single_action_space, n, rng)
        obs, rew, te, tr, info = env.step(actions)
        state = env.get_state()
        for i, ref in enumerate(refs):
            r_obs, r_rew, r_te, r_tr, _ = ref.step(actions[i])
            assert (te[i], tr[i]) == (r_te, r_tr)
            np.testing.assert_allclose(info["final_obs"][i] if (te[i] or tr[i]) else obs[i], r_obs, rtol=0, atol=1e-5)
            np.testing.assert_allclose(rew[i], np.float32(r_rew), rtol=1e-6)
            if r_te or r_tr:
                ref.reset(seed=int(rng.integers(2**31)))
                state[i] = gym_state(ref, env_id)
        env.set_state(state)


def test_fast_math_cartpole_agrees_with_gymnasium_to_rounding():
    """fast_math=True replaces libm's sin/cos by polynomials within 1 ulp of them, so one step from
    gymnasium's state lands within a few ulp of gymnasium's next state (rtol 1e-13 covers the ulp of
    sin/cos carried through CartPole's few float64 operations), with the same rewards and flags. 5% of
    the time the state first jumps to a random one, angles up to 3 rad included: beyond pi/4 the
    polynomials hand over to libm. The same inputs through the default (exact) env differ in a few
    last bits (the polynomials usually round to libm's very value), so fast math really ran."""
    n, steps = 8, 1000
    rng = np.random.default_rng(5)
    refs = [gym.make("CartPole-v1", disable_env_checker=True) for _ in range(n)]
    for k, ref in enumerate(refs):
        ref.reset(seed=k)
    fast = fastppo.make_vec_env("CartPole-v1", n, seed=0, fast_math=True)
    exact = fastppo.make_vec_env("CartPole-v1", n, seed=0)
    fast.reset(), exact.reset()
    differs = 0
    for _ in range(steps):
        for ref in refs:
            if rng.random() < 0.05:
                ref.unwrapped.state = rng.uniform([-2.6, -3, -3, -3], [2.6, 3, 3, 3])
        state = np.stack([gym_state(r, "CartPole-v1") for r in refs])
        elapsed = np.array([r._elapsed_steps for r in refs])
        actions = rng.integers(0, 2, size=n)
        for env in (fast, exact):
            env.set_state(state, elapsed=elapsed)
            env.step(actions)
        # the state after the step, before any autoreset: our final_obs is float32, so compare the
        # float64 state that produced it (the exact env's equals gymnasium's bit for bit)
        fast_state, exact_state = fast.get_state(), exact.get_state()
        for i, ref in enumerate(refs):
            _, r_rew, r_te, r_tr, _ = ref.step(actions[i])
            assert (bool(fast._buffers["terminated"][i]), bool(fast._buffers["truncated"][i])) == (r_te, r_tr)
            assert fast._buffers["rewards"][i] == np.float32(r_rew)
            if r_te or r_tr:  # both envs autoreset from the same stream: compare the fresh states instead
                np.testing.assert_array_equal(fast_state[i], exact_state[i])
                ref.reset(seed=int(rng.integers(2**31)))
            else:
                np.testing.assert_allclose(fast_state[i], gym_state(ref, "CartPole-v1"), rtol=1e-13, atol=1e-15)
                np.testing.assert_array_equal(exact_state[i], gym_state(ref, "CartPole-v1"))
                differs += not np.array_equal(fast_state[i], exact_state[i])
    assert differs > 0


# -- distributions ----------------------------------------------------------------------------------
@pytest.mark.parametrize("env_id", ENV_IDS)
def test_initial_state_distribution_matches_gymnasium(env_id):
    """2000 initial states from each; per state dimension, a two-sample KS test at level 1e-3 (fixed
    seeds, so the outcome is deterministic: it fails only if the distributions differ)."""
    n = 2000
    ours = fastppo.make_vec_env(env_id, n, seed=1)
    ours.reset()
    mine = ours.get_state()
    ref = gym.make(env_id, disable_env_checker=True)
    theirs = []
    for k in range(n):
        ref.reset(seed=10_000 + k)
        theirs.append(gym_state(ref, env_id))
    theirs = np.stack(theirs)
    for d in range(mine.shape[1]):
        if np.ptp(theirs[:, d]) == 0:  # a constant (MountainCar's velocity, the float32 flag)
            np.testing.assert_array_equal(mine[:, d], theirs[:, d])
        else:
            assert ks_statistic(mine[:, d], theirs[:, d]) < ks_critical(n, n), f"state dimension {d}"


def test_cartpole_episode_length_distribution_matches_gymnasium():
    """Episode lengths under a uniformly random policy: 1500 episodes each, KS test at level 1e-3."""
    episodes = 1500
    ref = gym.make("CartPole-v1", disable_env_checker=True)
    rng = np.random.default_rng(5)
    theirs = []
    for k in range(episodes):
        ref.reset(seed=k)
        length, done = 0, False
        while not done:
            _, _, te, tr, _ = ref.step(int(rng.integers(2)))
            length, done = length + 1, te or tr
        theirs.append(length)
    env = fastppo.make_vec_env("CartPole-v1", 64, seed=5)
    env.reset()
    mine = []
    while len(mine) < episodes:
        _, _, _, _, info = env.step(rng.integers(0, 2, size=64))
        if info:
            mine.extend(info["episode"]["l"][info["_episode"]])
    mine = np.array(mine[:episodes], dtype=float)
    assert ks_statistic(mine, np.array(theirs, dtype=float)) < ks_critical(episodes, episodes)


# -- autoreset, final observations, time limits, statistics -----------------------------------------
def test_same_step_autoreset_final_obs_and_episode_stats():
    """Cross-checked against gymnasium's own RecordEpisodeStatistics wrapped around our env."""
    n = 16
    env = RecordEpisodeStatistics(fastppo.make_vec_env("CartPole-v1", n, seed=3), stats_key="gym_episode")
    obs, info = env.reset()
    assert info == {}
    rng = np.random.default_rng(0)
    ret, length, seen = np.zeros(n), np.zeros(n, dtype=int), 0
    for _ in range(300):
        prev = env.unwrapped.get_state()
        actions = rng.integers(0, 2, size=n)
        obs, rew, te, tr, info = env.step(actions)
        np.testing.assert_array_equal(rew, 1.0)
        ret += rew
        length += 1
        done = te | tr
        if not done.any():
            assert info == {}
            continue
        seen += done.sum()
        for key in ("_final_obs", "_final_info", "_episode", "_gym_episode"):
            np.testing.assert_array_equal(info[key], done)
        assert info["final_info"] == {}
        # the final observation is the terminal state (out of bounds); obs is already the reset one
        final = info["final_obs"][done]
        assert ((np.abs(final[:, 0]) > 2.4) | (np.abs(final[:, 2]) > 12 * 2 * math.pi / 360)).all()
        assert (np.abs(obs[done]) <= 0.05).all()
        assert not np.array_equal(final, obs[done])
        # ... and one physics step from the previous state (step a copy of that state to check)
        check = fastppo.make_vec_env("CartPole-v1", n, seed=0)
        check.reset()
        check.set_state(prev)
        c_obs, _, c_te, _, c_info = check.step(actions)
        np.testing.assert_array_equal(c_info["final_obs"][done], final)
        ep = info["episode"]
        np.testing.assert_array_equal(ep["r"], np.where(done, ret, 0.0))
        np.testing.assert_array_equal(ep["l"], np.where(done, length, 0))
        np.testing.assert_array_equal(ep["r"], info["gym_episode"]["r"])
        np.testing.assert_array_equal(ep["l"], info["gym_episode"]["l"])
        assert (ep["t"][done] >= 0).all() and (ep["t"][~done] == 0).all()
        assert ep["r"].dtype == np.float64 and ep["l"].dtype == np.int64
        ret[done], length[done] = 0, 0
    assert seen > 50


@pytest.mark.parametrize("env_id", ["Pendulum-v1", "MountainCar-v0", "CartPole-v1"])
def test_truncation_at_gymnasium_time_limit(env_id):
    """Hold CartPole upright (reset its state every step) so only the time limit can end episodes."""
    env = fastppo.make_vec_env(env_id, 4, seed=0)
    env.reset()
    limit = gym.spec(env_id).max_episode_steps
    space = env.single_action_space
    actions = np.zeros(4, np.int64) if isinstance(space, gym.spaces.Discrete) else np.zeros((4, 1), np.float32)
    if env_id == "MountainCar-v0":
        actions[:] = 1  # no push: it cannot reach the goal
    for t in range(1, 2 * limit + 1):
        if env_id == "CartPole-v1":
            env.set_state(np.zeros((4, 4)))
        _, _, te, tr, info = env.step(actions)
        assert not te.any()
        assert tr.all() == (t % limit == 0) and tr.any() == (t % limit == 0)
        if t % limit == 0:
            np.testing.assert_array_equal(info["episode"]["l"], limit)
            np.testing.assert_array_equal(info["_final_obs"], True)


# -- seeding and threads ----------------------------------------------------------------------------
def _trajectory(env_id, n, seed, steps=200, action_seed=0, fast_math=False):
    env = fastppo.make_vec_env(env_id, n, seed=seed, fast_math=fast_math)
    env.reset()
    rng = np.random.default_rng(action_seed)
    return rollout(env, [random_actions(env.single_action_space, n, rng) for _ in range(steps)])


def _assert_same(a, b):
    for x, y in zip(a, b):
        for u, v in zip(x, y):
            np.testing.assert_array_equal(u, v)


@pytest.mark.parametrize("env_id", ["CartPole-v1", "Pendulum-v1"])
def test_seeding_reproduces_and_differs(env_id):
    _assert_same(_trajectory(env_id, 6, 42), _trajectory(env_id, 6, 42))
    first, other = _trajectory(env_id, 6, 42, steps=1), _trajectory(env_id, 6, 43, steps=1)
    assert not np.array_equal(first[0][0], other[0][0])
    env = fastppo.make_vec_env(env_id, 6, seed=None)
    assert not np.array_equal(env.reset()[0].copy(), fastppo.make_vec_env(env_id, 6, seed=None).reset()[0])
    obs0 = env.reset(seed=9)[0].copy()
    env.step(random_actions(env.single_action_space, 6, np.random.default_rng(0)))
    np.testing.assert_array_equal(env.reset(seed=9)[0], obs0)  # reset(seed=) restarts the streams
    assert not np.array_equal(env.reset()[0], obs0)  # reset() continues them


def test_env_streams_do_not_depend_on_num_envs():
    """Env i's trajectory depends on (seed, i) only: the first 3 of 10 envs equal 3 envs."""
    env10 = fastppo.make_vec_env("CartPole-v1", 10, seed=4)
    env3 = fastppo.make_vec_env("CartPole-v1", 3, seed=4)
    np.testing.assert_array_equal(env10.reset()[0][:3], env3.reset()[0])
    rng = np.random.default_rng(1)
    for _ in range(300):
        a = rng.integers(0, 2, size=10)
        o10, r10, te10, tr10, _ = env10.step(a)
        o3, r3, te3, tr3, _ = env3.step(a[:3])
        np.testing.assert_array_equal(o10[:3], o3)
        np.testing.assert_array_equal(te10[:3], te3)


@pytest.mark.parametrize("env_id,fast_math", [("CartPole-v1", False), ("Acrobot-v1", False), ("CartPole-v1", True)])
def test_results_do_not_depend_on_thread_count(env_id, fast_math):
    n = 9000  # above the per-thread grain, so the batch really splits
    runs = []
    try:
        for threads in (1, 2, 3):
            fastppo.set_num_threads(threads)
            runs.append(_trajectory(env_id, n, 11, steps=40, fast_math=fast_math))
    finally:
        fastppo.set_num_threads(0)
    _assert_same(runs[0], runs[1])
    _assert_same(runs[0], runs[2])


# -- CUDA -------------------------------------------------------------------------------------------
@requires_cuda
@pytest.mark.parametrize("env_id", ENV_IDS)
def test_cuda_matches_cpu(env_id):
    """Same headers, same random streams, FMA contraction off; what may still differ is CUDA's
    sin/cos/exp against glibc's (CUDA documents up to 2 ulp for the double ones, glibc under 1), and a
    chaotic env (Acrobot) would amplify a last-bit difference over a long run. So the GPU env gets the
    CPU env's state before every step, and each step must agree to float32 rounding (observations,
    rewards: 1e-6) and exactly in the flags; the autoresets, drawn from the same streams, follow."""
    n, steps = 64, 300
    cpu = fastppo.make_vec_env(env_id, n, seed=8)
    gpu = fastppo.make_vec_env(env_id, n, seed=8, device="cuda")
    np.testing.assert_allclose(gpu.reset()[0].cpu().numpy(), cpu.reset()[0], rtol=1e-6, atol=1e-6)
    rng = np.random.default_rng(0)
    for _ in range(steps):
        gpu.set_state(torch.as_tensor(cpu.get_state(), device="cuda"))
        a = random_actions(cpu.single_action_space, n, rng)
        c = cpu.step(a)
        g = [x.cpu().numpy() for x in gpu.step(torch.from_numpy(a).cuda())[:4]]
        np.testing.assert_allclose(g[0], c[0], rtol=1e-6, atol=1e-6)
        np.testing.assert_allclose(g[1], c[1], rtol=1e-6, atol=1e-6)
        np.testing.assert_array_equal(g[2], c[2])
        np.testing.assert_array_equal(g[3], c[3])


@requires_two_gpus
def test_cuda_second_device():
    """Buffers on cuda:1 while cuda:0 is the current device: reset and step run on the buffers' device."""
    assert torch.cuda.current_device() == 0
    cpu = fastppo.make_vec_env("CartPole-v1", 16, seed=3)
    gpu = fastppo.make_vec_env("CartPole-v1", 16, seed=3, device="cuda:1")
    np.testing.assert_array_equal(gpu.reset()[0].cpu().numpy(), cpu.reset()[0])  # the reset draws only
    actions = np.ones(16, np.int64)
    obs = gpu.step(torch.from_numpy(actions).to("cuda:1"))[0]
    assert obs.device == torch.device("cuda:1")
    np.testing.assert_allclose(obs.cpu().numpy(), cpu.step(actions)[0], rtol=1e-6, atol=1e-6)


@requires_cuda
def test_cuda_bad_actions():
    env = fastppo.make_vec_env("CartPole-v1", 3, seed=0, device="cuda")
    env.reset()
    with pytest.raises(ValueError, match=r"actions\[1\] = 2 is out of range"):
        env.step(torch.tensor([0, 2, 1], device="cuda"))
    with pytest.raises(ValueError, match="actions must be a CUDA tensor"):
        env.step(np.zeros(3, np.int64))
