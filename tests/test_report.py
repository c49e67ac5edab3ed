"""Run folders read back from cell.json (older folders refused until converted), seeds of `trx run`
grouped per arm, paired tables with verdicts, and `write_report` on hand-made folders (claims)
and on a small real sweep (its linked figures exist)."""

from __future__ import annotations

import json
import re
from pathlib import Path
from typing import Any

import pytest
import yaml
from typer.testing import CliRunner

from trx.cli import app
from trx.config import UserError
from trx.compare import (axis_table, compare_table, failure_table, find_runs, group_runs, paired_table, reference_value,
                         tolerance_curve_table)
from trx.report import write_report
from trx.stats import CONTRADICTED, INCONCLUSIVE, SUPPORTED

from conftest import tiny_config
from test_compare import write_run


def write_cell(folder: Path, name: str, arm: str, seed: int, short: dict[str, Any] | None = None,
               value: float = 0.5, status: str = "complete") -> Path:
    """A run folder of the new layout: summary.json, metrics.csv, config.yaml and cell.json."""
    short = short or {}
    lr = short.get("lr", 0.1)
    write_run(folder, arm, value, seed=seed, lr=lr, status=status, name=name, val={"val_loss": value})
    cell = ",".join([*(f"{k}={v:.4g}" for k, v in short.items()), f"seed={seed}"]) if short else None
    meta = {"name": name, "arm": arm, "seed": seed, "overrides": {f"optimizers.{arm}.{k}": v for k, v in short.items()},
            "cell": cell, "short": short}
    (folder / "cell.json").write_text(json.dumps(meta))
    return folder


def run_seeds(root: Path, values: dict[str, list[float | None]], name: str = "main") -> Path:
    """`trx run` with several seeds: <root>/<name>/<arm>/seed=<s>/ (cell None, no overrides)."""
    for arm, per_seed in values.items():
        for seed, v in enumerate(per_seed):
            write_cell(root / name / arm / f"seed={seed}", name, arm, seed, value=v if v is not None else 1e6,
                       status="complete" if v is not None else "diverged")
    return root / name


# ---- what a folder is ---------------------------------------------------------------------------
def test_cell_json_is_read_in_preference_to_the_folder_name(tmp_path):
    folder = tmp_path / "x" / "sweep" / "adam" / "lr=9,seed=7"  # a name that says something else
    write_cell(folder, "x", "adam", 2, {"lr": 0.01, "schedule.warmup": 5})
    run = find_runs([folder])[0]
    assert (run.name, run.arm, run.seed, run.cell) == ("x", "adam", 2, "lr=0.01,schedule.warmup=5,seed=2")
    assert run.overrides == [("lr", "0.01"), ("schedule.warmup", "5")] and run.lr == 0.01


def test_a_folder_without_cell_json_is_refused_until_resume_writes_it(tmp_path):
    """What a folder is is never parsed from its name: an older folder (no cell.json) is refused
    with the way to convert it, and `--resume` over its finished runs writes cell.json."""
    path = tmp_path / "exp.yaml"
    path.write_text(yaml.safe_dump(tiny_config(steps=5, eval_every=0)))
    out = tmp_path / "runs"
    assert CliRunner().invoke(app, ["run", str(path), "--out", str(out)]).exit_code == 0
    (out / "tiny" / "sgd" / "cell.json").unlink()
    with pytest.raises(UserError, match="sgd has no cell.json") as err:
        find_runs([out / "tiny"])
    assert "--resume" in err.value.hint
    res = CliRunner().invoke(app, ["run", str(path), "--out", str(out), "--resume"])
    assert res.exit_code == 0, res.output
    assert {r.arm for r in find_runs([out / "tiny"])} == {"sgd", "adam"}


def test_seeds_of_trx_run_group_per_arm(tmp_path):
    runs = find_runs([run_seeds(tmp_path, {"adamw": [0.5, 0.6, 0.55], "muon": [0.3, 0.4, 0.35]})])
    assert {k: len(v) for k, v in group_runs(runs).items()} == {("main", "adamw", ""): 3, ("main", "muon", ""): 3}
    table = compare_table(runs, "val_loss").set_index("run")
    assert table.loc["muon", "seeds"] == 3 and table.loc["muon", "final_val_loss"] == pytest.approx(0.35)
    assert table.loc["muon", "final_val_loss_ci_lo"] < 0.35 < table.loc["muon", "final_val_loss_ci_hi"]


