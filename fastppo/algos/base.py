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
import time
from collections import deque

import gymnasium as gym
import numpy as np
import torch
from torch import nn

from fastppo import _backend
from fastppo._version import __version__
from fastppo.algos import distributed
from fastppo.algos.callbacks import Callback, as_callback
from fastppo.algos.config import OnPolicyConfig, check_int, resolve_device
from fastppo.algos.distributed import Reducer, StatsMerge, describe
from fastppo.algos.distributions import ActionSpec
from fastppo.algos.interrupt import InterruptAtIterationEnd, TrainingInterrupted
from fastppo.algos.logger import Logger, ProgressBar, make_output_format, run_folder
from fastppo.algos.model_api import ModelAPI
from fastppo.algos.normalize import ObsNormalizer, RewardScaler
from fastppo.algos.optim import uses_flat_adam
from fastppo.algos.observations import ObsSpec
from fastppo.algos.policies import (MLP_POLICY_KWARGS, POLICY_NAMES, ActorCritic, auto_policy, compile_policy,
                                    named_policy)
from fastppo.algos.resident import ResidentCollector, env_device
from fastppo.algos.rollout import (NativeActor, NativeCollector, Rollout, StepCollector, TorchActor,
                                   check_observations, host_rows)
from fastppo.algos.sb3_policy import SB3Policy
from fastppo.envs import SB3View, as_vector_env, observation_space
from fastppo.ops import gae


OPTIMIZER_KWARGS = ("optimizer_class", "optimizer_kwargs")  # the policy_kwargs that choose the optimiser
PER_RANK = ("verbose", "tensorboard_log", "log_dir", "device")  # the settings ranks may differ in


