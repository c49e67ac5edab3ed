"""The training loop: it only trains, and says what happened as it goes. It reads and writes no file.

For update t = start … τ−1: loss at the current parameters, a metrics row on logged steps (with
diagnostics of the update it then takes), the update; then a final row at t = τ with the loss
and evaluation of the trained parameters. A divergent loss (`trx.monitor`: non-finite, or over
the line of the experiment's `monitor.rule`) ends the loop with a `diverged` event, a result like
any other; a stall (`monitor.stall`) is recorded in the monitor and the loop goes on.

The loop yields `Event`s; whoever iterates it records them (`trx.recorder`), saves checkpoints
when asked (`trx.checkpoint.Checkpointer`) and ends the run on `stopped` (`trx.runner`). A stop
flag raised while an event is being handled is seen before the next update.
"""

from __future__ import annotations

import time
from dataclasses import dataclass, field
from typing import Any, Iterator

import torch

from trx import data_parallel as D
from trx.config import ExperimentConfig
from trx.monitor import LossMonitor, MonitorConfig
from trx.optim import lr_ratio
from trx.stop import StopFlag
from trx.tasks import Task

ROW, CHECKPOINT, DIVERGED, STOPPED, DONE = "row", "checkpoint", "diverged", "stopped", "done"


@dataclass
class Event:
    """What the loop did. row: a metrics row to record (kinds row and diverged); checkpoint: the
    state is one to save now (every rank must save: the RNG states are gathered); stopped: the
    stop flag was seen before update `at`; diverged: the run ends at the loss of its row; done:
    the final row was the last. `at`: updates done when it happened."""

    kind: str
    row: dict[str, Any] | None = None
    at: int = 0


@dataclass
class Clock:
    """Seconds of training: those of earlier sessions (from the checkpoint) plus this one's."""

    elapsed: float = 0.0
    t0: float = field(default_factory=time.perf_counter)

    def restart(self, elapsed: float) -> None:
        self.elapsed, self.t0 = elapsed, time.perf_counter()

    def now(self) -> float:
        return self.elapsed + time.perf_counter() - self.t0


class _Diverged(Exception):
    """The monitor saw a divergent loss: unwinds the loop from wherever it was seen."""

    def __init__(self, event: Event):
        self.event = event


def new_monitor(cfg: ExperimentConfig) -> LossMonitor:
    """The loss monitor of one run of `cfg`, with the experiment's rules."""
    rules = cfg.monitor or MonitorConfig()
    return LossMonitor(cfg.divergence_threshold, rules.rule, rules.stall, cfg.steps)


