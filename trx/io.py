"""Output files: atomic writes, the appendable metrics CSV, run-folder reading."""

from __future__ import annotations

import csv
import json
import math
import os
import tempfile
import threading
from pathlib import Path
from typing import Any

import yaml


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


def atomic_write(path: Path, data: bytes | str) -> None:
    """Write to a temporary file beside `path`, flush it to disk, then rename over `path`.
    The file gets the mode any newly created file gets (0o666 less the umask): mkstemp's
    private 0o600 would make results readable by their owner only."""
    path.parent.mkdir(parents=True, exist_ok=True)
    fd, tmp = tempfile.mkstemp(dir=path.parent, prefix=f".{path.name}.", suffix=".tmp")
    try:
        os.chmod(tmp, 0o666 & ~current_umask())
        with os.fdopen(fd, "wb") as f:
            f.write(data.encode() if isinstance(data, str) else data)
            f.flush()
            os.fsync(f.fileno())
        os.replace(tmp, path)
    except BaseException:
        Path(tmp).unlink(missing_ok=True)
        raise


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


class MetricsWriter:
    """metrics.csv: one row per logged step, appended and flushed. A row bringing a new column
    (the first eval, a new diagnostic) rewrites the file atomically with the wider header."""

    def __init__(self, path: Path):
        self.path = path
        self.columns: list[str] = []
        self.rows = 0
        if path.exists():
            with path.open(newline="") as f:
                reader = csv.reader(f)
                self.columns = next(reader, [])
                self.rows = sum(1 for _ in reader)

    def read(self) -> list[dict[str, str]]:
        if not self.path.exists():
            return []
        with self.path.open(newline="") as f:
            return list(csv.DictReader(f))

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
        with self.path.open("a", newline="") as f:
            f.write(",".join(_cell(row.get(c)) for c in self.columns) + "\n")
            f.flush()
        self.rows += 1

    def truncate_before(self, step: int) -> None:
        """Keep only rows of steps before `step` (resume from a checkpoint taken at `step`)."""
        rows = [r for r in self.read() if r.get("step") not in (None, "") and int(r["step"]) < step]
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
