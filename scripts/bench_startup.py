"""Start-up time of the CLI: how long a user waits for commands that train nothing.

    python scripts/bench_startup.py              # the trx of the current folder, best of 5
    python scripts/bench_startup.py --repeats 10

Each command runs as a fresh `python -m trx ...` process in the current folder (so it measures
that folder's trx), timed from start to exit; the table shows the best and the median of
--repeats runs, beside `python -c "import torch"` and an empty interpreter measured in the same
run, so numbers from different machines or loads can be compared. `compare` and `plot` read a
small run folder made first (untimed) with configs/quickstart.yaml in a temporary folder.
"""

from __future__ import annotations

import argparse
import os
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path


def env() -> dict[str, str]:
    out = {**os.environ, "PYTHONPATH": os.pathsep.join(filter(None, [os.getcwd(), os.environ.get("PYTHONPATH")]))}
    out.update(COLUMNS="120", MPLBACKEND="Agg")
    out.pop("TRX_DEBUG", None)
    return out


def timed(argv: list[str], repeats: int) -> list[float]:
    times = []
    for _ in range(repeats):
        start = time.perf_counter()
        res = subprocess.run(argv, capture_output=True, text=True, env=env())
        times.append(time.perf_counter() - start)
        if res.returncode != 0:
            raise SystemExit(f"{' '.join(argv)} exited {res.returncode}:\n{res.stderr[-2000:]}")
    return times


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--repeats", type=int, default=5, help="runs of each command (best and median shown)")
    args = p.parse_args()
    py, trx = sys.executable, [sys.executable, "-m", "trx"]
    where = subprocess.run([py, "-c", "import importlib.util as u; print(u.find_spec('trx').origin)"],
                           capture_output=True, text=True, env=env()).stdout.strip()
    with tempfile.TemporaryDirectory(prefix="trx-bench-startup-") as tmp:
        timed([*trx, "run", "configs/quickstart.yaml", "--out", tmp], 1)
        folder = str(Path(tmp) / "quickstart")
        commands = {
            "python -c pass": [py, "-c", "pass"],
            'python -c "import torch"': [py, "-c", "import torch"],
            "trx --help": [*trx, "--help"],
            "trx list": [*trx, "list"],
            "trx compare RUN": [*trx, "compare", folder],
            "trx plot RUN": [*trx, "plot", folder, "--out", str(Path(tmp) / "curves.png")],
        }
        print(f"trx from {where}; python {sys.version.split()[0]}; {os.cpu_count()} CPUs; "
              f"load {os.getloadavg()[0]:.1f}; best and median of {args.repeats}")
        print(f"{'command':<28} {'best s':>8} {'median s':>9} {'× import torch':>15}")
        reference = None
        for label, argv in commands.items():
            times = timed(argv, args.repeats)
            best = min(times)
            if label.endswith('"import torch"'):
                reference = best
            ratio = f"{best / reference:.2f}" if reference else ""
            print(f"{label:<28} {best:>8.2f} {statistics.median(times):>9.2f} {ratio:>15}", flush=True)


if __name__ == "__main__":
    main()
