"""The collectors: NativeCollector (the rollout in one native call) against StepCollector (the Python
step loop, its spec), and where each is chosen."""

import gymnasium as gym
import numpy as np
import pytest
import torch

import fastppo
from fastppo import PPO
from fastppo.algos.callbacks import CallbackList
from fastppo.algos.rollout import NativeCollector, StepCollector

pytestmark = pytest.mark.skipif(not fastppo.backends()["cpp"].available, reason="needs the native extension")


class _OnStep(fastppo.Callback):
    def __init__(self):
        self.steps = 0

    def on_step(self):
        self.steps += 1
        return True


@pytest.mark.parametrize("env, normalize", [("CartPole-v1", False), ("Pendulum-v1", False),
                                            ("MountainCarContinuous-v0", False), ("Pendulum-v1", True),
                                            ("Acrobot-v1", True)])
def test_native_rollout_matches_the_step_loop(env, normalize):
    """NativeCollector (the whole rollout in one native call) against StepCollector, the per-step Python
    loop it replaces: the same rollout bit for bit, including the final values of truncated episodes
    (Pendulum's time limit of 200 falls inside the 2 x 150 steps). With observation and reward
    normalisation, the native running statistics sum the batch in order where numpy may pair terms:
    the two agree to float64 rounding, so float32 rows may differ in the last bit (rtol 1e-6) and the
    float64 statistics to 1e-12 relative; actions are sampled from the same stream either way."""
    models = [PPO("MlpPolicy", env, n_steps=150, num_envs=3, batch_size=50, seed=11, normalize_obs=normalize,
                  normalize_reward=normalize) for _ in range(2)]
    native, stepped = models
    callback = _OnStep()
    callback.init(stepped)
    assert not fastppo.Callback().per_step() and callback.per_step()
    assert CallbackList([fastppo.Callback(), callback]).per_step()
    for model in models:
        model._reset_envs()
    assert isinstance(native._collector(None), NativeCollector)
    assert isinstance(stepped._collector(callback), StepCollector)
    for _ in range(2):
        assert native._collect(None) and stepped._collect(callback)
        for name, a in native.rollout.flat().items():
            if normalize and a.is_floating_point():
                torch.testing.assert_close(a, stepped.rollout.flat()[name], rtol=1e-6, atol=1e-6, msg=name)
            else:
                assert torch.equal(a, stepped.rollout.flat()[name]), name
        assert native.num_timesteps == stepped.num_timesteps
        assert list(native.episode_returns) == list(stepped.episode_returns)
        assert list(native.episode_lengths) == list(stepped.episode_lengths)
        if normalize:
            torch.testing.assert_close(native._last_obs, stepped._last_obs, rtol=1e-6, atol=1e-6)
            for a, b in [(native.obs_normalizer.rms, stepped.obs_normalizer.rms),
                         (native.reward_scaler.rms, stepped.reward_scaler.rms)]:
                assert a.count == b.count
                np.testing.assert_allclose(a.mean, b.mean, rtol=1e-12)
                np.testing.assert_allclose(a.var, b.var, rtol=1e-12)
            np.testing.assert_allclose(native.reward_scaler.returns, stepped.reward_scaler.returns, rtol=1e-12)
        else:
            assert torch.equal(native._last_obs, stepped._last_obs)
    assert callback.steps == 300
    if normalize:  # the statistics moved: normalisation really ran on both paths
        assert native.obs_normalizer.rms.count == 300 * 3 + 3 + 1e-4  # every step's obs and the reset's
        assert not np.allclose(native.obs_normalizer.rms.mean, 0.0)
    if env == "Pendulum-v1":
        assert native.rollout.truncated.any() and (native.rollout.final_values != 0).any()


def _mujoco_models(env_id, normalize, max_episode_steps, env_kwargs=None):
    pytest.importorskip("mujoco.batch")
    models = [PPO("MlpPolicy", fastppo.make_vec_env(env_id, 3, env_kwargs=env_kwargs), n_steps=40, batch_size=40,
                  seed=5, normalize_obs=normalize, normalize_reward=normalize) for _ in range(2)]
    for model in models:
        model.env.max_episode_steps = max_episode_steps  # episodes end both ways within the rollouts
        model._reset_envs()
    return models


@pytest.mark.parametrize("env_id, normalize", [("Hopper-v5", True), ("Hopper-v5", False),
                                               ("HalfCheetah-v5", True)])
def test_native_rollout_of_a_mujoco_env_matches_the_step_loop(env_id, normalize):
    """A MuJoCo env (its step in Python, fastppo.algos.rollout.EnvStepper) in the native rollout against
    the step loop: the same rollout bit for bit, with multi-dimensional Box actions (Hopper 3, HalfCheetah
    6) clipped per dimension for the env, terminations (Hopper falls) and truncations (a time limit of 12
    steps) with their final values, the episodes' statistics and the normalisers' state."""
    native, stepped = _mujoco_models(env_id, normalize, 12, env_kwargs={"reset_noise_scale": 0.1})
    callback = _OnStep()
    callback.init(stepped)
    assert isinstance(native._collector(None), NativeCollector)
    assert isinstance(stepped._collector(callback), StepCollector)
    for _ in range(2):
        assert native._collect(None) and stepped._collect(callback)
        for name, a in native.rollout.flat().items():
            assert torch.equal(a, stepped.rollout.flat()[name]), name
        assert native.num_timesteps == stepped.num_timesteps
        assert list(native.episode_returns) == list(stepped.episode_returns)
        assert list(native.episode_lengths) == list(stepped.episode_lengths)
        assert torch.equal(native._last_obs, stepped._last_obs)
        if normalize:
            for a, b in [(native.obs_normalizer.rms, stepped.obs_normalizer.rms),
                         (native.reward_scaler.rms, stepped.reward_scaler.rms)]:
                assert a.count == b.count
                np.testing.assert_allclose(a.mean, b.mean, rtol=1e-12)
                np.testing.assert_allclose(a.var, b.var, rtol=1e-12)
    r, low = native.rollout, torch.from_numpy(native.action_spec.low)
    assert r.actions.shape[-1] > 1 and (r.actions < low).any()  # clipping mattered
    assert r.truncated.any() and (r.final_values != 0).any()
    assert r.terminated.any() == (env_id == "Hopper-v5")


