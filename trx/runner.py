"""One experiment: every arm in turn from the same initial weights and batch order.

An arm's loop, for update t = 0 … τ−1: loss at the current parameters, a metrics row on logged
steps (with diagnostics of the update it then takes), the update; then a final row at t = τ with
the loss and evaluation of the trained parameters. A loss that is non-finite or above
`divergence_threshold` × the first loss ends the arm as `diverged`, a result like any other.
"""

from __future__ import annotations

import contextlib
import io
import math
import os
import platform
import statistics
import shutil
import signal
import subprocess
import threading
import time
from collections import deque
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Protocol

import torch
import torch.distributed as dist

import trx
from trx import distributed as D
from trx.config import UserError, arm_config, diff_keys
from trx.io import MetricsWriter, atomic_write, read_json, read_yaml, write_json, write_yaml
from trx.optim import ArmConfig, ConfigError, build_optimizer, lr_ratio, plan_groups
from trx.tasks import TASKS, DataError, Task

FINISHED = ("complete", "diverged")
SPIKE_FACTOR = 2.0  # a loss above this × the median of the recent ones counts as a spike
SPIKE_WINDOW = 50  # updates in that median
RMS_WINDOW = 20  # logged rows in the median that `update_rms_ratio` compares against
RESULT_FILES = ("metrics.csv", "summary.json", "checkpoint.pt")


class Interrupted(Exception):
    """Ctrl-C or SIGTERM: the arm was saved as `interrupted`; later arms do not start."""


class Progress(Protocol):
    def start(self, arm: str, total: int, done: int) -> None: ...
    def advance(self, arm: str, step: int, loss: float | None) -> None: ...
    def finish(self, arm: str, summary: dict[str, Any]) -> None: ...


class NullMetrics:
    """The metrics of a rank that writes nothing (every rank but 0)."""

    rows = 0

    def append(self, row): ...
    def truncate_before(self, step): ...
    def read(self):
        return []


class NoProgress:
    def start(self, arm, total, done): ...
    def advance(self, arm, step, loss): ...
    def finish(self, arm, summary): ...


@dataclass
class StopFlag:
    """Set by SIGINT/SIGTERM; the training loop checks it between updates."""

    requested: bool = False
    signal_name: str = ""


@contextlib.contextmanager
def stop_on_signals(flag: StopFlag):
    """First SIGINT/SIGTERM asks the loop to stop cleanly; a second SIGINT interrupts at once."""
    if threading.current_thread() is not threading.main_thread():
        yield flag
        return

    def handler(signum, frame):
        if flag.requested and signum == signal.SIGINT:
            raise KeyboardInterrupt
        flag.requested, flag.signal_name = True, signal.Signals(signum).name

    old = {s: signal.signal(s, handler) for s in (signal.SIGINT, signal.SIGTERM)}
    try:
        yield flag
    finally:
        for s, h in old.items():
            signal.signal(s, h)


def resolve_device(name: str) -> torch.device:
    if name == "auto":
        return torch.device("cuda" if torch.cuda.is_available() else "cpu")
    if name == "cuda" and not torch.cuda.is_available():
        raise UserError("device: cuda was asked for but torch sees no CUDA device", hint="use --device cpu")
    return torch.device(name)


def git_sha() -> str | None:
    try:
        out = subprocess.run(
            ["git", "rev-parse", "HEAD"], cwd=Path(trx.__file__).parent, capture_output=True, text=True, timeout=5
        )
    except (OSError, subprocess.SubprocessError):
        return None
    return out.stdout.strip() or None if out.returncode == 0 else None


def make_task(cfg: Any, device: torch.device) -> Task:
    task = TASKS[cfg.task.name](cfg.task, cfg.seed, device)
    try:
        task.prepare()
    except DataError as exc:
        raise UserError(str(exc)) from None
    return task


def build_model(task: Task, seed: int) -> torch.nn.Module:
    torch.manual_seed(seed)
    if torch.cuda.is_available():
        torch.cuda.manual_seed_all(seed)
    return task.build_model()


