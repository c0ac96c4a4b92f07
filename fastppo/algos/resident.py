"""COLLECT on the policy's device: the rollout of a built-in env without a host round trip per step.

:class:`ResidentCollector` is :class:`~fastppo.algos.rollout.StepCollector`'s loop for a
:class:`~fastppo.envs.BuiltinVecEnv` whose buffers live where the policy runs. On a GPU the env is the
CUDA engine (observations, rewards and done flags are CUDA tensors on torch's current stream), and the
policy, the sampling and the rollout storage stay there: nothing in the loop waits on the GPU. What
StepCollector checks or gathers on the host every step is gathered on the device and read once, after
the last step:

- whether each step's distribution parameters were finite (the same ValueError, naming the first bad step);
- the returns and lengths of the episodes that ended (``(T, N)`` tensors, NaN where none ended), in
  StepCollector's order (step by step, env by env);
- the true final observations of truncated episodes, whose values are computed in one batch at the end
  (StepCollector computes them step by step: the same policy, so the same values up to the GEMM's
  summation order).

On the CPU the same loop runs over torch views of the native env's numpy buffers: that is how CI checks
it against StepCollector's numbers (``tests/test_resident.py``) on a machine without a GPU. The built-in
envs' rewards and observations are finite by construction, so the per-step checks that a user env needs
are not repeated here. The trainer makes a built-in env on its GPU when nothing in the rollout needs the
host (:func:`env_device`: no observation or reward normaliser, whose statistics live there), and then
collects with this loop (``OnPolicyAlgorithm._collector``). On a GPU its policy step is replayed from a
CUDA graph where one applies (:mod:`fastppo.algos.graphs`). A callback that runs at every step is called
at every step; one that reads SB3's rollout locals needs them on the host, and is refused.
"""

from __future__ import annotations

from typing import TYPE_CHECKING

import torch

from fastppo import _backend
from fastppo.algos import graphs
from fastppo.algos.rollout import TorchActor, raise_non_finite_params, vector_step_size

if TYPE_CHECKING:
    from fastppo.algos.base import OnPolicyAlgorithm
    from fastppo.algos.callbacks import Callback
    from fastppo.algos.config import AlgoConfig


def env_device(env, device: torch.device, backend: str, config: AlgoConfig) -> str:
    """Where a trainer makes ``env`` when it is an id: a built-in env goes on the policy's GPU (the CUDA
    engine, and then the rollout stays there) when the CUDA engine is built and nothing in the rollout
    needs the host (``normalize_obs`` / ``normalize_reward`` keep their statistics there); else "cpu"."""
    from fastppo.envs.builtin import BUILTIN_SPACES

    on_gpu = (isinstance(env, str) and env in BUILTIN_SPACES and device.type == "cuda" and backend != "torch"
              and not (config.normalize_obs or config.normalize_reward) and _backend._unavailable("cuda") is None)
    return str(device) if on_gpu else "cpu"


