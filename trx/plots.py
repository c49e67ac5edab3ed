"""Figures from run folders (matplotlib, Agg): curves of metrics.csv columns, the final result vs
learning rate, the windows actually used, and a warmup ablation.

Runs that differ only in their seed make one line: the mean over seeds, with a band of ± one
sample standard deviation (n − 1, `trx.stats.mean_sd`) when there are two seeds or more. Loss axes
are logarithmic and stop at 3× the first loss, so that a diverged arm (marked ✗ where it diverged)
does not flatten the others; axes are labelled in words with their units."""

from __future__ import annotations

import math
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import matplotlib

matplotlib.use("Agg")
import matplotlib.pyplot as plt  # noqa: E402
from matplotlib.cm import ScalarMappable  # noqa: E402
from matplotlib.colors import LogNorm, Normalize  # noqa: E402
from matplotlib.lines import Line2D  # noqa: E402
from matplotlib.ticker import FuncFormatter, MaxNLocator  # noqa: E402
from matplotlib.transforms import blended_transform_factory  # noqa: E402

from trx.errors import UserError  # noqa: E402
from trx.io import atomic_write  # noqa: E402
from trx.compare import (RunRecord, group_label, group_runs, higher_is_better, lr_table, natural_key,  # noqa: E402
                        result, several_names, tolerance_curve_table)
from trx.stats import mean_sd  # noqa: E402

KINDS = ("curves", "lr", "schedule", "warmup", "band", "heatmap")
STYLE = {"figure.dpi": 120, "axes.grid": True, "grid.alpha": 0.3, "axes.spines.top": False,
         "axes.spines.right": False, "legend.frameon": False, "font.size": 9}
LOSS_CLIP = 3.0  # loss axes end at this many times the first loss
LOSS_LIKE = {"loss", "val_loss", "val_bpc"}  # columns clipped at LOSS_CLIP × their first value
MANY = 8  # more lines than this along one numeric grid axis: a colormap and a colorbar, not a legend
ZOOM = 0.1  # the warmup figure's lower row shows this fraction of the run, where warmup acts
ZOOM_COLUMN = "loss"  # ... of the train loss: evaluations are too sparse to show the first updates
LINESTYLES = ["-", "--", "-.", ":"]
LABELS = {  # metrics.csv column -> axis label (the unit of a loss depends on the task: see `label`)
    "step": "update",
    "loss": "train loss",
    "val_loss": "validation loss",
    "val_bpc": "validation bits per character",
    "val_acc": "validation accuracy",
    "lr": "learning rate μ·s(t)",
    "lr_ratio": "lr ratio s(t)/s(t−1)",
    "grad_norm": "gradient norm ‖g‖",
    "update_norm": "update norm ‖Δ‖",
    "update_rms": "update RMS",
    "param_norm": "parameter norm ‖w‖",
    "tr_ratio": "RMS(μ·s(t)·u) / μ·s(t)",
    "wall_time": "wall time (s)",
}
GRID_LABELS = {"lr": "learning rate μ", "schedule.warmup": "warmup", "aux.lr": "aux Adam learning rate"}  # cell-id keys, for colorbars


def make_plot(kind: str, runs: list[RunRecord], path: Path, metric: str = "loss") -> Path:
    """Draw figure `kind` from `runs` into the PNG `path`."""
    draw = {"curves": plot_curves, "lr": plot_lr, "schedule": plot_schedule, "warmup": plot_warmup,
            "band": plot_band_tolerance, "heatmap": plot_heatmap}[kind]
    with plt.rc_context(STYLE):
        save_figure(draw(runs, metric), path)
    return path


def save_figure(fig, path: Path) -> None:
    """Write `fig` as the PNG `path` (atomically: never through a link) and close it; an unwritable
    path is a UserError naming it."""
    try:
        path.parent.mkdir(parents=True, exist_ok=True)
        atomic_write(path, lambda f: fig.savefig(f, format="png", bbox_inches="tight"))
    except OSError as exc:
        raise UserError(f"--out: cannot write {path}: {exc.strerror or exc}") from None
    finally:
        plt.close(fig)


# ---- data -------------------------------------------------------------------------------------
def mean_curve(members: list[RunRecord], column: str) -> tuple[list[float], list[float], list[float | None]]:
    """Steps, mean and sample sd over seeds (None below two seeds) of a metrics.csv column."""
    by_step: dict[float, list[float]] = {}
    for run in members:
        for row in run.metrics:
            value, step = row.get(column), row.get("step")
            if value is not None and step is not None and math.isfinite(value):
                by_step.setdefault(step, []).append(value)
    steps = sorted(by_step)
    stats = [mean_sd(by_step[s]) for s in steps]
    return steps, [m for m, _ in stats], [sd for _, sd in stats]


def columns(runs: list[RunRecord]) -> list[str]:
    """The metrics.csv columns that hold a value in some run (without `step`)."""
    seen = {k for run in runs for row in run.metrics for k, v in row.items() if v is not None}
    return sorted(seen - {"step"})


def label(column: str, runs: list[RunRecord]) -> str:
    """Axis label in words, with the unit of a loss when every run's task declares the same one
    (`Task.loss_unit`, recorded in summary.json)."""
    text = LABELS.get(column, column)
    if column not in ("loss", "val_loss"):
        return text
    units = {r.summary.get("loss_unit") or _declared_unit(r.summary.get("task")) for r in runs}
    if len(units) == 1 and None not in units:
        text += f" ({units.pop()})"
    return text


def _declared_unit(task: Any) -> str | None:
    """The loss unit a task declares, for folders written before summary.json recorded it (this
    imports the task registry, and torch with it, only for such folders)."""
    if not isinstance(task, str):
        return None
    from trx.tasks import TASKS

    return getattr(TASKS.get(task), "loss_unit", None)


