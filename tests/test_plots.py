"""`trx plot`: every kind writes a non-empty PNG from hand-made run folders; bad input exits 2."""

from __future__ import annotations

from pathlib import Path

import pytest
from test_compare import RESULTS, make_sweep, write_run
from typer.testing import CliRunner

from trx.cli import app

PNG = b"\x89PNG\r\n\x1a\n"


def plot_cli(*args: str):
    return CliRunner().invoke(app, ["plot", *args], env={"COLUMNS": "200"})


def warmup_sweep(root: Path) -> Path:
    """Cells of two arms with and without warmup, two seeds, falling losses, one diverged."""
    sweep = root / "ab" / "sweep"
    for arm in ("adamw", "muon"):
        for warmup in ("0", "0.05"):
            for seed in (0, 1):
                scale = 1.0 if warmup == "0" else 0.8
                losses = [2.0 * scale ** (i / 2) / (1 + i) for i in range(8)]
                diverged = arm == "muon" and warmup == "0" and seed == 1
                write_run(sweep / arm / f"lr=0.01,schedule.warmup={warmup},seed={seed}", arm, losses[-1], seed=seed,
                          lr=0.01, name="ab", losses=losses + ([500.0] if diverged else []),
                          status="diverged" if diverged else "complete")
    return sweep


@pytest.mark.parametrize("kind", ["curves", "lr", "schedule", "warmup"])
def test_each_kind_writes_a_png(tmp_path, kind):
    sweep = warmup_sweep(tmp_path) if kind == "warmup" else make_sweep(tmp_path, RESULTS)
    out = tmp_path / "figs" / f"{kind}.png"
    res = plot_cli(str(sweep), "--kind", kind, "--out", str(out))
    assert res.exit_code == 0, res.output
    assert out.read_bytes()[:8] == PNG and out.stat().st_size > 10_000


def test_default_output_is_beside_the_first_folder_and_val_curves_are_drawn(tmp_path):
    write_run(tmp_path / "exp" / "sgd", "sgd", 0.3, name="exp", val={"val_loss": 0.35})
    (tmp_path / "exp" / "sgd" / "metrics.csv").write_text("step,loss,lr,val_loss\n0,2.0,0.1,2.1\n10,0.5,0.1,\n20,0.3,0.1,0.4\n")
    res = plot_cli(str(tmp_path / "exp"))
    assert res.exit_code == 0, res.output
    assert (tmp_path / "exp" / "curves.png").read_bytes()[:8] == PNG


@pytest.mark.parametrize(
    ("args", "message"),
    [
        (["{tmp}/exp", "--kind", "pie"], "--kind: must be one of curves, lr, schedule, warmup"),
        (["{tmp}/exp", "--out", "{tmp}/fig.jpg"], "--out: expected a .png file"),
        (["{tmp}/missing"], "no such file or folder"),
        (["{tmp}/exp", "--kind", "lr"], "--kind lr: needs sweep cells with a learning rate"),
    ],
)
def test_bad_input_is_exit_2(tmp_path, args, message):
    write_run(tmp_path / "exp" / "sgd", "sgd", 0.3, name="exp")
    res = plot_cli(*[a.format(tmp=tmp_path) for a in args])
    assert res.exit_code == 2 and message in res.output
