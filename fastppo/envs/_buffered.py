"""The one Python wrapper shared by fastppo's own envs (native built-ins and Numba user envs): N envs
stepping in place in preallocated buffers, gymnasium's SAME_STEP autoreset, RecordEpisodeStatistics'
``"episode"`` info, and argument checks. Subclasses supply only the batched step and reset.

What ``step``/``reset`` return belongs to the caller (``copy=True``, the default, as gymnasium's vector
envs): fresh arrays every call. ``copy=False`` returns views of the persistent buffers instead, which the
next ``step``/``reset`` overwrites: for callers that consume or copy each result before the next call
(fastppo's trainer does). A closed env refuses every call but ``close``.
"""

from __future__ import annotations

import numbers
import secrets
from typing import Any

import gymnasium as gym
from gymnasium.envs.classic_control.utils import verify_number_and_cast
import numpy as np
from gymnasium.vector import AutoresetMode, VectorEnv
from gymnasium.vector.utils import batch_space

__all__ = ["BufferedVecEnv"]


class BufferedVecEnv(VectorEnv):
    """A :class:`gymnasium.vector.VectorEnv` over fastppo's preallocated buffers.

    ``step`` returns ``(obs, rewards, terminated, truncated, infos)`` like gymnasium's vector envs in
    ``SAME_STEP`` mode: on a step where env i's episode ends, ``obs[i]`` is already the first
    observation of its next episode and ``infos["final_obs"][i]`` is the true last observation
    (``infos["_final_obs"]`` masks the envs that ended; other rows are stale). ``infos["episode"]`` holds
    ``{"r", "l", "t"}`` of the episodes that ended this step, 0 elsewhere, with mask ``infos["_episode"]``,
    exactly as :class:`gymnasium.wrappers.vector.RecordEpisodeStatistics` reports them. Rewards are
    float32; episode returns are accumulated in float64. With ``copy=True`` every returned array (infos
    included) is the caller's; with ``copy=False`` they are views that the next call overwrites.
    """

    metadata = {"autoreset_mode": AutoresetMode.SAME_STEP, "render_modes": []}

    def __init__(self, *, env_id: str, num_envs: int, single_observation_space: gym.spaces.Box,
                 single_action_space: gym.Space, state_dim: int, max_episode_steps: int,
                 reset_options: dict[str, float], seed: int | None, device: str = "cpu", copy: bool = True):
        if isinstance(num_envs, bool) or not isinstance(num_envs, numbers.Integral):
            raise TypeError(f"num_envs must be an int, got {type(num_envs).__name__}")
        if num_envs < 1:
            raise ValueError(f"num_envs must be >= 1, got {num_envs}")
        if not isinstance(copy, bool):
            raise TypeError(f"copy must be a bool, got {type(copy).__name__}")
        self.num_envs = int(num_envs)
        self.env_id = env_id
        self.copy = copy
        self.device = device
        self.max_episode_steps = int(max_episode_steps)
        self.single_observation_space = single_observation_space
        self.single_action_space = single_action_space
        self.observation_space = batch_space(single_observation_space, self.num_envs)
        self.action_space = batch_space(single_action_space, self.num_envs)
        self._reset_options = dict(reset_options)  # option name -> default; the order is the native (a, b)
        self._pending_seed = _check_seed(seed, "seed")
        obs_dim = single_observation_space.shape[0]
        n = self.num_envs
        specs = {
            "obs": ((n, obs_dim), "float32"), "final_obs": ((n, obs_dim), "float32"),
            "rewards": ((n,), "float32"), "terminated": ((n,), "bool"), "truncated": ((n,), "bool"),
            "episode_r": ((n,), "float64"), "episode_l": ((n,), "int64"), "episode_t": ((n,), "float64"),
            "state": ((n, state_dim), "float64"), "rng": ((n, 2), "int64"), "elapsed": ((n,), "int64"),
            "running_return": ((n,), "float64"), "start_time": ((n,), "float64"),
        }
        if device == "cpu":
            self._buffers = {k: np.zeros(shape, dtype) for k, (shape, dtype) in specs.items()}
            self._logical_or = np.logical_or
            self._own = np.copy if copy else _same
        else:
            import torch

            self._buffers = {k: torch.zeros(shape, dtype=getattr(torch, dtype), device=device)
                             for k, (shape, dtype) in specs.items()}
            self._logical_or = torch.logical_or
            self._own = torch.clone if copy else _same
            self.device = str(self._buffers["obs"].device)  # "cuda" resolved: the env stays on that GPU
        b = self._buffers
        self._step_result = (b["obs"], b["rewards"], b["terminated"], b["truncated"])
        self._dones = b["terminated"] | b["truncated"]  # the done mask, rewritten in place by each step
        self._step_batch = self._step_before_reset  # replaced by the subclass's step at the first reset

    # -- what subclasses implement -------------------------------------------------------------------
    def _batched_step(self):
        """The function that steps every env in place with the actions and returns how many episodes
        ended (-1 if unknown without a sync). It is called once per vector step, so it is looked up once."""
        raise NotImplementedError

    def _reset_batch(self, seed: int | None, mask, a: float, b: float) -> None:
        """Reset the envs in `mask` (None: all) in place, reseeding them from `seed` if given."""
        raise NotImplementedError

    # -- gymnasium's VectorEnv API --------------------------------------------------------------------
    def reset(self, *, seed: int | None = None, options: dict[str, Any] | None = None):
        """Reset all envs (or those in ``options["reset_mask"]``).

        Args:
            seed: an int >= 0 reseeds every env's random stream (env i from ``(seed, i)``); None keeps the
                streams going (on the first reset: the ``seed`` given to ``make_vec_env``, else a random one).
            options: ``"reset_mask"``: a bool array of shape ``(num_envs,)``: reset only those envs;
                plus the env's initial-state bounds, as gymnasium's env takes them (``"low"``/``"high"``, or
                ``"x_init"``/``"y_init"`` for Pendulum), used for this reset only.
        """
        self._check_open()
        seed = _check_seed(seed, "seed")
        if seed is None and self._step_batch == self._step_before_reset:
            seed = self._pending_seed if self._pending_seed is not None else secrets.randbits(63)
        mask, bounds = None, dict(self._reset_options)
        for key, value in (options or {}).items():
            if key == "reset_mask":
                mask = value
                if not (hasattr(mask, "dtype") and str(mask.dtype).removeprefix("torch.") == "bool"):
                    raise TypeError(f"options['reset_mask'] must be a bool array, got {type(mask).__name__}"
                                    f"{' of dtype ' + str(mask.dtype) if hasattr(mask, 'dtype') else ''}")
            elif key in bounds:
                bounds[key] = verify_number_and_cast(value)
            else:
                raise ValueError(f"options has an unknown key {key!r}; {self.env_id} accepts "
                                 f"{', '.join(map(repr, ['reset_mask', *self._reset_options]))}")
        a, b = (*bounds.values(), 0.0, 0.0)[:2]  # the env's two reset parameters; unused by Numba envs
        if list(bounds) == ["low", "high"] and a > b:
            raise ValueError(f"options['low'] ({a}) must not exceed options['high'] ({b})")
        if seed is not None:
            super().reset(seed=seed)  # gymnasium's own np_random for the vector env, like its vector envs
        self._reset_batch(seed, mask, a, b)
        self._step_batch = self._batched_step()
        return self._own(self._buffers["obs"]), {}

    def step(self, actions):
        """Step every env with ``actions`` (a numpy array, a torch tensor, or anything np.asarray takes).

        Discrete envs take integer actions of shape ``(num_envs,)``; Box envs take float32/float64 actions
        of shape ``(num_envs, 1)``: finite values outside the bounds are clipped as gymnasium's env clips
        them, NaN and infinities are rejected. Bad actions raise before any env is stepped.
        """
        ended = self._step_batch(actions)
        own = self._own
        return (*map(own, self._step_result), {} if ended == 0 else self._infos())

    def _infos(self) -> dict:
        """The infos of a step in which episodes may have ended (see the class doc)."""
        b, dones, own = self._buffers, self._dones, self._own
        self._logical_or(b["terminated"], b["truncated"], out=dones)
        mask = own(dones)
        return {
            "final_obs": own(b["final_obs"]), "_final_obs": mask,
            "final_info": {}, "_final_info": mask,
            "episode": {"r": own(b["episode_r"]), "l": own(b["episode_l"]), "t": own(b["episode_t"])},
            "_episode": mask,
        }

    def _step_before_reset(self, actions) -> int:
        self._check_open()
        raise RuntimeError(f"{self.env_id}: call reset() before step()")

    def _check_open(self) -> None:
        if self.closed:
            raise RuntimeError(f"{self.env_id}: the env is closed")

    def close_extras(self, **kwargs) -> None:
        """After close(), every call but close() raises (close() again does nothing)."""
        self.__dict__.pop("step", None)  # a native one-call step installed over the method
        self._step_batch = self._step_before_reset

    # -- beyond gymnasium's API ----------------------------------------------------------------------
    def get_state(self):
        """A copy of every env's physics state, ``(num_envs, state_dim)`` float64 (for tests and debugging)."""
        self._check_open()
        return self._buffers["state"].copy() if self.device == "cpu" else self._buffers["state"].clone()

    def set_state(self, state, elapsed=None) -> None:
        """Overwrite every env's physics state (and, if given, its steps since reset: an int or an integer
        array of shape ``(num_envs,)``, in ``[0, max_episode_steps]``); see ``get_state``. ``state`` is a
        numpy array or a tensor of real numbers. The observations are not recomputed until the next step."""
        self._check_open()
        buf = self._buffers["state"]
        state = _real_array(state, "state")
        if tuple(state.shape) != tuple(buf.shape):
            raise ValueError(f"state must have shape {tuple(buf.shape)}, got {tuple(state.shape)}")
        if not bool((state.isfinite() if hasattr(state, "isfinite") else np.isfinite(state)).all()):
            raise ValueError("state must be finite (no env reaches inf or NaN), got a non-finite value")
        if elapsed is not None:
            elapsed = self._checked_elapsed(elapsed)
        buf[...] = state
        if elapsed is not None:
            el = self._buffers["elapsed"]
            el[...] = elapsed if self.device == "cpu" else el.new_tensor(elapsed)

    def _checked_elapsed(self, elapsed) -> np.ndarray:
        if isinstance(elapsed, (bool, np.bool_)) or not isinstance(elapsed, (numbers.Integral, np.ndarray, list, tuple)) \
                and not hasattr(elapsed, "detach"):
            raise TypeError(f"elapsed must be an int or an integer array, got {type(elapsed).__name__}")
        if hasattr(elapsed, "detach"):  # a torch tensor
            elapsed = elapsed.detach().cpu().numpy()
        try:
            values = np.asarray(elapsed)
        except ValueError as e:
            raise ValueError(f"elapsed could not be read as an array: {e}") from e
        if values.dtype.kind not in "iu":
            raise TypeError(f"elapsed must be an int or an integer array, got dtype {values.dtype}")
        if values.shape not in ((), (self.num_envs,)):
            raise ValueError(f"elapsed must be an int or have shape ({self.num_envs},), got {values.shape}")
        if values.size and not (0 <= values.min() and values.max() <= self.max_episode_steps):
            raise ValueError(f"elapsed must be in [0, {self.max_episode_steps}] (steps since reset), got {values}")
        return values.astype(np.int64)

    def snapshot(self) -> dict:
        """Everything that decides the envs' future — physics, random streams, step counters, running
        episode statistics, current observations — as CPU numpy copies: what a training checkpoint
        needs to resume exactly where it stopped (see :meth:`restore`)."""
        self._check_open()
        copy = (lambda x: x.copy()) if self.device == "cpu" else (lambda x: x.cpu().numpy())
        return {"buffers": {k: copy(v) for k, v in self._buffers.items()},
                "started": self._step_batch != self._step_before_reset}

    def restore(self, snapshot: dict) -> None:
        """Put the envs back in the state :meth:`snapshot` recorded (same env id and ``num_envs``). The
        snapshot is checked whole (every buffer, numpy arrays of a dtype that casts to the buffer's within
        its kind, the shapes, a finite state) before anything is written."""
        self._check_open()
        if not isinstance(snapshot, dict) or not isinstance(snapshot.get("buffers"), dict) or "started" not in snapshot:
            raise TypeError("snapshot must be a dict {'buffers': {name: array}, 'started': bool} as snapshot() "
                            f"returns it, got {type(snapshot).__name__}")
        given = snapshot["buffers"]
        missing, unknown = sorted(self._buffers.keys() - given.keys()), sorted(given.keys() - self._buffers.keys())
        if missing or unknown:
            raise ValueError(f"snapshot['buffers'] must hold exactly this env's buffers: missing {missing}, "
                             f"unknown {unknown}")
        for key, value in given.items():
            buf, name = self._buffers[key], f"snapshot[{key!r}]"
            if not isinstance(value, np.ndarray):
                raise TypeError(f"{name} must be a numpy array (as snapshot() makes it), got {type(value).__name__}")
            dtype = buf.dtype if self.device == "cpu" else np.dtype(str(buf.dtype).removeprefix("torch."))
            if not np.can_cast(value.dtype, dtype, "same_kind"):
                raise TypeError(f"{name} must have dtype {dtype}, got {value.dtype}")
            if tuple(buf.shape) != value.shape:
                raise ValueError(f"snapshot[{key!r}] has shape {value.shape}, this env's is {tuple(buf.shape)} "
                                 f"(a different env or num_envs)")
            if key == "state" and not np.isfinite(value).all():
                raise ValueError(f"{name} must be finite (no env reaches inf or NaN), got a non-finite value")
        for key, value in given.items():
            buf = self._buffers[key]
            buf[...] = value if self.device == "cpu" else buf.new_tensor(value)
        if snapshot["started"]:
            self._step_batch = self._batched_step()

    def __repr__(self) -> str:
        return f"{type(self).__name__}({self.env_id}, num_envs={self.num_envs}, device={self.device!r})"


