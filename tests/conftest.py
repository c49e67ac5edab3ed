from __future__ import annotations

from pathlib import Path
from typing import Any

import pytest
import yaml


def tiny_config(**over: Any) -> dict[str, Any]:
    """A small valid experiment: logreg on wine, two arms, a few steps."""
    cfg: dict[str, Any] = {
        "name": "tiny",
        "seed": 0,
        "steps": 20,
        "eval_every": 10,
        "log_every": 5,
        "task": {"name": "logreg", "dataset": "wine", "batch_size": 16},
        "optimizers": {
            "sgd": {"lr": 0.1},
            "adam": {"lr": 0.01, "filter": {"name": "ema", "beta": 0.9}, "normalizer": {"name": "adam"}},
        },
    }
    cfg.update(over)
    return cfg


@pytest.fixture
def write_config(tmp_path: Path):
    def write(data: dict[str, Any], name: str = "exp.yaml") -> Path:
        path = tmp_path / name
        path.write_text(yaml.safe_dump(data))
        return path

    return write
