"""Typed hyperparameters: one dataclass per algorithm, one docstring per field, validated in one place.

The field names are Stable-Baselines3's (``learning_rate``, ``n_steps``, ``clip_range``, ...), and they
keep those names from the public constructors through checkpoints, presets and the CLI's ``--set`` down
to the updaters, with SB3's meanings. Where a kernel takes another name or convention (the fused loss
op's ``clip_coef``, ``normalize_advantages``, its half-MSE value loss, and Adam's ``lr``), the
translation happens once, in :meth:`PPOConfig.loss_kwargs` (the table in docs/architecture.md);
``clip_range_vf`` (SB3's clipped prediction, not the op's max form ``vf_clip``) is applied by the
updaters to the values before the op.

``PPO(**kwargs)`` is ``PPO(config=PPOConfig(**kwargs))``: the constructors' keyword arguments are these
fields, with these defaults.
"""

from __future__ import annotations

import dataclasses
import inspect
import warnings
from dataclasses import dataclass, field
from typing import Any, Callable

import numpy as np
import torch

Schedule = Callable[[float], float]


def make_schedule(value: float | str | Schedule, name: str) -> Schedule:
    """A function of the remaining progress (1 -> 0): a constant, ``"lin_<v>"`` (v -> 0 linearly, as
    rl-zoo writes it) or a callable taken as is."""
    if callable(value):
        return value
    if isinstance(value, str) and value.startswith("lin_"):
        start = float(value[4:])
        return lambda progress: progress * start
    try:
        constant = float(value)
    except (TypeError, ValueError):
        raise ValueError(f"{name} must be a number, 'lin_<number>' or a callable, got {value!r}") from None
    return lambda progress: constant


def hp(default: Any, help: str) -> Any:
    """A hyperparameter field: its default and the one-line help that docs, errors and the CLI show."""
    return field(default=default, metadata={"help": help})


def with_config_signature(cls) -> None:
    """Shows ``cls``'s arguments in ``help()`` and ``inspect.signature`` as SB3's constructor has them:
    ``policy, env``, then ``cls.positional`` in SB3's order, then the other config fields keyword-only
    (the constructor takes them as ``*args, **hyperparameters``)."""
    P = inspect.Parameter
    defaults = {f.name: f.default for f in dataclasses.fields(cls.config_class)}
    init = inspect.signature(cls.__init__).parameters
    params = [init["self"], init["policy"], init["env"]]
    params += [P(name, P.POSITIONAL_OR_KEYWORD, default=defaults.get(name, True if name == "_init_setup_model" else None))
               for name in cls.positional]
    params += [P(name, P.KEYWORD_ONLY, default=default) for name, default in defaults.items() if name not in cls.positional]
    params.append(P("config", P.KEYWORD_ONLY, default=None))
    cls.__init__.__signature__ = inspect.Signature(params)


def check_int(value, name: str, minimum: int) -> None:
    if isinstance(value, bool) or not isinstance(value, (int, np.integer)) or value < minimum:
        raise ValueError(f"{name} must be an integer >= {minimum}, got {value!r}")


def _check_positive_or_none(value, name: str) -> None:
    if value is not None and not value > 0:
        raise ValueError(f"{name} must be > 0 (or None), got {value!r}")


