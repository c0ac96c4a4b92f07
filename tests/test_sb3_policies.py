"""Policies in Stable-Baselines3's terms: "MlpPolicy"'s policy_kwargs (net_arch as a list or dict, activation_fn,
ortho_init, log_std_init, features extractors, optimizer_class / optimizer_kwargs) build what SB3's
ActorCriticPolicy builds, the native path runs exactly where it implements the network (and equals the
torch path there), SB3 ActorCriticPolicy subclasses train as policies, and model.policy's inference methods
(predict, predict_values, evaluate_actions, get_distribution) give SB3's shapes and, for the same weights,
SB3's numbers."""

import gymnasium as gym
import numpy as np
import pytest
import torch
from torch import nn

import fastppo
from fastppo import PPO, TRPO
from fastppo.algos.optim import FlatAdam, TorchOptimizer
from fastppo.algos.policies import ActorCritic, orthogonal_
from fastppo.algos.ppo import NativePpoUpdater, TorchPpoUpdater
from fastppo.algos.sb3_policy import SB3Policy

sb3_policies = pytest.importorskip("stable_baselines3.common.policies")
sb3_layers = pytest.importorskip("stable_baselines3.common.torch_layers")
needs_native = pytest.mark.skipif(not fastppo.backends()["cpp"].available, reason="needs the native extension")

OBS = gym.spaces.Box(-1, 1, (4,), np.float32)
ACTIONS = {
    "discrete": gym.spaces.Discrete(3),
    "multidiscrete": gym.spaces.MultiDiscrete([2, 4]),
    "box": gym.spaces.Box(-1, 1, (2,), np.float32),
}


class FlattenLike(nn.Module):
    """SB3's FlattenExtractor, written as a user would: the features extractor protocol."""

    def __init__(self, observation_space):
        super().__init__()
        self.features_dim = gym.spaces.flatdim(observation_space)

    def forward(self, obs):
        return obs.flatten(1)


class Tower(nn.Module):
    """A features extractor with parameters and a keyword argument."""

    def __init__(self, observation_space, features_dim=8):
        super().__init__()
        self.features_dim = features_dim
        self.net = nn.Sequential(nn.Flatten(), nn.Linear(gym.spaces.flatdim(observation_space), features_dim),
                                 nn.ReLU())

    def forward(self, obs):
        return self.net(obs)


FORMS = {
    "default": {},
    "list": dict(net_arch=[32]),
    "dict": dict(net_arch=dict(pi=[32], vf=[64, 64])),
    "linear-actor": dict(net_arch=dict(pi=[], vf=[16])),
    "missing-vf": dict(net_arch=dict(pi=[8])),
    "linear-both": dict(net_arch=[]),
    "relu-class": dict(activation_fn=nn.ReLU, net_arch=[16, 16]),
    "relu-name": dict(activation_fn="relu", net_arch=[16, 16]),
    "elu": dict(activation_fn=nn.ELU),
    "no-ortho": dict(ortho_init=False, log_std_init=-1.0),
    "flatten-extractor": dict(features_extractor_class=FlattenLike, net_arch=[16]),
    "shared-tower": dict(features_extractor_class=Tower, features_extractor_kwargs=dict(features_dim=6)),
    "separate-towers": dict(features_extractor_class=Tower, share_features_extractor=False, net_arch=[8]),
}


def _sb3_kwargs(kwargs):
    """The same options as SB3 takes them: activation_fn a class."""
    kwargs = dict(kwargs)
    if isinstance(kwargs.get("activation_fn"), str):
        kwargs["activation_fn"] = fastppo.algos.policies.ACTIVATIONS[kwargs["activation_fn"]]
    return kwargs


def _sb3_policy(obs_space, action_space, kwargs):
    return sb3_policies.ActorCriticPolicy(obs_space, action_space, lambda _: 3e-4, **_sb3_kwargs(kwargs))


def _linears(seq):
    return [m for m in seq if isinstance(m, nn.Linear)]


