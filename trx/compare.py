"""Comparison tables from run summaries (pandas): `trx run`'s table, and `trx compare` over run
and sweep folders with means over seeds (± = sample sd, with a 95% t interval), steps to a
target, the learning-rate tolerance (`trx.stats.lr_band`) and paired differences by seed.

What a run folder is (experiment, arm, seed, grid values) is read from its `cell.json`
(`trx.rundir`); a folder written before cell.json existed is refused with the way to convert it."""

from __future__ import annotations

import functools
import math
import re
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd

from trx.errors import UserError
from trx.io import atomic_write
from trx.rundir import CellMeta, MetricsRow, RunDir, Status, find_run_dirs, missing_cell, value_text
from trx.stats import (TOLERANCES, Band, Paired, failure_difference, holm, lr_band, mean_sd, paired_difference,
                       t_interval, two_sided)

BASE_COLUMNS = ["arm", "status", "steps_done", "final_loss", "best_loss"]
TAIL_COLUMNS = ["diverged_at", "wall_time_s"]


def comparison_table(summaries: list[dict[str, Any]]) -> pd.DataFrame:
    """One row per arm: status, losses, final eval metrics, theory (where the task has it),
    divergence step, wall time."""
    evals = sorted({k for s in summaries for k in s if k.startswith("final_val")})
    theory = list(dict.fromkeys(k for s in summaries for k in (s.get("theory") or {})))
    columns = BASE_COLUMNS + evals + theory + TAIL_COLUMNS
    rows = [{c: {**s, **(s.get("theory") or {})}.get(c) for c in columns} for s in summaries]
    return pd.DataFrame(rows, columns=columns)


def save_comparison(table: pd.DataFrame, path: Path) -> None:
    atomic_write(path, table.to_csv(index=False))


# ---- `trx compare`: run folders found on disk, grouped over seeds ----------------------------
@dataclass
class RunRecord:
    """One finished (or unfinished) arm or sweep cell found on disk."""

    dir: Path
    summary: dict[str, Any]
    config: dict[str, Any] | None
    meta: CellMeta  # cell.json: name, arm, seed, grid values, cell id

    @classmethod
    def read(cls, run: RunDir) -> RunRecord:
        summary, meta = run.read_summary(), run.read_cell()
        if summary is None:
            raise UserError(f"RUN_DIR: {run.summary} is not a readable summary")
        if meta is None:
            raise missing_cell(run)
        return cls(run.path, summary, run.read_config(), meta)

    arm = property(lambda self: self.meta.arm)
    name = property(lambda self: self.meta.name)
    seed = property(lambda self: self.meta.seed)
    cell = property(lambda self: self.meta.cell)  # the sweep cell id, None for an arm of `trx run`
    probe = property(lambda self: self.meta.probe)  # a boundary probe: not on the lr grid every seed ran

    @property
    def overrides(self) -> list[tuple[str, str]]:
        """The grid values without the seed as `(key below the arm, value text)`, as a cell id
        writes them."""
        return [(str(k), value_text(v)) for k, v in self.meta.short.items()]

    @property
    def lr(self) -> float | None:
        arm = ((self.config or {}).get("optimizers") or {}).get(self.arm) or {}
        if isinstance(arm.get("lr"), (int, float)):
            return float(arm["lr"])
        text = dict(self.overrides).get("lr")
        return _float(text)

    @property
    def diverged(self) -> bool:
        return bool(self.summary.get("diverged")) or self.summary.get("status") == Status.DIVERGED

    @property
    def complete(self) -> bool:
        return self.summary.get("status") == Status.COMPLETE and not self.diverged

    @property
    def failed(self) -> bool | None:
        """Diverged or stalled (`stalled` in summary.json where the monitor wrote it): an outcome
        that counts against the arm; None for a run that crashed or did not finish."""
        if self.diverged or self.summary.get("stalled"):
            return True
        return False if self.complete else None

    @functools.cached_property
    def metrics(self) -> list[MetricsRow]:
        """metrics.csv's typed rows (damage no crash leaves is a UserError naming the file)."""
        try:
            return RunDir(self.dir).read_metrics()
        except OSError:
            return []


def split_cell_id(cell_id: str) -> list[tuple[str, str]]:
    """`lr=0.01,schedule.warmup=0,seed=1` → [("lr", "0.01"), …]; commas inside values survive
    unless followed by `key=`."""
    if not cell_id:
        return []
    pairs = []
    for part in re.split(r",(?=[A-Za-z_][\w.*-]*=)", cell_id):
        key, _, value = part.partition("=")
        pairs.append((key, value))
    return pairs


