"""What the one-pass models need from Lightning's DDP strategy, and what they must keep it from doing.

PatchCore, PaDiM and DFKDE have no trainable parameter. Lightning's ``DDPStrategy`` wraps the
module in ``torch.nn.parallel.DistributedDataParallel`` when fitting, and that wrapper exists
only to all-reduce gradients: torch refuses to build it for a module without a parameter that
requires a gradient ("DistributedDataParallel is not needed ..."). Lightning already skips the
wrapper for validate, test and predict ("there's no gradients to reduce") and broadcasts rank
0's parameters and buffers instead; :func:`fit_without_gradient_wrapper` makes fitting do the
same. Without the wrapper no collective runs per training step either (the wrapper would
broadcast every buffer, e.g. PaDiM's (P, C, C) precision matrices, before each forward pass).

The remaining helpers are the collectives the models' epoch-end fits use: the process group of
a multi-process trainer, a flag agreed by all ranks, a seed shared by all ranks, the module
state broadcast from rank 0, and metric states kept reduced over the ranks (torchmetrics
reduces states only while ``compute`` runs; normalisation statistics are read as states).
Tensors travel on the given device: the CPU under gloo, this rank's GPU under NCCL.
"""

from __future__ import annotations

from typing import Any, Optional

import torch
import torch.distributed as dist
from torch import nn
from torchmetrics import Metric


def trainer_process_group(trainer: Any) -> Optional[dist.ProcessGroup]:
    """The default process group when ``trainer`` runs on several processes, else ``None``.

    A trainer on one device returns ``None`` even inside an initialised process group (e.g. a
    separate single-device fit in each process), so that fit stays local.
    """
    if trainer is None or int(getattr(trainer, "world_size", 1)) <= 1:
        return None
    if not dist.is_available() or not dist.is_initialized():
        return None
    return dist.group.WORLD


def any_rank(flag: bool, group: dist.ProcessGroup, device: torch.device) -> bool:
    """Whether ``flag`` is true on at least one rank of ``group`` (the same answer on every rank)."""
    value = torch.tensor([1 if flag else 0], dtype=torch.int64, device=device)
    dist.all_reduce(value, op=dist.ReduceOp.MAX, group=group)
    return bool(value.item())


def shared_seed(group: dist.ProcessGroup, device: torch.device) -> int:
    """A seed drawn from rank 0's torch RNG and broadcast: the same on every rank.

    Every rank draws (so the ranks' RNG streams advance alike), rank 0's draw wins; seeding the
    processes (``seed_everything``) makes it reproducible.
    """
    seed = torch.randint(0, 2**62, (1,), dtype=torch.int64).to(device)
    dist.broadcast(seed, src=dist.get_global_rank(group, 0), group=group)
    return int(seed.item())


def broadcast_module_state(module: nn.Module, group: dist.ProcessGroup) -> None:
    """Overwrite every parameter and buffer of ``module`` with rank 0's, in place.

    The DistributedDataParallel wrapper does this when it is built; a multi-process fit without
    it must too, or ranks whose modules were built differently (random backbone weights
    without a common seed under the ``ddp`` launcher) would extract different features. Every
    rank's tensors must already have rank 0's shapes (true for freshly built modules).
    """
    source = dist.get_global_rank(group, 0)
    for tensor in list(module.parameters()) + list(module.buffers()):
        data = tensor.data
        if data.dtype == torch.bool:
            # Collectives move numbers; bool buffers (e.g. "is fitted" flags) travel as bytes.
            staged = data.to(torch.uint8)
            dist.broadcast(staged, src=source, group=group)
            data.copy_(staged.bool())
        else:
            dist.broadcast(data, src=source, group=group)


def fit_without_gradient_wrapper(strategy: Any, module: nn.Module) -> bool:
    """Make a DDP ``strategy`` fit ``module`` unwrapped when no parameter of it requires a gradient.

    Lightning calls ``strategy.configure_ddp()`` while setting up a fit, after the module's
    ``setup`` hook and after moving it to its device; this replaces that call, for this strategy
    object only, by :func:`broadcast_module_state` over the default group. Modules with a
    trainable parameter, and other strategies, are left alone.

    Returns:
        Whether the strategy was changed.
    """
    from pytorch_lightning.strategies import DDPStrategy

    if not isinstance(strategy, DDPStrategy) or any(parameter.requires_grad for parameter in module.parameters()):
        return False

    def configure_without_wrapper() -> None:
        if dist.is_available() and dist.is_initialized() and dist.get_world_size() > 1:
            broadcast_module_state(strategy.lightning_module, dist.group.WORLD)

    strategy.configure_ddp = configure_without_wrapper
    return True


def keep_reduced_metric_states(metric: Metric) -> None:
    """Replace ``metric``'s states by their reduction over all processes (its ``dist_reduce_fx``).

    ``Metric.compute`` reduces the states only while it computes and then restores the local
    ones; statistics that are read as states (the min-max and CDF normalisation statistics)
    need the reduced values kept. Every process must call it.
    """
    metric.sync(should_sync=True)
    reduced = {
        name: value.clone() if isinstance(value, torch.Tensor) else value for name, value in metric.metric_state.items()
    }
    metric.unsync()
    for name, value in reduced.items():
        setattr(metric, name, value)
