"""Every GAE backend against the loop-shaped reference, hand-computed cases, and bad input."""

import os
import subprocess
import sys

import numpy as np
import pytest
import torch
from hypothesis import given, settings
from hypothesis import strategies as st

import fastppo
from fastppo.ops import gae_reference
from conftest import CPU_BACKENDS, requires_cuda, requires_two_gpus

TOL = {np.float32: dict(rtol=1e-5, atol=1e-5), np.float64: dict(rtol=1e-12, atol=1e-12)}


def rollout(T, N, dtype=np.float32, flag_dtype=bool, p_term=0.1, p_trunc=0.1, seed=0):
    rng = np.random.default_rng(seed)
    r, v, nv = (rng.standard_normal((T, N)).astype(dtype) for _ in range(3))
    te = (rng.random((T, N)) < p_term).astype(flag_dtype)
    tr = (rng.random((T, N)) < p_trunc).astype(flag_dtype)
    return r, v, nv, te, tr


def reference(r, v, nv, te, tr, gamma, lam):
    adv, ret = gae_reference(*(torch.as_tensor(np.array(a)) for a in (r, v, nv, te, tr)), gamma=gamma, lam=lam)
    return adv.numpy(), ret.numpy()


def check_against_reference(arrays, gamma, lam, backend):
    adv, ret = fastppo.gae(*arrays, gamma=gamma, lam=lam, backend=backend)
    ref_adv, ref_ret = reference(*arrays, gamma, lam)
    tol = TOL[arrays[0].dtype.type]
    np.testing.assert_allclose(adv, ref_adv, **tol)
    np.testing.assert_allclose(ret, ref_ret, **tol)
    assert adv.dtype == arrays[0].dtype and ret.dtype == arrays[0].dtype


@pytest.mark.parametrize("backend", CPU_BACKENDS)
@settings(max_examples=40, deadline=None)
@given(T=st.integers(1, 40), N=st.integers(1, 12), f64=st.booleans(), float_flags=st.booleans(),
       p_term=st.sampled_from([0.0, 0.1, 0.5, 1.0]), p_trunc=st.sampled_from([0.0, 0.1, 0.5, 1.0]),
       gamma=st.floats(0, 1), lam=st.floats(0, 1), seed=st.integers(0, 2**16))
def test_matches_reference(backend, T, N, f64, float_flags, p_term, p_trunc, gamma, lam, seed):
    dtype = np.float64 if f64 else np.float32
    arrays = rollout(T, N, dtype, dtype if float_flags else bool, p_term, p_trunc, seed)
    check_against_reference(arrays, gamma, lam, backend)


@pytest.mark.parametrize("backend", CPU_BACKENDS)
@pytest.mark.parametrize("layout", ["row_slice", "env_slice", "transposed", "reversed_time"])
def test_strided_inputs(backend, layout):
    """Views with any strides are read correctly (or the native kernel would misread them)."""
    big = rollout(40, 30, seed=1)
    views = {
        "row_slice": lambda a: a[5:25],            # stride_t != N
        "env_slice": lambda a: a[:, 3:20:2],      # stride_n == 2
        "transposed": lambda a: np.ascontiguousarray(a.T).T,  # env axis has stride T
        "reversed_time": lambda a: a[::-1],       # negative stride
    }[layout]
    check_against_reference(tuple(views(a) for a in big), 0.97, 0.9, backend)


@pytest.mark.parametrize("backend", CPU_BACKENDS)
@pytest.mark.parametrize("shape", [(300, 1024), (70_000, 2), (600, 257)])
def test_large_shapes_use_threads_and_chunks(backend, shape):
    """Shapes that take the threaded env-block path and the time-chunked path on 2+ threads."""
    if backend == "torch":
        pytest.skip("the reference loop is the oracle here")
    fastppo.set_num_threads(2)
    try:
        check_against_reference(rollout(*shape, p_term=0.001, p_trunc=0.001, seed=3), 0.99, 0.95, backend)
    finally:
        fastppo.set_num_threads(0)


