"""Every registered normalizer: smoke, description, scale properties, and a short descent."""

from __future__ import annotations

import pytest
import torch
from pydantic import TypeAdapter
from torch import nn

from trx.optim import NORMALIZERS, StepContext, build_optimizer
from trx.optim.normalizers import NormalizerConfig


def build(name: str, **options):
    cls = NORMALIZERS[name]
    if "dtype" in cls.model_fields:
        options.setdefault("dtype", "float32")
    return TypeAdapter(NormalizerConfig).validate_python({"name": name, **options})


def shapes_for(n) -> list[tuple[int, ...]]:
    shapes = [(6, 4), (4, 9), (6, 4), (3, 2, 3, 3)]
    return shapes + ([(7,), (1,)] if n.accepts("vector") else [])


@pytest.mark.parametrize("name", sorted(NORMALIZERS))
def test_every_normalizer_runs_and_describes_itself(name):
    n = build(name)
    assert NORMALIZERS.describe(name)
    assert all(option != "name" for option, _, _ in type(n).describe_options())
    assert n.accepts("matrix")
    torch.manual_seed(0)
    shapes = shapes_for(n)
    states: list[dict] = [{} for _ in shapes]
    for t in range(4):
        grads = [torch.randn(s) for s in shapes]
        v = [g * 0.5 for g in grads]
        copies = [x.clone() for x in grads + v]
        diag: dict[str, float] = {}
        u = n.update(v, grads, states, StepContext(step=t, diagnose=True, diagnostics=diag))
        assert [x.shape for x in u] == [x.shape for x in v]
        assert all(torch.isfinite(x).all() for x in u)
        assert all(torch.equal(a, b) for a, b in zip(grads + v, copies)), "a normalizer modified its input"
        assert all(isinstance(val, float) for val in diag.values())
    assert isinstance(n.info(torch.device("cpu")), dict)


@pytest.mark.parametrize("name", sorted(NORMALIZERS))
def test_normalizer_is_scale_free_in_v(name):
    """u(c·v) ≈ u(v) for the scale-dividing normalizers (identity is the exception by design)."""
    if name == "identity":
        pytest.skip("identity keeps the scale")
    torch.manual_seed(1)
    n = build(name)
    shapes = shapes_for(n)
    grads = [torch.randn(s) for s in shapes]
    u1 = n.update(grads, grads, [{} for _ in shapes], StepContext(step=0))
    big = [g * 1000.0 for g in grads]
    u2 = n.update(big, big, [{} for _ in shapes], StepContext(step=0))
    for a, b in zip(u1, u2):
        torch.testing.assert_close(a, b, rtol=2e-3, atol=2e-3)


def test_sign_is_plus_minus_one():
    u = build("sign").update([torch.tensor([-2.0, 0.5, 3.0])], [], [{}], StepContext(step=0))
    assert u[0].tolist() == [-1.0, 1.0, 1.0]


def test_adam_first_step_is_the_sign():
    g = torch.tensor([-2.0, 0.5, 3.0])
    u = build("adam", eps=1e-12).update([g], [g], [{}], StepContext(step=0))
    torch.testing.assert_close(u[0], g.sign())


def test_muon_update_is_nearly_orthogonal():
    torch.manual_seed(0)
    v = [torch.randn(32, 16), torch.randn(16, 48)]
    u = build("muon", scale="none").update(v, v, [{}, {}], StepContext(step=0))
    for x in u:
        s = torch.linalg.svdvals(x)
        assert 0.6 < float(s.min()) and float(s.max()) < 1.25


