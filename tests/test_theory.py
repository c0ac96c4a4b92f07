"""fastppo.theory: the exact tabular oracle, checked against the identities and bounds it computes."""

import numpy as np
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

import fastppo
from fastppo import theory as th

# Small MDPs with gamma well inside [0, 1) keep (I - gamma P)^-1 well conditioned, so "machine
# precision" can mean an absolute 1e-10 on returns of size up to 1 / (1 - gamma) = 20.
mdps = st.builds(
    th.random_mdp,
    n_states=st.integers(1, 6),
    n_actions=st.integers(1, 4),
    gamma=st.floats(0.0, 0.95),
    seed=st.integers(0, 2**32 - 1),
    state_rewards=st.booleans(),
)
seeds = st.integers(0, 2**32 - 1)
FAST = settings(max_examples=60, deadline=None)


def policy_pair(mdp, seed, step):
    """A random old policy and a new one a fraction ``step`` of the way to another (sharper) random one."""
    rng = np.random.default_rng(seed)
    pi_old = th.random_policy(mdp, rng)
    return pi_old, (1 - step) * pi_old + step * th.random_policy(mdp, rng, scale=3.0)


def test_bellman_and_visitation_on_a_hand_computed_mdp():
    # One state, two actions, self-loop: V = r_pi / (1 - gamma).
    mdp = th.TabularMDP(np.ones((1, 2, 1)), np.array([[1.0, 3.0]]), 0.5, np.array([1.0]))
    pi = np.array([[0.25, 0.75]])
    assert th.eta(mdp, pi) == pytest.approx(2.5 / 0.5)
    np.testing.assert_allclose(th.q_values(mdp, pi), [[1 + 0.5 * 5.0, 3 + 0.5 * 5.0]])
    np.testing.assert_allclose(th.advantages(mdp, pi), [[-1.5, 0.5]])
    np.testing.assert_allclose(th.visitation(mdp, pi), [1.0])


@FAST
@given(mdp=mdps, seed=seeds)
def test_exact_quantities_are_consistent(mdp, seed):
    pi = th.random_policy(mdp, seed)
    v, q, adv = th.values(mdp, pi), th.q_values(mdp, pi), th.advantages(mdp, pi)
    P_pi, r_pi = th.policy_transitions(mdp, pi), th.policy_rewards(mdp, pi)
    np.testing.assert_allclose(v, r_pi + mdp.gamma * P_pi @ v, atol=1e-10)
    np.testing.assert_allclose((pi * q).sum(1), v, atol=1e-10)
    np.testing.assert_allclose((pi * adv).sum(1), 0.0, atol=1e-10)
    d = th.visitation(mdp, pi)
    assert d.sum() == pytest.approx(1.0, abs=1e-12) and np.all(d >= -1e-15)
    # d = (1 - gamma) rho0 + gamma d P_pi, and eta is the visitation-weighted reward over (1 - gamma).
    np.testing.assert_allclose(d, (1 - mdp.gamma) * mdp.rho0 + mdp.gamma * d @ P_pi, atol=1e-12)
    assert th.eta(mdp, pi) == pytest.approx(d @ r_pi / (1 - mdp.gamma), abs=1e-10)


@FAST
@given(mdp=mdps, seed=seeds, step=st.floats(0.0, 1.0))
def test_performance_difference_identity_is_exact(mdp, seed, step):
    pi_old, pi_new = policy_pair(mdp, seed, step)
    gap = th.eta(mdp, pi_new) - th.eta(mdp, pi_old)
    assert th.performance_difference(mdp, pi_old, pi_new) == pytest.approx(gap, abs=1e-10)


@FAST
@given(mdp=mdps, seed=seeds, step=st.floats(0.0, 1.0))
def test_remainder_is_eta_minus_surrogate(mdp, seed, step):
    pi_old, pi_new = policy_pair(mdp, seed, step)
    exact = th.eta(mdp, pi_new) - th.surrogate(mdp, pi_old, pi_new)
    assert th.remainder(mdp, pi_old, pi_new) == pytest.approx(exact, abs=1e-10)
    if np.ptp(mdp.R, axis=1).max() == 0:  # seed 000's formula is the same term for state-only rewards
        assert th.doc_remainder(mdp, pi_old, pi_new) == pytest.approx(exact, abs=1e-10)


