"""Proximal Policy Optimization (Schulman et al. 2017): the clipped surrogate and the adaptive KL
penalty, on the shared loop of base.py.

The update runs ``n_epochs`` passes over the rollout in minibatches through an updater:
:class:`TorchPpoUpdater` (the spec: the policy forward, ``fastppo.ppo_loss``, backward, clipping, Adam)
or :class:`NativePpoUpdater` (the same, one native call per epoch: ``fastppo._core.PpoUpdate``).
"""

from __future__ import annotations

import warnings

import torch
from torch import nn

from fastppo.algos import graphs
from fastppo.algos.base import OnPolicyAlgorithm
from fastppo.algos.config import VALUE_LOSS_SCALE, PPOConfig, with_config_signature
from fastppo.algos.distributed import normalize_minibatches
from fastppo.algos.optim import FlatParameters, make_optimizer
from fastppo.ops import ppo_loss
from fastppo.ops.ppo_loss import STATS


class PPO(OnPolicyAlgorithm):
    """PPO with the hyperparameter names of Stable-Baselines3.

    Args:
        policy: "MlpPolicy" (:class:`fastppo.algos.policies.ActorCritic`, configured by ``policy_kwargs``
            as SB3's), "CnnPolicy" (images), "MultiInputPolicy" (Dict observations), "auto" (the one of
            those three the observations call for), an SB3 policy class (an ``ActorCriticPolicy`` subclass: :mod:`fastppo.algos.sb3_policy`)
            or an ``nn.Module`` whose ``forward(obs) -> (dist_params, value)`` (see ``ActorCritic``).
        env: an env id (built in or any gymnasium id), a gymnasium VectorEnv (SAME_STEP autoreset), or
            a gymnasium Env.
        config: a :class:`fastppo.algos.config.PPOConfig`; keyword arguments replace its fields.
        **hyperparameters: the fields of :class:`~fastppo.algos.config.PPOConfig` (``learning_rate``,
            ``n_steps``, ``batch_size``, ``n_epochs``, ``clip_range``, ``target_kl``, ``variant``, ...),
            each documented there.
    """

    algo = "ppo"
    config_class = PPOConfig
    positional = ("learning_rate", "n_steps", "batch_size", "n_epochs", "gamma", "gae_lambda", "clip_range",
                  "clip_range_vf", "normalize_advantage", "ent_coef", "vf_coef", "max_grad_norm", "use_sde",
                  "sde_sample_freq", "rollout_buffer_class", "rollout_buffer_kwargs", "target_kl",
                  "stats_window_size", "tensorboard_log", "policy_kwargs", "verbose", "seed", "device",
                  "_init_setup_model")

    def __init__(self, policy: str | nn.Module = "MlpPolicy", env="CartPole-v1", *args, config: PPOConfig | None = None,
                 _spaces=None, **hyperparameters):
        config = self._config_from_args(args, config, hyperparameters)
        super().__init__(policy, env, config, spaces=_spaces)
        self.kl_coef = config.kl_coef  # the adaptive KL variant's beta, adapted once per iteration
        self._flat = FlatParameters(self.policy.parameters())
        # policy_kwargs' optimizer_class / optimizer_kwargs; by default Adam with eps 1e-5, as SB3 and CleanRL
        self.optimizer = make_optimizer(self._flat, config.lr_schedule(1.0), **self._optimizer_options)
        self._build_updaters()

    def _build_updaters(self) -> None:
        batch_size, rest = self.config.batch_size, self.rollout_size % self.config.batch_size
        if rest:  # as SB3: allowed, with its warning
            warnings.warn(f"You have specified a mini-batch size of {batch_size}, but because the rollout is of size "
                          f"n_steps * n_envs = {self.rollout_size}, after every {self.rollout_size // batch_size} "
                          f"untruncated mini-batches, there will be a truncated mini-batch of size {rest}. We "
                          f"recommend using a batch_size that is a factor of n_steps * n_envs (n_steps="
                          f"{self.config.n_steps} and n_envs={self.num_envs})", UserWarning, stacklevel=3)
        if self.native:
            self.updater = NativePpoUpdater(self)
            return
        graphed = graphs.applies(self, graphs.update_blocker(self), "the update")
        self.updater = (GraphedPpoUpdater if graphed else TorchPpoUpdater)(self)

    def _optimizer_objects(self) -> dict:
        return {"policy.optimizer": self.optimizer}

    def _update(self, progress: float) -> dict[str, float]:
        config = self.config
        lr, clip = config.lr_schedule(progress), config.clip_schedule(progress)
        clip_vf = None if config.clip_vf_schedule is None else config.clip_vf_schedule(progress)
        self.optimizer.lr = lr
        loss_kwargs = config.loss_kwargs(clip, self.kl_coef, config.batch_size)
        self.updater.begin(loss_kwargs, clip_vf)
        # summed where they are computed and read once per iteration (on a GPU: no sync per epoch)
        stats_sum, n_minibatches = torch.zeros(len(STATS), dtype=torch.float64, device=self.device), 0
        for _ in range(config.n_epochs):
            order = torch.randperm(self.rollout_size, generator=self._generator, device=self.device)
            sums, updates, stopped = self.updater.epoch(order)
            stats_sum += sums
            n_minibatches += updates
            self._n_updates += 1  # SB3 counts epochs, the one target_kl stopped included
            if stopped:
                break
        stats = dict.fromkeys(STATS, float("nan"))
        if n_minibatches:
            stats = dict(zip(STATS, (stats_sum / n_minibatches).tolist()))
        # SB3's keys and meanings, as the mean over the minibatches the update took (the value loss is SB3's,
        # the mean squared error: the op's is half of it); train/loss is their mean loss (SB3 logs the last
        # minibatch's).
        loss = (stats["policy_loss"] + loss_kwargs["vf_coef"] * stats["value_loss"]
                - loss_kwargs["ent_coef"] * stats["entropy"])
        metrics = {"train/policy_gradient_loss": stats["policy_loss"],
                   "train/value_loss": VALUE_LOSS_SCALE * stats["value_loss"], "train/entropy_loss": -stats["entropy"],
                   "train/approx_kl": stats["approx_kl"], "train/clip_fraction": stats["clipfrac"], "train/loss": loss,
                   "train/n_updates": self._n_updates, "train/clip_range": clip, "train/learning_rate": lr}
        if clip_vf is not None:
            metrics["train/clip_range_vf"] = clip_vf
        if config.variant == "kl":
            metrics["train/kl"] = self._adapt_kl_coef()
            metrics["train/kl_coef"] = self.kl_coef
        return metrics

    @torch.inference_mode()
    def _adapt_kl_coef(self) -> float:
        """Once per iteration, as the PPO paper's adaptive KL penalty: halve beta when the mean KL fell
        below d_targ / 1.5, double it when it rose above 1.5 d_targ."""
        data, spec = self.rollout.flat(), self.action_spec
        params, _ = self.policy(data["obs"])
        # every rank's mean KL (equal rollout sizes: the mean over all of them), so beta stays one value
        d = float(self.reducer.mean(spec.distribution(data["dist_params"]).kl(spec.distribution(params)).mean()))
        if d < self.config.kl_target / 1.5:
            self.kl_coef /= 2
        elif d > self.config.kl_target * 1.5:
            self.kl_coef *= 2
        return d

    def _algo_state(self) -> dict:
        return {"optimizer": self.optimizer.state_dict(), "kl_coef": self.kl_coef}

    def _load_algo_state(self, state: dict) -> None:
        self.optimizer.load_state_dict(state["optimizer"])
        self.kl_coef = state["kl_coef"]


