"""The job seam: one job per arm and seed, cell metadata in the folder, one writer per folder,
safe checkpoints taken by default, and the argument checks of `trx run` that write nothing."""

from __future__ import annotations

import csv
import json
import os
import pickle
import signal
import subprocess
import sys
from pathlib import Path
from typing import Any

import pytest
import yaml
from conftest import SAFETY_S
from typer.testing import CliRunner

from trx.cli import app
from trx.config import resolve
from trx.executors import InProcess, run_jobs
from trx.jobs import CellMeta, arm_jobs, lock_holder, run_job
from trx.loop import TrainLoop


def quad(**over: Any) -> dict[str, Any]:
    cfg: dict[str, Any] = {
        "name": "q",
        "seed": 0,
        "steps": 40,
        "eval_every": 10,
        "log_every": 5,
        "threads": 1,
        "task": {"name": "quadratic1d", "curvature": 1.0, "init": 1.0, "noise": 0.1},
        "optimizers": {"gd": {"lr": 0.5}, "hb": {"lr": 0.5, "filter": {"name": "heavy_ball", "beta": 0.5}}},
    }
    cfg.update(over)
    return cfg


def write(tmp_path: Path, data: dict[str, Any]) -> Path:
    path = tmp_path / "exp.yaml"
    path.write_text(yaml.safe_dump(data, sort_keys=False))
    return path


def cli(*args: str):
    return CliRunner().invoke(app, list(args), env={"COLUMNS": "200"})


def steps(path: Path) -> list[int]:
    with path.open() as f:
        return [int(r["step"]) for r in csv.DictReader(f)]


def without_wall_time(path: Path) -> list[dict[str, str]]:
    with path.open() as f:
        return [{k: v for k, v in r.items() if k != "wall_time"} for r in csv.DictReader(f)]


# ---- jobs and metadata ------------------------------------------------------------------------
def test_run_makes_one_job_per_arm_and_seed_in_config_order(tmp_path):
    cfg = resolve(quad(seeds=2))
    jobs = arm_jobs(cfg, tmp_path / "q")
    assert [(j.meta.arm, j.meta.seed) for j in jobs] == [("gd", 0), ("gd", 1), ("hb", 0), ("hb", 1)]
    assert [Path(j.dir).relative_to(tmp_path).as_posix() for j in jobs][:2] == ["q/gd/seed=0", "q/gd/seed=1"]
    assert all(list(j.config.optimizers) == [j.meta.arm] and j.config.seed == j.meta.seed for j in jobs)
    one = arm_jobs(resolve(quad()), tmp_path / "q")
    assert [Path(j.dir).name for j in one] == ["gd", "hb"]  # one seed keeps the plain layout


def test_run_job_writes_its_metadata_and_returns_a_typed_result(tmp_path):
    job = arm_jobs(resolve(quad(steps=10)), tmp_path / "q")[1]
    result = run_job(job)
    assert result.status == "complete" and result.finished and result.summary["arm"] == "hb"
    meta = CellMeta.read(Path(job.dir))
    assert meta == job.meta
    again = run_job(job)  # finished: not run twice
    assert again.status == "complete" and again.summary["wall_time_s"] == result.summary["wall_time_s"]


def test_trx_run_with_seeds_prints_means_over_seeds(tmp_path):
    res = cli("run", str(write(tmp_path, quad(steps=10))), "--out", str(tmp_path / "runs"), "--seeds", "2", "--jobs", "1")
    assert res.exit_code == 0, res.output
    assert "over 2 seeds" in res.output
    for arm in ("gd", "hb"):
        for seed in (0, 1):
            meta = json.loads((tmp_path / "runs" / "q" / arm / f"seed={seed}" / "cell.json").read_text())
            assert (meta["arm"], meta["seed"], meta["cell"]) == (arm, seed, None)
    assert (tmp_path / "runs" / "q" / "experiment.yaml").exists()


