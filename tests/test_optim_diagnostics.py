"""Diagnostics: filled on logged steps only (opt.diagnose), with their defining formulas."""

from __future__ import annotations

import math

import pytest
import torch
from torch import nn

from trx.optim import build_optimizer
from trx.optim.matrix_stats import orthogonality_error

BASE = {"grad_norm", "update_norm", "update_rms", "param_norm", "tr_ratio"}
AUX = {"aux_tr_ratio", "aux_lr"}  # an arm with an aux block


def net() -> nn.Module:
    torch.manual_seed(0)
    return nn.Sequential(nn.Linear(6, 12), nn.Tanh(), nn.Linear(12, 3))


def step(model: nn.Module, opt, diagnose: bool) -> dict[str, float]:
    opt.zero_grad()
    x = torch.randn(16, 6)
    nn.functional.mse_loss(model(x), torch.sin(x[:, :3])).backward()
    opt.diagnose = diagnose
    opt.step()
    return dict(opt.diagnostics)


MATRIX = {"dtype": "float32"}


@pytest.mark.parametrize(
    "cfg, extra",
    [
        ({"lr": 0.1}, set()),
        ({"lr": 1e-3, "filter": "ema", "normalizer": "adam"}, set()),
        ({"lr": 0.02, "normalizer": {"name": "muon", **MATRIX}, "aux": {}}, {"ns_orth_err"} | AUX),
        ({"lr": 0.02, "normalizer": {"name": "normuon", **MATRIX}, "aux": {}}, {"ns_orth_err"} | AUX),
        ({"lr": 0.01, "normalizer": {"name": "trasmuon", **MATRIX}, "aux": {}}, {"ns_orth_err", "clip_frac", "clip_mean", "clip_lowest", "trigger_frac", "energy_ratio"} | AUX),
        ({"lr": 0.01, "normalizer": {"name": "trasmuon", "clip": False, **MATRIX}, "aux": {}}, {"ns_orth_err"} | AUX),
        ({"lr": 0.01, "filter": "ema", "normalizer": "adam", "trust_ratio": "post_normalizer"}, {"trust_ratio"}),
        ({"lr": 0.01, "update_clip": 0.1}, {"update_clip_frac"}),
    ],
)
def test_diagnostics_on_logged_steps_only(cfg, extra):
    model = net()
    opt = build_optimizer(model, cfg, total_steps=10)
    assert step(model, opt, diagnose=False) == {}
    diag = step(model, opt, diagnose=True)
    assert set(diag) == BASE | extra
    assert all(isinstance(v, float) and math.isfinite(v) for v in diag.values())
    assert step(model, opt, diagnose=False) == {}


def test_tr_ratio_is_update_rms_over_the_radius():
    """sign normalizer: every coordinate moves by μ·s(t), so RMS(Δ)/(μ·s(t)) = 1."""
    model = net()
    opt = build_optimizer(model, {"lr": 0.01, "normalizer": "sign", "schedule": "linear"}, total_steps=10)
    for _ in range(3):
        diag = step(model, opt, diagnose=True)
        assert diag["tr_ratio"] == pytest.approx(1.0, rel=1e-4)
        assert diag["update_rms"] == pytest.approx(opt.param_groups[0]["lr"], rel=1e-4)


def test_tr_ratio_is_blank_when_the_radius_is_zero():
    model = net()
    opt = build_optimizer(model, {"lr": 0.01, "schedule": "linear"}, total_steps=2)
    step(model, opt, diagnose=True)
    assert "tr_ratio" not in step(model, opt, diagnose=True)  # s(τ−1) = 0


def test_orthogonality_error():
    q, _ = torch.linalg.qr(torch.randn(20, 8))
    assert orthogonality_error(q) < 1e-5
    assert orthogonality_error(q.T) < 1e-5
    assert orthogonality_error(2 * q) == pytest.approx(3.0, rel=1e-5)  # ‖4I − I‖/√n


class Tower(nn.Module):
    """Matrices for Muon; an embedding, biases and a LayerNorm for the aux block."""

    def __init__(self):
        super().__init__()
        self.emb = nn.Embedding(10, 8)
        self.lin1 = nn.Linear(8, 16)
        self.lin2 = nn.Linear(16, 8, bias=False)
        self.norm = nn.LayerNorm(8)
        self.head = nn.Linear(8, 10)

    def forward(self, idx):
        return self.head(self.norm(self.lin2(torch.tanh(self.lin1(self.emb(idx))))))


MAIN = {"lin1.weight", "lin2.weight", "head.weight"}  # 2-D, not an embedding: Muon's


