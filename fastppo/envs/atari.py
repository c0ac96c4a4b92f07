"""Atari through ale-py's native vector env (``ale_py.vector_env.AtariVectorEnv``: a multithreaded
rewrite of EnvPool's Atari engine), adapted to fastppo's env contract.

``make_vec_env("ALE/Breakout-v5", N)`` and ``make_vec_env("BreakoutNoFrameskip-v4", N)`` give an
:class:`AtariVecEnv` with the standard preprocessing that CleanRL's Atari PPO trains with: up to 30
no-op starts, 4 frames per step max-pooled over the last two, 84x84 grayscale, 4 stacked frames
(``(4, 84, 84)`` uint8, channels first), FIRE on reset where the game needs it, and for training:

- **rewards clipped** to their sign (``clip_rewards``), while ``infos["episode"]`` reports the
  *unclipped* return of the whole game, as CleanRL logs it;
- **a lost life ends the training episode** (``terminated``, ``episodic_life``) but not the game: the
  game goes on from the next life, and ``infos["episode"]`` counts the whole game (all lives). ale-py's
  own ``episodic_life`` restarts the game at every lost life, so the adapter detects lives itself.

Without ale-py's vector env (ale-py older than 0.11) the same adapter runs over gymnasium's reference
preprocessing instead (``AtariPreprocessing`` and ``FrameStackObservation`` in a sync vector env, with
the no-ops and FIRE done the engine's way, below them): the same frames, rewards and episode ends, one
Python env at a time (``AtariVecEnv.engine`` says which runs; tests/test_atari.py plays both side by side).

The ``-v5`` ids keep ALE v5's sticky actions (``repeat_action_probability=0.25``); ``NoFrameskip-v4``
ids have none, as gymnasium's. A game lasts at most 108,000 frames (27,000 steps), then it is truncated.
Seeding follows gymnasium's vector convention: ``reset(seed=s)`` seeds env ``i`` with ``s + i``.
"""

from __future__ import annotations

import re
import time
from typing import Any

import gymnasium as gym
import numpy as np
from gymnasium.vector import AutoresetMode, VectorEnv

from fastppo import _backend
from fastppo.envs._buffered import _check_seed, check_actions

_ATARI_ID = re.compile(r"ALE/(?P<v5>[A-Za-z]+)-v5|(?P<v4>[A-Za-z]+)NoFrameskip-v4")
# AtariVecEnv's options (make_vec_env's env_kwargs), with their defaults: CleanRL's Atari settings
OPTIONS = {"clip_rewards": True, "episodic_life": True, "noop_max": 30, "frame_skip": 4, "stack_num": 4,
           "img_height": 84, "img_width": 84, "repeat_action_probability": None, "max_num_frames_per_episode": 108_000,
           "full_action_space": False, "use_fire_reset": True, "num_threads": 0}


def atari_game(env_id: str) -> str | None:
    """The ROM name of an Atari id (``"ALE/MsPacman-v5"`` -> ``"ms_pacman"``), None for other ids."""
    match = _ATARI_ID.fullmatch(env_id)
    if match is None:
        return None
    name = match.group("v5") or match.group("v4")
    return re.sub(r"(?<!^)(?=[A-Z])", "_", name).lower()


