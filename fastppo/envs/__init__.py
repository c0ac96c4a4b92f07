"""Vector environments: gymnasium's classic-control suite in native code, user envs compiled with
Numba, and gymnasium's own vector envs for everything else, all as :class:`gymnasium.vector.VectorEnv`
in ``SAME_STEP`` autoreset mode with RecordEpisodeStatistics-style ``"episode"`` infos. Stable-Baselines3's
vector envs are adapted to the same contract by :class:`SB3VecEnv` (by protocol; no SB3 import).

The Numba pieces (:func:`register_numba_env`, :func:`uniform`, :class:`NumbaVecEnv`) import numba on
first use, not with fastppo."""

from fastppo.envs.builtin import BUILTIN_SPACES, BuiltinVecEnv
from fastppo.envs.make import ENV_BACKENDS, as_vector_env, make_vec_env, observation_space
from fastppo.envs.sb3_vec import SB3VecEnv, SB3View, find_vec_normalize, is_sb3_vec_env, sb3_view_class, to_sb3_infos

__all__ = ["BUILTIN_SPACES", "ENV_BACKENDS", "BuiltinVecEnv", "as_vector_env", "NumbaVecEnv", "SB3VecEnv",
           "SB3View", "find_vec_normalize", "is_sb3_vec_env", "sb3_view_class", "to_sb3_infos", "make_vec_env",
           "observation_space", "register_numba_env", "uniform"]


def __getattr__(name):
    if name in ("NumbaVecEnv", "register_numba_env", "uniform"):
        from fastppo.envs import numba_env

        return getattr(numba_env, name)
    raise AttributeError(f"module 'fastppo.envs' has no attribute {name!r}")
