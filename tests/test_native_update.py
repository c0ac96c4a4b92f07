"""The native updates against their spec, the torch paths: PPO's (fastppo._core.PpoUpdate against
PPO._update with backend="torch") and TRPO's critic regression (fastppo._core.CriticFit against
TRPO._fit_critic). From the same rollout and the same parameters, one whole update on each must land on
the same parameters, Adam moments and logged statistics."""

import gymnasium as gym
import numpy as np
import pytest
import torch

import fastppo
from fastppo import PPO, TRPO
from fastppo.algos.callbacks import CallbackList

pytestmark = pytest.mark.skipif(not fastppo.backends()["cpp"].available, reason="needs the native extension")


class _MultiDiscreteEnv(gym.Env):
    """A random walk with a MultiDiscrete action, rewarded for matching the observation's sign pattern."""

    observation_space = gym.spaces.Box(-1, 1, (3,), np.float32)
    action_space = gym.spaces.MultiDiscrete([2, 3])

    def reset(self, *, seed=None, options=None):
        super().reset(seed=seed)
        self.t = 0
        return self.np_random.uniform(-1, 1, 3).astype(np.float32), {}

    def step(self, action):
        self.t += 1
        obs = self.np_random.uniform(-1, 1, 3).astype(np.float32)
        reward = float(action[0] == (obs[0] > 0)) + float(action[1] == 1)
        return obs, reward, False, self.t >= 20, {}


def _twins(env, algo=PPO, **kwargs):
    """Two identical models that have collected the same rollout: the first updates natively, the
    second on the torch path."""
    models = []
    for _ in range(2):
        if algo is PPO:
            kwargs.setdefault("n_epochs", 3)
        model = algo("MlpPolicy", env() if callable(env) else env, n_steps=64, num_envs=1 if callable(env) else 4,
                     batch_size=32, seed=5, **kwargs)
        model._reset_envs()
        model._collect(None)
        r = model.rollout
        fastppo.gae(r.rewards, r.values, r.next_values, r.terminated, r.truncated, gamma=model.gamma,
                    lam=model.gae_lambda, out=(r.advantages, r.returns))
        models.append(model)
    native, reference = models
    reference.backend = "torch"
    if algo is PPO:
        assert native._native_update(native.rollout.flat()) is not None
        assert reference._native_update(reference.rollout.flat()) is None
    return native, reference


def _assert_same_update(native, reference, progress=1.0):
    for _ in range(2):  # twice: the second update starts from Adam moments the first one left
        got, want = native._update(progress), reference._update(progress)
        assert got.keys() == want.keys()
        assert got["n_updates"] == want["n_updates"]
        for key in got:
            # the statistics are float32 means summed in another order: a few ulps of their size
            np.testing.assert_allclose(got[key], want[key], rtol=1e-4, atol=1e-6, err_msg=key)
        # float32 products summed in another order than torch's kernels, through Adam, which moves each
        # parameter by ~lr * m / sqrt(v) (sensitive to rounding where a gradient is tiny): 1% of lr
        lr = native.optimizer.lr
        np.testing.assert_allclose(native._flat.param.detach(), reference._flat.param.detach(), rtol=0, atol=0.01 * lr)
        for name in ("exp_avg", "exp_avg_sq"):
            a, b = getattr(native.optimizer, name), getattr(reference.optimizer, name)
            # gradients summed over the minibatch in float32 in another order: errors scale with the
            # largest terms, so the bound is relative to the largest moment
            assert float((a - b).abs().max()) <= 1e-4 * float(b.abs().max()), name
        assert native.optimizer.steps == reference.optimizer.steps > 0


OPTIONS = {
    "defaults": {},
    "value-clip+entropy": {"clip_range_vf": 0.2, "ent_coef": 0.01},
    "no-adv-norm+no-grad-clip": {"normalize_advantage": False, "max_grad_norm": None},
    "kl-variant": {"variant": "kl", "kl_coef": 0.5},
    "relu+tight-clip": {"policy_kwargs": {"activation": "relu", "net_arch": [32, 16]}, "clip_range": 0.01,
                        "learning_rate": 3e-3},
}
ENVS = {"discrete": "CartPole-v1", "box": "Pendulum-v1", "multidiscrete": _MultiDiscreteEnv}


@pytest.mark.parametrize("option", OPTIONS)
@pytest.mark.parametrize("env", ENVS)
def test_native_update_matches_torch(env, option):
    _assert_same_update(*_twins(ENVS[env], **OPTIONS[option]))


def test_target_kl_stops_at_the_same_minibatch():
    native, reference = _twins("CartPole-v1", target_kl=1e-4, learning_rate=1e-2)
    got, want = native._update(1.0), reference._update(1.0)
    assert 0 < got["n_updates"] == want["n_updates"] < 3 * 256 // 32  # stopped early, at the same step
    np.testing.assert_allclose(native._flat.param.detach(), reference._flat.param.detach(), rtol=0, atol=1e-4)


def test_clamped_log_std_gets_no_gradient():
    native, reference = _twins("Pendulum-v1", ent_coef=0.1)
    for model in (native, reference):
        with torch.no_grad():
            model.policy.log_std.fill_(-25.0)  # below DiagGaussian's clamp at -20
    _assert_same_update(native, reference)
    assert native.policy.log_std.item() == -25.0  # zero gradient, zero Adam moments: not moved


