"""The report's view of a boundary sweep (`sweep.boundary`): each series' bracket read back from
the cells (`trx.boundary`, the same rule the search used), the median boundary over seeds with
its order-statistic interval, and the numbers of a `boundary` claim."""

from __future__ import annotations

import math
from pathlib import Path
from typing import Any, Mapping

import pandas as pd

from trx.boundary import Bracket, Point, boundary_difference, brackets, point_text, probe_of
from trx.compare import RunRecord, interval_text, to_markdown
from trx.stats import Paired, median_interval


def search_rule(experiment: Mapping[str, Any] | None) -> dict[str, Any] | None:
    """The experiment's `sweep.boundary` block (None: not a boundary sweep)."""
    found = ((experiment or {}).get("sweep") or {}).get("boundary")
    return found if isinstance(found, dict) else None


def seed_brackets(runs: list[RunRecord], search: Mapping[str, Any]) -> dict[tuple[str, Point], dict[int, Bracket]]:
    """Each (arm, grid point)'s bracket per seed, from that seed's own probes."""
    probes = [p for p in map(probe_of, runs) if p is not None]
    out: dict[tuple[str, Point], dict[int, Bracket]] = {}
    for (arm, point, seed), br in brackets(probes, search.get("stable") or {}, "seed").items():
        out.setdefault((arm, point), {})[seed] = br  # type: ignore[index]
    return out


