"""Running statistics for observation normalisation and reward scaling (saved with the model)."""

from __future__ import annotations

import numpy as np


class RunningMeanStd:
    """Mean and variance of a stream of batches (Chan et al.'s parallel update), in float64.

    The native rollout (csrc/train/normalize.h) runs the same update on ``mean``, ``var`` and
    ``count_array`` (the count, as a float64 array of one element) in place."""

    def __init__(self, shape: tuple[int, ...] = ()):
        self.mean = np.zeros(shape, np.float64)
        self.var = np.ones(shape, np.float64)
        self.count_array = np.full(1, 1e-4)  # as SB3: avoids dividing by zero before the first batch

    @property
    def count(self) -> float:
        return float(self.count_array[0])

    @count.setter
    def count(self, value: float) -> None:
        self.count_array[0] = value

    def update(self, batch: np.ndarray) -> None:
        batch = np.asarray(batch, np.float64)  # float32 observations: batch statistics in float64 too
        b_count = batch.shape[0]
        # batch.mean(0) and batch.var(0) in numpy's own operations, without their Python wrappers (which
        # were most of a small batch's cost): the same sums and divisions, so the same numbers
        b_mean = np.add.reduce(batch, 0, keepdims=True) / b_count
        deviations = batch - b_mean
        b_var = np.add.reduce(np.multiply(deviations, deviations, out=deviations), 0) / b_count
        b_mean = b_mean[0]
        delta = b_mean - self.mean
        total = self.count + b_count
        self.mean = self.mean + delta * b_count / total
        self.var = (self.var * self.count + b_var * b_count + delta**2 * self.count * b_count / total) / total
        self.count = total

    def state_dict(self) -> dict:
        return {"mean": self.mean.copy(), "var": self.var.copy(), "count": self.count}

    def load_state_dict(self, state: dict) -> None:
        self.mean, self.var, self.count = np.array(state["mean"]), np.array(state["var"]), float(state["count"])


class ObsNormalizer:
    """(obs - mean) / std, clipped, with statistics updated from training rollouts only."""

    def __init__(self, dim: int, clip: float = 10.0, eps: float = 1e-8):
        self.rms, self.clip, self.eps = RunningMeanStd((dim,)), clip, eps

    def native_state(self) -> dict:
        """The state as the native rollout takes it (csrc/train/normalize.h): these very arrays, which it
        updates in place (fetched per call: ``update`` replaces ``mean`` and ``var``)."""
        return {"mean": self.rms.mean, "var": self.rms.var, "count": self.rms.count_array, "clip": self.clip,
                "eps": self.eps}

    def __call__(self, obs: np.ndarray, update: bool) -> np.ndarray:
        if update:
            self.rms.update(obs)
        out = (obs - self.rms.mean) / np.sqrt(self.rms.var + self.eps)
        return np.clip(out, -self.clip, self.clip, out=out).astype(np.float32, copy=False)


class RewardScaler:
    """Divides rewards by the running std of the discounted return (SB3's VecNormalize), clipped."""

    def __init__(self, num_envs: int, gamma: float, clip: float = 10.0, eps: float = 1e-8):
        self.rms, self.gamma, self.clip, self.eps = RunningMeanStd(), gamma, clip, eps
        self.returns = np.zeros(num_envs, np.float64)

    def __call__(self, rewards: np.ndarray, done: np.ndarray) -> np.ndarray:
        self.returns = self.returns * self.gamma + rewards
        self.rms.update(self.returns)
        self.returns[done] = 0.0
        return np.clip(rewards / np.sqrt(self.rms.var + self.eps), -self.clip, self.clip)

    def native_state(self) -> dict:
        """As :meth:`ObsNormalizer.native_state` (the scalar statistics as views of shape (1,))."""
        return {"mean": self.rms.mean.reshape(1), "var": self.rms.var.reshape(1), "count": self.rms.count_array,
                "returns": self.returns, "gamma": self.gamma, "clip": self.clip, "eps": self.eps}

    def state_dict(self) -> dict:
        return {"rms": self.rms.state_dict(), "returns": self.returns.copy()}

    def load_state_dict(self, state: dict) -> None:
        self.rms.load_state_dict(state["rms"])
        self.returns = np.array(state["returns"])
