"""Data-parallel search over torch.distributed, as `torchrun` starts it.

This module owns everything a search does differently on several ranks: detecting the
environment torchrun sets and joining its process group (gloo for CPU tensors, NCCL for
CUDA ones), each rank's shard of every weight and α batch, the average of the weight and α
gradients over the ranks, the tallies of the metrics summed over the ranks, work that only
rank 0 does (the run directory, its checkpoints and logs) with its outcome shared, and the
check at each epoch's end that every rank still holds the same α, weights and random state.

What stays equal on all ranks, and why (docs/scale.md): every rank seeds the same
generators and takes the same steps on the same averaged gradients, so α, weights,
optimizer states, the parts' counters and schedules (e.g. DARTS-PRIME's informed schedule,
fed the gradient energy of the averaged gradient) and every random draw that does not
depend on the batch size (GDAS's Gumbel samples) are the same on every rank without being
sent. Batch normalization uses each rank's own sub-batch statistics, as DataParallel and
DistributedDataParallel do: a W-rank search equals a 1-process search of the same global
batch whose BN normalizes each of the W sub-batches separately.

Outside torchrun (WORLD_SIZE unset or 1) every function here is a no-op.
"""

from __future__ import annotations

import os
from collections.abc import Callable, Iterable, Iterator
from datetime import timedelta
from typing import TYPE_CHECKING, Any, TypeVar

import torch
import torch.distributed as dist

from diffnas.callbacks.base import Callback
from diffnas.errors import ConfigError, DiffnasError

if TYPE_CHECKING:
    from diffnas.loop import Meters
    from diffnas.search import Searcher

T = TypeVar("T")
Batch = tuple[torch.Tensor, torch.Tensor]

ENV = ("RANK", "WORLD_SIZE", "MASTER_ADDR", "MASTER_PORT")


class DivergedError(DiffnasError):
    """Ranks hold different α, weights or random states (a bug: they must stay equal)."""


# --------------------------------------------------------------------------- the group
def env_world_size() -> int:
    try:
        return int(os.environ.get("WORLD_SIZE", "1") or 1)
    except ValueError:
        raise ConfigError(
            f"WORLD_SIZE is '{os.environ['WORLD_SIZE']}', not a number; start a data-parallel "
            f"search with torchrun (docs/scale.md), or unset WORLD_SIZE"
        ) from None


def init(timeout_s: float = 1800.0) -> bool:
    """Join the process group torchrun's environment describes (once per process).

    True when this process is one of several ranks. On a machine with CUDA, each rank
    takes the GPU of its LOCAL_RANK and CUDA tensors travel by NCCL, CPU tensors by gloo.
    """
    if dist.is_available() and dist.is_initialized():
        return dist.get_world_size() > 1
    if env_world_size() <= 1:
        return False
    if not dist.is_available():
        raise ConfigError(
            "WORLD_SIZE > 1 asks for a data-parallel search, but this PyTorch build has no "
            "torch.distributed; run a single process (unset WORLD_SIZE)"
        )
    missing = [k for k in ENV if not os.environ.get(k)]
    if missing:
        raise ConfigError(
            f"WORLD_SIZE is {env_world_size()} but {', '.join(missing)} is not set; start "
            f"the ranks with torchrun (docs/scale.md), which sets them all"
        )
    if torch.cuda.is_available():
        local = int(os.environ.get("LOCAL_RANK", "0") or 0)
        if local >= torch.cuda.device_count():
            raise ConfigError(
                f"LOCAL_RANK {local} but this node has {torch.cuda.device_count()} GPU(s): "
                f"give torchrun at most that many --nproc-per-node"
            )
        torch.cuda.set_device(local)  # the device `cuda` (and `auto`) means on this rank
        backend = "cpu:gloo,cuda:nccl"
    else:
        backend = "gloo"
    dist.init_process_group(backend, timeout=timedelta(seconds=timeout_s))
    return True


def active() -> bool:
    """Whether this process is one rank of several (joins torchrun's group if need be)."""
    return init()


def world_size() -> int:
    return dist.get_world_size() if active() else 1


def rank() -> int:
    return dist.get_rank() if active() else 0


def is_main() -> bool:
    """Rank 0, or a process that is not part of a data-parallel search."""
    return rank() == 0


