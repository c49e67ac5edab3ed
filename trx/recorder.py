"""What a run writes besides its checkpoint: config.yaml, metrics.csv (and the sinks that see
every row, e.g. TensorBoard), progress, and summary.json — every path from `RunDir`.

Only rank 0 of a data-parallel run writes: the other ranks record into `NullMetrics` and report
no progress, so every rank can call the same methods.
"""

from __future__ import annotations

import sys
from typing import Any, Protocol

from trx.io import MetricsWriter
from trx.rundir import RunDir


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


class Recorder:
    """The record of one run in `folder`; `label` names it in progress reports. `history` holds
    every row of the run (those read back on resume too), for the task's summary extras."""

    def __init__(self, folder: RunDir, label: str, main: bool = True, progress: Progress | None = None,
                 sinks: list[Any] | None = None):
        self.folder, self.label, self.main = folder, label, main
        self.progress = progress if progress is not None and main else NoProgress()
        self.sinks = sinks or []  # more writers of every metrics row (TensorBoard)
        self.metrics = MetricsWriter(folder.metrics) if main else NullMetrics()
        self.history: list[dict[str, Any]] = []
        self.restarted = False  # earlier rows were dropped: there was no checkpoint to go on from
        if main:
            folder.path.mkdir(parents=True, exist_ok=True)

    @property
    def rows(self) -> int:
        return self.metrics.rows

    def start_over(self) -> None:
        """No checkpoint: rows of an earlier attempt go, and the run says so."""
        if not self.main:
            return
        self.restarted = self.metrics.rows > 0
        if self.restarted:
            print(f"{self.label}: no checkpoint to resume from; starting over from update 0", file=sys.stderr)
        self.metrics.path.unlink(missing_ok=True)
        self.metrics = MetricsWriter(self.metrics.path)

    def resume_at(self, step: int) -> None:
        """Continue from a checkpoint taken at `step`: rows from `step` on go, the rest are history."""
        self.metrics.truncate_before(step)
        self.history = [{k: _num(v) for k, v in r.items()} for r in self.metrics.read()]

    def write_config(self, config: dict[str, Any]) -> None:
        if self.main:
            self.folder.write_config(config)

    def start(self, total: int, done: int) -> None:
        self.progress.start(self.label, total, done)

    def row(self, row: dict[str, Any], at: int) -> None:
        """One metrics row, `at` updates into the run."""
        self.metrics.append(row)
        for sink in self.sinks:
            sink.append(row)
        self.history.append(row)
        self.progress.advance(self.label, at, row.get("loss"))

    def finish(self, summary: dict[str, Any]) -> None:
        if self.main:
            self.folder.write_summary(summary)
        self.progress.finish(self.label, summary)

    def close(self) -> None:
        for sink in self.sinks:
            sink.close()


def _num(v: Any) -> Any:
    if v in ("", None):
        return None
    try:
        return float(v)
    except ValueError:
        return v
