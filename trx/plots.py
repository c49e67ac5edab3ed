"""Figures from run folders (matplotlib, Agg): loss curves, result vs learning rate, the windows
actually used, and a warmup ablation. Every figure groups runs that differ only in their seed
and draws the mean with a ± std band."""

from __future__ import annotations

import math
from pathlib import Path
from typing import Any

import matplotlib

matplotlib.use("Agg")
import matplotlib.pyplot as plt  # noqa: E402
from matplotlib.transforms import blended_transform_factory  # noqa: E402

from trx.config import UserError  # noqa: E402
from trx.report import (RunRecord, group_label, group_runs, higher_is_better, lr_table, natural_key,  # noqa: E402
                        result)

KINDS = ("curves", "lr", "schedule", "warmup")
STYLE = {"figure.dpi": 120, "axes.grid": True, "grid.alpha": 0.3, "axes.spines.top": False,
         "axes.spines.right": False, "legend.frameon": False, "font.size": 9}


def make_plot(kind: str, runs: list[RunRecord], path: Path, metric: str = "loss") -> Path:
    """Draw figure `kind` from `runs` into the PNG `path`."""
    draw = {"curves": plot_curves, "lr": plot_lr, "schedule": plot_schedule, "warmup": plot_warmup}[kind]
    with plt.rc_context(STYLE):
        fig = draw(runs, metric)
        try:
            path.parent.mkdir(parents=True, exist_ok=True)
            fig.savefig(path, bbox_inches="tight")
        except OSError as exc:
            raise UserError(f"--out: cannot write {path}: {exc.strerror or exc}") from None
        finally:
            plt.close(fig)
    return path


# ---- data -------------------------------------------------------------------------------------
def mean_curve(members: list[RunRecord], column: str) -> tuple[list[float], list[float], list[float]]:
    """Steps, mean and std over seeds of a metrics.csv column (finite values only)."""
    by_step: dict[float, list[float]] = {}
    for run in members:
        for row in run.metrics:
            value, step = row.get(column), row.get("step")
            if value is not None and step is not None and math.isfinite(value):
                by_step.setdefault(step, []).append(value)
    steps = sorted(by_step)
    means = [sum(by_step[s]) / len(by_step[s]) for s in steps]
    stds = [math.sqrt(sum((v - m) ** 2 for v in by_step[s]) / len(by_step[s])) for s, m in zip(steps, means)]
    return steps, means, stds


def _colors(n: int) -> list[Any]:
    cmap = plt.get_cmap("tab10" if n <= 10 else "viridis")
    return [cmap(i if n <= 10 else i / max(1, n - 1)) for i in range(n)]


def _group_colors(keys: list[tuple[str, str, str]]) -> list[Any]:
    """tab10 for a few lines; for many, one colour family per arm, darker for later cells
    (e.g. higher learning rates), so that arms stay apart."""
    if len(keys) <= 10:
        return _colors(len(keys))
    families = ["Blues", "Oranges", "Greens", "Purples", "Reds", "Greys"]
    arms = list(dict.fromkeys(k[:2] for k in keys))
    out = []
    for key in keys:
        mine = [k for k in keys if k[:2] == key[:2]]
        shade = 0.35 + 0.6 * mine.index(key) / max(1, len(mine) - 1)
        out.append(plt.get_cmap(families[arms.index(key[:2]) % len(families)])(shade))
    return out


def _band(ax, steps, means, stds, color, label, style="-") -> None:
    ax.plot(steps, means, style, color=color, label=label, lw=1.4, ms=3)
    if any(stds):
        # m²/(m+s) = m/(1+s/m): as far below m as m+s is above it on a log axis, and never ≤ 0
        lo = [m * m / (m + s) if m > 0 else m - s for m, s in zip(means, stds)]
        ax.fill_between(steps, lo, [m + s for m, s in zip(means, stds)], color=color, alpha=0.18, lw=0)


def _loss_axis(ax, runs: list[RunRecord], column: str) -> None:
    """Log scale for positive losses, clipped above so that a diverged run does not flatten the rest."""
    values = [r[column] for run in runs for r in run.metrics if r.get(column) is not None and math.isfinite(r[column])]
    if values and min(values) > 0 and not higher_is_better(column):
        ax.set_yscale("log")
        firsts = [run.summary.get("first_loss") for run in runs if isinstance(run.summary.get("first_loss"), float)]
        if firsts and column == "loss":
            ax.set_ylim(top=3 * max(firsts))


