"""The native updaters against their spec, the torch paths: PPO's (NativePpoUpdater, fastppo._core.PpoUpdate,
against TorchPpoUpdater) and TRPO's critic regression (NativeCriticFit, fastppo._core.CriticFit, against
TorchCriticFit). From the same rollout and the same parameters, one whole update on each must land on
the same parameters, Adam moments and logged statistics."""

import warnings

import gymnasium as gym
import numpy as np
import pytest
import torch

import fastppo
from fastppo import PPO, TRPO
from fastppo.algos.distributed import Reducer
from fastppo.algos.ppo import NativePpoUpdater, TorchPpoUpdater
from fastppo.algos.trpo import NativeCriticFit, TorchCriticFit

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
    """Two models with the same parameters, the same collected rollout and the same generator state: the
    first updates natively, the second (backend="torch") on the torch path."""
    if algo is PPO:
        kwargs.setdefault("n_epochs", 3)

    kwargs.setdefault("batch_size", 32)

    def make(backend):
        return algo("MlpPolicy", env() if callable(env) else env, n_steps=64, num_envs=1 if callable(env) else 4,
                    seed=5, backend=backend, **kwargs)

    native = make("auto")
    native._reset_envs()
    native._collect(None)
    native._advantages()
    reference = make("torch")
    for name, buffer in reference.rollout.flat().items():
        buffer.copy_(native.rollout.flat()[name])
    reference._generator.set_state(native._generator.get_state())
    assert native.native and not reference.native
    if algo is PPO:
        assert isinstance(native.updater, NativePpoUpdater) and isinstance(reference.updater, TorchPpoUpdater)
    return native, reference


def _assert_same_update(native, reference, progress=1.0):
    for _ in range(2):  # twice: the second update starts from Adam moments the first one left
        got, want = native._update(progress), reference._update(progress)
        assert got.keys() == want.keys()
        assert got["train/n_updates"] == want["train/n_updates"]  # SB3's count: epochs, cumulative
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
    # a value steps do not land on within float32 rounding (at +-c the value gradient jumps to 0, and the
    # two paths' values differ by ulps: 0.2 had a step 6e-7 from it on CartPole)
    "value-clip+entropy": {"clip_range_vf": 0.1, "ent_coef": 0.01},
    "no-adv-norm+no-grad-clip": {"normalize_advantage": False, "max_grad_norm": None},
    "kl-variant": {"variant": "kl", "kl_coef": 0.5},
    "relu+tight-clip": {"policy_kwargs": {"activation_fn": "relu", "net_arch": [32, 16]}, "clip_range": 0.01,
                        "learning_rate": 3e-3},
}
ENVS = {"discrete": "CartPole-v1", "box": "Pendulum-v1", "multidiscrete": _MultiDiscreteEnv}


@pytest.mark.parametrize("option", OPTIONS)
@pytest.mark.parametrize("env", ENVS)
def test_native_update_matches_torch(env, option):
    _assert_same_update(*_twins(ENVS[env], **OPTIONS[option]))


