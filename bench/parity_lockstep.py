"""Lockstep parity with Stable-Baselines3's PPO: one fastppo run (recorded), replayed through SB3 2.9's own
``PPO.learn`` with VecNormalize, the same initial weights, the same actions and the same minibatch orders;
then every intermediate compared (normalised observations, values, log-probs, advantages, returns, the
normalisers' statistics, the parameters after training). Differences at float32 rounding mean the two run
the same algorithm; anything larger is a difference to find (bench/RESULTS.md, mujoco, learning parity).
Never run in CI.

    ENV_ID=HalfCheetah-v5 python bench/parity_lockstep.py BACKEND EPOCHS MAX_STEPS ITERATIONS
    ENV_ID=HalfCheetah-v5 python bench/parity_lockstep.py auto 10 1000 3     # native path, 1000-step limit

BACKEND "torch" or "auto" (the native path); MAX_STEPS is the time limit (short ones make many
truncations inside one 2048-step rollout); ENV_ID defaults to Hopper-v5.
"""
import sys
import numpy as np
import torch
import gymnasium as gym
from gymnasium.vector import AutoresetMode, VectorWrapper

import fastppo

BACKEND = sys.argv[1] if len(sys.argv) > 1 else "torch"
N_STEPS, EPOCHS = 2048, int(sys.argv[2]) if len(sys.argv) > 2 else 10
K = int(sys.argv[4]) if len(sys.argv) > 4 else 1
MAX_STEPS = int(sys.argv[3]) if len(sys.argv) > 3 else 15  # so that truncations happen within one rollout


class Recorder(VectorWrapper):
    def __init__(self, env):
        super().__init__(env)
        self.log = []

    def reset(self, **kw):
        obs, info = self.env.reset(**kw)
        self.reset_obs = obs.copy()
        return obs, info

    def step(self, actions):
        obs, r, te, tr, info = self.env.step(actions)
        final = info["final_obs"][0].copy() if "final_obs" in info and info["_final_obs"][0] else None
        self.log.append(dict(action=np.array(actions, copy=True), obs=obs.copy(), reward=r.copy(), te=te.copy(),
                             tr=tr.copy(), final=final))
        return obs, r, te, tr, info


import os
ENV_ID = os.environ.get("ENV_ID", "Hopper-v5")
venv = gym.make_vec(ENV_ID, 1, vectorization_mode="sync", max_episode_steps=MAX_STEPS,
                    vector_kwargs={"autoreset_mode": AutoresetMode.SAME_STEP})
rec = Recorder(venv)
orders = []
_randperm = torch.randperm


def randperm(*a, **k):
    out = _randperm(*a, **k)
    orders.append(out.numpy().copy())
    return out


torch.randperm = randperm
fp = fastppo.PPO("MlpPolicy", rec, n_steps=N_STEPS, batch_size=64, n_epochs=EPOCHS, learning_rate="lin_3e-4",
                 normalize_obs=True, normalize_reward=True, seed=1, backend=BACKEND, gamma=0.99, gae_lambda=0.95)
print("native:", fp.native)
init = {k: v.detach().clone() for k, v in fp.policy.state_dict().items()}
acts = []
_adv = fp._advantages
fp._advantages = lambda: (acts.append(fp.rollout.actions.clone()), _adv())
fp.learn(N_STEPS * K)
torch.randperm = _randperm
print("episodes ended:", sum(bool(s["te"][0] or s["tr"][0]) for s in rec.log),
      "truncations:", sum(bool(s["tr"][0] and not s["te"][0]) for s in rec.log))

# ---- SB3 replay ----
from stable_baselines3 import PPO
from stable_baselines3.common.vec_env import VecEnv, VecNormalize


