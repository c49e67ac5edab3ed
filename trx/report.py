"""Comparison tables from run summaries (pandas): `trx run`'s table, and `trx compare` over run
and sweep folders with means over seeds, steps to a target and the learning-rate tolerance."""

from __future__ import annotations

import functools
import math
import re
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import pandas as pd
import yaml

from trx.config import UserError
from trx.io import atomic_write, read_json, read_metrics
from trx.stats import mean_sd

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
    cell: str | None  # the sweep cell id, None for an arm of `trx run`

    @property
    def arm(self) -> str:
        return str(self.summary.get("arm") or self.dir.name)

    @property
    def name(self) -> str:
        return str(self.summary.get("name") or "")

    @property
    def overrides(self) -> list[tuple[str, str]]:
        """The cell's `key=value` pairs without the seed (as written in its id)."""
        return [(k, v) for k, v in split_cell_id(self.cell or "") if k != "seed"]

    @property
    def lr(self) -> float | None:
        arm = ((self.config or {}).get("optimizers") or {}).get(self.arm) or {}
        if isinstance(arm.get("lr"), (int, float)):
            return float(arm["lr"])
        text = dict(self.overrides).get("lr")
        return _float(text)

    @property
    def diverged(self) -> bool:
        return bool(self.summary.get("diverged")) or self.summary.get("status") == "diverged"

    @functools.cached_property
    def metrics(self) -> list[dict[str, float | None]]:
        try:
            return read_metrics(self.dir / "metrics.csv")
        except (OSError, ValueError):
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
    """Every summary.json at or below the given arm, experiment or sweep folders."""
    found: dict[Path, RunRecord] = {}
    for path in paths:
        path = Path(path)
        if not path.exists():
            raise UserError(f"RUN_DIR: no such file or folder: {path}")
        files = [path] if path.is_file() else sorted(path.rglob("summary.json"))
        files = [f for f in files if f.name == "summary.json"]
        if not files:
            raise UserError(f"RUN_DIR: no summary.json in or below {path}",
                            hint="pass folders written by trx run or trx sweep (arm, experiment or sweep folders)")
        for f in files:
            summary = read_json(f)
            if not isinstance(summary, dict):
                raise UserError(f"RUN_DIR: {f} is not a readable summary")
            run_dir = f.parent.resolve()
            if run_dir not in found:
                found[run_dir] = _record(run_dir, summary)
    return list(found.values())


def _record(run_dir: Path, summary: dict[str, Any]) -> RunRecord:
    try:
        config = yaml.safe_load((run_dir / "config.yaml").read_text())
    except (OSError, yaml.YAMLError):
        config = None
    in_sweep = run_dir.parent.parent.name == "sweep" and run_dir.parent.name == summary.get("arm")
    return RunRecord(run_dir, summary, config if isinstance(config, dict) else None, run_dir.name if in_sweep else None)


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


def group_label(key: tuple[str, str, str], several_names: bool) -> str:
    name, arm, cell = key
    text = f"{name}/{arm}" if several_names else arm
    return f"{text} {cell}" if cell else text


def _counts(values: list[str]) -> str:
    counts = {v: values.count(v) for v in dict.fromkeys(values)}
    return next(iter(counts)) if len(counts) == 1 else ", ".join(f"{v} {n}/{len(values)}" for v, n in counts.items())


def compare_table(runs: list[RunRecord], metric: str = "loss", target: float | None = None) -> pd.DataFrame:
    """One row per arm or sweep cell, averaged over seeds: mean columns and `<col>_std`."""
    groups = group_runs(runs)
    several = len({k[0] for k in groups}) > 1
    evals = sorted({k for r in runs for k in r.summary if k.startswith("final_val")})
    extra = [] if metric == "loss" or f"final_{metric}" in evals else [metric]
    rows = []
    for key, members in groups.items():
        row: dict[str, Any] = {"run": group_label(key, several), "seeds": len(members),
                               "status": _counts([str(r.summary.get("status")) for r in members])}
        for col in ["final_loss", "best_loss", *evals]:
            row[col], row[f"{col}_std"] = mean_sd([r.summary.get(col) for r in members])
        for m in extra:
            row[f"final_{m}"], row[f"final_{m}_std"] = mean_sd([result(r, m) for r in members])
        if target is not None:
            hits = [steps_to_target(r, metric, target) for r in members]
            reached = [h for h in hits if h is not None]
            mean, std = mean_sd(hits) if len(reached) == len(hits) else (None, None)
            row["steps_to_target"], row["steps_to_target_std"] = mean, std
            row["reached"] = f"{len(reached)}/{len(hits)}"
        row["diverged"] = f"{sum(r.diverged for r in members)}/{len(members)}"
        row["wall_time_s"] = mean_sd([r.summary.get("wall_time_s") for r in members])[0]
        rows.append(row)
    table = pd.DataFrame(rows)
    return table.drop(columns=[c for c in table.columns if c.endswith("_std") and table[c].isna().all()])


# ---- learning-rate tolerance ------------------------------------------------------------------
@dataclass
class Tolerance:
    best_lr: float | None
    best: float | None
    lo: float | None
    hi: float | None
    decades: float | None
    note: str