def check_actions(actions, space: gym.Space, num_envs: int, env_id: str) -> None:
    """The native binding's action checks (csrc/envs/env_batch.cpp), worded the same, for the envs that step
    elsewhere: numpy arrays (Numba envs) or torch tensors (CUDA envs, whose binding cannot read the values
    without a sync). Discrete actions: an integer dtype, shape (num_envs,),
    values in range; Box actions: float32/float64, shape (num_envs, *space.shape), finite (finite
    out-of-range ones are clipped by the env). Raises naming the first bad action, before any env steps."""
    dtype = str(actions.dtype).removeprefix("torch.")
    discrete = isinstance(space, gym.spaces.Discrete)
    shape = (num_envs,) if discrete else (num_envs, *space.shape)
    if discrete and not dtype.startswith(("int", "uint")):
        raise TypeError(f"actions must have an integer dtype (int32 or int64) for {env_id}'s "
                        f"Discrete({int(space.n)}) actions, got {dtype}")
    if not discrete and dtype not in ("float32", "float64"):
        raise TypeError(f"actions must have dtype float32 or float64 for {env_id}'s Box actions, got {dtype}")
    if tuple(actions.shape) != shape:
        raise ValueError(f"actions must have shape {shape} for {env_id} with {num_envs} envs, "
                         f"got {tuple(actions.shape)}")
    if discrete:
        bad = (actions < 0) | (actions >= int(space.n))
    else:
        finite = actions.isfinite() if hasattr(actions, "isfinite") else np.isfinite(actions)
        bad = ~finite.reshape(num_envs, -1).all(1)
    if bool(bad.any()):
        host = np.asarray(bad.cpu() if hasattr(bad, "cpu") else bad).reshape(-1)
        i = int(np.flatnonzero(host)[0])
        value = actions[i].tolist()
        if discrete:
            raise ValueError(f"actions[{i}] = {value} is out of range: {env_id} takes actions in "
                             f"{{0, ..., {int(space.n) - 1}}}")
        raise ValueError(f"actions[{i}] = {value} is not finite; {env_id} needs finite actions (finite "
                         f"out-of-range ones are clipped)")


