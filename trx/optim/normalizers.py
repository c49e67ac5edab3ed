"""Normalizers: u(t) = N(v(t); state) divides the filtered gradient by its scale.

A normalizer never keeps momentum (filters own memory); one that needs the raw gradient (Adam's
second moment) receives it as `grads`: the gradient that entered the filter, after coupled
weight decay. Normalizers never modify their inputs in place.
"""

from __future__ import annotations

import math
from collections import defaultdict
from typing import Any, Literal

import torch
from pydantic import Field, field_validator
from torch import Tensor

from trx.optim import newton_schulz as ns
from trx.optim.base import Registry, StepContext, Strict, component_union

NORMALIZERS = Registry("normalizer")


class Normalizer(Strict):
    """Base of all normalizers."""

    name: str

    def accepts(self, role: str) -> bool:
        """Whether this normalizer can take a parameter of `role` (else it goes to `aux`)."""
        return True

    def update(
        self, v: list[Tensor], grads: list[Tensor], states: list[dict[str, Any]], ctx: StepContext
    ) -> list[Tensor]:
        raise NotImplementedError

    def info(self, device: torch.device) -> dict[str, Any]:
        """Settings in effect worth recording in a run's summary (e.g. the Newton–Schulz dtype)."""
        return {}


@NORMALIZERS.register
class Identity(Normalizer):
    """No normalization: u = v (SGD)."""

    name: Literal["identity"] = "identity"

    def update(self, v, grads, states, ctx):
        return v


@NORMALIZERS.register
class Sign(Normalizer):
    """Elementwise sign: u = sign(v) (signSGD; with an EMA filter, Lion-like)."""

    name: Literal["sign"] = "sign"

    def update(self, v, grads, states, ctx):
        return torch._foreach_sign(v)


@NORMALIZERS.register
class Adam(Normalizer):
    """Per-coordinate RMS: u = v/(√(ŝ) + eps), ŝ the bias-corrected EMA of g² (Adam)."""

    name: Literal["adam"] = "adam"
    beta2: float = Field(0.999, ge=0.0, lt=1.0, description="second-moment averaging coefficient β2")
    eps: float = Field(1e-8, gt=0.0, description="added to the denominator")
    amsgrad: bool = Field(False, description="use the running maximum of the second moment")

    def update(self, v, grads, states, ctx):
        for g, st in zip(grads, states):
            if "exp_avg_sq" not in st:
                st["exp_avg_sq"] = torch.zeros_like(g, memory_format=torch.preserve_format)
                if self.amsgrad:
                    st["max_exp_avg_sq"] = torch.zeros_like(g, memory_format=torch.preserve_format)
        sq = [st["exp_avg_sq"] for st in states]
        torch._foreach_mul_(sq, self.beta2)
        torch._foreach_addcmul_(sq, grads, grads, value=1.0 - self.beta2)
        if self.amsgrad:
            peak = [st["max_exp_avg_sq"] for st in states]
            torch._foreach_maximum_(peak, sq)
            sq = peak
        denom = torch._foreach_sqrt(sq)
        torch._foreach_div_(denom, math.sqrt(1.0 - self.beta2 ** (ctx.step + 1)))
        torch._foreach_add_(denom, self.eps)
        return torch._foreach_div(v, denom)


def as_matrix(t: Tensor) -> Tensor:
    """A parameter as the matrix a matrix normalizer sees: (out, in·kh·kw) for conv weights."""
    return t.reshape(t.shape[0], -1)


def shape_scale(rule: str, rows: int, cols: int) -> float:
    """Muon's per-matrix scale of the orthogonalized update, from the flattened shape."""
    if rule == "original":
        return math.sqrt(max(1.0, rows / cols))
    if rule == "match_rms_adamw":
        return 0.2 * math.sqrt(max(rows, cols))
    return 1.0


def orthogonalize_all(
    v: list[Tensor], steps: int, coefficients: Any, dtype: torch.dtype
) -> list[Tensor]:
    """Orthogonalize every tensor of `v` (as matrices), one batched call per distinct shape."""
    by_shape: dict[tuple[int, ...], list[int]] = defaultdict(list)
    for i, t in enumerate(v):
        by_shape[tuple(as_matrix(t).shape)].append(i)
    out: list[Tensor | None] = [None] * len(v)
    for idx in by_shape.values():
        stacked = torch.stack([as_matrix(v[i]) for i in idx])  # (B, rows, cols)
        ortho = ns.orthogonalize(stacked, steps, coefficients, dtype)
        for k, i in enumerate(idx):
            out[i] = ortho[k].view_as(v[i])
    return out  # type: ignore[return-value]


class MatrixNormalizer(Normalizer):
    """Options shared by the Newton–Schulz normalizers."""

    ns_steps: int = Field(5, ge=1, le=100, description="Newton–Schulz iterations")
    coefficients: str | list[list[float]] = Field(
        "keller", description="coefficient set name, or a list of [a, b, c] triples"
    )
    scale: Literal["original", "match_rms_adamw", "none"] = Field(
        "original", description="shape scale: √max(1, rows/cols) | 0.2·√max(rows, cols) | 1"
    )
    dtype: Literal["auto", "float32", "bfloat16"] = Field(
        "auto", description="Newton–Schulz precision; auto = bf16 where the hardware is fast at it"
    )

    @field_validator("coefficients")
    @classmethod
    def _known_coefficients(cls, value: Any) -> Any:
        if isinstance(value, list) and any(len(t) != 3 for t in value):
            raise ValueError("each triple must have 3 numbers [a, b, c]")
        ns.coefficient_schedule(value, 1)  # raises ValueError naming the allowed sets
        return value

    def accepts(self, role: str) -> bool:
        return role == "matrix"

    def info(self, device):
        return {"ns_dtype": str(ns.resolve_dtype(self.dtype, device)).removeprefix("torch.")}

    def orthogonal_update(self, v: list[Tensor]) -> list[Tensor]:
        """Shape-scaled orthogonalized v, the Muon direction."""
        dtype = ns.resolve_dtype(self.dtype, v[0].device)
        out = orthogonalize_all(v, self.ns_steps, self.coefficients, dtype)
        for i, t in enumerate(out):
            rows, cols = as_matrix(t).shape
            factor = shape_scale(self.scale, rows, cols)
            if factor != 1.0:
                out[i] = t * factor
        return out


@NORMALIZERS.register
class Muon(MatrixNormalizer):
    """Per matrix: the orthogonalized v (Newton–Schulz), times a shape scale (Muon)."""

    name: Literal["muon"] = "muon"

    def update(self, v, grads, states, ctx):
        return self.orthogonal_update(v)


NormalizerConfig = component_union(NORMALIZERS)