# ---- paired differences ------------------------------------------------------------------------
def test_paired_table_gives_each_arm_against_the_baseline(tmp_path):
    runs = find_runs([run_seeds(tmp_path, {"adamw": [0.5, 0.7, 0.6, 0.8],
                                           "muon": [0.31, 0.49, 0.42, 0.58],      # ≈ −0.2 each seed
                                           "sgd": [0.52, 0.68, 0.61, 0.79],       # ≈ 0
                                           "lion": [0.6, 0.85, 0.7, None]})])     # worse; one diverged
    table = paired_table(runs, "val_loss", "adamw").set_index("run")
    assert list(table.index)[0] == "adamw" and table.loc["adamw", "verdict"] == "baseline"
    assert table.loc["muon", "diff"] == pytest.approx(-0.2) and table.loc["muon", "verdict"] == SUPPORTED
    assert table.loc["muon", "diff_ci_hi"] < 0 and table.loc["muon", "vs"] == "adamw"
    assert table.loc["sgd", "verdict"] == INCONCLUSIVE
    # lion's diverged seed is not dropped: it ranks worst, scoring no better than the untrained model
    # (the metric at step 0), so it costs lion more than its worst finished seed (0.85) would
    assert table.loc["lion", "pairs"] == "4" and table.loc["lion", "verdict"] != SUPPORTED
    assert table.loc["lion", "diff"] > (0.1 + 0.15 + 0.1 + 0.05) / 4
    assert 0 < table.loc["muon", "p"] <= table.loc["muon", "p_holm"] <= 3 * table.loc["muon", "p"]
    assert table.loc["lion", "diverged"] == "1/4"
    flipped = paired_table(runs, "val_loss", "muon").set_index("run")
    assert flipped.loc["adamw", "verdict"] == CONTRADICTED
    with pytest.raises(UserError, match="baseline arm 'nope'"):
        paired_table(runs, "val_loss", "nope")


def test_a_cell_the_baseline_arm_did_not_run_says_so(tmp_path):
    root = tmp_path / "s" / "sweep"
    for arm, lrs in (("adamw", (0.01,)), ("muon", (0.01, 0.1))):
        for lr in lrs:
            for seed in range(3):
                write_cell(root / arm / f"lr={lr},seed={seed}", "s", arm, seed, {"lr": lr}, value=0.5 + 0.1 * seed - lr)
    table = paired_table(find_runs([root]), "val_loss", "adamw").set_index("run")
    assert table.loc["adamw lr=0.01", "verdict"] == "baseline" and table.loc["muon lr=0.01", "vs"] == "adamw lr=0.01"
    assert table.loc["muon lr=0.1", "verdict"] == "no baseline cell" and table.loc["muon lr=0.1", "vs"] == "-"
    assert table.loc["muon lr=0.1", "seeds"] == 3 and table.loc["muon lr=0.1", "final_val_loss"] == pytest.approx(0.5)


# ---- the Markdown report ------------------------------------------------------------------------
def links(text: str) -> list[str]:
    return re.findall(r"!\[[^\]]*\]\(([^)]+)\)", text)


CLAIMS = [
    {"text": "Muon reaches a lower val loss than AdamW", "kind": "difference", "metric": "val_loss",
     "a": {"arm": "muon"}, "b": {"arm": "adamw"}, "expect": "a_better"},
    {"text": "SGD is worse than AdamW", "kind": "difference", "a": {"arm": "adamw"}, "b": {"arm": "sgd"},
     "expect": "a_better"},
    {"text": "Lion beats AdamW", "kind": "difference", "a": {"arm": "adamw"}, "b": {"arm": "lion"},
     "expect": "b_better"},
]