def _float(text: Any) -> float | None:
    try:
        return float(text)
    except (TypeError, ValueError):
        return None


def find_runs(paths: list[Path]) -> list[RunRecord]:
    """Every run at or below the given arm, experiment or sweep folders, read from its files."""
    return [RunRecord.read(run) for run in find_run_dirs(paths)]


def higher_is_better(metric: str) -> bool:
    return "acc" in metric.lower()


def result(run: RunRecord, metric: str) -> float | None:
    """The run's final value of `metric`: from summary.json (`final_<metric>`), else the last
    value in metrics.csv."""
    value = run.summary.get(f"final_{metric}")
    if isinstance(value, (int, float)):
        return float(value)
    for row in reversed(run.metrics):
        if row.get(metric) is not None:
            return row[metric]
    return None


def default_metric(runs: list[RunRecord]) -> str:
    """What every command judges by unless told otherwise: `val_loss` when any run evaluated it
    (the held-out loss is the result; the train loss also measures memorization), else `loss`."""
    return "val_loss" if any(result(r, "val_loss") is not None for r in runs) else "loss"


def steps_to_target(run: RunRecord, metric: str, target: float) -> int | None:
    """First logged step where `metric` reaches the target (≤ for losses, ≥ for accuracies)."""
    better = higher_is_better(metric)
    for row in run.metrics:
        value, step = row.get(metric), row.get("step")
        if value is not None and step is not None and (value >= target if better else value <= target):
            return int(step)
    return None


def check_metric(runs: list[RunRecord], metric: str) -> None:
    if any(result(r, metric) is not None for r in runs):
        return
    known = sorted({k for r in runs for row in r.metrics[-1:] for k in row if k != "step"})
    raise UserError(f"--metric {metric}: no run has it", hint=f"available: {', '.join(known) or 'loss'}")


def group_runs(runs: list[RunRecord]) -> dict[tuple[str, str, str], list[RunRecord]]:
    """Runs that differ only in their seed: (experiment, arm, cell id without the seed)."""
    groups: dict[tuple[str, str, str], list[RunRecord]] = {}
    for run in sorted(runs, key=lambda r: (r.name, r.arm, [(k, natural_key(v)) for k, v in r.overrides])):
        key = (run.name, run.arm, ",".join(f"{k}={v}" for k, v in run.overrides))
        groups.setdefault(key, []).append(run)
    return groups


def natural_key(value: str) -> tuple[int, float, str]:
    """Sort numbers numerically before other text (grid values, cell ids)."""
    number = _float(value)
    return (0, number, "") if number is not None else (1, 0.0, value)


def several_names(groups: dict[tuple[str, str, str], Any]) -> bool:
    """Whether groups (or curves) keyed by (experiment, arm, cell) come from more than one
    experiment: their labels then name it (`group_label`)."""
    return len({k[0] for k in groups}) > 1


def group_label(key: tuple[str, str, str], several: bool) -> str:
    name, arm, cell = key
    text = f"{name}/{arm}" if several else arm
    return f"{text} {cell}" if cell else text


def _counts(values: list[str]) -> str:
    counts = {v: values.count(v) for v in dict.fromkeys(values)}
    return next(iter(counts)) if len(counts) == 1 else ", ".join(f"{v} {n}/{len(values)}" for v, n in counts.items())


def _mean_sd_ci(row: dict[str, Any], col: str, values: list[float | None], ci: bool) -> None:
    """`col` = mean, `col_std` = sample sd and, for the main metric, `col_ci_lo/_hi` = 95% t interval."""
    row[col], row[f"{col}_std"] = mean_sd(values)
    if ci:
        row[f"{col}_ci_lo"], row[f"{col}_ci_hi"] = t_interval(values) or (None, None)


