"""The loop that PPO and TRPO share. One iteration of :meth:`OnPolicyAlgorithm.learn`::

    COLLECT    n_steps vector steps into the preallocated time-major Rollout   (a collector, rollout.py)
    ADVANTAGE  fastppo.gae over the whole (n_steps, num_envs) rollout, into preallocated outputs
    UPDATE     the algorithm's policy/value update                                (an updater, ppo.py / trpo.py)
    LOG        CSV / TensorBoard row, progress bar, callbacks

Whether the collector and the updater are the native ones (csrc/train/) or the torch path (their spec)
is decided once, at construction, by ``fastppo._backend.native_trainer``.
"""

from __future__ import annotations

import contextlib
import os
import signal
import sys
import threading
import time
from collections import deque

import numpy as np
import torch
from torch import nn

from fastppo import _backend
from fastppo.algos import checkpoint
from fastppo.algos.callbacks import Callback, CallbackList
from fastppo.algos.config import OnPolicyConfig, check_int
from fastppo.algos.distributions import ActionSpec
from fastppo.algos.logger import Logger, ProgressBar
from fastppo.algos.normalize import ObsNormalizer, RewardScaler
from fastppo.algos.optim import uses_flat_adam
from fastppo.algos.policies import MLP_POLICY_KWARGS, ActorCritic, ObsSpec, as_batch
from fastppo.algos.rollout import NativeActor, NativeCollector, Rollout, StepCollector, TorchActor
from fastppo.algos.sb3_policy import SB3Policy
from fastppo.envs import as_vector_env
from fastppo.ops import gae


OPTIMIZER_KWARGS = ("optimizer_class", "optimizer_kwargs")  # the policy_kwargs that choose the optimiser


class Reducer:
    """The data-parallel seam, identity in one process. The updaters call :meth:`gradients` on the flat
    gradient buffer of every minibatch between backward and the optimiser step (gradient clipping
    included), and :meth:`mean` on the quantities TRPO's step is computed from (the policy gradient, each
    Fisher-vector product, the line search's surrogate and KL); an all-reduce over ranks goes there."""

    local = True  # nothing to reduce: the native updaters then run whole epochs without calling back (a
    # subclass that reduces sets it False, and the native loops call gradients() back per minibatch)

    def gradients(self, flat_grad: torch.Tensor) -> None:
        """Average ``flat_grad`` in place across processes."""

    def mean(self, x: torch.Tensor) -> torch.Tensor:
        """``x`` averaged across processes."""
        return x


