"""`trx report`: a self-contained Markdown report of a run or sweep folder, with its PNG figures
beside it, readable on a code host without trx: what ran (config, environment, time), results
per arm or cell with their spread and intervals, the learning-rate tolerance, paired differences
against the first arm, and a verdict for every claim the experiment declares."""

from __future__ import annotations

import datetime as dt
import functools
from pathlib import Path
from typing import TYPE_CHECKING, Any

import pandas as pd

import trx
from trx.errors import UserError
from trx.io import atomic_write
from trx.report_boundary import boundary_figures, boundary_numbers, boundary_section, search_rule
from trx.rundir import CONFIG, EXPERIMENT, ExperimentDir, RunDir, value_text
from trx.compare import (RunRecord, axis_table, check_metric, compare_table, curve_band, curve_values,
                        default_metric, duration_text, failure_table, find_runs, higher_is_better, interval_text,
                        lr_curves, lr_table, natural_key, paired_table, reference_value, seed_failures, seed_values,
                        to_markdown, tolerance_curve_table)
from trx.claims import ClaimResult, num, one_per_seed, p_text, paired_runs, pnum, select, side_label
from trx.speed_transfer import judge_steps, judge_transfer, transfer_figures
from trx.stats import (CONTRADICTED, INCONCLUSIVE, TOLERANCES, Paired, decide, equivalence, failure_difference, holm,
                       paired_difference, tolerance_difference)

if TYPE_CHECKING:
    from trx.config import Claim, GroupSelector

ARM_COLUMNS = ("lr", "filter", "normalizer", "schedule", "weight_decay")


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
    figures = (draw_figures(runs, path, metric) + transfer_figures(runs, (experiment or {}).get("claims"), metric, path)
               + boundary_figures(runs, search_rule(experiment), path))
    arms = arm_order(runs, experiment)
    sections = [what_ran(runs, experiment, paths), results(runs, metric), lr_section(runs, metric),
                tolerance_section(runs, metric), paired_section(runs, metric, arms), axis_section(runs, metric),
                failure_section(runs, arms), boundary_section(runs, search_rule(experiment)),
                claims_section(runs, (experiment or {}).get("claims"), metric, search_rule(experiment)),
                figures_section(figures)]
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
        data = ExperimentDir(place).read_experiment()
        if data is not None:
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
    files = [RunDir(r.dir).summary for r in runs]
    times = sorted(dt.datetime.fromtimestamp(f.stat().st_mtime, dt.timezone.utc) for f in files if f.exists())
    when = (f"{times[0]:%Y-%m-%d %H:%M} – {times[-1]:%Y-%m-%d %H:%M} UTC" if times else "unknown")
    statuses = pd.Series([str(r.summary.get("status")) for r in runs]).value_counts()
    ns_runs = any(r.summary.get("ns_dtype") for r in runs)
    return [f"- trx {values('trx_version')}, torch {values('torch_version')}, python {values('python_version')}, "
            f"git {values('git_sha')}",
            f"- device {values('device')}, {values('threads')} thread(s), world size {values('world_size')}",
            f"- CPU {values('cpu')} ({values('cpu_isa')}; torch kernels {values('torch_cpu_capability')}), "
            f"torch CUDA {values('torch_cuda')}" + (f"; Newton–Schulz dtype {values('ns_dtype')}" if ns_runs else ""),
            f"- runs: {len(runs)} ({', '.join(f'{n} {s}' for s, n in statuses.items())}); "
            f"total wall time {duration_text(wall)} (sum over runs); finished {when}"]


