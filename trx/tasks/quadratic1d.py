"""f(w) = ½·λ·w² in one dimension, where linear-systems theory gives exact answers.

With a constant schedule, the identity normalizer and no weight decay, an LTI filter
H = B(z⁻¹)/A(z⁻¹) makes the iteration linear: w(t+1) = w(t) − μ·H{λw + σξ}(t). Its
characteristic polynomial in d = z⁻¹ is P(d) = (1 − d)·A(d) + μλ·d·B(d); the contraction rate
is the largest root modulus of zⁿ·P(1/z), and the noise-driven stationary variance is
μ²σ²·Σₖ hₖ², h the impulse response of d·B(d)/P(d).
"""

from __future__ import annotations

import math
from typing import Any

import numpy as np
import torch
from pydantic import Field
from torch import nn

from trx.optim import ArmConfig
from trx.tasks.base import Task, TaskOptions, generator, register_task


class QuadraticOptions(TaskOptions):
    curvature: float = Field(1.0, gt=0.0, description="λ, the curvature")
    init: float = Field(1.0, description="w₀, the starting point")
    noise: float = Field(0.0, ge=0.0, description="σ of additive Gaussian gradient noise")


class Scalar(nn.Module):
    def __init__(self, value: float):
        super().__init__()
        self.w = nn.Parameter(torch.tensor([value], dtype=torch.float64))


def char_poly(b: list[float], a: list[float], h: float) -> np.ndarray:
    """Coefficients of P(d) = (1 − d)·A(d) + h·d·B(d), lowest power first."""
    n = max(len(a) + 1, len(b) + 1)
    p = np.zeros(n)
    p[: len(a)] += a
    p[1 : len(a) + 1] -= a
    p[1 : len(b) + 1] += h * np.asarray(b)
    return p


def contraction_rate(b: list[float], a: list[float], h: float) -> float:
    """Largest |root| of the iteration's characteristic polynomial (z-domain)."""
    p = np.trim_zeros(char_poly(b, a, h), "b")
    return float(np.max(np.abs(np.roots(p)))) if len(p) > 1 else 0.0


def stable_limit(b: list[float], a: list[float]) -> float:
    """Largest h = μλ such that every (0, h) contracts, found by bisection."""
    lo, hi = 1e-9, 1.0
    while contraction_rate(b, a, hi) < 1.0 and hi < 1e6:
        hi *= 2.0
    for _ in range(100):
        mid = 0.5 * (lo + hi)
        lo, hi = (mid, hi) if contraction_rate(b, a, mid) < 1.0 else (lo, mid)
    return lo


def stationary_variance(b: list[float], a: list[float], h: float, lr: float, sigma: float) -> float:
    """μ²σ²·Σ hₖ² for the impulse response of d·B(d)/P(d) (inf if unstable)."""
    if contraction_rate(b, a, h) >= 1.0:
        return math.inf
    p = char_poly(b, a, h)
    num = np.zeros(len(b) + 1)
    num[1:] = b
    impulse = np.zeros(20000)
    for k in range(len(impulse)):  # p₀·y(k) = num(k) − Σ_{j≥1} pⱼ·y(k−j)
        acc = num[k] if k < len(num) else 0.0
        for j in range(1, min(k, len(p) - 1) + 1):
            acc -= p[j] * impulse[k - j]
        impulse[k] = acc / p[0]
    return float(lr**2 * sigma**2 * np.sum(impulse**2))


def measured_rate(steps: np.ndarray, w: np.ndarray) -> float | None:
    """Geometric decay rate from the envelope of |w(t)|: two windows' maxima, early and late."""
    keep = np.isfinite(w) & (w > 1e-250)
    steps, w = steps[keep], w[keep]
    if len(w) < 20:
        return None
    start = len(w) // 10
    width = max(2, (len(w) - start) // 10)
    early, late = slice(start, start + width), slice(len(w) - width, len(w))
    i1, i2 = start + int(np.argmax(w[early])), len(w) - width + int(np.argmax(w[late]))
    if steps[i2] <= steps[i1]:
        return None
    return float((w[i2] / w[i1]) ** (1.0 / (steps[i2] - steps[i1])))


@register_task
class Quadratic1D(Task):
    name = "quadratic1d"
    description = "f(w) = ½·λ·w², 1-D; closed-form rate and noise variance beside the measured ones"
    Options = QuadraticOptions

    def build_model(self) -> nn.Module:
        return Scalar(self.options.init).to(self.device)

    def batch(self, step: int) -> torch.Tensor:
        return torch.randn(1, generator=generator(self.seed, step), dtype=torch.float64)

    def loss(self, model: nn.Module, batch: torch.Tensor) -> torch.Tensor:
        w = model.w
        noise = self.options.noise * batch.to(w.device) * (w - w.detach())  # adds σξ to the gradient only
        return (0.5 * self.options.curvature * w.square() + noise).sum()

    def summarize(self, history: list[dict[str, float]], arm: dict[str, Any], steps: int) -> dict[str, Any]:
        cfg = ArmConfig.model_validate(arm)
        sched = cfg.schedule
        tf = cfg.filter.transfer()
        linear = (
            tf is not None
            and cfg.normalizer.name == "identity"
            and sched.name == "constant"
            and not sched.warmup
            and cfg.weight_decay.value == 0.0
        )
        if not linear:
            return {"theory": None}
        b, a = tf
        lam, sigma = self.options.curvature, self.options.noise
        h = cfg.lr * lam
        theory: dict[str, Any] = {
            "h": h,
            "predicted_rate": contraction_rate(b, a, h),
            "stable_h_max": stable_limit(b, a),
        }
        rows = [(r["step"], r["loss"]) for r in history if r.get("loss") is not None and r["step"] < steps]
        t = np.array([s for s, _ in rows], dtype=float)
        w = np.sqrt(np.maximum(2.0 * np.array([v for _, v in rows], dtype=float) / lam, 0.0))
        if sigma == 0.0:
            theory["measured_rate"] = measured_rate(t, w)
        else:
            theory["predicted_variance"] = stationary_variance(b, a, h, cfg.lr, sigma)
            tail = w[len(w) // 2 :]
            theory["measured_variance"] = float(np.mean(tail**2)) if len(tail) else None
        return {"theory": theory}
