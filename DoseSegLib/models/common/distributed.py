"""Training on several processes launched by torchrun (one node or several), through torch.distributed.

Without torchrun (no RANK/WORLD_SIZE in the environment) every function here is the
single-process no-op, so a plain run is unchanged. Under torchrun the process joins the
group (NCCL on CUDA, gloo on the CPU), the network is wrapped in DistributedDataParallel,
each global batch is shared between the ranks, validation is split by rank and gathered,
and only rank 0 writes (see :func:`is_main`).
"""

from __future__ import annotations

import os
from collections.abc import Iterator, Sequence
from contextlib import contextmanager
from datetime import timedelta

import numpy as np
import torch
import torch.distributed as dist

from DoseSegLib.core.errors import DoseSegError

TIMEOUT_ENV = "DOSESEG_DIST_TIMEOUT_MIN"  # minutes a rank waits for the others (e.g. while rank 0 builds the cache)


def launched() -> bool:
    """Whether this process was started by torchrun (or another launcher that sets RANK and WORLD_SIZE)."""
    return "RANK" in os.environ and "WORLD_SIZE" in os.environ


def active() -> bool:
    """Whether this process belongs to an initialised process group."""
    return dist.is_available() and dist.is_initialized()


def rank() -> int:
    """This process's rank (0 without torchrun)."""
    return dist.get_rank() if active() else 0


def world_size() -> int:
    """Number of processes training together (1 without torchrun)."""
    return dist.get_world_size() if active() else 1


def is_main() -> bool:
    """Whether this process is the one that writes (rank 0)."""
    return rank() == 0


def backend() -> str | None:
    """The process group's backend ("gloo" or "nccl"); None without torchrun."""
    return str(dist.get_backend()) if active() else None


def setup(device: torch.device | None) -> torch.device:
    """Join torchrun's process group when launched by it; returns this process's device.

    The default device is CUDA when available. Under torchrun a CUDA device becomes
    ``cuda:LOCAL_RANK`` and the backend is NCCL; on the CPU it is gloo.
    """
    device = device or torch.device("cuda" if torch.cuda.is_available() else "cpu")
    if not launched():
        return device
    if device.type == "cuda":
        device = torch.device("cuda", int(os.environ.get("LOCAL_RANK", "0")))
        torch.cuda.set_device(device)
    if not active():
        minutes = float(os.environ.get(TIMEOUT_ENV, "120"))
        dist.init_process_group("nccl" if device.type == "cuda" else "gloo", timeout=timedelta(minutes=minutes))
    return device


def wrap(net: torch.nn.Module, device: torch.device) -> torch.nn.Module:
    """``net`` on ``device``, in DistributedDataParallel when several processes train (else ``net`` itself).

    The batch step calls the returned module (gradients are averaged across ranks in
    backward); validation, checkpoints and weight files use ``net``.
    """
    net.to(device)
    if world_size() == 1:
        return net
    return torch.nn.parallel.DistributedDataParallel(net, device_ids=[device.index] if device.type == "cuda" else None)


def broadcast_parameters(net: torch.nn.Module) -> None:
    """Rank 0's parameters and buffers on every rank (after a change made on each rank, e.g. a bias reset)."""
    if world_size() > 1:
        for tensor in [*net.parameters(), *net.buffers()]:
            dist.broadcast(tensor.data, 0)


def barrier() -> None:
    """Wait for every rank (nothing without torchrun)."""
    if active():
        dist.barrier()


@contextmanager
def main_first() -> Iterator[None]:
    """Rank 0 runs the block first (e.g. builds a cache); the others run it once rank 0 is done."""
    if not is_main():
        barrier()
    yield
    if is_main():
        barrier()


def _comm_device() -> torch.device:
    return torch.device("cuda", torch.cuda.current_device()) if backend() == "nccl" else torch.device("cpu")


def agree(value: float) -> float:
    """Rank 0's ``value`` on every rank (e.g. a time measurement that decides when to stop)."""
    if world_size() == 1:
        return value
    tensor = torch.tensor([value], dtype=torch.float64, device=_comm_device())
    dist.broadcast(tensor, 0)
    return float(tensor.item())


def average(values: dict[str, float]) -> dict[str, float]:
    """The mean over ranks of each value (every rank has the same keys)."""
    if world_size() == 1 or not values:
        return values
    keys = sorted(values)
    tensor = torch.tensor([values[k] for k in keys], dtype=torch.float64, device=_comm_device())
    dist.all_reduce(tensor)
    return {k: float(v) / world_size() for k, v in zip(keys, tensor.tolist(), strict=True)}


def mean_count(count: torch.Tensor) -> torch.Tensor:
    """The global count over ranks divided by the world size (``count`` itself in one process).

    A loss ``local_sum / mean_count(local_count)``, averaged over ranks by
    DistributedDataParallel, is ``global_sum / global_count``: the step of one process
    on the whole global batch, whatever the world size. Every rank must call it.
    """
    if world_size() == 1:
        return count
    total = count.detach().to(torch.float64).clone()
    dist.all_reduce(total)
    return (total / world_size()).to(count.dtype if count.is_floating_point() else torch.float32)


def check_batch_size(batch_size: int) -> None:
    """Refuse a global batch that does not split evenly over the processes."""
    size = world_size()
    if batch_size % size:
        raise DoseSegError(f"batch size {batch_size} (the global batch) does not split evenly over {size} "
                           f"processes: use a multiple of {size}")


def batch_positions(count: int, batch_size: int, seed: int, epoch: int) -> list[np.ndarray]:
    """This rank's share of each global batch of an epoch, as (position, item) pairs, shape (n, 2).

    Every rank draws the same permutation of the ``count`` items (seeded by ``seed`` and
    ``epoch``, as DistributedSampler with set_epoch); under torchrun it is padded by
    repeating its first items to a multiple of the world size (as DistributedSampler
    does), cut into global batches of ``batch_size`` and rank r takes items r, r+W, ... of
    each. The position (in the padded permutation) seeds the item's random draws, so they
    do not depend on the world size.
    """
    check_batch_size(batch_size)
    size = world_size()
    order = np.random.default_rng([seed, epoch]).permutation(count)
    order = np.concatenate([order, order[: (-count) % size]])
    pairs = np.stack([np.arange(len(order)), order], axis=1)
    return [pairs[start: start + batch_size][rank()::size] for start in range(0, len(pairs), batch_size)]


def shard(count: int) -> range:
    """The indices of ``count`` items (e.g. validation patients) this rank handles: rank, rank + W, ..."""
    return range(rank(), count, world_size())


def gather(local: Sequence) -> list:
    """Every rank's :func:`shard` results, in the items' original order, on every rank (picklable values)."""
    size = world_size()
    if size == 1:
        return list(local)
    parts: list[list] = [[] for _ in range(size)]
    dist.all_gather_object(parts, list(local))
    total = sum(len(p) for p in parts)
    return [parts[i % size][i // size] for i in range(total)]