def _sb3_heads(sb3):
    """SB3's actor and critic Linear layers in fastppo's order (hidden layers, then the head)."""
    return (_linears(sb3.mlp_extractor.policy_net) + [sb3.action_net],
            _linears(sb3.mlp_extractor.value_net) + [sb3.value_net])


def _copy_weights(ours: ActorCritic, sb3) -> None:
    actor, critic = _sb3_heads(sb3)
    with torch.no_grad():
        for mine, theirs in zip(_linears(ours.actor) + _linears(ours.critic), actor + critic):
            theirs.weight.copy_(mine.weight)
            theirs.bias.copy_(mine.bias)
        if ours.log_std is not None:
            sb3.log_std.copy_(ours.log_std)
        if ours.features_extractor is not None:
            sb3.pi_features_extractor.load_state_dict(ours.pi_features_extractor.state_dict())
            sb3.vf_features_extractor.load_state_dict(ours.vf_features_extractor.state_dict())


# -- building ------------------------------------------------------------------------------------------
@pytest.mark.parametrize("action", ACTIONS)
@pytest.mark.parametrize("form", FORMS)
def test_builds_what_sb3_builds(form, action):
    kwargs = FORMS[form]
    ours, sb3 = ActorCritic(OBS, ACTIONS[action], **kwargs), _sb3_policy(OBS, ACTIONS[action], kwargs)
    assert sum(p.numel() for p in ours.parameters()) == sum(p.numel() for p in sb3.parameters())
    for mine, theirs in zip((ours.actor, ours.critic), _sb3_heads(sb3)):
        assert [m.weight.shape for m in _linears(mine)] == [m.weight.shape for m in theirs]
    for mine, theirs in ((ours.actor, sb3.mlp_extractor.policy_net), (ours.critic, sb3.mlp_extractor.value_net)):
        assert [type(m) for m in mine[:-1]] == [type(m) for m in theirs]  # the hidden layers and activations
    shared = kwargs.get("share_features_extractor", True)
    if "features_extractor_class" in kwargs:
        assert (ours.pi_features_extractor is ours.vf_features_extractor) == shared
        assert ours.features_extractor.features_dim == sb3.features_dim
    if action == "box":
        assert ours.log_std.shape == sb3.log_std.shape
        assert torch.all(ours.log_std == kwargs.get("log_std_init", 0.0))
    ortho = kwargs.get("ortho_init", True)
    head = _linears(ours.actor)[-1].weight
    # orthogonal init with gain 0.01: the head's rows (or columns, if fewer) are orthonormal, times 0.01
    gram = head @ head.T if head.shape[0] <= head.shape[1] else head.T @ head
    assert torch.allclose(gram, 1e-4 * torch.eye(gram.shape[0]), atol=1e-7) == ortho


@pytest.fixture
def torch_threads():
    """Sets torch's thread count for a test, and restores it after."""
    before = torch.get_num_threads()
    yield torch.set_num_threads
    torch.set_num_threads(before)


@pytest.mark.parametrize("shape", [(64, 64), (256, 256), (3, 64), (64, 11), (32, 4, 8, 8)])
def test_orthogonal_init_is_torchs_to_rounding_and_the_same_on_any_thread_count(shape, torch_threads):
    weights = []
    for threads in (1, 2):
        torch_threads(threads)
        torch.manual_seed(0)
        weights.append(torch.empty(shape))
        orthogonal_(weights[-1], 2.0)
    torch.manual_seed(0)
    theirs = nn.init.orthogonal_(torch.empty(shape), 2.0)
    assert torch.equal(weights[0], weights[1])
    torch.testing.assert_close(weights[0], theirs, atol=2e-5, rtol=0)  # torch's float32 QR, rounded its way
    flat = weights[0].reshape(shape[0], -1)
    gram = flat @ flat.T if flat.shape[0] <= flat.shape[1] else flat.T @ flat
    torch.testing.assert_close(gram, 4.0 * torch.eye(gram.shape[0]), atol=1e-5, rtol=0)


