"""Checkpoints (fastppo/algos/checkpoint.py): exact resume, atomic writes, and files that loading cannot
turn into code execution; every kind of bad file is a clear error."""

import os
import pickle
import subprocess
import sys

import numpy as np
import pytest
import torch
from torch import nn

import fastppo
from conftest import SaveAndStop
from fastppo.algos.checkpoint import FORMAT as CHECKPOINT_FORMAT


def cartpole(**overrides):
    kwargs = {**fastppo.presets.get("CartPole-v1"), "seed": 0, **overrides}
    return fastppo.PPO("MlpPolicy", "CartPole-v1", **kwargs)


def test_save_load_same_actions(tmp_path):
    model = cartpole(normalize_obs=True).learn(2_048, progress_bar=False)
    model.save(tmp_path / "m.pt")
    loaded = fastppo.PPO.load(tmp_path / "m.pt")
    obs = np.random.default_rng(0).standard_normal((64, 4)).astype(np.float32)
    np.testing.assert_array_equal(model.predict(obs, deterministic=True)[0], loaded.predict(obs, deterministic=True)[0])
    assert fastppo.load(tmp_path / "m.pt").num_timesteps == model.num_timesteps
    action, state = loaded.predict(obs[0], deterministic=True)
    assert np.ndim(action) == 0 and state is None


def test_resume_equals_uninterrupted(tmp_path):
    """A run checkpointed halfway (by a callback) and resumed from the file ends with the same weights
    as the run that was never interrupted (CPU, bit for bit), annealed schedules included."""
    kwargs = dict(normalize_obs=True, normalize_reward=True, n_epochs=2)
    straight = cartpole(**kwargs).learn(4 * 256, progress_bar=False)
    cartpole(**kwargs).learn(4 * 256, callback=SaveAndStop(tmp_path / "half.pt"), progress_bar=False)
    resumed = fastppo.PPO.load(tmp_path / "half.pt").learn(2 * 256, progress_bar=False, reset_num_timesteps=False)
    assert resumed.num_timesteps == straight.num_timesteps
    for (name, a), b in zip(straight.policy.state_dict().items(), resumed.policy.state_dict().values()):
        torch.testing.assert_close(a, b, rtol=0, atol=0, msg=f"{name} differs after resuming")


def test_checkpoint_write_is_atomic(tmp_path, monkeypatch):
    model = cartpole()
    path = tmp_path / "m.pt"
    model.save(path)
    good = path.read_bytes()

    def crash(*args, **kwargs):
        raise KeyboardInterrupt("killed mid-save")

    monkeypatch.setattr(torch, "save", crash)
    with pytest.raises(KeyboardInterrupt):
        model.save(path)
    assert path.read_bytes() == good and os.listdir(tmp_path) == ["m.pt"]


def test_checkpoint_mismatches(tmp_path):
    model = cartpole()
    model.save(tmp_path / "m.pt")
    with pytest.raises(ValueError, match="env has observation_space"):
        fastppo.PPO.load(tmp_path / "m.pt", env="Acrobot-v1")
    state = torch.load(tmp_path / "m.pt", weights_only=True)
    state["version"] = 99
    torch.save(state, tmp_path / "future.pt")
    with pytest.raises(ValueError, match="checkpoint format version 99 is not supported"):
        fastppo.PPO.load(tmp_path / "future.pt")
    (tmp_path / "junk.pt").write_bytes(b"not a checkpoint")
    with pytest.raises(ValueError, match="is not a readable fastppo checkpoint"):
        fastppo.load(tmp_path / "junk.pt")
    assert state["format"] == CHECKPOINT_FORMAT




class _Marker:
    """Unpickling this creates the file ``path``: what a malicious checkpoint would do (or worse)."""

    def __init__(self, path):
        self.path = str(path)

    def __reduce__(self):
        return (open, (self.path, "w"))


def _crafted(tmp_path):
    """A file shaped like a fastppo checkpoint whose unpickling would create a marker file."""
    marker = tmp_path / "pwned"
    model = cartpole()
    model.save(tmp_path / "good.pt")
    state = torch.load(tmp_path / "good.pt", weights_only=True)
    state["env_state"] = _Marker(marker)
    torch.save(state, tmp_path / "evil.pt")
    with open(tmp_path / "evil.pkl", "wb") as f:  # a plain pickle, not torch's zip layout
        pickle.dump({"format": CHECKPOINT_FORMAT, "x": _Marker(marker)}, f, protocol=2)
    return marker


def test_a_crafted_checkpoint_runs_nothing(tmp_path):
    marker = _crafted(tmp_path)
    for load in (fastppo.load, fastppo.PPO.load, fastppo.TRPO.load):
        with pytest.raises(ValueError, match="was refused: it holds objects that only a pickle can rebuild"):
            load(tmp_path / "evil.pt")
        with pytest.raises(ValueError, match="refused|not a readable fastppo checkpoint"):
            load(tmp_path / "evil.pkl")
    assert not marker.exists()


def test_fastppo_eval_refuses_a_crafted_checkpoint(tmp_path):
    marker = _crafted(tmp_path)
    out = subprocess.run([sys.executable, "-m", "fastppo", "eval", str(tmp_path / "evil.pt"), "--episodes", "1"],
                         capture_output=True, text=True, timeout=120, cwd=tmp_path)  # the installed package
    assert out.returncode != 0 and "was refused" in out.stderr and "trust" in out.stderr
    assert not marker.exists()


