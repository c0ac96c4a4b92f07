"""The rollout / advantage / logging / checkpoint path that PPO and TRPO share.

One iteration (subclasses supply ``_update``)::

    COLLECT    n_steps vector steps into preallocated time-major buffers (no per-env Python)
    ADVANTAGE  fastppo.gae over the whole (n_steps, num_envs) rollout, into preallocated outputs
    UPDATE     the algorithm's policy/value update
    LOG        CSV / TensorBoard row, progress bar, callbacks
"""

from __future__ import annotations

import contextlib
import inspect
import math
import os
import pickle
import tempfile
import time
from collections import deque
from dataclasses import dataclass, fields
from typing import Any, Callable

import gymnasium as gym
import numpy as np
import torch
from torch import nn

from fastppo._backend import _core
from fastppo.algos.callbacks import Callback, CallbackList
from fastppo.algos.distributions import ActionSpec
from fastppo.algos.logger import Logger, ProgressBar
from fastppo.algos.normalize import ObsNormalizer, RewardScaler
from fastppo.algos.policies import ActorCritic, ObsSpec
from fastppo.envs import as_vector_env
from fastppo.ops import gae

CHECKPOINT_FORMAT = "fastppo-checkpoint"
CHECKPOINT_VERSION = 2  # 2: TRPO's critic optimiser holds one flat parameter

Schedule = Callable[[float], float]


def make_schedule(value: float | str | Schedule, name: str) -> Schedule:
    """A function of the remaining progress (1 -> 0): a constant, ``"lin_<v>"`` (v -> 0 linearly, as
    rl-zoo writes it) or a callable taken as is."""
    if callable(value):
        return value
    if isinstance(value, str) and value.startswith("lin_"):
        start = float(value[4:])
        return lambda progress: progress * start
    try:
        constant = float(value)
    except (TypeError, ValueError):
        raise ValueError(f"{name} must be a number, 'lin_<number>' or a callable, got {value!r}") from None
    return lambda progress: constant


@dataclass
class Rollout:
    """Time-major (n_steps, num_envs, ...) storage for one iteration, allocated once."""

    obs: torch.Tensor          # (T, N, obs_dim) float32, as the policy saw them (normalised)
    actions: torch.Tensor      # (T, N, *action_shape), the unclipped samples
    log_probs: torch.Tensor    # (T, N)
    values: torch.Tensor       # (T, N) V(s_t)
    dist_params: torch.Tensor  # (T, N, n_params) the behaviour policy, for KL terms
    rewards: torch.Tensor      # (T, N) (scaled when normalize_reward)
    terminated: torch.Tensor   # (T, N) bool
    truncated: torch.Tensor    # (T, N) bool
    final_values: torch.Tensor  # (T, N) V(true final observation) where truncated
    next_values: torch.Tensor  # (T, N) V(s_{t+1}) for GAE
    advantages: torch.Tensor   # (T, N)
    returns: torch.Tensor      # (T, N)

    @classmethod
    def allocate(cls, T: int, N: int, obs_dim: int, spec: ActionSpec, device: torch.device) -> Rollout:
        f = dict(dtype=torch.float32, device=device)
        return cls(
            obs=torch.zeros(T, N, obs_dim, **f), actions=torch.zeros(T, N, *spec.shape, dtype=spec.dtype, device=device),
            log_probs=torch.zeros(T, N, **f), values=torch.zeros(T, N, **f),
            dist_params=torch.zeros(T, N, spec.n_params, **f), rewards=torch.zeros(T, N, **f),
            terminated=torch.zeros(T, N, dtype=torch.bool, device=device),
            truncated=torch.zeros(T, N, dtype=torch.bool, device=device),
            final_values=torch.zeros(T, N, **f), next_values=torch.zeros(T, N, **f),
            advantages=torch.zeros(T, N, **f), returns=torch.zeros(T, N, **f))

    def flat(self) -> dict[str, torch.Tensor]:
        """Every buffer with (T, N) merged into one batch axis (views, no copies)."""
        return {f.name: getattr(self, f.name).flatten(0, 1) for f in fields(self)}


