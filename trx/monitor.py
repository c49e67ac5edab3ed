"""The loss monitor: divergence, loss spikes, stalls and the update-RMS early warning of one run.

Two rules for spikes and divergence, chosen by an experiment's `monitor: {rule: …}` block:
- `first_loss` (the default): diverged above `divergence_threshold` × the first loss; a spike is
  a loss above `spike` × the median of the last `window` losses.
- `running_min`: against the running minimum m of the median of the last `window` losses (the
  lowest earlier level; `window: 1` is the lowest earlier loss): a spike is a loss above
  `spike` × m; diverged when `patience` consecutive losses are above `diverge` × m. Meant for
  losses bounded away from 0 (cross-entropy of a language model): near 0 any ratio is large.
Under both, a non-finite loss is divergent at once. A stall (`monitor: {stall: {at, above, improve}}`):
at update ⌈at·τ⌉ the median of the last `window` losses is still above `above`, and/or above
(1 − `improve`) × the median of the `window` losses before them (every condition given holds).
"""

from __future__ import annotations

import math
import statistics
from collections import deque
from dataclasses import dataclass, field
from typing import Annotated, Any, Literal, Union

from pydantic import BeforeValidator, Field, model_validator

from trx.optim.base import Strict

RMS_WINDOW = 20  # logged rows in the median that `update_rms_ratio` compares against
MIN_SPIKE_HISTORY = 10  # losses the median rule needs before it counts spikes


class FirstLoss(Strict):
    """Diverged above divergence_threshold × the first loss; spikes against the running median."""

    name: Literal["first_loss"] = "first_loss"
    spike: float = Field(2.0, gt=1.0, description="a loss above this × the median of the last `window` is a spike")
    window: int = Field(50, ge=1, description="losses in that median")


class RunningMin(Strict):
    """Spikes and divergence against the running minimum of the loss level (sees early instability)."""

    name: Literal["running_min"] = "running_min"
    spike: float = Field(1.5, gt=1.0, description="a loss above this × the running minimum is a spike")
    diverge: float = Field(3.0, gt=1.0, description="a loss above this × the running minimum counts towards divergence")
    patience: int = Field(5, ge=1, description="that many consecutive such losses: diverged")
    window: int = Field(5, ge=1, description="the minimum is of the median of this many losses (1: of the losses)")


def _name_shorthand(value: Any) -> Any:
    return {"name": value} if isinstance(value, str) else value


Rule = Annotated[Union[FirstLoss, RunningMin], Field(discriminator="name"), BeforeValidator(_name_shorthand)]  # noqa: UP007


class Stall(Strict):
    """A run still on a plateau at a declared point: summary.json's `stalled` and `stalled_at`.
    Every condition given must hold: the level (`above`), the lack of progress (`improve`)."""

    at: float = Field(gt=0.0, le=1.0, description="fraction of the run: the rule is checked once, at update ⌈at·τ⌉")
    above: float | None = Field(None, description="stalled if the median of the last `window` losses is still above this")
    improve: float | None = Field(
        None, gt=0.0, lt=1.0,
        description="stalled if that median is above (1 − improve) × the median of the `window` losses before them")
    window: int = Field(20, ge=1, description="losses in that median (those of the updates up to ⌈at·τ⌉)")

    @model_validator(mode="after")
    def _a_condition(self) -> Stall:
        if self.above is None and self.improve is None:
            raise ValueError("above: give `above` (a loss level), `improve` (a relative drop) or both")
        return self

    def holds(self, losses: list[float]) -> bool:
        """Whether the losses up to the checked update (oldest first) are a stall."""
        now = statistics.median(losses[-self.window:])
        if self.above is not None and not now > self.above:
            return False
        if self.improve is not None:
            if len(losses) < 2 * self.window:
                return False  # no full window to compare with
            return now > (1.0 - self.improve) * statistics.median(losses[-2 * self.window:-self.window])
        return True

    def step(self, steps: int) -> int:
        """The update whose loss completes the window the rule checks (τ: the final loss)."""
        return max(1, math.ceil(self.at * steps - 1e-9))


