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


def sum_of_squares(X: Tensor, dim: int) -> Tensor:
    """Σ X² along `dim` (kept), in float32 whatever X's dtype, by the faster CPU/GPU route:
    a norm along the contiguous last dimension of float32 input, else square-and-sum."""
    if X.dtype == torch.float32 and dim == -1:
        return torch.linalg.vector_norm(X, dim=dim, keepdim=True).square_()
    return X.float().square().sum(dim=dim, keepdim=True)


def feature_mean_square(O: Tensor, axis: str) -> Tensor:
    """mean(O²) per feature, in float32 whatever O's dtype: (B, r, 1) for `output`, (B, 1, c) for `input`."""
    dim = feature_dim(axis)
    return sum_of_squares(O, dim).div_(O.shape[dim])


def second_moment_factor(mean_sq: Tensor, s: Tensor, beta2: float, eps: float) -> tuple[Tensor, Tensor]:
    """NorMuon's stage: s ← β2·s + (1−β2)·mean(O²) per feature; the factor 1/(√s + eps).

    No bias correction (s starts at 0), as in NorMuon. Returns (factor, new s), both shaped
    like `mean_sq`: the normalized matrix is O·factor.
    """
    s = s.mul(beta2).add_(mean_sq, alpha=1.0 - beta2)
    return s.sqrt().add_(eps).reciprocal_(), s


def scaled_norm(mean_sq: Tensor, factor: Tensor | None, count: int) -> Tensor:
    """‖O·factor‖_F per matrix (B, 1, 1) from the per-feature mean squares, without touching O."""
    energy = mean_sq if factor is None else mean_sq * factor.square()
    return energy.sum(dim=(-2, -1), keepdim=True).mul_(count).sqrt_()


def frobenius(X: Tensor) -> Tensor:
    """‖X_b‖_F for each matrix of the stack, shaped (B, 1, 1)."""
    return torch.linalg.vector_norm(X, dim=(-2, -1), keepdim=True, dtype=torch.float32)


def feature_energy(M: Tensor, axis: str) -> Tensor:
    """Energy of each feature on the axis other than `axis`, in float32: column sums of M² for
    `output` (B, 1, c), row sums for `input` (B, r, 1)."""
    return sum_of_squares(M, -2 if axis == "output" else -1)


def energy_clip(ratio: Tensor, trigger: float, alpha: float, clip_min: float) -> Tensor:
    """1 where ratio ≤ trigger, else 1/(1 + α·log1p(ratio/trigger)), floored at clip_min."""
    damped = 1.0 / (1.0 + alpha * torch.log1p(ratio / trigger))
    return torch.where(ratio > trigger, damped, torch.ones_like(ratio)).clamp_(min=clip_min, max=1.0)


def orthogonality_error(O: Tensor) -> Tensor:
    """‖OᵀO − I‖_F/√n for one matrix, n = min(rows, cols), on its small Gram matrix (a 0-dim tensor)."""
    X = O.float()
    gram = X.mT @ X if X.shape[-2] >= X.shape[-1] else X @ X.mT
    n = gram.shape[-1]
    eye = torch.eye(n, dtype=gram.dtype, device=gram.device)
    return torch.linalg.matrix_norm(gram - eye) / n**0.5
