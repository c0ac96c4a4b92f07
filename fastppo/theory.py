"""Exact tabular oracle for the theory behind TRPO and PPO.

On a small finite MDP every quantity in the derivations of ``shared/seeds/`` can be computed exactly by
linear algebra: the return eta, V, Q, A, the discounted state visitation, the surrogate L, the exact
second-order remainder eta(new) - L(new), the TRPO lower bound, and the PPO clipped objective. This
module computes them with numpy only (no sampling, no torch), so the theory can be checked to machine
precision and fastppo's own estimators have an exact oracle.

Conventions
-----------
* ``P[s, a, s']`` transition probabilities, ``R[s, a]`` the expected reward of taking ``a`` in ``s``,
  ``rho0[s]`` the start distribution, ``0 <= gamma < 1``. A policy is an ``(n_states, n_actions)`` array
  whose rows are probability distributions, ``pi[s, a] = pi(a|s)``.
* ``eta(pi) = E[sum_t gamma^t r_t]``, *not* multiplied by ``(1 - gamma)``: this is seed 000's
  ``eta = r G rho0``, seed 003's and Schulman et al. (2015)'s eta, and seed 004's J.
* The visitation ``rho_pi(s) = (1 - gamma) sum_t gamma^t Pr(s_t = s)`` *is* normalised (it sums to 1), as
  seed 000 redefines it and seed 004 defines it. Hence the factor ``1 / (1 - gamma)`` in
* ``L_pi(pi~) = eta(pi) + 1/(1 - gamma) E_{s ~ rho_pi}[sum_a pi~(a|s) A_pi(s, a)]``, which equals
  Schulman et al.'s ``eta(pi) + sum_s rho_pi^unnormalised(s) sum_a pi~(a|s) A_pi(s, a)``.
* Matrices are row-stochastic here: ``P_pi[s, s'] = sum_a pi(a|s) P[s, a, s']`` and ``G = (I - gamma
  P_pi)^-1``, so ``V = G r_pi`` and ``eta = rho0^T G r_pi``. Seed 000 writes column vectors
  (``rho_{t+1} = P rho_t``), so its ``P`` and ``G`` are the transposes of ours.
* KL divergences are ``KL(pi_old || pi_new)`` per state (TRPO's direction); total variation is
  ``D_TV(p, q) = 1/2 sum_a |p(a) - q(a)|``. "max" is over all states, "mean" is under ``rho_{pi_old}``.

The bound
---------
Writing ``a_delta(s) = sum_a (pi~(a|s) - pi(a|s)) A_pi(s, a)``, ``P_delta = P_pi~ - P_pi`` and ``G~`` for the
new policy's resolvent, the performance difference splits exactly into L and a remainder::

    eta(pi~) = L_pi(pi~) + gamma rho0^T G~ P_delta G a_delta                      (remainder())

``|a_delta(s)| <= 2 eps D_TV(s)`` with ``eps = max_{s,a} |A_pi(s, a)|``, ``||P_delta||_inf <= 2 D_TV^max`` and
``||G||_inf = ||G~||_inf = 1/(1 - gamma)`` give ``|remainder| <= C (D_TV^max)^2`` with Schulman et al.'s
``C = 4 eps gamma / (1 - gamma)^2``, and Pinsker (``D_TV^2 <= KL / 2 <= KL``) gives the KL form. That is
:func:`trpo_bound`; :func:`mm_step` maximises it exactly, so :func:`iterate` with ``"mm"`` never lowers eta.

Notes on the documents (1 and 2 are checked by ``tests/test_theory.py``, 4 is printed by the demo)
-----------------------------------------------------------------------------------------------
1. **Seed 000's constant only covers state-only rewards.** It starts from ``eta~ - eta = r (G~ - G) rho0``
   with one reward vector ``r`` for both policies, i.e. ``r(s)`` that does not depend on the action. With
   action-dependent rewards ``R[s, a]`` (the usual MDP, and seed 003/004's ``r(s_t, a_t)``) the expected
   reward ``r_pi`` changes with the policy and the remainder is the general one above; its formula
   ``gamma^2 r G P_delta G P_delta G~ rho0`` (:func:`doc_remainder`) and its constant
   ``C = 4 gamma^2 ||v||_inf / (1 - gamma)^2`` (``||v||_inf = max_s |V(s)|``, :func:`doc_constant`) are then
   wrong. Counterexample (:func:`doc_counterexample`): two states, two actions, gamma = 0.5,
   ``R[s] = (+1, -1)`` in both states, action 0 moves 0 -> 1 and 1 -> 0, action 1 stays, ``rho0 = (1, 0)``,
   ``pi`` uniform, ``pi~ = (a0 in state 0, a1 in state 1)``. Then ``V_pi = 0`` so the document's C is 0 and
   its bound says ``eta(pi~) >= L = 1``, but ``eta(pi~) = 1 - 0.5 - 0.25 - ... = 0``. Schulman et al.'s
   constant (``eps = 1``, C = 8, D_TV^max = 1/2) gives the valid bound -1. For state-only rewards the
   document's remainder formula is exact and its bound holds (property-tested).
2. **Seed 000's norm lemma is stated for the wrong norm.** It claims ``||x A||_inf <= ||x||_inf ||A||_inf``
   for a row vector ``x`` with ``||A||_inf = max_i sum_j |A_ij|`` (the maximum row sum), but the line it
   proves it with, ``max_i |sum_j A_ij x_j|``, is ``||A x||_inf`` for a column vector. For ``x = (1, 1)``
   and ``A = [[1, 0], [1, 0]]``: ``x A = (2, 0)``, so ``2 <= 1 * 1`` fails. For a row vector on the left
   the induced norm is the maximum *column* sum. The derivation survives because the value it then
   computes, ``||P_delta|| = max_s sum_s' |p~(s'|s) - p(s'|s)|``, is that column-sum norm in its own
   (column-stochastic) orientation, where also ``||G|| = 1/(1 - gamma)`` exactly. (Read literally, with
   row sums, its ``||G||`` is at least ``1/(1 - gamma)``, which only enlarges C: the final bound holds
   either way, but the lemma it cites does not.)
3. **Seed 000's "l(pi) = max E_{s~rho, a~pi~}[A]"** drops the ``1/(1 - gamma)`` it carried on the line
   before and writes ``E_{a ~ pi~}[pi~(a|s) A]`` (pi~ counted twice; it should be ``sum_a pi~(a|s) A``).
   The argmax is unaffected; the value is off by the factor ``1/(1 - gamma)``. Its remark that
   ``l(pi~, pi) >= 0`` holds for the maximiser only, not for every ``pi~``.
4. **The constant is valid but loose.** The exact remainder is a small fraction of ``C (D_TV^max)^2``: at
   most 0.7% (median 0.08%) over the demo's 400 pairs (6 states, gamma = 0.9), and at most about a third
   over 3000 random pairs with gamma in [0.1, 0.99]. This is the documents' own reason why MM with this C
   takes tiny steps (the demo's MM run gains far less per step than the KL and clipped steps, which
   here also never lowered eta although nothing guarantees that) and why practice uses a KL trust
   region or clipping instead.
   Seed 004's lower-bound property of the clipped objective (``L_CLIP <= L_CPI`` pointwise, equal inside
   the clip range) holds exactly as stated.
"""

