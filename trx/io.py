"""File formats: atomic writes, the one YAML reader (with its limits), the appendable metrics CSV."""

from __future__ import annotations

import csv
import json
import math
import os
import re
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


MAX_DEPTH = 50  # nesting levels a config may use (the shipped ones use at most 6)
MAX_NODES = 100_000  # values a config may hold once its aliases are expanded


class YamlRefused(yaml.YAMLError):
    """YAML that parses but that no config needs: duplicate keys, deep nesting, alias bombs."""


class ConfigLoader(yaml.SafeLoader):
    """Safe YAML with limits: a duplicate key is an error (not the last one silently winning),
    nesting stops at MAX_DEPTH before Python's recursion limit, and aliases may not expand the
    document beyond MAX_NODES values (a kilobyte of nested aliases can expand to gigabytes)."""

    def __init__(self, stream: str) -> None:
        super().__init__(stream)
        self._depth = 0

    def compose_node(self, parent: Any, index: Any) -> Any:
        self._depth += 1
        try:
            if self._depth > MAX_DEPTH:
                raise YamlRefused(f"nested too deep (more than {MAX_DEPTH} levels){_line(self.peek_event())}")
            return super().compose_node(parent, index)
        finally:
            self._depth -= 1

    def compose_document(self) -> Any:
        node = super().compose_document()
        if node is not None and _expanded_size(node, {}) > MAX_NODES:
            raise YamlRefused(f"aliases expand to more than {MAX_NODES} values (an alias bomb?)")
        return node

    def construct_mapping(self, node: Any, deep: bool = False) -> Any:
        seen = set()
        for key_node, _ in node.value:
            if key_node.tag == "tag:yaml.org,2002:merge":
                continue
            key = self.construct_object(key_node, deep=True)
            if not isinstance(key, (str, int, float, bool)):
                continue
            if key in seen:
                raise YamlRefused(f"duplicate key {key!r}{_line(key_node)}")
            seen.add(key)
        return super().construct_mapping(node, deep)


def _line(where: Any) -> str:
    mark = getattr(where, "start_mark", None)
    return f" (line {mark.line + 1})" if mark else ""


def _expanded_size(node: Any, sizes: dict[int, int | None]) -> int:
    """Values under `node` with every alias expanded; memoized, so the count is cheap."""
    if id(node) in sizes:
        size = sizes[id(node)]
        if size is None:
            raise YamlRefused("an alias refers to the value that holds it")
        return size
    sizes[id(node)] = None
    children = node.value if isinstance(node, yaml.SequenceNode) else \
        [n for pair in node.value for n in pair] if isinstance(node, yaml.MappingNode) else []
    size = 1
    for child in children:
        size += _expanded_size(child, sizes)
        if size > MAX_NODES:
            break
    sizes[id(node)] = size
    return size


# YAML 1.1 (PyYAML) reads `1e-5` as a string: a float needs a dot there. Configs write learning
# rates that way, so the loader takes YAML 1.2's exponent floats too (the strict types would refuse
# the string).
ConfigLoader.add_implicit_resolver("tag:yaml.org,2002:float", re.compile(r"^[-+]?[0-9][0-9_]*(\.[0-9_]*)?[eE][-+]?[0-9]+$"),
                                   list("-+0123456789"))


def load_yaml(text: str) -> Any:
    """YAML text → plain data under ConfigLoader's limits; raises yaml.YAMLError."""
    try:
        return yaml.load(text, Loader=ConfigLoader)  # noqa: S506 - a SafeLoader subclass
    except RecursionError:
        raise YamlRefused(f"nested too deep (more than {MAX_DEPTH} levels)") from None


def yaml_problem(exc: yaml.YAMLError) -> str:
    """What is wrong with YAML text, in a few words (with the line where known)."""
    if isinstance(exc, YamlRefused):
        return str(exc)
    mark = getattr(exc, "problem_mark", None)
    return "not valid YAML" + (f" (line {mark.line + 1}, column {mark.column + 1})" if mark else "")


def read_yaml(path: Path, name: str = "CONFIG") -> dict[str, Any]:
    """The one YAML file reader of trx (a config, a run folder's config.yaml or experiment.yaml):
    the file's mapping, read under ConfigLoader's limits, or a UserError that starts with `name`
    (the argument or file the user can fix)."""
    if not path.is_file():
        raise UserError(f"{name}: no such file: {path}")
    try:
        data = load_yaml(path.read_text())
    except yaml.YAMLError as exc:
        raise UserError(f"{name}: {path}: {yaml_problem(exc)}") from None
    except (OSError, UnicodeDecodeError) as exc:
        raise UserError(f"{name}: cannot read {path}: {exc}") from None
    if not isinstance(data, dict):
        raise UserError(f"{name}: {path} must hold a mapping of config keys, got {type(data).__name__}")
    return data


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
    """metrics.csv's columns and rows as text, repaired as a crash can leave it: a last row
    without its newline (cut mid-write) is dropped, and a step logged twice keeps one row (the
    last). Damage no crash leaves (a row of the wrong width, a step that is not an integer, steps
    out of order) is a UserError."""
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


MetricsRow = dict[str, float | None]  # one row of metrics.csv: `step` an int, blank cells None


def _typed(row: dict[str, str]) -> MetricsRow:
    """A text row as numbers (ValueError names the cell that is not one)."""
    out: MetricsRow = {}
    for column, text in row.items():
        try:
            out[column] = int(text) if column == "step" else float(text) if text != "" else None
        except ValueError:
            raise ValueError(f"{text!r} under {column} is not a number") from None
    return out


def read_metrics(path: Path) -> list[MetricsRow]:
    """metrics.csv as typed rows, repaired as `metrics_rows` repairs it; a cell that is not a
    number is a UserError."""
    rows = metrics_rows(path)[1]
    try:
        return [_typed(row) for row in rows]
    except ValueError as exc:
        raise UserError(f"{path}: {exc}", hint="delete the run folder (or use --overwrite) to run it again") from None


def last_metrics_row(path: Path, tail: int = 4096) -> MetricsRow | None:
    """metrics.csv's last complete row, read from its header and its last `tail` bytes only (the
    file may be long, and progress polls it while the run appends); None before the first row,
    and for a file it cannot read (polling never fails a run)."""
    try:
        with path.open("rb") as f:
            header = f.readline()
            start = max(len(header), f.seek(0, os.SEEK_END) - tail)
            f.seek(start)
            lines = f.read().decode(errors="replace").splitlines(keepends=True)
    except OSError:
        return None
    complete = [line for line in lines[int(start > len(header)):] if line.endswith("\n")]  # from the first whole line
    columns = next(csv.reader([header.decode(errors="replace")]), [])
    if not complete or "step" not in columns:
        return None
    cells = next(csv.reader(complete[-1:]))
    try:
        return _typed(dict(zip(columns, cells, strict=True)))
    except ValueError:
        return None


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
