"""Statistics over seeds, defined once for every table, figure and report.

`±` always means the sample standard deviation over seeds (n − 1 in the denominator); a mean's
interval is the 95% Student t interval over seeds, written [lo, hi].

Seeds pair runs: arms run at the same seed share their initial weights and batches, so two arms
are compared through their per-seed differences. Every verdict answers one directed claim and is
a one-sided test at ALPHA = 2.5% (the tail of a 95% two-sided interval), chosen for the 3–10
seeds we run (docs/statistics.md gives the false-positive rates and power, measured by
scripts/null_simulations.py):

- a final metric, a − b: the paired Student t test on the per-seed differences;
- an lr-band width, a − b: the per-seed band widths paired over seeds, by the exact sign-flip
  permutation test (widths are bounded and lumpy; t does not hold its level on them); with n
  seeds its smallest one-sided p is 2⁻ⁿ, so fewer than 6 seeds cannot reach 95% and say so;
- divergence (or stall) counts: the exact McNemar test on the seeds where one arm failed and the
  other did not (a sign test on the discordant seeds);
- equivalence, |a − b| < δ: two one-sided t tests, each at ALPHA.

A directional claim is `supported` when the test rejects "the difference is at most δ the other
way" — i.e. the difference exceeds δ, the smallest difference that matters (0 unless declared) —
and `contradicted` when it exceeds δ the wrong way. A difference within rounding (below ROUNDING
relative to the values) never decides anything; where every seed gives the same difference the
paired t test is undefined and the exact sign-flip test decides instead (p ≥ 2⁻ⁿ).
"""

from __future__ import annotations

import functools
import math
from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass
from fractions import Fraction

import numpy as np

SUPPORTED, CONTRADICTED, INCONCLUSIVE = "supported", "contradicted", "inconclusive"
ALPHA = 0.025  # one-sided level of every verdict: the tail of a 95% two-sided interval
ROUNDING = 1e-6  # differences below this × the largest |value| compared are rounding, not results
EXACT_MAX = 16  # the sign-flip test enumerates all 2ⁿ sign vectors up to this many seeds
TOLERANCES = (0.02, 0.05, 0.1, 0.15, 0.2)  # relative band tolerances drawn against each other


def _finite(values: Iterable[float | None]) -> list[float]:
    return [float(v) for v in values if v is not None and math.isfinite(float(v))]


def mean_sd(values: Iterable[float | None]) -> tuple[float | None, float | None]:
    """Mean and sample standard deviation (n − 1) of the finite values; sd is None below two."""
    vals = _finite(values)
    if not vals:
        return None, None
    mean = sum(vals) / len(vals)
    sd = math.sqrt(sum((v - mean) ** 2 for v in vals) / (len(vals) - 1)) if len(vals) > 1 else None
    return mean, sd


def t_interval(values: Iterable[float | None], level: float = 0.95) -> tuple[float, float] | None:
    """Student t interval of the mean of the finite values: mean ± t_{n−1} · sd / √n.
    None below two values (no spread to measure)."""
    vals = _finite(values)
    if len(vals) < 2:
        return None
    mean, sd = mean_sd(vals)
    assert mean is not None and sd is not None
    from scipy.special import stdtrit  # the t quantile; scipy.stats would add a second to start-up

    half = float(stdtrit(len(vals) - 1, 0.5 + level / 2)) * sd / math.sqrt(len(vals))
    return mean - half, mean + half


# ---- one-sided tests on per-seed differences ---------------------------------------------------
def t_pvalue(diffs: Sequence[float], shift: float) -> float | None:
    """One-sided p of the paired t test of "mean(diffs) ≤ shift" against "> shift"; None below two
    differences or without spread."""
    n = len(diffs)
    mean, sd = mean_sd(diffs)
    if n < 2 or mean is None or not sd:
        return None
    from scipy.special import stdtr

    return float(1.0 - stdtr(n - 1, (mean - shift) / (sd / math.sqrt(n))))


