"""gymnasium's classic-control suite in native code (csrc/envs/<env>.h, one physics header each), as
:class:`gymnasium.vector.VectorEnv` s: one native call per vector step, GIL released, envs split across
threads on the CPU, one GPU thread per env on CUDA."""

from __future__ import annotations

import functools
import math

import numpy as np
from gymnasium import spaces

from fastppo import _backend
from fastppo._arrays import host_array
from fastppo._backend import _core
from fastppo.envs._buffered import BufferedVecEnv, check_actions

__all__ = ["BUILTIN_SPACES", "BuiltinVecEnv"]

_F32 = np.float32
_CARTPOLE_HIGH = np.array([2.4 * 2, np.inf, 12 * 2 * math.pi / 360 * 2, np.inf], dtype=_F32)
_ACROBOT_HIGH = np.array([1.0, 1.0, 1.0, 1.0, 4 * math.pi, 9 * math.pi], dtype=_F32)
_MOUNTAIN_LOW, _MOUNTAIN_HIGH = np.array([-1.2, -0.07], dtype=_F32), np.array([0.6, 0.07], dtype=_F32)
_PENDULUM_HIGH = np.array([1.0, 1.0, 8.0], dtype=_F32)

# env id -> (observation space, action space, reset option names in the native (a, b) order), as
# gymnasium 1.4 defines them (tests/test_envs.py checks them against gymnasium's envs).
BUILTIN_SPACES = {
    "CartPole-v1": (spaces.Box(-_CARTPOLE_HIGH, _CARTPOLE_HIGH, dtype=_F32), spaces.Discrete(2), ("low", "high")),
    "Acrobot-v1": (spaces.Box(-_ACROBOT_HIGH, _ACROBOT_HIGH, dtype=_F32), spaces.Discrete(3), ("low", "high")),
    "MountainCar-v0": (spaces.Box(_MOUNTAIN_LOW, _MOUNTAIN_HIGH, dtype=_F32), spaces.Discrete(3), ("low", "high")),
    "MountainCarContinuous-v0": (spaces.Box(_MOUNTAIN_LOW, _MOUNTAIN_HIGH, dtype=_F32),
                                 spaces.Box(-1.0, 1.0, shape=(1,), dtype=_F32), ("low", "high")),
    "Pendulum-v1": (spaces.Box(-_PENDULUM_HIGH, _PENDULUM_HIGH, dtype=_F32),
                    spaces.Box(-2.0, 2.0, shape=(1,), dtype=_F32), ("x_init", "y_init")),
}


class BuiltinVecEnv(BufferedVecEnv):
    """``num_envs`` copies of a built-in env (see :data:`BUILTIN_SPACES`) with gymnasium's dynamics.

    The physics state (``get_state``) is gymnasium's ``env.unwrapped.state`` in float64; for
    MountainCarContinuous-v0 a third column is 1 when gymnasium would hold the state as float32 (after
    a step; its arithmetic then runs in float32) and 0 after a reset.

    ``fast_math=True`` (CPU, CartPole-v1 only) computes the pole angle's sine and cosine with
    vectorised polynomials within 1 ulp of libm's instead of libm's scalar calls: about 1.5x the
    steps per second at large ``num_envs``, at the price of gymnasium's bit-exact dynamics (states
    agree to ~1e-15 relative per step, and trajectories drift apart as chaotic dynamics do).
    """

    def __init__(self, env_id: str, num_envs: int, *, seed: int | None = None, device: str = "cpu",
                 fast_math: bool = False, copy: bool = True):
        info = _core.env_info(env_id)
        obs_space, act_space, option_names = BUILTIN_SPACES[env_id]
        super().__init__(env_id=env_id, num_envs=num_envs, single_observation_space=obs_space,
                         single_action_space=act_space, state_dim=info["state_dim"],
                         max_episode_steps=info["max_episode_steps"],
                         reset_options=dict(zip(option_names, info["reset_defaults"])), seed=seed, device=device,
                         copy=copy)
        to_array = functools.partial(host_array, name="actions", require_cpu="an env on the cpu")
        with _backend.on_device(self.device):
            self._batch = _core.EnvBatch(env_id, self.num_envs, self._buffers, to_array, fast_math)

    def native_batch(self):
        """The ``fastppo._core.EnvBatch`` these envs step in, for a native loop that drives them (the
        trainer's rollout, ``fastppo._core.collect``): CPU only, after ``reset()``."""
        self._check_open()
        if self._step_batch == self._step_before_reset:
            raise RuntimeError(f"{self.env_id}: call reset() before driving the envs natively")
        if self.device != "cpu":
            raise ValueError(f"the native rollout drives CPU envs, these are on {self.device}")
        return self._batch

    def _batched_step(self):
        if self.device != "cpu":
            return self._step_cuda
        # On the CPU the whole of step() is one native call, which shadows the method on this instance
        # (Python frames are most of a step at N = 1): EnvBatch.step_gym steps the envs (converting
        # non-numpy actions with host_array) and returns step()'s tuple, calling back into _infos only
        # on a step in which an episode ended (copying the results there with copy=True: fresh arrays made
        # natively cost a fraction of Python's). Not when a subclass overrides step().
        if type(self).step is BufferedVecEnv.step:
            # (all positional: pybind11 parses keyword arguments far more slowly)
            self.step = functools.partial(self._batch.step_gym, self._step_result, self._infos, self.copy)
        return self._batch.step

    def step_sampled(self, actions):
        """:meth:`step` with actions a trainer sampled itself (in range; Box ones clipped): on a GPU without
        the value checks, which would make the host wait on the GPU at every step (the trainer's rollout
        there, ``fastppo.algos.resident``); on the CPU, :meth:`step`."""
        if self._step_batch != self._step_cuda:  # the CPU, or no reset yet (or closed): step() says so
            return self.step(actions)
        self._launch(actions.detach())
        return (*map(self._own, self._step_result), self._infos())

    def _step_cuda(self, actions) -> int:
        return self._launch(self._checked_cuda_actions(actions))

    def _launch(self, actions) -> int:
        """One native step of the envs on their GPU, on torch's current stream."""
        import torch

        with _backend.on_device(self.device):
            return self._batch.step(actions, torch.cuda.current_stream().cuda_stream)

    def _reset_batch(self, seed, mask, a, b) -> None:
        if self.device == "cpu":
            if mask is not None and type(mask) is not np.ndarray:
                mask = host_array(mask, "options['reset_mask']", require_cpu="an env on the cpu")
            self._batch.reset(seed, mask, a, b)
        else:
            import torch

            if isinstance(mask, torch.Tensor) and str(mask.device) != self.device:  # as for actions
                raise ValueError(f"options['reset_mask'] must be on {self.device} for an env there, got a tensor "
                                 f"on {mask.device}")
            with _backend.on_device(self.device):
                self._batch.reset(seed, mask, a, b, torch.cuda.current_stream().cuda_stream)

    def _checked_cuda_actions(self, actions):
        """The checks the native step cannot do on the GPU without a sync (the values); this syncs once."""
        import torch

        if not isinstance(actions, torch.Tensor) or str(actions.device) != self.device:
            # (another GPU included: torch's DLPack export would refuse it before the binding could say why)
            where = (f"a tensor on {actions.device}" if isinstance(actions, torch.Tensor)
                     else f"a {type(actions).__name__}")
            raise ValueError(f"actions must be a CUDA tensor on {self.device} for an env there, got {where}")
        actions = actions.detach()
        check_actions(actions, self.single_action_space, self.num_envs, self.env_id)
        return actions