@dataclass
class Experiment:
    """A validated experiment, ready to run: nothing has been written yet."""

    cfg: Any
    task: Task
    device: torch.device
    root: Path
    roles: dict[str, str]
    group_plans: dict[str, list[dict[str, Any]]] = field(default_factory=dict)
    ctx: D.DistContext = D.SINGLE

    def arm_dir(self, arm: str) -> Path:
        return self.root / arm


def prepare(cfg: Any, out: Path, device: str | None = None) -> Experiment:
    """Resolve the device, load data, build the model once and check every arm against it."""
    if cfg.threads:
        torch.set_num_threads(cfg.threads)
    dev = resolve_device(device or cfg.device)
    ctx = D.init_from_env(dev)
    dev = D.device_for(ctx, dev)
    task = make_task(cfg, dev)
    if ctx.enabled:
        try:
            D.shard(task.batch(0), ctx)
        except ValueError as exc:
            raise UserError(f"task: {cfg.task.name} cannot run data-parallel on {ctx.world} ranks: {exc}") from None
    model = build_model(task, cfg.seed)
    roles = task.param_roles(model)
    plans = {}
    for name, arm in cfg.optimizers.items():
        try:
            plans[name] = plan_groups(model, arm, roles)
        except ConfigError as exc:
            raise UserError(str(exc.under(f"optimizers.{name}"))) from None
    return Experiment(cfg, task, dev, Path(out) / cfg.name, roles, plans, ctx)


def _writable_ancestor(path: Path) -> Path:
    while not path.exists():
        path = path.parent
    return path


def check_output(exp: Experiment, mode: str) -> None:
    """Refuse an unwritable folder, results without --resume/--overwrite, or a resume of another
    config. Called before anything is written."""
    base = _writable_ancestor(exp.root)
    if not base.is_dir() or not _can_write(base):
        raise UserError(f"--out: cannot write to {base}", hint="choose another folder with --out")
    held = [a for a in exp.cfg.optimizers if any((exp.arm_dir(a) / f).exists() for f in RESULT_FILES)]
    if mode == "new" and held:
        raise UserError(
            f"{exp.root} already holds results (arms: {', '.join(held)})",
            hint="add --resume to continue them or --overwrite to start over",
        )
    if mode == "resume":
        for arm in exp.cfg.optimizers:
            old = read_yaml(exp.arm_dir(arm) / "config.yaml")
            if old is None:
                continue
            differ = diff_keys(old, arm_config(exp.cfg, arm))
            if differ:
                raise UserError(
                    f"--resume: {exp.arm_dir(arm)} was made by a different config; it differs at {', '.join(differ[:8])}",
                    hint="resume with the same config and --set values, or use --overwrite",
                )


def _can_write(folder: Path) -> bool:
    try:
        with io.open(folder / f".trx-write-test-{time.time_ns()}", "wb") as f:
            name = f.name
        Path(name).unlink()
        return True
    except OSError:
        return False


def run_experiment(
    exp: Experiment, mode: str = "new", progress: Progress | None = None, stop: StopFlag | None = None
) -> list[dict[str, Any]]:
    """Run every arm (mode: new | resume | overwrite); returns their summaries in config order.
    Raises Interrupted after saving the current arm when `stop` is set."""
    check_output(exp, mode)
    progress = progress if progress is not None and exp.ctx.is_main else NoProgress()
    stop = stop or StopFlag()
    if mode == "overwrite" and exp.ctx.is_main:
        for arm in exp.cfg.optimizers:
            shutil.rmtree(exp.arm_dir(arm), ignore_errors=True)
        (exp.root / "comparison.csv").unlink(missing_ok=True)
    if exp.ctx.enabled:
        dist.barrier()
    summaries = []
    for arm in exp.cfg.optimizers:
        previous = read_json(exp.arm_dir(arm) / "summary.json") if mode == "resume" else None
        if previous and previous.get("status") in FINISHED:
            progress.finish(arm, previous)
            summaries.append(previous)
            continue
        summaries.append(ArmRun(exp, arm, progress, stop).run())
    return summaries


