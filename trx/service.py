"""The experiment service: what `trx run`, `trx sweep`, the Python API (`trx.run`, `trx.sweep`)
and the tests all call. Plan → jobs → executor → results: the plan is checked whole before
anything is written, the jobs run on any executor (`trx.executors.make_executor`), and the
outcome says what each job did. It prints nothing: the callers render.
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path
from typing import Any

from trx.boundary_search import save_boundary_csv, search
from trx.config import ExperimentConfig, dump
from trx.experiment import Experiment, prepare
from trx.executors import Executor, InProcess, run_jobs
from trx.jobs import ArmJob, JobResult, Notify, arm_jobs, check_fits, check_jobs, clear
from trx.rundir import UNFINISHED, ExperimentDir, Status
from trx.sweep_plan import Plan, check_plan, save_sweep_csv, write_experiment


@dataclass
class Outcome:
    """What a run or a sweep did: its folder, its jobs and their results (in job order)."""

    root: Path  # the experiment folder of `trx run`, the sweep folder of `trx sweep`
    jobs: list[ArmJob]
    results: list[JobResult]
    main: bool = True  # False on the data-parallel ranks that report nothing (all but rank 0)

    @property
    def interrupted(self) -> bool:
        return any(r.status in UNFINISHED for r in self.results)

    @property
    def summaries(self) -> list[dict[str, Any]]:
        return [r.summary or {"arm": r.dir, "status": r.status, "error": r.error} for r in self.results]

    def with_status(self, status: Status) -> list[tuple[ArmJob, JobResult]]:
        return [(job, r) for job, r in zip(self.jobs, self.results) if r.status == status]


def check_experiment(cfg: ExperimentConfig, out: Path, device: str | None = None,
                     shapes_only: bool = False) -> Experiment:
    """The plan's checks alone (`trx run --dry-run`): the model and every arm's parameter groups
    (`shapes_only`: without reading data); nothing is written."""
    return prepare(cfg, out, device, shapes_only)


def run_experiment(cfg: ExperimentConfig, out: Path, *, device: str | None = None, mode: str = "new",
                   executor: Executor | None = None, notify: Notify | None = None, stop: Any = None) -> Outcome:
    """Every arm of `cfg`, once per seed, into `out/<name>/`. mode: new (refuse earlier results),
    resume (continue them) or overwrite (delete them first); raises UserError before writing
    anything when the plan cannot run."""
    exp = prepare(cfg, out, device)  # data, the one model of the checks and every arm's groups
    check_fits(exp.task, exp.model, exp.device)
    jobs = arm_jobs(cfg, exp.root, device)
    check_jobs(jobs, mode, locked="error" if exp.ctx.is_main else "ignore", model_for=lambda _: exp.model)
    exp.model = None  # the runs build their own
    if exp.ctx.is_main:
        root = ExperimentDir(exp.root)
        if mode == "overwrite":
            clear(jobs)
            root.clear_comparison()
        root.write_experiment(dump(cfg))
    if exp.ctx.enabled:
        import torch.distributed as dist

        dist.barrier()
    results = run_jobs(jobs, executor or InProcess(), notify, stop)
    return Outcome(exp.root, jobs, results, exp.ctx.is_main)


def run_sweep(plan: Plan, *, executor: Executor | None = None, notify: Notify | None = None,
              stop: Any = None, dry_run: bool = False) -> Outcome:
    """Every cell of a planned sweep (finished cells are kept), then sweep.csv unless stopped; a
    boundary sweep runs its probe rounds after the grid and writes boundary.csv too. `dry_run`:
    the grid's cells checked (the plan's checks), nothing written or run."""
    jobs = check_plan(plan, None)
    if dry_run:
        return Outcome(plan.root, jobs, [])
    write_experiment(plan, plan.config)
    if plan.boundary is None:
        outcome = Outcome(plan.root, jobs, run_jobs(jobs, executor or InProcess(), notify, stop))
    else:  # the grid, then bisection rounds of probe cells (trx.boundary_search)
        plan, jobs, results = search(plan, jobs, executor or InProcess(), notify, stop)
        outcome = Outcome(plan.root, jobs, results)
    if not outcome.interrupted:
        save_sweep_csv(plan, outcome.results)
        if plan.boundary is not None:
            save_boundary_csv(plan, outcome.results)
    return outcome
