"""Two claim kinds beyond a final metric: how fast an arm reaches a target (`steps_to_target`) and
whether its best learning rate stays put as the model widens (`lr_transfer`).

The statistics are pure functions on per-seed numbers (the null simulations call them); the claim
judges read the runs and give `trx report` a verdict with its numbers in words. docs/statistics.md
defines both and gives their measured false-positive rates.

- steps_to_target: per seed, log10 of the first logged step whose metric reaches the target; a
  run that never reaches it, or diverged before it, scores log10(steps + 1) — the best it could have done
  had it reached the target just after its last update, so a non-reaching seed only ever
  *understates* how much slower it is. The per-seed differences a − b in log10 steps are tested
  like any final metric (paired t, exact sign-flip where every seed agrees; one-sided 2.5%);
  10^difference is the ratio of steps a / b, with its interval.
- lr_transfer: per seed, the best lr (argmin of the final metric over the arm's lr grid) at each
  value of a width axis, then the least-squares slope of log10(best lr) on log10(width): decades
  of lr per decade of width. `transfers`: the slope lies within ±δ (two one-sided tests, each at
  2.5%); `shifts`: the slope is not 0 (each side at 2.5%: 5% in all). Both by the exact sign-flip
  test on the per-seed slopes, which are lumpy (a t test exceeded its level on them by
  simulation), so fewer than 6 seeds cannot reach the level; the mean's t interval is descriptive.
"""

from __future__ import annotations

import math
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING

import numpy as np

from trx.compare import (
    RunRecord,
    higher_is_better,
    interval_text,
    lr_curves,
    seed_values,
    steps_to_target,
)
from trx.claims import ClaimResult, num, p_text, paired_runs, pnum, select, side_label
from trx.stats import Paired, decide, paired_difference, rounding_floor, sign_flip_pvalue, t_interval, too_few

if TYPE_CHECKING:
    from trx.config import Claim, GroupSelector


# ---- statistics -----------------------------------------------------------------------------------
def log_steps(reached: int | None, steps: int) -> float:
    """log10 of the steps a seed took to the target; not reached (None) scores log10(steps + 1).
    A target met at step 0 counts as one step (log 0)."""
    return math.log10(steps + 1 if reached is None else max(reached, 1))


def steps_difference(a_log: Mapping[int, float | None], b_log: Mapping[int, float | None],
                     delta: float = 0.0) -> Paired:
    """"a reaches the target in fewer steps than b (by more than δ decades)" on per-seed log10
    steps: the paired t test (exact sign-flip where every seed gives the same difference); None
    excludes a seed (a run that crashed or did not finish)."""
    return paired_difference(a_log, b_log, higher_better=False, delta=delta)


def ratio_interval(p: Paired) -> tuple[float | None, float | None, float | None]:
    """(ratio, lo, hi) of steps a / b: 10^ of the mean log difference and of its interval."""
    def up(x: float | None) -> float | None:
        return None if x is None else float(10**x)
    return up(p.mean_diff), up(p.lo), up(p.hi)


def best_lrs(lrs: Sequence[float], values_by_seed: Mapping[int, Sequence[float | None]], higher_better: bool
             ) -> dict[int, float | None]:
    """Each seed's best lr: the argmin (argmax for an accuracy) of its finite final values (a
    diverged lr, NaN, is never best); None where none is finite or any lr has no result (None: a
    crashed or missing cell could have been the best)."""
    out: dict[int, float | None] = {}
    for seed, values in values_by_seed.items():
        finite = [(float(v), lr) for v, lr in zip(values, lrs) if v is not None and math.isfinite(v)]
        missing = len(values) < len(lrs) or any(v is None for v in values)
        out[seed] = None if missing or not finite else ((max if higher_better else min)(finite)[1])
    return out


def slope(widths: Sequence[float], lrs: Sequence[float]) -> float | None:
    """Least-squares slope of log10(lr) on log10(width); None below two distinct widths."""
    x, y = np.log10(np.asarray(widths, float)), np.log10(np.asarray(lrs, float))
    if len(set(x.tolist())) < 2:
        return None
    return round(float(np.polyfit(x, y, 1)[0]), 12)  # a flat line is 0, not 1e-15


