"""Every SB3-named hyperparameter means what it means in Stable-Baselines3 (and sb3-contrib for TRPO),
shown against SB3 itself: the same weights and the same rollout put into SB3's PPO and fastppo's, one
update on each (one epoch of one minibatch, so shuffling does not matter), then the same gradients,
parameters and logged losses — on fastppo's torch path and on its native one. fastppo's fused op keeps
its own conventions (half-MSE value loss, max-form ``vf_clip``); these tests show the trainer translates
them exactly."""

import inspect

import gymnasium as gym

import numpy as np
import pytest
import torch

import fastppo
from fastppo.algos.config import PPOConfig, TRPOConfig

sb3 = pytest.importorskip("stable_baselines3")
sb3_contrib = pytest.importorskip("sb3_contrib")
from stable_baselines3.common.logger import configure  # noqa: E402


def fastppo_metrics(metrics: dict) -> dict:
    """fastppo's ``_update`` metrics: SB3's logger keys (``train/...``) with SB3's meanings, all of them ones
    SB3's ``train()`` logs too (the row's train/explained_variance and train/std come later, in ``_log``)."""
    assert metrics and all(key.startswith("train/") for key in metrics), sorted(metrics)
    return metrics


# fastppo's parameter -> SB3's ActorCriticPolicy's (MlpPolicy: separate actor and critic MLPs)
SB3_NAMES = {"log_std": "log_std", "actor.0": "mlp_extractor.policy_net.0", "actor.2": "mlp_extractor.policy_net.2",
             "actor.4": "action_net", "critic.0": "mlp_extractor.value_net.0", "critic.2": "mlp_extractor.value_net.2",
             "critic.4": "value_net"}
N_STEPS = 64


def _sb3_name(name: str) -> str:
    layer, _, kind = name.rpartition(".")
    return SB3_NAMES[name] if name in SB3_NAMES else f"{SB3_NAMES[layer]}.{kind}"


def _backend(backend):
    if backend == "auto" and not fastppo.backends()["cpp"].available:
        pytest.skip("the native path needs the compiled extension")
    return backend


def _twins(sb3_class, fastppo_class, env_id, backend, **kwargs):
    """fastppo's model with one collected rollout (old log-probs and values perturbed, so that the
    ratio, its clipping and the value clipping all act), and SB3's model with the same weights and
    that rollout in its buffer; one minibatch of the whole rollout, one env."""
    ours = fastppo_class("MlpPolicy", env_id, n_steps=N_STEPS, batch_size=N_STEPS, seed=0, backend=backend, **kwargs)
    assert ours.native == (backend == "auto")
    ours._reset_envs()
    ours._collect(None)
    ours._advantages()
    data = ours.rollout.flat()
    gen = torch.Generator().manual_seed(1)
    data["log_probs"].add_(0.3 * torch.randn(N_STEPS, generator=gen))
    data["values"].add_(0.5 * torch.randn(N_STEPS, generator=gen))

    theirs = sb3_class("MlpPolicy", env_id, n_steps=N_STEPS, batch_size=N_STEPS, device="cpu", seed=0, **kwargs)
    theirs.set_logger(configure(None, []))
    sb3_params = dict(theirs.policy.named_parameters())
    with torch.no_grad():
        for name, p in ours.policy.named_parameters():
            sb3_params[_sb3_name(name)].copy_(p.view_as(sb3_params[_sb3_name(name)]))
    buf = theirs.rollout_buffer
    buf.observations[:] = data["obs"].numpy().reshape(buf.observations.shape)
    buf.actions[:] = data["actions"].numpy().reshape(buf.actions.shape)
    for field, key in (("rewards", "rewards"), ("returns", "returns"), ("values", "values"),
                       ("log_probs", "log_probs"), ("advantages", "advantages")):
        getattr(buf, field)[:] = data[key].numpy().reshape(N_STEPS, 1)
    buf.full, buf.generator_ready = True, False
    theirs._current_progress_remaining = 1.0
    return ours, theirs


def _assert_same_tensors(ours, theirs, what, *, rtol=0.0, atol_of_max=0.0, atol=0.0, only=""):
    """fastppo's tensors (by its parameter names, those starting with ``only``) against SB3's, within
    ``rtol`` and ``atol`` plus ``atol_of_max`` times the tensor's largest entry (float32 sums in another
    order)."""
    sb3_params = dict(theirs.policy.named_parameters())
    for name, p in ours.policy.named_parameters():
        if not name.startswith(only):
            continue
        mine, sb3s = what(p), what(sb3_params[_sb3_name(name)])
        assert mine is not None and sb3s is not None, name
        mine, sb3s = mine.detach(), sb3s.detach()
        np.testing.assert_allclose(mine.reshape(sb3s.shape).numpy(), sb3s.numpy(), rtol=rtol,
                                   atol=atol + atol_of_max * float(sb3s.abs().max()), err_msg=name)