@pytest.mark.skipif("cpp" not in CPU_BACKENDS, reason="needs the native extension")
@pytest.mark.parametrize("shape", [(300, 1024), (70_000, 3)])
def test_cpp_same_result_for_any_thread_count(shape):
    arrays = rollout(*shape, dtype=np.float64, p_term=0.0005, p_trunc=0.0005, seed=4)
    results = []
    for n in (1, 2, 3):
        fastppo.set_num_threads(n)
        results.append(fastppo.gae(*arrays, gamma=0.99, lam=0.95, backend="cpp"))
    fastppo.set_num_threads(0)
    for adv, ret in results[1:]:
        # the env-block split does the same per-element arithmetic; the time-chunked one re-associates
        np.testing.assert_allclose(adv, results[0][0], rtol=1e-12, atol=1e-12)
        np.testing.assert_allclose(ret, results[0][1], rtol=1e-12, atol=1e-12)


# Hand-computed cases: one env, gamma = 0.5, lam = 0.5 (so gamma * lam = 0.25), V = 0 except where given.
HAND = [
    # (rewards, values, next_values, terminated, truncated, expected advantages)
    ("T=1 bootstraps", [1.0], [0.0], [2.0], [0], [0], [1.0 + 0.5 * 2.0]),
    ("T=1 terminated", [1.0], [0.5], [2.0], [1], [0], [1.0 - 0.5]),
    ("T=1 truncated bootstraps", [1.0], [0.0], [2.0], [0], [1], [2.0]),
    ("no dones", [1.0, 1.0, 1.0], [0.0] * 3, [0.0, 0.0, 4.0], [0] * 3, [0] * 3,
     [1 + 0.25 * (1 + 0.25 * 3), 1 + 0.25 * 3, 1 + 0.5 * 4]),
    ("truncated at t=0", [1.0, 1.0], [0.0, 0.0], [8.0, 0.0], [0, 0], [1, 0], [1 + 0.5 * 8, 1.0]),
    ("truncated at t=T-1", [1.0, 1.0], [0.0, 0.0], [0.0, 8.0], [0, 0], [0, 1], [1 + 0.25 * 5, 1 + 0.5 * 8]),
    ("terminated mid-trace", [1.0, 2.0, 3.0], [0.0] * 3, [5.0, 5.0, 5.0], [0, 1, 0], [0] * 3,
     [1 + 0.5 * 5 + 0.25 * 2, 2.0, 3 + 0.5 * 5]),
    ("all done", [1.0, 2.0], [0.5, 0.5], [9.0, 9.0], [1, 1], [1, 1], [0.5, 1.5]),
]


@pytest.mark.parametrize("backend", CPU_BACKENDS)
@pytest.mark.parametrize("case", HAND, ids=[c[0] for c in HAND])
def test_hand_computed(backend, case):
    _, r, v, nv, te, tr, expected = case
    col = lambda x, dt=np.float64: np.asarray(x, dtype=dt)[:, None]  # noqa: E731
    adv, ret = fastppo.gae(col(r), col(v), col(nv), col(te, bool), col(tr, bool), gamma=0.5, lam=0.5,
                           backend=backend)
    np.testing.assert_allclose(adv[:, 0], expected, rtol=1e-12)
    np.testing.assert_allclose(ret[:, 0], np.asarray(expected) + np.asarray(v), rtol=1e-12)


def consistent_rollout(T, N, seed):
    """next_values[t] = values[t+1] except after a done step, where the final observation's value
    (kept in next_values) is unrelated to the reset observation's value in values[t+1]."""
    r, v, nv, te, tr = rollout(T, N, np.float64, bool, 0.05, 0.05, seed)
    nv[:-1] = np.where(te[:-1] | tr[:-1], nv[:-1], v[1:])
    return r, v, nv, te, tr


