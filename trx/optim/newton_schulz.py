"""Orthogonalization of (batches of) matrices by Newton–Schulz iteration.

`orthogonalize(G)` maps each matrix G = U·S·Vᵀ of a batch (..., m, n) to approximately U·Vᵀ, its
polar factor, with a few odd quintic iterations

    A = X Xᵀ;   X ← a·X + (b·A + c·A²)·X        i.e. σ ← a·σ + b·σ³ + c·σ⁵ per singular value,

after scaling X by its Frobenius norm (which bounds the spectral norm, so every σ ≤ 1). Tall
matrices are transposed first so that the Gram matrix A is the small (min(m, n))² one.

Coefficient sets (`COEFFICIENTS`, or a list of (a, b, c) triples; a short list repeats its last):
- `keller`: (3.4445, -4.7750, 2.0315) at every step — Keller Jordan's Muon
  (github.com/KellerJordan/Muon, muon.py; the same triple as `torch.optim.Muon`). Tuned for a
  steep slope at 0, not for convergence: after 5 steps the singular values of a well-scaled
  input land in roughly [0.68, 1.13] (measured in tests/test_newton_schulz.py); they never
  converge to 1.
- `polar_express`: the eight per-iteration triples of Algorithm 1 of Amsel, Persson, Musco,
  Gower, "The Polar Express: Optimal Matrix Sign Methods and Their Application to the Muon
  Algorithm" (arXiv:2505.16932, 2025; github.com/NoahAmsel/PolarExpress). Each is the minimax
  optimal odd quintic on the singular-value interval left by the previous ones (from [1e-3, 1],
  with the authors' cushion 0.02). As in
  Algorithm 1, the first seven are divided by a safety factor 1.01 (a/1.01, b/1.01³, c/1.01⁵) so
  that bf16 round-off cannot push a singular value past the polynomial's stable range, and the
  input is normalized by 1.01·‖G‖_F + eps instead of max(‖G‖_F, eps). Steps past the eighth repeat
  the last triple (15/8, -10/8, 3/8), the classic degree-5 Newton–Schulz, which converges to 1.
- `svd`: the exact polar factor U·Vᵀ from `torch.linalg.svd` in float64 (`steps` is ignored) —
  the reference the iterations approximate; slow, for tests and tables. Directions whose
  singular value is below G's round-off (ε·σ_max) map to 0, as they do under the iterations.

Precision: the iteration runs in `dtype` (bf16 is ~2 decimal digits, enough for an update
direction); `resolve_dtype("auto", device)` picks bf16 where matmuls in it are fast. With
`coefficients="keller"` and float32 the arithmetic is the same sequence of operations as torch's
`torch.optim._muon._zeropower_via_newtonschulz` (there run in bf16), so the two agree to float
rounding. Measurements behind these choices are in docs/newton_schulz.md, including the Gram form
of the iteration (Dao-AILab's gram-newton-schulz), which was tried and left out: fewer FLOPs on
rectangular matrices, but in bf16 it pushes singular values well past the standard form's.
"""

from __future__ import annotations

import functools
import os
from collections.abc import Sequence

import torch
from torch import Tensor

Triple = tuple[float, float, float]


def _with_safety(triples: list[Triple], safety: float) -> list[Triple]:
    """Polar Express's safety factor: p(x) ↦ p(x/safety) for all but the last polynomial."""
    scaled = [(a / safety, b / safety**3, c / safety**5) for a, b, c in triples[:-1]]
    return scaled + triples[-1:]


_POLAR_EXPRESS_RAW: list[Triple] = [  # arXiv:2505.16932, Algorithm 1, before the safety factor
    (8.28721201814563, -23.595886519098837, 17.300387312530933),
    (4.107059111542203, -2.9478499167379106, 0.5448431082926601),
    (3.9486908534822946, -2.908902115962949, 0.5518191394370137),
    (3.3184196573706015, -2.488488024314874, 0.51004894012372),
    (2.300652019954817, -1.6689039845747493, 0.4188073119525673),
    (1.891301407787398, -1.2679958271945868, 0.37680408948524835),
    (1.8750014808534479, -1.2500016453999487, 0.3750001645474248),
    (1.875, -1.25, 0.375),
]

COEFFICIENTS: dict[str, list[Triple]] = {
    "keller": [(3.4445, -4.7750, 2.0315)],
    "polar_express": _with_safety(_POLAR_EXPRESS_RAW, 1.01),
}

# Sets whose authors normalize by safety·‖G‖_F + eps (Algorithm 1); the rest use torch's
# max(‖G‖_F, eps), which `keller` must keep to match torch.optim.Muon.
_NORM_SAFETY: dict[str, float] = {"polar_express": 1.01}

SVD = "svd"


