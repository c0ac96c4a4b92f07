"""Stable-Baselines3's vector envs as fastppo envs (fastppo/envs/sb3_vec.py): the adapter stepped
alongside an identical SB3 env, the trainers and evaluate_policy on SB3 envs, and evaluate_policy
against SB3's own."""

import contextlib
import re

import gymnasium as gym
import numpy as np
import pytest

import fastppo
from fastppo.envs import SB3VecEnv, as_vector_env, find_vec_normalize, is_sb3_vec_env

pytest.importorskip("stable_baselines3")
from stable_baselines3.common.env_util import make_vec_env  # noqa: E402
from stable_baselines3.common.evaluation import evaluate_policy as sb3_evaluate_policy  # noqa: E402
from stable_baselines3.common.monitor import Monitor  # noqa: E402
from stable_baselines3.common.vec_env import (DummyVecEnv, SubprocVecEnv, VecFrameStack, VecMonitor,  # noqa: E402
                                              VecNormalize)

# CartPole with a time limit short enough that random actions both fail (terminated) and outlast it (truncated).
SHORT = {"max_episode_steps": 15}


def _monitored(n_envs=2, seed=0, **kwargs):
    return make_vec_env("CartPole-v1", n_envs=n_envs, seed=seed, env_kwargs=SHORT, **kwargs)


def _unmonitored(n_envs=2):
    return DummyVecEnv([lambda: gym.make("CartPole-v1", **SHORT)] * n_envs)


class _LifeLoss(gym.Wrapper):
    """Ends a "life" every 5 steps outside Monitor, like SB3's EpisodicLifeEnv on Atari: a done that is not
    the end of an episode (reset continues the episode unless it really ended)."""

    def __init__(self, env):
        super().__init__(env)
        self.steps, self.ended, self.obs = 0, True, None

    def step(self, action):
        self.obs, reward, terminated, truncated, info = self.env.step(action)
        self.steps += 1
        self.ended = terminated or truncated
        return self.obs, reward, terminated or self.steps % 5 == 0, truncated, info

    def reset(self, **kwargs):
        if self.ended:
            return self.env.reset(**kwargs)
        return self.obs, {}


def _lives(n_envs=2):
    return DummyVecEnv([lambda: _LifeLoss(Monitor(gym.make("CartPole-v1", **SHORT)))] * n_envs)


ENVS = {  # name: a factory of identical SB3 VecEnvs
    "DummyVecEnv+Monitor": lambda: _monitored(),
    "VecMonitor": lambda: VecMonitor(_unmonitored()),
    "VecNormalize": lambda: VecNormalize(_monitored(), gamma=0.9),
    "VecFrameStack": lambda: VecFrameStack(_monitored(), n_stack=3),
    "SubprocVecEnv": lambda: _monitored(vec_env_cls=SubprocVecEnv, vec_env_kwargs={"start_method": "fork"}),
    "lives": _lives,
}


