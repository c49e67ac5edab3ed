"""Where jobs run, chosen by name (`--executor inprocess | local:N | ray:ADDRESS`): in this
process, in local worker processes, or (`trx.ray_executor`) on a Ray cluster. Every executor has
`run(jobs, notify, stop) -> list[JobResult]` (results in job order) and the same semantics: a
stop request lets running jobs save themselves as `interrupted` and leaves queued ones untouched
(`not run`). A new executor is one module `trx/<name>_executor.py` that registers itself with
`register_executor`; it is found and imported by its file name."""

from __future__ import annotations

import concurrent.futures as cf
import contextlib
import multiprocessing as mp
import multiprocessing.connection
import os
import signal
import sys
import threading
from dataclasses import dataclass, replace
from multiprocessing import forkserver
from pathlib import Path
from typing import Any, Callable, Protocol

from trx.errors import UserError
from trx.jobs import ArmJob, JobResult, Notify, finished_result, run_job
from trx.rundir import UNFINISHED, Status
from trx.stop import StopFlag


class Executor(Protocol):
    def run(self, jobs: list[ArmJob], notify: Notify, stop: Any) -> list[JobResult]: ...


def run_jobs(jobs: list[ArmJob], executor: Executor, notify: Notify | None = None, stop: Any = None) -> list[JobResult]:
    """Run every unfinished job on `executor`; finished ones are reported as "skip" and kept.
    `notify(kind, job, result)` hears "skip", "start" and "done"."""
    notify = notify or (lambda *a: None)
    results: list[JobResult | None] = [finished_result(job) for job in jobs]
    for job, result in zip(jobs, results):
        if result is not None:
            notify("skip", job, result)
    todo = [i for i, r in enumerate(results) if r is None]
    for i, result in zip(todo, executor.run([jobs[i] for i in todo], notify, stop)):
        results[i] = result
    return [r for r in results if r is not None]


@dataclass(frozen=True)
class ExecutorKind:
    """A registered executor: `make(argument, options)` builds it from the text after the colon
    of its spec (None without one) and the command's options (cpus_per_cell, gpus_per_cell)."""

    name: str
    make: Callable[[str | None, dict[str, Any]], Executor]
    description: str


EXECUTORS: dict[str, ExecutorKind] = {}


def register_executor(name: str, description: str) -> Callable:
    def add(make: Callable[[str | None, dict[str, Any]], Executor]) -> Callable:
        EXECUTORS[name] = ExecutorKind(name, make, description)
        return make
    return add


def make_executor(spec: str, **options: Any) -> Executor:
    """`inprocess`, `local:2`, `ray:auto` → the executor; a UserError names --executor."""
    _discover()
    name, _, argument = spec.partition(":")
    if name not in EXECUTORS:
        raise UserError(f"--executor: no executor named {name!r}",
                        hint="one of: " + "; ".join(f"{k.name} ({k.description})" for k in EXECUTORS.values()))
    return EXECUTORS[name].make(argument or None, options)


def _discover() -> None:
    """Import every `trx/*_executor.py` once, so that each registers itself."""
    import importlib
    import pkgutil

    import trx

    for module in pkgutil.iter_modules(trx.__path__):
        if module.name.endswith("_executor"):
            importlib.import_module(f"trx.{module.name}")


def cpu_cores() -> int:
    return len(os.sched_getaffinity(0)) if hasattr(os, "sched_getaffinity") else os.cpu_count() or 1