def test_tr_ratio_of_muon_with_aux_is_the_main_groups_own():
    """tr_ratio = RMS(μ·s(t)·u over the main block)/(μ·s(t)), the step without its decoupled decay,
    and wd_ratio = RMS(μ·s(t)·wd·w)/(μ·s(t)), the decay alone; aux_ the same for the aux block.
    From parameter snapshots and schedules computed here, not from the optimizer's groups:
    Δ = −μ·s·u − μ·s·wd·w_before, so μ·s·u = −Δ − μ·s·wd·w_before."""
    from trx.optim import Schedule

    torch.manual_seed(0)
    model, total, wd = Tower(), 12, 0.1
    cfg = {
        "lr": 0.02,
        "filter": {"name": "nesterov", "beta": 0.95},
        "normalizer": {"name": "muon", **MATRIX},
        "weight_decay": {"value": wd, "mode": "decoupled", "exclude": ["vector"]},
        "schedule": {"name": "cosine", "warmup": 3},
        "aux": {"lr": 3e-3, "filter": {"name": "ema", "beta": 0.9}, "normalizer": "adam",
                "schedule": {"name": "linear", "floor": 0.2}},
    }
    opt = build_optimizer(model, cfg, total_steps=total)
    s_main = Schedule(name="cosine", warmup=3).build(total)
    s_aux = Schedule(name="linear", floor=0.2).build(total)
    decayed = MAIN | {"emb.weight"}  # exclude: [vector] leaves biases and the LayerNorm undecayed
    for t in range(6):
        before = {n: p.detach().clone() for n, p in model.named_parameters()}
        opt.zero_grad()
        idx = torch.randint(0, 10, (32,))
        nn.functional.cross_entropy(model(idx), (idx * 3) % 10).backward()
        opt.diagnose = True
        opt.step()
        d = dict(opt.diagnostics)
        lr = {n: (0.02 * s_main(t) if n in MAIN else 3e-3 * s_aux(t)) for n in before}
        delta = {n: p.detach() - before[n] for n, p in model.named_parameters()}
        decay = {n: lr[n] * wd * before[n] if n in decayed else torch.zeros_like(before[n]) for n in before}
        step_of_u = {n: -delta[n] - decay[n] for n in before}

        def rms(tensors, names):
            return math.sqrt(sum(float(tensors[n].square().sum()) for n in names) / sum(tensors[n].numel() for n in names))

        aux = set(delta) - MAIN
        assert d["tr_ratio"] == pytest.approx(rms(step_of_u, MAIN) / (0.02 * s_main(t)), rel=1e-4)
        assert d["aux_tr_ratio"] == pytest.approx(rms(step_of_u, aux) / (3e-3 * s_aux(t)), rel=1e-4)
        assert d["wd_ratio"] == pytest.approx(rms(decay, MAIN) / (0.02 * s_main(t)), rel=1e-5)
        assert d["aux_wd_ratio"] == pytest.approx(rms(decay, aux) / (3e-3 * s_aux(t)), rel=1e-5)
        assert d["aux_lr"] == pytest.approx(3e-3 * s_aux(t), rel=1e-12)
        assert d["update_rms"] == pytest.approx(rms(delta, set(delta)), rel=1e-5)  # all of Δ, decay included


def test_tr_ratio_of_sign_with_decay_is_still_one():
    """sign: μ·s·u moves every coordinate by exactly μ·s(t), whatever the decoupled decay adds."""
    model = net()
    opt = build_optimizer(model, {"lr": 0.01, "normalizer": "sign", "weight_decay": {"value": 0.5, "exclude": []}},
                          total_steps=10)
    for _ in range(3):
        w = torch.cat([p.detach().flatten() for p in model.parameters()])
        diag = step(model, opt, diagnose=True)
        assert diag["tr_ratio"] == pytest.approx(1.0, rel=1e-4)
        assert diag["wd_ratio"] == pytest.approx(0.5 * float(w.square().mean().sqrt()), rel=1e-5)


def test_no_wd_ratio_where_the_decay_is_inside_u():
    """Coupled decay goes through the filter and normalizer, LAMB's through its trust ratio: both
    are part of u and of tr_ratio, and no wd_ratio is logged."""
    for cfg in ({"lr": 0.01, "weight_decay": {"value": 0.1, "mode": "coupled"}},
                {"lr": 0.01, "filter": "ema", "normalizer": "adam", "weight_decay": 0.1, "trust_ratio": "post_normalizer"}):
        model = net()
        opt = build_optimizer(model, cfg, total_steps=10)
        assert "wd_ratio" not in step(model, opt, diagnose=True)
