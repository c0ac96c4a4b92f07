"""fastppo/_backend.py decides, once, what runs: an op's backend and whether a trainer runs natively.

FASTPPO_BACKEND is read at import, so the trainer checks run in subprocesses."""

import json
import os
import subprocess
import sys
import textwrap

import pytest

import fastppo
from fastppo import _backend

# A seeded short run with every native trainer entry point replaced by one that fails: prints whether the
# model chose the native path and a digest of its parameters.
_RUN = textwrap.dedent("""
    import hashlib, json, sys
    import fastppo
    from fastppo._backend import _core

    def refuse(*args, **kwargs):
        raise AssertionError("the native trainer was used")

    if _core is not None:
        for name in ("PolicyAct", "PpoUpdate", "CriticFit", "collect"):
            if hasattr(_core, name):
                setattr(_core, name, refuse)
    algo, backend = sys.argv[1], sys.argv[2]
    cls = fastppo.PPO if algo == "ppo" else fastppo.TRPO
    model = cls("MlpPolicy", "CartPole-v1", n_steps=64, num_envs=2, batch_size=64, seed=3, backend=backend)
    model.learn(256, progress_bar=False)
    h = hashlib.sha256()
    for name, t in sorted(model.policy.state_dict().items()):
        h.update(t.detach().numpy().tobytes())
    print(json.dumps({"native": model.native, "backend": model.backend, "digest": h.hexdigest(),
                      "extension": _core is not None}))
""")


def _run(algo: str, backend: str, forced: str | None, cwd) -> dict:
    """The run in a fresh interpreter, outside the source tree (whose fastppo has no compiled extension)."""
    env = {k: v for k, v in os.environ.items() if k != "FASTPPO_BACKEND"}
    if forced is not None:
        env["FASTPPO_BACKEND"] = forced
    out = subprocess.run([sys.executable, "-c", _RUN, algo, backend], env=env, capture_output=True, text=True,
                         timeout=300, cwd=cwd)
    assert out.returncode == 0, out.stderr
    result = json.loads(out.stdout.strip().splitlines()[-1])
    # the runs must have had the native trainer to avoid, or the test proves nothing
    assert result.pop("extension") == fastppo.backends()["cpp"].available
    return result


@pytest.mark.parametrize("algo", ["ppo", "trpo"])
def test_fastppo_backend_torch_equals_backend_torch_and_skips_the_native_trainer(algo, tmp_path):
    by_env = _run(algo, "auto", forced="torch", cwd=tmp_path)
    by_arg = _run(algo, "torch", forced=None, cwd=tmp_path)
    assert by_env == by_arg
    assert by_env["native"] is False and by_env["backend"] == "torch"


def test_requested_backend():
    assert _backend.requested("torch") == "torch"
    assert _backend.requested("cpp") == "cpp"
    with pytest.raises(ValueError, match="backend must be one of"):
        _backend.requested("fast")


@pytest.mark.skipif(not fastppo.backends()["cpp"].available, reason="needs the native extension")
def test_native_trainer_where_it_applies():
    assert _backend.native_trainer("auto", True) and _backend.native_trainer("cpp", True)
    assert not _backend.native_trainer("auto", False)
    for backend in ("torch", "numba"):
        assert not _backend.native_trainer(backend, True)
    model = fastppo.PPO("MlpPolicy", "CartPole-v1", n_steps=32, batch_size=32)
    assert model.native == (_backend.requested("auto") in ("auto", "cpp"))


# --- The native module's origin: fastppo._core, or a CUDA plugin (fastppo_cudaNN._core) ---

def _fake_module(name, with_cuda=True, version=fastppo.__version__, driver=13000, runtime=13000):
    from types import SimpleNamespace

    return SimpleNamespace(__name__=name, __version__=version, with_cuda=with_cuda,
                           cuda_versions=lambda: (driver, runtime))


