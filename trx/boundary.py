"""The stability boundary of a learning rate: the largest lr at which a run stays stable by a
declared rule, bracketed by a coarse grid and narrowed by bisection in log-lr (`sweep.boundary`).

Pure functions of finished cells, shared by the search (`trx.boundary_search`, which plans each
round's probes) and the report (which reads the same cells back), so both find the same brackets.
A *series* is one arm at one point of its other grid axes and one seed (`per: seed`) or every
seed together (`per: all`: an lr is stable when every seed is). Over the lrs a series probed,
ascending, its bracket is [L, U): U the first unstable lr above the lowest stable one, L the
largest stable lr below U. Every lr stable: open, "> top"; none stable: censored, "< bottom".
A bisection probe sits at the geometric mean of L and U, so it always lands inside the bracket
and the bracket over all probes is the bisected one. No torch here: reports import it.
"""

from __future__ import annotations

import math
from dataclasses import dataclass, replace
from typing import Any, Iterable, Mapping

from trx.rundir import FINISHED, value_text
from trx.stats import CONTRADICTED, INCONCLUSIVE, SUPPORTED, Paired, equivalence, paired_difference

RULE_METRICS = ("final_val_loss", "final_loss")  # the final metric the rule bounds: val loss where evaluated

Point = tuple[tuple[str, str], ...]  # the series' other grid values: (key below the arm, value text)


@dataclass(frozen=True)
class Probe:
    """One finished cell as the boundary sees it."""

    arm: str
    point: Point
    seed: int
    lr: float
    summary: Mapping[str, Any]


@dataclass(frozen=True)
class Bracket:
    """[stable, unstable): the largest stable lr and the next unstable one probed above it."""

    stable: float | None
    unstable: float | None
    incomplete: bool = False  # a cell of the series has no outcome (crashed): the bracket is unsure

    @property
    def status(self) -> str:
        """closed; open (every lr stable: the boundary lies above the top); censored (none stable:
        below the bottom); missing (nothing probed); incomplete (a cell crashed or did not run)."""
        if self.incomplete:
            return "incomplete"
        if self.stable is not None:
            return "closed" if self.unstable is not None else "open"
        return "censored" if self.unstable is not None else "missing"

    def text(self) -> str:
        if self.incomplete:
            return f"{replace(self, incomplete=False).text()} incomplete"
        if self.status == "closed":
            return f"[{value_text(self.stable)}, {value_text(self.unstable)})"
        if self.status == "open":
            return f"> {value_text(self.stable)}"
        return f"< {value_text(self.unstable)}" if self.unstable is not None else "-"

    @property
    def log10(self) -> float | None:
        """The boundary's stand-in in decades: log10 L, or log10 of the bottom lr when censored;
        None when missing or incomplete (kept out of claims)."""
        if self.incomplete:
            return None
        lr = self.stable if self.stable is not None else self.unstable
        return None if lr is None else math.log10(lr)


def final_metric(summary: Mapping[str, Any]) -> float | None:
    for key in RULE_METRICS:
        value = summary.get(key)
        if isinstance(value, (int, float)) and not isinstance(value, bool):
            return float(value)
    return None


def lost(summary: Mapping[str, Any]) -> bool:
    """No outcome (crashed, interrupted, not run): neither stable nor unstable."""
    return summary.get("status") not in FINISHED and not summary.get("diverged")


def failed(summary: Mapping[str, Any]) -> bool:
    """Diverged, stalled, or no finite final metric: unstable whatever the rule's bounds."""
    metric = final_metric(summary)
    return bool(summary.get("diverged") or summary.get("stalled") or summary.get("status") == "diverged") \
        or metric is None or not math.isfinite(metric)


def unstable_flags(by_lr: Mapping[float, Mapping[str, Any]], rule: Mapping[str, Any]) -> dict[float, bool]:
    """lr → unstable for one seed's series: failed (above), or a final metric above `max_metric`
    or above (1 + `within`) × the best final metric among the series' runs that did not fail."""
    metrics = {lr: final_metric(s) for lr, s in by_lr.items() if not failed(s)}
    best = min(metrics.values(), default=None)
    bounds = [b for b in (rule.get("max_metric"),
                          None if rule.get("within") is None or best is None else (1 + rule["within"]) * best)
              if b is not None]
    return {lr: lr not in metrics or any(metrics[lr] > b for b in bounds) for lr in by_lr}  # type: ignore[operator]


def bracket(unstable: Mapping[float, bool]) -> Bracket:
    """The bracket of one series from its lrs' flags (see the module's docstring)."""
    lrs = sorted(unstable)
    stable = [lr for lr in lrs if not unstable[lr]]
    if not stable:
        return Bracket(None, lrs[0] if lrs else None)
    above = [lr for lr in lrs if lr > stable[0] and unstable[lr]]
    if not above:
        return Bracket(lrs[-1], None)
    return Bracket(max(lr for lr in stable if lr < above[0]), above[0])


def midpoint(b: Bracket) -> float:
    """The geometric mean of a closed bracket, rounded to 12 significant digits as grids are."""
    assert b.stable is not None and b.unstable is not None
    return float(f"{math.sqrt(b.stable * b.unstable):.12g}")


def _key(lr: float) -> str:
    return f"{lr:.12g}"


def next_lr(flags: Mapping[float, bool], coarse: Iterable[float], bisections: int) -> float | None:
    """The lr a series probes next, or None when it is done: its bracket is open or censored, it
    has made `bisections` probes off the coarse grid, or the next one would share a cell id
    (4 significant digits) with an end of the bracket."""
    b = bracket(flags)
    grid = {_key(lr) for lr in coarse}
    made = sum(_key(lr) not in grid for lr in flags)
    if b.status != "closed" or made >= bisections:
        return None
    m = midpoint(b)
    return None if value_text(m) in (value_text(b.stable), value_text(b.unstable)) else m


