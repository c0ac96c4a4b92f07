"""Stable-Baselines3's vector envs as fastppo envs, by protocol: fastppo never imports stable_baselines3.

An SB3 VecEnv (``DummyVecEnv``, ``SubprocVecEnv`` and wrappers such as ``VecNormalize``,
``VecFrameStack``, ``VecMonitor``) resets finished envs itself and reports the end of an episode as one
``done`` flag, the time limit in ``infos[i]["TimeLimit.truncated"]`` and the true final observation in
``infos[i]["terminal_observation"]``. :class:`SB3VecEnv` turns that into fastppo's env contract:
gymnasium's SAME_STEP autoreset with ``terminated``/``truncated`` apart, ``infos["final_obs"]`` and
RecordEpisodeStatistics-style ``infos["episode"]``.
"""

from __future__ import annotations

import inspect
import numbers
import sys
import time

import gymnasium as gym
import numpy as np
from gymnasium.vector import AutoresetMode, VectorEnv
from gymnasium.vector.utils import batch_space

__all__ = ["SB3VecEnv", "SB3View", "find_vec_normalize", "is_sb3_vec_env", "sb3_view_class", "to_sb3_infos"]

_PROTOCOL_METHODS = ("reset", "step_async", "step_wait", "seed", "close")
# SB3 puts these in each env's info; the adapter turns them into truncated / infos["final_obs"].
_SB3_KEYS = ("TimeLimit.truncated", "terminal_observation")


def is_sb3_vec_env(obj) -> bool:
    """Whether ``obj`` follows Stable-Baselines3's VecEnv protocol: ``num_envs``, one env's
    ``observation_space`` and ``action_space``, ``reset()``, ``step_async``/``step_wait``, ``seed``
    and ``close`` (gymnasium's own envs, vector or not, are not SB3 VecEnvs)."""
    if isinstance(obj, (VectorEnv, gym.Env)):
        return False
    num_envs = getattr(obj, "num_envs", None)
    return (isinstance(num_envs, numbers.Integral) and not isinstance(num_envs, bool)
            and isinstance(getattr(obj, "observation_space", None), gym.Space)
            and isinstance(getattr(obj, "action_space", None), gym.Space)
            and all(callable(getattr(obj, name, None)) for name in _PROTOCOL_METHODS))


def _wrapper_chain(env):
    """``env`` and every SB3 VecEnv it wraps (through ``.venv``), outermost first. SB3's wrappers forward
    unknown attributes to the env they wrap, so only an object's own ``venv`` is followed."""
    if isinstance(env, SB3VecEnv):
        env = env.venv
    while env is not None:
        yield env
        env = inspect.getattr_static(env, "venv", None)


def _has_own(obj, *names: str) -> bool:
    """Whether ``obj`` itself (not an env it forwards attributes to) has every one of ``names``."""
    missing = object()
    return all(inspect.getattr_static(obj, name, missing) is not missing for name in names)


def find_vec_normalize(env):
    """The first SB3 ``VecNormalize`` in ``env``'s wrappers (``env`` an SB3 VecEnv or an
    :class:`SB3VecEnv`), or None. Found by its protocol: its own ``ret_rms``, ``normalize_obs`` and
    ``normalize_reward`` (``obs_rms`` exists only when it normalises observations)."""
    for wrapper in _wrapper_chain(env):
        if _has_own(wrapper, "ret_rms", "normalize_obs", "normalize_reward"):
            return wrapper
    return None


def _monitored(venv) -> bool:
    """Whether SB3's ``VecMonitor`` wraps ``venv`` or SB3's ``Monitor`` wraps each of its envs: both put
    every finished episode's raw return and length in ``infos[i]["episode"]``."""
    if any(_has_own(w, "episode_returns", "episode_lengths", "episode_count") for w in _wrapper_chain(venv)):
        return True
    has_attr = getattr(venv, "has_attr", None)  # SB3 VecEnv.has_attr: do all its envs have it
    return callable(has_attr) and bool(has_attr("get_episode_rewards"))  # a Monitor method


