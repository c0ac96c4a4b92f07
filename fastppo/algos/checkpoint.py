"""Checkpoints: everything needed to act and to resume training exactly, in a file that loading cannot
turn into code execution.

A file is one ``torch.save`` dict of tensors and plain data only (str, int, float, bool, None, lists,
tuples and dicts of them), read back with torch's ``weights_only=True`` loader, whose allow-list admits
nothing else: a pickle that would rebuild an arbitrary object (and so could run code) is refused before
anything in it is built. Spaces are stored as their parameters, numpy arrays as tensors, and what has
no plain form is not stored: a custom policy module (its weights are; pass ``policy=`` to load) and a
schedule given as a function (pass it again to load). Format 2 files (fastppo 0.1's pickles) are
refused unless the caller says it trusts the file (``trust_pickle=True``).

It holds the format version, the algorithm, the env id and spaces (checked on load), the hyperparameters
(the config's fields), weights, optimiser state, normaliser statistics, counters, the schedule's horizon,
the generator state, the episode statistics and — when the env can give it (``snapshot``/``restore``) —
the env's own state and the current observation, so ``learn(a)``, save, load, ``learn(b)`` equals
``learn(a + b)`` on the CPU. Writing is atomic: a temporary file in the same directory, fsynced, then
``os.replace``d over the target (a crash mid-save leaves the old file).
"""

from __future__ import annotations

import collections
import os
import pickle
import tempfile
import warnings
from typing import TYPE_CHECKING, Any

import gymnasium as gym
import numpy as np
import torch

from fastppo._version import __version__
from fastppo.algos import sb3_zip
from fastppo.algos.policies import activation_name

if TYPE_CHECKING:
    from fastppo.algos.base import OnPolicyAlgorithm

FORMAT = "fastppo-checkpoint"
# 4: the hyperparameters with SB3's meanings and names; 3: tensors and plain data (weights_only); 2: a pickle
# (TRPO's critic optimiser one flat parameter).
VERSION = 4
_PLAIN_VERSIONS = (3, VERSION)
_PICKLE_VERSION = 2

_RENAMED = {"max_kl": "target_kl", "cg_iters": "cg_max_steps", "line_search_shrink": "line_search_shrinking_factor"}
"""Hyperparameters that files before format 4 store under another name -> today's name."""


def save_path(path: str | os.PathLike) -> str:
    """Where ``save(path)`` writes: ``path``, with ``.zip`` added when it has no suffix (SB3's rule)."""
    path = os.fspath(path)
    return path + ".zip" if not os.path.splitext(path)[1] else path


def load_path(path: str | os.PathLike) -> str:
    """Which file ``load(path)`` reads: ``path``, else ``path.zip`` (SB3's rule)."""
    path = os.fspath(path)
    if not os.path.exists(path) and os.path.exists(path + ".zip"):
        return path + ".zip"
    return path


def rank_path(path: str, rank: int) -> str:
    """Where rank ``rank`` (> 0) of a data-parallel run keeps its own part of the checkpoint at ``path``."""
    return f"{path}.rank{rank}"


def save(model: OnPolicyAlgorithm, path: str | os.PathLike) -> None:
    """Write ``model`` to ``path`` (``.zip`` added when it has no suffix) atomically. In a data-parallel
    run every rank calls it, and each writes alone (no collective: a rank that is not coming cannot make
    another wait): rank 0 the file, rank r its own state (its envs, generator and episodes) to
    ``<path>.rank<r>``, each a whole checkpoint of that rank's view."""
    last_obs = model._last_obs  # None before the first learn(): then there is no env state to resume
    env_state = model.env.snapshot() if hasattr(model.env, "snapshot") and last_obs is not None else None
    custom = model._custom_policy
    state = {
        "format": FORMAT, "version": VERSION, "fastppo": __version__, "algo": model.algo,
        "env_id": model.env_id, "observation_space": _space_to_plain(model.observation_space, "observation_space"),
        "action_space": _space_to_plain(model.action_space, "action_space"), "num_envs": model.num_envs,
        "hyperparameters": {k: _value_to_plain(v) for k, v in model.config.to_dict().items()},
        "policy": model.policy_name,
        "custom_policy": None if custom is None else _qualified_name(custom if isinstance(custom, type)
                                                                     else type(custom)),
        "policy_state": model.policy.state_dict(), "algo_state": _to_plain(model._algo_state()),
        "obs_normalizer": _to_plain(model.obs_normalizer.rms.state_dict()) if model.obs_normalizer else None,
        "reward_scaler": _to_plain(model.reward_scaler.state_dict()) if model.reward_scaler else None,
        "num_timesteps": model.num_timesteps, "iteration": model.iteration, "n_updates": model._n_updates,
        "total_timesteps": model._total_timesteps, "generator": model._generator.get_state(),
        "env_state": _to_plain(env_state), "last_obs": last_obs.cpu() if env_state is not None else None,
        "episode_returns": list(model.episode_returns), "episode_lengths": list(model.episode_lengths),
        "world_size": model.reducer.world_size,
    }
    rank = model.reducer.rank
    path = save_path(path) if rank == 0 else rank_path(save_path(path), rank)
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


