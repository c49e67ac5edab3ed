"""Issue 19: inputs an attacker or a careless user might give. Each is refused with one line and
exit 2 (nothing written), or handled without writing outside the folders trx owns."""

from __future__ import annotations

import json
from dataclasses import dataclass
from pathlib import Path

import pytest
import yaml
from conftest import tiny_config
from typer.testing import CliRunner

from trx.cli import app


@dataclass
class Result:
    returncode: int
    stdout: str
    stderr: str

    @property
    def error_lines(self) -> list[str]:
        return [line for line in self.stderr.splitlines() if not line.startswith("hint:")]


def cli(*args: str) -> Result:
    """A trx command in-process; an exception other than SystemExit is a traceback a user would see."""
    res = CliRunner().invoke(app, [str(a) for a in args])
    if res.exception is not None and not isinstance(res.exception, SystemExit):
        raise res.exception
    return Result(res.exit_code, res.stdout, res.stderr)


def assert_refused(res: Result, *words: str) -> None:
    """Exit 2, one error line naming `words`."""
    assert res.returncode == 2, (res.stdout, res.stderr)
    assert len(res.error_lines) == 1, res.stderr
    for word in words:
        assert word in res.error_lines[0], res.stderr


def config_text(tmp_path: Path, text: str, name: str = "exp.yaml") -> Path:
    path = tmp_path / name
    path.write_text(text)
    return path


def tiny_yaml(**over) -> str:
    return yaml.safe_dump(tiny_config(**over), sort_keys=False)


# ---- the config grammar (items 10, 11, 12, 13) ----------------------------------------------
def alias_bomb(levels: int = 9, width: int = 9) -> str:
    """About 1 KB of YAML that expands to width**levels strings: anchors defined inside `where`."""
    entries = ["b0: &a0 [" + ", ".join(["x"] * width) + "]"]
    entries += [f"b{i}: &a{i} [" + ", ".join([f"*a{i - 1}"] * width) + "]" for i in range(1, levels)]
    return "{" + ", ".join(entries) + "}"


def test_an_alias_bomb_is_refused(tmp_path):
    data = tiny_config()
    data["claims"] = [{"text": "t", "kind": "difference", "a": {"arm": "sgd", "where": "WHERE"}, "b": {"arm": "adam"},
                       "expect": "a_better"}]
    text = yaml.safe_dump(data, sort_keys=False).replace("WHERE", alias_bomb())
    assert len(text) < 2000
    out = tmp_path / "runs"
    assert_refused(cli("run", config_text(tmp_path, text), "--out", out), "alias")
    assert not out.exists()


def test_a_few_aliases_still_load(tmp_path):
    from trx.config import load_config

    text = tiny_yaml().replace("lr: 0.1", "lr: &lr 0.1").replace("lr: 0.01", "lr: *lr")
    assert load_config(config_text(tmp_path, text)).optimizers["adam"].lr == 0.1


@pytest.mark.parametrize("text", ["x: " + "[" * 50_000 + "]" * 50_000 + "\n",
                                  "".join(f"{'  ' * i}k{i}:\n" for i in range(3000)) + "  " * 3000 + "v: 1\n"],
                         ids=["list-50000", "mapping-3000"])
def test_deep_nesting_is_one_line(tmp_path, text):
    out = tmp_path / "runs"
    assert_refused(cli("run", config_text(tmp_path, text), "--out", out), "deep")
    assert not out.exists()


def test_deep_nesting_in_set_is_one_line(tmp_path):
    cfg = config_text(tmp_path, tiny_yaml())
    assert_refused(cli("run", cfg, "--out", tmp_path / "runs", "--set", "steps=" + "[" * 5000 + "]" * 5000), "deep")


def test_duplicate_keys_are_refused(tmp_path):
    text = tiny_yaml().replace("steps: 20\n", "steps: 20\nsteps: 30\n")
    assert_refused(cli("run", config_text(tmp_path, text), "--out", tmp_path / "runs"), "steps", "duplicate")