class SB3VecEnv(VectorEnv):
    """An SB3 VecEnv presented as a gymnasium :class:`~gymnasium.vector.VectorEnv` in SAME_STEP autoreset mode.

    ``step`` maps SB3's ``dones[i]`` to ``truncated[i]`` when ``infos[i]["TimeLimit.truncated"]`` says
    the time limit ended the episode, else to ``terminated[i]``; SB3's ``terminal_observation`` becomes
    ``infos["final_obs"][i]`` (mask ``infos["_final_obs"]``). A finished episode appears in
    ``infos["episode"]`` (``"r"``, ``"l"``, ``"t"``, mask ``infos["_episode"]``): SB3 ``Monitor``'s or
    ``VecMonitor``'s when the env has one (the raw return, even under ``VecNormalize``; a ``done`` they
    do not report, such as an Atari life lost, ends no episode), else counted here from the rewards
    passed through (``monitored`` is False then). Every other info key is batched as gymnasium does.
    Observations and rewards are the SB3 env's own (normalised by ``VecNormalize``, stacked by
    ``VecFrameStack``, ...).

    Attributes:
        venv: the wrapped SB3 VecEnv.
        last_infos: SB3's per-env info dicts of the last step (what SB3 callbacks see as ``infos``).
        monitored: whether a Monitor or VecMonitor reports the episodes.
    """

    def __init__(self, venv):
        if not is_sb3_vec_env(venv):
            raise TypeError(f"venv must follow Stable-Baselines3's VecEnv protocol (num_envs, observation_space, "
                            f"action_space, {', '.join(_PROTOCOL_METHODS)}), got {type(venv).__name__}")
        self.venv = venv
        self.num_envs = int(venv.num_envs)
        self.single_observation_space = venv.observation_space
        self.single_action_space = venv.action_space
        self.observation_space = batch_space(venv.observation_space, self.num_envs)
        self.action_space = batch_space(venv.action_space, self.num_envs)
        self.metadata = {**(getattr(venv, "metadata", None) or {}), "autoreset_mode": AutoresetMode.SAME_STEP}
        self.render_mode = getattr(venv, "render_mode", None)
        self.monitored = _monitored(venv)
        self.last_infos: list[dict] = [{} for _ in range(self.num_envs)]
        self._returns = np.zeros(self.num_envs)
        self._lengths = np.zeros(self.num_envs, np.int64)
        self._starts = np.full(self.num_envs, time.perf_counter())

    def reset(self, *, seed: int | None = None, options: dict | None = None):
        """Reset every env: ``venv.seed(seed)`` first when a seed is given (SB3 seeds env ``i`` with
        ``seed + i`` at its next reset), ``venv.set_options(options)`` when options are; returns ``(obs, {})``."""
        if seed is not None:
            if isinstance(seed, bool) or not isinstance(seed, numbers.Integral):
                raise TypeError(f"seed must be an int or None for a Stable-Baselines3 VecEnv, got {type(seed).__name__}")
            self.venv.seed(int(seed))
        if options is not None:
            self.venv.set_options(options)
        obs = self.venv.reset()
        self.last_infos = [{} for _ in range(self.num_envs)]
        self._returns[:] = 0
        self._lengths[:] = 0
        self._starts[:] = time.perf_counter()
        return obs, {}

    def step(self, actions):
        """One step of every env: ``(obs, rewards, terminated, truncated, infos)`` as described above."""
        self.venv.step_async(actions)
        obs, rewards, dones, sb3_infos = self.venv.step_wait()
        rewards = np.asarray(rewards, dtype=np.float64)
        dones = np.asarray(dones, dtype=bool)
        self.last_infos = sb3_infos
        self._returns += rewards
        self._lengths += 1
        truncated = np.array([bool(info.get("TimeLimit.truncated", False)) for info in sb3_infos]) & dones
        infos: dict = {}
        for i, info in enumerate(sb3_infos):
            env_info = {key: value for key, value in info.items() if key not in _SB3_KEYS}
            if dones[i]:
                if "terminal_observation" in info:
                    env_info["final_obs"] = info["terminal_observation"]
                if not self.monitored and "episode" not in env_info:
                    env_info["episode"] = {"r": float(self._returns[i]), "l": int(self._lengths[i]),
                                           "t": time.perf_counter() - self._starts[i]}
                self._returns[i], self._lengths[i], self._starts[i] = 0.0, 0, time.perf_counter()
            infos = self._add_info(infos, env_info, i)
        return obs, rewards, dones & ~truncated, truncated, infos

    def render(self):
        """The SB3 env's ``render()``."""
        return self.venv.render()

    def close_extras(self, **kwargs) -> None:
        """Closes the wrapped SB3 env."""
        self.venv.close()


def to_sb3_infos(info: dict, terminated: np.ndarray, truncated: np.ndarray) -> list[dict]:
    """A gymnasium vector step's info dict as SB3's per-env list: each env's own entries (where their
    ``_key`` mask is set; for an env whose episode ended, those of its last step, ``final_info``, as
    SB3's vector envs report them, not its reset's), a finished episode as ``episode`` (``{"r", "l"}``),
    ``TimeLimit.truncated`` on every step (truncated, not terminated), and for every finished env
    ``terminal_observation`` (the true final one)."""
    infos: list[dict] = [{} for _ in range(len(terminated))]
    ended = np.asarray(terminated) | np.asarray(truncated)
    final = info.get("final_info") or {}
    for source, rows in ((info, ~ended), (final, ended)):
        for key, value in source.items():
            if key.startswith("_") or key in ("episode", "final_obs", "final_info") or isinstance(value, dict):
                continue
            mask = source.get(f"_{key}")
            for i in np.flatnonzero(rows if mask is None else rows & mask):
                infos[i][key] = value[i]
    if "episode" in info:
        for i in np.flatnonzero(info["_episode"]):
            infos[i]["episode"] = {"r": float(info["episode"]["r"][i]), "l": int(info["episode"]["l"][i])}
    for i, env_info in enumerate(infos):  # on every step, as SB3's vector envs set it
        env_info["TimeLimit.truncated"] = bool(truncated[i] and not terminated[i])
    if "final_obs" in info:
        for i in np.flatnonzero(ended):
            infos[i]["terminal_observation"] = info["final_obs"][i]
    return infos


