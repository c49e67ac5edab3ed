"""Reference equality with torch.optim: same trajectory on CPU, ≥ 50 steps.

Every comparison runs the same model from the same weights on the same fixed batches, once with
trx and once with the torch optimizer, and measures after every step the largest parameter
difference relative to the largest parameter: max |Δp| / max |p| ≤ 1e-5. Weight decay is given
explicitly on both sides (torch.optim.Muon defaults to 0.1).
"""

from __future__ import annotations

import copy
import math

import pytest
import torch
from torch import nn

from trx.optim import build_optimizer

STEPS = 60
TOL = 1e-5


def mlp(bias: bool = True, seed: int = 0) -> nn.Module:
    """A small smooth network: tall and wide matrices, tanh (a smooth loss)."""
    torch.manual_seed(seed)
    return nn.Sequential(
        nn.Linear(8, 24, bias=bias), nn.Tanh(), nn.Linear(24, 16, bias=bias), nn.Tanh(), nn.Linear(16, 4, bias=bias)
    )


def batches(steps: int = STEPS, seed: int = 1) -> list[tuple[torch.Tensor, torch.Tensor]]:
    gen = torch.Generator().manual_seed(seed)
    w = torch.randn(8, 4, generator=gen)
    out = []
    for _ in range(steps):
        x = torch.randn(32, 8, generator=gen)
        out.append((x, torch.sin(x @ w)))
    return out


def train_step(model: nn.Module, opt: torch.optim.Optimizer, batch) -> None:
    x, y = batch
    opt.zero_grad(set_to_none=True)
    nn.functional.mse_loss(model(x), y).backward()
    opt.step()


@torch.no_grad()
def relative_gap(a: nn.Module, b: nn.Module) -> float:
    gap = max(float((p - q).abs().max()) for p, q in zip(a.parameters(), b.parameters()))
    size = max(float(p.abs().max()) for p in b.parameters())
    return gap / size


def trajectory_gap(cfg: dict, make_reference, *, bias: bool = True, steps: int = STEPS) -> float:
    """Largest relative gap over the run between trx (cfg) and make_reference(params)."""
    ours = mlp(bias)
    ref = copy.deepcopy(ours)
    opt = build_optimizer(ours, cfg, total_steps=steps)
    ref_opt = make_reference(ref.parameters())
    worst = 0.0
    for batch in batches(steps):
        train_step(ours, opt, batch)
        train_step(ref, ref_opt, batch)
        worst = max(worst, relative_gap(ours, ref))
    with torch.no_grad():
        moved = max(float((p - q).abs().max()) for p, q in zip(ref.parameters(), mlp(bias).parameters()))
    assert moved > 1e-3, "the reference did not move: the comparison would be empty"
    return worst


def wd(value: float, mode: str) -> dict:
    return {"value": value, "mode": mode, "exclude": []}


@pytest.mark.parametrize("decay", [0.0, 0.05])
def test_identity_is_sgd(decay):
    cfg = {"lr": 0.1, "filter": "none", "normalizer": "identity", "weight_decay": wd(decay, "coupled")}
    gap = trajectory_gap(cfg, lambda ps: torch.optim.SGD(ps, lr=0.1, weight_decay=decay))
    assert gap <= TOL


@pytest.mark.parametrize("decay", [0.0, 0.05])
def test_heavy_ball_is_sgd_momentum(decay):
    cfg = {"lr": 0.05, "filter": {"name": "heavy_ball", "beta": 0.9}, "weight_decay": wd(decay, "coupled")}
    gap = trajectory_gap(cfg, lambda ps: torch.optim.SGD(ps, lr=0.05, momentum=0.9, weight_decay=decay))
    assert gap <= TOL


@pytest.mark.parametrize("decay", [0.0, 0.05])
def test_nesterov_is_sgd_nesterov(decay):
    cfg = {"lr": 0.05, "filter": {"name": "nesterov", "beta": 0.9}, "weight_decay": wd(decay, "coupled")}
    ref = lambda ps: torch.optim.SGD(ps, lr=0.05, momentum=0.9, nesterov=True, weight_decay=decay)  # noqa: E731
    assert trajectory_gap(cfg, ref) <= TOL


def test_iir_reproduces_heavy_ball_and_nesterov():
    beta = 0.8
    heavy = {"lr": 0.05, "filter": {"name": "iir", "b": [1.0], "a": [1.0, -beta]}, "weight_decay": wd(0.0, "coupled")}
    gap = trajectory_gap(heavy, lambda ps: torch.optim.SGD(ps, lr=0.05, momentum=beta, weight_decay=0.0))
    assert gap <= TOL
    nest = {"lr": 0.05, "filter": {"name": "iir", "b": [1.0 + beta, -beta], "a": [1.0, -beta]}, "weight_decay": wd(0.0, "coupled")}
    ref = lambda ps: torch.optim.SGD(ps, lr=0.05, momentum=beta, nesterov=True, weight_decay=0.0)  # noqa: E731
    assert trajectory_gap(nest, ref) <= TOL