# ---- bad input: one line, exit 2, nothing written ---------------------------------------------
def test_a_set_typo_under_an_arm_is_an_error_not_a_new_arm(tmp_path):
    path, out = write(tmp_path, quad()), tmp_path / "runs"
    for command in ("run", "sweep"):
        res = cli(command, str(path), "--out", str(out), "--set", "optimizers.gdd.lr=0.05")
        assert res.exit_code == 2, res.output
        assert "no arm 'gdd'; arms: gd, hb" in " ".join(res.output.split())
    assert not out.exists()
    assert cli("run", str(path), "--out", str(out), "--set", "optimizers.*.lr=0.3", "--dry-run").exit_code == 0


def test_dry_run_with_nproc_trains_nothing(tmp_path):
    out = tmp_path / "runs"
    res = cli("run", str(write(tmp_path, quad())), "--out", str(out), "--dry-run", "--nproc", "2")
    assert res.exit_code == 0, res.output
    assert "parameter groups of arm gd" in res.output and not out.exists()


def test_dry_run_needs_no_data(tmp_path):
    data = quad(task={"name": "cifar_resnet", "dataset": "cifar10", "data_dir": str(tmp_path / "nothing")})
    res = cli("run", str(write(tmp_path, data)), "--out", str(tmp_path / "runs"), "--dry-run")
    assert res.exit_code == 0, res.output
    assert "dataset: cifar10" in res.output and "parameter groups of arm gd" in res.output
    assert "(32, 3, 3, 3)" in res.output  # the first conv of an RGB model: shapes known, no data read
    assert "time not estimated: task.data_dir" in " ".join(res.output.split())  # timing needs the data
    assert not (tmp_path / "runs").exists()


# ---- one writer per folder --------------------------------------------------------------------
HOLD = """
import sys
from pathlib import Path
from trx.jobs import folder_lock
with folder_lock(Path(sys.argv[1])):
    print("held", flush=True)
    sys.stdin.read()  # held until the test kills this process (or closes stdin)
"""


def hold(folder: Path) -> subprocess.Popen:
    proc = subprocess.Popen([sys.executable, "-c", HOLD, str(folder)], stdin=subprocess.PIPE, stdout=subprocess.PIPE, text=True)
    assert proc.stdout.readline().strip() == "held"
    return proc


def test_a_locked_folder_stops_trx_run_and_is_skipped_by_a_sweep_and_a_killed_holder_blocks_nothing(tmp_path):
    path, out = write(tmp_path, quad(steps=10)), tmp_path / "runs"
    proc = hold(out / "q" / "hb")
    try:
        res = cli("run", str(path), "--out", str(out))
        assert res.exit_code == 2, res.output
        assert "is being written by" in res.output and f":{proc.pid}" in res.output
        assert not (out / "q" / "gd").exists()  # refused before anything was written
        assert lock_holder(out / "q" / "hb").endswith(")") and str(proc.pid) in lock_holder(out / "q" / "hb")
    finally:
        proc.send_signal(signal.SIGKILL)
        proc.wait(timeout=SAFETY_S)
    assert lock_holder(out / "q" / "hb") is None  # the kernel released it with the process
    assert cli("run", str(path), "--out", str(out)).exit_code == 0

    sweep = write(tmp_path, quad(steps=10, sweep={"grid": {"optimizers.*.lr": [0.2, 0.4]}}))
    cell = out / "q" / "sweep" / "gd" / "lr=0.4,seed=0"
    proc = hold(cell)
    try:
        res = cli("sweep", str(sweep), "--out", str(out))
        assert res.exit_code == 0, res.output
        assert "cell gd/lr=0.4,seed=0 skipped: another process is running it" in " ".join(res.output.split())
        assert not (cell / "summary.json").exists() and (out / "q" / "sweep" / "hb" / "lr=0.4,seed=0" / "summary.json").exists()
    finally:
        proc.send_signal(signal.SIGKILL)
        proc.wait(timeout=SAFETY_S)
    res = cli("sweep", str(sweep), "--out", str(out))
    assert res.exit_code == 0 and (cell / "summary.json").exists()


