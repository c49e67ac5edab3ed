"""Every config under configs/experiments/ validates cell by cell, its claims name cells that the
sweep makes, and it runs a few steps of one cell per arm on the CPU (shrunk: the GPU sizes run at a
CPU size; marked slow)."""

from __future__ import annotations

import csv
from pathlib import Path
from typing import Any

import pytest
from typer.testing import CliRunner

from trx.cli import app
from trx.io import read_yaml
from trx.sweep_plan import axis_values, check_plan, plan_sweep

FOLDER = Path(__file__).resolve().parents[1] / "configs" / "experiments"
CONFIGS = sorted(FOLDER.glob("*.yaml"))
CPU = [p for p in CONFIGS if not p.stem.endswith("_gpu")]
GPU = [p for p in CONFIGS if p.stem.endswith("_gpu")]

# A few steps of a model small enough for seconds, whatever size the config asks for.
SHRINK = {
    "small_gpt": ["task.n_layer=1", "task.n_head=2", "task.n_embd=16", "task.block_size=8", "task.batch_size=2",
                  "task.eval_batches=1", "task.compile=false", "task.amp=none"],
    "cifar_resnet": ["task.dataset=fashion_mnist", "task.data_dir=null", "task.width=4", "task.batch_size=4",
                     "task.train_size=16", "task.val_size=8", "task.eval_batch_size=8", "task.amp=none"],
    "quadratic1d": [],
}
RUN = ["steps=4", "eval_every=0", "log_every=1", "device=cpu", "threads=1"]


def test_every_question_has_a_cpu_and_a_gpu_size():
    stems = {p.stem for p in CONFIGS}
    for name in ("lr_tolerance_gpt", "lr_tolerance_resnet", "warmup_gpt", "filters_gpt", "newton_schulz_gpt",
                 "windows_gpt"):
        assert {name, f"{name}_gpu"} <= stems, name


def first_values(data: dict[str, Any]) -> list[str]:
    """--grid options that keep one value of every axis of the config's grid: one cell per arm."""
    grid = (data.get("sweep") or {}).get("grid") or {}
    return [f"--grid={key}={axis_values(key, spec)[0]}" for key, spec in grid.items()]


def sweep(path: Path, out: Path, *extra: str):
    data = read_yaml(path)
    sets = [f"--set={s}" for s in [*RUN, *SHRINK[data["task"]["name"]]]]
    result = CliRunner().invoke(app, ["sweep", str(path), "--seeds", "1", "--out", str(out), *sets,
                                      *first_values(data), *extra], env={"COLUMNS": "200"})
    assert result.exit_code == 0, result.output
    rows = list(csv.DictReader(next(out.glob("*/sweep/sweep.csv")).open()))
    assert {r["arm"] for r in rows} == set(data["optimizers"])
    for r in rows:
        assert r["status"] in ("complete", "diverged"), (r["arm"], r["cell"], r["error"])
    return rows


@pytest.mark.parametrize("path", CPU, ids=lambda p: p.stem)
def test_cpu_size_runs_a_few_steps(path, tmp_path):
    sweep(path, tmp_path)


@pytest.mark.slow
@pytest.mark.parametrize("path", GPU, ids=lambda p: p.stem)
def test_gpu_size_runs_a_few_steps_shrunk(path, tmp_path):
    sweep(path, tmp_path)


@pytest.mark.parametrize("path", CONFIGS, ids=lambda p: p.stem)
def test_every_cell_validates_and_every_claim_selects_cells(path, tmp_path):
    """The whole grid (every arm × grid point × seed) against its model, before any run; and each
    claim's `a`/`b` names an arm and `where` values that some cell of that arm has."""
    data = read_yaml(path)
    shrink = SHRINK[data["task"]["name"]] if path in GPU else []
    plan = plan_sweep(path, shrink, [], None, tmp_path)
    check_plan(plan, "cpu")
    assert len({c.seed for c in plan.cells}) >= (3 if data["task"]["name"] != "quadratic1d" else 1)
    cells = {arm: [dict(c.short) for c in plan.cells if c.arm == arm] for arm in data["optimizers"]}
    for claim in data.get("claims", []):
        for side in [s for s in ("a", "b") if s in claim]:  # an lr_transfer claim has only `a`
            group = claim[side]
            assert group["arm"] in cells, (claim["text"], side)
            where = group.get("where", {})
            hits = [c for c in cells[group["arm"]] if all(c.get(k) == v for k, v in where.items())]
            assert hits, (claim["text"], side, where)
