"""The rollout that stays on the policy's device (fastppo/algos/resident.py): on the CPU the same loop runs
over torch views of the native env's buffers, and is held here to StepCollector's numbers; on a GPU (the
tests marked cuda) the env is the CUDA engine and nothing in the rollout waits on the host."""

import numpy as np
import pytest
import torch

import fastppo
from fastppo import PPO, TRPO
from fastppo.algos.resident import ResidentCollector, env_device
from fastppo.algos.rollout import StepCollector, TorchActor

pytestmark = pytest.mark.skipif(not fastppo.backends()["numba"].available or not fastppo.backends()["cpp"].available,
                                reason="needs the native envs, and numba for a torch-path trainer on them")
HAS_CUDA = fastppo.backends()["cuda"].available
needs_cuda = pytest.mark.skipif(not HAS_CUDA, reason="needs a CUDA device")


def resident(model):
    """``model`` collecting with the resident loop over its CPU env (what a CUDA env gets by default)."""
    model._actor = model._actor or TorchActor(model)
    model._collectors[False] = ResidentCollector(model, model._actor)
    return model


# backend "numba": the torch path (TorchActor, torch update) on the native CPU envs
def pair(env_id, algo=PPO, **kwargs):
    kwargs = dict(n_steps=150, num_envs=3, batch_size=150, seed=11, backend="numba", **kwargs)
    return algo("MlpPolicy", env_id, **kwargs), resident(algo("MlpPolicy", env_id, **kwargs))


@pytest.mark.parametrize("env_id", ["CartPole-v1", "Pendulum-v1", "MountainCarContinuous-v0"])
def test_resident_rollout_matches_the_step_loop(env_id):
    # Pendulum's time limit of 200 falls inside the 2 x 150 steps: truncations bootstrap from final values,
    # which the resident loop computes in one batch at the end (StepCollector: step by step)
    stepped, kept = pair(env_id)
    for model in (stepped, kept):
        model._reset_envs()
    assert isinstance(stepped._collector(None), StepCollector) and isinstance(kept._collector(None), ResidentCollector)
    for _ in range(2):
        assert stepped._collect(None) and kept._collect(None)
        for name, a in stepped.rollout.flat().items():
            b = kept.rollout.flat()[name]
            if name in ("final_values", "next_values"):
                torch.testing.assert_close(b, a, rtol=1e-6, atol=1e-6, msg=name)
            else:
                assert torch.equal(a, b), name
        assert stepped.num_timesteps == kept.num_timesteps
        assert list(stepped.episode_returns) == list(kept.episode_returns)
        assert list(stepped.episode_lengths) == list(kept.episode_lengths)
        assert torch.equal(stepped._last_obs, kept._last_obs)
    if env_id == "Pendulum-v1":
        assert kept.rollout.truncated.any() and kept.episode_returns


@pytest.mark.parametrize("algo", [PPO, TRPO])
def test_training_with_the_resident_rollout_gives_the_same_parameters(algo):
    stepped, kept = pair("Pendulum-v1", algo)
    for model in (stepped, kept):
        model.learn(900)
    for a, b in zip(stepped.policy.parameters(), kept.policy.parameters()):
        torch.testing.assert_close(b, a, rtol=1e-5, atol=1e-6)


def test_resident_rollout_learns_cartpole():
    model = resident(PPO("MlpPolicy", "CartPole-v1", backend="numba", seed=0, **fastppo.presets.get("CartPole-v1")))
    model.learn(fastppo.presets.total_timesteps("CartPole-v1"))
    mean, _ = fastppo.evaluate_policy(model, "CartPole-v1", n_eval_episodes=10, seed=123)
    assert mean >= 475, f"scored {mean} after the preset's budget"


class _Stop(fastppo.Callback):
    def __init__(self, at):
        super().__init__()
        self.at, self.steps = at, 0

    def on_step(self):
        self.steps += 1
        return self.steps < self.at


def test_per_step_callbacks_run_and_stop_the_resident_rollout():
    model = resident(PPO("MlpPolicy", "CartPole-v1", n_steps=64, num_envs=4, backend="numba", seed=0))
    model._collectors[True] = model._collectors[False]
    callback = _Stop(at=10)
    model.learn(10_000, callback=callback)
    assert callback.steps == 10 and model.num_timesteps == 40  # stopped at the 10th step, before any update


def test_sb3_locals_callbacks_are_refused_on_the_resident_rollout():
    from stable_baselines3.common.callbacks import CheckpointCallback

    model = resident(PPO("MlpPolicy", "CartPole-v1", n_steps=64, num_envs=4, backend="numba", seed=0))
    model._collectors[True] = model._collectors[False]
    with pytest.raises(ValueError, match="reads SB3's rollout locals at every step"):
        model.learn(256, callback=CheckpointCallback(1000, "unused"))