@pytest.mark.slow
def test_two_sweeps_on_one_folder_write_every_step_once(tmp_path):
    data = quad(steps=400, log_every=1, eval_every=100,
                sweep={"grid": {"optimizers.*.lr": [0.1, 0.2, 0.3]}, "seeds": [0, 1]})
    path, out = write(tmp_path, data), tmp_path / "runs"
    cmd = [sys.executable, "-m", "trx", "sweep", str(path), "--out", str(out)]
    env = {**os.environ, "COLUMNS": "200"}
    procs = [subprocess.Popen(cmd, stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True, env=env) for _ in range(2)]
    outputs = [p.communicate(timeout=SAFETY_S)[0] for p in procs]
    assert [p.returncode for p in procs] == [0, 0], outputs
    files = sorted((out / "q" / "sweep").rglob("metrics.csv"))
    assert len(files) == 12
    for f in files:
        assert steps(f) == list(range(401)), f
    assert all(json.loads((f.parent / "summary.json").read_text())["status"] == "complete" for f in files)


# ---- checkpoints ------------------------------------------------------------------------------
def test_checkpoints_are_taken_by_default_and_a_crashed_run_resumes_exactly(tmp_path, monkeypatch):
    data = quad(optimizers={"hb": {"lr": 0.5, "filter": {"name": "heavy_ball", "beta": 0.5}}})
    clean = run_jobs(arm_jobs(resolve(data), tmp_path / "clean"), InProcess())[0]
    real = TrainLoop._final_row

    def crash(self):
        raise RuntimeError("boom")

    monkeypatch.setattr(TrainLoop, "_final_row", crash)
    job = arm_jobs(resolve(data), tmp_path / "crash")[0]
    assert run_job(job).status == "failed"
    assert (Path(job.dir) / "checkpoint.pt").exists()  # the eval at update 30 left one
    monkeypatch.setattr(TrainLoop, "_final_row", real)
    assert run_job(job).status == "complete"
    assert without_wall_time(Path(job.dir) / "metrics.csv") == without_wall_time(Path(clean.dir) / "metrics.csv")
    assert not (Path(job.dir) / "checkpoint.pt").exists()


def test_a_run_without_checkpoint_says_it_starts_over(tmp_path, monkeypatch, capsys):
    data = quad(checkpoint_every=0, optimizers={"gd": {"lr": 0.5}})
    monkeypatch.setattr(TrainLoop, "_final_row", lambda self: (_ for _ in ()).throw(RuntimeError("boom")))
    job = arm_jobs(resolve(data), tmp_path / "r")[0]
    assert run_job(job).status == "failed"
    monkeypatch.undo()
    result = run_job(job)
    assert result.status == "complete" and result.summary["restarted"] is True
    assert "no checkpoint to resume from; starting over from update 0" in capsys.readouterr().err


class _Payload:
    def __init__(self, marker: Path):
        self.marker = marker

    def __reduce__(self):
        return (os.system, (f"touch {self.marker}",))


def test_a_crafted_pickle_in_checkpoint_pt_is_refused(tmp_path, monkeypatch):
    data = quad(optimizers={"gd": {"lr": 0.5}})
    path, out = write(tmp_path, data), tmp_path / "runs"
    monkeypatch.setattr(TrainLoop, "_final_row", lambda self: (_ for _ in ()).throw(RuntimeError("boom")))
    assert cli("run", str(path), "--out", str(out)).exit_code == 1
    monkeypatch.undo()
    marker = tmp_path / "pwned"
    ckpt = out / "q" / "gd" / "checkpoint.pt"
    ckpt.write_bytes(pickle.dumps({"step": _Payload(marker)}))
    before = (out / "q" / "gd" / "metrics.csv").read_text()
    res = cli("run", str(path), "--out", str(out), "--resume")
    assert res.exit_code == 2, res.output
    assert "refused to load: not a plain tensor checkpoint" in " ".join(res.output.split())
    assert not marker.exists() and (out / "q" / "gd" / "metrics.csv").read_text() == before


