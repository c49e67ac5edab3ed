"""`trx sweep`: grid expansion into cells, validation of every cell, parallel runs, resume.

A cell is one arm × one grid point × one seed, run as an ordinary one-arm experiment whose
folder is `<out>/<name>/sweep/<arm>/<cell-id>/`; the id lists the overrides (keys sorted, below
the arm) and the seed: `lr=0.01,schedule.warmup=0,seed=1`. An arm's axes are its own
`optimizers.<arm>.*` keys, the `optimizers.*.*` keys (a named key beats `*` for the same leaf)
and every key outside `optimizers`; the axes of other arms do not multiply its cells.
"""

from __future__ import annotations

import concurrent.futures as cf
import contextlib
import copy
import itertools
import math
import multiprocessing as mp
import os
import signal
from dataclasses import dataclass, field, fields
from pathlib import Path
from typing import Any, Callable

import pandas as pd
import torch
import yaml

from trx.config import UserError, arm_config, diff_keys, parse_override, read_yaml, resolve, set_dotted
from trx import io
from trx.io import atomic_write, read_json
from trx.optim import ConfigError, plan_groups
from trx.runner import Experiment, Interrupted, StopFlag, check_output, prepare, run_experiment, stop_on_signals

FINISHED = ("complete", "diverged")
RESERVED_KEYS = {"name": "the experiment name names the output folder", "seed": "use sweep.seeds or --seeds",
                 "sweep": "a sweep cannot sweep its own grid"}


# ---- grid values ------------------------------------------------------------------------------
def axis_values(key: str, spec: Any) -> list[Any]:
    """A grid entry → its values: a list, {log: [lo, hi], num: n}, {linear: [lo, hi], num: n}, or
    one scalar."""
    if isinstance(spec, list):
        if not spec:
            raise UserError(f"sweep.grid.{key}: needs at least one value")
        return spec
    if isinstance(spec, dict):
        kinds = [k for k in ("log", "linear") if k in spec]
        extra = set(spec) - {"log", "linear", "num"}
        if len(kinds) != 1 or extra or "num" not in spec:
            raise UserError(f"sweep.grid.{key}: expected a list, {{log: [lo, hi], num: n}} or {{linear: [lo, hi], num: n}}")
        return spaced(key, kinds[0], spec[kinds[0]], spec["num"])
    return [spec]


def spaced(key: str, kind: str, bounds: Any, num: Any) -> list[float]:
    """`num` points from lo to hi inclusive, evenly in log10 (kind "log") or linearly."""
    ok = isinstance(bounds, list) and len(bounds) == 2 and all(_is_number(b) for b in bounds)
    if not ok:
        raise UserError(f"sweep.grid.{key}: {kind} needs [lo, hi], got {bounds!r}")
    if not isinstance(num, int) or isinstance(num, bool) or num < 1:
        raise UserError(f"sweep.grid.{key}: num must be an integer ≥ 1, got {num!r}")
    lo, hi = float(bounds[0]), float(bounds[1])
    if kind == "log":
        if lo <= 0 or hi <= 0:
            raise UserError(f"sweep.grid.{key}: log bounds must be > 0, got [{lo:g}, {hi:g}]")
        lo, hi = math.log10(lo), math.log10(hi)
    points = [lo] if num == 1 else [lo + (hi - lo) * i / (num - 1) for i in range(num)]
    # Round away float noise (10**-3.0000000000000004) so ids and configs read cleanly.
    return [float(f"{10**p if kind == 'log' else p:.12g}") for p in points]


def _is_number(v: Any) -> bool:
    return isinstance(v, (int, float)) and not isinstance(v, bool)


def parse_grid_option(text: str) -> tuple[str, list[Any]]:
    """`--grid KEY=V1,V2,...` (each a YAML value) or `KEY=log:LO:HI:N` / `KEY=linear:LO:HI:N`."""
    key, sep, raw = text.partition("=")
    key, raw = key.strip(), raw.strip()
    if not sep or not key or not raw or any(not part for part in key.split(".")):
        raise UserError(f"--grid {text!r}: expected KEY=V1,V2,... or KEY=log:LO:HI:N, e.g. optimizers.adamw.lr=log:1e-4:1e-1:7")
    head = raw.split(":", 1)[0]
    if head in ("log", "linear"):
        parts = raw.split(":")
        if len(parts) != 4:
            raise UserError(f"--grid {key}: expected {head}:LO:HI:N, got {raw!r}")
        try:
            lo, hi, num = float(parts[1]), float(parts[2]), int(parts[3])
        except ValueError:
            raise UserError(f"--grid {key}: expected numbers in {head}:LO:HI:N, got {raw!r}") from None
        return key, spaced(key, head, [lo, hi], num)
    try:
        values = yaml.safe_load(f"[{raw}]")
    except yaml.YAMLError:
        raise UserError(f"--grid {key}: the values are not valid YAML: {raw!r}") from None
    return key, values


