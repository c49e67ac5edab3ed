"""The runner: output files, the step convention, divergence, failures, determinism, resume."""

from __future__ import annotations

import csv
import json

import pytest
import torch
from conftest import tiny_config

from trx.config import UserError, resolve
from trx.executors import InProcess
from trx.service import run_experiment
from trx.optim import newton_schulz as ns
from trx.experiment import prepare
from trx.runner import Interrupted, run_arm
from trx.stop import StopFlag
from trx.tasks.logreg import Logreg


def _rows(path):
    with path.open() as f:
        return list(csv.DictReader(f))


def run(tmp_path, data, mode="new", progress=None, stop=None):
    """Every arm through the experiment service, in this process, as `trx run` does."""
    outcome = run_experiment(resolve(data), tmp_path, mode=mode, executor=InProcess(progress), stop=stop)
    if outcome.interrupted:
        raise Interrupted
    return outcome.summaries


def stopping_at(step: int) -> tuple[StopFlag, object]:
    """A stop flag and a progress sink that raises it when the run reports `step` (an interrupt at
    a known update, as Ctrl-C would give one)."""
    stop = StopFlag()

    class StopAt:
        def start(self, *a): ...
        def advance(self, arm, at, loss):
            if at == step:
                stop.requested = True
        def finish(self, *a): ...

    return stop, StopAt()


def test_outputs_follow_the_step_convention(tmp_path):
    data = tiny_config()
    summaries = run(tmp_path, data)
    root = tmp_path / "tiny"
    for s in summaries:
        d = root / s["arm"]
        assert {p.name for p in d.iterdir()} == {"config.yaml", "metrics.csv", "summary.json", "cell.json", ".lock"}
        assert json.loads((d / "cell.json").read_text())["arm"] == s["arm"]
        assert s["loss_unit"] == "nats"  # logreg declares its cross-entropy's unit
        rows = _rows(d / "metrics.csv")
        assert [int(r["step"]) for r in rows] == [0, 5, 10, 15, 19, 20]
        for col in ("loss", "lr", "grad_norm", "update_norm", "param_norm", "update_rms", "wall_time", "val_loss", "val_acc"):
            assert col in rows[0], col
        assert rows[-1]["lr"] == "" and rows[-1]["update_norm"] == ""  # t = τ: no update follows
        assert rows[2]["val_loss"] and not rows[1]["val_loss"]  # eval every 10
        summary = json.loads((d / "summary.json").read_text())
        for key in ("name", "arm", "task", "steps_done", "final_loss", "best_loss", "final_val_loss", "diverged",
                    "diverged_at", "wall_time_s", "status", "synthetic", "trx_version", "torch_version", "device",
                    "threads", "seed", "git_sha"):
            assert key in summary, key
        assert summary["status"] == "complete" and summary["steps_done"] == 20
        assert summary["final_loss"] == pytest.approx(float(rows[-1]["loss"]))
    # same seed ⇒ same initial weights and batches: identical loss at step 0 in every arm
    first = {_rows(root / a / "metrics.csv")[0]["loss"] for a in ("sgd", "adam")}
    assert len(first) == 1


def test_logged_loss_is_the_loss_before_the_update(tmp_path):
    data = tiny_config(optimizers={"sgd": {"lr": 0.1}}, log_every=1)
    run(tmp_path, data)
    rows = _rows(tmp_path / "tiny" / "sgd" / "metrics.csv")
    exp = prepare(resolve(data), tmp_path / "x")
    torch.manual_seed(0)
    model = exp.task.build_model()
    with torch.no_grad():
        assert float(rows[0]["loss"]) == pytest.approx(float(exp.task.loss(model, exp.task.batch(0))), rel=1e-6)
    assert float(rows[0]["lr"]) == 0.1
    update = float(rows[0]["update_norm"])
    assert update == pytest.approx(0.1 * float(rows[0]["grad_norm"]), rel=1e-4)  # SGD: ‖Δ‖ = μ‖g‖


