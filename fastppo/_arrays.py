"""Arrays handed to native code: the one conversion of CPU torch tensors to zero-copy numpy views, shared
by the ops (fastppo/ops/) and the envs (fastppo/envs/)."""

from __future__ import annotations

import numpy as np
import torch


def host_array(x, name: str, *, require_cpu: str | None = None):
    """An array argument as a native CPU call takes it: a CPU torch tensor becomes a zero-copy numpy
    view (detached; cheaper than DLPack), a numpy array passes through.

    With ``require_cpu=None`` (the ops) anything that cannot be viewed that way (a tensor on another
    device or of a dtype numpy lacks, a list) goes through as it is, tensors detached, for the binding
    to reject with its own message naming ``name``'s argument. With ``require_cpu`` set to what needs
    the CPU (the envs: ``"an env on the cpu"``), a tensor elsewhere is a ValueError here
    (``actions must be on the cpu for an env on the cpu, got a tensor on cuda:0``) and anything else
    goes through ``np.asarray``."""
    try:  # the common case first: a CPU float tensor
        return x.detach().numpy() if x.requires_grad else x.numpy()
    except (AttributeError, TypeError, RuntimeError):
        pass
    if isinstance(x, torch.Tensor):
        if require_cpu is not None and x.device.type != "cpu":
            raise ValueError(f"{name} must be on the cpu for {require_cpu}, got a tensor on {x.device}")
        return x.detach()
    if require_cpu is not None:
        try:
            return np.asarray(x)
        except (ValueError, TypeError) as e:  # a ragged list, say: numpy's message does not say which argument
            raise type(e)(f"{name} could not be read as an array: {e}") from e
    return x