def seed_slopes(best_by_width: Mapping[float, Mapping[int, float | None]]) -> dict[int, float | None]:
    """Per seed, the slope over the widths where that seed has a best lr (None below two)."""
    seeds = sorted({s for by_seed in best_by_width.values() for s in by_seed})
    out = {}
    for s in seeds:
        points = [(w, by_seed[s]) for w, by_seed in best_by_width.items() if by_seed.get(s) is not None]
        out[s] = slope([w for w, _ in points], [lr for _, lr in points])  # type: ignore[misc]
    return out


@dataclass(frozen=True)
class Transfer:
    """The verdict on an lr-transfer claim from per-seed slopes."""

    n: int
    mean: float | None
    lo: float | None  # 95% t interval of the mean slope
    hi: float | None
    verdict: str
    p: float | None  # one-sided p of the claim (for `shifts`: the smaller side's)
    p_against: float | None
    note: str
    method: str


def within(slopes: list[float], delta: float) -> float:
    """One-sided p of "|mean slope| < δ": the larger of the two exact sign-flip p-values of
    "slope > −δ" and "slope < δ" (two one-sided tests, each at 2.5%)."""
    return max(sign_flip_pvalue(slopes, -delta) or 1.0, sign_flip_pvalue([-v for v in slopes], -delta) or 1.0)


def beyond(slopes: list[float], shift: float) -> float:
    """One-sided p of "the slope lies beyond ±shift" on the side the data point to: the smaller of
    the two exact sign-flip p-values of "slope > shift" and "slope < −shift"."""
    return min(sign_flip_pvalue(slopes, shift) or 1.0, sign_flip_pvalue([-v for v in slopes], shift) or 1.0)


def transfer_verdict(slopes: Mapping[int, float | None], expect: str, delta: float | None) -> Transfer:
    """`transfers`: |mean slope| < δ, two one-sided tests each at 2.5%; contradicted when the slope
    is shown beyond ±δ (that p doubled: either side). `shifts`: the slope differs from 0, each side
    at 2.5%; contradicted, with δ given, when it is shown within ±δ. Every test is the exact
    sign-flip test on the per-seed slopes: they are lumpy (best lrs sit on grid points) and a t test
    on them exceeded its level by simulation (6.2% for a nominal 5% at 3 seeds); so, as for band
    widths, fewer than 6 seeds cannot reach the level. The t interval is descriptive."""
    ok = [v for v in slopes.values() if v is not None]
    ci = t_interval(ok)
    lo, hi = ci if ci else (None, None)
    if len(ok) < 2:
        return Transfer(len(ok), ok[0] if ok else None, lo, hi, decide(None, None), None, None,
                        "needs at least two seeds with a slope", "sign-flip")
    floor = rounding_floor(ok)
    if expect == "transfers":
        assert delta, "a transfers claim needs δ (the config requires it)"
        p_for, p_against = within(ok, delta), min(1.0, 2 * beyond(ok, delta))
    else:
        p_for, p_against = beyond(ok, floor), (within(ok, delta) if delta else None)
    return Transfer(len(ok), sum(ok) / len(ok), lo, hi, decide(p_for, p_against), p_for, p_against, too_few(len(ok)),
                    "exact sign-flip" + (", each side at 2.5%" if expect == "shifts" else ""))


# ---- claims ---------------------------------------------------------------------------------------
def _result(claim: Claim, text: str, verdict: str, numbers: str, p: float | None = None,
            p_against: float | None = None, table: str = "") -> ClaimResult:

    return ClaimResult(text, verdict, numbers, p, p_against, claim.primary, table)


def _steps_by_seed(mine: list[RunRecord], metric: str, target: float) -> tuple[dict[int, float | None], int, int]:
    """(log10 steps per seed, seeds not reaching the target, the steps a non-reaching seed is
    scored at + 1); a crashed or unfinished run is None (its seed is excluded)."""
    steps = max(int(r.summary.get("steps") or 0) for r in mine)
    out: dict[int, float | None] = {}
    missed = 0
    for i, run in enumerate(mine):
        seed = run.seed if run.seed is not None else i
        if not run.complete and not run.diverged:
            out[seed] = None
            continue
        reached = steps_to_target(run, metric, target)  # a diverged run's last row cannot meet it
        missed += reached is None
        out[seed] = log_steps(reached, steps)
    return out, missed, steps


