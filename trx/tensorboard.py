"""Live curves: an arm's or a cell's metrics rows as TensorBoard scalars (optional, off by default).

Each arm or sweep cell writes its own event files into `<its folder>/tb/`, and every numeric
column of a metrics row becomes a scalar whose tag is the column name (`loss`, `val_loss`, `lr`,
…) at global step `row["step"]`. Runs share tags, so `tensorboard --logdir runs/<name>` draws
all arms and cells of an experiment in one chart per column, each run named by its folder
(`muon/tb`, `sweep/muon/lr=0.01,seed=1/tb`).

The `tensorboard` package is an optional extra; it (and torch) are imported only when a sink is made.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

from trx.errors import UserError
from trx.rundir import TENSORBOARD

INSTALL = "pip install -e '.[tensorboard]'"
FOLDER = TENSORBOARD  # the folder inside a run folder
"""The sub-folder of an arm's or cell's folder that holds its event files."""


def _summary_writer() -> type:
    try:
        from torch.utils.tensorboard import SummaryWriter
    except ImportError as exc:
        raise UserError(f"TensorBoard logging needs the tensorboard package: {INSTALL}") from exc
    return SummaryWriter


def scalars(row: dict[str, Any]) -> dict[str, float]:
    """The columns of `row` TensorBoard can draw: numbers (ints, floats, NaN and ±inf included),
    without `step` (the x axis) and without blank cells."""
    out = {}
    for key, value in row.items():
        if key == "step" or value is None or isinstance(value, bool):
            continue
        if isinstance(value, (int, float)):
            out[key] = float(value)
        elif hasattr(value, "item") and getattr(value, "ndim", None) == 0:  # a 0-d tensor or numpy scalar
            out[key] = float(value.item())
    return out


class TensorBoardSink:
    """Writes metrics rows of one arm or cell as scalars into `logdir` (usually `<folder>/tb`).

    `run_label` is a human-readable name of the run (arm and cell), shown in TensorBoard's
    Text tab. The event file is opened at the first row, and events of that row's step and
    later already in `logdir` (written before an interruption, or by a run restarted from
    scratch) are hidden, as metrics.csv drops its rows: a resumed run needs no extra argument.
    `start_step` sets that step explicitly. Events are flushed every `flush_secs` seconds, on
    `flush()` and on `close()`. Raises `UserError` (one line with the install command) when
    `tensorboard` is missing, at construction, before anything is written.
    """

    def __init__(self, logdir: Path, run_label: str, start_step: int | None = None, flush_secs: int = 10):
        self._writer_cls = _summary_writer()
        self.logdir = Path(logdir)
        self.run_label = run_label
        self.start_step = start_step
        self.flush_secs = flush_secs
        self.writer: Any = None

    @classmethod
    def in_folder(cls, folder: Path, run_label: str, start_step: int | None = None) -> TensorBoardSink:
        """The sink of an arm's or cell's output folder: event files in `<folder>/tb/`."""
        return cls(Path(folder) / FOLDER, run_label, start_step=start_step)

    def _open(self, step: int) -> Any:
        start = step if self.start_step is None else self.start_step
        self.logdir.mkdir(parents=True, exist_ok=True)
        writer = self._writer_cls(log_dir=str(self.logdir), purge_step=start, flush_secs=self.flush_secs)
        if start == 0:
            writer.add_text("run", self.run_label, global_step=0)
        return writer

    def append(self, row: dict[str, Any]) -> None:
        """Every numeric column of a metrics row, at global step `row["step"]`."""
        step = int(row["step"])
        if self.writer is None:
            self.writer = self._open(step)
        for tag, value in scalars(row).items():
            self.writer.add_scalar(tag, value, global_step=step)

    def flush(self) -> None:
        if self.writer is not None:
            self.writer.flush()

    def close(self) -> None:
        if self.writer is not None:
            self.writer.close()

    def __enter__(self) -> TensorBoardSink:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()


__all__ = ["FOLDER", "INSTALL", "TensorBoardSink", "scalars"]
