"""The `fastppo` command.

    fastppo train ENV_ID   train with the env's preset, save the model and logs, evaluate it
    fastppo eval PATH      evaluate a saved model
    fastppo plot RUN_DIR   learning curve (PNG) from a run's progress.csv
    fastppo info           backends on this machine, and a GAE self-check of each against the reference
"""

from __future__ import annotations

import argparse
import json
import os
import sys
import time


def _parse_value(text: str):
    """A --set value: JSON if it parses (numbers, booleans, lists, null), else the plain string."""
    try:
        return json.loads(text)
    except json.JSONDecodeError:
        return text


def _read_config(path: str) -> dict:
    with open(path, "rb") as f:
        data = f.read()
    if path.endswith(".toml"):
        import tomllib

        return tomllib.loads(data.decode())
    try:
        return json.loads(data)
    except json.JSONDecodeError as exc:
        raise SystemExit(f"fastppo: --config {path}: not valid JSON ({exc}); use .json or .toml") from None


def _train(args: argparse.Namespace) -> int:
    import torch

    import fastppo
    from fastppo.algos import distributed
    from fastppo.algos.interrupt import TrainingInterrupted

    cls = fastppo.presets.algorithm_class(args.algo)
    fields = cls.config_class.field_names()
    kwargs = fastppo.presets.get(args.env_id, args.algo)
    if args.config:
        kwargs.update(_read_config(args.config))
    for item in args.set:
        key, sep, value = item.partition("=")
        if not sep:
            raise SystemExit(f"fastppo: --set expects key=value, got {item!r}")
        if key not in fields:
            raise SystemExit(f"fastppo: --set {key}: {args.algo} has no hyperparameter {key!r}; it has "
                             f"{', '.join(fields)}")
        kwargs[key] = _parse_value(value)
    if args.num_envs is not None:
        kwargs["num_envs"] = args.num_envs
    for key in ("seed", "device"):
        if getattr(args, key) is not None:
            kwargs[key] = getattr(args, key)
    try:
        config = cls.config_class.from_kwargs(kwargs)
    except (TypeError, ValueError) as exc:
        named = [name for name in fields if str(exc).startswith(name + " ")]
        hint = f"\n  {named[0]}: {cls.config_class.help(named[0])}" if named else ""
        raise SystemExit(f"fastppo: {exc}{hint}") from None
    total = args.total_timesteps or fastppo.presets.total_timesteps(args.env_id, args.algo)
    run_dir = args.run_dir or os.path.join("runs", f"{args.env_id.replace('/', '-')}-{args.algo}-"
                                                           f"{time.strftime('%Y%m%d-%H%M%S')}")
    # Under torchrun every rank runs this: they share rank 0's run directory, and rank 0 alone writes and
    # reports (the others save their own part of the checkpoint beside rank 0's file).
    reducer = distributed.setup(distributed.local_device(torch.device("cpu" if config.device == "auto"
                                                                      else config.device)))
    main = reducer is None or reducer.rank == 0
    if reducer is not None:
        run_dir = reducer.gather_objects(run_dir)[0]
    if main:
        os.makedirs(run_dir, exist_ok=True)
        with open(os.path.join(run_dir, "config.json"), "w") as f:
            json.dump({"env_id": args.env_id, "algo": args.algo, "total_timesteps": total, "kwargs": kwargs,
                       "processes": 1 if reducer is None else reducer.world_size}, f, indent=2, default=str)

    start = time.perf_counter()
    model = cls("auto", args.env_id, config=config, log_dir=run_dir)
    model_path = os.path.join(run_dir, "model.pt")
    try:
        model.learn(total, progress_bar=not args.no_progress)
    except TrainingInterrupted:
        model.save(model_path)  # learn() stopped between two iterations: the model is consistent
        model.close()
        if main:
            sys.stderr.write(f"fastppo: training interrupted at timestep {model.num_timesteps:,}; model saved to "
                             f"{model_path}, logs in {run_dir} (resume: fastppo.load({model_path!r}).learn("
                             f"{total - model.num_timesteps}, reset_num_timesteps=False))\n")
        return 130
    train_s = time.perf_counter() - start
    model.save(model_path)
    if not main:
        model.close()
        return 0
    mean, std = fastppo.evaluate_policy(model, args.env_id, args.eval_episodes, deterministic=True, seed=10_000)
    model.close()
    wall = time.perf_counter() - start
    summary = {"env_id": args.env_id, "algo": args.algo, "mean_return": mean, "std_return": std,
               "timesteps": model.num_timesteps, "train_s": round(train_s, 3), "wall_s": round(wall, 3),
               "model_path": model_path}
    print(f"{args.env_id} ({args.algo}): mean return {mean:.1f} +/- {std:.1f} over {args.eval_episodes} episodes "
          f"after {model.num_timesteps:,} steps in {train_s:.1f} s; model saved to {model_path}")
    if args.json:
        print(json.dumps(summary))
    return 0


