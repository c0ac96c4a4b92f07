"""What each backend needs, whether this machine has it, and the one place an op's backend is chosen.

Backends, fastest first: ``cuda`` (CUDA tensors), ``cpp`` (the native CPU kernels), ``numba`` (CPU,
used when the extension is missing), ``torch`` (the pure-PyTorch reference: the spec and the last
fallback, on any device). ``FASTPPO_BACKEND`` (read when fastppo is imported) forces one for every op
whose ``backend`` is "auto".
"""

from __future__ import annotations

import contextlib
import functools
import importlib
import os
from typing import NamedTuple

BACKENDS = ("torch", "numba", "cpp", "cuda")

# CUDA plugins, newest CUDA major first: distribution fastppo-cudaNN, import fastppo_cudaNN, each holding
# a build of this package's native module with the CUDA kernels (docs/release.md). Installed with
# `pip install 'fastppo[cudaNN]'`; several may sit side by side (distinct import names).
CUDA_PLUGINS = (13, 12)
CUDA_HINT = "pip install 'fastppo[cuda12]' (or [cuda13]), or build fastppo from source with nvcc"


def _load_core():
    """(native module, why CUDA plugins were passed over): fastppo._core when it has CUDA kernels (a build
    from source with nvcc) or no usable plugin is installed, else the plugin the driver supports."""
    try:
        from fastppo import _core as core
    except ImportError as exc:  # a checkout without a compiler, or a broken build
        return None, [f"the compiled extension fastppo._core is not importable ({exc}); "
                      "install fastppo from source on a machine with a C++17 compiler"]
    return _pick_core(core, importlib.import_module)


def _pick_core(core, import_module):
    """_load_core's choice given fastppo._core and an importer (tests pass a fake one)."""
    if core.with_cuda:
        return core, []
    from fastppo._version import __version__

    plugins, passed_over = [], []
    for major in CUDA_PLUGINS:
        name = f"fastppo_cuda{major}"
        try:
            plugin = import_module(f"{name}._core")
        except ModuleNotFoundError as exc:
            if exc.name not in (name, f"{name}._core"):
                passed_over.append(f"{name} is installed but not importable ({exc})")
            continue
        except ImportError as exc:
            passed_over.append(f"{name} is installed but not importable ({exc})")
            continue
        if plugin.__version__ != __version__:
            passed_over.append(f"fastppo-cuda{major} {plugin.__version__} does not match fastppo {__version__} "
                               f"(pip install 'fastppo[cuda{major}]=={__version__}')")
            continue
        plugins.append(plugin)
    if len(plugins) > 1:  # the newest CUDA major the driver runs; the driver is asked only in this case
        plugins.sort(key=lambda p: not _driver_runs(*p.cuda_versions()))
    return (plugins[0] if plugins else core), passed_over


def _driver_runs(driver: int, runtime: int) -> bool:
    """Whether a driver supporting CUDA ``driver`` runs kernels built with CUDA ``runtime`` (both as
    1000 * major + 10 * minor): any driver of the same major or newer (CUDA's minor-version compatibility)."""
    return driver // 1000 >= runtime // 1000


def _version_str(v: int) -> str:
    return f"{v // 1000}.{v % 1000 // 10}"


def cuda_unavailable(driver: int, runtime: int, device_count: int, why: str, origin: str) -> str | None:
    """Why CUDA kernels built with CUDA ``runtime`` (from ``origin``) cannot run, given the driver's CUDA
    version (0: no driver) and the runtime's device count and error; None if they can."""
    if driver == 0:
        return f"no NVIDIA driver was found (libcuda.so.1 is not loadable), which {origin} needs"
    if not _driver_runs(driver, runtime):
        older = driver // 1000
        remedy = f"pip install 'fastppo[cuda{older}]'" if older in CUDA_PLUGINS else "update the driver"
        return (f"the NVIDIA driver supports CUDA {_version_str(driver)}, but {origin} was built with CUDA "
                f"{_version_str(runtime)} and needs a driver for CUDA {runtime // 1000}.0 or newer ({remedy})")
    if device_count == 0:
        return f"no CUDA device is usable by {origin} ({why})"
    return None


_core, _PASSED_OVER = _load_core()
_CORE_MISSING = _PASSED_OVER[0] if _core is None else None


def native_origin() -> str:
    """Where the native module comes from: "fastppo._core" or a CUDA plugin's "fastppo_cuda12._core"."""
    return _core.__name__ if _core else "none"


class BackendUnavailableError(RuntimeError):
    """A backend was asked for explicitly but cannot run here; the message says why."""


class BackendStatus(NamedTuple):
    available: bool
    detail: str  # what it is when available, why not when unavailable