CASES = {
    "vf_coef 0.5": dict(vf_coef=0.5),
    "vf_coef 0.25": dict(vf_coef=0.25),
    "clip_range_vf 0.1": dict(clip_range_vf=0.1),
    "ent_coef 0.01": dict(ent_coef=0.01),
    "max_grad_norm binding": dict(max_grad_norm=0.05),
}


@pytest.mark.parametrize("backend", ["torch", "auto"])
@pytest.mark.parametrize("env_id", ["CartPole-v1", "Pendulum-v1"])
@pytest.mark.parametrize("case", CASES)
def test_ppo_update_matches_sb3(case, env_id, backend):
    kwargs = dict(n_epochs=1, **CASES[case])
    ours, theirs = _twins(sb3.PPO, fastppo.PPO, env_id, _backend(backend), **kwargs)
    data, config = ours.rollout.flat(), ours.config
    if config.clip_range_vf is not None:  # the case means something: most value steps are clipped
        with torch.no_grad():
            steps = ours.policy(data["obs"])[1].flatten() - data["values"]
        assert float((steps.abs() > config.clip_range_vf).float().mean()) > 0.5
    metrics = ours._update(1.0)
    theirs.train()

    # the gradients of the one minibatch (both leave them, clipped, after the step): the value loss's
    # scale (vf_coef), the clipping of values, the entropy bonus and the norm clip all show here
    _assert_same_tensors(ours, theirs, lambda p: p.grad, rtol=1e-4, atol_of_max=1e-5)
    _assert_same_tensors(ours, theirs, lambda p: p, atol_of_max=1e-5)
    logged = theirs.logger.name_to_value
    for key, value in fastppo_metrics(metrics).items():
        assert key in logged, f"{key} is not one of SB3's keys"
        np.testing.assert_allclose(value, logged[key], rtol=1e-5, atol=1e-7, err_msg=key)


def test_ppo_hyperparameters_have_sb3s_names_and_defaults():
    names = ["learning_rate", "n_steps", "batch_size", "n_epochs", "gamma", "gae_lambda", "clip_range",
             "clip_range_vf", "normalize_advantage", "ent_coef", "vf_coef", "max_grad_norm", "use_sde",
             "sde_sample_freq", "target_kl"]
    _assert_same_defaults(sb3.PPO, PPOConfig, names)


def test_trpo_hyperparameters_have_sb3_contribs_names_and_defaults():
    names = ["learning_rate", "n_steps", "batch_size", "gamma", "cg_max_steps", "cg_damping",
             "line_search_shrinking_factor", "line_search_max_iter", "n_critic_updates", "gae_lambda", "use_sde",
             "sde_sample_freq", "normalize_advantage", "target_kl", "sub_sampling_factor"]
    _assert_same_defaults(sb3_contrib.TRPO, TRPOConfig, names)


def _assert_same_defaults(sb3_class, config_class, names):
    theirs = inspect.signature(sb3_class).parameters
    ours = {f: getattr(config_class(), f) for f in config_class.field_names()}
    for name in names:
        assert name in theirs, f"{sb3_class.__name__} has no {name} (this list is out of date)"
        assert name in ours, f"{config_class.__name__} lacks SB3's {name}"
        assert ours[name] == theirs[name].default, name


@pytest.mark.parametrize("backend", ["torch", "auto"])
@pytest.mark.parametrize("env_id", ["CartPole-v1", "Pendulum-v1"])
def test_trpo_critic_fit_matches_sb3_contrib(env_id, backend):
    """sb3-contrib's TRPO regresses the critic on the MSE with SB3's Adam (eps 1e-5): with one pass of
    one minibatch, the critic's step and the logged value loss are the same. The policy step is the
    same step too (its conjugate gradient amplifies float32 rounding: compared to ~1% of the step)."""
    ours, theirs = _twins(sb3_contrib.TRPO, fastppo.TRPO, env_id, _backend(backend), n_critic_updates=1)
    before = {name: p.detach().clone() for name, p in ours.policy.named_parameters()}
    metrics = ours._update(1.0)
    theirs.train()
    _assert_same_tensors(ours, theirs, lambda p: p, atol_of_max=1e-5, only="critic")
    actor = ("actor", "log_std")
    step = max(float((p.detach() - before[name]).abs().max()) for name, p in ours.policy.named_parameters()
               if name.startswith(actor))
    assert step > 0  # the line search accepted a step
    _assert_same_tensors(ours, theirs, lambda p: p, atol=0.01 * step, only=actor)
    logged = theirs.logger.name_to_value
    np.testing.assert_allclose(metrics["train/value_loss"], logged["train/value_loss"], rtol=1e-5)
    for key in ("train/n_updates", "train/is_line_search_success"):
        assert metrics[key] == logged[key], key



