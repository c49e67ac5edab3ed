"""The `trx` command line: parse, call the library, render. User errors exit 2 with one line."""

from __future__ import annotations

import functools
import os
import sys
from pathlib import Path
from typing import Annotated, Any

import typer
import yaml
from rich.console import Console
from rich.progress import BarColumn, MofNCompleteColumn, Progress, TextColumn, TimeElapsedColumn
from rich.table import Table

from trx.config import UserError, dump, load_config

app = typer.Typer(add_completion=False, no_args_is_help=True, help="Experiment runner for trust-region optimizers.")
console = Console()
if not console.is_terminal:  # logs and CI: wide enough that tables are not truncated
    console = Console(width=160)
err_console = Console(stderr=True, width=None if Console(stderr=True).is_terminal else 160)

ConfigArg = Annotated[Path, typer.Argument(help="experiment YAML file", show_default=False)]
SetOpt = Annotated[list[str] | None, typer.Option("--set", help="override a dotted key: KEY=VALUE (YAML value)")]
OutOpt = Annotated[Path, typer.Option("--out", help="output root (replaces runs/)")]
DeviceOpt = Annotated[str | None, typer.Option("--device", help="auto | cpu | cuda (overrides the config)")]


def user_errors(fn):
    """Turn UserError into one red line (plus a hint) and exit 2; TRX_DEBUG=1 shows tracebacks."""

    @functools.wraps(fn)
    def wrapper(*args, **kwargs):
        try:
            return fn(*args, **kwargs)
        except UserError as exc:
            if os.environ.get("TRX_DEBUG") == "1":
                raise
            err_console.print(f"[bold red]error:[/] {exc}", highlight=False, soft_wrap=True)
            if exc.hint:
                err_console.print(f"hint: {exc.hint}", highlight=False, soft_wrap=True)
            raise typer.Exit(2) from None

    return wrapper


class RichProgress:
    """Rich progress bars for `trx run`: one per arm, with the latest loss."""

    def __init__(self) -> None:
        self.bar = Progress(
            TextColumn("{task.description:<16}"),
            BarColumn(),
            MofNCompleteColumn(),
            TextColumn("loss {task.fields[loss]}"),
            TimeElapsedColumn(),
            console=console,
            transient=False,
        )
        self.ids: dict[str, Any] = {}

    def __enter__(self):
        self.bar.__enter__()
        return self

    def __exit__(self, *exc):
        self.bar.__exit__(*exc)

    def start(self, arm: str, total: int, done: int) -> None:
        self.ids[arm] = self.bar.add_task(arm, total=total, completed=done, loss="-")

    def advance(self, arm: str, step: int, loss: float | None) -> None:
        if arm in self.ids:
            self.bar.update(self.ids[arm], completed=min(step, self.bar.tasks[self.ids[arm]].total or step),
                            loss=f"{loss:.4g}" if loss is not None else "-")

    def finish(self, arm: str, summary: dict[str, Any]) -> None:
        if arm not in self.ids:
            self.start(arm, summary.get("steps") or 1, summary.get("steps_done") or 0)
        self.bar.update(self.ids[arm], description=f"{arm} [{summary['status']}]")


def render_table(table, title: str | None = None) -> Table:
    from trx.report import cell_text

    out = Table(title=title, show_lines=False)
    right = table.attrs.get("right", ())
    for col in table.columns:
        out.add_column(str(col), justify="right" if table[col].dtype.kind in "fiu" or col in right else "left")
    for _, row in table.iterrows():
        out.add_row(*(cell_text(v) for v in row))
    return out


def _print_groups(exp) -> None:
    for arm, plan in exp.group_plans.items():
        table = Table(title=f"parameter groups of arm {arm}")
        for col in ("group", "lr", "weight decay", "normalizer", "parameters"):
            table.add_column(col)
        for g in plan:
            params = ", ".join(f"{n} {tuple(p.shape)} ({r})" for n, r, p in g["params"])
            wd = f"{g['arm'].weight_decay.value:g} {g['arm'].weight_decay.mode}" if g["decay"] else "0"
            table.add_row(g["name"], f"{g['arm'].lr:g}", wd, g["arm"].normalizer.name, params)
        console.print(table)


