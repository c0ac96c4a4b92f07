"""PPO end to end: it learns (seeded budgets), it resumes exactly, it bootstraps truncation, and it
rejects what does not fit."""

import json
import os
import signal
import subprocess
import sys
import time

import gymnasium as gym
import numpy as np
import pytest
import torch
from torch import nn

import fastppo
from conftest import RecordMetrics, assert_solves_cartpole, requires_cuda
from fastppo.algos.interrupt import TrainingInterrupted


def cartpole(**overrides):
    kwargs = {**fastppo.presets.get("CartPole-v1"), "seed": 0, **overrides}
    return fastppo.PPO("MlpPolicy", "CartPole-v1", **kwargs)


@pytest.mark.parametrize("backend", ["auto", "torch"])
def test_solves_cartpole(backend):
    assert_solves_cartpole(cartpole(backend=backend).learn(60_000, progress_bar=False), f"PPO (backend={backend})")


@requires_cuda
def test_solves_cartpole_on_cuda():
    # the GPU path: policy, rollout storage, GAE and the fused loss on the GPU, the envs on the CPU
    model = cartpole(device="cuda").learn(60_000, progress_bar=False)
    assert all(p.is_cuda for p in model.policy.parameters())
    assert_solves_cartpole(model, "PPO on CUDA")


def test_kl_variant_learns_and_adapts_beta():
    model, record = cartpole(**fastppo.presets.get("CartPole-v1", "ppo-kl")), RecordMetrics()
    model.learn(60_000, callback=record, progress_bar=False)
    betas = [m["train/kl_coef"] for m in record.seen]
    mean, _ = fastppo.evaluate_policy(model, "CartPole-v1", n_eval_episodes=10, seed=123)
    assert mean >= 300, f"adaptive-KL PPO did not learn CartPole-v1: mean return {mean}"
    ratios = {round(b / a, 6) for a, b in zip(betas, betas[1:])}
    assert ratios <= {0.5, 1.0, 2.0} and len(ratios) > 1, f"beta must only halve, double or stay: {ratios}"


def test_pendulum_improves():
    kwargs = {**fastppo.presets.get("Pendulum-v1"), "seed": 0}
    model = fastppo.PPO("MlpPolicy", "Pendulum-v1", **kwargs)
    before, _ = fastppo.evaluate_policy(model, "Pendulum-v1", n_eval_episodes=10, seed=7)
    model.learn(60_000, progress_bar=False)
    after, _ = fastppo.evaluate_policy(model, "Pendulum-v1", n_eval_episodes=10, seed=7)
    assert after > before + 300, f"Pendulum-v1 did not improve clearly: {before:.0f} -> {after:.0f}"


class _CountingEnv(gym.Env):
    """Observation: the step index k within the episode. Reward 1 only on the step that hits the
    time limit (truncation); never terminates."""

    observation_space = gym.spaces.Box(0, 100, (1,), np.float32)
    action_space = gym.spaces.Discrete(2)

    def __init__(self, limit=5):
        self.limit = limit

    def reset(self, *, seed=None, options=None):
        super().reset(seed=seed)
        self.k = 0
        return np.array([0.0], np.float32), {}

    def step(self, action):
        self.k += 1
        at_limit = self.k == self.limit
        return np.array([self.k], np.float32), float(at_limit), False, at_limit, {}


class _ValueIsObs(nn.Module):
    """A fixed 'policy': uniform logits, V(obs) = obs."""

    def __init__(self):
        super().__init__()
        self.dummy = nn.Parameter(torch.zeros(1))

    def forward(self, obs):
        return torch.zeros(obs.shape[0], 2) + 0 * self.dummy, obs[:, 0]

    def value(self, obs):
        return obs[:, 0]


