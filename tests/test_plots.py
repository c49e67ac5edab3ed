"""`trx plot`: every kind writes a non-empty PNG; bad input exits 2; and each figure defect a new
user met, shown on a run folder that has it (a diverged arm, one seed, an accuracy column, a
sweep without a warmup axis, an aux group, an lr sweep with many lines)."""

from __future__ import annotations

import re
from pathlib import Path

import matplotlib.pyplot as plt
import pytest
import yaml
from test_compare import RESULTS, make_sweep, write_run
from typer.testing import CliRunner

from trx.cli import app
from trx.config import UserError
from trx.plots import label, plot_curves, plot_lr, plot_schedule, plot_warmup
from trx.compare import find_runs

PNG = b"\x89PNG\r\n\x1a\n"
ROOT = Path(__file__).resolve().parents[1]


def plot_cli(*args: str):
    return CliRunner().invoke(app, ["plot", *args], env={"COLUMNS": "200"})


def warmup_sweep(root: Path) -> Path:
    """Cells of two arms with and without warmup, two seeds, falling losses, one diverged."""
    sweep = root / "ab" / "sweep"
    for arm in ("adamw", "muon"):
        for warmup in ("0", "0.05"):
            for seed in (0, 1):
                scale = 1.0 if warmup == "0" else 0.8
                losses = [2.0 * scale ** (i / 2) / (1 + i) for i in range(8)]
                diverged = arm == "muon" and warmup == "0" and seed == 1
                write_run(sweep / arm / f"lr=0.01,schedule.warmup={warmup},seed={seed}", arm, losses[-1], seed=seed,
                          lr=0.01, name="ab", losses=losses + ([500.0] if diverged else []),
                          short={"lr": 0.01, "schedule.warmup": float(warmup)},
                          status="diverged" if diverged else "complete")
    return sweep


@pytest.fixture(scope="module")
def heavy_ball(tmp_path_factory) -> Path:
    """configs/quadratic_heavy_ball.yaml through `trx run`, cut to 60 updates: the arm at μλ = 3.1
    diverges at update 39 (loss 6.9e5) while the others fall towards 0."""
    out = tmp_path_factory.mktemp("runs")
    res = CliRunner().invoke(app, ["run", str(ROOT / "configs" / "quadratic_heavy_ball.yaml"), "--out", str(out),
                                   "--set", "steps=60", "--set", "threads=1"])
    assert res.exit_code == 0, res.output
    return out / "quadratic_heavy_ball"


def drawn(fig):
    """Close the figure after the test has read it (figures are not closed by the plot_* functions)."""
    fig.canvas.draw()
    plt.close(fig)
    return fig


def tick_texts(ax) -> list[str]:
    return [t.get_text() for t in ax.get_yticklabels(which="both") + ax.get_xticklabels(which="both") if t.get_text()]


# ---- every kind, bad input --------------------------------------------------------------------
@pytest.mark.parametrize("kind", ["curves", "lr", "schedule", "warmup"])
def test_each_kind_writes_a_png(tmp_path, kind):
    sweep = warmup_sweep(tmp_path) if kind == "warmup" else make_sweep(tmp_path, RESULTS)
    out = tmp_path / "figs" / f"{kind}.png"
    res = plot_cli(str(sweep), "--kind", kind, "--out", str(out))
    assert res.exit_code == 0, res.output
    assert out.read_bytes()[:8] == PNG and out.stat().st_size > 10_000


def test_default_output_is_beside_the_first_folder_and_val_curves_are_drawn(tmp_path):
    write_run(tmp_path / "exp" / "sgd", "sgd", 0.3, name="exp", val={"val_loss": 0.35})
    (tmp_path / "exp" / "sgd" / "metrics.csv").write_text("step,loss,lr,val_loss\n0,2.0,0.1,2.1\n10,0.5,0.1,\n20,0.3,0.1,0.4\n")
    res = plot_cli(str(tmp_path / "exp"))
    assert res.exit_code == 0, res.output
    assert (tmp_path / "exp" / "curves.png").read_bytes()[:8] == PNG


