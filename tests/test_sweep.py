"""`trx sweep`: grid expansion and per-arm axes, `*` keys, cell ids, validation before writing,
resume (nothing redone), failing and diverged cells, parallel cells."""

from __future__ import annotations

import csv
import json
import os
import signal
import subprocess
import sys
from pathlib import Path
from typing import Any

import pytest
import yaml
from conftest import SAFETY_S, wait_until
from typer.testing import CliRunner

from trx.cli import app
from trx.config import UserError, dump
from trx.loop import TrainLoop
from trx.stop import StopFlag
from trx.executors import InProcess, run_jobs
from trx.sweep_plan import axis_values, format_value, parse_grid_option, plan_jobs, plan_sweep


def quad_config(**over: Any) -> dict[str, Any]:
    """A sweep on the 1-D quadratic: cheap cells, no data to load."""
    cfg: dict[str, Any] = {
        "name": "qs",
        "seed": 0,
        "steps": 12,
        "eval_every": 0,
        "log_every": 4,
        "task": {"name": "quadratic1d", "curvature": 1.0, "init": 1.0, "noise": 0.1},
        "optimizers": {
            "gd": {"lr": 0.5},
            "hb": {"lr": 0.5, "filter": {"name": "heavy_ball", "beta": 0.5}},
        },
        "sweep": {"grid": {"optimizers.gd.lr": [0.1, 0.5], "optimizers.hb.lr": [0.2, 0.4, 0.6]}},
    }
    cfg.update(over)
    return cfg


def write(tmp_path: Path, data: dict[str, Any]) -> Path:
    path = tmp_path / "sweep.yaml"
    path.write_text(yaml.safe_dump(data, sort_keys=False))
    return path


def sweep_cli(*args: str):
    env = {"COLUMNS": "200"}
    return CliRunner().invoke(app, ["sweep", *args], env=env)


def ids(plan, arm: str) -> list[str]:
    return [c.id for c in plan.cells if c.arm == arm]


# ---- grid expansion ---------------------------------------------------------------------------
def test_axis_values_lists_log_linear_and_scalars():
    assert axis_values("k", [1, 2]) == [1, 2]
    assert axis_values("k", 3) == [3]
    assert axis_values("k", {"log": [1e-3, 1e-1], "num": 3}) == [1e-3, 1e-2, 1e-1]
    assert axis_values("k", {"linear": [0, 1], "num": 5}) == [0, 0.25, 0.5, 0.75, 1]
    for bad in ({"log": [0, 1], "num": 3}, {"log": [1e-3, 1], "num": 0}, {"cubic": [1, 2], "num": 2}, []):
        with pytest.raises(UserError, match="sweep.grid.k"):
            axis_values("k", bad)


def test_grid_option_parses_lists_and_log_ranges():
    assert parse_grid_option("a.b=0.1,0.2") == ("a.b", [0.1, 0.2])
    assert parse_grid_option("s.name=cosine,linear") == ("s.name", ["cosine", "linear"])
    key, values = parse_grid_option("optimizers.x.lr=log:1e-4:1e-2:3")
    assert key == "optimizers.x.lr" and values == pytest.approx([1e-4, 1e-3, 1e-2])
    for bad in ("nokey", "k=log:1:2", "k=log:a:b:3", "=1"):
        with pytest.raises(UserError, match="--grid"):
            parse_grid_option(bad)


def test_each_arm_multiplies_only_its_own_axes_stars_and_global_keys(tmp_path):
    grid = {"optimizers.gd.lr": [0.1, 0.5], "optimizers.hb.lr": [0.2, 0.4, 0.6],
            "optimizers.*.schedule.warmup": [0, 2], "task.noise": [0.0, 0.1]}
    plan = plan_sweep(write(tmp_path, quad_config(sweep={"grid": grid, "seeds": [0, 1]})), [], [], None, tmp_path)
    assert len(ids(plan, "gd")) == 2 * 2 * 2 * 2 and len(ids(plan, "hb")) == 3 * 2 * 2 * 2
    assert ids(plan, "gd")[0] == "lr=0.1,schedule.warmup=0,task.noise=0,seed=0"
    assert plan.keys == ["lr", "schedule.warmup", "task.noise"]
    cell = next(c for c in plan.cells if c.arm == "hb" and c.id == "lr=0.6,schedule.warmup=2,task.noise=0.1,seed=1")
    assert list(dump(cell.config)["optimizers"]) == ["hb"]
    assert dump(cell.config)["optimizers"]["hb"]["lr"] == 0.6 and dump(cell.config)["optimizers"]["hb"]["schedule"]["warmup"] == 2
    assert dump(cell.config)["task"]["noise"] == 0.1 and dump(cell.config)["seed"] == 1 and dump(cell.config)["sweep"] is None