class OnPolicyAlgorithm:
    """Shared machinery. Subclasses set ``algo`` and implement ``_update(progress) -> metrics``."""

    algo = ""

    def __init__(self, policy: str | nn.Module, env, *, learning_rate, n_steps: int, num_envs: int, gamma: float,
                 gae_lambda: float, normalize_obs: bool, normalize_reward: bool, use_sde: bool,
                 sde_sample_freq: int, seed: int | None,
                 device: str | torch.device, backend: str, policy_kwargs: dict | None, log_dir: str | None,
                 tensorboard_log: str | None, torch_threads: int | None, hyperparameters: dict[str, Any]):
        _check_int(n_steps, "n_steps", 1)
        self.learning_rate = make_schedule(learning_rate, "learning_rate")
        if not self.learning_rate(1.0) > 0:
            raise ValueError(f"learning_rate must be > 0, got {self.learning_rate(1.0)!r} at the start of training")
        if torch_threads is not None:
            _check_int(torch_threads, "torch_threads", 1)
        _check_int(num_envs, "num_envs", 1)
        for name, value in (("gamma", gamma), ("gae_lambda", gae_lambda)):
            if not 0.0 <= value <= 1.0:
                raise ValueError(f"{name} must be in [0, 1], got {value!r}")
        self.device = torch.device(device)
        # PPO's networks are tiny: on the CPU torch's intra-op threads cost more in wake-ups than they
        # save (10x slower training measured on a busy 2-core machine), so learn() uses one by default.
        self.torch_threads = torch_threads if torch_threads is not None else (1 if self.device.type == "cpu" else None)
        self.n_steps, self.gamma, self.gae_lambda, self.seed, self.backend = n_steps, gamma, gae_lambda, seed, backend
        _check_int(sde_sample_freq, "sde_sample_freq", -1)  # <= 0: new noise once per rollout, as SB3
        self.use_sde, self.sde_sample_freq = bool(use_sde), sde_sample_freq
        self._hyperparameters = hyperparameters
        self.env, self.env_id = as_vector_env(env, num_envs, seed=seed, backend=backend)
        self.num_envs = self.env.num_envs
        self.observation_space = self.env.single_observation_space
        self.action_space = self.env.single_action_space
        self.obs_spec = ObsSpec(self.observation_space)
        self.action_spec = ActionSpec(self.action_space)

        with torch.random.fork_rng(devices=[]):  # seed the initial weights without touching the global RNG
            if seed is not None:
                torch.manual_seed(seed)
            self.policy = self._build_policy(policy, policy_kwargs or {}).to(self.device)
        self.policy_kwargs = policy_kwargs or {}
        self._custom_policy = policy if isinstance(policy, nn.Module) else None
        self._generator = torch.Generator(device=self.device)
        self._generator.manual_seed(seed if seed is not None else int(torch.randint(2**62, ()).item()))

        self.rollout = Rollout.allocate(n_steps, self.num_envs, self.obs_spec.dim, self.action_spec, self.device)
        self._obs_buffer = np.zeros((self.num_envs, self.obs_spec.dim), np.float32)
        self.obs_normalizer = (ObsNormalizer(self.obs_spec.dim)
                               if normalize_obs and self.obs_spec.kind == "box" else None)
        self.reward_scaler = RewardScaler(self.num_envs, gamma) if normalize_reward else None
        self.num_timesteps = 0
        self.iteration = 0
        self._total_timesteps = 0
        self._last_obs: torch.Tensor | None = None  # the policy's input for the next step
        self.episode_returns: deque[float] = deque(maxlen=100)
        self.episode_lengths: deque[int] = deque(maxlen=100)
        self.logger = Logger(log_dir, tensorboard_log)

    # -- construction -------------------------------------------------------------------------------
    def _build_policy(self, policy, policy_kwargs: dict) -> nn.Module:
        if isinstance(policy, nn.Module):
            if policy_kwargs:
                raise ValueError("policy_kwargs apply to 'MlpPolicy' only, not to a given nn.Module")
            if self.use_sde and not all(callable(getattr(policy, m, None)) for m in ("sample_exploration", "sde_noise")):
                raise TypeError("use_sde needs the policy module to define sample_exploration() and sde_noise() "
                                "(see fastppo.algos.policies.ActorCritic)")
            return policy
        if policy != "MlpPolicy":
            raise ValueError(f"policy must be 'MlpPolicy' or an nn.Module, got {policy!r}")
        return ActorCritic(self.observation_space, self.action_space, use_sde=self.use_sde, **policy_kwargs)

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
        obs, _ = self.env.reset(seed=self.seed)
        self._last_obs = self._policy_input(obs, update_stats=True, out=self._obs_buffer).clone()

    # -- COLLECT ------------------------------------------------------------------------------------
    @torch.inference_mode()
    def _collect(self, callback: Callback | None) -> bool:
        r, policy = self.rollout, self.policy
        # The built-in MLP acts natively on the CPU (one call per step instead of ~30 torch ops); the
        # torch path is its reference and runs everywhere else (backend="torch", GPUs, custom modules).
        native = policy.native_act() if self._native_policy() else None
        # The native step's random numbers: a stream keyed by one draw from the generator per rollout.
        seed = int(torch.randint(2**62, (), generator=self._generator)) if native is not None else None
        # On the CPU the rollout is written through numpy views (a torch __setitem__ costs ~10 us).
        rows = {f.name: getattr(r, f.name).numpy() for f in fields(r)} if self.device.type == "cpu" else None
        if native is not None and self._native_env_ok(callback):
            self._collect_natively(native, seed, rows)
        elif not self._collect_steps(native, seed, rows, callback):
            return False
        r.next_values[:-1] = r.values[1:]
        r.next_values[-1] = policy.value(self._last_obs)
        torch.where(r.truncated & ~r.terminated, r.final_values, r.next_values, out=r.next_values)
        return True

    def _collect_steps(self, native, seed: int | None, rows: dict[str, np.ndarray] | None,
                       callback: Callback | None) -> bool:
        """The rollout loop, one vector step at a time; False when a callback stopped training."""
        r, spec, policy = self.rollout, self.action_spec, self.policy

        def put(name: str, t: int, value: np.ndarray) -> None:
            if rows is not None:
                rows[name][t] = value
            else:
                getattr(r, name)[t] = torch.from_numpy(np.ascontiguousarray(value)).to(self.device)

        for t in range(self.n_steps):
            obs = self._last_obs
            if native is not None:
                rows["obs"][t] = obs.numpy()
                native.act(rows["obs"][t], rows["actions"][t], rows["log_probs"][t], rows["values"][t],
                           rows["dist_params"][t], seed, t)
                env_action = rows["actions"][t]
            else:
                params, value = policy(obs)
                dist = spec.distribution(params)
                if self.use_sde:  # SB3's schedule: new matrices at the rollout's start and every sde_sample_freq steps
                    if t == 0 or (self.sde_sample_freq > 0 and t % self.sde_sample_freq == 0):
                        exploration = policy.sample_exploration(self.num_envs, self._generator)
                    action = dist.mean + policy.sde_noise(obs, exploration)
                else:
                    action = dist.sample(self._generator)
                r.obs[t] = obs
                r.actions[t] = action
                r.log_probs[t] = dist.log_prob(action)
                r.values[t] = value
                r.dist_params[t] = params
                env_action = action.cpu().numpy()

            next_obs, reward, terminated, truncated, info = self.env.step(spec.to_env(env_action))
            self.num_timesteps += self.num_envs
            terminated, truncated = np.asarray(terminated, bool), np.asarray(truncated, bool)
            if "episode" in info:
                done = info["_episode"]
                self.episode_returns.extend(info["episode"]["r"][done].tolist())
                self.episode_lengths.extend(info["episode"]["l"][done].tolist())
            if self.reward_scaler is not None:
                reward = self.reward_scaler(np.asarray(reward, np.float32), terminated | truncated)
            put("rewards", t, reward)
            put("terminated", t, terminated)
            put("truncated", t, truncated)
            bootstrap = np.flatnonzero(truncated & ~terminated)
            if bootstrap.size:  # V(true final observation): the time limit is not the end of the task
                final = self._policy_input(np.stack([info["final_obs"][i] for i in bootstrap]), False)
                if native is not None:
                    values = np.empty(bootstrap.size, np.float32)
                    native.value(final.numpy(), values)
                    rows["final_values"][t, bootstrap] = values
                else:
                    r.final_values[t, torch.from_numpy(bootstrap)] = policy.value(final)
            self._last_obs = self._policy_input(next_obs, update_stats=True, out=self._obs_buffer)
            if callback is not None and not callback.on_step():
                return False
        self._last_obs = self._last_obs.clone()  # detach from the reused numpy buffer
        return True

    def _native_env_ok(self, callback: Callback | None) -> bool:
        """Whether the whole rollout can run natively (_core.collect, normalisers included): a built-in
        env on the CPU and no callback that overrides on_step (Python work per step)."""
        from fastppo.envs.builtin import BuiltinVecEnv

        return (isinstance(self.env, BuiltinVecEnv) and self.env.device == "cpu"
                and (callback is None or not callback.per_step()))

    def _collect_natively(self, native, seed: int, rows: dict[str, np.ndarray]) -> None:
        """The loop of ``_collect_steps`` in one native call: the same steps, numbers and bookkeeping."""
        env = self.env
        capacity = self.n_steps * self.num_envs
        returns, lengths = np.empty(capacity, np.float64), np.empty(capacity, np.int64)
        space = env.single_action_space
        bounds = (float(space.low[0]), float(space.high[0])) if isinstance(space, gym.spaces.Box) else (0.0, 0.0)
        last_obs = np.empty((self.num_envs, self.obs_spec.dim), np.float32)
        last_values = np.empty(self.num_envs, np.float32)
        obs_norm = reward_norm = None
        if self.obs_normalizer is not None:  # the current arrays: the Python path replaces them on update
            n = self.obs_normalizer
            obs_norm = {"mean": n.rms.mean, "var": n.rms.var, "count": n.rms.count_array, "clip": n.clip,
                        "eps": n.eps}
        if self.reward_scaler is not None:
            s = self.reward_scaler
            reward_norm = {"mean": s.rms.mean.reshape(1), "var": s.rms.var.reshape(1), "count": s.rms.count_array,
                           "returns": s.returns, "gamma": s.gamma, "clip": s.clip, "eps": s.eps}
        ended = _core.collect(env._batch, native, self._last_obs.numpy(), rows, returns, lengths, seed, *bounds,
                              last_obs, last_values, obs_norm, reward_norm)
        self.num_timesteps += capacity
        self.episode_returns.extend(returns[:ended].tolist())
        self.episode_lengths.extend(lengths[:ended].tolist())
        self._last_obs = self._policy_input(env._buffers["obs"], update_stats=False).clone()

    # -- the loop -----------------------------------------------------------------------------------
    def learn(self, total_timesteps: int, callback: Callback | list[Callback] | None = None,
              progress_bar: bool = True, log_interval: int = 1):
        """Train for ``total_timesteps`` more env steps (a second call continues where the first ended).

        Runs whole iterations of ``n_steps * num_envs`` steps, so it may do up to one iteration's worth
        more. Returns ``self``.
        """
        _check_int(total_timesteps, "total_timesteps", 1)
        _check_int(log_interval, "log_interval", 1)
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
        with self.torch_thread_scope():
            try:
                while self.num_timesteps < self._total_timesteps:
                    start, steps_before = time.perf_counter(), self.num_timesteps
                    # Remaining progress (1 -> 0) for the schedules, taken before the rollout so that it stays
                    # above 0: an annealed clip range of exactly 0 would be invalid.
                    progress = 1.0 - self.num_timesteps / self._total_timesteps
                    self.policy.train()
                    if not self._collect(callback):
                        break
                    if callback is not None:
                        callback.on_rollout_end()
                    r = self.rollout
                    gae(r.rewards, r.values, r.next_values, r.terminated, r.truncated, gamma=self.gamma,
                        lam=self.gae_lambda, backend=self.backend, out=(r.advantages, r.returns))
                    metrics = self._update(progress)
                    self.iteration += 1
                    metrics = {"timesteps": self.num_timesteps, "iteration": self.iteration, **metrics,
                               "explained_variance": _explained_variance(r.values, r.returns),
                               "sps": (self.num_timesteps - steps_before) / (time.perf_counter() - start),
                               "episode_return": _mean(self.episode_returns),
                               "episode_length": _mean(self.episode_lengths)}
                    if self.iteration % log_interval == 0:
                        self.logger.record(metrics)
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
        return self

    def _update(self, progress: float) -> dict[str, float]:
        raise NotImplementedError

    @staticmethod
    def _shared(hyperparameters: dict[str, Any]) -> dict[str, Any]:
        """The subset of a subclass's constructor arguments that this class's constructor takes."""
        return {k: v for k, v in hyperparameters.items() if k in _SHARED_ARGS}

    def _native_policy(self) -> bool:
        """Whether the native kernels run the policy: the built-in MLP where ``ActorCritic.native_ok``
        holds, unless backend="torch" (or another non-native backend) was asked for."""
        return (self.backend in ("auto", "cpp") and isinstance(self.policy, ActorCritic)
                and self.policy.native_ok())

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
        obs = np.asarray(observation)
        single = obs.shape == self.observation_space.shape
        batch = obs[None] if single else obs
        if batch.shape[1:] != self.observation_space.shape:
            raise ValueError(f"observation must have shape {self.observation_space.shape} or (batch, "
                             f"*{self.observation_space.shape}), got {obs.shape}")
        with torch.inference_mode():
            params, _ = self.policy(self._policy_input(batch, update_stats=False))
            dist = self.action_spec.distribution(params)
            actions = self.action_spec.to_env((dist.mode() if deterministic else dist.sample()).cpu().numpy())
        return (actions[0] if single else actions), None

    # -- checkpoints --------------------------------------------------------------------------------
    def _algo_state(self) -> dict:
        """Subclass state to checkpoint (optimisers, adaptive coefficients)."""
        return {}

    def _load_algo_state(self, state: dict) -> None:
        pass

    def save(self, path: str | os.PathLike) -> None:
        """Everything needed to act and to resume training exactly, written atomically (a crash mid-save
        leaves any previous file at ``path`` intact)."""
        env_state = self.env.snapshot() if hasattr(self.env, "snapshot") else None
        state = {
            "format": CHECKPOINT_FORMAT, "version": CHECKPOINT_VERSION, "algo": self.algo,
            "env_id": self.env_id, "observation_space": self.observation_space, "action_space": self.action_space,
            "num_envs": self.num_envs, "hyperparameters": self._hyperparameters,
            "policy_kwargs": self.policy_kwargs, "custom_policy": self._custom_policy,
            "policy_state": self.policy.state_dict(), "algo_state": self._algo_state(),
            "obs_normalizer": self.obs_normalizer.rms.state_dict() if self.obs_normalizer else None,
            "reward_scaler": self.reward_scaler.state_dict() if self.reward_scaler else None,
            "num_timesteps": self.num_timesteps, "iteration": self.iteration,
            "total_timesteps": self._total_timesteps, "generator": self._generator.get_state(),
            "env_state": env_state, "last_obs": self._last_obs.cpu() if env_state is not None and self._last_obs is not None else None,
            "episode_returns": list(self.episode_returns), "episode_lengths": list(self.episode_lengths),
        }
        path = os.fspath(path)
        directory = os.path.dirname(os.path.abspath(path))
        os.makedirs(directory, exist_ok=True)
        fd, tmp = tempfile.mkstemp(dir=directory, prefix=".tmp-", suffix=".pt")
        try:
            with os.fdopen(fd, "wb") as f:
                torch.save(state, f)
                f.flush()
                os.fsync(f.fileno())
            os.replace(tmp, path)
        except BaseException:
            os.unlink(tmp)
            raise

    @classmethod
    def load(cls, path: str | os.PathLike, env=None, **overrides):
        """A model from :meth:`save`, ready to act and to continue training.

        ``env`` defaults to the checkpoint's env id (it must have been trained on one); a given env must
        have the same spaces. ``overrides`` replace saved hyperparameters (e.g. ``device``, ``log_dir``).
        Checkpoints are pickles: load only files you trust.
        """
        return cls._from_checkpoint(read_checkpoint(path), env, overrides)

    @classmethod
    def _from_checkpoint(cls, ckpt: dict, env, overrides: dict):
        if ckpt["algo"] != cls.algo:
            raise ValueError(f"checkpoint holds a {ckpt['algo']!r} model; load it with that algorithm's class")
        if env is None:
            if ckpt["env_id"] is None:
                raise ValueError("the checkpoint's env was not given by id: pass env= to load()")
            env = ckpt["env_id"]
        hyper = {**ckpt["hyperparameters"], **overrides}
        policy = ckpt["custom_policy"] if ckpt["custom_policy"] is not None else "MlpPolicy"
        if ckpt["custom_policy"] is None:
            hyper["policy_kwargs"] = ckpt["policy_kwargs"]
        model = cls(policy, env, **hyper)
        for name in ("observation_space", "action_space"):
            if getattr(model, name) != ckpt[name]:
                raise ValueError(f"env has {name} {getattr(model, name)}, but the checkpoint was trained on "
                                 f"{ckpt[name]}")
        model.policy.load_state_dict(ckpt["policy_state"])
        model._load_algo_state(ckpt["algo_state"])
        if model.obs_normalizer is not None and ckpt["obs_normalizer"] is not None:
            model.obs_normalizer.rms.load_state_dict(ckpt["obs_normalizer"])
        same_envs = model.num_envs == ckpt["num_envs"]
        if model.reward_scaler is not None and ckpt["reward_scaler"] is not None and same_envs:
            model.reward_scaler.load_state_dict(ckpt["reward_scaler"])
        model.num_timesteps, model.iteration = ckpt["num_timesteps"], ckpt["iteration"]
        model._total_timesteps = ckpt["total_timesteps"]
        model._generator.set_state(ckpt["generator"])
        model.episode_returns.extend(ckpt["episode_returns"])
        model.episode_lengths.extend(ckpt["episode_lengths"])
        if ckpt["env_state"] is not None and same_envs and hasattr(model.env, "restore"):
            model.env.restore(ckpt["env_state"])  # resume mid-episode, exactly where training stopped
            model._last_obs = ckpt["last_obs"].to(model.device)
        return model

    def close(self) -> None:
        self.env.close()
        self.logger.close()


