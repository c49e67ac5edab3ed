"""`trx report`: a self-contained Markdown report of a run or sweep folder, with its PNG figures
beside it, readable on a code host without trx: what ran (config, environment, time), results
per arm or cell with their spread and intervals, the learning-rate tolerance, paired differences
against the first arm, and a verdict for every claim the experiment declares."""

from __future__ import annotations

import datetime as dt
import math
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import pandas as pd

import trx
from trx.errors import UserError
from trx.io import atomic_write, read_yaml
from trx.report import (RunRecord, check_metric, compare_table, curve_band, curve_values, default_metric, find_runs,
                        higher_is_better, initial_value, interval_text, lr_curves, lr_table, natural_key,
                        paired_table, result, seed_values, to_markdown, value_text)
from trx.stats import paired_difference, tolerance_difference

ARM_COLUMNS = ("lr", "filter", "normalizer", "schedule", "weight_decay")
CLAIM_KINDS = {"difference": ("a_better", "b_better"), "lr_tolerance": ("a_wider", "b_wider")}


def write_report(paths: list[Path], out: Path | None = None, metric: str | None = None) -> Path:
    """Write `report.md` for the run or sweep folders `paths` (default: into the first folder; `out`
    is a .md file or a folder) and its figures beside it; return the report's path."""
    if not paths:
        raise UserError("RUN_DIR: pass a run or sweep folder", hint="e.g. trx report runs/lr_sweep/sweep")
    runs = find_runs([Path(p) for p in paths])
    metric = metric or default_metric(runs)
    check_metric(runs, metric)
    path = report_path(Path(paths[0]), out)
    experiment = find_experiment([Path(p) for p in paths], runs)
    figures = draw_figures(runs, path, metric)
    sections = [what_ran(runs, experiment, paths), results(runs, metric), lr_section(runs, metric),
                paired_section(runs, metric, arm_order(runs, experiment)),
                claims_section(runs, (experiment or {}).get("claims"), metric), figures_section(figures)]
    title = ", ".join(sorted({r.name for r in runs if r.name})) or "trx runs"
    head = f"# {title}: report\n\nWritten by trx {trx.__version__} on {_now()} from {len(runs)} run folder(s)."
    try:
        atomic_write(path, "\n\n".join([head, *[s for s in sections if s]]) + "\n")
    except OSError as exc:
        raise UserError(f"--out: cannot write {path}: {exc.strerror or exc}") from None
    return path


def report_path(first: Path, out: Path | None) -> Path:
    if out is not None:
        return out if out.suffix.lower() == ".md" else out / "report.md"
    return (first if first.is_dir() else first.parent) / "report.md"


def find_experiment(paths: list[Path], runs: list[RunRecord]) -> dict[str, Any] | None:
    """The experiment.yaml at the experiment root: in a given folder, else up to three levels above
    a run folder (seed → arm → experiment; cell → arm → sweep)."""
    places = [p if p.is_dir() else p.parent for p in paths]
    places += [parent for r in runs for parent in list(r.dir.parents)[:3]]
    for place in dict.fromkeys(p.resolve() for p in places):
        data = read_yaml(place / "experiment.yaml")
        if isinstance(data, dict):
            return data
    return None


def arm_order(runs: list[RunRecord], experiment: dict[str, Any] | None) -> list[str]:
    """Arms in config order where the experiment says it, else as found."""
    found = list(dict.fromkeys(r.arm for r in sorted(runs, key=lambda r: r.arm)))
    declared = [a for a in ((experiment or {}).get("optimizers") or {}) if a in found]
    return declared + [a for a in found if a not in declared]


# ---- what ran ---------------------------------------------------------------------------------
def inline(value: Any) -> str:
    """A config value on one line: numbers %.4g, `{name: x, k: v}` as `x(k=v)`."""
    if isinstance(value, dict):
        rest = ", ".join(f"{k}={inline(v)}" for k, v in value.items() if k != "name" and v is not None)
        return f"{value['name']}({rest})" if "name" in value else "{" + rest + "}"
    if isinstance(value, list):
        return "[" + ", ".join(inline(v) for v in value) + "]"
    return value_text(value) if value is not None else "-"