@pytest.mark.parametrize(
    ("args", "message"),
    [
        (["{tmp}/exp", "--kind", "pie"], "--kind: must be one of curves, lr, schedule, warmup"),
        (["{tmp}/exp", "--out", "{tmp}/fig.jpg"], "--out: expected a .png file"),
        (["{tmp}/missing"], "no such file or folder"),
        (["{tmp}/exp", "--kind", "lr"], "--kind lr: needs sweep cells with a learning rate"),
        (["{tmp}/exp", "--kind", "warmup"], "--kind warmup: no run varies schedule.warmup"),
        (["{tmp}/exp", "--metric", "val_bpc"], "--metric val_bpc: no metrics.csv column of that name"),
    ],
)
def test_bad_input_is_exit_2(tmp_path, args, message):
    write_run(tmp_path / "exp" / "sgd", "sgd", 0.3, name="exp")
    res = plot_cli(*[a.format(tmp=tmp_path) for a in args])
    assert res.exit_code == 2 and message in res.output


# ---- curves -----------------------------------------------------------------------------------
def test_a_diverged_arm_no_longer_flattens_the_others(heavy_ball, tmp_path):
    runs = find_runs([heavy_ball])
    bad = next(r for r in runs if r.arm == "heavy_ball_unstable")
    assert bad.diverged and max(row["loss"] for row in bad.metrics) > 1e5  # the folder shows the defect
    first = max(r.summary["first_loss"] for r in runs)
    ax = drawn(plot_curves(runs)).axes[0]
    assert ax.get_yscale() == "log"
    bottom, top = ax.get_ylim()
    assert top <= 3 * first and bottom < 1e-6  # the converging arms' fall is visible over decades
    crosses = [line for line in ax.lines if line.get_marker() == "x"]
    assert [tuple(c.get_xdata()) for c in crosses] == [(39,)]  # ✗ where it diverged, inside the axis
    assert crosses[0].get_ydata()[0] <= top
    assert any("heavy_ball_unstable ✗ diverged at update 39" in t.get_text() for t in ax.figure.legends[0].texts)
    assert plot_cli(str(heavy_ball), "--out", str(tmp_path / "c.png")).exit_code == 0


def test_the_loss_axis_is_fitted_to_the_data_not_to_3x_the_first_loss(tmp_path):
    write_run(tmp_path / "exp" / "sgd", "sgd", 0.01, name="exp", losses=[2.0, 1.0, 0.3, 0.1, 0.03, 0.01])
    ax = drawn(plot_curves(find_runs([tmp_path / "exp"]))).axes[0]
    bottom, top = ax.get_ylim()
    assert 2.0 <= top <= 2.0 * 1.3 and 0.01 / 1.3 <= bottom <= 0.01


def test_metric_val_acc_is_drawn_on_a_linear_accuracy_axis(tmp_path):
    run = write_run(tmp_path / "exp" / "adam", "adam", 0.3, name="exp", val={"val_acc": 0.9})
    (run / "metrics.csv").write_text("step,loss,lr,val_loss,val_acc\n0,2.0,0.1,2.1,0.1\n10,0.5,0.1,0.6,0.7\n"
                                     "20,0.3,0.1,0.4,0.9\n")
    fig = drawn(plot_curves(find_runs([tmp_path / "exp"]), "val_acc"))
    acc = fig.axes[1]
    assert acc.get_ylabel() == "validation accuracy" and acc.get_yscale() == "linear"
    assert list(acc.lines[0].get_ydata()) == [0.1, 0.7, 0.9]
    assert 0 <= acc.get_ylim()[0] and acc.get_ylim()[1] <= 1.0


def test_an_unknown_metric_is_refused_naming_the_columns(tmp_path):
    write_run(tmp_path / "exp" / "sgd", "sgd", 0.3, name="exp")
    with pytest.raises(UserError) as err:
        plot_curves(find_runs([tmp_path / "exp"]), "val_acc")
    assert "--metric val_acc" in str(err.value) and "available: loss, lr" in err.value.hint