with_config_signature(PPO)


class TorchPpoUpdater:
    """PPO's epoch in torch ops (the spec): per minibatch, the policy forward, SB3's value clipping, the
    fused loss, backward, then — at the data-parallel seam, ``Reducer.gradients`` — global-norm clipping
    and Adam."""

    def __init__(self, algo: PPO):
        self.algo = algo
        self.loss_kwargs: dict = {}
        self.clip_range_vf: float | None = None

    def begin(self, loss_kwargs: dict, clip_range_vf: float | None) -> None:
        """The loss's settings for this iteration's epochs (PPOConfig.loss_kwargs) and clip_range_vf (at this
        iteration's progress; None: no value clipping)."""
        self.loss_kwargs, self.clip_range_vf = loss_kwargs, clip_range_vf

    def epoch(self, order: torch.Tensor) -> tuple[torch.Tensor, int, bool]:
        """The minibatches of ``order`` in turn: (stats sums, updates taken, stopped by target_kl)."""
        algo = self.algo
        config, flat, reducer = algo.config, algo._flat, algo.reducer
        stats_sum, n_updates = torch.zeros(len(STATS), dtype=torch.float64, device=algo.device), 0
        for start in range(0, order.numel(), config.batch_size):
            loss, stats = self.minibatch_loss(order[start:start + config.batch_size])
            flat.grad.zero_()
            loss.backward()
            # the KL that decides target_kl's stop: every rank's (averaged with the gradient), so all stop together
            approx_kl = None if config.target_kl is None else float(stats["approx_kl"])
            approx_kl = reducer.gradients(flat.grad, approx_kl)
            if approx_kl is not None and approx_kl > 1.5 * config.target_kl:
                return stats_sum, n_updates, True  # as SB3: this step would move too far; stop before it
            algo.optimizer.step(config.max_grad_norm)
            stats_sum += torch.stack([stats[k].detach() for k in STATS]).double()
            n_updates += 1
        return stats_sum, n_updates, False

    def minibatch_loss(self, idx: torch.Tensor) -> tuple[torch.Tensor, dict[str, torch.Tensor]]:
        """The loss of the rollout's samples ``idx`` and its stats: the policy forward, SB3's value clipping,
        the fused loss (advantages normalised with every rank's moments when data-parallel)."""
        algo = self.algo
        spec, policy, reducer = algo.action_spec, algo.policy, algo.reducer
        data = algo.rollout.flat()
        params, values = policy(data["obs"][idx])
        old_values = data["values"][idx]
        if self.clip_range_vf is not None:  # SB3's: the prediction is clipped (not the op's max form, vf_clip)
            values = old_values + torch.clamp(values - old_values, -self.clip_range_vf, self.clip_range_vf)
        dist = spec.distribution(params)
        log_probs = dist.log_prob(data["actions"][idx])
        kl = spec.distribution(data["dist_params"][idx]).kl(dist) if algo.config.variant == "kl" else None
        advantages, loss_kwargs = data["advantages"][idx], self.loss_kwargs
        if loss_kwargs["normalize_advantages"] and (not reducer.local or idx.numel() == 1):
            # data-parallel: with the moments of every rank's minibatch (so K ranks' minibatches of M
            # update as one of K * M); a truncated last minibatch of one sample in one process is not
            # normalised (as SB3, and the native update)
            if not reducer.local:
                advantages = reducer.normalize(advantages)
            loss_kwargs = {**loss_kwargs, "normalize_advantages": False}
        return ppo_loss(log_probs, data["log_probs"][idx], advantages, values, old_values, data["returns"][idx],
                        dist.entropy(), kl=kl, backend=algo.backend, **loss_kwargs)