def arm_configs(runs: list[RunRecord], experiment: dict[str, Any] | None) -> dict[str, dict[str, Any]]:
    """Each arm's settings: from experiment.yaml, else the first run folder's config.yaml."""
    declared = (experiment or {}).get("optimizers") or {}
    out: dict[str, dict[str, Any]] = {}
    for run in sorted(runs, key=lambda r: r.arm):
        if run.arm not in out:
            own = ((run.config or {}).get("optimizers") or {}).get(run.arm)
            out[run.arm] = declared.get(run.arm) or own or {}
    return out


def arms_table(runs: list[RunRecord], experiment: dict[str, Any] | None) -> str:
    configs = arm_configs(runs, experiment)
    rows = []
    for arm in arm_order(runs, experiment):
        cfg = configs.get(arm) or {}
        swept = {k.split(".")[0] for r in runs if r.arm == arm for k, _ in r.overrides}
        row = {"arm": arm, **{c: "swept (grid below)" if c in swept else inline(cfg.get(c)) for c in ARM_COLUMNS}}
        row["other"] = "; ".join(f"{k}: {inline(v)}" for k, v in cfg.items()
                                 if k not in ARM_COLUMNS and v is not None) or "-"
        rows.append(row)
    return to_markdown(pd.DataFrame(rows, dtype=str))


def grid_lines(runs: list[RunRecord]) -> list[str]:
    """The grid values actually found, per arm: `- muon: lr ∈ {0.001, …}`."""
    lines = []
    for arm in sorted({r.arm for r in runs if r.overrides}):
        axes: dict[str, set[str]] = {}
        for run in runs:
            if run.arm == arm:
                for k, v in run.overrides:
                    axes.setdefault(k, set()).add(v)
        text = "; ".join(f"`{k}` ∈ {{{', '.join(sorted(vs, key=natural_key))}}}" for k, vs in axes.items())
        lines.append(f"- {arm}: {text}")
    return lines


def environment(runs: list[RunRecord]) -> list[str]:
    """Versions, device and time, from the runs' summary.json (distinct values listed)."""
    def values(key: str) -> str:
        found = list(dict.fromkeys(str(r.summary[key]) for r in runs if r.summary.get(key) is not None))
        return ", ".join(found) or "unknown"

    wall = sum(float(r.summary.get("wall_time_s") or 0.0) for r in runs)
    times = sorted(dt.datetime.fromtimestamp((r.dir / "summary.json").stat().st_mtime, dt.timezone.utc)
                   for r in runs if (r.dir / "summary.json").exists())
    when = (f"{times[0]:%Y-%m-%d %H:%M} – {times[-1]:%Y-%m-%d %H:%M} UTC" if times else "unknown")
    statuses = pd.Series([str(r.summary.get("status")) for r in runs]).value_counts()
    ns_runs = any(r.summary.get("ns_dtype") for r in runs)
    return [f"- trx {values('trx_version')}, torch {values('torch_version')}, python {values('python_version')}, "
            f"git {values('git_sha')}",
            f"- device {values('device')}, {values('threads')} thread(s), world size {values('world_size')}",
            f"- CPU {values('cpu')} ({values('cpu_isa')}; torch kernels {values('torch_cpu_capability')}), "
            f"torch CUDA {values('torch_cuda')}" + (f"; Newton–Schulz dtype {values('ns_dtype')}" if ns_runs else ""),
            f"- runs: {len(runs)} ({', '.join(f'{n} {s}' for s, n in statuses.items())}); "
            f"total wall time {_duration(wall)} (sum over runs); finished {when}"]