@needs_native
def test_a_seeded_native_run_is_the_same_on_any_thread_count(torch_threads):
    """The native path never uses torch's kernels after the init, and splits its own work the same way on
    any thread count, so a seed gives the same run whatever the machine's core count, OMP_NUM_THREADS or
    FASTPPO_NUM_THREADS (torch's float32 QR did not: 64x64 layers came out rounded differently on one
    thread and on two)."""
    native_before = fastppo.get_num_threads()
    params = []
    try:
        for threads in (1, 2):
            torch_threads(threads)
            fastppo.set_num_threads(threads)
            model = PPO("MlpPolicy", "Pendulum-v1", seed=3, n_steps=256, num_envs=4, batch_size=256, n_epochs=2,
                        policy_kwargs=dict(net_arch=[256, 256]))
            model.learn(2048)
            assert model.native
            params.append([p.detach().clone() for p in model.policy.parameters()])
    finally:
        fastppo.set_num_threads(native_before)
    assert all(torch.equal(a, b) for a, b in zip(*params))


def test_activation_name_and_class_build_the_same():
    torch.manual_seed(0)
    a = ActorCritic(OBS, ACTIONS["discrete"], activation_fn="relu")
    torch.manual_seed(0)
    b = ActorCritic(OBS, ACTIONS["discrete"], activation_fn=nn.ReLU)
    assert a.activation == b.activation == "relu" and a.activation_fn is b.activation_fn is nn.ReLU
    assert all(torch.equal(x, y) for x, y in zip(a.parameters(), b.parameters()))


def test_sb3_flatten_extractor_is_the_default():
    policy = ActorCritic(OBS, ACTIONS["discrete"], features_extractor_class=sb3_layers.FlattenExtractor)
    assert policy.features_extractor is None and policy.native_ok() == fastppo.backends()["cpp"].available


@pytest.mark.parametrize("share", [True, False])
def test_features_extractor_trains(share):
    model = PPO("MlpPolicy", "CartPole-v1", n_steps=64, batch_size=32, n_epochs=2, seed=0,
                policy_kwargs=dict(features_extractor_class=Tower, share_features_extractor=share))
    assert not model.native
    policy = model.policy
    extractors = [policy.pi_features_extractor, policy.vf_features_extractor]
    assert (extractors[0] is extractors[1]) == share
    before = [[p.detach().clone() for p in e.parameters()] for e in extractors]
    model.learn(128, progress_bar=False)
    for extractor, old in zip(extractors, before):  # the actor's and the critic's losses reach them
        assert any(not torch.equal(p, q) for p, q in zip(extractor.parameters(), old))
    if not share:
        assert not all(torch.equal(p, q) for p, q in zip(*(e.parameters() for e in extractors)))


# -- the native path and the optimiser ----------------------------------------------------------------
NATIVE = {  # policy_kwargs -> (whether the native trainer implements the result, whether the optimiser is FlatAdam)
    "dict-relu": (dict(net_arch=dict(pi=[32], vf=[64, 64]), activation_fn=nn.ReLU), True, True),
    "linear-actor": (dict(net_arch=dict(pi=[], vf=[16])), True, True),
    "adam-betas": (dict(optimizer_class=torch.optim.Adam, optimizer_kwargs=dict(betas=(0.8, 0.99), eps=1e-6)), True,
                   True),
    "adam-zero-decay": (dict(optimizer_kwargs=dict(weight_decay=0.0)), True, True),
    "sb3-flatten": (dict(features_extractor_class=sb3_layers.FlattenExtractor), True, True),
    "gelu": (dict(activation_fn=nn.GELU), False, True),
    "extractor": (dict(features_extractor_class=FlattenLike), False, True),
    "adam-decay": (dict(optimizer_kwargs=dict(weight_decay=1e-4)), False, False),
    "amsgrad": (dict(optimizer_kwargs=dict(amsgrad=True)), False, False),
    "adamw": (dict(optimizer_class=torch.optim.AdamW), False, False),
    "sgd": (dict(optimizer_class=torch.optim.SGD), False, False),
    "rmsprop": (dict(optimizer_class=torch.optim.RMSprop, optimizer_kwargs=dict(alpha=0.9)), False, False),
}