def _real_array(x, name: str):
    """A numpy array or a torch tensor of real numbers (bool, integers, floats), as it can be written into a
    buffer: a tensor detached, its lazy negation resolved. Anything else is a TypeError naming ``name``."""
    if isinstance(x, np.ndarray):
        if x.dtype.kind not in "biuf":
            raise TypeError(f"{name} must hold real numbers, got dtype {x.dtype}")
        return x
    if type(x).__module__.startswith("torch") and hasattr(x, "is_complex"):
        if x.is_complex() or not (x.is_floating_point() or str(x.dtype) in _TORCH_INTS):
            raise TypeError(f"{name} must hold real numbers, got dtype {x.dtype}")
        return x.detach().resolve_neg()
    raise TypeError(f"{name} must be a numpy array or a torch tensor, got {type(x).__name__}")


_TORCH_INTS = {f"torch.{t}" for t in ("bool", "uint8", "int8", "int16", "int32", "int64")}


def _check_seed(seed, name: str) -> int | None:
    if seed is None:
        return None
    if isinstance(seed, bool) or not isinstance(seed, numbers.Integral) or not 0 <= seed < 2**64:
        raise TypeError(f"{name} must be None or an int in [0, 2**64), got {seed!r}")
    return int(seed)


def _same(x):
    return x
