"""Exact tabular oracle for the theory behind TRPO and PPO.

On a small finite MDP the quantities of the TRPO and PPO derivations can be computed exactly by linear
algebra: the return eta, V, Q, A, the discounted state visitation, the surrogate L, the exact
second-order remainder eta(new) - L(new), the TRPO lower bound, and the PPO clipped objective. This
package computes them with numpy only (no sampling, no torch), so the theory can be checked to machine
precision and fastppo's own estimators have an exact oracle.

Modules, by concern:

* :mod:`fastppo.theory.mdp`: :class:`TabularMDP`, policies, V, Q, A, eta, the visitation.
* :mod:`fastppo.theory.bounds`: the surrogate and its remainder, divergences, the TRPO bound, the
  derivation notes' bound and its counterexample, the clipped objective.
* :mod:`fastppo.theory.steps`: the MM, KL and clip improvement steps, and :func:`iterate`.
* :mod:`fastppo.theory.demo`: :func:`demo` and :func:`main` (``python -m fastppo.theory --out DIR``);
  matplotlib is imported only there.

Conventions (eta not scaled by 1 - gamma, a normalised visitation, row-stochastic matrices,
KL(pi_old || pi_new)), the derivation of the bound, and the errata found in the derivation notes this
oracle was written to check are in ``docs/theory.md``.
"""

from fastppo.theory.bounds import (Divergences, clip_terms, clipped_surrogate, doc_bound, doc_constant,
                                   doc_counterexample, doc_remainder, kl_divergence, performance_difference,
                                   policy_divergences, remainder, surrogate, trpo_bound, trpo_constant,
                                   tv_distance)
from fastppo.theory.demo import demo, main
from fastppo.theory.mdp import (TabularMDP, advantages, eta, policy_rewards, policy_transitions, q_values,
                                random_mdp, random_policy, uniform_policy, values, visitation)
from fastppo.theory.steps import Trace, clip_step, iterate, kl_step, mm_step

__all__ = [
    "Divergences", "TabularMDP", "Trace", "advantages", "clip_step", "clip_terms", "clipped_surrogate",
    "demo", "doc_bound", "doc_constant", "doc_counterexample", "doc_remainder", "eta", "iterate",
    "kl_divergence", "kl_step", "main", "mm_step", "performance_difference", "policy_divergences",
    "policy_rewards", "policy_transitions", "q_values", "random_mdp", "random_policy", "remainder",
    "surrogate", "trpo_bound", "trpo_constant", "tv_distance", "uniform_policy", "values", "visitation",
]