@pytest.mark.parametrize("name", sorted(NORMALIZERS))
def test_every_normalizer_descends_on_a_regression(name):
    torch.manual_seed(0)
    model = nn.Sequential(nn.Linear(6, 16), nn.Tanh(), nn.Linear(16, 3))
    x = torch.randn(64, 6)
    y = torch.sin(x[:, :3])
    cfg = {"lr": 3e-3 if name != "identity" else 0.1, "filter": {"name": "ema", "beta": 0.9},
           "normalizer": {"name": name, **({"dtype": "float32"} if "dtype" in NORMALIZERS[name].model_fields else {})},
           "aux": {"lr": 3e-3}}
    if not build(name).accepts("vector"):
        cfg["lr"] = 0.02
    opt = build_optimizer(model, cfg, total_steps=60)
    first = None
    for _ in range(60):
        opt.zero_grad()
        loss = nn.functional.mse_loss(model(x), y)
        first = float(loss.detach()) if first is None else first
        loss.backward()
        opt.step()
    assert float(nn.functional.mse_loss(model(x), y).detach()) < 0.7 * first


@pytest.mark.parametrize(
    "name, options, bound",
    [
        ("sign", {}, lambda u: float(u.square().mean().sqrt()) <= 1.0 + 1e-6),
        ("adafactor", {"clip_threshold": 0.5}, lambda u: float(u.square().mean().sqrt()) <= 0.5 + 1e-6),
        ("trasmuon", {"rms": 0.3}, lambda u: float(u.square().mean().sqrt()) <= 0.3 * (1 + 1e-5)),
        ("muon", {"scale": "none"}, lambda u: float(torch.linalg.matrix_norm(u.reshape(u.shape[0], -1), ord=2)) <= 1.25),
        ("normuon", {"scale": "none"}, lambda u: float(u.norm()) <= 1.25 * min(u.reshape(u.shape[0], -1).shape) ** 0.5),
    ],
)
def test_trust_region_bound(name, options, bound):
    """Each normalizer's own bound on u, so that ‖Δ‖ ≤ μ·s(t)·bound whatever the gradient's scale."""
    n = build(name, **options)
    torch.manual_seed(2)
    states: list[dict] = [{} for _ in range(3)]
    for t in range(5):
        scale = 10.0 ** (3 * t - 6)  # gradients from 1e-6 to 1e6
        v = [torch.randn(8, 5) * scale, torch.randn(4, 12) * scale, torch.randn(6, 2, 2, 2) * scale]
        for u in n.update(v, v, states, StepContext(step=t)):
            assert bound(u), (name, t)


@pytest.mark.parametrize("name", sorted(NORMALIZERS))
def test_zero_gradient_gives_a_finite_zero_update(name):
    """A layer whose gradient is exactly 0 (e.g. zero-initialised) must not produce NaN or inf."""
    n = build(name)
    shapes = shapes_for(n)
    states: list[dict] = [{} for _ in shapes]
    for t in range(3):
        zeros = [torch.zeros(s) for s in shapes]
        for u in n.update(zeros, zeros, states, StepContext(step=t)):
            assert torch.isfinite(u).all() and float(u.abs().max()) == 0.0, name


def test_ns_orth_err_is_computed_once_per_step(monkeypatch):
    """Three shape groups: one orthogonality error a step, that of the first matrix of the first
    shape group (it was computed for every group, the last one kept)."""
    import trx.optim.normalizers as normalizers

    calls = []
    real = normalizers.orthogonality_error
    monkeypatch.setattr(normalizers, "orthogonality_error", lambda O: calls.append(O.clone()) or real(O))
    torch.manual_seed(0)
    model = nn.Sequential(nn.Linear(6, 12), nn.Tanh(), nn.Linear(12, 12), nn.Tanh(), nn.Linear(12, 3))
    cfg = {"lr": 0.02, "normalizer": {"name": "muon", "dtype": "float32"}, "aux": {}}
    opt = build_optimizer(model, cfg, total_steps=5)
    for diagnose in (True, False, True):
        model.zero_grad()
        x = torch.randn(16, 6)
        nn.functional.mse_loss(model(x), x[:, :3]).backward()
        opt.diagnose = diagnose
        opt.step()
        if diagnose:
            assert len(calls) == 1 and calls[0].shape == (12, 6)
            assert opt.diagnostics["ns_orth_err"] == pytest.approx(float(real(calls[0])))
            calls.clear()
    assert calls == []
