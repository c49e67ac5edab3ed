"""The boundary search (`sweep.boundary`): the bisection planner as a pure function, the search
end to end on the quadratic (whose divergence boundary is known in closed form), resume, bad
configs, and the boundary claim's test on synthetic brackets."""

from __future__ import annotations

import csv
import math
from pathlib import Path
from typing import Any

import numpy as np
import pytest
import yaml
from typer.testing import CliRunner

import trx
from trx.boundary import Bracket, Probe, boundary_difference, bracket, brackets, plan_probes, unstable_flags
from trx.cli import app
from trx.stats import CONTRADICTED, INCONCLUSIVE, SUPPORTED
from trx.stop import StopFlag

GRID = [0.1, 1.0, 10.0]
RULE = {"max_metric": 0.5, "within": None}


def probe(lr: float, seed: int = 0, loss: float = 0.1, arm: str = "gd", **summary: Any) -> Probe:
    return Probe(arm, (), seed, lr, {"status": "complete", "final_loss": loss, **summary})


def series(*flags: tuple[float, bool], seed: int = 0) -> list[Probe]:
    """Probes at the given lrs, unstable ones diverged."""
    return [probe(lr, seed, diverged=bad, status="diverged" if bad else "complete") for lr, bad in flags]


# ---- the planner -----------------------------------------------------------------------------
def test_the_first_probe_is_the_geometric_mean_of_the_coarse_bracket():
    probes = series((0.1, False), (1.0, False), (10.0, True))
    assert plan_probes(probes, {"gd": GRID}, RULE, 3) == [("gd", (), 0, float(f"{math.sqrt(10):.12g}"))]


def test_each_probe_narrows_the_bracket_and_the_search_stops_after_its_bisections():
    probes = series((0.1, False), (1.0, False), (10.0, True))
    made = []
    for _ in range(5):  # a boundary at lr 2: stable below it
        nxt = plan_probes(probes, {"gd": GRID}, RULE, 3)
        if not nxt:
            break
        lr = nxt[0][3]
        made.append(lr)
        probes += series((lr, lr > 2.0))
    assert len(made) == 3
    found = brackets(probes, RULE)[("gd", (), 0)]
    assert found.stable < 2.0 < found.unstable and found.status == "closed"
    assert math.log10(found.unstable / found.stable) == pytest.approx(1 / 8)  # one decade halved 3 times


def test_open_and_censored_boundaries_are_not_bisected():
    every = series((0.1, False), (1.0, False), (10.0, False))
    none = series((0.1, True), (1.0, True), (10.0, True))
    assert plan_probes(every, {"gd": GRID}, RULE, 3) == [] and plan_probes(none, {"gd": GRID}, RULE, 3) == []
    assert brackets(every, RULE)[("gd", (), 0)] == Bracket(10.0, None)
    assert brackets(none, RULE)[("gd", (), 0)] == Bracket(None, 0.1)
    assert Bracket(10.0, None).text() == "> 10" and Bracket(None, 0.1).text() == "< 0.1"


def test_the_bracket_is_the_first_failure_above_the_lowest_stable_point():
    assert bracket({0.1: True, 1.0: False, 3.0: False, 10.0: True, 30.0: False}) == Bracket(3.0, 10.0)


def test_per_all_a_point_is_stable_only_when_every_seed_is():
    probes = series((0.1, False), (1.0, False), (10.0, True), seed=0) + series((0.1, False), (1.0, True), (10.0, True), seed=1)
    assert plan_probes(probes, {"gd": GRID}, RULE, 3, per="all") == [("gd", (), None, float(f"{math.sqrt(0.1):.12g}"))]
    per_seed = plan_probes(probes, {"gd": GRID}, RULE, 3, per="seed")
    assert [(seed, round(lr, 4)) for _, _, seed, lr in per_seed] == [(0, 3.1623), (1, 0.3162)]


def test_the_rule_bounds_the_final_metric_and_counts_stalls():
    by_lr = {0.1: {"final_loss": 0.2}, 1.0: {"final_loss": 0.21}, 2.0: {"final_loss": 0.4},
             3.0: {"final_loss": 0.6}, 4.0: {"final_loss": 0.1, "stalled": True}}
    assert unstable_flags(by_lr, {"max_metric": 0.5}) == {0.1: False, 1.0: False, 2.0: False, 3.0: True, 4.0: True}
    within = unstable_flags(by_lr, {"within": 0.1})
    assert within == {0.1: False, 1.0: False, 2.0: True, 3.0: True, 4.0: True}  # best 0.2: above 0.22 fails
    assert unstable_flags({1.0: {"final_val_loss": 0.9, "final_loss": 0.1}}, {"max_metric": 0.5}) == {1.0: True}


