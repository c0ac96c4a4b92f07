"""The cart-poles of gymnasium's MuJoCo v5 suite: InvertedPendulum and InvertedDoublePendulum.

A cart slides on a rail to keep a pole (or two, hinged end to end) upright; an episode terminates when
the pole falls. InvertedPendulum's reward is gymnasium's Python int (1 while upright), which its vector
env stores as float64 rewards and an int ``reward_survive``; InvertedDoublePendulum's penalties square
numpy scalars with ``**``, that is C's ``pow``, which :func:`numpy.float_power` repeats per element
(``x * x`` and ``np.power``'s SIMD loop differ from it in the last bit now and then).
"""

from __future__ import annotations

import numpy as np

from fastppo.envs.mujoco.task import MujocoTask

__all__ = ["InvertedDoublePendulum", "InvertedPendulum"]


class InvertedPendulum(MujocoTask):
    """InvertedPendulum-v5: reward 1 per step; terminates once the hinge angle leaves ±0.2 (or the state
    is not finite); the observation is ``qpos`` and ``qvel``."""

    xml_file, frame_skip = "inverted_pendulum.xml", 2
    options = {"reset_noise_scale": 0.01}

    @property
    def observation_size(self) -> int:
        return self.model.nq + self.model.nv

    def after_step(self, actions, before, obs):
        self.observe(slice(None), obs)
        terminated = ~np.isfinite(obs).all(axis=1) | (np.abs(obs[:, 1]) > 0.2)
        survive = (~terminated).astype(int)
        return survive.astype(np.float64), terminated, {"reward_survive": survive}

    def observe(self, ids, obs) -> None:
        nq = self.model.nq
        obs[ids, :nq] = self.qpos[ids]
        obs[ids, nq:] = self.qvel[ids]


class InvertedDoublePendulum(MujocoTask):
    """InvertedDoublePendulum-v5: ``healthy_reward`` while the tip (site 0) is above z = 1, where it
    terminates, less penalties on the tip's distance from (0, 2) in (x, z) and on the hinges' velocities."""

    xml_file, frame_skip = "inverted_double_pendulum.xml", 5
    options = {"healthy_reward": 10.0, "reset_noise_scale": 0.1}
    observation_size = 9
    normal_velocity_noise = True  # as HalfCheetah: uniform qpos noise, Gaussian qvel noise

    def __init__(self, env_id, model, batch, frame_skip, **options):
        super().__init__(env_id, model, batch, frame_skip, **options)
        self.site_xpos, self.qfrc_constraint = batch.bind("site_xpos"), batch.bind("qfrc_constraint")

    def after_step(self, actions, before, obs):
        tip = self.site_xpos[:, 0]
        x, y = tip[:, 0], tip[:, 2]
        self.observe(slice(None), obs)
        terminated = y <= 1
        squares = np.float_power(np.stack((x, y - 2, self.qvel[:, 1], self.qvel[:, 2]), axis=1), 2)
        dist_penalty = 0.01 * squares[:, 0] + squares[:, 1]
        vel_penalty = 1e-3 * squares[:, 2] + 5e-3 * squares[:, 3]
        alive_bonus = self._healthy_reward * ~terminated
        rewards = alive_bonus - dist_penalty - vel_penalty
        info = {"reward_survive": alive_bonus, "distance_penalty": -dist_penalty, "velocity_penalty": -vel_penalty}
        return rewards, terminated, info

    def observe(self, ids, obs) -> None:
        # contiguous angles, as gymnasium's, so that numpy takes the same sin/cos loop
        angles = np.ascontiguousarray(self.qpos[ids, 1:])
        obs[ids, 0] = self.qpos[ids, 0]
        obs[ids, 1:3] = np.sin(angles)
        obs[ids, 3:5] = np.cos(angles)
        obs[ids, 5:8] = np.clip(self.qvel[ids], -10, 10)
        obs[ids, 8] = np.clip(self.qfrc_constraint[ids, 0], -10, 10)