def what_ran(runs: list[RunRecord], experiment: dict[str, Any] | None, paths: list[Path]) -> str:
    first = experiment or next((r.config for r in runs if r.config), None) or {}
    task = first.get("task") or {"name": runs[0].summary.get("task")}
    steps = sorted({str(r.summary.get("steps")) for r in runs if r.summary.get("steps") is not None})
    seeds = sorted({r.seed for r in runs if r.seed is not None})
    source = EXPERIMENT if experiment else f"each arm's {CONFIG}"
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
        f"The band is the run of learning rates around the best whose seed-mean improvement over the reference "
        f"(for a loss the metric at step 0, mean over runs, or the first train loss; for an accuracy the task's "
        f"chance level) is at least {1 - tolerance:.0%} of the best lr's; its edges are interpolated in log-lr "
        "between grid points, and a learning rate where any seed diverged is outside it. `tolerance_decades` is "
        "log10(hi / lo) of the seed-mean curve's band. `seed_decades` is the median of the per-seed band widths "
        "(each seed's own curve) with its order-statistic interval, of exact confidence `ci_conf` (75% at 3 "
        "seeds, 94% at 5: fewer seeds cannot give 95% without assumptions). A band that runs off the grid gives "
        "only a lower bound.", "", to_markdown(table)])


def tolerance_section(runs: list[RunRecord], metric: str) -> str:
    """Band width against the band's definition, per line: the number a width claim rests on
    depends on the tolerance chosen, and this shows how much."""
    table = tolerance_curve_table(runs, metric) if has_lr_axis(runs) else None
    if table is None or table.empty:
        return ""
    wide = {}
    for (arm, kind, tol), row in table.set_index(["arm", "kind", "tolerance"]).iterrows():
        name = f"{tol:.0%}" if kind == "relative" else f"±{tol:g}"
        bound = "≥ " if row["open"] else ""
        wide.setdefault(arm, {"arm": arm})[name] = (
            f"{bound}{num(row['decades'])} {interval_text(row['seed_decades_ci_lo'], row['seed_decades_ci_hi'])}")
    shown = pd.DataFrame(list(wide.values()), dtype=str)
    return "\n".join([
        f"## Band width against the tolerance (final {metric})", "",
        "Width in decades of the seed-mean curve's band for relative tolerances (within x% of the best "
        f"improvement) and absolute ones (within ±x {metric} of the best), with the order-statistic interval "
        "of the median per-seed width (confidence as in `ci_conf` above). `≥`: the band runs off the grid. "
        "A difference between arms that changes sign or size across the columns depends on the band's "
        "definition.", "", to_markdown(shown)])


def paired_section(runs: list[RunRecord], metric: str, arms: list[str]) -> str:
    """Each arm against the first, paired by seed; left out for lr sweeps (arms' grids differ, the
    band and the claims compare them there) and for a single arm."""
    if len(arms) < 2 or has_lr_axis(runs):
        return ""
    table = paired_table(runs, metric, arms[0])
    if "diff" not in table.columns or table["diff"].isna().all():
        return ""
    return "\n".join([f"## Paired differences against {arms[0]}", "", paired_words(metric, f"this − {arms[0]}"),
                      "", to_markdown(table)])


def paired_words(metric: str, what: str) -> str:
    better = "higher" if higher_is_better(metric) else "lower"
    return (f"`diff` is the mean over seeds of ({what}) in final {metric}, over the seeds both ran (runs at one "
            f"seed share initial weights and batches; a diverged seed ranks worst: it scores the untrained "
            f"model's value (the metric at step 0, or chance) or the worst any compared seed reached, whichever is worse); `[lo, hi]` is its 95% Student t interval. The verdict is on \"this is "
            f"better ({better})\" by the paired t test: supported when the interval excludes 0 in that direction, "
            "contradicted when it excludes 0 the other way, else inconclusive; differences within rounding decide "
            "nothing, and one that every seed repeats is judged by the exact sign-flip test. `p` is two-sided; `p_holm` adjusts it by Holm over the "
            "rows of this table — read a verdict whose `p_holm` is above 0.05 as exploratory.")


def axis_section(runs: list[RunRecord], metric: str) -> str:
    """The sweep's own question without claims: each cell against the same arm's cell at the
    first value of one grid axis (warmup on vs off within each arm)."""
    table = axis_table(runs, metric)
    if table.empty:
        return ""
    return "\n".join(["## Paired differences along each grid axis", "",
                      "Each cell against the cell of the same arm that differs only in one grid axis (`axis`), "
                      "at that axis's first value (`vs`). " + paired_words(metric, "this − vs"), "",
                      to_markdown(table)])