def test_report_of_trx_run_seeds_has_paired_differences_and_claim_verdicts(tmp_path):
    root = run_seeds(tmp_path, {"adamw": [0.5, 0.7, 0.6, 0.8], "muon": [0.31, 0.49, 0.42, 0.58],
                                "sgd": [0.52, 0.68, 0.61, 0.79], "lion": [0.6, 0.85, 0.7, None]})
    experiment = {**tiny_config(name="main"), "claims": CLAIMS,
                  "optimizers": {"adamw": {"lr": 0.003}, "muon": {"lr": 0.02}, "sgd": {"lr": 0.1},
                                 "lion": {"lr": 1e-4}}}
    (root / "experiment.yaml").write_text(yaml.safe_dump(experiment, sort_keys=False))
    text = write_report([root]).read_text()
    assert "## Paired differences against adamw" in text  # config order, not alphabetical
    assert "sample standard deviation over the n seeds" in text and "95% Student t interval" in text
    lines = [l for l in text.splitlines() if l.startswith("- **")]
    assert lines[0].startswith(f"- **{SUPPORTED}**: Muon reaches a lower val loss than AdamW.")
    assert "muon − adamw = -0.2, 95% CI [" in lines[0] and "n = 4 seeds" in lines[0]
    assert lines[1].startswith(f"- **{INCONCLUSIVE}**: SGD is worse")
    assert lines[2].startswith(f"- **{INCONCLUSIVE}**: Lion beats AdamW") and "1 diverged run(s) ranked worst" in lines[2]
    assert "3 claim(s) tested, judged as a family (Holm over 3)" in text and "Holm-adjusted p = " in lines[0]
    assert "| lion | 0.0001 |" in text and "logreg(dataset=wine, batch_size=16)" in text
    assert links(text) == ["report_curves.png"] and (root / "report_curves.png").exists()


def test_report_claims_that_cannot_be_evaluated_say_why_and_bad_claims_are_user_errors(tmp_path):
    root = tmp_path / "s" / "sweep"
    for arm in ("adamw", "muon"):
        for lr in (1e-3, 1e-2):
            for seed in (0, 1):
                write_cell(root / arm / f"lr={lr:.4g},seed={seed}", "s", arm, seed, {"lr": lr}, value=0.5 - lr)
    claims = [{"text": "t", "kind": "difference", "a": {"arm": "muon"}, "b": {"arm": "adamw"}, "expect": "a_better"},
              {"text": "u", "kind": "difference", "a": {"arm": "muon", "where": {"lr": 0.01}},
               "b": {"arm": "adamw", "where": {"lr": 0.01}}, "expect": "a_better"},
              {"text": "v", "kind": "lr_tolerance", "a": {"arm": "nadam"}, "b": {"arm": "adamw"}, "expect": "a_wider"},
              {"text": "w", "kind": "lr_tolerance", "a": {"arm": "muon"}, "b": {"arm": "adamw"}, "expect": "b_wider"}]
    (root / "experiment.yaml").write_text(yaml.safe_dump({"name": "s", "claims": claims}))
    text = write_report([root], out=tmp_path / "out").read_text()
    assert "- **not evaluated**: t. muon: several runs per seed; add `where:`" in text
    assert "- **inconclusive**: u. final val_loss muon (lr=0.01) − adamw (lr=0.01) = 0" in text
    assert "- **not evaluated**: v. no runs match nadam" in text
    assert "- **inconclusive**: w. lr band width" in text and "adamw − muon = 0" in text
    assert "## Learning-rate tolerance" not in text and "## Paired differences" not in text  # two lrs: no band table
    assert all((tmp_path / "out" / name).exists() for name in links(text))
    (root / "experiment.yaml").write_text(yaml.safe_dump({"claims": [{**claims[0], "kind": "speed"}]}))
    with pytest.raises(UserError, match=r"claims.0.kind: must be one of 'difference', 'lr_tolerance'"):
        write_report([root])


def test_report_bad_input_is_a_user_error(tmp_path):
    (tmp_path / "empty").mkdir()
    with pytest.raises(UserError, match="no summary.json"):
        write_report([tmp_path / "empty"])
    write_run(tmp_path / "a", "a", 0.1)
    with pytest.raises(UserError, match="--metric bleu: no run has it"):
        write_report([tmp_path / "a"], metric="bleu")
    path = write_report([tmp_path / "a"])
    assert path == tmp_path / "a" / "report.md" and "## Results: final loss" in path.read_text()


def test_report_of_a_small_real_sweep_links_figures_that_exist(tmp_path):
    cfg = tiny_config(name="rs", steps=20, eval_every=10,
                      sweep={"grid": {"optimizers.sgd.lr": [0.03, 0.1, 0.3], "optimizers.adam.lr": [0.003, 0.01, 0.03]},
                             "seeds": [0, 1]})
    path = tmp_path / "rs.yaml"
    path.write_text(yaml.safe_dump(cfg, sort_keys=False))
    res = CliRunner().invoke(app, ["sweep", str(path), "--out", str(tmp_path / "runs")], env={"COLUMNS": "200"})
    assert res.exit_code == 0, res.output
    sweep = tmp_path / "runs" / "rs" / "sweep"
    report = write_report([sweep])
    text = report.read_text()
    assert report == sweep / "report.md" and "## Results: final val_loss" in text
    assert "## Learning-rate tolerance (final val_loss)" in text and "torch " in text
    assert sorted(links(text)) == ["report_band.png", "report_curves.png", "report_lr.png"]
    assert all((sweep / name).stat().st_size > 1000 for name in links(text))
    assert "## Band width against the tolerance (final val_loss)" in text and "| arm | 2% | 5% |" in text
    assert "- adam: `lr` ∈ {0.003, 0.01, 0.03}" in text
    from trx.provenance import cpu_record  # what the results may depend on: the CPU and the torch build

    cpu = cpu_record()
    assert f"({cpu['cpu_isa']}; torch kernels {cpu['torch_cpu_capability']})" in text
    assert "Newton–Schulz" not in text  # no arm of this sweep runs it


