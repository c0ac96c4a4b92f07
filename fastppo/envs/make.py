"""make_vec_env: the one way to get a vector env in fastppo."""

from __future__ import annotations

import numbers
import sys

from fastppo import _backend
from fastppo.envs.atari import atari_game
from fastppo.envs.builtin import BUILTIN_SPACES
from fastppo.envs.minatar import minatar_game
from fastppo.envs.mujoco import MUJOCO_TASKS

__all__ = ["ENV_BACKENDS", "as_vector_env", "make_vec_env", "observation_space"]

ENV_BACKENDS = ("auto", "cpp", "cuda", "numba", "mujoco", "atari", "gymnasium", "vector_entry_point", "sync", "async")


def make_vec_env(env_id: str, num_envs: int, *, seed: int | None = None, device: str = "cpu",
                 backend: str = "auto", fast_math: bool = False, copy: bool = True, env_kwargs: dict | None = None):
    """``num_envs`` copies of ``env_id`` as one :class:`gymnasium.vector.VectorEnv` in SAME_STEP autoreset mode.

    Built-in ids (``CartPole-v1``, ``Acrobot-v1``, ``MountainCar-v0``, ``MountainCarContinuous-v0``,
    ``Pendulum-v1``) step natively with gymnasium's dynamics; gymnasium's MuJoCo v5 suite (``HalfCheetah-v5``,
    ``Hopper-v5``, ...: :data:`fastppo.envs.mujoco.MUJOCO_TASKS`) steps on ``mujoco.batch`` when the
    ``mujoco`` extra is installed (:class:`fastppo.envs.mujoco.MujocoVecEnv`; else on gymnasium's envs, and
    ``fastppo.backends()["mujoco"]`` says why); Atari ids (``ALE/<Game>-v5``, ``<Game>NoFrameskip-v4``) step
    on ale-py's native vector env with CleanRL's preprocessing (:class:`fastppo.envs.atari.AtariVecEnv`; on
    gymnasium's preprocessing wrappers where ale-py is older than 0.11);
    MinAtar's ids (``MinAtar/<Game>-v1``, the ``minatar`` extra; :mod:`fastppo.envs.minatar`) on gymnasium's
    vector env; ids registered with
    :func:`fastppo.envs.register_numba_env` run as compiled Numba loops; any other id registered with
    gymnasium runs on gymnasium's own vector envs. All report finished episodes in
    ``infos["episode"]`` like :class:`gymnasium.wrappers.vector.RecordEpisodeStatistics` and the true
    final observations in ``infos["final_obs"]`` (see :class:`fastppo.envs.BuiltinVecEnv`). What
    ``step``/``reset`` return belongs to the caller, as with gymnasium's vector envs (``copy``). After
    ``close()`` every call but ``close`` raises.

    Args:
        env_id: a gymnasium-style id.
        num_envs: number of envs, >= 1.
        seed: seed of the first ``reset()`` called without one (None: a random seed).
        device: "cpu" (numpy arrays) or a CUDA device such as "cuda" / "cuda:1" (built-in envs only;
            observations and actions are CUDA torch tensors).
        backend: "auto" (built-in native, else MuJoCo's batch, else ale-py's Atari engine, else Numba, else
            gymnasium); "cpp" / "cuda" (the native built-in envs, on the CPU / GPU); "mujoco"; "atari"; "numba";
            "gymnasium" (its vectorised entry
            point when it supports SAME_STEP, else sync), "vector_entry_point", "sync" or "async" (gymnasium's
            own vector envs, for any id it knows, built-in ones included). ``FASTPPO_BACKEND`` does not apply.
        fast_math: trade gymnasium's bit-exact dynamics for speed where libm's scalar ``sin``/``cos``
            bound it: vectorised polynomials within 1 ulp of them instead (built-in CartPole-v1 on the
            CPU only; see :class:`fastppo.envs.BuiltinVecEnv`). Off by default.
        copy: True (default, gymnasium's ``copy``): every array ``step``/``reset`` return (infos included)
            is a fresh one, the caller's to keep. False: views of the env's buffers, overwritten by the
            next call: for loops that consume or copy each result first (fastppo's trainer does), saving
            the copies (bench/RESULTS.md, envs, measures them).
        env_kwargs: the env's constructor options, as ``gymnasium.make`` takes them (the MuJoCo envs'
            ``forward_reward_weight``, ``ctrl_cost_weight``, ...; checked by name and type; the Atari envs'
            :data:`fastppo.envs.atari.OPTIONS`); not for the
            built-in classic-control envs or Numba envs, which have none.

    Raises:
        TypeError / ValueError: a bad argument (named in the message), or an id nothing knows.
        fastppo.BackendUnavailableError: a native backend was asked for but cannot run here.
    """
    if not isinstance(env_id, str):
        raise TypeError(f"env_id must be a str, got {type(env_id).__name__}")
    if isinstance(num_envs, bool) or not isinstance(num_envs, numbers.Integral):
        raise TypeError(f"num_envs must be an int, got {type(num_envs).__name__}")
    if num_envs < 1:
        raise ValueError(f"num_envs must be >= 1, got {num_envs}")
    if backend not in ENV_BACKENDS:
        raise ValueError(f"backend must be one of {', '.join(map(repr, ENV_BACKENDS))}; got {backend!r}")
    if not isinstance(device, str) or not (device == "cpu" or device == "cuda" or device.startswith("cuda:")):
        raise ValueError(f"device must be 'cpu', 'cuda' or 'cuda:<index>', got {device!r}")
    for name, flag in (("fast_math", fast_math), ("copy", copy)):
        if not isinstance(flag, bool):
            raise TypeError(f"{name} must be a bool, got {type(flag).__name__}")
    on_cuda = device != "cpu"
    numba_module = sys.modules.get("fastppo.envs.numba_env")  # nothing is registered if it was never imported
    builtin = env_id in BUILTIN_SPACES
    numba_env = numba_module is not None and env_id in numba_module.registered_numba_envs()
    mujoco = env_id in MUJOCO_TASKS
    atari = atari_game(env_id) is not None
    if env_kwargs is None:
        env_kwargs = {}
    if not isinstance(env_kwargs, dict):
        raise TypeError(f"env_kwargs must be a dict or None, got {type(env_kwargs).__name__}")
    if backend == "auto":
        backend = (("cuda" if on_cuda else "cpp") if builtin else "numba" if numba_env
                   else "mujoco" if mujoco and _backend._unavailable("mujoco") is None
                   else "atari" if atari and _has_ale_py() else "gymnasium")
    if env_kwargs and backend in ("cpp", "cuda", "numba"):
        raise ValueError(f"env_kwargs: {env_id} on backend {backend!r} takes no constructor options, got "
                         f"{sorted(env_kwargs)}")
    if on_cuda and backend != "cuda":
        raise ValueError(f"device {device!r} needs backend 'cuda' (built-in envs only), got backend {backend!r}")
    if backend == "cuda" and not on_cuda:
        raise ValueError(f"backend 'cuda' needs a CUDA device, got device {device!r}")
    if fast_math and backend != "cpp":  # the native batch checks that the env has a fast-math step
        raise ValueError(f"fast_math=True is for the built-in envs on the CPU (backend 'cpp'), got backend "
                         f"{backend!r} for env_id {env_id!r}")
    if backend in ("cpp", "cuda"):
        if not builtin:
            raise ValueError(f"env_id {env_id!r} is not built in; backend {backend!r} runs only "
                             f"{', '.join(BUILTIN_SPACES)}")
        why = _backend._unavailable(backend)
        if why is not None:
            raise _backend.BackendUnavailableError(f"backend {backend!r} is unavailable: {why}")
        from fastppo.envs.builtin import BuiltinVecEnv

        return BuiltinVecEnv(env_id, num_envs, seed=seed, device=device, fast_math=fast_math, copy=copy)
    if backend == "mujoco":
        if not mujoco:
            raise ValueError(f"env_id {env_id!r} is not one of the MuJoCo envs backend 'mujoco' runs: "
                             f"{', '.join(MUJOCO_TASKS)}")
        why = _backend._unavailable("mujoco")
        if why is not None:
            raise _backend.BackendUnavailableError(f"backend 'mujoco' is unavailable: {why}")
        from fastppo.envs.mujoco.vec_env import MujocoVecEnv

        return MujocoVecEnv(env_id, num_envs, seed=seed, copy=copy, **env_kwargs)
    if backend == "atari":
        if not atari:
            raise ValueError(f"env_id {env_id!r} is not an Atari id ('ALE/<Game>-v5' or '<Game>NoFrameskip-v4')")
        if not _has_ale_py():  # without its vector env (ale-py < 0.11) AtariVecEnv runs on gymnasium's wrappers
            raise _backend.BackendUnavailableError(f"backend 'atari' is unavailable: {_backend._unavailable('atari')}")
        from fastppo.envs.atari import AtariVecEnv

        return AtariVecEnv(env_id, num_envs, seed=seed, copy=copy, **env_kwargs)
    if backend == "numba":
        if not numba_env:
            raise ValueError(f"env_id {env_id!r} is not a registered Numba env (see fastppo.envs.register_numba_env)")
        from fastppo.envs.numba_env import NumbaVecEnv

        return NumbaVecEnv(env_id, num_envs, seed=seed, copy=copy)
    from fastppo.envs.fallback import make_gymnasium_vec_env

    if minatar_game(env_id):
        from fastppo.envs.minatar import register

        register()
    return make_gymnasium_vec_env(env_id, num_envs, seed=seed, mode=backend, copy=copy, env_kwargs=env_kwargs)


