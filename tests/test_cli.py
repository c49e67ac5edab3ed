"""The command line as a user meets it: exit codes, one-line errors, nothing half-written."""

from __future__ import annotations

import csv
import json
import os
import signal
import subprocess
import sys
from dataclasses import dataclass
from pathlib import Path

import pytest
from conftest import SAFETY_S, tiny_config, wait_until
from typer.testing import CliRunner

from trx.cli import app

ROOT = Path(__file__).resolve().parents[1]


def trx(*args: str, timeout: float = SAFETY_S) -> subprocess.CompletedProcess:
    """`python -m trx ARGS` in a real process (signals, exit codes, tracebacks as a user sees them)."""
    env = {**os.environ, "COLUMNS": "200"}
    env.pop("TRX_DEBUG", None)
    return subprocess.run([sys.executable, "-m", "trx", *args], capture_output=True, text=True, cwd=ROOT,
                          timeout=timeout, env=env)


@dataclass
class Result:
    returncode: int
    stdout: str
    stderr: str


def cli(*args: str) -> Result:
    """The same command in-process (fast)."""
    res = CliRunner().invoke(app, list(args))
    if res.exception is not None and not isinstance(res.exception, SystemExit):
        raise res.exception
    return Result(res.exit_code, res.stdout, res.stderr)


def test_run_prints_a_comparison_and_saves_it(tmp_path, write_config):
    cfg = write_config(tiny_config())
    res = trx("run", str(cfg), "--out", str(tmp_path / "runs"))
    assert res.returncode == 0, res.stderr
    assert "final_loss" in res.stdout and "adam" in res.stdout
    assert (tmp_path / "runs" / "tiny" / "comparison.csv").read_text().startswith("arm,status,")


@pytest.mark.parametrize(
    ("args", "message"),
    [
        (["--set", "optimizers.sgd.lr=0"], "optimizers.sgd.lr: must be > 0"),
        (["--set", "optimizers.sgd.normalizer=whiten"], "optimizers.sgd.normalizer: unknown name 'whiten'; allowed:"),
        (["--set", "bogus=1"], "bogus: unknown key; allowed:"),
        (["--set", "task.dataset=mnist"], "task.dataset: must be one of"),
        (["--set", "optimizers.sgd.filter={name: iir, b: [1], a: [1, -1]}"], "unstable filter"),
        (["--device", "tpu"], "--device: must be auto, cpu or cuda"),
        (["--resume", "--overwrite"], "--resume and --overwrite exclude each other"),
        (["--set", "no-equals"], "expected KEY=VALUE"),
    ],
)
def test_bad_input_is_one_line_exit_2_nothing_written(tmp_path, write_config, args, message):
    cfg = write_config(tiny_config())
    out = tmp_path / "runs"
    res = cli("run", str(cfg), "--out", str(out), *args)
    assert res.returncode == 2, (res.stdout, res.stderr)
    assert message in res.stderr
    assert "Traceback" not in res.stderr + res.stdout
    assert not out.exists()


def test_missing_config_file_and_unwritable_out(tmp_path, write_config):
    res = trx("run", str(tmp_path / "nope.yaml"))  # a real process: one line, no traceback
    assert res.returncode == 2 and "no such file" in res.stderr and "Traceback" not in res.stderr
    cfg = write_config(tiny_config())
    blocker = tmp_path / "file"
    blocker.write_text("x")
    res = cli("run", str(cfg), "--out", str(blocker / "runs"))
    assert res.returncode == 2 and "--out: cannot write" in res.stderr


def test_results_are_not_overwritten_by_accident(tmp_path, write_config):
    cfg = write_config(tiny_config())
    out = str(tmp_path / "runs")
    assert cli("run", str(cfg), "--out", out).returncode == 0
    res = cli("run", str(cfg), "--out", out)
    assert res.returncode == 2 and "already holds results" in res.stderr and "--resume" in res.stderr
    assert cli("run", str(cfg), "--out", out, "--overwrite").returncode == 0
    res = cli("run", str(cfg), "--out", out, "--resume", "--set", "seed=1")
    assert res.returncode == 2 and "differs at seed" in res.stderr


def test_diverged_arm_exits_zero(tmp_path, write_config):
    cfg = write_config(tiny_config(optimizers={"wild": {"lr": 1e5}}, divergence_threshold=10))
    res = cli("run", str(cfg), "--out", str(tmp_path))
    assert res.returncode == 0, res.stderr
    assert json.loads((tmp_path / "tiny" / "wild" / "summary.json").read_text())["status"] == "diverged"