@dataclass(kw_only=True)
class OnPolicyConfig:
    """What every on-policy algorithm here takes (rollout, advantages, envs, policy, run)."""

    learning_rate: float | str | Schedule = hp(3e-4, "Adam's step size: a number, 'lin_<v>' (annealed linearly "
                                                     "to 0) or a function of the remaining progress (1 -> 0)")
    n_steps: int = hp(2048, "vector steps per rollout; a rollout holds n_steps * num_envs samples")
    batch_size: int = hp(64, "minibatch size")
    gamma: float = hp(0.99, "discount factor, in [0, 1]")
    gae_lambda: float = hp(0.95, "GAE's lambda, in [0, 1]")
    normalize_advantage: bool = hp(True, "normalise the advantages (per minibatch for PPO, per rollout for TRPO)")
    use_sde: bool = hp(False, "generalised state-dependent exploration for Box actions (gSDE, as SB3's use_sde); "
                              "runs on the torch path")
    sde_sample_freq: int = hp(-1, "gSDE: new exploration noise every this many steps (<= 0: once per rollout)")
    num_envs: int = hp(1, "parallel envs when env is an id (an env instance brings its own count)")
    normalize_obs: bool = hp(False, "running-statistics observation normalisation (saved with the model)")
    normalize_reward: bool = hp(False, "divide rewards by the running std of the discounted return (as SB3's "
                                       "VecNormalize)")
    policy_kwargs: dict | None = hp(None, "the policy's options, as SB3's: net_arch (hidden sizes, or dict(pi=..., "
                                          "vf=...)), activation_fn (nn.Tanh, nn.ReLU, ... or 'tanh', 'relu', ...), "
                                          "ortho_init, log_std_init, features_extractor_class/_kwargs, "
                                          "share_features_extractor, optimizer_class/_kwargs")
    seed: int | None = hp(None, "seeds the weights, the sampling and the envs (same seed and config: same "
                                "numbers on CPU)")
    device: str = hp("auto", "where the policy and the rollout live: 'auto' (the CPU for MlpPolicy, where the native "
                              "trainer runs; else CUDA if there is a GPU), 'cpu', 'cuda', 'cuda:1', ... (CUDA "
                              "without a GPU: the CPU, with a warning, as SB3)")
    backend: str = hp("auto", "'auto' (FASTPPO_BACKEND, else the fastest here) or an op backend; 'torch' runs "
                              "every hot path, the rollout and the update on the torch reference")
    log_dir: str | None = hp(None, "write progress.csv here")
    tensorboard_log: str | None = hp(None, "write TensorBoard scalars here (needs tensorboard)")
    verbose: int = hp(0, "0: quiet; 1: print the device and SB3's metric table after each logged iteration")
    stats_window_size: int = hp(100, "episodes averaged in rollout/ep_rew_mean and rollout/ep_len_mean")
    torch_threads: int | None = hp(None, "torch's CPU threads while learn() runs (default 1 on the CPU, "
                                         "where MLPs run fastest single-threaded; torch's own count for "
                                         "image and Dict observations, or its share per rank in a data-parallel run)")
    torch_compile: bool | dict = hp(False, "compile the policy's forward with torch.compile: True, or a dict of "
                                           "torch.compile's options (e.g. {'mode': 'max-autotune'}); runs the "
                                           "torch path, as the native CPU trainer has no torch forward to compile")
    cuda_graphs: bool = hp(True, "on a GPU, replay the rollout's policy step and the update's minibatch steps "
                                 "(PPO's, TRPO's critic's) from CUDA graphs where they apply (fastppo.algos.graphs "
                                 "says where); no effect on the CPU")

    def __post_init__(self) -> None:
        check_int(self.n_steps, "n_steps", 1)
        self.lr_schedule = make_schedule(self.learning_rate, "learning_rate")
        if not self.lr_schedule(1.0) > 0:
            raise ValueError(f"learning_rate must be > 0, got {self.lr_schedule(1.0)!r} at the start of training")
        if self.torch_threads is not None:
            check_int(self.torch_threads, "torch_threads", 1)
        if not (isinstance(self.torch_compile, bool)
                or isinstance(self.torch_compile, dict) and all(isinstance(k, str) for k in self.torch_compile)):
            raise ValueError(f"torch_compile must be True, False or a dict of torch.compile's keyword arguments, got "
                             f"{self.torch_compile!r}")
        if not isinstance(self.cuda_graphs, bool):
            raise ValueError(f"cuda_graphs must be True or False, got {self.cuda_graphs!r}")
        check_int(self.num_envs, "num_envs", 1)
        for name in ("gamma", "gae_lambda"):
            value = getattr(self, name)
            if not 0.0 <= value <= 1.0:
                raise ValueError(f"{name} must be in [0, 1], got {value!r}")
        check_int(self.sde_sample_freq, "sde_sample_freq", -1)
        check_int(self.batch_size, "batch_size", 1)
        check_int(self.verbose, "verbose", 0)
        check_int(self.stats_window_size, "stats_window_size", 1)
        if not (isinstance(self.device, torch.device) or self.device == "auto"):
            try:
                torch.device(self.device)
            except (RuntimeError, TypeError):
                raise ValueError(f"device must be 'auto', 'cpu', 'cuda', 'cuda:<index>' or a torch.device, got "
                                 f"{self.device!r}") from None

    def to_dict(self) -> dict[str, Any]:
        """The fields as given (what a checkpoint stores and the constructor takes back)."""
        return {f.name: getattr(self, f.name) for f in dataclasses.fields(self)}

    @classmethod
    def help(cls, name: str) -> str:
        """The field's one-line help (KeyError if there is no such field)."""
        return {f.name: f.metadata["help"] for f in dataclasses.fields(cls)}[name]

    @classmethod
    def field_names(cls) -> list[str]:
        return [f.name for f in dataclasses.fields(cls)]

    @classmethod
    def from_kwargs(cls, kwargs: dict[str, Any]):
        """``cls(**kwargs)``, with an unknown name reported as such (and the known ones listed)."""
        unknown = sorted(set(kwargs) - set(cls.field_names()))
        if unknown:
            raise TypeError(f"unknown hyperparameter(s) {', '.join(map(repr, unknown))} for {cls.__name__}; "
                            f"known: {', '.join(cls.field_names())}")
        return cls(**kwargs)


