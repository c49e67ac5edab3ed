"""Claim kinds steps_to_target and lr_transfer: the statistics on hand-made per-seed numbers with
known answers, the claims' config checks, and `trx report` verdicts on hand-made run folders."""

from __future__ import annotations

import json
import math
from pathlib import Path
from typing import Any

import pytest
import yaml
from test_compare import write_run

from trx.errors import UserError
from trx.report import write_report
from trx.speed_transfer import (
    best_lrs,
    log_steps,
    ratio_interval,
    seed_slopes,
    slope,
    steps_difference,
    transfer_verdict,
)
from trx.stats import CONTRADICTED, INCONCLUSIVE, SUPPORTED


# ---- statistics ---------------------------------------------------------------------------------
def test_a_seed_that_never_reaches_the_target_scores_one_step_past_the_end():
    assert log_steps(100, 300) == pytest.approx(2.0) and log_steps(None, 999) == pytest.approx(3.0)
    assert log_steps(0, 300) == 0.0  # met before training: one step


def test_steps_difference_is_a_paired_test_on_log_steps_with_a_ratio_interval():
    b = {s: math.log10(200 + 10 * s) for s in range(6)}
    a = {s: b[s] - math.log10(2) + 0.01 * (-1) ** s for s in range(6)}  # a takes half the steps, ± noise
    p = steps_difference(a, b)
    ratio, lo, hi = ratio_interval(p)
    assert p.verdict == SUPPORTED and ratio == pytest.approx(0.5, rel=0.01) and lo < 0.5 < hi < 1
    assert steps_difference(b, a).verdict == CONTRADICTED
    assert steps_difference(a, b, delta=math.log10(3)).verdict == INCONCLUSIVE  # not 3× faster
    same = steps_difference(b, dict(b))
    assert same.verdict == INCONCLUSIVE and same.mean_diff == 0


def test_best_lrs_skip_diverged_points_and_the_slope_is_exact_on_a_power_law():
    lrs = [1e-3, 1e-2, 1e-1]
    assert best_lrs(lrs, {0: [1.0, 0.5, math.nan], 1: [math.nan, 2.0, 1.0], 2: [math.inf, math.nan, math.nan]},
                    higher_better=False) == {0: 1e-2, 1: 1e-1, 2: None}
    # a crashed or missing cell (None) could have been the best: that seed has no best lr here
    assert best_lrs(lrs, {0: [None, 2.0, 1.0], 1: [2.0, 1.0]}, higher_better=False) == {0: None, 1: None}
    assert best_lrs(lrs, {0: [0.2, 0.9, 0.5]}, higher_better=True) == {0: 1e-2}
    assert slope([32, 64, 128], [4e-3, 2e-3, 1e-3]) == pytest.approx(-1.0)  # lr ∝ 1/width
    assert slope([64, 64], [1e-3, 2e-3]) is None
    best = {32: {0: 1e-2, 1: 1e-2}, 64: {0: 1e-2, 1: None}, 128: {0: 1e-2, 1: 1e-2 / 4}}
    assert seed_slopes(best) == {0: pytest.approx(0.0), 1: pytest.approx(-1.0)}


def test_transfer_verdicts_transfers_by_tost_and_shifts_two_sided():
    flat = {s: 0.02 * (-1) ** s + 0.01 * s / 6 for s in range(7)}
    steep = {s: -1.0 + 0.05 * (-1) ** s for s in range(7)}
    assert transfer_verdict(flat, "transfers", 0.25).verdict == SUPPORTED
    assert transfer_verdict(flat, "transfers", 0.25).p == pytest.approx(1 / 128)  # exact: every seed inside
    assert transfer_verdict(steep, "transfers", 0.25).verdict == CONTRADICTED  # p 2 × 2⁻⁷: needs 7 seeds
    assert transfer_verdict(steep, "shifts", None).verdict == SUPPORTED
    assert transfer_verdict({s: -v for s, v in steep.items()}, "shifts", None).verdict == SUPPORTED  # either side
    assert transfer_verdict(flat, "shifts", None).verdict == INCONCLUSIVE
    assert transfer_verdict(flat, "shifts", 0.25).verdict == CONTRADICTED  # shown within ±δ
    found = transfer_verdict(steep, "shifts", None)
    assert found.lo < -1.0 < found.hi < 0 and found.n == 7 and found.p == pytest.approx(1 / 128)
    few = transfer_verdict({s: steep[s] for s in range(5)}, "shifts", None)
    assert few.verdict == INCONCLUSIVE and "5 seeds cannot reach 95%" in few.note


