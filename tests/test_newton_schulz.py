"""Newton–Schulz orthogonalization: a torch reference, singular-value bands on inputs of known
conditioning, batching and transposition invariances, precision, and argument errors."""

from __future__ import annotations

import math

import pytest
import torch
from hypothesis import given, settings
from hypothesis import strategies as st

from trx.optim import newton_schulz as ns

KELLER = (3.4445, -4.7750, 2.0315)


def conditioned(rows: int, cols: int, kappa: float, batch: int = 2, seed: int = 0) -> torch.Tensor:
    """(batch, rows, cols) float32 U·diag(s)·Vᵀ: random orthonormal U, V; s log-spaced in [1/κ, 1]."""
    g = torch.Generator().manual_seed(seed)
    k = min(rows, cols)
    U = torch.linalg.qr(torch.randn(batch, rows, k, generator=g, dtype=torch.float64))[0]
    V = torch.linalg.qr(torch.randn(batch, cols, k, generator=g, dtype=torch.float64))[0]
    s = torch.logspace(0, -math.log10(kappa), k, dtype=torch.float64)
    return (U * s @ V.mT).float()


def singular_values(O: torch.Tensor) -> torch.Tensor:
    return torch.linalg.svdvals(O.double())


def torch_zeropower_float32(grad, ns_coefficients, ns_steps, eps):
    """torch.optim._muon._zeropower_via_newtonschulz, step for step, in float32 (not bf16)."""
    a, b, c = ns_coefficients
    x = grad.float().clone()
    if grad.size(0) > grad.size(1):
        x = x.T
    x.div_(x.norm().clamp(min=eps))
    for _ in range(ns_steps):
        gram = x @ x.T
        update = torch.addmm(gram, gram, gram, beta=b, alpha=c)
        x = torch.addmm(x, update, x, beta=a)
    if grad.size(0) > grad.size(1):
        x = x.T
    return x


# --- reference ----------------------------------------------------------------------------------


@pytest.mark.parametrize("shape", [(48, 96), (96, 48), (40, 40), (1, 7), (7, 1)])
@pytest.mark.parametrize("steps", [1, 5])
def test_keller_float32_equals_torch_zeropower(shape, steps):
    G = torch.randn(shape, generator=torch.Generator().manual_seed(1))
    ours = ns.orthogonalize(G, steps, "keller", torch.float32)
    ref = torch_zeropower_float32(G, KELLER, steps, 1e-7)
    torch.testing.assert_close(ours, ref, rtol=0, atol=1e-6)


def test_keller_batched_equals_torch_zeropower_per_matrix():
    G = torch.randn(3, 32, 80, generator=torch.Generator().manual_seed(2))
    ours = ns.orthogonalize(G)
    for k in range(3):
        torch.testing.assert_close(ours[k], torch_zeropower_float32(G[k], KELLER, 5, 1e-7), rtol=0, atol=1e-6)


def test_keller_bfloat16_matches_torch_shipped_muon_iteration():
    from torch.optim._muon import _zeropower_via_newtonschulz

    G = torch.randn(64, 160, generator=torch.Generator().manual_seed(3))
    ours = ns.orthogonalize(G, dtype=torch.bfloat16)
    theirs = _zeropower_via_newtonschulz(G, KELLER, 5, 1e-7).float()
    torch.testing.assert_close(ours, theirs, rtol=0, atol=1e-2)


# --- singular-value bands -----------------------------------------------------------------------
# Measured with s log-spaced in [1/κ, 1]; after the Frobenius normalization the band depends only
# on the spectrum, i.e. on κ and n. At n=32…64: keller 5 steps, κ=10 → [0.682, 1.134] (0.687 at
# n=32); κ=1e3 → [0.21, 1.20]. polar_express 5 steps, κ=10 → [0.871, 1.124]; 8 steps, κ ≤ 1e3 → 1
# within 5e-4. svd → 1 within 1e-6 up to κ=1e6.

BANDS = [  # (set, steps, κ, low, high)
    ("keller", 5, 10.0, 0.67, 1.15),
    ("keller", 5, 1e3, 0.20, 1.21),
    ("polar_express", 5, 10.0, 0.86, 1.13),
    ("polar_express", 8, 10.0, 0.999, 1.001),
    ("polar_express", 8, 1e3, 0.995, 1.005),
    ("polar_express", 10, 1e3, 0.999, 1.001),
    ("svd", 1, 10.0, 1 - 1e-5, 1 + 1e-5),
    ("svd", 1, 1e6, 1 - 1e-5, 1 + 1e-5),
]