def read(path: str | os.PathLike, trust_pickle: bool = False) -> dict:
    """The checked contents of a checkpoint written by :func:`save`, with spaces, arrays and env state
    rebuilt. ``trust_pickle=True`` also opens a format 2 file (a pickle, which can run code when opened:
    only for files you trust). ``path`` may leave out a ``.zip`` suffix. A Stable-Baselines3 zip is read
    by :mod:`fastppo.algos.sb3_zip` (which unpickles nothing, whatever ``trust_pickle`` says)."""
    path = load_path(path)
    if sb3_zip.is_sb3_zip(path):  # SB3's hyperparameters mean what this version's do
        return {**sb3_zip.read(path), "version": VERSION}
    name = repr(path)
    try:
        with warnings.catch_warnings():  # torch warns about some files it then refuses: the error says it all
            warnings.simplefilter("ignore", UserWarning)
            ckpt = torch.load(path, map_location="cpu", weights_only=True)
    except pickle.UnpicklingError as exc:
        if "Unsupported global" not in str(exc):  # not an object to build: a damaged or foreign file
            raise ValueError(f"{name} is not a readable fastppo checkpoint ({exc})") from None
        if not trust_pickle:
            raise ValueError(
                f"{name} was refused: it holds objects that only a pickle can rebuild, and rebuilding them can "
                f"run any code. fastppo's own checkpoints hold tensors and plain data (format {VERSION}); files "
                f"written by fastppo 0.1 (format {_PICKLE_VERSION}) are pickles. If you trust this file, open "
                f"it with trust_pickle=True.") from None
        ckpt = torch.load(path, map_location="cpu", weights_only=False)  # the caller trusts this file
    except (OSError, EOFError, RuntimeError, ValueError) as exc:
        raise ValueError(f"{name} is not a readable fastppo checkpoint ({exc})") from exc
    if not isinstance(ckpt, dict) or ckpt.get("format") != FORMAT:
        raise ValueError(f"{name} is not a fastppo checkpoint")
    if ckpt.get("version") == _PICKLE_VERSION and trust_pickle:
        return ckpt  # the old layout: spaces and arrays are already objects
    if ckpt.get("version") not in _PLAIN_VERSIONS:
        raise ValueError(f"checkpoint format version {ckpt.get('version')} is not supported by this fastppo (it "
                         f"reads versions {' and '.join(map(str, _PLAIN_VERSIONS))}"
                         f"{f' and, trusted, {_PICKLE_VERSION}' if trust_pickle else ''})")
    try:
        for key in ("observation_space", "action_space"):
            ckpt[key] = _space_from_plain(ckpt[key])
        for key in ("algo_state", "obs_normalizer", "reward_scaler", "env_state"):
            ckpt[key] = _from_plain(ckpt[key])
    except (KeyError, TypeError, ValueError) as exc:
        raise ValueError(f"{name} is a damaged fastppo checkpoint ({type(exc).__name__}: {exc})") from None
    return ckpt


