"""fastppo: a fast, correct on-policy RL trainer for PyTorch users.

    model = fastppo.PPO("MlpPolicy", "CartPole-v1", **fastppo.presets.get("CartPole-v1"), seed=0)
    model.learn(100_000)
    print(fastppo.evaluate_policy(model, "CartPole-v1"))

Algorithms: :class:`PPO` (clipped surrogate or adaptive KL penalty), :class:`TRPO` (and the natural
policy gradient). Hot paths, each with a pure-PyTorch (or gymnasium) reference: :func:`gae`,
:func:`ppo_loss`, :func:`make_vec_env`. :func:`backends` says which native backends run here.
"""

from fastppo import _backend
from fastppo._backend import BackendStatus, BackendUnavailableError, backends
from fastppo.envs import make_vec_env
from fastppo.ops import gae, ppo_loss
from fastppo.algos import (PPO, TRPO, Callback, CallbackList, CheckpointCallback, EvalCallback, EveryNTimesteps, PPOConfig,
                           StopTrainingOnNoModelImprovement, StopTrainingOnRewardThreshold, TRPOConfig, load)
from fastppo.evaluation import evaluate_policy
from fastppo import presets
from fastppo._version import __version__


__all__ = ["PPO", "PPOConfig", "TRPO", "TRPOConfig", "__version__", "BackendStatus", "BackendUnavailableError", "Callback",
           "CallbackList", "CheckpointCallback", "EvalCallback", "EveryNTimesteps", "StopTrainingOnNoModelImprovement",
           "StopTrainingOnRewardThreshold", "backends", "evaluate_policy", "gae", "get_num_threads", "load", "make_vec_env", "ppo_loss", "presets",
           "set_num_threads"]


def get_num_threads() -> int:
    """Threads the native CPU kernels use (1 when the extension is missing)."""
    return _backend.num_threads()


def set_num_threads(n: int) -> None:
    """Set the native CPU kernels' thread count; ``n < 1`` restores the default (FASTPPO_NUM_THREADS or
    the machine's core count). Call it between ops, not while one runs in another thread."""
    from fastppo._backend import _core

    if not isinstance(n, int):
        raise TypeError(f"n must be an int, got {type(n).__name__}")
    if _core:
        _core.set_num_threads(n)
