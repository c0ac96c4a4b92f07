"""The surrogate L and its exact remainder, divergences between policies, the TRPO lower bound, the
derivation notes' own bound and its counterexample, and PPO's clipped objective (docs/theory.md)."""

from __future__ import annotations

from typing import NamedTuple

import numpy as np

from fastppo.theory.mdp import (TabularMDP, _policy, _system, advantages, eta, policy_transitions, uniform_policy,
                                values, visitation)

__all__ = ["Divergences", "clip_terms", "clipped_surrogate", "doc_bound", "doc_constant", "doc_counterexample",
           "doc_remainder", "kl_divergence", "performance_difference", "policy_divergences", "remainder",
           "surrogate", "trpo_bound", "trpo_constant", "tv_distance"]

def performance_difference(mdp: TabularMDP, pi_old, pi_new) -> float:
    """The right side of the performance-difference identity (Kakade & Langford 2002)::

        eta(pi_new) - eta(pi_old) = 1/(1 - gamma) E_{s ~ rho_{pi_new}, a ~ pi_new}[A_{pi_old}(s, a)]

    Note the *new* policy's visitation; :func:`surrogate` replaces it by the old one's.
    """
    pi_new = _policy(mdp, pi_new, "pi_new")
    gain = np.einsum("sa,sa->s", pi_new, advantages(mdp, pi_old))
    return float(visitation(mdp, pi_new) @ gain / (1.0 - mdp.gamma))


def surrogate(mdp: TabularMDP, pi_old, pi_new) -> float:
    """The surrogate ``L_{pi_old}(pi_new) = eta(pi_old) + 1/(1-gamma) E_{s~rho_old}[sum_a pi_new A_old]``.

    It equals eta at ``pi_new = pi_old`` and has the same gradient there (first-order match).
    """
    pi_new = _policy(mdp, pi_new, "pi_new")
    gain = np.einsum("sa,sa->s", pi_new, advantages(mdp, pi_old))
    return eta(mdp, pi_old) + float(visitation(mdp, pi_old) @ gain / (1.0 - mdp.gamma))


def remainder(mdp: TabularMDP, pi_old, pi_new) -> float:
    """The exact second-order term ``eta(pi_new) - L_{pi_old}(pi_new)`` from its matrix formula::

        gamma rho0^T G_new (P_new - P_old) G_old a_delta,   a_delta(s) = sum_a (pi_new - pi_old)(a|s) A_old(s, a)

    This generalises the derivation notes' ``gamma^2 r G P_delta G P_delta G~ rho0`` (:func:`doc_remainder`) to
    action-dependent rewards; the two agree when ``R[s, a]`` does not depend on ``a``.
    """
    pi_old = _policy(mdp, pi_old, "pi_old")
    pi_new = _policy(mdp, pi_new, "pi_new")
    a_delta = np.einsum("sa,sa->s", pi_new - pi_old, advantages(mdp, pi_old))
    p_delta = policy_transitions(mdp, pi_new) - policy_transitions(mdp, pi_old)
    weights = np.linalg.solve(_system(mdp, pi_new).T, mdp.rho0)  # rho0^T G_new
    return float(mdp.gamma * weights @ p_delta @ np.linalg.solve(_system(mdp, pi_old), a_delta))


def doc_remainder(mdp: TabularMDP, pi_old, pi_new) -> float:
    """The derivation notes' remainder ``gamma^2 r G P_delta G P_delta G~ rho0``, transposed to row convention.

    Exact only for state-only rewards (``r = r_pi_old`` is used for both policies); kept for comparison
    (docs/theory.md, note 1).
    """
    p_delta = policy_transitions(mdp, pi_new) - policy_transitions(mdp, pi_old)
    weights = np.linalg.solve(_system(mdp, pi_new).T, mdp.rho0)  # rho0^T G~
    inner = np.linalg.solve(_system(mdp, pi_old), p_delta @ values(mdp, pi_old))  # G P_delta v
    return float(mdp.gamma ** 2 * weights @ p_delta @ inner)


def tv_distance(p, q) -> np.ndarray:
    """Per-state total variation ``1/2 sum_a |p(a|s) - q(a|s)|`` between two policies (shape ``(S,)``)."""
    return 0.5 * np.abs(np.asarray(p, float) - np.asarray(q, float)).sum(axis=-1)


def kl_divergence(p, q) -> np.ndarray:
    """Per-state ``KL(p(.|s) || q(.|s)) = sum_a p log(p / q)`` (``0 log 0 = 0``; ``inf`` where q = 0 < p)."""
    p = np.asarray(p, float)
    q = np.asarray(q, float)
    with np.errstate(divide="ignore", invalid="ignore"):
        terms = np.where(p > 0, p * (np.log(p) - np.log(q)), 0.0)
    return terms.sum(axis=-1)


class Divergences(NamedTuple):
    """Divergences between two policies: max over states, and mean under the old policy's visitation."""

    tv_max: float
    tv_mean: float
    kl_max: float
    kl_mean: float


def policy_divergences(mdp: TabularMDP, pi_old, pi_new) -> Divergences:
    """Max and ``rho_{pi_old}``-mean total variation and ``KL(pi_old || pi_new)`` between two policies."""
    pi_old = _policy(mdp, pi_old, "pi_old")
    pi_new = _policy(mdp, pi_new, "pi_new")
    weights = visitation(mdp, pi_old)
    tv = tv_distance(pi_old, pi_new)
    kl = kl_divergence(pi_old, pi_new)
    with np.errstate(invalid="ignore"):  # inf * 0 for unvisited states with infinite KL
        kl_mean = float(np.sum(np.where(weights > 0, weights * kl, 0.0)))
    return Divergences(float(tv.max()), float(weights @ tv), float(kl.max()), kl_mean)