def failure_section(runs: list[RunRecord], arms: list[str]) -> str:
    """Divergence (and stall) counts per compared pair with the exact test; only when a run failed."""
    if not any(r.failed for r in runs):
        return ""
    table = failure_table(runs, None if has_lr_axis(runs) else (arms[0] if len(arms) > 1 else None))
    counts = ", ".join(f"{arm} {sum(bool(r.failed) for r in runs if r.arm == arm)}/{sum(r.arm == arm for r in runs)}"
                       for arm in arms)
    lines = ["## Divergence and stalls", "", f"Runs that diverged or stalled, per arm: {counts}."]
    if not table.empty:
        lines += ["", "Per compared pair of cells, by seed: `p` is the two-sided exact McNemar p on the seeds where "
                  "one side failed and the other did not; the verdict is on \"this fails less often\" (one-sided, "
                  "2.5%). With n seeds no p is below 2⁻ⁿ.", "", to_markdown(table)]
    return "\n".join(lines)


# ---- claims -----------------------------------------------------------------------------------


def evaluate_claim(claim: Claim, runs: list[RunRecord], default: str, boundary: dict[str, Any] | None = None
                   ) -> ClaimResult:
    """The verdict on one claim (before the family's adjustment), with its numbers in words."""
    metric = claim.metric or default
    sides = [claim.a, claim.b] if claim.b is not None else [claim.a]
    if claim.expect.startswith("b"):  # state every claim as "first is better / wider / stabler"
        sides = sides[::-1]
    text = claim.text.rstrip(". ")
    chosen = [select(runs, side, claim.evaluation_seeds if not claim.best_lr else None) for side in sides]
    for side, mine in zip(sides, chosen):
        if not mine:
            return ClaimResult(text, "not evaluated", f"no runs match {side_label(side)}", primary=claim.primary)
    judge = {"difference": _difference, "equivalence": _difference, "lr_tolerance": _tolerance,
             "stability": _stability, "steps_to_target": judge_steps, "lr_transfer": judge_transfer,
             "boundary": functools.partial(_boundary, search=boundary)}[claim.kind]
    return judge(claim, text, sides, chosen, metric)


def _difference(claim: Claim, text: str, sides: list[GroupSelector], chosen: list[list[RunRecord]],
                metric: str) -> ClaimResult:
    found = paired_runs(claim, text, sides, chosen, metric)
    if isinstance(found, ClaimResult):
        return found
    chosen, seeds_words = found
    a, b = (seed_values(mine, metric) for mine in chosen)
    better = higher_is_better(metric)
    untrained = reference_value(chosen[0] + chosen[1], metric)  # what a diverged seed scores at best
    if claim.kind == "equivalence":
        p = equivalence(a, b, float(claim.delta or 0.0), better, failure_score=untrained)
        test = f"two one-sided t tests against δ = ±{claim.delta:g}"
    else:
        p = paired_difference(a, b, better, delta=claim.delta or 0.0, failure_score=untrained)
        test = "paired t" + (f", δ = {claim.delta:g}" if claim.delta else "")
    failed = f", {p.failed} diverged run(s) ranked worst" if p.failed else ""
    excluded = f", {p.excluded} seed(s) excluded (unpaired or unfinished)" if p.excluded else ""
    note = f"; {p.note}" if p.note else ""
    numbers = (f"final {metric} {side_label(sides[0])} − {side_label(sides[1])} = {num(p.mean_diff)}, 95% CI "
               f"{interval_text(p.lo, p.hi)} ({test} over n = {p.n} seeds{failed}{excluded}{p_text(p)})"
               f"{seeds_words}{note}")
    return ClaimResult(text, p.verdict, numbers, p.p, p.p_against, claim.primary)


