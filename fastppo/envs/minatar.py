"""MinAtar's games (Young and Tian, 2019; the ``minatar`` extra) by their gymnasium ids.

``MinAtar/<Game>-v1`` (the game's minimal action set) and ``MinAtar/<Game>-v0`` (all 6 actions), for
Asterix, Breakout, Freeway, Seaquest and SpaceInvaders, are MinAtar's own gymnasium envs: 10x10 binary
frames, one channel per kind of object (``Box(False, True, (10, 10, C), bool)``), sticky actions with
probability 0.1 and difficulty ramping, as the paper's baselines ran them, and no time limit but the
games' own (Freeway's 2,500 frames). They step on gymnasium's vector env: MinAtar is numpy code, a few
microseconds a step, so the policy's forward pass is most of the rollout. ``CnnPolicy`` (or ``"auto"``)
encodes the frames with :class:`fastppo.algos.cnn.SmallCNN`, the network of MinAtar's baselines.
"""

from __future__ import annotations

import re

GAMES = ("Asterix", "Breakout", "Freeway", "Seaquest", "SpaceInvaders")
_MINATAR_ID = re.compile(r"MinAtar/([A-Za-z]+)-v[01]")


def minatar_game(env_id: str) -> str | None:
    """The game of a MinAtar id (``"MinAtar/SpaceInvaders-v1"`` -> ``"SpaceInvaders"``), None for other ids."""
    match = _MINATAR_ID.fullmatch(env_id)
    return match.group(1) if match and match.group(1) in GAMES else None


def register() -> None:
    """Registers MinAtar's ids with gymnasium (MinAtar's own registration, once)."""
    import gymnasium as gym

    if "MinAtar/Breakout-v1" in gym.registry:
        return
    try:
        import minatar.gym
    except ImportError as error:
        raise ImportError(f"the MinAtar ids need the minatar package ({error}): pip install 'fastppo[minatar]'") \
            from error
    minatar.gym.register_envs()
