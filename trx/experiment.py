"""Planning one experiment: its device, its task with data, the one model its checks are made on.

`prepare` is what a plan needs before anything is written (`trx.service`, `trx.sweep_plan`):
the device, the task, one model and every arm's parameter groups on it; `load_experiment` is
what a job needs before its run builds the model it trains (`trx.runner`). Nothing here trains.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import torch
import yaml

from trx import data_parallel as D
from trx.config import ExperimentConfig
from trx.errors import UserError
from trx.optim import ConfigError, plan_groups
from trx.tasks import TASKS, DataError, Task


def resolve_device(name: str) -> torch.device:
    if name == "auto":
        return torch.device("cuda" if torch.cuda.is_available() else "cpu")
    if name == "cuda" and not torch.cuda.is_available():
        raise UserError("device: cuda was asked for but torch sees no CUDA device", hint="use --device cpu")
    return torch.device(name)


_TASKS: dict[str, Task] = {}  # tasks with their data loaded, newest last
_TASK_CACHE_SIZE = 4


def make_task(cfg: ExperimentConfig, device: torch.device) -> Task:
    """The experiment's task with its data loaded. Runs in one process that share the task
    config, seed and device share one task, so data is read once (batches are a pure function
    of seed and step, so sharing changes nothing)."""
    key = yaml.safe_dump([cfg.task.model_dump(mode="json"), cfg.seed, str(device)], sort_keys=True)
    if key in _TASKS:
        _TASKS[key] = _TASKS.pop(key)
        return _TASKS[key]
    task = TASKS[cfg.task.name](cfg.task, cfg.seed, device)
    try:
        task.prepare()
    except DataError as exc:
        raise UserError(str(exc)) from None
    _TASKS[key] = task
    while len(_TASKS) > _TASK_CACHE_SIZE:
        _TASKS.pop(next(iter(_TASKS)))
    return task


def build_model(task: Task, seed: int) -> torch.nn.Module:
    torch.manual_seed(seed)
    if torch.cuda.is_available():
        torch.cuda.manual_seed_all(seed)
    return task.build_model()


@dataclass
class Experiment:
    """A validated experiment on its device, with its task: nothing has been written yet."""

    cfg: ExperimentConfig
    task: Task
    device: torch.device
    root: Path
    roles: dict[str, str]
    group_plans: dict[str, list[dict[str, Any]]] = field(default_factory=dict)
    ctx: D.DistContext = D.SINGLE
    model: torch.nn.Module | None = None  # the one model the plan's checks were made on (`prepare`)


def prepare(cfg: ExperimentConfig, out: Path, device: str | None = None, shapes_only: bool = False) -> Experiment:
    """Resolve the device, load data, build the model once and check every arm against it (the
    shape checks of planning). `shapes_only`: read no data, only what the model's shapes need
    (dry runs)."""
    if shapes_only:
        dev = resolve_device(device or cfg.device)
        task = TASKS[cfg.task.name](cfg.task, cfg.seed, dev)
        task.prepare_shapes()
        exp = Experiment(cfg, task, dev, Path(out) / cfg.name, {})
    else:
        exp = load_experiment(cfg, out, device)
    exp.model = build_model(exp.task, cfg.seed)
    exp.roles, exp.group_plans = exp.task.param_roles(exp.model), plan_arms(cfg, exp.model, exp.task)
    return exp


def load_experiment(cfg: ExperimentConfig, out: Path, device: str | None = None) -> Experiment:
    """The device, the process group and the task with its data: what a run needs before it
    builds its model (its arms were checked when it was planned)."""
    if cfg.threads:
        torch.set_num_threads(cfg.threads)
    dev = resolve_device(device or cfg.device)
    ctx = D.init_from_env(dev)
    dev = D.device_for(ctx, dev)
    task = make_task(cfg, dev)
    if ctx.enabled:
        try:
            D.shard(task.batch(0), ctx)
        except ValueError as exc:
            raise UserError(f"task: {cfg.task.name} cannot run data-parallel on {ctx.world} ranks: {exc}") from None
    return Experiment(cfg, task, dev, Path(out) / cfg.name, {}, ctx=ctx)


def plan_arms(cfg: ExperimentConfig, model: torch.nn.Module, task: Task) -> dict[str, list[dict[str, Any]]]:
    """Every arm's parameter groups on `model` (a config error names the arm)."""
    roles, plans = task.param_roles(model), {}
    for name, arm in cfg.optimizers.items():
        try:
            plans[name] = plan_groups(model, arm, roles)
        except ConfigError as exc:
            raise UserError(str(exc.under(f"optimizers.{name}"))) from None
    return plans