from __future__ import annotations

import argparse
import os
from dataclasses import dataclass
from typing import Callable, NamedTuple

import numpy as np

__all__ = [
    "Divergences", "TabularMDP", "Trace", "advantages", "clip_step", "clip_terms", "clipped_surrogate",
    "demo", "doc_bound", "doc_constant", "doc_counterexample", "doc_remainder", "eta", "iterate",
    "kl_divergence", "kl_step", "main", "mm_step", "performance_difference", "policy_divergences",
    "policy_rewards", "policy_transitions", "q_values", "random_mdp", "random_policy", "remainder",
    "surrogate", "trpo_bound", "trpo_constant", "tv_distance", "uniform_policy", "values", "visitation",
]

_ATOL = 1e-9  # tolerance for "is a probability distribution" checks on user input


@dataclass(frozen=True, eq=False)
class TabularMDP:
    """A finite discounted MDP.

    Attributes:
        P: ``(S, A, S)`` transition probabilities ``P[s, a, s']``; each ``P[s, a]`` sums to 1.
        R: ``(S, A)`` expected reward of taking action ``a`` in state ``s``.
        gamma: discount factor in ``[0, 1)``.
        rho0: ``(S,)`` start-state distribution.

    The arrays are copied to read-only float64 arrays; bad input raises ``ValueError`` naming the argument.
    """

    P: np.ndarray
    R: np.ndarray
    gamma: float
    rho0: np.ndarray

    def __post_init__(self):
        P = _readonly(self.P, "P")
        R = _readonly(self.R, "R")
        rho0 = _readonly(self.rho0, "rho0")
        if P.ndim != 3 or P.shape[0] != P.shape[2] or P.shape[0] < 1 or P.shape[1] < 1:
            raise ValueError(f"P must have shape (n_states, n_actions, n_states), got {P.shape}")
        if R.shape != P.shape[:2]:
            raise ValueError(f"R must have shape {P.shape[:2]} (n_states, n_actions), got {R.shape}")
        if rho0.shape != P.shape[:1]:
            raise ValueError(f"rho0 must have shape {P.shape[:1]} (n_states,), got {rho0.shape}")
        _check_distribution(P, "P", "P[s, a, :]")
        _check_distribution(rho0, "rho0", "rho0")
        if not np.all(np.isfinite(R)):
            raise ValueError("R must be finite")
        gamma = float(self.gamma)
        if not 0.0 <= gamma < 1.0:
            raise ValueError(f"gamma must be in [0, 1), got {self.gamma!r}")
        for name, value in (("P", P), ("R", R), ("rho0", rho0), ("gamma", gamma)):
            object.__setattr__(self, name, value)

    @property
    def n_states(self) -> int:
        """Number of states S."""
        return self.P.shape[0]

    @property
    def n_actions(self) -> int:
        """Number of actions A."""
        return self.P.shape[1]


