"""The unit of work of `trx run` and `trx sweep`: one arm, one seed, one folder.

A job is plain data (it crosses process and Ray boundaries): the resolved config of one arm,
the folder it writes, and what that folder is (`CellMeta`, written to `cell.json` at the start
so that reports read it back instead of parsing folder names). `run_job` runs one; executors
(`trx.executors`, `trx.ray_executor`) decide where. One process writes a folder at a time: the
job holds a lock on it while it runs.
"""

from __future__ import annotations

import copy
import os
import shutil
import time
from contextlib import contextmanager
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Callable, Iterator

from trx.config import ExperimentConfig, arm_config, config_changes, run_config
from trx.errors import UserError, debug
from trx.rundir import FINISHED, CellMeta, Locked, RunDir, Status

@dataclass
class ArmJob:
    """One run to do: the validated config of one arm and seed (it pickles), and its folder."""

    config: ExperimentConfig
    dir: str
    meta: CellMeta
    device: str | None = None
    threads: int | None = None  # torch threads, unless the config sets them


@dataclass
class JobResult:
    dir: str
    status: str  # complete | diverged | interrupted | failed | not run | locked
    summary: dict[str, Any] = field(default_factory=dict)
    error: str | None = None

    @property
    def finished(self) -> bool:
        return self.status in FINISHED


Notify = Callable[[str, ArmJob, "JobResult | None"], None]


# ---- making jobs ------------------------------------------------------------------------------
def arm_jobs(cfg: ExperimentConfig, root: Path, device: str | None = None) -> list[ArmJob]:
    """`trx run`: one job per arm and seed, arms in config order. One seed writes
    `root/<arm>/`; several write `root/<arm>/seed=<s>/`."""
    seeds = cfg.seed_list()
    jobs = []
    for arm in cfg.optimizers:
        for seed in seeds:
            one = run_config(cfg, arm, seed)
            folder = Path(root) / arm if len(seeds) == 1 else Path(root) / arm / f"seed={seed}"
            jobs.append(ArmJob(one, str(folder), CellMeta(cfg.name, arm, seed), device))
    return jobs


def job_config(job: ArmJob) -> dict[str, Any]:
    """The job's config as its folder's config.yaml holds it."""
    return arm_config(job.config, job.meta.arm)


# ---- the folder lock --------------------------------------------------------------------------
@contextmanager
def folder_lock(folder: Path) -> Iterator[None]:
    """Hold the run folder's lock while a job writes it (`RunDir.lock`)."""
    with RunDir(folder).lock():
        yield


def lock_holder(folder: Path) -> str | None:
    """Who holds the folder now, or None when nobody does (`RunDir.lock_holder`)."""
    return RunDir(folder).lock_holder()


# ---- checks before anything is written --------------------------------------------------------
def writable_ancestor(path: Path) -> Path:
    while not path.exists():
        path = path.parent
    return path


def check_writable(path: Path) -> None:
    base = writable_ancestor(Path(path))
    if not base.is_dir() or not _can_write(base):
        raise UserError(f"--out: cannot write to {base}", hint="choose another folder with --out")


ModelFor = Callable[[ExperimentConfig], Any]  # a config → a model of its task (None: none can be built here)


def check_resumable(job: ArmJob, model_for: ModelFor | None = None) -> None:
    """An earlier result in `folder` must come from the same config (as config.yaml and the
    checkpoint record it), and its checkpoint and metrics must be ones this run can continue
    (`trx.checkpoint.check`, the weights against `model_for(job.config)`); raises UserError
    (nothing is written)."""
    run, config = RunDir(job.dir), job_config(job)
    folder = run.path
    old = run.read_config()
    if old is not None:
        differ = config_changes(old, config)
        if differ:
            raise UserError(
                f"{folder} holds a result of a different config; it differs at {', '.join(differ[:8])}",
                hint="resume with the same config and --set values, or use --overwrite",
            )
    from trx import checkpoint  # imports torch

    rows = run.metrics_rows()  # a damaged file is refused here
    path = run.checkpoint
    model = (model_for or ShapeModels())(job.config) if path.exists() else None
    ckpt = checkpoint.verify(path, config, model)
    if ckpt is not None:
        kept = sum(1 for r in rows if int(r["step"]) < ckpt["step"])
        if kept != ckpt["metrics_rows"]:
            raise UserError(f"{run.metrics}: {kept} rows before step {ckpt['step']}, but the checkpoint "
                            f"was taken after {ckpt['metrics_rows']}: rows were lost",
                            hint="delete the run folder (or use --overwrite) to run it again")


