"""trx.stats: closed-form checks of the intervals, paired verdicts on synthetic seeds with a known
difference, and the lr band on hand-made sweeps whose edges fall between grid points at known
positions (a V in log-lr is linear between grid points, so the interpolation is exact)."""

from __future__ import annotations

import math

import pytest

from trx.stats import (CONTRADICTED, INCONCLUSIVE, SUPPORTED, lr_band, mean_sd, paired_difference, t_interval,
                       tolerance_difference)

LRS = [1e-4, 1e-3, 1e-2, 1e-1, 1.0]  # log10: -4 … 0
INITIAL = 2.0


def v_sweep(left: float, right: float, best_x: float = -2.0, offsets=(0.0,)) -> dict[int, list[float | None]]:
    """Final losses INITIAL − improvement with improvement 1 − slope·|x − best_x| (x = log10 lr), a
    V peaking at best_x; one seed per offset (added to every loss of that seed)."""
    def gain(x: float) -> float:
        return 1.0 - (left if x < best_x else right) * abs(x - best_x)

    return {s: [INITIAL - gain(math.log10(lr)) + off for lr in LRS] for s, off in enumerate(offsets)}


# ---- means and paired differences -------------------------------------------------------------
def test_t_interval_matches_the_closed_form_and_needs_two_values():
    lo, hi = t_interval([1.0, 2.0, 3.0])  # mean 2, sd 1, t(0.975, 2) = 4.302653
    assert (lo, hi) == pytest.approx((2 - 4.302653 / math.sqrt(3), 2 + 4.302653 / math.sqrt(3)), rel=1e-6)
    assert t_interval([5.0, None, math.inf]) is None and t_interval([]) is None
    lo90, hi90 = t_interval([1.0, 2.0, 3.0], level=0.90)
    assert lo < lo90 < 2 < hi90 < hi
    assert mean_sd([1.0, 2.0, 3.0, None, math.nan]) == (2.0, 1.0)


NOISE = [0.03, -0.02, 0.01, -0.04, 0.02]


def test_paired_difference_supports_a_known_improvement():
    b = {s: 1.0 + 0.1 * s for s in range(5)}  # seeds differ a lot; the pairing removes it
    a = {s: b[s] - 0.2 + NOISE[s] for s in range(5)}
    p = paired_difference(a, b, higher_better=False)
    assert p.n == 5 and p.excluded == 0 and p.mean_diff == pytest.approx(-0.2)
    assert p.lo < -0.2 < p.hi < 0 and p.verdict == SUPPORTED
    assert paired_difference(b, a, higher_better=False).verdict == CONTRADICTED
    assert paired_difference(a, b, higher_better=True).verdict == CONTRADICTED  # for an accuracy, lower is worse


def test_paired_difference_without_a_difference_is_inconclusive():
    b = {s: 1.0 + 0.1 * s for s in range(5)}
    a = {s: b[s] + NOISE[s] for s in range(5)}
    p = paired_difference(a, b, higher_better=False)
    assert p.lo < 0 < p.hi and p.verdict == INCONCLUSIVE


def test_paired_difference_excludes_and_counts_diverged_and_unpaired_seeds():
    a = {0: 0.5, 1: 0.6, 2: None, 3: math.inf, 4: 0.55}
    b = {0: 1.0, 1: 1.1, 2: 1.0, 3: 1.0, 5: 1.0}
    p = paired_difference(a, b, higher_better=False)
    assert (p.n, p.excluded) == (2, 4) and p.mean_diff == pytest.approx(-0.5)
    one = paired_difference({0: 0.1}, {0: 0.9}, higher_better=False)
    assert one.n == 1 and one.lo is None and one.verdict == INCONCLUSIVE


# ---- the lr band ------------------------------------------------------------------------------
def test_band_edges_are_interpolated_between_grid_points():
    # improvement 1 at 1e-2, slope 0.4/decade below, 0.2/decade above: ≥ 0.9 on [-2.25, -1.5]
    band = lr_band(LRS, v_sweep(0.4, 0.2), tolerance=0.1, initial=INITIAL)
    assert band.best_lr == pytest.approx(1e-2) and band.best == pytest.approx(INITIAL - 1.0)
    assert band.lo == pytest.approx(10**-2.25) and band.hi == pytest.approx(10**-1.5)
    assert band.decades == pytest.approx(0.75)
    assert (band.best_at_edge, band.open_low, band.open_high, band.note) == (None, False, False, "")
    wider = lr_band(LRS, v_sweep(0.4, 0.2), tolerance=0.3, initial=INITIAL)  # ≥ 0.7: [-2.75, -0.5]
    assert (math.log10(wider.lo), math.log10(wider.hi)) == pytest.approx((-2.75, -0.5))