def random_mdp(n_states: int, n_actions: int, gamma: float, seed, *, state_rewards: bool = False) -> TabularMDP:
    """A random MDP: ``P[s, a]`` and ``rho0`` drawn from a flat Dirichlet, rewards uniform in [-1, 1].

    Args:
        seed: an int or a ``numpy.random.Generator``; the same seed gives the same MDP.
        state_rewards: make ``R[s, a]`` independent of ``a`` (the setting of seed 000's derivation, where
            its remainder formula and constant are valid; see the module notes).
    """
    rng = np.random.default_rng(seed)
    P = rng.dirichlet(np.ones(n_states), size=(n_states, n_actions))
    R = rng.uniform(-1.0, 1.0, size=(n_states, 1 if state_rewards else n_actions))
    rho0 = rng.dirichlet(np.ones(n_states))
    return TabularMDP(P, np.broadcast_to(R, (n_states, n_actions)), gamma, rho0)


def random_policy(mdp: TabularMDP, seed, *, scale: float = 1.0) -> np.ndarray:
    """A random softmax policy ``softmax(scale * z)`` with ``z`` standard normal: strictly positive rows.

    ``seed`` is an int or a ``numpy.random.Generator``; larger ``scale`` gives more deterministic policies.
    """
    rng = np.random.default_rng(seed)
    return _softmax(scale * rng.standard_normal((mdp.n_states, mdp.n_actions)))


def uniform_policy(mdp: TabularMDP) -> np.ndarray:
    """The policy that picks every action with probability ``1 / n_actions``."""
    return np.full((mdp.n_states, mdp.n_actions), 1.0 / mdp.n_actions)


def policy_transitions(mdp: TabularMDP, pi) -> np.ndarray:
    """The state-to-state matrix ``P_pi[s, s'] = sum_a pi(a|s) P[s, a, s']`` (row-stochastic)."""
    pi = _policy(mdp, pi)
    return np.einsum("sa,sat->st", pi, mdp.P)


def policy_rewards(mdp: TabularMDP, pi) -> np.ndarray:
    """The expected one-step reward ``r_pi(s) = sum_a pi(a|s) R[s, a]``."""
    pi = _policy(mdp, pi)
    return np.einsum("sa,sa->s", pi, mdp.R)


