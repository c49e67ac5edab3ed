"""Normalizers: u(t) = N(v(t); state) divides the filtered gradient by its scale.

A normalizer never keeps momentum (filters own memory); one that needs the raw gradient (Adam's
second moment) receives it as `grads`: the gradient that entered the filter, after coupled
weight decay. Normalizers never modify their inputs in place.
"""

from __future__ import annotations

import math
from collections import defaultdict
from collections.abc import Callable
from typing import Any, ClassVar, Literal

import torch
from pydantic import Field, field_validator
from torch import Tensor

from trx.optim import newton_schulz as ns
from trx.optim.matrix_sharding import data_parallel_world, newton_schulz_flops, sharded_map
from trx.optim.base import Registry, StepContext, Strict, component_union
from trx.optim.matrix_stats import (
    energy_clip,
    feature_dim,
    feature_energy,
    feature_mean_square,
    orthogonality_error,
    scaled_norm,
    second_moment_factor,
)

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


def shape_groups(v: list[Tensor]) -> list[list[int]]:
    """Indices of `v` grouped by matrix shape: each group is one batched Newton–Schulz call."""
    by_shape: dict[tuple[int, ...], list[int]] = defaultdict(list)
    for i, t in enumerate(v):
        by_shape[tuple(as_matrix(t).shape)].append(i)
    return list(by_shape.values())


def orthogonalize_all(
    v: list[Tensor], steps: int, coefficients: Any, dtype: torch.dtype
) -> list[Tensor]:
    """Orthogonalize every tensor of `v` (as matrices), one batched call per distinct shape."""
    out: list[Tensor | None] = [None] * len(v)
    for idx in shape_groups(v):
        stacked = torch.stack([as_matrix(v[i]) for i in idx])  # (B, rows, cols)
        ortho = ns.orthogonalize(stacked, steps, coefficients, dtype)
        for k, i in enumerate(idx):
            out[i] = ortho[k].view_as(v[i])
    return out  # type: ignore[return-value]


def stack_matrices(tensors: list[Tensor], dtype: torch.dtype) -> Tensor:
    """The tensors as matrices, stacked into one (B, rows, cols) tensor of `dtype` in one pass."""
    first = as_matrix(tensors[0])
    out = first.new_empty((len(tensors), *first.shape), dtype=dtype)
    for k, t in enumerate(tensors):
        out[k].copy_(as_matrix(t))
    return out


def gather(states: list[dict[str, Any]], key: str, init: Callable[[int], Tensor]) -> Tensor:
    """The per-parameter state `key` of a shape group, stacked; init(k) where it is missing."""
    return torch.stack([st[key] if key in st else init(k) for k, st in enumerate(states)])


def scatter(states: list[dict[str, Any]], key: str, stacked: Tensor) -> None:
    """Write a stacked state back, one slice per parameter."""
    for st, value in zip(states, stacked.unbind(0)):
        st[key] = value


