"""Output files: atomic writes, the appendable metrics CSV, run-folder reading."""

from __future__ import annotations

import csv
import json
import math
import os
import tempfile
import threading
from pathlib import Path
from typing import Any, BinaryIO, Callable, Iterable

import yaml

from trx.errors import UserError


_UMASK_LOCK = threading.Lock()


def current_umask() -> int:
    """The process umask, read without changing it where the kernel reports it (Linux ≥ 4.7);
    elsewhere set and restored under a lock, so no other trx thread creates a file meanwhile."""
    try:
        for line in Path("/proc/self/status").read_text().splitlines():
            if line.startswith("Umask:"):
                return int(line.split()[1], 8)
    except (OSError, ValueError, IndexError):
        pass
    with _UMASK_LOCK:
        mask = os.umask(0o022)
        os.umask(mask)
    return mask


def atomic_write(path: Path, data: bytes | str | Callable[[BinaryIO], Any]) -> None:
    """Write to a temporary file beside `path`, flush it to disk, then rename over `path`.
    `data` is the content, or a function that writes it into a binary file (a figure's savefig).
    The rename replaces a link planted at `path` instead of writing through it. The file gets
    the mode any newly created file gets (0o666 less the umask): mkstemp's private 0o600 would
    make results readable by their owner only."""
    path.parent.mkdir(parents=True, exist_ok=True)
    fd, tmp = tempfile.mkstemp(dir=path.parent, prefix=f".{path.name}.", suffix=".tmp")
    try:
        os.chmod(tmp, 0o666 & ~current_umask())
        with os.fdopen(fd, "wb") as f:
            if callable(data):
                data(f)
            else:
                f.write(data.encode() if isinstance(data, str) else data)
            f.flush()
            os.fsync(f.fileno())
        os.replace(tmp, path)
    except BaseException:
        Path(tmp).unlink(missing_ok=True)
        raise


def refuse_links(folder: Path, names: Iterable[str]) -> None:
    """UserError when one of trx's files in `folder` is a symbolic link: a link planted inside a
    folder trx owns must not redirect its reads or writes (the folder itself may be a link)."""
    for name in names:
        if (Path(folder) / name).is_symlink():
            raise UserError(f"{Path(folder) / name} is a symbolic link; trx does not follow links inside its folders",
                            hint="remove the link (trx writes that file itself)")


def _json_safe(value: Any) -> Any:
    if isinstance(value, float) and not math.isfinite(value):
        return None
    if isinstance(value, dict):
        return {k: _json_safe(v) for k, v in value.items()}
    if isinstance(value, (list, tuple)):
        return [_json_safe(v) for v in value]
    return value


def write_json(path: Path, data: dict[str, Any]) -> None:
    """Atomic JSON; non-finite floats become null (strict JSON has no NaN)."""
    atomic_write(path, json.dumps(_json_safe(data), indent=2, sort_keys=False) + "\n")


def write_yaml(path: Path, data: dict[str, Any]) -> None:
    atomic_write(path, yaml.safe_dump(data, sort_keys=False, allow_unicode=True))


def read_json(path: Path) -> dict[str, Any] | None:
    try:
        return json.loads(path.read_text())
    except (OSError, ValueError):
        return None


def read_yaml(path: Path) -> Any:
    """A YAML file's data, or None when it is missing or unreadable (e.g. a run folder's config)."""
    try:
        return yaml.safe_load(path.read_text())
    except (OSError, yaml.YAMLError):
        return None


def _cell(value: Any) -> str:
    if value is None:
        return ""
    if isinstance(value, float):
        return repr(value)
    return str(value)


def _is_int(text: str) -> bool:
    try:
        int(text)
        return True
    except ValueError:
        return False


def metrics_rows(path: Path) -> tuple[list[str], list[dict[str, str]]]:
    """metrics.csv's columns and rows, repaired as a crash can leave it: a last row without its
    newline (cut mid-write) is dropped, and a step logged twice keeps one row (the last).
    Damage no crash leaves (a row of the wrong width, a step that is not an integer, steps out
    of order) is a UserError."""
    if not path.exists():
        return [], []
    text = path.read_text()
    lines = list(csv.reader(text.splitlines(keepends=True)))
    columns, body = (lines[0], lines[1:]) if lines else ([], [])
    if body and not text.endswith("\n"):
        body = body[:-1]
    at = columns.index("step") if "step" in columns else 0
    rows: dict[int, dict[str, str]] = {}
    for line, cells in enumerate(body, start=2):
        if len(cells) != len(columns) or not _is_int(cells[at]):
            raise UserError(f"{path}: line {line} is damaged ({len(cells)} values under {len(columns)} columns)",
                            hint="delete the run folder (or use --overwrite) to run it again")
        rows[int(cells[at])] = dict(zip(columns, cells))
    if list(rows) != sorted(rows):
        raise UserError(f"{path}: steps are out of order", hint="delete the run folder (or use --overwrite) to run it again")
    return columns, list(rows.values())


class MetricsWriter:
    """metrics.csv: one row per logged step, appended and flushed. A row bringing a new column
    (the first eval, a new diagnostic) rewrites the file atomically with the wider header."""

    def __init__(self, path: Path):
        self.path = path
        self.columns, rows = metrics_rows(path)
        self.rows = len(rows)

    def read(self) -> list[dict[str, str]]:
        return metrics_rows(self.path)[1]

    def _rewrite(self, rows: list[dict[str, Any]]) -> None:
        lines = [",".join(self.columns)]
        lines += [",".join(_cell(r.get(c)) for c in self.columns) for r in rows]
        atomic_write(self.path, "\n".join(lines) + "\n")
        self.rows = len(rows)

    def append(self, row: dict[str, Any]) -> None:
        new = [k for k in row if k not in self.columns]
        if new or not self.path.exists():
            old = self.read()
            self.columns += new
            self._rewrite([*old, row])
            return
        fd = os.open(self.path, os.O_WRONLY | os.O_APPEND | getattr(os, "O_NOFOLLOW", 0))  # never through a link
        with os.fdopen(fd, "a", newline="") as f:
            f.write(",".join(_cell(row.get(c)) for c in self.columns) + "\n")
            f.flush()
        self.rows += 1

    def truncate_before(self, step: int) -> None:
        """Keep only rows of steps before `step` (resume from a checkpoint taken at `step`); the
        file is rewritten whole, so a repaired file is written back clean."""
        rows = [r for r in self.read() if int(r["step"]) < step]
        if self.columns:
            self._rewrite(rows)


def read_metrics(path: Path) -> list[dict[str, float | None]]:
    """metrics.csv as dicts of floats (blank cells None)."""
    if not path.exists():
        return []
    with path.open(newline="") as f:
        out = []
        for row in csv.DictReader(f):
            out.append({k: (float(v) if v not in ("", None) else None) for k, v in row.items()})
        return out
