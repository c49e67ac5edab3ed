"""The training loop of one run (one arm, one seed, one folder), and its preparation.

For update t = 0 … τ−1: loss at the current parameters, a metrics row on logged steps (with
diagnostics of the update it then takes), the update; then a final row at t = τ with the loss
and evaluation of the trained parameters. A divergent loss (`trx.monitor`: non-finite, or over
the line of the experiment's `monitor.rule`) ends the run as `diverged`, a result like any other;
a stall (`monitor.stall`) is recorded and the run goes on.
Who runs which run, where, and how often is `trx.jobs`' business.
"""

from __future__ import annotations

import sys
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Protocol

import torch
import yaml

from trx import checkpoint
from trx import data_parallel as D
from trx.config import ExperimentConfig, arm_config
from trx.errors import UserError, debug
from trx.io import MetricsWriter
from trx.monitor import LossMonitor, MonitorConfig
from trx.optim import ArmConfig, ConfigError, build_optimizer, lr_ratio, plan_groups
from trx.provenance import provenance
from trx.rundir import FINISHED, RunDir
from trx.stop import StopFlag
from trx.tasks import TASKS, DataError, Task



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


def resolve_device(name: str) -> torch.device:
    if name == "auto":
        return torch.device("cuda" if torch.cuda.is_available() else "cpu")
    if name == "cuda" and not torch.cuda.is_available():
        raise UserError("device: cuda was asked for but torch sees no CUDA device", hint="use --device cpu")
    return torch.device(name)


_TASKS: dict[str, Task] = {}  # tasks with their data loaded, newest last
_TASK_CACHE_SIZE = 4


def make_task(cfg: ExperimentConfig, device: torch.device) -> Task:
    """The experiment's task with its data loaded. Runs in one process that share the task
    config, seed and device share one task, so data is read once (batches are a pure function
    of seed and step, so sharing changes nothing)."""
    key = yaml.safe_dump([cfg.task.model_dump(mode="json"), cfg.seed, str(device)], sort_keys=True)
    if key in _TASKS:
        _TASKS[key] = _TASKS.pop(key)
        return _TASKS[key]
    task = TASKS[cfg.task.name](cfg.task, cfg.seed, device)
    try:
        task.prepare()
    except DataError as exc:
        raise UserError(str(exc)) from None
    _TASKS[key] = task
    while len(_TASKS) > _TASK_CACHE_SIZE:
        _TASKS.pop(next(iter(_TASKS)))
    return task


def build_model(task: Task, seed: int) -> torch.nn.Module:
    torch.manual_seed(seed)
    if torch.cuda.is_available():
        torch.cuda.manual_seed_all(seed)
    return task.build_model()


@dataclass
class Experiment:
    """A validated experiment on its device, with its task: nothing has been written yet."""

    cfg: ExperimentConfig
    task: Task
    device: torch.device
    root: Path
    roles: dict[str, str]
    group_plans: dict[str, list[dict[str, Any]]] = field(default_factory=dict)
    ctx: D.DistContext = D.SINGLE


def prepare(cfg: ExperimentConfig, out: Path, device: str | None = None, shapes_only: bool = False) -> Experiment:
    """Resolve the device, load data, build the model once and check every arm against it (the
    shape checks of planning). `shapes_only`: read no data, only what the model's shapes need
    (dry runs)."""
    if shapes_only:
        dev = resolve_device(device or cfg.device)
        task = TASKS[cfg.task.name](cfg.task, cfg.seed, dev)
        task.prepare_shapes()
        exp = Experiment(cfg, task, dev, Path(out) / cfg.name, {})
    else:
        exp = load_experiment(cfg, out, device)
    model = build_model(exp.task, cfg.seed)
    exp.roles, exp.group_plans = exp.task.param_roles(model), plan_arms(cfg, model, exp.task)
    return exp


def load_experiment(cfg: ExperimentConfig, out: Path, device: str | None = None) -> Experiment:
    """The device, the process group and the task with its data: what a run needs before it
    builds its model (its arms were checked when it was planned)."""
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
    return Experiment(cfg, task, dev, Path(out) / cfg.name, {}, ctx=ctx)


