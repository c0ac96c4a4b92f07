"""The features extractors of SB3's "CnnPolicy" (:class:`NatureCNN`; :class:`SmallCNN` for images too
small for it, as MinAtar's) and "MultiInputPolicy" (:class:`CombinedExtractor`).

Images (:func:`~fastppo.algos.observations.is_image_space`) arrive as the rollout stores them, uint8,
and are scaled to [0, 1] here (by 1/255; binary images are 0 or 1 already). Channels may come first
(Atari's stacked frames, ``(4, 84, 84)``) or last (gymnasium's renders, ``(210, 160, 3)``, MinAtar's
``(10, 10, 4)``): the encoder reads the smaller end as the channels, and a tie (MinAtar's Seaquest,
``(10, 10, 10)``) as channels last, gymnasium's layout, so no env wrapper has to transpose frames.
"""

from __future__ import annotations

import gymnasium as gym
import torch
from torch import nn

from fastppo.algos.observations import ObsSpec, channels_first, image_max, image_size, is_image_space


class _ImageEncoder(nn.Module):
    """What NatureCNN and SmallCNN share: the checks, the channel order, scaling to [0, 1], and
    ``convolutions`` followed by a linear layer to ``features_dim`` units with ReLU."""

    min_side = 1

    def __init__(self, observation_space: gym.Space, features_dim: int):
        super().__init__()
        if not is_image_space(observation_space):
            raise ValueError(f"CnnPolicy needs image observations, a 3-dimensional uint8 Box with bounds [0, 255] "
                             f"(gymnasium's image and Atari spaces) or a bool one (MinAtar's); got {observation_space}")
        if not isinstance(features_dim, int) or isinstance(features_dim, bool) or features_dim < 1:
            raise ValueError(f"features_extractor_kwargs['features_dim'] must be a positive int, got {features_dim!r}")
        shape = observation_space.shape
        self.channels_first = channels_first(shape)
        self.image_max = image_max(observation_space)
        channels, height, width = image_size(shape)
        if min(height, width) < self.min_side:
            raise ValueError(f"{type(self).__name__} needs images of at least {self.min_side}x{self.min_side} pixels, "
                             f"got {height}x{width} (observation_space {shape}); SmallCNN, which CnnPolicy picks "
                             f"under 36 pixels, takes them down to 3x3")
        self.cnn = self.convolutions(channels)
        with torch.no_grad():
            n_flat = self.cnn(torch.zeros(1, channels, height, width)).shape[1]
        self.linear = nn.Sequential(nn.Linear(n_flat, features_dim), nn.ReLU())
        self.features_dim = features_dim

    def forward(self, obs: torch.Tensor) -> torch.Tensor:
        images = obs if self.channels_first else obs.permute(0, 3, 1, 2)
        return self.linear(self.cnn(images.float() / self.image_max))


class NatureCNN(_ImageEncoder):
    """The encoder of Mnih et al. (2015), as SB3's ``NatureCNN`` and CleanRL's Atari PPO use it: three
    convolutions (32 8x8 stride 4, 64 4x4 stride 2, 64 3x3 stride 1) and a linear layer to
    ``features_dim`` units, ReLU after each; images of at least 36x36 pixels. SB3's extractor protocol
    (``NatureCNN(observation_space, features_dim)``, a ``features_dim`` attribute)."""

    min_side = 36

    def __init__(self, observation_space: gym.Space, features_dim: int = 512):
        super().__init__(observation_space, features_dim)

    @staticmethod
    def convolutions(channels: int) -> nn.Module:
        return nn.Sequential(
            nn.Conv2d(channels, 32, 8, stride=4), nn.ReLU(), nn.Conv2d(32, 64, 4, stride=2), nn.ReLU(),
            nn.Conv2d(64, 64, 3, stride=1), nn.ReLU(), nn.Flatten())


class SmallCNN(_ImageEncoder):
    """The network of MinAtar's baselines (Young and Tian, 2019) for small images such as MinAtar's
    10x10: one convolution (16 3x3, stride 1) and a linear layer to ``features_dim`` units (128), ReLU
    after each; images of at least 3x3 pixels."""

    min_side = 3

    def __init__(self, observation_space: gym.Space, features_dim: int = 128):
        super().__init__(observation_space, features_dim)

    @staticmethod
    def convolutions(channels: int) -> nn.Module:
        return nn.Sequential(nn.Conv2d(channels, 16, 3, stride=1), nn.ReLU(), nn.Flatten())


def image_encoder(observation_space: gym.Space, **kwargs) -> nn.Module:
    """CnnPolicy's encoder for an image space: :class:`NatureCNN`, or :class:`SmallCNN` for images of
    under 36 pixels a side (``kwargs``: ``features_dim``)."""
    small = is_image_space(observation_space) and min(image_size(observation_space.shape)[1:]) < NatureCNN.min_side
    return (SmallCNN if small else NatureCNN)(observation_space, **kwargs)  # not an image: NatureCNN says so


class CombinedExtractor(nn.Module):
    """SB3's ``CombinedExtractor`` for Dict observations: each image key through its own encoder
    (:func:`image_encoder`, ``cnn_output_dim`` features), every other key flattened (Discrete keys one-hot),
    concatenated in the space's key order. Takes the stored rows and unpacks them
    (:meth:`~fastppo.algos.observations.ObsSpec.unpack`)."""

    def __init__(self, observation_space: gym.Space, cnn_output_dim: int = 256):
        super().__init__()
        if not isinstance(observation_space, gym.spaces.Dict):
            raise ValueError(f"'MultiInputPolicy' needs a Dict observation space, got {observation_space}")
        self.obs_spec = ObsSpec(observation_space)
        self.cnns = nn.ModuleDict({key: image_encoder(sub, features_dim=cnn_output_dim)
                                   for key, sub in observation_space.spaces.items() if is_image_space(sub)})
        self.features_dim = sum(cnn_output_dim if key in self.cnns else spec.dim
                                for key, (spec, _, _) in self.obs_spec.keys.items())

    def forward(self, rows: torch.Tensor) -> torch.Tensor:
        parts = self.obs_spec.unpack(rows)
        return torch.cat([self.cnns[key](part) if key in self.cnns else part for key, part in parts.items()], 1)
