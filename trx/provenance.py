"""The record every run leaves beside its results: versions, commit, machine, threads.

Results can depend on the CPU (`dtype: auto` runs Newton–Schulz in bf16 on CPUs with AVX512-BF16
or AMX, in float32 elsewhere) and on the torch build, so both are recorded."""

from __future__ import annotations

import platform
import socket
import subprocess
from pathlib import Path
from typing import Any

import torch

import trx
from trx.optim import newton_schulz as ns

# The CPU features that change which kernels (and so which roundings) torch and trx use.
ISA_FLAGS = ("avx2", "avx512f", "avx512_bf16", "amx_tile", "amx_bf16")


def git_sha() -> str | None:
    try:
        out = subprocess.run(["git", "rev-parse", "HEAD"], cwd=Path(trx.__file__).parent, capture_output=True,
                             text=True, timeout=5)
    except (OSError, subprocess.SubprocessError):
        return None
    return out.stdout.strip() or None if out.returncode == 0 else None


def cpu_model() -> str | None:
    try:
        with open("/proc/cpuinfo") as f:
            return next((ln.partition(":")[2].strip() for ln in f if ln.startswith("model name")), None)
    except OSError:
        return platform.processor() or None


def cpu_record() -> dict[str, Any]:
    """The CPU, the instruction sets that matter to results, and the torch build that uses them."""
    return {
        "cpu": cpu_model(),
        "cpu_isa": " ".join(f for f in ISA_FLAGS if f in ns.cpu_flags()) or "none of " + " ".join(ISA_FLAGS),
        "torch_cpu_capability": torch.backends.cpu.get_cpu_capability(),  # the kernels torch dispatches to
        "torch_cuda": torch.version.cuda,  # None for a CPU-only build
    }


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
        **cpu_record(),
    }
