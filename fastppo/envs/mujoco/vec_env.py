"""gymnasium's MuJoCo v5 suite as one vector env: the physics of every copy stepped by
:class:`mujoco.batch.Batch` on its native thread pool, the task logic (:mod:`fastppo.envs.mujoco.task`)
in a fixed number of numpy calls per vector step, whatever the number of envs."""

from __future__ import annotations

import numbers
import os
import secrets
from typing import Any

import gymnasium as gym
import numpy as np
from gymnasium.vector import AutoresetMode, VectorEnv
from gymnasium.vector.utils import batch_space

from fastppo import _backend
from fastppo.envs._buffered import _check_seed, check_actions
from fastppo.envs.mujoco.task import MujocoTask, assets_dir, check_range

__all__ = ["MujocoVecEnv"]


class MujocoVecEnv(VectorEnv):
    """``num_envs`` copies of a gymnasium v5 MuJoCo env, stepped together.

    The same contract as fastppo's other envs (:class:`fastppo.envs.BuiltinVecEnv`): a gymnasium
    ``VectorEnv`` autoresetting in ``SAME_STEP`` mode with the true last observation in
    ``infos["final_obs"]`` (one ``(num_envs, obs_dim)`` array, rows of the envs in ``infos["_final_obs"]``),
    finished episodes in ``infos["episode"]``, the time limit as truncation, ``copy`` semantics, and every
    call but ``close`` refused after ``close()``. What differs is what gymnasium's MuJoCo envs do
    differently: observations and rewards are float64, and every step's ``info`` terms (``x_velocity``,
    ``reward_forward``, ``reward_ctrl``, ...) come as gymnasium's sync vector env gives them: one
    ``(num_envs, ...)`` array per key with its ``_key`` mask; an env that ended holds its reset info there and
    its last step's terms in ``infos["final_info"]``.

    Seeding follows gymnasium's vector envs: ``reset(seed=s)`` seeds env i's generator with ``s + i``, so
    for the same seed and actions these envs give what ``gymnasium.make_vec(env_id, num_envs,
    vectorization_mode="sync")`` gives, bit for bit (``tests/test_mujoco_envs.py``).

    Args:
        env_id: an id of :data:`fastppo.envs.mujoco.MUJOCO_TASKS`.
        num_envs: number of envs, >= 1.
        seed: seed of the first ``reset()`` called without one (None: a random seed).
        num_threads: threads of the physics pool (default: fastppo's thread count).
        copy: as :func:`fastppo.make_vec_env`'s.
        **options: gymnasium v5's constructor options for the env (``forward_reward_weight``,
            ``ctrl_cost_weight``, ``reset_noise_scale``, ``exclude_current_positions_from_observation``,
            ``xml_file``, ``frame_skip``, ...), checked by name and type.
    """

    metadata = {"autoreset_mode": AutoresetMode.SAME_STEP, "render_modes": []}

    def __init__(self, env_id: str, num_envs: int, *, seed: int | None = None, num_threads: int | None = None,
                 copy: bool = True, **options):
        import mujoco
        import mujoco.batch

        from fastppo.envs.mujoco import MUJOCO_TASKS

        if env_id not in MUJOCO_TASKS:
            raise ValueError(f"env_id {env_id!r} is not a MuJoCo task here; these are: {', '.join(MUJOCO_TASKS)}")
        if isinstance(num_envs, bool) or not isinstance(num_envs, numbers.Integral) or num_envs < 1:
            raise ValueError(f"num_envs must be an int >= 1, got {num_envs!r}")
        if not isinstance(copy, bool):
            raise TypeError(f"copy must be a bool, got {type(copy).__name__}")
        if num_threads is None:
            num_threads = _backend.num_threads()
        if isinstance(num_threads, bool) or not isinstance(num_threads, numbers.Integral) or num_threads < 1:
            raise ValueError(f"num_threads must be an int >= 1, got {num_threads!r}")
        task_class: type[MujocoTask] = MUJOCO_TASKS[env_id]
        options = _checked_options(env_id, task_class, options)
        self.env_id, self.num_envs, self.copy = env_id, int(num_envs), copy
        self.max_episode_steps = task_class.max_episode_steps
        xml = options.pop("xml_file")
        path = xml if xml.startswith((".", "/")) else os.path.join(assets_dir(), xml)
        if not os.path.exists(path):
            raise FileNotFoundError(f"xml_file {xml!r}: no file at {path}")
        model = mujoco.MjModel.from_xml_path(path)
        self._batch = mujoco.batch.Batch(model, self.num_envs, int(num_threads), persistent=task_class.persistent)
        self.task = task_class(env_id, model, self._batch, options.pop("frame_skip"), **options)
        n, size = self.num_envs, self.task.observation_size
        self.single_observation_space = gym.spaces.Box(-np.inf, np.inf, (size,), np.float64)
        low, high = model.actuator_ctrlrange.T.astype(np.float32)
        self.single_action_space = gym.spaces.Box(low, high, dtype=np.float32)
        self.observation_space = batch_space(self.single_observation_space, n)
        self.action_space = batch_space(self.single_action_space, n)
        self._obs, self._final_obs = np.zeros((n, size)), np.zeros((n, size))
        self._action_shape, self._every_env = (n, *self.single_action_space.shape), np.ones(n, bool)
        self._rngs: list[np.random.Generator] = []
        self._pending_seed = _check_seed(seed, "seed")
        self._elapsed = np.zeros(n, np.int64)
        self._episode_r, self._episode_l = np.zeros(n), np.zeros(n, np.int64)
        self._episode_start = np.zeros(n)
        self._started = False

    # -- gymnasium's VectorEnv API --------------------------------------------------------------------
    def reset(self, *, seed: int | None = None, options: dict[str, Any] | None = None):
        """Reset every env (or those in ``options["reset_mask"]``, a bool array of shape ``(num_envs,)``).
        ``seed``: an int >= 0 reseeds env i's generator with ``seed + i``; None keeps the generators going
        (on the first reset: ``make_vec_env``'s seed, else a random one). Returns ``(obs, infos)``, infos
        holding gymnasium's reset info terms (``x_position``, ...)."""
        self._check_open()
        seed = _check_seed(seed, "seed")
        if seed is None and not self._rngs:
            seed = self._pending_seed if self._pending_seed is not None else secrets.randbits(63)
        ids = np.arange(self.num_envs)
        for key, value in (options or {}).items():
            if key != "reset_mask":
                raise ValueError(f"options has an unknown key {key!r}; {self.env_id} accepts 'reset_mask'")
            if not isinstance(value, np.ndarray) or value.dtype != bool or value.shape != (self.num_envs,):
                raise TypeError(f"options['reset_mask'] must be a bool numpy array of shape ({self.num_envs},), got "
                                f"{type(value).__name__} {getattr(value, 'dtype', '')} {getattr(value, 'shape', '')}")
            ids = np.flatnonzero(value)
        if seed is not None:
            super().reset(seed=seed)
            self._rngs = [np.random.default_rng(seed + i) for i in range(self.num_envs)]
        self._reset_envs(ids)
        self._before = self.task.before_step()
        self._started = True
        infos = _batched_info(self.task.reset_info(ids), ids, self.num_envs)
        return self._own(self._obs), infos

    def step(self, actions):
        """Step every env with ``actions``, float32/float64 of shape ``(num_envs, action_dim)`` and finite;
        as in gymnasium's MuJoCo envs they reach the controls unclipped (MuJoCo clamps them to the
        actuators' ``ctrlrange``; the control cost sees them as given)."""
        return self._step(actions, self._own)

    def step_views(self, actions):
        """:meth:`step` as with ``copy=False`` whatever ``copy`` is: the observations and
        ``infos["final_obs"]`` are the env's own buffers, valid until the next call (for the native
        rollout, which copies what it reads; ``fastppo.algos.rollout.EnvStepper``)."""
        return self._step(actions, _view)

    def _step(self, actions, own):
        """The step; ``own(buffer)`` is what the caller gets of each of the env's buffers."""
        self._check_open()
        if not self._started:
            raise RuntimeError(f"{self.env_id}: call reset() before step()")
        actions = np.asarray(actions.detach().cpu() if hasattr(actions, "detach") else actions)
        if not (actions.dtype in _FLOATS and actions.shape == self._action_shape and np.isfinite(actions).all()):
            check_actions(actions, self.single_action_space, self.num_envs, self.env_id)  # raises, naming why
        task = self.task
        task.ctrl[:] = actions
        self._batch.step(None, nstep=task.frame_skip)
        rewards, terminated, info = task.after_step(actions, self._before, self._obs)
        self._elapsed += 1
        truncated = self._elapsed >= self.max_episode_steps
        self._episode_r += rewards
        self._episode_l += 1
        done = terminated | truncated
        infos = {}
        for key, values in info.items():
            infos[key], infos["_" + key] = values, self._every_env.copy()  # (np.ones, at a third of its cost)
        if done.any():
            infos = self._end_episodes(np.flatnonzero(done), infos, own)
        # what the next step needs from before it, read now: a snapshot can then carry it (the derived
        # fields it may come from are not part of the state a snapshot restores)
        self._before = task.before_step()
        return own(self._obs), rewards, terminated, truncated, infos

    def _end_episodes(self, ids: np.ndarray, step_info: dict, own) -> dict:
        """SAME_STEP autoreset of the envs ``ids``: their final observations, their last step's info in
        ``final_info``, their episode statistics; then their reset and its info, as gymnasium's sync
        vector env arranges them (the final observations as ``own`` gives them)."""
        n, mask = self.num_envs, np.zeros(self.num_envs, bool)
        mask[ids] = True
        final_info = {key: (np.where(_rows(mask, v), v, 0).astype(v.dtype) if not key.startswith("_") else mask.copy())
                      for key, v in step_info.items()}
        self._final_obs[ids] = self._obs[ids]
        now = _now()
        episode = {"r": np.where(mask, self._episode_r, 0.0), "l": np.where(mask, self._episode_l, 0),
                   "t": np.where(mask, np.round(now - self._episode_start, 6), 0.0)}
        self._reset_envs(ids)
        infos = {}
        if not mask.all():  # (gymnasium has no key that no env reported)
            for key in [k for k in step_info if not k.startswith("_")]:
                infos[key] = np.where(_rows(mask, step_info[key]), 0, step_info[key]).astype(step_info[key].dtype)
                infos["_" + key] = ~mask
        for key, values in self.task.reset_info(ids).items():
            infos.setdefault(key, np.zeros((n, *values.shape[1:]), values.dtype))[ids] = values
            infos.setdefault("_" + key, np.zeros(n, bool))[ids] = True
        infos.update(final_obs=own(self._final_obs), _final_obs=mask, final_info=final_info,
                     _final_info=mask.copy(), episode=episode, _episode=mask.copy())
        return infos

    def _reset_envs(self, ids: np.ndarray) -> None:
        """gymnasium's reset for the envs ``ids``: the model's defaults (``mj_resetData``), each env's
        ``reset_model`` draw from its own generator, ``mj_forward``; their counters restart."""
        if ids.size == 0:
            return
        task, batch = self.task, self._batch
        batch.reset(ids, stage=0)  # mjSTAGE_NONE: the state is written next, then forward
        for i in ids:
            task.qpos[i], task.qvel[i] = task.reset_state(self._rngs[i])
        batch.forward(ids)
        task.after_reset(ids)
        task.observe(ids, self._obs)
        self._elapsed[ids] = 0
        self._episode_r[ids], self._episode_l[ids] = 0.0, 0
        self._episode_start[ids] = _now()

    # -- beyond gymnasium's API ----------------------------------------------------------------------
    def set_state(self, qpos, qvel) -> None:
        """Every env's ``(qpos, qvel)``, ``(num_envs, nq)`` and ``(num_envs, nv)``, then ``mj_forward``, as
        gymnasium's ``MujocoEnv.set_state`` does for one; the observations follow (for tests)."""
        self._check_open()
        task = self.task
        for name, value, target in (("qpos", qpos, task.qpos), ("qvel", qvel, task.qvel)):
            value = np.asarray(value, np.float64)
            if value.shape != target.shape or not np.isfinite(value).all():
                raise ValueError(f"{name} must be finite of shape {target.shape}, got shape {value.shape}")
            target[:] = value
        self._batch.forward()
        task.observe(np.arange(self.num_envs), self._obs)
        self._before = task.before_step()

    def get_state(self) -> tuple[np.ndarray, np.ndarray]:
        """Copies of every env's ``(qpos, qvel)``."""
        self._check_open()
        return self.task.qpos.copy(), self.task.qvel.copy()

    def snapshot(self) -> dict:
        """Everything that decides the envs' future — each simulation's integration state, what the next
        step reads from before it, the generators, step counters, running episode statistics and the current
        observations — as numpy copies and plain data: what a training checkpoint needs to resume
        exactly (see :meth:`restore`)."""
        self._check_open()
        if not self._started:
            return {"started": False}
        return {"started": True, "state": {name: self._batch.bind(name).copy() for name in _STATE_FIELDS},
                "before": _copy_tree(self._before), "rngs": [rng.bit_generator.state for rng in self._rngs],
                "counters": {name: getattr(self, "_" + name).copy() for name in _COUNTERS}}

    def restore(self, snapshot: dict) -> None:
        """Put the envs back where :meth:`snapshot` found them (same env id, options and ``num_envs``);
        the snapshot is checked whole before anything is written. Episodes in progress keep their returns;
        their wall-clock start is now."""
        self._check_open()
        if not isinstance(snapshot, dict) or "started" not in snapshot:
            raise TypeError(f"snapshot must be a dict as snapshot() returns it, got {type(snapshot).__name__}")
        if not snapshot["started"]:
            return
        parts = (snapshot.get("state"), snapshot.get("counters"), snapshot.get("rngs"))
        if not (isinstance(parts[0], dict) and set(parts[0]) == set(_STATE_FIELDS) and isinstance(parts[1], dict)
                and set(parts[1]) == set(_COUNTERS) and isinstance(parts[2], list) and len(parts[2]) == self.num_envs):
            raise ValueError(f"snapshot does not hold this env's state ({self.env_id}, num_envs={self.num_envs})")
        arrays = {**{f"state[{k!r}]": (v, self._batch.bind(k)) for k, v in parts[0].items()},
                  **{f"counters[{k!r}]": (v, getattr(self, "_" + k)) for k, v in parts[1].items()}}
        for name, (value, target) in arrays.items():
            if not isinstance(value, np.ndarray) or value.shape != target.shape:
                raise ValueError(f"snapshot {name} must be an array of shape {target.shape} (another env, options or "
                                 f"num_envs?), got {getattr(value, 'shape', type(value).__name__)}")
        rngs = []
        for state in snapshot["rngs"]:
            rng = np.random.default_rng()
            rng.bit_generator.state = state
            rngs.append(rng)
        for value, target in arrays.values():
            target[...] = value
        self._before, self._rngs, self._started = _copy_tree(snapshot["before"]), rngs, True
        self._episode_start[:] = _now()

    def _own(self, x: np.ndarray) -> np.ndarray:
        return x.copy() if self.copy else x

    def _check_open(self) -> None:
        if self.closed:
            raise RuntimeError(f"{self.env_id}: the env is closed")

    def close_extras(self, **kwargs) -> None:
        """Release the batch; after close() every call but close() raises."""
        self._batch = None

    def __repr__(self) -> str:
        return f"MujocoVecEnv({self.env_id}, num_envs={self.num_envs})"