class AtariVecEnv(VectorEnv):
    """``num_envs`` games of ``env_id`` on ale-py's native vector env, in SAME_STEP autoreset mode (the
    module doc says what is preprocessed and how episodes count). ``engine``: "ale" (ale-py's vector env),
    "gymnasium" (gymnasium's wrappers, the fallback) or "auto" (the first that ale-py has). ``infos["episode"]`` (mask
    ``"_episode"``) reports each finished game's unclipped return ``r``, length ``l`` in steps and time
    ``t``; ``infos["final_obs"]`` (mask ``"_final_obs"``) the last observation of each game that ended;
    ``infos["lives"]`` the lives left. ``options`` (``make_vec_env``'s ``env_kwargs``) are
    :data:`OPTIONS`; ``num_threads`` 0 uses every core. Every result is a fresh array (the engine allocates
    them), the caller's to keep, so ``copy`` is taken for :func:`~fastppo.make_vec_env`'s sake only."""

    metadata = {"autoreset_mode": AutoresetMode.SAME_STEP}

    def __init__(self, env_id: str, num_envs: int, *, seed: int | None = None, copy: bool = True,
                 engine: str = "auto", **options):
        from ale_py import roms

        game = atari_game(env_id)
        if game is None:
            raise ValueError(f"env_id {env_id!r} is not an Atari id ('ALE/<Game>-v5' or '<Game>NoFrameskip-v4')")
        if game not in roms.get_all_rom_ids():
            raise ValueError(f"env_id {env_id!r}: ale-py has no ROM named {game!r}")
        unknown = sorted(set(options) - set(OPTIONS))
        if unknown:
            raise ValueError(f"env_kwargs: {env_id} takes {', '.join(OPTIONS)}; got unknown {unknown}")
        self.options = {**OPTIONS, **options}
        for name in ("clip_rewards", "episodic_life", "full_action_space", "use_fire_reset"):
            if not isinstance(self.options[name], bool):
                raise TypeError(f"env_kwargs[{name!r}] must be a bool, got {self.options[name]!r}")
        sticky = self.options.pop("repeat_action_probability")
        if sticky is None:
            sticky = 0.25 if env_id.startswith("ALE/") else 0.0
        self.env_id, self.num_envs = env_id, int(num_envs)
        self.clip_rewards, self.episodic_life = self.options.pop("clip_rewards"), self.options.pop("episodic_life")
        if engine not in ("auto", "ale", "gymnasium"):
            raise ValueError(f"engine must be 'auto', 'ale' or 'gymnasium', got {engine!r}")
        if engine == "auto":  # ale-py's vector env where it has one (>= 0.11)
            engine = "ale" if _backend._unavailable("atari") is None else "gymnasium"
        self.engine = engine
        if engine == "ale":
            from ale_py.vector_env import AtariVectorEnv

            self._engine = AtariVectorEnv(
                game, self.num_envs, autoreset_mode=AutoresetMode.SAME_STEP, episodic_life=False,
                reward_clipping=False, repeat_action_probability=sticky, frameskip=self.options.pop("frame_skip"),
                **self.options)
        else:
            self._engine = _WrapperEngine(env_id, self.num_envs, repeat_action_probability=sticky, **self.options)
        self.single_observation_space = self._engine.single_observation_space
        self.single_action_space = self._engine.single_action_space
        self.observation_space = self._engine.observation_space
        self.action_space = self._engine.action_space
        self._pending_seed = _check_seed(seed, "seed")
        self._lives = self._returns = self._lengths = self._starts = None  # set by reset()

    def reset(self, *, seed: int | None = None, options: dict[str, Any] | None = None):
        """Start a new game in every env. ``seed``: env ``i`` from ``seed + i``; None: on the first reset the
        ``seed`` given to the constructor, later the engine's own streams."""
        self._check_open()
        if options:
            raise ValueError(f"options: {self.env_id} takes none, got {sorted(options)}")
        seed = _check_seed(seed, "seed")
        if seed is None and self._lives is None:
            seed = self._pending_seed
        obs, info = self._engine.reset(seed=seed)
        self._lives = info["lives"].copy()
        self._returns, self._lengths = np.zeros(self.num_envs), np.zeros(self.num_envs, np.int64)
        self._starts = np.full(self.num_envs, time.perf_counter())
        return obs, {"lives": info["lives"], "_lives": np.ones(self.num_envs, bool)}

    def step(self, actions):
        """Step every game with integer ``actions`` of shape ``(num_envs,)``; bad actions raise before any
        game steps."""
        self._check_open()
        if self._lives is None:
            raise RuntimeError(f"{self.env_id}: call reset() before step()")
        actions = np.asarray(actions)
        check_actions(actions, self.single_action_space, self.num_envs, self.env_id)
        obs, raw, game_over, truncated, info = self._engine.step(actions)
        self._returns += raw
        self._lengths += 1
        ended = game_over | truncated  # the engine has already started the next game in these envs
        lives = info["lives"]
        terminated = game_over | (self.episodic_life & ~ended & (lives < self._lives))
        self._lives = lives.copy()
        rewards = (np.sign(raw) if self.clip_rewards else raw).astype(np.float32)
        infos = {"lives": lives, "_lives": np.ones(self.num_envs, bool)}
        if ended.any():
            now = time.perf_counter()
            infos.update(final_obs=info["final_obs"], _final_obs=ended, final_info={}, _final_info=ended,
                         episode={"r": np.where(ended, self._returns, 0.0), "l": np.where(ended, self._lengths, 0),
                                  "t": np.where(ended, np.round(now - self._starts, 6), 0.0)},
                         _episode=ended)
            self._returns[ended], self._lengths[ended], self._starts[ended] = 0.0, 0, now
        return obs, rewards, terminated, truncated & ~game_over, infos

    def _check_open(self) -> None:
        if self.closed:
            raise RuntimeError(f"{self.env_id}: the env is closed")

    def close_extras(self, **kwargs) -> None:
        """After close(), every call but close() raises."""
        self._engine.close()

    def __repr__(self) -> str:
        return f"AtariVecEnv({self.env_id!r}, num_envs={self.num_envs}, engine={self.engine!r})"


