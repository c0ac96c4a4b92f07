"""MinAtar's games by their ids (fastppo/envs/minatar.py): the env contract on gymnasium's vector env,
CnnPolicy's small encoder on the binary frames stored as bytes, the presets, and clear errors."""

import builtins

import gymnasium as gym
import numpy as np
import pytest
import torch

import fastppo
from fastppo.algos.cnn import SmallCNN
from fastppo.envs.minatar import GAMES, minatar_game

pytest.importorskip("minatar")


@pytest.mark.parametrize("game", GAMES)
def test_every_game_steps_with_binary_frames_and_whole_episodes(game):
    env = fastppo.make_vec_env(f"MinAtar/{game}-v1", 3, seed=0)
    obs, _ = env.reset()
    space = env.single_observation_space
    assert space.dtype == np.bool_ and space.shape[:2] == (10, 10) and obs.shape == (3, *space.shape)
    assert env.metadata["autoreset_mode"] == gym.vector.AutoresetMode.SAME_STEP
    rng, returns, finished = np.random.default_rng(0), np.zeros(3), []
    for _ in range(300 if game != "Freeway" else 2600):  # Freeway always lasts 2,500 frames
        obs, rewards, terminated, truncated, infos = env.step(rng.integers(0, env.single_action_space.n, 3))
        returns += rewards
        ended = terminated | truncated
        if ended.any():
            assert "final_obs" in infos and infos["final_obs"][ended.argmax()].shape == space.shape
            np.testing.assert_allclose(infos["episode"]["r"][ended], returns[ended])  # the episode's own sum
            finished.extend(returns[ended])
            returns[ended] = 0
    env.close()
    assert finished, f"no {game} episode ended under random actions"


def test_seeded_envs_repeat_and_differ_by_seed():
    def frames(seed):
        env = fastppo.make_vec_env("MinAtar/Asterix-v1", 2, seed=seed)
        env.reset()
        out = [env.step(np.array([1, 3]))[0] for _ in range(50)]
        env.close()
        return np.stack(out)

    np.testing.assert_array_equal(frames(3), frames(3))
    assert not np.array_equal(frames(3), frames(4))


def test_auto_trains_cnn_policy_with_the_small_encoder_on_stored_bytes():
    model = fastppo.PPO("auto", "MinAtar/Breakout-v1", num_envs=4, n_steps=32, batch_size=64, n_epochs=1, seed=0)
    assert model.policy_name == "CnnPolicy" and isinstance(model.policy.features_extractor, SmallCNN)
    assert model.rollout.obs.dtype == torch.uint8 and model.rollout.obs.shape == (32, 4, 10, 10, 4)
    before = [p.detach().clone() for p in model.policy.parameters()]
    model.learn(256)
    assert set(model.rollout.obs.unique().tolist()) == {0, 1}
    assert all(not torch.equal(b, p) for b, p in zip(before, model.policy.parameters()))
    action, _ = model.predict(fastppo.make_vec_env("MinAtar/Breakout-v1", 1, seed=1).reset()[0][0])
    assert action.shape == () and 0 <= int(action) < 3


def test_presets_and_ids():
    kwargs = fastppo.presets.get("MinAtar/SpaceInvaders-v1")
    assert kwargs["num_envs"] == 16 and kwargs["batch_size"] == 256 and kwargs["learning_rate"] == "lin_1e-3"
    assert fastppo.presets.total_timesteps("MinAtar/Seaquest-v0") == 5_000_000
    assert fastppo.presets.get("MinAtar/Breakout-v1", "trpo") == {}  # no TRPO preset
    assert minatar_game("MinAtar/SpaceInvaders-v0") == "SpaceInvaders"
    assert minatar_game("MinAtar/Pong-v1") is None and minatar_game("MinAtar/Breakout-v2") is None


def test_without_the_package_the_error_names_the_extra(monkeypatch):
    real_import = builtins.__import__

    def no_minatar(name, *args, **kwargs):
        if name.startswith("minatar"):
            raise ImportError(f"No module named {name!r}")
        return real_import(name, *args, **kwargs)

    monkeypatch.setattr(builtins, "__import__", no_minatar)
    without = {key: spec for key, spec in gym.registry.items() if not key.startswith("MinAtar/")}
    monkeypatch.setattr(gym, "registry", without)
    with pytest.raises(ImportError, match=r"pip install 'fastppo\[minatar\]'"):
        fastppo.make_vec_env("MinAtar/Breakout-v1", 1)
