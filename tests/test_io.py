"""Output files: atomic writes keep their content whole and get the mode any new file gets."""

from __future__ import annotations

import os
import stat
from pathlib import Path

import pytest

import trx.io
from trx.io import MetricsWriter, atomic_write, current_umask, write_json, write_yaml


@pytest.fixture
def umask():
    """Set the process umask for one test and restore it afterwards."""
    saved = os.umask(0o022)
    os.umask(saved)

    def set_mask(mask: int) -> None:
        os.umask(mask)

    yield set_mask
    os.umask(saved)


def mode(path: Path) -> int:
    return stat.S_IMODE(path.stat().st_mode)


@pytest.mark.parametrize("mask", [0o022, 0o077])
def test_atomic_writes_follow_the_umask_like_a_plain_file(tmp_path: Path, umask, mask: int):
    umask(mask)
    plain = tmp_path / "plain.txt"
    plain.write_text("x")  # what open() gives: the reference
    atomic_write(tmp_path / "a.txt", "hello")
    write_json(tmp_path / "summary.json", {"loss": 1.0})
    write_yaml(tmp_path / "config.yaml", {"lr": 0.1})
    metrics = MetricsWriter(tmp_path / "metrics.csv")
    metrics.append({"step": 0, "loss": 2.0})
    metrics.append({"step": 1, "loss": 1.5, "val_loss": 1.7})  # new column: atomic rewrite

    expected = 0o666 & ~mask
    assert mode(plain) == expected
    for name in ("a.txt", "summary.json", "config.yaml", "metrics.csv"):
        assert mode(tmp_path / name) == expected, name
    assert (tmp_path / "a.txt").read_text() == "hello"
    assert not list(tmp_path.glob(".*.tmp"))


@pytest.mark.parametrize("mask", [0o022, 0o077, 0o002])
def test_umask_is_read_without_changing_it(umask, mask: int):
    umask(mask)
    assert current_umask() == mask
    assert current_umask() == mask  # reading it did not reset it


def test_umask_fallback_without_proc(monkeypatch, umask):
    """Where /proc/self/status is missing, the umask is set and restored instead."""
    umask(0o027)
    real = Path.read_text

    def no_proc(self: Path, *a, **k):
        if str(self) == "/proc/self/status":
            raise OSError("no procfs")
        return real(self, *a, **k)

    monkeypatch.setattr(trx.io.Path, "read_text", no_proc)
    assert current_umask() == 0o027
    assert current_umask() == 0o027


def test_failed_write_leaves_the_old_file_and_no_temp(tmp_path: Path):
    path = tmp_path / "summary.json"
    path.write_text("old")

    with pytest.raises(TypeError):
        atomic_write(path, 5)  # type: ignore[arg-type]  # fails inside the write
    assert path.read_text() == "old"
    assert not list(tmp_path.glob(".*.tmp"))
