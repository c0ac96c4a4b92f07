"""The trainer's Stable-Baselines3 surface: constructor and learn() signatures with SB3's order, defaults and
meanings, the logger (keys, table, CSV, TensorBoard run folders), schedules' timing, get/set methods,
save/load suffixes, and callbacks (SB3's, functions, fastppo's own built-ins)."""

import csv
import inspect
import os

import gymnasium as gym
import numpy as np
import pytest
import torch

import fastppo
from fastppo.algos.logger import configure

sb3 = pytest.importorskip("stable_baselines3")
sb3_callbacks = pytest.importorskip("stable_baselines3.common.callbacks")

SMALL = dict(n_steps=32, batch_size=64, n_epochs=2, num_envs=4, seed=0)


def test_constructor_signatures_follow_sb3():
    for ours, theirs in ((fastppo.PPO, sb3.PPO),):
        mine = list(inspect.signature(ours.__init__).parameters)
        sb3_names = list(inspect.signature(theirs.__init__).parameters)
        assert mine[:len(sb3_names)] == sb3_names  # same positional order
        for name, p in inspect.signature(theirs.__init__).parameters.items():
            if p.default is not inspect.Parameter.empty and name not in ("device",):
                assert inspect.signature(ours.__init__).parameters[name].default == p.default, name
    contrib = pytest.importorskip("sb3_contrib")
    mine = list(inspect.signature(fastppo.TRPO.__init__).parameters)
    assert mine[:len(inspect.signature(contrib.TRPO.__init__).parameters)] == list(
        inspect.signature(contrib.TRPO.__init__).parameters)
    assert list(inspect.signature(fastppo.PPO.learn).parameters)[:7] == list(inspect.signature(sb3.PPO.learn).parameters)


def test_positional_hyperparameters_and_sb3_only_arguments():
    model = fastppo.PPO("MlpPolicy", "CartPole-v1", 1e-3, 64, 32, 3, num_envs=2)
    assert (model.learning_rate, model.n_steps, model.batch_size, model.n_epochs) == (1e-3, 64, 32, 3)
    with pytest.raises(TypeError, match="multiple values for argument 'n_steps'"):
        fastppo.PPO("MlpPolicy", "CartPole-v1", 1e-3, 64, n_steps=32)
    with pytest.raises(TypeError, match="at most"):
        fastppo.PPO("MlpPolicy", "CartPole-v1", *range(30))
    fastppo.PPO("MlpPolicy", "CartPole-v1", rollout_buffer_class=None, rollout_buffer_kwargs=None,
                _init_setup_model=True, stats_window_size=5, verbose=0)
    with pytest.raises(ValueError, match="rollout_buffer_class"):
        fastppo.PPO("MlpPolicy", "CartPole-v1", rollout_buffer_class=object)
    with pytest.raises(ValueError, match="verbose"):
        fastppo.PPO("MlpPolicy", "CartPole-v1", verbose=-1)


def test_num_envs_is_for_env_ids_only():
    from stable_baselines3.common.env_util import make_vec_env

    with pytest.raises(ValueError, match="num_envs=4 applies to an env id"):
        fastppo.PPO("MlpPolicy", make_vec_env("CartPole-v1", n_envs=2), num_envs=4)
    assert fastppo.PPO("MlpPolicy", make_vec_env("CartPole-v1", n_envs=2), num_envs=2).num_envs == 2


def test_device_auto_and_cuda_fallback():
    assert fastppo.PPO("MlpPolicy", "CartPole-v1").device == torch.device("cpu")
    if not torch.cuda.is_available():
        with pytest.warns(UserWarning, match="CUDA is not available"):
            model = fastppo.PPO("MlpPolicy", "CartPole-v1", device="cuda")
        assert model.device == torch.device("cpu")
    with pytest.raises(ValueError, match="device"):
        fastppo.PPO("MlpPolicy", "CartPole-v1", device="gpu0")


def test_verbose_prints_sb3_table(capsys):
    fastppo.PPO("MlpPolicy", "CartPole-v1", verbose=1, **SMALL).learn(256)
    out = capsys.readouterr().out
    assert "Using cpu device" in out
    for key in ("rollout/", "ep_rew_mean", "time/", "fps", "train/", "approx_kl", "clip_fraction", "entropy_loss",
                "explained_variance", "value_loss", "policy_gradient_loss", "n_updates", "learning_rate"):
        assert key in out, key
    fastppo.PPO("MlpPolicy", "CartPole-v1", **SMALL).learn(256)
    assert capsys.readouterr().out == ""  # verbose=0 is quiet