@needs_native
@pytest.mark.parametrize("algo", [PPO, TRPO])
@pytest.mark.parametrize("case", NATIVE)
def test_native_exactly_where_it_implements_the_network(case, algo):
    kwargs, native, flat_adam = NATIVE[case]
    model = algo("MlpPolicy", "CartPole-v1", n_steps=64, batch_size=64, policy_kwargs=kwargs)
    assert model.native == native
    assert isinstance(model.optimizer if algo is PPO else model.critic_optimizer, FlatAdam) == flat_adam
    assert not algo("MlpPolicy", "CartPole-v1", n_steps=64, batch_size=64, policy_kwargs=kwargs, backend="torch").native


def test_adam_eps_follows_sb3s_rule():
    """SB3: Adam given no optimizer_kwargs gets eps=1e-5; given any, torch's default (1e-8) unless named."""
    for kwargs in ({}, dict(optimizer_kwargs=dict(betas=(0.9, 0.99))), dict(optimizer_kwargs=dict(eps=1e-3))):
        ours = PPO("MlpPolicy", "CartPole-v1", n_steps=64, batch_size=64, policy_kwargs=kwargs).optimizer
        theirs = _sb3_policy(OBS, ACTIONS["discrete"], kwargs).optimizer.defaults
        assert (ours.eps, ours.betas) == (theirs["eps"], tuple(theirs["betas"]))


def test_optimizer_options_reach_the_torch_optimizer():
    model = PPO("MlpPolicy", "CartPole-v1", n_steps=64, batch_size=64, learning_rate=1e-3,
                policy_kwargs=dict(optimizer_class=torch.optim.RMSprop, optimizer_kwargs=dict(alpha=0.9)))
    optimizer = model.optimizer
    assert isinstance(optimizer, TorchOptimizer) and isinstance(optimizer.optimizer, torch.optim.RMSprop)
    assert optimizer.optimizer.defaults["alpha"] == 0.9 and optimizer.lr == 1e-3
    assert {id(p) for p in optimizer.optimizer.param_groups[0]["params"]} == {id(p) for p in model.policy.parameters()}
    optimizer.lr = 5e-4
    assert all(g["lr"] == 5e-4 for g in optimizer.optimizer.param_groups)


def test_adamw_without_decay_is_adam():
    """AdamW with weight_decay=0 is Adam's arithmetic: on the torch path it lands on FlatAdam's parameters."""
    kw = dict(n_steps=64, batch_size=32, n_epochs=2, seed=3, backend="torch")
    flat = PPO("MlpPolicy", "CartPole-v1", **kw, policy_kwargs=dict(optimizer_kwargs=dict(eps=1e-5)))
    adamw = PPO("MlpPolicy", "CartPole-v1", **kw,
                policy_kwargs=dict(optimizer_class=torch.optim.AdamW,
                                   optimizer_kwargs=dict(eps=1e-5, weight_decay=0.0)))
    assert isinstance(flat.optimizer, FlatAdam) and isinstance(adamw.optimizer, TorchOptimizer)
    for model in (flat, adamw):
        model.learn(256, progress_bar=False)
    np.testing.assert_allclose(adamw._flat.param.detach(), flat._flat.param.detach(), rtol=0, atol=1e-6)


def _solves_some(model, threshold=150):
    mean, _ = fastppo.evaluate_policy(model, "CartPole-v1", n_eval_episodes=10, seed=123)
    assert mean >= threshold, f"mean return {mean}"


def _cartpole(**overrides):
    return PPO("MlpPolicy", "CartPole-v1", **{**fastppo.presets.get("CartPole-v1"), "seed": 0, **overrides})


def test_sgd_learns_cartpole():
    model = _cartpole(learning_rate="lin_0.03",
                      policy_kwargs=dict(optimizer_class=torch.optim.SGD, optimizer_kwargs=dict(momentum=0.9)))
    assert isinstance(model.optimizer.optimizer, torch.optim.SGD)
    _solves_some(model.learn(10_000, progress_bar=False))


def test_adamw_learns_cartpole():
    model = _cartpole(learning_rate="lin_0.005", policy_kwargs=dict(optimizer_class=torch.optim.AdamW,
                                                                     optimizer_kwargs=dict(weight_decay=1e-3)))
    assert isinstance(model.optimizer.optimizer, torch.optim.AdamW)
    _solves_some(model.learn(12_000, progress_bar=False))