@pytest.mark.parametrize("env", ["CartPole-v1", "Pendulum-v1"])
def test_native_critic_fit_matches_torch(env):
    native, reference = _twins(env, TRPO, n_critic_updates=3, learning_rate=1e-3)
    assert native._native_critic_fit(native.rollout.flat()) is not None
    assert reference._native_critic_fit(reference.rollout.flat()) is None
    for _ in range(2):
        got = native._fit_critic(native.rollout.flat(), 1e-3)
        want = reference._fit_critic(reference.rollout.flat(), 1e-3)
        np.testing.assert_allclose(got, want, rtol=1e-5)
        a, b = native._critic_flat, reference._critic_flat
        np.testing.assert_allclose(a.param.detach(), b.param.detach(), rtol=0, atol=1e-5)  # 1% of lr, as above
        adam_a, adam_b = native.critic_optimizer, reference.critic_optimizer
        assert adam_a.steps == adam_b.steps > 0
        for name in ("exp_avg", "exp_avg_sq"):
            x, y = getattr(adam_a, name), getattr(adam_b, name)
            assert float((x - y).abs().max()) <= 1e-4 * float(y.abs().max()), name


def _core_args(model):
    """The keyword arguments _native_update passes to fastppo._core.PpoUpdate, for the checks below."""
    params, grads = model.policy.native_arrays(), model.policy.native_arrays(grads=True)
    adam = model.optimizer
    data = {k: v.numpy() for k, v in model.rollout.flat().items()}
    return dict(actor=params["actor"], actor_grads=grads["actor"], critic=params["critic"],
                critic_grads=grads["critic"], activation="tanh", kind="categorical", nvec=[2], log_std=None,
                log_std_grad=None, flat_param=model._flat.param.detach().numpy(), flat_grad=model._flat.grad.numpy(),
                exp_avg=adam.exp_avg.numpy(), exp_avg_sq=adam.exp_avg_sq.numpy(), obs=data["obs"],
                actions=data["actions"], old_log_probs=data["log_probs"], advantages=data["advantages"],
                old_values=data["values"], returns=data["returns"], old_dist_params=None)


def test_bad_arguments_are_rejected():
    from fastppo._backend import _core

    native, _ = _twins("CartPole-v1")
    args = _core_args(native)
    update = _core.PpoUpdate(**args)
    config = _core.PpoUpdateConfig()
    with pytest.raises(ValueError, match=r"order must be a CPU int64 array of shape \(256,\)"):
        update.epoch(np.arange(10), config, 0)
    with pytest.raises(ValueError, match=r"order\[3\] = 256 is outside \[0, 256\)"):
        update.epoch(np.array([0, 1, 2, 256] + list(range(4, 256))), config, 0)
    config.batch_size = 0
    with pytest.raises(ValueError, match="batch_size must be >= 1"):
        update.epoch(np.arange(256), config, 0)
    config.batch_size, config.kl_coef = 32, 1.0
    with pytest.raises(ValueError, match="kl_coef needs old_dist_params"):
        update.epoch(np.arange(256), config, 0)

    bad_actions = args["actions"].copy()
    bad_actions[7] = 2
    with pytest.raises(ValueError, match=r"actions\[7\] = 2 is outside \[0, 2\)"):
        _core.PpoUpdate(**{**args, "actions": bad_actions})
    # a gradient that is not a view of flat_grad: clipping and Adam would never see it
    with pytest.raises(ValueError, match="views of flat_param and flat_grad"):
        _core.PpoUpdate(**{**args, "critic_grads": [g.copy() for g in args["critic_grads"]]})
    with pytest.raises(ValueError, match="exp_avg must have shape"):
        _core.PpoUpdate(**{**args, "exp_avg": args["exp_avg"][:-1]})
    with pytest.raises(TypeError, match="returns must have dtype float32, got float64"):
        _core.PpoUpdate(**{**args, "returns": args["returns"].astype(np.float64)})
    with pytest.raises(ValueError, match="activation must be 'tanh' or 'relu'"):
        _core.PpoUpdate(**{**args, "activation": "gelu"})


def test_torch_path_where_native_does_not_apply():
    model = PPO("MlpPolicy", "CartPole-v1", n_steps=32, batch_size=32, policy_kwargs={"activation": "gelu"})
    assert model._native_update(model.rollout.flat()) is None
    model = PPO("MlpPolicy", "CartPole-v1", n_steps=32, batch_size=32, backend="torch")
    assert model._native_update(model.rollout.flat()) is None


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
    """_core.collect (the whole rollout in one native call) against the per-step Python loop it
    replaces: the same rollout bit for bit, including the final values of truncated episodes
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
    assert native._native_env_ok(None) and not stepped._native_env_ok(callback)
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


def test_native_rollout_outputs_after_the_last_step_and_its_checks(monkeypatch):
    """_core.collect's last_obs (the policy's input after the last step: what the trainer computes from the
    envs' observations) and last_values (V of it), and its checks of the normaliser dicts and outputs."""
    import fastppo.algos.base as base

    calls = []
    collect = base._core.collect

    def spy(*args):
        calls.append(args)
        return collect(*args)

    monkeypatch.setattr(base._core, "collect", spy)
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
    assert model._native_env_ok(None) and not model._native_env_ok(_OnStep())
    model = PPO("MlpPolicy", gym.make("CartPole-v1"), n_steps=16, batch_size=16)  # a gymnasium env
    assert not model._native_env_ok(None)
