"""bf16 autocast for the tasks that train real networks: one option, one rule for "auto"."""

from __future__ import annotations

import contextlib
from typing import Annotated, Literal

import torch
from pydantic import Field

Amp = Annotated[Literal["auto", "bf16", "none"], Field(description="bf16 autocast; auto = on for cuda")]
"""The `amp` task option: `amp: Amp = "auto"`."""


def amp_enabled(mode: str, device: torch.device) -> bool:
    """Whether `mode` turns autocast on for `device` (auto: on for cuda only, where bf16 is fast)."""
    return mode == "bf16" or (mode == "auto" and device.type == "cuda")


def autocast(enabled: bool, device: torch.device) -> contextlib.AbstractContextManager:
    """bf16 autocast on `device`, or a no-op. Callers take the loss of `logits.float()`, so the
    cross-entropy (and its log-sum-exp) is computed in float32 either way."""
    if not enabled:
        return contextlib.nullcontext()
    return torch.autocast(device.type, dtype=torch.bfloat16)