def judge_steps(claim: Claim, text: str, sides: list[GroupSelector], chosen: list[list[RunRecord]],
                metric: str) -> ClaimResult:
    """A `steps_to_target` claim: each side's steps to the target, paired by seed."""

    found = paired_runs(claim, text, sides, chosen, metric)
    if isinstance(found, ClaimResult):
        return found
    chosen, seeds_words = found
    target = float(claim.target)  # type: ignore[arg-type]
    (a, miss_a, steps), (b, miss_b, _) = (_steps_by_seed(mine, metric, target) for mine in chosen)
    p = steps_difference(a, b, claim.delta or 0.0)
    ratio, lo, hi = ratio_interval(p)
    medians = []
    for side, by_seed, miss in zip(sides, (a, b), (miss_a, miss_b)):
        seen = [10**v for v in by_seed.values() if v is not None]
        med = float(np.median(seen)) if seen else None
        not_reached = f", {miss} not reached" if miss else ""
        medians.append(f"{side_label(side)} {num(med)}{not_reached}")
    comparator = "≥" if higher_is_better(metric) else "≤"
    excluded = f", {p.excluded} seed(s) excluded (unpaired or unfinished)" if p.excluded else ""
    test = "paired t" if p.method == "paired t" else "exact sign-flip"
    delta = f", δ = {claim.delta:g} decades" if claim.delta else ""
    note = f"; {p.note}" if p.note else ""
    numbers = (f"steps to {metric} {comparator} {target:g}: median {'; '.join(medians)} (a seed that never reaches "
               f"it, or diverged before it, scores {steps + 1} steps: a lower bound on its own steps); ratio of steps "
               f"{side_label(sides[0])} / {side_label(sides[1])} = {num(ratio)}, 95% CI {interval_text(lo, hi)} "
               f"({test} on log10 steps over n = {p.n} seeds{delta}{excluded}{p_text(p)}){seeds_words}{note}")
    return _result(claim, text, p.verdict, numbers, p.p, p.p_against)


def axis_value(run: RunRecord, axis: str) -> float | None:
    """The run's grid value of `axis` (full key, or the key below the arm)."""
    for key, value in (*run.meta.overrides.items(), *run.meta.short.items()):
        if key == axis:
            try:
                return float(value)
            except (TypeError, ValueError):
                return None
    return None


def _best_by_width(mine: list[RunRecord], axis: str, metric: str
                   ) -> dict[float, dict[int, float | None]] | str:
    """Each axis value's per-seed best lr, or why there is none."""
    by_width: dict[float, list[RunRecord]] = {}
    for run in mine:
        width = axis_value(run, axis)
        if width is None or not width > 0:
            return f"a run without a positive grid value of `{axis}`"
        by_width.setdefault(width, []).append(run)
    out = {}
    for width, members in sorted(by_width.items()):
        curves = [c for c in lr_curves(members).values() if len(c) >= 2]
        if len(curves) != 1:
            return f"{axis}={width:g}: {len(curves)} lr curves; add `where:` to pick one"
        lrs = sorted(curves[0])
        values = {s: [seed_values(curves[0][lr], metric).get(s) for lr in lrs]
                  for s in sorted({r.seed for rs in curves[0].values() for r in rs if r.seed is not None})}
        out[width] = best_lrs(lrs, values, higher_is_better(metric))
    if len(out) < 2:
        return f"needs two or more values of `{axis}`, found {len(out)}"
    return out


def transfer_table(best: Mapping[float, Mapping[int, float | None]], slopes: Mapping[int, float | None],
                   axis: str) -> str:
    """Markdown: per seed, the best lr at each axis value and the slope."""

    widths = sorted(best)
    head = f"| seed | {' | '.join(f'best lr at {axis}={w:g}' for w in widths)} | slope |"
    rows = [head, "|---" * (len(widths) + 2) + "|"]
    for s in sorted(slopes):
        cells = [num(best[w].get(s)) for w in widths]
        rows.append(f"| {s} | {' | '.join(cells)} | {num(slopes[s])} |")
    return "\n".join(rows)


