"""Stable-Baselines3's documented PPO patterns, run as written with ONE line changed:
``from stable_baselines3 import PPO`` becomes ``from fastppo import PPO`` (everything else, SB3's own env
utilities, wrappers, callbacks, logger and evaluation included, stays SB3's). Budgets and episode loops
are shortened to keep CI short; where the docs train to solve, a seeded run checks that it does."""

import textwrap

import pytest

pytest.importorskip("stable_baselines3")

SB3_IMPORT = "from stable_baselines3 import PPO"


def run_pattern(source: str, tmp_path, monkeypatch) -> dict:
    """Execute SB3 example ``source`` with the one import line changed; its namespace afterwards."""
    source = textwrap.dedent(source)
    assert source.count(SB3_IMPORT) == 1, "a pattern imports PPO exactly once"
    monkeypatch.chdir(tmp_path)
    namespace: dict = {"__name__": "__main__"}
    exec(compile(source.replace(SB3_IMPORT, "from fastppo import PPO"), "<sb3 example>", "exec"), namespace)
    return namespace


def test_quickstart(tmp_path, monkeypatch):
    # https://stable-baselines3.readthedocs.io/en/master/guide/quickstart.html (A2C there; PPO here)
    ns = run_pattern("""
        import gymnasium as gym
        from stable_baselines3 import PPO

        env = gym.make("CartPole-v1", render_mode="rgb_array")
        model = PPO("MlpPolicy", env, verbose=1, seed=0)
        model.learn(total_timesteps=10_000)

        vec_env = model.get_env()
        obs = vec_env.reset()
        for i in range(100):
            action, _state = model.predict(obs, deterministic=True)
            obs, reward, done, info = vec_env.step(action)
    """, tmp_path, monkeypatch)
    assert ns["obs"].shape == (1, 4) and ns["done"].shape == (1,) and isinstance(ns["info"], list)


def test_ppo_page_example_vectorised_save_load(tmp_path, monkeypatch):
    # https://stable-baselines3.readthedocs.io/en/master/modules/ppo.html#example
    ns = run_pattern("""
        import gymnasium as gym

        from stable_baselines3 import PPO
        from stable_baselines3.common.env_util import make_vec_env

        # Parallel environments
        vec_env = make_vec_env("CartPole-v1", n_envs=4, seed=0)

        model = PPO("MlpPolicy", vec_env, verbose=1, seed=0)
        model.learn(total_timesteps=50_000)
        model.save("ppo_cartpole")

        del model # remove to demonstrate saving and loading

        model = PPO.load("ppo_cartpole")

        obs = vec_env.reset()
        for _ in range(50):
            action, _states = model.predict(obs)
            obs, rewards, dones, info = vec_env.step(action)
    """, tmp_path, monkeypatch)
    assert (tmp_path / "ppo_cartpole.zip").exists()
    from stable_baselines3.common.evaluation import evaluate_policy

    mean, _ = evaluate_policy(ns["model"], ns["vec_env"], n_eval_episodes=8)
    assert mean >= 195  # SB3's defaults solve CartPole in 50k steps here too