@pytest.mark.parametrize(("text", "words"), [
    ("seed: 99999999999999999999", ["seed"]),
    ("optimizers: {sgd: {lr: true}}", ["optimizers.sgd.lr", "a number", "True"]),
    ("steps: '40'", ["steps", "an integer"]),
    ("steps: 40.5", ["steps", "an integer", "40.5"]),
    ("optimizers: {sgd: {lr: .inf}}", ["optimizers.sgd.lr", "finite"]),
    ("optimizers: {sgd: {lr: .nan}}", ["optimizers.sgd.lr", "finite"]),
])
def test_bad_values_are_refused(tmp_path, text, words):
    data = tiny_config()
    data.update(yaml.safe_load(text))
    out = tmp_path / "runs"
    res = cli("run", config_text(tmp_path, yaml.safe_dump(data)), "--out", out)
    assert_refused(res, *words)
    assert not out.exists()


def test_an_infinite_grid_value_is_refused(tmp_path):
    cfg = config_text(tmp_path, tiny_yaml())
    out = tmp_path / "runs"
    assert_refused(cli("sweep", cfg, "--out", out, "--grid", "optimizers.sgd.lr=0.1,.inf"), "optimizers.sgd.lr", "finite")
    assert not out.exists()


def test_a_huge_grid_is_refused_quickly_without_a_format_string(tmp_path):
    cfg = config_text(tmp_path, tiny_yaml())
    res = cli("sweep", cfg, "--out", tmp_path / "runs", "--grid", "optimizers.sgd.lr=log:1e-4:1e-1:20000")
    assert_refused(res, "cells")
    assert "%" not in res.stderr


def test_a_grid_of_a_billion_points_is_refused_before_it_is_spaced(tmp_path):
    data = tiny_config(sweep={"grid": {"optimizers.sgd.lr": {"log": [1e-4, 1e-1], "num": 10**9}}})
    res = cli("sweep", config_text(tmp_path, yaml.safe_dump(data)), "--out", tmp_path / "runs")
    assert_refused(res, "sweep.grid.optimizers.sgd.lr", "num")


def test_equal_grid_values_name_the_value(tmp_path):
    cfg = config_text(tmp_path, tiny_yaml())
    res = cli("sweep", cfg, "--out", tmp_path / "runs", "--grid", "optimizers.sgd.lr=0.1,0.1")
    assert_refused(res, "lr=0.1")
    assert "%" not in res.stderr


# ---- paths stay inside --out (items 1, 3) ---------------------------------------------------
def tiny_cifar(**over) -> dict:
    data = tiny_config(steps=2, eval_every=0, log_every=1, optimizers={"sgd": {"lr": 0.1}})
    data["task"] = {"name": "cifar_resnet", "dataset": "synthetic", "train_size": 8, "val_size": 8, "batch_size": 4,
                    "eval_batch_size": 8, "width": 4, "augment": False}
    data.update(over)
    return data


def test_a_grid_value_cannot_lead_a_cell_folder_out_of_the_sweep(tmp_path):
    """The issue's exact value; --out sits six folders deep so that today's code would land in tmp_path/a."""
    data = tiny_cifar(sweep={"grid": {"task.data_dir": ["../../../../../../../../../../ESCAPED"]}})
    out = tmp_path / "a" / "b" / "c" / "d" / "e" / "f" / "out"
    res = cli("sweep", config_text(tmp_path, yaml.safe_dump(data)), "--out", out)
    assert res.returncode == 0, res.stderr
    written = {p for p in tmp_path.rglob("*") if p.is_file()} - {tmp_path / "exp.yaml"}
    root = (out / "tiny" / "sweep").resolve()
    assert written and all(p.resolve().is_relative_to(root) for p in written), sorted(map(str, written))
    (cell,) = [p.parent for p in written if p.name == "summary.json"]
    assert json.loads((cell / "cell.json").read_text())["overrides"] == {"task.data_dir": "../../../../../../../../../../ESCAPED"}


def test_a_link_planted_in_a_sweep_cannot_lead_a_cell_out_of_it(tmp_path):
    from trx.errors import UserError
    from trx.sweep_plan import plan_jobs, plan_sweep

    data = tiny_config(optimizers={"sgd": {"lr": 0.1}}, sweep={"grid": {"optimizers.sgd.lr": [0.1]}})
    plan = plan_sweep(config_text(tmp_path, yaml.safe_dump(data)), [], [], None, tmp_path / "runs")
    (tmp_path / "elsewhere").mkdir()
    plan.root.mkdir(parents=True)
    (plan.root / "sgd").symlink_to(tmp_path / "elsewhere")
    with pytest.raises(UserError, match="resolves outside"):
        plan_jobs(plan)