def test_truncation_bootstraps_from_final_observation():
    model = fastppo.PPO(_ValueIsObs(), _CountingEnv(limit=5), n_steps=12, batch_size=12, gamma=0.5,
                        gae_lambda=1.0, seed=0)
    model._reset_envs()
    model._collect(None)
    r = model.rollout
    trunc = r.truncated[:, 0].numpy()
    assert trunc.tolist() == [k % 5 == 4 for k in range(12)]
    # On a truncated step the next value is V(final obs) = 5, not V(reset obs) = 0.
    np.testing.assert_allclose(r.next_values[trunc, 0].numpy(), 5.0)
    fastppo.gae(r.rewards, r.values, r.next_values, r.terminated, r.truncated, gamma=0.5, lam=1.0,
                out=(r.advantages, r.returns))
    # Return at the truncated step: its reward (1) plus gamma * V(final obs).
    np.testing.assert_allclose(r.returns[trunc, 0].numpy(), 1 + 0.5 * 5.0)


@pytest.mark.parametrize("kwargs, exc, message", [
    (dict(learning_rate=0.0), ValueError, "learning_rate must be > 0"),
    (dict(learning_rate=-1e-3), ValueError, "learning_rate must be > 0"),
    (dict(clip_range=1.5), ValueError, "clip_range must be in (0, 1)"),
    (dict(clip_range=0.0), ValueError, "clip_range must be in (0, 1)"),
    (dict(n_steps=0), ValueError, "n_steps must be an integer >= 1"),
    (dict(gamma=1.5), ValueError, "gamma must be in [0, 1]"),
    (dict(ent_coef=-0.1), ValueError, "ent_coef must be >= 0"),
    (dict(variant="trust"), ValueError, "variant must be one of"),
    (dict(target_kl=0.0), ValueError, "target_kl must be > 0"),
    (dict(policy_kwargs={"activation_fn": "swish"}), ValueError,
     "policy_kwargs['activation_fn'] must be an nn.Module class or one of"),
])
def test_bad_hyperparameters(kwargs, exc, message):
    with pytest.raises(exc, match=_re(message)):
        cartpole(**kwargs)


def _re(message):
    import re

    return re.escape(message)


class _TupleObsEnv(_CountingEnv):
    observation_space = gym.spaces.Tuple([gym.spaces.Discrete(2), gym.spaces.Discrete(2)])


class _NaNEnv(_CountingEnv):
    def step(self, action):
        obs, *rest = super().step(action)
        return (obs * np.nan if self.k == 3 else obs), *rest


def test_unsupported_space():
    with pytest.raises(TypeError, match="observation_space must be Box, Discrete or a Dict of them, got Tuple"):
        fastppo.PPO("MlpPolicy", _TupleObsEnv())


def test_nan_observation_is_reported():
    model = fastppo.PPO("MlpPolicy", _NaNEnv(), n_steps=8, batch_size=8)
    with pytest.raises(ValueError, match=r"env returned a non-finite observation \(NaN or inf\) in env\(s\) \[0\]"):
        model.learn(8, progress_bar=False)


class _NaNRewardEnv(_CountingEnv):
    def step(self, action):
        obs, reward, *rest = super().step(action)
        return obs, (np.inf if self.k == 2 else reward), *rest


def test_nan_reward_is_reported():
    model = fastppo.PPO("MlpPolicy", _NaNRewardEnv(), n_steps=8, batch_size=8)
    with pytest.raises(ValueError, match=r"env returned a non-finite reward \(inf\) in env\(s\) \[0\] at timestep 2"):
        model.learn(8, progress_bar=False)


class _BadModule(_ValueIsObs):
    def __init__(self, fault):
        super().__init__()
        self.fault = fault

    def forward(self, obs):
        params, value = super().forward(obs)
        if self.fault == "nan":
            return params * np.nan, value
        return params[:, :1], value  # one logit for a Discrete(2) action