def test_lr_column_follows_the_schedule(tmp_path):
    data = tiny_config(steps=10, log_every=1, optimizers={"sgd": {"lr": 0.1, "schedule": {"name": "linear", "warmup": 2}}})
    run(tmp_path, data)
    rows = _rows(tmp_path / "tiny" / "sgd" / "metrics.csv")
    lrs = [float(r["lr"]) for r in rows[:10]]
    expected = [0.05, 0.1] + [0.1 * (1 - k / 7) for k in range(8)]
    assert lrs == pytest.approx(expected)
    assert rows[0]["lr_ratio"] == "" and float(rows[1]["lr_ratio"]) == pytest.approx(2.0)


def test_divergence_is_a_result_and_other_arms_run(tmp_path):
    data = tiny_config(optimizers={"wild": {"lr": 1e4}, "fine": {"lr": 0.1}}, divergence_threshold=10)
    out = {s["arm"]: s for s in run(tmp_path, data)}
    assert out["wild"]["status"] == "diverged" and out["wild"]["diverged"] is True
    assert 0 < out["wild"]["diverged_at"] < 20
    assert out["fine"]["status"] == "complete" and out["fine"]["diverged_at"] is None
    rows = _rows(tmp_path / "tiny" / "wild" / "metrics.csv")
    assert int(rows[-1]["step"]) == out["wild"]["diverged_at"]


def test_a_crashing_arm_is_recorded_and_the_others_still_run(tmp_path, monkeypatch):
    original = Logreg.loss
    current = {"arm": None}

    def flaky(self, model, batch):
        if current["arm"] == "sgd":
            raise RuntimeError("boom")
        return original(self, model, batch)

    class Track:
        def start(self, arm, total, done):
            current["arm"] = arm

        def advance(self, *a): ...
        def finish(self, *a): ...

    monkeypatch.setattr(Logreg, "loss", flaky)
    out = {s["arm"]: s for s in run(tmp_path, tiny_config(), progress=Track())}
    assert out["sgd"]["status"] == "failed" and "RuntimeError: boom" in out["sgd"]["error"]
    assert out["adam"]["status"] == "complete"


def test_same_config_same_metrics(tmp_path):
    data = tiny_config()
    run(tmp_path / "a", data)
    run(tmp_path / "b", data)
    for arm in ("sgd", "adam"):
        a, b = (_rows(tmp_path / x / "tiny" / arm / "metrics.csv") for x in ("a", "b"))
        for r in a + b:
            r.pop("wall_time")
        assert a == b


def test_existing_results_need_resume_or_overwrite(tmp_path):
    data = tiny_config()
    run(tmp_path, data)
    with pytest.raises(UserError, match="already holds results"):
        run(tmp_path, data)
    before = (tmp_path / "tiny" / "sgd" / "summary.json").stat().st_mtime_ns
    run(tmp_path, data, mode="resume")  # finished arms are skipped
    assert (tmp_path / "tiny" / "sgd" / "summary.json").stat().st_mtime_ns == before
    run(tmp_path, data, mode="overwrite")
    assert (tmp_path / "tiny" / "sgd" / "summary.json").stat().st_mtime_ns != before
    with pytest.raises(UserError, match=r"differs at optimizers\.sgd\.lr"):
        run(tmp_path, tiny_config(optimizers={"sgd": {"lr": 0.2}}), mode="resume")