def median_boundary(by_seed: Mapping[int, Bracket]) -> tuple[float, tuple[float, float, float] | None] | None:
    """(median L over seeds, its order-statistic interval (lo, hi, confidence) or None), in lr;
    None when no seed has a boundary."""
    logs = sorted(v for v in (b.log10 for b in by_seed.values()) if v is not None)
    if not logs:
        return None
    found = median_interval(logs)
    return (10 ** ((logs[(len(logs) - 1) // 2] + logs[len(logs) // 2]) / 2),
            (10 ** found[0], 10 ** found[1], found[2]) if found else None)


def median_text(by_seed: Mapping[int, Bracket]) -> tuple[str, str]:
    """(median boundary over seeds, its order-statistic interval with confidence)."""
    found = median_boundary(by_seed)
    if found is None:
        return "-", "-"
    mid, ci = found
    return f"{mid:.4g}", f"{interval_text(ci[0], ci[1])} ({ci[2]:.0%})" if ci else "-"


def boundary_section(runs: list[RunRecord], search: Mapping[str, Any] | None) -> str:
    if search is None:
        return ""
    rows = []
    for (arm, point), by_seed in seed_brackets(runs, search).items():
        median, ci = median_text(by_seed)
        bounds = sum(b.status in ("open", "censored") for b in by_seed.values())
        rows.append({"arm": arm, "grid point": point_text(point),
                     "brackets by seed": "; ".join(f"{s}: {b.text()}" for s, b in sorted(by_seed.items())),
                     "median L": median, "interval": ci, "open/censored": f"{bounds}/{len(by_seed)}"})
    if not rows:
        return ""
    stable = search.get("stable") or {}
    rule = ", ".join(f"{k} {v:g}" for k, v in stable.items() if v is not None)
    return "\n".join([
        "## Stability boundary", "",
        f"Bisection in log-lr ({search.get('bisections')} per series, per {search.get('per', 'seed')}) after the "
        f"coarse grid. A run is unstable when it diverged or stalled{' or by the rule: ' + rule if rule else ''} "
        "(the final val loss where evaluated, else the final train loss; `within` against the series' best). "
        "Each seed's bracket is [L, U): L the largest stable lr, U the next unstable lr probed above it; "
        "`> L`: every lr probed was stable (open: the boundary lies above the grid); `< U`: none was "
        "(censored below the grid); `incomplete`: a cell of the series crashed or did not run, so the bracket is "
        "unsure: it is left out of the median and the claims. `median L` is the median over seeds of L (the bottom lr for a censored "
        "seed) with its distribution-free order-statistic interval and exact confidence (75% at 3 seeds).",
        "", to_markdown(pd.DataFrame(rows, dtype=str))])


def boundary_numbers(chosen: list[list[RunRecord]], labels: list[str], delta: float, equivalent: bool,
                     search: Mapping[str, Any] | None) -> tuple[Paired | None, str]:
    """(the test, its numbers in words) of a boundary claim, a's side first; (None, why) when it
    cannot be evaluated."""
    if search is None:
        return None, "not a boundary sweep (the experiment has no sweep.boundary)"
    sides = []
    for label, mine in zip(labels, chosen):
        found = seed_brackets(mine, search)
        if len(found) != 1:
            why = "no lr probes" if not found else f"{len(found)} grid points; add `where:` to pick one"
            return None, f"{label}: {why}"
        sides.append(next(iter(found.values())))
    p = boundary_difference(sides[0], sides[1], delta, equivalent)
    factor = "-" if p.mean_diff is None else f"×{10 ** p.mean_diff:.3g}"
    ci = "-" if p.lo is None or p.hi is None else f"×[{10 ** p.lo:.3g}, {10 ** p.hi:.3g}]"
    test = p.method + (f" against ±{delta:g} decades" if equivalent else f", δ = {delta:g} decades" if delta else "")
    pval = "" if p.p is None else f", p = {p.p:.2g}"
    per_seed = "; ".join(f"{label} " + ", ".join(f"{s}: {b.text()}" for s, b in sorted(side.items()))
                         for label, side in zip(labels, sides))
    note = f"; {p.note}" if p.note else ""
    mean = "-" if p.mean_diff is None or not math.isfinite(p.mean_diff) else f"{p.mean_diff:.3g}"
    return p, (f"largest stable lr {labels[0]} / {labels[1]} = {factor}, 95% CI {ci} (log10 difference {mean} "
               f"decades; {test} over n = {p.n} seeds{pval}); brackets {per_seed}{note}")


def boundary_figures(runs: list[RunRecord], search: Mapping[str, Any] | None, report: Path) -> list[tuple[str, str]]:
    """`<stem>_boundary.png` beside the report: each series' brackets per seed; [] when the
    sweep has no boundary search or no probes."""
    if search is None:
        return []
    found = seed_brackets(runs, search)
    if not found:
        return []
    name = f"{report.stem}_boundary.png"
    draw_boundary(found, report.parent / name)
    return [("boundary", name)]


def draw_boundary(found: Mapping[tuple[str, Point], Mapping[int, Bracket]], path: Path) -> None:
    """One row per series (arm × grid point), log lr across: each seed's bracket [L, U) a short
    bar (seeds stacked within the row), the median L over seeds a diamond with its order-statistic
    interval; an open bracket ends in ▶ at its top lr, a censored one in ◀ at its bottom lr."""
    import matplotlib.pyplot as plt

    from trx.plots import STYLE, plain_log_ticks, save_figure

    arms = list(dict.fromkeys(arm for arm, _ in found))
    rows = sorted(found, key=lambda key: (arms.index(key[0]), key[1]))
    with plt.rc_context(STYLE):
        fig, ax = plt.subplots(figsize=(7.5, 0.42 * len(rows) + 1.3))
        for y, key in enumerate(rows):
            color = plt.get_cmap("tab10")(arms.index(key[0]) % 10)
            by_seed = found[key]
            n = len(by_seed)
            for k, (_, br) in enumerate(sorted(by_seed.items())):
                dy = y + 0.4 * ((k - (n - 1) / 2) / max(n - 1, 1))  # seeds spread over ±0.2 of the row
                if br.status == "closed":
                    ax.plot([br.stable, br.unstable], [dy, dy], "-", color=color, lw=1.6, alpha=0.75)
                elif br.status == "open":
                    ax.plot([br.stable], [dy], ">", color=color, ms=4)
                elif br.status == "censored":
                    ax.plot([br.unstable], [dy], "<", color=color, ms=4)
            median = median_boundary(by_seed)
            if median is not None:
                mid, ci = median
                if ci:
                    ax.plot([ci[0], ci[1]], [y + 0.36, y + 0.36], "-", color="0.3", lw=1)
                ax.plot([mid], [y + 0.36], "D", color="0.15", ms=4)
        ax.set_yticks(range(len(rows)), [f"{arm}  {point_text(point)}".rstrip() for arm, point in rows])
        ax.invert_yaxis()
        ax.set_xscale("log")
        plain_log_ticks(ax)
        ax.set_xlabel("learning rate μ (each arm in its own units: compare rows of one arm)")
        ax.set_title("largest stable lr: each seed's bracket [L, U) (bars); ◆ median L over seeds with its interval",
                     fontsize=9)
        save_figure(fig, path)
