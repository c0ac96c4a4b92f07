"""Native-boundary properties (tests/boundary.py) of ``_core.PolicyAct`` (act, value) and ``_core.collect``,
each against the same call on clean copies."""

from __future__ import annotations

import numpy as np
import pytest
import torch
from hypothesis import given
from hypothesis import strategies as st

import fastppo
from boundary import SEEDS, VARIANT_NAMES, _policy, _settings, clean, outcome, same, vary

pytestmark = pytest.mark.skipif(not fastppo.backends()["cpp"].available, reason="needs the native extension")


# --- PolicyAct ------------------------------------------------------------------------------------------------


_POLICIES = {}


def _native(kind):
    if kind not in _POLICIES:
        p = _policy(kind)
        _POLICIES[kind] = (p, p.native_act())
    return _POLICIES[kind]


def _act_outputs(policy, n):
    spec = policy.action_spec
    return dict(actions=np.zeros((n, *spec.shape), np.float32 if spec.kind == "gaussian" else np.int64),
                log_probs=np.zeros(n, np.float32), values=np.zeros(n, np.float32),
                dist_params=np.zeros((n, spec.n_params), np.float32))


ACT_TARGETS = ["obs", "actions", "log_probs", "values", "dist_params"]
ALIAS_KINDS = [None, "values=log_probs", "log_probs=obs_view", "dist_params=obs", "actions_overlap_dist_params",
               "values_in_dist_params", "actions_transposed"]


@_settings(200)
@given(seed=SEEDS, kind=st.sampled_from(["discrete", "multidiscrete", "box"]), n=st.integers(0, 4),
       target=st.sampled_from(ACT_TARGETS), variant=st.sampled_from(VARIANT_NAMES),
       alias=st.sampled_from(ALIAS_KINDS), act_seed=st.integers(0, 2**64 - 1), step=st.integers(0, 2**64 - 1))
def test_policy_act(seed, kind, n, target, variant, alias, act_seed, step):
    policy, native = _native(kind)
    rng = np.random.default_rng(seed)
    obs = rng.standard_normal((n, 3)).astype(np.float32)
    outs = _act_outputs(policy, n)
    args = {"obs": obs, **outs}
    names = (target,)
    if alias is None:
        args[target] = vary(variant, args[target])
    else:
        names = tuple(ACT_TARGETS)
        if alias == "values=log_probs":
            args["values"] = args["log_probs"]
        elif alias == "log_probs=obs_view":
            args["log_probs"] = obs.reshape(-1)[:n] if obs.size >= n else args["log_probs"]
        elif alias == "dist_params=obs":
            args["dist_params"] = np.zeros((n, max(3, policy.action_spec.n_params)), np.float32)
            args["obs"] = args["dist_params"][:, :3]
            args["dist_params"] = args["dist_params"][:, :policy.action_spec.n_params]
        elif alias == "actions_overlap_dist_params" and kind == "box":
            big = np.zeros((n, 4), np.float32)
            args["actions"], args["dist_params"] = big[:, :2], big
        elif alias == "values_in_dist_params":
            args["values"] = args["dist_params"].reshape(-1)[:n]
        elif alias == "actions_transposed" and args["actions"].ndim == 2:
            args["actions"] = np.zeros(args["actions"].shape[::-1], args["actions"].dtype)
    before = clean(args["obs"])
    ok, _ = outcome(lambda: native.act(*args.values(), act_seed, step), *names)
    if ok:
        np.testing.assert_array_equal(clean(args["obs"]), before)
        ref = _act_outputs(policy, n)
        native.act(np.ascontiguousarray(clean(args["obs"]), np.float32), *ref.values(), act_seed, step)
        for name in outs:
            same(args[name], ref[name])
    # value(): the same obs variants, and values aliasing obs
    v_args = {"obs": args["obs"] if target == "obs" else obs, "values": args["values"] if target == "values"
              else np.zeros(n, np.float32)}
    if alias == "log_probs=obs_view":
        v_args["values"] = obs.reshape(-1)[:n]
    ok, _ = outcome(lambda: native.value(*v_args.values()), "obs", "values")
    if ok:
        ref = np.zeros(n, np.float32)
        native.value(np.ascontiguousarray(clean(v_args["obs"]), np.float32), ref)
        same(v_args["values"], ref)


