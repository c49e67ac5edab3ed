"""scripts/gpu_smoke.py: its CPU run passes every check; without CUDA the default run exits 2."""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

import pytest
import torch

SCRIPT = Path(__file__).resolve().parents[1] / "scripts" / "gpu_smoke.py"


def smoke(*args: str) -> subprocess.CompletedProcess:
    env = {**os.environ, "PYTHONPATH": str(SCRIPT.parents[1])}
    return subprocess.run([sys.executable, str(SCRIPT), *args], capture_output=True, text=True, env=env, timeout=300)


def test_cpu_run_passes_every_check():
    out = smoke("--device", "cpu", "--threads", "1")
    assert out.returncode == 0, out.stdout + out.stderr
    lines = out.stdout.strip().splitlines()
    checks = lines[1:-1]
    assert checks and all(line.startswith(("PASS ", "SKIP ")) for line in checks), out.stdout
    from trx.optim import NORMALIZERS
    from trx.tasks import TASKS

    for name in [*(f"task {t}" for t in TASKS), *(f"normalizer {n}" for n in NORMALIZERS)]:
        assert any(line.split(":")[0].endswith(name) for line in checks), name
    assert sum(line.startswith("PASS checkpoint") for line in checks) == 2
    assert lines[-1].startswith("PASS:")


@pytest.mark.skipif(torch.cuda.is_available(), reason="a CUDA device is present")
def test_without_cuda_it_says_so_and_exits_2():
    out = smoke()
    assert out.returncode == 2
    assert "no CUDA device" in out.stdout
