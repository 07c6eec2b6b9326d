"""ContiguousDistributedSampler: each rank reads one contiguous block of a data set, nothing twice.

Lightning's default under DDP, ``torch.utils.data.DistributedSampler``, deals indices out
round-robin (rank r gets r, r + world, ...) and pads the data set with repeated samples until
its length divides by the world size. For the one-pass models that has two effects: a
repeated training image enters the fitted statistics twice, and the ranks' rows in rank order
are a permutation of the data set, so a multi-process fit cannot be compared row for row with a
one-process fit on the data set as it is. This sampler gives rank r the indices
``[⌊r·N/world⌋, ⌊(r+1)·N/world⌋)``: no repeats, and rank order is data-set order, so a
multi-process PatchCore with ``coreset_seed`` keeps the memory bank of a one-process fit with
that seed on the same loader (when the ranks' batches are whole, i.e. each block's length
divides by the batch size, the batches are even the same).

Use it with ``Trainer(use_distributed_sampler=False)``, which stops Lightning from replacing
the loaders' samplers, and ``DataLoader(dataset, sampler=ContiguousDistributedSampler(dataset))``
for the training loader, and for the validation and test loaders too, or every rank evaluates
the whole set. Blocks differ in length by at most one sample; every rank must get at least one
sample of each split (N >= world): Lightning refuses a sized loader that is empty on some rank.
"""

from __future__ import annotations

import numbers
from typing import Iterator, Optional, Sized, Tuple, Union

import torch.distributed as dist
from torch.utils.data import Sampler


class ContiguousDistributedSampler(Sampler[int]):
    """Indices of this rank's contiguous block of a data set, in order, without repeats.

    The world size and rank are read from ``torch.distributed`` when the sampler is iterated
    (not when it is built), so a sampler made in the launching process works in every process
    that ``ddp_spawn`` starts; without an initialised process group it yields every index.

    Args:
        data_source: the data set (anything with ``len``) or its length.
        num_replicas: world size; ``None`` reads it from ``torch.distributed``.
        rank: this process's rank; ``None`` reads it from ``torch.distributed``.

    Example:
        >>> sampler = ContiguousDistributedSampler(10, num_replicas=3, rank=1)
        >>> list(sampler)
        [3, 4, 5]
    """

    def __init__(
        self, data_source: Union[Sized, int], num_replicas: Optional[int] = None, rank: Optional[int] = None
    ) -> None:
        if isinstance(data_source, numbers.Integral) and not isinstance(data_source, bool):
            if data_source < 0:
                raise ValueError(f"data_source length must be >= 0, got {data_source}")
        elif not hasattr(data_source, "__len__"):
            raise TypeError(f"data_source must be a sized data set or its length, got {type(data_source).__name__}")
        for name, value in (("num_replicas", num_replicas), ("rank", rank)):
            if value is not None and (isinstance(value, bool) or not isinstance(value, numbers.Integral)):
                raise TypeError(f"{name} must be an int or None, got {value!r}")
        if num_replicas is not None and num_replicas < 1:
            raise ValueError(f"num_replicas must be >= 1, got {num_replicas}")
        if rank is not None and num_replicas is not None and not 0 <= rank < num_replicas:
            raise ValueError(f"rank must be in [0, {num_replicas}), got {rank}")
        self.data_source = data_source
        self.num_replicas = num_replicas
        self.rank = rank

    def _world_and_rank(self) -> Tuple[int, int]:
        initialised = dist.is_available() and dist.is_initialized()
        world = self.num_replicas if self.num_replicas is not None else (dist.get_world_size() if initialised else 1)
        rank = self.rank if self.rank is not None else (dist.get_rank() if initialised else 0)
        if not 0 <= rank < world:
            raise ValueError(f"rank must be in [0, {world}), got {rank}")
        return world, rank

    def block(self) -> Tuple[int, int]:
        """``(start, stop)`` of this rank's indices."""
        length = self.data_source if isinstance(self.data_source, numbers.Integral) else len(self.data_source)
        world, rank = self._world_and_rank()
        return rank * length // world, (rank + 1) * length // world

    def __iter__(self) -> Iterator[int]:
        start, stop = self.block()
        return iter(range(start, stop))

    def __len__(self) -> int:
        start, stop = self.block()
        return stop - start
