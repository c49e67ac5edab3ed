"""`trx sweep`: grid expansion into cells, validation of every cell, one job per cell.

A cell is one arm × one grid point × one seed, run as an ordinary job (`trx.jobs`) whose
folder is `<out>/<name>/sweep/<arm>/<cell-id>/`; the id lists the overrides (keys sorted, below
the arm) and the seed: `lr=0.01,schedule.warmup=0,seed=1`. An arm's axes are its own
`optimizers.<arm>.*` keys, the `optimizers.*.*` keys (a named key beats `*` for the same leaf)
and every key outside `optimizers`; the axes of other arms do not multiply its cells.
"""

from __future__ import annotations

import copy
import itertools
import math
import re
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import pandas as pd
import yaml

from trx.config import MAX_RUNS, BoundarySearch, ExperimentConfig, UserError, apply_overrides, resolve, set_dotted
from trx.io import atomic_write, load_yaml, read_yaml, yaml_problem
from trx.experiment import Experiment, prepare
from trx.jobs import ArmJob, CellMeta, JobResult, check_fits, check_jobs, task_key
from trx.optim import ConfigError, plan_groups
from trx.boundary import max_probes
from trx.rundir import SWEEP, ExperimentDir, RunDir, cell_id, value_text
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
    if not isinstance(num, int) or isinstance(num, bool) or not 1 <= num <= MAX_RUNS:
        raise UserError(f"sweep.grid.{key}: num must be an integer from 1 to {MAX_RUNS:,} (the most cells a sweep may have), got {num!r}")
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
        values = load_yaml(f"[{raw}]")
    except yaml.YAMLError as exc:
        raise UserError(f"--grid {key}: the values are {yaml_problem(exc)}: {raw!r}") from None
    return key, values


def format_value(v: Any) -> str:
    """A value as it appears in a cell id (one definition, shared with reports)."""
    return value_text(v)


# ---- cells ------------------------------------------------------------------------------------
@dataclass
class Cell:
    """One arm × one grid point × one seed; `overrides` hold full dotted keys."""

    arm: str
    overrides: list[tuple[str, Any]]
    seed: int
    config: ExperimentConfig = field(repr=False)  # the validated config of this cell (one arm, no sweep)
    probe: bool = False  # a boundary probe beyond the grid (`make_cell`)

    @property
    def short(self) -> list[tuple[str, Any]]:
        """Overrides with keys below the arm (`lr`); keys outside optimizers stay full."""
        prefix = f"optimizers.{self.arm}."
        return [(k.removeprefix(prefix), v) for k, v in self.overrides]

    @property
    def id(self) -> str:
        return safe_id(cell_id(self.short, self.seed))


UNSAFE = re.compile(r"[/\\%\x00-\x1f\x7f]")
MAX_ID_BYTES = 255  # the longest file name most file systems take


def safe_id(text: str) -> str:
    """A cell id as one folder name: path separators, '%' and control characters become %XX, so a
    grid value like `../../x` names a folder inside the sweep, never a path out of it."""
    name = UNSAFE.sub(lambda m: f"%{ord(m.group()):02X}", text)
    if name in (".", "..") or len(name.encode()) > MAX_ID_BYTES:
        shown = name if len(name) <= 60 else name[:60] + "…"
        raise UserError(f"sweep: the cell id {shown!r} cannot be a folder name "
                        f"(at most {MAX_ID_BYTES} bytes, not '.' or '..')", hint="use shorter grid values")
    return name