def test_band_without_initial_measures_from_the_worst_point_and_input_order_does_not_matter():
    by_seed = v_sweep(0.4, 0.2)
    ref = max(by_seed[0])  # the worst loss (improvement 0.2 at 1e-4) becomes the zero
    band = lr_band(LRS, by_seed, tolerance=0.1)
    assert band.reference == ref  # improvements 0, 0.4, 0.8, 0.6, 0.4: band ≥ 0.72
    assert math.log10(band.lo) == pytest.approx(-2 - 0.08 / 0.4)
    assert math.log10(band.hi) == pytest.approx(-2 + 0.08 / 0.2)
    shuffled = [4, 0, 3, 1, 2]
    again = lr_band([LRS[i] for i in shuffled], {s: [v[i] for i in shuffled] for s, v in by_seed.items()}, 0.1)
    assert (again.lo, again.hi) == pytest.approx((band.lo, band.hi))


def test_near_zero_losses_keep_a_finite_sensible_band():
    # the best loss is 1e-6: a band of 10% of the loss itself would hold only the best point
    losses = [0.5, 1e-4, 1e-6, 2e-5, 1.2]  # improvements over 2.0: 1.5, ≈2, 2, ≈2, 0.8
    band = lr_band(LRS, {0: losses, 1: losses}, tolerance=0.1, initial=INITIAL)
    assert band.best_lr == pytest.approx(1e-2)
    thr = 0.9 * (INITIAL - 1e-6)
    low = -3 + (INITIAL - 1e-4 - thr) / ((INITIAL - 1e-4) - (INITIAL - 0.5)) * -1
    high = -1 + (INITIAL - 2e-5 - thr) / ((INITIAL - 2e-5) - (INITIAL - 1.2))
    assert math.log10(band.lo) == pytest.approx(low) and math.log10(band.hi) == pytest.approx(high)
    assert 2 < band.decades < 4 and math.isfinite(band.decades)


def test_diverged_and_missing_points_are_outside_the_band():
    losses = v_sweep(0.4, 0.2, offsets=(0.0, 0.0, 0.0))
    losses[1][3] = math.inf  # 1e-1 diverged in one seed of three: outside, scored as no improvement
    band = lr_band(LRS, losses, tolerance=0.1, initial=INITIAL)
    # the score falls from 1 at x = -2 to 0 at x = -1: crosses 0.9 at -1.9
    assert math.log10(band.hi) == pytest.approx(-1.9) and not band.open_high
    losses[2][1] = None  # a missing cell at 1e-3: the low side closes at -2.1
    assert math.log10(lr_band(LRS, losses, 0.1, initial=INITIAL).lo) == pytest.approx(-2.1)
    worse = {0: [INITIAL + 1.0] * 5, 1: [math.nan] * 5}  # nothing improves on the initial loss
    nothing = lr_band(LRS, worse, 0.1, initial=INITIAL)
    assert nothing.best_lr is None and nothing.decades is None and "no learning rate improved" in nothing.note


def test_edge_flags_best_at_the_edge_and_an_open_band():
    low = lr_band(LRS, v_sweep(0.4, 0.2, best_x=-4.0), 0.1, initial=INITIAL)
    assert low.best_at_edge == "low" and low.open_low and not low.open_high and low.lo == pytest.approx(1e-4)
    assert math.log10(low.hi) == pytest.approx(-3.5) and "best at the low edge" in low.note
    high = lr_band(LRS, v_sweep(0.4, 0.2, best_x=0.0), 0.1, initial=INITIAL)
    assert high.best_at_edge == "high" and high.open_high and math.log10(high.lo) == pytest.approx(-0.25)
    flat = lr_band(LRS, v_sweep(0.01, 0.01), 0.1, initial=INITIAL)  # everything within 10%
    assert flat.best_at_edge is None and flat.open_low and flat.open_high
    assert flat.decades == pytest.approx(4.0) and "width is a lower bound" in flat.note


