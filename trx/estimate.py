"""How long an experiment will take, from a few timed updates of each arm (`trx run --dry-run`).

An update is what the run loop does for one step (batch, loss, backward, optimizer step); an
evaluation is one `task.evaluate`. Logging, checkpoints and start-up are left out, so the
estimate is a lower bound on this machine at its present load."""

from __future__ import annotations

import math
import os
import time
from dataclasses import dataclass
from typing import Any

import torch

from trx.optim import build_optimizer
from trx.experiment import Experiment, build_model

TIMED_UPDATES = 5


@dataclass
class ArmEstimate:
    arm: str
    update_s: float  # seconds per update
    eval_s: float  # seconds per evaluation
    run_s: float  # one run: steps × update + evaluations × eval


def time_arm(exp: Experiment, arm: str, n: int = TIMED_UPDATES) -> ArmEstimate:
    """Time `n` updates of `arm` after one untimed warm-up update (allocation, first kernels)."""
    cfg, task = exp.cfg, exp.task
    model = build_model(task, cfg.seed)
    opt = build_optimizer(model, cfg.optimizers[arm], cfg.steps, roles=exp.roles, grad_clip=cfg.grad_clip)

    def update(t: int) -> None:
        task.loss(model, task.batch(t)).backward()
        opt.step()
        opt.zero_grad(set_to_none=True)

    update(0)
    start = time.perf_counter()
    for t in range(1, n + 1):
        update(t)
    update_s = (time.perf_counter() - start) / n
    evals = math.ceil(cfg.steps / cfg.eval_every) + 1 if cfg.eval_every else 0
    eval_s = _time_eval(model, task) if evals else 0.0
    return ArmEstimate(arm, update_s, eval_s, cfg.steps * update_s + evals * eval_s)


def _time_eval(model: torch.nn.Module, task: Any) -> float:
    model.eval()
    start = time.perf_counter()
    with torch.no_grad():
        task.evaluate(model)
    model.train()
    return time.perf_counter() - start


def estimate(exp: Experiment, at_a_time: int) -> tuple[list[ArmEstimate], float]:
    """Per arm, and the whole experiment's wall time: every arm once per seed, `at_a_time` runs
    in parallel (a lower bound: runs are spread evenly over the parallel slots)."""
    arms = [time_arm(exp, arm) for arm in exp.cfg.optimizers]
    seeds = len(exp.cfg.seed_list())
    return arms, sum(a.run_s for a in arms) * seeds / max(1, at_a_time)


def load_text() -> str:
    try:
        return f"load {os.getloadavg()[0]:.1f}"
    except OSError:
        return "load unknown"
