"""Null simulations and power of trx's verdicts: synthetic sweeps built in memory (numpy, no
training), judged by the same functions `trx report` calls.

For each verdict kind — a paired mean difference, an lr-band width, a divergence count,
equivalence, steps to a target, lr transfer across width, the stability boundary — many simulated experiments where the claim is false (the two arms are the same, or
the true difference sits exactly at the margin) give the false "supported" rate, which must stay
at or below the nominal one-sided 2.5%; experiments with a known effect give the power.

    python scripts/null_simulations.py              # the Markdown table of docs/statistics.md
    python scripts/null_simulations.py --reps 500   # quicker, noisier

tests/test_null_simulations.py runs the null rows with 2,000 experiments each.
"""

from __future__ import annotations

import argparse
import math
import sys
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path

import numpy as np

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from trx.boundary import Bracket, boundary_difference  # noqa: E402
from trx.speed_transfer import log_steps, seed_slopes, steps_difference, transfer_verdict  # noqa: E402
from trx.stats import (ALPHA, SUPPORTED, equivalence, failure_difference, paired_difference,  # noqa: E402
                       tolerance_difference)

SEEDS = (3, 5, 10)
LRS = [10.0**x for x in np.linspace(-4, -1, 7)]  # 7 lrs, two per decade
INITIAL = 3.0  # the reference loss bands are measured from
UNTRAINED = 10.0  # what a diverged run scores (the loss before training, above every trained one here)


@dataclass(frozen=True)
class Scenario:
    kind: str  # the verdict kind
    name: str  # what is simulated, in words
    effect: bool  # False: a null (the claim is false); True: a known effect (power)
    judge: Callable[[np.random.Generator, int], bool]  # one experiment with n seeds: "supported"?
    nominal: float = ALPHA  # the claim's false-positive level: 5% for `shifts` (two sides at 2.5%)


# ---- one experiment per verdict kind -------------------------------------------------------------
def _by_seed(values: np.ndarray) -> dict[int, float]:
    return {s: float(v) for s, v in enumerate(values)}


def difference(shift: float, tails: str = "normal", diverge: float = 0.0) -> Callable[[np.random.Generator, int], bool]:
    """Final losses a = base + noise − shift, b = base + noise (a seed effect shared by both arms,
    noise sd 1 per run); `diverge`: each run diverges (NaN) with this probability."""
    def judge(rng: np.random.Generator, n: int) -> bool:
        base = rng.normal(2.0, 3.0, n)
        draw = (lambda: rng.standard_t(3, n)) if tails == "t3" else (lambda: rng.normal(0.0, 1.0, n))
        a, b = base + draw() - shift, base + draw()
        a[rng.random(n) < diverge], b[rng.random(n) < diverge] = np.nan, np.nan
        return paired_difference(_by_seed(a), _by_seed(b), higher_better=False, failure_score=UNTRAINED).verdict == SUPPORTED
    return judge


def equivalent(true_diff: float, delta: float) -> Callable[[np.random.Generator, int], bool]:
    """a − b = true_diff + paired noise of sd 1; claim: |a − b| < δ."""
    def judge(rng: np.random.Generator, n: int) -> bool:
        base = rng.normal(2.0, 3.0, n)
        a, b = base + rng.normal(0.0, 1.0, n) + true_diff, base + rng.normal(0.0, 1.0, n)
        return equivalence(_by_seed(a), _by_seed(b), delta).verdict == SUPPORTED
    return judge


def sweep(rng: np.random.Generator, n: int, width: float) -> dict[int, list[float]]:
    """One arm's lr sweep: improvement peak · (1 − ((x − x0)/width)²)⁺ over log-lr x, a per-seed
    optimum x0 and peak, and per-cell noise."""
    x = np.log10(LRS)
    x0 = rng.normal(-2.5, 0.25, (n, 1))
    peak = rng.normal(2.0, 0.1, (n, 1))
    gain = peak * np.clip(1 - ((x - x0) / width) ** 2, 0, None) + rng.normal(0.0, 0.03, (n, len(x)))
    return {s: list(INITIAL - gain[s]) for s in range(n)}


