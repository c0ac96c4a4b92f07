"""Native-boundary properties (tests/boundary.py) of the native updaters, ``_core.PpoUpdate`` (constructor,
``PpoUpdateConfig``, ``epoch``) and ``_core.CriticFit``: what they write (parameters, gradients, Adam
moments, step count) is bit for bit that of the same calls on clean copies, and untouched when a call
is refused."""

from __future__ import annotations

import numpy as np
import pytest
import torch
from hypothesis import given
from hypothesis import strategies as st

import fastppo
from boundary import SEEDS, _settings, clean, outcome, unchanged
from boundary_updaters import (
    ADAM_STATE, CONFIG_FIELDS, NVEC_VALUES, ORDER_KINDS, PPO_ALIASES, PPO_INPUTS, PPO_LISTS, PPO_TARGETS,
    READ_ONLY_ALIASES, STRING_VALUES, UPDATE_VARIANT_NAMES, _assert_refused_cleanly, _assert_written,
    _clean_copies, _copy_config, _critic_args, _odd_order, _ppo_alias, _ppo_args, _ppo_config, _same_result,
    _written, vary_update)

pytestmark = pytest.mark.skipif(not fastppo.backends()["cpp"].available, reason="needs the native extension")


@_settings(350)
@given(seed=SEEDS, kind=st.sampled_from(["discrete", "multidiscrete", "box"]), size=st.integers(0, 9),
       target=st.sampled_from(PPO_TARGETS), variant=st.sampled_from(UPDATE_VARIANT_NAMES), index=st.integers(0, 3),
       alias=st.sampled_from(PPO_ALIASES), order_kind=st.sampled_from(ORDER_KINDS),
       string=st.sampled_from(STRING_VALUES), nvec=st.sampled_from(NVEC_VALUES), cfg=st.integers(0, 2**16))
def test_ppo_update(seed, kind, size, target, variant, index, alias, order_kind, string, nvec, cfg):
    from fastppo._backend import _core

    args, ref = _ppo_args(kind, size, seed), _ppo_args(kind, size, seed)
    model = dict(args)  # the model's own memory, whatever is passed instead
    rng = np.random.default_rng(seed)
    order, config = rng.permutation(size), _ppo_config(cfg)
    names, changed = (target,), [target]
    if target == "order":
        order = _odd_order(order_kind, order, variant, rng)
        changed = []
    elif target in PPO_LISTS:
        entries = list(args[target])
        entries[index % len(entries)] = vary_update(variant, entries[index % len(entries)])
        args[target], changed = entries, []
    elif target in ("activation", "kind"):
        args[target] = string
    elif target == "nvec":
        args[target] = nvec
        names = ("nvec", "actions", "sum(nvec)")  # the actions' shape follows len(nvec)
    elif target == "alias":
        applied = _ppo_alias(args, alias, size)
        if applied is None:
            return
        names, changed = applied
    elif target in ("log_std", "log_std_grad"):  # views of the flat buffers, as the list entries
        if args[target] is None:  # a categorical policy
            return
        args[target], changed = vary_update(variant, args[target]), []
    else:
        args[target] = vary_update(variant, args[target])
    if target == "kind":
        names = ("kind", "nvec", "log_std", "actions")  # what the other kind needs
    before, passed_before = _written(model), _written(args)
    inputs_before = {k: clean(args[k]) for k in PPO_INPUTS}
    _clean_copies(ref, args, changed)  # the values passed, before the call writes any
    ok, update = outcome(lambda: _core.PpoUpdate(**args), *names)
    if ok:
        ok, res = outcome(lambda: update.epoch(order, config), *names)
    if not ok:
        _assert_refused_cleanly(model, before, args, passed_before)
        return
    assert target != "alias" or alias in READ_ONLY_ALIASES, f"accepted {alias}"
    unchanged(inputs_before, args)  # the rollout is only read
    ref_order = np.ascontiguousarray(clean(order)) if isinstance(order, (np.ndarray, torch.Tensor)) else order
    assert np.asarray(ref_order).dtype == np.int64, f"accepted a {type(order).__name__} order"
    assert np.array_equal(np.sort(ref_order), np.arange(size)), f"accepted order {ref_order}"
    _same_result(res, _core.PpoUpdate(**ref).epoch(ref_order, _copy_config(config)))
    _assert_written(_written(args), _written(ref), "after the epoch")


