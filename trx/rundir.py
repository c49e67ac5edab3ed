"""The run folder and the experiment folder: every file trx writes for a run or a sweep, and the
one place their names are spelled.

A run folder (one arm, one seed) holds `config.yaml` (the resolved config), `cell.json` (what the
folder is: `CellMeta`), `metrics.csv`, `summary.json`, `checkpoint.pt` while unfinished, the lock
(`.lock`, `.lock.holder`) and `tb/` with TensorBoard. An experiment folder holds
`experiment.yaml`, `comparison.csv` and, for a sweep, `sweep/` with `sweep.csv` (and `boundary.csv` for a boundary search). Writes are
atomic (`trx.io`) and refuse links planted inside the folder; one process writes a run folder at
a time (`RunDir.lock`). What a folder is comes from its `cell.json`, never from its name.
No torch here: reports read folders without it.
"""

from __future__ import annotations

import os
import socket
import time
from contextlib import contextmanager
from dataclasses import asdict, dataclass, field
from enum import StrEnum
from pathlib import Path
from typing import Any, Iterator

import yaml

from trx.errors import UserError
from trx.io import (MetricsRow, last_metrics_row, metrics_rows, read_json, read_metrics, read_yaml, refuse_links,
                    write_json, write_yaml)

CONFIG = "config.yaml"
CELL = "cell.json"
METRICS = "metrics.csv"
SUMMARY = "summary.json"
CHECKPOINT = "checkpoint.pt"
LOCK = ".lock"
HOLDER = ".lock.holder"
TENSORBOARD = "tb"
EXPERIMENT = "experiment.yaml"
COMPARISON = "comparison.csv"
SWEEP = "sweep"  # the sweep's folder inside its experiment folder
SWEEP_CSV = "sweep.csv"
SWEEP_LOCK = ".sweep.lock"
BOUNDARY_CSV = "boundary.csv"  # a boundary sweep's brackets, one row per series

RESULT_FILES = (METRICS, SUMMARY, CHECKPOINT)  # a folder holding one of these holds a result
OWN_FILES = (*RESULT_FILES, CONFIG, CELL, LOCK, HOLDER)  # what a run writes in its folder
SWEEP_MARKS = (SWEEP_CSV, SWEEP)  # what a sweep root or an experiment holding one has


class Status(StrEnum):
    """How a run ended (summary.json's `status`), or why it did not run."""

    COMPLETE = "complete"
    DIVERGED = "diverged"
    INTERRUPTED = "interrupted"
    FAILED = "failed"
    NOT_RUN = "not run"
    LOCKED = "locked"


FINISHED = (Status.COMPLETE, Status.DIVERGED)  # a run in one of these states is never run again
UNFINISHED = (Status.INTERRUPTED, Status.NOT_RUN)  # stopped by the user: continue with --resume


@dataclass(frozen=True)
class CellMeta:
    """What a run folder is: experiment, arm, seed and the grid values that made it."""

    name: str
    arm: str
    seed: int
    overrides: dict[str, Any] = field(default_factory=dict)  # full dotted keys → grid value
    cell: str | None = None  # the sweep cell id; None for an arm of `trx run`
    probe: bool = False  # a boundary probe (`sweep.boundary`), not a grid cell: lr curves leave it out

    @property
    def short(self) -> dict[str, Any]:
        """Overrides with keys below the arm (`lr`); keys outside optimizers stay full."""
        prefix = f"optimizers.{self.arm}."
        return {k.removeprefix(prefix): v for k, v in self.overrides.items()}

    @property
    def label(self) -> str:
        """How progress lines name the run: `arm`, `arm seed=1`, `arm/lr=0.01,seed=1`."""
        return f"{self.arm}/{self.cell}" if self.cell else self.arm

    def to_json(self) -> dict[str, Any]:
        return {**asdict(self), "short": self.short}

    @classmethod
    def from_json(cls, data: Any) -> CellMeta | None:
        if not isinstance(data, dict):
            return None
        try:
            return cls(str(data["name"]), str(data["arm"]), int(data["seed"]), dict(data.get("overrides") or {}),
                       data.get("cell"), bool(data.get("probe", False)))
        except (KeyError, TypeError, ValueError):
            return None

    @classmethod
    def read(cls, folder: Path) -> CellMeta | None:
        return RunDir(folder).read_cell()