class ResidentCollector:
    """The rollout of a built-in env on the policy's device (see the module); StepCollector's interface."""

    def __init__(self, algo: OnPolicyAlgorithm, actor: TorchActor):
        T, n, device = algo.n_steps, algo.num_envs, algo.device
        self.algo, self.actor = algo, actor
        self._final_obs = torch.zeros(T, n, algo.obs_spec.dim, device=device)
        self._episode_r = torch.zeros(T, n, dtype=torch.float64, device=device)
        self._episode_l = torch.zeros(T, n, dtype=torch.int64, device=device)
        self._ended = torch.zeros(T, n, dtype=torch.bool, device=device)
        self._finite = torch.zeros(T, dtype=torch.bool, device=device)
        self._host_env = algo.env.device == "cpu"
        # the policy step as a CUDA graph (fastppo.algos.graphs), or None: the graph's row (advanced on the
        # device) and its output, the env's actions as to_env makes them
        graphed = graphs.applies(algo, graphs.rollout_blocker(algo), "the rollout")
        self.graph = (graphs.Replayed(algo.rollout.obs[0], "the rollout's policy step", (algo._generator,))
                      if graphed else None)
        self.row = torch.zeros(1, dtype=torch.long, device=device)
        spec = algo.action_spec
        self.env_action = spec.to_env(torch.zeros((n, *spec.shape), dtype=spec.dtype, device=device))

    def _tensor(self, x) -> torch.Tensor:
        return torch.from_numpy(x) if self._host_env else x  # a view: the env's buffer, on the CPU

    def collect(self, callback: Callback | None) -> bool:
        algo, r, env = self.algo, self.algo.rollout, self.algo.env
        obs = algo._last_obs
        per_step = callback is not None and callback.per_step()
        if per_step and callback.needs_locals:
            raise ValueError(f"{type(callback).__name__} reads SB3's rollout locals at every step, which a rollout "
                             f"on {algo.device} does not bring to the host; use a callback that acts at iteration "
                             f"ends, or make the env on the CPU (fastppo.make_vec_env(env_id, n))")
        self._ended.zero_()
        self.row.zero_()
        stop = False
        for t in range(algo.n_steps):
            env_action = self._act(t, obs)
            next_obs, reward, terminated, truncated, info = env.step_sampled(env_action.numpy() if self._host_env
                                                                             else env_action)
            algo.num_timesteps += vector_step_size(algo)
            r.rewards[t] = self._tensor(reward)
            r.terminated[t] = self._tensor(terminated)
            r.truncated[t] = self._tensor(truncated)
            if info:  # on the GPU always (whether an episode ended is not known without a sync)
                ended = self._tensor(info["_episode"])
                self._ended[t] = ended
                self._episode_r[t] = self._tensor(info["episode"]["r"])
                self._episode_l[t] = self._tensor(info["episode"]["l"])
                self._final_obs[t] = self._tensor(info["final_obs"])
            obs = self._tensor(next_obs)
            if per_step and not stop and not callback._step():
                if algo.reducer.local:
                    algo._last_obs = obs.clone()
                    self._read_back(t + 1)
                    return False
                stop = True  # data-parallel: the other ranks finish the rollout; the stop is voted at its end
        algo._last_obs = obs.clone()  # the env's buffer is overwritten by the next step
        if callback is not None and not per_step:
            callback._steps(algo.n_steps)
        self._read_back(algo.n_steps)
        return not stop

    def _act(self, t: int, obs: torch.Tensor) -> torch.Tensor:
        """The policy's step ``t`` on ``obs``, recorded in the rollout: the env's actions. Replayed from a
        CUDA graph where one applies (captured at the first step, whose step is the capture's warm-up)."""
        if self.graph is None:
            return self._policy_step(t, obs)
        self.graph(obs, self._graph_step)
        return self.env_action

    def _graph_step(self, obs: torch.Tensor) -> None:
        """:meth:`_policy_step` as the graph runs it: at row ``row`` (then advanced), into ``env_action``."""
        self.env_action.copy_(self._policy_step(self.row, obs))
        self.row += 1

    def _policy_step(self, row: int | torch.Tensor, obs: torch.Tensor) -> torch.Tensor:
        """Act on ``obs`` and record row ``row`` (an int, or a one-element index tensor): the env's actions."""
        action, params = self.actor.sample(row, obs)
        self._finite[row] = torch.isfinite(params).all()
        return self.algo.action_spec.to_env(action)

    def _read_back(self, steps: int) -> None:
        """What the loop gathered on the device in its first ``steps`` steps, read once: the checks, the
        episodes, the final values."""
        algo, r = self.algo, self.algo.rollout
        finite = self._finite[:steps].cpu()
        if not bool(finite.all()):
            raise_non_finite_params(int((~finite).nonzero()[0]))
        ended = self._ended[:steps].cpu()
        algo.episode_returns.extend(self._episode_r[:steps].cpu()[ended].tolist())
        algo.episode_lengths.extend(self._episode_l[:steps].cpu()[ended].tolist())
        bootstrap = r.truncated[:steps] & ~r.terminated[:steps]
        r.final_values.zero_()
        if bool(bootstrap.any()):  # V(true final observation): the time limit is not the end of the task
            r.final_values[:steps][bootstrap] = self.actor.values(self._final_obs[:steps][bootstrap])

    def last_values(self) -> torch.Tensor:
        """V(the observation after the rollout), by the policy that acted."""
        return self.actor.values(self.algo._last_obs)