CONFIG_VALUES = [0, -1, 1, 3, 2**62, 2**63 - 1, 2**70, True, 0.0, -0.0, 0.3, 1.0, 1.5, -0.5, 1e300, float("nan"),
                 float("inf"), -float("inf"), "0.1", None, np.float32(2.5), np.int64(3), np.float64(0.1), [0.1]]


def _meaningful(field, v):
    """Whether an accepted value of a config field (or CriticFit.epoch's argument) means something."""
    if field == "batch_size":
        return isinstance(v, (int, np.integer)) and v >= 1
    if field == "normalize_advantages":
        return isinstance(v, bool)
    if field in ("clip_coef", "vf_coef", "ent_coef", "lr", "eps"):
        return 0 <= v < float("inf")
    if field == "clip_range_vf":
        return v < 0 or 0 <= v < float("inf")
    if field == "kl_coef":
        return v < 0 or 0 <= v < float("inf")
    if field in ("target_kl", "max_grad_norm"):
        return not np.isnan(v)
    if field in ("beta1", "beta2"):
        return 0 <= v < 1
    raise AssertionError(field)


@_settings(250)
@given(seed=SEEDS, kind=st.sampled_from(["discrete", "box"]), size=st.integers(1, 8),
       field=st.sampled_from(CONFIG_FIELDS), value=st.sampled_from(CONFIG_VALUES), cfg=st.integers(0, 2**16),
       with_old=st.booleans())
def test_ppo_update_config(seed, kind, size, field, value, cfg, with_old):
    """One config field set to an odd value: refused (by the setter or the epoch) naming the field, or
    accepted with a meaningful value and the numbers of the same call."""
    from fastppo._backend import _core

    args, ref = _ppo_args(kind, size, seed), _ppo_args(kind, size, seed)
    if not with_old:
        args["old_dist_params"] = ref["old_dist_params"] = None
    order, config = np.random.default_rng(seed).permutation(size), _ppo_config(cfg)
    if not with_old:
        config.kl_coef = -1.0
    before = _written(args)
    ok, _ = outcome(lambda: setattr(config, field, value), field)
    if not ok:
        return
    update = _core.PpoUpdate(**args)
    ok, res = outcome(lambda: update.epoch(order, config), field, "kl_coef needs old_dist_params")
    if not ok:
        _assert_written(_written(args), before, "after a refused epoch")
        return
    accepted = getattr(config, field)
    assert _meaningful(field, accepted), f"accepted {field}={accepted!r} (set as {value!r})"
    _same_result(res, _core.PpoUpdate(**ref).epoch(order.copy(), _copy_config(config)))
    _assert_written(_written(args), _written(ref), "after the epoch")


class _Recorder:
    """An on_gradients that records the written buffers at each call (before that minibatch's step) and
    goes on (PpoUpdate's passes the minibatch's approx_kl and reads a bool; CriticFit's passes nothing)."""

    def __init__(self, args):
        self.args, self.seen = args, []

    def __call__(self, *approx_kl):
        self.seen.append(_written(self.args))
        return True


CALLBACK_KINDS = ["none", "noop", "int", "str", "raise_1", "raise_2", "rewrite_order", "rewrite_config",
                  "rewrite_actions", "reenter_refused"]


