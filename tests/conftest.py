from __future__ import annotations

import subprocess
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

import pytest
import yaml


# Tests wait on events (a file appears, a line is printed, a process exits). This is only the
# safety net that ends a test which would otherwise hang; a busy machine (load 8 and more on 2
# cores) runs 5-10x slower than an idle one, so it is far above any normal duration.
SAFETY_S = 1800


def wait_until(ready: Callable[[], bool], proc: subprocess.Popen | None, what: str, limit: float = SAFETY_S) -> None:
    """Poll `ready` until it holds; fail at once (naming `what`) if `proc` ends first."""
    end = time.monotonic() + limit
    while not ready():
        if proc is not None and proc.poll() is not None:
            out = proc.stderr.read() if proc.stderr else ""
            raise AssertionError(f"the process ended (rc {proc.returncode}) before {what}: {out}")
        if time.monotonic() > end:
            raise AssertionError(f"{what}: still not after {limit:.0f} s (the safety limit)")
        time.sleep(0.05)


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