def test_one_seed_says_so_and_draws_no_band(tmp_path):
    write_run(tmp_path / "exp" / "sgd", "sgd", 0.3, name="exp")
    fig = drawn(plot_curves(find_runs([tmp_path / "exp"])))
    assert "1 seed" in fig._suptitle.get_text() and "±" not in fig._suptitle.get_text()
    assert not fig.axes[0].collections


def test_bands_are_the_sample_sd_over_seeds(tmp_path):
    for seed, losses in enumerate([[2.0, 1.0, 0.5], [2.0, 2.0, 0.5]]):
        write_run(tmp_path / "exp" / "sgd" / f"seed={seed}", "sgd", 0.5, seed=seed, name="exp", losses=losses)
    fig = drawn(plot_curves(find_runs([tmp_path / "exp"])))
    assert "mean ± sd over 2 seeds (sample sd)" in fig._suptitle.get_text()
    band = fig.axes[0].collections[0].get_paths()[0].vertices
    top_at_10 = max(y for x, y in band if x == 10)
    assert top_at_10 == pytest.approx(1.5 + 0.5 ** 0.5)  # sd (n−1) of {1, 2}; n would give 1.5 + 0.5


def test_axes_are_named_in_words_with_units(tmp_path, heavy_ball):
    logreg = find_runs([write_run(tmp_path / "a", "a", 0.3, val={"val_loss": 0.3})])
    quad = find_runs([heavy_ball])
    assert label("val_loss", logreg) == "validation loss (nats)" and label("loss", logreg) == "train loss (nats)"
    assert label("loss", quad) == "train loss"  # ½λw²: no unit
    assert (label("val_bpc", logreg), label("val_acc", logreg)) == ("validation bits per character",
                                                                    "validation accuracy")
    assert label("lr", logreg) == "learning rate μ·s(t)"
    ax = drawn(plot_curves(logreg)).axes[0]
    assert (ax.get_xlabel(), ax.get_ylabel()) == ("update", "train loss (nats)")


def test_log_ticks_are_plain_decimals(tmp_path):
    write_run(tmp_path / "exp" / "sgd", "sgd", 0.3, name="exp", losses=[2.0, 1.0, 0.6, 0.3])
    ax = drawn(plot_curves(find_runs([tmp_path / "exp"]))).axes[0]
    texts = tick_texts(ax)
    assert "2" in texts and "0.5" in texts  # minor ticks labelled while the axis spans < 2 decades
    assert all(re.fullmatch(r"[0-9.e+-]+", t.replace("−", "-")) for t in texts), texts


def test_many_lines_along_one_axis_get_a_colormap_and_a_colorbar(tmp_path):
    lrs = [10 ** (k / 2 - 4) for k in range(9)]
    sweep = make_sweep(tmp_path, {"adamw": {lr: [0.5] for lr in lrs}, "muon": {lr: [0.4] for lr in lrs[:3]}})
    fig = drawn(plot_curves(find_runs([sweep])))
    bars = [ax for ax in fig.axes if ax.get_ylabel() == "learning rate μ"]
    assert len(bars) == 1  # a colorbar of the grid's lr
    assert [t.get_text() for t in fig.legends[0].texts] == ["adamw", "muon"]  # line style per arm, not 12 entries
    colors = {tuple(line.get_color()) for line in fig.axes[0].lines}
    assert len(colors) == 9  # one colour per lr (both arms share the scale)


# ---- warmup -----------------------------------------------------------------------------------
def test_warmup_zooms_on_the_first_tenth_on_shared_y_scales_and_explains_the_fraction(tmp_path):
    fig = drawn(plot_warmup(find_runs([warmup_sweep(tmp_path)])))
    full, zoom = fig.axes[:2], fig.axes[2:4]
    assert full[0].get_shared_y_axes().joined(full[0], full[1])
    assert zoom[0].get_shared_y_axes().joined(zoom[0], zoom[1])
    assert zoom[0].get_xlim() == (0, 3.0)  # 10% of τ = 30 updates
    assert zoom[0].get_ylabel().startswith("train loss") and "train loss, first 10%" in zoom[0].get_title()
    legends = [[t.get_text() for t in ax.get_legend().texts] for ax in full]  # each panel: its own arm's lines
    assert legends[0] == ["no warmup", "warmup 5% of the run (2 of 30 updates)"]
    assert legends[1] == ["no warmup (✗ 1 diverged)", "warmup 5% of the run (2 of 30 updates)"]
    assert "shaded: the warmup updates" in [t.get_text() for t in fig.legends[0].texts]
    assert "τ = 30 updates" in fig._suptitle.get_text()