def task_key(cfg: ExperimentConfig) -> str:
    """What a model's names, shapes and dtypes depend on: the task config and the device (not the seed)."""
    import yaml

    return yaml.safe_dump([cfg.task.model_dump(mode="json"), cfg.device])


class ShapeModels:
    """One model per distinct task config, built on the CPU when first asked for, for the names,
    shapes and dtypes of checkpointed weights (None when its task cannot build it here, e.g.
    without its data: the resume checks the weights then)."""

    def __init__(self) -> None:
        self.models: dict[str, Any] = {}

    def __call__(self, cfg: ExperimentConfig) -> Any:
        key = task_key(cfg)
        if key not in self.models:
            self.models[key] = _fresh_model(cfg)
        return self.models[key]


def _fresh_model(cfg: ExperimentConfig) -> Any:
    import torch

    from trx.tasks import TASKS, DataError

    task = TASKS[cfg.task.name](cfg.task, cfg.seed, torch.device("cpu"))
    try:
        task.prepare_shapes()
    except DataError:
        return None
    return task.build_model()


def check_fits(task: Any, model: Any, device: Any) -> None:
    """Refuse a batch whose training memory exceeds what the device has free: the bytes autograd
    saves for backward on a batch of two (weights excluded), per example × the examples of one
    (micro-)batch, plus weights, gradients and two state tensors per weight. An estimate from
    one tiny forward pass; a task without `batch_size`, or one the probe cannot run, is let through."""
    import torch

    opts = task.options
    fields = type(opts).model_fields
    if "batch_size" not in fields:
        return
    weights = {p.untyped_storage().data_ptr() for p in model.parameters()}
    saved: dict[int, int] = {}

    def pack(t: Any) -> Any:
        ptr = t.untyped_storage().data_ptr()
        if ptr not in weights:
            saved[ptr] = max(saved.get(ptr, 0), t.untyped_storage().nbytes())
        return t

    probe = copy.copy(task)  # shares the loaded data; only the batch size differs
    probe.options = opts.model_copy(update={k: v for k, v in (("batch_size", 2), ("grad_accum", 1)) if k in fields})
    try:
        with torch.random.fork_rng(devices=[]), torch.autograd.graph.saved_tensors_hooks(pack, lambda t: t):
            probe.loss(model, probe.batch(0))
    except Exception:  # noqa: BLE001 - an estimate must never stop a run it cannot judge
        return
    micro = opts.batch_size // getattr(opts, "grad_accum", 1)
    need = sum(saved.values()) / 2 * micro + 4 * sum(p.numel() * p.element_size() for p in model.parameters())
    have = free_memory(device)
    if have is not None and need > have:
        raise UserError(f"task.batch_size: {opts.batch_size} needs about {need / 2**30:,.1f} GiB to train "
                        f"({sum(saved.values()) / 2 / 2**20:,.2f} MiB per example), more than the "
                        f"{have / 2**30:,.1f} GiB free on {device}", hint="use a smaller batch_size")


def free_memory(device: Any) -> int | None:
    """Bytes free on `device` (CUDA: the driver's count; CPU: MemAvailable), None when unknown."""
    import torch

    if getattr(device, "type", str(device)) == "cuda":
        return torch.cuda.mem_get_info(device)[0]
    try:
        for line in Path("/proc/meminfo").read_text().splitlines():
            if line.startswith("MemAvailable:"):
                return int(line.split()[1]) * 1024
    except (OSError, ValueError, IndexError):
        pass
    return None


def _can_write(folder: Path) -> bool:
    try:
        with open(folder / f".trx-write-test-{time.time_ns()}", "wb") as f:
            name = f.name
        Path(name).unlink()
        return True
    except OSError:
        return False


