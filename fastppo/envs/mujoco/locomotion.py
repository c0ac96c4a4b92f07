"""The planar runners of gymnasium's MuJoCo v5 suite: HalfCheetah, Hopper and Walker2d.

Each moves along x; the reward is ``forward_reward_weight * x_velocity`` (x_velocity from ``qpos[0]``
before and after the step) minus the control cost, plus, for the walkers, ``healthy_reward`` while
healthy, with termination when not (``terminate_when_unhealthy``).
"""

from __future__ import annotations

import numpy as np

from fastppo.envs.mujoco.task import MujocoTask

__all__ = ["HalfCheetah", "Hopper", "Walker2d"]


class _Runner(MujocoTask):
    """x_velocity from ``qpos[0]``; the observation ``qpos`` (less x) and ``qvel``."""

    velocity_clip: float | None = None

    @property
    def observation_size(self) -> int:
        return self.model.nq + self.model.nv - int(self._exclude_current_positions_from_observation)

    def before_step(self) -> np.ndarray:
        return self.qpos[:, 0].copy()

    def x_velocity(self, x_before: np.ndarray) -> np.ndarray:
        return (self.qpos[:, 0] - x_before) / self.dt

    def observe(self, ids, obs) -> None:
        self.planar_observation(obs, ids, self.velocity_clip)


class HalfCheetah(_Runner):
    """HalfCheetah-v5: runs forward; never terminates; velocity noise is Gaussian."""

    xml_file, frame_skip = "half_cheetah.xml", 5
    options = {"forward_reward_weight": 1.0, "ctrl_cost_weight": 0.1, "reset_noise_scale": 0.1,
               "exclude_current_positions_from_observation": True}
    normal_velocity_noise = True

    def after_step(self, actions, x_before, obs):
        x_velocity = self.x_velocity(x_before)
        self.planar_observation(obs)
        forward = self._forward_reward_weight * x_velocity
        ctrl_cost = self.control_cost(actions)
        rewards = forward - ctrl_cost
        info = {"x_position": self.qpos[:, 0].copy(), "x_velocity": x_velocity, "reward_forward": forward,
                "reward_ctrl": -ctrl_cost}
        return rewards, np.zeros(len(rewards), bool), info

    def reset_info(self, ids):
        return {"x_position": self.qpos[ids, 0].copy()}


class _Walker(_Runner):
    """A walker that must stay healthy: upright (``healthy_z_range``, ``healthy_angle_range`` on
    ``qpos[1:3]``); velocities are clipped to ±10 in the observation."""

    velocity_clip = 10.0

    def healthy(self) -> np.ndarray:
        return self.in_range(self.qpos[:, 1], self._healthy_z_range) & \
            self.in_range(self.qpos[:, 2], self._healthy_angle_range)

    def after_step(self, actions, x_before, obs):
        x_velocity = self.x_velocity(x_before)
        self.planar_observation(obs, velocity_clip=self.velocity_clip)
        healthy = self.healthy()
        forward = self._forward_reward_weight * x_velocity
        survive = healthy * self._healthy_reward
        ctrl_cost = self.control_cost(actions)
        rewards = (forward + survive) - ctrl_cost
        terminated = ~healthy if self._terminate_when_unhealthy else np.zeros(len(rewards), bool)
        info = {"x_position": self.qpos[:, 0].copy(), **self.reset_info(slice(None)), "x_velocity": x_velocity,
                "reward_forward": forward, "reward_ctrl": -ctrl_cost, "reward_survive": survive}
        return rewards, terminated, info

    def reset_info(self, ids):
        return {"x_position": self.qpos[ids, 0].copy(),
                "z_distance_from_origin": self.qpos[ids, 1] - self.init_qpos[1]}


class Hopper(_Walker):
    """Hopper-v5: also unhealthy when any of ``qpos[2:]``, ``qvel`` leaves ``healthy_state_range``."""

    xml_file, frame_skip = "hopper.xml", 4
    options = {"forward_reward_weight": 1.0, "ctrl_cost_weight": 1e-3, "healthy_reward": 1.0,
               "terminate_when_unhealthy": True, "healthy_state_range": (-100.0, 100.0),
               "healthy_z_range": (0.7, float("inf")), "healthy_angle_range": (-0.2, 0.2),
               "reset_noise_scale": 5e-3, "exclude_current_positions_from_observation": True}

    def healthy(self) -> np.ndarray:
        state = np.concatenate((self.qpos[:, 2:], self.qvel), axis=1)
        return super().healthy() & self.in_range(state, self._healthy_state_range).all(axis=1)


class Walker2d(_Walker):
    """Walker2d-v5."""

    xml_file, frame_skip = "walker2d_v5.xml", 4
    options = {"forward_reward_weight": 1.0, "ctrl_cost_weight": 1e-3, "healthy_reward": 1.0,
               "terminate_when_unhealthy": True, "healthy_z_range": (0.8, 2.0), "healthy_angle_range": (-1.0, 1.0),
               "reset_noise_scale": 5e-3, "exclude_current_positions_from_observation": True}
