"""`trx compare`: run folders found on disk, means over seeds, steps to a target, the
learning-rate tolerance on hand-made sweeps, the three formats, bad input."""

from __future__ import annotations

import csv
import io
import json
import math
from pathlib import Path
from typing import Any

import pytest
import yaml
from typer.testing import CliRunner

from trx.cli import app
from trx.compare import find_runs, lr_table, split_cell_id, steps_to_target, value_text


def write_run(folder: Path, arm: str, final_loss: float | None, *, seed: int = 0, lr: float | None = None,
              status: str = "complete", name: str = "hand", losses: list[float] | None = None,
              val: dict[str, float] | None = None, wall: float = 1.0, short: dict[str, Any] | None = None) -> Path:
    """A run folder as the runner writes it: summary.json, metrics.csv, config.yaml, cell.json
    (`short`: the grid values of a sweep cell, keys below the arm)."""
    folder.mkdir(parents=True, exist_ok=True)
    diverged = status == "diverged"
    summary: dict[str, Any] = {"name": name, "arm": arm, "task": "logreg", "status": status, "steps": 30,
                               "steps_done": 30, "final_loss": final_loss, "best_loss": final_loss,
                               "first_loss": 2.0, "diverged": diverged, "diverged_at": 20 if diverged else None,
                               "wall_time_s": wall, "seed": seed, "loss_unit": "nats"}
    summary.update({f"final_{k}": v for k, v in (val or {}).items()})
    (folder / "summary.json").write_text(json.dumps(summary))
    losses = losses or [2.0, 1.0, final_loss if final_loss is not None else math.inf]
    rows = ["step,loss,lr"] + [f"{10 * i},{v},{lr or 0.1}" for i, v in enumerate(losses)]
    (folder / "metrics.csv").write_text("\n".join(rows) + "\n")
    config = {"name": name, "seed": seed, "optimizers": {arm: {"lr": lr if lr is not None else 0.1}}}
    (folder / "config.yaml").write_text(yaml.safe_dump(config))
    cell = None if short is None else ",".join([*(f"{k}={value_text(v)}" for k, v in short.items()), f"seed={seed}"])
    meta = {"name": name, "arm": arm, "seed": seed, "overrides": {f"optimizers.{arm}.{k}": v for k, v in (short or {}).items()},
            "cell": cell, "short": short or {}}
    (folder / "cell.json").write_text(json.dumps(meta))
    return folder


def make_sweep(root: Path, results: dict[str, dict[float, list[float | None]]], name: str = "hand") -> Path:
    """<root>/<name>/sweep/<arm>/lr=…,seed=…/ for every arm, lr and seed; None = diverged."""
    sweep = root / name / "sweep"
    for arm, by_lr in results.items():
        for lr, values in by_lr.items():
            for seed, value in enumerate(values):
                cell = sweep / arm / f"lr={lr:.4g},seed={seed}"
                write_run(cell, arm, value if value is not None else 1e6, seed=seed, lr=lr,
                          status="complete" if value is not None else "diverged", name=name, short={"lr": lr},
                          val={"val_loss": (value or 1e6) + 0.05, "val_acc": 1.0 - (value or 1.0) / 2})
    return sweep


RESULTS = {
    # lr:            seed 0, seed 1       mean
    "adamw": {1e-4: [1.00, 1.00],          # 1.0
              1e-3: [0.21, 0.23],          # 0.22  within 10% of 0.20
              1e-2: [0.19, 0.21],          # 0.20  best
              1e-1: [0.21, 0.21],          # 0.21  within
              1.0: [0.15, None]},          # diverged in one seed: diverged
    "muon": {1e-3: [0.5, 0.5], 1e-2: [0.3, 0.3], 1e-1: [0.1, 0.1]},  # best at the high edge
}


def compare_cli(*args: str):
    return CliRunner().invoke(app, ["compare", *args], env={"COLUMNS": "200"})


def parse_csv(text: str) -> list[list[dict[str, str]]]:
    return [list(csv.DictReader(io.StringIO(block))) for block in text.strip().split("\n\n")]


def _edge(x_in: float, s_in: float, x_out: float, s_out: float, thr: float) -> float:
    """Where a score linear in log10(lr) crosses `thr` between a grid point inside and one outside."""
    return 10 ** (x_in + (s_in - thr) / (s_in - s_out) * (x_out - x_in))


