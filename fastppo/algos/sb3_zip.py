"""Models saved by Stable-Baselines3 (PPO) and sb3-contrib (TRPO), read without unpickling anything.

An SB3 ``model.zip`` holds ``data`` (JSON: the hyperparameters, and every value JSON cannot hold as a
cloudpickle in base64 under ``":serialized:"``, next to that object's readable first-level attributes),
``policy.pth`` (the policy's ``state_dict``, a ``torch.save`` file), the optimiser's state and version
files. This module reads the JSON's plain values and readable attributes — never a ``":serialized:"``
payload, which could run any code when unpickled — and the weights with torch's ``weights_only=True``
loader. What it returns has the form of :func:`fastppo.algos.checkpoint.read`'s, so ``checkpoint.restore``
builds the model.

What is read, and from where:

- **spaces**: Box from ``dtype``, ``_shape`` and the printed ``low``/``high`` (numpy prints float32 in
  shortest round-trip form, so the bounds come back exactly); Discrete from ``n``/``start``;
  MultiDiscrete from ``nvec``/``start``. numpy summarises arrays over 1000 elements with ``...``: such
  a space is returned as None and the env given to ``load(env=...)`` supplies it (the weights' shapes
  check it); without ``env=`` loading says so.
- **the policy**: only ``MlpPolicy`` (SB3's ``ActorCriticPolicy`` itself, named by its readable methods)
  with the parameter-free ``FlattenExtractor``, at least one hidden layer for actor and critic, and an
  activation fastppo has. ``mlp_extractor.policy_net`` + ``action_net`` become ``actor``,
  ``mlp_extractor.value_net`` + ``value_net`` become ``critic``, ``log_std`` stays (gSDE's matrix too,
  with SB3's defaults ``full_std=True``, ``use_expln=False``, ``squash_output=False``). Anything else
  (CnnPolicy, a recurrent or custom policy class, a features extractor with parameters, shared layers,
  image observations SB3 would scale by 1/255, ...) is refused, naming what was found.
- **hyperparameters**: SB3's plain values under fastppo's names (the same names, but for the TRPO
  table below), only those fastppo's config has. Schedules (``learning_rate``, ``clip_range``,
  ``clip_range_vf``) are read from a plain number, else from the schedule object's readable fields
  (``ConstantSchedule(val=v)`` -> ``v``, ``LinearSchedule(start=v, end=0, end_fraction=1)`` ->
  ``"lin_v"``), ``learning_rate`` else from ``lr_schedule``; a schedule that is a function (a lambda,
  or older SB3's closures) has no readable form, and then fastppo's default for that field is used.
- **not carried**: the optimiser state (the optimiser starts fresh), VecNormalize statistics (SB3 keeps
  them in a separate pickle), the episode buffers, the rollout's last observation, ``tensorboard_log``
  (a path on the machine that trained), ``optimizer_class``/``optimizer_kwargs`` (fastppo trains with
  its Adam), and hyperparameters fastppo has no field for.
"""

from __future__ import annotations

import io
import json
import os
import pickle
import re
import zipfile

import gymnasium as gym
import numpy as np
import torch

from fastppo.algos.config import PPOConfig, TRPOConfig
from fastppo.algos.distributions import ActionSpec
from fastppo.algos.observations import ObsSpec
from fastppo.algos.policies import ACTIVATIONS

_CONFIGS = {"ppo": PPOConfig, "trpo": TRPOConfig}
_RENAMES = {"n_envs": "num_envs"}
_SCHEDULES = ("learning_rate", "clip_range", "clip_range_vf")
_NOT_CARRIED = {"tensorboard_log"}
# ActorCriticPolicy's other options: the values (default first) that need nothing from fastppo; None: any
# value (options of training only, not carried: fastppo trains with its Adam; or checked elsewhere)
_POLICY_OPTIONS = {"full_std": (True,), "use_expln": (False,), "squash_output": (False,),
                   "features_extractor_class": ("<class 'stable_baselines3.common.torch_layers.FlattenExtractor'>",),
                   "features_extractor_kwargs": ({}, None), "share_features_extractor": None,
                   "normalize_images": None, "optimizer_class": None, "optimizer_kwargs": None}
