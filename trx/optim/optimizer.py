"""The torch.optim.Optimizer that wires stages to parameter groups. It holds no algorithm.

One update of a group, with t its update index and μ its radius:
    g ← clip(p.grad) (+ wd·w if coupled)      gradient entering the filter (p.grad is never changed)
    v ← filter(g);  u ← normalizer(v, g)
    w ← w − μ·s(t)·(u + wd·w if decoupled)
"""

from __future__ import annotations

import math
from collections.abc import Callable, Iterable
from dataclasses import dataclass
from typing import Any

import torch
from torch import Tensor, nn

from trx.optim.base import ROLES, ConfigError, StepContext, validate
from trx.optim.filters import Filter
from trx.optim.normalizers import Normalizer
from trx.optim.spec import ArmConfig


@dataclass
class GroupStages:
    """The algorithm of one parameter group."""

    filter: Filter
    normalizer: Normalizer
    schedule: Callable[[int], float]


class TrustRegionOptimizer(torch.optim.Optimizer):
    """Parameter groups carry data only (lr, base_lr, step, weight decay, names); the stages of
    group i are `self.stages[i]`. Set `diagnose = True` before a step to fill `diagnostics`."""

    def __init__(self, groups: list[dict[str, Any]], stages: list[GroupStages], grad_clip: float | None = None):
        super().__init__(groups, {})
        self.stages = stages
        self.grad_clip = grad_clip
        self.diagnose = False
        self.diagnostics: dict[str, float] = {}

    def current_lr(self, group: int = 0) -> float:
        """μ·s(t) that the next update of `group` will use."""
        g = self.param_groups[group]
        return g["base_lr"] * self.stages[group].schedule(g["step"])

    def info(self) -> dict[str, Any]:
        """Settings in effect (e.g. Newton–Schulz dtype), for the run's record."""
        out: dict[str, Any] = {}
        for group, stages in zip(self.param_groups, self.stages):
            if group["params"]:
                out.update(stages.normalizer.info(group["params"][0].device))
        return out

    def _clip_coefficient(self) -> Tensor | None:
        grads = [p.grad for g in self.param_groups for p in g["params"] if p.grad is not None]
        if not grads or (self.grad_clip is None and not self.diagnose):
            return None
        norm = torch.linalg.vector_norm(torch.stack(torch._foreach_norm(grads)))
        if self.diagnose:
            self.diagnostics["grad_norm"] = float(norm)
        if self.grad_clip is None:
            return None
        return (self.grad_clip / (norm + 1e-6)).clamp(max=1.0)

    @torch.no_grad()
    def step(self, closure: Callable[[], Tensor] | None = None) -> Tensor | None:
        loss = None
        if closure is not None:
            with torch.enable_grad():
                loss = closure()
        self.diagnostics = {}
        coef = self._clip_coefficient()
        before = [p.detach().clone() for g in self.param_groups for p in g["params"]] if self.diagnose else None
        for group, stages in zip(self.param_groups, self.stages):
            self._update_group(group, stages, coef)
        if before is not None:
            self._record_update_diagnostics(before)
        return loss

    def _update_group(self, group: dict[str, Any], stages: GroupStages, coef: Tensor | None) -> None:
        params = [p for p in group["params"] if p.grad is not None]
        t = group["step"]
        lr = group["base_lr"] * stages.schedule(t)
        group["lr"] = lr
        if params:
            ctx = StepContext(step=t, diagnose=self.diagnose, diagnostics=self.diagnostics)
            grads = [p.grad for p in params]
            if coef is not None:
                grads = torch._foreach_mul(grads, coef)
            wd = group["weight_decay"]
            if wd and group["wd_mode"] == "coupled":
                grads = torch._foreach_add(grads, params, alpha=wd)
            states = [self.state[p] for p in params]
            v = stages.filter.update(grads, states, ctx)
            u = stages.normalizer.update(v, grads, states, ctx)
            if wd and group["wd_mode"] == "decoupled":
                torch._foreach_mul_(params, 1.0 - lr * wd)
            torch._foreach_add_(params, u, alpha=-lr)
        group["step"] = t + 1

    def _record_update_diagnostics(self, before: list[Tensor]) -> None:
        after = [p.detach() for g in self.param_groups for p in g["params"]]
        delta = torch._foreach_sub(after, before)
        count = sum(p.numel() for p in after)
        update_norm = float(torch.linalg.vector_norm(torch.stack(torch._foreach_norm(delta))))
        param_norm = float(torch.linalg.vector_norm(torch.stack(torch._foreach_norm(before))))
        self.diagnostics.update(
            update_norm=update_norm,
            update_rms=update_norm / math.sqrt(max(count, 1)),
            param_norm=param_norm,
        )