def _csv(path):
    with open(path) as f:
        return list(csv.DictReader(f))


def test_csv_keys_are_sb3s_and_custom_scalars_reach_it(tmp_path):
    class Custom(fastppo.Callback):
        def on_rollout_end(self):
            self.logger.record("custom/answer", 42)

    model = fastppo.PPO("MlpPolicy", "CartPole-v1", log_dir=str(tmp_path), **SMALL)
    model.learn(512, callback=Custom(), log_interval=2)
    rows = _csv(tmp_path / "progress.csv")
    assert len(rows) == 2  # 4 iterations, every second logged
    for key in ("time/total_timesteps", "time/iterations", "time/fps", "rollout/ep_rew_mean", "train/value_loss",
                "train/clip_range", "train/n_updates", "custom/answer"):
        assert key in rows[0], key
    assert [int(r["time/total_timesteps"]) for r in rows] == [256, 512]
    assert [int(r["train/n_updates"]) for r in rows] == [4, 8]  # SB3 counts epochs
    assert rows[1]["custom/answer"] == "42"


def test_tensorboard_run_folders_as_sb3(tmp_path):
    pytest.importorskip("tensorboard")
    model = fastppo.PPO("MlpPolicy", "CartPole-v1", tensorboard_log=str(tmp_path), **SMALL)
    model.learn(128)
    model.learn(128)
    model.learn(128, reset_num_timesteps=False)  # continues the latest run's folder
    model.learn(128, tb_log_name="mine")
    assert sorted(os.listdir(tmp_path)) == ["PPO_1", "PPO_2", "mine_1"]
    assert all(os.listdir(tmp_path / d) for d in os.listdir(tmp_path))


def test_set_logger_takes_sb3s_logger(tmp_path):
    from stable_baselines3.common.logger import configure as sb3_configure

    model = fastppo.PPO("MlpPolicy", "CartPole-v1", **SMALL)
    theirs = sb3_configure(str(tmp_path), ["csv"])
    model.set_logger(theirs)
    model.learn(256)
    theirs.close()
    rows = _csv(tmp_path / "progress.csv")
    assert len(rows) == 2 and "train/approx_kl" in rows[0]
    ours = configure(str(tmp_path / "ours"), ["csv"])
    model.set_logger(ours)
    model.learn(128)
    ours.close()
    assert "rollout/ep_len_mean" in _csv(tmp_path / "ours" / "progress.csv")[0]
    with pytest.raises(TypeError, match="record"):
        model.set_logger(object())


def test_schedules_are_evaluated_as_sb3_does():
    """4 iterations of a schedule: SB3 and fastppo pass the same remaining progress (0.75, 0.5, 0.25, 0)."""
    def run(cls, env):
        seen = []

        def clip(progress):
            seen.append(progress)
            return 0.2 * progress + 0.01

        model = cls("MlpPolicy", env, n_steps=64, batch_size=64, n_epochs=1, clip_range=clip, seed=0)
        seen.clear()  # construction-time checks
        model.learn(256)
        return seen

    ours = run(lambda *a, **k: fastppo.PPO(*a, num_envs=1, **k), "CartPole-v1")
    theirs = run(sb3.PPO, "CartPole-v1")
    assert ours == theirs == [0.75, 0.5, 0.25, 0.0]


def test_learn_reset_num_timesteps():
    model = fastppo.PPO("MlpPolicy", "CartPole-v1", **SMALL)
    model.learn(256)
    assert model.num_timesteps == 256
    model.learn(128, reset_num_timesteps=False)
    assert model.num_timesteps == 384
    model.learn(128)  # SB3's default: the count restarts
    assert model.num_timesteps == 128
    with pytest.raises(ValueError, match="log_interval"):
        model.learn(128, log_interval=0)
    model.learn(128, log_interval=None)


def test_split_learn_continues_exactly():
    """learn(a) then learn(b, reset_num_timesteps=False) equals learn(a + b) with constant schedules."""
    a = fastppo.PPO("MlpPolicy", "CartPole-v1", **SMALL).learn(256).learn(256, reset_num_timesteps=False)
    b = fastppo.PPO("MlpPolicy", "CartPole-v1", **SMALL).learn(512)
    for x, y in zip(a.policy.parameters(), b.policy.parameters()):
        assert torch.equal(x, y)


