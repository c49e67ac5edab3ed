"""The torch.optim.Optimizer that wires stages to parameter groups. It holds no algorithm.

One update of a group, with t its update index and μ its radius:
    g ← clip(p.grad) (+ wd·w if coupled)      gradient entering the filter (p.grad is never changed)
    g ← ρ(w, g)·g                            trust ratio `pre_filter` (LARS), if configured
    v ← filter(g);  u ← normalizer(v, g)        (filter_on: update — u ← filter(normalizer(g, g)))
    u ← u·min(1, max_rms/RMS(u))             update clip, if configured
    u ← ρ(w, u + wd·w)·(u + wd·w)            trust ratio `post_normalizer` (LAMB), if configured
    w ← w − μ·s(t)·(u + wd·w if decoupled and not already in u)

A group that is exactly Adam(W) (filter ema with bias correction, normalizer adam, no grad clip,
trust ratio or update clip) runs torch's fused Adam kernel when `fused: true` (the default): the
same update, up to floating-point rounding, several times faster than the stage path.
"""

from __future__ import annotations

import math
from collections import defaultdict
from collections.abc import Callable, Iterable
from dataclasses import dataclass
from typing import Any

import torch
from torch import Tensor, nn
from torch.optim.adam import adam as torch_adam

from trx.optim.base import ROLES, ConfigError, StepContext, validate
from trx.optim.filters import EMA, Filter
from trx.optim.normalizers import Adam, Normalizer
from trx.optim.spec import ArmConfig
from trx.optim.trust import TrustRatio, UpdateClip


@dataclass
class GroupStages:
    """The algorithm of one parameter group."""

    filter: Filter
    normalizer: Normalizer
    schedule: Callable[[int], float]
    trust_ratio: TrustRatio | None = None  # for groups whose roles it does not exclude
    update_clip: UpdateClip | None = None
    fused: bool = False  # exactly Adam(W): torch's fused kernel does the whole update
    filter_on: str = "gradient"  # or "update": the filter smooths the normalizer's output


def apply_update(params: list[Tensor], u: list[Tensor], alpha: float) -> None:
    """params += alpha·u. A low-precision u (Muon's bf16 update) goes tensor by tensor: add_ casts
    inside its kernel, where the foreach fallback for mixed dtypes would convert, scale and add
    in three passes."""
    if all(x.dtype == p.dtype for x, p in zip(u, params)):
        torch._foreach_add_(params, u, alpha=alpha)
    else:
        for p, x in zip(params, u):
            p.add_(x, alpha=alpha)


def is_exact_adam(arm: ArmConfig, trusted: bool, grad_clip: float | None) -> bool:
    """Whether a group of `arm` is plain Adam(W), which torch's fused kernel computes."""
    return (
        arm.fused
        and arm.filter_on == "gradient"
        and isinstance(arm.filter, EMA)
        and arm.filter.bias_correction
        and type(arm.normalizer) is Adam
        and arm.update_clip is None
        and not trusted
        and grad_clip is None
    )