def judge_transfer(claim: Claim, text: str, sides: list[GroupSelector], chosen: list[list[RunRecord]],
                   metric: str) -> ClaimResult:
    """An `lr_transfer` claim: the slope of log best lr on log width over seeds."""

    axis = str(claim.axis)
    best = _best_by_width(chosen[0], axis, metric)
    if isinstance(best, str):
        return _result(claim, text, "not evaluated", f"{side_label(sides[0])}: {best}")
    slopes = seed_slopes(best)
    found = transfer_verdict(slopes, claim.expect, claim.delta)
    edges = [f"{w:g}" for w, by_seed in best.items() for lr in by_seed.values() if lr is not None
             and lr in _grid_ends(chosen[0], axis, w)]
    edge = f"; the best lr sits at the grid's end in {len(edges)} seed×width point(s): widen the grid" if edges else ""
    lost = sum(lr is None for by_seed in best.values() for lr in by_seed.values())
    edge += f"; {lost} seed×width point(s) without a best lr (a crashed or missing cell, or every lr diverged)" if lost else ""
    delta = f" against ±δ = {claim.delta:g}" if claim.delta else ""
    p = f", p = {pnum(found.p)}" if found.p is not None else ""
    note = f"; {found.note}" if found.note else ""
    numbers = (f"slope of log10(best lr) on log10({axis}) for {side_label(sides[0])} = {num(found.mean)}, 95% CI "
               f"{interval_text(found.lo, found.hi)} ({found.method}{delta}, over n = {found.n} seeds{p}; "
               f"widths {', '.join(f'{w:g}' for w in best)}){edge}{note}")
    return _result(claim, text, found.verdict, numbers, found.p, found.p_against, transfer_table(best, slopes, axis))


def _grid_ends(mine: list[RunRecord], axis: str, width: float) -> tuple[float, float]:
    lrs = sorted({r.lr for r in mine if axis_value(r, axis) == width and r.lr is not None})
    return (lrs[0], lrs[-1]) if lrs else (math.nan, math.nan)


# ---- figure ---------------------------------------------------------------------------------------
def transfer_figures(runs: list[RunRecord], claims: object, metric: str, report: Path) -> list[tuple[str, str]]:
    """`<stem>_transfer.png` beside the report: best lr against the axis of the experiment's
    lr_transfer claims, log-log, one line per arm; [] without such a claim or data for it."""
    from trx.config import parse_claims

    if not claims:
        return []
    parsed = parse_claims(claims)
    lines: dict[str, dict[float, dict[int, float | None]]] = {}
    axes = []
    for claim in (c for c in parsed if c.kind == "lr_transfer"):
        best = _best_by_width(select(runs, claim.a, claim.evaluation_seeds), str(claim.axis), claim.metric or metric)
        if not isinstance(best, str):
            lines[claim.a.arm] = best
            axes.append(str(claim.axis))
    if not lines:
        return []
    name = f"{report.stem}_transfer.png"
    draw_transfer(lines, " / ".join(dict.fromkeys(axes)), report.parent / name)
    return [("transfer", name)]


def draw_transfer(lines: Mapping[str, Mapping[float, Mapping[int, float | None]]], axis: str, path: Path) -> None:
    """Best lr against width, log-log: per arm the geometric mean over seeds (line) and each
    seed's best lr (dots, spread sideways so that seeds on one grid point stay visible)."""
    import matplotlib.pyplot as plt

    from trx.plots import STYLE, plain_log_ticks, save_figure

    with plt.rc_context(STYLE):
        fig, ax = plt.subplots(figsize=(5.5, 4.0))
        for i, (arm, best) in enumerate(lines.items()):
            color = plt.get_cmap("tab10")(i % 10)
            widths = sorted(best)
            means = [10 ** float(np.mean(np.log10(found))) if (found := [v for v in best[w].values() if v]) else np.nan
                     for w in widths]
            ax.plot(widths, means, "-o", color=color, label=f"{arm} (geometric mean over seeds)")
            for w in widths:
                seeds = [v for v in best[w].values() if v]
                spread = w * 10 ** (0.012 * (np.arange(len(seeds)) - (len(seeds) - 1) / 2))
                ax.scatter(spread, seeds, s=10, color=color, alpha=0.45, linewidths=0)
        ax.set(xscale="log", yscale="log", xlabel=axis, ylabel="best learning rate (argmin of the final metric)")
        plain_log_ticks(ax)
        widths = sorted({w for best in lines.values() for w in best})
        ax.set_xticks(widths, [f"{w:g}" for w in widths])  # the widths run, not decades
        ax.set_xticks([], minor=True)
        ax.set_title("best lr against width (dots: seeds; a flat line: the lr transfers)", fontsize=9)
        ax.legend(fontsize=8)
        save_figure(fig, path)