@app.command()
@user_errors
def run(
    config: ConfigArg,
    set_: SetOpt = None,
    out: OutOpt = Path("runs"),
    device: DeviceOpt = None,
    resume: Annotated[bool, typer.Option("--resume", help="continue unfinished arms of an earlier run")] = False,
    overwrite: Annotated[bool, typer.Option("--overwrite", help="delete earlier results of these arms first")] = False,
    dry_run: Annotated[bool, typer.Option("--dry-run", help="print the resolved config and parameter groups only")] = False,
    nproc: Annotated[int, typer.Option("--nproc", min=1, help="data-parallel processes on this machine (via torchrun)")] = 1,
) -> None:
    """Run every optimizer arm of CONFIG and print a comparison table."""
    from trx.report import comparison_table, save_comparison
    from trx.runner import Interrupted, prepare, run_experiment, stop_on_signals, StopFlag

    if resume and overwrite:
        raise UserError("--resume and --overwrite exclude each other")
    if device is not None and device not in ("auto", "cpu", "cuda"):
        raise UserError(f"--device: must be auto, cpu or cuda, got {device!r}")
    cfg = load_config(config, set_ or [])
    if nproc > 1 and "WORLD_SIZE" not in os.environ:
        from trx.distributed import launch

        argv = ["run", str(config), "--out", str(out), *(f"--set={kv}" for kv in set_ or [])]
        argv += [f"--device={device}"] if device else []
        argv += ["--resume"] if resume else ["--overwrite"] if overwrite else []
        raise typer.Exit(launch(nproc, argv))
    exp = prepare(cfg, out, device)
    if dry_run:
        console.print(yaml.safe_dump(dump(cfg), sort_keys=False, allow_unicode=True))
        _print_groups(exp)
        return
    mode = "resume" if resume else "overwrite" if overwrite else "new"
    try:
        with stop_on_signals(StopFlag()) as stop, RichProgress() as progress:
            summaries = run_experiment(exp, mode, progress, stop)
    except Interrupted:
        if exp.ctx.is_main:
            err_console.print("interrupted: the current arm was saved; continue with --resume")
        raise typer.Exit(130) from None
    if not exp.ctx.is_main:
        return  # rank 0 reports
    table = comparison_table(summaries)
    save_comparison(table, exp.root / "comparison.csv")
    console.print(render_table(table, title=f"{cfg.name} ({cfg.task.name}, {cfg.steps} steps)"))
    console.print(f"results in {exp.root}")
    failed = [s["arm"] for s in summaries if s["status"] == "failed"]
    if failed:
        for s in summaries:
            if s["status"] == "failed":
                err_console.print(f"[red]arm {s['arm']} failed:[/] {s.get('error')}", highlight=False)
        raise typer.Exit(1)


GridOpt = Annotated[list[str] | None, typer.Option("--grid", help="sweep axis: KEY=V1,V2,... or KEY=log:LO:HI:N")]
RunDirsArg = Annotated[list[Path], typer.Argument(help="arm, experiment or sweep folders", show_default=False)]
MetricOpt = Annotated[str, typer.Option("--metric", help="metrics.csv column to judge by: loss, val_loss, val_acc, ...")]


class SweepProgress:
    """One bar for a sweep: cells done, running, diverged, failed; a line per finished cell."""

    def __init__(self, total: int) -> None:
        self.bar = Progress(
            TextColumn("sweep"),
            BarColumn(),
            MofNCompleteColumn(),
            TextColumn("running {task.fields[running]}  diverged {task.fields[diverged]}  failed {task.fields[failed]}"),
            TimeElapsedColumn(),
            console=console,
        )
        self.task = self.bar.add_task("sweep", total=total, running=0, diverged=0, failed=0)
        self.counts = {"running": 0, "diverged": 0, "failed": 0}
        self.skipped = 0

    def __enter__(self):
        self.bar.__enter__()
        return self

    def __exit__(self, *exc):
        self.bar.__exit__(*exc)

    def event(self, kind: str, cell: Any, summary: dict[str, Any] | None) -> None:
        if kind == "start":
            self.counts["running"] += 1
        elif kind in ("skip", "done"):
            if kind == "done":
                self.counts["running"] -= 1
                loss = summary.get("final_loss")
                tail = f"loss {loss:.4g}" if isinstance(loss, float) else (summary.get("error") or "")
                colour = {"complete": "green", "diverged": "yellow"}.get(summary["status"], "red")
                self.bar.console.print(f"[{colour}]{summary['status']:<11}[/] {cell.arm}/{cell.id}  {tail}",
                                       highlight=False)
            else:
                self.skipped += 1
            if summary["status"] in ("diverged", "failed"):
                self.counts[summary["status"]] += 1
            self.bar.advance(self.task)
        self.bar.update(self.task, **self.counts)