def threads_per_job(jobs: int) -> int:
    """Torch threads per job so that jobs × threads ≤ cores."""
    return max(1, cpu_cores() // jobs)


def interrupted(results: list[JobResult]) -> bool:
    return any(r.status in UNFINISHED for r in results)


@dataclass
class InProcess:
    """One job after another in this process (with live progress); the path of torchrun ranks."""

    progress: Any = None

    def run(self, jobs: list[ArmJob], notify: Notify, stop: Any) -> list[JobResult]:
        stop = stop or StopFlag()
        results = []
        for job in jobs:
            if stop.requested or interrupted(results):
                results.append(JobResult(job.dir, Status.NOT_RUN))
                continue
            notify("start", job, None)
            results.append(run_job(job, stop, self.progress))
            notify("done", job, results[-1])
        return results


@dataclass
class LocalProcesses:
    """Jobs in `n` worker processes of this machine, torch threads split so that n × threads ≤ cores."""

    n: int

    def run(self, jobs: list[ArmJob], notify: Notify, stop: Any) -> list[JobResult]:
        threads = threads_per_job(self.n)
        jobs = [replace(job, threads=job.threads or threads) for job in jobs]
        ctx = _context()
        event = ctx.Event()
        parent_alive, alive_w = ctx.Pipe(duplex=False)  # only this process holds alive_w: EOF = it died
        results: dict[int, JobResult] = {}
        with parent_alive, alive_w, cf.ProcessPoolExecutor(max_workers=self.n, mp_context=ctx, initializer=_worker_init,
                                                           initargs=(event, parent_alive)) as pool:
            with _ignoring_ctrl_c():  # processes started now (spawned workers) inherit it
                probe = pool.submit(_trx_file)
            check_workers_import(probe)
            with _ignoring_ctrl_c():
                futures = {pool.submit(_worker_run, job): i for i, job in enumerate(jobs)}
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
                        notify("start", jobs[futures[f]], None)
                for f in done:
                    if not f.cancelled():
                        i = futures[f]
                        results[i] = _outcome(f, jobs[i], event)
                        notify("done", jobs[i], results[i])
                pending = {f for f in pending if not f.cancelled()}
        return [results.get(i) or JobResult(job.dir, Status.NOT_RUN) for i, job in enumerate(jobs)]


def _trx_file() -> str | None:
    """Where this process imported trx from (None: a namespace package, not trx)."""
    import trx

    return os.path.realpath(trx.__file__) if getattr(trx, "__file__", None) else None


def check_workers_import(probe: cf.Future) -> None:
    """Workers must run the trx this process runs: a stray folder named `trx` in the working
    directory, or an install they cannot import, stops the sweep here, before any training."""
    try:
        theirs = probe.result()
    except Exception as exc:  # the worker could not even unpickle a trx function
        raise UserError(f"worker processes cannot import trx: {type(exc).__name__}: {exc}") from None
    ours = _trx_file()
    if theirs != ours:
        stray = Path.cwd() / "trx"
        hint = f"the folder {stray} shadows the installed package: rename it or run from another folder" \
            if stray.is_dir() and str(stray) not in (ours or "") else None
        raise UserError(f"worker processes import trx from {theirs or 'a namespace package'}, this process from {ours}",
                        hint=hint)


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
_BUSY = threading.Lock()  # held while this worker runs a cell


def _worker_init(event: Any, parent_alive: Any) -> None:
    global _WORKER_STOP
    signal.signal(signal.SIGINT, signal.SIG_IGN)  # idle workers ignore Ctrl-C; the parent decides
    _WORKER_STOP = _SharedStop(event)
    signal.signal(signal.SIGTERM, _stop_on_sigterm)
    threading.Thread(target=_exit_with_parent, args=(parent_alive,), daemon=True).start()


def _stop_on_sigterm(signum: int, frame: Any) -> None:
    """`timeout`, Slurm and Kubernetes send SIGTERM to every process: stop the sweep, like
    Ctrl-C, so that running cells save themselves."""
    _WORKER_STOP.requested = True


def _exit_with_parent(parent_alive: Any) -> None:
    """Wait for the sweep's process to die (its end of the pipe closes, kill -9 included); then
    stop: the running cell saves itself as `interrupted`, and this worker exits instead of
    taking queued cells or waiting for more forever."""
    mp.connection.wait([parent_alive])
    _WORKER_STOP.requested = True
    with _BUSY:
        os._exit(0)


def _worker_run(job: ArmJob) -> JobResult:
    with _BUSY:
        if _WORKER_STOP.requested:  # queued before the stop: leave its folder untouched
            return JobResult(job.dir, Status.NOT_RUN)
        return run_job(job, _WORKER_STOP)


def _context() -> Any:
    """forkserver where available: workers fork from one process that imported trx once (torch
    is slow to import); spawn elsewhere. Never plain fork from a process that may hold threads."""
    if "forkserver" not in mp.get_all_start_methods():
        return mp.get_context("spawn")
    ctx = mp.get_context("forkserver")
    ctx.set_forkserver_preload(["trx.jobs", "trx.runner"])
    with _ignoring_ctrl_c(), _this_sys_path():
        forkserver.ensure_running()
    return ctx


@contextlib.contextmanager
def _this_sys_path():
    """The forkserver is a fresh `python -c`: its imports would search the working directory
    first (a folder named `trx` there shadows trx) and not this process's path. Start it with
    this process's sys.path instead, and without the working directory (Python ≥ 3.11)."""
    saved = {k: os.environ.get(k) for k in ("PYTHONPATH", "PYTHONSAFEPATH")}
    os.environ["PYTHONPATH"] = os.pathsep.join(p for p in sys.path if p)
    os.environ["PYTHONSAFEPATH"] = "1"
    try:
        yield
    finally:
        for k, v in saved.items():
            if v is None:
                os.environ.pop(k, None)
            else:
                os.environ[k] = v


def _outcome(future: cf.Future, job: ArmJob, event: Any) -> JobResult:
    try:
        return future.result()
    except Exception as exc:  # the worker process died under the job
        status = Status.INTERRUPTED if event.is_set() else Status.FAILED
        return JobResult(job.dir, status, {}, f"{type(exc).__name__}: {exc}")


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


@register_executor("inprocess", "one run after another in this process, with live progress")
def _inprocess(argument: str | None, options: dict[str, Any]) -> Executor:
    if argument:
        raise UserError(f"--executor inprocess:{argument}: inprocess takes no argument")
    return InProcess()


@register_executor("local", "local:N, N worker processes on this machine (cores split between them)")
def _local(argument: str | None, options: dict[str, Any]) -> Executor:
    try:
        n = int(argument or cpu_cores())
    except ValueError:
        raise UserError(f"--executor local:{argument}: expected a number of processes, e.g. local:2") from None
    if n < 1:
        raise UserError(f"--executor local:{n}: must be ≥ 1")
    return InProcess() if n == 1 else LocalProcesses(min(n, cpu_cores()))