@pytest.mark.parametrize("checkpoint_every", [0, 7])
def test_interrupted_run_resumes_to_identical_metrics(tmp_path, checkpoint_every):
    data = tiny_config(steps=30, log_every=1, checkpoint_every=checkpoint_every,
                       optimizers={"adam": {"lr": 0.01, "filter": "nesterov", "normalizer": "adam"}, "sgd": {"lr": 0.1}})
    run(tmp_path / "ref", data)

    stop, stop_at = stopping_at(12)
    with pytest.raises(Interrupted):
        run(tmp_path / "cut", data, progress=stop_at, stop=stop)
    arm_dir = tmp_path / "cut" / "tiny" / "adam"
    assert json.loads((arm_dir / "summary.json").read_text())["status"] == "interrupted"
    assert (arm_dir / "checkpoint.pt").exists()
    assert not (tmp_path / "cut" / "tiny" / "sgd").exists()  # later arms are not started
    run(tmp_path / "cut", data, mode="resume")
    for arm in ("adam", "sgd"):
        ref, cut = (_rows(tmp_path / x / "tiny" / arm / "metrics.csv") for x in ("ref", "cut"))
        for r in ref + cut:
            r.pop("wall_time")
        assert cut == ref, arm
        assert not (tmp_path / "cut" / "tiny" / arm / "checkpoint.pt").exists()


def test_keep_checkpoint(tmp_path):
    run(tmp_path, tiny_config(checkpoint_every=5, keep_checkpoint=True))
    assert (tmp_path / "tiny" / "sgd" / "checkpoint.pt").exists()


def test_missing_aux_is_caught_before_anything_is_written(tmp_path):
    data = tiny_config(optimizers={"muon": {"lr": 0.02, "normalizer": "muon"}})
    with pytest.raises(UserError, match=r"optimizers\.muon\.aux: .*cannot take these parameters.*bias \(vector\)"):
        run(tmp_path, data)
    assert not any(tmp_path.iterdir())


def test_muon_arm_records_its_newton_schulz_dtype(tmp_path):
    data = tiny_config(optimizers={"muon": {"lr": 0.02, "normalizer": {"name": "muon", "dtype": "float32"}, "aux": {}}})
    s = run(tmp_path, data)[0]
    assert s["status"] == "complete" and s["ns_dtype"] == "float32"


@pytest.mark.parametrize("flags, dtype", [({"avx2"}, "float32"), ({"avx2", "avx512f", "avx512_bf16"}, "bfloat16")])
def test_a_run_records_the_cpu_features_and_the_dtype_auto_chose_there(tmp_path, monkeypatch, flags, dtype):
    monkeypatch.setattr(ns, "cpu_flags", lambda: frozenset(flags | {"sse2", "fma"}))
    monkeypatch.delenv("TRX_NS_NO_BF16", raising=False)
    data = tiny_config(steps=4, optimizers={"muon": {"lr": 0.02, "normalizer": {"name": "muon", "dtype": "auto"}, "aux": {}}})
    s = run(tmp_path, data)[0]
    assert s["ns_dtype"] == dtype
    assert s["cpu_isa"] == " ".join(f for f in ("avx2", "avx512f", "avx512_bf16") if f in flags)
    assert s["torch_cpu_capability"] == torch.backends.cpu.get_cpu_capability()
    assert s["torch_cuda"] == torch.version.cuda and s["torch_version"] == torch.__version__


def test_early_warning_columns_rise_before_divergence(tmp_path):
    data = tiny_config(steps=200, log_every=1, eval_every=0, divergence_threshold=1e8,
                       task={"name": "quadratic1d", "curvature": 1.0}, optimizers={"hb": {"lr": 3.1, "filter": {"name": "heavy_ball", "beta": 0.5}}})
    s = run(tmp_path, data)[0]
    assert s["status"] == "diverged"
    rows = _rows(tmp_path / "tiny" / "hb" / "metrics.csv")[:-1]  # the rows before the diverging one
    assert int(rows[-1]["loss_spikes"]) > 0
    assert float(rows[-1]["update_rms_ratio"]) > 2.0
    calm = run(tmp_path / "calm", tiny_config(steps=60, log_every=1))[0]
    calm_rows = _rows(tmp_path / "calm" / "tiny" / calm["arm"] / "metrics.csv")
    assert int(calm_rows[-1]["loss_spikes"]) == 0


