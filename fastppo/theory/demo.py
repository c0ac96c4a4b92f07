"""The demo: the bound, its tightness, the counterexample and the improvement steps on a random MDP,
printed and plotted. matplotlib is imported here only, inside :func:`demo`."""

from __future__ import annotations

import argparse
import os

import numpy as np

from fastppo.theory.bounds import (doc_bound, doc_counterexample, policy_divergences, remainder, surrogate,
                                   trpo_bound, trpo_constant)
from fastppo.theory.mdp import eta, random_mdp, random_policy
from fastppo.theory.steps import iterate

__all__ = ["demo", "main"]

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
    print("the derivation notes' bound with action-dependent rewards (doc_counterexample): eta(new) = %.3f, "
          "notes' bound = %.3f (violated), TRPO bound = %.3f" % summary["counterexample"])

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