def test_a_link_loop_in_a_sweep_is_one_line_not_a_traceback(tmp_path):
    """A link that points at itself under the sweep folder: exit 2 naming the cell, nothing written."""
    data = tiny_config(optimizers={"sgd": {"lr": 0.1}}, sweep={"grid": {"optimizers.sgd.lr": [0.1]}})
    out = tmp_path / "runs"
    root = out / "tiny" / "sweep"
    root.mkdir(parents=True)
    (root / "sgd").symlink_to(root / "sgd")
    before = sorted(out.rglob("*"))
    assert_refused(cli("sweep", config_text(tmp_path, yaml.safe_dump(data)), "--out", out), "sgd/", "cannot be resolved")
    assert sorted(out.rglob("*")) == before


def test_cell_ids_encode_separators_and_stay_one_folder():
    from trx.errors import UserError
    from trx.sweep_plan import safe_id

    for text in ["a/b", "../x", "a\\b", "x\x00y", "100%"]:
        name = safe_id(text)
        assert "/" not in name and "\\" not in name and "\x00" not in name
    for text in ["..", "x" * 300]:
        with pytest.raises(UserError, match="cannot be a folder name"):
            safe_id(text)
    assert safe_id("lr=0.01,seed=1") == "lr=0.01,seed=1"  # plain ids do not change
    assert safe_id("a/b") != safe_id("a%2Fb")


@pytest.mark.parametrize("arm", ["sweep", "comparison.csv", "experiment.yaml", "report.md", "sweep.csv"])
def test_reserved_arm_names_are_refused(tmp_path, arm):
    out = tmp_path / "runs"
    data = tiny_config(optimizers={arm: {"lr": 0.1}})
    assert_refused(cli("run", config_text(tmp_path, yaml.safe_dump(data)), "--out", out), arm, "reserved")
    assert not out.exists()


def two_cell_sweep(tmp_path: Path) -> tuple[Path, Path]:
    """A finished sweep of two cells (lr 0.1 and 0.2 of one arm); returns its config and --out."""
    data = tiny_config(steps=2, eval_every=0, log_every=1, optimizers={"sgd": {"lr": 0.1}},
                       sweep={"grid": {"optimizers.sgd.lr": [0.1, 0.2]}})
    cfg = config_text(tmp_path, yaml.safe_dump(data))
    out = tmp_path / "runs"
    assert cli("sweep", cfg, "--out", out).returncode == 0
    return cfg, out


def test_overwrite_never_removes_a_sweep(tmp_path):
    """The issue's sequence with an arm of another name: a sweep, then a run with --overwrite."""
    cfg, out = two_cell_sweep(tmp_path)
    sweep = out / "tiny" / "sweep"
    before = sorted(p.relative_to(sweep) for p in sweep.rglob("summary.json"))
    assert len(before) == 2
    assert cli("run", cfg, "--out", out).returncode == 0
    assert cli("run", cfg, "--out", out, "--overwrite").returncode == 0
    assert sorted(p.relative_to(sweep) for p in sweep.rglob("summary.json")) == before
    assert (sweep / "sweep.csv").exists()


def test_clear_refuses_a_folder_that_holds_a_sweep(tmp_path):
    from trx.errors import UserError
    from trx.jobs import ArmJob, CellMeta, clear

    folder = tmp_path / "tiny" / "x"
    (folder / "sgd").mkdir(parents=True)
    (folder / "sweep.csv").write_text("arm\n")
    with pytest.raises(UserError, match="sweep"):
        clear([ArmJob({}, str(folder), CellMeta("tiny", "x", 0))])
    assert (folder / "sweep.csv").exists()


# ---- nothing is written through a planted link (items 2, 11) --------------------------------
def one_arm(tmp_path: Path, **over) -> Path:
    data = tiny_config(optimizers={"sgd": {"lr": 0.1}}, checkpoint_every=10, keep_checkpoint=True)
    data.update(over)
    return config_text(tmp_path, yaml.safe_dump(data))


def test_report_does_not_write_a_figure_through_a_planted_link(tmp_path):
    out = tmp_path / "runs"
    assert cli("run", one_arm(tmp_path), "--out", out).returncode == 0
    target = tmp_path / "precious.txt"
    target.write_text("keep me")
    (out / "tiny" / "report_curves.png").symlink_to(target)
    res = cli("report", out / "tiny")
    assert res.returncode == 0, res.stderr
    assert target.read_text() == "keep me"
    link = out / "tiny" / "report_curves.png"
    assert not link.is_symlink() and link.read_bytes().startswith(b"\x89PNG")