def read_checkpoint(path: str | os.PathLike) -> dict:
    """The checked contents of a checkpoint written by ``save``."""
    try:
        ckpt = torch.load(path, map_location="cpu", weights_only=False)
    except (OSError, EOFError, RuntimeError, pickle.UnpicklingError) as exc:
        raise ValueError(f"{os.fspath(path)!r} is not a readable fastppo checkpoint ({exc})") from exc
    if not isinstance(ckpt, dict) or ckpt.get("format") != CHECKPOINT_FORMAT:
        raise ValueError(f"{os.fspath(path)!r} is not a fastppo checkpoint")
    if ckpt["version"] != CHECKPOINT_VERSION:
        raise ValueError(f"checkpoint format version {ckpt['version']} is not supported by this fastppo "
                         f"(it reads version {CHECKPOINT_VERSION})")
    return ckpt


# OnPolicyAlgorithm.__init__'s keyword arguments, which PPO and TRPO pass through unchanged.
_SHARED_ARGS = frozenset(inspect.signature(OnPolicyAlgorithm.__init__).parameters) - {"self", "policy", "env", "hyperparameters"}


def _check_int(value, name: str, minimum: int) -> None:
    if isinstance(value, bool) or not isinstance(value, (int, np.integer)) or value < minimum:
        raise ValueError(f"{name} must be an integer >= {minimum}, got {value!r}")