def test_report_draws_the_warmup_figure_when_warmup_is_an_axis(tmp_path):
    root = tmp_path / "w" / "sweep"
    for arm in ("adamw", "muon"):
        for warmup in (0, 10):
            for seed in (0, 1):
                write_cell(root / arm / f"schedule.warmup={warmup},seed={seed}", "w", arm, seed,
                           {"schedule.warmup": warmup}, value=0.3 + 0.01 * seed - 0.001 * warmup)
    text = write_report([root], metric="loss").read_text()
    assert sorted(links(text)) == ["report_curves.png", "report_warmup.png"]
    assert all((root / name).exists() for name in links(text))
    assert "## Paired differences against adamw" in text and "| muon schedule.warmup=10 |" in text
    assert "- muon: `schedule.warmup` ∈ {0, 10}" in text


# ---- issue 17: families, kinds of claims, the sweep's own question ----------------------------
def lr_seed_sweep(root: Path, values: dict[str, dict[float, list[float | None]]], name: str = "q") -> Path:
    """<root>/<name>/sweep/<arm>/lr=…,seed=…/ with cell.json; None = diverged."""
    sweep = root / name / "sweep"
    for arm, by_lr in values.items():
        for lr, per_seed in by_lr.items():
            for seed, v in enumerate(per_seed):
                write_cell(sweep / arm / f"lr={lr:.4g},seed={seed}", name, arm, seed, {"lr": lr},
                           value=v if v is not None else 1e6, status="complete" if v is not None else "diverged")
    return sweep


def test_without_claims_the_report_pairs_along_each_grid_axis_within_an_arm(tmp_path):
    root = tmp_path / "w" / "sweep"
    for arm, gain in (("adamw", 0.05), ("muon", 0.0)):
        for warmup in (0, 10):
            for seed in range(4):
                write_cell(root / arm / f"schedule.warmup={warmup},seed={seed}", "w", arm, seed,
                           {"schedule.warmup": warmup}, value=0.5 + 0.1 * seed - (gain + 0.003 * (seed % 2)) * (warmup > 0))
    runs = find_runs([root])
    table = axis_table(runs, "val_loss").set_index("run")
    assert list(table.index) == ["adamw schedule.warmup=10", "muon schedule.warmup=10"]
    assert table.loc["adamw schedule.warmup=10", "vs"] == "adamw schedule.warmup=0"
    assert table.loc["adamw schedule.warmup=10", "diff"] == pytest.approx(-0.0515)
    assert table.loc["adamw schedule.warmup=10", "verdict"] == SUPPORTED
    assert table.loc["muon schedule.warmup=10", "verdict"] == INCONCLUSIVE  # 0.003 in two seeds, 0 in two
    text = write_report([root]).read_text()
    assert "## Paired differences along each grid axis" in text and "| adamw schedule.warmup=10 | schedule.warmup |" in text


def test_divergence_counts_per_arm_with_the_exact_test(tmp_path):
    root = run_seeds(tmp_path, {"adamw": [0.5, 0.6, 0.55, 0.5, 0.6, 0.55, 0.5],
                                "lion": [None, None, None, None, None, None, 0.4]})
    text = write_report([root]).read_text()
    assert "## Divergence and stalls" in text and "per arm: adamw 0/7, lion 6/7" in text
    table = failure_table(find_runs([root]), "adamw").set_index("run")
    assert table.loc["lion", "failed"] == "6/7" and table.loc["lion", "p"] == pytest.approx(2 / 64)
    assert table.loc["lion", "verdict"] == CONTRADICTED  # "lion fails less often": one-sided p = 1/64
    # a stalled seed (summary `stalled`, written by the monitor) counts as a failure too
    summary = root / "adamw" / "seed=0" / "summary.json"
    summary.write_text(json.dumps({**json.loads(summary.read_text()), "stalled": True, "stalled_at": 20}))
    assert failure_table(find_runs([root]), "adamw").set_index("run").loc["lion", "vs_failed"] == "1/7"


