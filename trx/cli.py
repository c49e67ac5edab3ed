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
    out = Table(title=title, show_lines=False)
    for col in table.columns:
        out.add_column(str(col), justify="right" if table[col].dtype.kind in "fiu" else "left")
    for _, row in table.iterrows():
        out.add_row(*(_fmt(v) for v in row))
    return out


def _fmt(v: Any) -> str:
    if v is None or (isinstance(v, float) and v != v):
        return "-"
    if isinstance(v, float):
        return f"{v:.4g}"
    return str(v)


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
) -> None:
    """Run every optimizer arm of CONFIG and print a comparison table."""
    from trx.report import comparison_table, save_comparison
    from trx.runner import Interrupted, prepare, run_experiment, stop_on_signals, StopFlag

    if resume and overwrite:
        raise UserError("--resume and --overwrite exclude each other")
    if device is not None and device not in ("auto", "cpu", "cuda"):
        raise UserError(f"--device: must be auto, cpu or cuda, got {device!r}")
    cfg = load_config(config, set_ or [])
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
        err_console.print("interrupted: the current arm was saved; continue with --resume")
        raise typer.Exit(130) from None
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


@app.command("list")
def list_components() -> None:
    """List every registered filter, normalizer, schedule and task with its options."""
    from trx.optim import FILTERS, NORMALIZERS, Schedule
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
    section("schedules", [("schedule", "window s(t) with warmup and interval shifts", Schedule.describe_options())])
    section("tasks", [(n, c.description, c.Options.describe_options()) for n, c in sorted(TASKS.items())])


def main() -> None:
    try:
        app()
    except KeyboardInterrupt:
        sys.exit(130)


if __name__ == "__main__":
    main()
