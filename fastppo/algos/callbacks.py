"""Hooks into training: override what you need; returning False from on_step stops training."""

from __future__ import annotations

import os
from typing import TYPE_CHECKING

import numpy as np

if TYPE_CHECKING:
    from fastppo.algos.base import OnPolicyAlgorithm


class Callback:
    """Base class. ``self.model`` is the algorithm, set before training starts."""

    model: OnPolicyAlgorithm

    def init(self, model: OnPolicyAlgorithm) -> None:
        self.model = model

    def on_training_start(self) -> None:
        """Once per learn() call, before the first rollout."""

    def on_step(self) -> bool:
        """After every vector step of the rollout (``model.num_timesteps`` already counts it)."""
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


class CallbackList(Callback):
    def __init__(self, callbacks: list[Callback]):
        self.callbacks = list(callbacks)

    def init(self, model):
        super().init(model)
        for c in self.callbacks:
            c.init(model)

    def on_training_start(self):
        for c in self.callbacks:
            c.on_training_start()

    def on_step(self):
        return all([c.on_step() for c in self.callbacks])

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


class EvalCallback(Callback):
    """Evaluates the policy every ``eval_freq`` timesteps (at iteration ends) and keeps the best model.

    Args:
        eval_env: env id, gymnasium VectorEnv or Env used only for evaluation.
        eval_freq: timesteps between evaluations.
        n_eval_episodes: episodes per evaluation.
        best_model_save_path: directory for ``best_model.pt`` (saved whenever the mean return improves).
        deterministic: evaluate the policy's mode rather than samples.
    """

    def __init__(self, eval_env, eval_freq: int = 10_000, n_eval_episodes: int = 10,
                 best_model_save_path: str | None = None, deterministic: bool = True, seed: int | None = 0):
        if eval_freq < 1:
            raise ValueError(f"eval_freq must be >= 1, got {eval_freq}")
        self.eval_env, self.eval_freq, self.n_eval_episodes = eval_env, eval_freq, n_eval_episodes
        self.best_model_save_path, self.deterministic, self.seed = best_model_save_path, deterministic, seed
        self.best_mean_return = -np.inf
        self.evaluations: list[tuple[int, float, float]] = []  # (timesteps, mean, std)
        self._next_eval = None

    def on_training_start(self):
        if self._next_eval is None:
            self._next_eval = self.model.num_timesteps + self.eval_freq

    def on_iteration_end(self, metrics):
        if self.model.num_timesteps < self._next_eval:
            return True
        while self._next_eval <= self.model.num_timesteps:
            self._next_eval += self.eval_freq
        from fastppo.evaluation import evaluate_policy

        mean, std = evaluate_policy(self.model, self.eval_env, self.n_eval_episodes, self.deterministic, seed=self.seed)
        self.evaluations.append((self.model.num_timesteps, mean, std))
        if mean > self.best_mean_return:
            self.best_mean_return = mean
            if self.best_model_save_path is not None:
                os.makedirs(self.best_model_save_path, exist_ok=True)
                self.model.save(os.path.join(self.best_model_save_path, "best_model.pt"))
        return True