def test_dry_run_shows_groups_and_writes_nothing(tmp_path, write_config):
    data = tiny_config(optimizers={"muon": {"lr": 0.02, "normalizer": "muon", "aux": {"lr_scale": 0.1}}})
    res = cli("run", str(write_config(data)), "--out", str(tmp_path / "runs"), "--dry-run")
    assert res.returncode == 0, res.stderr
    assert "parameter groups of arm muon" in res.stdout and "weight (13, 13)" not in res.stdout
    assert "(3, 13) (matrix)" in res.stdout and "bias (3,) (vector)" in res.stdout
    assert "time estimate from 5 timed updates and one evaluation per arm, here and now (" in res.stdout
    assert "  muon: " in res.stdout and " s per update, " in res.stdout and "  all 1 run(s): about " in res.stdout
    assert not (tmp_path / "runs").exists()


def list_sections(text: str) -> dict[str, list[str]]:
    """The names in the first column of each table of `trx list`, by table title (a name that
    wraps over several lines of its cell is joined back)."""
    sections: dict[str, list[str]] = {}
    title, names, cell = None, None, None
    previous = ""
    for line in text.splitlines():
        if line.startswith("┏"):
            title, names = previous.strip(), []
            sections[title] = names
        elif line.startswith("│") and names is not None:
            part = line.split("│")[1].strip()
            if cell is None:
                cell = part
                names.append(cell)
            elif part:
                names[-1] = cell = cell + part
        elif line.startswith(("├", "└")):
            cell = None
        if line.strip():
            previous = line
    return sections


def test_list_shows_every_registered_component_as_its_own_row():
    """Each registry's names, exactly, as the rows of its table (a missing `normuon` does not
    hide behind `muon`)."""
    from trx.optim import FILTERS, NORMALIZERS, PROTOTYPES, Schedule
    from trx.tasks import TASKS

    res = cli("list")
    assert res.returncode == 0
    sections = list_sections(res.stdout)
    registries = {"filters": FILTERS, "normalizers": NORMALIZERS, "schedules": PROTOTYPES, "tasks": TASKS}
    assert set(sections) == set(registries)
    for title, registry in registries.items():
        assert sorted(sections[title]) == sorted(registry), title
        assert len(sections[title]) == len(set(sections[title])), title
    for key, _, _ in Schedule.describe_options():  # the warmup and shift options every prototype takes
        assert f" {key} = " in res.stdout, key


def test_list_sections_reads_rows_not_substrings():
    table = "filters\n┏━━┓\n┃ name ┃\n┡━━┩\n│ normuon │ x │\n├──┤\n│ one_minus_ │ y │\n│ sqrt       │   │\n└──┘\n"
    assert list_sections(table) == {"filters": ["normuon", "one_minus_sqrt"]}


def _slow_config(write_config, **over):
    data = tiny_config(steps=1500, log_every=50, eval_every=500, checkpoint_every=100,
                       optimizers={"adam": {"lr": 0.01, "filter": "ema", "normalizer": "adam"}, "sgd": {"lr": 0.1}}, **over)
    return write_config(data)


def _metric_rows(path: Path) -> list[dict[str, str]]:
    """metrics.csv rows without wall_time, the one column that may differ between two runs."""
    with path.open() as f:
        rows = list(csv.DictReader(f))
    for row in rows:
        row.pop("wall_time")
    return rows


