"""The `trx` command line: parse, call the library, render. User errors exit 2 with one line."""

from __future__ import annotations

import contextlib
import functools
import os
import sys
import threading
from pathlib import Path
from typing import TYPE_CHECKING, Annotated, Any

import typer
from rich.console import Console
from rich.progress import BarColumn, MofNCompleteColumn, Progress, TextColumn, TimeElapsedColumn, TimeRemainingColumn
from rich.table import Table

from trx.errors import UserError, debug
from trx.rundir import ExperimentDir, RunDir, Status

if TYPE_CHECKING:
    from trx.config import ExperimentConfig

# Torch is imported only by the commands that train (run, sweep, list): --help, compare, plot
# and report start in well under a second.

app = typer.Typer(add_completion=False, no_args_is_help=True, help="Experiment runner for trust-region optimizers.")
console = Console()
if not console.is_terminal:  # logs and CI: wide enough that tables are not truncated
    console = Console(width=160)


def _reader_is_done() -> None:
    """`trx list | head`: the reader closed the pipe having read all it wanted; not an error
    (rich's default exits 1)."""
    os.dup2(os.open(os.devnull, os.O_WRONLY), sys.stdout.fileno())
    raise SystemExit(0)


console.on_broken_pipe = _reader_is_done  # type: ignore[method-assign]
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
            if debug():
                raise
            err_console.print(f"[bold red]error:[/] {exc}", highlight=False, soft_wrap=True)
            if exc.hint:
                err_console.print(f"hint: {exc.hint}", highlight=False, soft_wrap=True)
            raise typer.Exit(2) from None

    return wrapper


