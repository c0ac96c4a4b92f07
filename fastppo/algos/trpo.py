"""Trust Region Policy Optimization (Schulman et al. 2015) and the natural policy gradient, on the
rollout path PPO uses.

Per iteration: the policy gradient g of the surrogate mean(ratio * A); Fisher-vector products by
differentiating the mean KL twice (the Fisher matrix is never formed), plus damping; conjugate
gradient for x ~= F^-1 g; the step scaled so that 0.5 x^T F x = max_kl; then a backtracking line search
that accepts the first shrunken step that improves the surrogate and keeps the measured mean KL within
max_kl (the natural policy gradient takes the scaled step without the search). The critic regresses
on the GAE returns with its own Adam, several passes per iteration.
"""

from __future__ import annotations

from typing import Callable

import torch
from torch import nn
from torch.nn.utils import parameters_to_vector, vector_to_parameters

from fastppo.algos.base import FlatAdam, FlatParameters, OnPolicyAlgorithm, _check_int


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


class TRPO(OnPolicyAlgorithm):
    """TRPO (``line_search=True``) or the natural policy gradient (``line_search=False``).

    Args (beyond those shared with :class:`fastppo.PPO`: env, n_steps, gamma, gae_lambda, num_envs,
    normalize_obs, normalize_reward, use_sde, sde_sample_freq, policy_kwargs, seed, device, backend, log_dir,
    tensorboard_log, torch_threads):
        max_kl: the trust region, a bound on the mean KL(old || new) per update.
        cg_iters: conjugate-gradient iterations. cg_damping: added to F (F + damping * I).
        line_search: backtrack (TRPO) or take the scaled natural step (NPG).
        line_search_max_iter, line_search_shrink: at most this many steps, each this factor shorter.
        learning_rate: the critic's Adam step size (number, "lin_<v>" or callable).
        n_critic_updates: passes of critic regression per iteration. batch_size: its minibatch size.
        normalize_advantage: normalise the advantages over the rollout.
    """

    algo = "trpo"

    def __init__(self, policy: str | nn.Module = "MlpPolicy", env="CartPole-v1", *, learning_rate=1e-3,
                 n_steps: int = 2048, batch_size: int = 128, gamma: float = 0.99, gae_lambda: float = 0.95,
                 max_kl: float = 0.01, cg_iters: int = 15, cg_damping: float = 0.1, line_search: bool = True,
                 line_search_max_iter: int = 10, line_search_shrink: float = 0.8, n_critic_updates: int = 10,
                 normalize_advantage: bool = True, num_envs: int = 1, normalize_obs: bool = False,
                 normalize_reward: bool = False, use_sde: bool = False, sde_sample_freq: int = -1,
                 policy_kwargs: dict | None = None, seed: int | None = None,
                 device: str = "cpu", backend: str = "auto", log_dir: str | None = None,
                 tensorboard_log: str | None = None, torch_threads: int | None = None):
        hyperparameters = {k: v for k, v in locals().items() if k not in ("self", "policy", "env", "__class__")}
        if not max_kl > 0:
            raise ValueError(f"max_kl must be > 0, got {max_kl!r}")
        _check_int(cg_iters, "cg_iters", 1)
        if not cg_damping >= 0:
            raise ValueError(f"cg_damping must be >= 0, got {cg_damping!r}")
        _check_int(line_search_max_iter, "line_search_max_iter", 1)
        if not 0 < line_search_shrink < 1:
            raise ValueError(f"line_search_shrink must be in (0, 1), got {line_search_shrink!r}")
        _check_int(n_critic_updates, "n_critic_updates", 1)
        _check_int(batch_size, "batch_size", 1)
        super().__init__(policy, env, hyperparameters=hyperparameters, **self._shared(hyperparameters))
        for method in ("actor_parameters", "critic_parameters"):
            if not callable(getattr(self.policy, method, None)):
                raise TypeError(f"TRPO needs the policy module to define {method}()")
        self.max_kl, self.cg_iters, self.cg_damping = max_kl, cg_iters, cg_damping
        self.line_search, self.line_search_max_iter, self.line_search_shrink = (
            line_search, line_search_max_iter, line_search_shrink)
        self.n_critic_updates, self.batch_size, self.normalize_advantage = n_critic_updates, batch_size, normalize_advantage
        self.actor_params = list(self.policy.actor_parameters())
        # The critic's parameters as views of one flat buffer: Adam then runs on one tensor (and natively).
        self._critic_flat = FlatParameters(self.policy.critic_parameters())
        self.critic_optimizer = FlatAdam(self._critic_flat, lr=self.learning_rate(1.0), eps=1e-8)

    # -- the pieces, public so that they can be tested on their own ---------------------------------
    def surrogate(self, obs, actions, old_log_probs, advantages):
        """mean(pi(a|s) / pi_old(a|s) * A) and the new distribution."""
        params, _ = self.policy(obs)
        dist = self.action_spec.distribution(params)
        return (torch.exp(dist.log_prob(actions) - old_log_probs) * advantages).mean(), dist

    def mean_kl(self, obs, old_params) -> torch.Tensor:
        """Mean KL(old || new) over the batch, differentiable in the actor's parameters."""
        params, _ = self.policy(obs)
        return self.action_spec.distribution(old_params).kl(self.action_spec.distribution(params)).mean()

    def fisher_vector_product(self, obs, old_params) -> Callable[[torch.Tensor], torch.Tensor]:
        """v -> (F + damping I) v, with F the Hessian of the mean KL at the current parameters (where it
        equals the Fisher information), by double back-propagation."""
        kl = self.mean_kl(obs, old_params)
        grads = parameters_to_vector(torch.autograd.grad(kl, self.actor_params, create_graph=True))

        def fvp(v: torch.Tensor) -> torch.Tensor:
            hv = torch.autograd.grad(grads @ v, self.actor_params, retain_graph=True)
            return parameters_to_vector(hv) + self.cg_damping * v

        return fvp

    # -- UPDATE -------------------------------------------------------------------------------------
    def _update(self, progress: float) -> dict[str, float]:
        data = self.rollout.flat()
        obs, actions, old_log_probs, old_params = data["obs"], data["actions"], data["log_probs"], data["dist_params"]
        adv = data["advantages"]
        if self.normalize_advantage and adv.numel() > 1:
            adv = (adv - adv.mean()) / (adv.std() + 1e-8)

        surrogate, dist = self.surrogate(obs, actions, old_log_probs, adv)
        grad = parameters_to_vector(torch.autograd.grad(surrogate, self.actor_params))
        fvp = self.fisher_vector_product(obs, old_params)
        direction = conjugate_gradient(fvp, grad, self.cg_iters)
        shs = direction @ fvp(direction)  # x^T F x
        step = torch.sqrt(2 * self.max_kl / shs.clamp_min(1e-12)) * direction
        old_theta = parameters_to_vector(self.actor_params).detach()
        old_surrogate = surrogate.detach()

        accepted, steps, kl, new_surrogate = False, 0, torch.tensor(0.0), old_surrogate
        with torch.no_grad():
            if self.line_search:
                for steps in range(1, self.line_search_max_iter + 1):
                    vector_to_parameters(old_theta + self.line_search_shrink ** (steps - 1) * step, self.actor_params)
                    new_surrogate, _ = self.surrogate(obs, actions, old_log_probs, adv)
                    kl = self.mean_kl(obs, old_params)
                    if kl <= self.max_kl and new_surrogate > old_surrogate:
                        accepted = True
                        break
                if not accepted:
                    vector_to_parameters(old_theta, self.actor_params)
                    kl, new_surrogate = torch.tensor(0.0), old_surrogate
            else:  # the natural policy gradient: the step the quadratic model predicts reaches max_kl
                vector_to_parameters(old_theta + step, self.actor_params)
                new_surrogate, _ = self.surrogate(obs, actions, old_log_probs, adv)
                kl, accepted, steps = self.mean_kl(obs, old_params), True, 1

        value_loss = self._fit_critic(data, self.learning_rate(progress))
        return {"value_loss": value_loss, "entropy": float(dist.entropy().mean().detach()), "kl": float(kl),
                "surrogate_improvement": float(new_surrogate - old_surrogate), "step_accepted": float(accepted),
                "line_search_steps": steps, "learning_rate": self.learning_rate(progress)}

    def _fit_critic(self, data, lr: float) -> float:
        """``n_critic_updates`` passes of minibatch regression of V on the returns (0.5 * MSE, Adam);
        returns the mean minibatch loss. The built-in MLP on the CPU runs it natively, one call per pass."""
        adam = self.critic_optimizer
        adam.lr = lr
        size, total, count = data["obs"].shape[0], 0.0, 0
        native = self._native_critic_fit(data)
        for _ in range(self.n_critic_updates):
            order = torch.randperm(size, generator=self._generator, device=self.device)
            if native is not None:
                loss_sum, adam.steps = native.epoch(order.numpy(), self.batch_size, lr, *adam.betas, adam.eps,
                                                    adam.steps)
                total += loss_sum
            else:
                pass_total = torch.zeros((), device=self.device)  # one host sync per pass, not per step
                for start in range(0, size, self.batch_size):
                    idx = order[start:start + self.batch_size]
                    loss = 0.5 * ((self.policy.value(data["obs"][idx]) - data["returns"][idx]) ** 2).mean()
                    self._critic_flat.grad.zero_()
                    loss.backward()
                    adam.step()
                    pass_total += loss.detach()
                total += float(pass_total)
            count += -(-size // self.batch_size)
        return total / count

    def _native_critic_fit(self, data):
        """fastppo._core.CriticFit over the critic's, its gradients' and Adam's memory, or None where it
        does not apply (as PPO._native_update)."""
        if not self._native_policy():
            return None
        from fastppo._backend import _core

        adam = self.critic_optimizer
        params, grads = self.policy.native_arrays(), self.policy.native_arrays(grads=True)
        return _core.CriticFit(params["critic"], grads["critic"], self.policy.activation,
                               self._critic_flat.param.detach().numpy(), self._critic_flat.grad.numpy(),
                               adam.exp_avg.numpy(), adam.exp_avg_sq.numpy(), data["obs"].numpy(),
                               data["returns"].numpy())

    def _algo_state(self) -> dict:
        return {"critic_optimizer": self.critic_optimizer.state_dict()}

    def _load_algo_state(self, state: dict) -> None:
        self.critic_optimizer.load_state_dict(state["critic_optimizer"])