@FAST
@given(mdp=mdps, seed=seeds)
def test_surrogate_matches_eta_to_first_order(mdp, seed):
    pi_old, target = policy_pair(mdp, seed, 1.0)
    assert th.surrogate(mdp, pi_old, pi_old) == pytest.approx(th.eta(mdp, pi_old), abs=1e-12)
    # L is linear along pi_old + t (target - pi_old); eta's central difference there must equal L's slope.
    # The O(t^2) truncation error is ~1e-10 and rounding ~1e-16 * eta / t ~ 1e-10 at t = 1e-5; the random
    # softmax policies have probabilities >~ 1e-4 > t, so both points are valid policies.
    t = 1e-5
    direction = target - pi_old
    slope_eta = (th.eta(mdp, pi_old + t * direction) - th.eta(mdp, pi_old - t * direction)) / (2 * t)
    slope_l = th.surrogate(mdp, pi_old, target) - th.surrogate(mdp, pi_old, pi_old)
    assert slope_eta == pytest.approx(slope_l, abs=1e-6)
    # ... and the remainder is second order: halving the step quarters it, up to the O(t^3) term, whose
    # size relative to the t^2 term is O(t) unless that term cancels; hence the absolute slack for that
    # case, scaled like the third-order coefficient (powers of the resolvent's norm 1 / (1 - gamma)).
    small, half = (th.remainder(mdp, pi_old, pi_old + s * direction) for s in (1e-3, 5e-4))
    assert half == pytest.approx(small / 4, abs=1e-2 * abs(small) + 1e-9 / (1 - mdp.gamma) ** 3)


@settings(max_examples=150, deadline=None)
@given(mdp=mdps, seed=seeds, step=st.floats(0.0, 1.0))
def test_trpo_bound_holds_for_every_pair(mdp, seed, step):
    pi_old, pi_new = policy_pair(mdp, seed, step)
    eta_new = th.eta(mdp, pi_new)
    div = th.policy_divergences(mdp, pi_old, pi_new)
    assert div.tv_max ** 2 <= div.kl_max / 2 + 1e-12  # Pinsker, which turns the TV bound into the KL one
    assert th.trpo_bound(mdp, pi_old, pi_new) <= eta_new + 1e-10
    assert th.trpo_bound(mdp, pi_old, pi_new, divergence="kl") <= th.trpo_bound(mdp, pi_old, pi_new) + 1e-12
    bound_gap = th.trpo_constant(mdp, pi_old) * div.tv_max ** 2
    assert abs(th.remainder(mdp, pi_old, pi_new)) <= bound_gap + 1e-10
    if np.ptp(mdp.R, axis=1).max() == 0:  # seed 000's own constant is valid in its own setting
        assert th.doc_bound(mdp, pi_old, pi_new) <= eta_new + 1e-10


def test_seed_000_constant_fails_with_action_dependent_rewards():
    mdp, pi_old, pi_new = th.doc_counterexample()
    assert th.doc_constant(mdp, pi_old) == 0.0
    assert th.eta(mdp, pi_new) == pytest.approx(0.0, abs=1e-12)
    assert th.doc_bound(mdp, pi_old, pi_new) == pytest.approx(1.0)  # claims eta(new) >= 1
    assert th.trpo_bound(mdp, pi_old, pi_new) == pytest.approx(-1.0)  # C = 8, D_TV^max = 1/2
    assert th.doc_remainder(mdp, pi_old, pi_new) == 0.0 != th.remainder(mdp, pi_old, pi_new)


def test_seed_000_norm_lemma_counterexample():
    # ||x A||_inf <= ||x||_inf * max_i sum_j |A_ij| is false; the column-sum norm is the right one.
    x, A = np.array([1.0, 1.0]), np.array([[1.0, 0.0], [1.0, 0.0]])
    row_sum_norm, col_sum_norm = np.abs(A).sum(1).max(), np.abs(A).sum(0).max()
    assert np.abs(x @ A).max() > np.abs(x).max() * row_sum_norm
    assert np.abs(x @ A).max() <= np.abs(x).max() * col_sum_norm


@settings(max_examples=25, deadline=None)
@given(mdp=mdps, seed=seeds)
def test_mm_iteration_never_decreases_eta(mdp, seed):
    trace = th.iterate(mdp, th.random_policy(mdp, seed), "mm", 8)
    assert np.all(np.diff(trace.etas) >= -1e-10 * max(1.0, np.abs(trace.etas).max()))


@settings(max_examples=25, deadline=None)
@given(mdp=mdps, seed=seeds)
def test_mm_step_maximises_the_minorant(mdp, seed):
    rng = np.random.default_rng(seed)
    pi = th.random_policy(mdp, rng)
    best = th.mm_step(mdp, pi)
    C = th.trpo_constant(mdp, pi)

    def minorant(p):
        return th.surrogate(mdp, pi, p) - C * th.policy_divergences(mdp, pi, p).tv_max ** 2

    top = minorant(best)
    assert top >= th.eta(mdp, pi) - 1e-10
    for t in (1e-3, 1e-2, 0.1, 1.0):
        for _ in range(4):
            assert minorant((1 - t) * pi + t * th.random_policy(mdp, rng, scale=3.0)) <= top + 1e-10
        assert minorant((1 - t) * pi + t * best) <= top + 1e-10


