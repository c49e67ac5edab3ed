"""Trust-region stages on whole tensors: the layer-wise trust ratio (LARS, LAMB) and update clipping.

Both are per-tensor rescalings of a list of tensors; the optimizer places them:
- trust ratio `pre_filter` (LARS): g ← trust_coef·‖w‖/(‖g‖ + eps) · g, with g the gradient after
  coupled weight decay, before the momentum filter;
- trust ratio `post_normalizer` (LAMB): u ← trust_coef·‖w‖/(‖u‖ + eps) · u with u the normalizer's
  output plus the decoupled decay term wd·w;
- update clip: u ← u · min(1, max_rms/RMS(u)), so RMS(Δ) ≤ μ·s(t)·max_rms (decoupled decay aside).
A tensor whose ‖w‖ or ‖u‖ is 0 keeps ratio 1 (a fresh zero-initialised layer still moves).
"""

from __future__ import annotations

from typing import Annotated, Any, Literal

import torch
from pydantic import BeforeValidator, Field, model_validator
from torch import Tensor


from trx.optim.base import Role, Strict


def _per_tensor_scale(tensors: list[Tensor], factors: Tensor) -> list[Tensor]:
    """tensors[i] · factors[i] (factors: a 1-D tensor on the tensors' device)."""
    return torch._foreach_mul(tensors, list(factors.unbind(0)))


class TrustRatio(Strict):
    """Layer-wise trust ratio trust_coef·‖w‖/(‖u‖ + eps) (LARS before the filter, LAMB after the normalizer)."""

    where: Literal["pre_filter", "post_normalizer"] = Field(
        "post_normalizer", description="pre_filter (LARS: on g + wd·w) | post_normalizer (LAMB: on u + wd·w)"
    )
    trust_coef: float = Field(1.0, gt=0.0, description="η in η·‖w‖/‖u‖ (LARS uses 0.001, LAMB 1)")
    eps: float = Field(0.0, ge=0.0, description="added to ‖u‖")
    exclude: list[Role] = Field(["vector"], description="parameter roles left at ratio 1")
    denominator: Literal["norm", "sum"] = Field(
        "norm",
        description="norm: ‖u‖ with u = g + wd·w | sum: ‖g‖ + wd·‖w‖ (the LARS paper; pre_filter only)",
    )

    @model_validator(mode="after")
    def _sum_needs_pre_filter(self) -> TrustRatio:
        if self.denominator == "sum" and self.where != "pre_filter":
            raise ValueError("denominator: `sum` (‖g‖ + wd·‖w‖) is the LARS form; it needs where: pre_filter")
        return self

    def ratios(self, params: list[Tensor], u: list[Tensor], raw: list[Tensor] | None = None, wd: float = 0.0) -> Tensor:
        """η·‖w‖/(‖u‖ + eps), or η·‖w‖/(‖raw‖ + wd·‖w‖ + eps) for `sum`; 1 where a norm is 0."""
        w_norm = torch.stack(torch._foreach_norm(params))
        if self.denominator == "sum" and raw is not None:
            u_norm = torch.stack(torch._foreach_norm(raw)) + wd * w_norm
        else:
            u_norm = torch.stack(torch._foreach_norm(u))
        ratio = self.trust_coef * w_norm / (u_norm + self.eps)
        return torch.where((w_norm > 0) & (u_norm > 0), ratio, torch.ones_like(ratio))

    def apply(
        self,
        params: list[Tensor],
        u: list[Tensor],
        diagnostics: dict[str, float] | None,
        raw: list[Tensor] | None = None,
        wd: float = 0.0,
    ) -> list[Tensor]:
        """u scaled per tensor by its ratio; `raw` (g before coupled decay) and wd serve `sum`."""
        ratio = self.ratios(params, u, raw, wd)
        if diagnostics is not None:
            diagnostics.setdefault("trust_ratio", float(ratio.mean()))
        return _per_tensor_scale(u, ratio)


class UpdateClip(Strict):
    """Trust-region clip of the update: each tensor's u scaled down to RMS ≤ max_rms."""

    max_rms: float = Field(gt=0.0, description="largest RMS of a tensor's update direction u (Δ = −μ·s(t)·u)")

    def apply(self, u: list[Tensor], diagnostics: dict[str, float] | None) -> list[Tensor]:
        rms = torch.stack(torch._foreach_mul(torch._foreach_norm(u), [x.numel() ** -0.5 for x in u])).float()
        factor = (self.max_rms / rms.clamp(min=1e-30)).clamp_(max=1.0)
        if diagnostics is not None:
            diagnostics.setdefault("update_clip_frac", float((factor < 1.0).float().mean()))
        return _per_tensor_scale(u, factor.to(u[0].dtype))


def _where_shorthand(v: Any) -> Any:
    """`trust_ratio: pre_filter` means `trust_ratio: {where: pre_filter}`."""
    return {"where": v} if isinstance(v, str) else v


def _max_rms_shorthand(v: Any) -> Any:
    """`update_clip: 1.0` means `update_clip: {max_rms: 1.0}`."""
    return {"max_rms": v} if isinstance(v, (int, float)) and not isinstance(v, bool) else v


TrustRatioConfig = Annotated[TrustRatio, BeforeValidator(_where_shorthand)]
UpdateClipConfig = Annotated[UpdateClip, BeforeValidator(_max_rms_shorthand)]