def test_accuracy_band_uses_the_value_or_a_given_chance_level():
    accs = {0: [0.20, 0.80, 0.95, 0.90, 0.15]}
    plain = lr_band(LRS, accs, 0.1, higher_better=True)  # ≥ 0.855 of accuracy itself
    assert plain.best_lr == pytest.approx(1e-2) and plain.reference == 0.0
    assert math.log10(plain.lo) == pytest.approx(-2 - (0.95 - 0.855) / 0.15)
    chance = lr_band(LRS, accs, 0.1, higher_better=True, initial=0.1)  # ≥ 0.1 + 0.9·0.85 = 0.865
    assert math.log10(chance.lo) == pytest.approx(-2 - (0.95 - 0.865) / 0.15)
    assert chance.decades < plain.decades


def test_bootstrap_interval_contains_the_estimate_and_is_deterministic():
    by_seed = v_sweep(0.4, 0.2, offsets=(0.05, -0.03, 0.0, -0.02))  # per-seed offsets with mean 0
    band = lr_band(LRS, by_seed, 0.1, initial=INITIAL)
    assert band.decades == pytest.approx(0.75) and band.n_seeds == 4
    lo, hi = band.ci
    assert lo < band.decades < hi and hi - lo > 0.02
    assert lr_band(LRS, by_seed, 0.1, initial=INITIAL).ci == band.ci
    assert lr_band(LRS, by_seed, 0.1, initial=INITIAL, rng_seed=1).ci != band.ci
    assert lr_band(LRS, {0: by_seed[0]}, 0.1, initial=INITIAL).ci is None  # one seed: no interval


# ---- width differences ------------------------------------------------------------------------
def test_tolerance_difference_pairs_seeds_and_gives_a_verdict():
    offsets = (0.05, -0.03, 0.0, -0.02)
    wide, narrow = v_sweep(0.1, 0.1, offsets=offsets), v_sweep(0.4, 0.4, offsets=offsets)  # 2 vs 0.5 decades
    p = tolerance_difference(LRS, wide, LRS, narrow, initial_a=INITIAL, initial_b=INITIAL)
    assert p.n == 4 and p.mean_diff == pytest.approx(1.5) and p.lo > 0 and p.verdict == SUPPORTED
    assert tolerance_difference(LRS, narrow, LRS, wide, initial_a=INITIAL, initial_b=INITIAL).verdict == CONTRADICTED
    same = tolerance_difference(LRS, wide, LRS, wide, initial_a=INITIAL, initial_b=INITIAL)
    assert same.mean_diff == 0 and same.verdict == INCONCLUSIVE  # identical in every draw: [0, 0]
    extra = {**wide, 9: wide[0]}
    assert tolerance_difference(LRS, extra, LRS, narrow, initial_a=INITIAL, initial_b=INITIAL).excluded == 1
    assert tolerance_difference(LRS, {0: wide[0]}, LRS, {0: narrow[0]}).verdict == INCONCLUSIVE


def test_tolerance_difference_notes_an_open_band():
    open_band = v_sweep(0.01, 0.01, offsets=(0.01, -0.01))
    p = tolerance_difference(LRS, open_band, LRS, v_sweep(0.4, 0.4, offsets=(0.01, -0.01)),
                             initial_a=INITIAL, initial_b=INITIAL)
    assert "open band (a)" in p.note and p.mean_diff == pytest.approx(3.5) and p.verdict == SUPPORTED
    # an open band that measures narrower is only bounded below: not evidence that it is narrower
    edge = v_sweep(0.4, 0.4, best_x=-4.0, offsets=(0.01, -0.01))  # open at 1e-4, 0.25 decades measured
    wide = v_sweep(0.1, 0.1, offsets=(0.01, -0.01))  # closed, 2 decades
    p = tolerance_difference(LRS, edge, LRS, wide, initial_a=INITIAL, initial_b=INITIAL)
    assert p.hi < 0 and p.verdict == INCONCLUSIVE
    p = tolerance_difference(LRS, wide, LRS, edge, initial_a=INITIAL, initial_b=INITIAL)
    assert p.lo > 0 and p.verdict == INCONCLUSIVE and "open band (b)" in p.note