def adam_cfg(lr: float, decay: float, mode: str, amsgrad: bool = False) -> dict:
    return {
        "lr": lr,
        "filter": {"name": "ema", "beta": 0.9},
        "normalizer": {"name": "adam", "beta2": 0.99, "eps": 1e-8, "amsgrad": amsgrad},
        "weight_decay": wd(decay, mode),
    }


@pytest.mark.parametrize("amsgrad", [False, True])
def test_ema_adam_coupled_is_adam(amsgrad):
    cfg = adam_cfg(3e-3, 0.05, "coupled", amsgrad)
    ref = lambda ps: torch.optim.Adam(ps, lr=3e-3, betas=(0.9, 0.99), eps=1e-8, weight_decay=0.05, amsgrad=amsgrad)  # noqa: E731
    assert trajectory_gap(cfg, ref) <= TOL


@pytest.mark.parametrize("amsgrad", [False, True])
def test_ema_adam_decoupled_is_adamw(amsgrad):
    cfg = adam_cfg(3e-3, 0.1, "decoupled", amsgrad)
    ref = lambda ps: torch.optim.AdamW(ps, lr=3e-3, betas=(0.9, 0.99), eps=1e-8, weight_decay=0.1, amsgrad=amsgrad)  # noqa: E731
    assert trajectory_gap(cfg, ref) <= TOL


@pytest.mark.parametrize("fused", [True, False])
def test_adamw_with_muons_aux_split_and_an_identical_aux_is_adamw(fused):
    """main_roles: [matrix] sends the biases to aux; an aux Adam of the same settings and lr
    leaves the trajectory exactly torch's AdamW."""
    cfg = {**adam_cfg(3e-3, 0.1, "decoupled"), "fused": fused, "main_roles": ["matrix"],
           "aux": {"lr": 3e-3, "filter": {"name": "ema", "beta": 0.9},
                   "normalizer": {"name": "adam", "beta2": 0.99, "eps": 1e-8}}}
    assert {g["name"].partition("/")[0] for g in build_optimizer(mlp(), cfg, STEPS).param_groups} == {"main", "aux"}
    ref = lambda ps: torch.optim.AdamW(ps, lr=3e-3, betas=(0.9, 0.99), eps=1e-8, weight_decay=0.1)  # noqa: E731
    assert trajectory_gap(cfg, ref) <= TOL


def test_adamw_with_a_schedule_matches_torch_lambda_lr():
    """The window s(t) is the learning-rate multiplier of update t (LambdaLR applies it likewise)."""
    cfg = {**adam_cfg(3e-3, 0.1, "decoupled"), "schedule": {"name": "cosine", "warmup": 5}}
    ours, ref = mlp(), mlp()
    opt = build_optimizer(ours, cfg, total_steps=STEPS)
    ref_opt = torch.optim.AdamW(ref.parameters(), lr=3e-3, betas=(0.9, 0.99), eps=1e-8, weight_decay=0.1)
    sched = torch.optim.lr_scheduler.LambdaLR(ref_opt, opt.stages[0].schedule)
    worst = 0.0
    for batch in batches():
        train_step(ours, opt, batch)
        train_step(ref, ref_opt, batch)
        sched.step()
        worst = max(worst, relative_gap(ours, ref))
    assert worst <= TOL


# --- Muon -------------------------------------------------------------------------------------


def float32_zeropower(grad, ns_coefficients, ns_steps, eps):
    """torch's `_zeropower_via_newtonschulz`, word for word, in float32 instead of bfloat16."""
    a, b, c = ns_coefficients
    x = grad.float()
    if grad.size(0) > grad.size(1):
        x = x.T
    x = x / x.norm().clamp(min=eps)
    for _ in range(ns_steps):
        gram = x @ x.T
        x = torch.addmm(x, torch.addmm(gram, gram, gram, beta=b, alpha=c), x, beta=a)
    if grad.size(0) > grad.size(1):
        x = x.T
    return x


def muon_cfg(lr: float, decay: float, dtype: str, scale: str = "original") -> dict:
    return {
        "lr": lr,
        "filter": {"name": "nesterov", "beta": 0.95},
        "normalizer": {"name": "muon", "scale": scale, "coefficients": "keller", "ns_steps": 5, "dtype": dtype},
        "weight_decay": wd(decay, "decoupled"),
    }


def torch_muon(decay: float, adjust: str | None = None):
    return lambda ps: torch.optim.Muon(ps, lr=0.02, momentum=0.95, nesterov=True, weight_decay=decay, adjust_lr_fn=adjust)