def band(wider: float) -> Callable[[np.random.Generator, int], bool]:
    """Arm a's band `wider` times arm b's (1: the same arm); claim: a is wider."""
    def judge(rng: np.random.Generator, n: int) -> bool:
        a, b = sweep(rng, n, 1.2 * wider), sweep(rng, n, 1.2)
        return tolerance_difference(LRS, a, LRS, b, 0.1, False, INITIAL, INITIAL).verdict == SUPPORTED
    return judge


def failures(q_a: float, q_b: float, shared: float = 0.5) -> Callable[[np.random.Generator, int], bool]:
    """Each seed fails (diverges or stalls) in a with probability q_a, in b with q_b; with
    probability `shared` a seed is "hard" and both fail together at the larger rate (paired)."""
    def judge(rng: np.random.Generator, n: int) -> bool:
        hard = rng.random(n) < shared * min(q_a, q_b)
        a, b = hard | (rng.random(n) < q_a), hard | (rng.random(n) < q_b)
        return failure_difference(_by_seed(a), _by_seed(b)).verdict == SUPPORTED
    return judge


STEPS, LOG_EVERY = 200, 10  # a run's updates and its metrics rows: steps are seen in tens


def steps_to_target(ratio: float, miss: float = 0.2) -> Callable[[np.random.Generator, int], bool]:
    """Steps to the target: a per-seed base (shared by both arms, log-normal around 80) times run
    noise (log sd 0.2), a's scaled by `ratio`; rounded up to the logging interval; with probability
    `miss` a run never reaches the target (or diverged). Claim: a is faster."""
    def judge(rng: np.random.Generator, n: int) -> bool:
        base = 80 * np.exp(rng.normal(0.0, 0.3, n))

        def arm(scale: float) -> dict[int, float]:
            true = base * scale * np.exp(rng.normal(0.0, 0.2, n))
            seen = np.ceil(true / LOG_EVERY) * LOG_EVERY
            reached = [None if (rng.random() < miss or t > STEPS) else int(t) for t in seen]
            return {s: log_steps(r, STEPS) for s, r in enumerate(reached)}
        return steps_difference(arm(ratio), arm(1.0)).verdict == SUPPORTED
    return judge


WIDTHS = (32, 64, 128)
GRID = np.linspace(-3.0, -1.0, 7)  # log10 lr, three points per decade


def lr_transfer(true_slope: float, expect: str = "shifts", delta: float | None = None
                ) -> Callable[[np.random.Generator, int], bool]:
    """Each seed's best lr at each width: the grid point nearest to the lowest of a noisy loss
    curve (x − x*)² + noise over the lr grid, x* = −2 + a seed effect + true_slope·log2(width/64)·log10 2
    + a per-(seed, width) jitter. Claim: `expect` (shifts: the slope is not 0)."""
    def judge(rng: np.random.Generator, n: int) -> bool:
        seed_effect = rng.normal(0.0, 0.15, n)
        best: dict[float, dict[int, float]] = {}
        for w in WIDTHS:
            x_star = -2.0 + seed_effect + true_slope * np.log10(w / 64) + rng.normal(0.0, 0.15, n)
            loss = (GRID[None, :] - x_star[:, None]) ** 2 + rng.normal(0.0, 0.02, (n, len(GRID)))
            best[w] = {s: float(10 ** GRID[int(np.argmin(loss[s]))]) for s in range(n)}
        return transfer_verdict(seed_slopes(best), expect, delta).verdict == SUPPORTED
    return judge


LATTICE = 1 / 8  # decades: a bracket after 3 bisections of a one-decade grid step


def boundary(higher: float) -> Callable[[np.random.Generator, int], bool]:
    """Each seed's true boundary (log10 lr) on each side: a common offset (−2 + U(0, 1) decades,
    so the lattice falls anywhere) + noise of sd 0.1 decade, a's raised by `higher`; the search
    finds the bracket [L, L + 1/8) of the 1/8-decade lattice holding it (3 bisections of a
    one-decade grid). Claim: a's boundary is higher (`boundary_difference`)."""
    def judge(rng: np.random.Generator, n: int) -> bool:
        offset = -2.0 + rng.uniform(0.0, 1.0)

        def side(shift: float) -> dict[int, Bracket]:
            low = np.floor((offset + shift + rng.normal(0.0, 0.1, n)) / LATTICE) * LATTICE
            return {s: Bracket(float(10**x), float(10 ** (x + LATTICE))) for s, x in enumerate(low)}
        return boundary_difference(side(higher), side(0.0)).verdict == SUPPORTED
    return judge