def trpo_constant(mdp: TabularMDP, pi_old) -> float:
    """Schulman et al. (2015)'s ``C = 4 eps gamma / (1 - gamma)^2`` with ``eps = max_{s,a} |A_{pi_old}(s, a)|``."""
    eps = float(np.abs(advantages(mdp, pi_old)).max())
    return 4.0 * eps * mdp.gamma / (1.0 - mdp.gamma) ** 2


def trpo_bound(mdp: TabularMDP, pi_old, pi_new, *, divergence: str = "tv") -> float:
    """The TRPO lower bound on ``eta(pi_new)``: ``L_{pi_old}(pi_new) - C D``.

    Args:
        divergence: ``"tv"`` for ``D = (D_TV^max)^2`` (Theorem 1 of Schulman et al. 2015, the tighter one)
            or ``"kl"`` for ``D = D_KL^max`` (their Eq. 9, via ``D_TV^2 <= D_KL``).

    ``C`` is :func:`trpo_constant`. The bound holds for every pair of policies of every MDP.
    """
    div = policy_divergences(mdp, pi_old, pi_new)
    if divergence == "tv":
        penalty = div.tv_max ** 2
    elif divergence == "kl":
        penalty = div.kl_max
    else:
        raise ValueError(f"divergence must be 'tv' or 'kl', got {divergence!r}")
    return surrogate(mdp, pi_old, pi_new) - trpo_constant(mdp, pi_old) * penalty


def doc_constant(mdp: TabularMDP, pi_old) -> float:
    """The derivation notes' ``C = 4 gamma^2 ||r G||_inf ||G|| ||G~|| ||rho0||_1 = 4 gamma^2 max_s |V(s)| / (1 - gamma)^2``.

    (With its norms read as the induced ones, ``||G|| = ||G~|| = 1/(1 - gamma)``.) Valid for state-only
    rewards only; see docs/theory.md, note 1.
    """
    return 4.0 * mdp.gamma ** 2 * float(np.abs(values(mdp, pi_old)).max()) / (1.0 - mdp.gamma) ** 2


def doc_bound(mdp: TabularMDP, pi_old, pi_new) -> float:
    """The derivation notes' bound ``L_{pi_old}(pi_new) - doc_constant * (D_TV^max)^2``, kept for comparison.

    It is a lower bound on ``eta(pi_new)`` when rewards depend on the state only; :func:`doc_counterexample`
    shows it failing with action-dependent rewards.
    """
    tv = policy_divergences(mdp, pi_old, pi_new).tv_max
    return surrogate(mdp, pi_old, pi_new) - doc_constant(mdp, pi_old) * tv ** 2


def doc_counterexample() -> tuple[TabularMDP, np.ndarray, np.ndarray]:
    """``(mdp, pi_old, pi_new)`` where the derivation notes' bound fails: ``doc_bound = 1 > eta(pi_new) = 0``.

    Two states; action 0 earns +1 and switches state, action 1 earns -1 and stays; gamma = 0.5; start in
    state 0. Under the uniform ``pi_old`` every V is 0, so the notes' C is 0 and its bound is L itself.
    """
    P = np.zeros((2, 2, 2))
    P[0, 0, 1] = P[1, 0, 0] = 1.0  # action 0 switches state
    P[0, 1, 0] = P[1, 1, 1] = 1.0  # action 1 stays
    R = np.array([[1.0, -1.0], [1.0, -1.0]])
    mdp = TabularMDP(P, R, 0.5, np.array([1.0, 0.0]))
    return mdp, uniform_policy(mdp), np.array([[1.0, 0.0], [0.0, 1.0]])


def clip_terms(pi_old, pi_new, adv, clip_eps: float) -> tuple[np.ndarray, np.ndarray]:
    """Per-(s, a) terms ``(r A, min(r A, clip(r, 1-eps, 1+eps) A))`` of L_CPI and L_CLIP (Schulman et al. 2017, Eqs 6, 7).

    ``r = pi_new / pi_old``; pairs with ``pi_old = 0`` are never sampled, so both terms are 0 there.
    """
    pi_old = np.asarray(pi_old, float)
    with np.errstate(divide="ignore", invalid="ignore"):
        ratio = np.where(pi_old > 0, np.asarray(pi_new, float) / pi_old, 1.0)
    adv = np.where(pi_old > 0, np.asarray(adv, float), 0.0)
    cpi = ratio * adv
    return cpi, np.minimum(cpi, np.clip(ratio, 1.0 - clip_eps, 1.0 + clip_eps) * adv)


def clipped_surrogate(mdp: TabularMDP, pi_old, pi_new, clip_eps: float = 0.2) -> float:
    """L_CLIP in the units of :func:`surrogate`: ``eta(pi_old) + 1/(1-gamma) E_{s~rho_old, a~pi_old}[min(...)]``.

    With ``clip_eps = inf`` it equals :func:`surrogate` (when ``pi_old > 0``); otherwise it is at most that.
    """
    pi_old = _policy(mdp, pi_old, "pi_old")
    pi_new = _policy(mdp, pi_new, "pi_new")
    _, clipped = clip_terms(pi_old, pi_new, advantages(mdp, pi_old), clip_eps)
    gain = np.einsum("sa,sa->s", pi_old, clipped)
    return eta(mdp, pi_old) + float(visitation(mdp, pi_old) @ gain / (1.0 - mdp.gamma))