@pytest.mark.parametrize("backend", CPU_BACKENDS)
def test_lam_one_is_discounted_return_minus_value(backend):
    r, v, nv, te, tr = consistent_rollout(30, 5, seed=5)
    gamma = 0.9
    adv, _ = fastppo.gae(r, v, nv, te, tr, gamma=gamma, lam=1.0, backend=backend)
    target = np.zeros_like(r)
    for n in range(r.shape[1]):
        g = 0.0  # the discounted return, bootstrapped where the episode was cut or the rollout ends
        for t in reversed(range(r.shape[0])):
            if te[t, n]:
                g = r[t, n]
            elif tr[t, n] or t == r.shape[0] - 1:
                g = r[t, n] + gamma * nv[t, n]
            else:
                g = r[t, n] + gamma * g
            target[t, n] = g - v[t, n]
    np.testing.assert_allclose(adv, target, rtol=1e-10, atol=1e-10)


@pytest.mark.parametrize("backend", CPU_BACKENDS)
def test_lam_zero_is_one_step_td_error(backend):
    r, v, nv, te, tr = consistent_rollout(30, 5, seed=6)
    adv, _ = fastppo.gae(r, v, nv, te, tr, gamma=0.9, lam=0.0, backend=backend)
    np.testing.assert_allclose(adv, r + 0.9 * np.where(te, 0.0, nv) - v, rtol=1e-12, atol=1e-12)


def non_finite_rollout(dtype, flag_dtype):
    """A (12, 6) rollout with NaN and +-inf in next_values where the flags make them unused
    (terminated: multiplied by a zero coefficient, which still gives NaN) or used (truncated:
    bootstrapped), and in rewards/values at cut steps; columns 4 and 5 stay finite."""
    r, v, nv, te, tr = (np.array(a) for a in rollout(12, 6, dtype, flag_dtype, 0.0, 0.0, seed=7))
    te[[2, 7], 0] = te[5, 1] = te[9, 2] = te[3, 4] = 1
    tr[4, 0] = tr[[1, 8], 3] = tr[6, 5] = 1
    tr[9, 2] = 1  # terminated and truncated at once
    nv[2, 0], nv[7, 0] = np.nan, np.inf       # terminated
    nv[5, 1] = -np.inf                        # terminated
    nv[9, 2] = np.nan                         # terminated and truncated
    nv[4, 0] = np.inf                         # truncated: bootstrapped
    nv[8, 3], r[1, 3] = np.nan, np.inf        # truncated
    v[11, 3] = -np.inf                        # the last row
    return r, v, nv, te, tr


@pytest.mark.parametrize("dtype", [np.float32, np.float64])
@pytest.mark.parametrize("flag_dtype", ["bool", "float"])
def test_non_finite_inputs_agree_bitwise_across_backends(dtype, flag_dtype):
    """Every backend does the same arithmetic (the flags pick a coefficient that multiplies, as in
    csrc/ops/gae/gae_math.h and the reference), so NaN and inf at terminated and truncated steps come out the
    same, bit for bit, NaN where NaN. (The numba kernel used to select instead of multiplying, which
    dropped a NaN next value at a terminated step.)"""
    arrays = non_finite_rollout(dtype, dtype if flag_dtype == "float" else bool)
    want = reference(*arrays, 0.99, 0.95)
    assert np.isnan(want[0]).any() and np.isinf(want[0]).any() and np.isfinite(want[0][:, 4:]).all()
    for backend in CPU_BACKENDS:
        got = fastppo.gae(*arrays, gamma=0.99, lam=0.95, backend=backend)
        for name, g, w in zip(("advantages", "returns"), got, want):
            assert np.array_equal(g, w, equal_nan=True), f"{backend} {name}:\n{g}\nreference:\n{w}"


