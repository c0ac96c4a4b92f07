"""Learning through the native MuJoCo envs is real: with its preset, each algorithm solves
InvertedPendulum-v5 (1000, the most an episode can score) within the preset's 30k-step budget, seeded,
evaluated over 10 deterministic episodes of fresh envs; and ``fastppo train`` runs a MuJoCo id out of the
box."""

import subprocess
import sys

import pytest

pytest.importorskip("mujoco.batch")

import fastppo  # noqa: E402
from fastppo.envs.mujoco import MujocoVecEnv  # noqa: E402

ENV = "InvertedPendulum-v5"


@pytest.mark.parametrize("algo", ["ppo", "trpo"])
def test_preset_solves_inverted_pendulum(algo):
    cls = fastppo.presets.algorithm_class(algo)
    model = cls("MlpPolicy", ENV, seed=0, **fastppo.presets.get(ENV, algo))
    assert isinstance(model.env, MujocoVecEnv)  # the native engine, not gymnasium's
    model.learn(fastppo.presets.total_timesteps(ENV, algo))
    mean, _ = fastppo.evaluate_policy(model, ENV, n_eval_episodes=10, seed=123)
    assert mean >= 950, f"{algo} did not solve {ENV}: mean return {mean}"


def test_cli_trains_a_mujoco_id(tmp_path):
    out = subprocess.run([sys.executable, "-m", "fastppo", "train", "Reacher-v5", "--total-timesteps", "2048",
                          "--run-dir", str(tmp_path / "run"), "--no-progress"],
                         cwd=tmp_path, capture_output=True, text=True, timeout=240)
    assert out.returncode == 0, out.stderr[-2000:]
    assert "Reacher-v5 (ppo): mean return" in out.stdout