@pytest.mark.parametrize("name,steps,kappa,low,high", BANDS)
@pytest.mark.parametrize("rows,cols", [(48, 48), (48, 120), (120, 48)])
def test_singular_values_land_in_the_sets_band(name, steps, kappa, low, high, rows, cols):
    s = singular_values(ns.orthogonalize(conditioned(rows, cols, kappa), steps, name))
    assert low <= s.min() and s.max() <= high, (s.min().item(), s.max().item())


def test_keller_stops_short_of_one_and_polar_express_converges():
    """keller plateaus (error ≈ 0.3 with more steps); polar_express keeps converging."""
    G = conditioned(64, 64, 10.0)
    keller_far = singular_values(ns.orthogonalize(G, 12, "keller"))
    polar_far = singular_values(ns.orthogonalize(G, 12, "polar_express"))
    assert (keller_far - 1).abs().max() > 0.1
    assert (polar_far - 1).abs().max() < 1e-4


def test_svd_is_the_exact_polar_factor():
    G = conditioned(24, 40, 1e3, batch=1)[0].double()
    U, _, Vh = torch.linalg.svd(G, full_matrices=False)
    torch.testing.assert_close(ns.orthogonalize(G, coefficients="svd"), U @ Vh)


@pytest.mark.parametrize("name", ["keller", "polar_express", "svd"])
def test_zero_matrix_maps_to_zero(name):
    out = ns.orthogonalize(torch.zeros(2, 8, 24), coefficients=name)
    assert torch.equal(out, torch.zeros_like(out))


# --- batching, transposition, scale -------------------------------------------------------------


@pytest.mark.parametrize("name", ["keller", "polar_express"])
def test_batched_equals_per_matrix(name):
    G = torch.randn(2, 3, 24, 56, generator=torch.Generator().manual_seed(4))  # (…, m, n), 4-D
    out = ns.orthogonalize(G, 5, name)
    for i in range(2):
        for j in range(3):
            torch.testing.assert_close(out[i, j], ns.orthogonalize(G[i, j], 5, name), rtol=0, atol=2e-6)


@pytest.mark.parametrize("name", ["keller", "polar_express", "svd"])
def test_tall_equals_transpose_of_wide(name):
    """Up to float rounding: the Frobenius norm of a transposed view may sum in another order."""
    G = torch.randn(3, 20, 50, generator=torch.Generator().manual_seed(5))
    wide = ns.orthogonalize(G, 5, name)
    tall = ns.orthogonalize(G.mT.contiguous(), 5, name)
    torch.testing.assert_close(tall, wide.mT, rtol=0, atol=5e-6)


def test_output_ignores_the_input_scale():
    G = torch.randn(16, 40, generator=torch.Generator().manual_seed(6))
    torch.testing.assert_close(ns.orthogonalize(1e3 * G), ns.orthogonalize(G), rtol=0, atol=1e-5)


# --- precision ----------------------------------------------------------------------------------


@pytest.mark.parametrize("name", ["keller", "polar_express"])
@pytest.mark.parametrize("kappa,tolerance", [(10.0, 0.03), (100.0, 0.06)])
def test_bfloat16_is_close_to_float32(name, kappa, tolerance):
    """Measured: 1.4–1.8% relative difference at κ=10, 3.3–3.5% at κ=100 (bf16 keeps ~3 digits,
    and the iteration amplifies the small singular directions where they are lost)."""
    G = conditioned(48, 144, kappa)
    full = ns.orthogonalize(G, 5, name, torch.float32)
    half = ns.orthogonalize(G, 5, name, torch.bfloat16)
    assert half.dtype == torch.float32  # computed in bf16, returned in G's dtype
    assert (half - full).norm() / full.norm() < tolerance
    s_full, s_half = singular_values(full), singular_values(half)
    assert (s_half.max() - s_full.max()).abs() < 0.01 and (s_half.min() - s_full.min()).abs() < 0.02


