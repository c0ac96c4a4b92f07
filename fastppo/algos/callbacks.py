"""Hooks into training.

``learn(callback=...)`` takes a :class:`Callback`, a list, a Stable-Baselines3 callback (any object with
SB3's ``init_callback``/``on_step`` protocol: ``BaseCallback`` subclasses, ``CheckpointCallback``,
``EvalCallback``, ``CallbackList``, ...) or a function ``f(locals, globals) -> bool`` as SB3 takes it;
:func:`as_callback` turns each into a :class:`Callback`. SB3's callbacks get what they read (``model``,
``num_timesteps``, ``n_calls``, ``locals``, ``training_env``, ``logger``) and run at every step, as in SB3,
which keeps the rollout in Python (the step loop). fastppo's own callbacks below (checkpoints,
evaluation, early stopping) run at iteration ends, so that a built-in env's rollout stays native; they
count ``save_freq``/``eval_freq`` in SB3's unit, vector steps (calls), and act at the end of the
iteration in which the count is reached.
"""

from __future__ import annotations

import os
from typing import TYPE_CHECKING, Any

import numpy as np

from fastppo.algos.config import check_int

if TYPE_CHECKING:
    from fastppo.algos.base import OnPolicyAlgorithm

# SB3's hook names: a fastppo.Callback that defines one would never be called there (fastppo's are public).
_SB3_HOOKS = {"_on_step": "on_step", "_on_training_start": "on_training_start", "_on_rollout_start": "on_rollout_start",
              "_on_rollout_end": "on_rollout_end", "_on_training_end": "on_training_end", "_init_callback": "init",
              "_on_event": "on_event"}


class Callback:
    """Base class: override what you need. ``self.model`` is the algorithm (set by ``init``),
    ``self.n_calls`` the vector steps seen so far, ``self.locals`` what the trainer shares (at training
    start: ``total_timesteps`` and the ``learn`` arguments; per step, for callbacks that ask with
    ``needs_locals = True``: SB3's rollout locals, see :class:`SB3Callback`)."""

    needs_locals = False

    def __init__(self):
        self.n_calls = 0
        self.locals: dict[str, Any] = {}
        self.parent: Callback | None = None

    def __init_subclass__(cls, **kwargs):
        super().__init_subclass__(**kwargs)
        for sb3_name, name in _SB3_HOOKS.items():
            if sb3_name in cls.__dict__:
                raise TypeError(f"{cls.__name__} defines {sb3_name}(), Stable-Baselines3's hook name: fastppo.Callback "
                                f"calls {name}() and would never call it. Rename it (or subclass SB3's BaseCallback, "
                                f"which fastppo also runs)")

    def init(self, model: OnPolicyAlgorithm) -> None:
        self.model = model
        self.__dict__.setdefault("n_calls", 0)  # subclasses that skip __init__ still count
        self.__dict__.setdefault("locals", {})

    @property
    def num_timesteps(self) -> int:
        return self.model.num_timesteps

    @property
    def logger(self):
        return self.model.logger

    def update_locals(self, locals_: dict[str, Any]) -> None:
        self.locals.update(locals_)

    def on_training_start(self) -> None:
        """Once per learn() call, before the first rollout."""

    def on_rollout_start(self) -> None:
        """Before each rollout."""

    def on_step(self) -> bool:
        """After every vector step of the rollout (``model.num_timesteps`` and ``n_calls`` already count
        it); return False to stop training."""
        return True

    def per_step(self) -> bool:
        """Whether this callback does anything per step (overrides ``on_step``). When none does, a
        built-in env's rollout runs natively without returning to Python between steps."""
        return type(self).on_step is not Callback.on_step

    def on_rollout_end(self) -> None:
        """After each rollout is collected, before its update."""

    def on_iteration_end(self, metrics: dict[str, float]) -> bool:
        """After each update, with the iteration's logged metrics; return False to stop training."""
        return True

    def on_training_end(self) -> None:
        """Once per learn() call."""

    def on_event(self) -> bool:
        """For a callback triggered by another (``callback_on_new_best``, :class:`EveryNTimesteps`):
        the event happened; return False to stop training."""
        return True

    def _step(self) -> bool:
        """One vector step: count it, then call ``on_step`` (what the step loop calls)."""
        self.n_calls += 1
        return self.on_step()

    def _steps(self, n: int) -> None:
        """``n`` vector steps collected without calling back (the native rollout)."""
        self.n_calls += n