SWEEP = {  # final val_loss − 0.05 by lr and seed: muon better at its best lr in every seed
    "adamw": {1e-3: [0.60, 0.62, 0.61, 0.63, 0.60, 0.64], 1e-2: [0.40, 0.45, 0.41, 0.47, 0.42, 0.44],
              1e-1: [0.50, None, 0.52, None, 0.51, None]},
    "muon": {1e-3: [0.50, 0.52, 0.51, 0.53, 0.50, 0.54], 1e-2: [0.30, 0.36, 0.31, 0.35, 0.32, 0.33],
             1e-1: [0.45, 0.47, 0.46, 0.45, 0.47, 0.46]},
}


def claims_report(tmp_path: Path, claims: list[dict[str, Any]]) -> list[str]:
    sweep = lr_seed_sweep(tmp_path, SWEEP)
    (sweep / "experiment.yaml").write_text(yaml.safe_dump({"name": "q", "claims": claims}))
    return [l for l in write_report([sweep]).read_text().splitlines() if l.startswith("- **")]


def claim(text: str, kind: str, a: dict, b: dict, expect: str, **more: Any) -> dict[str, Any]:
    return {"text": text, "kind": kind, "metric": "val_loss", "a": a, "b": b, "expect": expect, **more}


def test_claim_kinds_stability_equivalence_and_best_lr_with_selection_seeds(tmp_path):
    at = lambda arm, lr: {"arm": arm, "where": {"lr": lr}}  # noqa: E731
    lines = claims_report(tmp_path, [
        claim("Muon is stabler at 0.1", "stability", at("muon", 0.1), at("adamw", 0.1), "a_stabler"),
        claim("Muon at its best lr beats AdamW at its", "difference", {"arm": "muon"}, {"arm": "adamw"}, "a_better",
              best_lr=True, selection_seeds=[0, 1, 2], primary=True),
        claim("Same lr, no difference beyond 0.5", "equivalence", at("muon", 0.01), at("adamw", 0.01),
              "equivalent", delta=0.5),
        claim("A tiny gain does not count", "difference", at("muon", 0.01), at("adamw", 0.01), "a_better", delta=0.2),
        claim("On three seeds", "difference", at("muon", 0.01), at("adamw", 0.01), "a_better", evaluation_seeds=[0, 1, 2]),
    ])
    assert lines[0].startswith("- **inconclusive**: Muon is stabler at 0.1. seeds that diverged or stalled: "
                               "muon (lr=0.1) 0/6, adamw (lr=0.1) 3/6 (exact McNemar")
    assert "p = 0.12" in lines[0] and "Holm-adjusted" in lines[0]
    assert lines[1].startswith("- **supported** (primary): Muon at its best lr")
    assert "lr picked on seeds 0, 1, 2 (muon 0.01, adamw 0.01), judged on seeds 3, 4, 5" in lines[1]
    assert "n = 3 seeds" in lines[1] and "Holm" not in lines[1]
    assert lines[2].startswith("- **supported**: Same lr, no difference beyond 0.5") and "±0.5" in lines[2]
    assert lines[3].startswith("- **inconclusive**: A tiny gain") and "δ = 0.2" in lines[3]
    assert "n = 3 seeds" in lines[4]


def test_claims_are_a_family_holm_can_overturn_a_lone_verdict(tmp_path):
    at = lambda arm, lr: {"arm": arm, "where": {"lr": lr}}  # noqa: E731
    # muon − adamw at 0.01: −0.103 ± 0.010 over 6 seeds; beyond δ = 0.09 at one-sided p ≈ 0.012
    alone = claim("Muon wins at 1e-2", "difference", at("muon", 0.01), at("adamw", 0.01), "a_better", delta=0.09)
    lines = claims_report(tmp_path, [alone])
    assert lines[0].startswith("- **supported**: Muon wins at 1e-2")
    others = [claim(f"other {i}", "difference", at("muon", 0.1), at("adamw", 0.1), "b_better") for i in range(4)]
    family = claims_report(tmp_path / "f", [alone, *others])  # four claims that fail: p ≈ 1
    assert family[0].startswith("- **inconclusive** (alone: supported): Muon wins at 1e-2")


