"""PPO's ``torch_compile`` option: the policy's forward compiled by torch.compile, on the torch path, for the
built-in MLP and custom modules, checked here on the CPU (inductor's C++ backend). The GPU side (inductor's
GPU kernels, mode="reduce-overhead"'s graph capture) is measured by bench/gpu_bench.py, not tested here."""

import numpy as np
import pytest
import torch
from torch import nn

import fastppo
from conftest import assert_solves_cartpole

SMALL = dict(n_steps=32, num_envs=4, batch_size=64, n_epochs=2, seed=0, backend="torch")


@pytest.fixture(autouse=True)
def fresh_dynamo():
    """Each test compiles from scratch and counts only its own graphs."""
    torch._dynamo.reset()
    torch._dynamo.utils.counters.clear()
    yield
    torch._dynamo.reset()


class TwoHeads(nn.Module):
    """A custom module: fastppo's forward contract, no value() method."""

    def __init__(self):
        super().__init__()
        self.body = nn.Sequential(nn.Linear(4, 64), nn.Tanh(), nn.Linear(64, 64), nn.Tanh())
        self.pi, self.v = nn.Linear(64, 2), nn.Linear(64, 1)

    def forward(self, obs):
        h = self.body(obs)
        return self.pi(h), self.v(h).squeeze(-1)


def test_a_compiled_policy_trains_as_the_eager_one():
    """The same seeded run with and without compilation: the graphs were compiled and used, and the
    parameters agree to float32 rounding (inductor fuses and reorders, so not bit for bit)."""
    eager = fastppo.PPO("MlpPolicy", "CartPole-v1", **SMALL).learn(256, progress_bar=False)
    compiled = fastppo.PPO("MlpPolicy", "CartPole-v1", torch_compile=True, **SMALL)
    assert not compiled.native  # the native trainer never calls forward()
    compiled.learn(256, progress_bar=False)
    assert torch._dynamo.utils.counters["stats"]["unique_graphs"] >= 1
    assert compiled.policy.state_dict().keys() == eager.policy.state_dict().keys()  # no "_orig_mod." prefix
    for (name, a), b in zip(eager.policy.state_dict().items(), compiled.policy.state_dict().values()):
        torch.testing.assert_close(b, a, rtol=1e-4, atol=1e-5, msg=name)
    initial = fastppo.PPO("MlpPolicy", "CartPole-v1", **SMALL).policy.state_dict()
    assert any(not torch.equal(initial[k], v) for k, v in eager.policy.state_dict().items())  # it trained


def test_a_compiled_custom_module_solves_cartpole():
    model = fastppo.PPO(TwoHeads(), "CartPole-v1", torch_compile={"dynamic": True},
                        **{**fastppo.presets.get("CartPole-v1"), "seed": 0})
    model.learn(60_000, progress_bar=False)
    assert torch._dynamo.utils.counters["stats"]["unique_graphs"] >= 1
    assert_solves_cartpole(model, "PPO with a compiled custom module")


def test_a_compiled_model_saves_and_loads(tmp_path):
    model = fastppo.PPO("MlpPolicy", "CartPole-v1", torch_compile=True, **SMALL).learn(128, progress_bar=False)
    model.save(tmp_path / "m.pt")
    loaded = fastppo.PPO.load(tmp_path / "m.pt")
    assert loaded.config.torch_compile is True and not loaded.native
    obs = np.random.default_rng(0).standard_normal((8, 4)).astype(np.float32)
    np.testing.assert_array_equal(loaded.predict(obs, deterministic=True)[0], model.predict(obs, deterministic=True)[0])


@pytest.mark.parametrize("value, message", [
    ("yes", "torch_compile must be True, False or a dict of torch.compile's keyword arguments, got 'yes'"),
    ({1: 2}, r"torch_compile must be True, False or a dict .*got \{1: 2\}"),
    ({"mode": "fastest"}, r"torch_compile=\{'mode': 'fastest'\} was refused by torch.compile: .*fastest"),
    ({"speed": 3}, r"torch_compile=\{'speed': 3\} was refused by torch.compile"),
])
def test_bad_options_are_refused_by_name(value, message):
    with pytest.raises(ValueError, match=message):
        fastppo.PPO("MlpPolicy", "CartPole-v1", torch_compile=value, **SMALL)


def test_trpo_refuses_it_with_the_reason():
    with pytest.raises(ValueError, match="torch_compile is not supported by TRPO: its Fisher-vector products"):
        fastppo.TRPO("MlpPolicy", "CartPole-v1", torch_compile=True)
