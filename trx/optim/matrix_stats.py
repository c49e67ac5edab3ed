"""Pure functions on stacks of matrices (B, rows, cols) that NorMuon and TrasMuon compose.

Matrices are in torch layout, (out, in) for a Linear weight (conv weights flattened to
(out, in·kh·kw)). `axis = "output"` puts a statistic on each output feature (a row);
`axis = "input"` on each input feature (a column). Every function returns new tensors and the
new state; callers keep the state in the per-parameter state dicts.
"""

from __future__ import annotations

import torch
from torch import Tensor


def feature_dim(axis: str) -> int:
    """The dimension a per-feature statistic averages over: a row's entries for `output`."""
    return -1 if axis == "output" else -2


def second_moment_normalize(
    O: Tensor, s: Tensor | None, beta2: float, eps: float, axis: str
) -> tuple[Tensor, Tensor]:
    """NorMuon's stage: s ← β2·s + (1−β2)·mean(O²) per feature; O / (√s + eps).

    O: (B, r, c); s: (B, r, 1) for `output`, (B, 1, c) for `input` (None on the first step, as if
    zeros: no bias correction, as in NorMuon). Returns (normalized O, new s).
    """
    mean_sq = O.square().mean(dim=feature_dim(axis), keepdim=True)
    s = mean_sq.mul(1.0 - beta2) if s is None else s.mul(beta2).add_(mean_sq, alpha=1.0 - beta2)
    return O / s.sqrt().add_(eps), s


def frobenius(X: Tensor) -> Tensor:
    """‖X_b‖_F for each matrix of the stack, shaped (B, 1, 1)."""
    return torch.linalg.vector_norm(X, dim=(-2, -1), keepdim=True)


def rescale_to_norm(X: Tensor, norm: Tensor, eps: float) -> Tensor:
    """X with each matrix's Frobenius norm set to `norm` (B, 1, 1)."""
    return X * (norm / (frobenius(X) + eps))


def calibrate_rms(X: Tensor, rms: float, eps: float) -> Tensor:
    """Global RMS calibration: each matrix scaled to RMS `rms`, i.e. ‖X‖_F = rms·√(r·c)."""
    rows, cols = X.shape[-2:]
    return X * (rms * (rows * cols) ** 0.5 / (frobenius(X) + eps))


def feature_energy(M: Tensor, axis: str) -> Tensor:
    """Energy of each feature on the other axis: column sums of M² for `output` → (B, 1, c)."""
    return M.square().sum(dim=-2 if axis == "output" else -1, keepdim=True)


def energy_reference(energy: Tensor, ref: Tensor | None, beta: float) -> Tensor:
    """EMA of the median feature energy, (B, 1, 1); the first step takes the median itself."""
    median = energy.flatten(1).median(dim=1).values.view(-1, 1, 1)
    return median if ref is None else ref.mul(beta).add_(median, alpha=1.0 - beta)


def energy_clip(ratio: Tensor, trigger: float, alpha: float, clip_min: float) -> Tensor:
    """1 where ratio ≤ trigger, else 1/(1 + α·log1p(ratio/trigger)), floored at clip_min."""
    damped = 1.0 / (1.0 + alpha * torch.log1p(ratio / trigger))
    return torch.where(ratio > trigger, damped, torch.ones_like(ratio)).clamp_(min=clip_min, max=1.0)


def orthogonality_error(O: Tensor) -> float:
    """‖OᵀO − I‖_F/√n for one matrix, n = min(rows, cols), on its small Gram matrix."""
    X = O.float()
    gram = X.mT @ X if X.shape[-2] >= X.shape[-1] else X @ X.mT
    n = gram.shape[-1]
    eye = torch.eye(n, dtype=gram.dtype, device=gram.device)
    return float(torch.linalg.matrix_norm(gram - eye) / n**0.5)
