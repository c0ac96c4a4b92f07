"""Data-parallel training (fastppo/algos/distributed.py) with two gloo ranks on the CPU: one torchrun launch
of tests/distributed_worker.py runs every scenario (bounded: collectives time out after 30 s, the launch
after 120 s), and the tests below check what each rank wrote against one process."""

from __future__ import annotations

import os
import socket
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest
import torch

sys.path.insert(0, str(Path(__file__).parent))
import distributed_worker as worker  # noqa: E402

from fastppo.algos.distributed import Reducer, StatsMerge, describe, is_main  # noqa: E402
from fastppo.algos.normalize import RunningMeanStd  # noqa: E402

pytestmark = pytest.mark.skipif(not torch.distributed.is_available(), reason="torch.distributed is not built")


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def _fixed_rollout() -> dict[str, torch.Tensor]:
    """A rollout of 4 envs, from the cases' common initial policy (so the update's ratios start at 1)."""
    model = worker.equivalence_model("ppo-clip-torch", 1)
    g = torch.Generator().manual_seed(7)
    T, N = worker.N_STEPS, 2 * worker.NUM_ENVS
    obs = torch.randn(T, N, 4, generator=g)
    actions = torch.randint(0, 2, (T, N), generator=g)
    with torch.no_grad():
        params, values = model.policy(obs.reshape(T * N, 4))
        log_probs = model.action_spec.distribution(params).log_prob(actions.reshape(-1))
    values = values.reshape(T, N)
    next_values = torch.cat([values[1:], torch.randn(1, N, generator=g)])
    return {"obs": obs, "actions": actions, "log_probs": log_probs.reshape(T, N), "values": values,
            "dist_params": params.reshape(T, N, -1), "rewards": torch.randn(T, N, generator=g),
            "terminated": torch.rand(T, N, generator=g) < 0.1, "truncated": torch.zeros(T, N, dtype=torch.bool),
            "final_values": torch.zeros(T, N), "next_values": next_values}


@pytest.fixture(scope="module")
def ranks(tmp_path_factory):
    """What each of the two ranks wrote ([rank 0's, rank 1's])."""
    tmp = tmp_path_factory.mktemp("distributed")
    data = _fixed_rollout()
    torch.save(data, tmp / "data.pt")
    # the installed package (cwd and PYTHONPATH outside the source tree, which has no compiled extension)
    env = {**os.environ, "FASTPPO_DIST_TIMEOUT": "30", "GLOO_SOCKET_IFNAME": "lo", "OMP_NUM_THREADS": "1"}
    cmd = [sys.executable, "-m", "torch.distributed.run", "--nproc_per_node=2", f"--master_port={_free_port()}",
           str(Path(worker.__file__)), str(tmp / "data.pt")]
    try:
        done = subprocess.run(cmd, cwd=tmp, env=env, capture_output=True, text=True, timeout=120)
    except subprocess.TimeoutExpired as e:
        pytest.fail(f"the two-rank run did not finish in 120 s (a hang):\n{e.stderr}")
    assert done.returncode == 0, f"the two-rank run failed:\n{done.stdout[-4000:]}\n{done.stderr[-8000:]}"
    return [torch.load(tmp / f"{rank}.pt", weights_only=False) for rank in range(2)], data


@pytest.mark.parametrize("name", list(worker.EQUIVALENCE))
def test_two_ranks_update_as_one_process_with_twice_the_batch(ranks, name):
    """Each rank updates on its half of a fixed rollout (B samples); one process on the whole (2B): the
    same parameters (the gradient averaged before clipping, the advantages normalised with both halves'
    moments, PPO-KL's beta from both halves' KL, TRPO's reduced gradient, FVPs and line search)."""
    (r0, r1), data = ranks
    model = worker.equivalence_model(name, 1)
    worker.fill(model, data, slice(None))
    model._advantages()
    model._update(1.0)
    before = worker.equivalence_model(name, 1).policy.state_dict()
    for key, want in model.policy.state_dict().items():
        assert torch.equal(r0[name][key], r1[name][key]), f"{key} differs between the ranks"
        torch.testing.assert_close(r0[name][key], want, rtol=1e-5, atol=1e-6, msg=lambda m: f"{key}: {m}")
    assert any(not torch.equal(before[k], v) for k, v in model.policy.state_dict().items())  # it did update
    if name.startswith("ppo-kl"):
        assert r0[name + " kl_coef"] == r1[name + " kl_coef"] == model.kl_coef != model.config.kl_coef