@functools.cache
def _sign_vectors(n: int) -> np.ndarray:
    """Every ±1 vector of length n (2ⁿ rows), or 20,000 seeded random ones above EXACT_MAX."""
    if n <= EXACT_MAX:
        return 1.0 - 2.0 * ((np.arange(2**n)[:, None] >> np.arange(n)) & 1)
    return np.random.default_rng(0).choice((1.0, -1.0), size=(20_000, n))


def sign_flip_pvalue(diffs: Sequence[float], shift: float) -> float | None:
    """Exact one-sided p of the sign-flip permutation test of "the differences are symmetric about
    `shift`" against "larger": the share of the 2ⁿ sign vectors whose mean of ±(d − shift) is at
    least the observed one (ties count, so p ≥ 2⁻ⁿ). None without differences."""
    if not diffs:
        return None
    centred = np.asarray(diffs, float) - shift
    observed = centred.mean()
    signs = _sign_vectors(len(centred))
    hits = int(np.sum(signs @ centred / len(centred) >= observed - 1e-12 * max(1.0, abs(observed))))
    if len(centred) <= EXACT_MAX:
        return hits / len(signs)  # exact: the identity vector is among them, so p ≥ 2⁻ⁿ
    return (hits + 1) / (len(signs) + 1)  # random signs: count the observed one too, so p > 0


def smallest_p(n: int) -> Fraction:
    """The smallest one-sided p the sign-flip or sign test can reach with n seeds: 2⁻ⁿ."""
    return Fraction(1, 2**n)


def too_few(n: int, what: str = "seeds") -> str:
    """Why n paired seeds cannot reach the level, or "" when they can."""
    if smallest_p(n) <= ALPHA:
        return ""
    return f"{n} {what} cannot reach 95%: the smallest one-sided p is {smallest_p(n)}"


def rounding_floor(*groups: Iterable[float | None]) -> float:
    """The size below which a difference is rounding: ROUNDING × the largest finite |value|."""
    values = [abs(v) for g in groups for v in _finite(g)]
    return ROUNDING * max(values, default=0.0)


def decide(p_for: float | None, p_against: float | None) -> str:
    """The verdict from the one-sided p of the claimed direction and of the opposite one."""
    if p_for is not None and p_for <= ALPHA:
        return SUPPORTED
    if p_against is not None and p_against <= ALPHA:
        return CONTRADICTED
    return INCONCLUSIVE


def holm(pvalues: Sequence[float | None]) -> list[float | None]:
    """Holm's step-down adjustment of a family of p-values (None: not tested, left out)."""
    tested = sorted((p, i) for i, p in enumerate(pvalues) if p is not None)
    m, running = len(tested), 0.0
    out: list[float | None] = [None] * len(pvalues)
    for rank, (p, i) in enumerate(tested):
        running = max(running, min(1.0, (m - rank) * p))
        out[i] = running
    return out


# ---- paired comparisons of a final metric ------------------------------------------------------
@dataclass(frozen=True)
class Paired:
    """A difference a − b over seeds, its test and the verdict on a claim about it."""

    n: int  # seeds compared (both sides present)
    mean_diff: float | None  # mean of a − b (band widths in decades; failure counts for stability)
    lo: float | None  # 95% interval of the mean difference where the method gives one
    hi: float | None
    verdict: str
    excluded: int = 0  # seeds present on one side only, or missing (failed to run) on either
    note: str = ""
    p: float | None = None  # one-sided p of the claim (beyond δ); None: not testable
    p_against: float | None = None  # one-sided p of the opposite direction
    method: str = "paired t"
    failed: int = 0  # diverged (or, for stability, stalled) runs among the compared seeds


def two_sided(p: Paired) -> float | None:
    """The two-sided p of a comparison: twice the smaller one-sided p, at most 1."""
    if p.p is None or p.p_against is None:
        return None
    return min(1.0, 2 * min(p.p, p.p_against))


@dataclass(frozen=True)
class _Pairs:
    gains: list[float]  # per seed, positive when a is better
    diffs: list[float]  # per seed, a − b in metric units
    excluded: int
    failed: int
    floor: float  # rounding floor of these values