def test_mm_with_zero_constant_is_policy_iteration():
    mdp = th.random_mdp(5, 3, 0.9, 7)
    trace = th.iterate(mdp, th.uniform_policy(mdp), "mm", 30, constant=0.0)
    q = th.q_values(mdp, trace.policies[-1])
    np.testing.assert_allclose(np.max(q, axis=1), th.values(mdp, trace.policies[-1]), atol=1e-10)  # Bellman-optimal


@settings(max_examples=20, deadline=None)
@given(mdp=mdps, seed=seeds, max_kl=st.sampled_from([1e-3, 1e-2, 0.1]))
def test_kl_step_meets_its_constraint_and_is_natural_gradient(mdp, seed, max_kl):
    pi = th.random_policy(mdp, seed)
    new = th.kl_step(mdp, pi, max_kl)
    kl_mean = th.policy_divergences(mdp, pi, new).kl_mean
    assert kl_mean <= max_kl * (1 + 1e-9)
    adv = th.advantages(mdp, pi)
    if np.ptp(adv, axis=1).max() > 1e-6:  # there is something to improve, so the constraint binds
        assert kl_mean == pytest.approx(max_kl, rel=1e-6)
        assert th.surrogate(mdp, pi, new) >= th.eta(mdp, pi)
    # the logit change is beta * A in every state (up to each state's softmax shift)
    shift = np.log(new) - np.log(pi)
    beta = np.ptp(shift, axis=1).max() / max(np.ptp(adv, axis=1).max(), 1e-300)
    np.testing.assert_allclose(shift - shift.mean(1, keepdims=True), beta * (adv - adv.mean(1, keepdims=True)),
                               atol=1e-8)


@settings(max_examples=100, deadline=None)
@given(mdp=mdps, seed=seeds, step=st.floats(0.0, 1.0), clip_eps=st.floats(0.01, 0.5))
def test_clipped_objective_is_a_pessimistic_bound(mdp, seed, step, clip_eps):
    pi_old, pi_new = policy_pair(mdp, seed, step)
    adv = th.advantages(mdp, pi_old)
    cpi, clipped = th.clip_terms(pi_old, pi_new, adv, clip_eps)
    assert np.all(clipped <= cpi)
    ratio = pi_new / pi_old
    inside = (ratio >= 1 - clip_eps) & (ratio <= 1 + clip_eps)
    np.testing.assert_array_equal(clipped[inside], cpi[inside])
    assert th.clipped_surrogate(mdp, pi_old, pi_new, clip_eps) <= th.surrogate(mdp, pi_old, pi_new) + 1e-10
    # Without clipping, the importance-sampled form is L itself.
    assert th.clipped_surrogate(mdp, pi_old, pi_new, np.inf) == pytest.approx(th.surrogate(mdp, pi_old, pi_new),
                                                                            abs=1e-10)


def test_clip_step_improves_its_objective_and_stays_near_the_clip_range():
    mdp = th.random_mdp(5, 3, 0.9, 3)
    pi = th.random_policy(mdp, 3)
    new = th.clip_step(mdp, pi, clip_eps=0.2)
    assert th.clipped_surrogate(mdp, pi, new, 0.2) > th.eta(mdp, pi)
    assert th.eta(mdp, new) > th.eta(mdp, pi)
    # ratios drift past the clip edge only through other actions' updates; they stay far from unbounded
    assert np.max(np.abs(new / pi - 1)) < 1.0


def test_improvement_methods_reach_the_optimum_region():
    mdp = th.random_mdp(4, 3, 0.8, 11)
    pi0 = th.random_policy(mdp, 11)
    optimum = th.iterate(mdp, pi0, "mm", 50, constant=0.0).etas[-1]
    for step, kwargs in (("kl", {"max_kl": 0.05}), ("clip", {})):
        etas = th.iterate(mdp, pi0, step, 40, **kwargs).etas
        assert etas[-1] > etas[0] and etas[-1] <= optimum + 1e-9
        assert optimum - etas[-1] < 0.1 * (optimum - etas[0])