@pytest.mark.parametrize("fault, message", [
    ("nan", r"returned non-finite dist_params at step 0"),
    ("shape", r"returned dist_params of shape \(1, 1\) and value of shape \(1,\); this env needs \(1, 2\)"),
])
def test_bad_policy_module_output_is_reported(fault, message):
    model = fastppo.PPO(_BadModule(fault), _CountingEnv(), n_steps=8, batch_size=8)
    with pytest.raises(ValueError, match=message):
        model.learn(8, progress_bar=False)


def test_eval_callback_keeps_best(tmp_path):
    # eval_freq counts vector steps (SB3's calls): 256 x 8 envs = every 2,048 timesteps
    cb = fastppo.EvalCallback("CartPole-v1", eval_freq=256, n_eval_episodes=3, best_model_save_path=str(tmp_path),
                              log_path=str(tmp_path), verbose=0)
    cartpole().learn(4_096, callback=cb, progress_bar=False)
    assert cb.evaluations_timesteps == [2_048, 4_096] and (tmp_path / "best_model.zip").exists()
    best = int(np.argmax(np.mean(cb.evaluations_results, axis=1)))
    assert fastppo.load(tmp_path / "best_model").num_timesteps == cb.evaluations_timesteps[best]
    assert np.load(tmp_path / "evaluations.npz")["timesteps"].tolist() == [2_048, 4_096]


def test_cli_train_eval_plot(tmp_path):
    run = tmp_path / "run"
    cmd = [sys.executable, "-m", "fastppo", "train", "CartPole-v1", "--total-timesteps", "2048", "--run-dir",
           str(run), "--eval-episodes", "2", "--json", "--no-progress", "--set", "n_epochs=2"]
    # cwd elsewhere: `python -m` puts the cwd first on sys.path, and the source tree has no build
    out = subprocess.run(cmd, capture_output=True, text=True, check=True, cwd=tmp_path)
    summary = json.loads(out.stdout.strip().splitlines()[-1])
    assert set(summary) >= {"mean_return", "std_return", "timesteps", "wall_s", "model_path"}
    assert summary["timesteps"] >= 2048 and os.path.exists(summary["model_path"])
    header = (run / "progress.csv").read_text().splitlines()[0].split(",")
    assert {"train/policy_gradient_loss", "train/value_loss", "train/entropy_loss", "train/approx_kl",
            "train/clip_fraction", "time/fps", "rollout/ep_rew_mean", "time/total_timesteps"} <= set(header)
    ev = subprocess.run([sys.executable, "-m", "fastppo", "eval", summary["model_path"], "--episodes", "2", "--json"],
                        capture_output=True, text=True, check=True, cwd=tmp_path)
    assert json.loads(ev.stdout.strip().splitlines()[-1])["episodes"] == 2
    pytest.importorskip("matplotlib")
    subprocess.run([sys.executable, "-m", "fastppo", "plot", str(run)], check=True, capture_output=True, cwd=tmp_path)
    assert (run / "learning_curve.png").stat().st_size > 0


def test_same_seed_same_numbers():
    a = cartpole(n_epochs=2).learn(1024, progress_bar=False)
    b = cartpole(n_epochs=2).learn(1024, progress_bar=False)
    c = cartpole(n_epochs=2, seed=1).learn(1024, progress_bar=False)
    pa, pb, pc = (torch.cat([p.flatten() for p in m.policy.parameters()]) for m in (a, b, c))
    assert torch.equal(pa, pb) and not torch.equal(pa, pc)


