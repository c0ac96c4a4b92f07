"""Models saved by Stable-Baselines3 / sb3-contrib (fastppo/algos/sb3_zip.py): loaded without unpickling
anything, they act as SB3 acts (the same deterministic actions, clipped Box actions included, and the
same values), carry SB3's hyperparameters, continue training, and every file fastppo cannot represent
is a clear error."""

import base64
import io
import json
import pickle
import zipfile

import gymnasium as gym
import numpy as np
import pytest
import torch
from torch import nn

import fastppo
from fastppo.algos import checkpoint, sb3_zip
from fastppo.algos.observations import ObsSpec

sb3 = pytest.importorskip("stable_baselines3")
sb3_contrib = pytest.importorskip("sb3_contrib")

FAST = dict(n_steps=64, batch_size=32, n_epochs=1, seed=0)


class MultiDiscreteEnv(gym.Env):
    """A small MultiDiscrete-action task: reward for matching both action parts to the observation's signs."""

    observation_space = gym.spaces.Box(-1.0, 1.0, (3,), np.float32)
    action_space = gym.spaces.MultiDiscrete([3, 4])

    def reset(self, *, seed=None, options=None):
        super().reset(seed=seed)
        self.t = 0
        self.obs = self.np_random.uniform(-1, 1, 3).astype(np.float32)
        return self.obs, {}

    def step(self, action):
        reward = float(action[0] == (self.obs[0] > 0)) + float(action[1] == 2 * (self.obs[1] > 0))
        self.t += 1
        self.obs = self.np_random.uniform(-1, 1, 3).astype(np.float32)
        return self.obs, reward, False, self.t >= 16, {}


class WideObsEnv(gym.Env):
    """Observations of 1001 numbers: numpy summarises the printed bounds with '...'."""

    observation_space = gym.spaces.Box(-1.0, 1.0, (1001,), np.float32)
    action_space = gym.spaces.Discrete(2)

    def __init__(self, size=1001):
        self.observation_space = gym.spaces.Box(-1.0, 1.0, (size,), np.float32)


class ImageEnv(gym.Env):
    observation_space = gym.spaces.Box(0, 255, (36, 36, 3), np.uint8)
    action_space = gym.spaces.Discrete(2)


def _env(name):
    return {"MultiDiscrete": MultiDiscreteEnv, "WideObs": WideObsEnv, "Image": ImageEnv}.get(name, lambda: name)()


# case: (env, SB3 PPO keyword arguments, scale of action_net's weights so that Box actions leave the space)
CASES = {
    "cartpole": ("CartPole-v1", {}, 1.0),
    "cartpole-relu": ("CartPole-v1", dict(policy_kwargs=dict(net_arch=dict(pi=[32, 32], vf=[32, 32]),
                                                             activation_fn=nn.ReLU, ortho_init=False)), 1.0),
    "pendulum": ("Pendulum-v1", {}, 500.0),
    "pendulum-gsde": ("Pendulum-v1", dict(use_sde=True, sde_sample_freq=4), 500.0),
    "pendulum-pi-vf": ("Pendulum-v1", dict(policy_kwargs=dict(net_arch=dict(pi=[32], vf=[64]), activation_fn=nn.ReLU,
                                                              log_std_init=-0.5)), 500.0),
    "multidiscrete": ("MultiDiscrete", dict(policy_kwargs=dict(net_arch=[16])), 1.0),
    "frozenlake": ("FrozenLake-v1", {}, 1.0),
}


@pytest.fixture(scope="module")
def saved(tmp_path_factory):
    """Each case trained briefly by SB3 and saved: {case: (path, SB3 model)}."""
    out = {}
    for case, (env, kwargs, scale) in CASES.items():
        model = sb3.PPO("MlpPolicy", _env(env), **{**FAST, **kwargs})
        model.learn(128)
        with torch.no_grad():
            model.policy.action_net.weight.mul_(scale)
        path = tmp_path_factory.mktemp(case) / "model.zip"
        model.save(path)
        out[case] = (path, model)
    return out


def _observations(space, n=64):
    rng = np.random.default_rng(1)
    if isinstance(space, gym.spaces.Discrete):
        return rng.integers(space.start, space.start + space.n, n)
    return rng.uniform(-3, 3, (n, *space.shape)).astype(np.float32)