@pytest.mark.parametrize("backend", CPU_BACKENDS)
def test_torch_in_torch_out_and_out_buffers(backend):
    arrays = [torch.as_tensor(a) for a in rollout(16, 4, seed=7)]
    out = (torch.full((16, 4), float("nan")), torch.full((16, 4), float("nan")))
    adv, ret = fastppo.gae(*arrays, gamma=0.99, lam=0.95, backend=backend, out=out)
    assert adv is out[0] and ret is out[1]
    ref_adv, ref_ret = gae_reference(*arrays, gamma=0.99, lam=0.95)
    torch.testing.assert_close(adv, ref_adv)
    torch.testing.assert_close(ret, ref_ret)
    np_out = (np.empty((16, 4), np.float32), np.empty((16, 4), np.float32))
    got = fastppo.gae(*(a.numpy() for a in arrays), gamma=0.99, lam=0.95, backend=backend, out=np_out)
    assert got[0] is np_out[0] and isinstance(got[0], np.ndarray)
    np.testing.assert_allclose(got[0], ref_adv.numpy(), rtol=1e-5, atol=1e-5)


@pytest.mark.parametrize("backend", CPU_BACKENDS)
def test_empty_rollout(backend):
    adv, ret = fastppo.gae(*rollout(0, 3), gamma=0.9, lam=0.9, backend=backend)
    assert adv.shape == (0, 3) and ret.shape == (0, 3)


def _bad_cases():
    good = rollout(6, 3)
    r, v, nv, te, tr = good
    def with_(i, x):
        args = list(good)
        args[i] = x
        return args
    return [
        ("shape", with_(1, v[:5]), {}, ValueError, "values must have the shape of rewards (6, 3), got (5, 3)"),
        ("ndim", [a.ravel() for a in good], {}, ValueError, "rewards must be a 2-D time-major (T, N) array"),
        ("mixed dtype", with_(2, nv.astype(np.float64)), {}, TypeError,
         "next_values must have the dtype of rewards (float32), got float64"),
        ("int rewards", with_(0, r.astype(np.int32)), {}, TypeError, "rewards must have dtype float32"),
        ("flag dtype", with_(4, tr.astype(np.float64)), {}, TypeError, "truncated must have the dtype of terminated"),
        ("not an array", with_(0, r.tolist()), {}, TypeError, "rewards must be a numpy array or a torch tensor"),
        ("values not an array", with_(1, 3.0), {}, TypeError, "values must be a numpy array or a torch tensor"),
        ("mixed kinds on devices", with_(1, torch.as_tensor(v, device="meta")), {}, (ValueError, TypeError),
         "values"),
        ("gamma", list(good), {"gamma": 1.5}, ValueError, "gamma must be in [0, 1], got 1.5"),
        ("lam nan", list(good), {"lam": float("nan")}, ValueError, "lam must be in [0, 1], got nan"),
        ("lam negative", list(good), {"lam": -0.1}, ValueError, "lam must be in [0, 1], got -0.1"),
        ("out shape", list(good), {"out": (np.empty((6, 4), np.float32), np.empty((6, 3), np.float32))},
         ValueError, "out[0] (advantages) must have the shape of rewards"),
        ("out read-only", list(good), {"out": (np.broadcast_to(np.float32(0), (6, 3)), np.empty((6, 3), np.float32))},
         ValueError, "out[0] (advantages) must be writeable"),
        ("out aliases input", list(good), {"out": (v, np.empty((6, 3), np.float32))},
         ValueError, "out[0] (advantages) must not overlap values"),
        ("out not a pair", list(good), {"out": np.empty((6, 3), np.float32)}, TypeError, "out must be a pair"),
        ("out aliases itself", list(good),
         {"out": (np.lib.stride_tricks.as_strided(np.zeros(8, np.float32), (6, 3), (4, 4), writeable=True),
                  np.empty((6, 3), np.float32))},
         ValueError, "out[0] (advantages) must not have overlapping elements"),
    ]


@pytest.mark.parametrize("backend", CPU_BACKENDS)
@pytest.mark.parametrize("case", _bad_cases(), ids=[c[0] for c in _bad_cases()])
def test_bad_input(backend, case):
    _, args, kwargs, exc, message = case
    kwargs = {"gamma": 0.99, "lam": 0.95, **kwargs}
    with pytest.raises(exc, match=_literal(message)):
        fastppo.gae(*args, backend=backend, **kwargs)