class OnPolicyAlgorithm:
    """Shared machinery. Subclasses set ``algo`` and ``config_class`` and build ``self.updater``."""

    algo = ""
    config_class = OnPolicyConfig

    def __init__(self, policy: str | nn.Module, env, config: OnPolicyConfig):
        self.config = config
        self.device = torch.device(config.device)
        # PPO's networks are tiny: on the CPU torch's intra-op threads cost more in wake-ups than they
        # save (10x slower training measured on a busy 2-core machine), so learn() uses one by default.
        self.torch_threads = (config.torch_threads if config.torch_threads is not None
                              else (1 if self.device.type == "cpu" else None))
        self.backend = _backend.requested(config.backend)
        self.reducer = Reducer()
        self.env, self.env_id = as_vector_env(env, config.num_envs, seed=config.seed, backend=self.backend)
        self.num_envs, self.n_steps = self.env.num_envs, config.n_steps
        self.rollout_size = self.n_steps * self.num_envs
        self.observation_space = self.env.single_observation_space
        self.action_space = self.env.single_action_space
        self.obs_spec = ObsSpec(self.observation_space)
        self.action_spec = ActionSpec(self.action_space)

        with torch.random.fork_rng(devices=[]):  # seed the initial weights without touching the global RNG
            if config.seed is not None:
                torch.manual_seed(config.seed)
            self.policy = self._build_policy(policy, config.policy_kwargs or {}).to(self.device)
        self._custom_policy = None if isinstance(policy, str) else policy  # a module or a class: not stored
        # SB3's optimizer_class / optimizer_kwargs (fastppo.algos.optim.make_optimizer builds the optimiser): an
        # SB3 policy class's own, as SB3 takes them from the policy, else policy_kwargs'
        self._optimizer_options = (self.policy.optimizer_options() if isinstance(self.policy, SB3Policy) else
                                   {k: v for k, v in (config.policy_kwargs or {}).items() if k in OPTIMIZER_KWARGS})
        self.native = _backend.native_trainer(
            self.backend, isinstance(self.policy, ActorCritic) and self.policy.native_ok()
            and uses_flat_adam(**self._optimizer_options))
        self._generator = torch.Generator(device=self.device)
        self._generator.manual_seed(config.seed if config.seed is not None else int(torch.randint(2**62, ()).item()))

        self.rollout = Rollout.allocate(self.n_steps, self.num_envs, self.obs_spec.dim, self.action_spec, self.device)
        self._obs_buffer = np.zeros((self.num_envs, self.obs_spec.dim), np.float32)
        self.obs_normalizer = (ObsNormalizer(self.obs_spec.dim)
                               if config.normalize_obs and self.obs_spec.kind == "box" else None)
        self.reward_scaler = RewardScaler(self.num_envs, config.gamma) if config.normalize_reward else None
        # Built at the first rollout, once the subclass has seated the parameters in their flat buffers
        # (FlatParameters): the native actor keeps views of that memory.
        self._actor: TorchActor | NativeActor | None = None
        self._collectors: dict[bool, StepCollector | NativeCollector] = {}
        self.num_timesteps = 0
        self.iteration = 0
        self._total_timesteps = 0
        self._last_obs: torch.Tensor | None = None  # the policy's input for the next step
        self.episode_returns: deque[float] = deque(maxlen=100)
        self.episode_lengths: deque[int] = deque(maxlen=100)
        self.logger = Logger(config.log_dir, config.tensorboard_log)

    def __getattr__(self, name: str):
        # Hyperparameters read as attributes (model.gamma, model.clip_range_vf, ...): the config holds them.
        config = self.__dict__.get("config")
        if config is not None and name in config.field_names():
            return getattr(config, name)
        raise AttributeError(f"{type(self).__name__!r} object has no attribute {name!r}")

    # -- construction -------------------------------------------------------------------------------
    def _build_policy(self, policy, policy_kwargs: dict) -> nn.Module:
        """The policy module: a given ``nn.Module`` as it is, an SB3 policy class (an ``ActorCriticPolicy``
        subclass) built as SB3 builds it and adapted (:class:`~fastppo.algos.sb3_policy.SB3Policy`), or
        "MlpPolicy", an :class:`ActorCritic` from ``policy_kwargs``."""
        if isinstance(policy, nn.Module):
            if policy_kwargs:
                raise ValueError("policy_kwargs apply to 'MlpPolicy' or a policy class, not to a given nn.Module")
            if self.config.use_sde and not all(callable(getattr(policy, m, None))
                                               for m in ("sample_exploration", "sde_noise")):
                raise TypeError("use_sde needs the policy module to define sample_exploration() and sde_noise() "
                                "(see fastppo.algos.policies.ActorCritic)")
            return policy
        if isinstance(policy, type):
            return SB3Policy.build(policy, self.observation_space, self.action_space, self.config.lr_schedule,
                                   use_sde=self.config.use_sde, **policy_kwargs)
        if policy != "MlpPolicy":
            raise ValueError(f"policy must be 'MlpPolicy', an nn.Module or an SB3 policy class, got {policy!r}")
        known = [*MLP_POLICY_KWARGS, *OPTIMIZER_KWARGS]
        unknown = sorted(set(policy_kwargs) - set(known), key=str)
        if unknown:
            raise TypeError(f"unknown policy_kwargs {', '.join(map(repr, unknown))} for 'MlpPolicy'; known: "
                            f"{', '.join(known)}")
        return ActorCritic(self.observation_space, self.action_space, use_sde=self.config.use_sde,
                           **{k: v for k, v in policy_kwargs.items() if k not in OPTIMIZER_KWARGS})

    # -- observations -------------------------------------------------------------------------------
    def _policy_input(self, raw_obs, update_stats: bool, out: np.ndarray | None = None) -> torch.Tensor:
        """Env observations -> the policy's float32 input: flattened / one-hot, checked, normalised."""
        if out is None:
            out = np.empty((len(raw_obs), self.obs_spec.dim), np.float32)
        flat = self.obs_spec.flatten(np.asarray(raw_obs), out)
        if not np.isfinite(flat).all():
            bad = np.flatnonzero(~np.isfinite(flat).all(axis=1)).tolist()
            raise ValueError(f"env returned a non-finite observation (NaN or inf) in env(s) {bad} at "
                             f"timestep {self.num_timesteps}")
        if self.obs_normalizer is not None:
            flat = self.obs_normalizer(flat, update_stats)
        return torch.from_numpy(flat).to(self.device)

    def _reset_envs(self) -> None:
        obs, _ = self.env.reset(seed=self.config.seed)
        self._last_obs = self._policy_input(obs, update_stats=True, out=self._obs_buffer).clone()

    # -- COLLECT ------------------------------------------------------------------------------------
    def _collector(self, callback: Callback | None) -> StepCollector | NativeCollector:
        """The native collector where it applies (the native policy, a built-in env on the CPU, and no
        callback that runs per step), else the step loop; each built once."""
        from fastppo.envs.builtin import BuiltinVecEnv

        if self._actor is None:
            self._actor = NativeActor(self) if self.native else TorchActor(self)
        per_step = callback is not None and callback.per_step()
        if per_step not in self._collectors:
            whole = (self.native and not per_step and isinstance(self.env, BuiltinVecEnv)
                     and self.env.device == "cpu")
            self._collectors[per_step] = (NativeCollector if whole else StepCollector)(self, self._actor)
        return self._collectors[per_step]

    @torch.inference_mode()
    def _collect(self, callback: Callback | None) -> bool:
        """COLLECT: one rollout, then V(s_{t+1}) for GAE; False when a callback stopped training."""
        collector = self._collector(callback)
        if not collector.collect(callback):
            return False
        r = self.rollout
        r.next_values[:-1] = r.values[1:]
        r.next_values[-1] = collector.last_values()
        torch.where(r.truncated & ~r.terminated, r.final_values, r.next_values, out=r.next_values)
        return True

    # -- ADVANTAGE ----------------------------------------------------------------------------------
    def _advantages(self) -> None:
        r = self.rollout
        gae(r.rewards, r.values, r.next_values, r.terminated, r.truncated, gamma=self.config.gamma,
            lam=self.config.gae_lambda, backend=self.backend, out=(r.advantages, r.returns))

    # -- UPDATE -------------------------------------------------------------------------------------
    def _update(self, progress: float) -> dict[str, float]:
        """UPDATE: one iteration's policy/value update at remaining progress ``progress``; its metrics."""
        raise NotImplementedError

    # -- LOG ----------------------------------------------------------------------------------------
    def _log(self, metrics: dict[str, float], seconds: float, steps: int, log_interval: int) -> dict[str, float]:
        r = self.rollout
        metrics = {"timesteps": self.num_timesteps, "iteration": self.iteration, **metrics,
                   "explained_variance": _explained_variance(r.values, r.returns), "sps": steps / seconds,
                   "episode_return": _mean(self.episode_returns), "episode_length": _mean(self.episode_lengths)}
        if self.iteration % log_interval == 0:
            self.logger.record(metrics)
        return metrics

    # -- the loop -----------------------------------------------------------------------------------
    def learn(self, total_timesteps: int, callback: Callback | list[Callback] | None = None,
              progress_bar: bool = True, log_interval: int = 1):
        """Train for ``total_timesteps`` more env steps (a second call continues where the first ended).

        Runs whole iterations of ``n_steps * num_envs`` steps, so it may do up to one iteration's worth
        more. Returns ``self``. Ctrl-C (in the main thread) ends training after the running iteration and
        then raises :class:`TrainingInterrupted` (a KeyboardInterrupt): the model is as that iteration left it, so saving it and calling
        ``learn`` again continues exactly as an uninterrupted run would. A second Ctrl-C interrupts at once.
        """
        check_int(total_timesteps, "total_timesteps", 1)
        check_int(log_interval, "log_interval", 1)
        if isinstance(callback, list):
            callback = CallbackList(callback)
        if callback is not None:
            callback.init(self)
        if self._last_obs is None:
            self._reset_envs()
        self._total_timesteps = self.num_timesteps + total_timesteps
        bar = ProgressBar(self._total_timesteps, self.num_timesteps) if progress_bar else None
        if callback is not None:
            callback.on_training_start()
        with self.torch_thread_scope(), _InterruptAtIterationEnd() as interrupt:
            try:
                while self.num_timesteps < self._total_timesteps and not interrupt.requested:
                    start, steps_before = time.perf_counter(), self.num_timesteps
                    # Remaining progress (1 -> 0) for the schedules, taken before the rollout so that it stays
                    # above 0: an annealed clip range of exactly 0 would be invalid.
                    progress = 1.0 - self.num_timesteps / self._total_timesteps
                    self.policy.train()
                    if not self._collect(callback):
                        break
                    if callback is not None:
                        callback.on_rollout_end()
                    self._advantages()
                    metrics = self._update(progress)
                    self.iteration += 1
                    metrics = self._log(metrics, time.perf_counter() - start, self.num_timesteps - steps_before,
                                        log_interval)
                    if bar is not None:
                        bar.update(self.num_timesteps, metrics["episode_return"] if self.episode_returns else None)
                    if callback is not None and not callback.on_iteration_end(metrics):
                        break
            finally:
                if bar is not None:
                    bar.update(self.num_timesteps, _mean(self.episode_returns) if self.episode_returns else None, True)
                    bar.close()
                if callback is not None:
                    callback.on_training_end()
        if interrupt.requested:
            raise TrainingInterrupted(f"training interrupted after iteration {self.iteration} (timestep "
                                    f"{self.num_timesteps:,}); the model is consistent: save() it, and learn() "
                                    f"again to resume")
        return self

    @contextlib.contextmanager
    def torch_thread_scope(self):
        """torch's CPU thread count set to ``torch_threads`` for the duration (learn, evaluation)."""
        before = torch.get_num_threads()
        change = self.torch_threads is not None and self.torch_threads != before
        if change:
            torch.set_num_threads(self.torch_threads)
        try:
            yield
        finally:
            if change:
                torch.set_num_threads(before)

    # -- acting -------------------------------------------------------------------------------------
    def predict(self, observation, state=None, episode_start=None, deterministic: bool = False):
        """Actions for one observation or a batch, in the env's action space: ``(actions, None)``.

        ``state`` and ``episode_start`` exist for Stable-Baselines3 compatibility and are ignored.
        """
        batch, single = as_batch(observation, self.observation_space)
        with torch.inference_mode():
            params, _ = self.policy(self._policy_input(batch, update_stats=False))
            dist = self.action_spec.distribution(params)
            actions = self.action_spec.to_env((dist.mode() if deterministic else dist.sample()).cpu().numpy())
        return (actions[0] if single else actions), None

    # -- checkpoints (fastppo/algos/checkpoint.py) --------------------------------------------------
    def _algo_state(self) -> dict:
        """Subclass state to checkpoint (optimisers, adaptive coefficients)."""
        return {}

    def _load_algo_state(self, state: dict) -> None:
        pass

    def save(self, path: str | os.PathLike) -> None:
        """Everything needed to act and to resume training exactly, written atomically (a crash mid-save
        leaves any previous file at ``path`` intact)."""
        checkpoint.save(self, path)

    @classmethod
    def load(cls, path: str | os.PathLike, env=None, *, policy: nn.Module | type | None = None,
             trust_pickle: bool = False, **overrides):
        """A model from :meth:`save`, ready to act and to continue training.

        ``env`` defaults to the checkpoint's env id (it must have been trained on one); a given env must
        have the same spaces. ``policy``: a new instance of the custom module the model was trained with, or
        its SB3 policy class (the weights come from the file; modules and classes are not stored).
        ``overrides`` replace saved hyperparameters (e.g. ``device``, ``log_dir``, or a schedule function,
        which is not stored either; a ``policy_kwargs`` dict is merged into the saved one, so that
        ``policy_kwargs=dict(features_extractor_class=...)`` gives back a class that was not stored).
        Loading cannot run code from the file; ``trust_pickle=True`` opens fastppo 0.1's pickle files, which
        can: only for files you trust.
        """
        return checkpoint.restore(cls, checkpoint.read(path, trust_pickle), env, overrides, policy)

    def close(self) -> None:
        self.env.close()
        self.logger.close()