class GraphedPpoUpdater(TorchPpoUpdater):
    """:class:`TorchPpoUpdater` with each full minibatch's step replayed from a CUDA graph (the design:
    :mod:`fastppo.algos.graphs`)."""

    def __init__(self, algo: PPO):
        super().__init__(algo)
        self.graph = graphs.ReplayedMinibatches(algo.optimizer, algo.config.batch_size, algo.device,
                                                "the update's minibatch step")
        self.sums = torch.zeros(len(STATS), dtype=torch.float64, device=algo.device)  # one epoch's stats, summed

    def epoch(self, order: torch.Tensor) -> tuple[torch.Tensor, int, bool]:
        self.sums.zero_()
        numbers = (sorted(self.loss_kwargs.items()), self.clip_range_vf, self.algo.config.max_grad_norm)
        n_updates = self.graph.run(order, self._step, numbers)
        return self.sums.clone(), n_updates, False

    def _step(self, idx: torch.Tensor) -> None:
        """One minibatch's step, with nothing on the host that changes between calls."""
        loss, stats = self.minibatch_loss(idx)
        self.algo._flat.grad.zero_()
        loss.backward()
        self.graph.adam_step(self.algo.config.max_grad_norm)
        self.sums += torch.stack([stats[k].detach() for k in STATS]).double()


