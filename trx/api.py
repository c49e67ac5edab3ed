"""The Python API: what `trx run` and `trx sweep` do, from Python.

    import trx
    outcome = trx.run("configs/quickstart.yaml", out="runs")          # or a dict of the same keys
    outcome = trx.sweep("configs/lr_sweep.yaml", out="runs", executor="local:2")
    for run in trx.load(outcome.root):                                  # typed records of each run
        print(run.arm, run.seed, run.summary["final_loss"])

A config is a YAML path, its data as a dict, or a validated `ExperimentConfig`; it is validated
once here (a bad key raises `trx.errors.UserError` naming it). Results are the same files the
command writes; `Outcome` (`trx.service`) says what each run did.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

from trx.compare import RunRecord, find_runs
from trx.config import ExperimentConfig, load_config, resolve
from trx.executors import Executor, make_executor
from trx.jobs import Notify
from trx.service import Outcome, run_experiment, run_sweep
from trx.sweep_plan import Plan, plan_sweep

Config = str | Path | dict[str, Any] | ExperimentConfig


def config(source: Config, overrides: list[str] | tuple[str, ...] = ()) -> ExperimentConfig:
    """The validated experiment config of a YAML path, a dict or a config (with `--set` overrides)."""
    if isinstance(source, ExperimentConfig):
        return resolve(source.model_dump(mode="json"), overrides) if overrides else source
    if isinstance(source, dict):
        return resolve(source, overrides)
    return load_config(source, overrides)


def run(source: Config, out: str | Path = "runs", *, overrides: list[str] | tuple[str, ...] = (),
        device: str | None = None, mode: str = "new", executor: str | Executor = "inprocess",
        notify: Notify | None = None, stop: Any = None) -> Outcome:
    """`trx run`: every arm, once per seed, into `out/<name>/`. mode: new | resume | overwrite;
    executor: a name (`inprocess`, `local:2`, `ray:auto`) or an executor."""
    chosen = make_executor(executor) if isinstance(executor, str) else executor
    return run_experiment(config(source, overrides), Path(out), device=device, mode=mode, executor=chosen,
                          notify=notify, stop=stop)


def sweep(source: str | Path | dict[str, Any] | Plan, out: str | Path = "runs", *,
          overrides: list[str] | tuple[str, ...] = (), grid: list[str] | tuple[str, ...] = (), seeds: int | None = None,
          executor: str | Executor = "inprocess", notify: Notify | None = None, stop: Any = None,
          dry_run: bool = False) -> Outcome:
    """`trx sweep`: every cell (arm × grid point × seed) into `out/<name>/sweep/`; finished cells
    are kept. `grid`: extra axes as `--grid` writes them (`optimizers.adam.lr=log:1e-4:1e-1:4`).
    `dry_run`: every cell checked against its model, nothing written or run."""
    plan = source if isinstance(source, Plan) else plan_sweep(source, list(overrides), list(grid), seeds, Path(out))
    chosen = make_executor(executor) if isinstance(executor, str) else executor
    return run_sweep(plan, executor=chosen, notify=notify, stop=stop, dry_run=dry_run)


def load(*folders: str | Path) -> list[RunRecord]:
    """Every run at or below the given arm, experiment or sweep folders, as typed records (what
    the folder is from cell.json; summary, config and metrics read from its files)."""
    return find_runs([Path(f) for f in folders])