class TrainingInterrupted(KeyboardInterrupt):
    """Ctrl-C ended learn() between two iterations: the model is consistent (see ``learn``)."""


class _InterruptAtIterationEnd:
    """While learn() runs in the main thread with Python's default SIGINT handler: the first Ctrl-C is
    held until the running iteration has finished (``requested``), so that an interrupt never leaves a
    half-collected rollout or a half-updated policy; a second one interrupts at once."""

    def __enter__(self):
        self.requested, self._previous = False, None
        if (threading.current_thread() is threading.main_thread()
                and signal.getsignal(signal.SIGINT) is signal.default_int_handler):
            self._previous = signal.signal(signal.SIGINT, self._handle)
        return self

    def _handle(self, signum, frame) -> None:
        self.requested = True
        signal.signal(signal.SIGINT, self._previous)
        sys.stderr.write("\nfastppo: interrupted; stopping after this iteration (Ctrl-C again to stop at once)\n")

    def __exit__(self, *exc) -> None:
        if self._previous is not None:
            signal.signal(signal.SIGINT, self._previous)


def _mean(values) -> float:
    return float(np.mean(values)) if len(values) else float("nan")


def _explained_variance(values: torch.Tensor, returns: torch.Tensor) -> float:
    var = returns.var()
    return float("nan") if var == 0 else float(1 - (returns - values).var() / var)