# ---- series ------------------------------------------------------------------------------------
SeriesKey = tuple[str, Point, int | None]  # arm, point, seed (None: every seed, `per: all`)


def seed_series(probes: Iterable[Probe]) -> dict[tuple[str, Point, int], dict[float, Mapping[str, Any]]]:
    out: dict[tuple[str, Point, int], dict[float, Mapping[str, Any]]] = {}
    for p in (p for p in probes if not lost(p.summary)):
        out.setdefault((p.arm, p.point, p.seed), {})[p.lr] = p.summary
    return out


def series_flags(probes: Iterable[Probe], rule: Mapping[str, Any], per: str) -> dict[SeriesKey, dict[float, bool]]:
    """Each series' lr → unstable. `per: all`: an lr every seed has a result at, unstable when any
    seed is (each seed's `within` against its own best)."""
    per_seed = {key: unstable_flags(by_lr, rule) for key, by_lr in seed_series(probes).items()}
    if per == "seed":
        return dict(per_seed)  # type: ignore[arg-type]
    grouped: dict[SeriesKey, list[dict[float, bool]]] = {}
    for (arm, point, _), flags in per_seed.items():
        grouped.setdefault((arm, point, None), []).append(flags)
    return {key: {lr: any(f[lr] for f in seeds) for lr in set.intersection(*(set(f) for f in seeds))}
            for key, seeds in grouped.items()}


def plan_probes(probes: Iterable[Probe], coarse: Mapping[str, Iterable[float]], rule: Mapping[str, Any],
                bisections: int, per: str = "seed") -> list[tuple[str, Point, int | None, float]]:
    """The next round: (arm, point, seed or None for every seed, lr) for each series that probes
    again, in a stable order. `coarse`: each arm's lr grid. A series with a lost cell stops."""
    probes = list(probes)
    skip = lost_series(probes, per)
    out = []
    for (arm, point, seed), flags in sorted(series_flags(probes, rule, per).items(), key=_order):
        lr = next_lr(flags, coarse[arm], bisections)
        if lr is not None and (arm, point, seed) not in skip:
            out.append((arm, point, seed, lr))
    return out


def _order(item: tuple[SeriesKey, Any]) -> tuple[str, Point, int]:
    arm, point, seed = item[0]
    return arm, point, -1 if seed is None else seed


def brackets(probes: Iterable[Probe], rule: Mapping[str, Any], per: str = "seed") -> dict[SeriesKey, Bracket]:
    """Every series' bracket, in a stable order; incomplete where a cell of it has no outcome."""
    probes = list(probes)
    skip = lost_series(probes, per)
    flags = {**{key: {} for key in skip}, **series_flags(probes, rule, per)}
    return {key: replace(bracket(f), incomplete=key in skip) for key, f in sorted(flags.items(), key=_order)}


def lost_series(probes: Iterable[Probe], per: str) -> set[SeriesKey]:
    return {(p.arm, p.point, p.seed if per == "seed" else None) for p in probes if lost(p.summary)}


def max_probes(series: int, bisections: int) -> int:
    """At most this many probe cells: one per bisection per series."""
    return series * bisections


def probe_of(run: Any) -> Probe | None:
    """A sweep cell (a `trx.compare.RunRecord`) as a probe, crashed ones too (`lost`); None
    without an lr."""
    if run.cell is None or run.lr is None:
        return None
    point = tuple((k, v) for k, v in run.overrides if k != "lr")
    return Probe(run.arm, point, run.seed, float(run.lr), run.summary)


def point_text(point: Point) -> str:
    return ",".join(f"{k}={v}" for k, v in point) or "-"


# ---- the claim ---------------------------------------------------------------------------------
def boundary_difference(a: Mapping[int, Bracket], b: Mapping[int, Bracket], delta: float = 0.0,
                        equivalent: bool = False) -> Paired:
    """log10(L_a / L_b) paired by seed (decades): "a's boundary is higher by more than δ" by the
    paired t test (the exact sign-flip test where every seed gives the same difference), or,
    `equivalent`, |difference| < δ by two one-sided tests. A censored side stands in with its
    bottom lr, an open one with its top: such a value is only a bound, so a verdict it could
    have made stands only when the bound works against it (see docs/statistics.md)."""
    va, vb = ({s: br.log10 for s, br in side.items()} for side in (a, b))
    p = equivalence(va, vb, delta, True) if equivalent else paired_difference(va, vb, True, delta=delta)
    shared = [s for s in a if s in b]
    up_a, down_a, up_b, down_b = (any(side[s].status == st for s in shared)
                                  for side in (a, b) for st in ("open", "censored"))
    if equivalent:
        doubtful = p.verdict == SUPPORTED and (up_a or down_a or up_b or down_b)
    else:
        doubtful = (p.verdict == SUPPORTED and (up_b or down_a)) or (p.verdict == CONTRADICTED and (up_a or down_b))
    opened = [f"{name} {st}" for name, side in (("a", a), ("b", b)) for st in ("open", "censored")
              if any(side[s].status == st for s in shared)]
    notes = [p.note, f"bounds only ({', '.join(opened)})" + (": the verdict would rest on them" if doubtful else "")
             if opened else ""]
    return replace(p, verdict=INCONCLUSIVE if doubtful else p.verdict, note="; ".join(n for n in notes if n))