def compare_table(runs: list[RunRecord], metric: str, target: float | None = None) -> pd.DataFrame:
    """One row per arm or sweep cell, averaged over seeds: mean columns, `<col>_std` (sample sd)
    and, for the final `metric`, its 95% Student t interval `final_<metric>_ci_lo/_hi`."""
    groups = group_runs(runs)
    several = several_names(groups)
    evals = sorted({k for r in runs for k in r.summary if k.startswith("final_val")})
    extra = [] if metric == "loss" or f"final_{metric}" in evals else [metric]
    main = f"final_{metric}"
    rows = []
    for key, members in groups.items():
        row: dict[str, Any] = {"run": group_label(key, several), "seeds": len(members),
                               "status": _counts([str(r.summary.get("status")) for r in members])}
        for col in ["final_loss", "best_loss", *evals]:
            _mean_sd_ci(row, col, [r.summary.get(col) for r in members], col == main)
        for m in extra:
            _mean_sd_ci(row, f"final_{m}", [result(r, m) for r in members], True)
        if target is not None:
            hits = [steps_to_target(r, metric, target) for r in members]
            reached = [h for h in hits if h is not None]
            mean, std = mean_sd(hits) if len(reached) == len(hits) else (None, None)
            row["steps_to_target"], row["steps_to_target_std"] = mean, std
            row["reached"] = f"{len(reached)}/{len(hits)}"
        row["diverged"] = _diverged(members)
        row["wall_time_s"] = mean_sd([r.summary.get("wall_time_s") for r in members])[0]
        rows.append(row)
    return _drop_empty(pd.DataFrame(rows))


def _drop_empty(table: pd.DataFrame) -> pd.DataFrame:
    """Spread columns (sd, interval) that no row has: every group ran one seed."""
    spread = [c for c in table.columns if c.endswith(("_std", "_ci_lo", "_ci_hi"))]
    return table.drop(columns=[c for c in spread if table[c].isna().all()])


# ---- paired differences by seed ---------------------------------------------------------------
def seed_values(members: list[RunRecord], metric: str) -> dict[int, float | None]:
    """Final `metric` by seed: NaN for a run that diverged (an outcome: it scores worst where
    seeds are paired), None for one that crashed or did not finish (its seed cannot pair)."""
    out: dict[int, float | None] = {}
    for i, run in enumerate(members):
        seed = run.seed if run.seed is not None else i
        out[seed] = result(run, metric) if run.complete else math.nan if run.diverged else None
    return out


def seed_failures(members: list[RunRecord]) -> dict[int, bool | None]:
    """Diverged or stalled by seed (None: crashed or unfinished)."""
    return {run.seed if run.seed is not None else i: run.failed for i, run in enumerate(members)}


def failed_text(failures: dict[int, bool | None]) -> str:
    """`k/n`: k of the n seeds failed (diverged or stalled)."""
    return f"{sum(bool(v) for v in failures.values())}/{len(failures)}"


def compare_pair(members: list[RunRecord], reference: list[RunRecord], metric: str, delta: float = 0.0) -> Paired:
    """`trx.stats.paired_difference` of two groups of runs by seed; a diverged seed ranks worst: it
    scores no better than the untrained model (`reference_value`) or the worst seed compared."""
    return paired_difference(seed_values(members, metric), seed_values(reference, metric), higher_is_better(metric),
                             delta=delta, failure_score=reference_value(members + reference, metric))


def _pair_row(row: dict[str, Any], p: Paired | None, vs: str, verdict: str = "") -> None:
    if p is None:
        row.update(vs=vs, diff=None, diff_ci_lo=None, diff_ci_hi=None, pairs="-", p=None, verdict=verdict)
        return
    pairs = f"{p.n}" + (f" ({p.excluded} excluded)" if p.excluded else "")
    row.update(vs=vs, diff=p.mean_diff, diff_ci_lo=p.lo, diff_ci_hi=p.hi, pairs=pairs, p=two_sided(p),
               verdict=p.verdict, note=p.note)


def _with_holm(rows: list[dict[str, Any]]) -> pd.DataFrame:
    """The rows as a table with `p_holm`: the two-sided p-values Holm-adjusted over the table."""
    adjusted = holm([row.get("p") for row in rows])
    for row, ph in zip(rows, adjusted):
        row["p_holm"] = ph
    table = _drop_empty(pd.DataFrame(rows))
    return table.drop(columns=["note"]) if not table.get("note", pd.Series(dtype=str)).fillna("").any() else table


def paired_table(runs: list[RunRecord], metric: str = "loss", baseline_arm: str | None = None) -> pd.DataFrame:
    """Each arm (or sweep cell) against the baseline arm (default: the first) at the same other
    grid values: final `metric` mean ± sd and its 95% interval over the seeds that completed, then the paired
    difference this − baseline over the seeds both ran (`diff`, its 95% t interval, `pairs`
    used and excluded) and the verdict on "this is better than the baseline"."""
    groups = group_runs(runs)
    arms = list(dict.fromkeys(k[1] for k in groups))
    base = baseline_arm or (arms[0] if arms else None)
    if base not in arms:
        raise UserError(f"baseline arm {base!r}: no runs of it", hint=f"arms: {', '.join(arms) or 'none'}")

    def reference(key: tuple[str, str, str]) -> tuple[str, str, str] | str:
        ref = (key[0], base, key[2])
        return "baseline" if key[1] == base else ref if ref in groups else "no baseline cell"

    return _with_holm([_versus_row(groups, key, reference(key), metric) for key in sorted(groups, key=lambda k: k[1] != base)])