def what_ran(runs: list[RunRecord], experiment: dict[str, Any] | None, paths: list[Path]) -> str:
    first = experiment or next((r.config for r in runs if r.config), None) or {}
    task = first.get("task") or {"name": runs[0].summary.get("task")}
    steps = sorted({str(r.summary.get("steps")) for r in runs if r.summary.get("steps") is not None})
    seeds = sorted({r.seed for r in runs if r.seed is not None})
    source = "experiment.yaml" if experiment else "each arm's config.yaml"
    lines = ["## What ran", "",
             f"- folders: {', '.join(f'`{Path(p).name}`' for p in paths)}",
             f"- task: {inline(task)}",
             f"- steps: {', '.join(steps) or 'unknown'}; seeds: {', '.join(map(str, seeds)) or 'unknown'}",
             "", f"Arms (settings from {source}):", "", arms_table(runs, experiment)]
    grid = grid_lines(runs)
    if grid:
        lines += ["", "Grid values found:", "", *grid]
    lines += ["", "Environment:", "", *environment(runs)]
    return "\n".join(lines)


# ---- results ----------------------------------------------------------------------------------
SPREAD = ("`±` is the sample standard deviation over the n seeds of a row (n − 1 in the denominator); "
          "`[lo, hi]` is the 95% Student t interval of the mean over those seeds.")


def results(runs: list[RunRecord], metric: str) -> str:
    table = compare_table(runs, metric)
    main = f"final_{metric}"
    keep = ["run", "seeds", "status", main, *(["final_loss"] if metric != "loss" else []), "diverged", "wall_time_s"]
    spread = [c for c in table.columns if any(c == f"{k}{s}" for k in keep for s in ("_std", "_ci_lo", "_ci_hi"))]
    shown = table[[c for c in table.columns if c in keep or c in spread]]
    return "\n".join([f"## Results: final {metric}", "", SPREAD, "", to_markdown(shown)])


def lr_section(runs: list[RunRecord], metric: str, tolerance: float = 0.1) -> str:
    if not has_lr_axis(runs):
        return ""
    table = lr_table(runs, metric, tolerance)
    if table.empty:  # lr varies, but over fewer than three values per line: no band to measure
        return ""
    return "\n".join([
        f"## Learning-rate tolerance (final {metric})", "",
        f"The band is the run of learning rates around the best whose seed-mean improvement over the initial "
        f"value (the metric at step 0, mean over runs; for a loss not evaluated at step 0, the first train loss) "
        f"is at least {1 - tolerance:.0%} of the best lr's; its edges are interpolated in log-lr between "
        "grid points, and a learning rate where any seed diverged is outside it. `tolerance_decades` is "
        "log10(hi / lo) with a 95% bootstrap interval over seeds (seeds drawn jointly across learning rates). "
        "A band that runs off the grid gives only a lower bound.", "", to_markdown(table)])


def paired_section(runs: list[RunRecord], metric: str, arms: list[str]) -> str:
    """Each arm against the first, paired by seed; left out for lr sweeps (arms' grids differ, the
    band and the claims compare them there) and for a single arm."""
    if len(arms) < 2 or has_lr_axis(runs):
        return ""
    table = paired_table(runs, metric, arms[0])
    if "diff" not in table.columns or table["diff"].isna().all():
        return ""
    better = "higher" if higher_is_better(metric) else "lower"
    return "\n".join([
        f"## Paired differences against {arms[0]}", "",
        f"`diff` is the mean over seeds of (this − {arms[0]}) in final {metric}, over the seeds both ran "
        f"(arms at one seed share initial weights and batches); `[lo, hi]` is its 95% Student t interval. "
        f"The verdict is on \"this is better ({better}) than {arms[0]}\": supported when the interval excludes 0 "
        "in that direction, contradicted when it excludes 0 the other way, else inconclusive.", "",
        to_markdown(table)])