def _legend(ax, n: int) -> None:
    if n:
        ax.legend(fontsize=7 if n > 6 else 8, ncol=1 if n <= 12 else 2)


def _figure_legend(fig, ax, n: int) -> None:
    """One legend below the panels, so that no line is hidden behind it."""
    if n:
        handles, labels = ax.get_legend_handles_labels()
        fig.legend(handles, labels, loc="upper center", bbox_to_anchor=(0.5, 0.0), ncol=min(n, 4 if n > 8 else 5),
                   fontsize=8)


# ---- figures ----------------------------------------------------------------------------------
def plot_curves(runs: list[RunRecord], metric: str = "loss"):
    """Train loss and (where evaluated) validation loss vs step, one line per arm or cell."""
    groups = group_runs(runs)
    has_val = any(r.get("val_loss") is not None for run in runs for r in run.metrics)
    fig, axes = plt.subplots(1, 2 if has_val else 1, figsize=(11 if has_val else 6, 4), squeeze=False)
    several = len({k[0] for k in groups}) > 1
    for (key, members), color in zip(groups.items(), _group_colors(list(groups))):
        label = group_label(key, several) + (f" ({len(members)} seeds)" if len(members) > 1 else "")
        label += " ✗ diverged" if any(r.diverged for r in members) else ""
        for ax, column in zip(axes[0], ["loss", "val_loss"]):
            steps, means, stds = mean_curve(members, column)
            if steps:
                _band(ax, steps, means, stds, color, label, "-" if column == "loss" else "o-")
    for ax, column, title in zip(axes[0], ["loss", "val_loss"], ["train loss (batch)", "validation loss"]):
        ax.set(xlabel="step", ylabel=column, title=title)
        _loss_axis(ax, runs, column)
    _figure_legend(fig, axes[0][0], len(groups))
    fig.suptitle(_title(runs, "loss curves, mean ± std over seeds"))
    return fig


def plot_lr(runs: list[RunRecord], metric: str = "loss"):
    """Final `metric` vs learning rate (log axis), one line per optimizer; diverged cells marked ✗."""
    table = lr_table(runs, metric)
    if table.empty:
        raise UserError("--kind lr: needs sweep cells with a learning rate", hint="pass a sweep folder from trx sweep")
    curves: dict[str, dict[float, list[RunRecord]]] = {}
    several = len({r.name for r in runs if r.cell}) > 1
    for run in runs:
        if run.cell is None or run.lr is None:
            continue
        rest = ",".join(f"{k}={v}" for k, v in run.overrides if k != "lr")
        curves.setdefault(group_label((run.name, run.arm, rest), several), {}).setdefault(run.lr, []).append(run)
    fig, ax = plt.subplots(figsize=(6.5, 4.2))
    top = blended_transform_factory(ax.transData, ax.transAxes)
    for (label, by_lr), color in zip(curves.items(), _colors(len(curves))):
        lrs = sorted(by_lr)
        ok = [lr for lr in lrs if not any(r.diverged or r.summary.get("status") != "complete" for r in by_lr[lr])]
        values = [[result(r, metric) for r in by_lr[lr]] for lr in ok]
        means = [sum(v) / len(v) for v in values]
        stds = [math.sqrt(sum((x - m) ** 2 for x in v) / len(v)) for v, m in zip(values, means)]
        ax.errorbar(ok, means, yerr=stds, fmt="o-", color=color, label=label, ms=4, capsize=2, lw=1.4)
        bad = [lr for lr in lrs if lr not in ok]
        ax.plot(bad, [0.96] * len(bad), "x", color=color, ms=8, mew=2, transform=top, clip_on=False)
        row = table[table["arm"] == label]
        if not row.empty and row.iloc[0]["best_lr"] == row.iloc[0]["best_lr"]:
            best = row.iloc[0]
            ax.plot([best["best_lr"]], [best[f"best_{metric}"]], "*", color=color, ms=13, mec="black", mew=0.6)
            if best["tolerance_decades"] > 0:
                ax.plot([best["tolerant_lr_lo"], best["tolerant_lr_hi"]], [0.02, 0.02], "-", color=color, lw=4,
                        alpha=0.6, transform=top, solid_capstyle="butt")
    ax.set_xscale("log")
    if not higher_is_better(metric) and all(v > 0 for v in ax.get_ylim()):
        ax.set_yscale("log")
    ax.set(xlabel="learning rate μ", ylabel=f"final {metric} (mean ± std over seeds)")
    ax.set_title(f"final {metric} vs learning rate (★ best, ✗ diverged, bar: within 10% of best)", fontsize=9)
    _legend(ax, len(curves))
    fig.suptitle(_title(runs, ""))
    return fig


