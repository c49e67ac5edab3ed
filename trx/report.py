"""Comparison tables from run summaries (pandas)."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import pandas as pd

from trx.io import atomic_write

BASE_COLUMNS = ["arm", "status", "steps_done", "final_loss", "best_loss"]
TAIL_COLUMNS = ["diverged_at", "wall_time_s"]


def comparison_table(summaries: list[dict[str, Any]]) -> pd.DataFrame:
    """One row per arm: status, losses, final eval metrics, theory (where the task has it),
    divergence step, wall time."""
    evals = sorted({k for s in summaries for k in s if k.startswith("final_val")})
    theory = list(dict.fromkeys(k for s in summaries for k in (s.get("theory") or {})))
    columns = BASE_COLUMNS + evals + theory + TAIL_COLUMNS
    rows = [{c: {**s, **(s.get("theory") or {})}.get(c) for c in columns} for s in summaries]
    return pd.DataFrame(rows, columns=columns)


def save_comparison(table: pd.DataFrame, path: Path) -> None:
    atomic_write(path, table.to_csv(index=False))