class TrustRegionOptimizer(torch.optim.Optimizer):
    """Parameter groups carry data only (lr, base_lr, step, weight decay, names); the stages of
    group i are `self.stages[i]`. Set `diagnose = True` before a step to fill `diagnostics`."""

    def __init__(self, groups: list[dict[str, Any]], stages: list[GroupStages], grad_clip: float | None = None):
        super().__init__(groups, {})
        self.stages = stages
        self.grad_clip = grad_clip
        self.diagnose = False
        # Set by a data-parallel runner (every rank has the same gradients after DDP's all-reduce):
        # matrix normalizers then split their Newton–Schulz work over the ranks and all-gather it.
        self.data_parallel = False
        self.diagnostics: dict[str, float] = {}
        self._grad_norm: Tensor | None = None  # of a logged step, read with its update norms

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
        fused = [g["name"] for g, st in zip(self.param_groups, self.stages) if st.fused]
        if fused:
            out["fused_adam_groups"] = fused  # torch's fused kernel: equal up to rounding
        return out

    def load_state_dict(self, state_dict: dict[str, Any]) -> None:
        """torch's load, then every state tensor back in the dtype it was saved in. torch casts
        floating state to its parameter's dtype, which would turn the float32 statistics of
        NorMuon and TrasMuon on a bf16 model into bf16, and the resumed run off the uninterrupted one.
        (A checkpoint resumes into a model of the dtype it was saved from, as the runner builds it.)"""
        super().load_state_dict(state_dict)
        ids = [i for g in state_dict["param_groups"] for i in g["params"]]
        params = [p for g in self.param_groups for p in g["params"]]
        for i, p in zip(ids, params):
            for key, saved in state_dict["state"].get(i, {}).items():
                loaded = self.state[p].get(key)
                if isinstance(saved, Tensor) and isinstance(loaded, Tensor) and saved.dtype != loaded.dtype:
                    self.state[p][key] = saved.to(device=p.device, copy=True)

    def _clip_coefficient(self) -> Tensor | None:
        if self.grad_clip is None and not self.diagnose:
            return None  # the common step: nothing to measure
        grads = [p.grad for g in self.param_groups for p in g["params"] if p.grad is not None]
        if not grads:
            return None
        norm = torch.linalg.vector_norm(torch.stack(torch._foreach_norm(grads)))
        if self.diagnose:
            self._grad_norm = norm  # read with the update norms: one host sync per logged step
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
        if params and stages.fused and coef is None:
            self._fused_adam(group, stages, params, t, lr)
        elif params:
            self._stage_update(group, stages, params, coef, t, lr)
        group["step"] = t + 1

    def _stage_update(
        self, group: dict[str, Any], stages: GroupStages, params: list[Tensor], coef: Tensor | None, t: int, lr: float
    ) -> None:
        ctx = StepContext(step=t, diagnose=self.diagnose, diagnostics=self.diagnostics, data_parallel=self.data_parallel)
        diagnostics = self.diagnostics if self.diagnose else None
        trust = stages.trust_ratio if group.get("trust_ratio") else None
        raw = grads = [p.grad for p in params]
        if coef is not None:
            raw = grads = torch._foreach_mul(grads, coef)
        wd, decoupled = group["weight_decay"], group["wd_mode"] == "decoupled"
        if wd and not decoupled:
            grads = torch._foreach_add(grads, params, alpha=wd)
        if trust is not None and trust.where == "pre_filter":
            grads = trust.apply(params, grads, diagnostics, raw=raw, wd=0.0 if decoupled else wd)
        states = [self.state[p] for p in params]
        if stages.filter_on == "update":  # e.g. Adafactor's β1, on the clipped update (its paper)
            u = stages.filter.update(stages.normalizer.update(grads, grads, states, ctx), states, ctx)
        else:
            v = stages.filter.update(grads, states, ctx)
            u = stages.normalizer.update(v, grads, states, ctx)
        if stages.update_clip is not None:
            u = stages.update_clip.apply(u, diagnostics)
        if trust is not None and trust.where == "post_normalizer":
            if wd and decoupled:
                u, wd = torch._foreach_add(u, params, alpha=wd), 0.0  # LAMB: the decay is inside the ratio
            u = trust.apply(params, u, diagnostics)
        if wd and decoupled:
            torch._foreach_mul_(params, 1.0 - lr * wd)
        apply_update(params, u, -lr)

    def _fused_adam(self, group: dict[str, Any], stages: GroupStages, params: list[Tensor], t: int, lr: float) -> None:
        """The ema + adam update by torch's fused kernel, on the same state tensors as the stages."""
        f, n = stages.filter, stages.normalizer
        states = [self.state[p] for p in params]
        for p, st in zip(params, states):
            if "exp_avg" not in st:
                st["exp_avg"] = torch.zeros_like(p, memory_format=torch.preserve_format)
            if "exp_avg_sq" not in st:
                st["exp_avg_sq"] = torch.zeros_like(p, memory_format=torch.preserve_format)
            if n.amsgrad and "max_exp_avg_sq" not in st:
                st["max_exp_avg_sq"] = torch.zeros_like(p, memory_format=torch.preserve_format)
        # update t is the kernel's step t + 1 (its bias corrections use β^(t+1)); torch's functional
        # form increments the counters before calling the kernel, the kernel itself does not
        steps = list(torch.full((len(params),), float(t + 1), device=params[0].device).unbind(0))
        grads = [p.grad for p in params]
        exp_avgs = [st["exp_avg"] for st in states]
        exp_avg_sqs = [st["exp_avg_sq"] for st in states]
        peaks = [st["max_exp_avg_sq"] for st in states] if n.amsgrad else []
        decoupled = group["wd_mode"] == "decoupled"
        options = dict(amsgrad=n.amsgrad, beta1=f.beta, beta2=n.beta2, lr=lr, weight_decay=group["weight_decay"],
                       eps=n.eps, maximize=False)
        if len({(p.device, p.dtype) for p in params}) == 1:  # the kernel itself: no per-call regrouping
            kernel = torch._fused_adamw_ if decoupled else torch._fused_adam_
            kernel(params, grads, exp_avgs, exp_avg_sqs, peaks, steps, **options)
        else:
            torch._foreach_sub_(steps, 1.0)
            torch_adam(params, grads, exp_avgs, exp_avg_sqs, peaks, steps, fused=True,
                       decoupled_weight_decay=decoupled, **options)

    def _record_update_diagnostics(self, before: list[Tensor]) -> None:
        """update_norm, update_rms, param_norm, grad_norm over all parameters (Δ with its decay);
        per block (main and aux, each possibly split into decay/trust sub-groups that share one
        lr) `tr_ratio` = RMS(μ·s(t)·u)/(μ·s(t)), the step of the normalized update alone, and,
        where a decoupled decay is applied apart from u, `wd_ratio` = RMS(μ·s(t)·wd·w)/(μ·s(t));
        `aux_` versions and `aux_lr` for the aux block. One host sync."""
        after = [p.detach() for g in self.param_groups for p in g["params"]]
        blocks = [group_block(g) for g in self.param_groups for _ in g["params"]]
        decay = [separate_decay(g, st) if p.grad is not None else 0.0
                 for g, st in zip(self.param_groups, self.stages) for p in g["params"]]
        w_norms = torch.stack(torch._foreach_norm(before)).float()  # (P,) ‖w‖ before the update
        torch._foreach_sub_(before, after)  # before − after = −Δ, in place: no second copy
        step_norms = torch.stack(torch._foreach_norm(before)).float()  # (P,) ‖Δ‖
        remove_decay(before, after, decay)  # now μ·s(t)·u
        u_norms = torch.stack(torch._foreach_norm(before)).float()  # (P,) ‖μ·s(t)·u‖
        wd_norms = w_norms * torch.tensor(decay, device=w_norms.device)  # (P,) ‖k·w‖
        in_block = {name: torch.tensor([b == name for b in blocks], device=w_norms.device) for name in BLOCKS}
        values = [torch.linalg.vector_norm(step_norms), torch.linalg.vector_norm(w_norms)]
        for name in BLOCKS:  # masked: no index copy
            values += [torch.linalg.vector_norm(u_norms * in_block[name]), torch.linalg.vector_norm(wd_norms * in_block[name])]
        if self._grad_norm is not None:
            values.append(self._grad_norm.float())
        update_norm, param_norm, *block_norms = torch.stack(values).tolist()
        self._grad_norm = None
        count = sum(p.numel() for p in after)
        self.diagnostics.update(
            update_norm=update_norm,
            update_rms=update_norm / math.sqrt(max(count, 1)),
            param_norm=param_norm,
        )
        if len(block_norms) > 2 * len(BLOCKS):
            self.diagnostics["grad_norm"] = block_norms.pop()
        for i, name in enumerate(BLOCKS):
            self._record_block(name, block_norms[2 * i], block_norms[2 * i + 1],
                               any(k for k, b in zip(decay, blocks) if b == name))

    def _record_block(self, name: str, u_norm: float, wd_norm: float, decays: bool) -> None:
        """The trust-region ratios of one block from its norms ‖μ·s(t)·u‖ and ‖k·w‖."""
        groups = [g for g in self.param_groups if group_block(g) == name]
        numel = sum(p.numel() for g in groups for p in g["params"])
        if not numel:
            return
        lr = groups[0]["lr"]  # the lr this update used: the sub-groups of a block share it
        prefix = "" if name == "main" else f"{name}_"
        if name != "main":
            self.diagnostics[f"{prefix}lr"] = lr  # the main lr is the runner's `lr` column
        if lr > 0:
            self.diagnostics[f"{prefix}tr_ratio"] = u_norm / math.sqrt(numel) / lr  # RMS(μ·s·u)/(μ·s(t))
            if decays:
                self.diagnostics[f"{prefix}wd_ratio"] = wd_norm / math.sqrt(numel) / lr  # RMS(μ·s·wd·w)/(μ·s(t))


