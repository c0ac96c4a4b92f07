"""The free-floating bodies of gymnasium's MuJoCo v5 suite: Ant, Humanoid and HumanoidStandup.

Their observations go beyond ``qpos``/``qvel``: the external contact forces (``cfrc_ext``), and for the
humanoids the bodies' inertias and velocities in the centre-of-mass frame (``cinert``, ``cvel``) and the
actuators' joint forces (``qfrc_actuator``), all MuJoCo derived fields read from the batch as gymnasium
reads them from ``MjData`` after ``mj_step`` + ``mj_rnePostConstraint``. Ant and Humanoid walk in the
plane: the reward pays the x velocity of a point (Ant's main body, Humanoid's mass centre) measured
before and after the step, plus a healthy reward, less the control and contact costs; HumanoidStandup
pays the torso's height.
"""

from __future__ import annotations

import numpy as np

from fastppo.envs.mujoco.task import MujocoTask

__all__ = ["Ant", "Humanoid", "HumanoidStandup"]


class _Body(MujocoTask):
    """A body free in space: the observation is ``qpos`` (less x and y when
    ``exclude_current_positions_from_observation``), ``qvel`` and the parts a task adds."""

    persistent = True  # refresh_contact_forces reads each simulation's whole MjData

    def __init__(self, env_id, model, batch, frame_skip, **options):
        import mujoco

        super().__init__(env_id, model, batch, frame_skip, **options)
        self.cfrc_ext = np.zeros((batch.nsim, model.nbody, 6))
        self._rne_post_constraint, self._data = mujoco.mj_rnePostConstraint, mujoco.MjData(model)
        self.observation_size = sum(part[0].size for part in self.observation_parts(slice(0, 1)))

    def refresh_contact_forces(self) -> None:
        """``cfrc_ext`` after a step, as gymnasium computes it: ``mj_rnePostConstraint`` on each simulation's
        data as the step left it (with RK4, its last stage's). ``mujoco.batch`` does not run it, and the
        models' RK4 stages leave nothing bound that would give it batched, so this is the one loop over
        envs in a step: a native call per env on a copy of its data (bench/RESULTS.md measures it)."""
        data, forces = self._data, self.cfrc_ext
        for i in range(len(forces)):
            self.batch.get_data(i, data)
            self._rne_post_constraint(self.model, data)
            forces[i] = data.cfrc_ext

    def after_reset(self, ids) -> None:
        self.cfrc_ext[ids] = 0.0  # mj_resetData cleared them and mj_forward does not compute them

    def observation_parts(self, ids) -> list[np.ndarray]:
        """The pieces of the observation of the envs ``ids``, each ``(len(ids), ...)``, in order."""
        skip = 2 * int(self._exclude_current_positions_from_observation)
        return [self.qpos[ids, skip:], self.qvel[ids]]

    def observe(self, ids, obs) -> None:
        start = 0
        for part in self.observation_parts(ids):
            part = part.reshape(len(part), -1)
            obs[ids, start:start + part.shape[1]] = part
            start += part.shape[1]

    def planar_position(self, ids) -> dict[str, np.ndarray]:
        """``x_position`` and ``y_position`` of the root, from ``qpos``."""
        return {"x_position": self.qpos[ids, 0].copy(), "y_position": self.qpos[ids, 1].copy()}

    def distance_from_origin(self, ids) -> np.ndarray:
        """The root's distance from the origin in the plane. ``vecdot`` computes it as gymnasium's
        ``np.linalg.norm(qpos[0:2], ord=2)`` does (a BLAS dot), which a sum of squares does not bit for bit."""
        xy = self.qpos[ids, :2]
        return np.sqrt(np.vecdot(xy, xy))

    def clipped_contact_cost(self, weight: float, bounds: tuple[float, float]) -> np.ndarray:
        """``weight * sum(cfrc_ext**2)`` over every body, clipped to ``bounds`` (the humanoids' costs)."""
        forces = self.cfrc_ext.reshape(len(self.cfrc_ext), -1)
        return np.clip(weight * np.add.reduce(np.square(forces), axis=1), *bounds)


