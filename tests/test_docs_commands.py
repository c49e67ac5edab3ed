"""Every `trx` command shown in a code block of README.md and docs/*.md runs as written (exit 0),
in the order the page gives them, so that a reader who types them along gets what the page
says. Commands that train get a tiny size appended (few updates, one seed, small models), which
changes how long they run, not which flags and files they take."""

from __future__ import annotations

import os
import re
import shlex
import subprocess
import sys
from pathlib import Path

import pytest
from conftest import SAFETY_S
from test_shipped_configs import SMALL

from trx.config import load_config

ROOT = Path(__file__).resolve().parents[1]
PAGES = [ROOT / "README.md", *sorted((ROOT / "docs").glob("*.md"))]
# Synopses (placeholders in capitals, [optional] parts), commands that need a Ray cluster or as
# many processes as a multi-GPU node has (`--nproc 8`; tests/test_distributed.py runs 2).
NOT_A_COMMAND = re.compile(r"\b(CONFIG|RUN_DIR|NAME)\b|\[--|--ray (auto|\")|--nproc|\\$")


def code_lines(page: Path) -> list[str]:
    """The lines of the page's code blocks (indented by 4 spaces, or fenced)."""
    lines, fenced = [], False
    for line in page.read_text().splitlines():
        if line.startswith("```"):
            fenced = not fenced
        elif fenced or line.startswith("    "):
            lines.append(line.strip())
    return lines


def commands(page: Path) -> list[str]:
    found = [line.split("  #")[0].strip() for line in code_lines(page) if line.startswith("trx ")]
    return [c for c in found if not NOT_A_COMMAND.search(c)]


def tiny(command: str) -> str:
    """`trx run` and `trx sweep` at a size of seconds: enough updates for the config's warmups,
    one seed, small models, the CPU."""
    words = shlex.split(command)
    if words[1] not in ("run", "sweep"):
        return command
    cfg = load_config(ROOT / words[2])
    warm = [b.schedule.warmup for a in cfg.optimizers.values() for b in (a, a.aux) if b and b.schedule]
    n = 12 + max([w for w in warm if isinstance(w, int)], default=0)
    sets = [f"steps={n}", "log_every=2", f"eval_every={n // 2}", "checkpoint_every=0", "device=cpu",
            *SMALL.get(cfg.task.name, [])]
    return command + " --seeds 1" + "".join(f" --set {shlex.quote(s)}" for s in sets)


@pytest.mark.slow
@pytest.mark.parametrize("page", [p for p in PAGES if commands(p)], ids=lambda p: p.name)
def test_every_command_in_the_docs_runs(page, tmp_path):
    (tmp_path / "configs").symlink_to(ROOT / "configs")
    (tmp_path / "docs").mkdir()
    env = {**os.environ, "COLUMNS": "200", "PYTHONPATH": os.pathsep.join([str(ROOT), os.environ.get("PYTHONPATH", "")])}
    env.pop("TRX_DEBUG", None)
    for command in commands(page):
        line = tiny(command).replace("trx ", f"{shlex.quote(sys.executable)} -m trx ", 1)
        res = subprocess.run(line, shell=True, cwd=tmp_path, env=env, capture_output=True, text=True, timeout=SAFETY_S)
        assert res.returncode == 0, f"{page.name}: {command}\n{res.stdout[-2000:]}\n{res.stderr[-2000:]}"


def test_the_command_finder_keeps_commands_and_drops_synopses(tmp_path):
    page = tmp_path / "page.md"
    page.write_text("Prose: trx never downloads.\n\n    trx run CONFIG [--seeds N]\n    trx list\n"
                    "    trx sweep configs/lr_sweep.yaml --jobs 2      # a comment\n"
                    "    trx sweep configs/lr_sweep.yaml --ray auto --out /shared/runs\n\n```\ntrx report runs/x\n```\n")
    assert commands(page) == ["trx list", "trx sweep configs/lr_sweep.yaml --jobs 2", "trx report runs/x"]