def restore(cls, ckpt: dict, env, overrides: dict, policy=None, path: str | os.PathLike | None = None):
    """A ``cls`` model from :func:`read`'s contents, on ``env`` (default: the checkpoint's env id), with
    ``overrides`` replacing saved hyperparameters (a ``policy_kwargs`` dict is merged into the saved one);
    ``policy`` is the module (or the SB3 policy class) for a custom policy's weights. Without an env id or
    ``env``, the model acts (``predict``) but cannot learn until given an env. A checkpoint without
    optimiser state (an SB3 zip) starts its optimiser fresh."""
    if ckpt["algo"] != cls.algo:
        raise ValueError(f"checkpoint holds a {ckpt['algo']!r} model; load it with that algorithm's class")
    if env is None:
        env = ckpt["env_id"]  # None: trained on an env instance; the model acts, and set_env() comes before learn()
        for name in ("observation_space", "action_space"):
            if env is None and ckpt[name] is None:
                raise ValueError(f"the file does not record {name} in full (numpy summarised its bounds): pass "
                                 f"env= to load()")
    custom = ckpt["custom_policy"]
    if isinstance(custom, torch.nn.Module):  # a trusted format 2 pickle
        policy = custom if policy is None else policy
    elif custom is not None and policy is None:
        raise ValueError(f"the checkpoint's policy is a custom module ({custom}); modules and policy classes are not "
                         f"stored (loading one would run code): pass policy=<a new {custom.rsplit('.', 1)[-1]}> (an "
                         f"SB3 policy class: the class) to load(), its weights come from the file")
    hyper, overrides = _current_hyperparameters(ckpt["hyperparameters"], ckpt["version"]), dict(overrides)
    if isinstance(hyper.get("policy_kwargs"), dict):
        # merged, so that loading needs only what was not stored (a class): policy_kwargs=dict(optimizer_class=...)
        hyper["policy_kwargs"] = {**hyper["policy_kwargs"], **(overrides.pop("policy_kwargs", None) or {})}
    hyper.update(overrides)
    if env is not None and not isinstance(env, str):
        hyper.pop("num_envs", None)  # the env given brings its own count
    for key, value in hyper.items():
        for inner, item in (value.items() if key == "policy_kwargs" and isinstance(value, dict) else [(None, value)]):
            if isinstance(item, dict) and "__function__" in item:
                what = key if inner is None else f"policy_kwargs[{inner!r}]"
                given = f"{key}=" if inner is None else f"policy_kwargs=dict({inner}=...)"
                raise ValueError(f"{what} was the {'function' if inner is None else 'class'} {item['__function__']} "
                                 f"when saved; functions and classes are not stored (loading one would run code): "
                                 f"pass {given} to load()")
    if isinstance(policy, torch.nn.Module):
        hyper.pop("policy_kwargs", None)
    spaces = (ckpt["observation_space"], ckpt["action_space"], ckpt["num_envs"]) if env is None else None
    model = cls(policy if policy is not None else ckpt.get("policy") or "MlpPolicy", env, _spaces=spaces, **hyper)
    for name in ("observation_space", "action_space"):
        if ckpt[name] is not None and getattr(model, name) != ckpt[name]:  # None: not recorded in full (SB3)
            raise ValueError(f"env has {name} {getattr(model, name)}, but the checkpoint was trained on "
                             f"{ckpt[name]}")
    try:
        model.policy.load_state_dict(ckpt["policy_state"])
    except RuntimeError as exc:  # shapes that do not fit the env's spaces or the policy_kwargs
        raise ValueError(f"the checkpoint's weights do not fit this policy: {exc}") from None
    if ckpt["algo_state"]:
        model._load_algo_state(ckpt["algo_state"])
    if model.obs_normalizer is not None and ckpt["obs_normalizer"] is not None:
        model.obs_normalizer.rms.load_state_dict(ckpt["obs_normalizer"])
    same_envs = model.num_envs == ckpt["num_envs"]
    model.num_timesteps, model.iteration = ckpt["num_timesteps"], ckpt["iteration"]
    model._n_updates = ckpt.get("n_updates", 0)  # absent before fastppo 0.2
    model._total_timesteps = ckpt["total_timesteps"]
    own = _own_part(model, ckpt, path)
    if model.reward_scaler is not None and own["reward_scaler"] is not None and same_envs:
        model.reward_scaler.load_state_dict(own["reward_scaler"])
    if own["generator"] is not None:
        model._generator.set_state(own["generator"])
    model.episode_returns.extend(own["episode_returns"])
    model.episode_lengths.extend(own["episode_lengths"])
    if own["env_state"] is not None and same_envs and model.env is not None and hasattr(model.env, "restore"):
        model.env.restore(own["env_state"])  # resume mid-episode, exactly where training stopped
        model._last_obs = own["last_obs"].to(model.device)
    return model


def _own_part(model: OnPolicyAlgorithm, ckpt: dict, path) -> dict:
    """This rank's state: rank 0's is the file's own, rank r's its ``.rank<r>`` part. A data-parallel
    checkpoint resumes only with the same number of processes; in one process it loads rank 0's view."""
    rank, world = model.reducer.rank, model.reducer.world_size
    saved = ckpt.get("world_size", 1)
    if world > 1 and saved != world:
        raise ValueError(f"the checkpoint was written by {saved} process(es) and this run has {world}: resume it "
                         f"with the same number (torchrun --nproc_per_node ... so that WORLD_SIZE={saved})")
    if world == 1 and saved > 1:
        warnings.warn(f"the checkpoint was written by {saved} processes; loaded in one, it continues from rank 0's "
                      f"envs and statistics", UserWarning, stacklevel=4)
    if rank == 0:
        return ckpt
    if path is None:
        raise ValueError("a data-parallel rank > 0 needs the checkpoint's path to find its own part")
    part = rank_path(load_path(path), rank)
    if not os.path.exists(part):
        raise ValueError(f"rank {rank}'s part of the checkpoint, {part!r}, does not exist: save() must run on "
                         f"every rank")
    return read(part)