# ---- claims -----------------------------------------------------------------------------------
@dataclass(frozen=True)
class ClaimResult:
    text: str
    verdict: str  # supported | contradicted | inconclusive | not evaluated
    numbers: str


def select(runs: list[RunRecord], side: Any, where_path: str) -> list[RunRecord]:
    """The runs of one side of a claim: `{arm: x, where: {key below the arm: value}}`."""
    if not isinstance(side, dict) or "arm" not in side:
        raise UserError(f"{where_path}: expected {{arm: NAME, where: {{key: value}}}}, got {side!r}")
    where = {str(k): value_text(v) for k, v in (side.get("where") or {}).items()}
    return [r for r in runs
            if r.arm == str(side["arm"]) and all(dict(r.overrides).get(k) == v for k, v in where.items())]


def _label(side: dict[str, Any]) -> str:
    where = ",".join(f"{k}={value_text(v)}" for k, v in (side.get("where") or {}).items())
    return f"{side['arm']}" + (f" ({where})" if where else "")


def evaluate_claim(claim: Any, runs: list[RunRecord], default: str, index: int) -> ClaimResult:
    path = f"claims.{index}"
    if not isinstance(claim, dict):
        raise UserError(f"{path}: expected a mapping with text, kind, a, b, expect")
    kind, expect = claim.get("kind", "difference"), claim.get("expect")
    if kind not in CLAIM_KINDS:
        raise UserError(f"{path}.kind: must be one of {', '.join(CLAIM_KINDS)}, got {kind!r}")
    if expect not in CLAIM_KINDS[kind]:
        raise UserError(f"{path}.expect: must be {' or '.join(CLAIM_KINDS[kind])} for {kind}, got {expect!r}")
    metric = str(claim.get("metric") or default)
    sides = [claim.get("a"), claim.get("b")]
    chosen = [select(runs, s, f"{path}.{n}") for s, n in zip(sides, "ab")]
    if expect.startswith("b"):  # state every claim as "first is better / wider"
        sides, chosen = sides[::-1], chosen[::-1]
    text = str(claim.get("text") or f"{_label(sides[0])} vs {_label(sides[1])}").rstrip(". ")
    for side, mine in zip(sides, chosen):
        if not mine:
            return ClaimResult(text, "not evaluated", f"no runs match {_label(side)}")
    if kind == "difference":
        return _difference(text, sides, chosen, metric)
    return _tolerance(text, sides, chosen, metric, float(claim.get("tolerance", 0.1)))


def _difference(text: str, sides: list[dict[str, Any]], chosen: list[list[RunRecord]], metric: str) -> ClaimResult:
    for side, mine in zip(sides, chosen):
        if len({r.seed for r in mine}) < len(mine):
            why = f"{_label(side)}: several runs per seed; add `where:` to pick one cell"
            return ClaimResult(text, "not evaluated", why)
    a, b = (seed_values(mine, metric) for mine in chosen)
    p = paired_difference(a, b, higher_is_better(metric))
    excluded = f", {p.excluded} excluded (diverged or unpaired)" if p.excluded else ""
    numbers = (f"final {metric} {_label(sides[0])} − {_label(sides[1])} = {_num(p.mean_diff)}, 95% CI "
               f"{interval_text(p.lo, p.hi)} (paired t over n = {p.n} seeds{excluded})")
    return ClaimResult(text, p.verdict, numbers)