def axis_pairs(groups: dict[tuple[str, str, str], list[RunRecord]]) -> list[tuple[str, tuple, tuple]]:
    """(axis, cell, reference cell) for every cell of an arm whose grid values differ from another
    cell of the same arm on one axis only (not lr: the band covers it), the reference taking that
    axis's first value: the sweep's own question, e.g. warmup on vs off within each arm."""
    found = []
    for key in groups:
        values = dict(split_cell_id(key[2]))
        for axis, value in values.items():
            if axis == "lr":
                continue
            options = sorted({dict(split_cell_id(k[2])).get(axis, "") for k in groups if k[:2] == key[:2]},
                             key=natural_key)
            ref = ",".join(f"{k}={options[0] if k == axis else v}" for k, v in values.items())
            if value != options[0] and (key[0], key[1], ref) in groups:
                found.append((axis, key, (key[0], key[1], ref)))
    return found


def axis_table(runs: list[RunRecord], metric: str = "loss") -> pd.DataFrame:
    """Each cell against the cell of the same arm that differs only in one grid axis, at that
    axis's first value (`axis_pairs`): paired difference, interval, p and verdict on "this cell is
    better than its reference", with Holm-adjusted p over the table."""
    groups = group_runs(runs)
    rows = [_versus_row(groups, key, ref, metric, axis=axis) for axis, key, ref in axis_pairs(groups)]
    return _with_holm(rows) if rows else pd.DataFrame()


def _versus_row(groups: dict[tuple[str, str, str], list[RunRecord]], key: tuple[str, str, str],
                ref: tuple[str, str, str] | str, metric: str, **extra: str) -> dict[str, Any]:
    """A row of a paired table: the cell's final `metric` over the seeds that completed, and its
    paired difference to the cell `ref` (a verdict in words where there is none to pair with)."""
    members, several = groups[key], several_names(groups)
    row: dict[str, Any] = {"run": group_label(key, several), **extra, "seeds": len(members), "diverged": _diverged(members)}
    _mean_sd_ci(row, f"final_{metric}", list(seed_values(members, metric).values()), True)
    if isinstance(ref, str):
        _pair_row(row, None, "-", ref)
    else:
        _pair_row(row, compare_pair(members, groups[ref], metric), group_label(ref, several))
    return row


def _diverged(members: list[RunRecord]) -> str:
    return f"{sum(r.diverged for r in members)}/{len(members)}"


def comparison_pairs(runs: list[RunRecord], baseline_arm: str | None) -> list[tuple[str, tuple, tuple]]:
    """(what differs, cell, reference cell): every arm against the baseline arm at equal grid
    values (when a baseline is given), then every cell against its reference along each grid axis."""
    groups = group_runs(runs)
    pairs = [("arm", key, (key[0], baseline_arm, key[2])) for key in groups
             if baseline_arm and key[1] != baseline_arm and (key[0], baseline_arm, key[2]) in groups]
    return pairs + axis_pairs(groups)


def failure_table(runs: list[RunRecord], baseline_arm: str | None = None) -> pd.DataFrame:
    """Seeds that diverged or stalled, per compared pair of cells (`comparison_pairs`), with the
    exact McNemar test of "this fails less often than its reference" on the seeds both ran."""
    groups = group_runs(runs)
    several = several_names(groups)
    rows = []
    for what, key, ref in comparison_pairs(runs, baseline_arm):
        mine, theirs = seed_failures(groups[key]), seed_failures(groups[ref])
        p = failure_difference(mine, theirs)
        rows.append({"run": group_label(key, several), "differs in": what, "vs": group_label(ref, several),
                     "failed": failed_text(mine), "vs_failed": failed_text(theirs),
                     "p": two_sided(p), "verdict": p.verdict, "note": p.note})
    return pd.DataFrame(rows)