class Replay(VecEnv):
    def __init__(self):
        super().__init__(1, venv.single_observation_space, venv.single_action_space)
        self.t = 0

    def reset(self):
        return rec.reset_obs.copy()

    def step_async(self, actions):
        want = np.clip(rec.log[self.t]["action"], -1, 1)
        assert np.allclose(actions, want, atol=1e-6), (actions, want)

    def step_wait(self):
        s = rec.log[self.t]
        self.t += 1
        done = bool(s["te"][0] or s["tr"][0])
        info = {}
        if done:
            info["terminal_observation"] = s["final"].copy()
            info["TimeLimit.truncated"] = bool(s["tr"][0] and not s["te"][0])
        return s["obs"].copy(), s["reward"].copy(), np.array([done]), [info]

    def close(self): pass
    def get_attr(self, name, indices=None): return [None]
    def set_attr(self, *a, **k): pass
    def env_method(self, *a, **k): return [None]
    def env_is_wrapped(self, wrapper_class, indices=None): return [False]
    def seed(self, seed=None): return [None]


env = VecNormalize(Replay(), norm_obs=True, norm_reward=True, clip_obs=10.0, clip_reward=10.0, gamma=0.99)
sb = PPO("MlpPolicy", env, n_steps=N_STEPS, batch_size=64, n_epochs=EPOCHS, learning_rate=lambda p: p * 3e-4, gamma=0.99,
         gae_lambda=0.95, clip_range=0.2, ent_coef=0.0, vf_coef=0.5, max_grad_norm=0.5, seed=1, device="cpu")
p = sb.policy
with torch.no_grad():
    pairs = [(p.mlp_extractor.policy_net[0], "actor.0"), (p.mlp_extractor.policy_net[2], "actor.2"),
             (p.action_net, "actor.4"), (p.mlp_extractor.value_net[0], "critic.0"),
             (p.mlp_extractor.value_net[2], "critic.2"), (p.value_net, "critic.4")]
    for layer, name in pairs:
        layer.weight.copy_(init[name + ".weight"])
        layer.bias.copy_(init[name + ".bias"])
    p.log_std.copy_(init["log_std"])

step = {"t": 0}
_forward = p.forward


def forward(obs, deterministic=False):
    a = acts[step["t"] // N_STEPS][step["t"] % N_STEPS].clone()
    step["t"] += 1
    values, log_prob, _ = p.evaluate_actions(obs, a)
    return a, values, log_prob


p.forward = forward
_perm = np.random.permutation
sb_orders = list(orders)
np.random.permutation = lambda n: sb_orders.pop(0)
# capture the rollout buffer before train()
buf = {}
_train = sb.train


def train():
    rb = sb.rollout_buffer
    buf.update(obs=rb.observations.copy(), adv=rb.advantages.copy(), ret=rb.returns.copy(), val=rb.values.copy(),
               logp=rb.log_probs.copy(), rew=rb.rewards.copy())
    _train()


sb.train = train
sb.learn(N_STEPS * K)
np.random.permutation = _perm

r = fp.rollout
def cmp(name, a, b):
    a, b = np.asarray(a, np.float64).reshape(-1), np.asarray(b, np.float64).reshape(-1)
    print(f"{name:>10}: max |diff| {np.abs(a - b).max():.3e}  (max |value| {np.abs(b).max():.3e})")

cmp("obs", r.obs.numpy(), buf["obs"])
cmp("values", r.values.numpy(), buf["val"])
cmp("logp", r.log_probs.numpy(), buf["logp"])
cmp("adv", r.advantages.numpy(), buf["adv"])
cmp("returns", r.returns.numpy(), buf["ret"])
cmp("obs_mean", fp.obs_normalizer.rms.mean, env.obs_rms.mean)
cmp("obs_var", fp.obs_normalizer.rms.var, env.obs_rms.var)
cmp("ret_var", fp.reward_scaler.rms.var, env.ret_rms.var)
cmp("ret_count", fp.reward_scaler.rms.count, env.ret_rms.count)
after = fp.policy.state_dict()
for layer, name in pairs:
    cmp(name + ".w", after[name + ".weight"].numpy(), layer.weight.detach().numpy())
cmp("log_std", after["log_std"].numpy(), p.log_std.detach().numpy())
moved = max(float((after[k] - init[k]).abs().max()) for k in init)
print("largest parameter change in fastppo:", moved)