# ---- end to end -------------------------------------------------------------------------------
def quad(**over: Any) -> dict[str, Any]:
    cfg: dict[str, Any] = {
        "name": "qb", "seed": 0, "steps": 100, "eval_every": 0, "log_every": 10, "divergence_threshold": 1.0e6,
        "task": {"name": "quadratic1d", "curvature": 1.0, "init": 1.0, "noise": 0.0},
        "optimizers": {"gd": {"lr": 0.5}, "hb": {"lr": 0.5, "filter": {"name": "heavy_ball", "beta": 0.5}}},
        "sweep": {"grid": {"optimizers.*.lr": {"log": [0.1, 10], "num": 3}}, "seeds": [0, 1],
                  "boundary": {"bisections": 4, "stable": {"max_metric": 0.5}}},
        "claims": [{"text": "heavy ball's boundary is higher", "kind": "boundary", "a": {"arm": "hb"},
                    "b": {"arm": "gd"}, "expect": "a_higher"}],
    }
    cfg.update(over)
    return cfg


def write(tmp_path: Path, data: dict[str, Any]) -> Path:
    path = tmp_path / "qb.yaml"
    path.write_text(yaml.safe_dump(data, sort_keys=False))
    return path


def sweep_cli(*args: str):
    return CliRunner().invoke(app, ["sweep", *args], env={"COLUMNS": "200"})


def boundary_csv(out: Path) -> list[dict[str, str]]:
    with (out / "qb" / "sweep" / "boundary.csv").open() as f:
        return list(csv.DictReader(f))


def cells(out: Path) -> set[str]:
    return {str(p.parent.relative_to(out)) for p in out.rglob("summary.json")}


def test_the_search_brackets_the_closed_form_divergence_boundary_and_reports_it(tmp_path):
    """f = ½w², λ = 1: gradient descent diverges above lr 2; heavy ball (β = ½) above 2(1 + β) = 3.
    With the rule "final loss ≤ the initial ½", a run is stable exactly below those lrs."""
    out = tmp_path / "runs"
    res = sweep_cli(str(write(tmp_path, quad())), "--out", str(out))
    assert res.exit_code == 0, res.output
    assert "12 cells (gd, hb) + at most 16 boundary probes" in res.output and "stability boundary" in res.output
    rows = boundary_csv(out)
    assert len(rows) == 4 and {r["status"] for r in rows} == {"closed"}
    for row in rows:
        limit = {"gd": 2.0, "hb": 3.0}[row["arm"]]
        assert float(row["lr_stable"]) < limit < float(row["lr_unstable"]), row
        assert math.log10(float(row["lr_unstable"]) / float(row["lr_stable"])) == pytest.approx(1 / 16)
        assert row["lrs_probed"] == "7"  # 3 coarse + 4 bisections
    assert (out / "qb" / "sweep" / "gd" / "lr=2.054,seed=1" / "cell.json").exists()  # a probe is an ordinary cell

    report = CliRunner().invoke(app, ["report", str(out / "qb" / "sweep")])
    assert report.exit_code == 0, report.output
    text = (out / "qb" / "sweep" / "report.md").read_text()
    assert "## Stability boundary" in text and "0: [1.778, 2.054); 1: [1.778, 2.054)" in text
    assert "largest stable lr hb / gd = ×1.54" in text  # 2.738 / 1.778, every seed alike: 2 seeds cannot decide
    assert "![Largest stable lr per seed](report_boundary.png)" in text
    assert (out / "qb" / "sweep" / "report_boundary.png").read_bytes()[:4] == b"\x89PNG"
    from trx.compare import find_runs
    from trx.plots import grid_runs

    runs = find_runs([out / "qb" / "sweep"])
    assert len(grid_runs(runs)) == 12 < len(runs)  # the curves and warmup figures draw the grid, not each probe
    assert grid_runs([r for r in runs if r.probe]) != []  # only probes: they are all there is to draw


def test_the_boundary_figure_draws_every_kind_of_bracket_and_only_for_a_boundary_sweep(tmp_path):
    from trx.boundary import Bracket
    from trx.report_boundary import boundary_figures, draw_boundary

    found = {("gd", ()): {0: Bracket(1.0, 2.0), 1: Bracket(2.0, None), 2: Bracket(None, 0.5),
                          3: Bracket(1.0, 2.0, incomplete=True)},
             ("hb", (("schedule.warmup", "0.05"),)): {0: Bracket(None, None)}}
    path = tmp_path / "b.png"
    draw_boundary(found, path)
    assert path.read_bytes()[:4] == b"\x89PNG"
    assert boundary_figures([], None, tmp_path / "report.md") == []  # no sweep.boundary: no figure
    assert boundary_figures([], {"bisections": 2}, tmp_path / "report.md") == []  # no probes: none
    assert not (tmp_path / "report_boundary.png").exists()