@pytest.mark.parametrize("name", ["metrics.csv", ".lock", "checkpoint.pt", ".lock.holder"])
def test_a_planted_link_in_a_run_folder_is_refused_on_resume(tmp_path, name):
    out = tmp_path / "runs"
    assert cli("run", one_arm(tmp_path), "--out", out).returncode == 0
    folder = out / "tiny" / "sgd"
    target = tmp_path / "precious.txt"
    target.write_text("keep me")
    (folder / name).unlink(missing_ok=True)
    (folder / name).symlink_to(target)
    interrupt(folder)
    assert_refused(cli("run", one_arm(tmp_path), "--out", out, "--resume"), name, "is a symbolic link")
    assert target.read_text() == "keep me"


def test_overwrite_refuses_a_run_folder_that_is_a_link(tmp_path):
    """--overwrite on a run folder planted as a link: exit 2 naming it; the folder it points to
    keeps its files and nothing is written there (it used to be a silent no-op delete, then a run
    written through the link)."""
    out = tmp_path / "runs"
    elsewhere = tmp_path / "elsewhere"
    elsewhere.mkdir()
    (elsewhere / "precious.txt").write_text("keep me")
    (out / "tiny").mkdir(parents=True)
    (out / "tiny" / "sgd").symlink_to(elsewhere, target_is_directory=True)
    assert_refused(cli("run", one_arm(tmp_path), "--out", out, "--overwrite"), "sgd", "symbolic link")
    assert sorted(p.name for p in elsewhere.iterdir()) == ["precious.txt"]
    assert (elsewhere / "precious.txt").read_text() == "keep me"


def test_metrics_are_never_appended_through_a_link(tmp_path):
    from trx.io import MetricsWriter

    target = tmp_path / "precious.csv"
    target.write_text("step,loss\n0,1.0\n")
    (tmp_path / "metrics.csv").symlink_to(target)
    with pytest.raises(OSError):
        MetricsWriter(tmp_path / "metrics.csv").append({"step": 1, "loss": 0.5})
    assert target.read_text() == "step,loss\n0,1.0\n"


# ---- checkpoints and metrics a resume continues from (items 4, 5, 6) ------------------------
def interrupt(folder: Path) -> None:
    """Make a finished run look interrupted after its checkpoint at update 10 (of 20)."""
    summary = json.loads((folder / "summary.json").read_text())
    (folder / "summary.json").write_text(json.dumps({**summary, "status": "interrupted"}))


def finished_run(tmp_path: Path) -> tuple[Path, Path]:
    out = tmp_path / "runs"
    assert cli("run", one_arm(tmp_path), "--out", out).returncode == 0
    folder = out / "tiny" / "sgd"
    interrupt(folder)
    return out, folder


def tamper(folder: Path, change) -> None:
    import torch

    ckpt = torch.load(folder / "checkpoint.pt", weights_only=True)
    torch.save(change(ckpt), folder / "checkpoint.pt")


def first_weight(ckpt: dict) -> str:
    return next(iter(ckpt["model"]))


@pytest.mark.parametrize(("change", "words"), [
    (lambda c: {**c, "step": 10**6}, ["step 1000000"]),
    (lambda c: {"step": 10**6, "elapsed": 0.0}, ["not a trx checkpoint"]),
    (lambda c: {**c, "model": {**c["model"], first_weight(c): c["model"][first_weight(c)].double()}}, ["weight", "float64"]),
    (lambda c: {**c, "model": {**c["model"], first_weight(c): c["model"][first_weight(c)] * float("nan")}}, ["not finite"]),
    (lambda c: {**c, "config": {**c["config"], "steps": 30}}, ["another config", "steps"]),
], ids=["step", "plain-values", "float64", "nan", "config"])
def test_a_tampered_checkpoint_is_refused(tmp_path, change, words):
    out, folder = finished_run(tmp_path)
    tamper(folder, change)
    before = (folder / "metrics.csv").read_text()
    assert_refused(cli("run", one_arm(tmp_path), "--out", out, "--resume"), "checkpoint.pt", *words)
    assert (folder / "metrics.csv").read_text() == before