# ---- learning-rate tolerance ------------------------------------------------------------------
def initial_value(runs: list[RunRecord], metric: str) -> float | None:
    """Mean over runs of `metric` before training: its step-0 row in metrics.csv, else for a loss
    the summary's first (train) loss, the same model's loss at step 0. The lr band measures
    improvement from it."""
    values = []
    for run in runs:
        first = next((row.get(metric) for row in run.metrics if row.get("step") == 0), None)
        if first is None and metric.endswith("loss"):  # no step-0 eval: the initial train loss
            first = run.summary.get("first_loss")
        values.append(first)
    return mean_sd(values)[0]


def chance_level(runs: list[RunRecord], metric: str) -> float | None:
    """The chance level of a bounded metric as the runs' task declares it (`Task.chance`)."""
    from pydantic import ValidationError

    from trx.tasks import TASKS  # imports torch: only for a bounded metric

    for run in runs:
        task = (run.config or {}).get("task")
        if isinstance(task, dict) and task.get("name") in TASKS:
            cls = TASKS[task["name"]]
            try:
                return cls.chance(cls.Options.model_validate({k: v for k, v in task.items() if k != "name"})).get(metric)
            except ValidationError:
                continue
    return None


def reference_value(runs: list[RunRecord], metric: str) -> float | None:
    """The zero improvements are measured from: the task's chance level for a bounded metric
    (accuracy), else the metric before training (`initial_value`)."""
    if higher_is_better(metric):
        chance = chance_level(runs, metric)
        if chance is not None:
            return chance
    return initial_value(runs, metric)


def lr_curves(runs: list[RunRecord]) -> dict[tuple[str, str, str], dict[float, list[RunRecord]]]:
    """Sweep grid cells by (experiment, arm, other grid values) and learning rate; boundary
    probes (run by some seeds at lrs off the grid) are left out: they count for the boundary only."""
    curves: dict[tuple[str, str, str], dict[float, list[RunRecord]]] = {}
    for run in sorted(runs, key=lambda r: (r.name, r.arm, [(k, natural_key(v)) for k, v in r.overrides])):
        if run.cell is None or run.lr is None or run.probe:
            continue
        rest = ",".join(f"{k}={v}" for k, v in run.overrides if k != "lr")
        curves.setdefault((run.name, run.arm, rest), {}).setdefault(run.lr, []).append(run)
    return curves


def curve_values(by_lr: dict[float, list[RunRecord]], metric: str) -> tuple[list[float], dict[int, list[float | None]]]:
    """(ascending lrs, final `metric` by seed, one per lr): None where the cell diverged, did not
    complete or is missing for that seed."""
    lrs = sorted(by_lr)
    per_lr = [seed_values(by_lr[lr], metric) for lr in lrs]
    seeds = sorted({s for values in per_lr for s in values})
    return lrs, {s: [values.get(s) for values in per_lr] for s in seeds}


def curve_band(by_lr: dict[float, list[RunRecord]], metric: str, tolerance: float = 0.1, absolute: bool = False) -> Band:
    """`lr_band` of one sweep curve, improvement measured from `reference_value`."""
    lrs, by_seed = curve_values(by_lr, metric)
    reference = reference_value([r for members in by_lr.values() for r in members], metric)
    return lr_band(lrs, by_seed, tolerance, higher_is_better(metric), reference, absolute=absolute)


def band_curves(runs: list[RunRecord]) -> dict[tuple[str, str, str], dict[float, list[RunRecord]]]:
    """The lr curves long enough for a band around a best point: three learning rates or more."""
    return {key: by_lr for key, by_lr in lr_curves(runs).items() if len(by_lr) >= 3}


def lr_table(runs: list[RunRecord], metric: str = "loss", tolerance: float = 0.1) -> pd.DataFrame:
    """Per optimizer arm of a sweep (and per setting of its other axes) with at least three learning
    rates: best lr, its result (mean ± sd over seeds) and the lr band of `trx.stats.lr_band`
    (edges interpolated in log-lr, width in decades of the seed-mean curve, flags in `note`), and
    the median of the per-seed band widths with its order-statistic interval (`seed_decades_ci`,
    of confidence `ci_conf`). A cell diverged, failed or unfinished in any seed is outside the band."""
    curves = band_curves(runs)
    several = several_names(curves)
    rows = []
    for key, by_lr in curves.items():
        band = curve_band(by_lr, metric, tolerance)
        best_sd = mean_sd([result(r, metric) for r in by_lr[band.best_lr]])[1] if band.best_lr in by_lr else None
        diverged = sum(any(r.diverged for r in members) for members in by_lr.values())
        rows.append({"arm": group_label(key, several), "lrs": len(by_lr), "seeds": band.n_seeds,
                     "best_lr": band.best_lr, f"best_{metric}": band.best, f"best_{metric}_std": best_sd,
                     "tolerant_lr_lo": band.lo, "tolerant_lr_hi": band.hi, "tolerance_decades": band.decades,
                     **_seed_widths(band), "diverged_lrs": f"{diverged}/{len(by_lr)}", "note": band.note})
    table = pd.DataFrame(rows)
    return table if table.empty else _drop_empty(table)