def test_get_set_parameters_and_set_env():
    model = fastppo.PPO("MlpPolicy", "CartPole-v1", **SMALL)
    params = model.get_parameters()
    assert set(params) == {"policy", "policy.optimizer"}
    model.learn(128)
    changed = model.get_parameters()
    assert not torch.equal(params["policy"]["actor.0.weight"], changed["policy"]["actor.0.weight"])
    model.set_parameters(params)
    for k, v in model.policy.state_dict().items():
        assert torch.equal(v, params["policy"][k])
    with pytest.raises(ValueError, match="'policy'"):
        model.set_parameters({"weights": {}})
    env = model.get_env()
    assert env.num_envs == 4
    model.set_env(fastppo.make_vec_env("CartPole-v1", 2, seed=1))  # another count: the rollout is reallocated
    assert model.num_envs == 2 and model.rollout.rewards.shape == (32, 2)
    model.learn(128)
    with pytest.raises(ValueError, match="observation_space"):
        model.set_env("MountainCarContinuous-v0")


def test_save_load_zip_suffix_and_env_instance(tmp_path):
    env = gym.make("CartPole-v1")
    model = fastppo.PPO("MlpPolicy", env, n_steps=64, batch_size=64, seed=0).learn(128)
    model.save(tmp_path / "agent")
    assert (tmp_path / "agent.zip").exists()
    for path in (tmp_path / "agent", tmp_path / "agent.zip"):
        loaded = fastppo.PPO.load(path)  # no env: it acts, and needs set_env before learn
        obs = np.zeros((3, 4), np.float32)
        assert np.array_equal(loaded.predict(obs, deterministic=True)[0], model.predict(obs, deterministic=True)[0])
    assert loaded.get_env() is None
    with pytest.raises(ValueError, match="set_env"):
        loaded.learn(64)
    loaded.set_env(gym.make("CartPole-v1"))
    loaded.learn(64)
    model.save(tmp_path / "explicit.pt")
    assert (tmp_path / "explicit.pt").exists()
    assert fastppo.PPO.load(tmp_path / "explicit.pt", env="CartPole-v1", custom_objects={"learning_rate": 1e-4}
                            ).learning_rate == 1e-4


class _CountingSB3Callback(sb3_callbacks.BaseCallback):
    def __init__(self):
        super().__init__()
        self.events = []

    def _on_training_start(self):
        self.events.append(("start", self.locals["total_timesteps"], self.training_env is self.model.get_env()))

    def _on_rollout_start(self):
        self.events.append("rollout_start")

    def _on_step(self):
        assert len(self.locals["infos"]) == self.training_env.num_envs
        assert self.locals["dones"].shape == (self.training_env.num_envs,)
        self.logger.record("custom/calls", self.n_calls)
        return self.n_calls < 20

    def _on_rollout_end(self):
        self.events.append("rollout_end")

    def _on_training_end(self):
        self.events.append("end")


def test_sb3_callback_protocol():
    model = fastppo.PPO("MlpPolicy", "CartPole-v1", **SMALL)
    cb = _CountingSB3Callback()
    model.learn(10_000, callback=cb)
    assert cb.n_calls == 20 and cb.num_timesteps == 80 == model.num_timesteps  # stopped at its 20th step
    assert cb.events == [("start", 10_000, True), "rollout_start", "end"]


def test_sb3_builtin_callbacks(tmp_path):
    eval_env = sb3.common.env_util.make_vec_env("CartPole-v1", n_envs=1, seed=5)
    stop = sb3_callbacks.StopTrainingOnRewardThreshold(reward_threshold=-1.0)  # any return beats it
    evaluate = sb3_callbacks.EvalCallback(eval_env, callback_on_new_best=stop, eval_freq=40, n_eval_episodes=2,
                                          best_model_save_path=str(tmp_path / "best"), log_path=str(tmp_path / "eval"),
                                          verbose=0)
    checkpoints = sb3_callbacks.CheckpointCallback(save_freq=16, save_path=str(tmp_path / "ckpt"))
    model = fastppo.PPO("MlpPolicy", "CartPole-v1", **SMALL)
    with pytest.warns(UserWarning, match="not of the same type"):  # SB3 compares the training env's type with its own
        model.learn(4096, callback=[checkpoints, evaluate])
    assert model.num_timesteps == 160  # the first evaluation (40 calls x 4 envs) stopped training
    assert sorted(os.listdir(tmp_path / "ckpt")) == ["rl_model_128_steps.zip", "rl_model_64_steps.zip"]
    assert np.load(tmp_path / "eval" / "evaluations.npz")["timesteps"].tolist() == [160]
    reloaded = fastppo.PPO.load(tmp_path / "best" / "best_model")
    assert reloaded.num_timesteps == 160


