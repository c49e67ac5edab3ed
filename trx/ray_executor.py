"""The Ray executor: the jobs of a sweep as Ray core tasks on a cluster, one task per cell.

Same contract as the local executors in `trx.executors`: `run(jobs, notify, stop)` returns one
JobResult per job, in job order, and calls `notify("start" | "done", job, result)` on the way.
Each task runs `trx.jobs.run_job` on a worker with the CPUs and GPUs it asked for and writes
straight into the job's folder, so the output folder must be on a filesystem that every node
mounts at the same path; the driver checks that before any cell trains (a marker file).

Faults. A worker lost mid-cell (killed, out of memory, node gone): Ray reruns the task up to
`max_retries` times and the rerun resumes from the cell's checkpoint. A stop (Ctrl-C or
SIGTERM on the driver) drops queued tasks and cancels running ones; Ray delivers that cancel as
SIGINT to the task, whose stop handler saves the cell as `interrupted` at its next update.
"""

from __future__ import annotations

import contextlib
import dataclasses
import logging
import os
import secrets
import signal
import socket
import threading
import time
import uuid
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Iterator

from trx.errors import UserError
from trx.executors import register_executor
from trx.rundir import RunDir, Status
from trx.jobs import ArmJob, JobResult, Notify, run_job
from trx.stop import StopFlag, stop_on_signals

INSTALL_HINT = "--ray needs Ray: pip install -e '.[ray]'"
TOKEN_HINT = ("export RAY_AUTH_MODE=token where the driver runs, with the cluster's token in ~/.ray/auth_token "
              "(mode 600) or in RAY_AUTH_TOKEN")
START_HINT = "start one with `ray start --head` (see docs/scaling.md), or run a throwaway one with --ray local"
MAX_RETRIES = 3  # reruns of a cell whose worker died; each resumes from the cell's checkpoint
MARKER_WAIT_S = 10.0  # a worker looks this long for the marker: NFS may cache a missing name
POLL_S = 0.2  # how often the driver looks at the stop flag
STOP_WAIT_S = 120.0  # after a stop, how long running cells get to save themselves


@dataclass(frozen=True)
class Blind:
    """A worker's answer, in place of a JobResult, when it cannot see the sweep folder."""

    host: str
    root: str

    def message(self) -> str:
        return f"worker {self.host} cannot see {self.root}: put --out on a filesystem every node mounts"


def run_on_worker(job: ArmJob, marker: str) -> Iterator[Any]:
    """The task body. A generator, so that the driver learns when a cell starts (first item)
    before it learns how it ended (last item: a JobResult, or Blind)."""
    yield "started"
    if not sees(marker):
        yield Blind(socket.gethostname(), str(Path(marker).parent))
        return
    with stop_on_signals(StopFlag()) as stop:  # Ray's cancel arrives as SIGINT: stop and save
        result = run_job(job, stop)
    yield result


def sees(marker: str, wait_s: float = MARKER_WAIT_S) -> bool:
    """Whether this machine sees the driver's marker file, looking again for up to `wait_s`."""
    deadline = time.monotonic() + wait_s
    while True:
        with contextlib.suppress(OSError):
            os.listdir(os.path.dirname(marker))  # a fresh directory read, past NFS name caches
        if os.path.exists(marker):
            return True
        if time.monotonic() >= deadline:
            return False
        time.sleep(0.5)


def import_ray() -> Any:
    try:
        import ray
    except ImportError:
        raise UserError(INSTALL_HINT) from None
    return ray