def values(mdp: TabularMDP, pi) -> np.ndarray:
    """The exact state values ``V_pi = (I - gamma P_pi)^-1 r_pi``."""
    return np.linalg.solve(_system(mdp, pi), policy_rewards(mdp, pi))


def q_values(mdp: TabularMDP, pi) -> np.ndarray:
    """The exact action values ``Q_pi(s, a) = R[s, a] + gamma sum_s' P[s, a, s'] V_pi(s')``."""
    return mdp.R + mdp.gamma * mdp.P @ values(mdp, pi)


def advantages(mdp: TabularMDP, pi) -> np.ndarray:
    """The exact advantages ``A_pi(s, a) = Q_pi(s, a) - V_pi(s)``; ``sum_a pi(a|s) A_pi(s, a) = 0``."""
    v = values(mdp, pi)
    return mdp.R + mdp.gamma * mdp.P @ v - v[:, None]


def eta(mdp: TabularMDP, pi) -> float:
    """The expected discounted return ``E[sum_t gamma^t r_t]`` from ``rho0`` (not scaled by 1 - gamma)."""
    return float(mdp.rho0 @ values(mdp, pi))


def visitation(mdp: TabularMDP, pi) -> np.ndarray:
    """The normalised discounted state visitation ``rho_pi(s) = (1 - gamma) sum_t gamma^t Pr(s_t = s)``.

    It sums to 1, and ``eta(pi) = sum_s rho_pi(s) r_pi(s) / (1 - gamma)``.
    """
    return (1.0 - mdp.gamma) * np.linalg.solve(_system(mdp, pi).T, mdp.rho0)


def performance_difference(mdp: TabularMDP, pi_old, pi_new) -> float:
    """The right side of the performance-difference identity (Kakade & Langford 2002; seed 003)::

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

    This generalises seed 000's ``gamma^2 r G P_delta G P_delta G~ rho0`` (:func:`doc_remainder`) to
    action-dependent rewards; the two agree when ``R[s, a]`` does not depend on ``a``.
    """
    pi_old = _policy(mdp, pi_old, "pi_old")
    pi_new = _policy(mdp, pi_new, "pi_new")
    a_delta = np.einsum("sa,sa->s", pi_new - pi_old, advantages(mdp, pi_old))
    p_delta = policy_transitions(mdp, pi_new) - policy_transitions(mdp, pi_old)
    weights = np.linalg.solve(_system(mdp, pi_new).T, mdp.rho0)  # rho0^T G_new
    return float(mdp.gamma * weights @ p_delta @ np.linalg.solve(_system(mdp, pi_old), a_delta))


def doc_remainder(mdp: TabularMDP, pi_old, pi_new) -> float:
    """Seed 000's remainder ``gamma^2 r G P_delta G P_delta G~ rho0``, transposed to row convention.

    Exact only for state-only rewards (``r = r_pi_old`` is used for both policies); kept for comparison.
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
    """Seed 000's ``C = 4 gamma^2 ||r G||_inf ||G|| ||G~|| ||rho0||_1 = 4 gamma^2 max_s |V(s)| / (1 - gamma)^2``.

    (With its norms read as the induced ones, ``||G|| = ||G~|| = 1/(1 - gamma)``.) Valid for state-only
    rewards only; see the module notes.
    """
    return 4.0 * mdp.gamma ** 2 * float(np.abs(values(mdp, pi_old)).max()) / (1.0 - mdp.gamma) ** 2


def doc_bound(mdp: TabularMDP, pi_old, pi_new) -> float:
    """Seed 000's bound ``L_{pi_old}(pi_new) - doc_constant * (D_TV^max)^2``, kept for comparison.

    It is a lower bound on ``eta(pi_new)`` when rewards depend on the state only; :func:`doc_counterexample`
    shows it failing with action-dependent rewards.
    """
    tv = policy_divergences(mdp, pi_old, pi_new).tv_max
    return surrogate(mdp, pi_old, pi_new) - doc_constant(mdp, pi_old) * tv ** 2


def doc_counterexample() -> tuple[TabularMDP, np.ndarray, np.ndarray]:
    """``(mdp, pi_old, pi_new)`` where seed 000's bound fails: ``doc_bound = 1 > eta(pi_new) = 0``.

    Two states; action 0 earns +1 and switches state, action 1 earns -1 and stays; gamma = 0.5; start in
    state 0. Under the uniform ``pi_old`` every V is 0, so the document's C is 0 and its bound is L itself.
    """
    P = np.zeros((2, 2, 2))
    P[0, 0, 1] = P[1, 0, 0] = 1.0  # action 0 switches state
    P[0, 1, 0] = P[1, 1, 1] = 1.0  # action 1 stays
    R = np.array([[1.0, -1.0], [1.0, -1.0]])
    mdp = TabularMDP(P, R, 0.5, np.array([1.0, 0.0]))
    return mdp, uniform_policy(mdp), np.array([[1.0, 0.0], [0.0, 1.0]])


def clip_terms(pi_old, pi_new, adv, clip_eps: float) -> tuple[np.ndarray, np.ndarray]:
    """Per-(s, a) terms ``(r A, min(r A, clip(r, 1-eps, 1+eps) A))`` of L_CPI and L_CLIP (seed 004, Eqs 5, 7).

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


