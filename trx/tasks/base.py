"""The small interface every task implements, and the task registry.

A task owns its data and model; the runner owns the loop. Batches are a pure function of
(seed, step), so a resumed run sees exactly the batches an uninterrupted one would.
"""

from __future__ import annotations

from abc import ABC, abstractmethod
from typing import Any, ClassVar

import torch
from torch import Tensor, nn

from trx.optim.base import Strict


class TaskOptions(Strict):
    """Base of every task's options; unknown keys are errors that list the allowed ones."""


class DataError(Exception):
    """Data a task needs is missing or unreadable (a user error: exit 2)."""

    def __init__(self, key: str, message: str):
        super().__init__(f"{key}: {message}")
        self.key = key


class Task(ABC):
    """One training problem: a model, deterministic batches, a loss, an evaluation.

    Subclasses set `name`, `description` and `Options` (a TaskOptions subclass whose fields,
    with a `Field(description=...)` each, are the task's YAML keys besides `name`).
    """

    name: ClassVar[str]
    description: ClassVar[str]
    Options: ClassVar[type[TaskOptions]]

    def __init__(self, options: TaskOptions, seed: int, device: torch.device):
        self.options = options
        self.seed = seed
        self.device = device

    synthetic: bool = False
    """True when the task trains on made-up data (recorded in summary.json)."""

    loss_unit: ClassVar[str | None] = None
    """The unit of `loss` and `val_loss` ("nats" for a cross-entropy); recorded in summary.json,
    where plots read it for their axis labels."""

    def prepare(self) -> None:
        """Load or check data; raise DataError when it is missing. Called before any output."""

    def prepare_shapes(self) -> None:
        """Just enough for `build_model` and `param_roles`, without reading the data set (dry
        runs on a machine that lacks it). By default the full `prepare`."""
        self.prepare()

    @abstractmethod
    def build_model(self) -> nn.Module:
        """A freshly initialized model on `self.device` (the runner seeds torch before this)."""

    def param_roles(self, model: nn.Module) -> dict[str, str]:
        """Roles that differ from the defaults (embedding for nn.Embedding, else by ndim)."""
        return {}

    @abstractmethod
    def batch(self, step: int) -> Any:
        """The training batch for update `step`: a pure function of (self.seed, step)."""

    @abstractmethod
    def loss(self, model: nn.Module, batch: Any) -> Tensor:
        """Scalar training loss on `batch` (the runner calls backward on it)."""

    def evaluate(self, model: nn.Module) -> dict[str, float]:
        """Validation metrics, e.g. {"val_loss": ..., "val_acc": ...}; {} if the task has none."""
        return {}

    @classmethod
    def chance(cls, options: TaskOptions) -> dict[str, float]:
        """Each bounded metric's chance level (what uniform guessing scores), e.g. {"val_acc": 0.1}:
        `trx report` measures improvement in it from there, not from 0."""
        return {}

    def summarize(self, history: list[dict[str, float]], arm: dict[str, Any], steps: int) -> dict[str, Any]:
        """Extra summary.json entries computed from the logged rows (e.g. theory vs measurement)."""
        return {}


TASKS: dict[str, type[Task]] = {}


def register_task(cls: type[Task]) -> type[Task]:
    """Class decorator: add a task to the registry under `cls.name`."""
    if cls.name in TASKS:
        raise ValueError(f"task {cls.name!r} registered twice")
    TASKS[cls.name] = cls
    return cls


def generator(seed: int, *keys: int) -> torch.Generator:
    """A CPU generator seeded from (seed, *keys): independent streams for batches, epochs, noise."""
    mixed = seed
    for key in keys:
        mixed = (mixed * 1_000_003 + key + 1) % (2**63 - 1)
    return torch.Generator().manual_seed(mixed)