def test_function_callback_stops_on_false_value():
    calls = []

    def callback(locals_, globals_):
        calls.append(locals_["n_steps"])
        return len(calls) < 3 or None  # None stops, as in SB3

    model = fastppo.PPO("MlpPolicy", "CartPole-v1", **SMALL)
    model.learn(10_000, callback=callback)
    assert calls == [0, 1, 2] and model.num_timesteps == 12


def test_fastppo_callback_rejects_sb3_hook_names():
    with pytest.raises(TypeError, match="_on_step"):
        class Wrong(fastppo.Callback):
            def _on_step(self):
                return True
    with pytest.raises(TypeError, match="callback must be"):
        fastppo.PPO("MlpPolicy", "CartPole-v1", **SMALL).learn(64, callback=42)


def test_fastppo_builtin_callbacks(tmp_path):
    """fastppo's own callbacks run at iteration ends (the rollout stays native): counts in vector steps."""
    stop = fastppo.StopTrainingOnRewardThreshold(reward_threshold=1e9)
    evaluate = fastppo.EvalCallback("CartPole-v1", callback_on_new_best=stop, eval_freq=64, n_eval_episodes=2,
                                    log_path=str(tmp_path / "eval"), best_model_save_path=str(tmp_path / "best"),
                                    verbose=0)
    checkpoints = fastppo.CheckpointCallback(save_freq=64, save_path=str(tmp_path / "ckpt"), name_prefix="m")
    events = []

    class Event(fastppo.Callback):
        def on_event(self):
            events.append(self.num_timesteps)
            return True

    model = fastppo.PPO("MlpPolicy", "CartPole-v1", **SMALL)
    model.learn(1024, callback=[evaluate, checkpoints, fastppo.EveryNTimesteps(300, Event())])
    assert model._collector(fastppo.CallbackList([evaluate])).__class__.__name__ == "NativeCollector"
    # every 64 calls x 4 envs = 256 timesteps; iterations end every 128
    data = np.load(tmp_path / "eval" / "evaluations.npz")
    assert data["timesteps"].tolist() == [256, 512, 768, 1024]
    assert data["results"].shape == data["ep_lengths"].shape == (4, 2)
    assert evaluate.best_mean_reward == data["results"].mean(axis=1).max()
    assert (tmp_path / "best" / "best_model.zip").exists()
    assert sorted(os.listdir(tmp_path / "ckpt")) == sorted(f"m_{t}_steps.zip" for t in (256, 512, 768, 1024))
    assert events == [384, 768]

    threshold = fastppo.StopTrainingOnRewardThreshold(reward_threshold=0.0)
    model.learn(4096, callback=fastppo.EvalCallback("CartPole-v1", callback_on_new_best=threshold, eval_freq=32,
                                                    n_eval_episodes=1, verbose=0))
    assert model.num_timesteps == 128  # the first evaluation's return beat 0: stopped


def test_stop_on_no_model_improvement_counts_evaluations():
    class Parent:
        best_mean_reward = -np.inf

    stop = fastppo.StopTrainingOnNoModelImprovement(max_no_improvement_evals=2, min_evals=1)
    stop.parent = Parent()
    decisions = []
    for best in (1.0, 2.0, 2.0, 2.0, 3.0, 3.0, 3.0, 3.0):
        stop.parent.best_mean_reward = best
        decisions.append(stop.on_event())
    # the first evaluation only sets the reference (min_evals=1); then 2.0 improves, two evaluations do not
    # (still going), 3.0 improves, and the third without improvement stops
    assert decisions == [True, True, True, True, True, True, True, False]
    with pytest.raises(ValueError, match="callback_after_eval"):
        fastppo.StopTrainingOnNoModelImprovement(1).on_event()