@app.command()
@user_errors
def sweep(
    config: ConfigArg,
    grid: GridOpt = None,
    seeds: Annotated[int | None, typer.Option("--seeds", help="run seeds seed … seed+N−1 (default: sweep.seeds)")] = None,
    jobs: Annotated[int, typer.Option("--jobs", help="cells run in parallel processes")] = 1,
    set_: SetOpt = None,
    out: OutOpt = Path("runs"),
) -> None:
    """Run every cell (arm × grid point × seed) of a sweep; finished cells are skipped."""
    from trx.report import compare_table, find_runs, lr_table
    from trx.runner import StopFlag, stop_on_signals
    from trx.sweep import (SweepInterrupted, check_plan, cpu_cores, plan_sweep, run_sweep, save_sweep_csv,
                           threads_per_job)

    if jobs < 1:
        raise UserError(f"--jobs: must be ≥ 1, got {jobs}")
    if jobs > cpu_cores():
        err_console.print(f"--jobs {jobs} is more than the {cpu_cores()} CPU cores here: running {cpu_cores()} at a time")
        jobs = cpu_cores()
    plan = plan_sweep(config, set_ or [], grid or [], seeds, out)
    check_plan(plan, None)
    arms = sorted({c.arm for c in plan.cells})
    console.print(f"sweep {plan.name}: {len(plan.cells)} cells ({', '.join(arms)}), {jobs} job(s) × "
                  f"{threads_per_job(jobs)} thread(s), into {plan.root}", highlight=False)
    interrupted = False
    with stop_on_signals(StopFlag()) as stop, SweepProgress(len(plan.cells)) as progress:
        try:
            summaries = run_sweep(plan, jobs, None, progress.event, stop)
        except SweepInterrupted:
            interrupted = True
    if progress.skipped:
        console.print(f"{progress.skipped} cell(s) were already finished and skipped")
    if interrupted:
        err_console.print("interrupted: running cells were saved; run the same command again to finish the sweep")
        raise typer.Exit(130)
    path = save_sweep_csv(plan, summaries)
    done = [plan.cell_dir(c) for c, s in zip(plan.cells, summaries) if (plan.cell_dir(c) / "summary.json").exists()]
    runs = find_runs(done) if done else []
    if runs:
        console.print(render_table(_display(compare_table(runs)), title=f"{plan.name}: cells (mean ± std over seeds)"))
        lrs = lr_table(runs)
        if not lrs.empty:
            console.print(render_table(_display(lrs), title="learning-rate tolerance (final loss, within 10% of the best)"))
    console.print(f"results in {plan.root} (one row per cell in {path.name})", highlight=False)
    console.print(f"next: trx compare {plan.root} --metric val_loss --format md | trx plot {plan.root} --kind lr",
                  highlight=False)
    failed = [(c, s) for c, s in zip(plan.cells, summaries) if s.get("status") == "failed"]
    for c, s in failed:
        err_console.print(f"[red]cell {c.arm}/{c.id} failed:[/] {s.get('error')}", highlight=False)
    if failed:
        raise typer.Exit(1)


def _display(table):
    from trx.report import display_frame

    shown = display_frame(table)
    for col in shown.columns:  # keep numeric columns right-aligned in render_table
        if col in table.columns and table[col].dtype.kind in "fiu":
            shown.attrs.setdefault("right", []).append(col)
    return shown