def lr_tolerance(lrs: list[float], values: list[float | None], tolerance: float, higher_better: bool) -> Tolerance:
    """The contiguous run of grid learning rates around the best whose value is within
    `tolerance` (relative) of the best; None marks a diverged (or missing) point."""
    order = sorted(range(len(lrs)), key=lambda i: lrs[i])
    lrs = [lrs[i] for i in order]
    values = [values[i] if values[i] is not None and math.isfinite(values[i]) else None for i in order]
    scored = [i for i, v in enumerate(values) if v is not None]
    if not scored:
        return Tolerance(None, None, None, None, None, "every learning rate diverged")
    sign = -1.0 if higher_better else 1.0
    b = min(scored, key=lambda i: sign * values[i])
    best = values[b]

    def ok(i: int) -> bool:
        return values[i] is not None and sign * (values[i] - best) <= tolerance * abs(best)

    lo = hi = b
    while lo > 0 and ok(lo - 1):
        lo -= 1
    while hi < len(lrs) - 1 and ok(hi + 1):
        hi += 1
    notes = []
    if len(lrs) > 1 and b in (0, len(lrs) - 1):
        notes.append(f"best at the {'low' if b == 0 else 'high'} edge: range too narrow")
    elif len(lrs) > 1 and (lo == 0 or hi == len(lrs) - 1):
        notes.append("tolerant range reaches the edge: width is a lower bound")
    return Tolerance(lrs[b], best, lrs[lo], lrs[hi], math.log10(lrs[hi] / lrs[lo]), "; ".join(notes))


def lr_table(runs: list[RunRecord], metric: str = "loss", tolerance: float = 0.1) -> pd.DataFrame:
    """Per optimizer arm of a sweep (and per setting of its other axes) with at least two learning
    rates: best lr, best result, and the lr tolerance, with results averaged over seeds (a cell
    diverged, failed or unfinished in any seed counts as diverged)."""
    curves: dict[tuple[str, str, str], dict[float, list[RunRecord]]] = {}
    for run in sorted(runs, key=lambda r: (r.name, r.arm, [(k, natural_key(v)) for k, v in r.overrides])):
        if run.cell is None or run.lr is None:
            continue
        rest = ",".join(f"{k}={v}" for k, v in run.overrides if k != "lr")
        curves.setdefault((run.name, run.arm, rest), {}).setdefault(run.lr, []).append(run)
    several = len({k[0] for k in curves}) > 1
    better = higher_is_better(metric)
    rows = []
    for key, by_lr in curves.items():
        lrs = sorted(by_lr)
        if len(lrs) < 2:  # lr is not an axis of this sweep
            continue
        means, stds, diverged = [], [], 0
        for lr in lrs:
            members = by_lr[lr]
            bad = any(r.diverged or r.summary.get("status") != "complete" for r in members)
            mean, std = mean_sd([result(r, metric) for r in members])
            diverged += any(r.diverged for r in members)
            means.append(None if bad else mean)
            stds.append(std)
        tol = lr_tolerance(lrs, means, tolerance, better)
        best_std = stds[lrs.index(tol.best_lr)] if tol.best_lr is not None else None
        rows.append({"arm": group_label(key, several), "lrs": len(lrs), "seeds": max(len(m) for m in by_lr.values()),
                     "best_lr": tol.best_lr, f"best_{metric}": tol.best, f"best_{metric}_std": best_std,
                     "tolerant_lr_lo": tol.lo, "tolerant_lr_hi": tol.hi, "tolerance_decades": tol.decades,
                     "diverged_lrs": f"{diverged}/{len(lrs)}", "note": tol.note})
    table = pd.DataFrame(rows)
    if not table.empty and table[f"best_{metric}_std"].isna().all():
        table = table.drop(columns=[f"best_{metric}_std"])
    return table


# ---- rendering --------------------------------------------------------------------------------
def cell_text(v: Any) -> str:
    """A table cell: '-' for missing, 4 significant digits for floats."""
    if v is None or (isinstance(v, float) and v != v):
        return "-"
    if isinstance(v, float):
        return f"{v:.4g}"
    return str(v)


def display_frame(table: pd.DataFrame) -> pd.DataFrame:
    """Strings for people: `x_std` folded into `x` as `mean ± std`, numbers in %.4g."""
    out = {}
    for col in table.columns:
        if col.endswith("_std") and col[:-4] in table.columns:
            continue
        texts = [cell_text(v) for v in table[col]]
        if f"{col}_std" in table.columns:
            stds = table[f"{col}_std"]
            texts = [t if t == "-" or s is None or s != s else f"{t} ± {s:.2g}" for t, s in zip(texts, stds)]
        out[col] = texts
    return pd.DataFrame(out, columns=list(out))


def to_markdown(table: pd.DataFrame) -> str:
    shown = display_frame(table)
    numeric = {c for c in table.columns if c in shown.columns and table[c].dtype.kind in "fiu"}
    head = "| " + " | ".join(shown.columns) + " |"
    rule = "|" + "|".join("---:" if c in numeric else "---" for c in shown.columns) + "|"
    body = ["| " + " | ".join(t.replace("|", "\\|") for t in row) + " |" for row in shown.itertuples(index=False)]
    return "\n".join([head, rule, *body])


def to_csv(table: pd.DataFrame) -> str:
    return table.to_csv(index=False)