class _Walker:
    """Ant's and Humanoid's step (mixed into a :class:`_Body`): paid for the x velocity of a point in the
    plane, measured before and after the step, and for staying healthy."""

    # the order of the reward terms in a step's info, after the reset info's terms and the velocities
    reward_keys: tuple[str, ...] = ()

    def xy_position(self) -> np.ndarray:
        """Every env's tracked point in the plane, ``(num_envs, 2)``, from the last call's derived fields."""
        raise NotImplementedError

    def healthy(self) -> np.ndarray:
        raise NotImplementedError

    def before_step(self) -> np.ndarray:
        # read before the step from the derived fields of the last call, as gymnasium reads them
        return self.xy_position().copy()

    def walk(self, xy_before: np.ndarray, obs: np.ndarray, ctrl_cost: np.ndarray,
             contact_cost: np.ndarray) -> tuple[np.ndarray, np.ndarray, dict]:
        """The walkers' step after the physics: ``(forward + healthy) - (ctrl_cost + contact_cost)``,
        termination when unhealthy (``terminate_when_unhealthy``), the info terms."""
        xy_velocity = (self.xy_position() - xy_before) / self.dt
        self.observe(slice(None), obs)
        healthy = self.healthy()
        forward = self._forward_reward_weight * xy_velocity[:, 0]
        survive = healthy * self._healthy_reward
        rewards = (forward + survive) - (ctrl_cost + contact_cost)
        terminated = ~healthy if self._terminate_when_unhealthy else np.zeros(len(rewards), bool)
        rewards_info = {"reward_forward": forward, "reward_ctrl": -ctrl_cost, "reward_contact": -contact_cost,
                        "reward_survive": survive}
        info = {**self.reset_info(slice(None)), "x_velocity": xy_velocity[:, 0], "y_velocity": xy_velocity[:, 1],
                **{key: rewards_info[key] for key in self.reward_keys}}
        return rewards, terminated, info


class Ant(_Walker, _Body):
    """Ant-v5: a quadruped; the velocity is the main body's (``main_body``, a body id or name), the contact
    forces are clipped to ``contact_force_range`` (in the cost and the observation, whose part they are
    with ``include_cfrc_ext_in_observation``); healthy while ``qpos``/``qvel`` are finite and the torso's z
    is within ``healthy_z_range`` (bounds included); velocity noise is Gaussian."""

    xml_file, frame_skip = "ant.xml", 5
    options = {"forward_reward_weight": 1.0, "ctrl_cost_weight": 0.5, "contact_cost_weight": 5e-4,
               "healthy_reward": 1.0, "main_body": 1, "terminate_when_unhealthy": True,
               "healthy_z_range": (0.2, 1.0), "contact_force_range": (-1.0, 1.0), "reset_noise_scale": 0.1,
               "exclude_current_positions_from_observation": True, "include_cfrc_ext_in_observation": True}
    named_options = frozenset({"main_body"})
    normal_velocity_noise = True
    reward_keys = ("reward_forward", "reward_ctrl", "reward_contact", "reward_survive")

    def __init__(self, env_id, model, batch, frame_skip, **options):
        body = options["main_body"]
        try:
            self.main_body = model.body(body).id
        except (KeyError, IndexError):
            raise ValueError(f"main_body {body!r} is not a body of {env_id}'s model (ids 0..{model.nbody - 1} "
                             f"or their names)") from None
        self.xpos = batch.bind("xpos")
        super().__init__(env_id, model, batch, frame_skip, **options)

    def contact_forces(self, ids) -> np.ndarray:
        """Every body's ``cfrc_ext`` clipped to ``contact_force_range``, ``(len(ids), nbody, 6)``."""
        return np.clip(self.cfrc_ext[ids], *self._contact_force_range)

    def observation_parts(self, ids):
        parts = super().observation_parts(ids)
        if self._include_cfrc_ext_in_observation:
            parts.append(self.contact_forces(ids)[:, 1:])  # the world body's left out
        return parts

    def xy_position(self):
        return self.xpos[:, self.main_body, :2]

    def healthy(self):
        z = self.qpos[:, 2]
        finite = np.isfinite(self.qpos).all(axis=1) & np.isfinite(self.qvel).all(axis=1)
        low, high = self._healthy_z_range
        return finite & (low <= z) & (z <= high)

    def after_step(self, actions, xy_before, obs):
        self.refresh_contact_forces()
        forces = self.contact_forces(slice(None))
        contact_cost = self._contact_cost_weight * np.add.reduce(np.square(forces.reshape(len(forces), -1)), axis=1)
        return self.walk(xy_before, obs, self.control_cost(actions), contact_cost)

    def reset_info(self, ids):
        return {**self.planar_position(ids), "distance_from_origin": self.distance_from_origin(ids)}


