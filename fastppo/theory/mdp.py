"""The tabular MDP and the exact quantities of a policy on it: P_pi, r_pi, V, Q, A, eta and the
discounted state visitation, by linear algebra (numpy only). Conventions: docs/theory.md."""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np

__all__ = ["TabularMDP", "advantages", "eta", "policy_rewards", "policy_transitions", "q_values", "random_mdp",
           "random_policy", "uniform_policy", "values", "visitation"]

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
        state_rewards: make ``R[s, a]`` independent of ``a`` (the setting of the derivation notes' bound,
            where its remainder formula and constant are valid; see docs/theory.md, note 1).
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
