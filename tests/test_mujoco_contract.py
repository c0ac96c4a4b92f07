"""The native MuJoCo envs keep every fastppo env's contract: copies, lifecycle, clear errors, seeding,
reset masks, episode statistics, snapshots, the fallback without mujoco, and training through them
(test_mujoco_envs.py checks the dynamics against gymnasium's)."""

import numpy as np
import pytest
import torch

pytest.importorskip("mujoco.batch")

import fastppo  # noqa: E402
from conftest import SaveAndStop  # noqa: E402
from fastppo import _backend  # noqa: E402
from fastppo.envs.mujoco import MujocoVecEnv  # noqa: E402


def hopper(num_envs=3, **kwargs):
    return fastppo.make_vec_env("Hopper-v5", num_envs, seed=kwargs.pop("seed", 0), **kwargs)


def actions(env, seed=0, steps=1):
    rng = np.random.default_rng(seed)
    return rng.uniform(-1, 1, (steps, env.num_envs, *env.single_action_space.shape)).astype(np.float32)


def test_make_vec_env_chooses_the_native_engine_for_the_suite():
    env = hopper()
    assert isinstance(env, MujocoVecEnv) and fastppo.backends()["mujoco"].available
    assert isinstance(fastppo.make_vec_env("Hopper-v5", 2, backend="sync"), fastppo.envs.fallback.GymnasiumVecEnv)


def test_copies_belong_to_the_caller_and_views_do_not():
    env = hopper(copy=True)
    obs, _ = env.reset()
    obs.fill(42.0)  # the caller's to change, and to keep
    step_obs, rewards = env.step(actions(env)[0])[:2]
    assert not np.shares_memory(step_obs, obs) and (obs == 42.0).all()
    assert not np.shares_memory(step_obs, env.step(actions(env)[0])[0])
    views = hopper(copy=False)
    first = views.reset()[0]
    assert np.shares_memory(first, views.step(actions(views)[0])[0])


def test_lifecycle():
    env = hopper()
    with pytest.raises(RuntimeError, match="call reset"):
        env.step(actions(env)[0])
    env.reset()
    env.close()
    env.close()  # harmless twice
    for call in (lambda: env.step(actions(env)[0]), env.reset, env.snapshot, env.get_state):
        with pytest.raises(RuntimeError, match="the env is closed"):
            call()


@pytest.mark.parametrize("bad, error, match", [
    (np.zeros((3, 2), np.float32), ValueError, r"actions must have shape \(3, 3\)"),
    (np.zeros((3, 3), np.int64), TypeError, "actions must have dtype float32 or float64"),
    (np.full((3, 3), np.nan, np.float32), ValueError, r"actions\[0\] .* is not finite"),
])
def test_bad_actions_are_refused_before_any_env_steps(bad, error, match):
    env = hopper()
    env.reset()
    before = env.get_state()
    with pytest.raises(error, match=match):
        env.step(bad)
    for a, b in zip(before, env.get_state()):
        np.testing.assert_array_equal(a, b)


@pytest.mark.parametrize("kwargs, error, match", [
    (dict(env_kwargs={"forward_weight": 1.0}), ValueError, "Hopper-v5 has no option 'forward_weight'"),
    (dict(env_kwargs={"ctrl_cost_weight": "high"}), TypeError, "ctrl_cost_weight must be a finite number"),
    (dict(env_kwargs={"healthy_z_range": (1.0, 0.5)}), ValueError, "healthy_z_range must be"),
    (dict(env_kwargs={"terminate_when_unhealthy": 1}), TypeError, "terminate_when_unhealthy must be a bool"),
    (dict(env_kwargs={"frame_skip": 0}), ValueError, "frame_skip must be an int >= 1"),
    (dict(env_kwargs={"xml_file": "nothing.xml"}), FileNotFoundError, "xml_file 'nothing.xml'"),
    (dict(env_kwargs=[1]), TypeError, "env_kwargs must be a dict"),
])
def test_bad_options_name_the_option(kwargs, error, match):
    with pytest.raises(error, match=match):
        hopper(**kwargs)


def test_backend_mujoco_refuses_other_ids_and_builtins_refuse_options():
    with pytest.raises(ValueError, match="not one of the MuJoCo envs"):
        fastppo.make_vec_env("CartPole-v1", 2, backend="mujoco")
    with pytest.raises(ValueError, match="takes no constructor options"):
        fastppo.make_vec_env("CartPole-v1", 2, env_kwargs={"x": 1})


def test_seeding_reproduces_and_distinguishes():
    a, b, c = hopper(seed=7), hopper(seed=7), hopper(seed=8)
    first = a.reset()[0]
    np.testing.assert_array_equal(first, b.reset()[0])
    assert not np.array_equal(first, c.reset()[0])
    assert len({row.tobytes() for row in first}) == 3  # each env its own stream
    np.testing.assert_array_equal(a.reset(seed=3)[0], c.reset(seed=3)[0])
    assert not np.array_equal(a.reset()[0], a.reset()[0])  # the streams go on without a seed