def format_value(v: Any) -> str:
    """A value as it appears in a cell id: numbers in %.4g, the rest as compact YAML."""
    if isinstance(v, bool):
        return "true" if v else "false"
    if _is_number(v):
        return f"{v:.4g}"
    if isinstance(v, str):
        return v
    return yaml.safe_dump(v, default_flow_style=True, width=10**6, sort_keys=False).strip().replace(" ", "").replace("/", "_")


# ---- cells ------------------------------------------------------------------------------------
@dataclass
class Cell:
    """One arm × one grid point × one seed; `overrides` hold full dotted keys."""

    arm: str
    overrides: list[tuple[str, Any]]
    seed: int
    data: dict[str, Any] = field(repr=False)  # the resolved config as plain data (one arm, no sweep)

    @property
    def short(self) -> list[tuple[str, Any]]:
        """Overrides with keys below the arm (`lr`); keys outside optimizers stay full."""
        prefix = f"optimizers.{self.arm}."
        return [(k.removeprefix(prefix), v) for k, v in self.overrides]

    @property
    def id(self) -> str:
        return ",".join(f"{k}={format_value(v)}" for k, v in [*self.short, ("seed", self.seed)])


@dataclass
class Plan:
    """An expanded sweep: every cell validated, nothing written yet."""

    name: str
    root: Path  # <out>/<name>/sweep
    cells: list[Cell]
    keys: list[str]  # the short override keys, in order, for sweep.csv columns

    def cell_dir(self, cell: Cell) -> Path:
        return self.root / cell.arm / cell.id


def arm_axes(arm: str, grid: dict[str, list[Any]], arms: list[str]) -> list[tuple[str, list[Any]]]:
    """The axes that multiply `arm`'s cells, as (full key with the arm's name, values)."""
    axes: dict[str, list[Any]] = {}
    named = {k for k in grid if k.startswith(f"optimizers.{arm}.")}
    for key, values in grid.items():
        parts = key.split(".")
        if parts[0] in RESERVED_KEYS:
            raise UserError(f"sweep.grid.{key}: cannot be a grid key ({RESERVED_KEYS[parts[0]]})")
        if parts[0] != "optimizers":
            axes[key] = values
            continue
        if len(parts) < 3:
            raise UserError(f"sweep.grid.{key}: a grid key below optimizers names an arm and a key, e.g. optimizers.{arm}.lr")
        if parts[1] not in ("*", *arms):
            raise UserError(f"sweep.grid.{key}: no arm named {parts[1]!r}; arms: {', '.join(arms)}, or *")
        if parts[1] == arm:
            axes[key] = values
        elif parts[1] == "*":  # this arm's own key for the same leaf, if any, takes the place and wins
            own = ".".join(["optimizers", arm, *parts[2:]])
            axes[own] = grid[own] if own in named else values
    return list(axes.items())


def expand(data: dict[str, Any], grid: dict[str, list[Any]], seeds: list[int]) -> list[Cell]:
    """Every cell of every arm, each validated (raises UserError naming the cell and key)."""
    arms = list(data["optimizers"])
    cells = []
    for arm in arms:
        # Sorted keys: the same grid written in another order names the same cells (resume finds them).
        axes = sorted(arm_axes(arm, grid, arms), key=lambda axis: axis[0].removeprefix(f"optimizers.{arm}."))
        check_axes(data, arm, axes, grid)
        keys = [k for k, _ in axes]
        for point in itertools.product(*(v for _, v in axes)):
            for seed in seeds:
                overrides = list(zip(keys, point))
                try:
                    cells.append(Cell(arm, overrides, seed, _cell_data(data, arm, overrides, seed)))
                except UserError as exc:
                    where = ",".join(f"{k}={format_value(v)}" for k, v in overrides)
                    raise UserError(f"sweep cell {arm} [{where}, seed={seed}]: {exc}", exc.hint) from None
    seen: dict[tuple[str, str], Cell] = {}
    for cell in cells:
        other = seen.setdefault((cell.arm, cell.id), cell)
        if other is not cell:
            raise UserError(f"sweep: two cells of arm {cell.arm} share the id {cell.id} (values equal at %.4g)")
    return cells