# ---- config -------------------------------------------------------------------------------------
def claim_error(**fields: Any) -> str:
    from trx.config import parse_claims

    base = {"text": "t", "kind": "steps_to_target", "a": {"arm": "a"}, "b": {"arm": "b"}, "expect": "a_faster",
            "target": 1.0}
    with pytest.raises(UserError) as info:
        parse_claims([{**base, **fields}])
    return str(info.value)


def test_claim_fields_of_the_new_kinds_are_checked_by_name():
    assert claim_error(target=None) == "claims.0.target: required for steps_to_target claims"
    assert "claims.0.target: only for steps_to_target" in claim_error(kind="difference", expect="a_better")
    assert "claims.0.axis: required for lr_transfer" in claim_error(kind="lr_transfer", expect="shifts", target=None, b=None)
    assert "claims.0.b: an lr_transfer claim judges one arm" in claim_error(kind="lr_transfer", expect="shifts", target=None,
                                                                   axis="task.n_embd")
    assert "claims.0.b: required" in claim_error(b=None)
    assert "claims.0.delta: a transfers claim needs" in claim_error(kind="lr_transfer", expect="transfers", target=None,
                                                           b=None, axis="task.n_embd")
    assert "expect: steps_to_target claims take a_faster | b_faster" in claim_error(expect="a_better")


# ---- report -------------------------------------------------------------------------------------
def steps_runs(root: Path, curves: dict[str, list[list[float]]]) -> Path:
    """`trx run` seeds with given loss curves (rows every 10 steps, 30 steps)."""
    for arm, per_seed in curves.items():
        for seed, losses in enumerate(per_seed):
            write_run(root / "q" / arm / f"seed={seed}", arm, losses[-1], seed=seed, losses=losses, name="q")
    return root / "q"


def report_lines(root: Path, claims: list[dict[str, Any]]) -> tuple[list[str], str]:
    (root / "experiment.yaml").write_text(yaml.safe_dump({"name": "q", "claims": claims}))
    text = write_report([root]).read_text()
    return [line for line in text.splitlines() if line.startswith("- **")], text


def test_steps_to_target_report_counts_a_seed_that_never_reaches_it(tmp_path):
    fast = [[2.0, 0.9, 0.5, 0.4]] * 6  # reaches 1.0 at step 10
    slow = [[2.0, 1.5, 0.8, 0.6]] * 5 + [[2.0, 1.8, 1.4, 1.2]]  # step 20; the last seed never
    root = steps_runs(tmp_path, {"fast": fast, "slow": slow})
    claim = {"text": "fast gets there first", "kind": "steps_to_target", "metric": "loss", "target": 1.0,
             "a": {"arm": "slow"}, "b": {"arm": "fast"}, "expect": "b_faster"}
    lines, _ = report_lines(root, [claim])
    assert lines[0].startswith("- **supported**: fast gets there first. steps to loss ≤ 1: median fast 10; "
                               "slow 20, 1 not reached (a seed that never reaches it, or diverged before it, scores 31 steps")
    assert "ratio of steps fast / slow = 0.4" in lines[0] and "n = 6 seeds" in lines[0]


LRS = (1e-3, 3e-3, 1e-2, 3e-2, 1e-1)