@app.command()
@user_errors
def compare(
    run_dirs: RunDirsArg,
    metric: MetricOpt = "loss",
    target: Annotated[float | None, typer.Option("--target", help="report the first step where METRIC reaches X")] = None,
    tolerance: Annotated[float, typer.Option("--tolerance", help="relative distance from the best lr's result")] = 0.1,
    format_: Annotated[str, typer.Option("--format", help="table | csv | md")] = "table",
) -> None:
    """Compare arms, experiments and sweeps: means over seeds, steps to a target, lr tolerance."""
    from trx.report import check_metric, compare_table, find_runs, lr_table, to_csv, to_markdown

    if format_ not in ("table", "csv", "md"):
        raise UserError(f"--format: must be table, csv or md, got {format_!r}")
    if not tolerance >= 0:
        raise UserError(f"--tolerance: must be ≥ 0, got {tolerance}")
    runs = find_runs(run_dirs)
    check_metric(runs, metric)
    cells = compare_table(runs, metric, target)
    lrs = lr_table(runs, metric, tolerance)
    lr_title = f"learning-rate tolerance (final {metric}, within {tolerance:.0%} of the best)"
    if format_ == "csv":
        print(to_csv(cells), end="")
        if not lrs.empty:
            print()
            print(to_csv(lrs), end="")
    elif format_ == "md":
        print(to_markdown(cells))
        if not lrs.empty:
            print(f"\n{lr_title}:\n")
            print(to_markdown(lrs))
    else:
        console.print(render_table(_display(cells), title="runs (mean ± std over seeds)"))
        if not lrs.empty:
            console.print(render_table(_display(lrs), title=lr_title))


@app.command()
@user_errors
def plot(
    run_dirs: RunDirsArg,
    kind: Annotated[str, typer.Option("--kind", help="curves | lr | schedule | warmup")] = "curves",
    out: Annotated[Path | None, typer.Option("--out", help="PNG file (default: <first RUN_DIR>/<kind>.png)")] = None,
    metric: MetricOpt = "loss",
) -> None:
    """Draw a figure from run folders: loss curves, result vs lr, schedules, warmup ablation."""
    from trx.plots import KINDS, make_plot
    from trx.report import find_runs

    if kind not in KINDS:
        raise UserError(f"--kind: must be one of {', '.join(KINDS)}, got {kind!r}")
    if out is not None and out.suffix.lower() != ".png":
        raise UserError(f"--out: expected a .png file, got {out}")
    runs = find_runs(run_dirs)
    first = Path(run_dirs[0])
    path = out or (first if first.is_dir() else first.parent) / f"{kind}.png"
    make_plot(kind, runs, path, metric)
    console.print(f"wrote {path}", highlight=False)


@app.command("list")
def list_components() -> None:
    """List every registered filter, normalizer, schedule and task with its options."""
    from trx.optim import FILTERS, NORMALIZERS, Schedule
    from trx.optim.schedules import PROTOTYPE_FORMULAS
    from trx.tasks import TASKS

    def section(title: str, entries: list[tuple[str, str, list[tuple[str, str, str]]]]) -> None:
        table = Table(title=title, show_lines=True)
        for col in ("name", "description", "options (default)"):
            table.add_column(col)
        for name, desc, options in entries:
            table.add_row(name, desc, "\n".join(f"{k} = {d}  {doc}" for k, d, doc in options))
        console.print(table)

    section("filters", [(n, FILTERS.describe(n), c.describe_options()) for n, c in FILTERS.items()])
    section("normalizers", [(n, NORMALIZERS.describe(n), c.describe_options()) for n, c in NORMALIZERS.items()])
    shared = Schedule.describe_options()  # every prototype takes the same warmup and interval shifts
    section("schedules", [(n, f"s = φ(q(x)), φ(x) = {f}", shared) for n, f in PROTOTYPE_FORMULAS.items()])
    section("tasks", [(n, c.description, c.Options.describe_options()) for n, c in sorted(TASKS.items())])


def main() -> None:
    try:
        app()
    except KeyboardInterrupt:
        sys.exit(130)


if __name__ == "__main__":
    main()
