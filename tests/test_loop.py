"""The training loop alone (`trx.loop`): it yields rows and events and touches no file; one
divergence path; and a cell's model is built once (planning builds one per task config)."""

from __future__ import annotations

import csv
import os
from pathlib import Path
from typing import Any

import pytest

from trx.config import resolve
from trx.executors import InProcess, run_jobs
from trx.experiment import load_experiment
from trx.loop import CHECKPOINT, DIVERGED, DONE, ROW, STOPPED, Clock, new_monitor
from trx.runner import build_loop
from trx.service import run_experiment
from trx.stop import StopFlag
from trx.sweep_plan import check_plan, plan_sweep
from trx.tasks.quadratic1d import Quadratic1D


def quad(**over: Any) -> dict[str, Any]:
    cfg: dict[str, Any] = {
        "name": "q", "seed": 0, "steps": 5, "eval_every": 0, "log_every": 1, "checkpoint_every": 0,
        "task": {"name": "quadratic1d", "curvature": 1.0, "init": 1.0, "noise": 0.1},
        "optimizers": {"gd": {"lr": 0.5}},
    }
    cfg.update(over)
    return cfg


def loop_of(data: dict[str, Any], tmp_path: Path, stop: StopFlag | None = None):
    cfg = resolve(data)
    exp = load_experiment(cfg, tmp_path / "never")
    return build_loop(exp, next(iter(cfg.optimizers)), new_monitor(cfg), stop or StopFlag(), Clock())


def test_the_loop_yields_every_row_and_writes_nothing(tmp_path, monkeypatch):
    monkeypatch.chdir(tmp_path)
    events = list(loop_of(quad(), tmp_path))
    assert [e.kind for e in events] == [ROW] * 6 + [DONE]
    assert [e.row["step"] for e in events[:-1]] == [0, 1, 2, 3, 4, 5]
    assert [e.at for e in events[:-1]] == [1, 2, 3, 4, 5, 5]  # updates done when the row came
    loss = [e.row["loss"] for e in events[:-1]]
    assert loss[-1] < loss[0]  # gd on the quadratic descends
    assert events[0].row["update_norm"] > 0 and "update_norm" not in events[-2].row  # t = τ: no update
    assert list(tmp_path.iterdir()) == []  # no file, no folder: the loop only trains


def test_the_loop_yields_what_a_run_records(tmp_path):
    """metrics.csv is the loop's rows, nothing added or lost (wall time aside)."""
    data = quad(steps=12, log_every=4, checkpoint_every=5)
    rows = [e.row for e in loop_of(data, tmp_path) if e.row is not None]
    run_experiment(resolve(data), tmp_path, executor=InProcess())
    with (tmp_path / "q" / "gd" / "metrics.csv").open() as f:
        recorded = list(csv.DictReader(f))
    assert [int(r["step"]) for r in recorded] == [r["step"] for r in rows] == [0, 4, 8, 11, 12]
    assert [float(r["loss"]) for r in recorded] == pytest.approx([r["loss"] for r in rows], rel=1e-6)


def test_checkpoints_are_asked_for_inside_the_run_only(tmp_path):
    events = list(loop_of(quad(steps=12, log_every=4, checkpoint_every=5), tmp_path))
    assert [e.at for e in events if e.kind == CHECKPOINT] == [5, 10]


def test_a_stop_raised_while_a_row_is_handled_ends_the_loop_before_the_next_update(tmp_path):
    stop = StopFlag()
    loop = loop_of(quad(steps=20, log_every=1), tmp_path, stop)
    seen = []
    for event in loop:
        seen.append(event)
        if event.kind == ROW and event.at == 7:
            stop.requested = True
    assert [e.kind for e in seen[-2:]] == [ROW, STOPPED] and seen[-1].at == 7 and loop.t == 7


