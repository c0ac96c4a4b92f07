"""Proximal Policy Optimization (Schulman et al. 2017): the clipped surrogate and the adaptive KL
penalty, on the shared rollout path of base.py."""

from __future__ import annotations

import torch
from torch import nn

from fastppo.algos.base import FlatAdam, FlatParameters, OnPolicyAlgorithm, _check_int, make_schedule
from fastppo.ops import ppo_loss

VARIANTS = ("clip", "kl")


class PPO(OnPolicyAlgorithm):
    """PPO with the hyperparameter names of Stable-Baselines3.

    Args:
        policy: "MlpPolicy" or an ``nn.Module`` whose ``forward(obs) -> (dist_params, value)``
            (see :class:`fastppo.algos.policies.ActorCritic`).
        env: an env id (built in or any gymnasium id), a gymnasium VectorEnv (SAME_STEP autoreset), or
            a gymnasium Env.
        learning_rate: Adam step size: a number, ``"lin_<v>"`` (annealed linearly to 0) or a function
            of the remaining progress (1 -> 0).
        n_steps: vector steps per rollout (the rollout has ``n_steps * num_envs`` samples).
        batch_size: minibatch size; must divide ``n_steps * num_envs``.
        n_epochs: passes over the rollout per iteration.
        gamma: discount factor. gae_lambda: GAE's lambda.
        clip_range: the surrogate's epsilon (number, ``"lin_<v>"`` or callable), in (0, 1).
        clip_range_vf: clip the value update to this distance from the old value (None: no clipping).
        normalize_advantage: normalise advantages per minibatch (inside the fused loss).
        ent_coef: entropy bonus weight. vf_coef: value-loss weight.
        max_grad_norm: clip the global gradient norm to this (None: no clipping).
        target_kl: stop the epoch loop once a minibatch's approx KL exceeds 1.5 x this (as SB3).
        variant: "clip" (the clipped surrogate) or "kl" (the adaptive KL penalty: the loss adds
            ``kl_coef * KL(old || new)`` and ``kl_coef`` is halved or doubled once per iteration when the
            mean KL is below ``kl_target / 1.5`` or above ``1.5 * kl_target``, as the PPO paper does).
        kl_target: d_targ of the adaptive KL variant. kl_coef: its initial beta.
        use_sde: generalised state-dependent exploration for Box actions (gSDE, as SB3's ``use_sde``: noise
            linear in the policy's last hidden features, held for ``sde_sample_freq`` steps, or a whole
            rollout when that is <= 0). It runs on the torch path (the native kernels lack it).
        num_envs: parallel envs when ``env`` is an id. normalize_obs, normalize_reward: running-statistics
            observation normalisation and return-based reward scaling (saved with the model).
        policy_kwargs: ``net_arch`` (hidden sizes), ``activation`` ("tanh", "relu", ...), ``ortho_init``,
            ``log_std_init``.
        seed: seeds the weights, the sampling and the envs (same seed and config: same numbers on CPU).
        device: where the policy and the rollout live. backend: "auto" or a backend for the fused ops
            and built-in envs ("torch" runs every hot path on its reference).
        log_dir: write ``progress.csv`` here. tensorboard_log: write TensorBoard scalars here.
        torch_threads: torch's CPU threads while learn() runs (restored after); default 1 on the CPU,
            where PPO's small networks run fastest single-threaded.
    """

    algo = "ppo"

    def __init__(self, policy: str | nn.Module = "MlpPolicy", env="CartPole-v1", *, learning_rate=3e-4,
                 n_steps: int = 2048, batch_size: int = 64, n_epochs: int = 10, gamma: float = 0.99,
                 gae_lambda: float = 0.95, clip_range=0.2, clip_range_vf: float | None = None,
                 normalize_advantage: bool = True, ent_coef: float = 0.0, vf_coef: float = 0.5,
                 max_grad_norm: float | None = 0.5, target_kl: float | None = None, variant: str = "clip",
                 kl_target: float = 0.01, kl_coef: float = 1.0, num_envs: int = 1, normalize_obs: bool = False,
                 normalize_reward: bool = False, use_sde: bool = False, sde_sample_freq: int = -1,
                 policy_kwargs: dict | None = None, seed: int | None = None,
                 device: str = "cpu", backend: str = "auto", log_dir: str | None = None,
                 tensorboard_log: str | None = None, torch_threads: int | None = None):
        hyperparameters = {k: v for k, v in locals().items() if k not in ("self", "policy", "env", "__class__")}
        if variant not in VARIANTS:
            raise ValueError(f"variant must be one of {VARIANTS}, got {variant!r}")
        _check_int(batch_size, "batch_size", 1)
        _check_int(n_epochs, "n_epochs", 1)
        for name, value in (("ent_coef", ent_coef), ("vf_coef", vf_coef), ("kl_coef", kl_coef)):
            if not value >= 0:
                raise ValueError(f"{name} must be >= 0, got {value!r}")
        for name, value in (("max_grad_norm", max_grad_norm), ("target_kl", target_kl),
                            ("clip_range_vf", clip_range_vf), ("kl_target", kl_target)):
            if value is not None and not value > 0:
                raise ValueError(f"{name} must be > 0 (or None), got {value!r}")
        self.clip_range = make_schedule(clip_range, "clip_range")
        if not 0 < self.clip_range(1.0) < 1:
            raise ValueError(f"clip_range must be in (0, 1), got {self.clip_range(1.0)!r} at the start of training")
        super().__init__(policy, env, hyperparameters=hyperparameters, **self._shared(hyperparameters))
        rollout_size = n_steps * self.num_envs
        if rollout_size % batch_size:
            raise ValueError(f"batch_size={batch_size} must divide the rollout size n_steps * num_envs = "
                             f"{n_steps} * {self.num_envs} = {rollout_size}")
        self.batch_size, self.n_epochs = batch_size, n_epochs
        self.clip_range_vf, self.normalize_advantage = clip_range_vf, normalize_advantage
        self.ent_coef, self.vf_coef, self.max_grad_norm = ent_coef, vf_coef, max_grad_norm
        self.target_kl, self.variant, self.kl_target, self.kl_coef = target_kl, variant, kl_target, kl_coef
        self._flat = FlatParameters(self.policy.parameters())
        self.optimizer = FlatAdam(self._flat, lr=self.learning_rate(1.0), eps=1e-5)  # eps as SB3 and CleanRL

    def _update(self, progress: float) -> dict[str, float]:
        lr, clip = self.learning_rate(progress), self.clip_range(progress)
        self.optimizer.lr = lr
        data = self.rollout.flat()
        size = data["log_probs"].shape[0]
        # The built-in MLP on the CPU updates natively (one call per epoch); the torch path below is its
        # spec and runs everywhere else (backend="torch", GPUs, custom modules, gSDE).
        native = self._native_update(data)
        epoch = self._native_epoch(native, clip) if native is not None else self._torch_epoch(data, clip)
        stats_sum, n_updates = torch.zeros(len(_STATS), dtype=torch.float64), 0
        for _ in range(self.n_epochs):
            order = torch.randperm(size, generator=self._generator, device=self.device)
            sums, updates, stopped = epoch(order)
            stats_sum += sums.cpu()
            n_updates += updates
            if stopped:
                break
        metrics = dict.fromkeys(_STATS, float("nan"))
        if n_updates:
            metrics = dict(zip(_STATS, (stats_sum / n_updates).tolist()))
        metrics.update(learning_rate=lr, clip_range=clip, n_updates=n_updates)
        if self.variant == "kl":
            metrics["kl"] = self._adapt_kl_coef(data)
            metrics["kl_coef"] = self.kl_coef
        return metrics

    def _torch_epoch(self, data, clip: float):
        """order -> (stats sums, updates taken, stopped by target_kl): minibatch steps with torch ops."""
        spec, policy = self.action_spec, self.policy

        def epoch(order: torch.Tensor):
            stats_sum, n_updates = torch.zeros(len(_STATS), dtype=torch.float64, device=self.device), 0
            for start in range(0, order.numel(), self.batch_size):
                idx = order[start:start + self.batch_size]
                params, values = policy(data["obs"][idx])
                dist = spec.distribution(params)
                log_probs = dist.log_prob(data["actions"][idx])
                kl = spec.distribution(data["dist_params"][idx]).kl(dist) if self.variant == "kl" else None
                loss, stats = ppo_loss(
                    log_probs, data["log_probs"][idx], data["advantages"][idx], values, data["values"][idx],
                    data["returns"][idx], dist.entropy(), clip_coef=clip, vf_coef=self.vf_coef,
                    ent_coef=self.ent_coef, vf_clip=self.clip_range_vf,
                    normalize_advantages=self.normalize_advantage and idx.numel() > 1, kl=kl,
                    kl_coef=self.kl_coef, backend=self.backend)
                if self.target_kl is not None and float(stats["approx_kl"]) > 1.5 * self.target_kl:
                    return stats_sum, n_updates, True  # as SB3: this step would move too far; stop before it
                self._flat.grad.zero_()
                loss.backward()
                self.optimizer.step(self.max_grad_norm)
                stats_sum += torch.stack([stats[k].detach() for k in _STATS]).double()
                n_updates += 1
            return stats_sum, n_updates, False

        return epoch

    def _native_epoch(self, native, clip: float):
        """The same epoch as ``_torch_epoch`` in one native call (fastppo._core.PpoUpdate)."""
        from fastppo._backend import _core

        adam = self.optimizer
        config = _core.PpoUpdateConfig()
        config.batch_size, config.clip_coef, config.vf_coef, config.ent_coef = (
            self.batch_size, clip, self.vf_coef, self.ent_coef)
        config.normalize_advantages = self.normalize_advantage
        off = -1.0  # the native config's "not set"
        config.vf_clip = _or(self.clip_range_vf, off)
        config.kl_coef = self.kl_coef if self.variant == "kl" else off
        config.target_kl, config.max_grad_norm = _or(self.target_kl, off), _or(self.max_grad_norm, off)
        config.lr, (config.beta1, config.beta2), config.eps = adam.lr, adam.betas, adam.eps

        def epoch(order: torch.Tensor):
            updates, stopped, adam.steps, sums = native.epoch(order.numpy(), config, adam.steps)
            return torch.tensor(sums, dtype=torch.float64), updates, stopped

        return epoch

    def _native_update(self, data):
        """fastppo._core.PpoUpdate over the policy's, the gradients' and Adam's own memory, or None where
        it does not apply: another backend, a custom module, not on the CPU."""
        if not self._native_policy():
            return None
        from fastppo._backend import _core

        policy, adam = self.policy, self.optimizer
        params, grads, spec = policy.native_arrays(), policy.native_arrays(grads=True), self.action_spec
        arrays = {k: v.detach().numpy() for k, v in data.items()}
        return _core.PpoUpdate(
            params["actor"], grads["actor"], params["critic"], grads["critic"], policy.activation, spec.kind,
            list(spec.nvec), params["log_std"], grads["log_std"], self._flat.param.detach().numpy(),
            self._flat.grad.numpy(), adam.exp_avg.numpy(), adam.exp_avg_sq.numpy(), arrays["obs"],
            arrays["actions"], arrays["log_probs"], arrays["advantages"], arrays["values"], arrays["returns"],
            arrays["dist_params"] if self.variant == "kl" else None)

    @torch.inference_mode()
    def _adapt_kl_coef(self, data) -> float:
        """Once per iteration, as the PPO paper's adaptive KL penalty: halve beta when the mean KL fell
        below d_targ / 1.5, double it when it rose above 1.5 d_targ."""
        params, _ = self.policy(data["obs"])
        d = float(self.action_spec.distribution(data["dist_params"]).kl(self.action_spec.distribution(params)).mean())
        if d < self.kl_target / 1.5:
            self.kl_coef /= 2
        elif d > self.kl_target * 1.5:
            self.kl_coef *= 2
        return d

    def _algo_state(self) -> dict:
        return {"optimizer": self.optimizer.state_dict(), "kl_coef": self.kl_coef}

    def _load_algo_state(self, state: dict) -> None:
        self.optimizer.load_state_dict(state["optimizer"])
        self.kl_coef = state["kl_coef"]


_STATS = ("policy_loss", "value_loss", "entropy", "approx_kl", "clipfrac")


def _or(value, default):
    return default if value is None else value