def _twins(env, policy_kwargs):
    """A native model and a torch-path one (backend="torch") with the same parameters."""
    def make(backend):
        return PPO("MlpPolicy", env, n_steps=64, num_envs=4, batch_size=32, n_epochs=3, seed=5, backend=backend,
                   policy_kwargs=policy_kwargs)

    native, reference = make("auto"), make("torch")
    assert native.native and isinstance(native.updater, NativePpoUpdater)
    assert not reference.native and isinstance(reference.updater, TorchPpoUpdater)
    native._reset_envs()
    return native, reference


@needs_native
@pytest.mark.parametrize("env", ["CartPole-v1", "Pendulum-v1"])
@pytest.mark.parametrize("net_arch", [dict(pi=[32], vf=[64, 64]), dict(pi=[], vf=[16])], ids=["dict", "linear-actor"])
def test_native_training_equals_torch(env, net_arch):
    """Several iterations: each native rollout is given to both, and each update lands on the same
    parameters and Adam moments (the tolerances of tests/test_native_update.py)."""
    native, reference = _twins(env, dict(net_arch=net_arch, activation_fn=nn.ReLU))
    for iteration in range(3):
        native._collect(None)
        native._advantages()
        for name, buffer in reference.rollout.flat().items():
            buffer.copy_(native.rollout.flat()[name])
        reference._generator.set_state(native._generator.get_state())
        got, want = native._update(1.0), reference._update(1.0)
        assert got["train/n_updates"] == want["train/n_updates"] == 3 * (iteration + 1)  # SB3's: epochs
        # the minibatch updates, counted by each Adam: all of them, on both
        assert native.optimizer.steps == reference.optimizer.steps == 3 * (iteration + 1) * 256 // 32
        np.testing.assert_allclose(got["train/value_loss"], want["train/value_loss"], rtol=1e-4, atol=1e-6)
        lr = native.optimizer.lr
        np.testing.assert_allclose(native._flat.param.detach(), reference._flat.param.detach(), rtol=0,
                                   atol=0.01 * lr * (iteration + 1))
        for name in ("exp_avg", "exp_avg_sq"):
            a, b = getattr(native.optimizer, name), getattr(reference.optimizer, name)
            assert float((a - b).abs().max()) <= 1e-4 * (iteration + 1) * float(b.abs().max()), name


# -- SB3 policy classes -------------------------------------------------------------------------------
class CustomNetwork(nn.Module):
    """SB3's documented custom network (guide/custom_policy.html: "Advanced Example"), smaller."""

    def __init__(self, feature_dim, last_layer_dim_pi=32, last_layer_dim_vf=32):
        super().__init__()
        self.latent_dim_pi, self.latent_dim_vf = last_layer_dim_pi, last_layer_dim_vf
        self.policy_net = nn.Sequential(nn.Linear(feature_dim, last_layer_dim_pi), nn.ReLU())
        self.value_net = nn.Sequential(nn.Linear(feature_dim, last_layer_dim_vf), nn.ReLU())

    def forward(self, features):
        return self.forward_actor(features), self.forward_critic(features)

    def forward_actor(self, features):
        return self.policy_net(features)

    def forward_critic(self, features):
        return self.value_net(features)


class CustomActorCriticPolicy(sb3_policies.ActorCriticPolicy):
    def __init__(self, observation_space, action_space, lr_schedule, *args, **kwargs):
        kwargs["ortho_init"] = False  # as the documented example
        super().__init__(observation_space, action_space, lr_schedule, *args, **kwargs)

    def _build_mlp_extractor(self):
        self.mlp_extractor = CustomNetwork(self.features_dim)


def test_sb3_policy_class_learns_cartpole():
    model = PPO(CustomActorCriticPolicy, "CartPole-v1", **{**fastppo.presets.get("CartPole-v1"), "seed": 0,
                                                           "learning_rate": "lin_0.003"})
    assert isinstance(model.policy, SB3Policy) and isinstance(model.policy.module, CustomActorCriticPolicy)
    assert not model.native
    _solves_some(model.learn(12_000, progress_bar=False), threshold=120)


