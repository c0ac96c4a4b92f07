"""The `fastppo` command.

    fastppo info      backends on this machine, and a GAE self-check of each against the reference
"""

from __future__ import annotations

import argparse
import sys
import time


def _info(args: argparse.Namespace) -> int:
    import numpy as np
    import torch

    import fastppo
    from fastppo.ops import gae_reference

    print(f"fastppo {fastppo.__version__}  torch {torch.__version__}  native threads {fastppo.get_num_threads()}")
    status = fastppo.backends()
    for name, s in status.items():
        print(f"  {name:6s} {'yes' if s.available else 'no ':3s}  {s.detail}")

    T, N = args.shape
    rng = np.random.default_rng(0)
    r, v, nv = (rng.standard_normal((T, N)).astype(np.float32) for _ in range(3))
    te, tr = rng.random((T, N)) < 0.01, rng.random((T, N)) < 0.01
    ref_adv, _ = gae_reference(*map(torch.from_numpy, (r, v, nv, te, tr)), gamma=0.99, lam=0.95)
    print(f"GAE on a ({T}, {N}) float32 rollout, against the torch reference:")
    ok = True
    for name in (n for n in ("torch", "numba", "cpp") if status[n].available):
        fastppo.gae(r, v, nv, te, tr, gamma=0.99, lam=0.95, backend=name)  # compile / warm up
        start = time.perf_counter()
        adv, _ = fastppo.gae(r, v, nv, te, tr, gamma=0.99, lam=0.95, backend=name)
        ms = (time.perf_counter() - start) * 1e3
        err = float(np.max(np.abs(adv - ref_adv.numpy())))
        ok &= err < 1e-3
        print(f"  {name:6s} {ms:9.3f} ms  max |error| {err:.2e}")
    return 0 if ok else 1


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="fastppo", description=__doc__.split("\n")[0])
    sub = parser.add_subparsers(dest="command", required=True)
    info = sub.add_parser("info", help="backends on this machine and a GAE self-check")
    info.add_argument("--shape", type=int, nargs=2, default=(1024, 1024), metavar=("T", "N"),
                      help="rollout shape for the self-check (default: 1024 1024)")
    info.set_defaults(run=_info)
    args = parser.parse_args(argv)
    return args.run(args)


if __name__ == "__main__":
    sys.exit(main())
