"""The arms of gymnasium's MuJoCo v5 suite: Reacher (a two-link arm reaching a target in the plane) and
Pusher (a seven-joint arm pushing a cylinder to a goal).

Their rewards are minus weighted distances between bodies (gymnasium's ``get_body_com``: the bodies'
``xpos``, from the last MuJoCo substep's kinematics as in gymnasium) minus the control cost
``reward_control_weight * sum(action**2)`` in the action's dtype; they never terminate, their episodes
end at gymnasium's time limits (50 and 100 steps). Their resets draw the target or the cylinder by
rejection sampling per env, as gymnasium does.
"""

from __future__ import annotations

import functools

import numpy as np

from fastppo.envs.mujoco.task import MujocoTask

__all__ = ["Pusher", "Reacher"]


class _Arm(MujocoTask):
    """An arm: the bodies' positions bound once, looked up by name; the control cost weighted by
    ``reward_control_weight`` (gymnasium's name for it in these envs); the reward the sum of the
    subclass's ``reward_terms``."""

    bodies: tuple[str, ...]

    def __init__(self, env_id, model, batch, frame_skip, **options):
        super().__init__(env_id, model, batch, frame_skip, **options)
        self._ctrl_cost_weight = self._reward_control_weight
        self.xpos = batch.bind("xpos")
        self.body_ids = {name: model.body(name).id for name in self.bodies}

    def body_com(self, name: str, ids=slice(None)) -> np.ndarray:
        """gymnasium's ``get_body_com(name)`` of the envs ``ids``: ``(len(ids), 3)``."""
        return self.xpos[ids, self.body_ids[name]]

    def reward_terms(self, reward_ctrl: np.ndarray) -> dict[str, np.ndarray]:
        """gymnasium's ``info`` terms, given ``reward_ctrl``, in its order: the reward is their sum."""
        raise NotImplementedError

    def after_step(self, actions, before, obs):
        self.observe(slice(None), obs)
        info = self.reward_terms(-self.control_cost(actions))
        rewards = functools.reduce(np.add, info.values())  # summed left to right, as gymnasium does
        return rewards, np.zeros(len(rewards), bool), info


class Reacher(_Arm):
    """Reacher-v5: the fingertip reaches for a target drawn uniformly in the disc of radius 0.2."""

    xml_file, frame_skip, max_episode_steps = "reacher.xml", 2, 50
    options = {"reward_dist_weight": 1.0, "reward_control_weight": 1.0}
    observation_size = 10
    bodies = ("fingertip", "target")

    def reset_state(self, rng):
        qpos = rng.uniform(low=-0.1, high=0.1, size=self.model.nq) + self.init_qpos
        while True:  # the target: uniform in the square, kept once inside the disc
            goal = rng.uniform(low=-0.2, high=0.2, size=2)
            if np.linalg.norm(goal) < 0.2:
                break
        qpos[-2:] = goal
        qvel = self.init_qvel + rng.uniform(low=-0.005, high=0.005, size=self.model.nv)
        qvel[-2:] = 0
        return qpos, qvel

    def to_target(self, ids=slice(None)) -> np.ndarray:
        return self.body_com("fingertip", ids) - self.body_com("target", ids)

    def reward_terms(self, reward_ctrl):
        return {"reward_dist": -self.norms(self.to_target()) * self._reward_dist_weight, "reward_ctrl": reward_ctrl}

    def observe(self, ids, obs) -> None:
        # contiguous angles, as gymnasium's, so that numpy takes the same cos/sin loop
        theta = np.ascontiguousarray(self.qpos[ids, :2])
        obs[ids, 0:2] = np.cos(theta)
        obs[ids, 2:4] = np.sin(theta)
        obs[ids, 4:6] = self.qpos[ids, 2:]
        obs[ids, 6:8] = self.qvel[ids, :2]
        obs[ids, 8:10] = self.to_target(ids)[:, :2]


class Pusher(_Arm):
    """Pusher-v5: the arm's tip pushes the cylinder (``object``), drawn at least 0.17 from the goal, to
    the goal at the origin of its slide joints."""

    xml_file, frame_skip, max_episode_steps = "pusher_v5.xml", 5, 100
    options = {"reward_near_weight": 0.5, "reward_dist_weight": 1.0, "reward_control_weight": 0.1}
    observation_size = 23
    bodies = ("tips_arm", "object", "goal")

    def reset_state(self, rng):
        qpos = self.init_qpos.copy()  # no noise on the arm
        while True:  # the cylinder: uniform in a rectangle, kept once far enough from the goal (0, 0)
            cylinder = np.concatenate((rng.uniform(low=-0.3, high=0, size=1), rng.uniform(low=-0.2, high=0.2, size=1)))
            if np.linalg.norm(cylinder) > 0.17:
                break
        qpos[-4:-2] = cylinder
        qpos[-2:] = 0
        qvel = self.init_qvel + rng.uniform(low=-0.005, high=0.005, size=self.model.nv)
        qvel[-4:] = 0
        return qpos, qvel

    def reward_terms(self, reward_ctrl):
        cylinder = self.body_com("object")
        return {"reward_dist": -self.norms(cylinder - self.body_com("goal")) * self._reward_dist_weight,
                "reward_ctrl": reward_ctrl,
                "reward_near": -self.norms(cylinder - self.body_com("tips_arm")) * self._reward_near_weight}

    def observe(self, ids, obs) -> None:
        obs[ids, 0:7] = self.qpos[ids, :7]
        obs[ids, 7:14] = self.qvel[ids, :7]
        for k, name in enumerate(self.bodies):
            obs[ids, 14 + 3 * k:17 + 3 * k] = self.body_com(name, ids)