def plot_schedule(runs: list[RunRecord], metric: str = "loss"):
    """The window actually used: lr/μ from the `lr` column of metrics.csv, one line per arm."""
    groups = group_runs(runs)
    several = len({k[0] for k in groups}) > 1
    fig, (ax_s, ax_lr) = plt.subplots(1, 2, figsize=(11, 4))
    for (key, members), color in zip(groups.items(), _group_colors(list(groups))):
        run = members[0]  # seeds share their schedule
        rows = [r for r in run.metrics if r.get("lr") is not None and r.get("step") is not None]
        if not rows:
            continue
        steps, lrs = [r["step"] for r in rows], [r["lr"] for r in rows]
        peak = run.lr or max(lrs)
        ax_s.plot(steps, [v / peak for v in lrs], "-", color=color, label=group_label(key, several), lw=1.4)
        ax_lr.plot(steps, lrs, "-", color=color, label=group_label(key, several), lw=1.4)
    ax_s.set(xlabel="step t", ylabel="s(t) = lr / μ", title="window s(t)", ylim=(-0.03, 1.05))
    ax_lr.set(xlabel="step t", ylabel="lr = μ·s(t)", title="learning rate used (main group)")
    _figure_legend(fig, ax_s, len(groups))
    fig.suptitle(_title(runs, "schedules from metrics.csv"))
    return fig


def _warmup(run: RunRecord) -> str:
    overrides = dict(run.overrides)
    if "schedule.warmup" in overrides:
        return overrides["schedule.warmup"]
    arm = ((run.config or {}).get("optimizers") or {}).get(run.arm) or {}
    return f"{(arm.get('schedule') or {}).get('warmup', 0):.4g}"


def plot_warmup(runs: list[RunRecord], metric: str = "loss"):
    """With and without warmup, one panel per optimizer: loss curves, mean ± std over seeds.
    Line style: the warmup; colour: the other grid values (e.g. lr), else the warmup too."""
    arms = list(dict.fromkeys(r.arm for r in sorted(runs, key=lambda r: r.arm)))
    fig, axes = plt.subplots(1, len(arms), figsize=(4.8 * len(arms), 4), squeeze=False)
    styles = ["-", "--", ":", "-."]
    for ax, arm in zip(axes[0], arms):
        mine = [r for r in runs if r.arm == arm]
        groups: dict[tuple[str, str], list[RunRecord]] = {}
        for run in mine:
            rest = ",".join(f"{k}={v}" for k, v in run.overrides if k != "schedule.warmup")
            groups.setdefault((rest, _warmup(run)), []).append(run)
        rests = list(dict.fromkeys(k[0] for k in sorted(groups)))
        warmups = sorted({k[1] for k in groups}, key=natural_key)
        colors = dict(zip(rests, _colors(len(rests))))
        for (rest, warmup), members in sorted(groups.items()):
            color = colors[rest] if len(rests) > 1 else _colors(len(warmups))[warmups.index(warmup)]
            steps, means, stds = mean_curve(members, metric)
            bad = sum(r.diverged for r in members)
            label = f"warmup={warmup}" + (f" {rest}" if rest else "") + (f" ({bad} diverged)" if bad else "")
            _band(ax, steps, means, stds, color, label, styles[warmups.index(warmup) % len(styles)])
        ax.set(xlabel="step", ylabel=metric, title=arm)
        _loss_axis(ax, mine, metric)
        _legend(ax, len(groups))
    seeds = max(len(m) for m in group_runs(runs).values())
    fig.suptitle(_title(runs, f"warmup ablation: {metric}, mean ± std over {seeds} seed(s)"))
    return fig


def _title(runs: list[RunRecord], what: str) -> str:
    names = sorted({r.name for r in runs if r.name})
    tasks = sorted({str(r.summary.get("task")) for r in runs if r.summary.get("task")})
    head = ", ".join(names) + (f" ({', '.join(tasks)})" if tasks else "")
    return f"{head}: {what}" if what else head