def _check_on_gradients(kind, args, run, ref_run, order, extra):
    """One epoch with an odd on_gradients: run(order, on_gradients) on args, ref_run(order, recorder) on a
    twin. extra: rewrites the callback may make of the call's other inputs."""
    recorder = _Recorder(extra["ref_args"])
    want = ref_run(order.copy(), recorder)
    calls = []
    raised = KeyError("raised by on_gradients")

    def callback(*approx_kl):  # PpoUpdate's: the minibatch's approx_kl; CriticFit's: nothing
        calls.append(1)
        if kind.startswith("raise_") and len(calls) == int(kind[-1]):
            raise raised
        if kind == "rewrite_order":
            order[:] = 2**62  # read once at the start: the epoch goes on with the order it was given
        if kind == "rewrite_config" and "config" in extra:
            extra["config"].batch_size, extra["config"].lr = -5, float("nan")
        if kind == "rewrite_actions" and args.get("actions") is not None and args["actions"].dtype == np.int64:
            args["actions"].reshape(-1)[0] = 2**40
        if kind == "reenter_refused":  # a nested call with a bad order raises; the outer epoch goes on
            with pytest.raises(ValueError, match="order"):
                run(np.full(order.size, 2**62), None)
        return True

    on_gradients = {"none": None, "int": 1, "str": "reducer"}.get(kind, callback)
    before = _written(args)
    try:
        ok, got = outcome(lambda: run(order, on_gradients), "on_gradients", "actions")
    except KeyError as e:
        assert e is raised and kind.startswith("raise_")
        k = int(kind[-1])
        # the steps before the raising call were taken and counted, the gradient of its minibatch is there
        _assert_written(_written(args), recorder.seen[k - 1], f"after on_gradients raised at call {k}")
        return
    if not ok:
        if kind in ("int", "str"):
            _assert_written(_written(args), before, "after a refused epoch")
        else:  # rewritten actions: refused after the first minibatch's backward, before its step
            assert kind == "rewrite_actions" and calls
            _assert_written(_written(args), recorder.seen[0], "after actions were rewritten mid-epoch")
        return
    assert kind not in ("int", "str"), f"accepted on_gradients={on_gradients!r}"
    assert not (kind.startswith("raise_") and len(calls) >= int(kind[-1]))
    _same_result(got, want)
    _assert_written(_written(args), _written(extra["ref_args"]), "after the epoch")


@_settings(120)
@given(seed=SEEDS, kind=st.sampled_from(["discrete", "multidiscrete", "box"]), size=st.integers(0, 8),
       callback=st.sampled_from(CALLBACK_KINDS), cfg=st.integers(0, 2**16))
def test_ppo_update_on_gradients(seed, kind, size, callback, cfg):
    from fastppo._backend import _core

    args, ref = _ppo_args(kind, size, seed), _ppo_args(kind, size, seed)
    config = _ppo_config(cfg)
    update, ref_update = _core.PpoUpdate(**args), _core.PpoUpdate(**ref)
    _check_on_gradients(callback, args, lambda o, cb: update.epoch(o, config, cb),
                        lambda o, cb: ref_update.epoch(o, _copy_config(config), cb),
                        np.random.default_rng(seed).permutation(size), {"ref_args": ref, "config": config})


CRITIC_TARGETS = [*ADAM_STATE, "obs", "returns", "critic", "critic_grads", "activation", "order", "alias",
                  "batch_size", "lr", "beta1", "beta2", "eps"]
CRITIC_ALIASES = ["flat_grad=flat_param", "grads=params", "exp_avg=flat_param", "exp_avg_sq=exp_avg",
                  "exp_avg~exp_avg_sq", "adam_steps=flat_grad", "adam_steps=exp_avg", "obs=flat_param",
                  "obs=exp_avg_sq", "returns=exp_avg", "returns=flat_grad", "returns=adam_steps", "returns=obs"]


@_settings(250)
@given(seed=SEEDS, size=st.integers(0, 9), target=st.sampled_from(CRITIC_TARGETS),
       variant=st.sampled_from(UPDATE_VARIANT_NAMES), index=st.integers(0, 3), alias=st.sampled_from(CRITIC_ALIASES),
       order_kind=st.sampled_from(ORDER_KINDS), string=st.sampled_from(STRING_VALUES),
       value=st.sampled_from(CONFIG_VALUES), batch_size=st.sampled_from([1, 3, 4, 64]))
