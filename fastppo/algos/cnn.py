"""Image observations: which Box spaces are images, and the Nature-DQN encoder of "CnnPolicy".

An image space is SB3's: a 3-dimensional uint8 Box with bounds [0, 255]. Its observations are stored as
they come (uint8, 4x less memory than float32) and scaled by 1/255 inside the policy. Channels may come
first (Atari's stacked frames, ``(4, 84, 84)``) or last (gymnasium's renders, ``(210, 160, 3)``): the
encoder reads the smaller end as the channels, as SB3's ``is_image_space_channels_first`` does.
"""

from __future__ import annotations

import gymnasium as gym
import numpy as np
import torch
from torch import nn


def is_image_space(space: gym.Space) -> bool:
    """A 3-dimensional uint8 Box with bounds [0, 255] (SB3's ``is_image_space``)."""
    return (isinstance(space, gym.spaces.Box) and space.dtype == np.uint8 and len(space.shape) == 3
            and bool(np.all(space.low == 0)) and bool(np.all(space.high == 255)))


def channels_first(shape: tuple[int, ...]) -> bool:
    """Whether an image of ``shape`` has its channels first: the first axis is smaller than the last."""
    return shape[0] < shape[-1]


class NatureCNN(nn.Module):
    """The encoder of Mnih et al. (2015), as SB3's ``NatureCNN`` and CleanRL's Atari PPO use it: three
    convolutions (32 8x8 stride 4, 64 4x4 stride 2, 64 3x3 stride 1) and a linear layer to
    ``features_dim`` units, ReLU after each; uint8 images in, scaled by 1/255 here. SB3's extractor
    protocol (``NatureCNN(observation_space, features_dim)``, a ``features_dim`` attribute)."""

    def __init__(self, observation_space: gym.Space, features_dim: int = 512):
        super().__init__()
        if not is_image_space(observation_space):
            raise ValueError(f"CnnPolicy needs image observations, a 3-dimensional uint8 Box with bounds [0, 255] "
                             f"(gymnasium's image and Atari spaces); got {observation_space}")
        if not isinstance(features_dim, int) or isinstance(features_dim, bool) or features_dim < 1:
            raise ValueError(f"features_extractor_kwargs['features_dim'] must be a positive int, got {features_dim!r}")
        shape = observation_space.shape
        self.channels_first = channels_first(shape)
        channels, height, width = shape if self.channels_first else (shape[2], shape[0], shape[1])
        if min(height, width) < 36:
            raise ValueError(f"CnnPolicy's encoder (NatureCNN) needs images of at least 36x36 pixels, got "
                             f"{height}x{width} (observation_space {shape}); pass a features_extractor_class "
                             f"made for small images")
        self.cnn = nn.Sequential(
            nn.Conv2d(channels, 32, 8, stride=4), nn.ReLU(), nn.Conv2d(32, 64, 4, stride=2), nn.ReLU(),
            nn.Conv2d(64, 64, 3, stride=1), nn.ReLU(), nn.Flatten())
        with torch.no_grad():
            n_flat = self.cnn(torch.zeros(1, channels, height, width)).shape[1]
        self.linear = nn.Sequential(nn.Linear(n_flat, features_dim), nn.ReLU())
        self.features_dim = features_dim

    def forward(self, obs: torch.Tensor) -> torch.Tensor:
        images = obs if self.channels_first else obs.permute(0, 3, 1, 2)
        return self.linear(self.cnn(images.float() / 255.0))