def mm_step(mdp: TabularMDP, pi, *, constant: float | None = None) -> np.ndarray:
    """The exact maximiser over all policies of the minorant ``L_pi(pi~) - C (D_TV^max(pi, pi~))^2``.

    For a fixed radius ``delta`` the best ``pi~`` with ``D_TV^max <= delta`` moves, in every state, mass
    ``delta`` from the lowest-advantage actions to the best one (a linear objective over an L1 ball in the
    simplex). The gain is then concave and piecewise linear in ``delta``, so the minorant is piecewise
    quadratic; maximising it piece by piece is exact. ``constant`` defaults to :func:`trpo_constant`.
    Because the minorant is at most eta(pi~) and equals eta(pi) at pi~ = pi, eta never decreases.
    """
    pi = _policy(mdp, pi)
    adv = advantages(mdp, pi)
    c = trpo_constant(mdp, pi) if constant is None else float(constant)
    if c < 0:
        raise ValueError(f"constant must be >= 0, got {constant!r}")
    weights = visitation(mdp, pi) / (1.0 - mdp.gamma)  # L(pi~) - eta(pi) = sum_s weights(s) sum_a pi~ A

    def gain(delta):
        return float(weights @ np.einsum("sa,sa->s", _shift_mass(pi, adv, delta), adv))

    order = np.argsort(adv, axis=1, kind="stable")
    # The gain's kinks: the mass of each state's k lowest-advantage actions (the best one never gives).
    kinks = np.cumsum(np.take_along_axis(pi, order, axis=1)[:, :-1], axis=1).ravel()
    edges = np.unique(np.concatenate(([0.0], kinks[kinks > 0])))
    best_delta, best_value = 0.0, 0.0
    for lo, hi in zip(edges[:-1], edges[1:]):
        g_lo, g_hi = gain(lo), gain(hi)
        slope = (g_hi - g_lo) / (hi - lo)
        # The piece's maximiser is slope / 2c clipped to [lo, hi]; compared first so that a tiny or zero c
        # (gamma ~ 0) never divides.
        if slope <= 2.0 * c * lo:
            delta = lo
        elif slope >= 2.0 * c * hi:
            delta = hi
        else:
            delta = slope / (2.0 * c)
        value = g_lo + slope * (delta - lo) - c * delta ** 2
        if value > best_value:
            best_delta, best_value = delta, value
    return _shift_mass(pi, adv, best_delta)


