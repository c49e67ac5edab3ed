"""trx.stats: closed-form checks of the intervals, paired verdicts on synthetic seeds with a known
difference, and the lr band on hand-made sweeps whose edges fall between grid points at known
positions (a V in log-lr is linear between grid points, so the interpolation is exact)."""

from __future__ import annotations

import math

import pytest

from trx.stats import (ALPHA, CONTRADICTED, INCONCLUSIVE, SUPPORTED, equivalence, failure_difference, holm, lr_band,
                       mean_sd, median_interval, paired_difference, sign_flip_pvalue, t_interval, too_few,
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


def test_a_diverged_seed_counts_against_its_arm_and_a_missing_one_is_excluded():
    a = {0: 0.5, 1: 0.6, 2: None, 3: math.inf, 4: 0.55}  # 2: not run; 3: diverged
    b = {0: 1.0, 1: 1.1, 2: 1.0, 3: 1.0, 5: 1.0}
    p = paired_difference(a, b, higher_better=False)
    assert (p.n, p.excluded, p.failed) == (3, 3, 1)
    assert p.mean_diff == pytest.approx((-0.5 - 0.5 + 0.1) / 3)  # the diverged seed scores 1.1, the worst value
    scored = paired_difference(a, b, higher_better=False, failure_score=2.0)  # at the initial loss: worse still
    assert scored.mean_diff == pytest.approx((-0.5 - 0.5 + 1.0) / 3)
    # an arm that diverged in 3 of 5 seeds and won the other 2 is not "better"
    won = paired_difference({0: 0.1, 1: 0.1, 2: math.nan, 3: math.inf, 4: math.inf},
                            {s: 0.5 + 0.01 * s for s in range(5)}, higher_better=False, failure_score=2.3)
    assert won.verdict != SUPPORTED and won.mean_diff > 0
    one = paired_difference({0: 0.1}, {0: 0.9}, higher_better=False)
    assert one.n == 1 and one.lo is None and one.verdict == INCONCLUSIVE


def test_the_p_value_is_the_one_sided_t_test_and_matches_the_interval():
    b = {s: 1.0 + 0.1 * s for s in range(5)}
    a = {s: b[s] - 0.05 + NOISE[s] for s in range(5)}
    p = paired_difference(a, b, higher_better=False)
    from scipy import stats as st
    diffs = [a[s] - b[s] for s in range(5)]
    assert p.p == pytest.approx(st.ttest_1samp(diffs, 0.0, alternative="less").pvalue, rel=1e-3)  # δ: rounding
    assert (p.p <= ALPHA) == (p.hi < 0)  # supported exactly when the 95% interval excludes 0


def test_rounding_level_and_spreadless_differences_never_decide():
    b = {s: 1.0 + 0.1 * s for s in range(6)}
    tiny = {s: b[s] - 1e-7 * (1 + 0.01 * s) for s in range(6)}  # a consistent 1e-7: rounding
    for claim_positive in (False, True):
        assert paired_difference(tiny, b, higher_better=claim_positive).verdict == INCONCLUSIVE
    same = paired_difference({s: b[s] - 0.1 for s in range(6)}, b, higher_better=False)  # one real difference, every seed
    assert same.method == "sign-flip" and same.p == pytest.approx(1 / 64) and same.verdict == SUPPORTED  # exact, not t
    three = paired_difference({s: b[s] - 0.1 for s in range(3)}, {s: b[s] for s in range(3)}, higher_better=False)
    assert three.p == pytest.approx(1 / 8) and three.verdict == INCONCLUSIVE  # 3 seeds cannot reach 2.5%
    equal = paired_difference(b, dict(b), higher_better=False)  # identical arms: zero-width interval
    assert (equal.lo, equal.hi, equal.verdict) == (0.0, 0.0, INCONCLUSIVE)


def test_a_difference_below_the_declared_delta_never_decides_a_direction():
    b = {s: 1.0 + 0.1 * s for s in range(5)}
    a = {s: b[s] - 0.2 + NOISE[s] for s in range(5)}  # −0.2 ± 0.03: supported at δ = 0
    assert paired_difference(a, b, higher_better=False, delta=0.1).verdict == SUPPORTED
    assert paired_difference(a, b, higher_better=False, delta=0.25).verdict == INCONCLUSIVE
    assert paired_difference(b, a, higher_better=False, delta=0.25).verdict == INCONCLUSIVE


def test_equivalence_by_two_one_sided_tests():
    b = {s: 1.0 + 0.1 * s for s in range(6)}
    close = {s: b[s] + 0.3 * n for s, n in enumerate(NOISE + [0.0])}  # mean diff ≈ 0, sd ≈ 0.008
    assert equivalence(close, b, delta=0.05).verdict == SUPPORTED
    assert equivalence(close, b, delta=0.005).verdict == INCONCLUSIVE  # the interval reaches past ±δ
    far = {s: b[s] + 0.2 + n for s, n in enumerate(NOISE + [0.0])}
    e = equivalence(far, b, delta=0.05)
    assert e.verdict == CONTRADICTED and e.lo > 0.05
    with pytest.raises(ValueError):
        equivalence(close, b, delta=0.0)


def test_divergence_counts_by_the_exact_mcnemar_test():
    never = {s: False for s in range(8)}
    often = {s: s < 7 for s in range(8)}  # 7 of 8 discordant, all against b: p = 1/128
    p = failure_difference(never, often)
    assert (p.n, p.mean_diff, p.verdict) == (8, -7.0, SUPPORTED) and p.p == pytest.approx(1 / 128)
    assert failure_difference(often, never).verdict == CONTRADICTED
    three = failure_difference({s: False for s in range(3)}, {s: True for s in range(3)})
    assert three.verdict == INCONCLUSIVE and three.p == pytest.approx(1 / 8)
    assert "3 seeds cannot reach 95%: the smallest one-sided p is 1/8" in three.note
    concordant = failure_difference({s: s < 6 for s in range(8)}, {s: s < 6 for s in range(8)})
    assert concordant.p == 1.0 and concordant.verdict == INCONCLUSIVE


def test_holm_on_a_hand_worked_family():
    # sorted 0.01, 0.02, 0.03, 0.2 (m = 4): 4·0.01, 3·0.02, 2·0.03, 1·0.2 → 0.04, 0.06, 0.06, 0.2
    assert holm([0.03, 0.2, 0.01, None, 0.02]) == pytest.approx([0.06, 0.2, 0.04, None, 0.06])
    assert holm([0.3, 0.9]) == pytest.approx([0.6, 0.9])
    assert holm([0.6, 0.7, 0.8]) == pytest.approx([1.0, 1.0, 1.0])  # capped at 1, never below an earlier step


def test_sign_flip_p_is_exact():
    assert sign_flip_pvalue([1.0, 2.0, 3.0], 0.0) == pytest.approx(1 / 8)  # only the observed signs reach it
    assert sign_flip_pvalue([1.0, -2.0, 3.0], 0.0) == pytest.approx(3 / 8)  # +−+, ++− (tie), +++
    assert sign_flip_pvalue([0.5] * 6, 0.0) == pytest.approx(1 / 64)
    assert too_few(5) == "5 seeds cannot reach 95%: the smallest one-sided p is 1/32" and too_few(6) == ""


def test_median_interval_states_its_exact_confidence():
    lo, hi, conf = median_interval([3.0, 1.0, 2.0])
    assert (lo, hi) == (1.0, 3.0) and conf == pytest.approx(0.75)
    lo, hi, conf = median_interval(list(range(10)))  # k = 2: 1 − 2·(1 + 10)/1024
    assert (lo, hi) == (1, 8) and conf == pytest.approx(1 - 22 / 1024)
    assert median_interval([1.0]) is None


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


def test_band_interval_is_over_per_seed_widths_with_its_confidence():
    by_seed = v_sweep(0.4, 0.2, offsets=(0.05, -0.03, 0.0, -0.02))  # per-seed offsets with mean 0
    band = lr_band(LRS, by_seed, 0.1, initial=INITIAL)
    assert band.decades == pytest.approx(0.75) and band.n_seeds == 4 and len(band.seed_widths) == 4
    own = [lr_band(LRS, {0: v}, 0.1, initial=INITIAL).decades for v in by_seed.values()]
    assert sorted(band.seed_widths) == pytest.approx(sorted(own))  # each seed's band from its own curve
    assert band.ci == (min(own), max(own)) and band.ci_level == pytest.approx(1 - 2 / 16)
    assert "4 seeds: the width interval is only 88%" in band.note
    assert lr_band(LRS, {0: by_seed[0]}, 0.1, initial=INITIAL).ci is None  # one seed: no interval


def test_band_with_an_absolute_tolerance_in_metric_units():
    band = lr_band(LRS, v_sweep(0.4, 0.2), tolerance=0.1, initial=INITIAL, absolute=True)  # ≥ 1 − 0.1
    assert band.decades == pytest.approx(0.75)
    half = lr_band(LRS, v_sweep(0.4, 0.2), tolerance=0.05, initial=INITIAL, absolute=True)
    assert half.decades == pytest.approx(0.375)


# ---- width differences ------------------------------------------------------------------------
OFFSETS = (0.05, -0.03, 0.0, -0.02, 0.01, 0.02)


def test_tolerance_difference_pairs_per_seed_widths_by_the_exact_sign_flip_test():
    wide, narrow = v_sweep(0.1, 0.1, offsets=OFFSETS), v_sweep(0.4, 0.4, offsets=OFFSETS)  # 2 vs 0.5 decades
    wide[5] = [v + 0.02 * i for i, v in enumerate(wide[5])]  # a tilt: the seeds' widths differ
    p = tolerance_difference(LRS, wide, LRS, narrow, initial_a=INITIAL, initial_b=INITIAL)
    assert p.n == 6 and p.mean_diff > 1.4 and p.p == pytest.approx(1 / 64) and p.verdict == SUPPORTED
    assert p.method == "sign-flip" and p.lo is None  # no interval from a test that cannot give one honestly
    assert tolerance_difference(LRS, narrow, LRS, wide, initial_a=INITIAL, initial_b=INITIAL).verdict == CONTRADICTED
    same = tolerance_difference(LRS, wide, LRS, wide, initial_a=INITIAL, initial_b=INITIAL)
    assert same.mean_diff == 0 and same.verdict == INCONCLUSIVE
    extra = {**wide, 9: wide[0]}
    assert tolerance_difference(LRS, extra, LRS, narrow, initial_a=INITIAL, initial_b=INITIAL).excluded == 1
    assert tolerance_difference(LRS, {0: wide[0]}, LRS, {0: narrow[0]}).verdict == INCONCLUSIVE
    few = tolerance_difference(LRS, {s: wide[s] for s in range(3)}, LRS, {s: narrow[s] for s in range(3)},
                               initial_a=INITIAL, initial_b=INITIAL)
    assert few.verdict == INCONCLUSIVE and "3 seeds cannot reach 95%: the smallest one-sided p is 1/8" in few.note


def test_tolerance_difference_notes_an_open_band():
    open_band = v_sweep(0.01, 0.01, offsets=OFFSETS)
    p = tolerance_difference(LRS, open_band, LRS, v_sweep(0.4, 0.4, offsets=OFFSETS),
                             initial_a=INITIAL, initial_b=INITIAL)
    assert "open band (a)" in p.note and p.mean_diff == pytest.approx(3.5, abs=0.01) and p.verdict == SUPPORTED
    # an open band that measures narrower is only bounded below: not evidence that it is narrower
    edge = v_sweep(0.4, 0.4, best_x=-4.0, offsets=OFFSETS)  # open at 1e-4, 0.25 decades measured
    wide = v_sweep(0.1, 0.1, offsets=OFFSETS)  # closed, 2 decades
    wide[5] = [v + 0.02 * i for i, v in enumerate(wide[5])]
    p = tolerance_difference(LRS, edge, LRS, wide, initial_a=INITIAL, initial_b=INITIAL)
    assert p.p_against is None and p.verdict == INCONCLUSIVE
    p = tolerance_difference(LRS, wide, LRS, edge, initial_a=INITIAL, initial_b=INITIAL)
    assert p.p is None and p.verdict == INCONCLUSIVE and "open band (b)" in p.note



def test_a_diverged_seed_costs_its_arm_at_least_what_training_gained():
    """An arm that diverges in 4 of 10 seeds and wins the other 6 is not better: its diverged
    seeds score the untrained model's loss (the failure score), not the worst seed reached."""
    inf = float("inf")
    a = {s: (inf if s < 4 else 1.0 + 0.01 * s) for s in range(10)}
    b = {s: 1.2 + 0.01 * s for s in range(10)}
    assert paired_difference(a, b, higher_better=False, failure_score=2.3).verdict != SUPPORTED
    assert paired_difference(a, b, higher_better=False, failure_score=2.3).failed == 4


def test_equivalence_of_identical_arms_is_decided_exactly():
    b = {s: 1.0 + 0.1 * s for s in range(6)}
    same = equivalence(b, dict(b), delta=0.05)
    assert same.p == pytest.approx(1 / 64) and same.verdict == SUPPORTED  # within δ in every seed: exact p 2⁻⁶


# ---- a seed that lacks lr points, an open band in a family (review S3, S4) -----------------------
def test_a_seeds_missing_lr_point_is_left_out_not_counted_as_no_improvement():
    full = v_sweep(0.4, 0.4, offsets=(0.0, 0.01))
    short = {0: full[0], 1: [*full[1][:3], None, full[1][4]]}  # seed 1 never ran lr 0.1
    band = lr_band(LRS, short, 0.1, initial=INITIAL)
    without = lr_band(LRS[:3] + LRS[4:], {0: full[1][:3] + full[1][4:]}, 0.1, initial=INITIAL)
    assert band.seed_widths[1] == pytest.approx(without.seed_widths[0])  # measured on the points it ran
    assert band.seed_widths[0] == pytest.approx(0.5)
    assert "1 seed(s) lack lr points" in band.note
    diverged = {0: full[0], 1: [*full[1][:3], math.nan, full[1][4]]}  # a diverged point is no improvement
    assert lr_band(LRS, diverged, 0.1, initial=INITIAL).seed_widths[1] < without.seed_widths[0]
    p = tolerance_difference(LRS, short, LRS, full, initial_a=INITIAL, initial_b=INITIAL)
    assert "1 seed(s) of a lack lr points" in p.note


def test_an_open_band_leaves_the_claimed_direction_untested():
    edge = v_sweep(0.4, 0.4, best_x=-4.0, offsets=OFFSETS)  # open at 1e-4
    wide = v_sweep(0.1, 0.1, offsets=OFFSETS)
    wide[5] = [v + 0.02 * i for i, v in enumerate(wide[5])]
    p = tolerance_difference(LRS, wide, LRS, edge, initial_a=INITIAL, initial_b=INITIAL)
    assert p.p is None and p.verdict == INCONCLUSIVE and "not tested" in p.note
    q = tolerance_difference(LRS, edge, LRS, wide, initial_a=INITIAL, initial_b=INITIAL)
    assert q.p_against is None and q.verdict == INCONCLUSIVE