class RayExecutor:
    """Runs jobs as Ray tasks. `address`: "auto" (the running cluster, found as Ray finds it:
    RAY_ADDRESS or the head started on this machine), "local" (a throwaway cluster on this
    machine), or a head's address ("10.0.0.1:6379", "ray://10.0.0.1:10001")."""

    def __init__(self, address: str = "auto", cpus_per_cell: float = 1, gpus_per_cell: float = 0,
                 max_retries: int = MAX_RETRIES):
        if not cpus_per_cell > 0:
            raise UserError(f"--cpus-per-cell: must be > 0, got {cpus_per_cell:g}")
        if not gpus_per_cell >= 0:
            raise UserError(f"--gpus-per-cell: must be ≥ 0, got {gpus_per_cell:g}")
        self.address, self.cpus, self.gpus, self.max_retries = address, cpus_per_cell, gpus_per_cell, max_retries

    def run(self, jobs: list[ArmJob], notify: Notify | None = None, stop: Any = None) -> list[JobResult]:
        """Run every job; raises UserError when the cluster cannot be reached or a worker cannot
        see the output folder (cells already running elsewhere are saved as `interrupted` first)."""
        if not jobs:
            return []
        placed = [self.placed(job) for job in jobs]
        with connected(self.address) as ray, marker(shared_root(placed)) as mark:
            task = ray.remote(run_on_worker)
            refs = [task.options(**self.options(job)).remote(job, mark) for job in placed]
            results, blind = Waiter(ray, placed, notify or (lambda *a: None), stop).wait(refs)
        if blind is not None:
            raise UserError(blind.message())
        return [dataclasses.replace(r, dir=job.dir) for r, job in zip(results, jobs)]

    def placed(self, job: ArmJob) -> ArmJob:
        """The job as a worker needs it: an absolute folder (the same path on every node) and
        torch threads matching the CPUs Ray reserves for it."""
        return dataclasses.replace(job, dir=os.path.abspath(job.dir), threads=max(1, int(self.cpus)))

    def options(self, job: ArmJob) -> dict[str, Any]:
        """Ray task options; the name (`trx <experiment> <arm>/<cell>`) is also the worker's process
        title while it runs the cell, so `ps` and the Ray dashboard show which cell is where."""
        return {"num_cpus": self.cpus, "num_gpus": self.gpus, "max_retries": self.max_retries,
                "retry_exceptions": False, "num_returns": "streaming", "name": f"trx {job.meta.name} {job.meta.label}"}


@contextlib.contextmanager
def connected(address: str) -> Iterator[Any]:
    """Connect to (or, for "local", start) a cluster for the duration and yield the `ray`
    module; keep a connection that the calling program made itself."""
    with throwaway_token() if address == "local" else contextlib.nullcontext():
        ray = import_ray()  # after the token is in the environment: Ray reads its auth mode on import
        if ray.is_initialized():
            yield ray
            return
        head = os.environ.get("RAY_ADDRESS", "") if address == "auto" else address
        check_reachable(head)
        check_token_file()
        check_authenticates(head)
        with keeping_sigterm():
            init(ray, address)
        try:
            yield ray
        finally:
            ray.shutdown()


def init(ray: Any, address: str) -> None:
    """`ray.init`, its failures as one line with the fix."""
    quiet = {"log_to_driver": False, "logging_level": logging.WARNING}
    refused = getattr(ray.exceptions, "AuthenticationError", ())  # Ray before token authentication has none
    try:
        if address == "local":
            ray.init(address="local", include_dashboard=False, **quiet)
        else:
            ray.init(address=address, **quiet)
    except refused:
        raise UserError(f"--ray {address}: the cluster refused this driver's auth token", hint=TOKEN_HINT) from None
    except ConnectionError as exc:
        raise UserError(f"--ray {address}: cannot reach a Ray cluster ({exc})",
                        hint=START_HINT if sends_token() else f"{START_HINT}; if it uses tokens, {TOKEN_HINT}") from None


@contextlib.contextmanager
def keeping_sigterm() -> Iterator[None]:
    """`ray.init` replaces the SIGTERM handler with an immediate exit (the driver then aborts,
    its running cells unsaved); keep ours, which stops the sweep the way Ctrl-C does."""
    ours = signal.getsignal(signal.SIGTERM)
    try:
        yield
    finally:
        if ours is not None and threading.current_thread() is threading.main_thread():
            signal.signal(signal.SIGTERM, ours)