class _WrapperEngine:
    """ale-py's vector env's interface (``reset``, ``step``, ``close``, spaces) over gymnasium's reference
    preprocessing in a SAME_STEP sync vector env, with the engine's reset: up to ``noop_max`` no-ops, then
    one frame of FIRE where the game has it, below the wrappers (checked frame for frame)."""

    def __init__(self, env_id: str, num_envs: int, *, noop_max: int, frame_skip: int, stack_num: int,
                 img_height: int, img_width: int, repeat_action_probability: float, max_num_frames_per_episode: int,
                 full_action_space: bool, use_fire_reset: bool, num_threads: int):  # (threads: the engine's)
        import ale_py
        from gymnasium.wrappers import AtariPreprocessing, FrameStackObservation

        gym.register_envs(ale_py)
        name = _ATARI_ID.fullmatch(env_id)
        v5_id = f"ALE/{name.group('v5') or name.group('v4')}-v5"  # v4's NoFrameskip is v5 with these options

        def make():
            env = gym.make(v5_id, frameskip=1, repeat_action_probability=repeat_action_probability,
                           full_action_space=full_action_space, max_num_frames_per_episode=max_num_frames_per_episode)
            env = AtariPreprocessing(_NoopsThenFire(env, noop_max, use_fire_reset), noop_max=0, frame_skip=frame_skip,
                                     screen_size=(img_width, img_height))
            return FrameStackObservation(env, stack_num, padding_type="zero")

        self._vec = gym.vector.SyncVectorEnv([make] * num_envs, autoreset_mode=AutoresetMode.SAME_STEP)
        self.single_observation_space, self.single_action_space = (self._vec.single_observation_space,
                                                                   self._vec.single_action_space)
        self.observation_space, self.action_space = self._vec.observation_space, self._vec.action_space

    def reset(self, seed=None):
        return self._vec.reset(seed=seed)

    def step(self, actions):
        obs, rewards, terminated, truncated, info = self._vec.step(actions)
        ended = terminated | truncated
        if ended.any():  # the engine gives final observations densely
            final = np.zeros_like(obs)
            final[ended] = np.stack(info["final_obs"][ended])
            info["final_obs"] = final
        return obs, rewards, terminated, truncated, info

    def close(self):
        self._vec.close()


class _NoopsThenFire(gym.Wrapper):
    """The engine's reset on one raw (frame-skip 1) ALE env: 1 to ``noop_max`` no-op frames (none for 0),
    then one frame of FIRE if ``fire`` and the game has it; a game that ends on the way starts again."""

    def __init__(self, env, noop_max: int, fire: bool):
        super().__init__(env)
        meanings = env.unwrapped.get_action_meanings()
        self.noop_max, self.fire = noop_max, (meanings.index("FIRE") if fire and "FIRE" in meanings else None)

    def reset(self, **kwargs):
        obs, info = self.env.reset(**kwargs)
        noops = int(self.env.unwrapped.np_random.integers(1, self.noop_max + 1)) if self.noop_max > 0 else 0
        for action in [0] * noops + ([] if self.fire is None else [self.fire]):
            obs, _, terminated, truncated, info = self.env.step(action)
            if terminated or truncated:
                obs, info = self.env.reset()
        return obs, info