# the fields of a simulation's integration state (mjSTATE_INTEGRATION) that these models use
_STATE_FIELDS = ("time", "qpos", "qvel", "act", "qacc_warmstart", "ctrl", "qfrc_applied", "xfrc_applied")
# the env's own per-env arrays a snapshot carries (attributes ``_<name>``)
_COUNTERS = ("elapsed", "episode_r", "episode_l", "obs")


def _copy_tree(x):
    """Copies of the arrays in ``x`` (an array, a tuple of arrays, or None)."""
    if isinstance(x, tuple):
        return tuple(_copy_tree(v) for v in x)
    return None if x is None else np.array(x)


_FLOATS = (np.dtype(np.float32), np.dtype(np.float64))


def _view(x: np.ndarray) -> np.ndarray:
    """The buffer itself (``step_views``' ``own``)."""
    return x


def _now() -> float:
    import time

    return time.perf_counter()


def _rows(mask: np.ndarray, values: np.ndarray) -> np.ndarray:
    """``mask`` over the envs, shaped to select the rows of ``values`` (an info term may be an array per
    env, as Humanoid's ``tendon_length``)."""
    return mask.reshape(mask.shape + (1,) * (values.ndim - 1))


def _batched_info(info: dict[str, np.ndarray], ids: np.ndarray, n: int) -> dict:
    """Per-env terms of the envs ``ids`` as gymnasium's vector infos: ``(n, ...)`` values and ``_key`` masks."""
    out = {}
    for key, values in info.items():
        out[key] = np.zeros((n, *values.shape[1:]), values.dtype)
        out[key][ids] = values
        out["_" + key] = np.zeros(n, bool)
        out["_" + key][ids] = True
    return out


