"""Digests of the parameters (and optimiser state) after short seeded runs, for checking that a change
of structure changes no numbers.

    python tools/param_digests.py > before.json     # on the old commit
    python tools/param_digests.py --compare before.json   # on the new one: lists every run that differs

tools/param_digests.json holds the digests of the current main, made on 2026-12-03 on one of the project's
x86-64 machines with AVX-512 (torch 2.13.0 CPU; before that date the record was from AVX2 machines, and
some runs' digests differ between the two); compare against it before and after a change of structure.

Every preset env x algorithm (ppo, ppo-kl, trpo, npg) x path (native where it applies, "torch"), plus a
few options the presets do not reach (value clipping, target_kl, gSDE, a ReLU MLP), each two iterations
from seed 0. Digests are of float bits, so they are only comparable on one machine and torch build.
"""

from __future__ import annotations

import argparse
import hashlib
import json
import sys

from fastppo import presets

CLASSIC = ("CartPole-v1", "Acrobot-v1", "MountainCar-v0", "MountainCarContinuous-v0", "Pendulum-v1")
EXTRA = {  # (env, algo, extra kwargs)
    "vf-clip": ("CartPole-v1", "ppo", dict(clip_range_vf=0.2, ent_coef=0.01)),
    "target-kl": ("Pendulum-v1", "ppo", dict(target_kl=0.001)),
    "gsde": ("Pendulum-v1", "ppo", dict(use_sde=True, sde_sample_freq=4)),
    "relu": ("Acrobot-v1", "ppo", dict(policy_kwargs=dict(activation_fn="relu", net_arch=[32, 32]))),
    "no-adv-norm": ("MountainCarContinuous-v0", "trpo", dict(normalize_advantage=False)),
}


def digest(model) -> str:
    h = hashlib.sha256()
    for name, tensor in sorted(model.policy.state_dict().items()):
        h.update(name.encode())
        h.update(tensor.detach().cpu().contiguous().numpy().tobytes())
    return h.hexdigest()[:16]


def run(env_id: str, algo: str, backend: str, extra: dict) -> str:
    kwargs = {**presets.get(env_id, algo), **extra}
    model = presets.algorithm_class(algo)("MlpPolicy", env_id, seed=0, backend=backend, **kwargs)
    model.learn(2 * model.n_steps * model.num_envs, progress_bar=False)
    out = digest(model)
    model.close()
    return out


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--compare", help="a JSON file written by this script earlier")
    args = parser.parse_args()
    runs = {}
    for env_id in CLASSIC:
        for algo in presets.ALGOS:
            for backend in ("auto", "torch"):
                runs[f"{env_id}/{algo}/{backend}"] = (env_id, algo, backend, {})
    for name, (env_id, algo, extra) in EXTRA.items():
        for backend in ("auto", "torch"):
            runs[f"{name}/{env_id}/{algo}/{backend}"] = (env_id, algo, backend, extra)
    result = {key: run(*spec) for key, spec in runs.items()}
    if not args.compare:
        json.dump(result, sys.stdout, indent=1)
        print()
        return 0
    with open(args.compare) as f:
        before = json.load(f)
    differ = [k for k in result if before.get(k) != result[k]]
    for k in differ:
        print(f"DIFFERS {k}: {before.get(k)} -> {result[k]}")
    print(f"{len(result) - len(differ)} of {len(result)} runs bit-identical")
    return 1 if differ else 0


if __name__ == "__main__":
    sys.exit(main())
