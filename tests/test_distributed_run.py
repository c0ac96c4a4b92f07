"""Data-parallel runs as users launch them: torchrun with the CLI and with a script, checkpoints across
ranks, and a rank that dies. Two ranks with gloo on the CPU; every run has a hard timeout, so that a hang
fails the test instead of eating CI's budget."""

import json
import os
import subprocess
import sys
import textwrap
import time

import pytest
import torch

pytestmark = pytest.mark.skipif(not torch.distributed.is_available(), reason="torch.distributed is not available")

TIMEOUT = 240  # seconds for a whole torchrun launch
ENV = {**os.environ, "FASTPPO_DIST_TIMEOUT": "30", "FASTPPO_NUM_THREADS": "1", "OMP_NUM_THREADS": "1"}


def torchrun(tmp_path, *args, nproc=2, check=True, timeout=TIMEOUT):
    """``torchrun --standalone --nproc_per_node=nproc ARGS`` in tmp_path (outside the source tree)."""
    cmd = [sys.executable, "-m", "torch.distributed.run", "--standalone", f"--nproc_per_node={nproc}", *args]
    return subprocess.run(cmd, cwd=tmp_path, env=ENV, capture_output=True, text=True, check=check, timeout=timeout)


def script(tmp_path, source: str) -> str:
    path = tmp_path / "run.py"
    path.write_text(textwrap.dedent(source))
    return str(path)


def test_torchrun_cli_solves_cartpole(tmp_path):
    out = torchrun(tmp_path, "-m", "fastppo", "train", "CartPole-v1", "--run-dir", str(tmp_path / "run"),
                   "--no-progress", "--json", "--eval-episodes", "10")
    summaries = [line for line in out.stdout.splitlines() if line.startswith("{")]
    assert len(summaries) == 1, out.stdout  # rank 0 alone reports
    summary = json.loads(summaries[0])
    assert summary["mean_return"] >= 475, summary
    assert os.path.exists(summary["model_path"]) and os.path.exists(summary["model_path"] + ".rank1")


SAVE_AND_RESUME = """
    import hashlib, sys
    import fastppo

    def digest(model):
        return hashlib.sha256(b"".join(p.detach().numpy().tobytes() for p in model.policy.parameters())).hexdigest()

    class SaveAndStop(fastppo.Callback):
        def on_iteration_end(self, metrics):
            if self.model.iteration == 2:
                self.model.save("half")
                return False
            return True

    kwargs = dict(fastppo.presets.get("CartPole-v1"), num_envs=4, seed=3, normalize_obs=True, normalize_reward=True)
    mode = sys.argv[1]
    if mode == "straight":
        model = fastppo.PPO("MlpPolicy", "CartPole-v1", **kwargs).learn(4 * 2 * 128)
    elif mode == "half":
        model = fastppo.PPO("MlpPolicy", "CartPole-v1", **kwargs).learn(4 * 2 * 128, callback=SaveAndStop())
    else:
        model = fastppo.PPO.load("half").learn(2 * 2 * 128, reset_num_timesteps=False)
    rank = model.reducer.rank
    with open(f"{mode}.{rank}", "w") as f:
        f.write(f"{model.num_timesteps} {digest(model)}")
"""


def test_resume_from_a_distributed_checkpoint_equals_the_uninterrupted_run(tmp_path):
    run = script(tmp_path, SAVE_AND_RESUME)
    for mode in ("straight", "half", "resume"):
        torchrun(tmp_path, run, mode)
    straight = [(tmp_path / f"straight.{r}").read_text() for r in range(2)]
    resumed = [(tmp_path / f"resume.{r}").read_text() for r in range(2)]
    assert straight[0] == straight[1]  # the ranks hold one model
    assert resumed == straight and straight[0].startswith("1024 ")
    # a checkpoint of 2 ranks resumes with 2: with 3 every rank refuses, naming the counts
    failed = torchrun(tmp_path, run, "resume", nproc=3, check=False)
    assert failed.returncode != 0 and "written by 2 process(es) and this run has 3" in failed.stderr + failed.stdout


def test_a_dying_rank_ends_the_run(tmp_path):
    """Rank 1 dies mid-training: the launch ends with an error soon, instead of rank 0 waiting forever in
    a collective."""
    run = script(tmp_path, """
        import os
        import fastppo

        class Die(fastppo.Callback):
            def on_iteration_end(self, metrics):
                if self.model.reducer.rank == 1 and self.model.iteration == 2:
                    os._exit(3)
                return True

        fastppo.PPO("MlpPolicy", "CartPole-v1", n_steps=64, batch_size=64, seed=0).learn(10**7, callback=Die())
    """)
    start = time.monotonic()
    out = torchrun(tmp_path, run, check=False, timeout=180)
    assert out.returncode != 0
    assert time.monotonic() - start < 120