VARIANTS = ("clip", "kl")

VALUE_LOSS_SCALE = 2
"""SB3's value loss (the mean squared error) over fastppo.ppo_loss's (half of it): the op's ``vf_coef`` is
this times SB3's, and the value loss the update reports is this times the op's stat (exact: a power of two)."""


@dataclass(kw_only=True)
class PPOConfig(OnPolicyConfig):
    """PPO's hyperparameters (Schulman et al. 2017), with Stable-Baselines3's names and defaults."""

    n_epochs: int = hp(10, "passes over the rollout per iteration")
    clip_range: float | str | Schedule = hp(0.2, "the surrogate's epsilon, in (0, 1): a number, 'lin_<v>' or a "
                                                 "function of the remaining progress")
    clip_range_vf: float | str | Schedule | None = hp(
        None, "as SB3: the value prediction is clipped to this distance from the old value before the "
              "MSE (None: no clipping): a number, 'lin_<v>' or a function of the remaining progress")
    ent_coef: float = hp(0.0, "entropy bonus weight, >= 0")
    vf_coef: float = hp(0.5, "value-loss weight, >= 0; the value loss is the mean squared error (as SB3)")
    max_grad_norm: float | None = hp(0.5, "clip the global gradient norm to this (None: no clipping)")
    target_kl: float | None = hp(None, "stop the epoch loop once a minibatch's approx KL exceeds 1.5 x this "
                                       "(as SB3; None: never)")
    variant: str = hp("clip", "'clip' (the clipped surrogate) or 'kl' (the adaptive KL penalty: the loss adds "
                              "kl_coef * KL(old || new), kl_coef adapted once per iteration)")
    kl_target: float = hp(0.01, "the adaptive KL variant's d_targ")
    kl_coef: float = hp(1.0, "the adaptive KL variant's initial beta, >= 0")

    def __post_init__(self) -> None:
        if self.variant not in VARIANTS:
            raise ValueError(f"variant must be one of {VARIANTS}, got {self.variant!r}")
        check_int(self.n_epochs, "n_epochs", 1)
        for name in ("ent_coef", "vf_coef", "kl_coef"):
            value = getattr(self, name)
            if not value >= 0:
                raise ValueError(f"{name} must be >= 0, got {value!r}")
        for name in ("max_grad_norm", "target_kl", "kl_target"):
            _check_positive_or_none(getattr(self, name), name)
        self.clip_schedule = make_schedule(self.clip_range, "clip_range")
        if not 0 < self.clip_schedule(1.0) < 1:
            raise ValueError(f"clip_range must be in (0, 1), got {self.clip_schedule(1.0)!r} at the start of training")
        self.clip_vf_schedule = None
        if self.clip_range_vf is not None:
            self.clip_vf_schedule = make_schedule(self.clip_range_vf, "clip_range_vf")
            if not self.clip_vf_schedule(1.0) > 0:
                raise ValueError(f"clip_range_vf must be > 0 (or None), got {self.clip_vf_schedule(1.0)!r} at the "
                                 f"start of training")
        super().__post_init__()

    def loss_kwargs(self, clip_range: float, kl_coef: float, batch_size: int) -> dict[str, Any]:
        """The fused loss's keyword arguments (fastppo.ppo_loss, and the native update's config, which uses
        the op's names) for a minibatch of ``batch_size``: the one place SB3's names become the op's.
        ``kl_coef`` is the current beta; the loss adds the KL term only when given per-sample KLs (the
        "kl" variant). The op's ``vf_coef`` is SB3's times :data:`VALUE_LOSS_SCALE`. The op's own ``vf_clip``
        (the max form) is never used: the updaters clip the prediction as SB3 does (``clip_range_vf``) and
        give the op the clipped values."""
        return dict(clip_coef=clip_range, vf_coef=VALUE_LOSS_SCALE * self.vf_coef, ent_coef=self.ent_coef,
                    normalize_advantages=self.normalize_advantage and batch_size > 1,
                    kl_coef=kl_coef)


