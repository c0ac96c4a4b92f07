"""The actor-critic network and the observation layout it reads."""

from __future__ import annotations

import inspect
import math
import warnings

import gymnasium as gym
import numpy as np
import torch
import torch.nn.functional as F
from torch import nn

from fastppo.algos.cnn import CombinedExtractor, image_encoder
from fastppo.algos.distributions import LOG_STD_MAX, LOG_STD_MIN, ActionSpec
from fastppo.algos.observations import ObsSpec, as_batch, is_image_space

# torch.nn's activations that construct without arguments, by lower-case name ("tanh", "relu", ...): what
# policy_kwargs' activation_fn accepts as a name and what a checkpoint stores in place of the class.
ACTIVATIONS = {name.lower(): getattr(nn, name) for name in nn.modules.activation.__all__
               if name not in ("Threshold", "MultiheadAttention")}
NATIVE_ACTIVATIONS = ("tanh", "relu")  # the ones csrc/train/mlp.h implements


def activation_name(activation_fn) -> str | None:
    """The lower-case name of one of torch.nn's activation classes (None for any other object)."""
    return next((name for name, cls in ACTIVATIONS.items() if cls is activation_fn), None)


def _mlp(sizes: list[int], activation: type[nn.Module]) -> list[nn.Module]:
    layers: list[nn.Module] = []
    for fan_in, fan_out in zip(sizes[:-1], sizes[1:]):
        layers += [nn.Linear(fan_in, fan_out), activation()]
    return layers


def _net_arch(net_arch) -> tuple[list[int], list[int]]:
    """SB3's net_arch -> the actor's and the critic's hidden sizes."""
    if net_arch is None:
        return [64, 64], [64, 64]
    if isinstance(net_arch, (list, tuple)) and net_arch and isinstance(net_arch[0], dict):
        warnings.warn("net_arch=[dict(pi=..., vf=...)] is SB3's form before 1.8; pass the dict directly "
                      "(net_arch=dict(pi=..., vf=...))", UserWarning, stacklevel=4)  # as SB3 warns
        net_arch = net_arch[0]
    if isinstance(net_arch, dict):
        unknown = sorted(set(net_arch) - {"pi", "vf"}, key=str)
        if unknown:
            raise ValueError(f"policy_kwargs['net_arch'] as a dict takes the keys 'pi' and 'vf', got {unknown}")
        archs = (net_arch.get("pi", []), net_arch.get("vf", []))  # a missing key is a linear head, as SB3
    elif isinstance(net_arch, (list, tuple)):
        archs = (net_arch, net_arch)
    else:
        raise TypeError(f"policy_kwargs['net_arch'] must be a list of hidden sizes or dict(pi=[...], vf=[...]), "
                        f"got {net_arch!r}")
    for arch in archs:
        if not isinstance(arch, (list, tuple)) or not all(
                isinstance(n, (int, np.integer)) and not isinstance(n, bool) and n >= 1 for n in arch):
            raise ValueError(f"policy_kwargs['net_arch'] must hold lists of positive integer sizes, got {net_arch!r}")
    return [int(n) for n in archs[0]], [int(n) for n in archs[1]]


def _activation_fn(activation_fn) -> type[nn.Module]:
    if isinstance(activation_fn, str):
        if activation_fn not in ACTIVATIONS:
            raise ValueError(f"policy_kwargs['activation_fn'] must be an nn.Module class or one of "
                             f"{sorted(ACTIVATIONS)}, got {activation_fn!r}")
        return ACTIVATIONS[activation_fn]
    if isinstance(activation_fn, type) and issubclass(activation_fn, nn.Module):
        return activation_fn
    raise TypeError(f"policy_kwargs['activation_fn'] must be an nn.Module class (nn.Tanh, nn.ReLU, ...) or its "
                    f"lower-case name, got {activation_fn!r}")


def _is_sb3_flatten(features_extractor_class, features_extractor_kwargs) -> bool:
    """SB3's default extractor, named explicitly: the flattened observation, which the MLPs take anyway."""
    return (getattr(features_extractor_class, "__name__", None) == "FlattenExtractor" and not features_extractor_kwargs
            and getattr(features_extractor_class, "__module__", None) == "stable_baselines3.common.torch_layers")