def test_critic_fit(seed, size, target, variant, index, alias, order_kind, string, value, batch_size):
    from fastppo._backend import _core

    args, ref = _critic_args(size, seed), _critic_args(size, seed)
    model = dict(args)
    rng = np.random.default_rng(seed)
    order = rng.permutation(size)
    hyper = dict(batch_size=batch_size, lr=1e-2, beta1=0.9, beta2=0.999, eps=1e-5)
    names, changed = (target,), [target]
    if target == "order":
        order, changed = _odd_order(order_kind, order, variant, rng), []
    elif target in hyper:
        hyper[target], changed = value, []
    elif target in ("critic", "critic_grads"):
        entries = list(args[target])
        entries[index % len(entries)] = vary_update(variant, entries[index % len(entries)])
        args[target], changed = entries, []
    elif target == "activation":
        args[target] = string
    elif target == "alias":
        applied = _ppo_alias(args, alias, size)
        if applied is None:
            return
        names, changed = applied
    else:
        args[target] = vary_update(variant, args[target])
    before, passed_before = _written(model), _written(args)
    inputs_before = {k: clean(args[k]) for k in ("obs", "returns")}
    _clean_copies(ref, args, changed)  # the values passed, before the call writes any
    ok, fit = outcome(lambda: _core.CriticFit(**args), *names)
    if ok:
        ok, res = outcome(lambda: fit.epoch(order, *hyper.values()), *names)
    if not ok:
        _assert_refused_cleanly(model, before, args, passed_before)
        return
    assert target != "alias" or alias in READ_ONLY_ALIASES, f"accepted {alias}"
    if target in hyper:
        assert _meaningful(target, value), f"accepted {target}={value!r}"
    unchanged(inputs_before, args)
    ref_order = np.ascontiguousarray(clean(order)) if isinstance(order, (np.ndarray, torch.Tensor)) else order
    assert np.array_equal(np.sort(ref_order), np.arange(size)), f"accepted order {ref_order}"
    _same_result(res, _core.CriticFit(**ref).epoch(ref_order, *hyper.values()))
    _assert_written(_written(args), _written(ref), "after the epoch")


@_settings(60)
@given(seed=SEEDS, size=st.integers(0, 8), callback=st.sampled_from(CALLBACK_KINDS),
       batch_size=st.sampled_from([1, 3, 64]))
def test_critic_fit_on_gradients(seed, size, callback, batch_size):
    from fastppo._backend import _core

    args, ref = _critic_args(size, seed), _critic_args(size, seed)
    fit, ref_fit = _core.CriticFit(**args), _core.CriticFit(**ref)
    hyper = (batch_size, 1e-2, 0.9, 0.999, 1e-5)
    _check_on_gradients(callback, args, lambda o, cb: fit.epoch(o, *hyper, cb),
                        lambda o, cb: ref_fit.epoch(o, *hyper, cb), np.random.default_rng(seed).permutation(size),
                        {"ref_args": ref})


def _run_both(ppo_args, critic_args, order=None):
    from fastppo._backend import _core

    _core.PpoUpdate(**ppo_args).epoch(np.arange(len(ppo_args["obs"])) if order is None else order,
                                      _ppo_config(0))
    _core.CriticFit(**critic_args).epoch(np.arange(len(critic_args["obs"])), 4, 1e-2, 0.9, 0.999, 1e-5)


def test_updater_buffers_must_not_share_memory():
    """Regression: the five buffers an update writes (flat_param, flat_grad, exp_avg, exp_avg_sq, adam_steps)
    were checked for shape only: one array passed as both moments, the gradients passed as the parameters
    (with flat_grad = flat_param), or the step count inside a moment buffer were accepted, and the step read
    what it had just written."""
    from fastppo._backend import _core

    for make in (lambda: _ppo_args("box", 4, 0), lambda: _critic_args(4, 0)):
        args = make()
        before = _written(args)
        factory = _core.PpoUpdate if "actor" in args else _core.CriticFit
        with pytest.raises(ValueError, match="exp_avg_sq must not overlap exp_avg"):
            factory(**{**args, "exp_avg_sq": args["exp_avg"]})
        bad = dict(args)
        _ppo_alias(bad, "grads=params", 4)
        with pytest.raises(ValueError, match="flat_grad must not overlap flat_param"):
            factory(**bad)
        with pytest.raises(ValueError, match="adam_steps must not overlap exp_avg"):
            factory(**{**args, "adam_steps": args["exp_avg"][:2].view(np.int64)})
        _assert_written(_written(args), before, "after refused constructors")


def test_updater_rollout_must_not_share_written_memory():
    """Regression: the rollout arrays (read throughout the epoch) were not checked against the buffers the
    epoch writes: obs in the parameters' memory was accepted and changed under the update."""
    from fastppo._backend import _core

    args = _ppo_args("discrete", 4, 0)
    with pytest.raises(ValueError, match="obs must not overlap flat_param"):
        _core.PpoUpdate(**{**args, "obs": args["flat_param"][:12].reshape(4, 3)})
    with pytest.raises(ValueError, match="old_dist_params must not overlap exp_avg_sq"):
        _core.PpoUpdate(**{**args, "old_dist_params": args["exp_avg_sq"][:12].reshape(4, 3)})
    args = _critic_args(4, 0)
    with pytest.raises(ValueError, match="returns must not overlap flat_grad"):
        _core.CriticFit(**{**args, "returns": args["flat_grad"][:4]})
    _core.CriticFit(**{**args, "returns": args["obs"].reshape(-1)[:4]})  # arrays only read may share memory