def test_a_named_arm_key_beats_star_for_the_same_leaf(tmp_path):
    grid = {"optimizers.*.lr": [0.01, 0.02], "optimizers.hb.lr": [0.3]}
    plan = plan_sweep(write(tmp_path, quad_config(sweep={"grid": grid})), [], [], None, tmp_path)
    assert ids(plan, "gd") == ["lr=0.01,seed=0", "lr=0.02,seed=0"]
    assert ids(plan, "hb") == ["lr=0.3,seed=0"]


def test_star_on_a_key_an_arm_cannot_take_is_an_error_naming_it(tmp_path):
    grid = {"optimizers.*.filter.beta": [0.5, 0.9]}
    with pytest.raises(UserError, match=r"sweep.grid.optimizers.\*.filter.beta = 0.5 \(arm gd\)"):
        plan_sweep(write(tmp_path, quad_config(sweep={"grid": grid})), [], [], None, tmp_path)


def test_ids_use_full_keys_below_the_arm_and_4_significant_digits(tmp_path):
    cfg = quad_config(sweep={"grid": {"optimizers.gd.lr": {"log": [1e-4, 1e-1], "num": 7}, "optimizers.hb.lr": [0.2]}})
    plan = plan_sweep(write(tmp_path, cfg), [], [], 2, tmp_path)
    assert ids(plan, "gd")[:4] == ["lr=0.0001,seed=0", "lr=0.0001,seed=1", "lr=0.0003162,seed=0", "lr=0.0003162,seed=1"]
    assert dump(plan.cells[2].config)["optimizers"]["gd"]["lr"] == pytest.approx(10**-3.5)
    assert format_value(0) == "0" and format_value(0.05) == "0.05" and format_value(True) == "true"
    assert format_value({"name": "ema", "beta": 0.9}) == "{name:ema,beta:0.9}"


def test_seeds_option_and_the_command_line_grid_win(tmp_path):
    path = write(tmp_path, quad_config(seed=3, sweep={"grid": {"optimizers.gd.lr": [0.1]}, "seeds": [7]}))
    plan = plan_sweep(path, [], ["optimizers.gd.lr=0.2,0.3"], 2, tmp_path)
    assert ids(plan, "gd") == ["lr=0.2,seed=3", "lr=0.2,seed=4", "lr=0.3,seed=3", "lr=0.3,seed=4"]
    assert ids(plan, "hb") == ["seed=3", "seed=4"]
    assert ids(plan_sweep(path, [], [], None, tmp_path), "hb") == ["seed=7"]


def test_set_applies_to_every_cell_and_the_grid_beats_it(tmp_path):
    path = write(tmp_path, quad_config())
    plan = plan_sweep(path, ["steps=5", "optimizers.gd.lr=9"], [], None, tmp_path)
    assert {dump(c.config)["steps"] for c in plan.cells} == {5}
    assert [dump(c.config)["optimizers"]["gd"]["lr"] for c in plan.cells if c.arm == "gd"] == [0.1, 0.5]


@pytest.mark.parametrize(
    ("grid", "message"),
    [
        (["optimizers.gd.lrr=0.1"], "sweep.grid.optimizers.gd.lrr = 0.1 (arm gd): optimizers.gd.lrr: unknown key"),
        (["optimizers.gd.lr=-1"], "optimizers.gd.lr: must be > 0"),
        (["optimizers.nope.lr=0.1"], "no arm named 'nope'"),
        (["bogus=1"], "sweep.grid.bogus"),
        (["seed=1,2"], "use sweep.seeds or --seeds"),
        (["optimizers.gd.lr=log:0:1:3"], "log bounds must be > 0"),
    ],
)
def test_bad_grid_is_exit_2_naming_the_key_and_nothing_written(tmp_path, grid, message):
    out = tmp_path / "runs"
    res = sweep_cli(str(write(tmp_path, quad_config())), "--out", str(out), *[f"--grid={g}" for g in grid])
    assert res.exit_code == 2, res.output
    assert message in " ".join(res.output.split())
    assert not out.exists()