def kl_step(mdp: TabularMDP, pi, max_kl: float = 0.01) -> np.ndarray:
    """The tabular TRPO step: ``pi~ ∝ pi exp(beta A_pi)`` with mean ``KL(pi || pi~)`` equal to ``max_kl``.

    For a tabular softmax policy the natural gradient of L is ``A_pi`` itself (the Fisher matrix inverts
    ``rho(s) pi(a|s) A(s, a)`` to ``A``), so this is TRPO's search direction with an exact line search on
    the mean-KL constraint (bisection on ``beta``). It also maximises L exactly among all policies with
    the same mean ``KL(pi~ || pi)`` (the exponential tilt is that problem's Lagrangian solution). If the constraint cannot be reached (advantages constant in every
    visited state), a near-greedy policy is returned.
    """
    pi = _policy(mdp, pi)
    if not max_kl > 0:
        raise ValueError(f"max_kl must be > 0, got {max_kl!r}")
    adv = advantages(mdp, pi)
    weights = visitation(mdp, pi)
    with np.errstate(divide="ignore"):
        log_pi = np.log(pi)

    def tilted(beta):
        return _softmax(log_pi + beta * adv)

    def mean_kl(beta):
        return float(weights @ kl_divergence(pi, tilted(beta)))

    hi = 1.0 / max(float(np.abs(adv).max()), 1e-300)
    while mean_kl(hi) < max_kl and hi < 1e12:
        hi *= 2.0
    lo = 0.0
    for _ in range(200):  # bisection to float precision on beta; KL is increasing in beta
        mid = 0.5 * (lo + hi)
        if mid in (lo, hi):
            break
        lo, hi = (mid, hi) if mean_kl(mid) < max_kl else (lo, mid)
    return tilted(lo)


def clip_step(mdp: TabularMDP, pi, *, clip_eps: float = 0.2, lr: float = 1.0, n_epochs: int = 50) -> np.ndarray:
    """The tabular PPO-Clip step: ``n_epochs`` of gradient ascent on the exact L_CLIP in softmax logits.

    The objective is ``E_{s ~ rho_pi, a ~ pi}[min(r A, clip(r, 1-eps, 1+eps) A)]`` with exact expectations
    instead of samples, starting from the logits ``log pi`` (so ``pi`` must be strictly positive).
    Advantages are divided by ``max |A|`` so that ``lr`` does not depend on the reward scale, as PPO's
    advantage normalisation does.
    """
    pi = _policy(mdp, pi)
    if np.any(pi <= 0):
        raise ValueError("pi must be strictly positive for clip_step (a softmax policy)")
    if not clip_eps > 0:
        raise ValueError(f"clip_eps must be > 0, got {clip_eps!r}")
    adv = advantages(mdp, pi)
    adv = adv / max(float(np.abs(adv).max()), 1e-300)
    weights = visitation(mdp, pi)[:, None]
    logits = np.log(pi)
    for _ in range(n_epochs):
        new = _softmax(logits)
        ratio = new / pi
        # d min(rA, clip(r)A)/dr is A on the unclipped branch and 0 where clipping is active.
        clipped = ((adv > 0) & (ratio > 1 + clip_eps)) | ((adv < 0) & (ratio < 1 - clip_eps))
        g = np.where(clipped, 0.0, adv)
        # d/dlogit[s, b] of sum_a pi(a) r(a) g(a) = new(b) (g(b) - sum_a new(a) g(a)).
        logits = logits + lr * weights * new * (g - np.sum(new * g, axis=1, keepdims=True))
    return _softmax(logits)


class Trace(NamedTuple):
    """An improvement run: ``policies[k]`` after ``k`` steps (``policies[0]`` is the start), ``etas[k]`` its eta."""

    policies: list
    etas: np.ndarray


_STEPS = {"mm": mm_step, "kl": kl_step, "clip": clip_step}


def iterate(mdp: TabularMDP, pi0, step: str | Callable = "mm", n_iter: int = 20, **step_kwargs) -> Trace:
    """Run ``n_iter`` policy-improvement steps from ``pi0`` and record eta after each.

    Args:
        step: ``"mm"`` (:func:`mm_step`, exact minorise-maximise: eta never decreases), ``"kl"``
            (:func:`kl_step`), ``"clip"`` (:func:`clip_step`), or a callable ``(mdp, pi, **kw) -> pi``.
        step_kwargs: passed to the step, e.g. ``max_kl=0.02`` or ``clip_eps=0.1``.
    """
    fn = _STEPS.get(step) if isinstance(step, str) else step
    if fn is None:
        raise ValueError(f"step must be one of {sorted(_STEPS)} or a callable, got {step!r}")
    policies = [_policy(mdp, pi0, "pi0")]
    for _ in range(n_iter):
        policies.append(fn(mdp, policies[-1], **step_kwargs))
    return Trace(policies, np.array([eta(mdp, p) for p in policies]))


