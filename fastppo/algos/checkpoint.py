"""Checkpoints: everything needed to act and to resume training exactly, in one file written atomically.

One ``torch.save`` dict, written to a temporary file in the same directory, fsynced, then ``os.replace``d
over the target (a crash mid-save leaves the old file). It holds the format version, the algorithm,
the env id and spaces (checked on load), the hyperparameters (the config's fields), weights, optimiser
state, normaliser statistics, counters, the schedule's horizon, the generator state, the episode
statistics and — when the env can give it (``snapshot``/``restore``) — the env's own state and the
current observation, so ``learn(a)``, save, load, ``learn(b)`` equals ``learn(a + b)`` on the CPU.
"""

from __future__ import annotations

import os
import pickle
import tempfile
from typing import TYPE_CHECKING

import torch

if TYPE_CHECKING:
    from fastppo.algos.base import OnPolicyAlgorithm

FORMAT = "fastppo-checkpoint"
VERSION = 2  # 2: TRPO's critic optimiser holds one flat parameter


def save(model: OnPolicyAlgorithm, path: str | os.PathLike) -> None:
    """Write ``model`` to ``path`` atomically."""
    last_obs = model._last_obs  # None before the first learn(): then there is no env state to resume
    env_state = model.env.snapshot() if hasattr(model.env, "snapshot") and last_obs is not None else None
    state = {
        "format": FORMAT, "version": VERSION, "algo": model.algo,
        "env_id": model.env_id, "observation_space": model.observation_space, "action_space": model.action_space,
        "num_envs": model.num_envs, "hyperparameters": model.config.to_dict(),
        "policy_kwargs": model.config.policy_kwargs, "custom_policy": model._custom_policy,
        "policy_state": model.policy.state_dict(), "algo_state": model._algo_state(),
        "obs_normalizer": model.obs_normalizer.rms.state_dict() if model.obs_normalizer else None,
        "reward_scaler": model.reward_scaler.state_dict() if model.reward_scaler else None,
        "num_timesteps": model.num_timesteps, "iteration": model.iteration,
        "total_timesteps": model._total_timesteps, "generator": model._generator.get_state(),
        "env_state": env_state,
        "last_obs": last_obs.cpu() if env_state is not None else None,
        "episode_returns": list(model.episode_returns), "episode_lengths": list(model.episode_lengths),
    }
    path = os.fspath(path)
    directory = os.path.dirname(os.path.abspath(path))
    os.makedirs(directory, exist_ok=True)
    fd, tmp = tempfile.mkstemp(dir=directory, prefix=".tmp-", suffix=".pt")
    try:
        with os.fdopen(fd, "wb") as f:
            torch.save(state, f)
            f.flush()
            os.fsync(f.fileno())
        os.replace(tmp, path)
    except BaseException:
        os.unlink(tmp)
        raise


def read(path: str | os.PathLike) -> dict:
    """The checked contents of a checkpoint written by :func:`save`."""
    try:
        ckpt = torch.load(path, map_location="cpu", weights_only=False)
    except (OSError, EOFError, RuntimeError, pickle.UnpicklingError) as exc:
        raise ValueError(f"{os.fspath(path)!r} is not a readable fastppo checkpoint ({exc})") from exc
    if not isinstance(ckpt, dict) or ckpt.get("format") != FORMAT:
        raise ValueError(f"{os.fspath(path)!r} is not a fastppo checkpoint")
    if ckpt["version"] != VERSION:
        raise ValueError(f"checkpoint format version {ckpt['version']} is not supported by this fastppo "
                         f"(it reads version {VERSION})")
    return ckpt


def restore(cls, ckpt: dict, env, overrides: dict):
    """A ``cls`` model from :func:`read`'s contents, on ``env`` (default: the checkpoint's env id), with
    ``overrides`` replacing saved hyperparameters."""
    if ckpt["algo"] != cls.algo:
        raise ValueError(f"checkpoint holds a {ckpt['algo']!r} model; load it with that algorithm's class")
    if env is None:
        if ckpt["env_id"] is None:
            raise ValueError("the checkpoint's env was not given by id: pass env= to load()")
        env = ckpt["env_id"]
    hyper = {**ckpt["hyperparameters"], **overrides}
    policy = ckpt["custom_policy"] if ckpt["custom_policy"] is not None else "MlpPolicy"
    if ckpt["custom_policy"] is None:
        hyper["policy_kwargs"] = ckpt["policy_kwargs"]
    model = cls(policy, env, **hyper)
    for name in ("observation_space", "action_space"):
        if getattr(model, name) != ckpt[name]:
            raise ValueError(f"env has {name} {getattr(model, name)}, but the checkpoint was trained on "
                             f"{ckpt[name]}")
    model.policy.load_state_dict(ckpt["policy_state"])
    model._load_algo_state(ckpt["algo_state"])
    if model.obs_normalizer is not None and ckpt["obs_normalizer"] is not None:
        model.obs_normalizer.rms.load_state_dict(ckpt["obs_normalizer"])
    same_envs = model.num_envs == ckpt["num_envs"]
    if model.reward_scaler is not None and ckpt["reward_scaler"] is not None and same_envs:
        model.reward_scaler.load_state_dict(ckpt["reward_scaler"])
    model.num_timesteps, model.iteration = ckpt["num_timesteps"], ckpt["iteration"]
    model._total_timesteps = ckpt["total_timesteps"]
    model._generator.set_state(ckpt["generator"])
    model.episode_returns.extend(ckpt["episode_returns"])
    model.episode_lengths.extend(ckpt["episode_lengths"])
    if ckpt["env_state"] is not None and same_envs and hasattr(model.env, "restore"):
        model.env.restore(ckpt["env_state"])  # resume mid-episode, exactly where training stopped
        model._last_obs = ckpt["last_obs"].to(model.device)
    return model
