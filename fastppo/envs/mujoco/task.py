"""What every MuJoCo task shares: the model, the options, the reset noise, the costs, all over a batch.

A task is one gymnasium v5 MuJoCo env's logic — observations, rewards, terminations, ``info`` terms and
reset distribution — written once over ``(num_envs, ...)`` arrays bound to a :class:`mujoco.batch.Batch`,
so that a vector step is a fixed number of numpy calls whatever ``num_envs`` is. Each task reproduces
gymnasium's arithmetic in gymnasium's order and dtypes (the control cost in the action's dtype, as
``np.sum(np.square(action))`` computes it there), which is what makes the results bit-identical.
"""

from __future__ import annotations

import importlib.util
import math
import numbers
import os
from typing import Any, ClassVar

import numpy as np

__all__ = ["MujocoTask", "assets_dir", "check_range"]


def assets_dir() -> str:
    """gymnasium's MuJoCo model files (found without importing gymnasium.envs.mujoco, which needs imageio)."""
    return os.path.join(importlib.util.find_spec("gymnasium").submodule_search_locations[0], "envs", "mujoco", "assets")


class MujocoTask:
    """Base of the tasks: subclasses set the class attributes and implement the four batched methods.

    Class attributes:
        xml_file: gymnasium's model file for the env.
        frame_skip: MuJoCo steps per env step.
        max_episode_steps: gymnasium's time limit for the id.
        options: gymnasium v5's constructor options with their defaults (``xml_file`` and ``frame_skip``
            are accepted too).
        excluded_positions: how many leading ``qpos`` entries ``planar_observation`` leaves out under
            ``exclude_current_positions_from_observation`` (1: x; 2: x and y).
        named_options: the int options that may name a model element instead (a str, which the task
            resolves), as Ant's ``main_body`` may.
        normal_velocity_noise: whether ``reset_state`` draws the velocity noise from a normal
            distribution (scaled by ``reset_noise_scale``) rather than a uniform one.
    """

    xml_file: ClassVar[str]
    frame_skip: ClassVar[int]
    max_episode_steps: ClassVar[int] = 1000
    options: ClassVar[dict[str, Any]] = {}
    excluded_positions: ClassVar[int] = 1
    named_options: ClassVar[frozenset[str]] = frozenset()
    persistent: ClassVar[bool] = False  # one MjData per simulation in the batch (mujoco.batch's persistent)
    normal_velocity_noise: ClassVar[bool] = False

    def __init__(self, env_id: str, model, batch, frame_skip: int, **options):
        self.env_id, self.model, self.batch = env_id, model, batch
        for name, value in options.items():  # gymnasium's names: self._ctrl_cost_weight, ...
            setattr(self, "_" + name, value)
        self.frame_skip = frame_skip  # this env's (an option), over the class's default
        self.dt = model.opt.timestep * frame_skip
        self.init_qpos = model.qpos0.copy()  # gymnasium's init_qpos: a fresh MjData's qpos
        self.init_qvel = np.zeros(model.nv)
        self.qpos, self.qvel, self.ctrl = batch.bind("qpos"), batch.bind("qvel"), batch.bind("ctrl")

    # -- what each task implements -------------------------------------------------------------------
    observation_size: int

    def reset_state(self, rng: np.random.Generator) -> tuple[np.ndarray, np.ndarray]:
        """One env's initial ``(qpos, qvel)``, drawn from ``rng`` as gymnasium's ``reset_model`` draws."""
        scale = self._reset_noise_scale
        qpos = self.init_qpos + rng.uniform(low=-scale, high=scale, size=self.model.nq)
        if self.normal_velocity_noise:
            qvel = self.init_qvel + scale * rng.standard_normal(self.model.nv)
        else:
            qvel = self.init_qvel + rng.uniform(low=-scale, high=scale, size=self.model.nv)
        return qpos, qvel

    def before_step(self) -> Any:
        """What ``after_step`` needs from before the physics steps (a position, say)."""
        return None

    def after_step(self, actions: np.ndarray, before: Any, obs: np.ndarray) -> tuple[np.ndarray, np.ndarray, dict]:
        """Write every env's observation into ``obs``; return ``(rewards, terminated, info)``, each info
        term a ``(num_envs, ...)`` array (one row per env), in gymnasium's key order."""
        raise NotImplementedError

    def observe(self, ids: np.ndarray, obs: np.ndarray) -> None:
        """Write the observations of the envs ``ids`` (after a reset) into ``obs[ids]``."""
        raise NotImplementedError

    def after_reset(self, ids: np.ndarray) -> None:
        """Called after the envs ``ids`` were reset (and ``mj_forward`` ran), before ``observe``."""

    def reset_info(self, ids: np.ndarray) -> dict[str, np.ndarray]:
        """gymnasium's ``_get_reset_info`` for the envs ``ids``, each term a ``(len(ids), ...)`` array."""
        return {}

    # -- shared pieces -------------------------------------------------------------------------------
    def control_cost(self, actions: np.ndarray) -> np.ndarray:
        """``ctrl_cost_weight * sum(action**2)`` per env, in the actions' dtype as gymnasium computes it."""
        return self._ctrl_cost_weight * np.add.reduce(np.square(actions), axis=1)  # np.sum without its wrapper

    @property
    def skipped_positions(self) -> int:
        """How many leading ``qpos`` entries ``planar_observation`` leaves out: ``excluded_positions``
        under ``exclude_current_positions_from_observation``, else none."""
        return self.excluded_positions * int(self._exclude_current_positions_from_observation)

    def planar_observation(self, obs: np.ndarray, ids=slice(None), velocity_clip: float | None = None) -> None:
        """``qpos`` (without its first ``excluded_positions`` entries when
        ``exclude_current_positions_from_observation``) and ``qvel`` (clipped to ±``velocity_clip`` if
        given): the observation of the planar walkers and the swimmer."""
        skip = self.skipped_positions
        npos = self.model.nq - skip
        obs[ids, :npos] = self.qpos[ids, skip:]
        qvel = self.qvel[ids]
        obs[ids, npos:] = qvel if velocity_clip is None else np.clip(qvel, -velocity_clip, velocity_clip)

    @staticmethod
    def in_range(x: np.ndarray, bounds: tuple[float, float]) -> np.ndarray:
        """``low < x < high`` elementwise, as gymnasium's healthy checks write it."""
        return (bounds[0] < x) & (x < bounds[1])

    @staticmethod
    def norms(vectors: np.ndarray) -> np.ndarray:
        """The Euclidean norm of each row of ``vectors`` (``(num_envs, d)``), bit-identical to gymnasium's
        ``np.linalg.norm(vector)``, which is ``sqrt(vector.dot(vector))``: a stacked matmul of
        vector by vector takes the same BLAS dot per row (``np.linalg.norm(..., axis=1)`` sums the
        squares differently and differs in the last bit)."""
        vectors = np.ascontiguousarray(vectors)
        return np.sqrt(np.matmul(vectors[:, None, :], vectors[:, :, None])[:, 0, 0])


def check_range(name: str, value) -> tuple[float, float]:
    """A ``(low, high)`` option of two real numbers, low <= high (NaN refused)."""
    if not isinstance(value, (tuple, list)) or len(value) != 2 or not all(
            isinstance(v, numbers.Real) and not isinstance(v, bool) for v in value):
        raise TypeError(f"{name} must be a (low, high) pair of numbers, got {value!r}")
    low, high = float(value[0]), float(value[1])
    if math.isnan(low) or math.isnan(high) or low > high:
        raise ValueError(f"{name} must be (low, high) with low <= high, got {value!r}")
    return low, high