def test_policy_act_outputs_must_not_overlap():
    """Regression: the outputs were checked against obs only, so values and log_probs in one array gave
    log_probs in both; a (k, N) actions array of the right size was accepted for (N, k) actions."""
    policy, native = _native("multidiscrete")
    obs = np.zeros((4, 3), np.float32)
    out = _act_outputs(policy, 4)
    with pytest.raises(ValueError, match="values must not overlap log_probs"):
        native.act(obs, out["actions"], out["log_probs"], out["log_probs"], out["dist_params"], 0, 0)
    with pytest.raises(ValueError, match="actions"):
        native.act(obs, np.zeros((2, 4), np.int64), out["log_probs"], out["values"], out["dist_params"], 0, 0)


# --- collect --------------------------------------------------------------------------------------------------
def _writable(buf):
    """The numpy view of a buffer collect accepted (a CPU torch tensor, say: the memory it reads)."""
    return buf.detach().numpy() if isinstance(buf, torch.Tensor) else buf


def _python_env(env):
    """A built-in env (copy=False) as collect takes a Python-stepped env: its gymnasium step, then copies
    into the numpy buffers of the returned dict (whatever they are by then: mutations replace them)."""
    n, d = env.num_envs, env.single_observation_space.shape[0]
    envs = dict(obs=np.zeros((n, d), np.float32), rewards=np.zeros(n, np.float32), terminated=np.zeros(n, bool),
                truncated=np.zeros(n, bool), final_obs=np.zeros((n, d), np.float32), episode_r=np.zeros(n),
                episode_l=np.zeros(n, np.int64))

    def step(actions):
        obs, rewards, terminated, truncated, info = env.step(actions)
        results = dict(obs=obs, rewards=rewards, terminated=terminated, truncated=truncated)
        if "episode" in info:
            results.update(final_obs=info["final_obs"], episode_r=info["episode"]["r"],
                           episode_l=info["episode"]["l"])
        for key, value in results.items():
            _writable(envs[key])[...] = value

    envs["step"] = step
    return envs


def _collect_setup(env_id, n, T, seed, norms, python_env=False):
    """collect's arguments, clean; python_env: the env as a Python-stepped one (Box envs)."""
    env = fastppo.make_vec_env(env_id, n, backend="cpp", seed=seed, copy=False)
    obs, _ = env.reset()
    from fastppo.algos.policies import ActorCritic

    torch.manual_seed(seed % 1000)
    policy = ActorCritic(env.single_observation_space, env.single_action_space, net_arch=(8,))
    spec = policy.action_spec
    D, P = obs.shape[1], spec.n_params
    discrete = spec.kind != "gaussian"
    rollout = dict(obs=np.zeros((T, n, D), np.float32),
                   actions=np.zeros((T, n), np.int64) if discrete else np.zeros((T, n, 1), np.float32),
                   log_probs=np.zeros((T, n), np.float32), values=np.zeros((T, n), np.float32),
                   dist_params=np.zeros((T, n, P), np.float32), rewards=np.zeros((T, n), np.float32),
                   terminated=np.zeros((T, n), bool), truncated=np.zeros((T, n), bool),
                   final_values=np.zeros((T, n), np.float32))
    args = dict(envs=_python_env(env) if python_env else env.native_batch(), policy=policy.native_act(),
                first_obs=obs.copy(), rollout=rollout, episode_returns=np.zeros(T * n),
                episode_lengths=np.zeros(T * n, np.int64), seed=seed,
                action_low=None if discrete else spec.low.copy(), action_high=None if discrete else spec.high.copy(),
                last_obs=np.zeros((n, D), np.float32),
                last_values=np.zeros(n, np.float32),
                obs_norm=dict(mean=np.zeros(D), var=np.ones(D), count=np.array([1e-4]), clip=10.0, eps=1e-8)
                if norms else None,
                reward_norm=dict(mean=np.zeros(1), var=np.ones(1), count=np.array([1e-4]), returns=np.zeros(n),
                                 gamma=0.99, clip=10.0, eps=1e-8) if norms else None)
    return env, args