def test_gae_with_exact_values_is_unbiased_for_the_exact_advantages():
    """fastppo.gae(lambda=1) fed exact V reproduces A(s, a) in expectation on a 3-state chain.

    With V exact, E[delta_{t+l} | s_t, a_t] = 0 for l >= 1 and A(s_t, a_t) for l = 0, and the trace is cut
    at T with a bootstrap from the exact V, so the estimator at t = 0 is unbiased for A(s_0, a_0). We use
    only t = 0 of each of N independent envs (later steps of one env are correlated with each other), so
    the per-(s, a) samples are i.i.d. and their mean is within a few standard errors of A. A 5-sigma band
    over 6 (s, a) pairs fails by chance with probability about 6 * 6e-7 (and the seed is fixed).
    """
    n_states, slip = 3, 0.2
    P = np.zeros((n_states, 2, n_states))
    for s in range(n_states):  # action 0 moves left, action 1 right, each slipping to the other way
        left, right = max(s - 1, 0), min(s + 1, n_states - 1)
        P[s, 0, left] += 1 - slip
        P[s, 0, right] += slip
        P[s, 1, right] += 1 - slip
        P[s, 1, left] += slip
    R = np.array([[0.0, -0.1], [0.2, 0.0], [1.0, 0.5]])
    mdp = th.TabularMDP(P, R, 0.9, np.full(n_states, 1 / n_states))
    pi = np.array([[0.5, 0.5], [0.3, 0.7], [0.6, 0.4]])
    v, adv = th.values(mdp, pi), th.advantages(mdp, pi)

    T, N = 30, 30000
    rng = np.random.default_rng(0)
    states = np.empty((T + 1, N), dtype=np.int64)
    actions = np.empty((T, N), dtype=np.int64)
    states[0] = rng.choice(n_states, size=N, p=mdp.rho0)
    for t in range(T):  # inverse-CDF sampling of a ~ pi(.|s) and s' ~ P(.|s, a), vectorised over envs
        actions[t] = (rng.random((N, 1)) > np.cumsum(pi[states[t]], axis=1)[:, :-1]).sum(1)
        cdf = np.cumsum(P[states[t], actions[t]], axis=1)[:, :-1]
        states[t + 1] = (rng.random((N, 1)) > cdf).sum(1)
    rewards = R[states[:-1], actions]
    truncated = np.zeros((T, N), dtype=bool)
    truncated[-1] = True
    est, _ = fastppo.gae(rewards, v[states[:-1]], v[states[1:]], np.zeros((T, N), dtype=bool), truncated,
                         gamma=mdp.gamma, lam=1.0)
    for s in range(n_states):
        for a in range(2):
            sample = est[0][(states[0] == s) & (actions[0] == a)]
            assert len(sample) > 1000
            stderr = sample.std(ddof=1) / np.sqrt(len(sample))
            assert abs(sample.mean() - adv[s, a]) < 5 * stderr, (s, a, sample.mean(), adv[s, a], stderr)


@pytest.mark.parametrize("kwargs, match", [
    (dict(P=np.ones((2, 1, 2)), R=np.zeros((2, 1)), gamma=0.9, rho0=[0.5, 0.5]), "P.*sum to 1"),
    (dict(P=np.ones((2, 1, 1)), R=np.zeros((2, 1)), gamma=0.9, rho0=[0.5, 0.5]), "P must have shape"),
    (dict(P=np.ones((1, 2, 1)), R=np.zeros((1, 3)), gamma=0.9, rho0=[1.0]), "R must have shape"),
    (dict(P=np.ones((1, 2, 1)), R=np.zeros((1, 2)), gamma=1.0, rho0=[1.0]), "gamma"),
    (dict(P=np.ones((1, 2, 1)), R=np.zeros((1, 2)), gamma=0.5, rho0=[0.5]), "rho0.*sum to 1"),
    (dict(P=np.ones((1, 2, 1)), R=[[np.nan, 0.0]], gamma=0.5, rho0=[1.0]), "R must be finite"),
])
def test_bad_mdp_input_raises(kwargs, match):
    with pytest.raises(ValueError, match=match):
        th.TabularMDP(**kwargs)


def test_bad_policy_and_arguments_raise():
    mdp = th.random_mdp(3, 2, 0.9, 0)
    with pytest.raises(ValueError, match=r"pi must have shape \(3, 2\)"):
        th.eta(mdp, np.full((2, 2), 0.5))
    with pytest.raises(ValueError, match=r"pi_new\[s, :\] must sum to 1"):
        th.surrogate(mdp, th.uniform_policy(mdp), np.full((3, 2), 0.6))
    with pytest.raises(ValueError, match="divergence"):
        th.trpo_bound(mdp, th.uniform_policy(mdp), th.uniform_policy(mdp), divergence="l2")
    with pytest.raises(ValueError, match="strictly positive"):
        th.clip_step(mdp, np.array([[1.0, 0.0]] * 3))
    with pytest.raises(ValueError, match="step must be one of"):
        th.iterate(mdp, th.uniform_policy(mdp), "newton")


def test_demo_writes_pngs(tmp_path):
    pytest.importorskip("matplotlib")
    summary = th.demo(str(tmp_path), n_pairs=40, n_iter=5)
    assert (tmp_path / "bound.png").stat().st_size > 0 and (tmp_path / "iterations.png").stat().st_size > 0
    assert summary["tv_bound_violations"] == 0 and summary["kl_bound_violations"] == 0
    assert np.all(np.diff(summary["etas"]["MM (exact TRPO bound)"]) >= -1e-10)