@pytest.mark.parametrize("backend", ["auto", "torch"])
def test_parameters_identical_every_iteration_and_ranks_see_different_episodes(ranks, backend):
    (r0, r1), _ = ranks
    a, b = r0[f"learn-{backend}"], r1[f"learn-{backend}"]
    assert a["iterations"] == b["iterations"] == 3
    assert a["num_timesteps"] == b["num_timesteps"] == 3 * 32 * 2 * 2  # global: both ranks' steps
    assert a["params"] == b["params"] and len(set(a["params"])) == 3
    assert all(x != y for x, y in zip(a["obs"], b["obs"]))  # every rollout differs between the ranks
    assert a["episodes"] != b["episodes"]
    for key in ("obs_rms", "ret_rms"):  # the normalisers merged: the same statistics on both ranks
        for field in ("mean", "var", "count"):
            np.testing.assert_array_equal(a[key][field], b[key][field])
    # every observation counted once: the reset (2 envs) and 3 rollouts of 32 steps of 2 envs, per rank
    assert a["obs_rms"]["count"] == pytest.approx(2 * (2 + 3 * 32 * 2) + 1e-4)


def test_normaliser_merge_equals_the_statistics_of_the_concatenated_data(ranks):
    (r0, r1), _ = ranks
    reference = RunningMeanStd((3,))
    batches = [r0["merge-batches"], r1["merge-batches"]]
    for k in range(2):
        reference.update(np.concatenate([b for rank in batches for b in rank[2 * k:2 * k + 2]]))
        for got in (r0["merge"][k], r1["merge"][k]):
            np.testing.assert_allclose(got["mean"], reference.mean, rtol=1e-12)
            np.testing.assert_allclose(got["var"], reference.var, rtol=1e-12)
            assert got["count"] == pytest.approx(reference.count, rel=1e-15)


@pytest.mark.parametrize("backend", ["auto", "torch"])
def test_target_kl_stops_every_rank_at_the_same_minibatch(ranks, backend):
    (r0, r1), _ = ranks
    a, b = r0[f"target-kl-{backend}"], r1[f"target-kl-{backend}"]
    assert a == b
    assert 0 < a["steps"] < 10 * 128 // 16  # it stopped early, at the same Adam step on both ranks


@pytest.mark.parametrize("kind", ["step", "iteration"])
def test_a_callback_stopping_on_rank_1_stops_every_rank(ranks, kind):
    """A per-step stop takes effect at the rollout's end (the update of that rollout is not run), an
    iteration-end stop at once; both ranks end at the same point with the same parameters."""
    (r0, r1), _ = ranks
    a, b = r0[f"stop-{kind}"], r1[f"stop-{kind}"]
    assert a == {**b, "obs": a["obs"]}
    iterations = 1 if kind == "step" else 2
    assert a["iterations"] == iterations and a["num_timesteps"] == 2 * 32 * 2 * 2


def test_mismatched_hyperparameters_are_refused_on_every_rank(ranks):
    (r0, r1), _ = ranks
    assert r0["mismatch"] == r1["mismatch"]
    assert "learning_rate: rank 0 has 0.0003, rank 1 has 0.001" in r0["mismatch"]


def test_each_rank_takes_its_share_of_the_cores(ranks):
    """Two ranks on one machine: the native kernels (and torch, for networks over pixels) get half the cores
    the process may run on, not the machine's count."""
    (r0, r1), _ = ranks
    for seen in (r0, r1):
        share = max(1, seen["cores"] // 2)
        assert seen["reducer-threads"] == seen["native-threads"] == seen["cnn-torch-threads"] == share


def test_one_process_reducer_is_the_identity():
    """Without torchrun nothing is reduced or voted, and the run is the main one."""
    reducer, x = Reducer(), torch.arange(3.0)
    assert reducer.local and (reducer.rank, reducer.world_size) == (0, 1)
    assert reducer.mean(x) is x and reducer.sum(x) is x and reducer.gradients(x, 0.5) == 0.5
    assert reducer.any(True) and not reducer.any(False) and reducer.gather_objects("a") == ["a"]
    rms = RunningMeanStd((2,))
    rms.update(np.ones((4, 2)))
    StatsMerge(reducer, [rms]).merge()  # the identity's sum: the statistics stay what they are
    np.testing.assert_allclose(rms.mean, 4 / (4 + 1e-4))

    class Model:
        reducer = Reducer()

    assert is_main(Model())


def test_describe_names_functions_the_same_in_every_process():
    def schedule(progress):
        return progress

    assert describe(schedule) == f"{__name__}.test_describe_names_functions_the_same_in_every_process.<locals>.schedule"
    assert describe({"net_arch": [64, 64], "activation_fn": torch.nn.Tanh}) == (
        "{'net_arch': [64, 64], 'activation_fn': <class 'torch.nn.modules.activation.Tanh'>}")
