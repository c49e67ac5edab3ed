"""TensorBoard live curves: metrics rows round-trip through the event files; a missing package is one line."""

from __future__ import annotations

import csv
import math
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest

from conftest import SAFETY_S, tiny_config, wait_until
from typer.testing import CliRunner

from trx.cli import app
from trx.errors import UserError
from trx.io import MetricsWriter, read_metrics
from trx.tensorboard import FOLDER, INSTALL, TensorBoardSink, scalars

pytest.importorskip("tensorboard")
from tensorboard.backend.event_processing.event_accumulator import EventAccumulator  # noqa: E402
from tensorboard.backend.event_processing.event_multiplexer import EventMultiplexer  # noqa: E402


def rows(n: int = 12, eval_every: int = 4, scale: float = 1.0) -> list[dict]:
    """Rows shaped like the runner's: evaluation columns only on some steps, ints, a NaN."""
    out = []
    for step in range(n):
        row = {"step": step, "loss": scale * 2.0 / (step + 1), "lr": 0.01 * (1 - step / n), "loss_spikes": step // 5}
        row["update_rms_ratio"] = None if step == 0 else 1.0 + 0.01 * step
        if step % eval_every == 0:
            row["val_loss"] = scale * 2.5 / (step + 1)
        out.append(row)
    out[-1]["grad_norm"] = math.nan
    return out


def next_second() -> None:
    """Event files are read in name order, and names begin with the creation second (then host,
    pid and a per-process counter, compared as text): a second writer in the same folder must
    start in a later second, as a resumed run in a new process does."""
    time.sleep(1.0 - time.time() % 1.0 + 0.01)


def read_back(logdir: Path) -> dict[str, dict[int, float]]:
    acc = EventAccumulator(str(logdir), size_guidance={"scalars": 0})
    acc.Reload()
    out = {tag: {e.step: e.value for e in acc.Scalars(tag)} for tag in acc.Tags()["scalars"]}
    for tag in out:  # one value per step: a resumed run's old events are hidden, not doubled
        assert len(out[tag]) == len(acc.Scalars(tag)), tag
    return out


def expected(rows_: list[dict]) -> dict[str, dict[int, float]]:
    want: dict[str, dict[int, float]] = {}
    for row in rows_:
        for tag, value in scalars(row).items():
            want.setdefault(tag, {})[int(row["step"])] = value
    return want


def assert_same(got: dict[str, dict[int, float]], want: dict[str, dict[int, float]]) -> None:
    assert got.keys() == want.keys()
    for tag in want:
        assert got[tag].keys() == want[tag].keys(), tag
        for step, value in want[tag].items():
            if math.isnan(value):
                assert math.isnan(got[tag][step]), (tag, step)
            else:  # event files store float32
                assert got[tag][step] == pytest.approx(value, rel=1e-6), (tag, step)


def test_rows_round_trip_through_the_event_files(tmp_path: Path):
    written = rows()
    with TensorBoardSink(tmp_path / "tb", "muon · lr=0.01,seed=0") as sink:
        for row in written:
            sink.append(row)
    got = read_back(tmp_path / "tb")
    assert set(got) == {"loss", "lr", "loss_spikes", "update_rms_ratio", "val_loss", "grad_norm"}
    assert sorted(got["val_loss"]) == [0, 4, 8]  # blank cells are not zeros
    assert_same(got, expected(written))


def test_event_files_match_metrics_csv(tmp_path: Path):
    """What metrics.csv holds and what TensorBoard shows are the same numbers."""
    metrics = MetricsWriter(tmp_path / "metrics.csv")
    with TensorBoardSink.in_folder(tmp_path, "adam") as sink:
        for row in rows():
            metrics.append(row)
            sink.append(row)
    assert_same(read_back(tmp_path / FOLDER), expected(read_metrics(tmp_path / "metrics.csv")))


@pytest.mark.parametrize("command", ["run", "sweep"])
def test_a_run_with_tensorboard_matches_its_metrics_csv(tmp_path: Path, write_config, command: str):
    """`--tensorboard`: every arm or cell folder gets tb/ holding exactly its metrics.csv."""
    cfg = write_config(tiny_config(threads=1))
    args = [command, str(cfg), "--out", str(tmp_path / "runs"), "--tensorboard"]
    if command == "sweep":
        args += ["--grid", "optimizers.sgd.lr=0.1,0.2"]
    res = CliRunner().invoke(app, args)
    assert res.exit_code == 0, res.output
    folders = [p.parent for p in (tmp_path / "runs").rglob("metrics.csv")]
    assert len(folders) == (3 if command == "sweep" else 2)
    for folder in folders:
        assert_same(read_back(folder / FOLDER), expected(read_metrics(folder / "metrics.csv")))


@pytest.mark.slow
def test_kill_9_then_resume_shows_exactly_the_final_metrics(tmp_path: Path, write_config):
    """Events written after the last checkpoint of a killed run are hidden on resume."""
    cfg = write_config(tiny_config(steps=1500, log_every=10, eval_every=500, checkpoint_every=100, threads=1,
                                   optimizers={"adam": {"lr": 0.01, "filter": "ema", "normalizer": "adam"}}))
    out, folder = tmp_path / "runs", tmp_path / "runs" / "tiny" / "adam"
    argv = [sys.executable, "-m", "trx", "run", str(cfg), "--out", str(out), "--tensorboard"]
    proc = subprocess.Popen(argv, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    try:
        wait_until(lambda: (folder / "checkpoint.pt").exists() and last_step(folder / "metrics.csv") % 100 >= 50, proc,
                   "a step between two checkpoints")
    finally:
        proc.send_signal(signal.SIGKILL)
        proc.wait(timeout=SAFETY_S)
    res = subprocess.run([*argv, "--resume"], capture_output=True, text=True, timeout=SAFETY_S)
    assert res.returncode == 0, res.stderr
    assert_same(read_back(folder / FOLDER), expected(read_metrics(folder / "metrics.csv")))


def last_step(path: Path) -> int:
    try:
        with path.open(newline="") as f:
            steps = [r["step"] for r in csv.DictReader(f) if r.get("step")]
    except OSError:
        return 0
    return int(steps[-1]) if steps else 0


def test_arms_and_cells_show_side_by_side(tmp_path: Path):
    """One run per folder under the experiment root, the same tags in each: one chart per column."""
    folders = {"muon": tmp_path / "muon", "sweep/adam/lr=0.01,seed=1": tmp_path / "sweep" / "adam" / "lr=0.01,seed=1"}
    for i, folder in enumerate(folders.values()):
        with TensorBoardSink.in_folder(folder, folder.name) as sink:
            for row in rows(scale=1.0 + i):
                sink.append(row)
    mux = EventMultiplexer().AddRunsFromDirectory(str(tmp_path))
    mux.Reload()
    runs = mux.Runs()
    assert set(runs) == {f"{name}/{FOLDER}" for name in folders}
    for run in runs:
        assert "loss" in runs[run]["scalars"] and "val_loss" in runs[run]["scalars"]
    first = {run: mux.Scalars(run, "loss")[0].value for run in runs}
    assert first == {"muon/tb": pytest.approx(2.0), "sweep/adam/lr=0.01,seed=1/tb": pytest.approx(4.0)}


@pytest.mark.parametrize("start_step", [None, 6])
def test_resume_hides_the_steps_written_after_the_checkpoint(tmp_path: Path, start_step):
    """Interrupted at step 9 of a run checkpointed at step 6: the resumed run's values win,
    whether the sink is told the step or takes it from the first row."""
    first, resumed = rows(10), rows(10, scale=3.0)
    with TensorBoardSink(tmp_path, "a") as sink:
        for row in first:
            sink.append(row)
    next_second()
    with TensorBoardSink(tmp_path, "a", start_step=start_step) as sink:
        for row in resumed[6:]:
            sink.append(row)
    assert_same(read_back(tmp_path), expected(first[:6] + resumed[6:]))


def test_a_restart_from_scratch_hides_the_old_run(tmp_path: Path):
    """No checkpoint: the arm starts again at step 0 and only the new curves are shown."""
    with TensorBoardSink(tmp_path, "a") as sink:
        for row in rows(10):
            sink.append(row)
    again = rows(7, scale=3.0)
    next_second()
    with TensorBoardSink(tmp_path, "a") as sink:
        for row in again:
            sink.append(row)
    assert_same(read_back(tmp_path), expected(again))


def test_scalars_keep_numbers_only():
    row = {"step": 3, "loss": 1.5, "spikes": 2, "status": "ok", "blank": None, "flag": True, "inf": math.inf}
    assert scalars(row) == {"loss": 1.5, "spikes": 2.0, "inf": math.inf}


def test_missing_package_is_a_one_line_user_error(tmp_path: Path, monkeypatch):
    monkeypatch.setitem(sys.modules, "torch.utils.tensorboard", None)  # `import` now raises ImportError
    with pytest.raises(UserError) as err:
        TensorBoardSink(tmp_path / "tb", "muon")
    message = str(err.value)
    assert "\n" not in message and INSTALL in message and "tensorboard" in message
    assert not (tmp_path / "tb").exists()  # nothing written


def test_nothing_is_written_before_the_first_row(tmp_path: Path):
    sink = TensorBoardSink(tmp_path / "tb", "muon")
    sink.flush()
    sink.close()
    assert not (tmp_path / "tb").exists()


def test_importing_the_module_imports_neither_tensorboard_nor_torch():
    """The CLI can import it at start-up for free: the packages load when a sink is made."""
    code = "import sys, trx.tensorboard; print(any(m.split('.')[0] in ('tensorboard', 'torch') for m in sys.modules))"
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True)
    assert out.stdout.strip() == "False"