def _checked_options(env_id: str, task_class: type[MujocoTask], options: dict) -> dict:
    """gymnasium v5's constructor options for the task, defaults filled in, each checked by the type of
    its default."""
    known = {"xml_file": task_class.xml_file, "frame_skip": task_class.frame_skip, **task_class.options}
    unknown = sorted(options.keys() - known.keys())
    if unknown:
        raise ValueError(f"{env_id} has no option {', '.join(map(repr, unknown))}; its options are "
                         f"{', '.join(map(repr, known))}")
    out = dict(known)
    for name, value in options.items():
        default = known[name]
        if name in task_class.named_options and isinstance(value, str):
            pass  # a model element by name, which the task resolves (Ant's main_body)
        elif isinstance(default, bool):
            if not isinstance(value, (bool, np.bool_)):
                raise TypeError(f"{name} must be a bool, got {type(value).__name__}")
            value = bool(value)
        elif isinstance(default, tuple):
            value = check_range(name, value)
        elif isinstance(default, str):
            if not isinstance(value, str):
                raise TypeError(f"{name} must be a str, got {type(value).__name__}")
        elif isinstance(default, int):
            if isinstance(value, bool) or not isinstance(value, numbers.Integral) or value < 1:
                raise ValueError(f"{name} must be an int >= 1, got {value!r}")
            value = int(value)
        else:
            if isinstance(value, bool) or not isinstance(value, numbers.Real) or not np.isfinite(value):
                raise TypeError(f"{name} must be a finite number, got {value!r}")
            value = float(value)
        out[name] = value
    return out
