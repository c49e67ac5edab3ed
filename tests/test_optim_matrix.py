"""NorMuon, TrasMuon and Adafactor against per-matrix references written from their descriptions."""

from __future__ import annotations

import copy
import math

import pytest
import torch
from torch import nn

from trx.optim import StepContext, build_optimizer
from trx.optim.newton_schulz import orthogonalize
from trx.optim.normalizers import NORMALIZERS

STEPS = 30


def mlp(bias: bool, seed: int = 0) -> nn.Module:
    torch.manual_seed(seed)
    return nn.Sequential(nn.Linear(8, 24, bias=bias), nn.Tanh(), nn.Linear(24, 16, bias=bias), nn.Tanh(), nn.Linear(16, 4, bias=bias))


def batches():
    gen = torch.Generator().manual_seed(5)
    w = torch.randn(8, 4, generator=gen)
    for _ in range(STEPS):
        x = torch.randn(32, 8, generator=gen)
        yield x, torch.sin(x @ w)


def grads_of(m, batch):
    m.zero_grad()
    nn.functional.mse_loss(m(batch[0]), batch[1]).backward()
    return [p.grad.clone() for p in m.parameters()]


def compare(cfg: dict, reference, bias: bool = False, joint: bool = False) -> float:
    """Largest relative gap between trx (cfg) and reference(p, g, state, t) over the run, or with
    `joint` reference(params, grads, states, t) → one step per parameter (a group-wide rule)."""
    step = reference if joint else (lambda ps, gs, sts, t: [reference(p, g, st, t) for p, g, st in zip(ps, gs, sts)])
    ours = mlp(bias)
    ref = copy.deepcopy(ours)
    opt = build_optimizer(ours, cfg, total_steps=STEPS)
    states: list[dict] = [{} for _ in ref.parameters()]
    worst = 0.0
    for t, batch in enumerate(batches()):
        opt.zero_grad()
        nn.functional.mse_loss(ours(batch[0]), batch[1]).backward()
        opt.step()
        grads = grads_of(ref, batch)
        with torch.no_grad():
            params = list(ref.parameters())
            for p, d in zip(params, step(params, grads, states, t)):
                p.sub_(d)
            gap = max(float((p - q).abs().max()) for p, q in zip(ours.parameters(), ref.parameters()))
            worst = max(worst, gap / max(float(q.abs().max()) for q in ref.parameters()))
    return worst


def ns(M: torch.Tensor) -> torch.Tensor:
    return orthogonalize(M[None], 5, "keller", torch.float32)[0]


# --- NorMuon ----------------------------------------------------------------------------------


def normuon_reference(lr, beta, beta2, eps):
    def step(p, g, st, t):
        buf = st["buf"] = beta * st["buf"] + g if "buf" in st else g.clone()
        O = ns(g + beta * buf)  # nesterov
        s = st["s"] = beta2 * st.get("s", torch.zeros(O.shape[0], 1)) + (1 - beta2) * O.square().mean(1, keepdim=True)
        N = O / (s.sqrt() + eps)
        N = N * O.norm() / (N.norm() + eps)  # keep the matrix norm
        return lr * math.sqrt(max(1.0, O.shape[0] / O.shape[1])) * N

    return step


def test_normuon_matches_its_reference():
    cfg = {"lr": 0.02, "filter": {"name": "nesterov", "beta": 0.95},
           "normalizer": {"name": "normuon", "beta2": 0.9, "eps": 1e-8, "dtype": "float32"}}
    assert compare(cfg, normuon_reference(0.02, 0.95, 0.9, 1e-8)) <= 1e-5


# --- TrasMuon ---------------------------------------------------------------------------------

TRAS = {"beta2": 0.95, "eps": 1e-8, "rms": 0.5, "energy_beta": 0.9, "trigger": 1.2, "alpha": 2.0,
        "clip_min": 0.3, "clip_beta": 0.8}


def trasmuon_direction(M, st, o=TRAS):
    """Per matrix (out, in), axis output: the TrasMuon update direction, from the description."""
    rows, cols = M.shape
    O = tras_normalized(M, st, o)
    return O * (o["rms"] * math.sqrt(rows * cols) / (O.norm() + o["eps"])) * tras_clip(M, st, o)[None, :]