class OnPolicyAlgorithm(ModelAPI):
    """Shared machinery. Subclasses set ``algo``, ``config_class`` and ``positional`` (the names of
    the constructor's positional arguments after ``policy, env``, in Stable-Baselines3's order) and build
    their updaters in ``_build_updaters``."""

    algo = ""
    config_class = OnPolicyConfig
    positional: tuple[str, ...] = ()

    def __init__(self, policy: str | nn.Module, env, config: OnPolicyConfig, *,
                 spaces: tuple[gym.Space, gym.Space, int] | None = None):
        self.config = config
        if isinstance(policy, str) and policy == "auto":  # SB3's policy name the observations call for
            policy = auto_policy(spaces[0] if env is None else observation_space(env))
        self.device = distributed.local_device(resolve_device(config.device, policy))
        # data-parallel under torchrun (fastppo/algos/distributed.py), else the identity
        self.reducer: Reducer = distributed.setup(self.device) or Reducer()
        if config.verbose >= 1 and distributed.is_main(self):
            print(f"Using {self.device} device")
        self.backend = _backend.requested(config.backend)
        if env is None and spaces is None:
            raise ValueError("env must be given (an env id, a gymnasium VectorEnv or Env, or an SB3 VecEnv)")
        self.env = None
        self.env_id = None
        self._view: SB3View | None = None  # get_env()'s view of a non-SB3 env
        if env is not None:
            self.env, self.env_id = as_vector_env(env, config.num_envs, seed=self._env_seed(config.num_envs),
                                                  backend=self.backend,  # a built-in id on the CUDA engine?
                                                  device=env_device(env, self.device, self.backend, config))
            if self.env_id is None and config.num_envs not in (1, self.env.num_envs):
                raise ValueError(f"num_envs={config.num_envs} applies to an env id; the env given brings its own "
                                 f"count ({self.env.num_envs}): leave num_envs out")
            self.observation_space = self.env.single_observation_space
            self.action_space = self.env.single_action_space
            num_envs = self.env.num_envs
        else:  # a loaded model without an env (load(path) of a model trained on an env instance): set_env() later
            self.observation_space, self.action_space, num_envs = spaces
        self.obs_spec = ObsSpec(self.observation_space)
        # PPO's MLPs are tiny: on the CPU torch's intra-op threads cost more in wake-ups than they save (10x
        # slower training measured on a busy 2-core machine), so learn() uses one by default. Networks over
        # pixels are not tiny (bench/bench_atari.py): they keep torch's threads, or this rank's share of them.
        self.torch_threads = (config.torch_threads if config.torch_threads is not None
                              else 1 if self.device.type == "cpu" and self.obs_spec.kind not in ("image", "dict")
                              else self.reducer.threads)
        self.action_spec = ActionSpec(self.action_space)

        with torch.random.fork_rng(devices=[]):  # seed the initial weights without touching the global RNG
            if config.seed is not None:
                torch.manual_seed(config.seed)
            self.policy = self._build_policy(policy, config.policy_kwargs or {}).to(self.device)
        if config.torch_compile:  # forward() compiled in place; the native trainer computes the MLP without it
            compile_policy(self.policy, config.torch_compile)
        if not self.reducer.local:
            self._check_same_run(num_envs)
            with torch.no_grad():  # identical initial weights on every rank, whatever the seed
                for tensor in self.policy.state_dict().values():
                    self.reducer.broadcast_(tensor)
        self._custom_policy = None if isinstance(policy, str) else policy  # a module or a class: not stored
        self.policy_name = policy if isinstance(policy, str) else None  # "MlpPolicy", "CnnPolicy", ...: stored
        # SB3's optimizer_class / optimizer_kwargs (fastppo.algos.optim.make_optimizer builds the optimiser): an
        # SB3 policy class's own, as SB3 takes them from the policy, else policy_kwargs'
        self._optimizer_options = (self.policy.optimizer_options() if isinstance(self.policy, SB3Policy) else
                                   {k: v for k, v in (config.policy_kwargs or {}).items() if k in OPTIMIZER_KWARGS})
        self.native = not config.torch_compile and _backend.native_trainer(
            self.backend, isinstance(self.policy, ActorCritic) and self.policy.native_ok()
            and uses_flat_adam(**self._optimizer_options))
        self._generator = torch.Generator(device=self.device)
        # each rank its own sampling stream
        self._generator.manual_seed(config.seed + self.reducer.rank if config.seed is not None
                                    else int(torch.randint(2**62, ()).item()))

        if config.normalize_obs and self.obs_spec.kind in ("image", "dict"):
            raise ValueError(f"normalize_obs=True applies to Box observations, not to {self.obs_spec.kind} ones "
                             f"({self.observation_space}; the policy scales images to [0, 1]): leave it out")
        self.obs_normalizer = (ObsNormalizer(self.obs_spec.dim)
                               if config.normalize_obs and self.obs_spec.kind == "box" else None)
        # built at the first rollout, once the parameters sit in their flat buffers: the native actor keeps views
        self._actor: TorchActor | NativeActor | None = None
        self.num_timesteps = self._total_timesteps = 0
        self.iteration = 0  # iterations since the model was made (checkpointed); SB3's time/iterations counts per learn()
        self._envs_seeded = False  # the seed applies to the first reset only, as SB3 seeds its VecEnv once
        self.episode_returns: deque[float] = deque(maxlen=config.stats_window_size)
        self.episode_lengths: deque[int] = deque(maxlen=config.stats_window_size)
        self.logger, self._custom_logger, self._n_updates = Logger(), False, 0
        self._allocate(num_envs)

    def _env_seed(self, num_envs: int) -> int | None:
        """The envs' seed on this rank: rank r's envs follow rank r-1's, so the union of K ranks' envs is
        seeded as one process's K * num_envs envs."""
        seed = self.config.seed
        return None if seed is None else seed + self.reducer.rank * num_envs

    def _check_same_run(self, num_envs: int) -> None:
        """Every rank runs the same code, algorithm, env and hyperparameters (a ValueError on every rank
        naming what differs, instead of a hang or silently different training)."""
        config = self.config.to_dict()
        self.reducer.check_same({
            "fastppo version": __version__, "algorithm": type(self).__name__,
            "env": describe(self.env_id if self.env_id is not None else type(self.env).__name__),
            "observation_space": repr(self.observation_space), "action_space": repr(self.action_space),
            "num_envs": repr(num_envs), **{k: describe(v) for k, v in config.items() if k not in PER_RANK}})

    def _allocate(self, num_envs: int) -> None:
        """What depends on the number of envs: the rollout storage and per-env state (on construction
        and when ``set_env`` brings another count); the subclass's updaters are built over the rollout."""
        self.num_envs, self.n_steps = num_envs, self.config.n_steps
        self.rollout_size = self.n_steps * num_envs
        self.rollout = Rollout.allocate(self.n_steps, num_envs, self.obs_spec, self.action_spec, self.device)
        self._obs_buffer = host_rows(self.rollout.obs[0], pinned=self.device.type == "cuda")  # one step's
        self.reward_scaler = RewardScaler(num_envs, self.config.gamma) if self.config.normalize_reward else None
        self._collectors: dict[bool, StepCollector | NativeCollector | ResidentCollector] = {}
        self._last_obs: torch.Tensor | None = None  # the policy's input for the next step

    def _build_updaters(self) -> None:
        """Subclasses: the update's machinery over ``self.rollout`` (again after ``_allocate``)."""

    def __getattr__(self, name: str):
        # Hyperparameters read as attributes (model.gamma, model.clip_range_vf, ...): the config holds them.
        config = self.__dict__.get("config")
        if config is not None and name in config.field_names():
            return getattr(config, name)
        raise AttributeError(f"{type(self).__name__!r} object has no attribute {name!r}")

    @property
    def n_envs(self) -> int:
        """SB3's name for ``num_envs``."""
        return self.num_envs

    # -- construction -------------------------------------------------------------------------------
    @classmethod
    def _config_from_args(cls, args: tuple, config: OnPolicyConfig | None, hyperparameters: dict) -> OnPolicyConfig:
        """The config from SB3-ordered positional arguments, a config object and keyword arguments; SB3's
        constructor arguments that are not hyperparameters are checked here and dropped."""
        if len(args) > len(cls.positional):
            raise TypeError(f"{cls.__name__}() takes at most {len(cls.positional) + 2} positional arguments "
                            f"(policy, env, {', '.join(cls.positional)}), got {len(args) + 2}")
        for name, value in zip(cls.positional, args):
            if name in hyperparameters:
                raise TypeError(f"{cls.__name__}() got multiple values for argument {name!r}")
            hyperparameters[name] = value
        for name in ("rollout_buffer_class", "rollout_buffer_kwargs"):
            if hyperparameters.pop(name, None):
                raise ValueError(f"{name} is not supported: fastppo keeps its rollout in its own preallocated "
                                 f"storage (fastppo.algos.rollout.Rollout); pass None")
        if hyperparameters.pop("_init_setup_model", True) is not True:
            raise ValueError("_init_setup_model=False is not supported: fastppo builds the model at construction")
        return cls.config_class.from_kwargs({**(config.to_dict() if config else {}), **hyperparameters})

    def _build_policy(self, policy, policy_kwargs: dict) -> nn.Module:
        """The policy module: a given ``nn.Module`` as it is, an SB3 policy class (an ``ActorCriticPolicy``
        subclass) built as SB3 builds it and adapted (:class:`~fastppo.algos.sb3_policy.SB3Policy`), or
        a policy name (:data:`~fastppo.algos.policies.POLICY_NAMES`), an :class:`ActorCritic` from
        ``policy_kwargs`` with that name's defaults (:func:`~fastppo.algos.policies.named_policy`)."""
        if isinstance(policy, nn.Module):
            if self.obs_spec.kind == "dict":
                raise ValueError("a policy module for Dict observations is not supported (it would be given the "
                                 "packed rows of fastppo.algos.observations): use 'MultiInputPolicy' or an SB3 "
                                 "policy class")
            if policy_kwargs:
                raise ValueError("policy_kwargs apply to 'MlpPolicy', 'CnnPolicy' or a policy class, not to a given "
                                 "nn.Module")
            if self.config.use_sde and not all(callable(getattr(policy, m, None))
                                               for m in ("sample_exploration", "sde_noise")):
                raise TypeError("use_sde needs the policy module to define sample_exploration() and sde_noise() "
                                "(see fastppo.algos.policies.ActorCritic)")
            return policy
        if isinstance(policy, type):
            return SB3Policy.build(policy, self.observation_space, self.action_space, self.config.lr_schedule,
                                   use_sde=self.config.use_sde, **policy_kwargs)
        if policy not in POLICY_NAMES:
            raise ValueError(f"policy must be 'auto', 'MlpPolicy', 'CnnPolicy', 'MultiInputPolicy', an nn.Module "
                             f"or an SB3 policy class, got {policy!r}")
        known = [*MLP_POLICY_KWARGS, *OPTIMIZER_KWARGS]
        unknown = sorted(set(policy_kwargs) - set(known), key=str)
        if unknown:
            raise TypeError(f"unknown policy_kwargs {', '.join(map(repr, unknown))} for {policy!r}; known: "
                            f"{', '.join(known)}")
        return named_policy(policy, self.observation_space, self.action_space, use_sde=self.config.use_sde,
                            **{k: v for k, v in policy_kwargs.items() if k not in OPTIMIZER_KWARGS})

    # -- observations -------------------------------------------------------------------------------
    def _policy_input(self, raw_obs, update_stats: bool, out: np.ndarray | None = None) -> torch.Tensor:
        """Env observations -> the policy's input: images as uint8, others flattened / one-hot to float32,
        checked and normalised."""
        if out is None:
            out = np.empty((self.obs_spec.batch_size(raw_obs), *self.obs_spec.shape), self.obs_spec.dtype)
        flat = self.obs_spec.rows(raw_obs, out)
        for part in self.obs_spec.float_parts(flat):  # uint8 images are always finite
            check_observations(part, self.num_timesteps)
        if self.obs_normalizer is not None:
            flat = self.obs_normalizer(flat, update_stats)
        return torch.from_numpy(flat).to(self.device, non_blocking=True)  # from pinned rows: asynchronous

    def _reset_envs(self) -> None:
        obs, _ = self.env.reset(seed=None if self._envs_seeded else self._env_seed(self.num_envs))
        self._envs_seeded = True
        self._last_obs = (obs.clone() if isinstance(obs, torch.Tensor)  # the CUDA engine's: the policy's input
                          else self._policy_input(obs, update_stats=True, out=self._obs_buffer).clone())

    # -- COLLECT ------------------------------------------------------------------------------------
    def _collector(self, callback: Callback | None) -> StepCollector | NativeCollector | ResidentCollector:
        """The resident collector for a built-in env on the GPU; the native collector where it applies (the
        native policy, a built-in env on the CPU or a MuJoCo env, and no callback that runs per step); else
        the step loop; each built once."""
        from fastppo.envs.builtin import BuiltinVecEnv
        from fastppo.envs.mujoco.vec_env import MujocoVecEnv

        if self._actor is None:
            self._actor = NativeActor(self) if self.native else TorchActor(self)
        per_step = callback is not None and callback.per_step()
        if per_step not in self._collectors:
            builtin = isinstance(self.env, BuiltinVecEnv)
            whole = self.native and not per_step and (builtin or isinstance(self.env, MujocoVecEnv))
            kind = (ResidentCollector if builtin and self.env.device != "cpu"  # the CUDA engine
                    else NativeCollector if whole else StepCollector)
            self._collectors[per_step] = kind(self, self._actor)
        return self._collectors[per_step]

    @torch.inference_mode()
    def _collect(self, callback: Callback | None) -> bool:
        """COLLECT: one rollout, then V(s_{t+1}) for GAE; False when a callback stopped training."""
        collector = self._collector(callback)
        if callback is not None:
            callback.on_rollout_start()
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
        """UPDATE: one iteration's policy/value update at remaining progress ``progress``; its metrics
        under SB3's ``train/...`` keys."""
        raise NotImplementedError

    # -- LOG ----------------------------------------------------------------------------------------
    def _log(self, metrics: dict[str, float], iterations: int, started: float, steps_at_start: int,
             log_interval: int | None) -> dict[str, float]:
        """The iteration's row under SB3's keys (time/, rollout/, train/) into the logger; returns it."""
        elapsed = max(time.perf_counter() - started, 1e-9)
        row = {"time/iterations": iterations, "time/fps": int((self.num_timesteps - steps_at_start) / elapsed),
               "time/time_elapsed": int(elapsed), "time/total_timesteps": self.num_timesteps}
        if self.episode_returns:
            row["rollout/ep_rew_mean"] = float(np.mean(self.episode_returns))
            row["rollout/ep_len_mean"] = float(np.mean(self.episode_lengths))
        r = self.rollout
        row.update(metrics)
        row["train/explained_variance"] = _explained_variance(r.values, r.returns)
        if isinstance(self.policy, ActorCritic) and self.policy.log_std is not None:
            row["train/std"] = float(torch.exp(self.policy.log_std.detach()).mean())
        if not self.reducer.local:
            distributed.reduce_row(self.reducer, row, self.episode_returns, self.episode_lengths)
        if log_interval is not None and iterations % log_interval == 0:
            for key, value in row.items():
                self.logger.record(key, value, exclude="tensorboard" if key == "train/n_updates" else None)
            self.logger.dump(step=self.num_timesteps)
        return row

    def _configure_logger(self, tb_log_name: str, reset_num_timesteps: bool) -> None:
        """SB3's outputs for this learn() call (unless ``set_logger`` gave one): the metric table on stdout
        when verbose >= 1, TensorBoard into ``<tensorboard_log>/<tb_log_name>_<k>``; plus fastppo's CSV in
        ``log_dir``."""
        if self._custom_logger:
            return
        config, outputs, folder = self.config, [], None
        if not distributed.is_main(self):  # rank 0 writes; the others' loggers record nothing to disk
            self.logger.close()
            self.logger = Logger()
            return
        if config.verbose >= 1:
            outputs.append(make_output_format("stdout", None))
        if config.tensorboard_log is not None:
            folder = run_folder(config.tensorboard_log, tb_log_name, reset_num_timesteps)
            outputs.append(make_output_format("tensorboard", folder))
        if config.log_dir is not None:
            outputs.append(make_output_format("csv", config.log_dir))
        self.logger.close()
        self.logger = Logger(folder or config.log_dir, outputs)

    # -- the loop -----------------------------------------------------------------------------------
    def learn(self, total_timesteps: int, callback=None, log_interval: int | None = 1, tb_log_name: str | None = None,
              reset_num_timesteps: bool = True, progress_bar: bool = False):
        """Train for ``total_timesteps`` env steps, as SB3's ``learn``.

        Runs whole iterations of ``n_steps * num_envs`` steps, so it may do up to one iteration's worth
        more. ``reset_num_timesteps=True`` (SB3's default) starts the count, the schedules' progress and
        the episodes afresh (the envs are reset; the seed applies to the very first reset only);
        ``False`` continues them: ``total_timesteps`` more steps, schedules annealed over the whole.
        ``callback``: see :mod:`fastppo.algos.callbacks` (fastppo's, SB3's, functions, lists).
        ``log_interval``: write the logger's row every this many iterations (None: never).
        ``tb_log_name``: the TensorBoard run folder's name (default: the class name, as SB3's).
        ``progress_bar``: a one-line bar on stderr. Returns ``self``.

        Ctrl-C (in the main thread) ends training after the running iteration and then raises
        :class:`TrainingInterrupted` (a KeyboardInterrupt): the model is as that iteration left it, so
        saving it and calling ``learn(remaining, reset_num_timesteps=False)`` continues exactly as an
        uninterrupted run would. A second Ctrl-C interrupts at once.
        """
        check_int(total_timesteps, "total_timesteps", 1)
        if log_interval is not None:
            check_int(log_interval, "log_interval", 1)
        if self.env is None:
            raise ValueError("this model has no env (it was loaded without one): call set_env(env) before learn()")
        callback = as_callback(callback)
        if reset_num_timesteps:
            self.num_timesteps = 0
            self.episode_returns.clear()
            self.episode_lengths.clear()
            self._last_obs = None
        self._total_timesteps = total_timesteps + (0 if reset_num_timesteps else self.num_timesteps)
        self._configure_logger(tb_log_name or type(self).__name__, reset_num_timesteps)
        # data-parallel: the normalisers' statistics are identical on every rank here; each rank's updates
        # from now on (the reset's observations included) are merged at each rollout's end
        stats = [n.rms for n in (self.obs_normalizer, self.reward_scaler) if n is not None]
        merge = StatsMerge(self.reducer, stats) if stats and not self.reducer.local else None
        if self._last_obs is None:
            self._reset_envs()
        started, steps_at_start, iterations = time.perf_counter(), self.num_timesteps, 0
        if callback is not None:
            callback.init(self)
            callback.update_locals({"self": self, "total_timesteps": self._total_timesteps, "callback": callback,
                                    "log_interval": log_interval, "tb_log_name": tb_log_name,
                                    "reset_num_timesteps": reset_num_timesteps, "progress_bar": progress_bar})
            callback.on_training_start()
        main, reducer = distributed.is_main(self), self.reducer
        bar = ProgressBar(self._total_timesteps, self.num_timesteps) if progress_bar and main else None
        stop = False
        with self.torch_thread_scope(), InterruptAtIterationEnd() as interrupt:
            try:
                while self.num_timesteps < self._total_timesteps and not stop:
                    self.policy.train()
                    collected = self._collect(callback)
                    if merge is not None:
                        merge.merge()
                    if reducer.any(not collected):  # every rank stops where any callback asked
                        break
                    if callback is not None:
                        callback.on_rollout_end()
                    # SB3's timing: the schedules see the remaining progress after this rollout (0 at the end;
                    # held at 0 when the last iteration runs past the budget, where SB3's goes negative).
                    progress = max(0.0, 1.0 - self.num_timesteps / self._total_timesteps)
                    self._advantages()
                    metrics = self._update(progress)
                    self.iteration += 1
                    iterations += 1
                    row = self._log(metrics, iterations, started, steps_at_start, log_interval)
                    if bar is not None:
                        bar.update(self.num_timesteps, row.get("rollout/ep_rew_mean"))
                    wants_stop = callback is not None and not callback.on_iteration_end(row)
                    stop = reducer.any(wants_stop or interrupt.requested)  # a callback's stop or Ctrl-C, any rank
            finally:
                if bar is not None:
                    bar.update(self.num_timesteps, _mean(self.episode_returns) if self.episode_returns else None, True)
                    bar.close()
                if callback is not None:
                    callback.on_training_end()
        if reducer.any(interrupt.requested):
            raise TrainingInterrupted(
                f"training interrupted after iteration {self.iteration} (timestep {self.num_timesteps:,}); the model "
                f"is consistent: save() it, and learn({self._total_timesteps - self.num_timesteps}, "
                f"reset_num_timesteps=False) to finish as if never interrupted")
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

def _mean(values) -> float:
    return float(np.mean(values)) if len(values) else float("nan")


def _explained_variance(values: torch.Tensor, returns: torch.Tensor) -> float:
    var = returns.var()
    return float("nan") if var == 0 else float(1 - (returns - values).var() / var)
