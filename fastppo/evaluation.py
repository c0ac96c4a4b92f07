"""Evaluating a trained policy on whole episodes."""

from __future__ import annotations

import contextlib
import warnings
from collections.abc import Callable
from typing import Any

import numpy as np
from fastppo.envs import SB3VecEnv, as_vector_env, to_sb3_infos


def evaluate_policy(model, env, n_eval_episodes: int = 10, deterministic: bool = True, render: bool = False,
                    callback: Callable[[dict[str, Any], dict[str, Any]], None] | None = None,
                    reward_threshold: float | None = None, return_episode_rewards: bool = False, warn: bool = True,
                    *, seed: int | None = None) -> tuple[float, float] | tuple[list[float], list[int]]:
    """Mean and standard deviation of the undiscounted return over ``n_eval_episodes`` episodes, with
    Stable-Baselines3's signature and meanings.

    Episodes are spread evenly over the vector env's copies (as SB3 does, so short episodes do not crowd
    out long ones). An episode's return and length are those the env reports in ``infos["episode"]``:
    SB3's ``Monitor`` / ``VecMonitor`` (raw rewards) for an SB3 VecEnv that has one, else the rewards
    ``env.step`` returns, counted by fastppo's envs or wrappers.

    Args:
        model: anything with SB3's ``predict(observation, state=None, episode_start=None,
            deterministic=False) -> (actions, state)``: a fastppo or SB3 model, or a policy.
        env: an env id (a vector env is made for it and closed afterwards), a Stable-Baselines3 VecEnv,
            a gymnasium VectorEnv or a gymnasium Env.
        n_eval_episodes: episodes to run, >= 1.
        deterministic: act with the policy's mode instead of sampling.
        render: call ``env.render()`` after every step.
        callback: ``callback(locals(), globals())``, as in SB3 after each step once per env still
            evaluating, before that env's episode is counted; its locals include ``episode_rewards``,
            ``episode_lengths``, ``episode_counts``, ``i``, ``reward``, ``done``, ``info``,
            ``observations`` (before the step), ``new_observations``, ``actions``, ``rewards``,
            ``dones`` and ``infos`` (one dict per env; SB3's own for an SB3 VecEnv).
        reward_threshold: raise AssertionError (as SB3) unless the mean return exceeds it.
        return_episode_rewards: return the lists of episode returns and lengths instead.
        warn: SB3 warns when the env has no ``Monitor``, since wrappers that change rewards (such as
            ``VecNormalize``) then change the returns counted. Here it warns in that same case: an SB3
            VecEnv with neither ``Monitor`` nor ``VecMonitor``, whose returns fastppo then counts from the
            rewards it returns (normalised ones under ``VecNormalize``). Other envs report episodes
            through fastppo's own statistics, which count the rewards the env returns.
        seed: seed of the env's reset (fastppo-only; SB3 has no such argument).

    Returns:
        ``(mean, std)`` of the episode returns, or ``(returns, lengths)`` as lists with
        ``return_episode_rewards``.
    """
    if isinstance(n_eval_episodes, bool) or not isinstance(n_eval_episodes, int) or n_eval_episodes < 1:
        raise ValueError(f"n_eval_episodes must be an integer >= 1, got {n_eval_episodes!r}")
    owned = isinstance(env, str)
    vec_env, _ = as_vector_env(env, min(n_eval_episodes, 16) if owned else 1, seed=seed,
                               backend=getattr(model, "backend", "auto"))
    sb3 = isinstance(vec_env, SB3VecEnv)
    if warn and sb3 and not vec_env.monitored:
        warnings.warn("Evaluation environment is not wrapped with a ``Monitor`` wrapper (nor a ``VecMonitor``): "
                      "episode returns and lengths are counted from the rewards it returns, which wrappers such as "
                      "VecNormalize modify. Consider wrapping the environment first with ``Monitor``.", UserWarning)
    scope = model.torch_thread_scope() if hasattr(model, "torch_thread_scope") else contextlib.nullcontext()
    episode_rewards: list[float] = []
    episode_lengths: list[int] = []
    try:
        with scope:
            n_envs = vec_env.num_envs
            episode_counts = np.zeros(n_envs, int)
            episode_count_targets = np.array([(n_eval_episodes + i) // n_envs for i in range(n_envs)])
            observations, _ = vec_env.reset(seed=seed)
            states = None
            episode_starts = np.ones(n_envs, bool)
            while (episode_counts < episode_count_targets).any():
                actions, states = model.predict(observations, state=states, episode_start=episode_starts,
                                                deterministic=deterministic)
                new_observations, rewards, terminated, truncated, step_info = vec_env.step(actions)
                terminated, truncated = np.asarray(terminated, bool), np.asarray(truncated, bool)
                dones = terminated | truncated
                infos = None if callback is None else (  # the callback's, in SB3's form
                    vec_env.last_infos if sb3 else to_sb3_infos(step_info, terminated, truncated))
                finished = step_info["_episode"] if "episode" in step_info else np.zeros(n_envs, bool)
                for i in range(n_envs):
                    if episode_counts[i] < episode_count_targets[i]:
                        reward, done = rewards[i], dones[i]
                        episode_starts[i] = done
                        if callback is not None:
                            info = infos[i]
                            callback(locals(), globals())
                        if finished[i]:  # a finished episode (not every done is one)
                            episode_rewards.append(float(step_info["episode"]["r"][i]))
                            episode_lengths.append(int(step_info["episode"]["l"][i]))
                            episode_counts[i] += 1
                observations = new_observations
                if render:
                    vec_env.render()
    finally:
        if owned:
            vec_env.close()
    mean_reward, std_reward = float(np.mean(episode_rewards)), float(np.std(episode_rewards))
    if reward_threshold is not None and not mean_reward > reward_threshold:
        raise AssertionError(f"Mean reward below threshold: {mean_reward:.2f} < {reward_threshold:.2f}")
    if return_episode_rewards:
        return episode_rewards, episode_lengths
    return mean_reward, std_reward