@pytest.mark.slow
def test_sigint_saves_the_arm_and_exits_130_then_resume_finishes(tmp_path, write_config):
    cfg = _slow_config(write_config)
    out = tmp_path / "runs"
    env = {**os.environ, "COLUMNS": "200"}
    proc = subprocess.Popen([sys.executable, "-m", "trx", "run", str(cfg), "--out", str(out)], cwd=ROOT, env=env,
                            stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
    ckpt = out / "tiny" / "adam" / "checkpoint.pt"
    wait_until(ckpt.exists, proc, "the first checkpoint")
    proc.send_signal(signal.SIGINT)
    _, err = proc.communicate(timeout=SAFETY_S)
    assert proc.returncode == 130, err
    summary = json.loads((out / "tiny" / "adam" / "summary.json").read_text())
    assert summary["status"] == "interrupted" and "Traceback" not in err
    assert not (out / "tiny" / "sgd").exists()
    res = trx("run", str(cfg), "--out", str(out), "--resume")
    assert res.returncode == 0, res.stderr
    assert json.loads((out / "tiny" / "adam" / "summary.json").read_text())["status"] == "complete"


@pytest.mark.slow
def test_kill_9_loses_nothing_and_resume_matches_an_uninterrupted_run(tmp_path, write_config):
    cfg = _slow_config(write_config)
    ref = trx("run", str(cfg), "--out", str(tmp_path / "ref"))
    assert ref.returncode == 0, ref.stderr
    out = tmp_path / "cut"
    proc = subprocess.Popen([sys.executable, "-m", "trx", "run", str(cfg), "--out", str(out)], cwd=ROOT,
                            stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    ckpt = out / "tiny" / "adam" / "checkpoint.pt"
    wait_until(ckpt.exists, proc, "the first checkpoint")
    proc.kill()  # at any point after a checkpoint: resume must reproduce the rest
    proc.wait(timeout=SAFETY_S)
    for f in (out / "tiny").rglob("*.json"):
        json.loads(f.read_text())  # never torn
    res = trx("run", str(cfg), "--out", str(out), "--resume")
    assert res.returncode == 0, res.stderr
    for arm in ("adam", "sgd"):
        ref_rows = _metric_rows(tmp_path / "ref" / "tiny" / arm / "metrics.csv")
        assert _metric_rows(out / "tiny" / arm / "metrics.csv") == ref_rows, arm


def test_a_reader_that_closes_the_pipe_early_is_not_an_error():
    proc = subprocess.run(f"'{sys.executable}' -m trx list | head -1 > /dev/null; echo ${{PIPESTATUS[0]}}", shell=True, executable="/bin/bash",
                          capture_output=True, text=True, timeout=SAFETY_S)
    assert proc.stdout.strip() == "0", proc.stderr


def test_job_progress_counts_only_runs_that_run_and_shows_their_steps(tmp_path):
    import io

    from rich.console import Console

    from trx.cli import JobProgress
    from trx.jobs import ArmJob, CellMeta, JobResult
    from trx.rundir import HOLDER as HOLDER_FILE

    from conftest import tiny_config
    from trx.config import resolve

    config = resolve(tiny_config(steps=100))
    jobs = [ArmJob(config, str(tmp_path / f"c{i}"), CellMeta("x", "adam", 0, {"optimizers.adam.lr": i}, f"lr={i}"))
            for i in range(4)]
    for job in jobs[:2]:  # two run (their folders are locked); two wait in the pool's queue
        Path(job.dir).mkdir()
        (Path(job.dir) / HOLDER_FILE).write_text("{}")
    (Path(jobs[0].dir) / "metrics.csv").write_text("step,loss,lr\n0,2.5,0.1\n10,1.25,0.1\n")
    shown = JobProgress(4, "sweep", Console(file=io.StringIO(), width=200))
    for job in jobs:
        shown.event("start", job, None)  # a process pool hands over more runs than it has workers
    shown.poll()
    tasks = {t.description: t for t in shown.bar.tasks}
    assert tasks["sweep"].fields["info"] == "running 2, queued 2"
    assert tasks["adam/lr=0"].completed == 10 and tasks["adam/lr=0"].fields["info"] == "loss 1.25"
    assert tasks["adam/lr=1"].completed == 0 and "adam/lr=2" not in tasks
    shown.event("done", jobs[0], JobResult(jobs[0].dir, "complete", {"final_val_loss": 0.5}))
    tasks = {t.description: t for t in shown.bar.tasks}
    assert "adam/lr=0" not in tasks and tasks["sweep"].completed == 1
    assert tasks["sweep"].fields["info"] == "running 1, queued 2"
    assert "complete    adam/lr=0  val_loss 0.5" in shown.bar.console.file.getvalue()


@pytest.mark.parametrize("terminal", [False, True])
def test_tables_never_cut_the_names_that_tell_rows_apart(monkeypatch, terminal):
    import io

    import pandas as pd
    from rich.console import Console

    import trx.cli as cli_module

    names = ["warmup_ablation/adamw schedule.warmup=0.05,lr=1", "warmup_ablation/adamw schedule.warmup=0,lr=1"]
    table = pd.DataFrame({"run": names, "final_val_loss": [0.25, 0.5], "status": ["1 complete", "1 complete"],
                          "note": ["a long free text column " * 3] * 2})
    out = Console(file=io.StringIO(), width=60, force_terminal=terminal)
    monkeypatch.setattr(cli_module, "console", out)
    cli_module.show(cli_module.render_table(table, title="cells"))
    text = out.file.getvalue()
    for name in names:
        assert name in text, text  # whole, on one line
    if not terminal:  # a pipe or file: the full width, nothing folded
        assert "a long free text column " * 3 in text
