"""Diagnostics: filled on logged steps only (opt.diagnose), with their defining formulas."""

from __future__ import annotations

import math

import pytest
import torch
from torch import nn

from trx.optim import build_optimizer
from trx.optim.matrix_stats import orthogonality_error

BASE = {"grad_norm", "update_norm", "update_rms", "param_norm", "tr_ratio"}


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
        ({"lr": 0.02, "normalizer": {"name": "muon", **MATRIX}, "aux": {}}, {"ns_orth_err"}),
        ({"lr": 0.02, "normalizer": {"name": "normuon", **MATRIX}, "aux": {}}, {"ns_orth_err"}),
        ({"lr": 0.01, "normalizer": {"name": "trasmuon", **MATRIX}, "aux": {}}, {"ns_orth_err", "clip_frac", "energy_ratio"}),
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