def test_arms_run_in_config_order(tmp_path):
    data = tiny_config(optimizers={"zeta": {"lr": 0.1}, "alpha": {"lr": 0.05}})
    assert [s["arm"] for s in run(tmp_path, data)] == ["zeta", "alpha"]


def test_full_disk_ends_the_arm_as_failed_with_metrics_intact(tmp_path, monkeypatch):
    import errno

    from trx.io import MetricsWriter

    original = MetricsWriter.append

    def append(self, row):
        if row["step"] >= 10:
            raise OSError(errno.ENOSPC, "No space left on device")
        original(self, row)

    monkeypatch.setattr(MetricsWriter, "append", append)
    out = {s["arm"]: s for s in run(tmp_path, tiny_config(log_every=1))}
    assert out["sgd"]["status"] == "failed" and "No space left" in out["sgd"]["error"]
    rows = _rows(tmp_path / "tiny" / "sgd" / "metrics.csv")
    assert [int(r["step"]) for r in rows] == list(range(10))  # what was written is intact
    assert out["adam"]["status"] == "failed"  # the next arm meets the same full disk, and says so


def test_a_stall_is_the_median_of_the_logged_losses_at_its_update(tmp_path):
    """stalled/stalled_at against the metrics of a run without the rule: the median of the losses
    of updates 7…10 (τ = 20, at 0.5, window 4), just under and just over `above`."""
    data = tiny_config(log_every=1, optimizers={"sgd": {"lr": 0.1}})
    s = run(tmp_path / "plain", data)[0]
    assert s["stalled"] is False and s["stalled_at"] is None  # no rule, no stall
    rows = _rows(tmp_path / "plain" / "tiny" / "sgd" / "metrics.csv")
    level = sorted(float(r["loss"]) for r in rows[7:11])[1:3]
    median = sum(level) / 2
    for above, stalled in ((median * (1 - 1e-4), True), (median * (1 + 1e-4), False)):
        cfg = {**data, "monitor": {"stall": {"at": 0.5, "above": above, "window": 4}}}
        s = run(tmp_path / str(stalled), cfg)[0]
        assert s["status"] == "complete"  # a stall is recorded; the run goes on
        assert (s["stalled"], s["stalled_at"]) == (stalled, 10 if stalled else None)


class Killed(BaseException):
    """What kill -9 leaves: no summary, the last checkpoint, metrics rows written after it."""


@pytest.mark.parametrize("kill_at", [12, 17, 25])
def test_monitor_state_survives_a_kill_and_resume_exactly(tmp_path, kill_at):
    """The rules' state (running minimum, the count towards divergence, spikes, the stall) is
    checkpointed: killed before the stall's update (checkpoint at 7), after it with the last
    checkpoint before it (at 14), or after a checkpoint that holds it (at 21), the resumed run
    writes the uninterrupted run's metrics and summary."""
    data = tiny_config(steps=30, log_every=1, checkpoint_every=7, optimizers={"sgd": {"lr": 0.5}},
                       monitor={"rule": {"name": "running_min", "spike": 1.05, "diverge": 50.0, "patience": 3},
                                "stall": {"at": 0.5, "above": 0.0, "window": 3}})
    ref = run(tmp_path / "ref", data)[0]
    assert ref["stalled_at"] == 15 and ref["loss_spikes"] > 0

    class KillAt:
        def start(self, *a): ...
        def advance(self, arm, step, loss):
            if step == kill_at:
                raise Killed

        def finish(self, *a): ...

    with pytest.raises(Killed):
        run(tmp_path / "cut", data, progress=KillAt())
    folder = tmp_path / "cut" / "tiny" / "sgd"
    assert not (folder / "summary.json").exists() and (folder / "checkpoint.pt").exists()
    cut = run(tmp_path / "cut", data, mode="resume")[0]
    ref_rows, cut_rows = (_rows(tmp_path / x / "tiny" / "sgd" / "metrics.csv") for x in ("ref", "cut"))
    for r in ref_rows + cut_rows:
        r.pop("wall_time")
    assert cut_rows == ref_rows
    keys = ("stalled", "stalled_at", "loss_spikes", "best_loss", "final_loss", "diverged_at")
    assert {k: cut[k] for k in keys} == {k: ref[k] for k in keys}