def coefficient_schedule(coefficients: str | Sequence[Sequence[float]], steps: int) -> list[Triple]:
    """The triple used by each of `steps` iterations; a short list repeats its last triple.

    `"svd"` needs no iterations and gives []. Unknown names and malformed triples raise ValueError.
    """
    if isinstance(coefficients, str):
        if coefficients == SVD:
            return []
        if coefficients not in COEFFICIENTS:
            allowed = ", ".join([*COEFFICIENTS, SVD])
            raise ValueError(f"unknown coefficient set {coefficients!r}; allowed: {allowed}")
        table = COEFFICIENTS[coefficients]
    else:
        table = [_triple(t) for t in coefficients]
        if not table:
            raise ValueError("coefficients: need at least one (a, b, c) triple, got an empty list")
    return [table[min(i, len(table) - 1)] for i in range(steps)]


def _triple(t: Sequence[float]) -> Triple:
    if isinstance(t, (str, bytes)) or len(t) != 3:
        raise ValueError(f"each coefficient triple must be 3 numbers (a, b, c), got {t!r}")
    a, b, c = (float(x) for x in t)
    return a, b, c


@functools.cache
def cpu_flags() -> frozenset[str]:
    """The instruction-set flags of this CPU (Linux's /proc/cpuinfo; empty elsewhere)."""
    try:
        with open("/proc/cpuinfo") as f:
            line = next((ln for ln in f if ln.startswith("flags")), "")
    except OSError:
        return frozenset()
    return frozenset(line.partition(":")[2].split())


def cpu_has_fast_bf16() -> bool:
    """True on CPUs with native bf16 matmul (AVX512-BF16 or AMX)."""
    return bool({"avx512_bf16", "amx_bf16"} & cpu_flags())


def resolve_dtype(dtype: str, device: torch.device | str) -> torch.dtype:
    """`auto` → bfloat16 where the hardware multiplies bf16 fast (CUDA, AVX512-BF16/AMX CPUs).

    `TRX_NS_NO_BF16=1` makes `auto` pick float32 on such CPUs.
    """
    if dtype == "float32":
        return torch.float32
    if dtype == "bfloat16":
        return torch.bfloat16
    if dtype != "auto":
        raise ValueError(f"unknown Newton–Schulz dtype {dtype!r}; allowed: auto, float32, bfloat16")
    device = torch.device(device)
    if device.type == "cuda":
        return torch.bfloat16
    if device.type == "cpu" and cpu_has_fast_bf16() and os.environ.get("TRX_NS_NO_BF16") != "1":
        return torch.bfloat16
    return torch.float32


def orthogonalize(
    G: Tensor,
    steps: int = 5,
    coefficients: str | Sequence[Sequence[float]] = "keller",
    dtype: torch.dtype = torch.float32,
    eps: float = 1e-7,
) -> Tensor:
    """Approximate polar factor of each matrix in G (..., m, n); returns G's dtype and shape.

    Stack same-shaped matrices into one (B, m, n) tensor: on a GPU one batched call is several
    times faster than a loop over them (docs/newton_schulz.md).
    """
    if G.dim() < 2:
        raise ValueError(f"orthogonalize needs (..., m, n) matrices, got shape {tuple(G.shape)}")
    if coefficients == SVD:
        return polar_svd(G)
    if steps < 1:
        raise ValueError(f"steps must be >= 1, got {steps}")
    schedule = coefficient_schedule(coefficients, steps)
    safety = _NORM_SAFETY.get(coefficients) if isinstance(coefficients, str) else None
    m, n = G.shape[-2:]
    X = G.reshape(-1, m, n) if G.dim() > 3 else G  # (B, m, n) or (m, n)
    X = X.to(dtype)
    if m > n:  # iterate on the short side so the Gram matrix X Xᵀ is the small one
        X = X.mT
    norm = X.norm(dim=(-2, -1), keepdim=True)
    X = X / (norm * safety + eps) if safety else X / norm.clamp(min=eps)
    X = _iterations(X, schedule)
    if m > n:
        X = X.mT
    return X.reshape(G.shape).to(G.dtype)


def _iterations(X: Tensor, schedule: list[Triple]) -> Tensor:
    """X ← a·X + (b·A + c·A²)·X with A = X Xᵀ, for X (s, l) or (B, s, l) with s ≤ l.

    For 2-D input these are torch's own calls (`mm`, `addmm`) in the order of
    `_zeropower_via_newtonschulz`; batches use the same fused multiply-adds via baddbmm.
    """
    mm_add = torch.baddbmm if X.dim() == 3 else torch.addmm
    for a, b, c in schedule:
        A = X @ X.mT  # (…, s, s)
        B = mm_add(A, A, A, beta=b, alpha=c)  # b·A + c·A²
        X = mm_add(X, B, X, beta=a)  # a·X + B·X
    return X


def polar_svd(G: Tensor) -> Tensor:
    """The exact polar factor U·Vᵀ of each matrix of G (..., m, n), in G's dtype.

    The SVD runs in float64. Singular values at or below ε·σ_max (ε of G's dtype: what G cannot
    resolve) count as zero and their directions map to 0, as under the iterations (so 0 ↦ 0).
    """
    U, S, Vh = torch.linalg.svd(G.to(torch.float64), full_matrices=False)
    tol = S.amax(dim=-1, keepdim=True) * torch.finfo(G.dtype).eps
    keep = (S > tol).to(torch.float64)
    return ((U * keep.unsqueeze(-2)) @ Vh).to(G.dtype)