def test_an_interrupted_search_resumes_to_the_same_cells(tmp_path):
    path = write(tmp_path, quad(optimizers={"gd": {"lr": 0.5}}, claims=[]))
    whole = tmp_path / "whole"
    trx.sweep(path, out=whole)
    stop, done = StopFlag(), []

    def notify(kind: str, job: Any, result: Any) -> None:
        done.append(kind)
        if done.count("done") == 8:  # inside the probe rounds: coarse is 6 cells
            stop.requested = True

    cut = tmp_path / "cut"
    assert trx.sweep(path, out=cut, notify=notify, stop=stop).interrupted  # the next round found the stop
    assert 8 == len(cells(cut)) < len(cells(whole)) and not (cut / "qb" / "sweep" / "boundary.csv").exists()
    again = trx.sweep(path, out=cut)
    assert not again.interrupted
    assert {p.replace("cut", "") for p in cells(cut)} == {p.replace("whole", "") for p in cells(whole)}
    assert boundary_csv(cut) == boundary_csv(whole)


@pytest.mark.parametrize("change, message", [
    ({"grid": {"optimizers.gd.lr": [0.1, 1.0], "steps": [10, 20]}},
     "sweep.boundary: arm hb needs an lr axis of numbers > 0 in sweep.grid"),
    ({"boundary": {"bisections": -1}}, "sweep.boundary.bisections"),
])
def test_a_bad_boundary_config_is_one_line_exit_2_and_writes_nothing(tmp_path, change, message):
    cfg = quad()
    cfg["sweep"] = {**cfg["sweep"], **change}
    out = tmp_path / "runs"
    res = sweep_cli(str(write(tmp_path, cfg)), "--out", str(out))
    assert res.exit_code == 2 and message in res.output and "Traceback" not in res.output
    assert not out.exists()


def test_dry_run_counts_cells_and_probes_and_writes_nothing(tmp_path):
    out = tmp_path / "runs"
    res = sweep_cli(str(write(tmp_path, quad())), "--out", str(out), "--dry-run")
    assert res.exit_code == 0 and "12 cells (gd, hb) + at most 16 boundary probes" in res.output
    assert not out.exists()


# ---- the claim ---------------------------------------------------------------------------------
def brackets_at(lows: list[float], step: float = 10 ** (1 / 8)) -> dict[int, Bracket]:
    return {s: Bracket(lo, lo * step) for s, lo in enumerate(lows)}


def test_a_real_difference_in_boundary_is_supported_and_a_null_is_not():
    rng = np.random.default_rng(0)
    b = [float(10 ** rng.normal(-2, 0.05)) for _ in range(6)]
    higher = brackets_at([x * 2.0 * float(10 ** rng.normal(0, 0.03)) for x in b])
    same = brackets_at([x * 10 ** (0.02 * (-1) ** i) for i, x in enumerate(b)])  # ±0.02 decades, mean 0
    p = boundary_difference(higher, brackets_at(b))
    assert p.verdict == SUPPORTED and p.mean_diff == pytest.approx(math.log10(2), abs=0.05)
    assert boundary_difference(brackets_at(b), higher).verdict == CONTRADICTED
    assert boundary_difference(same, brackets_at(b)).verdict == INCONCLUSIVE
    assert boundary_difference(same, brackets_at(b), delta=0.1, equivalent=True).verdict == SUPPORTED
    assert boundary_difference(higher, brackets_at(b), delta=0.1, equivalent=True).verdict != SUPPORTED


def test_under_the_null_the_claim_is_supported_at_about_its_level():
    rng = np.random.default_rng(1)
    hits = 0
    for _ in range(400):  # 6 seeds, equal boundaries up to seed noise
        b = [float(10 ** rng.normal(-2, 0.1)) for _ in range(6)]
        a = [x * float(10 ** rng.normal(0, 0.1)) for x in b]
        hits += boundary_difference(brackets_at(a), brackets_at(b)).verdict == SUPPORTED
    assert hits / 400 < 0.05  # one-sided 2.5%: about 10 of 400


def test_an_open_boundary_on_the_side_that_should_be_lower_keeps_the_claim_inconclusive():
    lows = [0.01, 0.011, 0.0105, 0.0098, 0.0102, 0.0099]
    b = brackets_at(lows)
    b[0] = Bracket(0.01, None)  # every lr stable for seed 0: its boundary may lie far above
    a = brackets_at([x * 3 for x in lows])
    p = boundary_difference(a, b)
    assert p.verdict == INCONCLUSIVE and "b open" in p.note
    assert boundary_difference(a, brackets_at(lows)).verdict == SUPPORTED