def as_vector_env(env, num_envs: int, *, seed: int | None = None, backend: str = "auto", device: str = "cpu"):
    """What the trainers accept as ``env``, as ``(vector env, env id or None)``.

    ``device``: where a built-in env made from its id runs ("cpu", or a CUDA device: the CUDA engine).

    An id goes through :func:`make_vec_env`; a Stable-Baselines3 VecEnv is adapted by
    :class:`fastppo.envs.SB3VecEnv` (it brings its own env count: ``num_envs`` does not apply); a
    gymnasium VectorEnv must autoreset in SAME_STEP mode; a gymnasium Env becomes a one-env sync vector
    env. Envs that do not already report finished episodes in ``infos["episode"]`` are wrapped so that
    they do (gymnasium's RecordEpisodeStatistics).
    ``backend`` is a trainer's: "torch" (every hot path on its reference) steps envs on gymnasium's own.
    An env made here from an id returns its buffers (``copy=False``): the trainer reads each result
    before the next step and never hands them out.
    """
    import gymnasium as gym
    from gymnasium.vector import AutoresetMode, SyncVectorEnv, VectorEnv
    from gymnasium.wrappers.vector import RecordEpisodeStatistics

    from fastppo.envs._buffered import BufferedVecEnv
    from fastppo.envs.atari import AtariVecEnv
    from fastppo.envs.fallback import GymnasiumVecEnv
    from fastppo.envs.mujoco.vec_env import MujocoVecEnv
    from fastppo.envs.sb3_vec import SB3VecEnv, SB3View, is_sb3_vec_env

    if isinstance(env, str):
        return make_vec_env(env, num_envs, seed=seed, backend="gymnasium" if backend == "torch" else "auto",
                            copy=False, device=device), env
    if isinstance(env, SB3View):  # a model's get_env(): the fastppo env it shows
        return env.env, None
    if is_sb3_vec_env(env):
        return SB3VecEnv(env), None
    if isinstance(env, gym.Env):
        env = SyncVectorEnv([lambda: env], autoreset_mode=AutoresetMode.SAME_STEP)
    if not isinstance(env, VectorEnv):
        raise TypeError(f"env must be an env id, a gymnasium VectorEnv, a gymnasium Env or a Stable-Baselines3 "
                        f"VecEnv, got {type(env).__name__}")
    mode = env.metadata.get("autoreset_mode")
    if mode != AutoresetMode.SAME_STEP:
        raise ValueError(f"env must autoreset in gymnasium's SAME_STEP mode (so that the true final observation "
                         f"is there to bootstrap from), got {mode}; create it with gymnasium.make_vec(..., "
                         f"vector_kwargs={{'autoreset_mode': AutoresetMode.SAME_STEP}}) or fastppo.make_vec_env")
    if (not isinstance(env, (AtariVecEnv, BufferedVecEnv, GymnasiumVecEnv, MujocoVecEnv, SB3VecEnv))
            and not _records_episodes(env)):
        env = RecordEpisodeStatistics(env)
    return env, None


def observation_space(env):
    """One env's observation space of anything :func:`as_vector_env` accepts (an id other than the built-in
    and MuJoCo ones is made once, with one env, to read it)."""
    if isinstance(env, str):
        if env in BUILTIN_SPACES:
            return BUILTIN_SPACES[env][0]
        probe = make_vec_env(env, 1)
        space = probe.single_observation_space
        probe.close()
        return space
    single = getattr(env, "single_observation_space", None)  # a VectorEnv's; an Env's or SB3 VecEnv's otherwise
    return env.observation_space if single is None else single


def _has_ale_py() -> bool:
    import importlib.util

    return importlib.util.find_spec("ale_py") is not None


def _records_episodes(env) -> bool:
    from gymnasium.wrappers.vector import RecordEpisodeStatistics

    while env is not None:
        if isinstance(env, RecordEpisodeStatistics):
            return True
        env = getattr(env, "env", None)
    return False