@pytest.mark.parametrize("log_every,checkpoint_every", [(1, 0), (8, 0), (8, 3), (40, 2)])
def test_divergence_takes_one_path_wherever_it_is_seen(tmp_path, log_every, checkpoint_every):
    """Found at a row, at a full loss buffer, before a checkpoint or at the end: the loop ends
    with one `diverged` event whose row is the first divergent loss, and nothing after it."""
    data = quad(steps=40, log_every=log_every, checkpoint_every=checkpoint_every,
                optimizers={"hb": {"lr": 3.5, "filter": {"name": "heavy_ball", "beta": 0.5}}})
    loop = loop_of(data, tmp_path)
    events = list(loop)
    assert events[-1].kind == DIVERGED and [e.kind for e in events].count(DIVERGED) == 1
    assert DONE not in [e.kind for e in events]
    assert events[-1].row["step"] == loop.diverged_at == 4  # the same update whatever the cadence
    assert all(e.row["step"] < 4 for e in events[:-1] if e.row)
    assert not loop.pending  # every loss was handed to the monitor


# ---- one model per cell -----------------------------------------------------------------------
@pytest.fixture
def builds(monkeypatch):
    """How many models the quadratic task has built (a counter on its `build_model`)."""
    count = [0]
    real = Quadratic1D.build_model

    def counted(self):
        count[0] += 1
        return real(self)

    monkeypatch.setattr(Quadratic1D, "build_model", counted)
    return count


def sweep(**over: Any) -> dict[str, Any]:
    return quad(steps=6, log_every=2, checkpoint_every=2, optimizers={"gd": {"lr": 0.5}, "hb": {"lr": 0.5}},
                sweep={"grid": {"optimizers.*.lr": [0.1, 0.3]}, "seeds": [0, 1]}, **over)


@pytest.mark.parametrize("keep_checkpoint", [False, True])
def test_a_sweep_cell_builds_its_model_once_and_planning_once_per_task(tmp_path, builds, keep_checkpoint):
    data = sweep(keep_checkpoint=keep_checkpoint)
    for attempt in range(2):  # the second plan resumes: every kept checkpoint is checked against a model
        plan = plan_sweep(data, [], [], None, tmp_path)
        builds[0] = 0
        jobs = check_plan(plan, None)
        assert len(jobs) == 8 and builds[0] == 1, attempt  # 8 cells, one task config
        builds[0] = 0
        results = run_jobs(jobs, InProcess())
        assert builds[0] == (8 if attempt == 0 else 0)  # each cell once; finished cells are not rerun
        assert {r.status for r in results} == {"complete"}
    assert all(os.path.exists(Path(j.dir) / "checkpoint.pt") == keep_checkpoint for j in jobs)


def test_planning_builds_one_model_per_distinct_task_config(tmp_path, builds):
    data = sweep()
    data["sweep"]["grid"]["task.curvature"] = [1.0, 2.0, 3.0]
    plan = plan_sweep(data, [], [], None, tmp_path)
    builds[0] = 0
    check_plan(plan, None)
    assert len(plan.cells) == 24 and builds[0] == 3  # 8 cells per curvature, one model each
    data["sweep"]["grid"]["task.init"] = [1.0, 2.0]
    builds[0] = 0
    check_plan(plan_sweep(data, [], [], None, tmp_path), None)
    assert builds[0] == 6


def test_trx_run_plans_with_one_model_and_each_run_builds_one(tmp_path, builds):
    data = quad(optimizers={"gd": {"lr": 0.5}, "hb": {"lr": 0.5, "filter": "heavy_ball"}}, checkpoint_every=2,
                keep_checkpoint=True)
    run_experiment(resolve(data), tmp_path, executor=InProcess())
    assert builds[0] == 1 + 2  # the plan's one, then one per arm
    builds[0] = 0
    run_experiment(resolve(data), tmp_path, mode="resume", executor=InProcess())
    assert builds[0] == 1  # both checkpoints checked against the plan's model; finished arms not rerun