class _Humanoid(_Body):
    """The humanoids' observation parts (``cinert``, ``cvel``, ``qfrc_actuator`` less the free joint's six
    dofs, ``cfrc_ext``, the world body left out, each behind its ``include_*_in_observation``), their
    tendons in the info, their control cost on the controls as MuJoCo holds them (float64)."""

    def __init__(self, env_id, model, batch, frame_skip, **options):
        self.cinert, self.cvel = batch.bind("cinert"), batch.bind("cvel")
        self.qfrc_actuator = batch.bind("qfrc_actuator")
        self.ten_length, self.ten_velocity = batch.bind("ten_length"), batch.bind("ten_velocity")
        super().__init__(env_id, model, batch, frame_skip, **options)

    def observation_parts(self, ids):
        parts = super().observation_parts(ids)
        for include, values in ((self._include_cinert_in_observation, self.cinert[ids, 1:]),
                                (self._include_cvel_in_observation, self.cvel[ids, 1:]),
                                (self._include_qfrc_actuator_in_observation, self.qfrc_actuator[ids, 6:]),
                                (self._include_cfrc_ext_in_observation, self.cfrc_ext[ids, 1:])):
            if include:
                parts.append(values)
        return parts

    def tendons(self, ids) -> dict[str, np.ndarray]:
        return {"tendon_length": self.ten_length[ids].copy(), "tendon_velocity": self.ten_velocity[ids].copy()}

    def humanoid_control_cost(self) -> np.ndarray:
        return self.control_cost(self.ctrl)


_HUMANOID_OBSERVATION = {"exclude_current_positions_from_observation": True, "include_cinert_in_observation": True,
                         "include_cvel_in_observation": True, "include_qfrc_actuator_in_observation": True,
                         "include_cfrc_ext_in_observation": True}


class Humanoid(_Walker, _Humanoid):
    """Humanoid-v5: walks forward; the velocity is the mass centre's; the contact cost is clipped to
    ``contact_cost_range``; healthy while the torso's z is strictly within ``healthy_z_range``."""

    xml_file, frame_skip = "humanoid.xml", 5
    options = {"forward_reward_weight": 1.25, "ctrl_cost_weight": 0.1, "contact_cost_weight": 5e-7,
               "contact_cost_range": (-np.inf, 10.0), "healthy_reward": 5.0, "terminate_when_unhealthy": True,
               "healthy_z_range": (1.0, 2.0), "reset_noise_scale": 1e-2, **_HUMANOID_OBSERVATION}
    reward_keys = ("reward_survive", "reward_forward", "reward_ctrl", "reward_contact")

    def __init__(self, env_id, model, batch, frame_skip, **options):
        self.xipos = batch.bind("xipos")
        self.body_mass, self.total_mass = model.body_mass.copy(), model.body_mass.sum()
        super().__init__(env_id, model, batch, frame_skip, **options)

    def xy_position(self):
        # the mass centre as gymnasium's mass_center sums it (einsum, then the division)
        return (np.einsum("b,nbj->nj", self.body_mass, self.xipos) / self.total_mass)[:, :2]

    def healthy(self):
        return self.in_range(self.qpos[:, 2], self._healthy_z_range)

    def after_step(self, actions, xy_before, obs):
        self.refresh_contact_forces()
        contact_cost = self.clipped_contact_cost(self._contact_cost_weight, self._contact_cost_range)
        return self.walk(xy_before, obs, self.humanoid_control_cost(), contact_cost)

    def reset_info(self, ids):
        return {**self.planar_position(ids), **self.tendons(ids),
                "distance_from_origin": self.distance_from_origin(ids)}


class HumanoidStandup(_Humanoid):
    """HumanoidStandup-v5: stands up from lying down; the reward is ``qpos[2] / timestep + 1`` less the
    control and impact costs (the impact cost clipped to ``impact_cost_range``); never terminates.

    ``uph_cost_weight`` is accepted but, as in gymnasium 1.4's v5, not applied to the reward."""

    xml_file, frame_skip = "humanoidstandup.xml", 5
    options = {"uph_cost_weight": 1.0, "ctrl_cost_weight": 0.1, "impact_cost_weight": 0.5e-6,
               "impact_cost_range": (-np.inf, 10.0), "reset_noise_scale": 1e-2, **_HUMANOID_OBSERVATION}

    def after_step(self, actions, before, obs):
        self.refresh_contact_forces()
        self.observe(slice(None), obs)
        uph = self.qpos[:, 2] / self.model.opt.timestep
        ctrl_cost = self.humanoid_control_cost()
        impact_cost = self.clipped_contact_cost(self._impact_cost_weight, self._impact_cost_range)
        rewards = uph - ctrl_cost - impact_cost + 1
        info = {**self.reset_info(slice(None)), "reward_linup": uph, "reward_quadctrl": -ctrl_cost,
                "reward_impact": -impact_cost}
        return rewards, np.zeros(len(rewards), bool), info

    def reset_info(self, ids):
        return {**self.planar_position(ids), "z_distance_from_origin": self.qpos[ids, 2] - self.init_qpos[2],
                **self.tendons(ids)}