def test_running_min_rule_ends_a_run_the_default_rule_lets_go_on(tmp_path, monkeypatch):
    """The losses of updates 12 and 13 scaled by 10: two in a row over 3 × the running minimum end
    the run at 13 under running_min with patience 2; with patience 3 it completes, and the
    default rule (100 × the first loss) counts them as spikes only."""
    original = Logreg.loss
    calls = {"n": 0}

    def jump(self, model, batch):
        if self.options.batch_size == 2:  # the memory probe before the run (`check_fits`), not a training step
            return original(self, model, batch)
        loss, calls["n"] = original(self, model, batch), calls["n"] + 1
        return loss * 10 if calls["n"] - 1 in (12, 13) else loss

    monkeypatch.setattr(Logreg, "loss", jump)
    data = tiny_config(log_every=1, optimizers={"sgd": {"lr": 0.1}})
    for monitor, status, diverged_at in (
        ({"rule": {"name": "running_min", "diverge": 3.0, "patience": 2}}, "diverged", 13),
        ({"rule": {"name": "running_min", "diverge": 3.0, "patience": 3}}, "complete", None),
        (None, "complete", None),
    ):
        calls["n"] = 0
        s = run(tmp_path / str(monitor), {**data, "monitor": monitor})[0]
        assert (s["status"], s["diverged_at"]) == (status, diverged_at), monitor
        if status == "complete":
            assert s["loss_spikes"] >= 2, monitor


@pytest.mark.parametrize("monitor, message", [
    ({"rule": {"name": "running_min", "spke": 2}}, r"monitor\.rule\.spke: unknown key"),
    ({"rule": "median"}, r"monitor\.rule: unknown name 'median'"),
    ({"rule": {"name": "running_min", "patience": 0}}, r"monitor\.rule\.patience: must be ≥ 1"),
    ({"stall": {"at": 1.5, "above": 3}}, r"monitor\.stall\.at: must be ≤ 1"),
    ({"stall": {"at": 0.5}}, r"monitor\.stall\.above: give `above`"),
    ({"stall": {"at": 0.5, "improve": 1.5}}, r"monitor\.stall\.improve: must be < 1"),
    ({"stal": {}}, r"monitor\.stal: unknown key"),
])
def test_monitor_block_is_validated(monitor, message):
    with pytest.raises(UserError, match=message):
        resolve(tiny_config(monitor=monitor))


def test_a_checkpoint_refused_on_restore_leaves_the_recorded_config_as_it_was(tmp_path):
    """The loop checks a checkpoint again when it restores it; a refusal there must not leave the
    new config recorded over the old run's metrics (config.yaml is written only once accepted)."""
    data = tiny_config(steps=30, log_every=1, checkpoint_every=5, optimizers={"sgd": {"lr": 0.1}})
    stop, stop_at = stopping_at(12)
    with pytest.raises(Interrupted):
        run(tmp_path, data, progress=stop_at, stop=stop)
    arm_dir = tmp_path / "tiny" / "sgd"
    before = (arm_dir / "config.yaml").read_text()
    other = prepare(resolve(tiny_config(steps=30, log_every=1, checkpoint_every=5, optimizers={"sgd": {"lr": 0.2}})), tmp_path)
    with pytest.raises(UserError, match=r"differs at optimizers\.sgd\.lr"):
        run_arm(other, "sgd", arm_dir)  # past the folder checks: the loop's own restore refuses
    assert (arm_dir / "config.yaml").read_text() == before