def tras_normalized(M, st, o=TRAS, row_norm=True):
    """Newton–Schulz, then (row_norm) NorMuon's per-output-feature second moment."""
    O = ns(M)
    if not row_norm:
        return O
    s = st["s"] = o["beta2"] * st.get("s", torch.zeros(M.shape[0], 1)) + (1 - o["beta2"]) * O.square().mean(1, keepdim=True)
    return O / (s.sqrt() + o["eps"])


def tras_clip(M, st, o=TRAS):
    """The smoothed energy clip per input column (smoothing off with clip_beta 0)."""
    cols = M.shape[1]
    energy = M.square().sum(0)  # per input column
    median = energy.median()
    ref = st["ref"] = median if "ref" not in st else o["energy_beta"] * st["ref"] + (1 - o["energy_beta"]) * median
    ratio = energy / (ref + o["eps"])
    raw = torch.where(ratio > o["trigger"], 1 / (1 + o["alpha"] * torch.log1p(ratio / o["trigger"])), torch.ones_like(ratio))
    raw = raw.clamp(o["clip_min"], 1.0)
    st["clip"] = o["clip_beta"] * st.get("clip", torch.ones(cols)) + (1 - o["clip_beta"]) * raw
    return st["clip"]


def trasmuon_reference(lr, beta, wd):
    def step(p, g, st, t):
        m = st["m"] = beta * st.get("m", torch.zeros_like(g)) + (1 - beta) * g
        return lr * wd * p + lr * trasmuon_direction(m, st)

    return step


def tras_cfg(**extra) -> dict:
    return {"lr": 0.01, "filter": {"name": "ema", "beta": 0.9, "bias_correction": False},
            "normalizer": {"name": "trasmuon", "dtype": "float32", **TRAS, **extra},
            "weight_decay": {"value": 0.1, "mode": "decoupled", "exclude": []}}


def test_trasmuon_matches_its_reference():
    assert compare(tras_cfg(), trasmuon_reference(0.01, 0.9, 0.1)) <= 1e-5


def tras_ablation_reference(lr, beta, wd, o=TRAS, row_norm=True, calibration="matrix"):
    """The ablations: raw clip (o with clip_beta 0), no second moment (row_norm False), and the
    global calibration: every matrix times rms·√N/‖(U_1, …, U_k)‖ over all N entries of the
    group, U_i the unclipped normalized matrices, then clipped."""

    def step(params, grads, states, t):
        Us, clips = [], []
        for g, st in zip(grads, states):
            m = st["m"] = beta * st.get("m", torch.zeros_like(g)) + (1 - beta) * g
            Us.append(tras_normalized(m, st, o, row_norm))
            clips.append(tras_clip(m, st, o))
        if calibration == "global":
            n = sum(U.numel() for U in Us)
            scales = [o["rms"] * math.sqrt(n) / (math.sqrt(sum(float(U.square().sum()) for U in Us)) + o["eps"])] * len(Us)
        else:
            scales = [o["rms"] * math.sqrt(U.numel()) / (U.norm() + o["eps"]) for U in Us]
        return [lr * wd * p + lr * c * U * clip[None, :] for p, U, c, clip in zip(params, Us, scales, clips)]

    return step


@pytest.mark.parametrize("options, reference", [
    ({"clip_beta": 0.0}, dict(o={**TRAS, "clip_beta": 0.0})),
    ({"row_norm": False}, dict(row_norm=False)),
    ({"calibration": "global"}, dict(calibration="global")),
    ({"calibration": "global", "row_norm": False}, dict(calibration="global", row_norm=False)),
])
def test_trasmuon_ablations_match_their_references(options, reference):
    """Each variant of issue 21's ablations against its own reference, and each differs from the
    default TrasMuon on the same run (the option acts)."""
    cfg = tras_cfg(**options)
    assert compare(cfg, tras_ablation_reference(0.01, 0.9, 0.1, **reference), joint=True) <= 1e-5
    assert compare(tras_cfg(), tras_ablation_reference(0.01, 0.9, 0.1, **reference), joint=True) > 1e-3