def test_returns_the_input_dtype():
    G = torch.randn(2, 8, 12, dtype=torch.bfloat16)
    assert ns.orthogonalize(G).dtype == torch.bfloat16
    assert ns.orthogonalize(G.double(), coefficients="svd").dtype == torch.float64


@settings(max_examples=25, deadline=None)
@given(
    batch=st.integers(1, 3),
    rows=st.integers(1, 24),
    cols=st.integers(1, 24),
    log_scale=st.floats(-6, 6),
    name=st.sampled_from(["keller", "polar_express"]),
)
def test_any_input_gives_finite_bounded_output(batch, rows, cols, log_scale, name):
    g = torch.Generator().manual_seed(rows * 31 + cols)
    G = torch.randn(batch, rows, cols, generator=g) * 10**log_scale
    out = ns.orthogonalize(G, 5, name)
    assert out.shape == G.shape and torch.isfinite(out).all()
    assert singular_values(out).max() <= 1.25


# --- coefficient sets ---------------------------------------------------------------------------


def test_polar_express_is_algorithm_1_with_its_safety_factor():
    table = ns.COEFFICIENTS["polar_express"]
    assert len(table) == 8
    a, b, c = table[0]
    paper = (8.28721201814563, -23.595886519098837, 17.300387312530933)  # before the safety factor
    assert (a * 1.01, b * 1.01**3, c * 1.01**5) == pytest.approx(paper)
    assert table[-1] == (1.875, -1.25, 0.375)  # unscaled: the classic degree-5 Newton–Schulz
    assert ns.coefficient_schedule("polar_express", 11)[8:] == [table[-1]] * 3


def test_custom_triples_match_the_named_set_and_repeat_the_last():
    G = torch.randn(16, 40, generator=torch.Generator().manual_seed(9))
    assert torch.equal(ns.orthogonalize(G, 5, [list(KELLER)]), ns.orthogonalize(G, 5, "keller"))
    assert ns.coefficient_schedule([[1, 2, 3], [4, 5, 6]], 4) == [(1, 2, 3), (4, 5, 6), (4, 5, 6), (4, 5, 6)]


def test_custom_cubic_newton_schulz_converges():
    """(3/2, -1/2, 0) is the textbook cubic Newton–Schulz: slow, but it converges to 1."""
    s = singular_values(ns.orthogonalize(conditioned(32, 64, 4.0), 30, [(1.5, -0.5, 0.0)]))
    assert (s - 1).abs().max() < 1e-4


@pytest.mark.parametrize(
    "call",
    [
        lambda G: ns.orthogonalize(G, coefficients="jordan"),
        lambda G: ns.orthogonalize(G, coefficients=[[1.0, 2.0]]),
        lambda G: ns.orthogonalize(G, coefficients=[]),
        lambda G: ns.orthogonalize(G, coefficients=["abc"]),
        lambda G: ns.orthogonalize(G, steps=0),
        lambda G: ns.orthogonalize(G[0, 0]),
    ],
    ids=["unknown-name", "short-triple", "empty-list", "string-triple", "zero-steps", "vector"],
)
def test_bad_arguments_raise_value_error(call):
    with pytest.raises(ValueError):
        call(torch.randn(4, 6))


def test_unknown_name_error_lists_the_allowed_sets():
    with pytest.raises(ValueError, match="keller, polar_express, svd"):
        ns.coefficient_schedule("jordan", 5)


# --- dtype resolution ---------------------------------------------------------------------------


def test_resolve_dtype(monkeypatch):
    assert ns.resolve_dtype("float32", "cuda") == torch.float32
    assert ns.resolve_dtype("bfloat16", "cpu") == torch.bfloat16
    assert ns.resolve_dtype("auto", "cuda") == torch.bfloat16
    monkeypatch.setattr(ns, "cpu_has_fast_bf16", lambda: True)
    assert ns.resolve_dtype("auto", "cpu") == torch.bfloat16
    monkeypatch.setenv("TRX_NS_NO_BF16", "1")
    assert ns.resolve_dtype("auto", "cpu") == torch.float32
    monkeypatch.delenv("TRX_NS_NO_BF16")
    monkeypatch.setattr(ns, "cpu_has_fast_bf16", lambda: False)
    assert ns.resolve_dtype("auto", "cpu") == torch.float32
    with pytest.raises(ValueError, match="auto, float32, bfloat16"):
        ns.resolve_dtype("float16", "cpu")