def _assert_acts_as(model, sb3_model):
    obs = _observations(sb3_model.observation_space)
    expected, _ = sb3_model.predict(obs, deterministic=True)
    actions, _ = model.predict(obs, deterministic=True)
    np.testing.assert_allclose(actions, expected, rtol=1e-6, atol=1e-6)
    assert actions.shape == expected.shape
    spec = ObsSpec(model.observation_space)
    x = torch.from_numpy(spec.rows(obs, np.empty((len(obs), *spec.shape), spec.dtype)))
    with torch.no_grad():
        values = model.policy.value(x).numpy()
        expected_values = sb3_model.policy.predict_values(sb3_model.policy.obs_to_tensor(obs)[0])[:, 0].numpy()
    np.testing.assert_allclose(values, expected_values, rtol=1e-5, atol=1e-6)
    return actions


def _hidden_sizes(net):
    return [m.out_features for m in net if isinstance(m, nn.Linear)][:-1]


@pytest.mark.parametrize("case", list(CASES))
def test_acts_as_sb3(case, saved):
    path, sb3_model = saved[case]
    env, kwargs, _ = CASES[case]
    for model in (fastppo.PPO.load(path), fastppo.PPO.load(path, env=_env(env)), fastppo.load(path)):
        assert type(model) is fastppo.PPO
        actions = _assert_acts_as(model, sb3_model)
        assert model.observation_space == sb3_model.observation_space
        assert model.action_space == sb3_model.action_space
        assert model.num_timesteps == sb3_model.num_timesteps == 128
        for name in ("n_steps", "batch_size", "n_epochs", "gamma", "gae_lambda", "ent_coef", "vf_coef",
                     "max_grad_norm", "use_sde", "sde_sample_freq", "seed"):
            assert getattr(model.config, name) == getattr(sb3_model, name), name
        arch = sb3_model.policy.net_arch
        arch = arch if isinstance(arch, dict) else dict(pi=arch, vf=arch)
        assert _hidden_sizes(model.policy.actor) == arch["pi"] and _hidden_sizes(model.policy.critic) == arch["vf"]
        assert model.config.clip_range == 0.2 and model.config.learning_rate == 3e-4
    if isinstance(sb3_model.action_space, gym.spaces.Box):  # SB3 clips to the space, and so does fastppo
        high = sb3_model.action_space.high
        assert np.any(np.abs(actions) == high) and np.any(np.abs(actions) < high)
    assert isinstance(model.policy.actor[1], nn.ReLU if "relu" in case or "pi-vf" in case else nn.Tanh)


def test_box_bounds_come_back_exactly(saved):
    ckpt = checkpoint.read(saved["cartpole"][0])
    space = gym.make("CartPole-v1").observation_space
    assert ckpt["observation_space"].dtype == space.dtype
    np.testing.assert_array_equal(ckpt["observation_space"].low, space.low)
    np.testing.assert_array_equal(ckpt["observation_space"].high, space.high)
    assert ckpt["algo"] == "ppo" and ckpt["algo_state"] is None


def test_policy_kwargs_in_sb3_form(saved):
    kwargs = fastppo.PPO.load(saved["pendulum-pi-vf"][0]).config.policy_kwargs
    assert kwargs == dict(net_arch=dict(pi=[32], vf=[64]), activation_fn="relu", log_std_init=-0.5)


def test_loaded_model_continues_training(saved):
    for case in ("cartpole", "pendulum"):
        path, _ = saved[case]
        model = fastppo.PPO.load(path, env=CASES[case][0])
        before = {k: v.clone() for k, v in model.policy.state_dict().items()}
        model.learn(128, progress_bar=False)
        assert any(not torch.equal(before[k], v) for k, v in model.policy.state_dict().items())
    with pytest.raises(ValueError, match="loaded without one.*set_env"):
        fastppo.PPO.load(path).learn(64, progress_bar=False)


