"""Smoke-test an installed fastppo (a release wheel in a fresh environment): import, what the backends
say, a GAE call against the reference, a two-iteration training run, and ``fastppo info``.

    python tools/wheel_smoke.py                 # the CPU wheel alone
    python tools/wheel_smoke.py --cuda-plugin 13  # with fastppo-cuda13 installed beside it

Run it from outside the source tree, so that the installed package is the one imported.
"""

from __future__ import annotations

import argparse
import pathlib
import shutil
import subprocess
import sys
import tempfile


def check(ok: bool, what: str) -> None:
    print(f"  {'ok  ' if ok else 'FAIL'} {what}")
    if not ok:
        raise SystemExit(1)


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--cuda-plugin", type=int, metavar="MAJOR", help="the CUDA plugin expected to be in use")
    args = parser.parse_args(argv)

    import numpy as np
    import torch

    import fastppo
    from fastppo.ops import gae_reference

    origin = fastppo._backend.native_origin()
    print(f"fastppo {fastppo.__version__} from {pathlib.Path(fastppo.__file__).parent}, native module {origin}, "
          f"torch {torch.__version__}")
    repo = pathlib.Path(__file__).resolve().parents[1]
    check(pathlib.Path(fastppo.__file__).resolve().parent != repo / "fastppo", "fastppo is the installed package")
    status = fastppo.backends()
    check(status["cpp"].available, f"cpp: {status['cpp'].detail}")
    cuda = status["cuda"]
    if args.cuda_plugin is None:
        check(origin == "fastppo._core" and not cuda.available and "fastppo[cuda12]" in cuda.detail,
              f"cuda is unavailable and says how to add it: {cuda.detail}")
    else:
        check(origin == f"fastppo_cuda{args.cuda_plugin}._core", f"the CUDA plugin is in use ({origin})")
        driver, runtime = fastppo._backend._core.cuda_versions()
        if driver == 0:  # a GPU-less machine: the kernels load, and the reason they cannot run is named
            check(not cuda.available and "NVIDIA driver" in cuda.detail, f"cuda says why it cannot run: {cuda.detail}")
        else:
            print(f"  (driver for CUDA {driver}, kernels built with {runtime}) cuda: {cuda.detail}")

    rng = np.random.default_rng(0)
    r, v, nv = (rng.standard_normal((128, 16)).astype(np.float32) for _ in range(3))
    te, tr = rng.random((128, 16)) < 0.05, rng.random((128, 16)) < 0.02
    adv, ret = fastppo.gae(r, v, nv, te, tr, gamma=0.99, lam=0.95, backend="cpp")
    ref_adv, ref_ret = gae_reference(*map(torch.from_numpy, (r, v, nv, te, tr)), gamma=0.99, lam=0.95)
    check(np.allclose(adv, ref_adv.numpy(), atol=1e-5) and np.allclose(ret, ref_ret.numpy(), atol=1e-5),
          "native GAE matches the torch reference")

    model = fastppo.PPO("MlpPolicy", "CartPole-v1", num_envs=4, n_steps=32, batch_size=64, seed=0)
    model.learn(2 * 4 * 32)
    check(model.num_timesteps == 256 and model.native, "two native training iterations on CartPole-v1")

    exe = shutil.which("fastppo", path=str(pathlib.Path(sys.executable).parent))
    with tempfile.TemporaryDirectory() as cwd:
        info = subprocess.run([exe, "info", "--shape", "64", "16"], cwd=cwd, capture_output=True, text=True)
    print("\n".join("    " + line for line in info.stdout.splitlines()))
    check(info.returncode == 0, "fastppo info")
    return 0


if __name__ == "__main__":
    sys.exit(main())
