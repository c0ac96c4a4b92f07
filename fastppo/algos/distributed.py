"""Data-parallel training on ``torch.distributed`` (docs/architecture.md, "Data-parallel training").

Launched under ``torchrun`` (or in a process group the user initialised), every rank runs the same loop
on its own envs, and the algorithm reaches the other ranks only through its reducer: :class:`Reducer`
(one process: every method is the identity) or :class:`DataParallel` (the collectives). The updaters call
it at fixed points (each minibatch's flat gradient, TRPO's reduced quantities, the advantage moments),
the loop at each rollout's end (normaliser statistics, control-flow votes) and at logging.
"""

from __future__ import annotations

import atexit
import datetime
import os

import numpy as np
import torch
import torch.distributed as dist

from fastppo.ops.ppo_loss import normalize


TIMEOUT_ENV = "FASTPPO_DIST_TIMEOUT"  # seconds a collective waits for the other ranks (default 300)


class Reducer:
    """The data-parallel seam, identity in one process. The updaters call :meth:`gradients` on the flat
    gradient buffer of every minibatch between backward and the optimiser step (gradient clipping
    included), and :meth:`mean` on the quantities TRPO's step is computed from (the policy gradient, each
    Fisher-vector product, the line search's surrogate and KL); an all-reduce over ranks goes there."""

    local = True  # nothing to reduce: the native updaters then run whole epochs without calling back (a
    # subclass that reduces sets it False, and the native loops call gradients() back per minibatch)
    rank, world_size, local_rank, local_world_size = 0, 1, 0, 1
    threads = None  # CPU threads this process's share of the machine allows (None: the whole machine)

    def gradients(self, flat_grad: torch.Tensor, approx_kl: float | None = None) -> float | None:
        """Average ``flat_grad`` in place across processes; returns ``approx_kl`` (the minibatch's, for the
        target_kl decision) averaged with it (None when not given)."""
        return approx_kl

    def mean(self, x: torch.Tensor) -> torch.Tensor:
        """``x`` averaged across processes."""
        return x

    def sum(self, x: torch.Tensor) -> torch.Tensor:
        """``x`` summed across processes."""
        return x

    def normalize(self, advantages: torch.Tensor) -> torch.Tensor:
        """The advantages normalised with the moments of the whole (all processes') batch."""
        return normalize(advantages)

    def any(self, flag: bool) -> bool:
        """Whether ``flag`` is true on any process: the vote every loop-ending decision goes through."""
        return bool(flag)

    def broadcast_(self, tensor: torch.Tensor) -> None:
        """``tensor`` overwritten in place with rank 0's."""

    def gather_objects(self, obj) -> list:
        """Every process's ``obj`` (picklable), in rank order."""
        return [obj]


def is_main(model) -> bool:
    """Whether ``model`` runs in the process that writes (logs, checkpoints, output): rank 0, or the one
    process of a run that is not distributed."""
    return model.reducer.rank == 0


