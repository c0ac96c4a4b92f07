"""The native MuJoCo envs (fastppo/envs/mujoco) against gymnasium's v5 envs, step for step.

Bit-exact, not within a tolerance: both run MuJoCo's own arithmetic (``mujoco.batch`` is bit-identical to
one ``MjData`` per simulation) and the tasks repeat gymnasium's numpy arithmetic in its order and dtypes.
The reset distributions are gymnasium's to the bit too: env i draws from a generator seeded ``seed + i``
exactly as gymnasium's vector envs seed their copies, so the same seed gives the same episodes.
"""

import numpy as np
import pytest

pytest.importorskip("mujoco.batch")
gym = pytest.importorskip("gymnasium")
pytest.importorskip("imageio")  # gymnasium's MuJoCo envs (the reference) import it

from gymnasium.vector import AutoresetMode  # noqa: E402

from fastppo.envs.mujoco import MUJOCO_TASKS, MujocoVecEnv  # noqa: E402

TASKS = sorted(MUJOCO_TASKS)


def reference(env_id: str, num_envs: int, **options):
    return gym.make_vec(env_id, num_envs, vectorization_mode="sync", vector_kwargs={
        "autoreset_mode": AutoresetMode.SAME_STEP}, **options)


def assert_same_infos(ours: dict, theirs: dict, where: str) -> None:
    """gymnasium's vector infos, final observations compared row by row (gymnasium keeps them as an
    object array; ours are one array) and the episode statistics left to the statistics' own test."""
    ours = {k: v for k, v in ours.items() if k not in ("final_obs", "episode", "_episode")}
    theirs = {k: v for k, v in theirs.items() if k != "final_obs"}
    assert ours.keys() == theirs.keys(), f"{where}: info keys {sorted(ours)} != gymnasium's {sorted(theirs)}"
    for key, value in ours.items():
        if isinstance(value, dict):
            assert_same_infos(value, theirs[key], f"{where}/{key}")
        else:
            assert value.dtype == theirs[key].dtype, f"{where}: {key} dtype {value.dtype} != {theirs[key].dtype}"
            np.testing.assert_array_equal(value, theirs[key], err_msg=f"{where}: info {key!r}")


def run_both(env_id: str, steps: int, num_envs: int = 3, seed: int = 5, **options) -> int:
    """Steps ours and gymnasium's with the same seeded random actions (some beyond the action bounds,
    which both pass to MuJoCo unclipped); asserts every result equal; returns the episodes that ended."""
    ours, theirs = MujocoVecEnv(env_id, num_envs, num_threads=2, **options), reference(env_id, num_envs, **options)
    assert ours.single_observation_space == theirs.single_observation_space
    assert ours.single_action_space == theirs.single_action_space
    obs, info = ours.reset(seed=seed)
    ref_obs, ref_info = theirs.reset(seed=seed)
    np.testing.assert_array_equal(obs, ref_obs)
    assert_same_infos(info, ref_info, "reset")
    rng, ended = np.random.default_rng(seed), 0
    low, high = ours.single_action_space.low, ours.single_action_space.high
    for t in range(steps):
        actions = rng.uniform(1.2 * low, 1.2 * high, (num_envs, *low.shape)).astype(np.float32)
        got, want = ours.step(actions), theirs.step(actions)
        for name, a, b in zip(("obs", "rewards", "terminated", "truncated"), got[:4], want[:4]):
            assert a.dtype == b.dtype, f"step {t}: {name} dtype {a.dtype} != gymnasium's {b.dtype}"
            np.testing.assert_array_equal(a, b, err_msg=f"{env_id} step {t}: {name}")
        assert_same_infos(got[4], want[4], f"step {t}")
        for i in np.flatnonzero(want[4].get("_final_obs", [])):
            np.testing.assert_array_equal(got[4]["final_obs"][i], want[4]["final_obs"][i])
            ended += 1
    ours.close(), theirs.close()
    return ended


@pytest.mark.parametrize("env_id", TASKS)
def test_matches_gymnasium_through_resets_and_time_limits(env_id):
    steps = MUJOCO_TASKS[env_id].max_episode_steps + 20  # past the time limit
    ended = run_both(env_id, steps)
    assert ended >= 3, f"{env_id}: the run must cross episode ends to test the autoreset, {ended} ended"


def _changed_options(task) -> dict:
    """Every option away from its default: bools flipped, ints (model elements: Ant's main_body) the next
    one, numbers scaled, ranges narrowed."""
    changed = {}
    for name, default in task.options.items():
        if isinstance(default, bool):
            changed[name] = not default
        elif isinstance(default, int):
            changed[name] = default + 1
        elif isinstance(default, tuple):
            low, high = default
            changed[name] = (low * 0.9, high * 0.9 if high != float("inf") else high)
        else:
            changed[name] = default * 1.5
    return changed


@pytest.mark.parametrize("env_id", TASKS)
def test_matches_gymnasium_with_every_option_changed(env_id):
    run_both(env_id, 150, **_changed_options(MUJOCO_TASKS[env_id]))


def test_ant_main_body_by_name():
    """Ant's main_body may name a body, as gymnasium's ``data.body(name)`` takes it; an unknown one is refused."""
    run_both("Ant-v5", 30, main_body="aux_1")
    with pytest.raises(ValueError, match="main_body 'nose'"):
        MujocoVecEnv("Ant-v5", 1, main_body="nose")
    with pytest.raises(ValueError, match="main_body 99"):
        MujocoVecEnv("Ant-v5", 1, main_body=99)


@pytest.mark.parametrize("env_id", TASKS)
def test_matches_gymnasium_from_the_same_state(env_id):
    """From arbitrary (qpos, qvel) set on both, as gymnasium's set_state does, the next steps agree."""
    ours, theirs = MujocoVecEnv(env_id, 2, num_threads=1), reference(env_id, 2)
    ours.reset(seed=0), theirs.reset(seed=0)
    rng = np.random.default_rng(1)
    qpos, qvel = ours.get_state()
    qpos = qpos + rng.uniform(-0.05, 0.05, qpos.shape)
    qvel = qvel + rng.uniform(-0.5, 0.5, qvel.shape)
    ours.set_state(qpos, qvel)
    for i, env in enumerate(theirs.envs):
        env.unwrapped.set_state(qpos[i], qvel[i])
    low, high = ours.single_action_space.low, ours.single_action_space.high
    for t in range(5):
        actions = rng.uniform(low, high, (2, *low.shape)).astype(np.float32)
        got, want = ours.step(actions), theirs.step(actions)
        for a, b in zip(got[:4], want[:4]):
            np.testing.assert_array_equal(a, b, err_msg=f"{env_id} step {t}")