def test_a_deleted_config_yaml_does_not_hide_a_config_change(tmp_path):
    out, folder = finished_run(tmp_path)
    (folder / "config.yaml").unlink()
    res = cli("run", one_arm(tmp_path), "--out", out, "--resume", "--set", "optimizers.sgd.lr=0.5")
    assert_refused(res, "optimizers.sgd.lr")
    assert not (folder / "config.yaml").exists()


def metric_lines(folder: Path) -> list[str]:
    return (folder / "metrics.csv").read_text().splitlines()


def test_a_cut_last_row_and_a_duplicated_row_are_repaired_on_resume(tmp_path):
    out, folder = finished_run(tmp_path)
    whole = metric_lines(folder)
    text = "\n".join(whole[:3] + [whole[2]] + whole[3:]) + "\n"  # a duplicated row before the checkpoint
    (folder / "metrics.csv").write_text(text[: len(text) - 9])  # and the last row cut mid-value
    res = cli("run", one_arm(tmp_path), "--out", out, "--resume")
    assert res.returncode == 0, res.stderr
    assert without_wall_time(metric_lines(folder)) == without_wall_time(whole)


def without_wall_time(lines: list[str]) -> list[list[str]]:
    at = lines[0].split(",").index("wall_time")
    return [line.split(",")[:at] + line.split(",")[at + 1:] for line in lines]


def test_rows_cut_before_the_checkpoint_are_refused(tmp_path):
    out, folder = finished_run(tmp_path)
    text = (folder / "metrics.csv").read_text()
    (folder / "metrics.csv").write_text(text[: text.index("\n", text.index("\n") + 1) + 5])  # mid-way through row 2
    assert_refused(cli("run", one_arm(tmp_path), "--out", out, "--resume"), "metrics.csv", "rows were lost")


def test_a_damaged_row_is_refused(tmp_path):
    out, folder = finished_run(tmp_path)
    lines = metric_lines(folder)
    lines[2] = lines[2].rsplit(",", 2)[0]
    (folder / "metrics.csv").write_text("\n".join(lines) + "\n")
    assert_refused(cli("run", one_arm(tmp_path), "--out", out, "--resume"), "metrics.csv", "line 3")


# ---- sweep.csv after two concurrent sweeps (item 7) -----------------------------------------
def test_sweep_csv_lists_cells_another_sweep_finished(tmp_path):
    """This sweep found both cells locked (another sweep ran them); their summaries say complete."""
    import pandas as pd

    from trx.jobs import JobResult
    from trx.sweep_plan import plan_sweep, save_sweep_csv

    cfg, out = two_cell_sweep(tmp_path)
    whole = pd.read_csv(out / "tiny" / "sweep" / "sweep.csv")
    plan = plan_sweep(cfg, [], [], None, out)
    save_sweep_csv(plan, [JobResult(str(plan.cell_dir(c)), "locked", {}, "locked by host:1") for c in plan.cells])
    table = pd.read_csv(out / "tiny" / "sweep" / "sweep.csv")
    assert list(table["status"]) == ["complete", "complete"]
    assert list(table["final_loss"]) == list(whole["final_loss"])


# ---- sizes the machine cannot hold (item 12) ------------------------------------------------
def test_a_batch_beyond_the_machines_memory_is_refused_before_starting(tmp_path):
    data = tiny_config(optimizers={"sgd": {"lr": 0.1}})
    data["task"] = {"name": "small_gpt", "n_layer": 1, "n_head": 2, "n_embd": 32, "block_size": 64, "batch_size": 1_000_000}
    out = tmp_path / "runs"
    assert_refused(cli("run", config_text(tmp_path, yaml.safe_dump(data)), "--out", out), "task.batch_size", "GiB")
    assert not out.exists()


def test_the_memory_estimate_lets_ordinary_batches_through():
    import torch

    from trx.config import resolve
    from trx.jobs import check_fits, free_memory
    from trx.experiment import prepare

    cfg = resolve(tiny_config(task={"name": "small_gpt", "n_layer": 1, "n_head": 2, "n_embd": 32, "block_size": 64,
                                    "batch_size": 8}))
    exp = prepare(cfg, Path("unused"), "cpu")
    check_fits(exp.task, exp.task.build_model(), torch.device("cpu"))  # passes
    assert free_memory(torch.device("cpu")) > 0