def plan_arms(cfg: ExperimentConfig, model: torch.nn.Module, task: Task) -> dict[str, list[dict[str, Any]]]:
    """Every arm's parameter groups on `model` (a config error names the arm)."""
    roles, plans = task.param_roles(model), {}
    for name, arm in cfg.optimizers.items():
        try:
            plans[name] = plan_groups(model, arm, roles)
        except ConfigError as exc:
            raise UserError(str(exc.under(f"optimizers.{name}"))) from None
    return plans


class ArmRun:
    """One run: build, maybe restore, train, summarize; writes only into `folder`."""

    def __init__(self, exp: Experiment, arm: str, folder: Path, progress: Progress | None = None,
                 stop: StopFlag | None = None, label: str | None = None, sinks: list[Any] | None = None):
        self.exp, self.arm, self.dir = exp, arm, Path(folder)
        self.folder = RunDir(folder)
        self.label = label or arm  # the name progress reports use
        self.progress = progress if progress is not None and exp.ctx.is_main else NoProgress()
        self.stop = stop or StopFlag()
        self.cfg = exp.cfg
        self.arm_cfg: ArmConfig = exp.cfg.optimizers[arm]
        self.ctx = exp.ctx
        self.main = exp.ctx.is_main  # only rank 0 writes
        self.metrics = MetricsWriter(self.folder.metrics) if self.main else NullMetrics()
        self.sinks = sinks or []  # more writers of every metrics row (TensorBoard)
        self.monitor = new_monitor(exp.cfg)
        self.t = 0
        self.diverged_at: int | None = None
        self.pending: list[tuple[int, torch.Tensor]] = []  # losses the monitor has not seen yet
        self.elapsed = 0.0
        self.final_eval: dict[str, float] = {}
        self.history: list[dict[str, Any]] = []
        self.restarted = False

    # ---- set-up -------------------------------------------------------------------------
    def _build(self) -> None:
        self.net = D.wrap_model(build_model(self.exp.task, self.cfg.seed), self.ctx)  # what the loss calls
        self.model = getattr(self.net, "module", self.net)  # the model itself: optimizer, state, evaluation
        self.model.train()
        if self.ctx.enabled:  # ranks draw different dropout masks, like different examples
            torch.manual_seed(self.cfg.seed * 1009 + self.ctx.rank + 1)
        roles = self.exp.task.param_roles(self.model)
        self.opt = build_optimizer(self.model, self.arm_cfg, self.cfg.steps, roles=roles, grad_clip=self.cfg.grad_clip)
        self.schedule = self.opt.stages[0].schedule
        self.opt.data_parallel = self.ctx.enabled

    def _restore(self) -> None:
        path = self.folder.checkpoint
        if not path.exists():
            if self.main:
                self.restarted = self.metrics.rows > 0
                if self.restarted:
                    print(f"{self.label}: no checkpoint to resume from; starting over from update 0", file=sys.stderr)
                self.metrics.path.unlink(missing_ok=True)
                self.metrics = MetricsWriter(self.metrics.path)
            return
        ckpt = checkpoint.load(path, self.exp.device)
        checkpoint.check(ckpt, self.model, arm_config(self.cfg, self.arm), self.cfg.steps, path)
        self.model.load_state_dict(ckpt["model"])
        self.opt.load_state_dict(ckpt["optimizer"])
        checkpoint.restore_rng(ckpt, self.ctx)
        self.t, self.elapsed = ckpt["step"], ckpt["elapsed"]
        self.monitor.load(ckpt["monitor"])
        self.metrics.truncate_before(self.t)
        self.history = [{k: _num(v) for k, v in r.items()} for r in self.metrics.read()]

    def _save_checkpoint(self) -> None:
        rng = checkpoint.rng_states(self.ctx)  # a collective: every rank calls it
        if not self.main:
            return
        checkpoint.save(self.folder.checkpoint, {
            "step": self.t,
            "model": self.model.state_dict(),
            "optimizer": self.opt.state_dict(),
            **rng,
            "elapsed": self.elapsed + (time.perf_counter() - self.t0),
            "metrics_rows": self.metrics.rows,
            "monitor": self.monitor.state(),
            "config": arm_config(self.cfg, self.arm),  # what the run was started with (config.yaml may go)
        })

    # ---- the loop -----------------------------------------------------------------------
    def run(self) -> dict[str, Any]:
        if self.main:
            self.dir.mkdir(parents=True, exist_ok=True)
        status, error = "complete", None
        self.t0 = time.perf_counter()
        try:
            self._build()
            self._restore()
            if self.main:  # only once a checkpoint is accepted: a refused one leaves the old record as it was
                self.folder.write_config(arm_config(self.cfg, self.arm))
            self.t0 = time.perf_counter()
            self.progress.start(self.label, self.cfg.steps, self.t)
            self._train()
            status = "diverged" if self.diverged_at is not None else "complete"
        except Interrupted:
            self._save_checkpoint()
            self._finish("interrupted", None)
            raise
        except KeyboardInterrupt:
            self._finish("interrupted", "interrupted before the run could be checkpointed")
            raise Interrupted from None
        except UserError:
            raise  # e.g. a checkpoint refused on load: the caller reports it (exit 2)
        except Exception as exc:  # a run that crashes is a recorded failure; the others still run
            status, error = "failed", f"{type(exc).__name__}: {exc}"
            if debug() or self.ctx.enabled:  # ranks cannot go on alone: end the run (torchrun stops the rest)
                self._finish(status, error)
                raise
        finally:
            for sink in self.sinks:
                sink.close()
        return self._finish(status, error)

    def _row_due(self, t: int) -> bool:
        return t % self.cfg.log_every == 0 or t == self.cfg.steps - 1 or self._eval_due(t)

    def _eval_due(self, t: int) -> bool:
        every = self.cfg.eval_every
        return bool(every) and t % every == 0

    def _train(self) -> None:
        task, opt, steps = self.exp.task, self.opt, self.cfg.steps
        every = self.cfg.checkpoint_interval()
        self.pending = []
        while self.t < steps:
            t = self.t
            if self._stop_requested(t):
                if self._diverged():  # the monitor sees every loss before the checkpoint
                    return
                raise Interrupted(self.stop.signal_name)
            loss = task.loss(self.net, D.shard(task.batch(t), self.ctx))
            self.pending.append((t, loss.detach()))
            if self.monitor.first_loss is None:
                self.monitor.first(float(loss.detach()))
            row_due = self._row_due(t)
            if (row_due or len(self.pending) >= self.cfg.log_every) and self._diverged():
                return
            row: dict[str, Any] = {}
            if row_due:
                row = {"step": t, "loss": self.monitor.last_loss, "lr": opt.current_lr(),
                       "lr_ratio": lr_ratio(self.schedule, t)}
                if self._eval_due(t):
                    row.update(self._evaluate())
            loss.backward()
            opt.diagnose = row_due
            opt.step()
            opt.zero_grad(set_to_none=True)
            self.t = t + 1
            if row_due:
                self._write_row(row, opt.diagnostics)
            if every and self.t % every == 0 and self.t < steps:
                if self._diverged():
                    return
                self._save_checkpoint()
        if self._diverged():
            return
        self._final_row()

    def _stop_requested(self, t: int) -> bool:
        """Ranks agree to stop at the same update: they compare flags on logged steps only."""
        if not self.ctx.enabled:
            return self.stop.requested
        return t % self.cfg.log_every == 0 and D.any_rank(self.stop.requested, self.ctx, self.exp.device)

    def _diverged(self) -> bool:
        """The one divergence path: hand the buffered losses to the monitor (one host sync per
        check; averaged over ranks) and empty the buffer; on divergence write its row."""
        pending, self.pending = self.pending, []
        if not pending:
            return False
        values = D.mean_over_ranks(torch.stack([l for _, l in pending]).float(), self.ctx).cpu().tolist()
        for (t, _), value in zip(pending, values):
            if self.monitor.observe(value, t):
                self.diverged_at = t
                self._write_row({"step": t, "loss": value, "lr": self.opt.param_groups[0]["lr"]}, {})
                return True
        return False

    def _evaluate(self) -> dict[str, float]:
        self.model.eval()
        with torch.no_grad():
            metrics = self.exp.task.evaluate(self.model)
        self.model.train()
        return metrics

    def _write_row(self, row: dict[str, Any], diagnostics: dict[str, float]) -> None:
        row.update(diagnostics)  # tr_ratio and the other diagnostics come from the optimizer's groups
        rms = row.get("update_rms")
        if rms is not None:
            row["update_rms_ratio"] = self.monitor.update_rms_ratio(rms)
        row["loss_spikes"] = self.monitor.spikes
        row["wall_time"] = round(self.elapsed + time.perf_counter() - self.t0, 4)
        self.metrics.append(row)
        for sink in self.sinks:
            sink.append(row)
        self.history.append(row)
        self.progress.advance(self.label, self.t, row.get("loss"))

    def _final_row(self) -> None:
        """Row t = τ: loss and evaluation at the trained parameters (no update follows)."""
        task = self.exp.task
        with torch.no_grad():
            loss = task.loss(self.net, D.shard(task.batch(self.cfg.steps), self.ctx)).detach().float().reshape(1)
            value = float(D.mean_over_ranks(loss, self.ctx))
        self.final_eval = self._evaluate()
        if self.monitor.observe(value, self.cfg.steps, count_spikes=False):
            self.diverged_at = self.cfg.steps
        self._write_row({"step": self.cfg.steps, "loss": value, **self.final_eval}, {})

    # ---- the record ---------------------------------------------------------------------
    def _finish(self, status: str, error: str | None) -> dict[str, Any]:
        cfg, arm_data, m = self.cfg, arm_config(self.cfg, self.arm)["optimizers"][self.arm], self.monitor
        summary: dict[str, Any] = {
            "name": cfg.name,
            "arm": self.arm,
            "task": cfg.task.name,
            "status": status,
            "steps": cfg.steps,
            "steps_done": self.diverged_at if self.diverged_at is not None else self.t,
            "final_loss": m.last_loss,
            "best_loss": m.best_loss if m.best_loss < float("inf") else None,
            "first_loss": m.first_loss,
        }
        summary.update({f"final_{k}": v for k, v in self.final_eval.items()})
        summary.update(
            diverged=self.diverged_at is not None,
            diverged_at=self.diverged_at,
            loss_spikes=m.spikes,
            stalled=m.stalled_at is not None,
            stalled_at=m.stalled_at,
            wall_time_s=round(self.elapsed + time.perf_counter() - self.t0, 3),
            synthetic=bool(self.exp.task.synthetic),
            loss_unit=self.exp.task.loss_unit,
            error=error,
            restarted=self.restarted,
            seed=cfg.seed,
            **provenance(self.exp.device, self.ctx.world),
            **(self.opt.info() if hasattr(self, "opt") else {}),
        )
        if status in FINISHED:
            try:
                summary.update(self.exp.task.summarize(self.history, arm_data, cfg.steps))
            except Exception as exc:  # a summary extra must not lose the run
                summary["summarize_error"] = f"{type(exc).__name__}: {exc}"
            if not cfg.keep_checkpoint and self.main:
                self.folder.checkpoint.unlink(missing_ok=True)
        if self.main:
            self.folder.write_summary(summary)
        self.progress.finish(self.label, summary)
        return summary


def new_monitor(cfg: ExperimentConfig) -> LossMonitor:
    """The loss monitor of one run of `cfg`, with the experiment's rules."""
    rules = cfg.monitor or MonitorConfig()
    return LossMonitor(cfg.divergence_threshold, rules.rule, rules.stall, cfg.steps)


def _num(v: Any) -> Any:
    if v in ("", None):
        return None
    try:
        return float(v)
    except ValueError:
        return v