def _collect_written(args):
    """Everything collect writes (for comparing two calls)."""
    out = {k: v for k, v in args["rollout"].items()} if isinstance(args["rollout"], dict) else {}
    for k in ("episode_returns", "episode_lengths", "last_obs", "last_values"):
        out[k] = args[k]
    for norm in ("obs_norm", "reward_norm"):
        if isinstance(args[norm], dict):
            out.update({f"{norm}[{k}]": v for k, v in args[norm].items() if isinstance(v, np.ndarray)})
    return out


PY_ENV_KEYS = ["obs", "rewards", "terminated", "truncated", "final_obs", "episode_r", "episode_l"]
ROLLOUT_KEYS = ["obs", "actions", "log_probs", "values", "dist_params", "rewards", "terminated", "truncated",
                "final_values"]
COLLECT_MUTATIONS = (
    [f"rollout.{k}:{v}" for k in ROLLOUT_KEYS for v in ("missing", "variant")]
    + ["rollout:not_a_dict", "rollout.values=rollout.log_probs", "rollout.rewards=rollout.final_values", "rollout.obs_overlaps_actions",
       "episode_returns=rollout.values", "episode_lengths:variant", "episode_returns:variant", "first_obs:variant",
       "last_obs:variant", "last_values:variant", "last_obs=first_obs", "last_values=rollout.values",
       "last_obs=last_values", "first_obs=rollout.obs", "obs_norm:variant", "reward_norm:variant",
       "obs_norm.missing", "obs_norm.extra", "obs_norm.mean:variant", "obs_norm.var:variant",
       "obs_norm.count:variant", "obs_norm.clip:bad", "reward_norm.returns:variant", "reward_norm.gamma:bad",
       "reward_norm.mean=obs_norm.count", "obs_norm.var=obs_norm.mean", "reward_norm.returns=episode_returns",
       "rollout.rewards=env_rewards", "action_low:variant", "action_high:variant", "action_low:bad"]
    + [f"envs.{k}:{v}" for k in PY_ENV_KEYS for v in ("missing", "variant")]
    + ["envs.step:bad", "envs.extra:bad", "envs.final_obs=envs.obs", "envs.episode_l=envs.episode_r",
       "rollout.rewards=envs.rewards", "envs.obs=rollout.obs", "obs_norm.mean=envs.final_obs"]
)


@_settings(250)
@given(seed=st.integers(0, 2**20), env_id=st.sampled_from(["CartPole-v1", "MountainCarContinuous-v0",
                                                           "Python:MountainCarContinuous-v0"]),
       n=st.integers(1, 3), T=st.integers(0, 4), norms=st.booleans(), mutation=st.sampled_from(COLLECT_MUTATIONS),
       variant=st.sampled_from(VARIANT_NAMES), bad=st.sampled_from(["1", None, True, float("nan")]))