def _tolerance(claim: Claim, text: str, sides: list[GroupSelector], chosen: list[list[RunRecord]],
               metric: str) -> ClaimResult:
    curves = []
    for side, mine in zip(sides, chosen):
        found = lr_curves(mine)
        if len(found) != 1 or len(next(iter(found.values()))) < 2:
            why = "no lr axis" if not found else f"{len(found)} lr curves; add `where:` to pick one"
            return ClaimResult(text, "not evaluated", f"{side_label(side)}: {why}", primary=claim.primary)
        curves.append(next(iter(found.values())))
    (lrs_a, a), (lrs_b, b) = (curve_values(c, metric) for c in curves)
    refs = [reference_value([r for rs in c.values() for r in rs], metric) for c in curves]

    def width_diff(tol: float) -> Paired:
        return tolerance_difference(lrs_a, a, lrs_b, b, tol, higher_is_better(metric), *refs, delta=claim.delta or 0.0)

    p = width_diff(claim.tolerance)
    widths = []
    for side, curve in zip(sides, curves):
        band = curve_band(curve, metric, claim.tolerance)
        bound = "≥ " if band.open_low or band.open_high else ""
        seeds = ", ".join(f"{w:.2f}" for w in band.seed_widths)
        widths.append(f"{side_label(side)} {bound}{num(band.decades)} (per seed {seeds})")
    others = ", ".join(f"{t:.0%}: {num(width_diff(t).mean_diff)}" for t in TOLERANCES if t != claim.tolerance)
    note = f"; {p.note}" if p.note else ""
    numbers = (f"lr band width (decades, within {claim.tolerance:.0%} of the best improvement) "
               f"{side_label(sides[0])} − {side_label(sides[1])} = {num(p.mean_diff)} (mean of per-seed differences; "
               f"exact sign-flip test over n = {p.n} seeds{p_text(p)}); widths {'; '.join(widths)}; "
               f"the same difference at other tolerances: {others}{note}")
    return ClaimResult(text, p.verdict, numbers, p.p, p.p_against, claim.primary)


def _stability(claim: Claim, text: str, sides: list[GroupSelector], chosen: list[list[RunRecord]],
               metric: str) -> ClaimResult:
    bad = one_per_seed(text, sides, chosen, claim)
    if bad:
        return bad
    a, b = (seed_failures(mine) for mine in chosen)
    p = failure_difference(a, b)
    counts = [f"{side_label(side)} {sum(bool(v) for v in f.values())}/{len(f)}" for side, f in zip(sides, (a, b))]
    note = f"; {p.note}" if p.note else ""
    numbers = (f"seeds that diverged or stalled: {', '.join(counts)} (exact McNemar test on the discordant seeds "
               f"of n = {p.n}{p_text(p)}){note}")
    return ClaimResult(text, p.verdict, numbers, p.p, p.p_against, claim.primary)


def _boundary(claim: Claim, text: str, sides: list[GroupSelector], chosen: list[list[RunRecord]], metric: str,
              search: dict[str, Any] | None = None) -> ClaimResult:
    equivalent = claim.expect == "equivalent"
    p, numbers = boundary_numbers(chosen, [side_label(s) for s in sides], claim.delta or 0.0, equivalent, search)
    if p is None:
        return ClaimResult(text, "not evaluated", numbers, primary=claim.primary)
    return ClaimResult(text, p.verdict, numbers, p.p, p.p_against, claim.primary)


def family_verdicts(results: list[ClaimResult]) -> list[tuple[str, float | None]]:
    """(verdict, adjusted p) per claim: the primary claim judged alone at ALPHA, the others as a
    family, each direction's one-sided p-values Holm-adjusted over it. The p given is the one of
    the verdict's direction: the claimed one, or the other for a contradicted claim."""
    secondary = [i for i, r in enumerate(results) if not r.primary]
    adjusted_for = dict(zip(secondary, holm([results[i].p for i in secondary])))
    adjusted_against = dict(zip(secondary, holm([results[i].p_against for i in secondary])))
    out = []
    for i, r in enumerate(results):
        if r.verdict == "not evaluated":
            out.append((r.verdict, None))
            continue
        p_for = r.p if r.primary else adjusted_for[i]
        p_against = r.p_against if r.primary else adjusted_against[i]
        # adjusting only raises p: a verdict stands or becomes inconclusive, never the reverse
        # (an open band keeps a width claim inconclusive whatever its p)
        said = r.verdict if decide(p_for, p_against) == r.verdict else INCONCLUSIVE
        out.append((said, p_against if said == CONTRADICTED else p_for))  # the p that decided it
    return out