def remove_decay(minus_delta: list[Tensor], after: list[Tensor], decay: list[float]) -> None:
    """−Δ = μ·s·u + k·w_before = μ·s·u + k·(after − Δ), so μ·s·u = (1 − k)·(−Δ) − k·after: in place,
    one foreach pair per distinct k (a parameter group's)."""
    by_k: dict[float, list[int]] = defaultdict(list)
    for j, k in enumerate(decay):
        if k:
            by_k[k].append(j)
    for k, idx in by_k.items():
        d = [minus_delta[j] for j in idx]
        torch._foreach_mul_(d, 1.0 - k)
        torch._foreach_add_(d, [after[j] for j in idx], alpha=-k)


def separate_decay(group: dict[str, Any], stages: GroupStages) -> float:
    """k = μ·s(t)·wd of the group's decoupled decay, w ← (1 − k)·w, applied apart from u; 0 where
    the decay is inside u (coupled, or LAMB's trust ratio on u + wd·w)."""
    trust = stages.trust_ratio if group.get("trust_ratio") else None
    if group["wd_mode"] != "decoupled" or (trust is not None and trust.where == "post_normalizer"):
        return 0.0
    return group["lr"] * group["weight_decay"]


BLOCKS = ("main", "aux")


def group_block(group: dict[str, Any]) -> str:
    """`main` or `aux`: the block of the arm a parameter group belongs to (its name's first part)."""
    return group["name"].partition("/")[0]


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
    """Which parameter goes where: [{name, block, arm, decay, trusted, params: [(name, role, param)]}]."""
    arm = cfg if isinstance(cfg, ArmConfig) else validate(ArmConfig, cfg)
    pairs, default = _named_parameters(model)
    role_of = _apply_overrides(default, roles)
    main = [(n, role_of[n], p) for n, p in pairs if arm.in_main(role_of[n])]
    rest = [(n, role_of[n], p) for n, p in pairs if not arm.in_main(role_of[n])]
    if rest and arm.aux is None:
        listed = ", ".join(f"{n} ({r})" for n, r, _ in rest)
        why = (f"main_roles {arm.main_roles} leaves" if arm.main_roles is not None
               else f"normalizer {arm.normalizer.name} cannot take")
        raise ConfigError("aux", f"{why} these parameters and no aux block is given: {listed}")
    plan = []
    for block, block_arm, members in (("main", arm, main), ("aux", arm.aux_arm(), rest)):
        excluded = set(block_arm.weight_decay.exclude)
        trust = block_arm.trust_ratio
        for decay in (True, False):
            for trusted in (True, False) if trust else (False,):
                chosen = [
                    m for m in members
                    if (m[1] not in excluded) == decay and (trust is None or (m[1] not in trust.exclude) == trusted)
                ]
                if chosen:
                    name = block + ("" if decay else "/no_decay") + ("/no_trust" if trust and not trusted else "")
                    plan.append({"name": name, "block": block, "arm": block_arm, "decay": decay,
                                 "trusted": trusted, "params": chosen})
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
    """The optimizer of one arm config. Config problems raise ConfigError with the key."""
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
                "trust_ratio": g["trusted"],
            }
        )
        stages.append(
            GroupStages(
                block_arm.filter,
                block_arm.normalizer,
                window,
                trust_ratio=block_arm.trust_ratio,
                update_clip=block_arm.update_clip,
                fused=is_exact_adam(block_arm, g["trusted"], grad_clip),
                filter_on=block_arm.filter_on,
            )
        )
    return TrustRegionOptimizer(groups, stages, grad_clip=grad_clip)
