"""The arrows of docs/architecture.md, read from the code: what plans and runs imports nothing that
reports; the CLI talks to the service, not the training loop; one module parses YAML."""

from __future__ import annotations

import ast
from pathlib import Path

import pytest

TRX = Path(__file__).resolve().parents[1] / "trx"
REPORTING = {"trx.compare", "trx.report", "trx.plots"}
PLANNING = ["sweep_plan", "service", "jobs", "executors", "ray_executor", "runner", "checkpoint", "config"]


def imports(module: str) -> set[str]:
    """Every trx module `trx/<module>.py` imports, at its top or inside a function."""
    tree = ast.parse((TRX / f"{module}.py").read_text())
    found = set()
    for node in ast.walk(tree):
        if isinstance(node, ast.ImportFrom) and node.module:
            found |= {node.module, *(f"{node.module}.{a.name}" for a in node.names)}
        elif isinstance(node, ast.Import):
            found |= {a.name for a in node.names}
    return {m for m in found if m.startswith("trx.")}


@pytest.mark.parametrize("module", PLANNING)
def test_what_plans_and_runs_imports_nothing_that_reports(module):
    assert imports(module) & REPORTING == set()


def test_the_cli_calls_the_service_not_the_training_loop():
    found = imports("cli")
    assert {"trx.runner", "trx.jobs"} & found == set()
    assert "trx.api" in found or "trx.service" in found


def test_only_io_parses_yaml():
    """One YAML reader (`trx.io.read_yaml`, over `load_yaml`'s limits): no other module loads YAML."""
    found = [f"{path.relative_to(TRX)}:{n}" for path in sorted(TRX.rglob("*.py")) if path.name != "io.py"
             for n, line in enumerate(path.read_text().splitlines(), 1)
             if "yaml.load(" in line or "safe_load(" in line or "def read_yaml" in line or "def load_yaml" in line]
    assert found == []