class NativePpoUpdater:
    """:class:`TorchPpoUpdater`'s epoch in one native call (``fastppo._core.PpoUpdate``, built once over the
    policy's, the gradients', Adam's (its moments and step count) and the rollout's own memory), with
    the same data-parallel seam (``Reducer.gradients``, called back from the native loop). The advantages
    it reads are the rollout's in one process; data-parallel, a buffer of its own, where each epoch writes
    them normalised per minibatch with every rank's moments."""

    def __init__(self, algo: PPO):
        from fastppo._backend import _core

        self.algo = algo
        policy, adam, spec, config = algo.policy, algo.optimizer, algo.action_spec, algo.config
        params, grads = policy.native_arrays(), policy.native_arrays(grads=True)
        data = {k: v.numpy() for k, v in algo.rollout.flat().items()}
        self.advantages = None if algo.reducer.local else torch.empty_like(algo.rollout.flat()["advantages"])
        self.normalize_globally = False
        self.native = _core.PpoUpdate(
            params["actor"], grads["actor"], params["critic"], grads["critic"], policy.activation, spec.kind,
            list(spec.nvec), params["log_std"], grads["log_std"], algo._flat.param.detach().numpy(),
            algo._flat.grad.numpy(), adam.exp_avg.numpy(), adam.exp_avg_sq.numpy(), adam.step_count, data["obs"],
            data["actions"],
            data["log_probs"], data["advantages"] if self.advantages is None else self.advantages.numpy(),
            data["values"], data["returns"],
            data["dist_params"] if config.variant == "kl" else None)
        self.settings = _core.PpoUpdateConfig()
        self.settings.batch_size = config.batch_size
        self.settings.max_grad_norm = _off(config.max_grad_norm)

    def begin(self, loss_kwargs: dict, clip_range_vf: float | None) -> None:
        """The loss's settings (the op's names, which the native config shares; None is -1 there),
        clip_range_vf (SB3's clipping, done natively before the op) and Adam's."""
        s, adam, local = self.settings, self.algo.optimizer, self.algo.reducer.local
        s.clip_coef, s.vf_coef, s.ent_coef = loss_kwargs["clip_coef"], loss_kwargs["vf_coef"], loss_kwargs["ent_coef"]
        s.clip_range_vf = _off(clip_range_vf)
        # data-parallel, the advantages' moments (into the buffer built for it) and target_kl's KL are every
        # rank's, found in Python
        self.normalize_globally = loss_kwargs["normalize_advantages"] and self.advantages is not None
        s.normalize_advantages = loss_kwargs["normalize_advantages"] and self.advantages is None
        s.target_kl = _off(self.algo.config.target_kl) if local else -1.0
        s.kl_coef = loss_kwargs["kl_coef"] if self.algo.config.variant == "kl" else -1.0
        s.lr, (s.beta1, s.beta2), s.eps = adam.lr, adam.betas, adam.eps

    def epoch(self, order: torch.Tensor) -> tuple[torch.Tensor, int, bool]:
        algo = self.algo
        reducer, grad, target_kl = algo.reducer, algo._flat.grad, algo.config.target_kl
        if self.advantages is not None:  # data-parallel
            advantages = algo.rollout.flat()["advantages"]
            if self.normalize_globally:
                self.advantages[order] = normalize_minibatches(reducer, advantages[order], self.settings.batch_size)
            else:
                self.advantages.copy_(advantages)
        # The data-parallel seam: the native loop calls back (the GIL held) between each minibatch's
        # backward and its clipping and step, and the reducer averages the flat gradient in place (the
        # memory the native loop reads) and the minibatch's KL, which decides target_kl's stop (False:
        # stop before this step). In one process there is nothing to call.
        def on_gradients(approx_kl: float) -> bool:
            approx_kl = reducer.gradients(grad, approx_kl)
            return not (target_kl is not None and approx_kl > 1.5 * target_kl)

        updates, stopped, sums = self.native.epoch(order.numpy(), self.settings,
                                                   None if reducer.local else on_gradients)
        return torch.tensor(sums, dtype=torch.float64), updates, stopped


def _off(value) -> float:
    """The native configs' "not set"."""
    return -1.0 if value is None else value
