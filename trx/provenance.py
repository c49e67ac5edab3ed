"""The record every run leaves beside its results: versions, commit, machine, threads."""

from __future__ import annotations

import platform
import socket
import subprocess
from pathlib import Path
from typing import Any

import torch

import trx


def git_sha() -> str | None:
    try:
        out = subprocess.run(["git", "rev-parse", "HEAD"], cwd=Path(trx.__file__).parent, capture_output=True,
                             text=True, timeout=5)
    except (OSError, subprocess.SubprocessError):
        return None
    return out.stdout.strip() or None if out.returncode == 0 else None


def provenance(device: torch.device | str, world_size: int = 1) -> dict[str, Any]:
    """What is needed to rerun a result exactly and to know where it ran."""
    return {
        "device": str(device),
        "threads": torch.get_num_threads(),
        "world_size": world_size,
        "host": socket.gethostname(),
        "trx_version": trx.__version__,
        "torch_version": torch.__version__,
        "python_version": platform.python_version(),
        "git_sha": git_sha(),
    }