def check_axes(data: dict[str, Any], arm: str, axes: list[tuple[str, list[Any]]], grid: dict[str, Any]) -> None:
    """Each axis value alone on the arm's config, so that an error names the grid key."""
    for key, values in axes:
        star = ".".join(["optimizers", "*", *key.split(".")[2:]])
        grid_key = key if key in grid else star
        for value in values:
            try:
                _cell_data(data, arm, [(key, value)], data.get("seed", 0))
            except UserError as exc:
                raise UserError(f"sweep.grid.{grid_key} = {format_value(value)} (arm {arm}): {exc}", exc.hint) from None


def _cell_data(data: dict[str, Any], arm: str, overrides: list[tuple[str, Any]], seed: int) -> dict[str, Any]:
    """The cell's resolved config as plain data: only `arm`, no sweep block, overrides applied."""
    raw = {k: v for k, v in data.items() if k != "sweep"}
    raw["optimizers"] = {arm: data["optimizers"][arm]}
    raw = copy.deepcopy(raw)  # set_dotted below must not touch the shared config data
    for key, value in overrides:
        set_dotted(raw, key, value)
    raw["seed"] = seed
    return resolve(raw, default_name=data["name"]).model_dump(mode="json")


def plan_sweep(
    config: Path, sets: list[str], grid_options: list[str], seeds: int | None, out: Path
) -> Plan:
    """Read CONFIG, apply --set, merge the grids (command line wins), expand and validate."""
    data = read_yaml(Path(config))
    for text in sets:
        set_dotted(data, *parse_override(text))
    base = resolve(data, default_name=Path(config).stem)
    data["name"] = base.name
    sweep = base.sweep
    grid = {k: axis_values(k, v) for k, v in (sweep.grid if sweep else {}).items()}
    for text in grid_options:
        key, values = parse_grid_option(text)
        grid.pop(key, None)
        grid[key] = values
    if seeds is not None:
        if seeds < 1:
            raise UserError(f"--seeds: must be ≥ 1, got {seeds}")
        seed_list = [base.seed + i for i in range(seeds)]
    else:
        seed_list = list(sweep.seeds) if sweep and sweep.seeds else [base.seed]
    cells = expand(data, grid, seed_list)
    keys = list(dict.fromkeys(k for c in cells for k, _ in c.short))
    return Plan(base.name, Path(out) / base.name / "sweep", cells, keys)


# ---- checks against the model and the disk ----------------------------------------------------
@dataclass
class CellExperiment(Experiment):
    """The runner's Experiment whose one arm lives in `root/<cell-id>` instead of `root/<arm>`."""

    cell_id: str = ""

    def arm_dir(self, arm: str) -> Path:
        return self.root / self.cell_id


def cell_experiment(exp: Experiment, root: Path, cell_id: str) -> CellExperiment:
    values = {f.name: getattr(exp, f.name) for f in fields(exp)}
    values["root"] = root
    return CellExperiment(**values, cell_id=cell_id)


def check_plan(plan: Plan, device: str | None) -> None:
    """Every cell against its model (parameter groups) and its folder (writable; earlier results
    of a different config are an error). Builds one task per distinct task config; writes nothing."""
    prepared: dict[str, Experiment] = {}
    for cell in plan.cells:
        cfg = resolve(cell.data)
        key = yaml.safe_dump([cell.data["task"], cell.data["device"]])
        if key not in prepared:
            try:
                prepared[key] = prepare(cfg, plan.root, device)
            except UserError as exc:
                raise UserError(f"sweep cell {cell.arm}/{cell.id}: {exc}", exc.hint) from None
        exp = prepared[key]
        try:
            groups = plan_groups(exp.task.build_model(), cfg.optimizers[cell.arm], exp.roles)
        except ConfigError as exc:
            raise UserError(f"sweep cell {cell.arm}/{cell.id}: {exc.under(f'optimizers.{cell.arm}')}") from None
        old = io.read_yaml(plan.cell_dir(cell) / "config.yaml")
        differ = diff_keys(old, arm_config(cfg, cell.arm)) if old is not None else []
        if differ:
            raise UserError(
                f"{plan.cell_dir(cell)} holds a result of a different config; it differs at {', '.join(differ[:8])}",
                hint="sweep into another --out, or delete that cell folder to redo it",
            )
        cexp = cell_experiment(exp, plan.root / cell.arm, cell.id)
        cexp.cfg, cexp.group_plans = cfg, {cell.arm: groups}
        check_output(cexp, "resume")


