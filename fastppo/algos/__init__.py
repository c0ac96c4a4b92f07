"""The algorithms: PPO (clipped and adaptive-KL) and TRPO / NPG on one shared rollout/advantage path."""

from fastppo.algos.base import read_checkpoint
from fastppo.algos.callbacks import Callback, CallbackList, EvalCallback
from fastppo.algos.ppo import PPO
from fastppo.algos.trpo import TRPO

ALGORITHMS = {PPO.algo: PPO, TRPO.algo: TRPO}

__all__ = ["PPO", "TRPO", "Callback", "CallbackList", "EvalCallback", "load"]


def load(path, env=None, **overrides):
    """Any fastppo model saved with ``save``, as the algorithm class it was trained with."""
    ckpt = read_checkpoint(path)
    if ckpt["algo"] not in ALGORITHMS:
        raise ValueError(f"checkpoint holds an unknown algorithm {ckpt['algo']!r}")
    return ALGORITHMS[ckpt["algo"]]._from_checkpoint(ckpt, env, overrides)