def test_updater_step_count_and_hyperparameters_checked():
    """Regression: a negative step count made Adam's bias correction divide by zero, and NaN or out-of-range
    hyperparameters (clip_coef, betas, lr, ...) ran, writing NaN into the parameters; the epoch refuses them
    (as fastppo.ppo_loss and torch.optim.Adam do) before writing anything."""
    from fastppo._backend import _core

    ppo, critic = _ppo_args("discrete", 4, 0), _critic_args(4, 0)
    update, fit = _core.PpoUpdate(**ppo), _core.CriticFit(**critic)
    written = lambda: {f"{name} {k}": v for name, args in (("ppo", ppo), ("critic", critic))  # noqa: E731
                       for k, v in _written(args).items()}
    before = written()
    for args in (ppo, critic):
        args["adam_steps"][0] = -1
    with pytest.raises(ValueError, match=r"adam_steps\[0\] must be a step count"):
        update.epoch(np.arange(4), _ppo_config(0))
    with pytest.raises(ValueError, match=r"adam_steps\[0\] must be a step count"):
        fit.epoch(np.arange(4), 4, 1e-2, 0.9, 0.999, 1e-5)
    for args, name in ((ppo, "ppo"), (critic, "critic")):
        args["adam_steps"][0] = before[f"{name} adam_steps"][0]
    for field, value in (("clip_coef", float("nan")), ("clip_range_vf", float("nan")), ("target_kl", float("nan")),
                         ("max_grad_norm", float("nan")), ("ent_coef", -0.1), ("kl_coef", float("inf")),
                         ("beta1", 1.0), ("beta2", -0.5), ("lr", float("nan")), ("eps", -1e-8)):
        config = _ppo_config(0)
        setattr(config, field, value)
        with pytest.raises(ValueError, match=field):
            update.epoch(np.arange(4), config)
    for i, value in enumerate((float("nan"), 1.0, 1.0, -1.0)):
        hyper = [1e-2, 0.9, 0.999, 1e-5]
        hyper[i] = value
        with pytest.raises(ValueError, match=("lr", "beta1", "beta2", "eps")[i]):
            fit.epoch(np.arange(4), 4, *hyper)
    after = written()
    for k, v in before.items():
        np.testing.assert_array_equal(after[k], v, err_msg=k)


def test_updater_int_arguments_named_and_not_truncated():
    """Regression: PpoUpdateConfig's setters raised pybind11's "incompatible function arguments", which names
    no field, and batch_size=np.float32(2.5) was truncated to 2 (CriticFit.epoch)."""
    from fastppo._backend import _core

    config = _core.PpoUpdateConfig()
    for field, value in (("batch_size", 1.5), ("batch_size", np.float32(2.5)), ("batch_size", 2**70),
                         ("lr", "0.1"), ("clip_coef", None)):
        with pytest.raises(TypeError, match=field):
            setattr(config, field, value)
    config.batch_size = np.int64(3)
    assert config.batch_size == 3
    fit = _core.CriticFit(**_critic_args(4, 0))
    with pytest.raises(TypeError, match="batch_size must be an int"):
        fit.epoch(np.arange(4), np.float32(2.5), 1e-2, 0.9, 0.999, 1e-5)


