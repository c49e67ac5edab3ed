"""Executors chosen by name (`--executor inprocess | local:N | ray:ADDRESS`), each registered
one: every name builds, bad specs are one-line errors, and `trx run` runs on any of them."""

from __future__ import annotations

import csv
from pathlib import Path

import pytest
import yaml
from typer.testing import CliRunner

from trx.cli import app
from trx.errors import UserError
from trx.executors import EXECUTORS, InProcess, LocalProcesses, make_executor

QUAD = {"name": "q", "steps": 10, "log_every": 2, "eval_every": 0, "seeds": 2, "task": {"name": "quadratic1d"},
        "optimizers": {"gd": {"lr": 0.1}, "hb": {"lr": 0.1, "filter": {"name": "heavy_ball", "beta": 0.5}}}}


def test_every_registered_executor_builds_from_its_spec():
    make_executor("inprocess")  # registers the executors found beside it
    specs = {"inprocess": "inprocess", "local": "local:2", "ray": "ray:local"}
    assert set(EXECUTORS) >= set(specs)
    for name, kind in EXECUTORS.items():
        assert kind.description, name
        built = make_executor(specs.get(name, name))
        assert callable(getattr(built, "run")), name
    assert isinstance(make_executor("local:1"), InProcess) and isinstance(make_executor("local:2"), LocalProcesses)


@pytest.mark.parametrize("spec, message", [("slurm", "no executor named 'slurm'"), ("local:two", "expected a number"),
                                           ("local:0", "must be ≥ 1"), ("inprocess:3", "takes no argument")])
def test_a_bad_executor_spec_is_a_one_line_error(spec, message):
    with pytest.raises(UserError, match=message):
        make_executor(spec)


def _metrics(folder: Path) -> list[dict[str, str]]:
    with (folder / "metrics.csv").open() as f:
        return [{k: v for k, v in r.items() if k != "wall_time"} for r in csv.DictReader(f)]


def test_trx_run_gives_the_same_results_on_any_executor(tmp_path):
    path = tmp_path / "q.yaml"
    path.write_text(yaml.safe_dump(QUAD))
    for spec in ("inprocess", "local:2"):
        res = CliRunner().invoke(app, ["run", str(path), "--out", str(tmp_path / spec), "--executor", spec])
        assert res.exit_code == 0, res.output
    for arm in ("gd", "hb"):
        for seed in (0, 1):
            one, two = (_metrics(tmp_path / spec / "q" / arm / f"seed={seed}") for spec in ("inprocess", "local:2"))
            assert one == two and [r["step"] for r in one] == ["0", "2", "4", "6", "8", "9", "10"]
    res = CliRunner().invoke(app, ["run", str(path), "--out", str(tmp_path / "x"), "--executor", "local:2", "--jobs", "2"])
    assert res.exit_code == 2 and "--executor and --jobs exclude each other" in res.output