def test_non_finite_parameters_are_reported_with_their_step():
    model = resident(PPO("MlpPolicy", "CartPole-v1", n_steps=16, num_envs=2, batch_size=32, backend="numba", seed=0))
    model._reset_envs()
    with torch.no_grad():
        model.policy.actor[-1].bias.fill_(float("nan"))
    with pytest.raises(ValueError, match="non-finite dist_params at step 0"):
        model._collect(None)


def test_where_the_trainer_makes_its_env(monkeypatch):
    config = PPO("MlpPolicy", "CartPole-v1", backend="numba").config
    cuda = torch.device("cuda", 1)
    monkeypatch.setattr(fastppo._backend, "_unavailable", lambda name: None)  # as with a CUDA build and a GPU
    assert env_device("CartPole-v1", cuda, "auto", config) == "cuda:1"
    assert env_device("CartPole-v1", torch.device("cpu"), "auto", config) == "cpu"
    assert env_device("HalfCheetah-v5", cuda, "auto", config) == "cpu"  # not built in
    assert env_device("CartPole-v1", cuda, "torch", config) == "cpu"  # the reference path: gymnasium's envs
    assert env_device(fastppo.make_vec_env("CartPole-v1", 2), cuda, "auto", config) == "cpu"  # the user's env
    normalized = PPO("MlpPolicy", "CartPole-v1", backend="numba", normalize_obs=True).config
    assert env_device("CartPole-v1", cuda, "auto", normalized) == "cpu"  # statistics on the host
    monkeypatch.setattr(fastppo._backend, "_unavailable", lambda name: "no CUDA build")
    assert env_device("CartPole-v1", cuda, "auto", config) == "cpu"


@needs_cuda
def test_on_a_gpu_the_env_and_the_rollout_stay_there_without_a_host_sync():
    model = PPO("MlpPolicy", "CartPole-v1", device="cuda", seed=0, **fastppo.presets.get("CartPole-v1"))
    assert model.env.device.startswith("cuda") and isinstance(model._collector(None), ResidentCollector)
    model._reset_envs()
    collector = model._collector(None)
    torch.cuda.synchronize()
    torch.cuda.set_sync_debug_mode("error")  # any host sync in the loop raises
    try:
        for t in range(model.n_steps):  # the loop's body, without the one read-back at the end
            action, params = collector.actor.sample(t, model._last_obs)
            obs, *_ = model.env.step_sampled(model.action_spec.to_env(action))
            model._last_obs = obs
    finally:
        torch.cuda.set_sync_debug_mode("default")
    assert model._collect(None) and model.rollout.obs.device.type == "cuda"


@needs_cuda
def test_on_a_gpu_cartpole_is_solved():
    model = PPO("MlpPolicy", "CartPole-v1", device="cuda", seed=0, **fastppo.presets.get("CartPole-v1"))
    model.learn(fastppo.presets.total_timesteps("CartPole-v1"))
    mean, _ = fastppo.evaluate_policy(model, "CartPole-v1", n_eval_episodes=10, seed=123)
    assert mean >= 475, f"scored {mean} after the preset's budget on the GPU"


@pytest.mark.parametrize("env_id", ["CartPole-v1", "Pendulum-v1"])
def test_staged_host_rows_give_the_step_loops_rollout(env_id):
    # a rollout on a GPU stages the env's rewards and done flags in (pinned) host rows and copies them to
    # the device once per rollout; the same staging on the CPU gives the same rollout as writing them
    # step by step, also when a callback stops the loop part way
    direct, staged = (PPO("MlpPolicy", env_id, n_steps=150, num_envs=3, batch_size=150, seed=11, backend="numba")
                      for _ in range(2))
    for model in (direct, staged):
        model._reset_envs()
        model._actor = TorchActor(model)
    staged._collectors[False] = StepCollector(staged, staged._actor, stage=True)
    staged._collectors[True] = StepCollector(staged, staged._actor, stage=True)
    assert direct._collect(None) and staged._collect(None)
    for name, a in direct.rollout.flat().items():
        assert torch.equal(a, staged.rollout.flat()[name]), name
    for model in (direct, staged):
        stop = _Stop(at=20)
        stop.init(model)
        assert not model._collect(stop)
    for name in ("rewards", "terminated", "truncated"):
        assert torch.equal(getattr(direct.rollout, name)[:20], getattr(staged.rollout, name)[:20]), name