def claims_section(runs: list[RunRecord], claims: Any, metric: str, boundary: dict[str, Any] | None = None) -> str:
    if not claims:
        return ""
    from trx.config import parse_claims  # imports torch: only a report with claims pays for it

    results = [evaluate_claim(claim, runs, metric, boundary) for claim in parse_claims(claims)]
    lines = ["## Claims", "", CLAIMS_INTRO, "", family_words(results), ""]
    for res, (said, adjusted) in zip(results, family_verdicts(results)):
        tag = " (primary)" if res.primary else ""
        change = f" (alone: {res.verdict})" if said != res.verdict else ""
        other = " (the other way)" if said == CONTRADICTED else ""
        holm_p = "" if res.primary or adjusted is None else f"; Holm-adjusted p{other} = {pnum(adjusted)}"
        lines.append(f"- **{said}**{tag}{change}: {res.text}. {res.numbers}{holm_p}")
    tables: dict[str, list[str]] = {}  # two claims on one arm and axis share their table
    for res in results:
        if res.table:
            tables.setdefault(res.table, []).append(res.text)
    for table, texts in tables.items():
        lines += ["", f"{'; '.join(texts)}:", "", table]
    return "\n".join(lines)


def family_words(results: list[ClaimResult]) -> str:
    """What was tested and how: a claim without a p-value either way (an open band, too few shared
    seeds) cannot be falsely supported, so it is no member of the Holm family and not counted."""
    testable = [r for r in results if r.verdict != "not evaluated" and (r.p, r.p_against) != (None, None)]
    family = sum(not r.primary for r in testable)
    untested = sum(r.verdict != "not evaluated" for r in results) - len(testable)
    head = (f"{len(testable)} claim(s) tested: 1 primary, judged alone, and {family} judged as a family (Holm over "
            f"{family})." if any(r.primary for r in testable) else
            f"{len(testable)} claim(s) tested, judged as a family (Holm over {family}).")
    return head + (f" {untested} claim(s) could not be tested (no p-value: see each claim) and left the family."
                   if untested else "")


CLAIMS_INTRO = (
    "Each claim is a one-sided test at 2.5% (the tail of a 95% interval), chosen for few seeds "
    "(docs/statistics.md): a final metric by the paired t test; an lr-band width by the exact sign-flip "
    "test on per-seed widths (n seeds cannot reach a p below 2⁻ⁿ, so fewer than 6 seeds cannot support it); "
    "stability by the exact McNemar test; equivalence by two one-sided t tests against δ; steps to a target by "
    "the paired t test on log10 steps (a seed that never reaches it scores one step past the end); lr transfer "
    "by the exact sign-flip test on per-seed slopes of log best lr on log width (transfers: two one-sided tests "
    "against ±δ; shifts: slope ≠ 0, each side at 2.5%). Supported: the test "
    "rejects \"no difference beyond δ\" in the claimed direction (δ: the claim's smallest difference that "
    "matters, else rounding); contradicted: the same the other way; otherwise inconclusive. A diverged seed "
    "ranks worst, never drops out. `p` is the claim's one-sided p-value.")


# ---- figures ----------------------------------------------------------------------------------
def has_lr_axis(runs: list[RunRecord]) -> bool:
    """Some arm of a sweep ran at two or more learning rates (at equal other grid values)."""
    return any(len(by_lr) >= 2 for by_lr in lr_curves(runs).values())


def figure_kinds(runs: list[RunRecord]) -> list[str]:
    kinds = ["curves"]
    if has_lr_axis(runs):
        kinds += ["lr", "band"]
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
            "warmup": "Warmup ablation", "band": "lr band width against the tolerance",
            "transfer": "Best learning rate against width", "boundary": "Largest stable lr per seed"}


def figures_section(figures: list[tuple[str, str]]) -> str:
    if not figures:
        return ""
    lines = ["## Figures", ""]
    for kind, name in figures:
        lines += [f"![{CAPTIONS.get(kind, kind)}]({name})", ""]
    return "\n".join(lines).rstrip()


def _now() -> str:
    return f"{dt.datetime.now(dt.timezone.utc):%Y-%m-%d %H:%M} UTC"