@dataclass
class Plan:
    """An expanded sweep: every cell validated, nothing written yet."""

    name: str
    root: Path  # <out>/<name>/sweep
    cells: list[Cell]
    keys: list[str]  # the short override keys, in order, for sweep.csv columns
    config: dict[str, Any] = field(default_factory=dict, repr=False)  # the whole resolved config
    boundary: BoundarySearch | None = None  # sweep.boundary: bisect each arm's lr after this grid
    data: dict[str, Any] = field(default_factory=dict, repr=False)  # the raw config cells are made from

    @property
    def probe_limit(self) -> int:
        """At most this many boundary probe cells beyond the grid: one per bisection per series
        (arm × the other grid values × seed); 0 without `sweep.boundary`."""
        if self.boundary is None:
            return 0
        series = {(c.arm, tuple((k, value_text(v)) for k, v in c.short if k != "lr"), c.seed) for c in self.cells}
        return max_probes(len(series), self.boundary.bisections)

    def make_cell(self, arm: str, overrides: list[tuple[str, Any]], seed: int) -> Cell:
        """A cell beyond the grid (a boundary probe), validated like the grid's."""
        return Cell(arm, overrides, seed, _cell_config(self.data, arm, overrides, seed), probe=True)

    def cell_dir(self, cell: Cell) -> Path:
        """`root/<arm>/<id>`, checked to lie inside the sweep root (links planted below it count)."""
        folder = self.root / cell.arm / cell.id
        try:
            inside = folder.resolve().is_relative_to(self.root.resolve())
        except (RuntimeError, OSError) as e:  # a symlink loop (RuntimeError before Python 3.13, OSError after)
            raise UserError(f"sweep cell {cell.arm}/{cell.id}: its folder {folder} cannot be resolved ({e})",
                            hint="remove the link loop under the sweep folder") from None
        if not inside:
            raise UserError(f"sweep cell {cell.arm}/{cell.id}: its folder {folder} resolves outside {self.root}",
                            hint="remove the link that leads it there")
        return folder


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
                    cells.append(Cell(arm, overrides, seed, _cell_config(data, arm, overrides, seed)))
                except UserError as exc:
                    where = ",".join(f"{k}={format_value(v)}" for k, v in overrides)
                    raise UserError(f"sweep cell {arm} [{where}, seed={seed}]: {exc}", exc.hint) from None
    seen: dict[tuple[str, str], Cell] = {}
    for cell in cells:
        other = seen.setdefault((cell.arm, cell.id), cell)
        if other is not cell:
            raise UserError(f"sweep: two cells of arm {cell.arm} share the id {cell.id}: a grid value is listed twice, "
                            "or two values are equal to the 4 significant digits an id keeps",
                            hint="list each value once, or space them further apart")
    return cells


def check_size(data: dict[str, Any], grid: dict[str, list[Any]], seeds: list[int]) -> None:
    """Refuse a grid of more than MAX_RUNS cells before expanding it (that alone takes minutes)."""
    arms = list(data["optimizers"])
    counts = {arm: math.prod(len(v) for _, v in arm_axes(arm, grid, arms)) * len(seeds) for arm in arms}
    if sum(counts.values()) > MAX_RUNS:
        each = ", ".join(f"{arm}: {n:,}" for arm, n in counts.items())
        raise UserError(f"sweep: {sum(counts.values()):,} cells ({each}) is more than the {MAX_RUNS:,} a sweep may have",
                        hint="use fewer grid values or seeds")


def check_axes(data: dict[str, Any], arm: str, axes: list[tuple[str, list[Any]]], grid: dict[str, Any]) -> None:
    """Each axis value alone on the arm's config, so that an error names the grid key."""
    for key, values in axes:
        star = ".".join(["optimizers", "*", *key.split(".")[2:]])
        grid_key = key if key in grid else star
        for value in values:
            try:
                _cell_config(data, arm, [(key, value)], data.get("seed", 0))
            except UserError as exc:
                raise UserError(f"sweep.grid.{grid_key} = {format_value(value)} (arm {arm}): {exc}", exc.hint) from None


def _cell_config(data: dict[str, Any], arm: str, overrides: list[tuple[str, Any]], seed: int) -> ExperimentConfig:
    """The cell's validated config: only `arm`, no sweep block, overrides applied."""
    raw = {k: v for k, v in data.items() if k not in ("sweep", "seeds", "claims")}
    raw["optimizers"] = {arm: data["optimizers"][arm]}
    raw = copy.deepcopy(raw)  # set_dotted below must not touch the shared config data
    for key, value in overrides:
        set_dotted(raw, key, value)
    raw["seed"] = seed
    return resolve(raw, default_name=data["name"])


def plan_sweep(
    config: Path | dict[str, Any], sets: list[str], grid_options: list[str], seeds: int | None, out: Path
) -> Plan:
    """Read CONFIG (a YAML file, or its data), apply --set, merge the grids (command line wins),
    expand and validate."""
    data = copy.deepcopy(config) if isinstance(config, dict) else read_yaml(Path(config))
    apply_overrides(data, sets)
    base = resolve(data, default_name="experiment" if isinstance(config, dict) else Path(config).stem)
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
        seed_list = list(sweep.seeds) if sweep and sweep.seeds else base.seed_list()
    check_size(data, grid, seed_list)
    boundary = sweep.boundary if sweep else None
    if boundary is not None:
        check_lr_axes(data, grid)
    cells = expand(data, grid, seed_list)
    keys = list(dict.fromkeys(k for c in cells for k, _ in c.short))
    return Plan(base.name, Path(out) / base.name / SWEEP, cells, keys, base.model_dump(mode="json"), boundary, data)


def lr_key(arm: str) -> str:
    return f"optimizers.{arm}.lr"