def _pairs(a_by_seed: Mapping[int, float | None], b_by_seed: Mapping[int, float | None], higher_better: bool,
           failure_score: float | None) -> _Pairs:
    """Seeds both sides ran, a failed run (inf or NaN: diverged) scored at the worst of
    `failure_score` and every finite value compared — it ranks worst, never drops out. None is a
    run missing or not finished: that seed is excluded."""
    seeds = sorted(set(a_by_seed) | set(b_by_seed))
    shared = [s for s in seeds if a_by_seed.get(s) is not None and b_by_seed.get(s) is not None]
    finite = _finite([a_by_seed[s] for s in shared] + [b_by_seed[s] for s in shared] + [failure_score])
    worst = (min if higher_better else max)(finite, default=0.0)

    def score(v: float | None) -> float:
        return float(v) if _finite([v]) else worst

    diffs = [score(a_by_seed[s]) - score(b_by_seed[s]) for s in shared]
    failed = sum(not _finite([side[s]]) for s in shared for side in (a_by_seed, b_by_seed))
    gains = [d if higher_better else -d for d in diffs]
    floor = rounding_floor([score(a_by_seed[s]) for s in shared], [score(b_by_seed[s]) for s in shared])
    return _Pairs(gains, diffs, len(seeds) - len(shared), failed, floor)


def _why_untested(pairs: _Pairs) -> str:
    return "needs at least two seeds both arms ran" if len(pairs.diffs) < 2 else ""


def _spreadless(pairs: _Pairs) -> bool:
    """Every seed gives the same difference (within rounding): t has no spread to work with."""
    return (mean_sd(pairs.diffs)[1] or 0.0) <= pairs.floor


def _one_sided(gains: list[float], shift: float, spread: bool) -> float:
    """One-sided p of "mean gain > shift": the paired t test, or, where every seed gives the
    same difference (t is undefined), the exact sign-flip test (p ≥ 2⁻ⁿ), whose shift keeps a
    difference within rounding from ever deciding."""
    found = t_pvalue(gains, shift) if spread else None
    return sign_flip_pvalue(gains, shift) if found is None else found


SPREADLESS = "every seed gives the same difference: judged by the exact sign-flip test"


def paired_difference(a_by_seed: Mapping[int, float | None], b_by_seed: Mapping[int, float | None],
                      higher_better: bool, level: float = 0.95, delta: float = 0.0,
                      failure_score: float | None = None) -> Paired:
    """Paired difference a − b by seed and the verdict on "a is better than b by more than δ".

    A diverged run (inf or NaN) scores at the worst of `failure_score` (the initial loss) and the
    worst value any compared seed reached; a missing one (None) excludes its seed. The test is
    the one-sided paired t test against δ, raised to the rounding floor: a difference within
    rounding, or one every seed repeats exactly, is never supported or contradicted."""
    pairs = _pairs(a_by_seed, b_by_seed, higher_better, failure_score)
    ci = t_interval(pairs.diffs, level)
    lo, hi = ci if ci else (None, None)
    why, spread = _why_untested(pairs), not _spreadless(pairs)
    shift = max(delta, pairs.floor)
    p_for = None if why else _one_sided(pairs.gains, shift, spread)
    p_against = None if why else _one_sided([-g for g in pairs.gains], shift, spread)
    note = why or ("" if spread else SPREADLESS)
    return Paired(len(pairs.diffs), mean_sd(pairs.diffs)[0], lo, hi, decide(p_for, p_against), pairs.excluded,
                  note, p_for, p_against, "paired t" if spread else "sign-flip", pairs.failed)