def sb3_view_class() -> type:
    """The class of :class:`SB3View` objects to make now: SB3View, and SB3's own ``VecEnv`` too once the
    program has imported stable_baselines3 (so that SB3's functions that check ``isinstance(env, VecEnv)``,
    such as its ``evaluate_policy``, take a view as one). fastppo imports nothing of SB3's: it only looks in
    ``sys.modules``."""
    base = getattr(sys.modules.get("stable_baselines3.common.vec_env.base_vec_env"), "VecEnv", None)
    if base is None:
        return SB3View
    if base not in _VIEW_CLASSES:
        _VIEW_CLASSES[base] = type("SB3View", (SB3View, base), {"__module__": __name__})
    return _VIEW_CLASSES[base]


_VIEW_CLASSES: dict[type, type] = {}


class SB3View:
    """A fastppo (gymnasium SAME_STEP) vector env seen through SB3's VecEnv API, which is what
    ``model.get_env()`` returns for envs that are not SB3's own (of :func:`sb3_view_class`), so that SB3
    scripts and callbacks can drive it: ``reset() -> obs``, ``step(actions) -> (obs, rewards, dones,
    infos)`` (SB3's per-env infos: see :func:`to_sb3_infos`), ``step_async``/``step_wait``, ``seed``,
    ``render``, ``close``, ``get_attr``/``set_attr``/``env_method`` (through gymnasium's
    ``get_attr``/``set_attr``/``call`` where the env has them), ``env_is_wrapped``. It steps the training
    env itself (as SB3's ``get_env()`` does): ``on_use`` is called on every reset and step, so the trainer
    knows its next rollout must start from a reset."""

    def __init__(self, env: VectorEnv, on_use=None):
        self.env, self._on_use = env, on_use
        self.num_envs = env.num_envs
        self.observation_space, self.action_space = env.single_observation_space, env.single_action_space
        self.render_mode = getattr(env, "render_mode", None)
        self.metadata = getattr(env, "metadata", {})
        self._seed: int | None = None
        self._actions = None

    def _used(self) -> None:
        if self._on_use is not None:
            self._on_use()

    def seed(self, seed: int | None = None) -> list:
        """SB3's: the seed of the next ``reset`` (env ``i`` gets ``seed + i``)."""
        self._seed = seed
        return [None if seed is None else seed + i for i in range(self.num_envs)]

    def reset(self):
        self._used()
        obs, _ = self.env.reset(seed=self._seed)
        self._seed = None
        return obs

    def step_async(self, actions) -> None:
        self._actions = actions

    def step_wait(self):
        self._used()
        obs, rewards, terminated, truncated, info = self.env.step(self._actions)
        terminated, truncated = np.asarray(terminated, bool), np.asarray(truncated, bool)
        return obs, np.asarray(rewards, np.float32), terminated | truncated, to_sb3_infos(info, terminated, truncated)

    def step(self, actions):
        self.step_async(actions)
        return self.step_wait()

    def render(self, mode: str | None = None):
        return self.env.render()

    def _indices(self, indices) -> list[int]:
        if indices is None:
            return list(range(self.num_envs))
        return [indices] if isinstance(indices, numbers.Integral) else list(indices)

    def _vector_call(self, name: str, what: str):
        method = getattr(self.env, name, None)
        if not callable(method):
            raise AttributeError(f"{type(self.env).__name__} has no per-env {name}(): {what} is not available on it")
        return method

    def get_attr(self, attr_name: str, indices=None) -> list:
        values = self._vector_call("get_attr", f"get_attr({attr_name!r})")(attr_name)
        return [values[i] for i in self._indices(indices)]

    def set_attr(self, attr_name: str, value, indices=None) -> None:
        indices = self._indices(indices)
        values = list(self._vector_call("get_attr", f"set_attr({attr_name!r})")(attr_name))
        for i in indices:
            values[i] = value
        self._vector_call("set_attr", f"set_attr({attr_name!r})")(attr_name, values)

    def env_method(self, method_name: str, *method_args, indices=None, **method_kwargs) -> list:
        results = self._vector_call("call", f"env_method({method_name!r})")(method_name, *method_args, **method_kwargs)
        return [results[i] for i in self._indices(indices)]

    def env_is_wrapped(self, wrapper_class, indices=None) -> list[bool]:
        """True for SB3's ``Monitor`` only: fastppo's envs report every finished episode's raw return and
        length in ``infos[i]["episode"]`` as it does (so SB3's ``evaluate_policy`` counts them as such)."""
        monitor = wrapper_class.__name__ == "Monitor" and wrapper_class.__module__.startswith("stable_baselines3")
        return [monitor] * len(self._indices(indices))

    def close(self) -> None:
        self.env.close()
