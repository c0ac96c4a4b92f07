"""fastppo/envs/atari.py: Atari ids on ale-py's native vector env, held to fastppo's env contract: spaces,
errors, seeding, frame stacks across steps and game ends, and episode statistics of whole games (all
lives, unclipped rewards) counted here step by step; the engine against gymnasium's reference wrappers,
and the fallback built on them against the engine."""

import subprocess
import sys

import numpy as np
import pytest

import fastppo
from fastppo.envs.atari import AtariVecEnv, atari_game

pytestmark = pytest.mark.skipif(not fastppo.backends()["atari"].available,
                                reason=f"atari: {fastppo.backends()['atari'].detail}")


def run(env, steps, seed=0):
    """Random actions from ``seed``: every step's (obs, rewards, terminated, truncated, infos)."""
    rng = np.random.default_rng(seed)
    return [env.step(rng.integers(0, env.single_action_space.n, env.num_envs)) for _ in range(steps)]


def test_ids_and_options():
    assert atari_game("ALE/MsPacman-v5") == "ms_pacman" and atari_game("BreakoutNoFrameskip-v4") == "breakout"
    assert atari_game("CartPole-v1") is None and atari_game("ALE/Breakout-v4") is None
    for env_id in ("ALE/Breakout-v5", "BreakoutNoFrameskip-v4"):
        env = fastppo.make_vec_env(env_id, 2)
        assert isinstance(env, AtariVecEnv)
        assert env.single_observation_space.shape == (4, 84, 84) and env.single_observation_space.dtype == np.uint8
        assert env.single_action_space.n == 4
        env.close()
    with pytest.raises(ValueError, match="ale-py has no ROM named 'not_a_game'"):
        fastppo.make_vec_env("ALE/NotAGame-v5", 1)
    with pytest.raises(ValueError, match="takes clip_rewards, episodic_life, .*got unknown \\['sticky'\\]"):
        fastppo.make_vec_env("ALE/Breakout-v5", 1, env_kwargs=dict(sticky=0.1))
    with pytest.raises(TypeError, match="env_kwargs\\['episodic_life'\\] must be a bool"):
        fastppo.make_vec_env("ALE/Breakout-v5", 1, env_kwargs=dict(episodic_life=1))
    with pytest.raises(ValueError, match="is not an Atari id"):
        fastppo.make_vec_env("CartPole-v1", 1, backend="atari")


def test_lifecycle_and_action_errors():
    env = fastppo.make_vec_env("BreakoutNoFrameskip-v4", 2, seed=0)
    with pytest.raises(RuntimeError, match="call reset\\(\\) before step\\(\\)"):
        env.step(np.zeros(2, np.int64))
    env.reset()
    with pytest.raises(ValueError, match="actions\\[1\\] = 4 is out of range"):
        env.step(np.array([0, 4]))
    with pytest.raises(ValueError, match="must have shape \\(2,\\)"):
        env.step(np.zeros(3, np.int64))
    with pytest.raises(TypeError, match="integer dtype"):
        env.step(np.zeros(2, np.float32))
    env.close()
    with pytest.raises(RuntimeError, match="the env is closed"):
        env.reset()


def test_seeding_follows_gymnasium_vector_convention():
    pair = fastppo.make_vec_env("BreakoutNoFrameskip-v4", 2, seed=5)
    one = fastppo.make_vec_env("BreakoutNoFrameskip-v4", 1, seed=6)
    obs2, _ = pair.reset()
    obs1, _ = one.reset()
    np.testing.assert_array_equal(obs2[1], obs1[0])  # env 1 of seed 5 is env 0 of seed 6
    rng = np.random.default_rng(0)
    for _ in range(200):
        a = rng.integers(0, 4, 2)
        o2, r2, *_ = pair.step(a)
        o1, r1, *_ = one.step(a[1:])
        np.testing.assert_array_equal(o2[1], o1[0])
        np.testing.assert_array_equal(r2[1], r1[0])