def demo(out_dir: str, *, seed: int = 0, n_pairs: int = 400, n_iter: int = 30) -> dict:
    """Print and plot the theory on a random MDP; write ``bound.png`` and ``iterations.png`` to ``out_dir``.

    Returns the printed summary numbers (for scripting). matplotlib is imported here, not at module import.
    """
    import matplotlib

    matplotlib.use("Agg")  # file output only; never needs a display
    import matplotlib.pyplot as plt

    rng = np.random.default_rng(seed)
    mdp = random_mdp(6, 3, 0.9, rng)
    rows = []
    for _ in range(n_pairs):
        pi_old = random_policy(mdp, rng)
        t = rng.uniform(0.0, 1.0) ** 3  # favour small steps, where the bound is least trivial
        pi_new = (1 - t) * pi_old + t * random_policy(mdp, rng, scale=3.0)
        div = policy_divergences(mdp, pi_old, pi_new)
        e_old, e_new = eta(mdp, pi_old), eta(mdp, pi_new)
        rows.append((div.tv_max, e_new - e_old, surrogate(mdp, pi_old, pi_new) - e_old,
                     trpo_bound(mdp, pi_old, pi_new) - e_old, trpo_bound(mdp, pi_old, pi_new, divergence="kl") - e_old,
                     abs(remainder(mdp, pi_old, pi_new)) / max(trpo_constant(mdp, pi_old) * div.tv_max ** 2, 1e-300)))
    tv, gain, l_gain, tv_bound, kl_bound, tightness = np.array(rows).T
    summary = {
        "pairs": n_pairs,
        "tv_bound_violations": int(np.sum(tv_bound > gain + 1e-12)),
        "kl_bound_violations": int(np.sum(kl_bound > gain + 1e-12)),
        "max_remainder_over_C_D2": float(tightness.max()),
        "median_remainder_over_C_D2": float(np.median(tightness)),
    }
    print(f"random MDP: {mdp.n_states} states, {mdp.n_actions} actions, gamma = {mdp.gamma}")
    print(f"{n_pairs} policy pairs: TRPO bound (TV) violated {summary['tv_bound_violations']} times, "
          f"(KL) {summary['kl_bound_violations']} times")
    print(f"|eta_new - L| / (C D_TV^2): max {summary['max_remainder_over_C_D2']:.3g}, "
          f"median {summary['median_remainder_over_C_D2']:.3g}  (1 would mean C is tight)")

    cex, cex_old, cex_new = doc_counterexample()
    summary["counterexample"] = (eta(cex, cex_new), doc_bound(cex, cex_old, cex_new), trpo_bound(cex, cex_old, cex_new))
    print("seed 000's bound with action-dependent rewards (doc_counterexample): eta(new) = %.3f, "
          "document's bound = %.3f (violated), TRPO bound = %.3f" % summary["counterexample"])

    pi0 = random_policy(mdp, rng)
    traces = {"MM (exact TRPO bound)": iterate(mdp, pi0, "mm", n_iter),
              "KL step, max_kl=0.01": iterate(mdp, pi0, "kl", n_iter, max_kl=0.01),
              "clip step, eps=0.2": iterate(mdp, pi0, "clip", n_iter, clip_eps=0.2)}
    optimum = iterate(mdp, pi0, "mm", 200, constant=0.0).etas[-1]  # C = 0: exact policy iteration
    summary["etas"] = {name: trace.etas for name, trace in traces.items()}
    summary["optimal_eta"] = float(optimum)
    print(f"eta per iteration (optimal eta {optimum:.4f}):")
    for name, trace in traces.items():
        monotone = bool(np.all(np.diff(trace.etas) >= -1e-12))
        print(f"  {name:24s} {trace.etas[0]:.4f} -> {trace.etas[-1]:.4f}  monotone: {monotone}")

    os.makedirs(out_dir, exist_ok=True)
    fig, ax = plt.subplots(figsize=(7, 5))
    ax.scatter(tv, gain, s=8, label="eta(new) - eta(old)")
    ax.scatter(tv, l_gain, s=8, label="L(new) - eta(old)")
    ax.scatter(tv, tv_bound, s=8, label="TRPO bound (TV) - eta(old)")
    ax.scatter(tv, kl_bound, s=4, alpha=0.4, label="TRPO bound (KL) - eta(old)")
    lim = np.abs(gain).max() * 3
    ax.set_ylim(-lim, lim)
    ax.set_xlabel("max total variation D_TV^max(old, new)")
    ax.set_ylabel("change relative to eta(old)")
    ax.set_title("eta and its TRPO lower bound on random policy pairs")
    ax.legend()
    fig.savefig(os.path.join(out_dir, "bound.png"), dpi=120, bbox_inches="tight")
    plt.close(fig)

    fig, ax = plt.subplots(figsize=(7, 5))
    for name, trace in traces.items():
        ax.plot(trace.etas, marker=".", label=name)
    ax.axhline(optimum, color="k", ls="--", lw=1, label="optimal eta")
    ax.set_xlabel("iteration")
    ax.set_ylabel("eta")
    ax.set_title("exact policy improvement on a random MDP")
    ax.legend()
    fig.savefig(os.path.join(out_dir, "iterations.png"), dpi=120, bbox_inches="tight")
    plt.close(fig)
    print(f"wrote {os.path.join(out_dir, 'bound.png')} and {os.path.join(out_dir, 'iterations.png')}")
    return summary


