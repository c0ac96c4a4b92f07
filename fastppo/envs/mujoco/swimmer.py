"""Swimmer-v5 of gymnasium's MuJoCo suite: a three-link swimmer moving in the plane through a viscous fluid.

The reward is ``forward_reward_weight * x_velocity`` minus the control cost (the velocities from
``qpos[:2]`` before and after the step); it never terminates. The observation leaves out both x and y
(``exclude_current_positions_from_observation``).
"""

from __future__ import annotations

import numpy as np

from fastppo.envs.mujoco.task import MujocoTask

__all__ = ["Swimmer"]


class Swimmer(MujocoTask):
    """Swimmer-v5: swims forward along x; never terminates; uniform reset noise on qpos and qvel."""

    xml_file, frame_skip = "swimmer.xml", 4
    options = {"forward_reward_weight": 1.0, "ctrl_cost_weight": 1e-4, "reset_noise_scale": 0.1,
               "exclude_current_positions_from_observation": True}
    excluded_positions = 2

    @property
    def observation_size(self) -> int:
        return self.model.nq + self.model.nv - self.skipped_positions

    def before_step(self) -> np.ndarray:
        return self.qpos[:, :2].copy()

    def after_step(self, actions, xy_before, obs):
        xy_velocity = (self.qpos[:, :2] - xy_before) / self.dt
        self.planar_observation(obs)
        forward = self._forward_reward_weight * xy_velocity[:, 0]
        ctrl_cost = self.control_cost(actions)
        rewards = forward - ctrl_cost
        info = {**self.reset_info(slice(None)), "x_velocity": xy_velocity[:, 0], "y_velocity": xy_velocity[:, 1],
                "reward_forward": forward, "reward_ctrl": -ctrl_cost}
        return rewards, np.zeros(len(rewards), bool), info

    def observe(self, ids, obs) -> None:
        self.planar_observation(obs, ids)

    def reset_info(self, ids):
        xy = self.qpos[ids, :2]
        return {"x_position": xy[:, 0].copy(), "y_position": xy[:, 1].copy(), "distance_from_origin": self.norms(xy)}