# ---- the tolerance on a hand-made sweep (the band itself: tests/test_stats.py) -----------------
def test_lr_table_of_a_hand_made_sweep_interpolates_edges_and_flags_them(tmp_path):
    runs = find_runs([make_sweep(tmp_path, RESULTS)])
    table = lr_table(runs, "loss", 0.1).set_index("arm")
    adamw, muon = table.loc["adamw"], table.loc["muon"]
    assert adamw["best_lr"] == 1e-2 and adamw["best_loss"] == pytest.approx(0.20)
    # improvement over the initial loss 2.0: 1.0, 1.78, 1.80 (best), 1.79, diverged → 0; band ≥ 1.62
    assert adamw["tolerant_lr_lo"] == pytest.approx(_edge(-3, 1.78, -4, 1.0, 1.62))
    assert adamw["tolerant_lr_hi"] == pytest.approx(_edge(-1, 1.79, 0, 0.0, 1.62))
    assert adamw["tolerance_decades"] == pytest.approx(math.log10(adamw["tolerant_lr_hi"] / adamw["tolerant_lr_lo"]))
    assert adamw["diverged_lrs"] == "1/5" and adamw["note"] == "2 seeds: the width interval is only 50%"
    lo, hi = adamw["seed_decades_ci_lo"], adamw["seed_decades_ci_hi"]  # the two seeds' own bands
    assert lo < adamw["seed_decades"] < hi and adamw["ci_conf"] == pytest.approx(0.5)
    # muon: 1.5, 1.7, 1.9 (best, at the high edge); band ≥ 1.71 starts just below 0.1
    assert muon["best_lr"] == 0.1 and muon["tolerant_lr_hi"] == 0.1
    assert muon["tolerant_lr_lo"] == pytest.approx(_edge(-1, 1.9, -2, 1.7, 1.71))
    assert muon["tolerance_decades"] == pytest.approx(0.95)
    assert "best at the high edge" in muon["note"] and "width is a lower bound" in muon["note"]
    narrow = lr_table(runs, "loss", 0.005).set_index("arm").loc["adamw"]  # ≥ 1.791: 1e-1 (1.79) is out
    assert narrow["tolerant_lr_hi"] == pytest.approx(_edge(-2, 1.80, -1, 1.79, 1.791))
    acc = lr_table(runs, "val_acc", 0.1).set_index("arm").loc["adamw"]
    assert acc["best_lr"] == 1e-2 and acc["best_val_acc"] == pytest.approx(0.9)


def test_cell_ids_split_back_into_keys():
    assert split_cell_id("lr=0.01,schedule.warmup=0,seed=1") == [("lr", "0.01"), ("schedule.warmup", "0"), ("seed", "1")]
    assert split_cell_id("filter.b=[1,0.5],seed=0") == [("filter.b", "[1,0.5]"), ("seed", "0")]


def test_steps_to_target_reads_metrics_csv(tmp_path):
    run = find_runs([write_run(tmp_path / "a", "a", 0.1, losses=[2.0, 0.8, 0.4, 0.1])])[0]
    assert steps_to_target(run, "loss", 0.5) == 20 and steps_to_target(run, "loss", 0.01) is None


# ---- through the command line -----------------------------------------------------------------
def test_compare_csv_of_a_sweep_has_cells_then_lr_tolerance(tmp_path):
    res = compare_cli(str(make_sweep(tmp_path, RESULTS)), "--format", "csv", "--target", "0.5", "--metric", "loss")
    assert res.exit_code == 0, res.output
    assert res.stderr.strip() == "judged by final loss"  # stdout stays plain CSV
    cells, lrs = parse_csv(res.stdout)
    by_run = {r["run"]: r for r in cells}
    assert len(cells) == 8 and by_run["adamw lr=0.01"]["seeds"] == "2"
    assert float(by_run["adamw lr=0.01"]["final_loss"]) == pytest.approx(0.20)
    assert float(by_run["adamw lr=0.01"]["final_loss_std"]) == pytest.approx(math.sqrt(2) * 0.01)
    assert by_run["adamw lr=1"]["diverged"] == "1/2" and by_run["adamw lr=1"]["status"] == "complete 1/2, diverged 1/2"
    assert by_run["adamw lr=0.01"]["steps_to_target"] == "20.0" and by_run["adamw lr=0.0001"]["reached"] == "0/2"
    best = by_run["adamw lr=0.01"]
    assert float(best["final_loss_ci_lo"]) < 0.20 < float(best["final_loss_ci_hi"])
    assert [r["arm"] for r in lrs] == ["adamw", "muon"]
    assert float(lrs[0]["tolerance_decades"]) == pytest.approx(2.30, abs=0.01)
    assert float(lrs[0]["seed_decades_ci_lo"]) <= float(lrs[0]["seed_decades"])