def _eval(args: argparse.Namespace) -> int:
    import fastppo

    try:
        model = fastppo.load(args.path, env=args.env, trust_pickle=args.trust_pickle)
    except ValueError as exc:
        raise SystemExit(f"fastppo eval: {exc}") from None
    env = args.env or model.env_id
    mean, std = fastppo.evaluate_policy(model, env, args.episodes, deterministic=not args.stochastic, seed=args.seed)
    model.close()
    print(f"{env}: mean return {mean:.1f} +/- {std:.1f} over {args.episodes} episodes")
    if args.json:
        print(json.dumps({"env_id": env, "mean_return": mean, "std_return": std, "episodes": args.episodes}))
    return 0


def _plot(args: argparse.Namespace) -> int:
    import csv

    try:
        import matplotlib

        matplotlib.use("Agg")
        import matplotlib.pyplot as plt
    except ImportError:
        raise SystemExit("fastppo plot needs matplotlib: pip install 'fastppo[plot]'") from None
    path = os.path.join(args.run_dir, "progress.csv")
    if not os.path.exists(path):
        raise SystemExit(f"fastppo plot: {path} does not exist (is {args.run_dir!r} a run directory?)")
    with open(path) as f:
        rows = [r for r in csv.DictReader(f) if r.get("rollout/ep_rew_mean") not in (None, "", "nan")]
    if not rows:
        raise SystemExit(f"fastppo plot: {path} has no finished episodes yet")
    steps = [int(float(r["time/total_timesteps"])) for r in rows]
    returns = [float(r["rollout/ep_rew_mean"]) for r in rows]
    fig, ax = plt.subplots(figsize=(6, 4))
    ax.plot(steps, returns)
    ax.set_xlabel("timesteps")
    ax.set_ylabel("episode return (mean of last 100)")
    ax.set_title(os.path.basename(os.path.normpath(args.run_dir)))
    ax.grid(alpha=0.3)
    out = args.out or os.path.join(args.run_dir, "learning_curve.png")
    fig.tight_layout()
    fig.savefig(out, dpi=100)
    print(out)
    return 0


def _info(args: argparse.Namespace) -> int:
    import numpy as np
    import torch

    import fastppo
    from fastppo.ops import gae_reference

    print(f"fastppo {fastppo.__version__}  torch {torch.__version__}  native module "
          f"{fastppo._backend.native_origin()}  native threads {fastppo.get_num_threads()}")
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
    from fastppo import presets

    parser = argparse.ArgumentParser(prog="fastppo", description=__doc__.split("\n")[0])
    sub = parser.add_subparsers(dest="command", required=True)

    train = sub.add_parser("train", help="train a policy with the env's preset")
    train.add_argument("env_id", help="a built-in env id (CartPole-v1, ...), a MuJoCo v5 id (HalfCheetah-v5, ...; "
                                      "the mujoco extra) or any gymnasium id")
    train.add_argument("--algo", choices=presets.ALGOS, default="ppo",
                       help="ppo (clipped), ppo-kl (adaptive KL penalty), trpo, npg (TRPO without line search)")
    train.add_argument("--total-timesteps", type=int, help="training budget (default: the preset's)")
    train.add_argument("--num-envs", type=int, help="parallel envs (default: the preset's)")
    train.add_argument("--seed", type=int, default=0)
    train.add_argument("--device", help="cpu (default) or cuda")
    train.add_argument("--config", help="JSON or TOML file of keyword arguments for the algorithm")
    train.add_argument("--set", action="append", default=[], metavar="KEY=VALUE",
                       help="override one keyword argument (value parsed as JSON); repeatable")
    train.add_argument("--run-dir", help="where the model and logs go (default: runs/ENV-ALGO-TIME)")
    train.add_argument("--eval-episodes", type=int, default=10)
    train.add_argument("--no-progress", action="store_true", help="no progress bar")
    train.add_argument("--json", action="store_true", help="end with one line of JSON: the results")
    train.set_defaults(run=_train)

    ev = sub.add_parser("eval", help="evaluate a saved model")
    ev.add_argument("path", help="a model.pt written by fastppo train or model.save")
    ev.add_argument("--env", help="env id (default: the one it was trained on)")
    ev.add_argument("--episodes", type=int, default=10)
    ev.add_argument("--stochastic", action="store_true", help="sample actions instead of the mode")
    ev.add_argument("--seed", type=int, default=0)
    ev.add_argument("--json", action="store_true")
    ev.add_argument("--trust-pickle", action="store_true",
                    help="also open fastppo 0.1's pickle checkpoints, which can run code: only files you trust")
    ev.set_defaults(run=_eval)

    plot = sub.add_parser("plot", help="learning curve PNG from a run directory")
    plot.add_argument("run_dir")
    plot.add_argument("--out", help="PNG path (default: RUN_DIR/learning_curve.png)")
    plot.set_defaults(run=_plot)

    info = sub.add_parser("info", help="backends on this machine and a GAE self-check")
    info.add_argument("--shape", type=int, nargs=2, default=(1024, 1024), metavar=("T", "N"),
                      help="rollout shape for the self-check (default: 1024 1024)")
    info.set_defaults(run=_info)
    args = parser.parse_args(argv)
    return args.run(args)


if __name__ == "__main__":
    sys.exit(main())