def moments(sums: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
    """From ``(..., 3)`` float64 sums (count, sum, sum of squares): the mean and the denominator
    ``std + 1e-8`` with the unbiased std, as the ppo_loss op computes them (0 std for one sample)."""
    n, s1, s2 = sums.unbind(-1)
    mean = s1 / n
    var = torch.where(n > 1, (s2 - s1 * mean) / (n - 1).clamp_min(1), torch.zeros_like(n))
    return mean, var.clamp_min(0).sqrt() + 1e-8


def local_sums(x: torch.Tensor) -> torch.Tensor:
    """``(..., 3)`` float64 (count, sum, sum of squares) of ``x`` over its last axis."""
    x = x.double()
    return torch.stack([torch.full(x.shape[:-1], x.shape[-1], dtype=torch.float64, device=x.device),
                        x.sum(-1), (x * x).sum(-1)], -1)


def normalize_minibatches(reducer: Reducer, advantages: torch.Tensor, batch_size: int) -> torch.Tensor:
    """The advantages, in minibatch order (minibatch k: ``[k * batch_size, (k + 1) * batch_size)``, the last
    one possibly shorter), each minibatch normalised with the moments of that minibatch on every rank
    (one collective for all of them)."""
    n = advantages.numel()
    full = n // batch_size * batch_size
    blocks = [advantages[:full].reshape(-1, batch_size), *([advantages[full:].reshape(1, -1)] if full < n else [])]
    mean, denom = moments(reducer.sum(torch.cat([local_sums(b) for b in blocks])))
    which = torch.arange(n, device=advantages.device) // batch_size
    return ((advantages.double() - mean[which]) / denom[which]).to(advantages.dtype)


class DataParallel(Reducer):
    """The reducer of a run with ``world_size`` > 1 processes: collectives of the default process group."""

    local = False

    def __init__(self, device: torch.device):
        self.rank, self.world_size = dist.get_rank(), dist.get_world_size()
        self.local_rank = int(os.environ.get("LOCAL_RANK", self.rank))
        self.local_world_size = int(os.environ.get("LOCAL_WORLD_SIZE", self.world_size))
        # where the collectives' own tensors live: NCCL reduces device memory only
        self.device = device if dist.get_backend() == "nccl" else torch.device("cpu")
        self.threads = max(1, _usable_cores() // self.local_world_size)

    def gradients(self, flat_grad: torch.Tensor, approx_kl: float | None = None) -> float | None:
        if approx_kl is None:
            dist.all_reduce(flat_grad)
            flat_grad.div_(self.world_size)
            return None
        # the minibatch's KL rides along with the gradient: still one collective per minibatch
        buffer = torch.cat([flat_grad.reshape(-1), flat_grad.new_tensor([approx_kl])])
        dist.all_reduce(buffer)
        buffer.div_(self.world_size)
        flat_grad.copy_(buffer[:-1].view_as(flat_grad))
        return float(buffer[-1])

    def mean(self, x: torch.Tensor) -> torch.Tensor:
        return self.sum(x) / self.world_size

    def sum(self, x: torch.Tensor) -> torch.Tensor:
        y = x.detach().to(self.device, copy=True)
        dist.all_reduce(y)
        return y.to(x.device)

    def normalize(self, advantages: torch.Tensor) -> torch.Tensor:
        return normalize_minibatches(self, advantages, advantages.numel())

    def any(self, flag: bool) -> bool:
        vote = torch.tensor([int(bool(flag))], device=self.device)
        dist.all_reduce(vote, op=dist.ReduceOp.MAX)
        return bool(vote.item())

    def broadcast_(self, tensor: torch.Tensor) -> None:
        dist.broadcast(tensor, src=0)

    def gather_objects(self, obj) -> list:
        out = [None] * self.world_size
        dist.all_gather_object(out, obj)
        return out

    def check_same(self, description: dict[str, str]) -> None:
        """Raise ValueError on every rank unless every rank's ``description`` (field -> text) is rank 0's:
        a different env, hyperparameter or code version would otherwise surface as a hang or as silently
        different training."""
        everyone = self.gather_objects(description)
        problems = []
        for field in sorted({k for d in everyone for k in d}):
            values = [d.get(field, "<missing>") for d in everyone]
            if len(set(values)) > 1:
                problems.append(f"{field}: " + ", ".join(f"rank {r} has {v}" for r, v in enumerate(values)))
        if problems:
            raise ValueError("the ranks of this data-parallel run were not given the same configuration ("
                             + "; ".join(problems) + "): every rank must run the same fastppo version, algorithm, "
                             "env and hyperparameters")


def setup(device: torch.device) -> DataParallel | None:
    """The reducer of this process's run: None unless launched by torchrun with WORLD_SIZE > 1 or in an
    initialised process group of more than one process. Initialises the default process group when
    needed (gloo on the CPU, NCCL for CUDA devices; collectives time out after ``FASTPPO_DIST_TIMEOUT``
    seconds, 300 by default) and gives the native kernels this process's share of the cores (those it may
    run on // the local world size) as threads unless FASTPPO_NUM_THREADS sets them."""
    if not dist.is_available():
        return None
    if not dist.is_initialized():
        if int(os.environ.get("WORLD_SIZE", "1")) <= 1:
            return None
        raw = os.environ.get(TIMEOUT_ENV, "300")
        try:
            seconds = float(raw)
        except ValueError:
            raise ValueError(f"{TIMEOUT_ENV} must be a number of seconds, got {raw!r}") from None
        if device.type == "cuda":
            torch.cuda.set_device(device)
        dist.init_process_group("nccl" if device.type == "cuda" else "gloo",
                                timeout=datetime.timedelta(seconds=seconds))
        # ours to end: a process that exits with the group alive can abort in its backend's teardown
        atexit.register(_destroy)
    if dist.get_world_size() <= 1:
        return None
    reducer = DataParallel(device)
    from fastppo._backend import _core

    if _core is not None and "FASTPPO_NUM_THREADS" not in os.environ:
        _core.set_num_threads(reducer.threads)
    return reducer


def _usable_cores() -> int:
    """The cores this process may run on (its affinity: taskset's or a container's cpuset, not the machine's
    count)."""
    return len(os.sched_getaffinity(0)) if hasattr(os, "sched_getaffinity") else (os.cpu_count() or 1)


def _destroy() -> None:
    if dist.is_initialized():
        dist.destroy_process_group()


def reduce_row(reducer: Reducer, row: dict, episode_returns, episode_lengths) -> None:
    """A data-parallel run's logged row, in place: the episode statistics over every rank's recent episodes
    (``episode_returns``/``episode_lengths``: this rank's), the float train/ metrics (losses, KL, ...)
    averaged over the ranks; one collective."""
    averaged = [k for k, v in row.items() if k.startswith("train/") and isinstance(v, float)]
    local = [sum(episode_returns), sum(episode_lengths), len(episode_returns), *(row[k] for k in averaged)]
    returns, lengths, episodes, *values = reducer.sum(torch.tensor(local, dtype=torch.float64)).tolist()
    if episodes:
        row["rollout/ep_rew_mean"], row["rollout/ep_len_mean"] = returns / episodes, lengths / episodes
    row.update({k: v / reducer.world_size for k, v in zip(averaged, values)})


def local_device(device: torch.device) -> torch.device:
    """``device`` with a CUDA device without an index made this process's GPU (cuda:LOCAL_RANK) under
    torchrun."""
    if device.type == "cuda" and device.index is None and "LOCAL_RANK" in os.environ:
        return torch.device("cuda", int(os.environ["LOCAL_RANK"]))
    return device


def describe(value) -> str:
    """A value as text that is the same in every process for the same setting (a function by its name,
    not its address)."""
    if callable(value) and not isinstance(value, type):
        return f"{getattr(value, '__module__', '')}.{getattr(value, '__qualname__', type(value).__name__)}"
    if isinstance(value, dict):
        return "{" + ", ".join(f"{k!r}: {describe(v)}" for k, v in value.items()) + "}"
    if isinstance(value, (list, tuple)):
        return "[" + ", ".join(describe(v) for v in value) + "]"
    return repr(value)


class StatsMerge:
    """Running statistics (:class:`~fastppo.algos.normalize.RunningMeanStd`) kept identical across ranks:
    after each rollout every rank's batch since the last merge (count, and sums shifted by the common
    mean, in float64) is derived from its statistics then and now, all-reduced (one collective for all
    of them) and combined with the common statistics (Chan et al.), so every rank ends with the
    statistics of the concatenated data."""

    def __init__(self, reducer: Reducer, stats: list):
        self.reducer, self.stats = reducer, stats
        self.mark()

    def mark(self) -> None:
        """The statistics now are the common ones (identical on every rank)."""
        self.start = [(np.array(s.mean, np.float64), np.array(s.var, np.float64), s.count) for s in self.stats]

    def merge(self) -> None:
        parts = []
        for s, (mean0, var0, count0) in zip(self.stats, self.start):
            mean1, var1, count1 = np.array(s.mean, np.float64), np.array(s.var, np.float64), s.count
            batch = count1 - count0
            shift_sum = mean1 * count1 - mean0 * count0 - mean0 * batch  # sum of (x - mean0)
            shift_sq = var1 * count1 + count1 * (mean1 - mean0) ** 2 - var0 * count0  # sum of (x - mean0)^2
            parts += [np.full(1, batch), shift_sum.reshape(-1), shift_sq.reshape(-1)]
        total = self.reducer.sum(torch.from_numpy(np.concatenate(parts))).numpy()
        offset = 0
        for s, (mean0, var0, count0) in zip(self.stats, self.start):
            d = mean0.size
            batch, shift_sum = total[offset], total[offset + 1:offset + 1 + d]
            shift_sq = total[offset + 1 + d:offset + 1 + 2 * d]
            offset += 1 + 2 * d
            count = count0 + batch
            delta = shift_sum / count  # the new mean minus mean0
            m2 = var0.reshape(-1) * count0 + shift_sq - shift_sum * delta  # sum over all data of (x - new mean)^2
            # replaced, as RunningMeanStd.update does (the native rollout fetches the arrays per call)
            s.mean = (mean0.reshape(-1) + delta).reshape(mean0.shape)
            s.var = (m2 / count).reshape(var0.shape)
            s.count = count
        self.mark()
