"""Gradient filters: v(t) = H{g}(t). Momentum is a low-pass filter on the gradient.

Every filter here is linear and time-invariant except `ema` with bias correction. Each one is
an IIR filter H(z) = B(z⁻¹)/A(z⁻¹); `transfer()` returns its (b, a) so theory (the quadratic's
contraction rate) can be computed for any of them.
"""

from __future__ import annotations

from typing import Any, Literal

import numpy as np
import torch
from pydantic import Field, field_validator, model_validator
from torch import Tensor

from trx.optim.base import Registry, StepContext, Strict, component_union

FILTERS = Registry("filter")


class Filter(Strict):
    """Base of all filters."""

    name: str

    def update(self, grads: list[Tensor], states: list[dict[str, Any]], ctx: StepContext) -> list[Tensor]:
        """Filtered gradients. May return state tensors: callers must not modify them in place."""
        raise NotImplementedError

    def transfer(self) -> tuple[list[float], list[float]] | None:
        """(b, a) of H(z) = (b₀ + b₁z⁻¹ + …)/(1 + a₁z⁻¹ + …), or None if time-varying."""
        return None


@FILTERS.register
class NoFilter(Filter):
    """No filtering: v = g."""

    name: Literal["none"] = "none"

    def update(self, grads, states, ctx):
        return grads

    def transfer(self):
        return [1.0], [1.0]


def _momentum_buffers(grads: list[Tensor], states: list[dict], beta: float, gamma: float) -> list[Tensor]:
    """buf ← β·buf + γ·g, starting from buf = γ·g (as torch.optim.SGD does)."""
    old = [(g, st["momentum_buffer"]) for g, st in zip(grads, states) if "momentum_buffer" in st]
    if old:
        gs, bufs = (list(x) for x in zip(*old))
        torch._foreach_mul_(bufs, beta)
        torch._foreach_add_(bufs, gs, alpha=gamma)
    for g, st in zip(grads, states):
        if "momentum_buffer" not in st:
            st["momentum_buffer"] = g.mul(gamma) if gamma != 1.0 else g.clone()
    return [st["momentum_buffer"] for st in states]


@FILTERS.register
class HeavyBall(Filter):
    """Heavy-ball momentum: v ← β·v + γ·g (torch SGD momentum with dampening 0)."""

    name: Literal["heavy_ball"] = "heavy_ball"
    beta: float = Field(0.9, ge=0.0, lt=1.0, description="momentum coefficient β")
    gamma: float = Field(1.0, gt=0.0, description="input gain γ")

    def update(self, grads, states, ctx):
        return _momentum_buffers(grads, states, self.beta, self.gamma)

    def transfer(self):
        return [self.gamma], [1.0, -self.beta]


@FILTERS.register
class Nesterov(Filter):
    """Nesterov momentum: buf ← β·buf + g, v = g + β·buf (torch SGD nesterov=True)."""

    name: Literal["nesterov"] = "nesterov"
    beta: float = Field(0.9, ge=0.0, lt=1.0, description="momentum coefficient β")

    def update(self, grads, states, ctx):
        bufs = _momentum_buffers(grads, states, self.beta, 1.0)
        return torch._foreach_add(grads, bufs, alpha=self.beta)

    def transfer(self):
        # v = g + β·g/(1 − βz⁻¹)  ⇒  H = ((1+β) − βz⁻¹)/(1 − βz⁻¹)
        return [1.0 + self.beta, -self.beta], [1.0, -self.beta]


@FILTERS.register
class EMA(Filter):
    """Exponential moving average: m ← β·m + (1−β)·g, v = m/(1−β^(t+1)) with bias correction."""

    name: Literal["ema"] = "ema"
    beta: float = Field(0.9, ge=0.0, lt=1.0, description="averaging coefficient β (Adam's β1)")
    bias_correction: bool = Field(True, description="divide by 1−β^(t+1), as Adam does")

    def update(self, grads, states, ctx):
        for g, st in zip(grads, states):
            if "exp_avg" not in st:
                st["exp_avg"] = torch.zeros_like(g, memory_format=torch.preserve_format)
        ms = [st["exp_avg"] for st in states]
        torch._foreach_lerp_(ms, grads, 1.0 - self.beta)
        if not self.bias_correction:
            return ms
        return torch._foreach_div(ms, 1.0 - self.beta ** (ctx.step + 1))

    def transfer(self):
        return None if self.bias_correction else ([1.0 - self.beta], [1.0, -self.beta])


def max_pole(a: list[float]) -> float:
    """Largest pole modulus of 1/(1 + a₁z⁻¹ + …): the largest root of zⁿ + a₁zⁿ⁻¹ + …."""
    if len(a) < 2:
        return 0.0
    return float(np.max(np.abs(np.roots(np.asarray(a, dtype=float)))))


@FILTERS.register
class IIR(Filter):
    """General IIR filter: v(t) = Σ bₖ·g(t−k) − Σ_{k≥1} aₖ·v(t−k), poles strictly inside |z| = 1."""

    name: Literal["iir"] = "iir"
    b: list[float] = Field(description="numerator coefficients b₀, b₁, …")
    a: list[float] = Field([1.0], description="denominator coefficients 1, a₁, … (a₀ must be 1)")

    @field_validator("b")
    @classmethod
    def _b_nonempty(cls, b: list[float]) -> list[float]:
        if not b or not any(b):
            raise ValueError("needs at least one nonzero coefficient")
        return b

    @field_validator("a")
    @classmethod
    def _a_stable(cls, a: list[float]) -> list[float]:
        if not a or a[0] != 1.0:
            raise ValueError(f"a[0] must be 1, got {a[0] if a else 'an empty list'}")
        pole = max_pole(a)
        if not pole < 1.0:
            raise ValueError(f"unstable filter: a pole has modulus {pole:.4g}; poles must lie strictly inside the unit circle")
        return a

    @model_validator(mode="after")
    def _not_too_long(self) -> IIR:
        if len(self.a) > 16 or len(self.b) > 16:
            raise ValueError("at most 16 coefficients in a and b")
        return self

    def update(self, grads, states, ctx):
        nb, na = len(self.b) - 1, len(self.a) - 1
        out = []
        for g, st in zip(grads, states):
            if "iir_g" not in st:
                st["iir_g"] = g.new_zeros((nb, *g.shape))  # past inputs, most recent first
                st["iir_v"] = g.new_zeros((na, *g.shape))  # past outputs, most recent first
            gh, vh = st["iir_g"], st["iir_v"]
            v = g.mul(self.b[0])
            for k in range(nb):
                v.add_(gh[k], alpha=self.b[k + 1])
            for k in range(na):
                v.sub_(vh[k], alpha=self.a[k + 1])
            if nb:
                st["iir_g"] = torch.cat([g.unsqueeze(0), gh[:-1]])
            if na:
                st["iir_v"] = torch.cat([v.unsqueeze(0), vh[:-1]])
            out.append(v)
        return out

    def transfer(self):
        return list(self.b), list(self.a)


FilterConfig = component_union(FILTERS)