@dataclass(kw_only=True)
class TRPOConfig(OnPolicyConfig):
    """TRPO's (Schulman et al. 2015) and the natural policy gradient's hyperparameters, with sb3-contrib's
    names; ``learning_rate`` and ``batch_size`` are the critic's."""

    learning_rate: float | str | Schedule = hp(1e-3, "the critic's Adam step size: a number, 'lin_<v>' or a "
                                                     "function of the remaining progress")
    batch_size: int = hp(128, "the critic regression's minibatch size")
    target_kl: float = hp(0.01, "the trust region: a bound on the mean KL(old || new) per update, > 0")
    cg_max_steps: int = hp(15, "conjugate-gradient iterations at most")
    cg_damping: float = hp(0.1, "damping added to the Fisher matrix (F + damping * I), >= 0")
    line_search: bool = hp(True, "backtrack (TRPO) or take the scaled natural step (NPG; fastppo's own option)")
    line_search_max_iter: int = hp(10, "at most this many line-search steps")
    line_search_shrinking_factor: float = hp(0.8, "each line-search step this factor shorter, in (0, 1)")
    n_critic_updates: int = hp(10, "passes of critic regression per iteration")
    sub_sampling_factor: int = hp(1, "the policy step (its gradient, Fisher-vector products and line search) "
                                     "on every k-th sample of the shuffled rollout (as sb3-contrib; 1: all)")

    def __post_init__(self) -> None:
        if not self.target_kl > 0:
            raise ValueError(f"target_kl must be > 0, got {self.target_kl!r}")
        if self.torch_compile:  # torch's compiled backward frees its buffers: it cannot be differentiated again
            raise ValueError("torch_compile is not supported by TRPO: its Fisher-vector products differentiate the "
                             "policy twice (create_graph=True), which torch.compile's backward refuses; leave it out")
        check_int(self.cg_max_steps, "cg_max_steps", 1)
        if not self.cg_damping >= 0:
            raise ValueError(f"cg_damping must be >= 0, got {self.cg_damping!r}")
        check_int(self.line_search_max_iter, "line_search_max_iter", 1)
        if not 0 < self.line_search_shrinking_factor < 1:
            raise ValueError(f"line_search_shrinking_factor must be in (0, 1), got "
                             f"{self.line_search_shrinking_factor!r}")
        check_int(self.n_critic_updates, "n_critic_updates", 1)
        check_int(self.sub_sampling_factor, "sub_sampling_factor", 1)
        super().__post_init__()


def resolve_device(device: str | torch.device, policy) -> torch.device:
    """SB3's ``device`` values: "auto" is the CPU for the built-in MLP (where the native trainer runs, and
    where SB3 itself advises PPO's MLPs to run) and CUDA for other policies when there is a GPU; a CUDA
    device without a GPU falls back to the CPU with a warning, as SB3's."""
    if isinstance(device, str) and device == "auto":
        return torch.device("cuda" if policy != "MlpPolicy" and torch.cuda.is_available() else "cpu")
    device = torch.device(device)
    if device.type == "cuda" and not torch.cuda.is_available():
        warnings.warn(f"device {str(device)!r} was asked for, but CUDA is not available here: using the CPU",
                      stacklevel=3)
        return torch.device("cpu")
    return device
