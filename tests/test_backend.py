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