class _StopAt:
    """A stop flag that turns on at its n-th read: an interrupt between two loss checks."""

    signal_name = "SIGINT"

    def __init__(self, n: int):
        self.n, self.reads = n, 0

    @property
    def requested(self) -> bool:
        self.reads += 1
        return self.reads >= self.n


def test_an_interrupt_between_loss_checks_resumes_exactly(tmp_path):
    data = quad(steps=60, log_every=10, eval_every=0, checkpoint_every=0, task={"name": "quadratic1d",
                "curvature": 1.0, "init": 1.0, "noise": 0.5}, optimizers={"hb": {"lr": 1.9, "filter": {"name": "heavy_ball", "beta": 0.5}}})
    clean = run_jobs(arm_jobs(resolve(data), tmp_path / "clean"), InProcess())[0]
    job = arm_jobs(resolve(data), tmp_path / "cut")[0]
    assert run_job(job, _StopAt(26)).status == "interrupted"  # update 25: mid-way between checks at 20 and 30
    assert run_job(job).status == "complete"
    assert without_wall_time(Path(job.dir) / "metrics.csv") == without_wall_time(Path(clean.dir) / "metrics.csv")
    assert json.loads((Path(job.dir) / "summary.json").read_text())["loss_spikes"] == clean.summary["loss_spikes"]


def test_a_job_validates_nothing_again_and_builds_its_model_once(tmp_path, monkeypatch):
    """The job carries its validated config; running it loads the task and builds one model
    (the arms' shape checks happened when the run was planned)."""
    from trx import config
    from trx.tasks import TASKS

    job = arm_jobs(resolve(quad()), tmp_path / "q")[0]
    built, validated = [], []
    task_type = TASKS["quadratic1d"]
    monkeypatch.setattr(task_type, "build_model", lambda self, f=task_type.build_model: built.append(1) or f(self))
    monkeypatch.setattr(config.ExperimentConfig, "model_validate", staticmethod(lambda *a, **k: validated.append(1)))
    assert run_job(job).status == "complete"
    assert (len(built), validated) == (1, [])


# ---- a recorded config read through today's schema -------------------------------------------
def _recorded(cfg: dict[str, Any], arm: str) -> dict[str, Any]:
    """What config.yaml (and a checkpoint) record for one arm of `cfg`."""
    from trx.config import arm_config

    return arm_config(resolve(cfg), arm)


def _with_record(tmp_path: Path, old: dict[str, Any]) -> Any:
    """The `hb` job of quad() with `old` recorded as its folder's config.yaml."""
    from trx.io import write_yaml

    job = next(j for j in arm_jobs(resolve(quad()), tmp_path / "q") if j.meta.arm == "hb")
    Path(job.dir).mkdir(parents=True)
    write_yaml(Path(job.dir) / "config.yaml", old)
    return job


def test_an_option_added_since_a_run_was_written_is_no_change(tmp_path):
    """A folder written before an option existed lacks it; at its default it changes nothing."""
    from trx.config import config_changes
    from trx.jobs import check_resumable

    new = _recorded(quad(), "hb")
    old = json.loads(json.dumps(new))
    del old["divergence_threshold"], old["optimizers"]["hb"]["filter"]["gamma"]
    assert config_changes(old, new) == []
    check_resumable(_with_record(tmp_path, old))  # no error: nothing to refuse


def test_a_real_change_is_still_named_after_normalizing(tmp_path):
    from trx.config import config_changes
    from trx.errors import UserError
    from trx.jobs import check_resumable

    new = _recorded(quad(), "hb")
    old = _recorded(quad(divergence_threshold=50.0), "hb")
    del old["optimizers"]["hb"]["filter"]["gamma"]
    assert config_changes(old, new) == ["divergence_threshold"]
    with pytest.raises(UserError, match="differs at divergence_threshold"):
        check_resumable(_with_record(tmp_path, old))