class MatrixNormalizer(Normalizer):
    """Newton–Schulz normalizers: per shape group, orthogonalize the stack, then `finish` it."""

    ns_steps: int = Field(5, ge=1, le=100, description="Newton–Schulz iterations")
    coefficients: str | list[list[float]] = Field(
        "keller", description="coefficient set name, or a list of [a, b, c] triples"
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

    # Whether `finish` may work in the Newton–Schulz dtype: then the stack is built in that dtype
    # (one conversion pass, none back) and the update reaches the parameters in it, as in torch's Muon.
    low_precision_finish: ClassVar[bool] = False

    def update(self, v, grads, states, ctx):
        dtype = ns.resolve_dtype(self.dtype, v[0].device)
        out: list[Tensor | None] = [None] * len(v)
        tally: dict[str, Any] = {}  # diagnostics as tensors: one host sync at the end, in report
        groups = shape_groups(v)
        stacks = [stack_matrices([v[i] for i in idx], dtype if self.low_precision_finish else v[idx[0]].dtype) for idx in groups]
        orthos = self.orthogonalize_stacks(stacks, dtype, ctx.data_parallel)
        for idx, M, O in zip(groups, stacks, orthos):
            if ctx.diagnose and "ns_orth_err" not in tally and "ns_orth_err" not in ctx.diagnostics:
                tally["ns_orth_err"] = orthogonality_error(O[0])  # once a step: the first matrix
            O = self.finish(O, M, [states[i] for i in idx], ctx, tally)
            for k, i in enumerate(idx):
                out[i] = O[k].view_as(v[i])
        out = self.calibrate(out, tally)  # type: ignore[arg-type]
        if ctx.diagnose:
            ctx.diagnostics.update(self.report(tally))
        return out  # type: ignore[return-value]

    def orthogonalize_stacks(self, stacks: list[Tensor], dtype: torch.dtype, data_parallel: bool) -> list[Tensor]:
        """Newton–Schulz of every shape group's stack; under data parallelism each rank computes a
        FLOP-balanced share of the matrices and the results are all-gathered."""
        if not data_parallel or data_parallel_world()[1] == 1:
            return [ns.orthogonalize(M, self.ns_steps, self.coefficients, dtype) for M in stacks]
        mats = [m for M in stacks for m in M.unbind(0)]
        costs = [newton_schulz_flops(m.shape, self.ns_steps) for m in mats]
        done = iter(sharded_map(mats, lambda xs: orthogonalize_all(xs, self.ns_steps, self.coefficients, dtype), costs))
        return [torch.stack([next(done) for _ in range(len(M))]) for M in stacks]

    def finish(
        self, O: Tensor, M: Tensor, states: list[dict[str, Any]], ctx: StepContext, tally: dict[str, Any]
    ) -> Tensor:
        """The update of a shape group from its orthogonalized stack O and filtered stack M."""
        return O

    def calibrate(self, out: list[Tensor], tally: dict[str, Any]) -> list[Tensor]:
        """The whole group's update from every shape group's `finish` (e.g. one global scale)."""
        return out

    def report(self, tally: dict[str, Any]) -> dict[str, float]:
        """Diagnostics from what `update` and `finish` tallied over the shape groups."""
        names = [k for k in ("ns_orth_err",) if k in tally]
        return dict(zip(names, torch.stack([tally[k] for k in names]).tolist())) if names else {}


class ShapeScaled(MatrixNormalizer):
    """The shape scale option of the Muon family."""

    scale: Literal["original", "match_rms_adamw", "none"] = Field(
        "original", description="shape scale: √max(1, rows/cols) | 0.2·√max(rows, cols) | 1"
    )

    def scaled(self, O: Tensor) -> Tensor:
        factor = shape_scale(self.scale, *O.shape[-2:])
        return O.mul_(factor) if factor != 1.0 else O


@NORMALIZERS.register
class Muon(ShapeScaled):
    """Per matrix: the orthogonalized v (Newton–Schulz), times a shape scale (Muon)."""

    name: Literal["muon"] = "muon"
    low_precision_finish: ClassVar[bool] = True

    def finish(self, O, M, states, ctx, tally):
        return self.scaled(O)


class SecondMomentOptions(Strict):
    """NorMuon's per-feature second moment of the orthogonalized matrix (shared with TrasMuon)."""

    beta2: float = Field(0.95, ge=0.0, lt=1.0, description="averaging coefficient of the per-feature second moment")
    eps: float = Field(1e-8, gt=0.0, description="added to √(second moment) and to norms")
    axis: Literal["output", "input"] = Field(
        "output",
        description="features that carry the second moment: output = rows of the (out, in) matrix "
        "(NorMuon's neurons); input = columns",
    )

    def normalize(self, O: Tensor, states: list[dict[str, Any]], rms: float | None) -> Tensor:
        """O·(1/(√s + eps)) per feature, s the EMA of mean(O²) kept in states['normuon_sq'],
        rescaled to keep ‖O‖_F (rms None) or to RMS `rms`. One pass over O besides its mean squares:
        the norm after the normalization follows from the per-feature mean squares."""
        mean_sq = feature_mean_square(O, self.axis)
        return O * rescaled(self.second_moment(mean_sq, states), mean_sq, O, rms, self.eps, self.axis)

    def second_moment(self, mean_sq: Tensor, states: list[dict[str, Any]]) -> Tensor:
        """The per-feature factor 1/(√s + eps), updating s (states['normuon_sq']) with mean(O²)."""
        s = gather(states, "normuon_sq", lambda k: torch.zeros_like(mean_sq[k]))
        factor, s = second_moment_factor(mean_sq, s, self.beta2, self.eps)
        scatter(states, "normuon_sq", s)
        return factor


def rescaled(factor: Tensor | None, mean_sq: Tensor, O: Tensor, rms: float | None, eps: float, axis: str) -> Tensor:
    """The per-feature factor times the per-matrix scale that sets ‖O·factor‖_F to ‖O‖_F or to
    rms·√(rows·cols)."""
    count = O.shape[feature_dim(axis)]
    after = scaled_norm(mean_sq, factor, count)
    target = scaled_norm(mean_sq, None, count) if rms is None else rms * (O.shape[-2] * O.shape[-1]) ** 0.5
    scale = target / (after + eps)
    return scale if factor is None else factor * scale


@NORMALIZERS.register
class NorMuon(ShapeScaled, SecondMomentOptions):
    """Muon, then a per-neuron second-moment normalization that keeps the matrix norm (NorMuon)."""

    name: Literal["normuon"] = "normuon"
    low_precision_finish: ClassVar[bool] = True  # statistics are taken in float32

    def finish(self, O, M, states, ctx, tally):
        return self.scaled(self.normalize(O, states, rms=None))


@NORMALIZERS.register
class TrasMuon(MatrixNormalizer, SecondMomentOptions):
    """Muon + per-feature second moment, global RMS calibration, energy trust-region clip (TrasMuon).

    From the abstract of arXiv 2602.13498 (only the abstract is public): Newton–Schulz
    orthogonalized momentum, then (i) a global RMS calibration of the update magnitude and
    (ii) an energy-based trust-region clip driven by relative energy ratios, damping high-energy
    bursts so that no warmup is needed.

    The details follow the reading of the one public implementation (rollfast, JAX), written here
    from its description: after Newton–Schulz, NorMuon's per-feature second-moment normalization
    (`row_norm`); each matrix calibrated to RMS `rms`; the energy of each feature on the other axis
    (of the filtered momentum M, not of O) compared with an EMA (`energy_beta`) of the median feature
    energy; features whose ratio r exceeds `trigger` damped by 1/(1 + α·log1p(r/trigger)), floored at
    `clip_min`; that factor smoothed by an EMA (`clip_beta`) and applied every `clip_every`
    updates after `clip_delay`, mixed in by `clip_mix`. The momentum is the filter's
    (`filter: {name: ema, beta: 0.95, bias_correction: false}` as in that reading).

    Axis: rollfast stores weights as (in, out), so its "rows" are input features; a second
    reconstruction (zij) puts the second moment on output features and the energy on input
    features. Our default `axis: output` follows zij and NorMuon (whose normalization is per
    output neuron in torch's (out, in) layout), so that `normuon` and `trasmuon` share one
    stage with one meaning; `axis: input` gives rollfast's literal layout.

    `clip: false` leaves the energy clip out (an ablation): the update is the calibrated,
    row-normalized O, and no energy state is kept. The other ablations are options too:
    `clip_beta: 0` applies the raw clip of each update (no smoothing); `row_norm: false` is the
    RMS calibration alone (no per-feature second moment); `calibration: global` scales all the
    group's matrices by one factor to RMS `rms` together (the abstract's "global RMS calibration")
    instead of each matrix to RMS `rms`.

    State per parameter: `normuon_sq` (second moment), `energy_ref` (running median energy),
    `clip_ema` and `clip_last` (the smoothed and the applied clip). Diagnostics, over every
    feature of every matrix of the update: `clip_frac` (fraction of features damped: applied
    factor below 1), `clip_mean` (mean applied factor, 1 = no damping), `clip_lowest` (smallest
    applied factor), `trigger_frac` (fraction whose energy ratio is over the trigger this update:
    the raw clip's input, before smoothing), `energy_ratio` (largest ratio); none with `clip: false`.
    """

    name: Literal["trasmuon"] = "trasmuon"
    row_norm: bool = Field(True, description="apply the per-feature second-moment normalization first")
    rms: float = Field(1.0, gt=0.0, description="RMS of the update after calibration (before the clip)")
    calibration: Literal["matrix", "global"] = Field(
        "matrix", description="matrix: each matrix to RMS `rms` | global: one scale for all matrices of the group")
    clip: bool = Field(True, description="apply the energy trust-region clip (false: the ablation without it)")
    energy_beta: float = Field(0.95, ge=0.0, lt=1.0, description="EMA coefficient of the median feature energy")
    trigger: float = Field(1.0, gt=0.0, description="energy ratio above which a feature is damped")
    alpha: float = Field(1.0, ge=0.0, description="damping strength α in 1/(1 + α·log1p(r/trigger))")
    clip_min: float = Field(0.1, ge=0.0, le=1.0, description="smallest clip factor")
    clip_beta: float = Field(0.9, ge=0.0, lt=1.0, description="EMA coefficient of the clip factor")
    clip_every: int = Field(1, ge=1, description="refresh the applied clip every this many updates")
    clip_delay: int = Field(0, ge=0, description="updates before the clip is first refreshed")
    clip_mix: float = Field(1.0, ge=0.0, le=1.0, description="weight of the new smoothed clip when refreshed")

    low_precision_finish: ClassVar[bool] = True  # statistics are taken in float32

    def finish(self, O, M, states, ctx, tally):
        mean_sq = feature_mean_square(O, self.axis)  # (B, r, 1) or (B, 1, c)
        factor = self.second_moment(mean_sq, states) if self.row_norm else None
        if self.calibration == "matrix":
            U = O * rescaled(factor, mean_sq, O, self.rms, self.eps, self.axis)
        else:  # calibrated in `calibrate`, by one scale from every matrix's norm before the clip
            U = O * factor if factor is not None else O
            norm = scaled_norm(mean_sq, factor, O.shape[feature_dim(self.axis)])  # (B, 1, 1) ‖U_b‖_F
            sq = norm.square().sum()
            tally["calib_sq"] = tally["calib_sq"] + sq if "calib_sq" in tally else sq
            tally["calib_n"] = tally.get("calib_n", 0) + O.numel()
        return U.mul_(self.energy_clip(M, states, ctx, tally)) if self.clip else U

    def calibrate(self, out, tally):
        """Global calibration: every matrix times rms·√N/‖U‖, with ‖U‖ over all N entries of the
        group's matrices before the clip (a scalar, so it commutes with the per-feature clip)."""
        if "calib_n" not in tally:
            return out
        scale = self.rms * math.sqrt(tally["calib_n"]) / (tally["calib_sq"].sqrt() + self.eps)
        torch._foreach_mul_(out, scale)
        return out

    def energy_clip(self, M: Tensor, states: list[dict[str, Any]], ctx: StepContext, tally: dict[str, Any]) -> Tensor:
        """The applied per-feature clip (B, 1, c) or (B, r, 1), updating its state."""
        energy = feature_energy(M, self.axis)
        median = energy.flatten(1).median(dim=1).values.view(-1, 1, 1)
        fresh = [k for k, st in enumerate(states) if "energy_ref" not in st]
        ref = gather(states, "energy_ref", lambda k: median[k])
        ref = ref.mul(self.energy_beta).add_(median, alpha=1.0 - self.energy_beta)
        if fresh:  # (an index list is a host-to-device copy: only on the first update)
            ref[fresh] = median[fresh]  # the first reference is the median itself, exactly
        ratio = energy / (ref + self.eps)
        raw = energy_clip(ratio, self.trigger, self.alpha, self.clip_min)
        smooth = gather(states, "clip_ema", lambda k: torch.ones_like(raw[k]))
        smooth = smooth.mul(self.clip_beta).add_(raw, alpha=1.0 - self.clip_beta)
        applied = gather(states, "clip_last", lambda k: torch.ones_like(raw[k]))
        count = ctx.step + 1
        if count > self.clip_delay and (count - self.clip_delay) % self.clip_every == 0:
            applied = applied.mul(1.0 - self.clip_mix).add_(smooth, alpha=self.clip_mix)
        for key, value in (("energy_ref", ref), ("clip_ema", smooth), ("clip_last", applied)):
            scatter(states, key, value)
        if ctx.diagnose:
            tally_clip(tally, ratio > self.trigger, ratio, applied)
        return applied

    def report(self, tally):
        if not tally.get("features"):
            return super().report(tally)
        n = tally["features"]
        tally = {**tally, "clip_frac": tally["damped"] / n, "clip_mean": tally["clip_sum"] / n,
                 "trigger_frac": tally["over"] / n}
        names = list(CLIP_DIAGNOSTICS) + (["ns_orth_err"] if "ns_orth_err" in tally else [])
        return dict(zip(names, torch.stack([tally[k].float() for k in names]).tolist()))


# TrasMuon's clip diagnostics, over every feature of every matrix of the update (docs/optimizers.md)
CLIP_DIAGNOSTICS = ("clip_frac", "clip_mean", "clip_lowest", "trigger_frac", "energy_ratio")


def tally_clip(tally: dict[str, Any], over: Tensor, ratio: Tensor, applied: Tensor) -> None:
    """Add one shape group's clip to the running tally: counts of damped (applied factor < 1)
    and over-trigger features, the factors' sum and smallest, the largest energy ratio. `applied`
    holds one factor per feature, (B, 1, c) or (B, r, 1), as `ratio` and `over` do."""
    factors = applied.float()
    for key, value, combine in (
        ("damped", (factors < 1.0).sum().float(), torch.add),
        ("over", over.sum().float(), torch.add),
        ("clip_sum", factors.sum(), torch.add),
        ("clip_lowest", factors.min(), torch.minimum),
        ("energy_ratio", ratio.max(), torch.maximum),
    ):
        tally[key] = combine(tally[key], value) if key in tally else value
    tally["features"] = tally.get("features", 0) + ratio.numel()


@NORMALIZERS.register
class Adafactor(Normalizer):
    """Factored second moment: row × column statistics for matrices, full for vectors (Adafactor).

    With t = step + 1: β2(t) = 1 − t^decay_rate; R, C the EMAs of the row and column means of
    g² + eps (matrices, conv weights flattened to (out, in·kh·kw)), V̂ = R·C/mean(R); a vector keeps
    the full EMA. u = v/√V̂, then u/max(1, RMS(u)/clip_threshold). Relative step is off: the
    learning rate is absolute. With `filter: none` this is Adafactor with β1 = 0.

    The paper's β1 averages the clipped update, m ← β1·m + (1−β1)·û, without bias correction:
    `filter: {name: ema, beta: 0.9, bias_correction: false}` with `filter_on: update` on the arm.
    The momentum stays the filter's (normalizers keep no momentum); only where it acts moves.
    With the default `filter_on: gradient` an ema filter smooths g before the normalizer instead,
    as Adam's numerator does.
    """

    name: Literal["adafactor"] = "adafactor"
    decay_rate: float = Field(-0.8, lt=0.0, description="β2(t) = 1 − t^decay_rate")
    eps: float = Field(1e-30, gt=0.0, description="ε1, added to g² before averaging")
    clip_threshold: float = Field(1.0, gt=0.0, description="d: the update is scaled down to RMS ≤ d")

    def update(self, v, grads, states, ctx):
        beta2 = 1.0 - (ctx.step + 1) ** self.decay_rate
        out = [self.factored(x, g, st, beta2) for x, g, st in zip(v, grads, states)]
        rms = torch.stack(torch._foreach_mul(torch._foreach_norm(out), [x.numel() ** -0.5 for x in out]))
        scale = (rms / self.clip_threshold).clamp_(min=1.0).reciprocal_()
        return torch._foreach_mul(out, list(scale.unbind(0)))

    def factored(self, v: Tensor, g: Tensor, st: dict[str, Any], beta2: float) -> Tensor:
        """v/√V̂ for one parameter, updating its row/column (or full) statistics."""
        sq = g.square().add_(self.eps)
        if g.ndim < 2:
            st["factored_sq"] = st["factored_sq"].lerp_(sq, 1.0 - beta2) if "factored_sq" in st else sq
            return v / st["factored_sq"].sqrt()
        sq = as_matrix(sq)  # (r, c)
        for key, mean in (("factored_row", sq.mean(dim=1)), ("factored_col", sq.mean(dim=0))):
            st[key] = st[key].lerp_(mean, 1.0 - beta2) if key in st else mean
        row, col = st["factored_row"], st["factored_col"]
        vhat = torch.outer(row / row.mean(), col)  # (r, c)
        return (as_matrix(v) / vhat.sqrt()).view_as(v)


NormalizerConfig = component_union(NORMALIZERS)
