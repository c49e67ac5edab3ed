"""Proven, not asserted: for every verdict kind, simulated experiments where the claim is false
(scripts/null_simulations.py: synthetic sweeps in memory, judged by the functions `trx report`
calls) come out "supported" at most at the nominal one-sided 2.5% (5% for an lr-transfer `shifts`
claim, two sides at 2.5%), within Monte-Carlo error, at 3, 5 and 10 seeds; and a known effect is
found where the seeds allow it."""

from __future__ import annotations

import importlib.util
import sys
from pathlib import Path

import pytest

SCRIPT = Path(__file__).resolve().parents[1] / "scripts" / "null_simulations.py"
spec = importlib.util.spec_from_file_location("null_simulations", SCRIPT)
sims = importlib.util.module_from_spec(spec)
sys.modules["null_simulations"] = sims  # dataclasses look their module up there
spec.loader.exec_module(sims)

REPS = 2000
NEW_REPS = 1000  # steps to target and lr transfer: about 6 s for the six cells
NEW_KINDS = {"steps to target", "lr transfer"}
NULLS = [s for s in sims.SCENARIOS if not s.effect]
FAST = [s for s in NULLS if s.kind not in {"band width", "boundary", *NEW_KINDS}]


def _check(scenario, n: int, reps: int = REPS) -> float:
    found = sims.rate(scenario, n, reps)
    assert found <= sims.mc_limit(reps, scenario.nominal), f"{scenario.kind}, {scenario.name}, n = {n}: {found:.2%}"
    return found


@pytest.mark.parametrize("n", sims.SEEDS)
@pytest.mark.parametrize("scenario", FAST, ids=lambda s: f"{s.kind}: {s.name}")
def test_false_supported_rate_stays_at_or_below_nominal(scenario, n):
    _check(scenario, n)


@pytest.mark.slow
@pytest.mark.parametrize("n", sims.SEEDS)
def test_band_width_false_supported_rate_stays_at_or_below_nominal(n):
    found = _check(next(s for s in NULLS if s.kind == "band width"), n)
    if n < 6:
        assert found == 0.0  # 2⁻ⁿ > 2.5%: the exact test cannot support anything, and says so


@pytest.mark.parametrize("n", sims.SEEDS)
@pytest.mark.parametrize("scenario", [s for s in NULLS if s.kind in NEW_KINDS], ids=lambda s: f"{s.kind}: {s.name}")
def test_steps_to_target_and_lr_transfer_hold_their_level(scenario, n):
    found = _check(scenario, n, NEW_REPS)
    if scenario.kind == "lr transfer" and n < 6:
        assert found == 0.0  # exact sign-flip on per-seed slopes: 2⁻ⁿ > 2.5% cannot support anything


@pytest.mark.parametrize("n", sorted({*sims.SEEDS, 6}))
def test_the_boundary_claim_holds_its_level_on_lattice_brackets(n):
    """Brackets floored to a 1/8-decade lattice tie often: the paired t test with its exact
    fallback measured 2.6–2.8% at 6 seeds over 8,000 experiments (docs/statistics.md): above the
    nominal 2.5% by about 1 Monte-Carlo sd, within the 3 sd limit."""
    _check(next(s for s in NULLS if s.kind == "boundary"), n)


def test_every_verdict_kind_has_a_null_and_a_power_row():
    kinds = {"mean difference", "band width", "divergence count", "equivalence", "boundary", *NEW_KINDS}
    assert {s.kind for s in NULLS} == kinds and {s.kind for s in sims.SCENARIOS if s.effect} == kinds


def test_known_effects_are_found_with_ten_seeds():
    for scenario in (s for s in sims.SCENARIOS if s.effect):
        # a seed that never reaches the target is scored one step past the end: conservative, at a cost
        least = 0.3 if "never reach" in scenario.name else 0.5
        assert sims.rate(scenario, 10, 300) > least, scenario.name