@pytest.mark.parametrize("name", ENVS)
def test_adapter_steps_like_the_sb3_env(name):
    """Stepped with the same actions as an identical SB3 env: the same observations and rewards, dones
    split by TimeLimit.truncated, SB3's terminal_observation as final_obs, Monitor's episodes."""
    env, twin = SB3VecEnv(ENVS[name]()), ENVS[name]()
    try:
        assert env.metadata["autoreset_mode"] == gym.vector.AutoresetMode.SAME_STEP
        assert env.num_envs == twin.num_envs == 2 and env.monitored
        assert env.single_observation_space == twin.observation_space
        assert env.single_action_space == twin.action_space
        assert env.observation_space.shape == (2, *twin.observation_space.shape)
        obs, info = env.reset(seed=3)
        twin.seed(3)
        assert info == {}
        np.testing.assert_array_equal(obs, twin.reset())
        rng = np.random.default_rng(0)
        ends = {"terminated": 0, "truncated": 0}
        for _ in range(150):
            actions = rng.integers(0, 2, size=2)
            obs, rewards, terminated, truncated, infos = env.step(actions)
            twin_obs, twin_rewards, dones, twin_infos = twin.step(actions)
            np.testing.assert_array_equal(obs, twin_obs)
            np.testing.assert_array_equal(rewards, twin_rewards)
            assert rewards.dtype == np.float64 and terminated.dtype == truncated.dtype == bool
            np.testing.assert_array_equal(terminated | truncated, dones)
            assert not (terminated & truncated).any()
            assert [set(i) for i in env.last_infos] == [set(i) for i in twin_infos]
            np.testing.assert_array_equal(infos.get("_final_obs", np.zeros(2, bool)), dones)
            monitor_ends = np.array(["episode" in i for i in twin_infos])
            np.testing.assert_array_equal(infos.get("_episode", np.zeros(2, bool)), monitor_ends)
            for i in np.flatnonzero(dones):
                assert truncated[i] == twin_infos[i]["TimeLimit.truncated"]
                np.testing.assert_array_equal(infos["final_obs"][i], twin_infos[i]["terminal_observation"])
                if not monitor_ends[i]:  # a life lost
                    continue
                assert infos["episode"]["r"][i] == twin_infos[i]["episode"]["r"]
                assert infos["episode"]["l"][i] == twin_infos[i]["episode"]["l"]
                if truncated[i]:
                    assert infos["episode"]["l"][i] == SHORT["max_episode_steps"]
                ends["truncated" if truncated[i] else "terminated"] += 1
        assert ends["terminated"] > 0 and ends["truncated"] > 0, ends
    finally:
        env.close()
        twin.close()


def test_vec_normalize_passes_normalised_values_and_raw_episode_returns():
    venv = VecNormalize(_monitored(), gamma=0.9)
    env = SB3VecEnv(venv)
    env.reset(seed=0)
    returns = []
    for _ in range(60):
        obs, rewards, terminated, truncated, infos = env.step(np.ones(2, np.int64))
        np.testing.assert_array_equal(obs, venv.normalize_obs(venv.get_original_obs()))
        np.testing.assert_array_equal(rewards, venv.normalize_reward(venv.get_original_reward()))
        assert not np.allclose(rewards, 1.0)  # CartPole's raw reward is 1 every step
        if "episode" in infos:
            returns += infos["episode"]["r"][infos["_episode"]].tolist()
            np.testing.assert_array_equal(infos["episode"]["r"], infos["episode"]["l"])  # raw: 1 per step
    assert returns
    assert find_vec_normalize(env) is venv


def test_unmonitored_env_episodes_are_counted_from_the_rewards_passed():
    venv = VecNormalize(_unmonitored(), gamma=0.9)  # no Monitor: the returns are of normalised rewards
    env = SB3VecEnv(venv)
    assert not env.monitored
    env.reset(seed=0)
    running, lengths, episodes = np.zeros(2), np.zeros(2, int), 0
    rng = np.random.default_rng(1)
    for _ in range(100):
        _, rewards, terminated, truncated, infos = env.step(rng.integers(0, 2, size=2))
        running += rewards
        lengths += 1
        done = terminated | truncated
        np.testing.assert_array_equal(infos.get("_episode", np.zeros(2, bool)), done)
        for i in np.flatnonzero(done):
            assert infos["episode"]["r"][i] == running[i] and infos["episode"]["l"][i] == lengths[i]
            running[i], lengths[i], episodes = 0.0, 0, episodes + 1
    assert episodes > 5


def test_seeding_reproduces_and_differs():
    def trajectory(seed):
        env = SB3VecEnv(_monitored(seed=99))
        first, _ = env.reset(seed=seed)
        rng = np.random.default_rng(0)
        rows = [first] + [env.step(rng.integers(0, 2, size=2))[0] for _ in range(40)]
        env.close()
        return np.stack(rows)

    np.testing.assert_array_equal(trajectory(5), trajectory(5))
    assert not np.array_equal(trajectory(5), trajectory(6))