def test_sb3_policy_class_gets_policy_kwargs_and_saves(tmp_path):
    model = PPO(sb3_policies.ActorCriticPolicy, "Pendulum-v1", n_steps=64, batch_size=64, n_epochs=1, seed=0,
                policy_kwargs=dict(net_arch=dict(pi=[8], vf=[16]), log_std_init=-0.5))
    module = model.policy.module
    assert module.mlp_extractor.latent_dim_pi == 8 and float(module.log_std.detach()[0]) == -0.5
    assert isinstance(model.optimizer, FlatAdam) and model.optimizer.eps == module.optimizer.defaults["eps"] == 1e-5
    model.learn(64, progress_bar=False)
    model.save(tmp_path / "m.pt")
    with pytest.raises(ValueError, match="custom module .*ActorCriticPolicy.*the class"):
        PPO.load(tmp_path / "m.pt")
    loaded = PPO.load(tmp_path / "m.pt", policy=sb3_policies.ActorCriticPolicy)
    assert all(torch.equal(a, b) for a, b in zip(loaded.policy.parameters(), model.policy.parameters()))
    obs = np.zeros((3, 3), np.float32)
    np.testing.assert_array_equal(loaded.predict(obs, deterministic=True)[0], model.predict(obs, deterministic=True)[0])


class _SGDPolicy(sb3_policies.ActorCriticPolicy):
    """A subclass that chooses its own optimiser, as SB3 lets it."""

    def __init__(self, *args, **kwargs):
        super().__init__(*args, optimizer_class=torch.optim.SGD, optimizer_kwargs=dict(momentum=0.5), **kwargs)


def test_sb3_policy_class_chooses_the_optimizer():
    model = PPO(_SGDPolicy, "CartPole-v1", n_steps=64, batch_size=64, learning_rate=1e-2)
    optimizer = model.optimizer.optimizer
    assert isinstance(optimizer, torch.optim.SGD) and optimizer.defaults["momentum"] == 0.5
    assert model.optimizer.lr == 1e-2


def test_sb3_policy_class_runs_trpo():
    model = TRPO(CustomActorCriticPolicy, "CartPole-v1", n_steps=128, batch_size=64, n_critic_updates=2, seed=0)
    names = {id(p): n for n, p in model.policy.module.named_parameters()}
    assert all("value" not in names[id(p)] for p in model.actor_params)
    before = model.policy.module.value_net.weight.detach().clone()
    model.learn(256, progress_bar=False)
    assert not torch.equal(model.policy.module.value_net.weight, before)


class _NoValueNet(nn.Module):
    """fastppo's policy contract with forward() only (no value() method)."""

    def __init__(self):
        super().__init__()
        self.body = nn.Linear(4, 3)

    def forward(self, obs):
        out = self.body(obs)
        return out[:, :2], out[:, 2]

    def actor_parameters(self):
        return list(self.body.parameters())

    def critic_parameters(self):
        return list(self.body.parameters())


@pytest.mark.parametrize("algo", [PPO, TRPO])
def test_custom_module_needs_no_value_method(algo):
    model = algo(_NoValueNet(), "CartPole-v1", n_steps=32, batch_size=32, seed=0)
    model.learn(64, progress_bar=False)
    assert model.num_timesteps == 64 and torch.isfinite(model.rollout.values).all()


# -- model.policy's inference methods -----------------------------------------------------------------
def _obs_batch(space, n=7):
    space.seed(0)
    return np.stack([space.sample() for _ in range(n)])


