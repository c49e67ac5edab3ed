"""Orthogonalization of (batches of) matrices by Newton–Schulz iteration.

`orthogonalize(G)` maps G = U·S·Vᵀ to approximately U·Vᵀ (its polar factor) with a few odd
polynomial iterations X ← a·X + b·(X Xᵀ)X + c·(X Xᵀ)²X, after scaling X so that its spectral
norm is at most 1 (the Frobenius norm bounds it).

Coefficient sets:
- `keller`: (3.4445, -4.7750, 2.0315) for every step, from Keller Jordan's Muon. It maximizes
  the slope at zero rather than converging to 1, so singular values land roughly in [0.7, 1.2].
"""

from __future__ import annotations

import functools
import os
from collections.abc import Sequence

import torch
from torch import Tensor

Triple = tuple[float, float, float]

COEFFICIENTS: dict[str, list[Triple]] = {
    "keller": [(3.4445, -4.7750, 2.0315)],
}


def coefficient_schedule(coefficients: str | Sequence[Sequence[float]], steps: int) -> list[Triple]:
    """The triple used by each of `steps` iterations; a short list repeats its last triple."""
    if isinstance(coefficients, str):
        if coefficients not in COEFFICIENTS:
            raise ValueError(f"unknown coefficient set {coefficients!r}; allowed: {', '.join(COEFFICIENTS)}")
        table = COEFFICIENTS[coefficients]
    else:
        table = [tuple(float(x) for x in triple) for triple in coefficients]
    return [table[min(i, len(table) - 1)] for i in range(steps)]


@functools.cache
def cpu_has_fast_bf16() -> bool:
    """True on CPUs with native bf16 matmul (AVX512-BF16 or AMX)."""
    try:
        with open("/proc/cpuinfo") as f:
            flags = f.read()
    except OSError:
        return False
    return "avx512_bf16" in flags or "amx_bf16" in flags


def resolve_dtype(dtype: str, device: torch.device | str) -> torch.dtype:
    """`auto` → bfloat16 where the hardware multiplies bf16 fast (CUDA, AVX512-BF16/AMX CPUs)."""
    if dtype == "float32":
        return torch.float32
    if dtype == "bfloat16":
        return torch.bfloat16
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
    """Approximate polar factor of each matrix in G (..., m, n); returns G's dtype and shape."""
    X = G.to(dtype)
    tall = G.size(-2) > G.size(-1)
    if tall:  # iterate on the short side so the Gram matrix X Xᵀ is the small one
        X = X.mT
    X = X / X.norm(dim=(-2, -1), keepdim=True).clamp(min=eps)
    for a, b, c in coefficient_schedule(coefficients, steps):
        A = X @ X.mT  # (..., m, m) with m ≤ n
        B = torch.baddbmm(A, A, A, beta=b, alpha=c) if A.dim() == 3 else b * A + c * (A @ A)
        X = a * X + B @ X
    if tall:
        X = X.mT
    return X.to(G.dtype)