def test_trasmuon_global_calibration_sets_the_rms_of_the_whole_update():
    """Without the clip, the group's update has RMS `rms` over all its entries. Without the second
    moment its matrices (orthogonal: RMS 1/√max(r, c) before the scale) keep different RMS: one
    scale, not one per matrix. With it, the first update's rows all have mean square 1/(1 − β2),
    so there the global and the per-matrix calibration coincide."""
    M = [torch.randn(4, 64), torch.randn(16, 16), torch.randn(32, 8)]  # 1/√max(r, c): 1/8, 1/4, 1/√32
    for row_norm in (False, True):
        n = NORMALIZERS["trasmuon"](dtype="float32", calibration="global", clip=False, rms=0.3, row_norm=row_norm)
        u = n.update(M, M, [{}, {}, {}], StepContext(step=0))
        total = math.sqrt(sum(float(x.square().sum()) for x in u) / sum(x.numel() for x in u))
        assert total == pytest.approx(0.3, rel=1e-5)
        rms = [float(x.square().mean().sqrt()) for x in u]
        if row_norm:
            assert rms == pytest.approx([0.3] * 3, rel=1e-4)
        else:
            assert rms[1] / rms[0] > 1.5  # about 2 (Newton–Schulz is near-orthogonal, not exactly)


def test_trasmuon_input_axis_is_the_transpose():
    """axis: input on M is axis: output on Mᵀ, transposed back (Newton–Schulz commutes with ᵀ)."""
    n_out = NORMALIZERS["trasmuon"](dtype="float32", axis="output")
    n_in = NORMALIZERS["trasmuon"](dtype="float32", axis="input")
    torch.manual_seed(0)
    s_out, s_in = [{}], [{}]
    for t in range(4):
        M = torch.randn(6, 10)
        M[:, 3] *= 8  # a high-energy input feature
        a = n_in.update([M], [M], s_in, StepContext(step=t))[0]
        b = n_out.update([M.T.contiguous()], [M.T], s_out, StepContext(step=t))[0]
        torch.testing.assert_close(a, b.T, rtol=1e-5, atol=1e-6)


def test_trasmuon_damps_a_burst_and_reports_it():
    n = NORMALIZERS["trasmuon"](dtype="float32", clip_beta=0.0, trigger=2.0)
    torch.manual_seed(0)
    states: list[dict] = [{}]
    for t in range(3):
        n.update([torch.randn(8, 16)], [], states, StepContext(step=t))
    M = torch.randn(8, 16)
    M[:, 5] *= 30.0  # a burst in input feature 5
    diag: dict[str, float] = {}
    u = n.update([M], [], states, StepContext(step=3, diagnose=True, diagnostics=diag))[0]
    clip = states[0]["clip_last"].flatten()
    assert float(clip[5]) < 0.5 and float(clip[torch.arange(16) != 5].min()) > float(clip[5])
    assert 1 / 16 <= diag["clip_frac"] < 0.5 and diag["energy_ratio"] > 100
    assert 0.0 <= diag["ns_orth_err"] < 1.0
    assert float(u.square().mean().sqrt()) <= 1.0 + 1e-5  # calibrated to rms 1, then damped


def test_trasmuon_without_clip_is_calibrated_normuon():
    """alpha 0 turns the clip off: the update is the second-moment-normalized O at RMS `rms`."""
    n = NORMALIZERS["trasmuon"](dtype="float32", alpha=0.0, rms=0.2)
    M = torch.randn(12, 20)
    u = n.update([M], [M], [{}], StepContext(step=0))[0]
    assert float(u.square().mean().sqrt()) == pytest.approx(0.2, rel=1e-5)


def test_clip_refresh_period_and_delay():
    n = NORMALIZERS["trasmuon"](dtype="float32", clip_every=2, clip_delay=1, clip_beta=0.0)
    states: list[dict] = [{}]
    applied = []
    for t in range(5):
        M = torch.randn(6, 10)
        M[:, 0] *= 20
        n.update([M], [], states, StepContext(step=t))
        applied.append(float(states[0]["clip_last"].flatten()[0]))
    assert applied[0] == 1.0 and applied[1] == 1.0  # count 1 ≤ delay; count 2: (2−1) % 2 ≠ 0
    assert applied[2] < 1.0 and applied[3] == applied[2]  # refreshed at counts 3 and 5 only


