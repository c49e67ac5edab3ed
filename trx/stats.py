"""Statistics over seeds, defined once for every table, figure and report.

`±` always means the sample standard deviation over seeds (n − 1 in the denominator);
intervals are 95% unless said otherwise and written [lo, hi]: Student t over seeds for a mean
and for a paired difference, a percentile bootstrap over seeds for the learning-rate tolerance.

Seeds pair runs: arms run at the same seed share their initial weights and batches, so two arms
are compared through their per-seed differences, and a bootstrap resamples seed indices jointly
across learning rates and arms.

A verdict answers one directed claim ("a is better than b", "a is wider than b"):
`supported` when the interval excludes 0 in the claimed direction, `contradicted` when it
excludes 0 the other way, else `inconclusive`.
"""

from __future__ import annotations

import math
from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass

import numpy as np

SUPPORTED, CONTRADICTED, INCONCLUSIVE = "supported", "contradicted", "inconclusive"
BOOTSTRAP_SEED = 0  # the bootstrap's RNG seed: reports are reproducible to the digit


def _finite(values: Iterable[float | None]) -> list[float]:
    return [float(v) for v in values if v is not None and math.isfinite(float(v))]


def mean_sd(values: Iterable[float | None]) -> tuple[float | None, float | None]:
    """Mean and sample standard deviation (n − 1) of the finite values; sd is None below two."""
    vals = [float(v) for v in values if v is not None and math.isfinite(float(v))]
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


def verdict(lo: float | None, hi: float | None, claim_positive: bool) -> str:
    """The verdict on a claim that a difference is > 0 (`claim_positive`) or < 0, from its interval."""
    if lo is None or hi is None:
        return INCONCLUSIVE
    if lo > 0:
        return SUPPORTED if claim_positive else CONTRADICTED
    if hi < 0:
        return CONTRADICTED if claim_positive else SUPPORTED
    return INCONCLUSIVE


@dataclass(frozen=True)
class Paired:
    """A difference a − b over seeds with its interval and the verdict on a claim about it."""

    n: int  # seeds used (both sides finite)
    mean_diff: float | None  # mean of a − b (a width difference for the lr tolerance)
    lo: float | None
    hi: float | None
    verdict: str
    excluded: int = 0  # seeds dropped: present on one side only, or diverged / missing on either
    note: str = ""


def paired_difference(a_by_seed: Mapping[int, float | None], b_by_seed: Mapping[int, float | None],
                      higher_better: bool, level: float = 0.95) -> Paired:
    """Paired difference a − b by seed and the verdict on "a is better than b".

    Only seeds where both sides are finite pair; the others (one side missing, diverged, NaN)
    are excluded and counted. The interval is Student t on the per-seed differences; with fewer
    than two pairs there is no interval and the verdict is inconclusive."""
    seeds = sorted(set(a_by_seed) | set(b_by_seed))
    diffs = []
    for s in seeds:
        a, b = a_by_seed.get(s), b_by_seed.get(s)
        if _finite([a]) and _finite([b]):
            diffs.append(float(a) - float(b))  # type: ignore[arg-type]
    mean = mean_sd(diffs)[0]
    ci = t_interval(diffs, level)
    lo, hi = ci if ci else (None, None)
    return Paired(len(diffs), mean, lo, hi, verdict(lo, hi, claim_positive=higher_better), len(seeds) - len(diffs))


# ---- learning-rate tolerance ------------------------------------------------------------------
@dataclass(frozen=True)
class Band:
    """The learning-rate band around the best lr, in log-lr interpolated between grid points."""

    best_lr: float | None  # None when no lr improved on the reference
    best: float | None  # seed-mean metric at best_lr
    lo: float | None  # band edges (lr); the grid end where the band runs off the grid
    hi: float | None
    decades: float | None  # log10(hi / lo): a lower bound when the band is open
    best_at_edge: str | None  # "low" | "high" | None: the grid does not bracket the optimum
    open_low: bool  # the band reaches the lowest lr: it may extend further
    open_high: bool
    ci: tuple[float, float] | None  # bootstrap interval of `decades` over seeds (None below 2 seeds)
    n_seeds: int
    reference: float  # the score's zero: the initial loss (or 0 / chance level for accuracies)

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


def band_edges(log_lrs: Sequence[float], scores: Sequence[float], tolerance: float
               ) -> tuple[int, float, float, bool, bool] | None:
    """(best index, low edge, high edge in log10 lr, open low, open high) of the contiguous run of
    lrs around the best whose score is ≥ (1 − tolerance) · best score; each edge interpolated
    linearly in log-lr where the score crosses the threshold between two grid points. None when
    no score is > 0. `log_lrs` ascending."""
    best = max(scores)
    b = list(scores).index(best)
    if not best > 0:
        return None
    thr = (1.0 - tolerance) * best

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
    return np.log10(np.asarray(lrs, float)[order]), np.asarray(rows, float).reshape(len(seeds), len(lrs))[:, order]


def _widths(log_lrs: np.ndarray, gains: np.ndarray, tolerance: float, picks: np.ndarray) -> np.ndarray:
    """Band width (decades) for each bootstrap draw of seed indices (rows of `picks`); 0 when no lr improves."""
    scores = lr_scores(gains[picks]).tolist()  # (draws, lrs)
    x = log_lrs.tolist()
    out = np.zeros(len(picks))
    for k, row in enumerate(scores):
        edges = band_edges(x, row, tolerance)
        out[k] = 0.0 if edges is None else edges[2] - edges[1]
    return out


def _percentiles(samples: np.ndarray, level: float) -> tuple[float, float]:
    lo, hi = np.percentile(samples, [50 * (1 - level), 50 * (1 + level)])
    return float(lo), float(hi)