class CallbackList(Callback):
    """Several callbacks (any form :func:`as_callback` takes) called in order; training stops when one asks."""

    def __init__(self, callbacks: list):
        super().__init__()
        self.callbacks = [as_callback(c) for c in callbacks]
        self.needs_locals = any(c.needs_locals for c in self.callbacks)

    def init(self, model):
        super().init(model)
        for c in self.callbacks:
            c.init(model)

    def update_locals(self, locals_):
        for c in self.callbacks:
            c.update_locals(locals_)

    def on_training_start(self):
        for c in self.callbacks:
            c.on_training_start()

    def on_rollout_start(self):
        for c in self.callbacks:
            c.on_rollout_start()

    def on_step(self):
        return all([c._step() for c in self.callbacks])

    def _steps(self, n):
        super()._steps(n)
        for c in self.callbacks:
            c._steps(n)

    def per_step(self):
        return any(c.per_step() for c in self.callbacks)

    def on_rollout_end(self):
        for c in self.callbacks:
            c.on_rollout_end()

    def on_iteration_end(self, metrics):
        return all([c.on_iteration_end(metrics) for c in self.callbacks])

    def on_training_end(self):
        for c in self.callbacks:
            c.on_training_end()


class SB3Callback(Callback):
    """A Stable-Baselines3 callback, run by its protocol (``init_callback``, ``on_training_start(locals,
    globals)``, ``on_rollout_start``, ``update_locals``, ``on_step``, ``on_rollout_end``,
    ``on_training_end``). The per-step locals are SB3's rollout loop's: ``self`` (the model), ``env``,
    ``callback``, ``rollout_buffer`` (fastppo's Rollout), ``n_rollout_steps``, ``n_steps``, ``actions``,
    ``clipped_actions``, ``new_obs``, ``rewards`` (as the env gave them), ``dones``, ``infos`` (one dict
    per env, SB3's form: ``episode``, ``terminal_observation``, ``TimeLimit.truncated``)."""

    needs_locals = True

    def __init__(self, callback):
        super().__init__()
        self.callback = callback

    def init(self, model):
        super().init(model)
        self.callback.init_callback(model)

    def update_locals(self, locals_):
        super().update_locals(locals_)
        self.callback.update_locals(self.locals)

    def on_training_start(self):
        self.callback.on_training_start(self.locals, {})

    def on_rollout_start(self):
        self.callback.on_rollout_start()

    def on_step(self):
        return self.callback.on_step()

    def per_step(self):
        return True

    def on_rollout_end(self):
        self.callback.on_rollout_end()

    def on_training_end(self):
        self.callback.on_training_end()


class FunctionCallback(Callback):
    """``f(locals, globals)`` called after every step, as SB3 runs a function callback: training stops
    when it returns a false value (None included, as in SB3)."""

    needs_locals = True

    def __init__(self, function):
        super().__init__()
        self.function = function

    def on_step(self):
        return self.function(self.locals, {})


def as_callback(callback) -> Callback | None:
    """What ``learn(callback=...)`` takes, as one :class:`Callback` (None stays None)."""
    if callback is None or isinstance(callback, Callback):
        return callback
    if isinstance(callback, (list, tuple)):
        return CallbackList(callback)
    if callable(getattr(callback, "init_callback", None)) and callable(getattr(callback, "on_step", None)):
        return SB3Callback(callback)
    if callable(callback):
        return FunctionCallback(callback)
    raise TypeError(f"callback must be a fastppo.Callback, a Stable-Baselines3 callback, a function (locals, globals) "
                    f"-> bool, a list of them or None, got {type(callback).__name__}")


class _Periodic(Callback):
    """Acts at the end of each iteration in which ``n_calls`` reached a new multiple of ``freq``."""

    def __init__(self, freq: int, name: str):
        super().__init__()
        check_int(freq, f"{name} (vector steps)", 1)
        self.freq, self._done = int(freq), 0

    def _due(self) -> bool:
        due = self.n_calls // self.freq > self._done
        self._done = self.n_calls // self.freq
        return due