def check_lr_axes(data: dict[str, Any], grid: dict[str, list[Any]]) -> None:
    """A boundary search bisects each arm's lr: every arm needs it as a grid axis of numbers > 0."""
    arms = list(data["optimizers"])
    for arm in arms:
        lrs = dict(arm_axes(arm, grid, arms)).get(lr_key(arm))
        if lrs is None or not all(_is_number(v) and v > 0 for v in lrs):
            raise UserError(f"sweep.boundary: arm {arm} needs an lr axis of numbers > 0 in sweep.grid",
                            hint=f"add {lr_key(arm)} (or optimizers.*.lr), e.g. {{log: [1e-3, 1e-1], num: 3}}")


# ---- jobs ------------------------------------------------------------------------------------
def plan_jobs(plan: Plan, device: str | None = None) -> list[ArmJob]:
    """One job per cell, in plan order; the cell's metadata goes into its folder as data."""
    return [ArmJob(cell.config, str(plan.cell_dir(cell)),
                   CellMeta(plan.name, cell.arm, cell.seed, dict(cell.overrides), cell.id, cell.probe), device)
            for cell in plan.cells]


def check_plan(plan: Plan, device: str | None) -> list[ArmJob]:
    """Every cell against its model (parameter groups) and its folder (writable; earlier results
    of a different config are an error; a folder another process holds is left to it). Builds
    one task and one model per distinct task config; writes nothing. Returns the jobs."""
    exps: dict[str, Experiment] = {}  # shapes do not depend on the seed
    for cell in plan.cells:
        cfg = cell.config
        try:
            if task_key(cfg) not in exps:
                exp = exps[task_key(cfg)] = prepare(cfg, plan.root, device)
                check_fits(exp.task, exp.model, exp.device)
            exp = exps[task_key(cfg)]
            plan_groups(exp.model, cfg.optimizers[cell.arm], exp.roles)
        except UserError as exc:
            raise UserError(f"sweep cell {cell.arm}/{cell.id}: {exc}", exc.hint) from None
        except ConfigError as exc:
            raise UserError(f"sweep cell {cell.arm}/{cell.id}: {exc.under(f'optimizers.{cell.arm}')}") from None
    jobs = plan_jobs(plan, device)
    try:
        check_jobs(jobs, "resume", locked="skip", model_for=lambda cfg: exps[task_key(cfg)].model)
    except UserError as exc:
        raise UserError(str(exc), hint="sweep into another --out, or delete that cell folder to redo it") from None
    return jobs


def write_experiment(plan: Plan, data: dict[str, Any]) -> None:
    """The whole sweep's config (all arms, grid, claims) at its root, for reports."""
    ExperimentDir(plan.root).write_experiment(data)


# ---- the record -------------------------------------------------------------------------------
SUMMARY_COLUMNS = ["status", "steps_done", "final_loss", "best_loss"]
SUMMARY_TAIL = ["diverged", "diverged_at", "wall_time_s", "threads", "error"]


def sweep_rows(plan: Plan, results: list[JobResult]) -> list[dict[str, Any]]:
    """One row per cell: arm, id, seed, one column per override key, then summary fields."""
    summaries = [cell_record(r) for r in results]
    evals = sorted({k for s in summaries for k in s if k.startswith("final_val")})
    rows = []
    for cell, s in zip(plan.cells, summaries):
        row: dict[str, Any] = {"arm": cell.arm, "cell": cell.id, "seed": cell.seed}
        row.update({k: None for k in plan.keys})
        row.update({k: v if _is_number(v) or isinstance(v, str) else format_value(v) for k, v in cell.short})
        row.update({k: s.get(k) for k in [*SUMMARY_COLUMNS, *evals, *SUMMARY_TAIL]})
        rows.append(row)
    return rows


def cell_record(result: JobResult) -> dict[str, Any]:
    """What a cell's row says: its own summary.json when that holds a finished result (another
    sweep may have finished the cell while this one found it locked), else this sweep's result."""
    summary = RunDir(result.dir).finished_summary()
    if summary is not None:
        return summary
    return {**result.summary, "status": result.status, "error": result.error}


def save_sweep_csv(plan: Plan, results: list[JobResult]) -> Path:
    """sweep.csv, rebuilt from the cells' records under a lock (two sweeps of one grid may finish
    at once: each rewrites the whole table from what the cell folders hold)."""
    root = ExperimentDir(plan.root)
    with root.sweep_lock():
        atomic_write(root.sweep_csv, pd.DataFrame(sweep_rows(plan, results)).to_csv(index=False))
    return root.sweep_csv