_LAYER = re.compile(r"mlp_extractor\.(policy_net|value_net)\.(\d+)\.(weight|bias)")
_NUMBER = r"[-+]?(?:\d+\.?\d*(?:[eE][-+]?\d+)?|\.\d+(?:[eE][-+]?\d+)?|inf|nan)"
_CONSTANT_REPR = re.compile(rf"ConstantSchedule\(val=({_NUMBER})\)")
_LINEAR_REPR = re.compile(rf"LinearSchedule\(start=({_NUMBER}), end=({_NUMBER}), end_fraction=({_NUMBER})\)")


def is_sb3_zip(path: str | os.PathLike) -> bool:
    """Whether ``path`` is a zip with SB3's ``data`` and ``policy.pth`` members (fastppo's own files are
    ``torch.save`` zips, whose members sit in one folder)."""
    try:
        with zipfile.ZipFile(path) as archive:
            names = set(archive.namelist())
    except (OSError, zipfile.BadZipFile, ValueError):
        return False
    return {"data", "policy.pth"} <= names


def read(path: str | os.PathLike) -> dict:
    """The model in the SB3 zip at ``path`` as :func:`fastppo.algos.checkpoint.read` returns a checkpoint
    (``algo`` "ppo" or "trpo", as the zip's hyperparameters say). Nothing in the file is unpickled."""
    name = repr(os.fspath(path))
    try:
        with zipfile.ZipFile(path) as archive:
            data = json.loads(archive.read("data").decode())
            weights = torch.load(io.BytesIO(archive.read("policy.pth")), map_location="cpu", weights_only=True)
    except pickle.UnpicklingError as exc:
        if "Unsupported global" in str(exc):  # an object to build, not damage (as checkpoint.read tells them)
            raise ValueError(f"{name}: policy.pth was refused: it holds objects that only a pickle can rebuild, "
                             f"and rebuilding them can run any code") from None
        raise ValueError(f"{name} is not a readable Stable-Baselines3 model (policy.pth: {exc})") from None
    except (OSError, EOFError, RuntimeError, ValueError, zipfile.BadZipFile, UnicodeDecodeError) as exc:
        raise ValueError(f"{name} is not a readable Stable-Baselines3 model ({type(exc).__name__}: {exc})") from None
    if not isinstance(data, dict) or not isinstance(weights, dict) or \
            not all(isinstance(v, torch.Tensor) for v in weights.values()):
        raise ValueError(f"{name} is not a readable Stable-Baselines3 model (its data is not a JSON object or its "
                         f"policy.pth is not a state_dict)")
    try:
        return _read(data, weights)
    except (KeyError, TypeError, ValueError, ZeroDivisionError) as exc:
        detail = f"missing {exc}" if isinstance(exc, KeyError) else str(exc)
        raise ValueError(f"{name} cannot be loaded as a fastppo model: {detail}") from None


def _read(data: dict, weights: dict) -> dict:
    algo = _algo(data)
    spaces = {key: _space(data[key], key) for key in ("observation_space", "action_space")}
    _check_policy_class(data.get("policy_class"))
    policy_kwargs = _readable(data.get("policy_kwargs") or {})
    use_sde = bool(data.get("use_sde", False))
    policy_state, arch = _policy_state(weights, spaces, use_sde)
    hyper = _hyperparameters(data, algo)
    image = _is_image(data["observation_space"], spaces["observation_space"])
    hyper["policy_kwargs"] = _policy_kwargs(policy_kwargs, arch, image)
    num_envs = int(data.get("n_envs", 1))
    num_timesteps = int(data.get("num_timesteps", 0))
    return {
        "format": "stable-baselines3", "algo": algo, "env_id": None, **spaces, "num_envs": num_envs,
        "hyperparameters": hyper, "custom_policy": None, "policy_state": policy_state, "algo_state": None,
        "obs_normalizer": None, "reward_scaler": None, "num_timesteps": num_timesteps,
        "iteration": num_timesteps // (int(data["n_steps"]) * num_envs),
        "total_timesteps": int(data.get("_total_timesteps", num_timesteps)), "generator": None,
        "env_state": None, "last_obs": None, "episode_returns": [], "episode_lengths": [],
    }


def _algo(data: dict) -> str:
    """sb3-contrib's TRPO and SB3's PPO save different hyperparameters."""
    if "cg_max_steps" in data and "line_search_shrinking_factor" in data:
        return "trpo"
    if "n_epochs" in data and "clip_range" in data:
        return "ppo"
    raise ValueError("it is neither an SB3 PPO model nor an sb3-contrib TRPO model (it has neither PPO's "
                     "n_epochs/clip_range nor TRPO's cg_max_steps/line_search_shrinking_factor)")