# --- Adafactor --------------------------------------------------------------------------------


def adafactor_reference(lr, decay_rate=-0.8, eps1=1e-30, d=1.0):
    """Shazeer & Stern 2018, Alg. 4/5 with β1 = 0, relative step off: R, C row/column sums."""

    def step(p, g, st, t):
        beta = 1 - (t + 1) ** decay_rate
        sq = g * g + eps1
        if g.ndim >= 2:
            R = st["R"] = beta * st.get("R", 0) + (1 - beta) * sq.sum(1)  # (n,)
            C = st["C"] = beta * st.get("C", 0) + (1 - beta) * sq.sum(0)  # (m,)
            V = torch.outer(R, C) / R.sum()
        else:
            V = st["V"] = beta * st.get("V", 0) + (1 - beta) * sq
        U = g / V.sqrt()
        U = U / max(1.0, float(U.square().mean().sqrt()) / d)
        return lr * U

    return step


@pytest.mark.parametrize("clip", [1.0, 0.05])
def test_adafactor_matches_the_paper(clip):
    cfg = {"lr": 0.01, "normalizer": {"name": "adafactor", "clip_threshold": clip}}
    assert compare(cfg, adafactor_reference(0.01, d=clip), bias=True) <= 1e-5


def test_trasmuon_clip_frac_and_clip_mean_on_a_known_burst():
    """Columns of energy 1 but k = 3 of energy 100: the median is 1, so exactly those 3 of 16
    input features are over the trigger 2 and each is damped by 1/(1 + α·log1p(100/2)); with
    clip_beta 0 that factor is applied at once."""
    n = NORMALIZERS["trasmuon"](dtype="float32", clip_beta=0.0, trigger=2.0, alpha=1.0, clip_min=0.0)
    M = torch.randn(8, 16, generator=torch.Generator().manual_seed(0))
    M = M / M.square().sum(0, keepdim=True).sqrt()  # every column of energy 1
    M[:, [2, 7, 11]] *= 10.0  # energy 100
    diag: dict[str, float] = {}
    n.update([M], [M], [{}], StepContext(step=0, diagnose=True, diagnostics=diag))
    damped = 1.0 / (1.0 + math.log1p(50.0))
    assert diag["clip_frac"] == pytest.approx(3 / 16) and diag["trigger_frac"] == pytest.approx(3 / 16)
    assert diag["clip_mean"] == pytest.approx((13 + 3 * damped) / 16, rel=1e-5)
    assert diag["clip_lowest"] == pytest.approx(damped, rel=1e-5)
    assert diag["energy_ratio"] == pytest.approx(100.0, rel=1e-4)


def test_trasmuon_clip_frac_counts_damped_features_not_features_over_the_trigger():
    """A burst in feature 2 at update 0, then equal energies: at update 1 no feature is over the
    trigger, but the smoothed clip (clip_beta 0.9, starting at 1) still damps feature 2 by
    0.9·(0.9 + 0.1·d) + 0.1·1, d the raw factor of update 0. clip_frac counts it; trigger_frac
    does not."""
    n = NORMALIZERS["trasmuon"](dtype="float32", clip_beta=0.9, trigger=2.0, alpha=1.0, clip_min=0.0)
    calm = torch.randn(8, 16, generator=torch.Generator().manual_seed(0))
    calm = calm / calm.square().sum(0, keepdim=True).sqrt()  # every column of energy 1
    burst = calm.clone()
    burst[:, 2] *= 10.0  # energy 100 against the median 1
    states, diag = [{}], {}
    n.update([burst], [burst], states, StepContext(step=0))
    n.update([calm], [calm], states, StepContext(step=1, diagnose=True, diagnostics=diag))
    d = 1.0 / (1.0 + math.log1p(50.0))
    applied = 0.9 * (0.9 + 0.1 * d) + 0.1
    assert diag["trigger_frac"] == 0.0
    assert diag["clip_frac"] == pytest.approx(1 / 16)
    assert diag["clip_lowest"] == pytest.approx(applied, rel=1e-5)
    assert diag["clip_mean"] == pytest.approx((15 + applied) / 16, rel=1e-5)


