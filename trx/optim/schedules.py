"""Schedules: the window s(t) ∈ [0, 1] that shrinks the trust-region radius, μ·s(t).

A run has τ updates t = 0 … τ−1. Warmup W gives s(t) = (t+1)/W for t < W; the window then
spans the other n = τ−W updates with x = (t−W)/(n−1) ∈ [0, 1] and s = floor + (1−floor)·φ(q(x)),
where φ is the prototype and q the interval shift (`symmetric`, then `flat`). Past τ the last
value holds. Everything is a pure function of t, checked when the schedule is built.
"""

from __future__ import annotations

import math
from collections.abc import Callable
from typing import Literal

from pydantic import Field, field_validator, model_validator

from trx.optim.base import ConfigError, Strict

PROTOTYPES: dict[str, Callable[[float], float]] = {
    "constant": lambda x: 1.0,
    "linear": lambda x: 1.0 - x,
    "cosine": lambda x: math.cos(math.pi * x / 2.0) ** 2,
    "sqrt_linear": lambda x: math.sqrt(max(0.0, 1.0 - x)),
    "one_minus_sqrt": lambda x: 1.0 - math.sqrt(x),
}

PROTOTYPE_FORMULAS = {
    "constant": "1",
    "linear": "1 − x",
    "cosine": "cos²(πx/2)",
    "sqrt_linear": "√(1 − x)",
    "one_minus_sqrt": "1 − √x",
}


class Schedule(Strict):
    """A window prototype with optional warmup, flat start, symmetric shape and floor."""

    name: Literal["constant", "linear", "cosine", "sqrt_linear", "one_minus_sqrt"] = Field(
        "constant", description="prototype φ: " + ", ".join(f"{k} {v}" for k, v in PROTOTYPE_FORMULAS.items())
    )
    warmup: int | float = Field(0, description="linear warmup: updates (integer ≥ 0) or a fraction of τ in (0, 1)")
    flat: float = Field(0.0, ge=0.0, lt=1.0, description="fraction ε of the window held at 1 before the decay")
    symmetric: bool = Field(False, description="map x ↦ |2x−1| first: a window that rises and falls")
    floor: float = Field(0.0, ge=0.0, lt=1.0, description="lowest value r: s = r + (1−r)·φ")

    @field_validator("warmup", mode="before")
    @classmethod
    def _warmup_kind(cls, w: object) -> int | float:
        if isinstance(w, bool) or not isinstance(w, (int, float)) or w < 0:
            raise ValueError(f"must be an integer number of updates ≥ 0 or a fraction in (0, 1), got {w!r}")
        if isinstance(w, float) and (w == 0.0 or w >= 1.0):
            if not w.is_integer():
                raise ValueError(f"must be an integer number of updates ≥ 0 or a fraction in (0, 1), got {w!r}")
            return int(w)
        return w

    @model_validator(mode="after")
    def _symmetric_without_warmup(self) -> Schedule:
        if self.symmetric and self.warmup:
            raise ValueError("symmetric: a symmetric window already rises from 0; it cannot take a warmup")
        return self

    def warmup_updates(self, total: int) -> int:
        """W in updates; a fraction f of τ becomes round(f·τ)."""
        return int(round(self.warmup * total)) if isinstance(self.warmup, float) else int(self.warmup)

    def build(self, total: int) -> Callable[[int], float]:
        """s(t) for a run of `total` updates; raises ConfigError if the window is too short."""
        warm = self.warmup_updates(total)
        n = total - warm
        if n < 2:
            key = "warmup" if warm else "name"
            raise ConfigError(key, f"the window after warmup has {n} updates (τ = {total}, warmup = {warm}); it needs at least 2")
        phi, flat, floor, symmetric = PROTOTYPES[self.name], self.flat, self.floor, self.symmetric

        def s(t: int) -> float:
            t = min(max(t, 0), total - 1)
            if t < warm:
                return (t + 1) / warm
            x = (t - warm) / (n - 1)
            if symmetric:
                x = abs(2.0 * x - 1.0)
            q = max(0.0, (x - flat) / (1.0 - flat))
            return floor + (1.0 - floor) * phi(q)

        return s


def lr_ratio(s: Callable[[int], float], t: int) -> float | None:
    """r(t) = s(t)/s(t−1); None where undefined (t = 0 or s(t−1) = 0)."""
    if t <= 0:
        return None
    prev = s(t - 1)
    return None if prev == 0.0 else s(t) / prev