def check_jobs(jobs: list[ArmJob], mode: str, locked: str = "error", model_for: ModelFor | None = None) -> None:
    """The one resume/config check of runs and sweeps. mode: new (refuse folders with results),
    resume (a finished or unfinished result must come from the same config and carry a safe
    checkpoint) or overwrite. locked: "error" (exit 2 naming the holder) or "skip". model_for:
    the plan's models, whose shapes checkpoints are checked against (default: one built per
    distinct task config)."""
    for job in jobs[:1]:
        check_writable(Path(job.dir))
    for job in jobs:
        if mode != "overwrite":
            RunDir(job.dir).refuse_links()
        elif Path(job.dir).is_symlink():  # clear() cannot delete a link, and the run would write through it
            raise UserError(f"--overwrite: {job.dir} is a symbolic link; refusing to delete or write through it",
                            hint="remove the link yourself if the folder it points to is not yours to overwrite")
    if locked == "error":
        for job in jobs:
            who = lock_holder(Path(job.dir))
            if who:
                raise UserError(f"{job.dir} is being written by {who}",
                                hint="wait for that run to finish (one process per run folder)")
    if mode == "new":
        held = [job.dir for job in jobs if RunDir(job.dir).holds_results()]
        if held:
            raise UserError(f"{Path(held[0]).parent} already holds results ({', '.join(Path(h).name for h in held[:6])})",
                            hint="add --resume to continue them or --overwrite to start over")
    if mode == "resume":
        model_for = model_for or ShapeModels()
        for job in jobs:
            check_resumable(job, model_for)


def clear(jobs: list[ArmJob]) -> None:
    """--overwrite: delete the jobs' folders. A folder holding a sweep is never one of them
    (reserved arm names keep them apart; this refuses should they ever meet)."""
    for job in jobs:
        mark = RunDir(job.dir).holds_sweep()
        if mark:
            raise UserError(f"--overwrite: {job.dir} holds a sweep ({mark}); refusing to delete it",
                            hint="delete it yourself if that is what you want")
    for job in jobs:
        shutil.rmtree(job.dir, ignore_errors=True)


def finished_result(job: ArmJob) -> JobResult | None:
    """The job's result when its folder holds a finished one. A finished folder written before
    cell.json existed gets its cell.json here (from the job, which says what the folder is), so
    `--resume` converts it for reports."""
    run = RunDir(job.dir)
    summary = run.finished_summary()
    if summary is None:
        return None
    if not run.cell.exists():
        run.write_cell(job.meta)
    return JobResult(job.dir, summary["status"], summary)


# ---- running one ------------------------------------------------------------------------------
def run_job(job: ArmJob, stop: Any = None, progress: Any = None) -> JobResult:
    """Run (or finish) one job in this process. Never raises for a run that fails or is
    interrupted: the status says so (TRX_DEBUG=1 and data-parallel runs re-raise)."""
    import torch

    from trx.experiment import load_experiment
    from trx.runner import Interrupted, run_arm
    from trx.stop import StopFlag

    folder = RunDir(job.dir)
    try:
        cfg = job.config
        if job.threads and not cfg.threads:
            torch.set_num_threads(job.threads)
        exp = load_experiment(cfg, folder.path.parent, job.device)
        if not exp.ctx.is_main:  # rank 0 holds the lock and writes; the others compute
            return _summary_result(job, run_arm(exp, job.meta.arm, folder.path, progress, stop, job.meta.label))
        with folder.lock():
            done = finished_result(job)  # another process may have finished it meanwhile
            if done:
                return done
            folder.write_cell(job.meta)
            sinks = _sinks(cfg, folder, job.meta)
            summary = run_arm(exp, job.meta.arm, folder.path, progress, stop or StopFlag(), job.meta.label, sinks)
            return _summary_result(job, summary)
    except Locked as exc:
        return JobResult(job.dir, Status.LOCKED, {}, f"locked by {exc}")
    except Interrupted:
        return JobResult(job.dir, Status.INTERRUPTED, folder.read_summary() or {})
    except Exception as exc:  # a run that cannot even start is a recorded failure
        if debug() or int(os.environ.get("WORLD_SIZE", "1")) > 1:
            raise
        return JobResult(job.dir, Status.FAILED, {"arm": job.meta.arm, "status": Status.FAILED}, f"{type(exc).__name__}: {exc}")


def _summary_result(job: ArmJob, summary: dict[str, Any]) -> JobResult:
    return JobResult(job.dir, summary["status"], summary, summary.get("error"))


def _sinks(cfg: ExperimentConfig, folder: RunDir, meta: CellMeta) -> list[Any]:
    """Writers of metrics rows besides metrics.csv."""
    if not cfg.tensorboard:
        return []
    from trx.tensorboard import TensorBoardSink

    return [TensorBoardSink(folder.tensorboard, meta.label)]
