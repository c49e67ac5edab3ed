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