def _importer(**plugins):
    """An import_module that finds the given plugins (major -> module or exception), and nothing else."""
    def import_module(name):
        major = int(name.removeprefix("fastppo_cuda").removesuffix("._core"))
        found = plugins.get(f"cuda{major}")
        if found is None:
            raise ModuleNotFoundError(f"No module named 'fastppo_cuda{major}'", name=f"fastppo_cuda{major}")
        if isinstance(found, Exception):
            raise found
        return found
    return import_module


CPU_CORE = _fake_module("fastppo._core", with_cuda=False)


def test_a_core_with_cuda_kernels_is_used_as_it_is():
    core = _fake_module("fastppo._core")
    assert _backend._pick_core(core, _importer(cuda13=_fake_module("fastppo_cuda13._core"))) == (core, [])


def test_a_cpu_core_takes_the_installed_plugin():
    plugin = _fake_module("fastppo_cuda12._core", runtime=12090)
    assert _backend._pick_core(CPU_CORE, _importer()) == (CPU_CORE, [])
    assert _backend._pick_core(CPU_CORE, _importer(cuda12=plugin)) == (plugin, [])


def test_with_two_plugins_the_newest_cuda_the_driver_runs_wins():
    new = _fake_module("fastppo_cuda13._core", driver=12040, runtime=13000)
    old = _fake_module("fastppo_cuda12._core", driver=12040, runtime=12090)
    assert _backend._pick_core(CPU_CORE, _importer(cuda13=new, cuda12=old))[0] is old
    new_driver = [_fake_module(f"fastppo_cuda{m}._core", driver=13010, runtime=m * 1000) for m in (13, 12)]
    assert _backend._pick_core(CPU_CORE, _importer(cuda13=new_driver[0], cuda12=new_driver[1]))[0] is new_driver[0]


def test_a_plugin_of_another_release_or_a_broken_one_is_passed_over_with_the_reason():
    stale = _fake_module("fastppo_cuda12._core", version="0.0.1")
    broken = ImportError("libstdc++.so.6: version `GLIBCXX_3.4.32' not found")
    core, why = _backend._pick_core(CPU_CORE, _importer(cuda12=stale, cuda13=broken))
    assert core is CPU_CORE
    assert any("fastppo-cuda12 0.0.1 does not match fastppo" in w and f"[cuda12]=={fastppo.__version__}" in w
               for w in why)
    assert any("fastppo_cuda13 is installed but not importable" in w and "GLIBCXX_3.4.32" in w for w in why)


@pytest.mark.parametrize("driver, runtime, count, expected", [
    (0, 13000, 0, "no NVIDIA driver was found (libcuda.so.1 is not loadable)"),
    (11040, 12090, 0, "supports CUDA 11.4, but fastppo_cuda12._core was built with CUDA 12.9 and needs a driver "
                      "for CUDA 12.0 or newer (update the driver)"),
    (12020, 13000, 0, "needs a driver for CUDA 13.0 or newer (pip install 'fastppo[cuda12]')"),
    (12020, 12090, 0, "no CUDA device is usable by fastppo_cuda12._core (no CUDA-capable device is detected)"),
    (12020, 12090, 1, None),  # minor-version compatibility: a 12.2 driver runs kernels built with 12.9
])
def test_why_cuda_kernels_cannot_run(driver, runtime, count, expected):
    why = _backend.cuda_unavailable(driver, runtime, count, "no CUDA-capable device is detected",
                                    origin=f"fastppo_cuda{runtime // 1000}._core")
    assert why == expected if expected is None else expected in why


def test_backends_say_why_cuda_is_unavailable_here():
    core, cuda = _backend._core, fastppo.backends()["cuda"]
    if not core.with_cuda:
        assert not cuda.available and "pip install 'fastppo[cuda12]'" in cuda.detail
    elif core.cuda_versions()[0] == 0:  # CUDA kernels on a machine without a driver (CI)
        assert not cuda.available and "no NVIDIA driver was found" in cuda.detail
    else:
        import torch

        assert cuda.available == (core.cuda_device_count()[0] > 0 and torch.cuda.is_available())
