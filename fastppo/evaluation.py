"""Evaluating a trained policy on whole episodes."""

from __future__ import annotations

import contextlib

import numpy as np

from fastppo.envs import as_vector_env


def evaluate_policy(model, env, n_eval_episodes: int = 10, deterministic: bool = True,
                    seed: int | None = None) -> tuple[float, float]:
    """Mean and standard deviation of the undiscounted return over ``n_eval_episodes`` episodes.

    ``env`` is an env id (a vector env is made for it and closed afterwards), a gymnasium VectorEnv or
    an Env. Episodes are spread evenly over the vector env's copies (as SB3 does, so short episodes do
    not crowd out long ones).
    """
    if isinstance(n_eval_episodes, bool) or not isinstance(n_eval_episodes, int) or n_eval_episodes < 1:
        raise ValueError(f"n_eval_episodes must be an integer >= 1, got {n_eval_episodes!r}")
    owned = isinstance(env, str)
    vec_env, _ = as_vector_env(env, min(n_eval_episodes, 16) if owned else 1, seed=seed,
                               backend=getattr(model, "backend", "auto"))
    scope = model.torch_thread_scope() if hasattr(model, "torch_thread_scope") else contextlib.nullcontext()
    returns: list[float] = []
    try:
        with scope:
            n = vec_env.num_envs
            targets = np.array([(n_eval_episodes + i) // n for i in range(n)])
            counts = np.zeros(n, int)
            obs, _ = vec_env.reset(seed=seed)
            while (counts < targets).any():
                actions, _ = model.predict(obs, deterministic=deterministic)
                obs, _, _, _, info = vec_env.step(actions)
                if "episode" in info:
                    for i in np.flatnonzero(info["_episode"]):
                        if counts[i] < targets[i]:
                            returns.append(float(info["episode"]["r"][i]))
                            counts[i] += 1
    finally:
        if owned:
            vec_env.close()
    return float(np.mean(returns)), float(np.std(returns))