def _readable(item):
    """A JSON value as saved; for a pickled one, its readable first-level attributes (never the pickle)."""
    if isinstance(item, dict) and ":serialized:" in item:
        return {k: v for k, v in item.items() if k not in (":serialized:", ":type:")}
    return item


def _type_name(item) -> str:
    """'Box' from SB3's ':type:' "<class 'gymnasium.spaces.box.Box'>"."""
    match = re.fullmatch(r"<class '([\w.]+)'>", item.get(":type:", "") if isinstance(item, dict) else "")
    return match.group(1).rsplit(".", 1)[-1] if match else repr(item)[:80]


# -- spaces -------------------------------------------------------------------------------------------
def _space(item, key: str) -> gym.Space | None:
    """A gymnasium space from its readable attributes; None for a Box whose bounds numpy summarised."""
    kind, fields = _type_name(item), _readable(item)
    if kind == "Box":
        shape = tuple(int(n) for n in fields.get("_shape", fields.get("shape")))
        dtype = np.dtype(fields["dtype"])
        low, high = (_array(fields[k], fields.get(f"{k}_repr"), shape, dtype, f"{key}.{k}") for k in ("low", "high"))
        return None if low is None or high is None else gym.spaces.Box(low, high, shape, dtype)
    if kind == "Discrete":
        return gym.spaces.Discrete(int(fields["n"]), start=int(fields.get("start", 0)))
    if kind == "MultiDiscrete":
        nvec = _array(fields["nvec"], None, None, np.int64, f"{key}.nvec")
        start = _array(fields["start"], None, nvec.shape, np.int64, f"{key}.start") if "start" in fields else None
        return gym.spaces.MultiDiscrete(nvec, dtype=np.dtype(fields.get("dtype", "int64")), start=start)
    raise ValueError(f"{key} is a {kind}; fastppo reads Box, Discrete and MultiDiscrete spaces")


def _array(text, short: str | None, shape, dtype, what: str) -> np.ndarray | None:
    """An array from numpy's printed form ("[-1. -1. -8.]", nested for n-d); None if it was summarised
    ('...') and its short form (older gymnasium's ``low_repr``: one number when all are equal) cannot
    stand in."""
    if not isinstance(text, str):
        text = json.dumps(text)  # some versions store plain lists or numbers
    if "..." in text:
        if short is not None and "[" not in short and "..." not in short:
            return np.full(shape, np.array(short).astype(dtype))
        return None
    tokens = text.replace("[", " ").replace("]", " ").replace(",", " ").split()
    try:
        values = np.array(tokens).astype(dtype)  # parsed from the text, exactly (no float64 detour for ints)
    except ValueError:
        raise ValueError(f"{what} is not a printed array: {text[:80]!r}") from None
    if shape is None:
        return values
    if values.size != int(np.prod(shape)):
        raise ValueError(f"{what} has {values.size} values for shape {shape}")
    return values.reshape(shape)


# -- the policy -------------------------------------------------------------------------------------------
def _check_policy_class(item) -> None:
    """MlpPolicy is ActorCriticPolicy itself: its pickled class's readable methods name it."""
    fields = _readable(item) if isinstance(item, dict) else {}
    init = str(fields.get("__init__", ""))
    found = re.match(r"<function (\w+)\.__init__", init)
    if fields.get("__module__") != "stable_baselines3.common.policies" or not found or \
            found.group(1) != "ActorCriticPolicy":
        what = (f"{fields.get('__module__')}.{found.group(1)}" if found else
                f"a class from {fields.get('__module__')!r} that defines no __init__ (a subclass)")
        raise ValueError(f"its policy is {what}; fastppo reads SB3's MlpPolicy (ActorCriticPolicy)")


def _linears(weights: dict, net: str) -> list[tuple[torch.Tensor, torch.Tensor]]:
    """(weight, bias) of mlp_extractor.<net>'s Linear layers, in order (Sequential indices 0, 2, 4, ...)."""
    layers: dict[int, dict[str, torch.Tensor]] = {}
    for key, value in weights.items():
        match = _LAYER.fullmatch(key)
        if match and match.group(1) == net:
            layers.setdefault(int(match.group(2)), {})[match.group(3)] = value
    if sorted(layers) != list(range(0, 2 * len(layers), 2)) or any(len(p) != 2 for p in layers.values()):
        raise ValueError(f"mlp_extractor.{net} has layers {sorted(layers)}, not Linear layers with activations "
                         f"between them")
    return [(layers[i]["weight"], layers[i]["bias"]) for i in sorted(layers)]