def value_text(v: Any) -> str:
    """A grid value as a cell id writes it: numbers in %.4g, booleans lower case, other values
    as compact YAML. Reports write grid values the same way."""
    if isinstance(v, bool):
        return "true" if v else "false"
    if isinstance(v, (int, float)):
        return f"{v:.4g}"
    if isinstance(v, str):
        return v
    text = yaml.safe_dump(v, default_flow_style=True, width=10**6, sort_keys=False).strip()
    return text.replace(" ", "").replace("/", "_")


def cell_id(short: list[tuple[str, Any]], seed: int) -> str:
    """A sweep cell's id before it is made a folder name: `lr=0.01,schedule.warmup=0,seed=1`."""
    return ",".join(f"{k}={value_text(v)}" for k, v in [*short, ("seed", seed)])


class Locked(Exception):
    """Another live process holds the folder."""


@dataclass(frozen=True)
class _Folder:
    """A folder trx owns, given as a path or a string."""

    path: Path

    def __post_init__(self) -> None:
        object.__setattr__(self, "path", Path(self.path))


def _file(name: str) -> property:
    return property(lambda self: self.path / name)


@dataclass(frozen=True)
class RunDir(_Folder):
    """One run's folder and its files."""

    config = _file(CONFIG)
    cell = _file(CELL)
    metrics = _file(METRICS)
    summary = _file(SUMMARY)
    checkpoint = _file(CHECKPOINT)
    holder_file = _file(HOLDER)
    tensorboard = _file(TENSORBOARD)

    # ---- typed reads and writes -----------------------------------------------------------
    def read_config(self) -> dict[str, Any] | None:
        return read_yaml(self.config, "RUN_DIR") if self.config.exists() else None

    def write_config(self, data: dict[str, Any]) -> None:
        write_yaml(self.config, data)

    def read_cell(self) -> CellMeta | None:
        return CellMeta.from_json(read_json(self.cell))

    def write_cell(self, meta: CellMeta) -> None:
        write_json(self.cell, meta.to_json())

    def read_summary(self) -> dict[str, Any] | None:
        data = read_json(self.summary)
        return data if isinstance(data, dict) else None

    def write_summary(self, summary: dict[str, Any]) -> None:
        write_json(self.summary, summary)

    def finished_summary(self) -> dict[str, Any] | None:
        """summary.json when it records a finished run (complete or diverged), else None."""
        summary = self.read_summary()
        return summary if summary and summary.get("status") in FINISHED else None

    def metrics_rows(self) -> list[dict[str, str]]:
        """metrics.csv's rows as text, repaired as a crash leaves it (`trx.io.metrics_rows`): what
        a resume keeps and checks against its checkpoint."""
        return metrics_rows(self.metrics)[1]

    def read_metrics(self) -> list[MetricsRow]:
        """metrics.csv as typed rows (`step` an int, blank cells None), repaired the same way:
        what reports and figures read. Damage no crash leaves is a UserError."""
        return read_metrics(self.metrics)

    def last_metrics(self) -> MetricsRow | None:
        """The last complete row, read from the file's tail (for progress; None before a row)."""
        return last_metrics_row(self.metrics)

    def holds_results(self) -> bool:
        return any((self.path / f).exists() for f in RESULT_FILES)

    def holds_sweep(self) -> str | None:
        """The mark of a sweep in this folder (sweep.csv or sweep/), else None."""
        return next((m for m in SWEEP_MARKS if (self.path / m).exists()), None)

    def refuse_links(self) -> None:
        refuse_links(self.path, OWN_FILES)

    # ---- the lock ---------------------------------------------------------------------------
    @contextmanager
    def lock(self) -> Iterator[None]:
        """Hold `.lock` (an OS file lock: released by the kernel when the holder dies, so a
        killed run never blocks the next) and record the holder beside it."""
        from filelock import FileLock, Timeout

        self.path.mkdir(parents=True, exist_ok=True)
        refuse_links(self.path, (LOCK, HOLDER))
        lock = FileLock(str(self.path / LOCK), timeout=0)
        try:
            lock.acquire()
        except Timeout:
            raise Locked(self.holder() or "another process") from None
        try:
            write_json(self.holder_file, {"host": socket.gethostname(), "pid": os.getpid(),
                                          "since": time.strftime("%Y-%m-%dT%H:%M:%S")})
            yield
        finally:
            self.holder_file.unlink(missing_ok=True)
            lock.release()

    def holder(self) -> str | None:
        """Who the holder file names (it may be stale: `lock_holder` probes the lock)."""
        data = read_json(self.holder_file)
        if not isinstance(data, dict):
            return None
        return f"{data.get('host')}:{data.get('pid')} (since {data.get('since')})"

    def is_held(self) -> bool:
        """Whether a holder file is there (cheap, for progress polling; not a probe)."""
        return self.holder_file.exists()

    def lock_holder(self) -> str | None:
        """Who holds the folder now, or None when nobody does (probes the lock without waiting)."""
        from filelock import FileLock, Timeout

        refuse_links(self.path, (LOCK, HOLDER))
        path = self.path / LOCK
        if not path.exists():
            return None
        lock = FileLock(str(path), timeout=0)
        try:
            lock.acquire()
        except Timeout:
            return self.holder() or "another process"
        lock.release()
        return None


