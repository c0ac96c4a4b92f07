"""Observations as the rollout stores them and the policy reads them (:class:`ObsSpec`).

- Box: flattened to float32 rows (normalised when ``normalize_obs``).
- Discrete: one-hot float32 rows.
- Images (:func:`is_image_space`: SB3's 3-dimensional uint8 Box in [0, 255], or a binary image, a
  3-dimensional bool Box as MinAtar's): uint8 in their own shape, 4x less memory than float32; the policy
  divides them by their top value (:func:`image_max`: 255, or 1 for binary images).
- Dict (of the above): each key stored as its own kind would be, packed side by side into one uint8 row
  (each key's bytes padded to 4), so the rollout, minibatches and checkpoints handle one tensor as for
  every other space; :meth:`ObsSpec.unpack` gives the keys back as views (float32 keys reinterpret their
  bytes, nothing is converted), in the space's key order.
"""

from __future__ import annotations

import gymnasium as gym
import numpy as np
import torch


def is_image_space(space: gym.Space) -> bool:
    """A 3-dimensional uint8 Box with bounds [0, 255] (SB3's ``is_image_space``), or a 3-dimensional bool
    Box: a binary image, one channel per kind of object (MinAtar's observations)."""
    if not (isinstance(space, gym.spaces.Box) and len(space.shape) == 3):
        return False
    return space.dtype == np.bool_ or (space.dtype == np.uint8 and bool(np.all(space.low == 0))
                                       and bool(np.all(space.high == 255)))


def image_max(space: gym.spaces.Box) -> float:
    """What an image space's pixels are divided by to lie in [0, 1]: 255, or 1 for a binary image."""
    return 1.0 if space.dtype == np.bool_ else 255.0


def channels_first(shape: tuple[int, ...]) -> bool:
    """Whether an image of ``shape`` has its channels first: the first axis is smaller than the last."""
    return shape[0] < shape[-1]


def image_size(shape: tuple[int, int, int]) -> tuple[int, int, int]:
    """An image's ``(channels, height, width)``, in either channel order (:func:`channels_first`)."""
    return tuple(shape) if channels_first(shape) else (shape[2], shape[0], shape[1])


class ObsSpec:
    """One stored row of ``space``'s observations: ``kind``, ``shape`` and ``dtype`` (see the module)."""

    def __init__(self, space: gym.Space, _nested: bool = False):
        if isinstance(space, gym.spaces.Dict) and not _nested:
            self.kind, self.keys = "dict", {}  # key -> (ObsSpec, byte offset, bytes)
            offset = 0
            for key, sub in space.spaces.items():
                spec = ObsSpec(sub, _nested=True)
                nbytes = spec.dim * np.dtype(spec.dtype).itemsize
                self.keys[key] = (spec, offset, nbytes)
                offset += -(-nbytes // 4) * 4  # float32 keys must start at a multiple of 4 bytes
            self.dim, self.shape, self.dtype = offset, (offset,), np.uint8
            return
        if is_image_space(space):
            self.kind, self.dim, self.shape, self.dtype = "image", int(np.prod(space.shape)), space.shape, np.uint8
            self.image_max = image_max(space)
            return
        if isinstance(space, gym.spaces.Box):
            self.kind, self.dim = "box", int(np.prod(space.shape))
        elif isinstance(space, gym.spaces.Discrete):
            self.kind, self.dim, self.n, self.start = "discrete", int(space.n), int(space.n), int(space.start)
        else:
            raise TypeError(f"observation_space must be Box, Discrete or a Dict of them, got "
                            f"{'a Dict nested in a Dict' if _nested and isinstance(space, gym.spaces.Dict) else type(space).__name__}")
        self.shape, self.dtype = (self.dim,), np.float32

    def batch_size(self, obs) -> int:
        """The number of observations in a batch of them (a dict of batches for Dict spaces)."""
        return len(next(iter(obs.values()))) if self.kind == "dict" else len(obs)

    def stack(self, items: list):
        """Single observations -> one batch of them (per key for Dict spaces)."""
        if self.kind == "dict":
            return {key: np.stack([item[key] for item in items]) for key in self.keys}
        return np.stack(items)

    def rows(self, obs, out: np.ndarray) -> np.ndarray:
        """A batch of env observations -> the stored rows, ``(batch, *shape)`` of ``dtype``, in ``out``."""
        if self.kind == "dict":
            for key, (spec, offset, nbytes) in self.keys.items():
                spec.rows(np.asarray(obs[key]), out[:, offset:offset + nbytes].view(spec.dtype))
                out[:, offset + nbytes:-(-(offset + nbytes) // 4) * 4] = 0  # the padding, so rows are deterministic
        elif self.kind == "discrete":
            out.fill(0.0)
            out[np.arange(out.shape[0]), np.asarray(obs, dtype=np.int64) - self.start] = 1.0
        else:
            np.copyto(out, np.asarray(obs).reshape(out.shape), casting="unsafe")
        return out

    def float_parts(self, rows: np.ndarray) -> list[np.ndarray]:
        """The float32 parts of stored rows (what can hold a NaN): views."""
        if self.kind == "dict":
            return [rows[:, offset:offset + nbytes].view(np.float32) for spec, offset, nbytes in self.keys.values()
                    if spec.kind != "image"]
        return [] if self.kind == "image" else [rows]

    def unpack(self, rows: torch.Tensor) -> dict[str, torch.Tensor]:
        """Dict spaces: stored rows -> each key's batch, views of ``rows``: images ``(batch, *shape)``
        uint8, other keys ``(batch, dim)`` float32 (Discrete ones one-hot)."""
        out = {}
        for key, (spec, offset, nbytes) in self.keys.items():
            part = rows[:, offset:offset + nbytes]
            out[key] = part.reshape(len(rows), *spec.shape) if spec.kind == "image" else part.view(torch.float32)
        return out


def as_batch(observation, space: gym.Space) -> tuple:
    """One observation or a batch of ``space``'s -> ``(batch, whether it was one)``; a dict of batches
    for Dict spaces."""
    if isinstance(space, gym.spaces.Dict):
        if not isinstance(observation, dict) or set(observation) != set(space.spaces):
            raise ValueError(f"observation must be a dict with the keys {list(space.spaces)}, got "
                             f"{list(observation) if isinstance(observation, dict) else type(observation).__name__}")
        parts = {key: as_batch(observation[key], sub) for key, sub in space.spaces.items()}
        singles = {single for _, single in parts.values()}
        sizes = {len(batch) for batch, _ in parts.values()}
        if len(singles) > 1 or len(sizes) > 1:
            raise ValueError("observation's keys must all be one observation or all batches of one size")
        return {key: batch for key, (batch, _) in parts.items()}, singles.pop()
    obs = np.asarray(observation)
    single = obs.shape == space.shape
    batch = obs[None] if single else obs
    if batch.shape[1:] != space.shape:
        raise ValueError(f"observation must have shape {space.shape} or (batch, *{space.shape}), got {obs.shape}")
    return batch, single
