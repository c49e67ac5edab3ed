"""The configuration of one optimizer arm: filter × normalizer × schedule, weight decay, aux."""

from __future__ import annotations

from typing import Annotated, Any, Literal

from pydantic import BeforeValidator, Field, model_validator

from trx.optim.base import Role, Strict
from trx.optim.filters import FilterConfig, NoFilter
from trx.optim.normalizers import Adam, Identity, NormalizerConfig
from trx.optim.schedules import Schedule
from trx.optim.trust import TrustRatioConfig, UpdateClipConfig

__all__ = ["ArmConfig", "AuxConfig", "Role", "WeightDecay"]


class WeightDecay(Strict):
    """Weight decay: coupled (added to g before the filter) or decoupled (−μ·s(t)·wd·w)."""

    value: float = Field(0.0, ge=0.0, description="decay coefficient wd")
    mode: Literal["coupled", "decoupled"] = Field("decoupled", description="coupled | decoupled")
    exclude: list[Role] = Field(["vector"], description="parameter roles that are not decayed")


def _number_is_value(v: Any) -> Any:
    """`weight_decay: 0.1` means `weight_decay: {value: 0.1}`."""
    return {"value": v} if isinstance(v, (int, float)) and not isinstance(v, bool) else v


WeightDecayConfig = Annotated[WeightDecay, BeforeValidator(_number_is_value)]


def _schedule_shorthand(v: Any) -> Any:
    return {"name": v} if isinstance(v, str) else v


ScheduleConfig = Annotated[Schedule, BeforeValidator(_schedule_shorthand)]


class AuxConfig(Strict):
    """Settings for the parameters the main normalizer cannot take; omitted keys inherit."""

    lr: float | None = Field(None, gt=0.0, description="absolute learning rate (or use lr_scale)")
    lr_scale: float | None = Field(None, gt=0.0, description="learning rate relative to the main lr")
    filter: FilterConfig | None = Field(None, description="default: the main filter")
    filter_on: Literal["gradient", "update"] | None = Field(None, description="default: the main setting")
    normalizer: NormalizerConfig = Field(default_factory=Adam, description="default: adam")
    weight_decay: WeightDecayConfig | None = Field(None, description="default: the main weight decay")
    schedule: ScheduleConfig | None = Field(None, description="default: the main schedule")
    trust_ratio: TrustRatioConfig | None = Field(None, description="default: the main trust ratio (null: none)")
    update_clip: UpdateClipConfig | None = Field(None, description="default: the main update clip (null: none)")
    fused: bool | None = Field(None, description="default: the main setting")

    @model_validator(mode="after")
    def _one_lr(self) -> AuxConfig:
        if self.lr is not None and self.lr_scale is not None:
            raise ValueError("lr_scale: give either lr (absolute) or lr_scale (relative), not both")
        if not self.normalizer.accepts("vector"):
            raise ValueError(f"normalizer: {self.normalizer.name} takes only matrices; aux holds the rest")
        return self


class ArmConfig(Strict):
    """One optimizer: Δ = −μ·s(t)·N(H{g}), plus weight decay; `aux` for what N cannot take."""

    lr: float = Field(gt=0.0, description="μ, the trust-region radius (learning rate)")
    filter: FilterConfig = Field(default_factory=NoFilter, description="gradient filter H")
    filter_on: Literal["gradient", "update"] = Field(
        "gradient",
        description="what H smooths: gradient (u = N(H{g})) | update (u = H{N(g)}: Adafactor's β1 on "
        "the clipped update, as in its paper)",
    )
    normalizer: NormalizerConfig = Field(default_factory=Identity, description="normalizer N")
    weight_decay: WeightDecayConfig = Field(default_factory=WeightDecay, description="weight decay")
    schedule: ScheduleConfig = Field(default_factory=Schedule, description="window s(t)")
    trust_ratio: TrustRatioConfig | None = Field(
        None, description="layer-wise trust ratio {where: pre_filter | post_normalizer, trust_coef, eps, exclude}"
    )
    update_clip: UpdateClipConfig | None = Field(None, description="trust-region clip of the update {max_rms}")
    fused: bool = Field(
        True, description="run an exact Adam(W) group (ema + adam, no clip) with torch's fused kernel"
    )
    aux: AuxConfig | None = Field(None, description="settings for parameters the normalizer cannot take")
    main_roles: list[Role] | None = Field(
        None, description="roles the main block trains (default: every role its normalizer takes); the rest "
                          "go to aux — e.g. [matrix] gives AdamW Muon's split")

    @model_validator(mode="after")
    def _main_roles_fit(self) -> ArmConfig:
        refused = [r for r in self.main_roles or () if not self.normalizer.accepts(r)]
        if refused:
            raise ValueError(f"main_roles: normalizer {self.normalizer.name} cannot take {', '.join(refused)}")
        return self

    def in_main(self, role: str) -> bool:
        """Whether a parameter of `role` trains in the main block (else in aux)."""
        return self.normalizer.accepts(role) and (self.main_roles is None or role in self.main_roles)

    def aux_arm(self) -> ArmConfig:
        """The aux block resolved against the main one, as a full arm."""
        aux = self.aux or AuxConfig()
        lr = aux.lr if aux.lr is not None else self.lr * (aux.lr_scale or 1.0)
        given = aux.model_fields_set
        return ArmConfig(
            lr=lr,
            filter=aux.filter or self.filter,
            filter_on=aux.filter_on or self.filter_on,
            normalizer=aux.normalizer,
            weight_decay=aux.weight_decay or self.weight_decay,
            schedule=aux.schedule or self.schedule,
            trust_ratio=aux.trust_ratio if "trust_ratio" in given else self.trust_ratio,
            update_clip=aux.update_clip if "update_clip" in given else self.update_clip,
            fused=self.fused if aux.fused is None else aux.fused,
        )