@pytest.mark.parametrize("batch_size", [100, 255])
def test_truncated_minibatches_as_sb3(batch_size):
    """A batch_size that does not divide the rollout (256 here) is allowed with SB3's warning: the last
    minibatch is shorter (one sample with 255, which is not normalised), on both paths alike."""
    with pytest.warns(UserWarning, match="truncated mini-batch of size"):
        twins = _twins("CartPole-v1", batch_size=batch_size)
    _assert_same_update(*twins)
    assert twins[0].optimizer.steps == 2 * 3 * -(-256 // batch_size)  # 2 updates x 3 epochs x ceil(256 / batch_size)


@pytest.mark.parametrize("env", ENVS)
def test_native_update_matches_torch_where_linear_schedules_end(env):
    """SB3 evaluates schedules after the rollout, so a linear clip_range or clip_range_vf is exactly 0
    at the last iteration: the native update and the op take 0 and agree with the torch path. The
    rollout's log-probs and values are moved off the policy's own: at a ratio of exactly 1 (or a value
    step of exactly 0) a 0 clip's gradient jumps, and the two paths' forwards differ there by ulps. So
    every ratio and value step is clipped: only the entropy bonus moves the actor, nothing the critic."""
    native, reference = _twins(ENVS[env], clip_range="lin_0.2", clip_range_vf="lin_0.5", ent_coef=0.01)
    gen = torch.Generator().manual_seed(0)
    noise = {key: 0.3 * torch.randn(native.rollout_size, generator=gen) for key in ("log_probs", "values")}
    for model in (native, reference):
        for key, value in noise.items():
            model.rollout.flat()[key].add_(value)
    critic = [p.detach().clone() for p in native.policy.critic.parameters()]
    _assert_same_update(native, reference, progress=0.0)
    metrics = native._update(0.0)
    assert metrics["train/clip_range"] == metrics["train/clip_range_vf"] == 0.0
    assert metrics["train/clip_fraction"] == 1.0
    assert all(torch.equal(p, q) for p, q in zip(native.policy.critic.parameters(), critic))


def test_learning_rate_0_moves_nothing():
    """A linear learning_rate is exactly 0 at the last iteration: both Adams take the step (moments and
    step count) and move no parameter."""
    native, reference = _twins("Pendulum-v1", learning_rate="lin_1e-3")
    before = native._flat.param.detach().clone()
    _assert_same_update(native, reference, progress=0.0)
    for model in (native, reference):
        assert model.optimizer.lr == 0.0 and model.optimizer.steps > 0
        assert torch.equal(model._flat.param.detach(), before)


def test_target_kl_stops_at_the_same_minibatch():
    native, reference = _twins("CartPole-v1", target_kl=1e-4, learning_rate=1e-2)
    got, want = native._update(1.0), reference._update(1.0)
    # the minibatch updates taken, counted by each Adam: stopped early, at the same step
    assert 0 < native.optimizer.steps == reference.optimizer.steps < 3 * 256 // 32
    assert got["train/n_updates"] == want["train/n_updates"]  # the epochs, the stopped one included
    np.testing.assert_allclose(native._flat.param.detach(), reference._flat.param.detach(), rtol=0, atol=1e-4)


def test_clamped_log_std_gets_no_gradient():
    native, reference = _twins("Pendulum-v1", ent_coef=0.1)
    for model in (native, reference):
        with torch.no_grad():
            model.policy.log_std.fill_(-25.0)  # below DiagGaussian's clamp at -20
    _assert_same_update(native, reference)
    assert native.policy.log_std.item() == -25.0  # zero gradient, zero Adam moments: not moved


def _assert_same_critic_fit(native, reference):
    assert isinstance(native.critic_updater, NativeCriticFit)
    assert isinstance(reference.critic_updater, TorchCriticFit)
    for _ in range(2):
        got = native._fit_critic(1e-3)
        want = reference._fit_critic(1e-3)
        np.testing.assert_allclose(got, want, rtol=1e-5)
        a, b = native._critic_flat, reference._critic_flat
        np.testing.assert_allclose(a.param.detach(), b.param.detach(), rtol=0, atol=1e-5)  # 1% of lr, as above
        adam_a, adam_b = native.critic_optimizer, reference.critic_optimizer
        assert adam_a.steps == adam_b.steps > 0
        for name in ("exp_avg", "exp_avg_sq"):
            x, y = getattr(adam_a, name), getattr(adam_b, name)
            assert float((x - y).abs().max()) <= 1e-4 * float(y.abs().max()), name


@pytest.mark.parametrize("env", ["CartPole-v1", "Pendulum-v1"])
def test_native_critic_fit_matches_torch(env):
    _assert_same_critic_fit(*_twins(env, TRPO, n_critic_updates=3, learning_rate=1e-3))


class _CheetahShapedEnv(gym.Env):
    """HalfCheetah's sizes (17 observations, 6 actions) in a random walk: a first layer wide enough for the
    native update to split its weight gradient among threads (Pendulum's 3 inputs take another path)."""

    observation_space = gym.spaces.Box(-1, 1, (17,), np.float32)
    action_space = gym.spaces.Box(-1, 1, (6,), np.float32)

    def reset(self, *, seed=None, options=None):
        super().reset(seed=seed)
        self.t = 0
        return self.np_random.uniform(-1, 1, 17).astype(np.float32), {}

    def step(self, action):
        self.t += 1
        obs = self.np_random.uniform(-1, 1, 17).astype(np.float32)
        return obs, float(-np.square(action).sum() + obs[0]), False, self.t >= 50, {}


@pytest.mark.parametrize("algo", [PPO, TRPO])
@pytest.mark.parametrize("env", ["Pendulum-v1", _CheetahShapedEnv])
def test_native_update_is_the_same_on_any_thread_count(env, algo):
    """Threads split the native update's matrix products by output row (at multiples of the kernel's row
    block) and Adam's elementwise work into fixed chunks, and no sum is split: on a 256-256 net, wide
    enough to split, 1, 2 and 3 threads land on the same bits. The minibatches (100, the last 56) end
    between row blocks."""
    kwargs = dict(policy_kwargs=dict(net_arch=[256, 256], activation_fn="relu"), batch_size=100, seed=5,
                  n_steps=256 if callable(env) else 64, num_envs=1 if callable(env) else 4)
    kwargs.update(n_epochs=2) if algo is PPO else kwargs.update(n_critic_updates=2)
    states = []
    try:
        for threads in (1, 2, 3):
            fastppo.set_num_threads(threads)
            with warnings.catch_warnings():
                warnings.filterwarnings("ignore", "You have specified a mini-batch size", UserWarning)
                model = algo("MlpPolicy", env() if callable(env) else env, **kwargs)
            model._reset_envs()
            model._collect(None)
            model._advantages()
            for _ in range(2):
                model._update(1.0) if algo is PPO else model._fit_critic(1e-3)
            adam = model.optimizer if algo is PPO else model.critic_optimizer
            states.append({**model.policy.state_dict(), "exp_avg": adam.exp_avg, "exp_avg_sq": adam.exp_avg_sq})
    finally:
        fastppo.set_num_threads(0)
    for other in states[1:]:
        for name, tensor in states[0].items():
            assert torch.equal(tensor, other[name]), name


class _ScalingReducer(Reducer):
    """A stand-in for a multi-process reducer: counts the calls at the data-parallel seam and scales the
    flat gradient in place (or raises)."""

    local = False

    def __init__(self, scale=1.0, fail=False):
        self.scale, self.fail, self.calls = scale, fail, 0

    def gradients(self, flat_grad, approx_kl=None):
        self.calls += 1
        if self.fail:
            raise RuntimeError("all-reduce failed")
        flat_grad.mul_(self.scale)
        return approx_kl


@pytest.mark.parametrize("scale", [1.0, 0.5])
@pytest.mark.parametrize("env", ["CartPole-v1", "Pendulum-v1"])
def test_native_update_calls_the_reducer_per_minibatch(env, scale):
    """With a reducer that is not local, the native update calls its gradients() back once per minibatch,
    between backward and clipping + Adam, on the flat gradient's memory: as the torch path does."""
    native, reference = _twins(env)
    native.reducer, reference.reducer = _ScalingReducer(scale), _ScalingReducer(scale)
    _assert_same_update(native, reference)
    assert native.reducer.calls == reference.reducer.calls == native.optimizer.steps == 2 * 3 * 256 // 32


@pytest.mark.parametrize("algo", [PPO, TRPO])
def test_reducer_changes_the_gradient_the_native_step_takes(algo):
    """A reducer that zeroes the gradient: from fresh Adam moments no parameter moves, on both paths
    (the scaling reaches the memory the native step reads, before the step)."""
    for model in _twins("Pendulum-v1", algo):
        model.reducer = _ScalingReducer(0.0)
        flat = model._flat if algo is PPO else model._critic_flat
        before = flat.param.detach().clone()
        if algo is PPO:
            model._update(1.0)
        else:
            model._fit_critic(1e-3)
        assert model.reducer.calls > 0
        assert torch.equal(flat.param.detach(), before)


def test_native_critic_fit_calls_the_reducer_per_minibatch():
    native, reference = _twins("Pendulum-v1", TRPO, n_critic_updates=3, learning_rate=1e-3)
    native.reducer, reference.reducer = _ScalingReducer(0.5), _ScalingReducer(0.5)
    _assert_same_critic_fit(native, reference)
    assert native.reducer.calls == reference.reducer.calls == native.critic_optimizer.steps == 2 * 3 * 256 // 32


@pytest.mark.parametrize("algo", [PPO, TRPO])
def test_an_exception_from_the_reducer_propagates(algo):
    """Raised at the seam of the first minibatch: out of the native loop as itself, before any step; the
    model stays usable."""
    native, _ = _twins("CartPole-v1", algo)
    adam = native.optimizer if algo is PPO else native.critic_optimizer
    native.reducer = _ScalingReducer(fail=True)
    with pytest.raises(RuntimeError, match="all-reduce failed"):
        native._update(1.0) if algo is PPO else native._fit_critic(1e-3)
    assert native.reducer.calls == 1 and adam.steps == 0
    native.reducer = Reducer()
    native._update(1.0) if algo is PPO else native._fit_critic(1e-3)
    assert adam.steps > 0
    updater = native.updater if algo is PPO else native.critic_updater
    with pytest.raises(TypeError, match="on_gradients must be callable or None, got int"):
        if algo is PPO:
            updater.native.epoch(np.arange(256), updater.settings, 1)
        else:
            updater.native.epoch(np.arange(256), 32, 1e-3, 0.9, 0.999, 1e-8, 1)


def _core_args(model):
    """The keyword arguments NativePpoUpdater passes to fastppo._core.PpoUpdate, for the checks below."""
    params, grads = model.policy.native_arrays(), model.policy.native_arrays(grads=True)
    adam = model.optimizer
    data = {k: v.numpy() for k, v in model.rollout.flat().items()}
    return dict(actor=params["actor"], actor_grads=grads["actor"], critic=params["critic"],
                critic_grads=grads["critic"], activation="tanh", kind="categorical", nvec=[2], log_std=None,
                log_std_grad=None, flat_param=model._flat.param.detach().numpy(), flat_grad=model._flat.grad.numpy(),
                exp_avg=adam.exp_avg.numpy(), exp_avg_sq=adam.exp_avg_sq.numpy(), adam_steps=adam.step_count,
                obs=data["obs"],
                actions=data["actions"], old_log_probs=data["log_probs"], advantages=data["advantages"],
                old_values=data["values"], returns=data["returns"], old_dist_params=None)


def test_bad_arguments_are_rejected():
    from fastppo._backend import _core

    native, _ = _twins("CartPole-v1")
    args = _core_args(native)
    update = _core.PpoUpdate(**args)
    config = _core.PpoUpdateConfig()
    with pytest.raises(ValueError, match=r"order must be a CPU int64 array of shape \(256,\)"):
        update.epoch(np.arange(10), config)
    with pytest.raises(ValueError, match=r"order\[3\] = 256 is outside \[0, 256\)"):
        update.epoch(np.array([0, 1, 2, 256] + list(range(4, 256))), config)
    config.batch_size = 0
    with pytest.raises(ValueError, match="batch_size must be >= 1"):
        update.epoch(np.arange(256), config)
    config.batch_size, config.kl_coef = 32, 1.0
    with pytest.raises(ValueError, match="kl_coef needs old_dist_params"):
        update.epoch(np.arange(256), config)

    # the actions are the rollout's memory, rewritten every iteration: checked on every epoch, not once
    config.kl_coef = -1.0
    update.epoch(np.arange(256), config)
    assert native.optimizer.steps == 256 // 32  # counted in the optimiser's own array
    args["actions"][7] = 2
    with pytest.raises(ValueError, match=r"actions\[7\] = 2 is outside \[0, 2\)"):
        update.epoch(np.arange(256), config)
    args["actions"][7] = 1
    # a gradient that is not a view of flat_grad: clipping and Adam would never see it
    with pytest.raises(ValueError, match="views of flat_param and flat_grad"):
        _core.PpoUpdate(**{**args, "critic_grads": [g.copy() for g in args["critic_grads"]]})
    with pytest.raises(ValueError, match="exp_avg must have shape"):
        _core.PpoUpdate(**{**args, "exp_avg": args["exp_avg"][:-1]})
    with pytest.raises(TypeError, match="returns must have dtype float32, got float64"):
        _core.PpoUpdate(**{**args, "returns": args["returns"].astype(np.float64)})
    with pytest.raises(ValueError, match="activation must be 'tanh' or 'relu'"):
        _core.PpoUpdate(**{**args, "activation": "gelu"})
    # Adam's step count: the optimiser's own one-element int64 array, incremented in place
    steps = args["adam_steps"]
    for bad in (np.zeros(1, np.int32), np.zeros(2, np.int64), np.zeros((), np.int64), steps[:].view()):
        if bad.base is steps:
            bad.flags.writeable = False
        with pytest.raises(ValueError, match=r"adam_steps must be a writeable CPU int64 array of shape \(1,\)"):
            _core.PpoUpdate(**{**args, "adam_steps": bad})


@pytest.mark.parametrize("algo", [PPO, TRPO])
def test_adam_step_count_is_one_array(algo):
    """FlatAdam's step count lives in one int64 array that the native update increments in place, the torch
    step too, and checkpoints read and write (as an int) without replacing it."""
    native, _ = _twins("CartPole-v1", algo)
    adam = native.optimizer if algo is PPO else native.critic_optimizer
    count = adam.step_count
    assert count.dtype == np.int64 and count.shape == (1,) and adam.steps == 0
    native._update(1.0)
    n = 3 * 256 // 32 if algo is PPO else native.config.n_critic_updates * -(-256 // native.config.batch_size)
    assert adam.step_count is count and count[0] == adam.steps == n
    state = adam.state_dict()
    assert type(state["steps"]) is int and state["steps"] == n
    adam.step()  # the torch path's step counts in the same array
    assert count[0] == n + 1
    adam.load_state_dict(state)
    assert adam.step_count is count and count[0] == n
    native._update(1.0)
    assert count[0] == 2 * n


def test_torch_path_where_native_does_not_apply():
    model = PPO("MlpPolicy", "CartPole-v1", n_steps=32, batch_size=32, policy_kwargs={"activation_fn": "gelu"})
    assert not model.native and isinstance(model.updater, TorchPpoUpdater)
    model = PPO("MlpPolicy", "CartPole-v1", n_steps=32, batch_size=32, backend="torch")
    assert not model.native and isinstance(model.updater, TorchPpoUpdater)
