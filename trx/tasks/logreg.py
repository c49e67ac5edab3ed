"""Softmax (multinomial logistic) regression on real data sets shipped with scikit-learn."""

from __future__ import annotations

from typing import Literal

import numpy as np
import torch
import torch.nn.functional as F
from pydantic import Field
from torch import nn

from trx.tasks.base import DataError, Task, TaskOptions, generator, register_task


class LogregOptions(TaskOptions):
    dataset: Literal["digits", "breast_cancer", "wine"] = Field("digits", description="scikit-learn data set")
    batch_size: int = Field(64, ge=1, description="examples per update")
    val_fraction: float = Field(0.2, gt=0.0, lt=1.0, description="held-out fraction (split fixed by the seed)")


def load_dataset(name: str) -> tuple[np.ndarray, np.ndarray]:
    try:
        from sklearn import datasets
    except ImportError as exc:  # pragma: no cover - scikit-learn is a dependency
        raise DataError("task.dataset", "needs scikit-learn: pip install scikit-learn") from exc
    loader = {"digits": datasets.load_digits, "breast_cancer": datasets.load_breast_cancer, "wine": datasets.load_wine}[name]
    bunch = loader()
    return bunch.data.astype(np.float32), bunch.target.astype(np.int64)


@register_task
class Logreg(Task):
    name = "logreg"
    loss_unit = "nats"  # a cross-entropy
    description = "softmax regression on scikit-learn's digits, breast_cancer or wine (standardized)"
    Options = LogregOptions

    @classmethod
    def chance(cls, options: LogregOptions) -> dict[str, float]:  # type: ignore[override]
        return {"val_acc": 1.0 / {"digits": 10, "breast_cancer": 2, "wine": 3}[options.dataset]}

    def prepare(self) -> None:
        x, y = load_dataset(self.options.dataset)
        order = np.random.default_rng(self.seed).permutation(len(x))
        n_val = max(1, int(round(self.options.val_fraction * len(x))))
        val, train = order[:n_val], order[n_val:]
        mean, std = x[train].mean(0), x[train].std(0)
        std[std == 0] = 1.0  # constant pixels in digits
        norm = lambda a: torch.from_numpy((a - mean) / std).to(self.device)  # noqa: E731
        self.x_train, self.y_train = norm(x[train]), torch.from_numpy(y[train]).to(self.device)
        self.x_val, self.y_val = norm(x[val]), torch.from_numpy(y[val]).to(self.device)
        self.classes = int(y.max()) + 1

    def build_model(self) -> nn.Module:
        return nn.Linear(self.x_train.shape[1], self.classes).to(self.device)

    def batch(self, step: int) -> torch.Tensor:
        """Indices of the step's examples: epochs are seeded permutations, batches wrap across them."""
        n, bs = len(self.x_train), self.options.batch_size
        start = step * bs
        idx = []
        while len(idx) < bs:
            epoch, offset = divmod(start + len(idx), n)
            perm = torch.randperm(n, generator=generator(self.seed, epoch))
            idx.extend(perm[offset : offset + bs - len(idx)].tolist())
        return torch.tensor(idx, device=self.device)

    def loss(self, model: nn.Module, batch: torch.Tensor) -> torch.Tensor:
        return F.cross_entropy(model(self.x_train[batch]), self.y_train[batch])

    def evaluate(self, model: nn.Module) -> dict[str, float]:
        logits = model(self.x_val)
        return {
            "val_loss": float(F.cross_entropy(logits, self.y_val)),
            "val_acc": float((logits.argmax(1) == self.y_val).float().mean()),
        }