def _number(text: Any) -> float | None:
    kind, number, _ = natural_key(str(text))
    return number if kind == 0 else None


def _last(run: RunRecord, column: str) -> tuple[float, float] | None:
    """(step, value) of the last finite value of `column`."""
    for row in reversed(run.metrics):
        value, step = row.get(column), row.get("step")
        if value is not None and step is not None and math.isfinite(value):
            return step, value
    return None


def _first_value(runs: list[RunRecord], column: str) -> float | None:
    """The largest first value of `column` over runs (the runner's first_loss for `loss`)."""
    firsts = []
    for run in runs:
        first = run.summary.get("first_loss") if column == "loss" else None
        if not isinstance(first, (int, float)):
            values = (r[column] for r in run.metrics if r.get(column) is not None and math.isfinite(r[column]))
            first = next(values, None)
        if first is not None and math.isfinite(first):
            firsts.append(float(first))
    return max(firsts) if firsts else None


def seeds_text(groups: dict[Any, list[RunRecord]], spread: str = "mean ± sd over {n} seeds (sample sd)") -> str:
    counts = sorted({len(m) for m in groups.values()})
    if counts in ([], [1]):
        return "1 seed"
    return spread.format(n=f"{counts[0]}" if len(counts) == 1 else f"{counts[0]}–{counts[-1]}")


# ---- colours and line styles ------------------------------------------------------------------
@dataclass
class Palette:
    """Colour and line style of each group; with many groups along one numeric grid key the
    colour encodes that key's value (`axis`, through `mappable`) and the style the arm."""

    color: dict[Any, Any]
    style: dict[Any, str]
    axis: str | None = None
    mappable: ScalarMappable | None = None
    arms: dict[str, str] = field(default_factory=dict)  # arm -> line style, in colormap mode


def numeric_axis(groups: dict[Any, list[RunRecord]]) -> str | None:
    """The one grid key whose value varies between groups, if all its values are numbers."""
    cells = [dict(members[0].overrides) for members in groups.values()]
    keys = sorted({k for cell in cells for k in cell})
    varying = [k for k in keys if len({cell.get(k) for cell in cells}) > 1]
    if len(varying) == 1 and all(_number(cell.get(varying[0])) is not None for cell in cells):
        return varying[0]
    return None


def palette(groups: dict[Any, list[RunRecord]]) -> Palette:
    keys = list(groups)
    axis = numeric_axis(groups) if len(keys) > MANY else None
    if axis is None:
        return Palette(dict(zip(keys, _group_colors(keys))), {k: "-" for k in keys})
    values = {k: _number(dict(groups[k][0].overrides)[axis]) for k in keys}
    lo, hi = min(values.values()), max(values.values())
    norm = LogNorm(lo, hi) if lo > 0 and hi >= 10 * lo else Normalize(lo, hi)
    mappable = ScalarMappable(norm=norm, cmap="viridis")
    arms = {arm: LINESTYLES[i % len(LINESTYLES)] for i, arm in enumerate(dict.fromkeys(k[1] for k in keys))}
    return Palette({k: mappable.to_rgba(values[k]) for k in keys}, {k: arms[k[1]] for k in keys}, axis, mappable,
                   arms)


def _group_colors(keys: list[tuple[str, str, str]]) -> list[Any]:
    """tab10 for a few lines; for many, one colour family per arm, darker for later cells."""
    if len(keys) <= 10:
        return [plt.get_cmap("tab10")(i) for i in range(len(keys))]
    families = ["Blues", "Oranges", "Greens", "Purples", "Reds", "Greys"]
    arms = list(dict.fromkeys(k[:2] for k in keys))
    out = []
    for key in keys:
        mine = [k for k in keys if k[:2] == key[:2]]
        shade = 0.35 + 0.6 * mine.index(key) / max(1, len(mine) - 1)
        out.append(plt.get_cmap(families[arms.index(key[:2]) % len(families)])(shade))
    return out


