"""Checkpoints: tensors and plain types only, loaded with `weights_only=True`.

A checkpoint holds the model, the optimizer, the step, the RNG states (one per rank), the loss
monitor's state and the config the run was started with. Loading never unpickles arbitrary
objects, so a checkpoint in a shared or downloaded run folder cannot run code when resumed; and
before a run continues from one, `check` verifies it against that run (docs/sweeps.md, "What a
checkpoint is trusted with"): anything else is refused, never cast or clipped.
"""

from __future__ import annotations

import io
import pickle
from pathlib import Path
from typing import Any, Callable, Iterator

import torch
import torch.distributed as dist

from trx.data_parallel import DistContext
from trx.errors import UserError
from trx.io import atomic_write


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


def verify(path: Path, config: dict[str, Any], model: torch.nn.Module | None = None) -> dict[str, Any] | None:
    """The checkpoint at `path` (None when there is none), checked as `check` does (the weights
    only given the model); raises UserError when a resume would refuse it (nothing is written)."""
    if not path.exists():
        return None
    ckpt = load(path)
    check(ckpt, model, config, config["steps"], path)
    return ckpt


def check(ckpt: Any, model: torch.nn.Module | None, config: dict[str, Any], steps: int, path: Path) -> None:
    """A checkpoint continues this run only if it was written by it: the config it was started
    with equals `config`, its step lies within the run, every tensor is finite, and (given the
    model) its weights have the model's names, shapes and dtypes. Raises UserError."""
    def refuse(what: str) -> UserError:
        return UserError(f"{path}: refused: {what}", hint="delete the checkpoint (or the run folder) to start that run over")

    if not isinstance(ckpt, dict) or not {"step", "model", "optimizer", "config", "metrics_rows", "elapsed"} <= set(ckpt):
        raise refuse("not a trx checkpoint of this version (it lacks the step, weights, optimizer or config)")
    from trx.config import config_changes

    changed = config_changes(ckpt["config"], config)
    if changed:
        raise refuse(f"written under another config; it differs at {', '.join(changed[:8])}")
    step, rows = ckpt["step"], ckpt["metrics_rows"]
    if not _is_int(step) or not 0 <= step <= steps or not _is_int(rows) or rows < 0:
        raise refuse(f"its step {step!r} is not within the run's {steps} updates")
    bad = next((name for name, t in _tensors(ckpt, "") if t.is_floating_point() and not bool(torch.isfinite(t).all())), None)
    if bad is not None:
        raise refuse(f"{bad} holds values that are not finite")
    if model is not None:
        check_weights(ckpt["model"], model, refuse)


def check_weights(saved: Any, model: torch.nn.Module, refuse: Callable[[str], UserError]) -> None:
    """Saved weights must have the model's names, shapes and dtypes: nothing is cast on load."""
    want = model.state_dict()
    if not isinstance(saved, dict) or set(saved) != set(want):
        raise refuse("its weights do not name the model's parameters")
    for name, t in want.items():
        got = saved[name]
        if not isinstance(got, torch.Tensor) or got.shape != t.shape or got.dtype != t.dtype:
            shown = f"{tuple(got.shape)} {got.dtype}" if isinstance(got, torch.Tensor) else type(got).__name__
            raise refuse(f"weight {name} is {shown}, the model's is {tuple(t.shape)} {t.dtype}")


class Checkpointer:
    """The checkpoint of one run: `path`, the run's `config` (what a checkpoint must have been
    started with), and the ranks (every rank saves, since the RNG states are gathered, but only
    rank 0 writes; every rank restores)."""

    def __init__(self, path: Path, config: dict[str, Any], ctx: DistContext, device: torch.device):
        self.path, self.config, self.ctx, self.device = Path(path), config, ctx, device

    def restore(self, model: torch.nn.Module, optimizer: Any, monitor: Any) -> tuple[int, float] | None:
        """Load the checkpoint into the model, optimizer, RNGs and monitor after `check` accepts
        it; its (step, elapsed seconds), or None when there is none. Raises UserError."""
        if not self.path.exists():
            return None
        ckpt = load(self.path, self.device)
        check(ckpt, model, self.config, self.config["steps"], self.path)
        model.load_state_dict(ckpt["model"])
        optimizer.load_state_dict(ckpt["optimizer"])
        restore_rng(ckpt, self.ctx)
        monitor.load(ckpt["monitor"])
        return ckpt["step"], ckpt["elapsed"]

    def save(self, step: int, model: torch.nn.Module, optimizer: Any, monitor: Any, elapsed: float,
             metrics_rows: int) -> None:
        rng = rng_states(self.ctx)  # a collective: every rank calls it
        if not self.ctx.is_main:
            return
        save(self.path, {
            "step": step,
            "model": model.state_dict(),
            "optimizer": optimizer.state_dict(),
            **rng,
            "elapsed": elapsed,
            "metrics_rows": metrics_rows,
            "monitor": monitor.state(),
            "config": self.config,  # what the run was started with (config.yaml may go)
        })

    def delete(self) -> None:
        if self.ctx.is_main:
            self.path.unlink(missing_ok=True)


def _is_int(value: Any) -> bool:
    return isinstance(value, int) and not isinstance(value, bool)


def _tensors(value: Any, where: str) -> Iterator[tuple[str, torch.Tensor]]:
    """Every tensor in nested dicts and lists, with its dotted place."""
    if isinstance(value, torch.Tensor):
        yield where, value
    elif isinstance(value, dict):
        for k, v in value.items():
            yield from _tensors(v, f"{where}.{k}" if where else str(k))
    elif isinstance(value, (list, tuple)):
        for i, v in enumerate(value):
            yield from _tensors(v, f"{where}.{i}")