class _Recorder(gym.vector.VectorWrapper):
    """What the env gave fastppo's rollout, step by step (raw, before any normalisation)."""

    def __init__(self, env):
        super().__init__(env)
        self.steps = []

    def reset(self, **kwargs):
        obs, info = self.env.reset(**kwargs)
        self.first_obs = obs.copy()
        return obs, info

    def step(self, actions):
        obs, rewards, terminated, truncated, info = self.env.step(actions)
        final = info["final_obs"][0].copy() if info.get("_final_obs", [False])[0] else None
        self.steps.append((obs.copy(), rewards.copy(), bool(terminated[0]), bool(truncated[0]), final))
        return obs, rewards, terminated, truncated, info


class _Replay(sb3.common.vec_env.VecEnv):
    """One env that replays a _Recorder's steps as SB3's DummyVecEnv reports them."""

    def __init__(self, recorder: _Recorder):
        super().__init__(1, recorder.single_observation_space, recorder.single_action_space)
        self.recorder, self.t = recorder, 0

    def reset(self):
        return self.recorder.first_obs.copy()

    def step_async(self, actions):
        pass

    def step_wait(self):
        obs, rewards, terminated, truncated, final = self.recorder.steps[self.t]
        self.t += 1
        info = {}
        if terminated or truncated:
            info = {"terminal_observation": final, "TimeLimit.truncated": truncated and not terminated}
        return obs.copy(), rewards.copy(), np.array([terminated or truncated]), [info]

    def close(self):
        pass

    def get_attr(self, attr_name, indices=None):
        return [None]

    def set_attr(self, attr_name, value, indices=None):
        pass

    def env_method(self, method_name, *method_args, indices=None, **method_kwargs):
        return [None]

    def env_is_wrapped(self, wrapper_class, indices=None):
        return [False]


@pytest.mark.parametrize("backend", ["torch", "auto"])
def test_rollout_with_normalisation_matches_sb3_vec_normalize(backend):
    """normalize_obs / normalize_reward against SB3's VecNormalize, and the time-limit bootstrap against
    SB3's collect_rollouts: fastppo's rollout (a time limit every 10 steps) replayed through SB3, with the
    same weights and actions, gives the same normalised observations, values, log-probs, advantages,
    returns and running statistics. In particular the true final observation of a truncated episode is
    normalised with the statistics that already include the step's (reset) observations, as
    VecNormalize.step_wait does."""
    env = _Recorder(gym.make_vec("Pendulum-v1", 1, vectorization_mode="sync", max_episode_steps=10,
                                 vector_kwargs={"autoreset_mode": gym.vector.AutoresetMode.SAME_STEP}))
    ours = fastppo.PPO("MlpPolicy", env, n_steps=N_STEPS, seed=0, backend=_backend(backend), normalize_obs=True,
                       normalize_reward=True)
    ours._reset_envs()
    ours._collect(None)
    ours._advantages()
    data = ours.rollout.flat()
    assert int(data["truncated"].sum()) == N_STEPS // 10

    vec_normalize = sb3.common.vec_env.VecNormalize(_Replay(env), gamma=ours.config.gamma)
    theirs = sb3.PPO("MlpPolicy", vec_normalize, n_steps=N_STEPS, device="cpu", seed=0)
    sb3_params = dict(theirs.policy.named_parameters())
    with torch.no_grad():
        for name, p in ours.policy.named_parameters():
            sb3_params[_sb3_name(name)].copy_(p.view_as(sb3_params[_sb3_name(name)]))
    policy, actions = theirs.policy, iter(data["actions"])

    def forward(obs, deterministic=False):  # SB3's policy step with fastppo's sampled (unclipped) action
        action = next(actions)[None]
        values, log_prob, _ = policy.evaluate_actions(obs, action)
        return action, values, log_prob

    policy.forward = forward
    _, callback = theirs._setup_learn(N_STEPS, None)
    assert theirs.collect_rollouts(theirs.env, callback, theirs.rollout_buffer, N_STEPS)
    buf = theirs.rollout_buffer
    for ours_key, sb3_field in (("obs", "observations"), ("values", "values"), ("log_probs", "log_probs"),
                                ("advantages", "advantages"), ("returns", "returns")):
        theirs_array = getattr(buf, sb3_field).reshape(data[ours_key].shape)
        np.testing.assert_allclose(data[ours_key].numpy(), theirs_array, rtol=1e-5, atol=1e-5, err_msg=ours_key)
    for mine, sb3s in ((ours.obs_normalizer.rms, vec_normalize.obs_rms), (ours.reward_scaler.rms, vec_normalize.ret_rms)):
        assert mine.count == sb3s.count
        np.testing.assert_allclose(mine.mean, sb3s.mean, rtol=1e-6)
        np.testing.assert_allclose(mine.var, sb3s.var, rtol=1e-6)