def on_main(fn: Callable[[], T], share: bool = False) -> T | None:
    """Run `fn` on rank 0 only. Its exception is raised on every rank (so no rank waits
    for the others forever); with `share`, its result is sent to every rank, otherwise the
    other ranks get None."""
    if not active():
        return fn()
    box: list[Any] = [None]
    if dist.get_rank() == 0:
        try:
            result = fn()
        except BaseException as exc:
            box[0] = ("error", _picklable(exc))
            dist.broadcast_object_list(box, src=0)
            raise
        box[0] = ("ok", result if share else None)
        dist.broadcast_object_list(box, src=0)
        return result
    dist.broadcast_object_list(box, src=0)
    status, value = box[0]
    if status == "error":
        raise value
    return value


def shared(fn: Callable[[], T]) -> T:
    """`fn()` computed on rank 0 and sent to every rank (its exception raised on all)."""
    return on_main(fn, share=True)  # type: ignore[return-value]


def _picklable(exc: BaseException) -> BaseException:
    import pickle

    try:
        pickle.loads(pickle.dumps(exc))
        return exc
    except Exception:
        return DiffnasError(f"rank 0 failed: {type(exc).__name__}: {exc}")


# --------------------------------------------------------------------------- arithmetic
def average_grads(params: Iterable[torch.Tensor]) -> None:
    """Replace each `.grad` by its mean over the ranks (one flat all-reduce per dtype and
    device). Every rank must pass the same parameters with gradients, in the same order."""
    if not active():
        return
    groups: dict[tuple[torch.dtype, torch.device], list[torch.Tensor]] = {}
    for p in params:
        if p.grad is not None:
            groups.setdefault((p.grad.dtype, p.grad.device), []).append(p.grad)
    w = dist.get_world_size()
    for grads in groups.values():
        flat = torch.cat([g.reshape(-1) for g in grads])
        dist.all_reduce(flat)
        flat /= w
        offset = 0
        for g in grads:
            n = g.numel()
            g.copy_(flat[offset : offset + n].view(g.shape))
            offset += n


def mean(t: torch.Tensor) -> torch.Tensor:
    """The mean of a (detached) tensor over the ranks; `t` itself outside a group."""
    if not active():
        return t
    out = t.detach().clone()
    dist.all_reduce(out)
    return out / dist.get_world_size()


class GlobalMeters:
    """The loop's meters, each tally (loss·n, correct, n) summed over the ranks as it is
    added: every rank holds the global figures, so rank 0's checkpoint and log hold them."""

    def __init__(self, inner: Meters) -> None:
        self.inner = inner

    def add(
        self, prefix: str, loss: torch.Tensor, logits: torch.Tensor, labels: torch.Tensor
    ) -> None:
        local = type(self.inner)()
        local.add(prefix, loss, logits, labels)
        tallies = (local.loss[prefix].sum, local.correct[prefix].sum, local.loss[prefix].n)
        tally = torch.stack(
            [
                torch.as_tensor(v, dtype=torch.float64, device=loss.device).reshape(())
                for v in tallies
            ]
        )
        dist.all_reduce(tally)
        self.inner.scored = self.inner.scored and local.scored
        # the global sums, kept on the device (diffnas.loop.Mean reads them once per epoch)
        self.inner.loss[prefix].add(tally[0], tally[2])
        self.inner.correct[prefix].add(tally[1], tally[2])

    def __getattr__(self, name: str) -> Any:  # reset, summary, state_dict, loss, ...
        return getattr(self.inner, name)


