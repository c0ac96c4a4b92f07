"""Trust Region Policy Optimization (Schulman et al. 2015) and the natural policy gradient, on the
rollout path PPO uses.

Per iteration: the policy gradient g of the surrogate mean(ratio * A); Fisher-vector products by
differentiating the mean KL twice (the Fisher matrix is never formed), plus damping; conjugate
gradient for x ~= F^-1 g; the step scaled so that 0.5 x^T F x = target_kl; then a backtracking line
search that accepts the first shrunken step that improves the surrogate and keeps the measured mean
KL(new || old) below target_kl (sb3-contrib's measure) (the natural policy gradient takes the scaled step without the search). With
``sub_sampling_factor`` k > 1 the policy step runs on every k-th sample of the shuffled rollout, as
sb3-contrib's. The critic regresses on the GAE returns (the mean squared error, as sb3-contrib) with
its own Adam, several passes per iteration over the whole rollout.
"""

from __future__ import annotations

from typing import Callable

import torch
from torch import nn

from fastppo.algos import graphs
from fastppo.algos.base import OnPolicyAlgorithm
from fastppo.algos.config import TRPOConfig, with_config_signature
from fastppo.algos.optim import FlatParameters, make_optimizer
from fastppo.algos.policies import state_values


def flat_vector(tensors) -> torch.Tensor:
    """The tensors' elements as one vector. Not torch's parameters_to_vector, which views each tensor and
    fails on the strided gradients convolutions give under double back-propagation."""
    return torch.cat([t.reshape(-1) for t in tensors])


def conjugate_gradient(matvec: Callable[[torch.Tensor], torch.Tensor], b: torch.Tensor, iters: int,
                       residual_tol: float = 1e-10) -> torch.Tensor:
    """Approximately solve A x = b for symmetric positive-definite A given only x -> A x."""
    x = torch.zeros_like(b)
    r, p = b.clone(), b.clone()
    rr = r @ r
    for _ in range(iters):
        if rr < residual_tol:
            break
        Ap = matvec(p)
        alpha = rr / (p @ Ap)
        x += alpha * p
        r -= alpha * Ap
        rr_new = r @ r
        p = r + (rr_new / rr) * p
        rr = rr_new
    return x


def _copy_to_parameters(vec: torch.Tensor, params: list[nn.Parameter]) -> None:
    """torch's ``vector_to_parameters``, in place: that one re-seats every parameter (``p.data = `` a view
    of ``vec``), which would leave the native rollout step's views of the parameters' memory stale."""
    offset = 0
    with torch.no_grad():
        for p in params:
            n = p.numel()
            p.copy_(vec[offset:offset + n].view_as(p))
            offset += n


