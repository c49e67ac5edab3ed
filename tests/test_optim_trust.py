"""Trust ratio (LARS, LAMB) and update clipping against references written from the papers."""

from __future__ import annotations

import copy

import pytest
import torch
from torch import nn

from trx.optim import ConfigError, build_optimizer

STEPS = 50


def model(seed: int = 0) -> nn.Module:
    torch.manual_seed(seed)
    return nn.Sequential(nn.Linear(8, 16), nn.Tanh(), nn.Linear(16, 4))


def batches():
    gen = torch.Generator().manual_seed(3)
    w = torch.randn(8, 4, generator=gen)
    for _ in range(STEPS):
        x = torch.randn(32, 8, generator=gen)
        yield x, torch.sin(x @ w)


def grads_of(m: nn.Module, batch) -> list[torch.Tensor]:
    m.zero_grad()
    nn.functional.mse_loss(m(batch[0]), batch[1]).backward()
    return [p.grad.clone() for p in m.parameters()]


def lars_reference(m: nn.Module, lr: float, momentum: float, wd: float, eta: float):
    """LARS (You, Gitman, Ginsburg 2017, Alg. 1) with constant γ: λ = η‖w‖/(‖g‖ + β‖w‖),
    v ← m·v + γ·λ·(g + β·w), w ← w − v. Biases (vectors) are excluded: plain momentum SGD."""
    bufs: dict[int, torch.Tensor] = {}

    def step(batch):
        for i, (p, g) in enumerate(zip(m.parameters(), grads_of(m, batch))):
            with torch.no_grad():
                if p.ndim >= 2:
                    w_norm, g_norm = p.norm(), g.norm()
                    local = eta * w_norm / (g_norm + wd * w_norm)
                    d = local * (g + wd * p)
                else:
                    d = g
                bufs[i] = d * lr if i not in bufs else momentum * bufs[i] + lr * d
                p.sub_(bufs[i])

    return step


def lamb_reference(m: nn.Module, lr: float, b1: float, b2: float, eps: float, wd: float):
    """LAMB (You et al. 2019, Alg. 2), φ = identity: r = m̂/(√v̂ + ε), w ← w − η‖w‖/‖r + λw‖·(r + λw).
    Vectors are excluded from decay and ratio: plain Adam on them."""
    state: dict[int, tuple[torch.Tensor, torch.Tensor]] = {}
    t = [0]

    def step(batch):
        t[0] += 1
        for i, (p, g) in enumerate(zip(m.parameters(), grads_of(m, batch))):
            with torch.no_grad():
                mom, sq = state.get(i, (torch.zeros_like(p), torch.zeros_like(p)))
                mom, sq = b1 * mom + (1 - b1) * g, b2 * sq + (1 - b2) * g * g
                state[i] = (mom, sq)
                r = (mom / (1 - b1 ** t[0])) / ((sq / (1 - b2 ** t[0])).sqrt() + eps)
                if p.ndim >= 2:
                    u = r + wd * p
                    p.sub_(lr * p.norm() / u.norm() * u)
                else:
                    p.sub_(lr * r)

    return step


def run_pair(cfg: dict, reference) -> float:
    ours = model()
    ref = copy.deepcopy(ours)
    opt = build_optimizer(ours, cfg, total_steps=STEPS)
    step = reference(ref)
    worst = 0.0
    for batch in batches():
        opt.zero_grad()
        nn.functional.mse_loss(ours(batch[0]), batch[1]).backward()
        opt.step()
        step(batch)
        with torch.no_grad():
            gap = max(float((p - q).abs().max()) for p, q in zip(ours.parameters(), ref.parameters()))
            worst = max(worst, gap / max(float(q.abs().max()) for q in ref.parameters()))
    return worst


LARS = {
    "lr": 0.5,
    "filter": {"name": "heavy_ball", "beta": 0.9},
    "weight_decay": {"value": 5e-4, "mode": "coupled", "exclude": ["vector"]},
    "trust_ratio": {"where": "pre_filter", "trust_coef": 0.02, "denominator": "sum"},
}


def test_lars_matches_the_paper():
    assert run_pair(LARS, lambda m: lars_reference(m, 0.5, 0.9, 5e-4, 0.02)) <= 1e-5


