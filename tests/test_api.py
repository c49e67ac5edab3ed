"""The Python API (`trx.run`, `trx.sweep`, `trx.load`) is what the CLI calls: the same config
through either gives the same metrics.csv, byte for byte but for the wall_time column."""

from __future__ import annotations

import csv
import io
from pathlib import Path

import pytest
import yaml
from typer.testing import CliRunner

import trx
from trx.cli import app
from trx.errors import UserError
from trx.rundir import METRICS

QUAD = {"name": "q", "steps": 12, "log_every": 3, "eval_every": 0, "task": {"name": "quadratic1d"},
        "optimizers": {"gd": {"lr": 0.1}, "hb": {"lr": 0.1, "filter": {"name": "heavy_ball", "beta": 0.5}}},
        "sweep": {"grid": {"optimizers.*.lr": [0.05, 0.1]}}}


def without_wall_time(path: Path) -> str:
    rows = list(csv.reader(io.StringIO(path.read_text())))
    at = rows[0].index("wall_time")
    return "\n".join(",".join(r[:at] + r[at + 1:]) for r in rows)


def metrics_files(root: Path) -> dict[str, str]:
    return {str(p.relative_to(root)): without_wall_time(p) for p in sorted(root.rglob(METRICS))}


@pytest.mark.parametrize("command", ["run", "sweep"])
def test_the_cli_and_the_api_write_the_same_metrics(tmp_path, command):
    path = tmp_path / "q.yaml"
    path.write_text(yaml.safe_dump(QUAD))
    res = CliRunner().invoke(app, [command, str(path), "--out", str(tmp_path / "cli")])
    assert res.exit_code == 0, res.output
    outcome = getattr(trx, command)({**QUAD}, out=tmp_path / "api")  # a dict: the same keys as the file
    assert not outcome.interrupted and all(r.finished for r in outcome.results)
    cli, api = metrics_files(tmp_path / "cli"), metrics_files(tmp_path / "api")
    assert len(cli) == (2 if command == "run" else 4) and cli == api


def test_load_reads_runs_back_typed(tmp_path):
    outcome = trx.run(str(_write(tmp_path)), out=tmp_path / "runs", overrides=["seeds=2"])
    runs = trx.load(outcome.root)
    assert sorted((r.arm, r.seed) for r in runs) == [("gd", 0), ("gd", 1), ("hb", 0), ("hb", 1)]
    assert all(r.complete and r.metrics[-1]["step"] == 12 for r in runs)


def test_a_bad_key_through_the_api_names_it(tmp_path):
    with pytest.raises(UserError, match="steps"):
        trx.run({**QUAD, "steps": 0}, out=tmp_path / "runs")
    assert not (tmp_path / "runs").exists()


def _write(tmp_path: Path) -> Path:
    path = tmp_path / "q.yaml"
    path.write_text(yaml.safe_dump(QUAD))
    return path
