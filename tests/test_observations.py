"""fastppo/algos/observations.py: how each observation space is stored (ObsSpec) and batched (as_batch).
Dict observations are packed into one uint8 row per step; unpacking must give every key back exactly."""

import gymnasium as gym
import numpy as np
import pytest
import torch

from fastppo.algos.observations import ObsSpec, as_batch

DICT = gym.spaces.Dict({"frame": gym.spaces.Box(0, 255, (3, 40, 40), np.uint8),
                        "pos": gym.spaces.Box(-5, 5, (2, 3), np.float64),
                        "mode": gym.spaces.Discrete(3, start=1),
                        "flag": gym.spaces.Box(0, 255, (5,), np.uint8)})  # uint8 but not an image: float32


def test_each_space_has_its_stored_form():
    assert (ObsSpec(gym.spaces.Box(-1, 1, (2, 3))).shape, ObsSpec(gym.spaces.Box(-1, 1, (2, 3))).dtype) == ((6,), np.float32)
    image = ObsSpec(gym.spaces.Box(0, 255, (4, 84, 84), np.uint8))
    assert (image.kind, image.shape, image.dtype) == ("image", (4, 84, 84), np.uint8)
    assert ObsSpec(gym.spaces.Discrete(5)).shape == (5,)
    packed = ObsSpec(DICT)
    assert packed.kind == "dict" and packed.dtype == np.uint8
    # each key's bytes padded to 4: flag 5 floats (20), frame 4800, mode 3 floats (12), pos 6 floats (24)
    assert packed.shape == (20 + 4800 + 12 + 24,)


def test_dict_rows_unpack_to_every_key_exactly():
    spec = ObsSpec(DICT)
    DICT.seed(1)
    batch = {key: np.stack([DICT[key].sample() for _ in range(7)]) for key in DICT.spaces}
    rows = spec.rows(batch, np.full((7, *spec.shape), 0xAB, np.uint8))
    parts = spec.unpack(torch.from_numpy(rows))
    assert parts["frame"].dtype == torch.uint8 and torch.equal(parts["frame"], torch.from_numpy(batch["frame"]))
    np.testing.assert_array_equal(parts["pos"].numpy(), batch["pos"].reshape(7, 6).astype(np.float32))
    np.testing.assert_array_equal(parts["mode"].numpy(), np.eye(3, dtype=np.float32)[batch["mode"] - 1])
    np.testing.assert_array_equal(parts["flag"].numpy(), batch["flag"].astype(np.float32))
    assert list(parts) == list(DICT.spaces)  # the space's key order
    rows_again = spec.rows(batch, np.zeros_like(rows))
    np.testing.assert_array_equal(rows, rows_again)  # padding is written too: equal observations, equal rows
    assert [p.dtype for p in spec.float_parts(rows)] == [np.float32] * 3  # all but the image


def test_spaces_that_have_no_stored_form_are_named():
    with pytest.raises(TypeError, match="Box, Discrete or a Dict of them, got a Dict nested in a Dict"):
        ObsSpec(gym.spaces.Dict({"a": gym.spaces.Dict({"b": gym.spaces.Discrete(2)})}))
    with pytest.raises(TypeError, match="got Tuple"):
        ObsSpec(gym.spaces.Tuple([gym.spaces.Discrete(2)]))


def test_as_batch_takes_one_observation_or_a_batch_of_them():
    one = DICT.sample()
    batch, single = as_batch(one, DICT)
    assert single and batch["frame"].shape == (1, 3, 40, 40) and batch["mode"].shape == (1,)
    batch, single = as_batch({k: np.stack([v, v]) for k, v in one.items()}, DICT)
    assert not single and batch["pos"].shape == (2, 2, 3)
    with pytest.raises(ValueError, match="a dict with the keys"):
        as_batch({"frame": one["frame"]}, DICT)
    with pytest.raises(ValueError, match="all be one observation or all batches of one size"):
        as_batch({**one, "mode": np.array([1, 2])}, DICT)

