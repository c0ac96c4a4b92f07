"""What a model offers besides ``learn``, with Stable-Baselines3's names and meanings: acting
(``predict``), its env (``get_env``, ``set_env``, ``get_vec_normalize_env``), its parameters
(``get_parameters``, ``set_parameters``), its logger (``set_logger``) and its file (``save``, ``load``).
:class:`ModelAPI` is a base of :class:`fastppo.algos.base.OnPolicyAlgorithm`, whose state it reads."""

from __future__ import annotations

import copy
import os

import torch
from torch import nn

from fastppo.algos import checkpoint
from fastppo.algos.observations import as_batch
from fastppo.algos.resident import env_device
from fastppo.envs import SB3VecEnv, as_vector_env, sb3_view_class


class ModelAPI:
    # -- envs (SB3's get_env / set_env / get_vec_normalize_env) --------------------------------------
    def get_env(self):
        """The env training runs on, with SB3's VecEnv API (``reset() -> obs``, ``step -> (obs, rewards,
        dones, infos)``): the SB3 VecEnv you gave, else a :class:`fastppo.envs.SB3View` of the vector env
        (None for a model loaded without one). Stepping it yourself, as SB3's examples do, makes the next
        ``learn`` start from a reset."""
        if self.env is None:
            return None
        if isinstance(self.env, SB3VecEnv):
            return self.env.venv
        view_class = sb3_view_class()
        if self._view is None or self._view.env is not self.env or type(self._view) is not view_class:
            # one view per env (callbacks compare it by identity), of SB3's class once SB3 is imported
            self._view = view_class(self.env, on_use=self._env_used_outside)
        return self._view

    def _env_used_outside(self) -> None:
        self._last_obs = None

    def set_env(self, env, force_reset: bool = True) -> None:
        """Train on ``env`` from now on (same spaces; any number of envs). ``force_reset=False`` keeps the
        current episodes when the env is the same kind and count (SB3's meaning): the next ``learn`` then
        continues them; a new env is always reset before its first step."""
        vec_env, env_id = as_vector_env(env, self.config.num_envs, backend=self.backend,
                                        device=env_device(env, self.device, self.backend, self.config))
        for name in ("observation_space", "action_space"):
            if getattr(vec_env, f"single_{name}") != getattr(self, name):
                raise ValueError(f"env has {name} {getattr(vec_env, f'single_{name}')}, but the model was made for "
                                 f"{getattr(self, name)}")
        keep = not force_reset and self.env is not None and vec_env.num_envs == self.num_envs
        self.env, self.env_id = vec_env, env_id
        if vec_env.num_envs != self.num_envs:
            self._allocate(vec_env.num_envs)
            self._build_updaters()
        self._collectors = {}
        if not keep:
            self._last_obs = None

    def get_vec_normalize_env(self):
        """The SB3 VecNormalize wrapper of the training env, or None (fastppo's own ``normalize_obs`` /
        ``normalize_reward`` live in the model)."""
        from fastppo.envs import find_vec_normalize

        return None if self.env is None else find_vec_normalize(self.env)

    # -- parameters (SB3's get_parameters / set_parameters) -----------------------------------------
    def get_parameters(self) -> dict[str, dict]:
        """``{"policy": state_dict, "policy.optimizer": the optimiser's state}``, as SB3's (copies)."""
        return {"policy": {k: v.detach().clone() for k, v in self.policy.state_dict().items()},
                **{k: copy.deepcopy(v) for k, v in self._optimizers().items()}}

    def set_parameters(self, load_path_or_dict, exact_match: bool = True, device: str = "auto") -> None:
        """Load parameters from :meth:`get_parameters`' dict, or from a file (a fastppo checkpoint or an SB3
        zip); in place, so the native paths keep seeing them. ``exact_match``: every key of the policy must
        be given (and no other). ``device`` exists for SB3's signature (parameters go to the model's)."""
        if isinstance(load_path_or_dict, dict):
            params = load_path_or_dict
        else:
            ckpt = checkpoint.read(load_path_or_dict)
            params = {"policy": ckpt["policy_state"]}
        unknown = set(params) - {"policy", *self._optimizers()}
        if unknown or "policy" not in params:
            raise ValueError(f"parameters must have the key 'policy' (and optionally {sorted(self._optimizers())}), "
                             f"got {sorted(params)}")
        self.policy.load_state_dict(params["policy"], strict=exact_match)
        for key, optimizer in self._optimizer_objects().items():
            if key in params:
                optimizer.load_state_dict(params[key])

    def _optimizers(self) -> dict[str, dict]:
        return {k: o.state_dict() for k, o in self._optimizer_objects().items()}

    def _optimizer_objects(self) -> dict:
        """Subclasses: their optimisers under SB3's ``get_parameters`` keys."""
        return {}

    def set_logger(self, logger) -> None:
        """Log to ``logger`` (a :class:`fastppo.algos.logger.Logger` or an SB3 logger: anything with
        ``record`` and ``dump``) instead of the one ``learn`` would configure."""
        if not (callable(getattr(logger, "record", None)) and callable(getattr(logger, "dump", None))):
            raise TypeError(f"logger must have record() and dump() (fastppo's or SB3's Logger), got "
                            f"{type(logger).__name__}")
        if not self._custom_logger:
            self.logger.close()  # the one learn() made; a given logger stays its owner's to close
        self.logger, self._custom_logger = logger, True

    # -- acting -------------------------------------------------------------------------------------
    def predict(self, observation, state=None, episode_start=None, deterministic: bool = False):
        """Actions for one observation or a batch, in the env's action space: ``(actions, None)``.

        ``state`` and ``episode_start`` exist for Stable-Baselines3 compatibility (recurrent policies) and
        are ignored. Observations go through the model's own normaliser (``normalize_obs``), as in training.
        """
        batch, single = as_batch(observation, self.observation_space)
        with torch.inference_mode():
            params, _ = self.policy(self._policy_input(batch, update_stats=False))
            dist = self.action_spec.distribution(params)
            actions = self.action_spec.to_env((dist.mode() if deterministic else dist.sample()).cpu().numpy())
        return (actions[0] if single else actions), None

    # -- checkpoints (fastppo/algos/checkpoint.py) --------------------------------------------------
    def _algo_state(self) -> dict:
        """Subclass state to checkpoint (optimisers, adaptive coefficients)."""
        return {}

    def _load_algo_state(self, state: dict) -> None:
        pass

    def save(self, path: str | os.PathLike, exclude=None, include=None) -> None:
        """Everything needed to act and to resume training exactly, written atomically (a crash mid-save
        leaves any previous file at ``path`` intact). A path without a suffix gets ``.zip``, as SB3's
        (the file is fastppo's own format, which loading cannot turn into code). ``exclude``/``include``
        exist for SB3's signature: fastppo's file holds no env or logger to leave out."""
        checkpoint.save(self, path)

    @classmethod
    def load(cls, path: str | os.PathLike, env=None, device: str | None = None, custom_objects: dict | None = None,
             print_system_info: bool = False, force_reset: bool = True, *, policy: nn.Module | type | None = None,
             trust_pickle: bool = False, **overrides):
        """A model from :meth:`save` (``path`` with or without its ``.zip``), or an SB3 zip, ready to act
        and to continue training.

        ``env`` defaults to the checkpoint's env id; a model trained on an env instance loads without one
        (predict works; ``set_env`` before ``learn``). A given env must have the same spaces.
        ``device``: where the policy goes. ``custom_objects``: hyperparameters to replace, as SB3's (so are
        ``overrides``: e.g. ``log_dir``, or a schedule function, which is not stored; a ``policy_kwargs`` dict
        is merged into the saved one, so that ``policy_kwargs=dict(features_extractor_class=...)`` gives back
        a class that was not stored). ``policy``: a new instance of the custom module the model was trained
        with, or its SB3 policy class (the weights come from the file; modules and classes are not stored).
        Loading cannot run code from the file; ``trust_pickle=True`` opens fastppo 0.1's pickle files, which
        can: only for files you trust. ``print_system_info`` and ``force_reset`` exist for SB3's signature
        (a loaded model's envs always start with a reset unless its env state was saved).
        """
        overrides = {**(custom_objects or {}), **overrides, **({"device": device} if device is not None else {})}
        return checkpoint.restore(cls, checkpoint.read(path, trust_pickle), env, overrides, policy, path)

    def close(self) -> None:
        if self.env is not None:
            self.env.close()
        self.logger.close()