def _policy_state(weights: dict, spaces: dict, use_sde: bool) -> tuple[dict, dict]:
    """fastppo ActorCritic's state_dict from SB3's, and the hidden sizes found (pi, vf)."""
    known = {k for k in weights if _LAYER.fullmatch(k)} | {"action_net.weight", "action_net.bias",
                                                           "value_net.weight", "value_net.bias", "log_std"}
    unknown = sorted(set(weights) - known)
    if unknown:
        raise ValueError(f"its policy has parameters fastppo's MlpPolicy does not ({', '.join(unknown[:6])}"
                         f"{', ...' if len(unknown) > 6 else ''}): a features extractor with parameters, shared "
                         f"layers or another network")
    state, arch = {}, {}
    for net, head, target in (("policy_net", "action_net", "actor"), ("value_net", "value_net", "critic")):
        layers = [*_linears(weights, net), (weights[f"{head}.weight"], weights[f"{head}.bias"])]
        if len(layers) == 1:
            raise ValueError(f"its {net} has no hidden layer; fastppo's MlpPolicy needs at least one")
        for i, ((w, b), (w_next, _)) in enumerate(zip(layers, [*layers[1:], (None, None)])):
            if w.dim() != 2 or b.shape != w.shape[:1] or (w_next is not None and w_next.shape[1] != w.shape[0]):
                raise ValueError(f"its {net} layer {i} has weight {tuple(w.shape)} and bias {tuple(b.shape)}, which "
                                 f"do not chain")
            state[f"{target}.{2 * i}.weight"], state[f"{target}.{2 * i}.bias"] = w, b
        arch["pi" if target == "actor" else "vf"] = [int(w.shape[0]) for w, _ in layers[:-1]]
        if spaces["observation_space"] is not None and layers[0][0].shape[1] != ObsSpec(spaces["observation_space"]).dim:
            raise ValueError(f"its {net} takes {layers[0][0].shape[1]} inputs, but observation_space "
                             f"{spaces['observation_space']} has {ObsSpec(spaces['observation_space']).dim}")
    if weights["value_net.weight"].shape[0] != 1:
        raise ValueError(f"its value_net has {weights['value_net.weight'].shape[0]} outputs, not 1")
    action_space = spaces["action_space"]
    if action_space is not None:
        spec = ActionSpec(action_space)
        if weights["action_net.weight"].shape[0] != spec.n_outputs:
            raise ValueError(f"its action_net has {weights['action_net.weight'].shape[0]} outputs, but action_space "
                             f"{action_space} needs {spec.n_outputs}")
        if spec.kind == "gaussian":
            want = (arch["pi"][-1], spec.n_outputs) if use_sde else (spec.n_outputs,)
            got = tuple(weights["log_std"].shape) if "log_std" in weights else None
            if got != want:
                raise ValueError(f"its log_std has shape {got}, fastppo's {'gSDE ' if use_sde else ''}policy for "
                                 f"{action_space} needs {want}")
            state["log_std"] = weights["log_std"]
    return state, arch