def test_frame_stacks_continue_and_final_observations_end_the_game():
    env = fastppo.make_vec_env("BreakoutNoFrameskip-v4", 3, seed=1)
    prev, _ = env.reset()
    games = 0
    for obs, _, terminated, truncated, infos in run(env, 700):
        ended = infos.get("_final_obs", np.zeros(3, bool))
        for i in range(3):
            last = infos["final_obs"][i] if ended[i] else obs[i]
            np.testing.assert_array_equal(last[:-1], prev[i][1:])  # one new frame per step
            if ended[i]:
                assert terminated[i] or truncated[i]
                assert not np.array_equal(obs[i], infos["final_obs"][i])  # a new game's first frames
        games += int(ended.sum())
        prev = obs
    assert games >= 3


@pytest.mark.parametrize("episodic_life", [True, False])
def test_episode_statistics_count_whole_games_with_unclipped_rewards(episodic_life):
    # Space Invaders pays 5 to 30 per invader: clipping shows. The same seed and actions on an env that
    # does not clip give the raw rewards, accumulated here.
    options = dict(episodic_life=episodic_life)
    clipped = fastppo.make_vec_env("SpaceInvadersNoFrameskip-v4", 2, seed=3, env_kwargs=options)
    raw = fastppo.make_vec_env("SpaceInvadersNoFrameskip-v4", 2, seed=3, env_kwargs=dict(options, clip_rewards=False))
    _, info = clipped.reset()
    raw.reset()
    lives = info["lives"].copy()
    returns, lengths, games, life_ends = np.zeros(2), np.zeros(2, int), 0, 0
    for (_, r, te, tr, infos), (_, r_raw, te_raw, _, infos_raw) in zip(run(clipped, 1500), run(raw, 1500)):
        np.testing.assert_array_equal(r, np.sign(r_raw))
        assert r.dtype == np.float32 and np.array_equal(te, te_raw)
        returns += r_raw
        lengths += 1
        ended = infos.get("_episode", np.zeros(2, bool))
        lost = ~ended & (infos["lives"] < lives)
        np.testing.assert_array_equal(te & ~ended, lost if episodic_life else np.zeros(2, bool))
        life_ends += int(lost.sum())
        for i in np.flatnonzero(ended):
            assert infos["episode"]["r"][i] == returns[i] and infos["episode"]["l"][i] == lengths[i]
            assert infos_raw["episode"]["r"][i] == returns[i]
            assert te[i] or tr[i]
            returns[i], lengths[i] = 0, 0
            games += 1
        lives = infos["lives"].copy()
    assert games >= 2 and life_ends >= 2 * games and returns.max() > 0


def test_cnn_policy_trains_on_an_atari_id_from_the_cli(tmp_path):
    out = subprocess.run([sys.executable, "-m", "fastppo", "train", "ALE/Breakout-v5", "--total-timesteps", "256",
                          "--set", "n_steps=16", "--set", "batch_size=64", "--run-dir", str(tmp_path / "run"),
                          "--eval-episodes", "1", "--no-progress"],
                         cwd=tmp_path, capture_output=True, text=True, timeout=300)
    assert out.returncode == 0, out.stderr[-2000:]
    assert "ALE/Breakout-v5 (ppo): mean return" in out.stdout
    model = fastppo.PPO.load(tmp_path / "run" / "model.pt")
    assert model.policy_name == "CnnPolicy" and model.num_timesteps == 256


