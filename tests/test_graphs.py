"""PPO's update replayed from CUDA graphs (fastppo/algos/graphs.py, ``cuda_graphs``).

A CUDA graph freezes every Python number its step read at capture and re-reads its tensors at each
replay. On the CPU, :func:`traced_capture` gives a captured step those semantics (``make_fx`` records the
step's aten ops, with Python values as constants and the tensors it touched by reference), so the graphed
updater runs here against the eager one: a number that should move between replays but lives on the host
would freeze and the parameters would part. The GPU tests below capture for real (``bench/gpu_check.sh``).
"""

import types
import warnings

import pytest
import torch
from torch.fx.experimental.proxy_tensor import make_fx

import fastppo
from conftest import RecordMetrics, assert_solves_cartpole
from fastppo.algos import graphs
from fastppo.algos.graphs import CaptureError, critic_blocker, rollout_blocker, update_blocker
from fastppo.algos.optim import FlatAdam
from fastppo.algos.ppo import GraphedPpoUpdater
from fastppo.algos.resident import ResidentCollector
from fastppo.algos.rollout import TorchActor
from fastppo.algos.trpo import GraphedCriticFit

pytestmark = pytest.mark.filterwarnings("ignore:You have specified a mini-batch size of 40")

HAS_CUDA = fastppo.backends()["cuda"].available
needs_cuda = pytest.mark.skipif(not HAS_CUDA, reason="needs a CUDA device and fastppo's CUDA kernels")
needs_native_envs = pytest.mark.skipif(not (fastppo.backends()["numba"].available
                                            and fastppo.backends()["cpp"].available),
                                       reason="needs the native envs, and numba for a torch-path trainer on them")

# 3 full minibatches of 40 and a truncated one of 8 per epoch; schedules, so each iteration captures anew
SMALL = dict(n_steps=32, num_envs=4, batch_size=40, n_epochs=3, seed=0, backend="torch", learning_rate="lin_1e-3",
             clip_range="lin_0.3", clip_range_vf=0.5, ent_coef=0.01)


def traced_capture(counts: dict):
    """:func:`fastppo.algos.graphs.capture` for the CPU: the step runs once while make_fx records it,
    and the replay runs the record (under no_grad: the record holds the backward's ops themselves)."""
    def capture(step, device, generators=()):
        record = make_fx(lambda: step())()  # (a lambda: make_fx counts a bound method's self)
        counts["captures"] += 1

        def replay():
            counts["replays"] += 1
            with torch.no_grad():
                record()
        return replay
    return capture


def graphed(monkeypatch, **kwargs) -> tuple[fastppo.PPO, dict]:
    counts = {"captures": 0, "replays": 0}
    monkeypatch.setattr(graphs, "capture", traced_capture(counts))
    model = fastppo.PPO("MlpPolicy", "CartPole-v1", **{**SMALL, **kwargs})
    model.updater = GraphedPpoUpdater(model)
    return model, counts


def assert_same_training(a, b, optimizer: str = "optimizer") -> None:
    for (name, x), y in zip(a.policy.state_dict().items(), b.policy.state_dict().values()):
        torch.testing.assert_close(y, x, rtol=1e-5, atol=1e-6, msg=name)
    assert getattr(a, optimizer).steps == getattr(b, optimizer).steps


@pytest.mark.parametrize("variant", ["clip", "kl"])
def test_the_graphed_update_trains_as_the_eager_one(monkeypatch, variant):
    steps = 3 * SMALL["n_steps"] * SMALL["num_envs"]
    eager = fastppo.PPO("MlpPolicy", "CartPole-v1", variant=variant, **SMALL)
    eager.learn(steps, progress_bar=False)
    model, counts = graphed(monkeypatch, variant=variant)
    model.learn(steps, progress_bar=False)
    assert counts == {"captures": 3, "replays": 3 * (3 * 3 - 1)}  # per iteration: one capture, the rest replayed
    assert_same_training(eager, model)
    assert model.optimizer.steps == 3 * 3 * 4  # the truncated minibatches counted too


