"""The claims of several experiments judged as one family, as docs/results.md reports them.

`trx report` treats the claims of one experiment as a family (Holm over them). A page that
publishes the verdicts of several experiments tests all their claims at once; this script judges
them together too: for each claim its one-sided p, its verdict within its own report, and its
verdict with Holm over every claim of the folders given.

    python scripts/claims_family.py runs/filters_gpt/sweep runs/warmup_gpt/sweep ...
"""

from __future__ import annotations

import sys
from pathlib import Path

from trx.compare import default_metric, find_runs
from trx.config import parse_claims
from trx.report import evaluate_claim, family_verdicts, find_experiment
from trx.report_boundary import search_rule


def judged(folder: Path) -> list[tuple[str, object]]:
    """(experiment name, ClaimResult) for every claim the folder's experiment.yaml declares."""
    runs = find_runs([folder])
    experiment = find_experiment([folder], runs) or {}
    metric = default_metric(runs)
    claims = parse_claims(experiment.get("claims") or [])
    rule = search_rule(experiment)  # boundary claims read the sweep's stability rule
    return [(str(experiment.get("name", folder)), evaluate_claim(c, runs, metric, rule)) for c in claims]


def main(folders: list[str]) -> None:
    rows, own = [], []
    for folder in folders:
        mine = judged(Path(folder))
        rows += mine
        own += family_verdicts([r for _, r in mine])
    page = family_verdicts([r for _, r in rows])
    tested = sum(r.verdict != "not evaluated" for _, r in rows)
    print(f"{tested} claims in {len(folders)} experiments; Holm over all {tested} (one-sided, 2.5%)\n")
    print("| experiment | claim | one-sided p | alone | in its report (Holm) | on the page (Holm) | page-adjusted p |")
    print("|---|---|---:|---|---|---|---:|")
    for (name, r), (said_own, _), (said_page, p_page) in zip(rows, own, page):
        p = "–" if r.p is None else f"{r.p:.3g}"
        adj = "–" if p_page is None else f"{p_page:.3g}"
        print(f"| {name} | {r.text} | {p} | {r.verdict} | {said_own} | {said_page} | {adj} |")


if __name__ == "__main__":
    if len(sys.argv) < 2:
        sys.exit("usage: python scripts/claims_family.py RUN_DIR [RUN_DIR ...]")
    main(sys.argv[1:])