def equivalence(a_by_seed: Mapping[int, float | None], b_by_seed: Mapping[int, float | None], delta: float,
                higher_better: bool = False, level: float = 0.95, failure_score: float | None = None) -> Paired:
    """"a and b differ by less than δ" by two one-sided paired t tests (TOST), each at ALPHA:
    supported when both "a − b ≤ −δ" and "a − b ≥ δ" are rejected (the 95% interval lies inside
    (−δ, δ)); contradicted when the difference is shown to exceed δ one way or the other (the
    smaller of those two p-values, doubled). Diverged runs score as in `paired_difference`."""
    if not delta > 0:
        raise ValueError("equivalence: needs a margin δ > 0")
    pairs = _pairs(a_by_seed, b_by_seed, higher_better, failure_score)
    ci = t_interval(pairs.diffs, level)
    lo, hi = ci if ci else (None, None)
    why, spread = _why_untested(pairs), not _spreadless(pairs)
    down, up = pairs.diffs, [-d for d in pairs.diffs]
    p_for, p_against = None, None
    if not why:
        p_for = max(_one_sided(down, -delta, spread), _one_sided(up, -delta, spread))
        p_against = min(1.0, 2 * min(_one_sided(down, delta, spread), _one_sided(up, delta, spread)))
    note = why or ("" if spread else SPREADLESS)
    return Paired(len(pairs.diffs), mean_sd(pairs.diffs)[0], lo, hi, decide(p_for, p_against), pairs.excluded,
                  note, p_for, p_against, "two one-sided t tests" if spread else "two one-sided sign-flip tests",
                  pairs.failed)


def failure_difference(a_failed: Mapping[int, bool | None], b_failed: Mapping[int, bool | None]) -> Paired:
    """"a fails (diverges or stalls) in fewer seeds than b" by the exact McNemar test: on the
    seeds both ran, the discordant ones (one arm failed, the other not) split 50/50 under the
    null, so a's share of them is Binomial(k, ½). None excludes a seed. `mean_diff` is the
    failure count a − b over the compared seeds."""
    seeds = sorted(set(a_failed) | set(b_failed))
    shared = [s for s in seeds if a_failed.get(s) is not None and b_failed.get(s) is not None]
    only_a = sum(bool(a_failed[s]) and not b_failed[s] for s in shared)
    only_b = sum(bool(b_failed[s]) and not a_failed[s] for s in shared)
    k = only_a + only_b
    below = sum(math.comb(k, i) for i in range(only_a + 1)) / 2**k  # P(X ≤ only_a)
    above = sum(math.comb(k, i) for i in range(only_a, k + 1)) / 2**k  # P(X ≥ only_a)
    count = sum(bool(a_failed[s]) for s in shared) - sum(bool(b_failed[s]) for s in shared)
    note = too_few(len(shared)) or (f"{k} discordant seed(s): the smallest one-sided p is {smallest_p(k)}"
                                     if smallest_p(k) > ALPHA else "")
    failed = sum(bool(side[s]) for s in shared for side in (a_failed, b_failed))
    return Paired(len(shared), float(count), None, None, decide(below, above), len(seeds) - len(shared), note,
                  float(below), float(above), "exact McNemar", failed)


# ---- learning-rate tolerance ------------------------------------------------------------------
@dataclass(frozen=True)
class Band:
    """The learning-rate band around the best lr, in log-lr interpolated between grid points."""

    best_lr: float | None  # None when no lr improved on the reference
    best: float | None  # seed-mean metric at best_lr
    lo: float | None  # band edges (lr); the grid end where the band runs off the grid
    hi: float | None
    decades: float | None  # log10(hi / lo) of the seed-mean curve: a lower bound when the band is open
    best_at_edge: str | None  # "low" | "high" | None: the grid does not bracket the optimum
    open_low: bool  # the band reaches the lowest lr: it may extend further
    open_high: bool
    ci: tuple[float, float] | None  # interval of the median per-seed width (order statistics)
    n_seeds: int
    reference: float  # the score's zero: the initial loss (chance level for accuracies)
    seed_widths: tuple[float, ...] = ()  # each seed's own band width (decades)
    ci_level: float | None = None  # the exact confidence of `ci` (below 95% when seeds are few)
    short_seeds: int = 0  # seeds that lack some lr points (not run or crashed): measured on the rest

    @property
    def note(self) -> str:
        """The flags in words, for a table's note column."""
        notes = []
        if self.best_lr is None:
            return "no learning rate improved on the initial value"
        if self.best_at_edge:
            notes.append(f"best at the {self.best_at_edge} edge: widen the grid")
        sides = [s for s, o in (("low", self.open_low), ("high", self.open_high)) if o]
        if sides:
            notes.append(f"band runs off the {' and '.join(sides)} end: width is a lower bound")
        if self.ci_level is not None and self.ci_level < 0.95:
            notes.append(f"{self.n_seeds} seeds: the width interval is only {self.ci_level:.0%}")
        if self.short_seeds:
            notes.append(short_words(self.short_seeds))
        return "; ".join(notes)


