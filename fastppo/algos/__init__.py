"""The algorithms: PPO (clipped and adaptive-KL) and TRPO / NPG on one shared collect / advantage /
update / log loop, configured by typed dataclasses (:mod:`fastppo.algos.config`)."""

from fastppo.algos import checkpoint
from fastppo.algos.callbacks import (Callback, CallbackList, CheckpointCallback, EvalCallback, EveryNTimesteps,
                                     StopTrainingOnNoModelImprovement, StopTrainingOnRewardThreshold)
from fastppo.algos.config import PPOConfig, TRPOConfig
from fastppo.algos.ppo import PPO
from fastppo.algos.trpo import TRPO

ALGORITHMS = {PPO.algo: PPO, TRPO.algo: TRPO}

__all__ = ["PPO", "TRPO", "Callback", "CallbackList", "CheckpointCallback", "EvalCallback", "EveryNTimesteps", "PPOConfig",
           "StopTrainingOnNoModelImprovement", "StopTrainingOnRewardThreshold", "TRPOConfig", "load"]


def load(path, env=None, *, policy=None, trust_pickle: bool = False, **overrides):
    """Any fastppo model saved with ``save``, as the algorithm class it was trained with (arguments as
    :meth:`PPO.load`'s)."""
    ckpt = checkpoint.read(path, trust_pickle)
    if ckpt["algo"] not in ALGORITHMS:
        raise ValueError(f"checkpoint holds an unknown algorithm {ckpt['algo']!r}")
    return checkpoint.restore(ALGORITHMS[ckpt["algo"]], ckpt, env, overrides, policy, path)