def test_warmup_without_a_warmup_axis_is_refused_with_a_hint(tmp_path):
    with pytest.raises(UserError) as err:
        plot_warmup(find_runs([make_sweep(tmp_path, RESULTS)]))
    assert "no run varies schedule.warmup" in str(err.value) and "--kind curves" in err.value.hint


# ---- schedule and lr --------------------------------------------------------------------------
def test_schedule_is_drawn_at_every_update_names_coincident_lines_and_explains_bold_and_faint(tmp_path):
    for arm in ("adamw", "muon"):
        write_run(tmp_path / "exp" / arm, arm, 0.3, name="exp", lr=0.1)  # metrics.csv logs steps 0, 10, 20
    config = tmp_path / "exp" / "muon" / "config.yaml"
    data = yaml.safe_load(config.read_text())
    data["optimizers"]["muon"]["aux"] = {"lr": None, "lr_scale": 0.15, "schedule": None}
    data["optimizers"]["muon"]["schedule"] = {"name": "linear", "warmup": 5}
    config.write_text(yaml.safe_dump(data))
    (tmp_path / "exp" / "adamw" / "config.yaml").write_text(yaml.safe_dump(
        {"name": "exp", "optimizers": {"adamw": {"lr": 0.1, "schedule": {"name": "linear", "warmup": 5}}}}))
    fig = drawn(plot_schedule(find_runs([tmp_path / "exp"])))
    ax_s, ax_lr = fig.axes[:2]
    assert [t.get_text() for t in ax_s.get_legend().texts] == ["adamw, muon"]  # one window, both named
    adamw, muon, aux = ax_lr.lines
    assert list(adamw.get_xdata()) == list(range(30))  # every update, not the logged ones
    assert max(adamw.get_ydata()) == pytest.approx(0.1)  # the warmup's peak s(5) = 1 is drawn
    assert adamw.get_ydata()[-1] == 0.0  # the decay reaches its end
    assert muon.get_label() == "muon (identical to adamw)" and muon.get_marker() == "o"
    assert aux.get_alpha() == 0.55 and list(aux.get_ydata()) == pytest.approx([0.15 * v for v in adamw.get_ydata()])
    legend = [t.get_text() for t in fig.legends[0].texts]
    assert "bold: main group" in legend and "faint: aux group" in legend


def test_lr_figure_shows_seeds_not_sd_bars_and_band_bars_apart_from_the_data(tmp_path):
    fig = drawn(plot_lr(find_runs([make_sweep(tmp_path, RESULTS)])))
    ax, strip = fig.axes
    assert "mean and each of 2 seeds" in fig._suptitle.get_text()
    assert ax.get_ylabel() == "final train loss (nats)" and strip.get_xlabel() == "learning rate μ"
    assert all("10^" not in t and "×" not in t for t in tick_texts(ax))
    dots = [line for line in ax.lines if line.get_marker() == "." and len(line.get_xdata())]
    assert len(dots) == 2 and all(y >= 0 for line in dots for y in line.get_ydata())  # each seed, no negative bar
    assert not ax.collections  # no error bars
    bars = [line for line in strip.lines if line.get_linestyle() == "-"]
    assert [list(line.get_ydata()) for line in bars] == [[0, 0], [1, 1]]  # one row per line, in their own axis
    ends = [line for line in strip.lines if line.get_marker() == ">"]  # muon's band ends at the grid's top
    assert len(ends) == 1 and list(ends[0].get_xdata()) == [0.1] and list(ends[0].get_ydata()) == [1]
    assert "runs off the grid, width a lower bound" in strip.get_title()


