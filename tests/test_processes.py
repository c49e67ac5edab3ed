"""The life of a sweep's processes on this machine (`--jobs N`): SIGTERM sent to every process
(as `timeout`, Slurm and Kubernetes do) saves the running cells like Ctrl-C; workers end when
the sweep's own process is killed; workers run the trx this process runs, whatever folders the
working directory holds. Each sweep runs in a session of its own, so the test can signal the
whole group and see which of its processes are still alive."""

from __future__ import annotations

import concurrent.futures as cf
import json
import os
import signal
import subprocess
import sys
import time
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import Any

import pytest
import yaml

import trx
from trx.errors import UserError

ROOT = Path(trx.__file__).resolve().parents[1]
OUTER_LIMIT_S = 240  # a safety net only: every wait below ends on an event


def sweep_config(steps: int) -> dict[str, Any]:
    """Three cells on the 1-D quadratic; with a long `steps`, cells run until stopped."""
    return {"name": "qs", "seed": 0, "steps": steps, "eval_every": 0, "log_every": 100, "checkpoint_every": 100,
            "task": {"name": "quadratic1d", "curvature": 1.0, "init": 1.0, "noise": 0.1},
            "optimizers": {"gd": {"lr": 0.1}}, "sweep": {"grid": {"optimizers.gd.lr": [0.1, 0.2, 0.3]}}}


def cells(out: Path) -> list[Path]:
    return sorted((out / "qs" / "sweep" / "gd").glob("lr=*"))


def status(cell: Path) -> str | None:
    path = cell / "summary.json"
    return json.loads(path.read_text())["status"] if path.exists() else None


def wait_until(what: str, ready: Any, proc: subprocess.Popen | None = None) -> None:
    """Poll `ready()` until it holds; fail if `proc` ends first or after the outer limit."""
    end = time.monotonic() + OUTER_LIMIT_S
    while not ready():
        if proc is not None and proc.poll() is not None:
            pytest.fail(f"the sweep ended (rc {proc.returncode}) before {what}: {proc.communicate()}")
        if time.monotonic() > end:
            pytest.fail(f"not within {OUTER_LIMIT_S} s: {what}")
        time.sleep(0.1)


def two_cells_running(out: Path) -> bool:
    """Two cells hold a checkpoint and no summary: both are mid-run."""
    return sum((c / "checkpoint.pt").exists() and status(c) is None for c in cells(out)) >= 2


def live_session(sid: int) -> list[int]:
    """Processes of session `sid` that are alive (zombies are dead: only not yet reaped)."""
    pids = []
    for stat in Path("/proc").glob("[0-9]*/stat"):
        try:
            fields = stat.read_text().rsplit(")", 1)[1].split()
        except (OSError, IndexError):
            continue
        if int(fields[3]) == sid and fields[0] != "Z":
            pids.append(int(stat.parent.name))
    return pids


@contextmanager
def trx_session(*args: Any) -> Iterator[subprocess.Popen]:
    """`python -m trx ARGS` in a session of its own; whatever of it is left at the end is killed."""
    cmd = [sys.executable, "-m", "trx", *map(str, args)]
    env = {**os.environ, "COLUMNS": "200"}
    env.pop("TRX_DEBUG", None)
    proc = subprocess.Popen(cmd, env=env, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True,
                            start_new_session=True)
    try:
        yield proc
    finally:
        for pid in live_session(proc.pid):
            os.kill(pid, signal.SIGKILL)
        proc.wait(timeout=60)


@contextmanager
def two_cells_running_in(cfg: Path, out: Path) -> Iterator[subprocess.Popen]:
    """A 3-cell sweep with `--jobs 2`, once two of its cells are mid-run."""
    with trx_session("sweep", cfg, "--jobs", 2, "--out", out) as proc:
        wait_until("two cells were running", lambda: two_cells_running(out), proc)
        yield proc


needs_proc = pytest.mark.skipif(not Path("/proc/self/stat").exists(), reason="reads processes from /proc")