def _features_extractor(features_extractor_class, observation_space: gym.Space, kwargs: dict | None) -> nn.Module:
    """SB3's protocol: ``class(observation_space, **kwargs)``, a module with an int ``features_dim``."""
    if not callable(features_extractor_class):
        raise TypeError(f"policy_kwargs['features_extractor_class'] must be a class, got {features_extractor_class!r}")
    extractor = features_extractor_class(observation_space, **(kwargs or {}))
    dim = getattr(extractor, "features_dim", None)
    if not (isinstance(extractor, nn.Module) and isinstance(dim, (int, np.integer)) and not isinstance(dim, bool)
            and dim >= 1):
        raise TypeError(f"policy_kwargs['features_extractor_class'] must build an nn.Module with a positive int "
                        f"features_dim attribute (SB3's BaseFeaturesExtractor protocol), got "
                        f"{type(extractor).__name__} with features_dim={dim!r}")
    return extractor


def orthogonal_(weight: torch.Tensor, gain: float) -> None:
    """``nn.init.orthogonal_(weight, gain)``: the same Gaussian draw from the same generator, the same signs,
    but the QR in float64 on one thread. torch's float32 QR of a 64x64 or larger matrix rounds differently
    with torch's thread count (LAPACK's blocked algorithm), so a seed's initial weights, and so the whole
    run, depended on the machine's cores or ``OMP_NUM_THREADS``; float64 on one thread rounds to the same
    float32 weights on any."""
    rows = weight.size(0)
    flat = weight.new_empty((rows, weight.numel() // rows)).normal_(0, 1)
    wide = flat.size(0) < flat.size(1)
    before = torch.get_num_threads()
    torch.set_num_threads(1)
    try:
        q, r = torch.linalg.qr((flat.t() if wide else flat).cpu().double())
    finally:
        torch.set_num_threads(before)
    q *= torch.diag(r).sign()  # Q uniform over the orthogonal group (Mezzadri 2007), as torch's
    with torch.no_grad():
        weight.view_as(flat).copy_(q.t() if wide else q)
        weight.mul_(gain)


def state_values(policy: nn.Module, obs: torch.Tensor) -> torch.Tensor:
    """V(obs), shape ``(batch,)``: the module's ``value(obs)`` where it has one (which can skip the actor),
    else the value that ``forward`` returns."""
    value = getattr(policy, "value", None)
    return value(obs) if callable(value) else policy(obs)[1]


def compile_policy(policy: nn.Module, option: bool | dict) -> None:
    """``policy``'s forward compiled in place with torch.compile (``option``: True, or torch.compile's keyword
    arguments); its parameters, state_dict keys and other methods stay as they are. Compilation happens at
    the first call of each new input shape (the rollout's batch, the minibatch, the last short minibatch);
    where torch.compile cannot trace the module it runs those parts eagerly (its graph breaks)."""
    try:
        policy.compile(**({} if option is True else option))
    except (TypeError, RuntimeError, ValueError) as e:
        raise ValueError(f"torch_compile={option!r} was refused by torch.compile: {e}") from None


class PolicyMethods:
    """Stable-Baselines3's inference methods (``ActorCriticPolicy``'s) for an ``nn.Module`` with fastppo's
    ``forward`` contract (see :class:`ActorCritic`) and ``observation_space``, ``action_space``,
    ``obs_spec`` and ``action_spec`` attributes.

    As in SB3 they take observations as the env gives them, batched (Box: ``(batch, *shape)``; Discrete:
    ``(batch,)`` integers), and apply no observation normalisation (the algorithm's ``model.predict``
    does, with ``normalize_obs``). Distributions are fastppo's (:mod:`fastppo.algos.distributions`):
    ``sample()``, ``mode()``, ``log_prob(actions)``, ``entropy()`` and ``kl(other)``.
    """

    def obs_to_input(self, obs) -> torch.Tensor:
        """A batch of env observations (tensor or array) -> ``forward``'s input, on the parameters' device:
        images as they are (uint8), other Box observations flattened and Discrete ones one-hot, in the
        parameters' dtype; a dict of batches (Dict spaces) packed into the stored rows."""
        first = next(self.parameters())
        if self.obs_spec.kind == "dict":
            obs = {key: np.asarray(value.cpu() if isinstance(value, torch.Tensor) else value)
                   for key, value in obs.items()}
            rows = np.empty((self.obs_spec.batch_size(obs), *self.obs_spec.shape), self.obs_spec.dtype)
            return torch.from_numpy(self.obs_spec.rows(obs, rows)).to(first.device)
        obs = torch.as_tensor(obs, device=first.device)
        if self.obs_spec.kind == "image":
            return obs.reshape(obs.shape[0], *self.obs_spec.shape)
        if self.obs_spec.kind == "box":
            return obs.reshape(obs.shape[0], -1).to(first.dtype)
        return F.one_hot(obs.long().reshape(-1) - self.obs_spec.start, self.obs_spec.n).to(first.dtype)

    def get_distribution(self, obs):
        """The action distribution at ``obs``."""
        params, _ = self(self.obs_to_input(obs))
        return self.action_spec.distribution(params)

    def predict_values(self, obs) -> torch.Tensor:
        """V(obs), shape ``(batch, 1)`` (as SB3)."""
        return state_values(self, self.obs_to_input(obs)).unsqueeze(-1)

    def evaluate_actions(self, obs, actions) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
        """``(values (batch, 1), log_prob (batch,), entropy (batch,))`` of the policy's ``actions`` (Discrete:
        0-based, as the distribution samples them) at ``obs``, as SB3's."""
        params, values = self(self.obs_to_input(obs))
        dist = self.action_spec.distribution(params)
        actions = torch.as_tensor(actions, device=params.device)
        return values.unsqueeze(-1), dist.log_prob(actions.reshape(actions.shape[0], *self.action_spec.shape)), \
            dist.entropy()

    def set_training_mode(self, mode: bool) -> None:
        """``train(mode)`` (dropout, batch norm), as SB3's."""
        self.train(mode)

    def predict(self, observation, state=None, episode_start=None, deterministic: bool = False):
        """Actions for one observation or a batch (numpy), in the env's action space (Box actions clipped
        to its bounds): ``(actions, state)``, as SB3's ``policy.predict``; ``state`` and ``episode_start``
        are for recurrent policies and passed through."""
        self.set_training_mode(False)
        batch, single = as_batch(observation, self.observation_space)
        with torch.no_grad():
            dist = self.get_distribution(batch)
            actions = self.action_spec.to_env((dist.mode() if deterministic else dist.sample()).cpu().numpy())
        return (actions[0] if single else actions), state


class ActorCritic(PolicyMethods, nn.Module):
    """Separate actor and critic networks, SB3's ``ActorCriticPolicy`` for "MlpPolicy" (and CleanRL's).

    ``forward(obs) -> (dist_params, value)`` on the flattened observation ``(batch, dim)`` (Box flattened,
    Discrete one-hot): ``dist_params`` are the logits (Discrete, MultiDiscrete) or ``[mean, log_std]``
    (Box; log-std is a state-independent parameter), ``value`` has shape ``(batch,)``.

    The arguments are SB3's ``policy_kwargs`` with SB3's meanings and defaults:

    - ``net_arch``: hidden sizes, a list for actor and critic alike or ``dict(pi=[...], vf=[...])``; an
      empty list makes that head linear on the features. Default ``[64, 64]``.
    - ``activation_fn``: an ``nn.Module`` class (``nn.Tanh``, ``nn.ReLU``, ...) or the lower-case name of
      one of torch.nn's (``"tanh"``, ``"relu"``, ...).
    - ``ortho_init``: orthogonal weights (gain sqrt(2), the heads 0.01 and 1), zero biases.
    - ``log_std_init``: the Gaussian's initial log-std. The distributions clamp the log-std to
      [``LOG_STD_MIN``, ``LOG_STD_MAX``] = [-20, 2] (fastppo/algos/distributions.py, and kLogStdMin/Max in
      csrc/train/distributions.h), so an initial value outside it is an error rather than silently
      clamped (with gSDE the clamp applies to the state-dependent log-std that the matrix gives).
    - ``features_extractor_class`` / ``features_extractor_kwargs``: SB3's protocol,
      ``class(observation_space, **kwargs)`` -> an ``nn.Module`` with a ``features_dim`` attribute, given
      the observations as SB3 preprocesses them (Box: ``(batch, *shape)`` float; Discrete: one-hot;
      images are not divided by 255). Default (None, or SB3's own ``FlattenExtractor``): the flattened
      observation.
    - ``share_features_extractor``: one extractor for actor and critic (True), or one each.

    Attributes: ``actor`` and ``critic`` (``nn.Sequential`` MLPs on the features: [Linear, act, ...,
    Linear(out)]), ``log_std`` (Box), ``features_extractor``, ``pi_features_extractor`` and
    ``vf_features_extractor`` (None without one; one module when shared, as SB3), ``activation`` (the
    activation's lower-case torch.nn name, None for another class), plus :class:`PolicyMethods`' SB3
    inference methods.

    A user-supplied module may replace this class if it has the same ``forward`` contract. It may also
    define ``value(obs) -> (batch,)`` (used for V alone, else ``forward``'s value is) and, for TRPO,
    ``actor_parameters()`` and ``critic_parameters()``.
    """

    def __init__(self, observation_space: gym.Space, action_space: gym.Space, net_arch=None,
                 activation_fn: type[nn.Module] | str = nn.Tanh, ortho_init: bool = True, log_std_init: float = 0.0,
                 use_sde: bool = False, features_extractor_class=None, features_extractor_kwargs: dict | None = None,
                 share_features_extractor: bool = True):
        super().__init__()
        self.observation_space, self.action_space = observation_space, action_space
        self.obs_spec, self.action_spec = ObsSpec(observation_space), ActionSpec(action_space)
        pi_arch, vf_arch = _net_arch(net_arch)
        self.activation_fn = _activation_fn(activation_fn)
        self.activation = activation_name(self.activation_fn)
        self.use_sde = bool(use_sde)
        if self.use_sde and self.action_spec.kind != "gaussian":
            raise ValueError(f"use_sde needs a Box action space, got {type(action_space).__name__}")
        if self.action_spec.kind == "gaussian" and not self.use_sde and not LOG_STD_MIN <= log_std_init <= LOG_STD_MAX:
            raise ValueError(f"policy_kwargs['log_std_init'] must be in [{LOG_STD_MIN}, {LOG_STD_MAX}], the clamp "
                             f"fastppo's Gaussian applies to the log-std (LOG_STD_MIN/MAX in "
                             f"fastppo/algos/distributions.py), got {log_std_init!r}")

        self.features_extractor = self.pi_features_extractor = self.vf_features_extractor = None
        features_dim, extractors = self.obs_spec.dim, []
        if features_extractor_class is not None and not _is_sb3_flatten(features_extractor_class,
                                                                         features_extractor_kwargs):
            extractors = [_features_extractor(features_extractor_class, observation_space, features_extractor_kwargs)
                          for _ in range(1 if share_features_extractor else 2)]
            self.features_extractor = self.pi_features_extractor = extractors[0]
            self.vf_features_extractor = extractors[-1]
            features_dim = self.features_extractor.features_dim
        elif features_extractor_kwargs:
            raise ValueError("policy_kwargs['features_extractor_kwargs'] given without a features_extractor_class")
        elif self.obs_spec.kind == "dict":
            raise ValueError(f"Dict observations need a features extractor that reads them: use 'MultiInputPolicy' "
                             f"(got {observation_space})")
        self.share_features_extractor = bool(share_features_extractor)

        act = self.activation_fn
        pi_last, vf_last = ([features_dim, *arch][-1] for arch in (pi_arch, vf_arch))
        self.actor = nn.Sequential(*_mlp([features_dim, *pi_arch], act), nn.Linear(pi_last, self.action_spec.n_outputs))
        self.critic = nn.Sequential(*_mlp([features_dim, *vf_arch], act), nn.Linear(vf_last, 1))
        self.log_std = None
        if self.action_spec.kind == "gaussian":
            # gSDE: one log-std per (feature, action) pair, as SB3's full_std
            shape = (pi_last, self.action_spec.n_outputs) if self.use_sde else (self.action_spec.n_outputs,)
            self.log_std = nn.Parameter(torch.full(shape, float(log_std_init)))
        if ortho_init:  # gains as in the PPO implementation details (Huang et al. 2022) and SB3
            for net, head_gain in ((self.actor, 0.01), (self.critic, 1.0)):
                linears = [m for m in net if isinstance(m, nn.Linear)]
                for m in linears:
                    orthogonal_(m.weight, head_gain if m is linears[-1] else math.sqrt(2))
                    nn.init.zeros_(m.bias)
            for extractor in extractors:
                for m in extractor.modules():  # SB3's init_weights: Linear and Conv2d layers
                    if isinstance(m, (nn.Linear, nn.Conv2d)):
                        orthogonal_(m.weight, math.sqrt(2))
                        if m.bias is not None:
                            nn.init.zeros_(m.bias)

    def _features(self, obs: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        """The actor's and the critic's inputs: the flattened observation (images scaled to [0, 1], as SB3's
        preprocessing), or the extractors' features (given Box observations in their own shape, as SB3
        gives them)."""
        if self.features_extractor is None:
            obs = self._mlp_input(obs)
            return obs, obs
        obs = self._extractor_input(obs)
        pi = self.pi_features_extractor(obs)
        return pi, (pi if self.vf_features_extractor is self.pi_features_extractor else self.vf_features_extractor(obs))

    def _mlp_input(self, obs: torch.Tensor) -> torch.Tensor:
        """The MLPs' input when there is no extractor: the stored row, images flattened and scaled to [0, 1]."""
        return (obs.flatten(1).to(self.actor[0].weight.dtype) / self.obs_spec.image_max if self.obs_spec.kind == "image"
                else obs)

    def _extractor_input(self, obs: torch.Tensor) -> torch.Tensor:
        return obs.reshape(obs.shape[0], *self.observation_space.shape) if self.obs_spec.kind in ("box", "image") else obs

    def forward(self, obs: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        pi_features, vf_features = self._features(obs)
        if self.use_sde:
            latent = self.actor[:-1](pi_features)
            out = torch.cat([self.actor[-1](latent), self._sde_log_std(latent)], -1)
        else:
            out = self.actor(pi_features)
            if self.log_std is not None:
                out = torch.cat([out, self.log_std.expand_as(out)], -1)
        return out, self.critic(vf_features).squeeze(-1)

    # -- generalised state-dependent exploration (gSDE, Raffin et al. 2021; SB3's use_sde) ----------
    # The action is mean(s) + latent(s) @ E with E ~ N(0, std^2) per (feature, action) entry, drawn
    # per env and held for sde_sample_freq steps: noise that is smooth along a trajectory. Each action
    # is then Normal(mean, sqrt(latent^2 @ std^2 + 1e-6)), which is what forward() returns as the
    # log-std, so log-probs, entropy, KL and every update use the ordinary diagonal Gaussian. As SB3's
    # default (learn_features=False), the latent is not differentiated through the noise scale.
    def _sde_log_std(self, latent: torch.Tensor) -> torch.Tensor:
        variance = latent.detach().square() @ torch.exp(2 * self.log_std)
        return 0.5 * torch.log(variance + 1e-6)

    def sample_exploration(self, num_envs: int, generator: torch.Generator | None = None) -> torch.Tensor:
        """gSDE: fresh exploration matrices, ``(num_envs, latent_dim, action_dim)``."""
        std = torch.exp(self.log_std.detach())
        return torch.randn((num_envs, *std.shape), generator=generator, dtype=std.dtype, device=std.device) * std

    def sde_noise(self, obs: torch.Tensor, exploration: torch.Tensor) -> torch.Tensor:
        """gSDE: the noise latent(obs) @ E for each env's matrix E, ``(num_envs, action_dim)``."""
        return torch.bmm(self.actor[:-1](self._features(obs)[0]).unsqueeze(1), exploration).squeeze(1)

    def value(self, obs: torch.Tensor) -> torch.Tensor:
        """V(obs), shape ``(batch,)``, without the actor."""
        if self.vf_features_extractor is not None:
            return self.critic(self.vf_features_extractor(self._extractor_input(obs))).squeeze(-1)
        return self.critic(self._mlp_input(obs)).squeeze(-1)

    def actor_parameters(self) -> list[nn.Parameter]:
        """The policy's parameters (what TRPO's trust region constrains); a shared features extractor's
        are the actor's and the critic's, as in sb3-contrib's TRPO."""
        extractor = [] if self.pi_features_extractor is None else list(self.pi_features_extractor.parameters())
        return [*extractor, *self.actor.parameters(), *([self.log_std] if self.log_std is not None else [])]

    def critic_parameters(self) -> list[nn.Parameter]:
        extractor = [] if self.vf_features_extractor is None else list(self.vf_features_extractor.parameters())
        return [*extractor, *self.critic.parameters()]

    def native_ok(self) -> bool:
        """Whether the native kernels (fastppo._core.PolicyAct, PpoUpdate, CriticFit) can run this module:
        the extension is built, the actor and the critic are MLPs on the flattened observation (no features
        extractor; any hidden sizes, none included), the activation is one they have (tanh, ReLU), the
        parameters are float32 on the CPU, and no gSDE (which they do not implement). (The trainer also
        needs the optimiser to be Adam: fastppo.algos.optim.uses_flat_adam.)"""
        from fastppo._backend import _core

        weight = self.actor[0].weight
        return (_core is not None and self.activation in NATIVE_ACTIVATIONS and self.features_extractor is None
                and self.obs_spec.kind != "image" and weight.device.type == "cpu" and weight.dtype == torch.float32
                and not self.use_sde)

    def native_arrays(self, grads: bool = False) -> dict:
        """numpy views of the parameters' memory (or of their gradients', None where there is none yet),
        as the native kernels take them: ``actor`` and ``critic`` as [weight0, bias0, ...] lists,
        ``log_std`` (None if discrete)."""
        def arrays(tensors):
            return [None if t is None else t.detach().numpy() for t in (p.grad if grads else p for p in tensors)]

        linears = {name: [t for m in net if isinstance(m, nn.Linear) for t in (m.weight, m.bias)]
                   for name, net in (("actor", self.actor), ("critic", self.critic))}
        return {"actor": arrays(linears["actor"]), "critic": arrays(linears["critic"]),
                "log_std": arrays([self.log_std])[0] if self.log_std is not None else None}

    def native_act(self):
        """fastppo._core.PolicyAct over this module's parameter memory: the same forward and sampling as
        ``forward`` + ``ActionSpec.distribution`` in one native call per step, for CPU rollouts. It acts
        with a snapshot of the parameters taken now; its ``refresh()`` takes a new one from the same
        memory (so the parameters must be updated in place, not re-seated). None where it does not apply
        (see ``native_ok``)."""
        if not self.native_ok():
            return None
        from fastppo._backend import _core

        spec, arrays = self.action_spec, self.native_arrays()
        return _core.PolicyAct(arrays["actor"], arrays["critic"], self.activation, spec.kind, list(spec.nvec),
                               arrays["log_std"])


# "MlpPolicy"'s policy_kwargs that build the network (the optimiser's are the algorithm's); use_sde is the
# algorithm's hyperparameter, as in SB3
MLP_POLICY_KWARGS = tuple(name for name in inspect.signature(ActorCritic).parameters
                          if name not in ("observation_space", "action_space", "use_sde"))


POLICY_NAMES = ("MlpPolicy", "CnnPolicy", "MultiInputPolicy")


def auto_policy(observation_space: gym.Space) -> str:
    """What the policy name "auto" stands for: "CnnPolicy" for images, "MultiInputPolicy" for Dict
    observations, else "MlpPolicy"."""
    return ("CnnPolicy" if is_image_space(observation_space) else
            "MultiInputPolicy" if isinstance(observation_space, gym.spaces.Dict) else "MlpPolicy")


def named_policy(name: str, observation_space: gym.Space, action_space: gym.Space, use_sde: bool,
                 **policy_kwargs) -> ActorCritic:
    """SB3's policy names: "MlpPolicy" is :class:`ActorCritic` from ``policy_kwargs``; "CnnPolicy" the same
    with SB3's defaults for images: the encoder :func:`~fastppo.algos.cnn.image_encoder` picks (NatureCNN,
    or MinAtar's SmallCNN for images under 36 pixels), shared by actor and critic, and linear heads
    (``net_arch=[]``); "MultiInputPolicy" the same for Dict observations with the
    :class:`~fastppo.algos.cnn.CombinedExtractor` (and MLP heads, as SB3's)."""
    if isinstance(observation_space, gym.spaces.Dict) != (name == "MultiInputPolicy"):
        raise ValueError(f"{name!r} is for {'Dict' if name == 'MultiInputPolicy' else 'Box and Discrete'} "
                         f"observations, got {observation_space}; use "
                         f"{'MlpPolicy or CnnPolicy' if name == 'MultiInputPolicy' else 'MultiInputPolicy'}")
    if name == "MultiInputPolicy":
        policy_kwargs = {"features_extractor_class": CombinedExtractor, **policy_kwargs}
    if name == "CnnPolicy":
        if not is_image_space(observation_space):
            raise ValueError(f"'CnnPolicy' needs image observations (a 3-dimensional uint8 Box with bounds "
                             f"[0, 255], or a bool one), got {observation_space}; use 'MlpPolicy'")
        policy_kwargs = {"features_extractor_class": image_encoder, "net_arch": [], **policy_kwargs}
    return ActorCritic(observation_space, action_space, use_sde=use_sde, **policy_kwargs)