class CheckpointCallback(_Periodic):
    """Saves the model every ``save_freq`` vector steps as ``<save_path>/<name_prefix>_<timesteps>_steps.zip``
    (SB3's names). ``save_vecnormalize``: also an SB3 VecNormalize env's statistics
    (``<name_prefix>_vecnormalize_<timesteps>_steps.pkl``, its own format); fastppo's own normalisers are in
    the model file. ``save_replay_buffer`` exists for SB3's signature (on-policy: nothing to save)."""

    def __init__(self, save_freq: int, save_path: str, name_prefix: str = "rl_model", save_replay_buffer: bool = False,
                 save_vecnormalize: bool = False, verbose: int = 0):
        super().__init__(save_freq, "save_freq")
        self.save_path, self.name_prefix = save_path, name_prefix
        self.save_vecnormalize, self.verbose = save_vecnormalize, verbose

    def _path(self, kind: str, extension: str) -> str:
        return os.path.join(self.save_path, f"{self.name_prefix}_{kind}{self.num_timesteps}_steps.{extension}")

    def on_iteration_end(self, metrics):
        if self._due():
            path = self._path("", "zip")
            self.model.save(path)
            if self.verbose >= 2:
                print(f"Saving model checkpoint to {path}")
            vec_normalize = self.model.get_vec_normalize_env() if self.save_vecnormalize else None
            if vec_normalize is not None:
                vec_normalize.save(self._path("vecnormalize_", "pkl"))
        return True


class EvalCallback(_Periodic):
    """Evaluates the policy every ``eval_freq`` vector steps (SB3's unit), as SB3's EvalCallback: logs
    ``eval/mean_reward`` and ``eval/mean_ep_length``, appends to ``<log_path>/evaluations.npz``
    (``timesteps``, ``results``, ``ep_lengths``), saves ``<best_model_save_path>/best_model.zip`` on a new
    best mean, then calls ``callback_on_new_best.on_event()`` (and ``callback_after_eval.on_event()``
    after every evaluation); either returning False stops training. An SB3 VecNormalize training env's
    statistics are copied into the eval env's first, as SB3's ``sync_envs_normalization``.

    Args:
        eval_env: env id, gymnasium VectorEnv or Env, or SB3 VecEnv used only for evaluation.
    """

    def __init__(self, eval_env, callback_on_new_best: Callback | None = None, callback_after_eval: Callback | None = None,
                 n_eval_episodes: int = 5, eval_freq: int = 10_000, log_path: str | None = None,
                 best_model_save_path: str | None = None, deterministic: bool = True, render: bool = False,
                 verbose: int = 1, warn: bool = True):
        super().__init__(eval_freq, "eval_freq")
        self.eval_env, self.n_eval_episodes = eval_env, n_eval_episodes
        self.callback_on_new_best, self.callback_after_eval = callback_on_new_best, callback_after_eval
        for child in (callback_on_new_best, callback_after_eval):
            if child is not None:
                child.parent = self
        self.log_path = None if log_path is None else os.path.join(log_path, "evaluations")
        self.best_model_save_path, self.deterministic, self.render = best_model_save_path, deterministic, render
        self.verbose, self.warn = verbose, warn
        self.best_mean_reward, self.last_mean_reward = -np.inf, -np.inf
        self.evaluations_timesteps: list[int] = []
        self.evaluations_results: list[list[float]] = []
        self.evaluations_length: list[list[int]] = []

    def init(self, model):
        super().init(model)
        for child in (self.callback_on_new_best, self.callback_after_eval):
            if child is not None:
                child.init(model)

    def on_iteration_end(self, metrics):
        if not self._due():
            return True
        from fastppo.evaluation import evaluate_policy
        from fastppo.envs import find_vec_normalize

        train_norm, eval_norm = self.model.get_vec_normalize_env(), find_vec_normalize(self.eval_env)
        if train_norm is not None and eval_norm is not None:  # SB3's sync_envs_normalization
            eval_norm.obs_rms, eval_norm.ret_rms = train_norm.obs_rms.copy(), train_norm.ret_rms.copy()
        rewards, lengths = evaluate_policy(self.model, self.eval_env, self.n_eval_episodes, self.deterministic,
                                           render=self.render, return_episode_rewards=True, warn=self.warn)
        if self.log_path is not None:
            self.evaluations_timesteps.append(self.num_timesteps)
            self.evaluations_results.append(rewards)
            self.evaluations_length.append(lengths)
            os.makedirs(os.path.dirname(self.log_path), exist_ok=True)
            np.savez(self.log_path, timesteps=self.evaluations_timesteps, results=self.evaluations_results,
                     ep_lengths=self.evaluations_length)
        mean, std = float(np.mean(rewards)), float(np.std(rewards))
        self.last_mean_reward = mean
        if self.verbose >= 1:
            print(f"Eval num_timesteps={self.num_timesteps}, episode_reward={mean:.2f} +/- {std:.2f}")
            print(f"Episode length: {np.mean(lengths):.2f} +/- {np.std(lengths):.2f}")
        self.logger.record("eval/mean_reward", mean)
        self.logger.record("eval/mean_ep_length", float(np.mean(lengths)))
        self.logger.record("time/total_timesteps", self.num_timesteps, exclude="tensorboard")
        self.logger.dump(self.num_timesteps)
        keep_going = True
        if mean > self.best_mean_reward:
            if self.verbose >= 1:
                print("New best mean reward!")
            if self.best_model_save_path is not None:
                self.model.save(os.path.join(self.best_model_save_path, "best_model"))
            self.best_mean_reward = mean
            if self.callback_on_new_best is not None:
                keep_going = bool(self.callback_on_new_best.on_event())
        if self.callback_after_eval is not None:
            keep_going = bool(self.callback_after_eval.on_event()) and keep_going
        return keep_going