def _current_hyperparameters(saved: dict, version: int) -> dict:
    """A checkpoint's hyperparameters with today's names and meanings: before format 4, TRPO's had other
    names (:data:`_RENAMED`) and PPO's ``vf_coef`` weighed fastppo.ppo_loss's half-MSE value loss, so it
    was twice SB3's (exactly: halving is exact). (Its ``clip_range_vf`` clipped the loss's max form: no
    number translates that; the value is kept and now means SB3's clipping.) Format 3 files may name
    policy_kwargs' ``activation_fn`` ``activation`` (its name before SB3's)."""
    hyper = {_RENAMED.get(key, key): value for key, value in saved.items()}
    if version < 4 and isinstance(hyper.get("vf_coef"), (int, float)):
        hyper["vf_coef"] = hyper["vf_coef"] / 2
    if version < 4 and isinstance(hyper.get("policy_kwargs"), dict):
        hyper["policy_kwargs"] = {("activation_fn" if k == "activation" else k): v
                                  for k, v in hyper["policy_kwargs"].items()}
    return hyper


# -- plain forms --------------------------------------------------------------------------------------
def _value_to_plain(value):
    """A hyperparameter as plain data; a function or a class becomes a marker that load() asks to be
    replaced, except torch.nn's activations, which become their lower-case names (as policy_kwargs'
    activation_fn takes them). policy_kwargs' entries are converted one by one."""
    if isinstance(value, torch.device):
        return str(value)
    if (name := activation_name(value)) is not None:
        return name
    if callable(value):
        return {"__function__": _qualified_name(value)}
    if isinstance(value, dict):
        return {k: _value_to_plain(v) for k, v in value.items()}
    return _to_plain(value)


def _qualified_name(obj) -> str:
    return f"{getattr(obj, '__module__', '?')}.{getattr(obj, '__qualname__', repr(obj))}"


def _to_plain(x: Any) -> Any:
    """numpy arrays -> tagged tensors, recursively through dicts, lists and tuples."""
    if isinstance(x, np.ndarray):
        return {"__numpy__": torch.from_numpy(np.array(x))}
    if isinstance(x, np.generic):
        return x.item()
    if isinstance(x, dict):
        return {k: _to_plain(v) for k, v in x.items()}
    if isinstance(x, (list, tuple)):
        return type(x)(_to_plain(v) for v in x)
    return x


def _from_plain(x: Any) -> Any:
    if isinstance(x, dict):
        if set(x) == {"__numpy__"}:
            return x["__numpy__"].numpy()
        return {k: _from_plain(v) for k, v in x.items()}
    if isinstance(x, (list, tuple)):
        return type(x)(_from_plain(v) for v in x)
    return x


def _space_to_plain(space: gym.Space, name: str) -> dict:
    if isinstance(space, gym.spaces.Box):
        return {"type": "Box", "low": torch.from_numpy(np.array(space.low)),
                "high": torch.from_numpy(np.array(space.high)), "dtype": str(space.dtype)}
    if isinstance(space, gym.spaces.Discrete):
        return {"type": "Discrete", "n": int(space.n), "start": int(space.start)}
    if isinstance(space, gym.spaces.MultiDiscrete):
        return {"type": "MultiDiscrete", "nvec": torch.from_numpy(np.array(space.nvec)),
                "start": torch.from_numpy(np.array(space.start)), "dtype": str(space.dtype)}
    if isinstance(space, gym.spaces.Dict):
        return {"type": "Dict", "spaces": {key: _space_to_plain(sub, f"{name}[{key!r}]") for key, sub in space.spaces.items()}}
    raise TypeError(f"{name} {space} has no checkpoint form (Box, Discrete, MultiDiscrete and Dict have)")


def _space_from_plain(d: dict) -> gym.Space:
    kind = d["type"]
    if kind == "Box":
        return gym.spaces.Box(d["low"].numpy(), d["high"].numpy(), dtype=np.dtype(d["dtype"]))
    if kind == "Discrete":
        return gym.spaces.Discrete(d["n"], start=d["start"])
    if kind == "MultiDiscrete":
        return gym.spaces.MultiDiscrete(d["nvec"].numpy(), dtype=np.dtype(d["dtype"]), start=d["start"].numpy())
    if kind == "Dict":  # in the saved key order (a plain dict would be sorted)
        return gym.spaces.Dict(collections.OrderedDict((k, _space_from_plain(v)) for k, v in d["spaces"].items()))
    raise ValueError(f"unknown space type {kind!r}")
