"""Checkpoints: tensors and plain types only, loaded with `weights_only=True`.

A checkpoint holds the model, the optimizer, the step, the RNG states (one per rank) and the
loss monitor's state. Loading never unpickles arbitrary objects, so a checkpoint in a shared or
downloaded run folder cannot run code when resumed.
"""

from __future__ import annotations

import io
import pickle
from pathlib import Path
from typing import Any

import torch
import torch.distributed as dist

from trx.distributed import DistContext
from trx.errors import UserError
from trx.io import atomic_write

FILE = "checkpoint.pt"


def rng_states(ctx: DistContext) -> dict[str, Any]:
    """The CPU and CUDA generator states, gathered from every rank (a collective)."""
    cpu = torch.get_rng_state()
    cuda = torch.cuda.get_rng_state_all() if torch.cuda.is_available() else None
    if not ctx.enabled:
        return {"rng_cpu": cpu, "rng_cuda": cuda}
    gathered: list[Any] = [None] * ctx.world
    dist.all_gather_object(gathered, (cpu, cuda))
    return {"rng_cpu": [g[0] for g in gathered], "rng_cuda": [g[1] for g in gathered] if cuda is not None else None}


def restore_rng(ckpt: dict[str, Any], ctx: DistContext) -> None:
    cpu, cuda = ckpt["rng_cpu"], ckpt.get("rng_cuda")
    if ctx.enabled:  # one state per rank
        cpu, cuda = cpu[ctx.rank], cuda[ctx.rank] if cuda else None
    torch.set_rng_state(cpu)
    if cuda is not None and torch.cuda.is_available():
        torch.cuda.set_rng_state_all(cuda)


def save(path: Path, state: dict[str, Any]) -> None:
    buf = io.BytesIO()
    torch.save(state, buf)
    atomic_write(path, buf.getvalue())


def load(path: Path, device: torch.device | str = "cpu") -> dict[str, Any]:
    """Read a checkpoint; anything but tensors and plain types is refused as a UserError."""
    try:
        return torch.load(path, map_location=device, weights_only=True)
    except pickle.UnpicklingError as exc:
        first = str(exc).strip().splitlines()[0] if str(exc).strip() else type(exc).__name__
        raise UserError(f"{path}: refused to load: not a plain tensor checkpoint ({first})",
                        hint="a checkpoint holds only tensors and plain values; delete the file to start that run over") from None
    except (OSError, RuntimeError, EOFError) as exc:
        raise UserError(f"{path}: unreadable checkpoint ({type(exc).__name__})",
                        hint="delete the file to start that run over") from None


def verify(path: Path) -> None:
    """Raise UserError when an existing checkpoint would be refused at resume (nothing written)."""
    if path.exists():
        load(path)
