"""Splitting per-matrix work over data-parallel ranks (the pattern of the fastest GPT speed runs).

Under data parallelism every rank holds the same filtered gradients, so orthogonalizing every
matrix on every rank repeats the same Newton–Schulz work N times. Instead each rank takes a
share of the matrices, balanced by FLOPs, and the results are all-gathered: per-rank work falls
as 1/N and every rank ends with the same update as a single process.
"""

from __future__ import annotations

from collections.abc import Callable, Sequence

import torch
import torch.distributed as dist
from torch import Tensor


def newton_schulz_flops(shape: Sequence[int], steps: int = 5) -> float:
    """Multiply-adds of `steps` quintic iterations on a matrix (short side m, long side n):
    X·Xᵀ (m²n), A·A (m³), B·X (m²n) per step."""
    rows, cols = shape[0], int(torch.tensor(shape[1:]).prod()) if len(shape) > 1 else 1
    m, n = min(rows, cols), max(rows, cols)
    return steps * (2 * m * m * n + m**3)


def balance(costs: Sequence[float], world: int) -> list[int]:
    """Owner rank of each item: largest first onto the least-loaded rank (ties: lowest rank)."""
    load = [0.0] * world
    owner = [0] * len(costs)
    for i in sorted(range(len(costs)), key=lambda i: (-costs[i], i)):
        r = min(range(world), key=lambda r: (load[r], r))
        owner[i] = r
        load[r] += costs[i]
    return owner


def data_parallel_world() -> tuple[int, int]:
    """(rank, world) of the default process group, or (0, 1) without one."""
    if dist.is_available() and dist.is_initialized():
        return dist.get_rank(), dist.get_world_size()
    return 0, 1


def sharded_map(
    items: list[Tensor], fn: Callable[[list[Tensor]], list[Tensor]], costs: Sequence[float]
) -> list[Tensor]:
    """fn applied to `items` (outputs shaped like inputs), the work split over the ranks of the
    default process group; every rank returns every output."""
    rank, world = data_parallel_world()
    if world == 1 or len(items) < 2:
        return fn(items)
    owner = balance(costs, world)
    mine = [i for i, r in enumerate(owner) if r == rank]
    done = fn([items[i] for i in mine]) if mine else []
    sizes = [sum(items[i].numel() for i, r in enumerate(owner) if r == k) for k in range(world)]
    ref = items[0]
    flat = torch.zeros(max(sizes), dtype=ref.dtype, device=ref.device)
    if done:
        flat[: sizes[rank]] = torch.cat([t.reshape(-1) for t in done])
    # moved as bytes: exact for every dtype, and gloo gathers no bfloat16
    gathered = [torch.empty_like(flat) for _ in range(world)]
    dist.all_gather([g.view(torch.uint8) for g in gathered], flat.view(torch.uint8))
    out: list[Tensor | None] = [None] * len(items)
    offsets = [0] * world
    for i, r in enumerate(owner):
        n = items[i].numel()
        out[i] = gathered[r][offsets[r] : offsets[r] + n].view_as(items[i])
        offsets[r] += n
    return out  # type: ignore[return-value]