def test_updater_parameter_lists_named():
    """Regression: a bad parameter array was named "weight" / "bias" / "grad_weight" (which list, which
    entry?), and a span outside the flat buffers did not say which parameter."""
    from fastppo._backend import _core

    args = _ppo_args("box", 4, 0)
    with pytest.raises(TypeError, match=r"actor\[2\] must have dtype float32"):
        _core.PpoUpdate(**{**args, "actor": [*args["actor"][:2], args["actor"][2].astype(np.float64),
                                             args["actor"][3]]})
    with pytest.raises(ValueError, match=r"critic\[1\] and critic_grads\[1\]: .*views of flat_param"):
        _core.PpoUpdate(**{**args, "critic": [args["critic"][0], args["critic"][1].copy(), *args["critic"][2:]]})
    with pytest.raises(ValueError, match=r"critic_grads\[0\] is missing"):
        _core.CriticFit(**{**_critic_args(4, 0), "critic_grads": []})
    with pytest.raises(ValueError, match="kind 'gaussian' needs log_std"):
        _core.PpoUpdate(**{**_ppo_args("discrete", 4, 0), "kind": "gaussian"})


def test_on_gradients_cannot_unsettle_the_epoch():
    """Regression: epoch() read `order` and the config from the caller's objects between minibatches, and
    checked the actions once: an on_gradients (Python code, run mid-epoch) that rewrote them sent the
    native loop out of bounds (order entries, a negative batch_size, an action beyond its head)."""
    from fastppo._backend import _core

    for kind in ("order", "config", "actions", "nested"):
        args, ref = _ppo_args("discrete", 8, 1), _ppo_args("discrete", 8, 1)
        update, config, order = _core.PpoUpdate(**args), _ppo_config(3), np.arange(8)
        config.batch_size, config.target_kl = 2, -1.0
        want = _core.PpoUpdate(**ref).epoch(order.copy(), _copy_config(config))

        def rewrite(approx_kl):
            if kind == "order":
                order[:] = 2**62
            elif kind == "config":
                config.batch_size = -5
            elif kind == "actions":
                args["actions"][3] = 2**40
            else:  # re-entered with an order it refuses: refused before it copies or reads anything
                with pytest.raises(ValueError, match="order"):
                    update.epoch(np.full(8, 2**62), config)
            return True

        if kind == "actions":
            with pytest.raises(ValueError, match=r"actions\[3\] = 1099511627776 is outside"):
                update.epoch(order, config, rewrite)
            assert args["adam_steps"][0] == ref["adam_steps"][0] - 4  # the first minibatch's step not taken
            continue
        _same_result(update.epoch(order, config, rewrite), want)
        _assert_written(_written(args), _written(ref), kind)


def test_on_gradients_gets_the_kl_and_can_stop_the_epoch():
    """PpoUpdate's on_gradients receives each minibatch's approx_kl and answers whether to take its step:
    False stops the epoch before it, as target_kl does (the data-parallel run's vote on target_kl); any
    other answer than a bool is refused."""
    from fastppo._backend import _core

    args = _ppo_args("discrete", 8, 1)
    update, config, order = _core.PpoUpdate(**args), _ppo_config(3), np.arange(8)
    config.batch_size, config.target_kl = 2, -1.0
    seen = []
    updates, stopped, sums = update.epoch(order, config, lambda kl: seen.append(kl) is None)
    assert (updates, stopped, len(seen)) == (4, False, 4)
    assert sums[3] == sum(seen)  # the KL passed is the one the epoch sums (approx_kl's slot)
    steps = int(args["adam_steps"][0])
    updates, stopped, _ = update.epoch(order, config, lambda kl: len(seen.append(kl) or seen) < 7)
    assert (updates, stopped) == (2, True) and int(args["adam_steps"][0]) == steps + 2
    for answer in (None, 1, "yes"):
        with pytest.raises(TypeError, match="on_gradients must return a bool .*, got " + type(answer).__name__):
            update.epoch(order, config, lambda kl, answer=answer: answer)
    assert int(args["adam_steps"][0]) == steps + 2  # refused before the first step


def test_order_must_be_a_permutation():
    """Regression: epoch() checked only that each order entry was in range (docs/architecture.md says a
    permutation): an order with repeats trained on some rows twice and never on others."""
    from fastppo._backend import _core

    update, fit = _core.PpoUpdate(**_ppo_args("discrete", 4, 0)), _core.CriticFit(**_critic_args(4, 0))
    with pytest.raises(ValueError, match=r"order must be a permutation of range\(4\), but order\[2\] = 1 repeats"):
        update.epoch(np.array([0, 1, 1, 3]), _ppo_config(0))
    with pytest.raises(ValueError, match="order must be a permutation"):
        fit.epoch(np.zeros(4, np.int64), 4, 1e-2, 0.9, 0.999, 1e-5)