def test_reset_mask_resets_only_those_envs():
    env = hopper()
    env.reset()
    for a in actions(env, steps=5):
        obs = env.step(a)[0]
    mask = np.array([True, False, True])
    again, info = env.reset(options={"reset_mask": mask})
    np.testing.assert_array_equal(again[1], obs[1])
    assert not np.array_equal(again[0], obs[0])
    np.testing.assert_array_equal(info["_x_position"], mask)
    with pytest.raises(TypeError, match="reset_mask"):
        env.reset(options={"reset_mask": [True, False, True]})


def test_episode_statistics_add_up_the_rewards():
    env = hopper(num_envs=2)
    env.reset()
    returns, lengths, seen = np.zeros(2), np.zeros(2, int), 0
    for a in actions(env, steps=300):
        _, rewards, terminated, truncated, info = env.step(a)
        returns += rewards
        lengths += 1
        for i in np.flatnonzero(terminated | truncated):
            assert info["_episode"][i] and info["episode"]["l"][i] == lengths[i]
            assert info["episode"]["r"][i] == pytest.approx(returns[i], rel=1e-12)
            returns[i], lengths[i], seen = 0.0, 0, seen + 1
    assert seen >= 2


def test_restore_resumes_exactly_and_refuses_another_env():
    env = hopper()
    env.reset()
    steps = actions(env, steps=150)
    for a in steps[:50]:
        env.step(a)
    snap = env.snapshot()
    want = [env.step(a) for a in steps[50:]]
    other = hopper(seed=99)
    other.reset()
    other.restore(snap)
    for t, (w, g) in enumerate(zip(want, (other.step(a) for a in steps[50:]))):
        for x, y in zip(w[:4], g[:4]):
            np.testing.assert_array_equal(x, y, err_msg=f"step {t} after restore")
    with pytest.raises(ValueError, match="snapshot does not hold this env.s state"):
        hopper(num_envs=2).restore(snap)
    for damaged in ({**snap, "state": {**snap["state"], "extra": snap["state"]["qpos"]}},
                    {**snap, "counters": {}}, {**snap, "rngs": None}):
        with pytest.raises(ValueError, match="snapshot does not hold this env.s state"):
            other.restore(damaged)


def test_without_mujoco_batch_the_ids_fall_back_to_gymnasium(monkeypatch):
    why = "No module named 'mujoco.batch' (test)"
    real = _backend._unavailable
    monkeypatch.setattr(_backend, "_unavailable", lambda name: why if name == "mujoco" else real(name))
    assert fastppo.backends()["mujoco"] == _backend.BackendStatus(False, why)
    assert isinstance(fastppo.make_vec_env("Hopper-v5", 2), fastppo.envs.fallback.GymnasiumVecEnv)
    with pytest.raises(fastppo.BackendUnavailableError, match="backend 'mujoco' is unavailable: No module"):
        fastppo.make_vec_env("Hopper-v5", 2, backend="mujoco")


def test_training_resumes_from_a_checkpoint_exactly(tmp_path):
    """A Hopper run saved halfway and resumed ends with the uninterrupted run's weights, bit for bit: the
    checkpoint carries the simulations mid-episode."""
    kwargs = dict(n_steps=64, batch_size=64, n_epochs=2, seed=0, normalize_obs=True, normalize_reward=True)
    straight = fastppo.PPO("MlpPolicy", hopper(num_envs=2, copy=False), **kwargs).learn(4 * 128)
    fastppo.PPO("MlpPolicy", hopper(num_envs=2, copy=False), **kwargs).learn(4 * 128,
                                                                           callback=SaveAndStop(tmp_path / "half.pt"))
    resumed = fastppo.PPO.load(tmp_path / "half.pt", env=hopper(num_envs=2, copy=False, seed=5))
    resumed.learn(2 * 128, reset_num_timesteps=False)
    for (name, a), b in zip(straight.policy.state_dict().items(), resumed.policy.state_dict().values()):
        torch.testing.assert_close(a, b, rtol=0, atol=0, msg=f"{name} differs after resuming")


def test_sb3_infos_are_sb3s_own():
    """Through SB3's VecEnv API (model.get_env()), each step's infos are those SB3's DummyVecEnv gives
    for gymnasium's env: an ended env reports its last step's terms (and terminal_observation), not its
    reset's."""
    import gymnasium as gym
    from stable_baselines3.common.vec_env import DummyVecEnv

    from fastppo.envs import to_sb3_infos

    ours = hopper(num_envs=2, seed=4)
    theirs = DummyVecEnv([lambda: gym.make("Hopper-v5")] * 2)
    theirs.seed(4)
    ours.reset(), theirs.reset()
    ended = 0
    for a in actions(ours, seed=1, steps=120):
        _, _, terminated, truncated, info = ours.step(a)
        got = to_sb3_infos(info, terminated, truncated)
        want = theirs.step(a)[3]
        for g, w in zip(got, want):
            g.pop("episode", None)  # SB3 reports episodes through its Monitor wrapper, not here
            assert g.keys() == w.keys()
            for key in g:
                np.testing.assert_array_equal(g[key], w[key], err_msg=key)
        ended += int((terminated | truncated).sum())
    assert ended >= 2