def test_trpo_zip_loads_as_trpo(tmp_path):
    trpo = sb3_contrib.TRPO("MlpPolicy", "CartPole-v1", n_steps=64, batch_size=32, target_kl=0.02, cg_max_steps=12,
                            line_search_shrinking_factor=0.7, n_critic_updates=5, learning_rate=2e-3, seed=0)
    trpo.learn(128)
    trpo.save(tmp_path / "trpo.zip")
    model = fastppo.load(tmp_path / "trpo.zip")
    assert type(model) is fastppo.TRPO and type(fastppo.TRPO.load(tmp_path / "trpo.zip")) is fastppo.TRPO
    _assert_acts_as(model, trpo)
    for name, value in dict(target_kl=0.02, cg_max_steps=12, line_search_shrinking_factor=0.7, n_critic_updates=5,
                            cg_damping=0.1, line_search_max_iter=10, learning_rate=2e-3, batch_size=32).items():
        assert getattr(model.config, name) == value, name
    with pytest.raises(ValueError, match="checkpoint holds a 'trpo' model"):
        fastppo.PPO.load(tmp_path / "trpo.zip")
    model = fastppo.TRPO.load(tmp_path / "trpo.zip", env="CartPole-v1")
    before = [p.clone() for p in model.policy.parameters()]
    model.learn(128, progress_bar=False)
    assert any(not torch.equal(a, b) for a, b in zip(before, model.policy.parameters()))


def test_schedules(tmp_path):
    """A schedule object's readable fields give its value; a function has none: fastppo's default."""
    from stable_baselines3.common.utils import LinearSchedule

    model = sb3.PPO("MlpPolicy", "CartPole-v1", learning_rate=LinearSchedule(1e-3, 0.0, 1.0), clip_range=0.1,
                    clip_range_vf=0.3, target_kl=0.05, **FAST)
    model.save(tmp_path / "a.zip")
    config = fastppo.PPO.load(tmp_path / "a.zip").config
    assert (config.learning_rate, config.clip_range, config.clip_range_vf, config.target_kl) == \
        ("lin_0.001", 0.1, 0.3, 0.05)
    model = sb3.PPO("MlpPolicy", "CartPole-v1", learning_rate=lambda p: 1e-3 * p, clip_range=lambda p: 0.1,
                    **FAST)
    model.save(tmp_path / "b.zip")
    config = fastppo.PPO.load(tmp_path / "b.zip").config
    assert (config.learning_rate, config.clip_range, config.clip_range_vf) == (3e-4, 0.2, None)


def _rewrite(src, dst, **members):
    """A copy of the zip at ``src`` with some members replaced (bytes) or removed (None)."""
    with zipfile.ZipFile(src) as old, zipfile.ZipFile(dst, "w") as new:
        for name in old.namelist():
            data = members.get(name.replace(".", "_"), old.read(name))
            if data is not None:
                new.writestr(name, data)
    return dst


class _Evil:
    """Unpickling it creates ``path`` (as any code could run)."""

    def __init__(self, path):
        self.path = str(path)

    def __reduce__(self):
        return open, (self.path, "w")


def test_serialized_payloads_are_never_unpickled(tmp_path, saved):
    path, sb3_model = saved["pendulum"]
    marker = tmp_path / "ran"
    payload = base64.b64encode(pickle.dumps(_Evil(marker))).decode()
    pickle.loads(base64.b64decode(payload)).close()  # the payload is live: unpickling it creates the marker
    assert marker.exists()
    marker.unlink()
    data = json.loads(zipfile.ZipFile(path).read("data"))
    evil = {k: {**v, ":serialized:": payload} if isinstance(v, dict) and ":serialized:" in v else v
            for k, v in data.items()}
    assert sum(isinstance(v, dict) and v.get(":serialized:") == payload for v in evil.values()) >= 5
    evil_zip = _rewrite(path, tmp_path / "evil.zip", data=json.dumps(evil).encode())
    for load in (fastppo.load, fastppo.PPO.load):
        _assert_acts_as(load(evil_zip), sb3_model)
    weights = io.BytesIO()
    torch.save({"log_std": _Evil(marker)}, weights)
    evil_weights = _rewrite(path, tmp_path / "evil_weights.zip", policy_pth=weights.getvalue())
    for load in (fastppo.load, fastppo.PPO.load):
        with pytest.raises(ValueError, match="policy.pth was refused: it holds objects that only a pickle can rebuild"):
            load(evil_weights, trust_pickle=True)
    assert not marker.exists()