class RichProgress:
    """Rich progress bars for `trx run` in one process: one per arm, with the latest loss and ETA."""

    def __init__(self) -> None:
        self.bar = Progress(
            TextColumn("{task.description:<16}"),
            BarColumn(),
            MofNCompleteColumn(),
            TextColumn("loss {task.fields[loss]}"),
            TimeElapsedColumn(),
            TextColumn("eta"),
            TimeRemainingColumn(),
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


IDENTIFYING = ("run", "arm", "optimizer", "cell", "group")  # columns that tell rows apart


def render_table(table, title: str | None = None) -> Table:
    """A rich table of a data frame. Identifying columns are never cut: they keep the width of
    their longest value (other text columns fold onto further lines instead of ending in …)."""
    from trx.compare import cell_text

    out = Table(title=title, show_lines=False)
    right = table.attrs.get("right", ())
    rows = [[cell_text(v) for v in row] for _, row in table.iterrows()]
    for i, col in enumerate(table.columns):
        numeric = table[col].dtype.kind in "fiu" or col in right
        longest = max((len(r[i]) for r in rows), default=0) if str(col) in IDENTIFYING else None
        out.add_column(str(col), justify="right" if numeric else "left", overflow="fold", min_width=longest)
    for row in rows:
        out.add_row(*row)
    return out


def show(table: Table) -> None:
    """Print a table: on a terminal fitted to its width; into a pipe or file at the table's full
    width, so that nothing is cut or wrapped for the reader that comes after."""
    if not console.is_terminal:
        wide = console.measure(table, options=console.options.update(max_width=10_000)).maximum
        console.width = max(console.width, wide)
    console.print(table)


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


JobsOpt = Annotated[int | None, typer.Option("--jobs", help="runs in parallel processes (default: as many as cores allow when there are several seeds)")]
SeedsOpt = Annotated[int | None, typer.Option("--seeds", help="run seeds seed … seed+N−1 (overrides the config's seeds)")]
ExecutorOpt = Annotated[str | None, typer.Option("--executor", show_default=False, help="where runs run: inprocess | "
                        "local:N (N processes here; --jobs N) | ray:ADDRESS (a Ray cluster; --ray ADDRESS)")]
TensorBoardOpt = Annotated[bool, typer.Option("--tensorboard", help="also write TensorBoard scalars into each run folder")]


class JobProgress:
    """The whole set as one bar (runs finished, how many run now, ETA), a bar per running run
    with its step, latest loss and ETA, and a line per run as it ends. What runs is read from
    the runs' folders (the lock's holder file, the last metrics.csv row), so it is the same for
    worker processes and Ray cells, and a run handed to a busy pool counts only once it runs."""

    POLL_S = 1.0

    def __init__(self, total: int, label: str = "runs", out: Console | None = None) -> None:
        self.bar = Progress(TextColumn("{task.description:<24}"), BarColumn(), MofNCompleteColumn(),
                            TextColumn("{task.fields[info]}"), TimeElapsedColumn(), TextColumn("eta"),
                            TimeRemainingColumn(), console=out or console)
        self.task = self.bar.add_task(label, total=total, info="")
        self.counts = {"diverged": 0, "failed": 0}
        self.skipped: list[Any] = []
        self.locked: list[tuple[Any, Any]] = []
        self.handed: dict[str, Any] = {}  # folder -> job handed to the executor, not yet done
        self.rows: dict[str, Any] = {}  # folder -> its bar, once it runs
        self.guard = threading.Lock()
        self.ended = threading.Event()
        self.poller = threading.Thread(target=self._poll_loop, daemon=True)

    def __enter__(self):
        self.bar.__enter__()
        self.poller.start()
        return self

    def __exit__(self, *exc):
        self.ended.set()
        self.poller.join()
        self.bar.__exit__(*exc)

    def _poll_loop(self) -> None:
        while not self.ended.wait(self.POLL_S):
            self.poll()

    def poll(self) -> None:
        """Refresh the bars of running runs; a run runs while its folder's lock has a holder."""
        with self.guard:
            for folder, job in self.handed.items():
                if folder not in self.rows and RunDir(folder).is_held():
                    self.rows[folder] = self.bar.add_task(_run_label(job), total=job.config.steps, info="starting")
                row = RunDir(folder).last_metrics() if folder in self.rows else None
                if row is not None:
                    loss = row.get("loss")
                    self.bar.update(self.rows[folder], completed=row["step"], info=f"loss {loss:.4g}" if loss is not None else "")
            self._summary()

    def _summary(self) -> None:
        running, queued = len(self.rows), len(self.handed) - len(self.rows)
        text = f"running {running}" + (f", queued {queued}" if queued else "")
        text += "".join(f", {k} {v}" for k, v in self.counts.items() if v)
        self.bar.update(self.task, info=text)

    def event(self, kind: str, job: Any, result: Any) -> None:
        with self.guard:
            if kind == "start":
                self.handed[job.dir] = job
            elif kind == "skip":
                self.skipped.append(job)
                self.bar.advance(self.task)
            elif kind == "done":
                self._done(job, result)
            self._summary()

    def _done(self, job: Any, result: Any) -> None:
        self.handed.pop(job.dir, None)
        row = self.rows.pop(job.dir, None)
        if row is not None:
            self.bar.remove_task(row)
        if result.status == "locked":
            self.locked.append((job, result))
        else:
            val, loss = result.summary.get("final_val_loss"), result.summary.get("final_loss")
            tail = (f"val_loss {val:.4g}" if isinstance(val, float) else
                    f"train loss {loss:.4g}" if isinstance(loss, float) else (result.error or ""))
            colour = {"complete": "green", "diverged": "yellow"}.get(result.status, "red")
            self.bar.console.print(f"[{colour}]{result.status:<11}[/] {_run_label(job)}  {tail}", highlight=False)
        if result.status in self.counts:
            self.counts[result.status] += 1
        self.bar.advance(self.task)


def _run_label(job: Any) -> str:
    """The cell label, with the seed for runs of `trx run --seeds` (their label has none)."""
    return job.meta.label + (f" seed={job.meta.seed}" if job.meta.cell is None else "")


def _relaunch_argv(nproc: int) -> list[str]:
    """This command's own arguments without --nproc, for the ranks torchrun starts."""
    args, out, skip = sys.argv[1:], [], False
    for a in args:
        if skip:
            skip = False
        elif a == "--nproc":
            skip = True
        elif not a.startswith("--nproc="):
            out.append(a)
    return out


@app.command()
@user_errors
def run(
    config: ConfigArg,
    set_: SetOpt = None,
    out: OutOpt = Path("runs"),
    device: DeviceOpt = None,
    seeds: SeedsOpt = None,
    jobs: JobsOpt = None,
    resume: Annotated[bool, typer.Option("--resume", help="continue unfinished arms of an earlier run")] = False,
    overwrite: Annotated[bool, typer.Option("--overwrite", help="delete earlier results of these arms first")] = False,
    dry_run: Annotated[bool, typer.Option("--dry-run", help="print the resolved config and parameter groups only")] = False,
    nproc: Annotated[int, typer.Option("--nproc", min=1, help="data-parallel processes on this machine (via torchrun)")] = 1,
    tensorboard: TensorBoardOpt = False,
    executor: ExecutorOpt = None,
) -> None:
    """Run every optimizer arm of CONFIG (once per seed) and print a comparison table."""
    from trx.config import load_config

    if resume and overwrite:
        raise UserError("--resume and --overwrite exclude each other")
    if device is not None and device not in ("auto", "cpu", "cuda"):
        raise UserError(f"--device: must be auto, cpu or cuda, got {device!r}")
    if seeds is not None and seeds < 1:
        raise UserError(f"--seeds: must be ≥ 1, got {seeds}")
    if jobs is not None and jobs < 1:
        raise UserError(f"--jobs: must be ≥ 1, got {jobs}")
    cfg = load_config(config, set_ or [])
    cfg = cfg.model_copy(update={k: v for k, v in (("seeds", seeds), ("tensorboard", tensorboard or None)) if v})
    if dry_run:
        _dry_run(cfg, out, device, jobs)
        return
    if nproc > 1 and "WORLD_SIZE" not in os.environ:
        from trx.data_parallel import launch

        raise typer.Exit(launch(nproc, _relaunch_argv(nproc)))
    runs = len(cfg.optimizers) * len(cfg.seed_list())
    ranks = "WORLD_SIZE" in os.environ  # a rank of torchrun: its arms run in this process
    chosen = _executor(executor, jobs and _at_a_time(cfg, runs, jobs), None, 1 if ranks else _at_a_time(cfg, runs, None))
    _run(cfg, out, device, "resume" if resume else "overwrite" if overwrite else "new", chosen)


def _dry_run(cfg: ExperimentConfig, out: Path, device: str | None, jobs: int | None) -> None:
    import yaml

    from trx.config import dump
    from trx.service import check_experiment
    from trx.tasks import DataError

    console.print(yaml.safe_dump(dump(cfg), sort_keys=False, allow_unicode=True))
    try:
        exp = check_experiment(cfg, out, device, shapes_only=True)
    except (UserError, DataError) as exc:  # a task whose model shape comes from its data, missing here
        console.print(f"parameter groups not shown: {exc}", highlight=False)
        return
    _print_groups(exp)
    try:
        exp = check_experiment(cfg, out, device)  # the data, for a few timed updates (nothing is written)
    except (UserError, DataError) as exc:
        console.print(f"time not estimated: {exc}", highlight=False)
        return
    _print_estimate(exp, _at_a_time(cfg, len(cfg.optimizers) * len(cfg.seed_list()), jobs))


def _at_a_time(cfg: ExperimentConfig, runs: int, jobs: int | None) -> int:
    """Runs in parallel: --jobs, else every core when there are several seeds; never more than
    runs or cores."""
    from trx.executors import cpu_cores

    return min(jobs or (cpu_cores() if len(cfg.seed_list()) > 1 else 1), runs, cpu_cores())


def _print_estimate(exp: Any, n: int) -> None:
    import torch

    from trx.estimate import TIMED_UPDATES, estimate, load_text
    from trx.executors import cpu_cores, threads_per_job
    from trx.compare import duration_text

    torch.set_num_threads(exp.cfg.threads or threads_per_job(n))
    arms, total = estimate(exp, n)
    runs = len(arms) * len(exp.cfg.seed_list())
    console.print(f"time estimate from {TIMED_UPDATES} timed updates and one evaluation per arm, here and now "
                  f"({cpu_cores()} cores, {load_text()}; {torch.get_num_threads()} thread(s) per run, "
                  f"{n} run(s) at a time):", highlight=False)
    for a in arms:
        console.print(f"  {a.arm}: {a.update_s:.3g} s per update, {a.eval_s:.2g} s per evaluation: "
                      f"{duration_text(a.run_s)} per run", highlight=False)
    console.print(f"  all {runs} run(s): about {duration_text(total)} (training and evaluation only; start-up, "
                  "logging and checkpoints add to it)", highlight=False)


def _run(cfg: ExperimentConfig, out: Path, device: str | None, mode: str, executor: Any) -> None:
    from trx.executors import InProcess
    from trx.stop import StopFlag, stop_on_signals
    from trx import api

    main = "RANK" not in os.environ or os.environ.get("RANK") == "0"
    with stop_on_signals(StopFlag()) as stop:
        if isinstance(executor, InProcess):
            with RichProgress() if main else contextlib.nullcontext() as progress:
                executor.progress = progress
                outcome = api.run(cfg, out, device=device, mode=mode, executor=executor, stop=stop)
        else:
            n = len(cfg.optimizers) * len(cfg.seed_list())
            console.print(f"{cfg.name}: {n} runs on {_where(executor)}", highlight=False)
            with JobProgress(n) as progress:
                outcome = api.run(cfg, out, device=device, mode=mode, executor=executor, notify=progress.event, stop=stop)
    if not outcome.main:
        return  # rank 0 reports
    if outcome.interrupted:
        err_console.print("interrupted: the running arm was saved; continue with --resume")
        raise typer.Exit(130)
    _report_run(cfg, outcome.root, outcome.results)
    locked = outcome.with_status(Status.LOCKED)
    for _, r in locked:
        err_console.print(f"[red]error:[/] {r.dir} is being written by {r.error}", highlight=False)
    failed = outcome.with_status(Status.FAILED)
    for _, r in failed:
        err_console.print(f"[red]arm {r.summary.get('arm', r.dir)} failed:[/] {r.error}", highlight=False)
    if locked:
        raise typer.Exit(2)
    if failed:
        raise typer.Exit(1)


def _where(executor: Any) -> str:
    """How progress lines name an executor: `2 job(s) × 1 thread(s)`, `Ray cluster auto, …`."""
    from trx.executors import LocalProcesses, threads_per_job

    if isinstance(executor, LocalProcesses):
        return f"{executor.n} job(s) × {threads_per_job(executor.n)} thread(s)"
    if hasattr(executor, "address"):
        gpus = f" and {executor.gpus:g} GPU(s)" if executor.gpus else ""
        return f"Ray cluster {executor.address}, {executor.cpus:g} CPU(s){gpus} per cell"
    return "1 job in this process"


def _executor(spec: str | None, jobs: int | None, ray: str | None, default_jobs: int, **options: Any) -> Any:
    """--executor, or its older spellings --jobs N (local:N) and --ray ADDRESS (ray:ADDRESS)."""
    from trx.executors import cpu_cores, make_executor

    given = [name for name, v in (("--executor", spec), ("--jobs", jobs), ("--ray", ray)) if v is not None]
    if len(given) > 1:
        raise UserError(f"{' and '.join(given)} exclude each other", hint="--executor local:N or --executor ray:ADDRESS says both")
    if jobs is not None and jobs < 1:
        raise UserError(f"--jobs: must be ≥ 1, got {jobs}")
    n = jobs or default_jobs
    if spec is None and ray is None and n > cpu_cores():
        err_console.print(f"--jobs {n} is more than the {cpu_cores()} CPU cores here: running {cpu_cores()} at a time")
    spec = spec or (f"ray:{ray}" if ray is not None else f"local:{n}")
    return make_executor(spec, **options)


def _report_run(cfg: ExperimentConfig, root: Path, results: list[Any]) -> None:
    """The comparison table: per arm with one seed; over seeds (mean ± sd, interval, paired
    difference to the first arm) with several."""
    from trx.compare import comparison_table, save_comparison

    summaries = [r.summary or {"arm": r.dir, "status": r.status} for r in results]
    if len(cfg.seed_list()) == 1:
        table = comparison_table(summaries)
        save_comparison(table, ExperimentDir(root).comparison)
        show(render_table(table, title=f"{cfg.name} ({cfg.task.name}, {cfg.steps} steps)"))
    else:
        _seed_tables(cfg, root, [Path(r.dir) for r in results])
    console.print(f"results in {root}", highlight=False)


def _seed_tables(cfg: ExperimentConfig, root: Path, dirs: list[Path]) -> None:
    """Per arm mean ± sd and 95% interval over seeds, and the paired difference (same seed: same
    initial weights and batches) to the first arm with its interval and verdict."""
    from trx.compare import default_metric, find_runs, paired_table, save_comparison

    runs = find_runs([d for d in dirs if RunDir(d).summary.exists()])
    if not runs:
        return
    metric = default_metric(runs)
    table = paired_table(runs, metric, baseline_arm=next(iter(cfg.optimizers)))
    save_comparison(table, ExperimentDir(root).comparison)
    n = len(cfg.seed_list())
    show(render_table(_display(table), title=f"{cfg.name} ({cfg.task.name}, {cfg.steps} steps), final {metric}: "
                                             f"mean ± sd over {n} seeds, 95% intervals; diff = arm − {next(iter(cfg.optimizers))}, "
                                             f"paired by seed; verdict on 'arm beats {next(iter(cfg.optimizers))}'"))


GridOpt = Annotated[list[str] | None, typer.Option("--grid", help="sweep axis: KEY=V1,V2,... or KEY=log:LO:HI:N")]
RunDirsArg = Annotated[list[Path], typer.Argument(help="arm, experiment or sweep folders", show_default=False)]
MetricOpt = Annotated[str | None, typer.Option("--metric", show_default=False, help="metrics.csv column to judge by: "
                      "loss, val_loss, val_acc, ... (default: val_loss where the runs evaluated it, else loss)")]


@app.command()
@user_errors
def sweep(
    config: ConfigArg,
    grid: GridOpt = None,
    seeds: Annotated[int | None, typer.Option("--seeds", help="run seeds seed … seed+N−1 (default: sweep.seeds)")] = None,
    jobs: Annotated[int | None, typer.Option("--jobs", show_default=False, help="cells run in parallel processes on this machine (default 1)")] = None,
    set_: SetOpt = None,
    out: OutOpt = Path("runs"),
    ray: Annotated[str | None, typer.Option("--ray", help="run cells on a Ray cluster: auto | local | HEAD:PORT")] = None,
    cpus_per_cell: Annotated[float, typer.Option("--cpus-per-cell", help="with --ray: CPUs each cell reserves")] = 1.0,
    gpus_per_cell: Annotated[float, typer.Option("--gpus-per-cell", help="with --ray: GPUs each cell reserves")] = 0.0,
    tensorboard: TensorBoardOpt = False,
    executor: ExecutorOpt = None,
    dry_run: Annotated[bool, typer.Option("--dry-run", help="check every cell and say how many would run; write nothing")] = False,
) -> None:
    """Run every cell (arm × grid point × seed) of a sweep; finished cells are skipped."""
    from trx.stop import StopFlag, stop_on_signals
    from trx import api
    from trx.sweep_plan import plan_sweep

    chosen = _executor(executor, jobs, ray, 1, cpus_per_cell=cpus_per_cell, gpus_per_cell=gpus_per_cell)
    sets = [*(set_ or []), *(["tensorboard=true"] if tensorboard else [])]
    plan = plan_sweep(config, sets, grid or [], seeds, out)
    arms = sorted({c.arm for c in plan.cells})
    probes = (f" + at most {plan.probe_limit} boundary probes ({plan.boundary.bisections} bisections per series)"
              if plan.boundary else "")
    console.print(f"sweep {plan.name}: {len(plan.cells)} cells ({', '.join(arms)}){probes}, {_where(chosen)}, "
                  f"into {plan.root}", highlight=False)
    if dry_run:
        api.sweep(plan, dry_run=True)
        console.print("dry run: every cell checked, nothing written")
        return
    with stop_on_signals(StopFlag()) as stop, JobProgress(len(plan.cells) + plan.probe_limit, "sweep") as progress:
        outcome = api.sweep(plan, executor=chosen, notify=progress.event, stop=stop)
    if progress.skipped:
        console.print(f"{len(progress.skipped)} cell(s) were already finished and skipped")
    if outcome.interrupted:
        err_console.print("interrupted: running cells were saved; run the same command again to finish the sweep")
        raise typer.Exit(130)
    _report_sweep(plan, outcome.results)
    _report_boundary(plan)
    console.print(f"results in {plan.root} (one row per cell in {ExperimentDir(plan.root).sweep_csv.name})", highlight=False)
    _next_steps(plan, outcome.results)
    for job, r in progress.locked:
        err_console.print(f"[yellow]cell {job.meta.label} skipped:[/] another process is running it ({r.error}); "
                          "run the same command again once it has finished", highlight=False)
    failed = outcome.with_status(Status.FAILED)
    for job, r in failed:
        err_console.print(f"[red]cell {job.meta.label} failed:[/] {r.error}", highlight=False)
    if failed:
        raise typer.Exit(1)


def _report_sweep(plan: Any, results: list[Any]) -> None:
    from trx.compare import compare_table, default_metric, find_runs, lr_table

    done = [Path(r.dir) for r in results if RunDir(r.dir).summary.exists()]
    runs = find_runs(done) if done else []
    if runs:
        metric = default_metric(runs)  # the one the next commands and the report judge by
        show(render_table(_display(compare_table(runs, metric)),
                          title=f"{plan.name}: cells, judged by final {metric} (mean ± sd over seeds)"))
        lrs = lr_table(runs, metric)
        if not lrs.empty:
            show(render_table(_display(lrs), title=f"learning-rate tolerance (final {metric}; band: ≥ 90% of the "
                                                   "best lr's improvement over the initial value; seed_decades: median per-seed width, its interval of confidence ci_conf)"))


def _report_boundary(plan: Any) -> None:
    import pandas as pd

    path = ExperimentDir(plan.root).boundary_csv
    if plan.boundary is not None and path.exists():
        table = pd.read_csv(path, dtype=str, keep_default_na=False)
        show(render_table(table[["arm", "point", "seed", "bracket", "status", "lrs_probed"]],
                          title=f"stability boundary: [largest stable lr, next unstable lr) per series ({path.name})"))


def _next_steps(plan: Any, results: list[Any]) -> None:
    """Commands that work on this sweep, one per line."""
    lr_axis = any(k == "lr" for k in plan.keys)
    warmup_axis = any(k.endswith("schedule.warmup") for k in plan.keys)
    from trx.compare import default_metric, find_runs

    done = [Path(r.dir) for r in results if RunDir(r.dir).summary.exists()]
    metric = default_metric(find_runs(done)) if done else "loss"
    lines = [f"trx compare {plan.root} --metric {metric} --format md", f"trx report {plan.root}"]
    if lr_axis:
        lines.append(f"trx plot {plan.root} --kind lr --metric {metric}")
    if warmup_axis:
        lines.append(f"trx plot {plan.root} --kind warmup")
    lines.append(f"trx plot {plan.root} --kind curves --metric {metric}")
    console.print("next:\n" + "\n".join(f"  {line}" for line in lines), highlight=False)


def _display(table):
    from trx.compare import display_frame

    shown = display_frame(table)
    for col in shown.columns:  # keep numeric columns right-aligned in render_table
        if col in table.columns and table[col].dtype.kind in "fiu":
            shown.attrs.setdefault("right", []).append(col)
    return shown


@app.command()
@user_errors
def compare(
    run_dirs: RunDirsArg,
    metric: MetricOpt = None,
    target: Annotated[float | None, typer.Option("--target", help="report the first step where METRIC reaches X")] = None,
    tolerance: Annotated[float, typer.Option("--tolerance", help="the lr band keeps learning rates whose seed-mean "
                                             "improvement over the initial value is ≥ (1 − T) × the best lr's")] = 0.1,
    format_: Annotated[str, typer.Option("--format", help="table | csv | md")] = "table",
) -> None:
    """Compare arms, experiments and sweeps: means over seeds, steps to a target, lr tolerance."""
    from trx.compare import (check_metric, compare_table, default_metric, find_runs, lr_table, to_csv,
                            to_markdown)

    if format_ not in ("table", "csv", "md"):
        raise UserError(f"--format: must be table, csv or md, got {format_!r}")
    if not tolerance >= 0:
        raise UserError(f"--tolerance: must be ≥ 0, got {tolerance}")
    runs = find_runs(run_dirs)
    metric = metric or default_metric(runs)
    check_metric(runs, metric)
    cells = compare_table(runs, metric, target)
    lrs = lr_table(runs, metric, tolerance)
    lr_title = (f"learning-rate tolerance (final {metric}; band: ≥ {1 - tolerance:.0%} of the best lr's improvement "
                "over the initial value; seed_decades: median per-seed width, its interval of confidence ci_conf)")
    judged = f"judged by final {metric}"
    if format_ == "csv":
        err_console.print(judged, highlight=False)  # stdout stays plain CSV
        print(to_csv(cells), end="")
        if not lrs.empty:
            print()
            print(to_csv(lrs), end="")
    elif format_ == "md":
        print(f"runs, {judged} (mean ± sd over seeds):\n")
        print(to_markdown(cells))
        if not lrs.empty:
            print(f"\n{lr_title}:\n")
            print(to_markdown(lrs))
    else:
        show(render_table(_display(cells), title=f"runs, {judged} (mean ± sd over seeds)"))
        if not lrs.empty:
            show(render_table(_display(lrs), title=lr_title))


@app.command()
@user_errors
def plot(
    run_dirs: RunDirsArg,
    kind: Annotated[str, typer.Option("--kind", help="curves | lr | schedule | warmup | band | heatmap")] = "curves",
    out: Annotated[Path | None, typer.Option("--out", help="PNG file (default: <first RUN_DIR>/<kind>.png)")] = None,
    metric: MetricOpt = None,
) -> None:
    """Draw a figure from run folders: loss curves, result vs lr, schedules, warmup ablation, lr-band width vs tolerance."""
    from trx.plots import KINDS, make_plot
    from trx.compare import find_runs

    if kind not in KINDS:
        raise UserError(f"--kind: must be one of {', '.join(KINDS)}, got {kind!r}")
    if out is not None and out.suffix.lower() != ".png":
        raise UserError(f"--out: expected a .png file, got {out}")
    runs = find_runs(run_dirs)
    first = Path(run_dirs[0])
    path = out or (first if first.is_dir() else first.parent) / f"{kind}.png"
    make_plot(kind, runs, path, metric or _plot_metric(kind, runs))
    console.print(f"wrote {path}", highlight=False)


def _plot_metric(kind: str, runs: list[Any]) -> str:
    """The default metric of a figure: the one every command judges by where metrics.csv logs it
    (`curves` of the train loss draw the validation loss beside it anyway)."""
    from trx.plots import columns
    from trx.compare import default_metric

    metric = default_metric(runs)
    return metric if kind != "curves" and metric in columns(runs) else "loss"


@app.command()
@user_errors
def report(
    run_dirs: RunDirsArg,
    out: Annotated[Path | None, typer.Option("--out", help="folder for report.md and its figures (default: the first RUN_DIR)")] = None,
    metric: Annotated[str | None, typer.Option("--metric", help="column to judge by (default: val_loss where runs have it, else loss)")] = None,
) -> None:
    """Write a self-contained Markdown report (report.md and PNG figures) for run or sweep folders."""
    from trx.report import write_report

    path = write_report(list(run_dirs), out, metric)
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
