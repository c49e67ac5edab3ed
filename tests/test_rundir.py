"""The run folder's owner (`trx.rundir`): the one place a result file is named, typed reads and
writes, statuses, finding runs; what a folder is comes from cell.json, never its name."""

from __future__ import annotations

import re
from pathlib import Path

import pytest

from trx import rundir
from trx.errors import UserError
from trx.rundir import CellMeta, ExperimentDir, RunDir, Status, find_run_dirs

TRX = Path(__file__).resolve().parents[1] / "trx"
NAMES = [rundir.CONFIG, rundir.CELL, rundir.METRICS, rundir.SUMMARY, rundir.CHECKPOINT, rundir.HOLDER,
         rundir.EXPERIMENT, rundir.COMPARISON, rundir.SWEEP_CSV, rundir.SWEEP_LOCK]  # `.lock` is also a reserved suffix


def test_no_other_module_spells_a_result_file_name():
    spelled = re.compile("([\"'])(" + "|".join(map(re.escape, NAMES)) + ")\\1")
    found = [f"{path.relative_to(TRX)}:{n}" for path in sorted(TRX.rglob("*.py")) if path.name != "rundir.py"
             for n, line in enumerate(path.read_text().splitlines(), 1) if spelled.search(line)]
    assert found == []


def test_cell_json_round_trips_and_a_damaged_one_reads_as_none(tmp_path):
    meta = CellMeta("x", "adam", 3, {"optimizers.adam.lr": 0.01}, "lr=0.01,seed=3")
    run = RunDir(tmp_path / "c")
    run.write_cell(meta)
    assert run.read_cell() == meta and CellMeta.read(tmp_path / "c") == meta
    assert run.read_cell().short == {"lr": 0.01}
    run.cell.write_text('{"name": "x", "arm": "adam"}')  # no seed
    assert run.read_cell() is None


@pytest.mark.parametrize("status, finished", [(s, s in (Status.COMPLETE, Status.DIVERGED)) for s in Status])
def test_only_complete_and_diverged_runs_are_finished(tmp_path, status, finished):
    run = RunDir(tmp_path)
    run.write_summary({"arm": "a", "status": status})
    assert (run.finished_summary() is not None) == finished
    assert run.read_summary()["status"] == status.value  # written as its plain text


def test_writes_replace_a_planted_link_and_reads_refuse_one(tmp_path):
    target = tmp_path / "elsewhere.json"
    target.write_text("{}")
    run = RunDir(tmp_path / "run")
    run.path.mkdir()
    run.summary.symlink_to(target)
    with pytest.raises(UserError, match="symbolic link"):
        run.refuse_links()
    run.write_summary({"status": "complete"})
    assert target.read_text() == "{}" and not run.summary.is_symlink()


def test_finding_runs_needs_a_summary_and_counts_each_folder_once(tmp_path):
    for arm in ("a", "b"):
        RunDir(tmp_path / "exp" / arm).write_summary({"arm": arm, "status": "complete"})
    found = find_run_dirs([tmp_path / "exp", tmp_path / "exp" / "a", tmp_path / "exp" / "a" / rundir.SUMMARY])
    assert sorted(r.path.name for r in found) == ["a", "b"]
    (tmp_path / "empty").mkdir()
    with pytest.raises(UserError, match="no summary.json"):
        find_run_dirs([tmp_path / "empty"])


def test_a_folder_holding_a_sweep_says_so(tmp_path):
    exp = ExperimentDir(tmp_path / "exp")
    assert RunDir(exp.path).holds_sweep() is None
    exp.sweep.path.mkdir(parents=True)
    assert RunDir(exp.path).holds_sweep() == rundir.SWEEP


def test_yaml_files_of_a_run_have_one_reader_with_one_contract(tmp_path):
    """Missing: None (the run has not started). Present: its mapping, or a UserError naming the
    file, as for a config the user passes (one reader, `trx.io.read_yaml`)."""
    run = RunDir(tmp_path)
    assert run.read_config() is None
    run.write_config({"name": "x", "optimizers": {"a": {"lr": 0.1}}})
    assert run.read_config() == {"name": "x", "optimizers": {"a": {"lr": 0.1}}}
    run.config.write_text("a: 1\na: 2\n")  # a duplicate key, refused like in a config
    with pytest.raises(UserError, match=r"RUN_DIR: .*config.yaml: duplicate key 'a'"):
        run.read_config()


# ---- metrics.csv: one reader -----------------------------------------------------------------
def test_metrics_read_as_typed_rows_repaired_as_a_crash_leaves_them(tmp_path):
    """Reports see what a resume keeps: steps as ints, blanks as None, a duplicated step once
    (the last), and no half-written last row (its cut value would read as a wrong number)."""
    run = RunDir(tmp_path)
    run.metrics.write_text("step,loss,val_loss\n0,2.5,2.75\n10,1.5,\n10,1.25,\n20,0.123")
    assert run.read_metrics() == [{"step": 0, "loss": 2.5, "val_loss": 2.75}, {"step": 10, "loss": 1.25, "val_loss": None}]
    assert all(type(row["step"]) is int for row in run.read_metrics())
    assert run.last_metrics() == {"step": 10, "loss": 1.25, "val_loss": None}


def test_a_value_that_is_not_a_number_is_refused_with_its_file(tmp_path):
    run = RunDir(tmp_path)
    run.metrics.write_text("step,loss\n0,2.5\n10,lots\n")
    with pytest.raises(UserError, match=r"metrics.csv: .lots. under loss is not a number"):
        run.read_metrics()
    assert run.last_metrics() is None  # progress polling never raises


def test_the_last_row_of_a_long_metrics_file_is_read_from_its_tail(tmp_path):
    run = RunDir(tmp_path)
    assert run.read_metrics() == [] and run.last_metrics() is None  # not started
    run.metrics.write_text("step,loss\n")
    assert run.last_metrics() is None  # no row yet
    run.metrics.write_text("step,loss\n" + "".join(f"{s},{1 / (s + 1)!r}\n" for s in range(20_000)) + "20000,0.5")
    assert run.last_metrics() == {"step": 19_999, "loss": 1 / 20_000}
    assert run.read_metrics()[-1] == run.last_metrics()


def test_only_the_run_folder_reads_metrics_csv():
    """`trx.io` parses metrics.csv; only `trx.rundir` calls its readers, no module but io parses
    CSV itself, and none opens the file by hand (the runner writes through io's MetricsWriter)."""
    readers = re.compile(r"\b(metrics_rows|read_metrics|last_metrics_row)\b")
    by_hand = re.compile(r"^\s*(import csv|from csv )|\.metrics\.(open|read_text|read_bytes)\(")
    found = [f"{path.relative_to(TRX)}:{n}" for path in sorted(TRX.rglob("*.py")) if path.name not in ("rundir.py", "io.py")
             for n, line in enumerate(path.read_text().splitlines(), 1)
             if by_hand.search(line) or ("import" in line and readers.search(line))]
    assert found == []