def test_compare_md_pastes_into_a_report(tmp_path):
    res = compare_cli(str(make_sweep(tmp_path, RESULTS)), "--format", "md", "--metric", "val_loss")
    assert res.exit_code == 0, res.output
    lines = res.output.splitlines()
    assert lines[0] == "runs, judged by final val_loss (mean ± sd over seeds):"
    lines = lines[2:]
    assert lines[0].startswith("| run | seeds | status |") and lines[1].startswith("|---|---:|---|")
    assert "| adamw lr=0.01 | 2 | complete | 0.2 ± 0.014 |" in res.output
    assert "learning-rate tolerance (final val_loss; band: ≥ 90% of the best lr's improvement" in res.output
    assert "| muon | 3 | 2 | 0.1 | 0.15 ± 0 |" in res.output


def test_compare_table_of_experiment_and_arm_folders(tmp_path):
    write_run(tmp_path / "exp" / "sgd", "sgd", 0.3, name="exp", val={"val_loss": 0.35})
    write_run(tmp_path / "exp" / "adam", "adam", 0.2, name="exp", val={"val_loss": 0.25})
    write_run(tmp_path / "other" / "adam", "adam", 0.1, name="other")
    res = compare_cli(str(tmp_path / "exp"), str(tmp_path / "other" / "adam"), str(tmp_path / "exp" / "sgd"))
    assert res.exit_code == 0, res.output
    assert "exp/adam" in res.output and "exp/sgd" in res.output and "other/adam" in res.output
    assert res.output.count("exp/sgd") == 1 and "learning-rate tolerance" not in res.output


def test_compare_judges_by_the_validation_loss_by_default_as_run_sweep_and_report_do(tmp_path):
    sweep = make_sweep(tmp_path, {"adamw": {1e-3: [0.3, 0.3], 1e-2: [0.2, 0.2], 1e-1: [0.1, 0.1]}})
    for run in sweep.rglob("summary.json"):  # the train loss prefers the larger lr, the held-out loss the smaller
        summary = json.loads(run.read_text())
        summary["final_val_loss"] = 0.4 if "lr=0.001," in str(run) else 0.5
        run.write_text(json.dumps(summary))
    res = compare_cli(str(sweep), "--format", "csv")
    assert res.exit_code == 0, res.output
    assert res.stderr.strip() == "judged by final val_loss"
    cells, lrs = parse_csv(res.stdout)
    assert lrs[0]["best_lr"] == "0.001" and "final_val_loss_ci_lo" in cells[0]
    table = compare_cli(str(sweep))
    assert "judged by final val_loss" in table.output
    by_loss = compare_cli(str(sweep), "--metric", "loss", "--format", "csv")
    assert by_loss.stderr.strip() == "judged by final loss" and parse_csv(by_loss.stdout)[1][0]["best_lr"] == "0.1"


@pytest.mark.parametrize(
    ("args", "message"),
    [
        (["{tmp}/nope"], "no such file or folder"),
        (["{tmp}/empty"], "no summary.json in or below"),
        (["{tmp}/sweep", "--format", "xml"], "--format: must be table, csv or md"),
        (["{tmp}/sweep", "--metric", "bleu"], "--metric bleu: no run has it"),
        (["{tmp}/sweep", "--tolerance", "-1"], "--tolerance: must be ≥ 0"),
    ],
)
def test_bad_input_is_exit_2_with_one_line(tmp_path, args, message):
    (tmp_path / "empty").mkdir()
    write_run(tmp_path / "sweep" / "a", "a", 0.1)
    res = compare_cli(*[a.format(tmp=tmp_path) for a in args])
    assert res.exit_code == 2
    assert message in res.output and "Traceback" not in res.output


def test_a_damaged_metrics_csv_is_refused_naming_it(tmp_path):
    """Damage no crash leaves is one line naming the file, not a run silently without curves."""
    folder = write_run(tmp_path / "sweep" / "a", "a", 0.1)
    (folder / "metrics.csv").write_text("step,loss,lr\n0,2.0,0.1\n10,1.0\n")
    res = compare_cli(str(tmp_path / "sweep"), "--metric", "loss", "--target", "0.5")
    assert res.exit_code == 2 and "metrics.csv: line 3 is damaged" in res.output and "Traceback" not in res.output