def improvements(values: np.ndarray, higher_better: bool, reference: float) -> np.ndarray:
    """Per (seed, lr) improvement over the reference, ≥ 0; NaN where the value is missing or not
    finite. Losses: reference − value; accuracy-like: value − reference. A value worse than the
    reference is no improvement (0), like a diverged one, so that one far-off point cannot drag an
    interpolated edge onto the grid point beside it."""
    values = np.where(np.isfinite(values), values, np.nan)
    gain = values - reference if higher_better else reference - values
    return np.where(np.isnan(gain), np.nan, np.maximum(gain, 0.0))


def lr_scores(gains: np.ndarray) -> np.ndarray:
    """Seed-mean improvement per lr from a (…, seeds, lrs) array; an lr with any missing or diverged
    seed scores 0 (outside any band): a rate that fails in one seed in three is not tolerated."""
    return np.where(np.isnan(gains).any(axis=-2), 0.0, np.nan_to_num(gains).mean(axis=-2))


def band_edges(log_lrs: Sequence[float], scores: Sequence[float], tolerance: float, absolute: bool = False
               ) -> tuple[int, float, float, bool, bool] | None:
    """(best index, low edge, high edge in log10 lr, open low, open high) of the contiguous run of
    lrs around the best whose score is ≥ (1 − tolerance) · best score — or, `absolute`, ≥ best −
    tolerance (metric units); each edge interpolated linearly in log-lr where the score crosses
    the threshold between two grid points. None when no score is > 0. `log_lrs` ascending."""
    best = max(scores)
    b = list(scores).index(best)
    if not best > 0:
        return None
    thr = best - tolerance if absolute else (1.0 - tolerance) * best

    def walk(step: int) -> tuple[float, bool]:
        i = b
        while 0 <= i + step < len(scores) and scores[i + step] >= thr:
            i += step
        j = i + step
        if not 0 <= j < len(scores):
            return float(log_lrs[i]), True
        frac = (scores[i] - thr) / (scores[i] - scores[j])  # scores[i] ≥ thr > scores[j]
        return float(log_lrs[i] + frac * (log_lrs[j] - log_lrs[i])), False

    (lo, open_lo), (hi, open_hi) = walk(-1), walk(+1)
    return b, lo, hi, open_lo, open_hi


def _matrix(lrs: Sequence[float], values_by_seed: Mapping[int, Sequence[float | None]], seeds: Sequence[int]
            ) -> tuple[np.ndarray, np.ndarray]:
    order = np.argsort(lrs)
    rows = [[np.nan if v is None else float(v) for v in values_by_seed[s]] for s in seeds]
    if any(len(r) != len(lrs) for r in rows):
        raise ValueError("lr_band: every seed needs one value per learning rate (None for missing)")
    missing = np.asarray([[v is None for v in values_by_seed[s]] for s in seeds], bool).reshape(len(seeds), len(lrs))
    values = np.asarray(rows, float).reshape(len(seeds), len(lrs))
    return np.log10(np.asarray(lrs, float)[order]), values[:, order], missing[:, order]


def _reference(values: np.ndarray, higher_better: bool, initial: float | None) -> float:
    if initial is not None and math.isfinite(initial):
        return float(initial)
    if higher_better:
        return 0.0
    finite = values[np.isfinite(values)]
    return float(finite.max()) if finite.size else 0.0


