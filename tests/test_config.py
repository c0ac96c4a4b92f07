"""Typed hyperparameters (fastppo/algos/config.py): validation in one place, one name from the public
API to the loss op, and the same config behind the constructors, checkpoints, presets and the CLI."""

import dataclasses
import inspect

import pytest

import fastppo
from fastppo import presets
from fastppo.algos.config import PPOConfig, TRPOConfig
from fastppo.cli import main


@pytest.mark.parametrize("cls", [PPOConfig, TRPOConfig])
def test_every_field_has_help(cls):
    for f in dataclasses.fields(cls):
        assert len(f.metadata.get("help", "")) > 10, f.name


@pytest.mark.parametrize("algo", presets.ALGOS)
@pytest.mark.parametrize("env_id", presets.env_ids())
def test_every_preset_is_a_valid_config(env_id, algo):
    config = presets.algorithm_class(algo).config_class.from_kwargs(presets.get(env_id, algo))
    assert config.to_dict()["n_steps"] >= 1


@pytest.mark.parametrize("kwargs, message", [
    ({"clip_range": 1.5}, r"clip_range must be in \(0, 1\)"),
    ({"n_steps": 0}, "n_steps must be an integer >= 1"),
    ({"gamma": 1.5}, r"gamma must be in \[0, 1\]"),
    ({"variant": "adaptive"}, "variant must be one of"),
    ({"target_kl": 0}, r"target_kl must be > 0 \(or None\)"),
    ({"learning_rate": "lin_x"}, "could not convert|learning_rate must be"),
])
def test_bad_values_are_named(kwargs, message):
    with pytest.raises(ValueError, match=message):
        PPOConfig(**kwargs)


def test_unknown_names_are_reported_with_the_known_ones():
    with pytest.raises(TypeError, match=r"unknown hyperparameter\(s\) 'clip_rang' for PPOConfig; known: .*clip_range"):
        fastppo.PPO("MlpPolicy", "CartPole-v1", clip_rang=0.1)
    with pytest.raises(TypeError, match="'n_epochs'"):
        fastppo.TRPO("MlpPolicy", "CartPole-v1", n_epochs=3)


def test_constructor_signature_lists_the_fields():
    params = inspect.signature(fastppo.PPO).parameters
    assert params["clip_range"].default == 0.2 and params["n_steps"].default == 2048
    assert inspect.signature(fastppo.TRPO).parameters["learning_rate"].default == 1e-3


def test_config_object_and_keywords_agree():
    config = PPOConfig(n_steps=32, batch_size=32, seed=1)
    a = fastppo.PPO("MlpPolicy", "CartPole-v1", config=config)
    b = fastppo.PPO("MlpPolicy", "CartPole-v1", n_steps=32, batch_size=32, seed=1)
    assert a.config == b.config
    c = fastppo.PPO("MlpPolicy", "CartPole-v1", config=config, n_epochs=2)  # keywords replace fields
    assert c.config.n_epochs == 2 and c.config.n_steps == 32
    assert a.n_steps == 32 and a.gamma == 0.99  # hyperparameters read as attributes


def test_loss_kwargs_is_the_one_translation_to_the_ops_names():
    config = PPOConfig(clip_range_vf=0.3, ent_coef=0.01, vf_coef=0.7, normalize_advantage=True, variant="kl")
    # the op's value loss is half SB3's MSE: its vf_coef is twice SB3's; its max-form vf_clip is never passed
    assert config.loss_kwargs(0.1, 0.5, 64) == dict(clip_coef=0.1, vf_coef=1.4, ent_coef=0.01,
                                                    normalize_advantages=True, kl_coef=0.5)
    assert config.loss_kwargs(0.1, 0.5, 1)["normalize_advantages"] is False  # one sample has no std


@pytest.mark.parametrize("value, at_start, at_end", [(None, None, None), (0.2, 0.2, 0.2), ("lin_0.2", 0.2, 0.0),
                                                     (lambda p: 0.1 + p, 1.1, 0.1)])
def test_clip_range_vf_is_a_schedule_as_sb3s(value, at_start, at_end):
    schedule = PPOConfig(clip_range_vf=value).clip_vf_schedule
    assert (schedule is None) == (value is None)
    if schedule is not None:
        assert (schedule(1.0), schedule(0.0)) == (at_start, at_end)


@pytest.mark.parametrize("value", [0.0, -0.1, "lin_0", lambda p: 0.0])
def test_clip_range_vf_must_start_positive(value):
    with pytest.raises(ValueError, match="clip_range_vf must be > 0"):
        PPOConfig(clip_range_vf=value)


def test_checkpoint_keeps_the_config(tmp_path):
    model = fastppo.PPO("MlpPolicy", "CartPole-v1", n_steps=32, batch_size=16, clip_range="lin_0.1", seed=0)
    model.save(tmp_path / "m.pt")
    assert fastppo.load(tmp_path / "m.pt").config == model.config


def test_cli_set_is_checked_against_the_fields(tmp_path, capsys):
    run = ["train", "CartPole-v1", "--total-timesteps", "64", "--run-dir", str(tmp_path), "--no-progress"]
    with pytest.raises(SystemExit, match="ppo has no hyperparameter 'clip_rang'; it has .*clip_range"):
        main(run + ["--set", "clip_rang=0.1"])
    with pytest.raises(SystemExit) as exc:
        main(run + ["--set", "clip_range=2"])
    assert "clip_range must be in (0, 1)" in str(exc.value)
    assert PPOConfig.help("clip_range") in str(exc.value)  # the field's help comes with the error