class TrainLoop:
    """The updates of one built model and optimizer from step `t` on; iterate it for `Event`s.
    `net` is what the loss calls (the DDP wrapper on data-parallel ranks), `model` the model."""

    def __init__(self, cfg: ExperimentConfig, task: Task, net: torch.nn.Module, opt: Any, monitor: LossMonitor,
                 *, ctx: D.DistContext = D.SINGLE, device: torch.device | None = None,
                 stop: StopFlag | None = None, clock: Clock | None = None):
        self.cfg, self.task, self.net, self.opt, self.monitor = cfg, task, net, opt, monitor
        self.model = getattr(net, "module", net)
        self.schedule = opt.stages[0].schedule
        self.ctx, self.device = ctx, device or torch.device("cpu")
        self.stop = stop or StopFlag()
        self.clock = clock or Clock()
        self.t = 0  # updates done
        self.diverged_at: int | None = None
        self.final_eval: dict[str, float] = {}
        self.pending: list[tuple[int, torch.Tensor]] = []  # losses the monitor has not seen yet

    def __iter__(self) -> Iterator[Event]:
        try:
            yield from self._updates()
            if self.t == self.cfg.steps:
                self._flush()
                yield self._final_row()
                yield Event(DONE, at=self.t)
        except _Diverged as end:
            yield end.event

    def _updates(self) -> Iterator[Event]:
        opt, steps, every = self.opt, self.cfg.steps, self.cfg.checkpoint_interval()
        while self.t < steps:
            t = self.t
            if self._stop_requested(t):
                self._flush()  # the monitor sees every loss before the checkpoint
                yield Event(STOPPED, at=t)
                return
            loss = self.task.loss(self.net, D.shard(self.task.batch(t), self.ctx))
            self.pending.append((t, loss.detach()))
            if self.monitor.first_loss is None:
                self.monitor.first(float(loss.detach()))
            row_due = self._row_due(t)
            if row_due or len(self.pending) >= self.cfg.log_every:
                self._flush()
            row = self._row_head(t) if row_due else {}
            loss.backward()
            opt.diagnose = row_due
            opt.step()
            opt.zero_grad(set_to_none=True)
            self.t = t + 1
            if row_due:
                yield Event(ROW, self._complete(row, opt.diagnostics), self.t)
            if every and self.t % every == 0 and self.t < steps:
                self._flush()
                yield Event(CHECKPOINT, at=self.t)

    def _row_head(self, t: int) -> dict[str, Any]:
        row = {"step": t, "loss": self.monitor.last_loss, "lr": self.opt.current_lr(), "lr_ratio": lr_ratio(self.schedule, t)}
        if self._eval_due(t):
            row.update(self.evaluate())
        return row

    def _row_due(self, t: int) -> bool:
        return t % self.cfg.log_every == 0 or t == self.cfg.steps - 1 or self._eval_due(t)

    def _eval_due(self, t: int) -> bool:
        every = self.cfg.eval_every
        return bool(every) and t % every == 0

    def _stop_requested(self, t: int) -> bool:
        """Ranks agree to stop at the same update: they compare flags on logged steps only."""
        if not self.ctx.enabled:
            return self.stop.requested
        return t % self.cfg.log_every == 0 and D.any_rank(self.stop.requested, self.ctx, self.device)

    def _flush(self) -> None:
        """The one divergence path: hand the buffered losses to the monitor (one host sync per
        check; averaged over ranks) and empty the buffer; a divergent one ends the loop with its row."""
        pending, self.pending = self.pending, []
        if not pending:
            return
        values = D.mean_over_ranks(torch.stack([l for _, l in pending]).float(), self.ctx).cpu().tolist()
        for (t, _), value in zip(pending, values):
            if self.monitor.observe(value, t):
                self.diverged_at = t
                row = self._complete({"step": t, "loss": value, "lr": self.opt.param_groups[0]["lr"]}, {})
                raise _Diverged(Event(DIVERGED, row, self.t))

    def evaluate(self) -> dict[str, float]:
        self.model.eval()
        with torch.no_grad():
            metrics = self.task.evaluate(self.model)
        self.model.train()
        return metrics

    def _complete(self, row: dict[str, Any], diagnostics: dict[str, float]) -> dict[str, Any]:
        """The row with the optimizer's diagnostics (tr_ratio and the others come from its groups),
        the monitor's columns and the wall time."""
        row.update(diagnostics)
        rms = row.get("update_rms")
        if rms is not None:
            row["update_rms_ratio"] = self.monitor.update_rms_ratio(rms)
        row["loss_spikes"] = self.monitor.spikes
        row["wall_time"] = round(self.clock.now(), 4)
        return row

    def _final_row(self) -> Event:
        """Row t = τ: loss and evaluation at the trained parameters (no update follows)."""
        steps = self.cfg.steps
        with torch.no_grad():
            loss = self.task.loss(self.net, D.shard(self.task.batch(steps), self.ctx)).detach().float().reshape(1)
            value = float(D.mean_over_ranks(loss, self.ctx))
        self.final_eval = self.evaluate()
        if self.monitor.observe(value, steps, count_spikes=False):
            self.diverged_at = steps
        return Event(ROW, self._complete({"step": steps, "loss": value, **self.final_eval}, {}), self.t)