def _mean(values) -> float:
    return float(np.mean(values)) if len(values) else float("nan")


def _explained_variance(values: torch.Tensor, returns: torch.Tensor) -> float:
    var = returns.var()
    return float("nan") if var == 0 else float(1 - (returns - values).var() / var)


class FlatParameters:
    """A module's parameters re-seated as views of one flat buffer, their gradients as views of another.

    Clipping and Adam then run on one tensor instead of one per layer: each torch op costs ~10 us on a
    small CPU, and clip_grad_norm_ + Adam over 12 tensors cost ~0.5 ms per minibatch, a third of it.
    The arithmetic is unchanged (both are elementwise or a norm over all elements). Gradients must be
    zeroed in place (``grad.zero_()``), never set to None, or the views would come apart.
    """

    def __init__(self, parameters):
        params = list(parameters)
        first = params[0]
        if any(p.dtype != first.dtype or p.device != first.device for p in params):
            raise ValueError("policy parameters must share one dtype and device, got "
                             f"{sorted({(str(p.dtype), str(p.device)) for p in params})}")
        self.param = torch.empty(sum(p.numel() for p in params), dtype=first.dtype, device=first.device)
        self.grad = torch.zeros_like(self.param)
        offset = 0
        with torch.no_grad():
            for p in params:
                n = p.numel()
                self.param[offset:offset + n].copy_(p.flatten())
                p.data = self.param[offset:offset + n].view_as(p)
                p.grad = self.grad[offset:offset + n].view_as(p)
                offset += n
        self.param.requires_grad_(True)
        self.param.grad = self.grad