def test_per_all_probes_every_seed_at_one_lr_and_writes_one_row(tmp_path):
    cfg = quad(optimizers={"gd": {"lr": 0.5}}, claims=[],
               task={"name": "quadratic1d", "curvature": 1.0, "init": 1.0, "noise": 0.1})
    cfg["sweep"]["boundary"] = {"bisections": 2, "per": "all", "stable": {"max_metric": 0.5}}
    out = tmp_path / "runs"
    assert not trx.sweep(write(tmp_path, cfg), out=out).interrupted
    [row] = boundary_csv(out)
    assert row["seed"] == "all" and float(row["lr_stable"]) < 2.0 < float(row["lr_unstable"])
    lrs = {}
    for cell in cells(out):
        lr, seed = cell.split("/")[-1].split(",")
        lrs.setdefault(lr, set()).add(seed)
    assert len(lrs) == 5 and all(seeds == {"seed=0", "seed=1"} for seeds in lrs.values())


def test_a_series_with_a_crashed_cell_is_incomplete_not_closed_and_stays_out_of_claims(tmp_path):
    from test_compare import write_run

    from trx.compare import find_runs
    from trx.report_boundary import boundary_section, seed_brackets

    crashed = series((0.1, False), (10.0, True)) + [probe(1.0, status="failed", final_loss=None)]
    found = brackets(crashed, RULE)[("gd", (), 0)]
    assert found.status == "incomplete" and found.text() == "[0.1, 10) incomplete" and found.log10 is None
    assert plan_probes(crashed, {"gd": GRID}, RULE, 3) == []  # no bisection on a bracket it cannot trust
    assert brackets([probe(1.0, status="failed")], RULE)[("gd", (), 0)].status == "incomplete"
    for seed in (0, 1):  # the report reads the same from cell folders: seed 1's cell at lr 1 crashed
        for lr, loss, status in ((0.1, 0.1, "complete"), (1.0, 0.1, "complete" if seed == 0 else "failed"),
                                 (10.0, None, "diverged")):
            write_run(tmp_path / f"lr={lr},seed={seed}", "gd", loss, seed=seed, lr=lr, status=status, short={"lr": lr})
    by_seed = seed_brackets(find_runs([tmp_path]), {"stable": RULE})[("gd", ())]
    assert by_seed[0] == Bracket(1.0, 10.0) and by_seed[1].status == "incomplete"
    assert "0: [1, 10); 1: [0.1, 10) incomplete" in boundary_section(find_runs([tmp_path]), {"stable": RULE})
    assert boundary_difference(by_seed, by_seed).n == 1  # the incomplete seed is left out


def test_probe_cells_are_marked_and_stay_out_of_lr_curves_bands_and_best_lrs(tmp_path):
    from trx.claims import best_lr_runs
    from trx.compare import find_runs, lr_table
    from trx.rundir import CellMeta

    cfg = quad(optimizers={"gd": {"lr": 0.5}}, claims=[],
               task={"name": "quadratic1d", "curvature": 1.0, "init": 1.0, "noise": 0.1})
    cfg["sweep"]["boundary"]["bisections"] = 2
    grid_only = {**cfg, "sweep": {k: v for k, v in cfg["sweep"].items() if k != "boundary"}}
    tables, best = [], []
    for name, data in (("probes", cfg), ("grid", grid_only)):
        out = tmp_path / name
        assert not trx.sweep(write(tmp_path, data), out=out).interrupted
        runs = find_runs([out / "qb" / "sweep"])
        tables.append(lr_table(runs).drop(columns="arm"))
        best.append(best_lr_runs(runs, "loss", None, None))
    probed = find_runs([tmp_path / "probes" / "qb" / "sweep"])
    assert sum(r.probe for r in probed) == 4 and len(probed) == 10  # 3 grid lrs × 2 seeds + 2 probes per seed
    assert tables[0].to_dict() == tables[1].to_dict() and tables[0]["lrs"].tolist() == [3]
    assert best[0][0] == best[1][0] and [r.dir.name for r in best[0][1]] == [r.dir.name for r in best[1][1]]
    assert CellMeta.from_json({"name": "q", "arm": "gd", "seed": 0}).probe is False  # cell.json before the key


def test_a_boundary_claim_with_per_all_is_refused_naming_the_key():
    from trx.config import resolve
    from trx.errors import UserError

    cfg = quad()
    cfg["sweep"]["boundary"]["per"] = "all"
    with pytest.raises(UserError, match=r"claims.0.kind: a boundary claim pairs per-seed brackets.*per: all"):
        resolve(cfg)
    assert resolve(quad()).claims[0].kind == "boundary"
