"""Exact policy-improvement steps on a tabular MDP: minorise-maximise on the TRPO bound (mm_step), the
KL-constrained natural-gradient step (kl_step), the clipped-surrogate step (clip_step), and iterate."""

from __future__ import annotations

from typing import Callable, NamedTuple

import numpy as np

from fastppo.theory.bounds import kl_divergence, trpo_constant
from fastppo.theory.mdp import TabularMDP, _policy, _softmax, advantages, eta, visitation

__all__ = ["Trace", "clip_step", "iterate", "kl_step", "mm_step"]

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