def head_address(address: str) -> tuple[str, int] | None:
    """(host, port) of a head given as HOST:PORT; None for other forms ("local", "ray://...", none)."""
    host, sep, port = address.rpartition(":")
    if not sep or not host or "://" in address or not port.isdigit():
        return None
    return host, int(port)


def check_reachable(address: str, timeout_s: float = 10.0) -> None:
    """A head address (HOST:PORT) that does not answer fails in seconds, not after Ray's minute
    of retries. Other forms ("local", "ray://...", none) are left to Ray."""
    head = head_address(address)
    if head is None:
        return
    try:
        socket.create_connection(head, timeout=timeout_s).close()
    except OSError as exc:
        raise UserError(f"--ray {address}: cannot reach a Ray cluster (no head answers there: {exc.strerror or exc})",
                        hint=START_HINT) from None


# ---- the cluster's auth token ------------------------------------------------------------------
def sends_token() -> bool:
    """Whether Ray's driver sends its token to a head given by address: only in token mode
    (Ray turns it on by itself only for a cluster it finds on this machine)."""
    return os.environ.get("RAY_AUTH_MODE", "").lower() == "token"


def token_file() -> Path | None:
    """The file Ray reads its token from, when it reads one (RAY_AUTH_TOKEN takes precedence)."""
    if os.environ.get("RAY_AUTH_TOKEN") or os.environ.get("RAY_AUTH_MODE", "").lower() == "disabled":
        return None
    path = Path(os.environ.get("RAY_AUTH_TOKEN_PATH") or Path.home() / ".ray" / "auth_token")
    return path if path.is_file() else None


def check_token_file() -> None:
    """Whoever reads the token can run code on the cluster: refuse one that others can read."""
    path = token_file()
    if path is not None and path.stat().st_mode & 0o077:
        mode = oct(path.stat().st_mode & 0o777)[2:]
        raise UserError(f"Ray's auth token {path} is open to other users (mode {mode}): run `chmod 600 {path}`")


def check_authenticates(address: str, timeout_s: float = 10.0) -> None:
    """A head that demands a token this driver will not send fails here, at once (Ray itself
    retries for 20 s and then says only that it cannot connect). Asks the head's GCS for the
    cluster id without a token; skipped without the grpc package or in token mode."""
    head = head_address(address)
    if head is None or sends_token():
        return
    try:
        import grpc
    except ImportError:
        return
    with grpc.insecure_channel(f"{head[0]}:{head[1]}") as channel:
        try:
            channel.unary_unary("/ray.rpc.NodeInfoGcsService/GetClusterId")(b"", timeout=timeout_s)
        except grpc.RpcError as exc:
            if exc.code() == grpc.StatusCode.UNAUTHENTICATED:
                raise UserError(f"--ray {address}: the cluster demands Ray's auth token and this driver sends none",
                                hint=TOKEN_HINT) from None


@contextlib.contextmanager
def throwaway_token() -> Iterator[None]:
    """`--ray local`: a fresh token for the throwaway cluster, in this process's environment
    (which the cluster's processes inherit) and nowhere on disk; Ray would otherwise write one
    to ~/.ray/auth_token, readable by every user, and later clusters would pick it up."""
    if os.environ.get("RAY_AUTH_MODE", "").lower() == "disabled" or os.environ.get("RAY_AUTH_TOKEN"):
        yield
        return
    saved = os.environ.get("RAY_AUTH_MODE")
    os.environ.update(RAY_AUTH_MODE="token", RAY_AUTH_TOKEN=secrets.token_hex(32))
    try:
        yield
    finally:
        del os.environ["RAY_AUTH_TOKEN"]
        if saved is None:
            os.environ.pop("RAY_AUTH_MODE", None)
        else:
            os.environ["RAY_AUTH_MODE"] = saved


def shared_root(jobs: list[ArmJob]) -> Path:
    """The folder every job writes below (the sweep folder)."""
    return Path(os.path.commonpath([str(Path(job.dir).parent) for job in jobs]))