def test_cells_the_model_cannot_take_fail_before_anything_is_written(tmp_path):
    cfg = quad_config(task={"name": "logreg", "dataset": "wine", "batch_size": 8},
                      optimizers={"muon": {"lr": 0.02, "normalizer": "muon"}}, sweep={"grid": {"optimizers.muon.lr": [0.1]}})
    out = tmp_path / "runs"
    res = sweep_cli(str(write(tmp_path, cfg)), "--out", str(out))
    assert res.exit_code == 2 and "sweep cell muon/lr=0.1,seed=0" in res.output and "aux" in res.output
    assert not out.exists()


# ---- running ----------------------------------------------------------------------------------
def cell_files(out: Path) -> dict[str, float]:
    return {str(p.relative_to(out)): p.stat().st_mtime_ns for p in sorted(out.rglob("summary.json"))}


def read_sweep_csv(out: Path, name: str = "qs") -> list[dict[str, str]]:
    with (out / name / "sweep" / "sweep.csv").open() as f:
        return list(csv.DictReader(f))


def test_a_sweep_writes_run_folders_and_sweep_csv_then_resumes_without_redoing(tmp_path):
    out = tmp_path / "runs"
    path = write(tmp_path, quad_config())
    res = sweep_cli(str(path), "--out", str(out), "--seeds", "2")
    assert res.exit_code == 0, res.output
    cell = out / "qs" / "sweep" / "hb" / "lr=0.4,seed=1"
    assert {p.name for p in cell.iterdir()} >= {"config.yaml", "metrics.csv", "summary.json"}
    config = yaml.safe_load((cell / "config.yaml").read_text())
    assert config["optimizers"]["hb"]["lr"] == 0.4 and config["seed"] == 1 and "sweep" not in config
    rows = read_sweep_csv(out)
    assert len(rows) == 10 and list(rows[0])[:4] == ["arm", "cell", "seed", "lr"]
    assert {r["status"] for r in rows} == {"complete"} and rows[0]["arm"] == "gd" and rows[0]["lr"] == "0.1"
    assert "learning-rate tolerance" in res.output

    before = cell_files(out)
    res = sweep_cli(str(path), "--out", str(out), "--seeds", "2")
    assert res.exit_code == 0 and "10 cell(s) were already finished" in res.output
    assert cell_files(out) == before

    (cell / "summary.json").unlink()  # an unfinished cell: only it runs again
    res = sweep_cli(str(path), "--out", str(out), "--seeds", "2")
    after = cell_files(out)
    changed = [k for k in after if after[k] != before.get(k)]
    assert res.exit_code == 0 and changed == [str((cell / "summary.json").relative_to(out))]


def test_resume_against_a_different_config_is_refused(tmp_path):
    out = tmp_path / "runs"
    path = write(tmp_path, quad_config())
    assert sweep_cli(str(path), "--out", str(out)).exit_code == 0
    res = sweep_cli(str(path), "--out", str(out), "--set", "steps=13")
    assert res.exit_code == 2 and "holds a result of a different config; it differs at steps" in " ".join(res.output.split())


def test_a_failing_cell_is_recorded_the_sweep_goes_on_and_exits_1(tmp_path, monkeypatch):
    real_updates = TrainLoop._updates

    def updates(self):
        if [a.lr for a in self.cfg.optimizers.values()] == [0.4]:  # the cell hb/lr=0.4
            raise RuntimeError("boom")
        return real_updates(self)

    monkeypatch.setattr(TrainLoop, "_updates", updates)
    out = tmp_path / "runs"
    path = write(tmp_path, quad_config())
    res = sweep_cli(str(path), "--out", str(out))
    assert res.exit_code == 1
    assert "cell hb/lr=0.4,seed=0 failed: RuntimeError: boom" in " ".join(res.output.split())
    status = {r["cell"]: r["status"] for r in read_sweep_csv(out) if r["arm"] == "hb"}
    assert status == {"lr=0.2,seed=0": "complete", "lr=0.4,seed=0": "failed", "lr=0.6,seed=0": "complete"}

    monkeypatch.setattr(TrainLoop, "_updates", real_updates)  # the failed cell runs again; the rest are skipped
    res = sweep_cli(str(path), "--out", str(out))
    assert res.exit_code == 0 and "4 cell(s) were already finished" in res.output
    assert {r["status"] for r in read_sweep_csv(out)} == {"complete"}