@pytest.mark.parametrize("obs_space", [OBS, gym.spaces.Discrete(5)], ids=["box-obs", "discrete-obs"])
@pytest.mark.parametrize("action", ACTIONS)
@pytest.mark.parametrize("form", ["dict", "separate-towers"])
def test_policy_methods_match_sb3(form, action, obs_space):
    kwargs, action_space = FORMS[form], ACTIONS[action]
    torch.manual_seed(0)
    ours, sb3 = ActorCritic(obs_space, action_space, **kwargs), _sb3_policy(obs_space, action_space, kwargs)
    _copy_weights(ours, sb3)
    adapted = SB3Policy(sb3, obs_space, action_space)
    obs_np = _obs_batch(obs_space)
    obs = sb3.obs_to_tensor(obs_np)[0]
    actions = torch.as_tensor(_obs_batch(action_space))
    with torch.no_grad():
        want_values, want_log_prob, want_entropy = sb3.evaluate_actions(obs, actions)
        want_dist = sb3.get_distribution(obs)
        for policy in (ours, adapted):
            values, log_prob, entropy = policy.evaluate_actions(obs, actions)
            assert values.shape == want_values.shape == (7, 1)
            assert log_prob.shape == want_log_prob.shape == entropy.shape == want_entropy.shape == (7,)
            torch.testing.assert_close(values, want_values)
            torch.testing.assert_close(log_prob, want_log_prob)
            torch.testing.assert_close(entropy, want_entropy)
            torch.testing.assert_close(policy.predict_values(obs), sb3.predict_values(obs))
            dist = policy.get_distribution(obs)
            torch.testing.assert_close(dist.mode(), want_dist.mode().reshape(dist.mode().shape))
            torch.testing.assert_close(dist.log_prob(actions), want_dist.log_prob(actions))
            assert dist.sample().shape == want_dist.sample().shape
    for policy in (ours, adapted):
        for batch in (obs_np, obs_np[0]):
            got, state = policy.predict(batch, deterministic=True)
            want, _ = sb3.predict(batch, deterministic=True)
            assert state is None and got.shape == want.shape
            np.testing.assert_allclose(got, want, rtol=1e-6)


def test_set_training_mode_and_model_policy():
    model = PPO("MlpPolicy", "CartPole-v1", n_steps=32, batch_size=32, seed=0)
    model.policy.set_training_mode(False)
    assert not model.policy.training
    model.policy.set_training_mode(True)
    assert model.policy.training
    obs = np.zeros(4, np.float32)
    assert model.policy.predict(obs, deterministic=True)[0] == model.predict(obs, deterministic=True)[0]


# -- checkpoints -------------------------------------------------------------------------------------
def test_checkpoint_stores_activation_by_name_and_asks_for_classes(tmp_path):
    model = PPO("MlpPolicy", "CartPole-v1", n_steps=32, batch_size=32, seed=0,
                policy_kwargs=dict(activation_fn=nn.ReLU, features_extractor_class=Tower,
                                   features_extractor_kwargs=dict(features_dim=5)))
    model.learn(32, progress_bar=False)
    model.save(tmp_path / "m.pt")
    stored = torch.load(tmp_path / "m.pt", weights_only=True)["hyperparameters"]["policy_kwargs"]
    assert stored["activation_fn"] == "relu" and stored["features_extractor_kwargs"] == dict(features_dim=5)
    assert stored["features_extractor_class"] == {"__function__": f"{__name__}.Tower"}
    with pytest.raises(ValueError, match=r"policy_kwargs\['features_extractor_class'\] was .*Tower when saved.*"
                                         r"pass policy_kwargs=dict\(features_extractor_class=\.\.\.\)"):
        PPO.load(tmp_path / "m.pt")
    loaded = PPO.load(tmp_path / "m.pt", policy_kwargs=dict(features_extractor_class=Tower))
    assert loaded.policy.activation_fn is nn.ReLU and loaded.policy.features_extractor.features_dim == 5
    assert all(torch.equal(a, b) for a, b in zip(loaded.policy.parameters(), model.policy.parameters()))


def test_checkpoint_with_the_old_activation_key_loads(tmp_path):
    model = PPO("MlpPolicy", "CartPole-v1", n_steps=32, batch_size=32, seed=0, policy_kwargs=dict(activation_fn="relu"))
    model.save(tmp_path / "m.pt")
    state = torch.load(tmp_path / "m.pt", weights_only=True)
    state["version"], state["hyperparameters"]["policy_kwargs"] = 3, {"activation": "relu"}  # as fastppo 0.2 wrote it
    torch.save(state, tmp_path / "old.pt")
    assert PPO.load(tmp_path / "old.pt").policy.activation_fn is nn.ReLU