def _policy_kwargs(given: dict, arch: dict, image: bool) -> dict:
    """fastppo's policy_kwargs (net_arch as SB3 gives it, activation_fn by lower-case name) after checking
    that SB3's other options describe a network fastppo builds."""
    if not isinstance(given, dict):
        raise ValueError(f"its policy_kwargs are not readable: {given!r}")
    unknown = sorted(set(given) - {"net_arch", "activation_fn", "ortho_init", "log_std_init", *_POLICY_OPTIONS})
    if unknown:
        raise ValueError(f"its policy_kwargs hold {', '.join(unknown)}, which fastppo's MlpPolicy does not have")
    for key, allowed in _POLICY_OPTIONS.items():
        if allowed is not None and given.get(key, allowed[0]) not in allowed:
            raise ValueError(f"its policy_kwargs have {key}={given[key]!r}; fastppo's MlpPolicy has {allowed[0]!r} only")
    if given.get("normalize_images", True) and image:
        raise ValueError("its observation_space is an image (a 3-d uint8 Box), which SB3 divides by 255 "
                         "(normalize_images); fastppo's MlpPolicy does not")
    net_arch = given.get("net_arch")
    if isinstance(net_arch, list) and len(net_arch) == 1 and isinstance(net_arch[0], dict):
        net_arch = net_arch[0]  # SB3 < 1.8's [dict(pi=..., vf=...)]
    if net_arch is None:  # ActorCriticPolicy's default, which the weights show
        net_arch = arch["pi"] if arch["pi"] == arch["vf"] else dict(arch)
    sizes = {"pi": net_arch, "vf": net_arch} if isinstance(net_arch, list) else net_arch
    if not isinstance(sizes, dict) or {k: sizes.get(k) for k in ("pi", "vf")} != arch:
        raise ValueError(f"its policy_kwargs net_arch={net_arch!r} does not describe its weights (pi={arch['pi']}, "
                         f"vf={arch['vf']}; shared layers are not supported)")
    kwargs = {"net_arch": net_arch, "activation_fn": _activation(given.get("activation_fn"))}
    kwargs.update({k: given[k] for k in ("ortho_init", "log_std_init") if k in given})
    return kwargs


def _activation(text) -> str:
    """fastppo's name for SB3's activation_fn, saved as "<class 'torch.nn.modules.activation.ReLU'>"."""
    if text is None:
        return "tanh"  # ActorCriticPolicy's default
    match = re.fullmatch(r"<class 'torch\.nn\.modules\.activation\.(\w+)'>", str(text))
    names = {cls.__name__: name for name, cls in ACTIVATIONS.items()}
    if not match or match.group(1) not in names:
        raise ValueError(f"its activation_fn is {text}; fastppo's MlpPolicy takes {', '.join(sorted(ACTIVATIONS))}")
    return names[match.group(1)]


def _is_image(item, space: gym.Space | None) -> bool:
    """SB3's is_image_space (a 3-d uint8 Box over [0, 255]), from the readable fields; bounds that numpy
    summarised (``space`` None) count as [0, 255]."""
    fields = _readable(item)
    if _type_name(item) != "Box" or np.dtype(fields["dtype"]) != np.uint8 or len(fields.get("_shape", ())) != 3:
        return False
    return space is None or bool(np.all(space.low == 0)) and bool(np.all(space.high == 255))


# -- hyperparameters -------------------------------------------------------------------------------------
def _hyperparameters(data: dict, algo: str) -> dict:
    fields = set(_CONFIGS[algo].field_names()) - {"policy_kwargs", *_NOT_CARRIED}
    hyper = {}
    for key, value in data.items():
        name = _RENAMES.get(key, key)
        if name not in fields:
            continue
        if key in _SCHEDULES:
            value = _schedule(value)
            if value is None and key == "learning_rate":
                value = _schedule(data.get("lr_schedule"))
            if value is None or key == "clip_range_vf" and isinstance(value, str):
                continue  # only a function was saved (or, for clip_range_vf, None): fastppo's default
        elif isinstance(value, dict) and ":serialized:" in value:
            continue  # not plain data: fastppo's default
        hyper[name] = value
    return hyper


def _schedule(item) -> float | str | None:
    """A schedule's value: a number, "lin_<v>", or None when only a function was saved."""
    if isinstance(item, (int, float)) and not isinstance(item, bool):
        return float(item)
    fields = _readable(item) if isinstance(item, dict) else {}
    if "val" in fields:
        return _schedule(fields["val"])
    if {"start", "end", "end_fraction"} <= set(fields):
        return _linear(*(float(fields[k]) for k in ("start", "end", "end_fraction")))
    inner = fields.get("value_schedule")
    if isinstance(inner, str):
        if match := _CONSTANT_REPR.fullmatch(inner):
            return float(match.group(1))
        if match := _LINEAR_REPR.fullmatch(inner):
            return _linear(*(float(g) for g in match.groups()))
        return None
    return _schedule(inner) if inner is not None else None


def _linear(start: float, end: float, end_fraction: float) -> str | None:
    """fastppo's "lin_<v>" is SB3's LinearSchedule(v, 0, 1); other linear schedules have no plain form."""
    return f"lin_{start!r}" if end == 0 and end_fraction == 1 else None