def test_save_load_evaluate_continue(tmp_path, monkeypatch):
    # https://stable-baselines3.readthedocs.io/en/master/guide/examples.html#basic-usage-training-saving-loading
    ns = run_pattern("""
        import gymnasium as gym

        from stable_baselines3 import PPO
        from stable_baselines3.common.evaluation import evaluate_policy

        # Create environment
        env = gym.make("CartPole-v1", render_mode="rgb_array")

        # Instantiate the agent
        model = PPO("MlpPolicy", env, verbose=1)
        # Train the agent and display a progress bar
        model.learn(total_timesteps=int(4096), progress_bar=True)
        # Save the agent
        model.save("ppo_cartpole")
        del model  # delete trained model to demonstrate loading

        # Load the trained agent
        # NOTE: if you have loading issue, you can pass `print_system_info=True`
        # to compare the system on which the model was trained vs the current one
        # model = PPO.load("ppo_cartpole", env=env, print_system_info=True)
        model = PPO.load("ppo_cartpole", env=env)

        # Evaluate the agent
        # NOTE: If you use wrappers with your environment that modify rewards,
        #       this will be reflected here. To evaluate with original rewards,
        #       wrap environment in a "Monitor" wrapper before other wrappers.
        mean_reward, std_reward = evaluate_policy(model, model.get_env(), n_eval_episodes=10)

        # Enjoy trained agent
        vec_env = model.get_env()
        obs = vec_env.reset()
        for i in range(100):
            action, _states = model.predict(obs, deterministic=True)
            obs, rewards, dones, info = vec_env.step(action)
    """, tmp_path, monkeypatch)
    assert ns["mean_reward"] > 0 and ns["model"].num_timesteps == 4096  # as saved (SB3 keeps the count too)


def test_multiprocessing_subproc_vec_env(tmp_path, monkeypatch):
    # https://stable-baselines3.readthedocs.io/en/master/guide/examples.html#multiprocessing-unleashing-the-power-of-vectorized-environments
    ns = run_pattern("""
        import gymnasium as gym

        from stable_baselines3 import PPO
        from stable_baselines3.common.env_util import make_vec_env
        from stable_baselines3.common.vec_env import SubprocVecEnv

        if __name__ == "__main__":
            env_id = "CartPole-v1"
            num_cpu = 2  # Number of processes to use
            vec_env = make_vec_env(env_id, n_envs=num_cpu, vec_env_cls=SubprocVecEnv,
                                   vec_env_kwargs=dict(start_method="fork"))

            model = PPO("MlpPolicy", vec_env, n_steps=256, verbose=1)
            model.learn(total_timesteps=1024)

            obs = vec_env.reset()
            for _ in range(50):
                action, _states = model.predict(obs)
                obs, rewards, dones, info = vec_env.step(action)
            vec_env.close()
    """, tmp_path, monkeypatch)
    assert ns["model"].num_timesteps == 1024


def test_callbacks(tmp_path, monkeypatch):
    # https://stable-baselines3.readthedocs.io/en/master/guide/callbacks.html
    # SB3's EvalCallback warns that the training env (fastppo's, seen through SB3's VecEnv API) is not of
    # its eval env's type (a DummyVecEnv): a documented difference, harmless here. Its evaluate_policy warns
    # that the example's eval env has no Monitor, as it does with SB3's own PPO.
    with pytest.warns(UserWarning, match="Training and eval env are not of the same type"), \
            pytest.warns(UserWarning, match="not wrapped with a ``Monitor`` wrapper"):
        ns = _run_callbacks_pattern(tmp_path, monkeypatch)
    logs, steps = tmp_path / "logs", ns["model"].num_timesteps
    # the (unseeded) evaluations may stop training early, as soon as one reaches 450
    assert steps == 4096 or (ns["eval_callback"].best_mean_reward >= 450 and steps % 500 == 0)
    assert sorted(p.name for p in logs.glob("rl_model_*_steps.zip")) == sorted(
        f"rl_model_{t}_steps.zip" for t in range(1000, steps + 1, 1000))
    assert (logs / "best_model" / "best_model.zip").exists() and (logs / "results" / "evaluations.npz").exists()
    assert sorted(p.name for p in (logs / "event").glob("*.zip")) == sorted(
        f"rl_model_{t}_steps.zip" for t in range(2000, steps + 1, 2000))
    assert ns["custom"].rollouts == steps // 128 and steps > 1000