def test_the_graphed_update_logs_the_eager_metrics(monkeypatch):
    eager_metrics, graphed_metrics = RecordMetrics(), RecordMetrics()
    fastppo.PPO("MlpPolicy", "CartPole-v1", **SMALL).learn(256, callback=eager_metrics, progress_bar=False)
    model, _ = graphed(monkeypatch)
    model.learn(256, callback=graphed_metrics, progress_bar=False)
    for a, b in zip(eager_metrics.seen, graphed_metrics.seen):
        train = {k: v for k, v in a.items() if k.startswith("train/")}
        assert train and train.keys() == {k for k in b if k.startswith("train/")}
        for k, v in train.items():
            assert b[k] == pytest.approx(v, rel=1e-5, abs=1e-7), k


@needs_native_envs
def test_a_graphed_run_resumes_as_if_never_interrupted(monkeypatch, tmp_path):
    """Adam's step count lives on the device between replays and on the host in checkpoints: a run saved
    halfway and resumed (its update graphed again) ends with the uninterrupted run's weights, bit for bit
    (on the native envs, whose state the checkpoint holds; the torch path's gymnasium envs restart)."""
    from conftest import SaveAndStop

    steps = 4 * SMALL["n_steps"] * SMALL["num_envs"]
    straight, _ = graphed(monkeypatch, backend="numba")
    halfway, _ = graphed(monkeypatch, backend="numba")
    for model in (straight, halfway):
        model.backend = "torch"  # the native envs, with the torch loss: make_fx cannot trace Numba's
    straight.learn(steps, progress_bar=False)
    halfway.learn(steps, callback=SaveAndStop(tmp_path / "half.pt"), progress_bar=False)
    resumed = fastppo.PPO.load(tmp_path / "half.pt")
    resumed.backend = "torch"
    resumed.updater = GraphedPpoUpdater(resumed)
    resumed.learn(steps // 2, progress_bar=False, reset_num_timesteps=False)
    assert resumed.optimizer.steps == straight.optimizer.steps
    for (name, a), b in zip(straight.policy.state_dict().items(), resumed.policy.state_dict().values()):
        torch.testing.assert_close(b, a, rtol=0, atol=0, msg=name)


def test_a_python_number_is_frozen_by_the_capture(monkeypatch):
    """The CPU capture is as strict as CUDA's: Adam's host step count would freeze at capture (and the
    bias correction with it), so FlatAdam.step in the graphed step trains differently."""
    eager = fastppo.PPO("MlpPolicy", "CartPole-v1", **SMALL).learn(256, progress_bar=False)
    monkeypatch.setattr(FlatAdam, "step_on_device", lambda self, count, max_grad_norm=None: self.step(max_grad_norm))
    model, _ = graphed(monkeypatch)
    model.learn(256, progress_bar=False)
    differs = [not torch.allclose(a, b, rtol=1e-5, atol=1e-6)
               for a, b in zip(eager.policy.state_dict().values(), model.policy.state_dict().values())]
    assert any(differs)


def test_a_capture_that_fails_warns_and_the_update_runs_eagerly(monkeypatch):
    def failing(step, device, generators=()):
        step()  # the warm-up ran
        raise CaptureError("RuntimeError: operation not permitted when stream is capturing")

    eager = fastppo.PPO("MlpPolicy", "CartPole-v1", **SMALL).learn(256, progress_bar=False)
    model = fastppo.PPO("MlpPolicy", "CartPole-v1", **SMALL)
    model.updater = GraphedPpoUpdater(model)
    monkeypatch.setattr(graphs, "capture", failing)
    with pytest.warns(RuntimeWarning, match="could not be captured as a CUDA graph .*not permitted when stream is "
                                            "capturing.*runs without graphs"):
        model.learn(256, progress_bar=False)
    assert "not permitted" in model.updater.graph.failure
    assert_same_training(eager, model)


def test_the_graphed_updater_solves_cartpole(monkeypatch):
    counts = {"captures": 0, "replays": 0}
    monkeypatch.setattr(graphs, "capture", traced_capture(counts))
    # the preset with constant rates (it solves with them too): one capture for the run, as on a GPU
    model = fastppo.PPO("MlpPolicy", "CartPole-v1", **{**fastppo.presets.get("CartPole-v1"), "seed": 0,
                                                        "backend": "torch", "learning_rate": 1e-3, "clip_range": 0.2})
    model.updater = GraphedPpoUpdater(model)
    model.learn(60_000, progress_bar=False)
    assert counts["captures"] == 1 and counts["replays"] > 1000
    assert_solves_cartpole(model, "PPO with its update replayed from captured graphs")


def fake_algo(**changes):
    config = fastppo.algos.config.PPOConfig(batch_size=64)
    algo = types.SimpleNamespace(config=config, device=torch.device("cuda"), reducer=types.SimpleNamespace(local=True),
                                 optimizer=FlatAdam.__new__(FlatAdam), critic_optimizer=FlatAdam.__new__(FlatAdam),
                                 rollout_size=256)
    for name, value in changes.items():
        setattr(algo if hasattr(algo, name) else config, name, value)
    return algo


@pytest.mark.parametrize("changes, reason", [
    ({}, None),
    ({"cuda_graphs": False}, "cuda_graphs=False"),
    ({"device": torch.device("cpu")}, "the policy is on cpu"),
    ({"reducer": types.SimpleNamespace(local=False)}, "data-parallel"),
    ({"target_kl": 0.02}, "target_kl"),
    ({"torch_compile": True}, "torch_compile"),
    ({"optimizer": object()}, "not fastppo's Adam"),
    ({"rollout_size": 100}, "fewer than two full minibatches"),
])
def test_where_the_update_takes_graphs(changes, reason):
    blocker = update_blocker(fake_algo(**changes))
    assert blocker is None if reason is None else reason in blocker


@pytest.mark.parametrize("changes, reason", [
    ({}, None),
    ({"use_sde": True}, "use_sde"),
    ({"torch_compile": True}, "torch_compile"),
    ({"device": torch.device("cpu")}, "the policy is on cpu"),
    ({"reducer": types.SimpleNamespace(local=False), "target_kl": 0.02, "rollout_size": 10}, None),  # update only
])
def test_where_the_rollout_takes_graphs(changes, reason):
    blocker = rollout_blocker(fake_algo(**changes))
    assert blocker is None if reason is None else reason in blocker


def test_at_verbose_1_a_gpu_run_says_why_graphs_do_not_apply(capsys):
    algo = fake_algo(verbose=1, target_kl=0.02, reducer=types.SimpleNamespace(local=True, rank=0))
    assert not graphs.applies(algo, update_blocker(algo), "the update")
    assert graphs.applies(algo, rollout_blocker(algo), "the rollout")
    assert capsys.readouterr().out == ("cuda_graphs: the update runs without CUDA graphs (target_kl: whether to "
                                       "step is decided on the host after each minibatch)\n")
    algo.config.verbose = 0
    assert not graphs.applies(algo, update_blocker(algo), "the update") and capsys.readouterr().out == ""


# -- the rollout's policy step, on the resident loop over the native CPU envs (as tests/test_resident.py) ----

ROLLOUT = dict(n_steps=150, num_envs=3, batch_size=150, seed=11, backend="numba")


def resident(model, graphed: bool):
    """``model`` collecting with the resident loop over its CPU env, its policy step graphed or not."""
    model._actor = TorchActor(model)
    collector = model._collectors[False] = ResidentCollector(model, model._actor)
    if graphed:  # graphs apply (on the CPU: through the traced capture)
        collector.graph = graphs.Replayed(model.rollout.obs[0], "the rollout's policy step", (model._generator,))
    return collector


@needs_native_envs
@pytest.mark.parametrize("algo, env_id", [("PPO", "CartPole-v1"), ("PPO", "Pendulum-v1"), ("TRPO", "CartPole-v1")])
def test_the_graphed_rollout_is_the_eager_one_bit_for_bit(monkeypatch, algo, env_id):
    """Sampling included: the replay draws from the model's generator as the eager steps do. Pendulum's
    time limit (200) falls inside the 2 x 150 steps."""
    counts = {"captures": 0, "replays": 0}
    monkeypatch.setattr(graphs, "capture", traced_capture(counts))
    eager, model = (getattr(fastppo, algo)("MlpPolicy", env_id, **ROLLOUT) for _ in range(2))
    resident(eager, graphed=False)
    collector = resident(model, graphed=True)
    for m in (eager, model):
        m.learn(2 * 150 * 3, progress_bar=False)
    assert counts == {"captures": 1, "replays": 2 * 150 - 1} and collector.graph.replay is not None
    for name in ("obs", "actions", "log_probs", "values", "dist_params", "rewards", "advantages"):
        assert torch.equal(getattr(model.rollout, name), getattr(eager.rollout, name)), name
    for a, b in zip(eager.policy.state_dict().values(), model.policy.state_dict().values()):
        assert torch.equal(a, b)
    assert torch.equal(model._generator.get_state(), eager._generator.get_state())
    assert list(model.episode_returns) == list(eager.episode_returns)


@needs_native_envs
def test_a_rollout_capture_that_fails_warns_and_the_rollout_runs_eagerly(monkeypatch):
    def failing(step, device, generators=()):
        step()
        raise CaptureError("RuntimeError: operation not permitted when stream is capturing")

    monkeypatch.setattr(graphs, "capture", failing)
    eager, model = (fastppo.PPO("MlpPolicy", "CartPole-v1", **ROLLOUT) for _ in range(2))
    resident(eager, graphed=False)
    collector = resident(model, graphed=True)
    eager.learn(2 * 150 * 3, progress_bar=False)
    with pytest.warns(RuntimeWarning, match="rollout's policy step could not be captured .*not permitted"):
        model.learn(2 * 150 * 3, progress_bar=False)
    assert "not permitted" in collector.graph.failure
    assert torch.equal(model.rollout.actions, eager.rollout.actions)


@needs_native_envs
def test_the_graphed_rollout_solves_cartpole(monkeypatch):
    counts = {"captures": 0, "replays": 0}
    monkeypatch.setattr(graphs, "capture", traced_capture(counts))
    model = fastppo.PPO("MlpPolicy", "CartPole-v1", **{**fastppo.presets.get("CartPole-v1"), "seed": 0,
                                                        "backend": "numba"})
    resident(model, graphed=True)
    model.learn(60_000, progress_bar=False)
    assert counts["captures"] == 1 and counts["replays"] > 5000
    assert_solves_cartpole(model, "PPO with its rollout's policy step replayed from a captured graph")


# -- TRPO's critic regression ------------------------------------------------------------------------------

@pytest.mark.parametrize("changes, reason", [
    ({}, None),
    ({"target_kl": 0.02}, None),  # TRPO's is the line search's bound, not a per-minibatch decision
    ({"critic_optimizer": object()}, "not fastppo's Adam"),
    ({"reducer": types.SimpleNamespace(local=False)}, "data-parallel"),
    ({"cuda_graphs": False}, "cuda_graphs=False"),
])
def test_where_the_critic_takes_graphs(changes, reason):
    blocker = critic_blocker(fake_algo(**changes))
    assert blocker is None if reason is None else reason in blocker


def graphed_trpo(monkeypatch, **kwargs) -> tuple[fastppo.TRPO, dict]:
    counts = {"captures": 0, "replays": 0}
    monkeypatch.setattr(graphs, "capture", traced_capture(counts))
    model = fastppo.TRPO("MlpPolicy", "CartPole-v1", **kwargs)
    model.critic_updater = GraphedCriticFit(model)
    return model, counts


def test_the_graphed_critic_trains_as_the_eager_one(monkeypatch):
    # 3 full minibatches of 40 and one of 8 per pass, 3 passes; a learning-rate schedule: a capture per iteration
    kwargs = dict(n_steps=32, num_envs=4, batch_size=40, n_critic_updates=3, seed=0, backend="torch",
                  learning_rate="lin_1e-3")
    eager = fastppo.TRPO("MlpPolicy", "CartPole-v1", **kwargs).learn(3 * 128, progress_bar=False)
    model, counts = graphed_trpo(monkeypatch, **kwargs)
    model.learn(3 * 128, progress_bar=False)
    assert counts == {"captures": 3, "replays": 3 * (3 * 3 - 1)}
    assert_same_training(eager, model, "critic_optimizer")


def test_the_graphed_critic_solves_cartpole(monkeypatch):
    model, counts = graphed_trpo(monkeypatch, **{**fastppo.presets.get("CartPole-v1", "trpo"), "seed": 0,
                                                 "backend": "torch"})
    model.learn(fastppo.presets.total_timesteps("CartPole-v1", "trpo"), progress_bar=False)
    assert counts["replays"] > 10 * counts["captures"] > 0
    assert_solves_cartpole(model, "TRPO with its critic's regression replayed from captured graphs")


def test_the_cpu_trainer_takes_no_graphs():
    model = fastppo.PPO("MlpPolicy", "CartPole-v1", **SMALL)
    assert not isinstance(model.updater, GraphedPpoUpdater)


def test_cuda_graphs_must_be_a_bool():
    with pytest.raises(ValueError, match="cuda_graphs must be True or False, got 'yes'"):
        fastppo.PPO("MlpPolicy", "CartPole-v1", cuda_graphs="yes")


# -- on a GPU: the capture itself --------------------------------------------------------------------------

GPU = dict(n_steps=16, num_envs=64, batch_size=256, n_epochs=4, seed=0, device="cuda", learning_rate="lin_1e-3")


@needs_cuda
def test_on_a_gpu_the_graphed_update_trains_as_the_eager_one():
    eager = fastppo.PPO("MlpPolicy", "CartPole-v1", cuda_graphs=False, **GPU).learn(3 * 1024, progress_bar=False)
    model = fastppo.PPO("MlpPolicy", "CartPole-v1", **GPU)
    assert isinstance(model.updater, GraphedPpoUpdater)
    model.learn(3 * 1024, progress_bar=False)
    assert model.updater.graph.replay is not None and model.updater.graph.failure is None
    assert_same_training(eager, model)


@needs_cuda
def test_on_a_gpu_a_module_that_syncs_falls_back_with_the_reason():
    class Syncs(torch.nn.Module):
        def __init__(self):
            super().__init__()
            self.pi, self.v = torch.nn.Linear(4, 2), torch.nn.Linear(4, 1)

        def forward(self, obs):
            if obs.abs().max().item() > 1e6:  # a host sync: not capturable
                raise ValueError("huge observation")
            return self.pi(obs), self.v(obs).squeeze(-1)

    model = fastppo.PPO(Syncs(), "CartPole-v1", **GPU)
    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always")
        model.learn(2 * 1024, progress_bar=False)
    assert model.updater.graph.failure is not None
    assert any("could not be captured as a CUDA graph" in str(w.message) for w in caught)


@needs_cuda
def test_on_a_gpu_the_graphed_update_solves_cartpole():
    model = fastppo.PPO("MlpPolicy", "CartPole-v1", device="cuda", **{**fastppo.presets.get("CartPole-v1"), "seed": 0})
    assert isinstance(model.updater, GraphedPpoUpdater)
    model.learn(60_000, progress_bar=False)
    assert model.updater.graph.failure is None
    assert_solves_cartpole(model, "PPO on a GPU with CUDA graphs")


@needs_cuda
def test_on_a_gpu_the_graphed_rollout_is_the_eager_one_bit_for_bit():
    """The replay draws from the model's generator (registered with the graph) as the eager steps do."""
    eager, model = (fastppo.PPO("MlpPolicy", "CartPole-v1", cuda_graphs=graphed, **GPU) for graphed in (False, True))
    for m in (eager, model):
        m._reset_envs()
        assert m._collect(None)
    assert model._collector(None).graph.replay is not None and eager._collector(None).graph is None
    for name in ("obs", "actions", "log_probs", "values", "dist_params", "rewards", "terminated"):
        assert torch.equal(getattr(model.rollout, name), getattr(eager.rollout, name)), name
    assert torch.equal(model._generator.get_state(), eager._generator.get_state())


@needs_cuda
def test_on_a_gpu_the_graphed_rollout_replays_without_a_host_sync():
    model = fastppo.PPO("MlpPolicy", "CartPole-v1", **GPU)
    model._reset_envs()
    assert model._collect(None)  # the capture (it synchronises once)
    collector, obs = model._collector(None), model._last_obs
    torch.cuda.synchronize()
    torch.cuda.set_sync_debug_mode("error")  # any host sync in the replays raises
    try:
        with torch.inference_mode():  # as _collect runs (the collector's tensors were made in it)
            collector.row.zero_()
            for t in range(model.n_steps):
                obs, *_ = model.env.step_sampled(collector._act(t, obs))
    finally:
        torch.cuda.set_sync_debug_mode("default")
    assert collector.graph.failure is None


@needs_cuda
def test_on_a_gpu_trpo_with_graphs_trains_as_without():
    kwargs = dict(n_steps=16, num_envs=64, batch_size=256, n_critic_updates=4, seed=0, device="cuda")
    eager = fastppo.TRPO("MlpPolicy", "CartPole-v1", cuda_graphs=False, **kwargs).learn(3 * 1024, progress_bar=False)
    model = fastppo.TRPO("MlpPolicy", "CartPole-v1", **kwargs)
    assert isinstance(model.critic_updater, GraphedCriticFit)
    model.learn(3 * 1024, progress_bar=False)
    assert model.critic_updater.graph.replay is not None and model._collector(None).graph.replay is not None
    assert_same_training(eager, model, "critic_optimizer")
