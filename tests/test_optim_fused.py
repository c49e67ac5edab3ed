"""Exact Adam(W) groups run torch's fused kernel: same trajectory as the stage path up to rounding."""

from __future__ import annotations

import copy

import pytest
import torch
from torch import nn

from trx.optim import build_optimizer


def net(seed: int = 0) -> nn.Module:
    torch.manual_seed(seed)
    return nn.Sequential(nn.Linear(6, 12), nn.Tanh(), nn.Linear(12, 3))


def loss_of(m: nn.Module, t: int) -> torch.Tensor:
    gen = torch.Generator().manual_seed(t)
    x = torch.randn(16, 6, generator=gen)
    return nn.functional.mse_loss(m(x), torch.sin(x[:, :3]))


def adam(mode: str, amsgrad: bool = False, fused: bool = True) -> dict:
    return {"lr": 3e-3, "filter": {"name": "ema", "beta": 0.9},
            "normalizer": {"name": "adam", "beta2": 0.99, "amsgrad": amsgrad},
            "weight_decay": {"value": 0.05, "mode": mode}, "schedule": {"name": "cosine", "warmup": 5}, "fused": fused}


def test_which_groups_are_fused():
    assert all(s.fused for s in build_optimizer(net(), adam("decoupled"), total_steps=10).stages)
    assert not any(s.fused for s in build_optimizer(net(), adam("decoupled"), total_steps=10, grad_clip=1.0).stages)
    assert not any(s.fused for s in build_optimizer(net(), adam("decoupled", fused=False), total_steps=10).stages)
    no_bc = {**adam("coupled"), "filter": {"name": "ema", "beta": 0.9, "bias_correction": False}}
    assert not any(s.fused for s in build_optimizer(net(), no_bc, total_steps=10).stages)
    clipped = {**adam("coupled"), "update_clip": 1.0}
    assert not any(s.fused for s in build_optimizer(net(), clipped, total_steps=10).stages)


@pytest.mark.parametrize("mode", ["coupled", "decoupled"])
@pytest.mark.parametrize("amsgrad", [False, True])
def test_fused_matches_the_stage_path(mode, amsgrad):
    fused_model, stage_model = net(), net()
    fused = build_optimizer(fused_model, adam(mode, amsgrad), total_steps=60)
    stage = build_optimizer(stage_model, adam(mode, amsgrad, fused=False), total_steps=60)
    for t in range(60):
        for m, o in ((fused_model, fused), (stage_model, stage)):
            o.zero_grad()
            loss_of(m, t).backward()
            grads = [p.grad.clone() for p in m.parameters()]
            o.step()
            assert all(torch.equal(p.grad, g) for p, g in zip(m.parameters(), grads))  # p.grad untouched
        with torch.no_grad():
            gap = max(float((p - q).abs().max()) for p, q in zip(fused_model.parameters(), stage_model.parameters()))
            assert gap <= 1e-5 * max(float(q.abs().max()) for q in stage_model.parameters())
    assert set(fused.state_dict()["state"][0]) == set(stage.state_dict()["state"][0])  # same state keys


def test_fused_resume_is_bit_identical_and_interchangeable():
    m = net()
    opt = build_optimizer(m, adam("decoupled"), total_steps=30)
    for t in range(5):
        opt.zero_grad()
        loss_of(m, t).backward()
        opt.step()
    saved_m, saved_o = copy.deepcopy(m.state_dict()), copy.deepcopy(opt.state_dict())
    for t in range(5, 10):
        opt.zero_grad()
        loss_of(m, t).backward()
        opt.step()
    for fused in (True, False):  # a fused checkpoint loads into the stage path too
        m2 = net(1)
        m2.load_state_dict(saved_m)
        opt2 = build_optimizer(m2, adam("decoupled", fused=fused), total_steps=30)
        opt2.load_state_dict(copy.deepcopy(saved_o))  # loading shares the tensors it is given
        for t in range(5, 10):
            opt2.zero_grad()
            loss_of(m2, t).backward()
            opt2.step()
        for p, q in zip(m.parameters(), m2.parameters()):
            if fused:
                assert torch.equal(p, q)
            else:
                torch.testing.assert_close(p, q, rtol=1e-5, atol=1e-7)


def test_info_records_the_fused_groups():
    assert build_optimizer(net(), adam("decoupled"), total_steps=20).info() == {"fused_adam_groups": ["main", "main/no_decay"]}
    assert build_optimizer(net(), adam("decoupled", fused=False), total_steps=20).info() == {}