# ---- running ----------------------------------------------------------------------------------
@dataclass
class Job:
    """What a worker needs to run one cell (plain data: it crosses a process boundary)."""

    arm: str
    cell_id: str
    data: dict[str, Any]
    root: str  # <out>/<name>/sweep
    device: str | None
    threads: int | None


def run_cell(job: Job, stop: Any = None) -> dict[str, Any]:
    """Run (or finish) one cell; returns its summary. Failures become a `failed` summary."""
    try:
        cfg = resolve(job.data)
        if job.threads and not cfg.threads:
            torch.set_num_threads(job.threads)
        exp = cell_experiment(prepare(cfg, Path(job.root), job.device), Path(job.root) / job.arm, job.cell_id)
        with stop_on_signals(stop or StopFlag()) as flag:
            return run_experiment(exp, "resume", None, flag)[0]
    except Interrupted:
        return {"arm": job.arm, "status": "interrupted", "error": None}
    except Exception as exc:  # a cell that cannot even start is a recorded failure
        if os.environ.get("TRX_DEBUG") == "1":
            raise
        return {"arm": job.arm, "status": "failed", "error": f"{type(exc).__name__}: {exc}"}


class _SharedStop:
    """A StopFlag backed by a process-shared Event, so the parent can stop every worker."""

    signal_name = "SIGINT"

    def __init__(self, event: Any):
        self.event = event

    @property
    def requested(self) -> bool:
        return self.event.is_set()

    @requested.setter
    def requested(self, value: bool) -> None:
        if value:
            self.event.set()


_WORKER_STOP: Any = None


def _worker_init(event: Any) -> None:
    global _WORKER_STOP
    signal.signal(signal.SIGINT, signal.SIG_IGN)  # idle workers ignore Ctrl-C; the parent decides
    _WORKER_STOP = _SharedStop(event)


def _worker_run(job: Job) -> dict[str, Any]:
    if _WORKER_STOP.requested:  # queued before the stop: leave its folder untouched
        return {"arm": job.arm, "status": "not run", "error": None}
    return run_cell(job, _WORKER_STOP)


class SweepInterrupted(Exception):
    """Ctrl-C during a sweep: running cells were saved as `interrupted`."""


def cpu_cores() -> int:
    return len(os.sched_getaffinity(0)) if hasattr(os, "sched_getaffinity") else os.cpu_count() or 1