def test_the_engine_preprocesses_as_gymnasiums_wrappers():
    # gymnasium's reference preprocessing (AtariPreprocessing: 4 max-pooled frames, 84x84 grayscale;
    # FrameStackObservation: 4 frames, zero-padded at reset) on the same game: the same frames and rewards
    # step for step. No no-op starts, sticky actions or FIRE: those draw from different random streams.
    gym = pytest.importorskip("gymnasium")
    pytest.importorskip("cv2")
    import ale_py
    from gymnasium.wrappers import AtariPreprocessing, FrameStackObservation

    gym.register_envs(ale_py)
    reference = FrameStackObservation(AtariPreprocessing(gym.make("BreakoutNoFrameskip-v4"), noop_max=0), 4,
                                      padding_type="zero")
    env = fastppo.make_vec_env("BreakoutNoFrameskip-v4", 1, env_kwargs=dict(
        noop_max=0, use_fire_reset=False, clip_rewards=False, episodic_life=False))
    expected, _ = reference.reset(seed=0)
    obs, _ = env.reset(seed=0)
    np.testing.assert_array_equal(obs[0], expected)
    rng, game_over = np.random.default_rng(0), False
    for t in range(2000):
        action = int(rng.integers(0, 4))
        expected, reward, terminated, truncated, _ = reference.step(action)
        obs, rewards, te, tr, infos = env.step(np.array([action]))
        game_over = terminated or truncated
        np.testing.assert_array_equal(infos["final_obs"][0] if game_over else obs[0], expected, err_msg=f"step {t}")
        assert (rewards[0], te[0], tr[0]) == (reward, terminated, truncated)
        if game_over:
            break
    assert game_over


def test_the_fallback_on_gymnasiums_wrappers_plays_as_the_engine():
    # the same games on both engines with the same actions: frames (final ones too), clipped rewards,
    # life-loss terminations, lives and whole-game statistics, step for step. No-op starts and sticky
    # actions off: they draw from different random streams; FIRE on reset stays on.
    options = dict(noop_max=0, repeat_action_probability=0.0)
    native, fallback = (AtariVecEnv("BreakoutNoFrameskip-v4", 2, engine=engine, **options) for engine in ("ale", "gymnasium"))
    assert (native.engine, fallback.engine) == ("ale", "gymnasium")
    assert fallback.single_observation_space == native.single_observation_space
    np.testing.assert_array_equal(native.reset(seed=0)[0], fallback.reset(seed=0)[0])
    rng, games, lives_lost = np.random.default_rng(0), 0, 0
    for t in range(2000):
        actions = rng.integers(0, 4, 2)
        expected, got = native.step(actions), fallback.step(actions)
        for name, a, b in zip(("obs", "rewards", "terminated", "truncated"), expected[:4], got[:4]):
            np.testing.assert_array_equal(a, b, err_msg=f"{name} at step {t}")
        np.testing.assert_array_equal(expected[4]["lives"], got[4]["lives"])
        assert ("_episode" in expected[4]) == ("_episode" in got[4])
        if "_episode" in expected[4]:
            ended = expected[4]["_episode"]
            np.testing.assert_array_equal(ended, got[4]["_episode"])
            np.testing.assert_array_equal(expected[4]["episode"]["r"], got[4]["episode"]["r"])
            np.testing.assert_array_equal(expected[4]["final_obs"][ended], got[4]["final_obs"][ended])
            games += ended.sum()
        lives_lost += (expected[2] & ~expected[4].get("_episode", np.zeros(2, bool))).sum()
    assert games >= 10 and lives_lost >= 30


def test_without_alepy_vector_env_the_ids_run_on_the_fallback(monkeypatch):
    known = fastppo._backend._unavailable  # as ale-py < 0.11 would report it

    monkeypatch.setattr(fastppo._backend, "_unavailable",
                        lambda name: "No module named 'ale_py.vector_env'" if name == "atari" else known(name))
    env = fastppo.make_vec_env("ALE/Breakout-v5", 2, seed=0)
    assert env.engine == "gymnasium" and env.single_observation_space.shape == (4, 84, 84)
    obs, _ = env.reset()
    obs, rewards, terminated, truncated, infos = env.step(np.array([1, 2]))
    assert obs.shape == (2, 4, 84, 84) and obs.dtype == np.uint8 and rewards.dtype == np.float32
    env.close()
    with pytest.raises(ValueError, match="engine must be 'auto', 'ale' or 'gymnasium', got 'envpool'"):
        AtariVecEnv("ALE/Breakout-v5", 1, engine="envpool")