def test_gsde_noise_has_the_distributions_scale():
    """gSDE: forward() gives the log-std of latent @ E, and the noise drawn with sample_exploration and
    sde_noise has that std (the log-probs of the rollout are those of the noise actually applied)."""
    from fastppo.algos.policies import ActorCritic

    torch.manual_seed(0)
    policy = ActorCritic(gym.spaces.Box(-1, 1, (3,), np.float32), gym.spaces.Box(-2, 2, (2,), np.float32),
                         use_sde=True, log_std_init=-1.0)
    obs = torch.randn(5, 3)
    with torch.no_grad():
        params, _ = policy(obs)
        latent = policy.actor[:-1](obs)
        expected = 0.5 * torch.log(latent.square() @ torch.exp(2 * policy.log_std) + 1e-6)
        torch.testing.assert_close(params[:, 2:], expected)
        draws = 20_000
        exploration = policy.sample_exploration(draws, torch.Generator().manual_seed(1))
        assert exploration.shape == (draws, 64, 2)
        noise = policy.sde_noise(obs[:1].expand(draws, 3), exploration)
    std = torch.exp(expected[0])
    # 20k draws: the sample std's relative standard error is 0.5%, the mean's standard error std/141
    torch.testing.assert_close(noise.std(0), std, rtol=0.03, atol=0)
    assert bool((noise.mean(0).abs() < 5 * std / draws**0.5).all())


def test_gsde_needs_box_actions_and_runs_on_the_torch_path():
    with pytest.raises(ValueError, match="use_sde needs a Box action space, got Discrete"):
        fastppo.PPO("MlpPolicy", "CartPole-v1", use_sde=True)
    model = fastppo.PPO("MlpPolicy", "Pendulum-v1", use_sde=True, sde_sample_freq=4, n_steps=64, batch_size=64)
    assert not model.policy.native_ok() and model.policy.log_std.shape == (64, 1)
    model.learn(128, progress_bar=False)  # the rollout's torch path with gSDE
    assert model.num_timesteps == 128


def test_interrupt_ends_the_iteration_and_resumes_exactly(tmp_path):
    """SIGINT mid-rollout: learn() finishes that iteration, then raises; saving and resuming from there
    ends where the uninterrupted run ends (CPU, bit for bit)."""

    class Interrupt(fastppo.Callback):
        def __init__(self, fire):
            self.fire = fire

        def on_step(self):
            if self.fire and self.model.iteration == 1 and self.model.num_timesteps == 256 + 8 * 10:
                os.kill(os.getpid(), signal.SIGINT)
            return True

    straight = cartpole().learn(4 * 256, callback=Interrupt(False), progress_bar=False)
    model = cartpole()
    with pytest.raises(TrainingInterrupted, match="interrupted after iteration 2 .timestep 512."):
        model.learn(4 * 256, callback=Interrupt(True), progress_bar=False)
    model.save(tmp_path / "m.pt")
    resumed = fastppo.PPO.load(tmp_path / "m.pt").learn(2 * 256, callback=Interrupt(False), progress_bar=False,
                                                        reset_num_timesteps=False)
    assert resumed.num_timesteps == straight.num_timesteps
    for (name, a), b in zip(straight.policy.state_dict().items(), resumed.policy.state_dict().values()):
        torch.testing.assert_close(a, b, rtol=0, atol=0, msg=f"{name} differs after the interrupt")


def test_fastppo_train_saves_on_sigint(tmp_path):
    run = tmp_path / "run"
    proc = subprocess.Popen([sys.executable, "-m", "fastppo", "train", "CartPole-v1", "--total-timesteps",
                             "100000000", "--run-dir", str(run), "--no-progress"], stderr=subprocess.PIPE, text=True,
                            cwd=tmp_path)  # the installed package, not the source tree
    try:
        deadline = time.monotonic() + 120
        while time.monotonic() < deadline:  # two logged iterations: training is under way
            if (run / "progress.csv").exists() and len((run / "progress.csv").read_text().splitlines()) > 2:
                break
            time.sleep(0.2)
        proc.send_signal(signal.SIGINT)
        _, err = proc.communicate(timeout=120)
    finally:
        proc.kill()
    assert proc.returncode == 130, err
    assert f"model saved to {run / 'model.pt'}" in err
    model = fastppo.load(run / "model.pt")
    assert model.num_timesteps == model.iteration * model.rollout_size > 0