@pytest.mark.parametrize("decay", [0.0, 0.1])
def test_muon_float32_matches_torch_muon_tightly(monkeypatch, decay):
    monkeypatch.setattr(torch.optim._muon, "_zeropower_via_newtonschulz", float32_zeropower)
    gap = trajectory_gap(muon_cfg(0.02, decay, "float32"), torch_muon(decay), bias=False)
    assert gap <= TOL


def test_muon_match_rms_adamw_matches_torch(monkeypatch):
    """Scale-aware: 0.2·√max(rows, cols) differs per matrix, so a wrong scale shows up."""
    monkeypatch.setattr(torch.optim._muon, "_zeropower_via_newtonschulz", float32_zeropower)
    gap = trajectory_gap(muon_cfg(0.02, 0.1, "float32", "match_rms_adamw"), torch_muon(0.1, "match_rms_adamw"), bias=False)
    assert gap <= TOL


def test_muon_bfloat16_is_close_to_torch_shipped_muon():
    """Against torch's own bfloat16 Newton–Schulz: within 5% of the displacement, per matrix."""
    ours = mlp(bias=False)
    ref = copy.deepcopy(ours)
    start = copy.deepcopy(ours)
    opt = build_optimizer(ours, muon_cfg(0.02, 0.1, "bfloat16"), total_steps=STEPS)
    ref_opt = torch_muon(0.1)(ref.parameters())
    for batch in batches():
        train_step(ours, opt, batch)
        train_step(ref, ref_opt, batch)
    for p, q, p0 in zip(ours.parameters(), ref.parameters(), start.parameters()):
        p, q, p0 = p.detach(), q.detach(), p0.detach()
        displacement = float((q - p0).norm())
        assert float((p - q).norm()) <= 0.05 * displacement, (float((p - q).norm()), displacement)


def test_muon_scale_uses_the_flattened_conv_matrix():
    """A conv weight (out, in, kh, kw) is the matrix (out, in·kh·kw): its update has that scale.

    (16, 2, 3, 3) flattens to the wide (16, 18), scale 1; reading only (out, in) = (16, 2) would
    give √8. (32, 2, 1, 1) flattens to the tall (32, 2), scale √16 = 4.
    """
    torch.manual_seed(0)
    cases = [((16, 2, 3, 3), "original", 1.0), ((16, 2, 3, 3), "match_rms_adamw", 0.2 * math.sqrt(18)),
             ((32, 2, 1, 1), "original", 4.0)]
    for shape, scale, expect in cases:
        p = nn.Parameter(torch.randn(shape))
        before = p.detach().clone()
        p.grad = torch.randn_like(p)
        cfg = muon_cfg(1.0, 0.0, "float32", scale) | {"filter": "none"}
        build_optimizer([("w", p)], cfg, total_steps=3).step()
        singular = torch.linalg.svdvals((p.detach() - before).reshape(shape[0], -1))
        # keller's coefficients leave singular values roughly in [0.7, 1.2], times the scale
        assert 0.6 * expect <= float(singular.min()) <= float(singular.max()) <= 1.3 * expect, (shape, scale)


@pytest.mark.parametrize("nesterov, ns_steps", [(False, 5), (True, 3)])
def test_muon_variants_by_options(monkeypatch, nesterov, ns_steps):
    """nesterov or not is the filter (heavy_ball = torch's nesterov=False); ns_steps is an option."""
    monkeypatch.setattr(torch.optim._muon, "_zeropower_via_newtonschulz", float32_zeropower)
    cfg = muon_cfg(0.02, 0.1, "float32")
    cfg["filter"] = {"name": "nesterov" if nesterov else "heavy_ball", "beta": 0.95}
    cfg["normalizer"]["ns_steps"] = ns_steps
    ref = lambda ps: torch.optim.Muon(ps, lr=0.02, momentum=0.95, nesterov=nesterov, weight_decay=0.1, ns_steps=ns_steps)  # noqa: E731
    assert trajectory_gap(cfg, ref, bias=False) <= TOL


def test_muon_coefficient_triples_match_torch_coefficients(monkeypatch):
    monkeypatch.setattr(torch.optim._muon, "_zeropower_via_newtonschulz", float32_zeropower)
    triple = [3.0, -3.2, 1.2]
    cfg = muon_cfg(0.02, 0.1, "float32")
    cfg["normalizer"]["coefficients"] = [triple]
    ref = lambda ps: torch.optim.Muon(ps, lr=0.02, momentum=0.95, weight_decay=0.1, ns_coefficients=tuple(triple))  # noqa: E731
    assert trajectory_gap(cfg, ref, bias=False) <= TOL
