"""A claim's parts, shared by every judge of `trx report` (trx.report, trx.speed_transfer,
trx.report_boundary): the runs of each side (`where:` cells, seeds, each side at its best lr
on selection seeds), one run per seed, the result of a verdict, and how numbers are written."""

from __future__ import annotations

import math
from dataclasses import dataclass
from typing import TYPE_CHECKING

from trx.compare import RunRecord, higher_is_better, lr_curves, seed_values
from trx.rundir import value_text
from trx.stats import Paired

if TYPE_CHECKING:
    from trx.config import Claim, GroupSelector


# ---- the runs of a claim --------------------------------------------------------------------------
@dataclass(frozen=True)
class ClaimResult:
    text: str
    verdict: str  # supported | contradicted | inconclusive | not evaluated (before the family's adjustment)
    numbers: str
    p: float | None = None  # one-sided p of the claim
    p_against: float | None = None  # one-sided p of the opposite claim
    primary: bool = False
    table: str = ""  # Markdown shown below the claims (lr_transfer: best lr per width and seed)


def select(runs: list[RunRecord], side: GroupSelector, seeds: list[int] | None = None) -> list[RunRecord]:
    """The runs of one side of a claim: its arm, the cells with its `where:` grid values, and the
    given seeds only (None: all)."""
    where = {str(k): value_text(v) for k, v in side.where.items()}
    return [r for r in runs if r.arm == side.arm and all(dict(r.overrides).get(k) == v for k, v in where.items())
            and (seeds is None or r.seed in seeds)]


def side_label(side: GroupSelector) -> str:
    where = ",".join(f"{k}={value_text(v)}" for k, v in side.where.items())
    return side.arm + (f" ({where})" if where else "")


def seeds_text(runs: list[RunRecord]) -> str:
    return ", ".join(str(s) for s in sorted({r.seed for r in runs if r.seed is not None})) or "none"


def one_per_seed(text: str, sides: list[GroupSelector], chosen: list[list[RunRecord]], claim: Claim
                  ) -> ClaimResult | None:
    for side, mine in zip(sides, chosen):
        if len({r.seed for r in mine}) < len(mine):
            why = f"{side_label(side)}: several runs per seed; add `where:` to pick one cell"
            return ClaimResult(text, "not evaluated", why, primary=claim.primary)
    return None


def best_lr_runs(mine: list[RunRecord], metric: str, selection: list[int] | None, evaluation: list[int] | None
                 ) -> tuple[float, list[RunRecord]] | None:
    """(best lr, its runs on the evaluation seeds): the lr whose seed-mean `metric` over the
    selection seeds is best, an lr where a selection seed (every seed of the curve without a
    selection) failed or has no cell never chosen. Evaluation seeds
    default to the seeds not used for selection (all of them when no selection is given)."""
    curves = lr_curves(mine)
    if len(curves) != 1:
        return None
    by_lr = next(iter(curves.values()))
    better = higher_is_better(metric)
    needed = set(selection) if selection else {r.seed for rs in by_lr.values() for r in rs}
    scores = {}
    for lr, members in by_lr.items():
        values = seed_values([r for r in members if r.seed in needed], metric)
        if needed <= {r.seed for r in members} and all(v is not None and math.isfinite(v) for v in values.values()):
            scores[lr] = sum(values.values()) / len(values)  # type: ignore[arg-type]
    if not scores:
        return None
    best = (max if better else min)(scores, key=scores.__getitem__)
    keep = evaluation or ([r.seed for r in by_lr[best] if r.seed not in selection] if selection else None)
    return best, [r for r in by_lr[best] if keep is None or r.seed in keep]


def at_best_lr(claim: Claim, sides: list[GroupSelector], chosen: list[list[RunRecord]], metric: str
                ) -> tuple[list[list[RunRecord]], str] | str:
    """Each side at its best lr, and the words saying which seeds picked it and which judge it."""
    picked, lrs = [], []
    for side, mine in zip(sides, chosen):
        found = best_lr_runs(mine, metric, claim.selection_seeds, claim.evaluation_seeds)
        if found is None or not found[1]:
            return f"{side_label(side)}: no single lr curve with a finite result on the selection seeds"
        lrs.append(f"{side_label(side)} {found[0]:.4g}")
        picked.append(found[1])
    select_seeds = ", ".join(map(str, claim.selection_seeds)) if claim.selection_seeds else seeds_text(
        [r for mine in chosen for r in mine])
    judged = seeds_text([r for mine in picked for r in mine])
    same = "" if claim.selection_seeds else " (the same seeds: the best lr's own luck favours it)"
    return picked, f"; lr picked on seeds {select_seeds} ({', '.join(lrs)}), judged on seeds {judged}{same}"


def p_text(p: Paired) -> str:
    return "" if p.p is None else f", p = {pnum(p.p)}"


def paired_runs(claim: Claim, text: str, sides: list[GroupSelector], chosen: list[list[RunRecord]], metric: str
                ) -> tuple[list[list[RunRecord]], str] | ClaimResult:
    """Each side's runs to pair by seed — at its best lr where the claim asks — and the words
    saying which seeds picked the lr; or why the claim cannot be evaluated."""
    seeds_words = ""
    if claim.best_lr:
        found = at_best_lr(claim, sides, chosen, metric)
        if isinstance(found, str):
            return ClaimResult(text, "not evaluated", found, primary=claim.primary)
        chosen, seeds_words = found
    return one_per_seed(text, sides, chosen, claim) or (chosen, seeds_words)


def pnum(p: float | None) -> str:
    return "-" if p is None else f"{p:.2g}"


def num(value: float | None) -> str:
    return "-" if value is None or not math.isfinite(value) else f"{value:.4g}"
