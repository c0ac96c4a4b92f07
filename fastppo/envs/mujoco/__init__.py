"""gymnasium's MuJoCo v5 suite stepped by ``mujoco.batch`` (the optional ``mujoco`` extra):
:class:`MujocoVecEnv` and the tasks it runs, :data:`MUJOCO_TASKS`. Importing this package does not
import mujoco; ``fastppo.backends()["mujoco"]`` says whether these envs can run here, and if not, why."""

from __future__ import annotations

from fastppo.envs.mujoco.arms import Pusher, Reacher
from fastppo.envs.mujoco.bodies import Ant, Humanoid, HumanoidStandup
from fastppo.envs.mujoco.locomotion import HalfCheetah, Hopper, Walker2d
from fastppo.envs.mujoco.pendulums import InvertedDoublePendulum, InvertedPendulum
from fastppo.envs.mujoco.swimmer import Swimmer

__all__ = ["MUJOCO_TASKS", "MujocoVecEnv"]

# env id -> task (fastppo/envs/mujoco/task.py), for every id make_vec_env steps with mujoco.batch
MUJOCO_TASKS = {
    "HalfCheetah-v5": HalfCheetah,
    "Hopper-v5": Hopper,
    "Walker2d-v5": Walker2d,
    "Swimmer-v5": Swimmer,
    "Reacher-v5": Reacher,
    "Pusher-v5": Pusher,
    "InvertedPendulum-v5": InvertedPendulum,
    "InvertedDoublePendulum-v5": InvertedDoublePendulum,
    "Ant-v5": Ant,
    "Humanoid-v5": Humanoid,
    "HumanoidStandup-v5": HumanoidStandup,
}


def __getattr__(name):
    if name == "MujocoVecEnv":
        from fastppo.envs.mujoco.vec_env import MujocoVecEnv

        return MujocoVecEnv
    raise AttributeError(f"module 'fastppo.envs.mujoco' has no attribute {name!r}")
