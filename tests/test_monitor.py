"""The loss monitor's rules on hand-written loss sequences: spikes, divergence, stalls, state."""

from __future__ import annotations

import math

import pytest

from trx.monitor import FirstLoss, LossMonitor, RunningMin, Stall


def feed(monitor: LossMonitor, losses: list[float], start: int = 0) -> int | None:
    """Observe losses as updates start, start+1, …; the update that diverged, or None."""
    for t, value in enumerate(losses, start):
        monitor.first(value)
        if monitor.observe(value, t):
            return t
    return None


# an AdamW-like char-LM start: a slow descent to about 3.5, then one jump to 5.97
PLATEAU = [4.2 - 0.7 * k / 29 + 0.02 * (-1) ** k for k in range(30)]
JUMP = PLATEAU + [5.97] + PLATEAU[-5:]


def test_a_jump_the_median_rule_misses_is_a_spike_against_the_running_minimum():
    median_rule = LossMonitor(100.0)
    assert feed(median_rule, JUMP) is None and median_rule.spikes == 0  # 5.97 < 2 × median (≈ 3.9)
    running = LossMonitor(100.0, RunningMin(spike=1.5))
    assert feed(running, JUMP) is None and running.spikes == 1  # 5.97 > 1.5 × min (≈ 3.48)
    assert running.best_loss == pytest.approx(min(JUMP))


def test_running_min_diverges_after_patience_consecutive_losses_over_its_line():
    """Line = 3 × running minimum 2 = 6; two losses over it and a calm one reset the count;
    the third consecutive one is the divergence."""
    m = LossMonitor(100.0, RunningMin(diverge=3.0, patience=3, window=1))
    assert feed(m, [4.0, 3.0, 2.0, 7.0, 7.0, 2.5, 7.0, 7.0, 7.0, 1.0]) == 8
    assert m.best_loss == 2.0  # the losses counted towards divergence never lower the minimum


def test_running_min_of_the_median_ignores_one_lucky_batch():
    """Level = the lowest median of 3 losses: one batch at 0.5 among losses near 2 leaves it at
    2, so only 3.5 is a spike (> 1.5 × 2); against the raw minimum (window 1) every later loss
    above 0.75 is one."""
    losses = [2.2, 2.1, 2.0, 0.5, 2.0, 2.1, 3.5, 2.0]
    smooth = LossMonitor(100.0, RunningMin(spike=1.5, window=3))
    feed(smooth, losses)
    assert smooth.level == 2.0 and smooth.spikes == 1  # 3.5 > 1.5 × 2
    raw = LossMonitor(100.0, RunningMin(spike=1.5, window=1))
    feed(raw, losses)
    assert raw.level == 0.5 and raw.spikes == 4  # 2.0, 2.1, 3.5, 2.0 after the 0.5


def test_non_finite_losses_diverge_at_once_under_both_rules():
    for rule in (FirstLoss(), RunningMin(patience=5)):
        assert feed(LossMonitor(100.0, rule), [3.0, 2.0, math.nan]) == 2
        assert feed(LossMonitor(100.0, rule), [3.0, math.inf]) == 1


def test_first_loss_rule_is_the_default_and_keeps_its_threshold():
    m = LossMonitor(10.0)
    assert isinstance(m.rule, FirstLoss)
    assert feed(m, [1.0, 0.5, 9.0, 10.5]) == 3  # above 10 × the first loss
    assert feed(LossMonitor(10.0, FirstLoss(spike=1.2, window=3)), [1.0] * 12 + [1.3]) is None


def test_stall_is_the_median_of_the_window_at_its_update():
    """τ = 10, at 0.5: checked once, at update 5, on the median of losses 3, 4, 5."""
    losses = [5.0, 4.0, 3.0, 2.5, 2.4, 2.6, 1.0, 1.0, 1.0, 1.0]  # median of 2.5, 2.4, 2.6 = 2.5
    for above, stalled in ((2.49, 5), (2.51, None)):
        m = LossMonitor(100.0, stall=Stall(at=0.5, above=above, window=3), steps=10)
        feed(m, losses)
        assert m.stalled_at == stalled
    late = LossMonitor(100.0, stall=Stall(at=1.0, above=0.5, window=2), steps=10)
    feed(late, losses)
    assert late.stalled_at is None  # update τ = 10 is the final loss, not yet seen
    late.observe(0.9, 10, count_spikes=False)
    assert late.stalled_at == 10


def test_stall_without_progress_compares_two_windows():
    """improve 0.1, window 3, at update 6 of τ = 8: losses 4…6 against losses 1…3. A slow descent
    (median 2.0 after 2.1: 5% better) is a stall; a drop to 1.5 (29% better) is not; with
    `above` too both must hold; fewer than two windows of losses is no stall."""
    slow = [3.0, 2.2, 2.1, 2.0, 2.05, 2.0, 1.95, 1.9, 1.9]
    fast = [3.0, 2.2, 2.1, 2.0, 1.5, 1.4, 1.5, 1.3, 1.2]
    for losses, above, stalled in ((slow, None, 6), (fast, None, None), (slow, 2.5, None), (slow, 1.5, 6)):
        m = LossMonitor(100.0, stall=Stall(at=0.75, improve=0.1, above=above, window=3), steps=8)
        feed(m, losses)
        assert m.stalled_at == stalled, (losses, above)
    early = LossMonitor(100.0, stall=Stall(at=0.25, improve=0.1, window=3), steps=8)
    feed(early, slow)
    assert early.stalled_at is None  # update 2: only 3 losses
    with pytest.raises(ValueError, match="above: give"):
        Stall(at=0.5)


def test_stall_update_is_the_ceiling_of_at_times_tau():
    assert Stall(at=0.3, above=1.0).step(10) == 3  # 0.3 × 10 is 3.0000000000000004 in floats
    assert Stall(at=0.25, above=1.0).step(10) == 3
    assert Stall(at=1.0, above=1.0).step(7) == 7


def test_state_round_trip_continues_exactly():
    """Saved mid-run and loaded into a fresh monitor, the rest of the run counts the same."""
    losses = [4.0, 3.0, 2.0, 7.0, 3.5, 2.1, 2.2, 7.0, 2.3, 2.2, 2.1, 2.0]
    rules = dict(rule=RunningMin(spike=1.5, diverge=3.0, patience=3, window=1), stall=Stall(at=0.5, above=2.0, window=4), steps=12)
    whole = LossMonitor(100.0, **rules)
    feed(whole, losses)
    for cut in (4, 8):
        first = LossMonitor(100.0, **rules)
        feed(first, losses[:cut])
        second = LossMonitor(100.0, **rules)
        second.load(first.state())
        feed(second, losses[cut:], start=cut)
        assert second.state() == whole.state(), cut
    assert whole.spikes == 3 and whole.over == 0 and whole.stalled_at == 6  # 7.0, 3.5 and 7.0 are over 1.5 × 2