class StopTrainingOnRewardThreshold(Callback):
    """As ``EvalCallback(callback_on_new_best=...)``: stops training once the best mean evaluation return
    reaches ``reward_threshold``."""

    def __init__(self, reward_threshold: float, verbose: int = 0):
        super().__init__()
        self.reward_threshold, self.verbose = reward_threshold, verbose

    def on_event(self):
        if self.parent is None:
            raise ValueError("StopTrainingOnRewardThreshold must be EvalCallback's callback_on_new_best")
        keep_going = bool(self.parent.best_mean_reward < self.reward_threshold)
        if not keep_going and self.verbose >= 1:
            print(f"Stopping training because the mean reward {self.parent.best_mean_reward:.2f} is above the "
                  f"threshold {self.reward_threshold}")
        return keep_going


class StopTrainingOnNoModelImprovement(Callback):
    """As ``EvalCallback(callback_after_eval=...)``: stops training when ``max_no_improvement_evals``
    evaluations in a row (after the first ``min_evals``) brought no new best mean return."""

    def __init__(self, max_no_improvement_evals: int, min_evals: int = 0, verbose: int = 0):
        super().__init__()
        self.max_no_improvement_evals, self.min_evals, self.verbose = max_no_improvement_evals, min_evals, verbose
        self.last_best_mean_reward, self.no_improvement_evals, self._evals = -np.inf, 0, 0

    def on_event(self):
        if self.parent is None:
            raise ValueError("StopTrainingOnNoModelImprovement must be EvalCallback's callback_after_eval")
        self._evals += 1
        if self._evals > self.min_evals:
            improved = self.parent.best_mean_reward > self.last_best_mean_reward
            self.no_improvement_evals = 0 if improved else self.no_improvement_evals + 1
        self.last_best_mean_reward = self.parent.best_mean_reward
        keep_going = self.no_improvement_evals <= self.max_no_improvement_evals
        if not keep_going and self.verbose >= 1:
            print(f"Stopping training: no new best model in the last {self.no_improvement_evals} evaluations")
        return keep_going


class EveryNTimesteps(Callback):
    """Calls ``callback.on_event()`` at the end of each iteration that ends at least ``n_steps`` timesteps
    (all envs together, as SB3's EveryNTimesteps counts) after the last call."""

    def __init__(self, n_steps: int, callback: Callback):
        super().__init__()
        check_int(n_steps, "n_steps (timesteps)", 1)
        self.n_steps, self.callback, self._last = int(n_steps), callback, 0
        callback.parent = self

    def init(self, model):
        super().init(model)
        self.callback.init(model)

    def on_iteration_end(self, metrics):
        if self.num_timesteps - self._last >= self.n_steps:
            self._last = self.num_timesteps
            return bool(self.callback.on_event())
        return True