class MonitorConfig(Strict):
    """The experiment's `monitor:` block: the spike/divergence rule and an optional stall rule."""

    rule: Rule = Field(default_factory=FirstLoss, description="first_loss | running_min (README: Divergence, spikes and stalls)")
    stall: Stall | None = Field(None, description="{at, above, window}: flag a run still above a loss level late in the run")


@dataclass
class LossMonitor:
    """Fed every training loss in order (with its update index); says when the run has diverged,
    counts spikes and checks the stall rule. Its state is plain data, saved in checkpoints."""

    threshold: float  # divergence_threshold of the first_loss rule
    rule: FirstLoss | RunningMin = field(default_factory=FirstLoss)
    stall: Stall | None = None
    steps: int = 0  # τ, for the stall rule's update
    first_loss: float | None = None
    best_loss: float = math.inf  # the lowest non-divergent loss
    level: float = math.inf  # running_min: the lowest median of `rule.window` losses so far
    last_loss: float | None = None
    spikes: int = 0
    over: int = 0  # running_min: consecutive losses above the divergence line
    stalled_at: int | None = None
    recent_losses: deque = field(default_factory=deque)
    recent_update_rms: deque = field(default_factory=lambda: deque(maxlen=RMS_WINDOW))

    def __post_init__(self) -> None:
        windows = [self.rule.window, 2 * self.stall.window if self.stall else 0]  # a stall compares two windows
        self.recent_losses = deque(self.recent_losses, maxlen=max(windows))

    def first(self, value: float) -> None:
        if self.first_loss is None:
            self.first_loss = value

    def is_divergent(self, value: float) -> bool:
        """Whether `value` is divergent on its own (non-finite, or over the line of the rule)."""
        if not math.isfinite(value):
            return True
        if isinstance(self.rule, RunningMin):
            return value > self.rule.diverge * self.level
        return bool(self.first_loss and value > self.threshold * abs(self.first_loss))

    def observe(self, value: float, t: int, count_spikes: bool = True) -> bool:
        """Record the loss of update t; True when the run has diverged (then nothing else is recorded)."""
        self.last_loss = value
        if self._diverges(value):
            return True
        if count_spikes and self._is_spike(value):
            self.spikes += 1
        self.best_loss = min(self.best_loss, value)
        self.recent_losses.append(value)
        if isinstance(self.rule, RunningMin):
            self.level = min(self.level, statistics.median(list(self.recent_losses)[-self.rule.window:]))
        self._check_stall(t)
        return False

    def _diverges(self, value: float) -> bool:
        if not math.isfinite(value):
            return True
        over = self.is_divergent(value)
        if isinstance(self.rule, RunningMin):
            self.over = self.over + 1 if over else 0
            return self.over >= self.rule.patience
        return over

    def _is_spike(self, value: float) -> bool:
        if isinstance(self.rule, RunningMin):
            return value > self.rule.spike * self.level
        recent = list(self.recent_losses)[-self.rule.window:]
        return len(recent) >= MIN_SPIKE_HISTORY and value > self.rule.spike * statistics.median(recent)

    def _check_stall(self, t: int) -> None:
        if self.stall is None or self.stalled_at is not None or t != self.stall.step(self.steps):
            return
        if self.stall.holds(list(self.recent_losses)):
            self.stalled_at = t

    def update_rms_ratio(self, rms: float) -> float | None:
        """This update's RMS over the median of the recent logged ones (then remembered)."""
        median = statistics.median(self.recent_update_rms) if self.recent_update_rms else None
        self.recent_update_rms.append(rms)
        return rms / median if median else None

    def state(self) -> dict[str, Any]:
        return {"first_loss": self.first_loss, "best_loss": self.best_loss, "loss_spikes": self.spikes,
                "recent_losses": list(self.recent_losses), "recent_update_rms": list(self.recent_update_rms),
                "over": self.over, "level": self.level, "stalled_at": self.stalled_at}

    def load(self, state: dict[str, Any]) -> None:
        self.first_loss, self.best_loss, self.spikes = state["first_loss"], state["best_loss"], state["loss_spikes"]
        self.recent_losses.extend(state["recent_losses"])
        self.recent_update_rms.extend(state["recent_update_rms"])
        # absent from checkpoints written before these rules existed
        self.over, self.level, self.stalled_at = state.get("over", 0), state.get("level", math.inf), state.get("stalled_at")
