"""The rounds of a boundary sweep (`sweep.boundary`): round 0 is the ordinary grid; after each
round the finished cells are read back, `trx.boundary.plan_probes` names each series' next lr,
and those probes run as ordinary sweep cells (own folder, summary, resumable) on the same
executor, until no series probes again. Rerunning the command replays the rounds: finished
cells are reused and the plan recomputed from them, so it reaches the same cells."""

from __future__ import annotations

from dataclasses import replace
from typing import Any

import pandas as pd

from trx.boundary import Probe, brackets, plan_probes, point_text
from trx.executors import Executor, run_jobs
from trx.io import atomic_write
from trx.jobs import ArmJob, JobResult, Notify
from trx.rundir import UNFINISHED, ExperimentDir, value_text
from trx.sweep_plan import Cell, Plan, cell_record, check_plan, lr_key


def cell_probe(cell: Cell, summary: dict[str, Any]) -> Probe:
    point = tuple((k, value_text(v)) for k, v in cell.short if k != "lr")
    return Probe(cell.arm, point, cell.seed, float(dict(cell.overrides)[lr_key(cell.arm)]), summary)


def coarse_lrs(plan: Plan) -> dict[str, list[float]]:
    """Each arm's lr grid (round 0)."""
    out: dict[str, set[float]] = {}
    for cell in plan.cells:
        out.setdefault(cell.arm, set()).add(float(dict(cell.overrides)[lr_key(cell.arm)]))
    return {arm: sorted(lrs) for arm, lrs in out.items()}


def cell_probes(cells: list[Cell], results: list[JobResult]) -> list[Probe]:
    """Every cell as a probe; one without an outcome (crashed) makes its series incomplete."""
    return [cell_probe(cell, cell_record(r)) for cell, r in zip(cells, results)]


def next_cells(plan: Plan, cells: list[Cell], results: list[JobResult]) -> list[Cell]:
    """The probes of the next round as cells: each a grid cell of its series with the lr replaced."""
    assert plan.boundary is not None
    b = plan.boundary
    targets = plan_probes(cell_probes(cells, results), coarse_lrs(plan), b.stable.model_dump(), b.bisections, b.per)
    templates = {(c.arm, cell_probe(c, {}).point, c.seed): c for c in plan.cells}
    have = {(c.arm, c.id) for c in cells}
    out = []
    for arm, point, seed, lr in targets:
        for (t_arm, t_point, t_seed), t in templates.items():
            if (t_arm, t_point) == (arm, point) and seed in (None, t_seed):
                overrides = [(k, lr if k == lr_key(arm) else v) for k, v in t.overrides]
                cell = plan.make_cell(arm, overrides, t_seed)
                if (arm, cell.id) not in have:
                    out.append(cell)
    return out


def search(plan: Plan, jobs: list[ArmJob], executor: Executor, notify: Notify | None, stop: Any
           ) -> tuple[Plan, list[ArmJob], list[JobResult]]:
    """Run the grid's `jobs` (checked by the caller), then the probe rounds; returns the plan
    with every cell run, their jobs and results (in order). Stops after a round a stop request
    or an unfinished cell interrupted."""
    cells, results = list(plan.cells), run_jobs(jobs, executor, notify, stop)
    while not any(r.status in UNFINISHED for r in results):
        todo = next_cells(plan, cells, results)
        if not todo:
            break
        round_jobs = check_plan(replace(plan, cells=todo), None)
        cells, jobs = cells + todo, jobs + round_jobs
        results = results + run_jobs(round_jobs, executor, notify, stop)
    return replace(plan, cells=cells), jobs, results


def boundary_rows(plan: Plan, results: list[JobResult]) -> list[dict[str, Any]]:
    """One row per series: arm, grid point, seed (`all` for `per: all`), L, U, status, lrs probed."""
    assert plan.boundary is not None
    probes = cell_probes(plan.cells, results)
    rows = []
    for (arm, point, seed), br in brackets(probes, plan.boundary.stable.model_dump(), plan.boundary.per).items():
        n = len({p.lr for p in probes if p.arm == arm and p.point == point and seed in (None, p.seed)})
        rows.append({"arm": arm, "point": point_text(point), "seed": "all" if seed is None else seed,
                     "lr_stable": br.stable, "lr_unstable": br.unstable, "status": br.status, "bracket": br.text(),
                     "lrs_probed": n})
    return rows


def save_boundary_csv(plan: Plan, results: list[JobResult]) -> None:
    root = ExperimentDir(plan.root)
    with root.sweep_lock():
        atomic_write(root.boundary_csv, pd.DataFrame(boundary_rows(plan, results)).to_csv(index=False))
