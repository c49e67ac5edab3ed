"""The loss monitor: divergence, loss spikes and the update-RMS early warning of one run."""

from __future__ import annotations

import math
import statistics
from collections import deque
from dataclasses import dataclass, field
from typing import Any

SPIKE_FACTOR = 2.0  # a loss above this × the median of the recent ones counts as a spike
SPIKE_WINDOW = 50  # updates in that median
RMS_WINDOW = 20  # logged rows in the median that `update_rms_ratio` compares against


@dataclass
class LossMonitor:
    """Fed every training loss in order; says when the run has diverged.

    Diverged: a non-finite loss or one above `threshold` × the first loss. A spike: a loss above
    SPIKE_FACTOR × the median of the last SPIKE_WINDOW losses (an early warning, counted)."""

    threshold: float
    first_loss: float | None = None
    best_loss: float = math.inf
    last_loss: float | None = None
    spikes: int = 0
    recent_losses: deque = field(default_factory=lambda: deque(maxlen=SPIKE_WINDOW))
    recent_update_rms: deque = field(default_factory=lambda: deque(maxlen=RMS_WINDOW))

    def first(self, value: float) -> None:
        if self.first_loss is None:
            self.first_loss = value

    def is_divergent(self, value: float) -> bool:
        return not math.isfinite(value) or bool(self.first_loss and value > self.threshold * abs(self.first_loss))

    def observe(self, value: float) -> bool:
        """Record one training loss; True when it is divergent (then nothing else is recorded)."""
        self.last_loss = value
        if self.is_divergent(value):
            return True
        self.best_loss = min(self.best_loss, value)
        if len(self.recent_losses) >= 10 and value > SPIKE_FACTOR * statistics.median(self.recent_losses):
            self.spikes += 1
        self.recent_losses.append(value)
        return False

    def update_rms_ratio(self, rms: float) -> float | None:
        """This update's RMS over the median of the recent logged ones (then remembered)."""
        median = statistics.median(self.recent_update_rms) if self.recent_update_rms else None
        self.recent_update_rms.append(rms)
        return rms / median if median else None

    def state(self) -> dict[str, Any]:
        return {"first_loss": self.first_loss, "best_loss": self.best_loss, "loss_spikes": self.spikes,
                "recent_losses": list(self.recent_losses), "recent_update_rms": list(self.recent_update_rms)}

    def load(self, state: dict[str, Any]) -> None:
        self.first_loss, self.best_loss, self.spikes = state["first_loss"], state["best_loss"], state["loss_spikes"]
        self.recent_losses.extend(state["recent_losses"])
        self.recent_update_rms.extend(state["recent_update_rms"])