@needs_proc
@pytest.mark.slow
def test_sigterm_to_every_process_saves_running_cells_and_the_same_command_finishes(tmp_path, write_config):
    cfg, out = write_config(sweep_config(steps=8000)), tmp_path / "runs"
    with two_cells_running_in(cfg, out) as proc:
        os.killpg(proc.pid, signal.SIGTERM)  # what `timeout` and Slurm do: the parent and its workers
        _, err = proc.communicate(timeout=OUTER_LIMIT_S)
    assert proc.returncode == 130, err
    assert "Traceback" not in err and "BrokenProcessPool" not in err, err
    saved = [c for c in cells(out) if status(c) == "interrupted"]
    assert len(saved) == 2 and all((c / "checkpoint.pt").exists() for c in saved), err
    again = subprocess.run([sys.executable, "-m", "trx", "sweep", str(cfg), "--jobs", "2", "--out", str(out)],
                           capture_output=True, text=True, timeout=OUTER_LIMIT_S)
    assert again.returncode == 0, again.stderr
    assert [status(c) for c in cells(out)] == ["complete"] * 3


@needs_proc
@pytest.mark.slow
def test_sigterm_to_a_plain_run_saves_it_and_exits_130(tmp_path, write_config):
    cfg = write_config({k: v for k, v in sweep_config(steps=400_000).items() if k != "sweep"})
    out = tmp_path / "runs"
    with trx_session("run", cfg, "--out", out) as proc:
        wait_until("the run wrote a checkpoint", lambda: (out / "qs" / "gd" / "checkpoint.pt").exists(), proc)
        os.killpg(proc.pid, signal.SIGTERM)
        _, err = proc.communicate(timeout=OUTER_LIMIT_S)
    assert proc.returncode == 130, err
    assert status(out / "qs" / "gd") == "interrupted" and "Traceback" not in err


@needs_proc
@pytest.mark.slow
def test_workers_end_when_the_sweep_process_is_killed(tmp_path, write_config):
    cfg, out = write_config(sweep_config(steps=400_000)), tmp_path / "runs"
    with two_cells_running_in(cfg, out) as proc:
        proc.kill()  # kill -9: no handler runs in the parent
        proc.wait(timeout=60)
        wait_until("the forkserver and the workers ended", lambda: not live_session(proc.pid))
    states = [status(c) for c in cells(out)]
    assert sorted(states, key=str) == ["interrupted", "interrupted"], states  # saved; the third never started


@pytest.mark.slow
def test_a_folder_named_trx_in_the_working_directory_does_not_reach_the_workers(tmp_path, write_config):
    """A console script puts its own folder first on sys.path, not the working directory; trx
    itself comes from wherever it was installed (here: appended to the path, as an editable
    install's finder does after the working directory)."""
    launcher = tmp_path / "bin" / "trx_launcher.py"
    launcher.parent.mkdir()
    launcher.write_text(f"import sys\nsys.path.append({str(ROOT)!r})\nfrom trx.cli import main\n"
                        "if __name__ == '__main__':\n    main()\n")
    work = tmp_path / "work"
    (work / "trx").mkdir(parents=True)  # e.g. a clone of the repository, or results kept under that name
    cfg = write_config({**sweep_config(steps=12), "checkpoint_every": 0})
    env = {k: v for k, v in os.environ.items() if k not in ("PYTHONPATH", "TRX_DEBUG")}
    res = subprocess.run([sys.executable, str(launcher), "sweep", str(cfg), "--jobs", "2", "--out", "runs"], cwd=work,
                         env=env, capture_output=True, text=True, timeout=OUTER_LIMIT_S)
    assert res.returncode == 0, res.stdout + res.stderr
    assert [status(c) for c in cells(work / "runs")] == ["complete"] * 3


def test_workers_that_import_another_trx_stop_the_sweep_before_any_cell(tmp_path, write_config, monkeypatch):
    from typer.testing import CliRunner

    from trx.cli import app

    monkeypatch.setattr(trx, "__file__", "/elsewhere/trx/__init__.py")  # this process only: workers import their own
    cfg = write_config({**sweep_config(steps=12), "checkpoint_every": 0})
    res = CliRunner().invoke(app, ["sweep", str(cfg), "--jobs", "2", "--out", str(tmp_path / "runs")])
    assert res.exit_code == 2, res.output
    assert "worker processes import trx from" in res.output and "Traceback" not in res.output
    assert not cells(tmp_path / "runs")


@pytest.mark.parametrize("outcome, message", [(ModuleNotFoundError("No module named 'trx.executors'"), "cannot import trx"),
                                              (None, "a namespace package")])
def test_a_worker_that_cannot_import_trx_is_a_user_error(outcome, message):
    from trx.executors import check_workers_import

    probe: cf.Future = cf.Future()
    if outcome is None:
        probe.set_result(None)
    else:
        probe.set_exception(outcome)
    with pytest.raises(UserError, match=message):
        check_workers_import(probe)