def test_close_closes_the_sb3_env():
    venv = _monitored(vec_env_cls=SubprocVecEnv, vec_env_kwargs={"start_method": "fork"})
    env = SB3VecEnv(venv)
    env.reset()
    env.close()
    assert env.closed and venv.closed
    assert not any(p.is_alive() for p in venv.processes)
    env.close()  # a second close does nothing


def test_protocol_and_wrapper_lookup():
    base = _monitored()
    normalize = VecNormalize(base, norm_obs=False)  # no obs_rms then: still SB3's VecNormalize
    stacked = VecFrameStack(normalize, n_stack=2)  # forwards obs_rms etc. to what it wraps
    for sb3 in (base, normalize, stacked):
        assert is_sb3_vec_env(sb3)
    for other in (gym.make("CartPole-v1"), fastppo.make_vec_env("CartPole-v1", 2), SB3VecEnv(base), object(), "x"):
        assert not is_sb3_vec_env(other)
    assert find_vec_normalize(stacked) is normalize
    assert find_vec_normalize(SB3VecEnv(stacked)) is normalize
    assert find_vec_normalize(base) is None and find_vec_normalize(SB3VecEnv(base)) is None
    with pytest.raises(TypeError, match="venv must follow Stable-Baselines3's VecEnv protocol"):
        SB3VecEnv(gym.make("CartPole-v1"))


def test_as_vector_env_adapts_sb3_envs():
    venv = _monitored(n_envs=3)
    env, env_id = as_vector_env(venv, num_envs=99)  # the SB3 env brings its own count
    assert isinstance(env, SB3VecEnv) and env.venv is venv and env.num_envs == 3 and env_id is None
    again, _ = as_vector_env(env, num_envs=1)
    assert again is env  # it reports episodes already: no RecordEpisodeStatistics on top
    for bad in (object(), 3):
        with pytest.raises(TypeError, match="a gymnasium Env or a Stable-Baselines3 VecEnv, got"):
            as_vector_env(bad, 1)
    with pytest.raises(TypeError, match="Stable-Baselines3 VecEnv, got object"):
        fastppo.PPO("MlpPolicy", object())


@pytest.mark.parametrize("env_id, make", [
    ("CartPole-v1", lambda venv: venv),
    ("Pendulum-v1", lambda venv: VecNormalize(venv)),  # Box actions, episodes end by truncation only
])
def test_ppo_learns_on_sb3_env_and_counts_its_episodes(env_id, make):
    venv = make(make_vec_env(env_id, n_envs=4, seed=0))
    model = fastppo.PPO("MlpPolicy", venv, n_steps=128, batch_size=128, seed=0).learn(1024, progress_bar=False)
    assert model.num_envs == 4 and model.num_timesteps == 1024
    monitor_returns = sorted(round(r, 6) for env_returns in venv.get_attr("episode_returns") for r in env_returns)
    assert monitor_returns and sorted(model.episode_returns) == monitor_returns


def test_ppo_solves_cartpole_on_sb3_dummy_vec_env():
    kwargs = {k: v for k, v in fastppo.presets.get("CartPole-v1").items() if k != "num_envs"}
    model = fastppo.PPO("MlpPolicy", make_vec_env("CartPole-v1", n_envs=8, seed=0), **kwargs, seed=0)
    model.learn(50_000, progress_bar=False)
    mean, _ = fastppo.evaluate_policy(model, make_vec_env("CartPole-v1", n_envs=4, seed=123), n_eval_episodes=10)
    assert mean >= 195, f"PPO on an SB3 DummyVecEnv did not learn CartPole-v1: mean return {mean}"


def _untrained():
    return fastppo.PPO("MlpPolicy", "CartPole-v1", num_envs=2, seed=0)