ABSOLUTE_TOLERANCES = (0.01, 0.02, 0.05, 0.1, 0.2)  # metric units (nats for a loss, a share for an accuracy)


def tolerance_curve_table(runs: list[RunRecord], metric: str = "loss") -> pd.DataFrame:
    """Band width against its definition, per lr curve: each relative tolerance in
    `trx.stats.TOLERANCES` and each absolute one in ABSOLUTE_TOLERANCES (metric units), the
    seed-mean curve's width and the median per-seed width with its order-statistic interval."""
    curves = band_curves(runs)
    several = several_names(curves)
    rows = []
    for key, by_lr in curves.items():
        for absolute, tolerances in ((False, TOLERANCES), (True, ABSOLUTE_TOLERANCES)):
            for tol in tolerances:
                band = curve_band(by_lr, metric, tol, absolute)
                rows.append({"arm": group_label(key, several), "kind": "absolute" if absolute else "relative",
                             "tolerance": tol, "decades": band.decades, "open": band.open_low or band.open_high,
                             **_seed_widths(band)})
    return pd.DataFrame(rows)


def _seed_widths(band: Band) -> dict[str, float | None]:
    """The median of the per-seed band widths and its order-statistic interval, of confidence `ci_conf`."""
    lo, hi = band.ci or (None, None)
    median = float(np.median(band.seed_widths)) if band.seed_widths else None
    return {"seed_decades": median, "seed_decades_ci_lo": lo, "seed_decades_ci_hi": hi, "ci_conf": band.ci_level}


# ---- rendering --------------------------------------------------------------------------------
def cell_text(v: Any) -> str:
    """A table cell: '-' for missing, 4 significant digits for floats."""
    if v is None or (isinstance(v, float) and v != v):
        return "-"
    if isinstance(v, float):
        return f"{v:.4g}"
    return str(v)


def duration_text(seconds: float) -> str:
    """`12.5 s`, or `3.2 min` from two minutes on."""
    return f"{seconds:.1f} s" if seconds < 120 else f"{seconds / 60:.1f} min"


def display_frame(table: pd.DataFrame) -> pd.DataFrame:
    """Strings for people: `x_std` folded into `x` as `mean ± std`, `x_ci_lo`/`x_ci_hi` into
    `x_ci` as `[lo, hi]`, numbers in %.4g."""
    out = {}
    for col in table.columns:
        if (col.endswith("_std") and col[:-4] in table.columns) or col.endswith("_ci_hi"):
            continue
        if col.endswith("_ci_lo") and f"{col[:-3]}_hi" in table.columns:
            out[col[:-3]] = [interval_text(lo, hi) for lo, hi in zip(table[col], table[f"{col[:-3]}_hi"])]
            continue
        texts = [cell_text(v) for v in table[col]]
        if f"{col}_std" in table.columns:
            stds = table[f"{col}_std"]
            texts = [t if t == "-" or s is None or s != s else f"{t} ± {s:.2g}" for t, s in zip(texts, stds)]
        out[col] = texts
    return pd.DataFrame(out, columns=list(out))


def interval_text(lo: Any, hi: Any) -> str:
    """`[lo, hi]` in %.4g, '-' when there is no interval."""
    if lo is None or hi is None or lo != lo or hi != hi:
        return "-"
    return f"[{lo:.4g}, {hi:.4g}]"


def to_markdown(table: pd.DataFrame) -> str:
    shown = display_frame(table)
    numeric = {c for c in table.columns if c in shown.columns and table[c].dtype.kind in "fiu"}
    numeric |= {c for c in shown.columns if f"{c}_lo" in table.columns}  # folded intervals
    head = "| " + " | ".join(shown.columns) + " |"
    rule = "|" + "|".join("---:" if c in numeric else "---" for c in shown.columns) + "|"
    body = ["| " + " | ".join(t.replace("|", "\\|") for t in row) + " |" for row in shown.itertuples(index=False)]
    return "\n".join([head, rule, *body])


def to_csv(table: pd.DataFrame) -> str:
    return table.to_csv(index=False)