class ArmRun:
    """One arm: build, maybe restore, train, summarize."""

    def __init__(self, exp: Experiment, arm: str, progress: Progress, stop: StopFlag):
        self.exp, self.arm, self.progress, self.stop = exp, arm, progress, stop
        self.cfg = exp.cfg
        self.arm_cfg: ArmConfig = exp.cfg.optimizers[arm]
        self.dir = exp.arm_dir(arm)
        self.ctx = exp.ctx
        self.main = exp.ctx.is_main  # only rank 0 writes
        self.metrics = MetricsWriter(self.dir / "metrics.csv") if self.main else NullMetrics()
        self.t = 0
        self.first_loss: float | None = None
        self.best_loss = math.inf
        self.last_loss: float | None = None
        self.diverged_at: int | None = None
        self.elapsed = 0.0
        self.final_eval: dict[str, float] = {}
        self.history: list[dict[str, Any]] = []
        self.recent_losses: deque[float] = deque(maxlen=SPIKE_WINDOW)
        self.recent_update_rms: deque[float] = deque(maxlen=RMS_WINDOW)
        self.loss_spikes = 0

    # ---- set-up -------------------------------------------------------------------------
    def _build(self) -> None:
        self.net = D.wrap_model(build_model(self.exp.task, self.cfg.seed), self.ctx)  # what the loss calls
        self.model = getattr(self.net, "module", self.net)  # the model itself: optimizer, state, evaluation
        self.model.train()
        if self.ctx.enabled:  # ranks draw different dropout masks, like different examples
            torch.manual_seed(self.cfg.seed * 1009 + self.ctx.rank + 1)
        self.opt = build_optimizer(
            self.model, self.arm_cfg, self.cfg.steps, roles=self.exp.roles, grad_clip=self.cfg.grad_clip
        )
        self.schedule = self.opt.stages[0].schedule
        self.opt.data_parallel = self.ctx.enabled

    def _restore(self) -> None:
        path = self.dir / "checkpoint.pt"
        if not path.exists():
            if self.main:
                self.metrics.path.unlink(missing_ok=True)
                self.metrics = MetricsWriter(self.metrics.path)
            return
        ckpt = torch.load(path, map_location=self.exp.device, weights_only=False)
        self.model.load_state_dict(ckpt["model"])
        self.opt.load_state_dict(ckpt["optimizer"])
        rng_cpu, rng_cuda = ckpt["rng_cpu"], ckpt.get("rng_cuda")
        if self.ctx.enabled:  # one state per rank
            rng_cpu, rng_cuda = rng_cpu[self.ctx.rank], rng_cuda[self.ctx.rank] if rng_cuda else None
        torch.set_rng_state(rng_cpu)
        if rng_cuda is not None and torch.cuda.is_available():
            torch.cuda.set_rng_state_all(rng_cuda)
        self.t, self.first_loss = ckpt["step"], ckpt["first_loss"]
        self.best_loss, self.elapsed = ckpt["best_loss"], ckpt["elapsed"]
        self.loss_spikes = ckpt["loss_spikes"]
        self.recent_losses.extend(ckpt["recent_losses"])
        self.recent_update_rms.extend(ckpt["recent_update_rms"])
        self.metrics.truncate_before(self.t)
        self.history = [{k: _num(v) for k, v in r.items()} for r in self.metrics.read()]

    def _rng_states(self) -> tuple[Any, Any]:
        cpu = torch.get_rng_state()
        cuda = torch.cuda.get_rng_state_all() if torch.cuda.is_available() else None
        if not self.ctx.enabled:
            return cpu, cuda
        gathered: list[Any] = [None] * self.ctx.world
        dist.all_gather_object(gathered, (cpu, cuda))
        return [g[0] for g in gathered], ([g[1] for g in gathered] if cuda is not None else None)

    def _save_checkpoint(self) -> None:
        rng_cpu, rng_cuda = self._rng_states()  # a collective: every rank calls it
        if not self.main:
            return
        buf = io.BytesIO()
        torch.save(
            {
                "step": self.t,
                "model": self.model.state_dict(),
                "optimizer": self.opt.state_dict(),
                "rng_cpu": rng_cpu,
                "rng_cuda": rng_cuda,
                "first_loss": self.first_loss,
                "best_loss": self.best_loss,
                "elapsed": self.elapsed + (time.perf_counter() - self.t0),
                "metrics_rows": self.metrics.rows,
                "loss_spikes": self.loss_spikes,
                "recent_losses": list(self.recent_losses),
                "recent_update_rms": list(self.recent_update_rms),
            },
            buf,
        )
        atomic_write(self.dir / "checkpoint.pt", buf.getvalue())

    # ---- the loop -----------------------------------------------------------------------
    def run(self) -> dict[str, Any]:
        if self.main:
            self.dir.mkdir(parents=True, exist_ok=True)
            write_yaml(self.dir / "config.yaml", arm_config(self.cfg, self.arm))
        status, error = "complete", None
        self.t0 = time.perf_counter()
        try:
            self._build()
            self._restore()
            self.t0 = time.perf_counter()
            self.progress.start(self.arm, self.cfg.steps, self.t)
            self._train()
            status = "diverged" if self.diverged_at is not None else "complete"
        except Interrupted:
            self._save_checkpoint()
            summary = self._finish("interrupted", None)
            raise
        except KeyboardInterrupt:
            summary = self._finish("interrupted", "interrupted before the arm could be checkpointed")
            raise Interrupted from None
        except Exception as exc:  # an arm that crashes is a recorded failure; the others still run
            status, error = "failed", f"{type(exc).__name__}: {exc}"
            if _debug() or self.ctx.enabled:  # ranks cannot go on alone: end the run (torchrun stops the rest)
                self._finish(status, error)
                raise
        return self._finish(status, error)

    def _row_due(self, t: int) -> bool:
        return t % self.cfg.log_every == 0 or t == self.cfg.steps - 1 or self._eval_due(t)

    def _eval_due(self, t: int) -> bool:
        every = self.cfg.eval_every
        return bool(every) and t % every == 0

    def _train(self) -> None:
        task, opt, steps = self.exp.task, self.opt, self.cfg.steps
        pending: list[tuple[int, torch.Tensor]] = []
        while self.t < steps:
            t = self.t
            if self._stop_requested(t):
                raise Interrupted(self.stop.signal_name)
            loss = task.loss(self.net, D.shard(task.batch(t), self.ctx))
            pending.append((t, loss.detach()))
            if self.first_loss is None:
                self.first_loss = float(loss.detach())
            row_due = self._row_due(t)
            if row_due or len(pending) >= self.cfg.log_every:
                if self._diverged(pending):
                    return
                pending = []
            row: dict[str, Any] = {}
            if row_due:
                row = {"step": t, "loss": self.last_loss, "lr": opt.current_lr(), "lr_ratio": lr_ratio(self.schedule, t)}
                if self._eval_due(t):
                    row.update(self._evaluate())
            loss.backward()
            opt.diagnose = row_due
            opt.step()
            opt.zero_grad(set_to_none=True)
            self.t = t + 1
            if row_due:
                self._write_row(row, opt.diagnostics)
            if self.cfg.checkpoint_every and self.t % self.cfg.checkpoint_every == 0 and self.t < steps:
                if pending and self._diverged(pending):
                    return
                pending = []
                self._save_checkpoint()
        if pending and self._diverged(pending):
            return
        self._final_row()

    def _stop_requested(self, t: int) -> bool:
        """Ranks agree to stop at the same update: they compare flags on logged steps only."""
        if not self.ctx.enabled:
            return self.stop.requested
        return t % self.cfg.log_every == 0 and D.any_rank(self.stop.requested, self.ctx, self.exp.device)

    def _diverged(self, pending: list[tuple[int, torch.Tensor]]) -> bool:
        """Check buffered losses (one host sync per check; averaged over ranks); on divergence
        write its row."""
        values = D.mean_over_ranks(torch.stack([l for _, l in pending]).float(), self.ctx).cpu().tolist()
        limit = self.cfg.divergence_threshold * abs(self.first_loss or 0.0)
        for (t, _), value in zip(pending, values):
            self.last_loss = value
            if not math.isfinite(value) or (self.first_loss and value > limit):
                self.diverged_at = t
                self._write_row({"step": t, "loss": value, "lr": self.opt.param_groups[0]["lr"]}, {})
                return True
            self.best_loss = min(self.best_loss, value)
            self._count_spike(value)
        return False

    def _count_spike(self, value: float) -> None:
        """Early warning: a loss well above the recent median, counted before it becomes divergence."""
        if len(self.recent_losses) >= 10 and value > SPIKE_FACTOR * statistics.median(self.recent_losses):
            self.loss_spikes += 1
        self.recent_losses.append(value)

    def _evaluate(self) -> dict[str, float]:
        self.model.eval()
        with torch.no_grad():
            metrics = self.exp.task.evaluate(self.model)
        self.model.train()
        return metrics

    def _write_row(self, row: dict[str, Any], diagnostics: dict[str, float]) -> None:
        row.update(diagnostics)
        lr, rms = row.get("lr"), row.get("update_rms")
        if lr and rms is not None:
            row["tr_ratio"] = rms / lr
        if rms is not None:
            # early warning: this update's RMS against the median of the recent logged ones
            median = statistics.median(self.recent_update_rms) if self.recent_update_rms else None
            row["update_rms_ratio"] = rms / median if median else None
            self.recent_update_rms.append(rms)
        row["loss_spikes"] = self.loss_spikes
        row["wall_time"] = round(self.elapsed + time.perf_counter() - self.t0, 4)
        self.metrics.append(row)
        self.history.append(row)
        self.progress.advance(self.arm, self.t, row.get("loss"))

    def _final_row(self) -> None:
        """Row t = τ: loss and evaluation at the trained parameters (no update follows)."""
        task = self.exp.task
        with torch.no_grad():
            loss = task.loss(self.net, D.shard(task.batch(self.cfg.steps), self.ctx)).detach().float().reshape(1)
            value = float(D.mean_over_ranks(loss, self.ctx))
        self.final_eval = self._evaluate()
        if not math.isfinite(value) or (self.first_loss and value > self.cfg.divergence_threshold * abs(self.first_loss)):
            self.diverged_at = self.cfg.steps
        else:
            self.best_loss = min(self.best_loss, value)
        self.last_loss = value
        self._write_row({"step": self.cfg.steps, "loss": value, **self.final_eval}, {})

    # ---- the record ---------------------------------------------------------------------
    def _finish(self, status: str, error: str | None) -> dict[str, Any]:
        cfg, arm_data = self.cfg, arm_config(self.cfg, self.arm)["optimizers"][self.arm]
        summary: dict[str, Any] = {
            "name": cfg.name,
            "arm": self.arm,
            "task": cfg.task.name,
            "status": status,
            "steps": cfg.steps,
            "steps_done": self.diverged_at if self.diverged_at is not None else self.t,
            "final_loss": self.last_loss,
            "best_loss": self.best_loss if math.isfinite(self.best_loss) else None,
            "first_loss": self.first_loss,
        }
        summary.update({f"final_{k}": v for k, v in self.final_eval.items()})
        summary.update(
            diverged=self.diverged_at is not None,
            diverged_at=self.diverged_at,
            wall_time_s=round(self.elapsed + time.perf_counter() - self.t0, 3),
            synthetic=bool(self.exp.task.synthetic),
            error=error,
            seed=cfg.seed,
            device=str(self.exp.device),
            threads=torch.get_num_threads(),
            world_size=self.ctx.world,
            trx_version=trx.__version__,
            torch_version=torch.__version__,
            python_version=platform.python_version(),
            git_sha=git_sha(),
            **(self.opt.info() if hasattr(self, "opt") else {}),
        )
        if status in FINISHED:
            try:
                summary.update(self.exp.task.summarize(self.history, arm_data, cfg.steps))
            except Exception as exc:  # a summary extra must not lose the run
                summary["summarize_error"] = f"{type(exc).__name__}: {exc}"
            if not cfg.keep_checkpoint and self.main:
                (self.dir / "checkpoint.pt").unlink(missing_ok=True)
        if self.main:
            write_json(self.dir / "summary.json", summary)
        self.progress.finish(self.arm, summary)
        return summary


def _num(v: Any) -> Any:
    if v in ("", None):
        return None
    try:
        return float(v)
    except ValueError:
        return v


def _debug() -> bool:
    return os.environ.get("TRX_DEBUG") == "1"