class FlatAdam:
    """Adam (torch.optim.Adam's formulas, no weight decay) over one :class:`FlatParameters` buffer, with
    optional gradient-norm clipping before the step.

    These torch ops are the spec of the native step (``FlatAdam`` in csrc/mlp.h), which the native
    updates take on the same state tensors (numpy views). It is not torch.optim.Adam itself: creating or
    checkpointing a torch optimizer imports torch._dynamo, ~2 s on a small CPU, longer than a whole
    CartPole run.
    """

    def __init__(self, flat: FlatParameters, lr: float, eps: float, betas: tuple[float, float] = (0.9, 0.999)):
        self.flat, self.lr, self.eps, self.betas = flat, float(lr), float(eps), tuple(betas)
        self.steps = 0
        self.exp_avg = torch.zeros_like(flat.param, requires_grad=False)
        self.exp_avg_sq = torch.zeros_like(flat.param, requires_grad=False)

    @torch.no_grad()
    def step(self, max_grad_norm: float | None = None) -> None:
        """Clip the gradient's global norm to ``max_grad_norm`` (as ``clip_grad_norm_``), then step."""
        grad, (beta1, beta2) = self.flat.grad, self.betas
        if max_grad_norm is not None:
            nn.utils.clip_grad_norm_(self.flat.param, max_grad_norm)
        self.steps += 1
        self.exp_avg.lerp_(grad, 1 - beta1)
        self.exp_avg_sq.mul_(beta2).addcmul_(grad, grad, value=1 - beta2)
        bias1, bias2 = 1 - beta1 ** self.steps, 1 - beta2 ** self.steps
        denom = (self.exp_avg_sq.sqrt() / math.sqrt(bias2)).add_(self.eps)
        self.flat.param.addcdiv_(self.exp_avg, denom, value=-self.lr / bias1)

    def state_dict(self) -> dict:
        return {"lr": self.lr, "eps": self.eps, "betas": self.betas, "steps": self.steps,
                "exp_avg": self.exp_avg.clone(), "exp_avg_sq": self.exp_avg_sq.clone()}

    def load_state_dict(self, state: dict) -> None:
        self.lr, self.eps, self.betas, self.steps = state["lr"], state["eps"], tuple(state["betas"]), state["steps"]
        with torch.no_grad():  # in place: the native updates hold views of these tensors
            self.exp_avg.copy_(state["exp_avg"])
            self.exp_avg_sq.copy_(state["exp_avg_sq"])