@functools.cache
def _unavailable(name: str) -> str | None:
    """Why backend `name` cannot run on this machine, or None if it can."""
    if name == "torch":
        return None
    if name == "numba":
        try:
            import numba  # noqa: F401  (imported here, not at fastppo import: it takes a while)
        except Exception as exc:  # numba raises ImportError, and others on a numpy mismatch
            return f"numba is not importable ({exc})"
        return None
    if name == "mujoco":  # an env engine, not an op backend: gymnasium's MuJoCo suite on mujoco.batch
        try:
            import mujoco.batch  # noqa: F401  (mujoco >= 4.0)
        except ImportError as exc:
            return f"{exc} (pip install 'fastppo[mujoco]' for mujoco >= 4.0; the MuJoCo ids run on gymnasium's envs)"
        return None
    if name == "atari":  # an env engine too: Atari on ale-py's native vector env
        try:
            import ale_py.vector_env  # noqa: F401  (ale-py >= 0.11)
        except ImportError as exc:
            return (f"{exc} (pip install 'fastppo[atari]' for ale-py >= 0.11; with an older ale-py the Atari ids run "
                    f"on gymnasium's preprocessing wrappers, one Python env at a time)")
        return None
    if _core is None:
        return _CORE_MISSING
    if name == "cpp":
        return None
    if not _core.with_cuda:
        return "; ".join([f"fastppo._core has no CUDA kernels: {CUDA_HINT}", *_PASSED_OVER])
    why = cuda_unavailable(*_core.cuda_versions(), *_core.cuda_device_count(), origin=_core.__name__)
    if why is not None:
        return why
    import torch

    if not torch.cuda.is_available():
        return "no CUDA device is usable by torch (torch.cuda.is_available() is False)"
    return None


def num_threads() -> int:
    """Threads the native CPU kernels use (1 when the extension is missing): ``fastppo.get_num_threads``."""
    return _core.num_threads() if _core else 1


def backends() -> dict[str, BackendStatus]:
    """Every backend with whether it can run on this machine and, if it cannot, why; and the same for the
    env engines ``mujoco`` (:mod:`fastppo.envs.mujoco`) and ``atari`` (:mod:`fastppo.envs.atari`).

    >>> fastppo.backends()["cpp"]
    BackendStatus(available=True, detail='native C++ kernels, 2 threads')
    """
    details = {
        "torch": "pure-PyTorch reference (any device)",
        "numba": "Numba-compiled CPU loops",
        "cpp": f"native C++ kernels, {_core.num_threads() if _core else 0} threads",
        "cuda": "native CUDA kernels",
        "mujoco": "mujoco.batch steps gymnasium's MuJoCo v5 envs natively",
        "atari": "ale-py's native vector env steps the Atari ids",
    }
    status = {}
    for name in (*BACKENDS, "mujoco", "atari"):
        why = _unavailable(name)
        status[name] = BackendStatus(why is None, details[name] if why is None else why)
    if status["cuda"].available:
        built_with = _version_str(_core.cuda_versions()[1])
        status["cuda"] = BackendStatus(True, f"native CUDA kernels ({native_origin()}, built with CUDA {built_with})")
    return status


def _chosen(requested: str, forced: str | None) -> str:
    """``requested``, or ``forced`` (FASTPPO_BACKEND) when that is "auto": "auto" or a name in BACKENDS."""
    choice = forced if requested == "auto" and forced else requested
    if choice not in ("auto", *BACKENDS):
        source = "FASTPPO_BACKEND" if choice is forced else "backend"
        raise ValueError(f"{source} must be one of 'auto', {', '.join(map(repr, BACKENDS))}; got {choice!r}")
    return choice


@functools.lru_cache(maxsize=64)
def _resolve(requested: str, forced: str | None, on_cuda: bool) -> str:
    choice = _chosen(requested, forced)
    if choice == "auto":
        order = ("cuda", "torch") if on_cuda else ("cpp", "numba", "torch")
        return next(b for b in order if _unavailable(b) is None)
    why = _unavailable(choice)
    if why is not None:
        raise BackendUnavailableError(f"backend {choice!r} is unavailable: {why}")
    if on_cuda and choice in ("cpp", "numba"):
        raise ValueError(f"backend {choice!r} runs on CPU arrays, but the inputs are CUDA tensors")
    if not on_cuda and choice == "cuda":
        raise ValueError("backend 'cuda' runs on CUDA tensors, but the inputs are on the CPU")
    return choice


# Read once, at import: looking it up per call would cost more than a small kernel.
_FORCED = os.environ.get("FASTPPO_BACKEND") or None


def resolve(backend: str, on_cuda: bool) -> str:
    """The backend an op runs on: `backend` if forced, else FASTPPO_BACKEND, else the fastest here."""
    return _resolve(backend, _FORCED, on_cuda)


def requested(backend: str) -> str:
    """The backend a trainer was asked for: ``backend``, or ``FASTPPO_BACKEND`` when that is "auto";
    "auto" or a name from BACKENDS (anything else is a ValueError)."""
    return _chosen(backend, _FORCED)


def native_trainer(backend: str, policy_native_ok: bool) -> bool:
    """Whether a trainer runs its rollout and update natively (csrc/train/) rather than on the torch path:
    the one place that is decided. ``backend`` is :func:`requested`'s answer; ``policy_native_ok`` whether
    the native kernels implement the policy (the built-in MLP on the CPU, ``ActorCritic.native_ok``).
    "torch" and "numba" keep the torch path (the native trainer is C++ only)."""
    return backend in ("auto", "cpp") and policy_native_ok and _unavailable("cpp") is None


def on_device(device):
    """A context in which ``device`` (a CUDA device, or "cpu": nothing to do) is the current CUDA device,
    around a native call on arrays there: torch exports a tensor through DLPack only from the current
    device, and kernels launch on it."""
    if str(device) == "cpu":
        return contextlib.nullcontext()
    import torch

    return torch.cuda.device(device)