def _run_callbacks_pattern(tmp_path, monkeypatch):
    return run_pattern("""
        import gymnasium as gym

        from stable_baselines3 import PPO
        from stable_baselines3.common.callbacks import (BaseCallback, CallbackList, CheckpointCallback,
                                                        EvalCallback, EveryNTimesteps,
                                                        StopTrainingOnRewardThreshold)

        class CustomCallback(BaseCallback):
            def __init__(self, verbose: int = 0):
                super().__init__(verbose)
                self.rollouts = 0

            def _on_rollout_end(self) -> None:
                self.rollouts += 1

            def _on_step(self) -> bool:
                return True

        checkpoint_callback = CheckpointCallback(save_freq=1000, save_path="./logs/", name_prefix="rl_model")
        # Separate evaluation env
        eval_env = gym.make("CartPole-v1")
        callback_on_best = StopTrainingOnRewardThreshold(reward_threshold=450, verbose=1)
        eval_callback = EvalCallback(eval_env, best_model_save_path="./logs/best_model",
                                     log_path="./logs/results", eval_freq=500, callback_on_new_best=callback_on_best)
        checkpoint_on_event = CheckpointCallback(save_freq=1, save_path="./logs/event/")
        event_callback = EveryNTimesteps(n_steps=2000, callback=checkpoint_on_event)
        custom = CustomCallback()
        callback = CallbackList([checkpoint_callback, eval_callback, event_callback, custom])

        model = PPO("MlpPolicy", "CartPole-v1", n_steps=128, batch_size=64, seed=0)
        model.learn(4000, callback=callback)
    """, tmp_path, monkeypatch)


def test_tensorboard_and_custom_scalars(tmp_path, monkeypatch):
    # https://stable-baselines3.readthedocs.io/en/master/guide/tensorboard.html
    pytest.importorskip("tensorboard")
    run_pattern("""
        import numpy as np

        from stable_baselines3 import PPO
        from stable_baselines3.common.callbacks import BaseCallback

        model = PPO("MlpPolicy", "CartPole-v1", n_steps=256, verbose=1, tensorboard_log="./ppo_cartpole_tensorboard/")

        class TensorboardCallback(BaseCallback):
            def __init__(self, verbose=0):
                super().__init__(verbose)

            def _on_step(self) -> bool:
                # Log scalar value (here a random variable)
                value = np.random.random()
                self.logger.record("random_value", value)
                return True

        model.learn(total_timesteps=1024, tb_log_name="first_run", callback=TensorboardCallback())
        # Pass reset_num_timesteps=False to continue the training curve in tensorboard
        # By default, it will create a new curve
        # Keep tb_log_name constant to have continuous curve (see note below)
        model.learn(total_timesteps=1024, tb_log_name="second_run", reset_num_timesteps=False)
        model.learn(total_timesteps=1024, tb_log_name="third_run", reset_num_timesteps=False)
    """, tmp_path, monkeypatch)
    from tensorboard.backend.event_processing.event_accumulator import EventAccumulator

    runs = sorted(p.name for p in (tmp_path / "ppo_cartpole_tensorboard").iterdir())
    assert runs == ["first_run_1", "second_run_0", "third_run_0"]  # SB3's names for these calls
    acc = EventAccumulator(str(tmp_path / "ppo_cartpole_tensorboard" / "first_run_1"))
    acc.Reload()
    tags = acc.Tags()["scalars"]
    assert {"random_value", "rollout/ep_rew_mean", "train/value_loss", "time/fps"} <= set(tags)
    assert "train/n_updates" not in tags  # excluded from TensorBoard, as SB3