# --------------------------------------------------------------------------- batches
class ShardedStream:
    """One rank's view of a batch stream: of each global batch of B, rows [r·b, (r+1)·b),
    b = B / W. The global batch (order and augmentation) is the one a single process makes
    from (seed, epoch, step); each rank prepares it and keeps its slice."""

    def __init__(self, base: Any, rank: int, world: int, where: str) -> None:
        if base.batch_size % world:
            raise ConfigError(
                f"the {where} batch of {base.batch_size} does not split over {world} ranks: "
                f"data.batch_size is the global batch, each rank takes batch/{world}; choose "
                f"a batch size that {world} divides (or another number of processes)"
            )
        if not getattr(base, "drop_last", True):
            raise ConfigError(f"the {where} stream keeps a last partial batch; it cannot shard")
        self.base = base
        self.rank = rank
        self.world = world
        self.per_rank = base.batch_size // world

    def __len__(self) -> int:
        return len(self.base)

    def order(self, epoch: int) -> Any:
        return self.base.order(epoch)

    def batch(self, order: Any, epoch: int, step: int) -> Batch:
        x, y = self.base.batch(order, epoch, step)
        lo = self.rank * self.per_rank
        return x[lo : lo + self.per_rank], y[lo : lo + self.per_rank]

    def epoch(self, epoch: int, start: int = 0) -> Iterator[Batch]:
        order = self.order(epoch)
        for step in range(start, len(self)):
            yield self.batch(order, epoch, step)

    def __getattr__(self, name: str) -> Any:  # batch_size, num_samples, images, ...
        return getattr(self.base, name)


# --------------------------------------------------------------------------- the searcher
def attach(s: Searcher) -> None:
    """Make a freshly built Searcher one rank of a data-parallel search (no-op outside one):
    shard its weight and α batches, sum its meters over the ranks, add the check that the
    ranks agree. The loop itself averages the gradients (`average_grads`)."""
    if not active():
        return
    from diffnas.data.loader import BatchStream, CyclingStream, SearchData
    from diffnas.data.user import DatasetStream
    from diffnas.updaters.second_order import SecondOrder

    if isinstance(s.updater, SecondOrder):
        raise ConfigError(
            "second-order DARTS does not run data-parallel: its virtual weight step would "
            "use each rank's sub-batch, not the global batch; use search.updater=first_order "
            "or a single process"
        )
    for where, stream in (("weight", s.data.train), ("architecture", s.data.val)):
        if not isinstance(stream, BatchStream | DatasetStream):
            raise ConfigError(
                f"a data-parallel search shards diffnas datasets and map-style torch Datasets; "
                f"the {where} data is a {type(stream).__name__} (a DataLoader): pass its "
                f"Dataset instead, or run a single process"
            )
    r, w = dist.get_rank(), dist.get_world_size()
    # the weight batches and the α batches are sharded; `s.data.val` stays whole, so a
    # derivation that scores on validation data (random search, ACA) computes the same on
    # every rank
    train = ShardedStream(s.data.train, r, w, "weight")
    s.data = SearchData(s.data.dataset, train, s.data.val)  # type: ignore[arg-type]
    s.val_stream = CyclingStream(ShardedStream(s.data.val, r, w, "architecture"))  # type: ignore[arg-type]
    s.meters = GlobalMeters(s.meters)  # type: ignore[assignment]
    s.callbacks.insert(0, RankCheck())  # checked before anything is logged or saved


def fingerprint(s: Searcher) -> torch.Tensor:
    """α, a sum per weight tensor and the CPU random state, as one float64 vector."""
    parts = [p.detach().double().reshape(-1).cpu() for p in s.arch_parameters()]
    parts.append(torch.stack([p.detach().double().sum() for p in s.model.parameters()]).cpu())
    parts.append(torch.get_rng_state().double())
    if s.device.type == "cuda":
        parts.append(torch.cuda.get_rng_state(s.device).double())
    return torch.cat(parts)


class RankCheck(Callback["Searcher"]):
    """At each epoch's end: every rank must hold rank 0's α, weights and random state
    (compared exactly: min and max over the ranks must agree); records the world size."""

    name = "ranks"

    def collect(self, s: Searcher, metrics: dict[str, Any]) -> None:
        metrics["world_size"] = dist.get_world_size()

    def on_epoch_end(self, s: Searcher, metrics: dict[str, Any]) -> None:
        low = fingerprint(s)
        high = low.clone()
        dist.all_reduce(low, op=dist.ReduceOp.MIN)
        dist.all_reduce(high, op=dist.ReduceOp.MAX)
        if not torch.equal(low, high):
            raise DivergedError(
                f"the {dist.get_world_size()} ranks of this data-parallel search disagree after "
                f"epoch {metrics.get('epoch', s.epoch - 1) + 1} (α, weights or random state); "
                f"a part draws from a generator or reads data that differ between ranks. "
                f"Report it; meanwhile resume the run's last checkpoint with one process"
            )