class TRPO(OnPolicyAlgorithm):
    """TRPO (``line_search=True``) or the natural policy gradient (``line_search=False``).

    Args:
        policy, env: as :class:`fastppo.PPO`'s.
        config: a :class:`fastppo.algos.config.TRPOConfig`; keyword arguments replace its fields.
        **hyperparameters: the fields of :class:`~fastppo.algos.config.TRPOConfig` (``target_kl``,
            ``cg_max_steps``, ``cg_damping``, ``line_search``, the critic's ``learning_rate``,
            ``n_critic_updates`` and ``batch_size``, ...), each documented there.
    """

    algo = "trpo"
    config_class = TRPOConfig
    positional = ("learning_rate", "n_steps", "batch_size", "gamma", "cg_max_steps", "cg_damping",
                  "line_search_shrinking_factor", "line_search_max_iter", "n_critic_updates", "gae_lambda", "use_sde",
                  "sde_sample_freq", "rollout_buffer_class", "rollout_buffer_kwargs", "normalize_advantage",
                  "target_kl", "sub_sampling_factor", "stats_window_size", "tensorboard_log", "policy_kwargs",
                  "verbose", "seed", "device", "_init_setup_model")

    def __init__(self, policy: str | nn.Module = "MlpPolicy", env="CartPole-v1", *args, config: TRPOConfig | None = None,
                 _spaces=None, **hyperparameters):
        config = self._config_from_args(args, config, hyperparameters)
        super().__init__(policy, env, config, spaces=_spaces)
        for method in ("actor_parameters", "critic_parameters"):
            if not callable(getattr(self.policy, method, None)):
                raise TypeError(f"TRPO needs the policy module to define {method}()")
        self.actor_params = list(self.policy.actor_parameters())
        # The critic's parameters as views of one flat buffer: Adam then runs on one tensor (and natively).
        self._critic_flat = FlatParameters(self.policy.critic_parameters())
        # policy_kwargs' optimizer_class / optimizer_kwargs; by default Adam with eps 1e-5, as sb3-contrib's
        # (SB3's policies give Adam that eps when no optimizer_kwargs are given)
        self.critic_optimizer = make_optimizer(self._critic_flat, config.lr_schedule(1.0), **self._optimizer_options)
        self._build_updaters()

    def _build_updaters(self) -> None:
        if self.native:
            self.critic_updater = NativeCriticFit(self)
            return
        graphed = graphs.applies(self, graphs.critic_blocker(self), "the critic's regression")
        self.critic_updater = (GraphedCriticFit if graphed else TorchCriticFit)(self)

    def _optimizer_objects(self) -> dict:
        return {"policy.optimizer": self.critic_optimizer}

    # -- the pieces, public so that they can be tested on their own ---------------------------------
    def surrogate(self, obs, actions, old_log_probs, advantages):
        """mean(pi(a|s) / pi_old(a|s) * A) and the new distribution."""
        params, _ = self.policy(obs)
        dist = self.action_spec.distribution(params)
        return (torch.exp(dist.log_prob(actions) - old_log_probs) * advantages).mean(), dist

    def mean_kl(self, obs, old_params) -> torch.Tensor:
        """Mean KL(new || old) over the batch, differentiable in the actor's parameters: what sb3-contrib's
        ``target_kl`` bounds (the paper writes KL(old || new); both have the Fisher matrix as their Hessian
        at the old parameters, so only the line search's measure differs)."""
        params, _ = self.policy(obs)
        return self.action_spec.distribution(params).kl(self.action_spec.distribution(old_params)).mean()

    def fisher_vector_product(self, obs, old_params) -> Callable[[torch.Tensor], torch.Tensor]:
        """v -> (F + damping I) v, with F the Hessian of the mean KL at the current parameters (where it
        equals the Fisher information), by double back-propagation; averaged across processes (the
        data-parallel seam) before the damping."""
        kl = self.mean_kl(obs, old_params)
        grads = flat_vector(torch.autograd.grad(kl, self.actor_params, create_graph=True))

        def fvp(v: torch.Tensor) -> torch.Tensor:
            hv = torch.autograd.grad(grads @ v, self.actor_params, retain_graph=True)
            return self.reducer.mean(flat_vector(hv)) + self.config.cg_damping * v

        return fvp

    # -- UPDATE -------------------------------------------------------------------------------------
    def _update(self, progress: float) -> dict[str, float]:
        config, reduce = self.config, self.reducer.mean
        data = self.rollout.flat()
        obs, actions, old_log_probs, old_params = data["obs"], data["actions"], data["log_probs"], data["dist_params"]
        adv = data["advantages"]
        if config.sub_sampling_factor > 1:  # as sb3-contrib: every k-th sample of the shuffled rollout
            idx = torch.randperm(self.rollout_size, generator=self._generator, device=self.device)
            idx = idx[::config.sub_sampling_factor]
            obs, actions, old_log_probs, old_params, adv = (x[idx] for x in (obs, actions, old_log_probs, old_params,
                                                                             adv))
        if config.normalize_advantage and (adv.numel() > 1 or not self.reducer.local):
            adv = self.reducer.normalize(adv)  # data-parallel: with the moments of every rank's samples

        surrogate, dist = self.surrogate(obs, actions, old_log_probs, adv)
        grad = reduce(flat_vector(torch.autograd.grad(surrogate, self.actor_params)))
        fvp = self.fisher_vector_product(obs, old_params)
        direction = conjugate_gradient(fvp, grad, config.cg_max_steps)
        shs = direction @ fvp(direction)  # x^T F x
        step = torch.sqrt(2 * config.target_kl / shs.clamp_min(1e-12)) * direction
        old_theta = flat_vector(self.actor_params).detach()
        old_surrogate = reduce(surrogate.detach())

        accepted, steps, kl, new_surrogate = False, 0, torch.tensor(0.0), old_surrogate
        with torch.no_grad():
            if config.line_search:
                for steps in range(1, config.line_search_max_iter + 1):
                    shrink = config.line_search_shrinking_factor ** (steps - 1)
                    _copy_to_parameters(old_theta + shrink * step, self.actor_params)
                    new_surrogate = reduce(self.surrogate(obs, actions, old_log_probs, adv)[0])
                    kl = reduce(self.mean_kl(obs, old_params))
                    if kl < config.target_kl and new_surrogate > old_surrogate:  # sb3-contrib's test
                        accepted = True
                        break
                if not accepted:
                    _copy_to_parameters(old_theta, self.actor_params)
                    kl, new_surrogate = torch.tensor(0.0), old_surrogate
            else:  # the natural policy gradient: the step the quadratic model predicts reaches target_kl
                _copy_to_parameters(old_theta + step, self.actor_params)
                new_surrogate = reduce(self.surrogate(obs, actions, old_log_probs, adv)[0])
                kl, accepted, steps = reduce(self.mean_kl(obs, old_params)), True, 1

        lr = config.lr_schedule(progress)
        value_loss = self._fit_critic(lr)
        self._n_updates += 1
        metrics = {"train/policy_objective": float(new_surrogate), "train/value_loss": value_loss,
                   "train/kl_divergence_loss": float(kl), "train/is_line_search_success": float(accepted),
                   "train/n_updates": self._n_updates, "train/learning_rate": lr,
                   "train/entropy_loss": -float(dist.entropy().mean().detach()),
                   "train/surrogate_improvement": float(new_surrogate - old_surrogate),
                   "train/line_search_steps": steps}
        return metrics

    def _fit_critic(self, lr: float) -> float:
        """``n_critic_updates`` passes of minibatch regression of V on the returns (the MSE, Adam), through
        the critic updater; returns the mean minibatch loss."""
        self.critic_optimizer.lr = lr
        total, count = 0.0, 0
        for _ in range(self.config.n_critic_updates):
            order = torch.randperm(self.rollout_size, generator=self._generator, device=self.device)
            total += self.critic_updater.epoch(order)
            count += -(-self.rollout_size // self.config.batch_size)
        return total / count

    def _algo_state(self) -> dict:
        return {"critic_optimizer": self.critic_optimizer.state_dict()}

    def _load_algo_state(self, state: dict) -> None:
        self.critic_optimizer.load_state_dict(state["critic_optimizer"])


with_config_signature(TRPO)


class TorchCriticFit:
    """One pass of TRPO's critic regression in torch ops (the spec): per minibatch, the MSE, backward,
    the data-parallel seam (``Reducer.gradients``), Adam."""

    def __init__(self, algo: TRPO):
        self.algo = algo

    def epoch(self, order: torch.Tensor) -> float:
        """The minibatches of ``order`` in turn; the sum of their losses."""
        algo = self.algo
        batch_size, adam = algo.config.batch_size, algo.critic_optimizer
        total = torch.zeros((), device=algo.device)  # one host sync per pass, not per step
        for start in range(0, order.numel(), batch_size):
            loss = self.minibatch_loss(order[start:start + batch_size])
            algo._critic_flat.grad.zero_()
            loss.backward()
            algo.reducer.gradients(algo._critic_flat.grad)
            adam.step()
            total += loss.detach()
        return float(total)

    def minibatch_loss(self, idx: torch.Tensor) -> torch.Tensor:
        """The critic's MSE on the rollout's samples ``idx``."""
        data = self.algo.rollout.flat()
        return ((state_values(self.algo.policy, data["obs"][idx]) - data["returns"][idx]) ** 2).mean()


class GraphedCriticFit(TorchCriticFit):
    """:class:`TorchCriticFit` with each full minibatch's step replayed from a CUDA graph (the design:
    :mod:`fastppo.algos.graphs`)."""

    def __init__(self, algo: TRPO):
        super().__init__(algo)
        self.graph = graphs.ReplayedMinibatches(algo.critic_optimizer, algo.config.batch_size, algo.device,
                                                "the critic's minibatch step")
        self.total = torch.zeros((), device=algo.device)  # one pass's losses, summed

    def epoch(self, order: torch.Tensor) -> float:
        self.total.zero_()
        self.graph.run(order, self._step)
        return float(self.total)

    def _step(self, idx: torch.Tensor) -> None:
        loss = self.minibatch_loss(idx)
        self.algo._critic_flat.grad.zero_()
        loss.backward()
        self.graph.adam_step()
        self.total += loss.detach()


class NativeCriticFit:
    """:class:`TorchCriticFit`'s pass in one native call (``fastppo._core.CriticFit``, built once over the
    critic's, its gradients', Adam's (its moments and step count) and the rollout's own memory), with
    the same data-parallel seam (``Reducer.gradients``, called back from the native loop)."""

    def __init__(self, algo: TRPO):
        from fastppo._backend import _core

        self.algo = algo
        adam, data = algo.critic_optimizer, algo.rollout.flat()
        params, grads = algo.policy.native_arrays(), algo.policy.native_arrays(grads=True)
        self.native = _core.CriticFit(params["critic"], grads["critic"], algo.policy.activation,
                                      algo._critic_flat.param.detach().numpy(), algo._critic_flat.grad.numpy(),
                                      adam.exp_avg.numpy(), adam.exp_avg_sq.numpy(), adam.step_count,
                                      data["obs"].numpy(), data["returns"].numpy())

    def epoch(self, order: torch.Tensor) -> float:
        adam, reducer, grad = self.algo.critic_optimizer, self.algo.reducer, self.algo._critic_flat.grad
        # The data-parallel seam, as NativePpoUpdater's: called back between backward and Adam's step.
        on_gradients = None if reducer.local else (lambda: reducer.gradients(grad))
        return self.native.epoch(order.numpy(), self.algo.config.batch_size, adam.lr, *adam.betas, adam.eps,
                                 on_gradients)