def main(argv=None) -> None:
    """Command line: ``python -m fastppo.theory --out DIR [--seed N]`` runs :func:`demo`."""
    parser = argparse.ArgumentParser(prog="python -m fastppo.theory",
                                     description="Print and plot the TRPO/PPO theory on a random tabular MDP.")
    parser.add_argument("--out", default="theory_out", help="directory for the PNGs (default: ./theory_out)")
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--pairs", type=int, default=400, help="random policy pairs to check the bound on")
    parser.add_argument("--iters", type=int, default=30, help="improvement iterations per method")
    args = parser.parse_args(argv)
    demo(args.out, seed=args.seed, n_pairs=args.pairs, n_iter=args.iters)


def _shift_mass(pi, adv, delta):
    """In every state move up to ``delta`` probability from the lowest-advantage actions to the best one."""
    order = np.argsort(adv, axis=1, kind="stable")
    sorted_pi = np.take_along_axis(pi, order, axis=1)
    before = np.cumsum(sorted_pi, axis=1) - sorted_pi  # mass of the actions worse than each one
    taken = np.clip(delta - before, 0.0, sorted_pi)
    taken[:, -1] = 0.0  # the best action only receives
    new_sorted = sorted_pi - taken
    new_sorted[:, -1] += taken.sum(axis=1)
    new = np.empty_like(pi)
    np.put_along_axis(new, order, new_sorted, axis=1)
    return new


def _softmax(logits):
    z = np.exp(logits - logits.max(axis=-1, keepdims=True))
    return z / z.sum(axis=-1, keepdims=True)


def _system(mdp, pi):
    """``I - gamma P_pi``: V solves it against r_pi, the visitation against rho0 (transposed)."""
    return np.eye(mdp.n_states) - mdp.gamma * policy_transitions(mdp, pi)


def _policy(mdp, pi, name="pi"):
    pi = np.asarray(pi, dtype=float)
    if pi.shape != (mdp.n_states, mdp.n_actions):
        raise ValueError(f"{name} must have shape {(mdp.n_states, mdp.n_actions)} (n_states, n_actions), "
                         f"got {pi.shape}")
    _check_distribution(pi, name, f"{name}[s, :]")
    return pi


def _readonly(x, name):
    try:
        arr = np.array(x, dtype=float)
    except (TypeError, ValueError) as exc:
        raise ValueError(f"{name} must be a numeric array: {exc}") from None
    arr.setflags(write=False)
    return arr


def _check_distribution(x, name, what):
    if not np.all(np.isfinite(x)) or np.any(x < 0):
        raise ValueError(f"{name} must be finite and non-negative")
    sums = x.sum(axis=-1)
    if not np.allclose(sums, 1.0, rtol=0.0, atol=_ATOL):
        worst = float(sums.ravel()[np.argmax(np.abs(sums - 1.0).ravel())])
        raise ValueError(f"each {what} must sum to 1, got a sum of {worst!r}")


if __name__ == "__main__":
    main()