def median_interval(values: Sequence[float], level: float = 0.95) -> tuple[float, float, float] | None:
    """Distribution-free interval of the median from order statistics: (x₍ₖ₎, x₍ₙ₊₁₋ₖ₎, its exact
    confidence 1 − 2·P(Bin(n, ½) < k)) for the largest k reaching `level`, else the range with
    its lower confidence 1 − 2¹⁻ⁿ (75% at 3 seeds, 94% at 5). None below two values."""
    x = sorted(values)
    n = len(x)
    if n < 2:
        return None
    k, conf = 1, 1.0 - 2.0 / 2**n
    while k + 1 <= (n + 1) // 2:
        nxt = 1.0 - 2.0 * sum(math.comb(n, i) for i in range(k + 1)) / 2**n
        if nxt < level:
            break
        k, conf = k + 1, nxt
    return x[k - 1], x[n - k], conf


@dataclass(frozen=True)
class _Curve:
    """One arm's sweep prepared for band measurements: log-lrs ascending and improvements (seeds, lrs)."""

    log_lrs: np.ndarray
    gains: np.ndarray
    reference: float
    missing: np.ndarray  # (seeds, lrs): the point was not run or did not finish (None), not diverged

    @property
    def short_seeds(self) -> int:
        return int(self.missing.any(axis=1).sum())


def _curve(lrs: Sequence[float], values_by_seed: Mapping[int, Sequence[float | None]], seeds: Sequence[int],
           higher_better: bool, initial: float | None) -> tuple[_Curve, np.ndarray]:
    log_lrs, values, missing = _matrix(lrs, values_by_seed, seeds)
    reference = _reference(values, higher_better, initial)
    return _Curve(log_lrs, improvements(values, higher_better, reference), reference, missing), values


def _width(log_lrs: list[float], scores: list[float], tolerance: float, absolute: bool) -> tuple[float, bool]:
    """(width in decades, open) of the band of one score curve; 0 without one."""
    edges = band_edges(log_lrs, scores, tolerance, absolute)
    if edges is None:
        return 0.0, False
    return edges[2] - edges[1], edges[3] or edges[4]


def seed_widths(curve: _Curve, tolerance: float, absolute: bool = False) -> list[tuple[float, bool]]:
    """Each seed's own band (width in decades, open) from its curve alone, over the lrs that seed
    ran: a diverged point is no improvement, a missing one (not run, crashed) is left out — it is
    no evidence either way, and counting it as a failure would cut the band at a hole in the grid."""
    out = []
    for gains, missing in zip(curve.gains, curve.missing):
        ran = ~missing
        x, row = curve.log_lrs[ran].tolist(), np.nan_to_num(gains[ran]).tolist()
        out.append(_width(x, row, tolerance, absolute) if x else (0.0, False))
    return out


def short_words(count: int, side: str = "") -> str:
    """The note for seeds whose curve lacks some lr points."""
    return f"{count} seed(s){side} lack lr points: their bands are measured on the points they ran"


def lr_band(lrs: Sequence[float], values_by_seed: Mapping[int, Sequence[float | None]], tolerance: float = 0.1,
            higher_better: bool = False, initial: float | None = None, level: float = 0.95,
            absolute: bool = False) -> Band:
    """The learning-rate tolerance of one arm from a sweep: `values_by_seed[seed][i]` is the final
    metric at `lrs[i]` (None, inf or NaN: diverged or missing).

    The band is measured on the improvement over a reference, not on the raw value, so that it
    stays meaningful when the best loss is near 0 (a 10% band around a loss of 0.001 would be
    a band of ±0.0001): an lr is in the band when its seed-mean improvement is
    ≥ (1 − tolerance) × the best lr's (or, `absolute`, within `tolerance` metric units of it).
    The reference is
      - for losses: `initial` (the mean initial loss), else the worst finite value on the grid;
      - for accuracy-like metrics (higher is better): `initial` when given (pass the task's
        chance level), else 0 — not the worst grid point, which would make the band depend on
        how far the grid reaches.
    A value worse than the reference is no improvement; an lr where any seed diverged or is
    missing is outside the band. Edges are interpolated linearly in log-lr between the last grid
    point inside and the first outside; a band that reaches the end of the grid is open there and
    its width a lower bound. The interval (`ci`) is the order-statistic interval of the median of
    the per-seed band widths (each seed's own curve), with its exact confidence `ci_level`."""
    if len(lrs) < 2:
        raise ValueError("lr_band: needs at least two learning rates")
    seeds = sorted(values_by_seed)
    curve, values = _curve(lrs, values_by_seed, seeds, higher_better, initial)
    edges = band_edges(curve.log_lrs, lr_scores(curve.gains), tolerance, absolute)
    widths = tuple(w for w, _ in seed_widths(curve, tolerance, absolute))
    if edges is None:
        return Band(None, None, None, None, None, None, False, False, None, len(seeds), curve.reference, widths,
                    short_seeds=curve.short_seeds)
    b, lo, hi, open_lo, open_hi = edges
    column = values[:, b]
    best = float(column.mean()) if np.isfinite(column).all() else None
    edge = "low" if b == 0 else "high" if b == len(lrs) - 1 else None
    found = median_interval(widths, level)
    grid = sorted(float(lr) for lr in lrs)  # the grid's own numbers where an edge sits on the grid
    return Band(grid[b], best, grid[0] if open_lo else float(10**lo), grid[-1] if open_hi else float(10**hi),
                hi - lo, edge, open_lo, open_hi, found[:2] if found else None, len(seeds), curve.reference,
                widths, found[2] if found else None, curve.short_seeds)