def test_old_pickle_format_needs_trust(tmp_path):
    """A format 2 file (fastppo 0.1 pickled the spaces and the config) is refused with the reason, and
    opens when the caller says it trusts it."""
    model = cartpole()
    state = torch.load(_saved(model, tmp_path), weights_only=True)
    from fastppo.algos import checkpoint

    state.update(version=2, observation_space=model.observation_space, action_space=model.action_space,
                 obs_normalizer=None, reward_scaler=None, env_state=None, last_obs=None)
    torch.save(state, tmp_path / "old.pt")
    with pytest.raises(ValueError, match="fastppo 0.1 .format 2. are pickles. If you trust this file"):
        fastppo.load(tmp_path / "old.pt")
    loaded = fastppo.load(tmp_path / "old.pt", trust_pickle=True)
    assert checkpoint.VERSION == 4 and loaded.num_timesteps == model.num_timesteps


def test_format_3_files_load_with_todays_names_and_meanings(tmp_path):
    """Before format 4, TRPO's hyperparameters had other names and PPO's vf_coef weighed half the MSE (the
    op's): such a file loads with the names renamed and vf_coef halved, so it trains as it did."""
    ppo = cartpole(vf_coef=0.25)
    state = torch.load(_saved(ppo, tmp_path), weights_only=True)
    state["version"], state["hyperparameters"]["vf_coef"] = 3, 0.5  # the op-level value fastppo stored
    torch.save(state, tmp_path / "ppo3.pt")
    assert fastppo.load(tmp_path / "ppo3.pt").config == ppo.config
    trpo = fastppo.TRPO("MlpPolicy", "CartPole-v1", n_steps=64, batch_size=64, target_kl=0.02, cg_max_steps=7,
                        line_search_shrinking_factor=0.5, seed=0)
    state = torch.load(_saved(trpo, tmp_path, "t.pt"), weights_only=True)
    hyper = state["hyperparameters"]
    for old, new in (("max_kl", "target_kl"), ("cg_iters", "cg_max_steps"),
                     ("line_search_shrink", "line_search_shrinking_factor")):
        hyper[old] = hyper.pop(new)
    del hyper["sub_sampling_factor"]
    state["version"] = 3
    torch.save(state, tmp_path / "trpo3.pt")
    assert fastppo.load(tmp_path / "trpo3.pt").config == trpo.config


def _saved(model, tmp_path, name="m.pt"):
    model.save(tmp_path / name)
    return tmp_path / name


def test_truncated_and_damaged_files_are_named(tmp_path):
    path = _saved(cartpole().learn(256, progress_bar=False), tmp_path)
    data = path.read_bytes()
    (tmp_path / "cut.pt").write_bytes(data[: len(data) // 2])
    with pytest.raises(ValueError, match="cut.pt' is not a readable fastppo checkpoint"):
        fastppo.load(tmp_path / "cut.pt")
    (tmp_path / "empty.pt").write_bytes(b"")
    with pytest.raises(ValueError, match="empty.pt' is not a readable fastppo checkpoint"):
        fastppo.load(tmp_path / "empty.pt")
    with pytest.raises(ValueError, match="is not a readable fastppo checkpoint"):
        fastppo.load(tmp_path / "missing.pt")
    state = torch.load(path, weights_only=True)
    state["observation_space"] = {"type": "Torus"}
    torch.save(state, tmp_path / "damaged.pt")
    with pytest.raises(ValueError, match="damaged.pt' is a damaged fastppo checkpoint"):
        fastppo.load(tmp_path / "damaged.pt")
    torch.save({"weights": torch.zeros(3)}, tmp_path / "other.pt")
    with pytest.raises(ValueError, match="other.pt' is not a fastppo checkpoint"):
        fastppo.load(tmp_path / "other.pt")


def test_another_algorithm_is_named(tmp_path):
    path = _saved(fastppo.TRPO("MlpPolicy", "CartPole-v1", n_steps=64, seed=0), tmp_path)
    with pytest.raises(ValueError, match="checkpoint holds a 'trpo' model"):
        fastppo.PPO.load(path)
    assert isinstance(fastppo.load(path), fastppo.TRPO)


def test_saved_before_learning_loads(tmp_path):
    model = cartpole()
    loaded = fastppo.PPO.load(_saved(model, tmp_path))
    assert loaded.num_timesteps == 0
    loaded.learn(256, progress_bar=False)


class _Net(nn.Module):
    def __init__(self):
        super().__init__()
        self.pi, self.v = nn.Linear(4, 2), nn.Linear(4, 1)

    def forward(self, obs):
        return self.pi(obs), self.v(obs).squeeze(-1)

    def value(self, obs):
        return self.v(obs).squeeze(-1)


def test_custom_modules_and_functions_are_not_stored(tmp_path):
    model = fastppo.PPO(_Net(), "CartPole-v1", n_steps=64, batch_size=64, learning_rate=lambda p: 1e-3 * p, seed=0)
    model.learn(128, progress_bar=False)
    path = _saved(model, tmp_path)
    with pytest.raises(ValueError, match=r"custom module \(test_checkpoint._Net\).*pass policy=<a new _Net>"):
        fastppo.PPO.load(path)
    with pytest.raises(ValueError, match="learning_rate was the function .*pass learning_rate= to load"):
        fastppo.PPO.load(path, policy=_Net())
    loaded = fastppo.PPO.load(path, policy=_Net(), learning_rate=lambda p: 1e-3 * p)
    obs = np.random.default_rng(0).standard_normal((8, 4)).astype(np.float32)
    np.testing.assert_array_equal(model.predict(obs, deterministic=True)[0], loaded.predict(obs, deterministic=True)[0])