def test_trasmuon_clip_mean_averages_over_matrices():
    """Two shapes, each burst in one feature: the means are over all features of the update."""
    n = NORMALIZERS["trasmuon"](dtype="float32", clip_beta=0.0, clip_min=0.0)
    A, B = torch.ones(4, 8), torch.ones(6, 4)
    A[:, 0] *= 10.0  # ratio 100 against median 4
    B[:, 1] *= 2.0  # ratio 4
    diag: dict[str, float] = {}
    n.update([A, B], [A, B], [{}, {}], StepContext(step=0, diagnose=True, diagnostics=diag))
    f = [1.0 / (1.0 + math.log1p(r)) for r in (100.0, 4.0)]
    assert diag["clip_frac"] == pytest.approx(2 / 12)
    assert diag["clip_mean"] == pytest.approx((10 + sum(f)) / 12, rel=1e-5)


def test_trasmuon_clip_false_is_no_clipping():
    """`clip: false` (the ablation) is the reference direction with the clip left out, keeps no
    energy state and reports no clip diagnostics; the clipped arm differs on the same run."""

    def unclipped(lr, beta):
        def step(p, g, st, t):
            m = st["m"] = beta * st.get("m", torch.zeros_like(g)) + (1 - beta) * g
            rows, cols = m.shape
            O = ns(m)
            s = st["s"] = TRAS["beta2"] * st.get("s", torch.zeros(rows, 1)) + (1 - TRAS["beta2"]) * O.square().mean(1, keepdim=True)
            O = O / (s.sqrt() + TRAS["eps"])
            return lr * 0.1 * p + lr * O * (TRAS["rms"] * math.sqrt(rows * cols) / (O.norm() + TRAS["eps"]))

        return step

    assert compare(tras_cfg(clip=False), unclipped(0.01, 0.9)) <= 1e-5
    assert compare(tras_cfg(), unclipped(0.01, 0.9)) > 1e-3  # the clip does act on this run
    n = NORMALIZERS["trasmuon"](dtype="float32", clip=False)
    M = torch.randn(6, 10)
    M[:, 0] *= 30.0
    states, diag = [{}], {}
    n.update([M], [M], states, StepContext(step=0, diagnose=True, diagnostics=diag))
    assert set(states[0]) == {"normuon_sq"} and set(diag) == {"ns_orth_err"}


# --- Adafactor with the paper's β1 --------------------------------------------------------------


def adafactor_momentum_reference(lr, beta1, decay_rate=-0.8, eps1=1e-30, d=1.0):
    """Shazeer & Stern 2018: û the clipped update of Alg. 4/5, then m ← β1·m + (1−β1)·û (Sec. 7,
    no bias correction) and x ← x − lr·m."""
    inner = adafactor_reference(1.0, decay_rate, eps1, d)

    def step(p, g, st, t):
        u = inner(p, g, st, t)
        m = st["m"] = beta1 * st["m"] + (1 - beta1) * u if "m" in st else (1 - beta1) * u
        return lr * m

    return step


@pytest.mark.parametrize("clip", [1.0, 0.05])
def test_adafactor_momentum_on_the_clipped_update_matches_the_paper(clip):
    cfg = {"lr": 0.01, "filter": {"name": "ema", "beta": 0.9, "bias_correction": False}, "filter_on": "update",
           "normalizer": {"name": "adafactor", "clip_threshold": clip}}
    assert compare(cfg, adafactor_momentum_reference(0.01, 0.9, d=clip), bias=True) <= 1e-5
    gradient_side = {**cfg, "filter_on": "gradient"}  # the default placement is a different optimizer
    assert compare(gradient_side, adafactor_momentum_reference(0.01, 0.9, d=clip), bias=True) > 1e-3


def test_filter_on_update_is_inherited_by_aux_and_never_fused():
    from trx.optim import ArmConfig

    arm = ArmConfig.model_validate({"lr": 0.01, "filter": "ema", "normalizer": "adam", "filter_on": "update"})
    assert arm.aux_arm().filter_on == "update"
    opt = build_optimizer(mlp(True), arm, total_steps=5)
    assert not any(st.fused for st in opt.stages)