def test_lars_with_norm_denominator_equals_the_paper_without_decay():
    cfg = {**LARS, "weight_decay": 0.0, "trust_ratio": {"where": "pre_filter", "trust_coef": 0.02}}
    assert run_pair(cfg, lambda m: lars_reference(m, 0.5, 0.9, 0.0, 0.02)) <= 1e-5


LAMB = {
    "lr": 0.01,
    "filter": {"name": "ema", "beta": 0.9},
    "normalizer": {"name": "adam", "beta2": 0.999, "eps": 1e-6},
    "weight_decay": {"value": 0.01, "mode": "decoupled", "exclude": ["vector"]},
    "trust_ratio": {"where": "post_normalizer"},
}


def test_lamb_matches_the_paper():
    assert run_pair(LAMB, lambda m: lamb_reference(m, 0.01, 0.9, 0.999, 1e-6, 0.01)) <= 1e-5


def test_trust_ratio_groups_and_zero_weights():
    opt = build_optimizer(model(), LAMB, total_steps=5)
    names = {g["name"]: g["trust_ratio"] for g in opt.param_groups}
    assert names == {"main": True, "main/no_decay/no_trust": False}
    assert [s.fused for s in opt.stages] == [False, True]  # a trusted group is not plain Adam; the rest is
    # a zero-initialised layer keeps ratio 1 and moves
    p = nn.Parameter(torch.zeros(3, 3))
    p.grad = torch.ones(3, 3)
    build_optimizer([("w", p)], {"lr": 0.1, "trust_ratio": "post_normalizer"}, total_steps=3).step()
    assert torch.allclose(p.detach(), torch.full((3, 3), -0.1))


def test_trust_ratio_config_errors():
    with pytest.raises(ConfigError) as info:
        build_optimizer(model(), {"lr": 0.1, "trust_ratio": {"where": "post_normalizer", "denominator": "sum"}}, total_steps=5)
    assert info.value.key == "trust_ratio.denominator"
    with pytest.raises(ConfigError) as info:
        build_optimizer(model(), {"lr": 0.1, "trust_ratio": {"where": "later"}}, total_steps=5)
    assert info.value.key == "trust_ratio.where" and "pre_filter" in info.value.message
    with pytest.raises(ConfigError) as info:
        build_optimizer(model(), {"lr": 0.1, "trust_ratio": {"trust_coef": 0}}, total_steps=5)
    assert info.value.key == "trust_ratio.trust_coef"


def test_aux_inherits_or_drops_the_trust_ratio():
    base = {"lr": 0.02, "normalizer": {"name": "muon", "dtype": "float32"}, "trust_ratio": {"exclude": []}}
    opt = build_optimizer(model(), {**base, "aux": {}}, total_steps=5)
    assert all(g["trust_ratio"] for g in opt.param_groups)
    opt = build_optimizer(model(), {**base, "aux": {"trust_ratio": None}}, total_steps=5)
    assert [g["trust_ratio"] for g in opt.param_groups] == [True, False]


def test_update_clip_bounds_the_step_rms():
    """‖Δ‖_RMS ≤ μ·s(t)·max_rms per tensor (no decoupled decay), and small updates pass unchanged."""
    torch.manual_seed(0)
    m = model()
    cfg = {"lr": 0.1, "filter": "heavy_ball", "update_clip": {"max_rms": 0.05}, "schedule": "cosine"}
    opt = build_optimizer(m, cfg, total_steps=20)
    for t, batch in zip(range(20), batches()):
        before = [p.detach().clone() for p in m.parameters()]
        opt.zero_grad()
        (1e3 * nn.functional.mse_loss(m(batch[0]), batch[1])).backward()
        lr = opt.current_lr()
        opt.diagnose = True
        opt.step()
        for p, b in zip(m.parameters(), before):
            rms = float((p.detach() - b).square().mean().sqrt())
            assert rms <= lr * 0.05 * (1 + 1e-5) + 1e-12
        assert opt.diagnostics["update_clip_frac"] == 1.0  # every tensor was clipped at this scale
    p = nn.Parameter(torch.zeros(4))
    p.grad = torch.full((4,), 0.01)
    build_optimizer([("p", p)], {"lr": 1.0, "update_clip": 1.0}, total_steps=3).step()
    assert torch.allclose(p.detach(), torch.full((4,), -0.01))