def _tolerance(text: str, sides: list[dict[str, Any]], chosen: list[list[RunRecord]], metric: str,
               tolerance: float) -> ClaimResult:
    curves = []
    for side, mine in zip(sides, chosen):
        found = lr_curves(mine)
        if len(found) != 1 or len(next(iter(found.values()))) < 2:
            why = "no lr axis" if not found else f"{len(found)} lr curves; add `where:` to pick one"
            return ClaimResult(text, "not evaluated", f"{_label(side)}: {why}")
        curves.append(next(iter(found.values())))
    (lrs_a, a), (lrs_b, b) = (curve_values(c, metric) for c in curves)
    inits = [initial_value([r for rs in c.values() for r in rs], metric) for c in curves]
    p = tolerance_difference(lrs_a, a, lrs_b, b, tolerance, higher_is_better(metric), *inits)
    widths = []
    for side, curve in zip(sides, curves):
        band = curve_band(curve, metric, tolerance)
        bound = "≥ " if band.open_low or band.open_high else ""
        widths.append(f"{_label(side)} {bound}{_num(band.decades)} {interval_text(*(band.ci or (None, None)))}")
    note = "; ≥: the band runs off the grid, its width is a lower bound" if "≥" in "".join(widths) else ""
    numbers = (f"lr band width (decades, within {tolerance:.0%} of the best improvement) "
               f"{_label(sides[0])} − {_label(sides[1])} = {_num(p.mean_diff)}, 95% bootstrap CI "
               f"{interval_text(p.lo, p.hi)} over n = {p.n} seeds; widths {'; '.join(widths)}{note}")
    return ClaimResult(text, p.verdict, numbers)


def claims_section(runs: list[RunRecord], claims: Any, metric: str) -> str:
    if not claims:
        return ""
    if not isinstance(claims, list):
        raise UserError("claims: expected a list of claims")
    lines = ["## Claims", "",
             "Supported: the 95% interval excludes 0 in the claimed direction; contradicted: it excludes 0 the "
             "other way; otherwise inconclusive.", ""]
    for i, claim in enumerate(claims):
        res = evaluate_claim(claim, runs, metric, i)
        lines.append(f"- **{res.verdict}**: {res.text}. {res.numbers}")
    return "\n".join(lines)


# ---- figures ----------------------------------------------------------------------------------
def has_lr_axis(runs: list[RunRecord]) -> bool:
    """Some arm of a sweep ran at two or more learning rates (at equal other grid values)."""
    return any(len(by_lr) >= 2 for by_lr in lr_curves(runs).values())


def figure_kinds(runs: list[RunRecord]) -> list[str]:
    kinds = ["curves"]
    if has_lr_axis(runs):
        kinds.append("lr")
    if any(k.split(".")[-1] == "warmup" for r in runs for k, _ in r.overrides):
        kinds.append("warmup")
    return kinds


def draw_figures(runs: list[RunRecord], report: Path, metric: str) -> list[tuple[str, str]]:
    """PNG figures beside the report as `<stem>_<kind>.png`; a figure the data cannot make
    (trx.plots refuses with a UserError) is left out. Returns (kind, file name) pairs."""
    from trx.plots import make_plot

    drawn = []
    for kind in figure_kinds(runs):
        name = f"{report.stem}_{kind}.png"
        try:
            try:
                make_plot(kind, runs, report.parent / name, metric)
            except UserError:  # a metric only in summary.json: the curves show the training loss
                if kind != "curves" or metric == "loss":
                    raise
                make_plot(kind, runs, report.parent / name, "loss")
        except UserError:
            continue
        drawn.append((kind, name))
    return drawn


CAPTIONS = {"curves": "Loss curves, mean ± sd over seeds", "lr": "Final result vs learning rate",
            "warmup": "Warmup ablation"}


def figures_section(figures: list[tuple[str, str]]) -> str:
    if not figures:
        return ""
    lines = ["## Figures", ""]
    for kind, name in figures:
        lines += [f"![{CAPTIONS.get(kind, kind)}]({name})", ""]
    return "\n".join(lines).rstrip()


def _num(value: float | None) -> str:
    return "-" if value is None or not math.isfinite(value) else f"{value:.4g}"


def _duration(seconds: float) -> str:
    return f"{seconds:.1f} s" if seconds < 120 else f"{seconds / 60:.1f} min"


def _now() -> str:
    return f"{dt.datetime.now(dt.timezone.utc):%Y-%m-%d %H:%M} UTC"