SCENARIOS = [
    Scenario("mean difference", "same arms, normal noise", False, difference(0.0)),
    Scenario("mean difference", "same arms, heavy tails (t, 3 df)", False, difference(0.0, "t3")),
    Scenario("mean difference", "same arms, each run diverges with p = 0.2", False, difference(0.0, diverge=0.2)),
    Scenario("band width", "same arms", False, band(1.0)),
    Scenario("divergence count", "same arms, p(fail) = 0.3", False, failures(0.3, 0.3)),
    Scenario("equivalence", "true difference exactly at the margin δ", False, equivalent(1.0, 1.0)),
    Scenario("steps to target", "same arms, logged every 10 steps, 20% of runs never reach it", False,
             steps_to_target(1.0)),
    Scenario("lr transfer", "shifts: true slope 0 (nominal 5%: two sides at 2.5%)", False, lr_transfer(0.0),
             nominal=2 * ALPHA),
    Scenario("lr transfer", "transfers: true slope exactly at the margin δ = 0.5", False,
             lr_transfer(0.5, "transfers", 0.5)),
    Scenario("mean difference", "a better by 1 sd of the paired difference", True, difference(math.sqrt(2))),
    Scenario("mean difference", "a better by 2 sd", True, difference(2 * math.sqrt(2))),
    Scenario("band width", "a's band 1.5× as wide", True, band(1.5)),
    Scenario("divergence count", "p(fail) 0.1 in a, 0.7 in b", True, failures(0.1, 0.7, 0.0)),
    Scenario("equivalence", "no difference, δ = 1 sd of the paired difference", True, equivalent(0.0, math.sqrt(2))),
    Scenario("steps to target", "a takes half the steps, every run reaches the target", True, steps_to_target(0.5, 0.0)),
    Scenario("steps to target", "a takes half the steps, 20% of runs never reach it", True, steps_to_target(0.5)),
    Scenario("lr transfer", "shifts: best lr ∝ 1/width (slope −1)", True, lr_transfer(-1.0)),
    Scenario("lr transfer", "transfers: true slope 0, δ = 0.5", True, lr_transfer(0.0, "transfers", 0.5)),
    Scenario("boundary", "same true boundaries (sd 0.1 decade), brackets of 1/8 decade", False, boundary(0.0)),
    Scenario("boundary", "a's boundary 0.25 decade higher (×1.8)", True, boundary(0.25)),
]


def rate(scenario: Scenario, n: int, reps: int, seed: int = 0) -> float:
    """Share of `reps` simulated experiments with n seeds whose verdict is "supported"."""
    rng = np.random.default_rng([seed, n, SCENARIOS.index(scenario) if scenario in SCENARIOS else 99])
    return sum(scenario.judge(rng, n) for _ in range(reps)) / reps


def mc_limit(reps: int, nominal: float = ALPHA) -> float:
    """The largest false-positive rate consistent with `nominal` over `reps` experiments (3 sd)."""
    return nominal + 3 * math.sqrt(nominal * (1 - nominal) / reps)


def table(reps: int) -> str:
    lines = [f"| verdict kind | simulated | {' | '.join(f'n = {n}' for n in SEEDS)} |",
             "|---|---|" + "---:|" * len(SEEDS)]
    for effect, title in ((False, "false \"supported\" (null: the claim is false)"), (True, "power (a known effect)")):
        lines.append(f"| **{title}** | | {' | '.join('' for _ in SEEDS)} |")
        for s in (s for s in SCENARIOS if s.effect == effect):
            lines.append(f"| {s.kind} | {s.name} | {' | '.join(f'{rate(s, n, reps):.1%}' for n in SEEDS)} |")
    return "\n".join(lines)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--reps", type=int, default=4000, help="simulated experiments per cell")
    reps = parser.parse_args().reps
    print(table(reps))
    print(f"\n{reps} simulated experiments per cell; nominal false-positive rate {ALPHA:.1%} "
          f"(Monte-Carlo limit {mc_limit(reps):.1%} at 3 sd); lr transfer `shifts` {2 * ALPHA:.0%} "
          f"(limit {mc_limit(reps, 2 * ALPHA):.1%}).")


if __name__ == "__main__":
    main()