def threads_per_job(jobs: int) -> int:
    """Torch threads per cell so that jobs × threads ≤ cores."""
    return max(1, cpu_cores() // jobs)


def run_sweep(plan: Plan, jobs: int = 1, device: str | None = None, on_event: Callable[..., None] | None = None,
              stop: Any = None) -> list[dict[str, Any]]:
    """Run every unfinished cell, `jobs` at a time; returns one summary per cell in plan order.
    `on_event(kind, cell, summary)` reports "skip", "start" and "done". Raises SweepInterrupted."""
    notify = on_event or (lambda *a: None)
    summaries: dict[int, dict[str, Any]] = {}
    todo = []
    for i, cell in enumerate(plan.cells):
        previous = read_json(plan.cell_dir(cell) / "summary.json")
        if previous and previous.get("status") in FINISHED:
            summaries[i] = previous
            notify("skip", cell, previous)
        else:
            todo.append(i)
    threads = threads_per_job(jobs)
    job_of = {i: Job(plan.cells[i].arm, plan.cells[i].id, plan.cells[i].data, str(plan.root), device, threads)
              for i in todo}
    if jobs <= 1:
        _run_serial(plan, todo, job_of, summaries, notify, stop)
    else:
        _run_parallel(plan, todo, job_of, summaries, notify, stop, jobs)
    return [summaries.get(i) or {"arm": c.arm, "status": "not run"} for i, c in enumerate(plan.cells)]


def _run_serial(plan, todo, job_of, summaries, notify, stop) -> None:
    stop = stop or StopFlag()
    for i in todo:
        if stop.requested:
            raise SweepInterrupted
        notify("start", plan.cells[i], None)
        summaries[i] = run_cell(job_of[i], stop)
        notify("done", plan.cells[i], summaries[i])
        if summaries[i]["status"] == "interrupted":
            raise SweepInterrupted


def _context() -> Any:
    """forkserver where available: workers fork from one process that imported trx once (torch
    is slow to import); spawn elsewhere. Never plain fork from a process that may hold threads."""
    if "forkserver" in mp.get_all_start_methods():
        ctx = mp.get_context("forkserver")
        ctx.set_forkserver_preload(["trx.sweep"])
        return ctx
    return mp.get_context("spawn")


def _run_parallel(plan, todo, job_of, summaries, notify, stop, jobs) -> None:
    ctx = _context()
    event = ctx.Event()
    with cf.ProcessPoolExecutor(max_workers=jobs, mp_context=ctx, initializer=_worker_init, initargs=(event,)) as pool:
        with _ignoring_ctrl_c():  # processes started now (the forkserver, workers) inherit it
            futures = {pool.submit(_worker_run, job_of[i]): i for i in todo}
        started: set[int] = set()
        pending = set(futures)
        while pending:
            if stop is not None and stop.requested:
                event.set()
                for f in pending:
                    f.cancel()
            done, pending = cf.wait(pending, timeout=0.2, return_when=cf.FIRST_COMPLETED)
            for f in sorted(pending, key=futures.get):
                if f.running() and futures[f] not in started:
                    started.add(futures[f])
                    notify("start", plan.cells[futures[f]], None)
            for f in done:
                if not f.cancelled():
                    i = futures[f]
                    summaries[i] = _outcome(f, plan.cells[i], event)
                    notify("done", plan.cells[i], summaries[i])
            pending = {f for f in pending if not f.cancelled()}
    if event.is_set() or any(s.get("status") == "interrupted" for s in summaries.values()):
        raise SweepInterrupted


def _outcome(future: cf.Future, cell: Cell, event: Any) -> dict[str, Any]:
    try:
        return future.result()
    except Exception as exc:  # the worker process died under the cell
        status = "interrupted" if event.is_set() else "failed"
        return {"arm": cell.arm, "status": status, "error": f"{type(exc).__name__}: {exc}"}


@contextlib.contextmanager
def _ignoring_ctrl_c():
    """Ignore SIGINT for a moment (main thread only): a child started meanwhile inherits the
    disposition, so a Ctrl-C for the whole process group cannot kill it half-started; the
    parent decides, through the shared stop event."""
    try:
        old = signal.signal(signal.SIGINT, signal.SIG_IGN)
    except ValueError:  # not the main thread
        yield
        return
    try:
        yield
    finally:
        signal.signal(signal.SIGINT, old)


# ---- the record -------------------------------------------------------------------------------
SUMMARY_COLUMNS = ["status", "steps_done", "final_loss", "best_loss"]
SUMMARY_TAIL = ["diverged", "diverged_at", "wall_time_s", "threads", "error"]


def sweep_rows(plan: Plan, summaries: list[dict[str, Any]]) -> list[dict[str, Any]]:
    """One row per cell: arm, id, seed, one column per override key, then summary fields."""
    evals = sorted({k for s in summaries for k in s if k.startswith("final_val")})
    rows = []
    for cell, s in zip(plan.cells, summaries):
        row: dict[str, Any] = {"arm": cell.arm, "cell": cell.id, "seed": cell.seed}
        row.update({k: None for k in plan.keys})
        row.update({k: v if _is_number(v) or isinstance(v, str) else format_value(v) for k, v in cell.short})
        row.update({k: s.get(k) for k in [*SUMMARY_COLUMNS, *evals, *SUMMARY_TAIL]})
        rows.append(row)
    return rows


def save_sweep_csv(plan: Plan, summaries: list[dict[str, Any]]) -> Path:
    path = plan.root / "sweep.csv"
    atomic_write(path, pd.DataFrame(sweep_rows(plan, summaries)).to_csv(index=False))
    return path
