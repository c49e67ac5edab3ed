"""Data-parallel runs on torch.distributed: process group, batch sharding, launching.

A run started by torchrun (WORLD_SIZE > 1 in the environment) joins the process group: gloo on
CPU, nccl on CUDA. Every rank builds the same model and the same global batch, keeps its own
contiguous share of it, and DDP averages the gradients, so the update equals the one-process
update on the global batch. Only rank 0 writes outputs.
"""

from __future__ import annotations

import datetime
import os
import sys
from dataclasses import dataclass
from typing import Any

import torch
import torch.distributed as dist
from torch import Tensor, nn


@dataclass(frozen=True)
class DistContext:
    rank: int = 0
    world: int = 1
    local_rank: int = 0

    @property
    def enabled(self) -> bool:
        return self.world > 1

    @property
    def is_main(self) -> bool:
        return self.rank == 0


SINGLE = DistContext()


def timeout() -> datetime.timedelta:
    """Collective timeout: a crashed or stuck rank ends the run instead of hanging it."""
    return datetime.timedelta(seconds=float(os.environ.get("TRX_DIST_TIMEOUT", "300")))


def init_from_env(device: torch.device) -> DistContext:
    """Join the process group torchrun describes; a single process needs none."""
    world = int(os.environ.get("WORLD_SIZE", "1"))
    if world <= 1:
        return SINGLE
    rank, local = int(os.environ["RANK"]), int(os.environ.get("LOCAL_RANK", "0"))
    if not dist.is_initialized():
        backend = "nccl" if device.type == "cuda" else "gloo"
        if device.type == "cuda":
            torch.cuda.set_device(local)
        dist.init_process_group(backend, timeout=timeout())
    return DistContext(rank, world, local)


def device_for(ctx: DistContext, device: torch.device) -> torch.device:
    """Each rank on a CUDA machine takes the GPU of its local rank."""
    if ctx.enabled and device.type == "cuda":
        return torch.device("cuda", ctx.local_rank)
    return device


def shard(batch: Any, ctx: DistContext) -> Any:
    """This rank's contiguous share of a global batch (tensors split along dim 0)."""
    if not ctx.enabled:
        return batch
    if isinstance(batch, Tensor):
        if batch.dim() == 0 or batch.shape[0] % ctx.world:
            raise ValueError(f"a batch of leading size {tuple(batch.shape)[:1]} does not split over {ctx.world} ranks")
        size = batch.shape[0] // ctx.world
        return batch[ctx.rank * size : (ctx.rank + 1) * size]
    if isinstance(batch, (tuple, list)):
        return type(batch)(shard(b, ctx) for b in batch)
    if isinstance(batch, dict):
        return {k: shard(v, ctx) for k, v in batch.items()}
    raise ValueError(f"cannot split a batch of type {type(batch).__name__} over ranks")


def wrap_model(model: nn.Module, ctx: DistContext) -> nn.Module:
    """DDP around the model (BatchNorm made synchronous first, so statistics see the global batch)."""
    if not ctx.enabled:
        return model
    from torch.nn.parallel import DistributedDataParallel as DDP

    if any(isinstance(m, nn.modules.batchnorm._BatchNorm) for m in model.modules()):
        model = nn.SyncBatchNorm.convert_sync_batchnorm(model)
    device_ids = [model_device(model).index] if model_device(model).type == "cuda" else None
    return DDP(model, device_ids=device_ids, broadcast_buffers=True)


def model_device(model: nn.Module) -> torch.device:
    return next(model.parameters()).device


def mean_over_ranks(values: Tensor, ctx: DistContext) -> Tensor:
    """Average a tensor of per-rank values (e.g. buffered losses) over ranks."""
    if not ctx.enabled:
        return values
    values = values.clone()
    dist.all_reduce(values, op=dist.ReduceOp.SUM)
    return values / ctx.world


def any_rank(flag: bool, ctx: DistContext, device: torch.device) -> bool:
    """True on every rank if it is true on any (e.g. a stop request)."""
    if not ctx.enabled:
        return flag
    t = torch.tensor([1.0 if flag else 0.0], device=device)
    dist.all_reduce(t, op=dist.ReduceOp.MAX)
    return bool(t.item())


def launch(nproc: int, argv: list[str]) -> int:
    """Run `python -m trx ARGV` in `nproc` local processes through torchrun; its exit code."""
    from torch.distributed.run import get_args_parser, run

    args = get_args_parser().parse_args(
        ["--nproc-per-node", str(nproc), "--standalone", "--no-python", sys.executable, "-m", "trx", *argv]
    )
    try:
        run(args)
    except Exception as exc:  # ChildFailedError: a rank failed; its error was already printed
        print(f"error: a rank failed: {type(exc).__name__}", file=sys.stderr)
        return 1
    return 0