def test_claim_config_checks_name_the_key(tmp_path):
    with pytest.raises(UserError, match=r"claims.0.delta: an equivalence claim needs its margin"):
        claims_report(tmp_path, [claim("t", "equivalence", {"arm": "muon"}, {"arm": "adamw"}, "equivalent")])
    with pytest.raises(UserError, match="at most one claim is primary"):
        one = claim("t", "difference", {"arm": "muon"}, {"arm": "adamw"}, "a_better", primary=True)
        claims_report(tmp_path / "p", [one, one])


def test_an_accuracy_is_measured_from_the_tasks_chance_level(tmp_path):
    cell = write_cell(tmp_path / "c", "c", "adamw", 0, {"lr": 0.01})
    config = yaml.safe_load((cell / "config.yaml").read_text())
    for dataset, chance in (("digits", 0.1), ("wine", 1 / 3)):
        (cell / "config.yaml").write_text(yaml.safe_dump({**config, "task": {"name": "logreg", "dataset": dataset}}))
        assert reference_value(find_runs([cell]), "val_acc") == pytest.approx(chance)
    assert reference_value(find_runs([cell]), "val_loss") == pytest.approx(2.0)  # a loss: its initial value


def test_the_band_figure_needs_an_lr_axis_and_is_drawn_for_one(tmp_path):
    from trx.plots import make_plot

    plain = run_seeds(tmp_path / "plain", {"adamw": [0.5, 0.6]})
    with pytest.raises(UserError, match="--kind band: needs sweep cells with three learning rates"):
        make_plot("band", find_runs([plain]), tmp_path / "band.png")
    sweep = lr_seed_sweep(tmp_path, SWEEP)
    path = make_plot("band", find_runs([sweep]), tmp_path / "band.png", "val_loss")
    assert path.read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"
    table = tolerance_curve_table(find_runs([sweep]), "val_loss")
    assert set(table["kind"]) == {"relative", "absolute"} and len(table) == 2 * 10
    widths = table[(table["arm"] == "muon") & (table["kind"] == "relative")]["decades"].tolist()
    assert widths == sorted(widths)  # a looser tolerance never narrows the band


def test_a_contradicted_claim_shows_the_adjusted_p_of_the_other_direction():
    """Holm adjusts each direction over the family; a contradicted verdict is decided by the p of
    the other direction, so that is the one the report gives (not the claimed side's ≈ 1)."""
    from trx.claims import ClaimResult
    from trx.report import family_verdicts

    results = [ClaimResult("x", "contradicted", "", 0.999, 0.001, False),
               ClaimResult("y", "inconclusive", "", 0.3, 0.7, False),
               ClaimResult("z", "supported", "", 0.01, 0.99, False)]
    (v1, p1), (v2, p2), (v3, p3) = family_verdicts(results)
    assert (v1, p1) == ("contradicted", pytest.approx(0.003))  # 3 × 0.001, the smallest of 3
    assert (v2, p2) == ("inconclusive", pytest.approx(0.6))  # the claimed side: 0.3 × 2, second smallest
    assert (v3, p3) == ("inconclusive", pytest.approx(0.03))  # supported alone (0.01); 3 × 0.01 > 2.5% in the family


def test_an_untested_claim_leaves_the_family_and_the_count_says_what_was_tested():
    """A claim with no p (an open band, too few shared seeds) is no member of the Holm family: it
    cannot be falsely supported, so it must not dilute the others nor be counted as tested."""
    from trx.claims import ClaimResult
    from trx.report import family_verdicts, family_words

    results = [ClaimResult("x", "supported", "", 0.012, 0.99, False),
               ClaimResult("open", "inconclusive", "", None, None, False),
               ClaimResult("y", "inconclusive", "", 0.5, 0.5, False)]
    (v1, p1), (v2, p2), _ = family_verdicts(results)
    assert (v1, p1) == ("supported", pytest.approx(0.024)) and (v2, p2) == ("inconclusive", None)
    words = family_words(results)
    assert "Holm over 2" in words and "1 claim(s) could not be tested" in words


def test_the_best_lr_needs_a_finite_result_on_every_selection_seed(tmp_path):
    from test_compare import make_sweep

    from trx.claims import best_lr_runs

    # 0.1 has the lowest loss but only seed 0 ran there (as a boundary probe does)
    runs = find_runs([make_sweep(tmp_path, {"a": {1e-3: [0.5, 0.5, 0.5], 1e-2: [0.3, 0.3, 0.3], 1e-1: [0.1]}})])
    for selection in ([0, 1], None):
        found = best_lr_runs(runs, "loss", selection, None)
        assert found is not None and found[0] == pytest.approx(1e-2)