def _literal(message):
    import re

    return re.escape(message)


def test_unknown_backend():
    with pytest.raises(ValueError, match="backend must be one of 'auto', 'torch'"):
        fastppo.gae(*rollout(2, 2), gamma=0.9, lam=0.9, backend="fortran")


@pytest.mark.skipif(fastppo.backends()["cuda"].available, reason="this machine has a usable GPU")
def test_forced_unavailable_backend_says_why():
    with pytest.raises(fastppo.BackendUnavailableError, match="backend 'cuda' is unavailable: .+"):
        fastppo.gae(*rollout(2, 2), gamma=0.9, lam=0.9, backend="cuda")


def test_env_var_forces_backend(tmp_path):
    code = ("import numpy as np, fastppo, fastppo._backend as b\n"
            "a = np.zeros((2, 2), np.float32); f = np.zeros((2, 2), bool)\n"
            "fastppo.gae(a, a, a, f, f, gamma=0.9, lam=0.9)\n"
            "print(b.resolve('auto', False))\n")
    env = {**os.environ, "FASTPPO_BACKEND": "torch"}
    # cwd elsewhere: `python -c` puts the cwd first on sys.path, and the source tree has no build
    out = subprocess.run([sys.executable, "-c", code], env=env, capture_output=True, text=True, check=True,
                         cwd=tmp_path)
    assert out.stdout.strip() == "torch"
    env["FASTPPO_BACKEND"] = "bogus"
    bad = subprocess.run([sys.executable, "-c", code], env=env, capture_output=True, text=True, cwd=tmp_path)
    assert bad.returncode != 0 and "FASTPPO_BACKEND must be one of" in bad.stderr


def test_import_without_extension_falls_back(tmp_path):
    """A checkout without the compiled extension still imports and computes GAE (numba or torch)."""
    code = ("import sys; sys.modules['fastppo._core'] = None\n"
            "import numpy as np, fastppo\n"
            "s = fastppo.backends(); assert not s['cpp'].available and 'fastppo._core' in s['cpp'].detail\n"
            "assert not s['cuda'].available\n"
            "a = np.ones((3, 2), np.float32); f = np.zeros((3, 2), bool)\n"
            "adv, ret = fastppo.gae(a, a * 0, a * 0, f, f, gamma=0.5, lam=1.0)\n"
            "print(adv[:, 0].tolist())\n")
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True, cwd=tmp_path)
    assert out.stdout.strip() == "[1.75, 1.5, 1.0]"


@requires_cuda
@pytest.mark.parametrize("shape", [(1, 1), (37, 5), (128, 4096), (2048, 8), (1000, 600)])
@pytest.mark.parametrize("dtype", [torch.float32, torch.float64])
def test_cuda_matches_reference(shape, dtype):
    arrays = [torch.as_tensor(a) for a in rollout(*shape, dtype=np.float64, p_term=0.01, p_trunc=0.01, seed=8)]
    arrays = [a.to(dtype) if a.is_floating_point() else a for a in arrays]
    adv, ret = fastppo.gae(*(a.cuda() for a in arrays), gamma=0.99, lam=0.95, backend="cuda")
    ref_adv, ref_ret = gae_reference(*arrays, gamma=0.99, lam=0.95)
    tol = dict(rtol=1e-5, atol=1e-4) if dtype == torch.float32 else dict(rtol=1e-11, atol=1e-11)
    torch.testing.assert_close(adv.cpu(), ref_adv, **tol)
    torch.testing.assert_close(ret.cpu(), ref_ret, **tol)


def assert_close_to_reference(adv, ret, arrays):
    """GPU float32 results against the reference on the CPU arrays (gamma 0.99, lambda 0.95)."""
    ref_adv, ref_ret = gae_reference(*arrays, gamma=0.99, lam=0.95)
    torch.testing.assert_close(adv.cpu(), ref_adv, rtol=1e-5, atol=1e-4)
    torch.testing.assert_close(ret.cpu(), ref_ret, rtol=1e-5, atol=1e-4)


