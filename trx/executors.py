"""Where jobs run: in this process, in local worker processes, or (`trx.ray_executor`) on a
Ray cluster; and `run_experiment`, every arm of a prepared experiment in this process. Every executor has `run(jobs, notify, stop) -> list[JobResult]` (results in job
order) and the same semantics: a stop request lets running jobs save themselves as
`interrupted` and leaves queued ones untouched (`not run`)."""

from __future__ import annotations

import concurrent.futures as cf
import contextlib
import multiprocessing as mp
import os
import signal
from dataclasses import dataclass, replace
from typing import Any, Protocol

from trx.jobs import ArmJob, JobResult, Notify, arm_jobs, check_jobs, clear, finished_result, run_job
from trx.runner import Experiment, Interrupted, NoProgress, Progress, StopFlag


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


def cpu_cores() -> int:
    return len(os.sched_getaffinity(0)) if hasattr(os, "sched_getaffinity") else os.cpu_count() or 1


def threads_per_job(jobs: int) -> int:
    """Torch threads per job so that jobs × threads ≤ cores."""
    return max(1, cpu_cores() // jobs)


def interrupted(results: list[JobResult]) -> bool:
    return any(r.status in ("interrupted", "not run") for r in results)


@dataclass
class InProcess:
    """One job after another in this process (with live progress); the path of torchrun ranks."""

    progress: Any = None

    def run(self, jobs: list[ArmJob], notify: Notify, stop: Any) -> list[JobResult]:
        stop = stop or StopFlag()
        results = []
        for job in jobs:
            if stop.requested or interrupted(results):
                results.append(JobResult(job.dir, "not run"))
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
        results: dict[int, JobResult] = {}
        with cf.ProcessPoolExecutor(max_workers=self.n, mp_context=ctx, initializer=_worker_init,
                                    initargs=(event,)) as pool:
            with _ignoring_ctrl_c():  # processes started now (the forkserver, workers) inherit it
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
        return [results.get(i) or JobResult(job.dir, "not run") for i, job in enumerate(jobs)]


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


def _worker_run(job: ArmJob) -> JobResult:
    if _WORKER_STOP.requested:  # queued before the stop: leave its folder untouched
        return JobResult(job.dir, "not run")
    return run_job(job, _WORKER_STOP)


def _context() -> Any:
    """forkserver where available: workers fork from one process that imported trx once (torch
    is slow to import); spawn elsewhere. Never plain fork from a process that may hold threads."""
    if "forkserver" in mp.get_all_start_methods():
        ctx = mp.get_context("forkserver")
        ctx.set_forkserver_preload(["trx.jobs", "trx.runner"])
        return ctx
    return mp.get_context("spawn")


def _outcome(future: cf.Future, job: ArmJob, event: Any) -> JobResult:
    try:
        return future.result()
    except Exception as exc:  # the worker process died under the job
        status = "interrupted" if event.is_set() else "failed"
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


def run_experiment(exp: Experiment, mode: str = "new", progress: Progress | None = None,
                   stop: StopFlag | None = None) -> list[dict[str, Any]]:
    """Every arm (and seed) of a prepared experiment in this process, in config order; returns
    their summaries. mode: new | resume | overwrite. Raises Interrupted when a run was stopped."""
    import torch.distributed as dist

    jobs = arm_jobs(exp.cfg, exp.root, str(exp.device))
    check_jobs(jobs, mode, locked="error" if exp.ctx.is_main else "ignore")
    if mode == "overwrite" and exp.ctx.is_main:
        clear(jobs)
        (exp.root / "comparison.csv").unlink(missing_ok=True)
    if exp.ctx.enabled:
        dist.barrier()
    shown = progress if progress is not None and exp.ctx.is_main else NoProgress()

    def notify(kind: str, job: Any, result: Any) -> None:
        if kind == "skip":
            shown.finish(job.meta.label, result.summary)

    results = run_jobs(jobs, InProcess(progress), notify, stop)
    if any(r.status in ("interrupted", "not run") for r in results):
        raise Interrupted
    return [r.summary or {"arm": r.dir, "status": r.status, "error": r.error} for r in results]
