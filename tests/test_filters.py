"""Every registered filter: smoke, description, and its impulse response against (b, a)."""

from __future__ import annotations

import pytest
import torch

from trx.optim import FILTERS, StepContext
from trx.optim.base import validate
from trx.optim.filters import FilterConfig, max_pole

# Options for the filters that have required ones; every other filter is built from defaults.
REQUIRED = {"iir": {"b": [0.2, 0.1], "a": [1.0, -1.2, 0.36]}}


def build(name: str, **options):
    from pydantic import TypeAdapter

    return TypeAdapter(FilterConfig).validate_python({"name": name, **REQUIRED.get(name, {}), **options})


def impulse_response(b: list[float], a: list[float], n: int) -> list[float]:
    """y(t) = Σ bₖ x(t−k) − Σ aₖ y(t−k) for x = δ."""
    y: list[float] = []
    for t in range(n):
        v = b[t] if t < len(b) else 0.0
        v -= sum(a[k] * y[t - k] for k in range(1, len(a)) if t - k >= 0)
        y.append(v)
    return y


@pytest.mark.parametrize("name", sorted(FILTERS))
def test_every_filter_runs_and_describes_itself(name):
    f = build(name)
    assert FILTERS.describe(name)
    for option, default, _ in type(f).describe_options():
        assert option != "name" and default
    shapes = [(3, 4), (5,), (2, 3, 2, 2)]
    grads = [torch.randn(s) for s in shapes]
    states: list[dict] = [{} for _ in shapes]
    copies = [g.clone() for g in grads]
    for t in range(4):
        out = f.update(grads, states, StepContext(step=t))
        assert [o.shape for o in out] == [g.shape for g in grads]
        assert all(torch.isfinite(o).all() for o in out)
    assert all(torch.equal(g, c) for g, c in zip(grads, copies)), "a filter modified its input"


@pytest.mark.parametrize("name", sorted(FILTERS))
def test_impulse_response_matches_the_transfer_function(name):
    f = build(name, **({"bias_correction": False} if name == "ema" else {}))
    b, a = f.transfer()
    states: list[dict] = [{}]
    got = []
    for t in range(12):
        g = torch.tensor([1.0 if t == 0 else 0.0], dtype=torch.float64)
        got.append(float(f.update([g], states, StepContext(step=t))[0]))
    assert got == pytest.approx(impulse_response(b, a, 12), abs=1e-12)


def test_ema_bias_correction_makes_a_constant_gradient_exact():
    f = build("ema", beta=0.9)
    assert f.transfer() is None  # time-varying
    states: list[dict] = [{}]
    for t in range(5):
        out = f.update([torch.full((2,), 3.0)], states, StepContext(step=t))
        assert torch.allclose(out[0], torch.full((2,), 3.0))


def test_heavy_ball_gain_and_nesterov_coefficients():
    assert build("heavy_ball", beta=0.8, gamma=0.5).transfer() == ([0.5], [1.0, -0.8])
    b, a = build("nesterov", beta=0.8).transfer()
    assert b == pytest.approx([1.8, -0.8]) and a == pytest.approx([1.0, -0.8])


def test_max_pole():
    assert max_pole([1.0]) == 0.0
    assert max_pole([1.0, -0.9]) == pytest.approx(0.9)
    assert max_pole([1.0, -1.2, 0.36]) == pytest.approx(0.6)  # a double pole at 0.6


def test_registry_holds_filter_models():
    for name, cls in FILTERS.items():
        assert cls.model_fields["name"].default == name
        assert validate(cls, {"name": name, **REQUIRED.get(name, {})}).name == name
