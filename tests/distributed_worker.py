"""One rank of tests/test_distributed.py's two-rank run (launched by torchrun, cwd = the test's tmp_path):
runs every scenario in turn in one process group and writes what each rank saw to ``<rank>.pt``.

    python -m torch.distributed.run --nproc_per_node=2 distributed_worker.py DATA_FILE
"""

from __future__ import annotations

import hashlib
import os
import sys

import numpy as np
import torch

import fastppo
from fastppo import PPO, TRPO
from fastppo.algos.callbacks import Callback
from fastppo.algos.distributed import StatsMerge
from fastppo.algos.normalize import RunningMeanStd

# The update-equivalence cases: (name, class, kwargs per rank); tests/test_distributed.py runs the same
# with twice the envs and twice the batch in one process.
N_STEPS, NUM_ENVS = 16, 2
EQUIVALENCE = {
    "ppo-clip-native": (PPO, dict(ent_coef=0.01, clip_range_vf=0.2)),
    "ppo-clip-torch": (PPO, dict(ent_coef=0.01, clip_range_vf=0.2, backend="torch")),
    "ppo-kl-native": (PPO, dict(variant="kl", kl_target=1e-6)),
    "ppo-kl-torch": (PPO, dict(variant="kl", kl_target=1e-6, backend="torch")),
    "trpo-native": (TRPO, dict(n_critic_updates=1)),
    "trpo-torch": (TRPO, dict(n_critic_updates=1, backend="torch")),
}


def equivalence_model(name: str, world_size: int):
    """The case's model for ``world_size`` ranks (its envs and batch per rank)."""
    cls, kwargs = EQUIVALENCE[name]
    batch = dict(n_epochs=1) if cls is PPO else {}
    return cls("MlpPolicy", "CartPole-v1", n_steps=N_STEPS, num_envs=NUM_ENVS * 2 // world_size,
               batch_size=N_STEPS * NUM_ENVS * 2 // world_size, seed=0, **batch, **kwargs)


def fill(model, data: dict, columns: slice) -> None:
    """The model's rollout: ``columns`` (envs) of the fixed rollout ``data``."""
    for name, value in data.items():
        getattr(model.rollout, name)[:] = value[:, columns]


def digest(model) -> str:
    return hashlib.sha256(b"".join(p.detach().numpy().tobytes() for p in model.policy.parameters())).hexdigest()


class Recorder(Callback):
    """Per iteration: the parameters' digest and the rollout's observations' digest; asks to stop at the end
    of iteration ``stop_iteration`` on rank ``stop_rank``."""

    def __init__(self, stop_rank=-1, stop_iteration=None):
        super().__init__()
        self.stop_rank, self.stop_iteration = stop_rank, stop_iteration
        self.params, self.obs = [], []

    def on_iteration_end(self, metrics):
        self.params.append(digest(self.model))
        self.obs.append(hashlib.sha256(self.model.rollout.obs.numpy().tobytes()).hexdigest())
        return not (self.model.reducer.rank == self.stop_rank and len(self.params) == self.stop_iteration)


class StepStopper(Recorder):
    """A per-step callback that asks to stop at vector step ``stop_step`` on rank ``stop_rank``."""

    def __init__(self, stop_rank, stop_step):
        super().__init__(stop_rank)
        self.stop_step, self.steps = stop_step, 0

    def on_step(self):
        self.steps += 1
        return not (self.model.reducer.rank == self.stop_rank and self.steps == self.stop_step)


def learn_record(model, total, callback):
    model.learn(total, callback=callback)
    return {"params": callback.params, "obs": callback.obs, "num_timesteps": model.num_timesteps,
            "iterations": model.iteration, "final": digest(model)}


def main(data_file: str) -> None:
    torch.set_num_threads(1)
    data = torch.load(data_file)
    out = {}

    # 1. the update on each rank's half of a fixed rollout (saved parameters, compared with one process)
    for name in EQUIVALENCE:
        model = equivalence_model(name, 2)
        rank = model.reducer.rank
        fill(model, data, slice(rank * NUM_ENVS, (rank + 1) * NUM_ENVS))
        model._advantages()
        model._update(1.0)
        out[name] = {k: v.detach().clone() for k, v in model.policy.state_dict().items()}
        if name.startswith("ppo-kl"):
            out[name + " kl_coef"] = model.kl_coef

    # 2. a short learn with both normalisers: identical parameters every iteration, distinct episodes
    for backend in ("auto", "torch"):
        model = PPO("MlpPolicy", "CartPole-v1", n_steps=32, num_envs=2, batch_size=32, n_epochs=2, seed=3,
                    normalize_obs=True, normalize_reward=True, backend=backend)
        out[f"learn-{backend}"] = learn_record(model, 3 * 32 * 2 * 2, Recorder())
        out[f"learn-{backend}"]["obs_rms"] = model.obs_normalizer.rms.state_dict()
        out[f"learn-{backend}"]["ret_rms"] = model.reward_scaler.rms.state_dict()
        out[f"learn-{backend}"]["episodes"] = list(model.episode_returns)

    # 3. the normaliser merge against the statistics of the concatenated data
    rank = model.reducer.rank
    rms = RunningMeanStd((3,))
    merge = StatsMerge(model.reducer, [rms])
    rng = np.random.default_rng(rank)
    batches = []
    for _ in range(2):
        for size in (5 + rank * 7, 11):  # different amounts per rank, several updates between merges
            batches.append(rng.normal(rank, 1 + rank, (size, 3)))
            rms.update(batches[-1])
        merge.merge()
        out.setdefault("merge", []).append(rms.state_dict())
    out["merge-batches"] = batches

    # 4. target_kl: the KL every rank sees decides the stop, so every rank stops at the same minibatch
    for backend in ("auto", "torch"):
        model = PPO("MlpPolicy", "CartPole-v1", n_steps=64, num_envs=2, batch_size=16, n_epochs=10, seed=1,
                    learning_rate=3e-3, target_kl=0.002, backend=backend)
        model.learn(64 * 2 * 2)
        out[f"target-kl-{backend}"] = {"steps": model.optimizer.steps, "final": digest(model)}

    # 5. a callback stopping on rank 1 (per step mid-rollout, or at an iteration's end) stops every rank
    for kind, recorder in (("step", StepStopper(stop_rank=1, stop_step=40)),
                           ("iteration", Recorder(stop_rank=1, stop_iteration=2))):
        model = PPO("MlpPolicy", "CartPole-v1", n_steps=32, num_envs=2, batch_size=64, n_epochs=1, seed=2)
        out[f"stop-{kind}"] = learn_record(model, 10 * 32 * 2 * 2, recorder)

    # 6. a hyperparameter that differs on rank 1: refused on every rank
    try:
        PPO("MlpPolicy", "CartPole-v1", n_steps=32, num_envs=2, learning_rate=1e-3 if rank else 3e-4, seed=0)
        out["mismatch"] = None
    except ValueError as e:
        out["mismatch"] = str(e)

    # 7. the native kernels' threads: this rank's share of the cores it may run on
    out["cores"] = len(os.sched_getaffinity(0))
    out["native-threads"], out["reducer-threads"] = fastppo.get_num_threads(), model.reducer.threads
    from test_cnn import pixel_cue  # a 36x36 image task: its CnnPolicy keeps torch's threads, this rank's share

    out["cnn-torch-threads"] = PPO("CnnPolicy", pixel_cue(2), n_steps=8, seed=0).torch_threads

    torch.save(out, f"{rank}.pt")


if __name__ == "__main__":
    main(sys.argv[1])