def _reference(values: np.ndarray, higher_better: bool, initial: float | None) -> float:
    if initial is not None and math.isfinite(initial):
        return float(initial)
    if higher_better:
        return 0.0
    finite = values[np.isfinite(values)]
    return float(finite.max()) if finite.size else 0.0


def lr_band(lrs: Sequence[float], values_by_seed: Mapping[int, Sequence[float | None]], tolerance: float = 0.1,
            higher_better: bool = False, initial: float | None = None, level: float = 0.95, n_boot: int = 2000,
            rng_seed: int = BOOTSTRAP_SEED) -> Band:
    """The learning-rate tolerance of one arm from a sweep: `values_by_seed[seed][i]` is the final
    metric at `lrs[i]` (None, inf or NaN: diverged or missing).

    The band is measured on the improvement over a reference, not on the raw value, so that it
    stays meaningful when the best loss is near 0 (a 10% band around a loss of 0.001 would be
    a band of ±0.0001): an lr is in the band when its seed-mean improvement is
    ≥ (1 − tolerance) × the best lr's. The reference is
      - for losses: `initial` (the mean initial loss), else the worst finite value on the grid;
      - for accuracy-like metrics (higher is better): `initial` when given (pass the initial or
        chance-level accuracy), else 0, i.e. the accuracy itself — not the worst grid point,
        which would make the band depend on how far the grid reaches.
    A value worse than the reference is no improvement; an lr where any seed diverged or is
    missing is outside the band. Edges are interpolated linearly in log-lr between the last grid
    point inside and the first outside; a band that reaches the end of the grid is open there and
    its width a lower bound. The interval is a percentile bootstrap: seeds drawn with
    replacement (one draw shared by every lr), `n_boot` draws, a fixed RNG seed."""
    if len(lrs) < 2:
        raise ValueError("lr_band: needs at least two learning rates")
    seeds = sorted(values_by_seed)
    log_lrs, values = _matrix(lrs, values_by_seed, seeds)
    reference = _reference(values, higher_better, initial)
    gains = improvements(values, higher_better, reference)
    scores = lr_scores(gains)
    edges = band_edges(log_lrs, scores, tolerance)
    if edges is None:
        return Band(None, None, None, None, None, None, False, False, None, len(seeds), reference)
    b, lo, hi, open_lo, open_hi = edges
    column = values[:, b]
    best = float(column.mean()) if np.isfinite(column).all() else None
    edge = "low" if b == 0 else "high" if b == len(lrs) - 1 else None
    ci = None
    if len(seeds) >= 2 and n_boot > 0:
        picks = np.random.default_rng(rng_seed).integers(0, len(seeds), size=(n_boot, len(seeds)))
        ci = _percentiles(_widths(log_lrs, gains, tolerance, picks), level)
    grid = sorted(float(lr) for lr in lrs)  # the grid's own numbers where an edge sits on the grid
    return Band(grid[b], best, grid[0] if open_lo else float(10**lo), grid[-1] if open_hi else float(10**hi),
                hi - lo, edge, open_lo, open_hi, ci, len(seeds), reference)


def tolerance_difference(lrs_a: Sequence[float], a_by_seed: Mapping[int, Sequence[float | None]],
                         lrs_b: Sequence[float], b_by_seed: Mapping[int, Sequence[float | None]],
                         tolerance: float = 0.1, higher_better: bool = False, initial_a: float | None = None,
                         initial_b: float | None = None, level: float = 0.95, n_boot: int = 2000,
                         rng_seed: int = BOOTSTRAP_SEED) -> Paired:
    """Width(a) − width(b) of the lr bands (decades, as `lr_band` measures them) with a paired
    percentile bootstrap: the seeds both arms ran are drawn with replacement once per draw and
    used for both arms (arms at one seed share initial weights and batches). Verdict on the
    claim "a is wider than b". Seeds only one arm ran are excluded and counted. An open band's
    width is only a lower bound (`note` says so): "supported" stands only when b's band is closed
    and "contradicted" only when a's is, otherwise the verdict is inconclusive — the grid cannot
    show that an open band is the narrower one."""
    shared = sorted(set(a_by_seed) & set(b_by_seed))
    excluded = len(set(a_by_seed) ^ set(b_by_seed))
    if len(shared) < 2:
        return Paired(len(shared), None, None, None, INCONCLUSIVE, excluded, "needs at least two shared seeds")
    arms, bands = [], []
    for lrs, by_seed, initial in ((lrs_a, a_by_seed, initial_a), (lrs_b, b_by_seed, initial_b)):
        log_lrs, values = _matrix(lrs, by_seed, shared)
        arms.append((log_lrs, improvements(values, higher_better, _reference(values, higher_better, initial))))
        bands.append(lr_band(lrs, {s: by_seed[s] for s in shared}, tolerance, higher_better, initial, n_boot=0))
    point = (bands[0].decades or 0.0) - (bands[1].decades or 0.0)
    picks = np.random.default_rng(rng_seed).integers(0, len(shared), size=(n_boot, len(shared)))
    lo, hi = _percentiles(_widths(*arms[0], tolerance, picks) - _widths(*arms[1], tolerance, picks), level)
    open_a, open_b = (band.open_low or band.open_high for band in bands)
    said = verdict(lo, hi, claim_positive=True)
    if (said == SUPPORTED and open_b) or (said == CONTRADICTED and open_a):
        said = INCONCLUSIVE  # the side that should be the narrower is only bounded below
    opened = [name for name, o in (("a", open_a), ("b", open_b)) if o]
    note = f"open band ({', '.join(opened)}): its width is a lower bound" if opened else ""
    return Paired(len(shared), point, lo, hi, said, excluded, note)
