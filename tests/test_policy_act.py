"""The native rollout step (fastppo._core.PolicyAct) against its spec: ActorCritic.forward and the
distributions of fastppo/algos/distributions.py."""

import gymnasium as gym
import numpy as np
import pytest
import torch

import fastppo
from fastppo.algos.policies import ActorCritic

pytestmark = pytest.mark.skipif(not fastppo.backends()["cpp"].available, reason="needs the native extension")

SPACES = {
    "discrete": gym.spaces.Discrete(3),
    "multidiscrete": gym.spaces.MultiDiscrete([2, 4]),
    "box": gym.spaces.Box(-1, 1, (2,), np.float32),
}


def _act(policy, obs, seed=1, step=0):
    spec = policy.action_spec
    n = obs.shape[0]
    actions = np.zeros((n, *spec.shape), np.float32 if spec.kind == "gaussian" else np.int64)
    log_probs, values = np.zeros(n, np.float32), np.zeros(n, np.float32)
    params = np.zeros((n, spec.n_params), np.float32)
    policy.native_act().act(obs, actions, log_probs, values, params, seed, step)
    return actions, log_probs, values, params


@pytest.mark.parametrize("space", SPACES, ids=str)
@pytest.mark.parametrize("activation", ["tanh", "relu"])
def test_matches_torch_forward(space, activation):
    torch.manual_seed(0)
    obs_space = gym.spaces.Box(-5, 5, (5,), np.float32)
    policy = ActorCritic(obs_space, SPACES[space], net_arch=(16, 8), activation_fn=activation, log_std_init=-0.5)
    obs = np.random.default_rng(0).standard_normal((300, 5)).astype(np.float32)
    actions, log_probs, values, params = _act(policy, obs)
    with torch.no_grad():
        ref_params, ref_values = policy(torch.from_numpy(obs))
        dist = policy.action_spec.distribution(ref_params)
        ref_log_probs = dist.log_prob(torch.from_numpy(actions))
    # float32 sums in another order than torch's kernels: a few ulps
    np.testing.assert_allclose(values, ref_values.numpy(), rtol=1e-5, atol=1e-5)
    np.testing.assert_allclose(params, ref_params.numpy(), rtol=1e-5, atol=1e-5)
    np.testing.assert_allclose(log_probs, ref_log_probs.numpy(), rtol=1e-4, atol=1e-5)


def test_categorical_samples_follow_the_probabilities():
    torch.manual_seed(0)
    policy = ActorCritic(gym.spaces.Box(-1, 1, (2,), np.float32), gym.spaces.Discrete(4), net_arch=(8,))
    with torch.no_grad():
        policy.actor[-1].bias.copy_(torch.tensor([0.0, 1.0, 2.0, -1.0]))
    obs = np.zeros((20_000, 2), np.float32)
    actions, *_ = _act(policy, obs)
    probs = torch.softmax(policy.actor(torch.zeros(1, 2)), -1).detach().numpy()[0]
    freq = np.bincount(actions, minlength=4) / len(actions)
    # 20k draws: each frequency's standard error is below 0.0036; 5 standard errors
    np.testing.assert_allclose(freq, probs, atol=0.018)


def test_gaussian_samples_have_the_mean_and_std():
    policy = ActorCritic(gym.spaces.Box(-1, 1, (2,), np.float32), gym.spaces.Box(-1, 1, (1,), np.float32),
                         net_arch=(8,), log_std_init=np.log(0.5))
    obs = np.zeros((20_000, 2), np.float32)
    actions, _, _, params = _act(policy, obs)
    mean = params[0, 0]
    # standard error of the mean 0.5 / sqrt(20000) = 0.0035; of the std about 0.0025: 5 standard errors
    assert abs(actions.mean() - mean) < 0.018 and abs(actions.std() - 0.5) < 0.013


def test_same_seed_same_samples_and_steps_differ():
    policy = ActorCritic(gym.spaces.Box(-1, 1, (3,), np.float32), gym.spaces.Discrete(5))
    obs = np.random.default_rng(1).standard_normal((64, 3)).astype(np.float32)
    a1, a2, a3 = _act(policy, obs, 7, 0)[0], _act(policy, obs, 7, 0)[0], _act(policy, obs, 7, 1)[0]
    assert np.array_equal(a1, a2) and not np.array_equal(a1, a3)


def test_bad_buffers_are_rejected():
    policy = ActorCritic(gym.spaces.Box(-1, 1, (3,), np.float32), gym.spaces.Discrete(2))
    native = policy.native_act()
    obs = np.zeros((4, 3), np.float32)
    with pytest.raises(ValueError, match=r"obs must be float32 of shape \(N, 3\)"):
        native.act(np.zeros((4, 2), np.float32), np.zeros(4, np.int64), np.zeros(4, np.float32),
                   np.zeros(4, np.float32), np.zeros((4, 2), np.float32), 0, 0)
    with pytest.raises(ValueError, match=r"actions must be int64 of shape \(4,\)"):
        native.act(obs, np.zeros(4, np.float32), np.zeros(4, np.float32), np.zeros(4, np.float32),
                   np.zeros((4, 2), np.float32), 0, 0)
    with pytest.raises(ValueError, match=r"dist_params must be float32 of shape \(N, 2\)"):
        native.act(obs, np.zeros(4, np.int64), np.zeros(4, np.float32), np.zeros(4, np.float32),
                   np.zeros((4, 3), np.float32), 0, 0)


@pytest.mark.parametrize("space", ["discrete", "box"])
def test_refresh_takes_a_new_snapshot_of_the_same_memory(space):
    """PolicyAct keeps views of the parameters it was built from: it acts with a snapshot (parameters
    changed in place afterwards do not reach it) until refresh() takes a new one from the same memory."""
    torch.manual_seed(0)
    policy = ActorCritic(gym.spaces.Box(-5, 5, (4,), np.float32), SPACES[space], net_arch=(16, 8), log_std_init=-0.5)
    obs = np.random.default_rng(2).standard_normal((50, 4)).astype(np.float32)
    native = policy.native_act()

    def act(native):
        spec = policy.action_spec
        out = (np.zeros((50, *spec.shape), np.float32 if spec.kind == "gaussian" else np.int64),
               np.zeros(50, np.float32), np.zeros(50, np.float32), np.zeros((50, spec.n_params), np.float32))
        native.act(obs, *out, 3, 0)
        return out

    before = act(native)
    with torch.no_grad():  # an update, in place, as the trainers make it
        for p in policy.parameters():
            p.add_(0.1 * torch.randn_like(p))
    for got, want in zip(act(native), before):  # still the snapshot
        assert np.array_equal(got, want)
    native.refresh()
    after = act(native)
    for got, want in zip(after, act(policy.native_act())):  # what a new one over the new parameters gives
        assert np.array_equal(got, want)
    assert not np.array_equal(after[3], before[3])
    with torch.no_grad():
        ref_params, ref_values = policy(torch.from_numpy(obs))
    np.testing.assert_allclose(after[2], ref_values.numpy(), rtol=1e-5, atol=1e-5)
    np.testing.assert_allclose(after[3], ref_params.numpy(), rtol=1e-5, atol=1e-5)