def _legend_below(fig, ax, pal: Palette, extra: list[Line2D] | None = None) -> None:
    """One legend below the panels (no line hidden behind it); a colorbar instead of one entry per
    group when the palette colours by a grid value."""
    if pal.axis is None:
        handles, labels = ax.get_legend_handles_labels()
    else:
        handles = [Line2D([], [], color="0.2", ls=s, label=arm) for arm, s in pal.arms.items()]
        labels = [h.get_label() for h in handles]
        bar = fig.colorbar(pal.mappable, ax=fig.axes, label=GRID_LABELS.get(pal.axis, pal.axis), fraction=0.04,
                           pad=0.02)
        plain_log_ticks(bar.ax)
    for h in extra or []:
        handles, labels = [*handles, h], [*labels, h.get_label()]
    if handles:
        widest = max(len(t) for t in labels)
        fig.legend(handles, labels, loc="upper center", bbox_to_anchor=(0.5, 0.0), fontsize=8,
                   ncol=max(1, min(len(handles), 5, 120 // max(widest, 1))))


DIVERGED = Line2D([], [], color="0.2", ls="none", marker="x", ms=7, mew=2, label="where a run diverged")


# ---- axes -------------------------------------------------------------------------------------
def _g(value: float, _pos: Any = None) -> str:
    return f"{value:g}"


def plain_log_ticks(ax) -> None:
    """Log axes labelled 0.5, 1, 2 rather than 5×10⁻¹, 10⁰, 2×10⁰: majors always; minors at
    2, 3, 4, 5, 6 and 8 on an axis shorter than a decade (so it never shows one lone label), at 2
    and 5 while it spans less than two decades, otherwise unlabelled."""
    for axis, scale in ((ax.xaxis, ax.get_xscale()), (ax.yaxis, ax.get_yscale())):
        if scale != "log":
            continue
        axis.set_major_formatter(FuncFormatter(_g))

        def minor(value: float, _pos: Any = None, axis=axis) -> str:
            lo, hi = sorted(axis.get_view_interval())
            if lo <= 0 or hi / lo > 100 or value <= 0:
                return ""
            mantissa = round(value / 10 ** math.floor(math.log10(value) + 1e-9))
            return _g(value) if mantissa in ((2, 3, 4, 5, 6, 8) if hi / lo < 10 else (2, 5)) else ""

        axis.set_minor_formatter(FuncFormatter(minor))


def fit_value_axis(ax, column: str, values: list[float], first: float | None) -> None:
    """Fit the y axis to the drawn values. Losses: log scale when none is negative, top at the
    largest value but never above 3× the first one, bottom at the smallest value shown.
    Accuracies: linear, within [0, 1]. Anything else: linear, fitted."""
    finite = [v for v in values if math.isfinite(v)]
    if not finite:
        return
    lo, hi = min(finite), max(finite)
    if higher_is_better(column):
        pad = 0.05 * ((hi - lo) or 1.0)
        ax.set_ylim(max(0.0, lo - pad) if lo >= 0 else lo - pad, min(1.0, hi + pad) if hi <= 1 else hi + pad)
        return
    clip = LOSS_CLIP * first if first is not None and first > 0 and column in LOSS_LIKE else math.inf
    positive = [v for v in finite if 0 < v <= clip]
    if lo >= 0 and positive:
        ax.set_yscale("log", nonpositive="mask")
        top, bottom = min(max(positive) * 1.25, clip), min(positive) / 1.25
        ax.set_ylim(bottom, top if top > bottom else bottom * 10)
        plain_log_ticks(ax)
        return
    hi = min(hi, clip)
    pad = 0.05 * ((hi - lo) or 1.0)
    ax.set_ylim(lo - pad, hi + pad)



def _mark_diverged(ax, members: list[RunRecord], column: str, color: Any) -> None:
    """✗ at the update where each diverged seed stopped, at its last value (held inside the axis)."""
    bottom, top = ax.get_ylim()
    for run in members:
        if not run.diverged:
            continue
        last = _last(run, column)
        step = run.summary.get("diverged_at")
        if last is None and step is None:
            continue
        x = step if isinstance(step, (int, float)) else last[0]
        if not min(ax.get_xlim()) <= x <= max(ax.get_xlim()):
            continue  # outside a zoomed panel
        y = min(max(last[1], bottom), top) if last else top
        ax.plot([x], [y], "x", color=color, ms=8, mew=2, clip_on=False, zorder=5)


def _band(ax, steps, means, sds, color, text, style="-", marker=None) -> None:
    ax.plot(steps, means, ls=style, marker=marker, color=color, label=text, lw=1.4, ms=3)
    if any(sd for sd in sds):
        sds = [sd or 0.0 for sd in sds]
        # m²/(m+s) = m/(1+s/m): as far below m as m+s is above it on a log axis, and never ≤ 0
        lo = [m * m / (m + s) if m > 0 else m - s for m, s in zip(means, sds)]
        ax.fill_between(steps, lo, [m + s for m, s in zip(means, sds)], color=color, alpha=0.15, lw=0)


def _title(runs: list[RunRecord], what: str) -> str:
    names = sorted({r.name for r in runs if r.name}, key=natural_key)
    tasks = sorted({str(r.summary.get("task")) for r in runs if r.summary.get("task")}, key=natural_key)
    head = ", ".join(names) + (f" ({', '.join(tasks)})" if tasks else "")
    return f"{head}: {what}" if what else head


# ---- curves -----------------------------------------------------------------------------------
def curve_columns(runs: list[RunRecord], metric: str) -> list[str]:
    """Train loss, then `metric` (for the default `loss`: the validation loss where evaluated)."""
    have = columns(runs)
    if metric == "loss":
        return ["loss"] + (["val_loss"] if "val_loss" in have else [])
    require_column(runs, metric)
    return (["loss"] if "loss" in have else []) + [metric]


def require_column(runs: list[RunRecord], column: str) -> None:
    have = columns(runs)
    if column not in have:
        raise UserError(f"--metric {column}: no metrics.csv column of that name in these runs",
                        hint=f"available: {', '.join(have) or 'none'}")


def _group_text(key, members: list[RunRecord], several: bool) -> str:
    text = group_label(key, several)
    bad = [r for r in members if r.diverged]
    if bad:
        at = sorted({int(r.summary["diverged_at"]) for r in bad if isinstance(r.summary.get("diverged_at"), int)})
        where = f" at update {', '.join(map(str, at))}" if at else ""
        text += f" ✗ diverged{where}" + (f" ({len(bad)}/{len(members)} seeds)" if len(members) > 1 else "")
    return text


def draw_column(ax, groups, pal: Palette, column: str, runs: list[RunRecord], several: bool,
                start: float = 0.0) -> None:
    """One line per group (mean ± sd over seeds), the axis fitted to the steps from `start` on,
    ✗ where a seed diverged; a line identical to one drawn before is dashed with markers and
    its legend entry says so (it would hide under it)."""
    drawn, seen = [], {}
    for key, members in groups.items():
        steps, means, sds = mean_curve(members, column)
        if not steps:
            continue
        text = _group_text(key, members, several) if pal.axis is None else "_nolegend_"
        style, marker = pal.style[key], "o" if len(steps) <= 25 else None
        same = seen.get(tuple(means))
        if same is not None:
            style, marker = (0, (4, 3)), "o"
            text = f"{text} (identical to {same})" if pal.axis is None else text
        seen.setdefault(tuple(means), group_label(key, several))
        _band(ax, steps, means, sds, pal.color[key], text, style, marker)
        first = max(0, next((i for i, t in enumerate(steps) if t >= start), len(steps)) - 1)  # the line enters
        drawn += means[first:]
    fit_value_axis(ax, column, drawn, _first_value(runs, column))
    for key, members in groups.items():
        _mark_diverged(ax, members, column, pal.color[key])
    ax.set(xlabel=LABELS["step"], ylabel=label(column, runs))


FINAL = 0.25  # the curves' lower row zooms on this last fraction of the run


def plot_curves(runs: list[RunRecord], metric: str = "loss"):
    """Train loss and the metric (default: validation loss) vs update, one line per arm or cell;
    below, the same over the last quarter of the run, fitted to it (the whole run's y range
    squashes the late differences the figure exists to show)."""
    runs = grid_runs(runs)
    panels = curve_columns(runs, metric)
    groups = group_runs(runs)
    pal = palette(groups)
    several = several_names(groups)
    total = max((int(r.summary["steps"]) for r in runs if isinstance(r.summary.get("steps"), int)), default=None)
    rows = 2 if total else 1
    fig, axes = plt.subplots(rows, len(panels), figsize=(5.5 * len(panels) + 0.5, 4 * rows), squeeze=False,
                             layout="constrained")
    for col, column in enumerate(panels):
        draw_column(axes[0][col], groups, pal, column, runs, several)
        note = " (one batch per update)" if column == "loss" else ""
        axes[0][col].set_title(LABELS.get(column, column) + note)
        if total:
            start = (1 - FINAL) * total
            draw_column(axes[1][col], groups, pal, column, runs, several, start)
            axes[1][col].set_xlim(start, total)
            axes[1][col].set_title(f"{LABELS.get(column, column)}, last {_g(100 * FINAL)}% of updates "
                                   f"({round(start)}–{total}), fitted to it", fontsize=8)
    diverged = any(r.diverged for r in runs)
    _legend_below(fig, axes[0][0], pal, [DIVERGED] if diverged else None)
    clip = f"; loss axes stop at {LOSS_CLIP:g}× the first loss" if diverged else ""
    fig.suptitle(_title(runs, f"curves, {seeds_text(groups)}{clip}"))
    return fig


# ---- final result vs learning rate ------------------------------------------------------------
def plot_lr(runs: list[RunRecord], metric: str = "loss"):
    """Final `metric` vs learning rate (log axis), one line per optimizer: the seed mean, each
    seed as a dot (a loss cannot go below 0; a ± sd bar can); ✗ diverged, ★ best. Below, on an
    axis of its own so that they never read as data, each line's lr band as a bar, with ▶ or ◀
    where the band runs off the grid (its width is then a lower bound)."""
    table = lr_table(runs, metric)
    if table.empty:
        raise UserError("--kind lr: needs sweep cells with a learning rate", hint="pass a sweep folder from trx sweep")
    curves = lr_points(runs)
    fig, (ax, strip) = plt.subplots(2, 1, figsize=(6.5, 4.6 + 0.18 * len(curves)), sharex=True,
                                    gridspec_kw={"height_ratios": [5, 0.6 + 0.35 * len(curves)], "hspace": 0.3})
    drawn: list[float] = []
    for i, (text, by_lr) in enumerate(curves.items()):
        row = table[table["arm"] == text]
        color = plt.get_cmap("tab10")(i % 10)
        drawn += _lr_line(ax, text, by_lr, row, metric, color)
        _band_bar(strip, row, i, color, min(by_lr), max(by_lr))
    ax.set_xscale("log")
    fit_value_axis(ax, metric, drawn, None)
    plain_log_ticks(ax)
    what = LABELS.get(metric, metric)
    ax.set(ylabel=f"final {label(metric, runs)}")
    ax.set_title(f"final {what} vs learning rate (line: seed mean, dots: seeds, ★ best, ✗ diverged)", fontsize=9)
    ax.legend(fontsize=7 if len(curves) > 6 else 8)
    strip.set(xlabel=GRID_LABELS["lr"], yticks=range(len(curves)), yticklabels=list(curves), ylim=(len(curves) - 0.4, -0.6))
    strip.tick_params(axis="y", labelsize=7)
    strip.set_title("lr band: ≥ 90% of the best lr's improvement (▶/◀: runs off the grid, width a lower bound)",
                    fontsize=8)
    points = {(text, lr): members for text, by_lr in curves.items() for lr, members in by_lr.items()}
    fig.suptitle(_title(runs, seeds_text(points, "mean and each of {n} seeds")))
    return fig


def grid_runs(runs: list[RunRecord]) -> list[RunRecord]:
    """The runs without boundary probes (each probe lr ran on only some seeds: a line of its own
    per probe would bury the grid); all of them when nothing else is left."""
    return [r for r in runs if not r.probe] or runs


def lr_points(runs: list[RunRecord]) -> dict[str, dict[float, list[RunRecord]]]:
    """Sweep cells by line (arm and the other grid values, labelled as in lr_table) and lr."""
    curves: dict[str, dict[float, list[RunRecord]]] = {}
    several = len({r.name for r in runs if r.cell}) > 1
    for run in sorted(runs, key=lambda r: (natural_key(r.arm), [natural_key(v) for _, v in r.overrides])):
        if run.cell is None or run.lr is None or run.probe:  # boundary probes: only some seeds ran them
            continue
        rest = ",".join(f"{k}={v}" for k, v in run.overrides if k != "lr")
        curves.setdefault(group_label((run.name, run.arm, rest), several), {}).setdefault(run.lr, []).append(run)
    return curves


def _lr_line(ax, text: str, by_lr: dict[float, list[RunRecord]], row, metric: str, color: Any) -> list[float]:
    """One optimizer: the seed mean per lr and each seed's value, ✗ at the top for diverged lrs,
    ★ at the best lr (from lr_table's `row`); returns the values the y axis must show."""
    top = blended_transform_factory(ax.transData, ax.transAxes)
    lrs = sorted(by_lr)
    ok = [lr for lr in lrs if not any(r.diverged or r.summary.get("status") != "complete" for r in by_lr[lr])]
    seeds = {lr: [v for v in (result(r, metric) for r in by_lr[lr]) if v is not None] for lr in ok}
    means = [mean_sd(seeds[lr])[0] for lr in ok]
    ax.plot(ok, means, "o-", color=color, label=text, ms=4, lw=1.4)
    dots = [(lr, v) for lr in ok for v in seeds[lr]] if any(len(v) > 1 for v in seeds.values()) else []
    ax.plot([x for x, _ in dots], [v for _, v in dots], ".", color=color, ms=4, alpha=0.45)
    bad = [lr for lr in lrs if lr not in ok]
    ax.plot(bad, [0.96] * len(bad), "x", color=color, ms=8, mew=2, transform=top, clip_on=False)
    if not row.empty and row.iloc[0]["best_lr"] == row.iloc[0]["best_lr"]:
        best = row.iloc[0]
        ax.plot([best["best_lr"]], [best[f"best_{metric}"]], "*", color=color, ms=13, mec="black", mew=0.6)
    return [m for m in means if m is not None] + [v for _, v in dots]


def _band_bar(strip, row, i: int, color: Any, grid_lo: float, grid_hi: float) -> None:
    """Line i's lr band as a bar in the strip under the data; ◀/▶ where it runs off the grid."""
    width = None if row.empty else row.iloc[0]["tolerance_decades"]
    if not isinstance(width, (int, float)) or not width > 0:  # no band (None, NaN) or a single lr
        return
    lo, hi = row.iloc[0]["tolerant_lr_lo"], row.iloc[0]["tolerant_lr_hi"]
    strip.plot([lo, hi], [i, i], "-", color=color, lw=5, alpha=0.85, solid_capstyle="butt")
    for edge, end, marker in ((lo, grid_lo, "<"), (hi, grid_hi, ">")):
        if edge <= end * (1 + 1e-9) and edge >= end * (1 - 1e-9):
            strip.plot([edge], [i], marker, color=color, ms=9, mec="black", mew=0.6)


# ---- band width against the tolerance ----------------------------------------------------------
def plot_band_tolerance(runs: list[RunRecord], metric: str = "loss"):
    """Each line's lr-band width (decades) against the band's tolerance, relative (left) and
    absolute in metric units (right): the seed-mean curve's width (filled marker; hollow where the
    band runs off the grid, a lower bound) and the order-statistic interval of the median per-seed
    width (bar). Whether one arm is wider than another can depend on the definition."""
    table = tolerance_curve_table(runs, metric)
    if table.empty:
        raise UserError("--kind band: needs sweep cells with three learning rates or more per line",
                        hint="pass a sweep folder whose grid sweeps lr")
    fig, axes = plt.subplots(1, 2, figsize=(11, 4), layout="constrained")
    arms = list(dict.fromkeys(table["arm"]))
    for ax, kind in zip(axes, ("relative", "absolute")):
        for i, arm in enumerate(arms):
            _band_line(ax, table[(table["arm"] == arm) & (table["kind"] == kind)], arm, i, len(arms), kind)
        unit = "share of the best improvement" if kind == "relative" else f"{LABELS.get(metric, metric)} units"
        ticks = sorted(set(table.loc[table["kind"] == kind, "tolerance"]))
        ax.set_xscale("log")
        ax.set_xticks(ticks, [f"{t:.0%}" if kind == "relative" else f"{t:g}" for t in ticks])
        ax.minorticks_off()
        ax.set(xlabel=f"tolerance ({unit})", ylabel="lr band width (decades)",
               title=f"{kind} tolerance: band = lrs within it of the best")
    axes[0].legend(fontsize=8)
    conf = table["ci_conf"].dropna()
    confidence = f"{conf.min():.0%}" if not conf.empty else "-"
    fig.suptitle(_title(runs, f"lr band width vs tolerance (final {LABELS.get(metric, metric)})\n"
                              f"dot: seed-mean curve (hollow: runs off the grid, a lower bound); bar: median "
                              f"per-seed width, interval of ≥ {confidence} confidence"))
    return fig


def _band_line(ax, rows, arm: str, i: int, n: int, kind: str) -> None:
    """One arm on the band-vs-tolerance figure, nudged sideways so that the bars do not overlap."""
    color = plt.get_cmap("tab10")(i % 10)
    nudge = 1.0 + 0.04 * (i - (n - 1) / 2)
    x = [t * nudge for t in rows["tolerance"]]
    ax.plot(x, rows["decades"], "-", color=color, lw=1.2, label=arm)
    for xi, (_, row) in zip(x, rows.iterrows()):
        face = "white" if row["open"] else color
        ax.plot([xi], [row["decades"]], "o", color=color, mfc=face, ms=5)
        if row["seed_decades_ci_lo"] == row["seed_decades_ci_lo"] and row["seed_decades_ci_lo"] is not None:
            ax.plot([xi, xi], [row["seed_decades_ci_lo"], row["seed_decades_ci_hi"]], "-", color=color, lw=2.5,
                    alpha=0.45, solid_capstyle="butt")


# ---- schedules --------------------------------------------------------------------------------
def arm_block(run: RunRecord) -> dict[str, Any]:
    arm = ((run.config or {}).get("optimizers") or {}).get(run.arm)
    return arm if isinstance(arm, dict) else {}


def schedule_curve(run: RunRecord, block: dict[str, Any]) -> tuple[list[int], list[float]] | None:
    """s(t) of `block`'s schedule at every update t = 0 … τ−1, from the formula (metrics.csv logs
    every log_every-th update only, which cuts a warmup's peak and a decay's end)."""
    total = run.summary.get("steps")
    if not isinstance(total, int) or total < 2:
        return None
    from pydantic import ValidationError

    from trx.optim.base import ConfigError
    from trx.optim.schedules import Schedule  # imports torch: only for this figure

    try:
        window = Schedule.model_validate(block.get("schedule") or {}).build(total)
    except (ValidationError, ConfigError):  # a config from another version: fall back to the logged lr
        return None
    return list(range(total)), [window(t) for t in range(total)]


def lr_curves_of(run: RunRecord) -> tuple[list[int], list[float], list[float] | None] | None:
    """Updates, the main group's lr μ·s(t) and the aux group's (None without aux), at every update."""
    arm = arm_block(run)
    mu, main = arm.get("lr"), schedule_curve(run, arm)
    if not isinstance(mu, (int, float)) or main is None:
        rows = [r for r in run.metrics if r.get("lr") is not None and r.get("step") is not None]
        return ([int(r["step"]) for r in rows], [r["lr"] for r in rows], None) if rows else None
    steps, window = main
    aux = arm.get("aux")
    if not isinstance(aux, dict):
        return steps, [mu * v for v in window], None
    base = aux.get("lr") if isinstance(aux.get("lr"), (int, float)) else mu * (aux.get("lr_scale") or 1.0)
    aux_window = schedule_curve(run, aux) if aux.get("schedule") else main
    return steps, [mu * v for v in window], [base * v for v in (aux_window or main)[1]]


def plot_schedule(runs: list[RunRecord], metric: str = "loss"):
    """The window s(t) and the lr μ·s(t) of every run at every update, from its config's schedule
    (one window line per distinct window, naming the arms that share it); the aux group's lr
    faint; a line that coincides with an earlier one is dashed with markers and named so."""
    groups = group_runs(runs)
    pal = palette(groups)
    several = several_names(groups)
    fig, (ax_s, ax_lr) = plt.subplots(1, 2, figsize=(11.5, 4), layout="constrained")
    windows, any_aux = _lr_panel(ax_lr, groups, pal, several)
    shared = any(len(keys) > 1 for _, keys, _ in windows.values())
    for window, (steps, keys, look) in windows.items():
        ax_s.plot(steps, window, **look, label=_sharing(keys, several))
    ax_s.set(xlabel=LABELS["step"], ylabel="window s(t) = lr / μ", ylim=(-0.03, 1.05),
             title=f"window s(t): {len(windows)} distinct" + (" (shared by the runs named)" if shared else ""))
    if shared:  # one line per window, named by the runs that share it
        ax_s.legend(fontsize=7, loc="upper right")
    extra = [Line2D([], [], color="0.2", lw=2.4, label="bold: main group"),
             Line2D([], [], color="0.2", lw=1.2, alpha=0.55, label="faint: aux group")] if any_aux else []
    _legend_below(fig, ax_lr, pal, extra)
    fig.suptitle(_title(runs, "schedules at every update, from each run's config"))
    return fig


Window = tuple[list[float], list[tuple[str, str, str]], dict[str, Any]]  # steps, groups sharing it, line look


def _lr_panel(ax, groups, pal: Palette, several: bool) -> tuple[dict[tuple[float, ...], Window], bool]:
    """lr = μ·s(t) of each group's main group (bold) and aux group (faint); returns the distinct
    windows s(t) with the groups that share each, and whether any aux lr was drawn."""
    windows: dict[tuple[float, ...], Window] = {}
    seen: dict[tuple[float, ...], str] = {}  # lr curve -> the label of the line that drew it first
    any_aux, peaks = False, []
    for i, (key, members) in enumerate(groups.items()):
        curves = lr_curves_of(members[0])  # seeds share their schedule
        if curves is None:
            continue
        steps, lrs, aux = curves
        look = {"ls": pal.style[key] if pal.axis else LINESTYLES[i % len(LINESTYLES)], "color": pal.color[key],
                "lw": 2.4 - 0.5 * (i % 3) if pal.axis is None else 1.2}
        top = max(lrs) or 1.0
        windows.setdefault(tuple(round(v / top, 9) for v in lrs), (steps, [], look))[1].append(key)
        name = group_label(key, several)
        _coincident_line(ax, steps, lrs, look, name if pal.axis is None else None, seen)
        peaks.append(top)
        if aux is not None:
            any_aux = True
            faint = {**look, "lw": max(0.8, look["lw"] - 0.8), "alpha": 0.55}
            _coincident_line(ax, steps, aux, faint, f"{name} aux" if pal.axis is None else None, seen)
    ax.set(xlabel=LABELS["step"], ylabel=LABELS["lr"], title="learning rate at every update")
    if peaks and min(peaks) > 0 and max(peaks) > 30 * min(peaks):
        ax.set_yscale("log", nonpositive="mask")
        plain_log_ticks(ax)
    return windows, any_aux


def _coincident_line(ax, steps, values, look: dict[str, Any], name: str | None, seen: dict) -> None:
    """Draw a line; one identical to a line drawn before is dashed with sparse markers and its
    legend entry says which it hides under."""
    key = tuple(round(v, 12) for v in values)
    if key in seen:
        look = {**look, "ls": (0, (4, 3)), "marker": "o", "markevery": max(1, len(steps) // 8), "ms": 4}
        name = f"{name} (identical to {seen[key]})" if name else None
    elif name:
        seen[key] = name
    ax.plot(steps, values, **look, label=name if name else "_nolegend_")


def _sharing(keys: list[tuple[str, str, str]], several: bool) -> str:
    """Name the groups that share a window: "adamw, muon (schedule.warmup=0)" when they share the cell."""
    if len({k[2] for k in keys}) == 1 and len({k[0] for k in keys}) == 1:
        arms = ", ".join(group_label((k[0], k[1], ""), several) for k in keys)
        return f"{arms} ({keys[0][2]})" if keys[0][2] else arms
    names = [group_label(k, several) for k in keys]
    return ", ".join(names) if len(names) <= 4 else f"{len(names)} runs: {names[0]}, …, {names[-1]}"


# ---- warmup ablation --------------------------------------------------------------------------
def warmup_of(run: RunRecord) -> str:
    """The run's warmup as written in the grid or config: a fraction of τ (< 1) or updates."""
    overrides = dict(run.overrides)
    value = overrides.get("schedule.warmup")
    if value is None:
        arm = ((run.config or {}).get("optimizers") or {}).get(run.arm) or {}
        value = (arm.get("schedule") or {}).get("warmup", 0) if isinstance(arm.get("schedule"), dict) else 0
    number = _number(value)
    return _g(number) if number is not None else str(value)


def warmup_text(value: str, total: int | None) -> str:
    """`0.05` → "warmup 5% of the run (10 of 200 updates)"; `10` → "warmup 10 updates (5% of the run)"."""
    w = _number(value)
    if w is None:
        return f"warmup={value}"
    if w == 0:
        return "no warmup"
    if w < 1:
        updates = f" ({round(w * total)} of {total} updates)" if total else ""
        return f"warmup {_g(100 * w)}% of the run{updates}"
    share = f" ({_g(round(100 * w / total, 2))}% of the run)" if total else ""
    return f"warmup {_g(w)} updates{share}"


def _warmup_updates(value: str, total: int | None) -> float:
    w = _number(value) or 0.0
    return round(w * (total or 0)) if w < 1 else w  # as trx.optim.Schedule.warmup_updates


def plot_warmup(runs: list[RunRecord], metric: str = "loss"):
    """With and without warmup, one column of panels per optimizer: the whole run above, the first
    10% of updates (where warmup acts) below; the panels of a row share their y scale. Line style:
    the warmup; colour: the other grid values (e.g. lr), else the warmup too."""
    runs = grid_runs(runs)
    arms = sorted({r.arm for r in runs}, key=natural_key)
    warmups = sorted({warmup_of(r) for r in runs}, key=natural_key)
    if not any(len({warmup_of(r) for r in runs if r.arm == arm}) > 1 for arm in arms):
        raise UserError("--kind warmup: no run varies schedule.warmup",
                        hint="use --kind curves, or sweep a warmup axis: --grid optimizers.*.schedule.warmup=0,0.05")
    require_column(runs, metric)
    total = max((int(r.summary["steps"]) for r in runs if isinstance(r.summary.get("steps"), int)), default=None)
    fig, axes = plt.subplots(2, len(arms), figsize=(4.8 * len(arms), 7), squeeze=False, sharey="row",
                             layout="constrained")
    drawn: dict[str, list[tuple[float, float]]] = {metric: [], ZOOM_COLUMN: []}
    marks: list[tuple[Any, list[RunRecord], Any, str]] = []
    for col, arm in enumerate(arms):
        mine = [r for r in runs if r.arm == arm]
        _warmup_panels(axes[0][col], axes[1][col], mine, metric, warmups, total, marks, drawn)
        axes[0][col].set_title(arm)
        axes[0][col].legend(fontsize=7, loc="best")  # this arm's own lines (lrs differ per arm)
    _fit_warmup_axes(axes, drawn, runs, metric, total)
    for ax, members, color, column in marks:
        _mark_diverged(ax, members, column, color)
    handles, texts = [], []
    if any(_warmup_updates(w, total) > 0 for w in warmups):
        handles.append(plt.Rectangle((0, 0), 1, 1, color="0.5", alpha=0.15))
        texts.append("shaded: the warmup updates")
    if any(r.diverged for r in runs):
        handles, texts = [*handles, DIVERGED], [*texts, DIVERGED.get_label()]
    if handles:
        fig.legend(handles, texts, loc="upper center", bbox_to_anchor=(0.5, 0.0), ncol=min(len(handles), 3), fontsize=8)
    tau = f"; τ = {total} updates" if total else ""
    fig.suptitle(_title(runs, f"warmup ablation, {LABELS.get(metric, metric)}, {seeds_text(group_runs(runs))}{tau}"))
    return fig


def _fit_warmup_axes(axes, drawn: dict[str, list[tuple[float, float]]], runs: list[RunRecord], metric: str,
                     total: int | None) -> None:
    """One y scale per row (the lower row: the train loss, fitted to the stretch it shows), plain
    ticks, the zoom's x range."""
    end = ZOOM * total if total else math.inf
    fit_value_axis(axes[0][0], metric, [m for _, m in drawn[metric]], _first_value(runs, metric))
    fit_value_axis(axes[1][0], ZOOM_COLUMN, [m for s, m in drawn[ZOOM_COLUMN] if s <= end],
                   _first_value(runs, ZOOM_COLUMN))
    for ax in axes.flat:
        ax.set(xlabel=LABELS["step"])
        ax.xaxis.set_major_locator(MaxNLocator(integer=True))
        plain_log_ticks(ax)
    axes[0][0].set_ylabel(label(metric, runs))
    axes[1][0].set_ylabel(label(ZOOM_COLUMN, runs))
    if total:
        for ax in axes[1]:
            ax.set_xlim(0, end)
            ax.set_title(f"train loss, first {_g(100 * ZOOM)}% of updates "
                         f"(0–{round(end)}), where warmup acts", fontsize=8)


def _warmup_panels(full, zoom, mine: list[RunRecord], metric: str, warmups: list[str], total: int | None,
                   marks: list, drawn: dict[str, list[tuple[float, float]]]) -> None:
    """One arm's lines: `metric` over the whole run above, the train loss (logged far more often
    than an evaluation) over the first updates below. Adds the drawn (step, mean) per column to
    `drawn` (for the y axes) and (axis, runs, colour, column) to `marks` for the ✗ of diverged
    seeds, drawn once the axis is fitted."""
    groups: dict[tuple[str, str], list[RunRecord]] = {}
    for run in mine:
        rest = ",".join(f"{k}={v}" for k, v in run.overrides if k != "schedule.warmup")
        groups.setdefault((rest, warmup_of(run)), []).append(run)
    order = sorted(groups, key=lambda k: (natural_key(k[0]), natural_key(k[1])))
    rests = list(dict.fromkeys(k[0] for k in order))
    tab = plt.get_cmap("tab10")
    for rest, warmup in order:
        members = groups[(rest, warmup)]
        color = tab(rests.index(rest) % 10) if len(rests) > 1 else tab(warmups.index(warmup) % 10)
        style = LINESTYLES[warmups.index(warmup) % len(LINESTYLES)]
        bad = sum(r.diverged for r in members)
        text = warmup_text(warmup, total) + (f", {rest}" if len(rests) > 1 else "")
        text += f" (✗ {bad} diverged)" if bad else ""
        for ax, column, name, marker in ((full, metric, text, None), (zoom, ZOOM_COLUMN, None, "o")):
            steps, means, sds = mean_curve(members, column)
            _band(ax, steps, means, sds, color, name, style, marker)
            drawn[column] += list(zip(steps, means))
            marks.append((ax, members, color, column))
    for warmup in warmups:
        updates = _warmup_updates(warmup, total)
        if updates > 0:
            for ax in (full, zoom):
                ax.axvspan(0, updates, color="0.5", alpha=0.15 / max(1, len(warmups) - 1), lw=0)


# ---- heatmap ----------------------------------------------------------------------------------
def heatmap_axes(runs: list[RunRecord]) -> str:
    """The heatmap's second axis: the one grid key besides lr that the cells vary (one line,
    naming the keys found, when there is not exactly one)."""
    keys = sorted({k for r in runs if r.cell and r.lr is not None for k, _ in r.overrides if k != "lr"})
    varied = [k for k in keys if len({dict(r.overrides).get(k) for r in runs if r.cell}) > 1]
    if len(varied) != 1:
        found = ", ".join(varied) or "none"
        raise UserError(f"--kind heatmap: needs sweep cells over lr and exactly one other grid key; found {found}")
    return varied[0]


def heatmap_cells(runs: list[RunRecord], key: str, metric: str) -> dict[str, dict[tuple[float, float], list[float]]]:
    """Per arm: (lr, value of `key`) → each seed's final `metric` (inf for a diverged seed)."""
    panels: dict[str, dict[tuple[float, float], list[float]]] = {}
    for run in runs:
        y = _number(dict(run.overrides).get(key))
        if run.cell is None or run.lr is None or run.probe or y is None:
            continue
        value = math.inf if run.summary.get("diverged") else result(run, metric)
        if value is not None:
            panels.setdefault(run.arm, {}).setdefault((run.lr, y), []).append(value)
    return dict(sorted(panels.items(), key=lambda item: natural_key(item[0])))


def plot_heatmap(runs: list[RunRecord], metric: str = "loss"):
    """Final `metric` over lr × one other grid axis (e.g. the aux lr), one panel per arm: each
    square the seed mean (✗ where a seed diverged), one colour scale for all panels."""
    key = heatmap_axes(runs)
    panels = heatmap_cells(runs, key, metric)
    means = {arm: {xy: sum(v) / len(v) for xy, v in cells.items()} for arm, cells in panels.items()}
    finite = [m for cells in means.values() for m in cells.values() if math.isfinite(m)]
    if not finite:
        raise UserError(f"--kind heatmap: no finite final {metric} in these cells")
    norm = Normalize(min(finite), max(finite))
    cmap = plt.get_cmap("viridis_r" if not higher_is_better(metric) else "viridis")
    fig, axes = plt.subplots(1, len(means), figsize=(3.6 * len(means) + 1.2, 3.6), squeeze=False)
    for ax, (arm, cells) in zip(axes[0], means.items()):
        _heat_panel(ax, arm, cells, cmap, norm, key)
    axes[0][0].set_ylabel(GRID_LABELS.get(key, key))
    fig.subplots_adjust(wspace=0.3)
    fig.colorbar(ScalarMappable(norm=norm, cmap=cmap), ax=list(axes[0]), label=f"final {label(metric, runs)}")
    n = max(len(v) for cells in panels.values() for v in cells.values())
    fig.suptitle(_title(runs, f"mean over {n} seeds; ✗ a seed diverged"), fontsize=9)
    return fig


def _heat_panel(ax, arm: str, cells: dict[tuple[float, float], float], cmap: Any, norm: Any, key: str) -> None:
    xs, ys = sorted({x for x, _ in cells}), sorted({y for _, y in cells})
    for (x, y), value in cells.items():
        i, j = xs.index(x), ys.index(y)
        shown = math.isfinite(value)
        ax.add_patch(plt.Rectangle((i - 0.5, j - 0.5), 1, 1, color=cmap(norm(value)) if shown else "0.85"))
        text = f"{value:.3g}" if shown else "✗"
        ax.text(i, j, text, ha="center", va="center", fontsize=7,
                color="white" if shown and norm(value) > 0.6 else "black")
    ax.set(xlim=(-0.5, len(xs) - 0.5), ylim=(-0.5, len(ys) - 0.5), title=arm,
           xlabel=GRID_LABELS["lr"])
    ax.set_xticks(range(len(xs)), [f"{x:.4g}" for x in xs], rotation=45)  # log grids: 0.0003162, not 0.00031623
    ax.set_yticks(range(len(ys)), [f"{y:.4g}" for y in ys])
    ax.grid(False)