@pytest.mark.skipif(not fastppo.backends()["cpp"].available, reason="native extension missing")
def test_dlpack_stream_for_the_default_cuda_stream():
    """torch reports CUDA's legacy default stream as 0, which DLPack reserves (torch's __dlpack__ refuses
    it): the binding must ask a CUDA producer for stream 1 instead. Checked without a GPU: a producer
    that says it is on CUDA, records the stream it is asked for, and hands over host memory."""

    class Producer:
        def __init__(self, array):
            self.array, self.streams = array, []

        def __dlpack_device__(self):
            return (2, 0)  # kDLCUDA, device 0

        def __dlpack__(self, stream=None):
            self.streams.append(stream)
            return self.array.__dlpack__()

    r, v, nv, te, tr = rollout(4, 2)
    rewards, adv, ret = Producer(r), np.empty_like(r), np.empty_like(r)
    fastppo._backend._core.gae(rewards, v, nv, te, tr, adv, ret, 0.9, 0.9, 0)
    assert rewards.streams == [1]
    np.testing.assert_allclose(adv, reference(r, v, nv, te, tr, 0.9, 0.9)[0], **TOL[np.float32])


@requires_cuda
def test_cuda_on_a_side_stream():
    # not torch's default stream: DLPack exports sync to it (torch's ExternalStream path) and the kernel
    # runs on it
    arrays = [torch.as_tensor(a) for a in rollout(300, 6, p_term=0.02, p_trunc=0.02, seed=4)]
    side = torch.cuda.Stream()
    with torch.cuda.stream(side):
        adv, ret = fastppo.gae(*(a.cuda() for a in arrays), gamma=0.99, lam=0.95, backend="cuda")
    side.synchronize()
    assert_close_to_reference(adv, ret, arrays)


@requires_two_gpus
def test_cuda_binding_launches_on_the_arrays_device():
    """The binding's own device guard, for DLPack producers that do not make their device current for
    the call (the Python wrappers do): cuda:1 arrays handed to the binding with cuda:0 current."""

    class ExportsOnItsDevice:  # switches to its tensor's device only for the export itself
        def __init__(self, t):
            self.t = t

        def __dlpack_device__(self):
            return self.t.__dlpack_device__()

        def __dlpack__(self, stream=None):
            with torch.cuda.device(self.t.device):
                return self.t.__dlpack__(stream=stream)

    arrays = [torch.as_tensor(a) for a in rollout(64, 6, seed=5)]
    on1 = [a.to("cuda:1") for a in arrays]
    adv, ret = torch.empty_like(on1[0]), torch.empty_like(on1[0])
    assert torch.cuda.current_device() == 0
    fastppo._backend._core.gae(*map(ExportsOnItsDevice, (*on1, adv, ret)), 0.99, 0.95,
                               torch.cuda.current_stream("cuda:1").cuda_stream)
    torch.cuda.synchronize("cuda:1")
    assert_close_to_reference(adv, ret, arrays)


@requires_two_gpus
def test_cuda_second_device():
    """Arrays on cuda:1 while cuda:0 is the current device: the kernel runs on the arrays' device."""
    assert torch.cuda.current_device() == 0
    arrays = [torch.as_tensor(a) for a in rollout(300, 6, p_term=0.02, p_trunc=0.02, seed=3)]
    adv, ret = fastppo.gae(*(a.to("cuda:1") for a in arrays), gamma=0.99, lam=0.95, backend="cuda")
    assert adv.device == ret.device == torch.device("cuda:1")
    assert_close_to_reference(adv, ret, arrays)


@requires_cuda
def test_cuda_rejects_mixed_devices():
    r, v, nv, te, tr = (torch.as_tensor(a) for a in rollout(4, 2))
    with pytest.raises(ValueError, match=r"values must be on the device of rewards \(cuda:0\), got cpu"):
        fastppo.gae(r.cuda(), v, nv.cuda(), te.cuda(), tr.cuda(), gamma=0.9, lam=0.9)