@pytest.mark.parametrize("what", ["reward", "observation", "final observation"])
def test_native_rollout_of_a_mujoco_env_raises_as_the_step_loop(what, monkeypatch):
    """A non-finite reward or observation from a MuJoCo env raises the step loop's ValueError, word for
    word, through the native rollout; so does an exception of the env's own step."""
    native, stepped = _mujoco_models("HalfCheetah-v5", False, 3)
    errors = []
    for model, callback in ((native, None), (stepped, _OnStep())):
        env, step = model.env, model.env._step

        def bad_step(actions, own, env=env, step=step):
            obs, reward, terminated, truncated, info = step(actions, own)
            if what == "reward" and env._elapsed[1] == 2:
                reward[1] = np.inf
            elif what == "observation" and env._elapsed[1] == 2:
                obs[1, 2] = np.nan
            elif what == "final observation" and truncated[1]:  # the third step: the time limit
                info["final_obs"][1, 0] = np.nan
            return obs, reward, terminated, truncated, info

        monkeypatch.setattr(env, "_step", bad_step)
        if callback is not None:
            callback.init(model)
        with pytest.raises(ValueError) as error:
            model._collect(callback)
        errors.append(str(error.value))
    assert errors[0] == errors[1] and "non-finite " + what.split()[-1] in errors[0], errors

    def broken(actions, own):
        raise KeyError("from the env")

    monkeypatch.setattr(native.env, "_step", broken)
    with pytest.raises(KeyError, match="from the env"):
        native._collect(None)


def test_native_rollout_outputs_after_the_last_step_and_its_checks(monkeypatch):
    """_core.collect's last_obs (the policy's input after the last step: what the trainer computes from the
    envs' observations) and last_values (V of it), and its checks of the normaliser dicts and outputs."""
    from fastppo._backend import _core

    calls = []
    collect = _core.collect

    def spy(*args):
        calls.append(args)
        return collect(*args)

    monkeypatch.setattr(_core, "collect", spy)
    model = PPO("MlpPolicy", "Pendulum-v1", n_steps=20, num_envs=3, batch_size=20, seed=3, normalize_obs=True,
                normalize_reward=True)
    model._reset_envs()
    assert model._collect(None) and len(calls) == 1
    args = list(calls[0])
    last_obs, last_values = args[9], args[10]
    assert torch.equal(torch.from_numpy(last_obs), model._last_obs)
    with torch.inference_mode():
        values = model.policy.value(model._last_obs).reshape(-1)
    torch.testing.assert_close(torch.from_numpy(last_values), values, rtol=1e-5, atol=1e-6)

    def call(**change):
        a = dict(zip(["obs_norm", "reward_norm"], args[11:]))
        a.update(change)
        return collect(*args[:11], **a)

    obs_norm, reward_norm = args[11], args[12]
    with pytest.raises(ValueError, match="obs_norm is missing the key 'eps'"):
        call(obs_norm={k: v for k, v in obs_norm.items() if k != "eps"})
    with pytest.raises(ValueError, match="reward_norm has an unknown key 'extra'"):
        call(reward_norm={**reward_norm, "extra": 1.0})
    with pytest.raises(TypeError, match=r"obs_norm\['var'\] must have dtype float64"):
        call(obs_norm={**obs_norm, "var": obs_norm["var"].astype(np.float32)})
    with pytest.raises(ValueError, match=r"reward_norm\['count'\] must be a writeable CPU array of shape \(1,\)"):
        call(reward_norm={**reward_norm, "count": np.ones(2)})
    with pytest.raises(TypeError, match=r"obs_norm\['clip'\] must be a number"):
        call(obs_norm={**obs_norm, "clip": "10"})
    args[10] = last_obs.reshape(-1)[:3]
    with pytest.raises(ValueError, match="last_values must not overlap last_obs"):
        call()


def test_native_rollout_not_used_where_python_must_run():
    model = PPO("MlpPolicy", "CartPole-v1", n_steps=16, batch_size=16)
    assert isinstance(model._collector(None), NativeCollector)
    assert isinstance(model._collector(_OnStep()), StepCollector)
    model = PPO("MlpPolicy", gym.make("CartPole-v1"), n_steps=16, batch_size=16)  # a gymnasium env
    assert isinstance(model._collector(None), StepCollector)


@pytest.mark.parametrize("algo", [fastppo.PPO, fastppo.TRPO])
def test_the_native_actor_is_built_once(algo, monkeypatch):
    """NativeActor builds its PolicyAct once per model and refreshes it before each rollout: the updates
    (PPO's flat Adam, TRPO's line search) write the parameters in place, never re-seat them."""
    model = algo("MlpPolicy", "CartPole-v1", n_steps=32, num_envs=2, batch_size=32, seed=0)
    model.learn(64, progress_bar=False)
    actor = model._actor
    native = actor.native
    built = []
    monkeypatch.setattr(model.policy, "native_act", lambda: built.append(1))
    model.learn(128, progress_bar=False)
    assert model._actor is actor and actor.native is native and not built