@contextlib.contextmanager
def marker(root: Path) -> Iterator[str]:
    """A file only this driver writes (unique name: two drivers may share a root); a worker that
    cannot see it does not share the driver's filesystem."""
    root.mkdir(parents=True, exist_ok=True)
    path = root / f".trx-ray-{uuid.uuid4().hex[:12]}"
    path.write_text(f"{socket.gethostname()} {os.getpid()}\n")
    try:
        yield str(path)
    finally:
        path.unlink(missing_ok=True)


class Waiter:
    """The driver's loop over running tasks: notifies starts and ends, and stops them all on a
    stop request or on the first worker that cannot see the output folder."""

    def __init__(self, ray: Any, jobs: list[ArmJob], notify: Notify, stop: Any):
        self.ray, self.jobs, self.notify, self.stop = ray, jobs, notify, stop
        self.results: dict[int, JobResult] = {}
        self.started: set[int] = set()
        self.blind: Blind | None = None
        self.stopping_since: float | None = None

    def wait(self, refs: list[Any]) -> tuple[list[JobResult], Blind | None]:
        index = {ref: i for i, ref in enumerate(refs)}
        pending = list(refs)
        try:
            while pending:
                self.maybe_stop(pending)
                ready, pending = self.ray.wait(pending, num_returns=1, timeout=POLL_S)
                pending += [ref for ref in ready if not self.take(index[ref], ref)]
        except KeyboardInterrupt:  # a second Ctrl-C: end the tasks now; cells resume from checkpoints
            for ref in pending:
                self.ray.cancel(ref, force=True)
            raise
        results = [self.results.get(i) or JobResult(job.dir, Status.NOT_RUN, {}) for i, job in enumerate(self.jobs)]
        return results, self.blind

    def maybe_stop(self, pending: list[Any]) -> None:
        if self.stopping_since is None and (self.blind is not None or (self.stop is not None and self.stop.requested)):
            for ref in pending:  # queued: dropped; running: SIGINT in the task, which saves the cell
                self.ray.cancel(ref)
            self.stopping_since = time.monotonic()
        elif self.stopping_since is not None and time.monotonic() - self.stopping_since > STOP_WAIT_S:
            for ref in pending:  # cells that did not save in time end now; they resume from checkpoints
                self.ray.cancel(ref, force=True)
            self.stopping_since = float("inf")

    def take(self, i: int, ref: Any) -> bool:
        """Read the next item of job i's task; True when the task has ended."""
        job = self.jobs[i]
        try:
            item = self.ray.get(next(ref))
        except self.ray.exceptions.TaskCancelledError:
            item = on_record(job)
        except self.ray.exceptions.RayError as exc:  # its worker died more often than max_retries, or
            # the task could not run there at all (trx missing on that node)
            item = JobResult(job.dir, Status.FAILED, {}, f"its Ray task failed: {type(exc).__name__}: {first_line(exc)}")
        except StopIteration:
            item = on_record(job)
        if item == "started":
            self.started.add(i)
            self.notify("start", job, None)
            return False
        if isinstance(item, Blind):
            self.blind = self.blind or item
            item = JobResult(job.dir, Status.NOT_RUN, {}, item.message())
        self.results[i] = item
        if i in self.started:
            self.notify("done", job, item)
        return True


def on_record(job: ArmJob) -> JobResult:
    """What the folder says of a task that ended without a result (cancelled): its summary.json,
    `interrupted` when it ran, else nothing: the cell did not run."""
    summary = RunDir(job.dir).read_summary() or {}
    return JobResult(job.dir, summary.get("status", Status.NOT_RUN), summary, summary.get("error"))


def first_line(exc: BaseException) -> str:
    lines = str(exc).strip().splitlines()
    return lines[0] if lines else ""


def _make(argument: str | None, options: dict[str, Any]) -> RayExecutor:
    return RayExecutor(argument or "auto", options.get("cpus_per_cell", 1.0), options.get("gpus_per_cell", 0.0))


register_executor("ray", "ray:ADDRESS, Ray tasks on a cluster (auto | local | HEAD:PORT)")(_make)