def transfer_sweep(root: Path, best: dict[int, dict[int, float]]) -> Path:
    """<root>/t/sweep/a/…: arm a over LRS at widths 32, 64, 128; the final loss is
    lowest at best[seed][width] (a V in log-lr)."""
    sweep = root / "t" / "sweep"
    for seed, by_width in best.items():
        for width, top in by_width.items():
            for lr in LRS:
                loss = 1.0 + abs(math.log10(lr) - math.log10(top))
                cell = sweep / "a" / f"task.n_embd={width},lr={lr:g},seed={seed}"
                write_run(cell, "a", loss, seed=seed, lr=lr, name="t")
                short = {"task.n_embd": width, "lr": lr}
                meta = {"name": "t", "arm": "a", "seed": seed, "cell": f"task.n_embd={width},lr={lr:g},seed={seed}",
                        "overrides": {"task.n_embd": width, "optimizers.a.lr": lr}, "short": short}
                (cell / "cell.json").write_text(json.dumps(meta))
    return sweep


def test_lr_transfer_report_gives_the_slope_per_seed_and_a_table(tmp_path):
    # the best lr falls by a factor 3 to 10 per doubling of the width: slopes from −1.6 to −3.3
    best = {s: {32: 1e-1, 64: (3e-2, 1e-2)[s % 2], 128: (1e-2, 3e-3)[s // 4]} for s in range(7)}
    sweep = transfer_sweep(tmp_path, best)
    claims = [{"text": "a's lr shifts with width", "kind": "lr_transfer", "metric": "loss", "axis": "task.n_embd",
               "a": {"arm": "a"}, "expect": "shifts"},
              {"text": "a's lr transfers", "kind": "lr_transfer", "metric": "loss", "axis": "task.n_embd",
               "a": {"arm": "a"}, "expect": "transfers", "delta": 0.2}]
    lines, text = report_lines(sweep, claims)
    mean = sum(slope([32, 64, 128], [by_w[32], by_w[64], by_w[128]]) for by_w in best.values()) / 7
    assert lines[0].startswith("- **supported**: a's lr shifts with width. slope of log10(best lr) on "
                               f"log10(task.n_embd) for a = {mean:.4g}, 95% CI [")
    assert "exact sign-flip, each side at 2.5%, over n = 7 seeds, p = 0.0078" in lines[0]
    assert "widths 32, 64, 128" in lines[0]
    assert "the best lr sits at the grid's end in 7 seed×width point(s)" in lines[0]  # 1e-1 at width 32
    assert lines[1].startswith("- **contradicted**: a's lr transfers")
    assert "| seed | best lr at task.n_embd=32 | best lr at task.n_embd=64 | best lr at task.n_embd=128 | slope |" in text
    assert f"| 5 | 0.1 | 0.01 | 0.003 | {slope([32, 64, 128], [0.1, 0.01, 0.003]):.4g} |" in text
    assert "![Best learning rate against width](report_transfer.png)" in text
    assert (sweep / "report_transfer.png").read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"


def test_an_lr_transfer_axis_must_be_a_grid_key(tmp_path):
    from conftest import tiny_config
    from trx.config import resolve

    claim = {"text": "t", "kind": "lr_transfer", "a": {"arm": "sgd"}, "axis": "task.n_embd", "expect": "shifts"}
    data = {**tiny_config(), "sweep": {"grid": {"optimizers.sgd.lr": [0.1, 0.2]}}, "claims": [claim]}
    with pytest.raises(UserError, match=r"claims.0.axis: 'task.n_embd' is not a key of sweep.grid"):
        resolve(data)
    data["sweep"]["grid"]["task.n_embd"] = [32, 64]
    assert resolve(data).claims[0].axis == "task.n_embd"


def test_a_run_that_diverged_after_reaching_the_target_scores_the_step_it_reached_it(tmp_path):
    from trx.compare import find_runs
    from trx.speed_transfer import _steps_by_seed

    write_run(tmp_path / "d", "a", None, status="diverged", losses=[2.0, 0.5, math.nan])  # 0.5 ≤ 1 at step 10
    write_run(tmp_path / "e", "a", None, seed=1, status="diverged", losses=[2.0, 1.5, math.nan])
    by_seed, missed, _ = _steps_by_seed(find_runs([tmp_path]), "loss", 1.0)
    assert by_seed == {0: pytest.approx(math.log10(10)), 1: pytest.approx(math.log10(31))} and missed == 1