def tolerance_difference(lrs_a: Sequence[float], a_by_seed: Mapping[int, Sequence[float | None]],
                         lrs_b: Sequence[float], b_by_seed: Mapping[int, Sequence[float | None]],
                         tolerance: float = 0.1, higher_better: bool = False, initial_a: float | None = None,
                         initial_b: float | None = None, delta: float = 0.0, absolute: bool = False) -> Paired:
    """Width(a) − width(b) of the lr bands (decades), each seed's band from its own curve, paired
    over the seeds both arms ran; verdict on "a is wider than b by more than δ decades" by the
    exact sign-flip test (with n seeds no p is below 2⁻ⁿ: under 6 seeds `note` says the level is
    out of reach). Seeds only one arm ran are excluded and counted. An open band's width is only
    a lower bound: "a wider" is tested (has a p) only when every seed's band of b is closed, and
    "b wider" only when a's are; an untested direction has p None and leaves a family of claims."""
    shared = sorted(set(a_by_seed) & set(b_by_seed))
    excluded = len(set(a_by_seed) ^ set(b_by_seed))
    if len(shared) < 2:
        return Paired(len(shared), None, None, None, INCONCLUSIVE, excluded, "needs at least two shared seeds",
                      method="sign-flip")
    per_arm, short = [], []
    for lrs, by_seed, initial in ((lrs_a, a_by_seed, initial_a), (lrs_b, b_by_seed, initial_b)):
        curve = _curve(lrs, by_seed, shared, higher_better, initial)[0]
        per_arm.append(seed_widths(curve, tolerance, absolute))
        short.append(curve.short_seeds)
    diffs = [wa - wb for (wa, _), (wb, _) in zip(*per_arm)]
    open_a, open_b = (any(o for _, o in arm) for arm in per_arm)
    floor = rounding_floor([w for arm in per_arm for w, _ in arm])
    shift = max(delta, floor)  # a width difference within rounding never decides
    # The side that should be the narrower is only bounded below where its band is open: that
    # direction is not tested (no p), so it can neither be supported nor enter a family of claims.
    p_for = None if open_b else sign_flip_pvalue(diffs, shift)
    p_against = None if open_a else sign_flip_pvalue([-d for d in diffs], shift)
    opened = [name for name, o in (("a", open_a), ("b", open_b)) if o]
    untested = [w for w, o in (("a wider", open_b), ("b wider", open_a)) if o]
    notes = [too_few(len(shared)),
             f"open band ({', '.join(opened)}): its width is a lower bound, so {' and '.join(untested)} "
             "is not tested" if opened else "",
             *(short_words(k, f" of {side}") for k, side in zip(short, "ab") if k)]
    return Paired(len(shared), mean_sd(diffs)[0], None, None, decide(p_for, p_against), excluded,
                  "; ".join(n for n in notes if n), p_for, p_against, "sign-flip")
