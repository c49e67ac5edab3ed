"""One run (one arm, one seed, one folder): builds its model, then wires the loop that trains it
(`trx.loop`) to the recorder that writes its record (`trx.recorder`) and to its checkpointer
(`trx.checkpoint.Checkpointer`). Who runs which run, where, and how often is `trx.jobs`' business.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

import torch

from trx import data_parallel as D
from trx.checkpoint import Checkpointer
from trx.config import arm_config
from trx.errors import UserError, debug
from trx.experiment import Experiment, build_model
from trx.loop import CHECKPOINT, STOPPED, Clock, TrainLoop, new_monitor
from trx.monitor import LossMonitor
from trx.optim import build_optimizer
from trx.provenance import provenance
from trx.recorder import Progress, Recorder
from trx.rundir import FINISHED, RunDir
from trx.stop import StopFlag


class Interrupted(Exception):
    """Ctrl-C or SIGTERM: the arm was saved as `interrupted`; later arms do not start."""


def build_loop(exp: Experiment, arm: str, monitor: LossMonitor, stop: StopFlag, clock: Clock) -> TrainLoop:
    """The run's one model (seeded), its optimizer, and the loop over them."""
    cfg, ctx = exp.cfg, exp.ctx
    net = D.wrap_model(build_model(exp.task, cfg.seed), ctx)  # what the loss calls
    model = getattr(net, "module", net)  # the model itself: optimizer, state, evaluation
    model.train()
    if ctx.enabled:  # ranks draw different dropout masks, like different examples
        torch.manual_seed(cfg.seed * 1009 + ctx.rank + 1)
    opt = build_optimizer(model, cfg.optimizers[arm], cfg.steps, roles=exp.task.param_roles(model), grad_clip=cfg.grad_clip)
    opt.data_parallel = ctx.enabled
    return TrainLoop(cfg, exp.task, net, opt, monitor, ctx=ctx, device=exp.device, stop=stop, clock=clock)


def run_arm(exp: Experiment, arm: str, folder: Path, progress: Progress | None = None, stop: StopFlag | None = None,
            label: str | None = None, sinks: list[Any] | None = None) -> dict[str, Any]:
    """Build, maybe restore, train and summarize one arm into `folder`; its summary. A run that
    crashes is a recorded failure; Ctrl-C or the stop flag save it and raise `Interrupted`."""
    run = _Run(exp, arm, Recorder(RunDir(folder), label or arm, exp.ctx.is_main, progress, sinks))
    try:
        return run.finish(*run.train(stop or StopFlag()))
    finally:
        run.rec.close()


class _Run:
    """The state one run's record is made from, whatever stage it ended in."""

    def __init__(self, exp: Experiment, arm: str, rec: Recorder):
        self.exp, self.arm, self.rec = exp, arm, rec
        self.config = arm_config(exp.cfg, arm)
        self.ckpt = Checkpointer(rec.folder.checkpoint, self.config, exp.ctx, exp.device)
        self.monitor, self.clock = new_monitor(exp.cfg), Clock()
        self.loop: TrainLoop | None = None

    def train(self, stop: StopFlag) -> tuple[str, str | None]:
        """(status, error) of the run, after it ends; raises Interrupted once it is saved."""
        try:
            loop = self.loop = build_loop(self.exp, self.arm, self.monitor, stop, self.clock)
            self.restore(loop)
            self.rec.write_config(self.config)  # only once a checkpoint is accepted: a refused one leaves the old record
            self.clock.restart(self.clock.elapsed)
            self.rec.start(self.exp.cfg.steps, loop.t)
            for event in loop:
                if event.row is not None:
                    self.rec.row(event.row, event.at)
                if event.kind in (CHECKPOINT, STOPPED):
                    self.save(loop)
                if event.kind == STOPPED:
                    self.finish("interrupted", None)
                    raise Interrupted(stop.signal_name)
            return ("diverged" if loop.diverged_at is not None else "complete"), None
        except (Interrupted, UserError):
            raise  # UserError: e.g. a checkpoint refused on load; the caller reports it (exit 2)
        except KeyboardInterrupt:
            self.finish("interrupted", "interrupted before the run could be checkpointed")
            raise Interrupted from None
        except Exception as exc:  # a run that crashes is a recorded failure; the others still run
            error = f"{type(exc).__name__}: {exc}"
            if debug() or self.exp.ctx.enabled:  # ranks cannot go on alone: end the run (torchrun stops the rest)
                self.finish("failed", error)
                raise
            return "failed", error

    def restore(self, loop: TrainLoop) -> None:
        at = self.ckpt.restore(loop.model, loop.opt, loop.monitor)
        if at is None:
            self.rec.start_over()
            return
        loop.t, self.clock.elapsed = at
        self.rec.resume_at(loop.t)

    def save(self, loop: TrainLoop) -> None:
        self.ckpt.save(loop.t, loop.model, loop.opt, loop.monitor, self.clock.now(), self.rec.rows)

    def finish(self, status: str, error: str | None) -> dict[str, Any]:
        summary = self.summary(status, error)
        if status in FINISHED and not self.exp.cfg.keep_checkpoint:
            self.ckpt.delete()
        self.rec.finish(summary)
        return summary

    def summary(self, status: str, error: str | None) -> dict[str, Any]:
        exp, cfg, m, loop = self.exp, self.exp.cfg, self.monitor, self.loop
        diverged_at = loop.diverged_at if loop else None
        final_eval = loop.final_eval if loop else {}
        summary: dict[str, Any] = {
            "name": cfg.name,
            "arm": self.arm,
            "task": cfg.task.name,
            "status": status,
            "steps": cfg.steps,
            "steps_done": diverged_at if diverged_at is not None else (loop.t if loop else 0),
            "final_loss": m.last_loss,
            "best_loss": m.best_loss if m.best_loss < float("inf") else None,
            "first_loss": m.first_loss,
        }
        summary.update({f"final_{k}": v for k, v in final_eval.items()})
        summary.update(
            diverged=diverged_at is not None,
            diverged_at=diverged_at,
            loss_spikes=m.spikes,
            stalled=m.stalled_at is not None,
            stalled_at=m.stalled_at,
            wall_time_s=round(self.clock.now(), 3),
            synthetic=bool(exp.task.synthetic),
            loss_unit=exp.task.loss_unit,
            error=error,
            restarted=self.rec.restarted,
            seed=cfg.seed,
            **provenance(exp.device, exp.ctx.world),
            **(loop.opt.info() if loop else {}),
        )
        if status in FINISHED:
            try:
                summary.update(exp.task.summarize(self.rec.history, self.config["optimizers"][self.arm], cfg.steps))
            except Exception as exc:  # a summary extra must not lose the run
                summary["summarize_error"] = f"{type(exc).__name__}: {exc}"
        return summary