def test_a_diverged_cell_is_a_result(tmp_path):
    cfg = quad_config(optimizers={"gd": {"lr": 0.5}}, sweep={"grid": {"optimizers.gd.lr": [0.5, 3.5]}},
                      task={"name": "quadratic1d", "curvature": 1.0, "init": 1.0, "noise": 0.0})
    out = tmp_path / "runs"
    res = sweep_cli(str(write(tmp_path, cfg)), "--out", str(out))
    assert res.exit_code == 0, res.output
    rows = {r["cell"]: r for r in read_sweep_csv(out)}
    assert rows["lr=3.5,seed=0"]["status"] == "diverged" and rows["lr=3.5,seed=0"]["diverged"] == "True"
    assert rows["lr=0.5,seed=0"]["status"] == "complete"


def test_a_stop_request_interrupts_the_sweep(tmp_path):
    plan = plan_sweep(write(tmp_path, quad_config()), [], [], None, tmp_path / "runs")
    results = run_jobs(plan_jobs(plan), InProcess(), None, StopFlag(requested=True))
    assert {r.status for r in results} == {"not run"}
    assert not (tmp_path / "runs").exists()


@pytest.mark.skipif((os.cpu_count() or 1) < 2, reason="needs 2 cores")
def test_parallel_cells_match_serial_ones_with_threads_recorded(tmp_path):
    path = write(tmp_path, quad_config())
    assert sweep_cli(str(path), "--out", str(tmp_path / "serial")).exit_code == 0
    res = sweep_cli(str(path), "--out", str(tmp_path / "par"), "--jobs", "2")
    assert res.exit_code == 0, res.output
    serial, par = read_sweep_csv(tmp_path / "serial"), read_sweep_csv(tmp_path / "par")
    assert [r["final_loss"] for r in serial] == [r["final_loss"] for r in par]
    assert {r["threads"] for r in par} == {str(max(1, len(os.sched_getaffinity(0)) // 2))}


def test_ids_do_not_depend_on_the_order_of_the_grid(tmp_path):
    grid = {"task.noise": [0.0], "optimizers.*.schedule.warmup": [2], "optimizers.gd.lr": [0.1]}
    plan = plan_sweep(write(tmp_path, quad_config(sweep={"grid": grid})), [], [], None, tmp_path)
    again = plan_sweep(write(tmp_path, quad_config(sweep={"grid": dict(reversed(grid.items()))})), [], [], None, tmp_path)
    assert ids(plan, "gd") == ids(again, "gd") == ["lr=0.1,schedule.warmup=2,task.noise=0,seed=0"]


def test_ctrl_c_exits_130_saves_the_running_cell_and_starts_no_other(tmp_path):
    cfg = quad_config(steps=400_000, log_every=1000, checkpoint_every=1000, optimizers={"gd": {"lr": 0.1}},
                      sweep={"grid": {"optimizers.gd.lr": [0.1, 0.2]}})
    path, out = write(tmp_path, cfg), tmp_path / "runs"
    env = {**os.environ, "COLUMNS": "200"}
    env.pop("TRX_DEBUG", None)
    cmd = [sys.executable, "-m", "trx", "sweep", str(path), "--out", str(out)]
    proc = subprocess.Popen(cmd, env=env, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
    first = out / "qs" / "sweep" / "gd" / "lr=0.1,seed=0"
    wait_until((first / "checkpoint.pt").exists, proc, "the first cell's first checkpoint")
    proc.send_signal(signal.SIGINT)
    _, err = proc.communicate(timeout=SAFETY_S)
    assert proc.returncode == 130, err
    assert "interrupted" in err and "Traceback" not in err
    summary = json.loads((first / "summary.json").read_text())
    assert summary["status"] == "interrupted" and (first / "checkpoint.pt").exists()
    assert not (out / "qs" / "sweep" / "gd" / "lr=0.2,seed=0").exists()  # later cells did not start