@dataclass(frozen=True)
class ExperimentDir(_Folder):
    """An experiment's folder (`<out>/<name>`) or a sweep's (`<out>/<name>/sweep`): the files
    that describe all its runs."""

    experiment = _file(EXPERIMENT)
    comparison = _file(COMPARISON)
    sweep_csv = _file(SWEEP_CSV)
    boundary_csv = _file(BOUNDARY_CSV)

    @property
    def sweep(self) -> ExperimentDir:
        return ExperimentDir(self.path / SWEEP)

    def write_experiment(self, data: dict[str, Any]) -> None:
        """The whole config (all arms, grid, claims), for reports."""
        write_yaml(self.experiment, data)

    def read_experiment(self) -> dict[str, Any] | None:
        return read_yaml(self.experiment, "RUN_DIR") if self.experiment.exists() else None

    def clear_comparison(self) -> None:
        self.comparison.unlink(missing_ok=True)

    @contextmanager
    def sweep_lock(self) -> Iterator[None]:
        """Serialize rewrites of sweep.csv (two sweeps of one grid may finish at once)."""
        from filelock import FileLock

        refuse_links(self.path, (SWEEP_LOCK,))
        with FileLock(str(self.path / SWEEP_LOCK)):
            yield


def _runs_under(path: Path) -> list[Path]:
    if path.is_file():
        return [path.parent] if path.name == SUMMARY else []
    return [f.parent for f in sorted(path.rglob(SUMMARY)) if f.is_file()]


def find_run_dirs(paths: list[Path]) -> list[RunDir]:
    """Every run folder (one holding summary.json) at or below the given paths, each once.
    A folder without cell.json is refused: what it is cannot be read from its name."""
    found: dict[Path, RunDir] = {}
    for path in map(Path, paths):
        if not path.exists():
            raise UserError(f"RUN_DIR: no such file or folder: {path}")
        folders = _runs_under(path)
        if not folders:
            raise UserError(f"RUN_DIR: no {SUMMARY} in or below {path}",
                            hint="pass folders written by trx run or trx sweep (arm, experiment or sweep folders)")
        for folder in folders:
            found.setdefault(folder.resolve(), RunDir(folder.resolve()))
    return list(found.values())


def missing_cell(run: RunDir) -> UserError:
    """The error for a run folder written before cell.json existed, saying how to convert it."""
    return UserError(f"RUN_DIR: {run.path} has no {CELL} (written by a trx before run folders recorded what they are)",
                     hint=f"rerun its `trx run` or `trx sweep` command with --resume: finished runs are kept and "
                          f"their {CELL} is written")