@pytest.mark.parametrize("make, warns", [
    (lambda: make_vec_env("CartPole-v1", n_envs=3, seed=5), False),
    (lambda: VecNormalize(DummyVecEnv([lambda: gym.make("CartPole-v1")] * 3)), True),  # counts normalised rewards
    (lambda: _lives(n_envs=3), False),  # a life lost is no episode
], ids=["Monitor", "VecNormalize-without-Monitor", "lives"])
def test_evaluate_policy_matches_sb3(make, warns):
    """Same episodes, same order, same callback calls as SB3's evaluate_policy on an identical env."""
    model = _untrained()
    seen = {"fastppo": [], "sb3": []}

    def recorder(who):
        def callback(local_vars, global_vars):
            assert isinstance(global_vars, dict)
            info = local_vars["info"]
            assert local_vars["infos"][local_vars["i"]] is info and "TimeLimit.truncated" in info
            seen[who].append((local_vars["i"], bool(local_vars["done"]), float(local_vars["reward"]),
                              len(local_vars["episode_rewards"]), local_vars["observations"].tolist(),
                              local_vars["actions"].tolist(), local_vars["rewards"].tolist(),
                              local_vars["dones"].tolist(), len(local_vars["episode_lengths"])))
        return callback

    runs = {}
    for who, evaluate in (("fastppo", fastppo.evaluate_policy), ("sb3", sb3_evaluate_policy)):
        env = make()
        env.seed(7)
        with pytest.warns(UserWarning, match="not wrapped with a ``Monitor``") if warns else contextlib.nullcontext():
            runs[who] = evaluate(model, env, 7, callback=recorder(who), return_episode_rewards=True)
    returns, lengths = runs["fastppo"]
    assert len(returns) == 7 and all(type(r) is float for r in returns) and all(type(n) is int for n in lengths)
    np.testing.assert_array_equal(returns, runs["sb3"][0])
    np.testing.assert_array_equal(lengths, runs["sb3"][1])
    assert seen["fastppo"] and seen["fastppo"] == seen["sb3"]


def test_evaluate_policy_threshold_render_warn_and_other_envs():
    model = _untrained()
    mean, std = fastppo.evaluate_policy(model, make_vec_env("CartPole-v1", n_envs=2, seed=1), 4)
    assert 0 < mean < 500 and std >= 0
    assert fastppo.evaluate_policy(model, make_vec_env("CartPole-v1", n_envs=2, seed=1), 4,
                                   reward_threshold=mean - 1) == (mean, std)
    with pytest.raises(AssertionError, match=re.escape(f"Mean reward below threshold: {mean:.2f} < {mean:.2f}")):
        fastppo.evaluate_policy(model, make_vec_env("CartPole-v1", n_envs=2, seed=1), 4, reward_threshold=mean)
    fastppo.evaluate_policy(model, _unmonitored(), 2, warn=False)  # no warning (filterwarnings=error)

    venv = make_vec_env("CartPole-v1", n_envs=2, seed=1)
    renders = []
    venv.render = lambda *args: renders.append(args)
    returns, lengths = fastppo.evaluate_policy(model, venv, 2, render=True, return_episode_rewards=True)
    assert len(renders) == max(lengths)

    # gymnasium envs: per-env info dicts for the callback too
    infos_seen = []
    returns, _ = fastppo.evaluate_policy(model, gym.make("CartPole-v1"), 2, return_episode_rewards=True, seed=0,
                                         callback=lambda loc, glob: infos_seen.append(loc["infos"]))
    assert len(returns) == 2 and all(isinstance(infos, list) and len(infos) == 1 for infos in infos_seen)
    assert sum("episode" in infos[0] for infos in infos_seen) == 2
    with pytest.raises(TypeError, match="Stable-Baselines3 VecEnv, got int"):
        fastppo.evaluate_policy(model, 3)