def test_collect(seed, env_id, n, T, norms, mutation, variant, bad):
    """Python:<id>: the built-in env stepped in Python (a dict of its step and buffers), whose rollout must
    equal the reference's, the same env as an EnvBatch."""
    from fastppo._backend import _core

    python_env, _, env_id = env_id.rpartition(":")
    env, args = _collect_setup(env_id, n, T, seed, norms, python_env=bool(python_env))
    twin_env, ref = _collect_setup(env_id, n, T, seed, norms)
    what, _, how = mutation.partition(":")
    names = (what.split("=")[0].split(".")[-1], what.split(".")[0].split("=")[0])
    if "=" in what:  # aliasing: one argument is (a view of) another one's memory
        dst, src = what.split("=")
        names = (dst.split(".")[-1], src.split(".")[-1], dst.split(".")[0], src.split(".")[0])

        def get(path):
            if path == "env_rewards":  # the built-in env's own buffer (not one collect sees, when stepped in Python)
                return None if python_env else env._buffers["rewards"]
            head, _, key = path.partition(".")
            if not isinstance(args[head], dict) and key:
                return None  # envs.* of an EnvBatch
            return args[head][key] if key else args[head]

        def put(path, value):
            head, _, key = path.partition(".")
            if key:
                args[head][key] = value
            else:
                args[head] = value

        d, s = get(dst), get(src)
        if d is None or s is None:
            return
        if d.dtype == s.dtype and d.size <= s.size:
            put(dst, s.reshape(-1)[:d.size].reshape(d.shape))
        elif d.size * d.itemsize <= s.size * s.itemsize:
            put(dst, s.reshape(-1).view(np.uint8)[:d.size * d.itemsize].view(d.dtype).reshape(d.shape))
        else:
            return
        if dst == "first_obs":  # an input: the reference acts on the values it now holds
            ref["first_obs"] = np.array(args["first_obs"])
    elif mutation == "rollout:not_a_dict":
        args["rollout"] = list(args["rollout"].values())
    elif mutation == "rollout.obs_overlaps_actions":
        r = args["rollout"]
        if r["obs"].size == 0:
            return
        r["actions"] = r["obs"].reshape(-1).view(np.uint8)[:r["actions"].nbytes].view(r["actions"].dtype).reshape(
            r["actions"].shape) if r["obs"].nbytes >= r["actions"].nbytes else r["actions"]
    else:
        head, _, key = what.partition(".")
        container = args[head] if key else args
        name = key or head
        if container is None or not isinstance(container, dict):
            return
        if how == "missing":
            del container[name]
        elif what.endswith("norm.missing"):
            del args[head]["clip" if head == "obs_norm" else "gamma"]
        elif what.endswith("norm.extra"):
            args[head]["bogus"] = 1.0
        elif how == "bad":
            container[name] = bad
        elif how == "variant":
            container[name] = vary(variant, container[name]) if isinstance(container[name], np.ndarray) \
                else vary(variant, np.asarray(container[name]))
    ok, res = outcome(lambda: _core.collect(*args.values()), *names)
    if not ok:
        return
    # accepted: the same rollout as the clean call on an identical env
    assert not mutation.endswith("missing") and mutation not in ("rollout:not_a_dict", "envs.extra:bad"), \
        f"collect accepted {mutation}"
    got = {k: clean(v) for k, v in _collect_written(args).items()}
    assert res == _core.collect(*ref.values())
    want = _collect_written(ref)
    for k, v in got.items():
        if v is not None and k in want and v.shape == want[k].shape:
            np.testing.assert_array_equal(v.astype(want[k].dtype), want[k], err_msg=k)


def test_collect_outputs_must_not_overlap():
    """Regression: the rollout arrays, the episode buffers and the normaliser state were not checked
    against each other (only last_obs / last_values were): values and log_probs in one array, or the
    episode returns in the rollout's values, were silently overwritten."""
    from fastppo._backend import _core

    _, args = _collect_setup("CartPole-v1", 2, 3, 0, False)
    args["rollout"]["values"] = args["rollout"]["log_probs"]
    with pytest.raises(ValueError, match="must not overlap"):
        _core.collect(*args.values())
    _, args = _collect_setup("CartPole-v1", 2, 3, 0, False)
    args["episode_returns"] = args["rollout"]["obs"].reshape(-1).view(np.float64)[:6]
    with pytest.raises(ValueError, match="episode_returns must not overlap obs"):
        _core.collect(*args.values())


def test_collect_steps_a_python_env_as_its_env_batch():
    """A Python-stepped env (a dict of its step and buffers) gives the rollout its EnvBatch gives, with
    and without the normalisers; an exception of its step propagates as itself."""
    from fastppo._backend import _core

    for norms in (False, True):
        _, args = _collect_setup("MountainCarContinuous-v0", 3, 4, 7, norms, python_env=True)
        _, ref = _collect_setup("MountainCarContinuous-v0", 3, 4, 7, norms)
        assert _core.collect(*args.values()) == _core.collect(*ref.values())
        want = _collect_written(ref)
        for k, v in _collect_written(args).items():
            np.testing.assert_array_equal(v, want[k], err_msg=k)

    def step(actions):
        raise ZeroDivisionError("from the step")

    args["envs"]["step"] = step
    with pytest.raises(ZeroDivisionError, match="from the step"):
        _core.collect(*args.values())