def default_roles(model: nn.Module) -> dict[str, str]:
    """Roles from module types: nn.Embedding weights are `embedding`; the rest by ndim."""
    embeddings = {
        f"{name}.weight" if name else "weight" for name, mod in model.named_modules() if isinstance(mod, nn.Embedding)
    }
    return {
        name: "embedding" if name in embeddings else ("matrix" if p.ndim >= 2 else "vector")
        for name, p in model.named_parameters()
    }


def _named_parameters(model: nn.Module | Iterable[tuple[str, nn.Parameter]]) -> tuple[list[tuple[str, Tensor]], dict[str, str]]:
    """Trainable (name, parameter) pairs, tied parameters once, and their default roles."""
    if isinstance(model, nn.Module):
        pairs = list(model.named_parameters())
        roles = default_roles(model)
    else:
        seen: set[int] = set()
        pairs = []
        for name, p in model:
            if id(p) not in seen:
                seen.add(id(p))
                pairs.append((name, p))
        roles = {name: "matrix" if p.ndim >= 2 else "vector" for name, p in pairs}
    pairs = [(n, p) for n, p in pairs if p.requires_grad]
    return pairs, roles


def _apply_overrides(roles: dict[str, str], overrides: dict[str, str] | None) -> dict[str, str]:
    if not overrides:
        return roles
    unknown = sorted(set(overrides) - set(roles))
    if unknown:
        raise ConfigError("roles", f"unknown parameter names {unknown}; known: {sorted(roles)}")
    bad = {n: r for n, r in overrides.items() if r not in ROLES}
    if bad:
        raise ConfigError("roles", f"unknown roles {bad}; allowed: {', '.join(ROLES)}")
    return {**roles, **overrides}


def plan_groups(
    model: nn.Module | Iterable[tuple[str, nn.Parameter]], cfg: ArmConfig | dict[str, Any], roles: dict[str, str] | None = None
) -> list[dict[str, Any]]:
    """Which parameter goes where: [{name, block, arm, decay, params: [(name, role, param)]}]."""
    arm = cfg if isinstance(cfg, ArmConfig) else validate(ArmConfig, cfg)
    pairs, default = _named_parameters(model)
    role_of = _apply_overrides(default, roles)
    main = [(n, role_of[n], p) for n, p in pairs if arm.normalizer.accepts(role_of[n])]
    rest = [(n, role_of[n], p) for n, p in pairs if not arm.normalizer.accepts(role_of[n])]
    if rest and arm.aux is None:
        listed = ", ".join(f"{n} ({r})" for n, r, _ in rest)
        raise ConfigError("aux", f"normalizer {arm.normalizer.name} cannot take these parameters and no aux block is given: {listed}")
    plan = []
    for block, block_arm, members in (("main", arm, main), ("aux", arm.aux_arm(), rest)):
        excluded = set(block_arm.weight_decay.exclude)
        for decay in (True, False):
            chosen = [m for m in members if (m[1] not in excluded) == decay]
            if chosen:
                name = block if decay else f"{block}/no_decay"
                plan.append({"name": name, "block": block, "arm": block_arm, "decay": decay, "params": chosen})
    placed = {id(p) for g in plan for _, _, p in g["params"]}
    missing = [n for n, p in pairs if id(p) not in placed]
    if missing:  # an invariant: a bug here, not a user error
        raise RuntimeError(f"parameters in no group: {missing}")
    return plan


def build_optimizer(
    model: nn.Module | Iterable[tuple[str, nn.Parameter]],
    cfg: ArmConfig | dict[str, Any],
    total_steps: int,
    roles: dict[str, str] | None = None,
    grad_clip: float | None = None,
) -> TrustRegionOptimizer:
    """The optimizer of one arm config (SPEC §2). Config problems raise ConfigError with the key."""
    arm = cfg if isinstance(cfg, ArmConfig) else validate(ArmConfig, cfg)
    if total_steps < 1:
        raise ValueError(f"total_steps must be ≥ 1, got {total_steps}")
    groups, stages = [], []
    for g in plan_groups(model, arm, roles):
        block_arm: ArmConfig = g["arm"]
        prefix = "aux" if g["block"] == "aux" else ""
        try:
            window = block_arm.schedule.build(total_steps)
        except ConfigError as exc:
            raise (exc.under(f"{prefix}.schedule" if prefix else "schedule")) from None
        groups.append(
            {
                "params": [p for _, _, p in g["params"]],
                "names": [n for n, _, _ in g["params"]],
                "name": g["name"],
                "base_lr": block_arm.lr,
                "lr": block_arm.lr * window(0),
                "step": 0,
                "weight_decay": block_arm.weight_decay.value if g["decay"] else 0.0,
                "wd_mode": block_arm.weight_decay.mode,
            }
        )
        stages.append(GroupStages(block_arm.filter, block_arm.normalizer, window))
    return TrustRegionOptimizer(groups, stages, grad_clip=grad_clip)