def test_torch_optimizer_state_resumes(tmp_path):
    """Saved and loaded, a torch optimiser's state continues as the model that was never saved does."""
    kw = dict(n_steps=64, batch_size=32, n_epochs=2, seed=1,
              policy_kwargs=dict(optimizer_class=torch.optim.SGD, optimizer_kwargs=dict(momentum=0.9)))
    model = PPO("MlpPolicy", "CartPole-v1", **kw).learn(128, progress_bar=False)
    model.save(tmp_path / "m.pt")
    resumed = PPO.load(tmp_path / "m.pt", policy_kwargs=dict(optimizer_class=torch.optim.SGD))
    assert resumed.optimizer.state_dict()["state"]  # the momentum buffers came back
    for m in (model, resumed):
        m.learn(128, reset_num_timesteps=False, progress_bar=False)
    assert torch.equal(resumed._flat.param, model._flat.param)


# -- errors -------------------------------------------------------------------------------------------
@pytest.mark.parametrize("kwargs, exc, message", [
    (dict(activation="relu"), TypeError, "unknown policy_kwargs 'activation' for 'MlpPolicy'; known: net_arch, "
                                         "activation_fn, ortho_init"),
    (dict(net_arch=dict(pi=[8], qf=[8])), ValueError, "takes the keys 'pi' and 'vf', got ['qf']"),
    (dict(net_arch=[64, "x"]), ValueError, "must hold lists of positive integer sizes"),
    (dict(net_arch=[0]), ValueError, "must hold lists of positive integer sizes"),
    (dict(net_arch=64), TypeError, "must be a list of hidden sizes or dict(pi=[...], vf=[...])"),
    (dict(activation_fn="swish"), ValueError, "policy_kwargs['activation_fn'] must be an nn.Module class or one of"),
    (dict(activation_fn=torch.tanh), TypeError, "policy_kwargs['activation_fn'] must be an nn.Module class"),
    (dict(features_extractor_kwargs=dict(features_dim=4)), ValueError, "without a features_extractor_class"),
    (dict(features_extractor_class=nn.Identity), TypeError, "features_dim attribute"),
    (dict(optimizer_kwargs=dict(lr=1e-3)), ValueError, "must not hold 'lr' or 'params'"),
    (dict(optimizer_kwargs=0.1), TypeError, "policy_kwargs['optimizer_kwargs'] must be a dict"),
    (dict(optimizer_class=nn.Linear), TypeError, "must be a torch.optim.Optimizer subclass"),
])
def test_bad_policy_kwargs(kwargs, exc, message):
    with pytest.raises(exc, match=_re(message)):
        PPO("MlpPolicy", "CartPole-v1", n_steps=32, batch_size=32, policy_kwargs=kwargs)


def test_log_std_init_above_the_clamp_is_an_error():
    with pytest.raises(ValueError, match=_re("policy_kwargs['log_std_init'] must be in [-20.0, 2.0], the clamp")):
        PPO("MlpPolicy", "Pendulum-v1", n_steps=32, batch_size=32, policy_kwargs=dict(log_std_init=2.5))
    PPO("MlpPolicy", "CartPole-v1", n_steps=32, batch_size=32, policy_kwargs=dict(log_std_init=2.5))  # no Gaussian


def test_bad_policy_classes():
    with pytest.raises(TypeError, match="the class Linear lacks get_distribution, predict_values, evaluate_actions"):
        PPO(nn.Linear, "CartPole-v1", n_steps=32, batch_size=32)
    with pytest.raises(TypeError, match="the class int is not an nn.Module"):
        PPO(int, "CartPole-v1", n_steps=32, batch_size=32)
    with pytest.raises(ValueError, match="use_sde with an SB3 policy class is not supported"):
        PPO(sb3_policies.ActorCriticPolicy, "Pendulum-v1", n_steps=32, batch_size=32, use_sde=True)


def _re(message):
    import re

    return re.escape(message)