def test_custom_policy_network(tmp_path, monkeypatch):
    # https://stable-baselines3.readthedocs.io/en/master/guide/custom_policy.html
    ns = run_pattern("""
        import gymnasium as gym
        import torch as th
        from torch import nn

        from stable_baselines3 import PPO
        from stable_baselines3.common.torch_layers import BaseFeaturesExtractor

        # Custom actor (pi) and value function (vf) networks
        # of two layers of size 32 each with Relu activation function
        # Note: an extra linear layer will be added on top of the pi and the vf nets, respectively
        policy_kwargs = dict(activation_fn=th.nn.ReLU,
                             net_arch=dict(pi=[32, 32], vf=[32, 32]))
        # Create the agent
        model = PPO("MlpPolicy", "CartPole-v1", policy_kwargs=policy_kwargs, verbose=1)
        # Retrieve the environment
        env = model.get_env()
        # Train the agent
        model.learn(total_timesteps=2048)
        # Save the agent
        model.save("ppo_cartpole")

        del model
        # the policy_kwargs are automatically loaded
        model = PPO.load("ppo_cartpole", env=env)

        class CustomExtractor(BaseFeaturesExtractor):
            def __init__(self, observation_space: gym.spaces.Box, features_dim: int = 16):
                super().__init__(observation_space, features_dim)
                self.linear = nn.Sequential(nn.Linear(observation_space.shape[0], features_dim), nn.ReLU())

            def forward(self, observations: th.Tensor) -> th.Tensor:
                return self.linear(observations)

        policy_kwargs = dict(features_extractor_class=CustomExtractor, features_extractor_kwargs=dict(features_dim=16))
        custom = PPO("MlpPolicy", "CartPole-v1", policy_kwargs=policy_kwargs, verbose=1)
        custom.learn(2048)
    """, tmp_path, monkeypatch)
    model = ns["model"]
    assert model.policy_kwargs["net_arch"] == dict(pi=[32, 32], vf=[32, 32]) and model.native
    assert not ns["custom"].native  # a features extractor runs on the torch path


def test_vec_normalize_save_and_load(tmp_path, monkeypatch):
    # https://stable-baselines3.readthedocs.io/en/master/guide/vec_envs.html#vecnormalize (PyBullet there)
    ns = run_pattern("""
        import os
        import gymnasium as gym
        from stable_baselines3.common.vec_env import DummyVecEnv, VecNormalize
        from stable_baselines3 import PPO

        vec_env = DummyVecEnv([lambda: gym.make("Pendulum-v1")])
        # Automatically normalize the input features and reward
        vec_env = VecNormalize(vec_env, norm_obs=True, norm_reward=True, clip_obs=10.)

        model = PPO("MlpPolicy", vec_env)
        model.learn(total_timesteps=2048)

        # Don't forget to save the VecNormalize statistics when saving the agent
        log_dir = "./"
        model.save(log_dir + "ppo_pendulum")
        stats_path = os.path.join(log_dir, "vec_normalize.pkl")
        vec_env.save(stats_path)

        # To demonstrate loading
        del model, vec_env

        # Load the saved statistics
        vec_env = DummyVecEnv([lambda: gym.make("Pendulum-v1")])
        vec_env = VecNormalize.load(stats_path, vec_env)
        #  do not update them at test time
        vec_env.training = False
        # reward normalization is not needed at test time
        vec_env.norm_reward = False

        # Load the agent
        model = PPO.load(log_dir + "ppo_pendulum", env=vec_env)
    """, tmp_path, monkeypatch)
    assert ns["model"].get_vec_normalize_env() is ns["vec_env"]


def test_learning_rate_schedule_and_parameters(tmp_path, monkeypatch):
    # https://stable-baselines3.readthedocs.io/en/master/guide/examples.html#learning-rate-schedule and
    # #accessing-and-modifying-model-parameters
    ns = run_pattern("""
        from typing import Callable

        from stable_baselines3 import PPO

        def linear_schedule(initial_value: float) -> Callable[[float], float]:
            def func(progress_remaining: float) -> float:
                return progress_remaining * initial_value
            return func

        # Initial learning rate of 0.001
        model = PPO("MlpPolicy", "CartPole-v1", learning_rate=linear_schedule(0.001), n_steps=256, verbose=1)
        model.learn(total_timesteps=1024)

        params = model.get_parameters()
        policy_params = params["policy"]
        model.set_parameters({"policy": {k: v * 0 for k, v in policy_params.items()}}, exact_match=True)
    """, tmp_path, monkeypatch)
    assert all(not p.detach().any() for p in ns["model"].policy.parameters())
    assert ns["model"].logger.name_to_value == {}  # dumped