def test_is_sb3_zip(tmp_path, saved):
    assert sb3_zip.is_sb3_zip(saved["cartpole"][0])
    fastppo.PPO("MlpPolicy", "CartPole-v1", n_steps=64).save(tmp_path / "own.zip")
    assert not sb3_zip.is_sb3_zip(tmp_path / "own.zip") and zipfile.is_zipfile(tmp_path / "own.zip")
    assert not sb3_zip.is_sb3_zip(tmp_path / "missing.zip")


def _sb3_zip(tmp_path, name, algo=None, env="CartPole-v1", policy="MlpPolicy", **kwargs):
    model = (algo or sb3.PPO)(policy, _env(env), **kwargs)
    model.save(tmp_path / name)
    return tmp_path / name


def test_damaged_and_foreign_zips_are_named(tmp_path, saved):
    path = saved["cartpole"][0]
    data = json.loads(zipfile.ZipFile(path).read("data"))
    cases = {
        "is not a readable Stable-Baselines3 model .JSONDecodeError": _rewrite(path, tmp_path / "a.zip", data=b"{x"),
        "b.zip' is not a readable Stable-Baselines3 model":
            _rewrite(path, tmp_path / "b.zip", policy_pth=b"garbage"),
        "is not a readable fastppo checkpoint": _rewrite(path, tmp_path / "c.zip", policy_pth=None),
        "cannot be loaded as a fastppo model: missing 'observation_space'": _rewrite(
            path, tmp_path / "d.zip", data=json.dumps({k: v for k, v in data.items() if k != "observation_space"})),
        "cannot be loaded as a fastppo model: its policy_kwargs have features_extractor_class": _rewrite(
            path, tmp_path / "e.zip", data=json.dumps({**data, "policy_kwargs": {
                ":type:": "<class 'dict'>", ":serialized:": "", "features_extractor_class": "<class 'x.MyExtractor'>"}})),
        "its policy is stable_baselines3.common.policies.ActorCriticCnnPolicy; fastppo reads SB3's MlpPolicy":
            _sb3_zip(tmp_path, "cnn.zip", env="Image", policy="CnnPolicy"),
        "is an image .a 3-d uint8 Box., which SB3 divides by 255": _sb3_zip(tmp_path, "image.zip", env="Image"),
        "neither an SB3 PPO model nor an sb3-contrib TRPO model": _sb3_zip(tmp_path, "a2c.zip", algo=sb3.A2C),
        r"its activation_fn is <class 'mymodule.Swish'>; fastppo's MlpPolicy takes .*relu.*tanh": _rewrite(
            path, tmp_path / "h.zip", data=json.dumps({**data, "policy_kwargs": {
                ":type:": "<class 'dict'>", ":serialized:": "", "activation_fn": "<class 'mymodule.Swish'>"}})),
        "its policy_net has no hidden layer": _sb3_zip(tmp_path, "linear.zip", policy_kwargs=dict(net_arch=[])),
        r"its log_std has shape \(64, 1\), fastppo's policy for Box.* needs \(1,\)": _rewrite(
            saved["pendulum-gsde"][0], tmp_path / "f.zip",
            data=json.dumps({**json.loads(zipfile.ZipFile(saved["pendulum-gsde"][0]).read("data")), "use_sde": False})),
    }
    weights = torch.load(io.BytesIO(zipfile.ZipFile(path).read("policy.pth")), weights_only=True)
    buffer = io.BytesIO()
    torch.save({**weights, "features_extractor.linear.weight": torch.zeros(4, 4)}, buffer)
    cases["parameters fastppo's MlpPolicy does not .features_extractor.linear.weight"] = _rewrite(
        path, tmp_path / "g.zip", policy_pth=buffer.getvalue())
    for message, bad in cases.items():
        for load in (fastppo.load, fastppo.PPO.load):
            with pytest.raises(ValueError, match=message):
                load(bad)


def test_summarised_bounds_need_env(tmp_path):
    path = _sb3_zip(tmp_path, "wide.zip", env="WideObs", **FAST)
    assert "..." in json.loads(zipfile.ZipFile(path).read("data"))["observation_space"]["low"]
    with pytest.raises(ValueError, match="does not record observation_space in full .* pass env= to load"):
        fastppo.PPO.load(path)
    _assert_acts_as(fastppo.PPO.load(path, env=WideObsEnv()), sb3.PPO.load(path))
    with pytest.raises(ValueError, match="weights do not fit this policy"):
        fastppo.PPO.load(path, env=WideObsEnv(1002))