def test_curves_zoom_on_the_final_stretch_and_name_a_line_hidden_under_another(tmp_path):
    write_run(tmp_path / "exp" / "heavy_ball", "heavy_ball", 0.5, name="exp", losses=[2.0, 1.0, 0.5])
    write_run(tmp_path / "exp" / "ema", "ema", 0.5, name="exp", losses=[2.0, 1.0, 0.5])  # the same curve
    write_run(tmp_path / "exp" / "sgd", "sgd", 0.6, name="exp", losses=[2.0, 1.2, 0.6])
    fig = drawn(plot_curves(find_runs([tmp_path / "exp"])))
    full, zoom = fig.axes[:2]
    assert zoom.get_xlim() == (22.5, 30) and "last 25% of updates" in zoom.get_title()
    assert zoom.get_ylim()[1] < 1.0 < full.get_ylim()[1]  # fitted to the stretch it shows
    labels = [t.get_text() for t in fig.legends[0].texts]
    assert "heavy_ball (identical to ema)" in labels or "ema (identical to heavy_ball)" in labels
    hidden = [line for line in full.lines if "identical" in line.get_label()]
    assert len(hidden) == 1 and hidden[0].get_marker() == "o" and hidden[0].get_linestyle() == "--"


def test_a_folder_from_before_loss_units_takes_its_tasks_declared_unit(tmp_path):
    """summary.json records `loss_unit` since the tasks declare it; older folders name their task."""
    import json

    folder = write_run(tmp_path / "a", "a", 0.3, val={"val_loss": 0.3})
    summary = json.loads((folder / "summary.json").read_text())
    summary.pop("loss_unit", None)
    (folder / "summary.json").write_text(json.dumps({**summary, "task": "small_gpt"}))
    assert label("val_loss", find_runs([folder])) == "validation loss (nats)"
    (folder / "summary.json").write_text(json.dumps({**summary, "task": "quadratic1d"}))
    assert label("val_loss", find_runs([folder])) == "validation loss"


# ---- heatmap ----------------------------------------------------------------------------------
def aux_sweep(root: Path) -> Path:
    """Cells over lr × aux.lr for two arms and two seeds; muon diverges in one seed at the top."""
    sweep = root / "aux" / "sweep"
    for arm in ("adamw_split", "muon"):
        for lr in (0.001, 0.01):
            for aux in (0.001, 0.003, 0.01):
                for seed in (0, 1):
                    value = 1.0 + lr * 10 + aux * 20 + seed * 0.01
                    diverged = arm == "muon" and lr == 0.01 and aux == 0.01 and seed == 1
                    write_run(sweep / arm / f"aux.lr={aux},lr={lr},seed={seed}", arm, value, seed=seed, lr=lr, name="aux",
                              short={"aux.lr": aux, "lr": lr}, status="diverged" if diverged else "complete")
    return sweep


def test_heatmap_squares_are_seed_means_over_lr_and_the_other_axis(tmp_path):
    from trx.plots import heatmap_axes, heatmap_cells
    runs = find_runs([aux_sweep(tmp_path)])
    assert heatmap_axes(runs) == "aux.lr"
    cells = heatmap_cells(runs, "aux.lr", "loss")
    assert set(cells) == {"adamw_split", "muon"} and len(cells["muon"]) == 6
    assert sorted(cells["adamw_split"][(0.01, 0.003)]) == pytest.approx([1.16, 1.17])
    assert cells["muon"][(0.01, 0.01)][1] == float("inf")  # a diverged seed is no value to average
    out = tmp_path / "heat.png"
    res = plot_cli(str(tmp_path / "aux" / "sweep"), "--kind", "heatmap", "--out", str(out))
    assert res.exit_code == 0, res.output
    assert out.read_bytes()[:8] == PNG


def test_heatmap_without_a_second_axis_is_one_line_exit_2(tmp_path):
    res = plot_cli(str(make_sweep(tmp_path, RESULTS)), "--kind", "heatmap", "--out", str(tmp_path / "h.png"))
    assert res.exit_code == 2 and "exactly one other grid key; found none" in res.output
    assert not (tmp_path / "h.png").exists()
