"""Ray's cost on one machine: a 16-cell CPU sweep with local `--jobs 2` against `--ray auto` on a
cluster of two 1-CPU nodes (a head and a worker, `ray start`), both with two cells at a time;
with --repeats, the two kinds alternate (a fresh cluster each time) and medians are reported.

    sudo python scripts/bench_ray.py [--steps 1000] [--repeats 1]

The cluster runs inside namespaces of its own (`unshare`: only loopback exists there, and every
Ray process dies with it), so this needs root. Printed: wall time of each sweep (the driver
command from start to exit; starting the cluster is shown apart, as a cluster outlives sweeps),
per-cell time outside training (slots × wall / cells − mean training time from summary.json),
Ray's overhead per cell (slots × the difference of totals / cells, and the difference of time
outside training) and the ratio of total times (goal ≤ 1.1×).
"""

from __future__ import annotations

import argparse
import json
import os
import secrets
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import yaml

ROOT = Path(__file__).resolve().parents[1]
SLOTS = 2

SESSION = r"""
set -u
ip link set lo up
mkdir -p /tmp/ray && mount -t tmpfs -o size=1g tmpfs /tmp/ray
export RAY_USAGE_STATS_ENABLED=0
trap 'timeout 60 "$PY" -m ray.scripts.scripts stop --force > /dev/null 2>&1' EXIT
t0=$(date +%s.%N)
timeout 120 "$PY" -m ray.scripts.scripts start --head --node-ip-address=127.0.0.1 --port=6379 --num-cpus=1 \
  --include-dashboard=false --object-store-memory=100000000 --temp-dir=/tmp/ray --disable-usage-stats > "$W/head.log" 2>&1
grep -q "Local node IP: 127.0.0.1" "$W/head.log" || exit 10
timeout 120 "$PY" -m ray.scripts.scripts start --address=127.0.0.1:6379 --num-cpus=1 --object-store-memory=100000000 \
  --disable-usage-stats > "$W/worker.log" 2>&1 || exit 11
echo "cluster $(echo "$(date +%s.%N) - $t0" | bc)" >> "$W/times"
export RAY_ADDRESS=127.0.0.1:6379
for out in $OUTS; do
  t0=$(date +%s.%N)
  timeout 1800 "$PY" -m trx sweep "$CFG" --ray auto --out "$out" > "$out.log" 2>&1 || exit 12
  echo "ray $(echo "$(date +%s.%N) - $t0" | bc)" >> "$W/times"
done
"""


def config(steps: int) -> dict:
    """16 cells: 2 arms × 4 learning rates × 2 seeds of softmax regression on wine, 1 thread each."""
    return {
        "name": "bench_ray", "seed": 0, "steps": steps, "eval_every": max(1, steps // 4), "log_every": 10,
        "threads": 1, "task": {"name": "logreg", "dataset": "wine", "batch_size": 16},
        "optimizers": {
            "sgd": {"lr": 0.1},
            "adam": {"lr": 0.01, "filter": {"name": "ema", "beta": 0.9}, "normalizer": {"name": "adam"}},
        },
        "sweep": {"grid": {"optimizers.*.lr": [0.001, 0.01, 0.1, 1.0]}, "seeds": [0, 1]},
    }


def training_time(out: Path) -> list[float]:
    return [json.loads(p.read_text())["wall_time_s"] for p in sorted(out.glob("*/sweep/*/*/summary.json"))]


def run_local(cfg: Path, out: Path, env: dict) -> float:
    t0 = time.perf_counter()
    subprocess.run([sys.executable, "-m", "trx", "sweep", str(cfg), "--jobs", str(SLOTS), "--out", str(out)],
                   env=env, check=True, capture_output=True, timeout=1800)
    return time.perf_counter() - t0


def run_ray(cfg: Path, outs: list[Path], work: Path, env: dict) -> tuple[float, list[float]]:
    """Start a cluster, run one Ray sweep per folder in `outs`, stop it; (cluster start, sweep times)."""
    work.mkdir()
    env = {**env, "W": str(work), "CFG": str(cfg), "OUTS": " ".join(map(str, outs))}
    cmd = ["unshare", "-n", "-p", "-f", "-m", "--mount-proc", "--kill-child", "bash", "-c", SESSION]
    done = subprocess.run(cmd, env=env, capture_output=True, text=True, timeout=1800 * (len(outs) + 1))
    if done.returncode != 0:
        logs = [p for p in (work / "head.log", work / "worker.log", *(Path(f"{o}.log") for o in outs)) if p.exists()]
        sys.exit(f"the Ray session failed (rc {done.returncode}): {done.stderr[-2000:]}\n"
                 + "\n".join(f"--- {p}\n{p.read_text()[-2000:]}" for p in logs))
    times = [line.split() for line in (work / "times").read_text().splitlines()]
    return float(times[0][1]), [float(t) for kind, t in times if kind == "ray"]


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--steps", type=int, default=1000, help="updates per cell")
    parser.add_argument("--repeats", type=int, default=1, help="sweeps of each kind (the median is reported)")
    args = parser.parse_args()
    env = {**os.environ, "PY": sys.executable,
           "PYTHONPATH": os.pathsep.join(filter(None, [str(ROOT), os.environ.get("PYTHONPATH")]))}
    env.pop("RAY_ADDRESS", None)
    env.pop("RAY_AUTH_TOKEN_PATH", None)
    env.update(RAY_AUTH_MODE="token", RAY_AUTH_TOKEN=secrets.token_hex(32))  # one token for the whole cluster
    with tempfile.TemporaryDirectory(prefix="bench_ray") as tmp:
        work = Path(tmp)
        cfg = work / "sweep.yaml"
        cfg.write_text(yaml.safe_dump(config(args.steps)))
        local_outs = [work / f"local{i}" for i in range(args.repeats)]
        ray_outs = [work / f"ray{i}" for i in range(args.repeats)]
        local, ray, cluster = [], [], []
        for i in range(args.repeats):  # alternate, so that a change of load on the machine hits both
            local.append(run_local(cfg, local_outs[i], env))
            start, sweeps = run_ray(cfg, [ray_outs[i]], work / f"session{i}", env)
            cluster.append(start)
            ray += sweeps
        report(args, local, ray, statistics.median(cluster), local_outs, ray_outs)


def report(args, local: list[float], ray: list[float], cluster: float, local_outs: list[Path],
           ray_outs: list[Path]) -> None:
    cells = len(training_time(local_outs[0]))
    t_local, t_ray = statistics.median(local), statistics.median(ray)
    train_local = statistics.mean(t for out in local_outs for t in training_time(out))
    train_ray = statistics.mean(t for out in ray_outs for t in training_time(out))
    outside_local = SLOTS * t_local / cells - train_local
    outside_ray = SLOTS * t_ray / cells - train_ray
    print(f"{cells} cells of {args.steps} steps, {SLOTS} at a time, median of {args.repeats} sweep(s) each")
    print(f"local --jobs {SLOTS}: {t_local:7.1f} s   per cell: {train_local:.2f} s training, {outside_local:.2f} s outside")
    print(f"ray (2 × 1-CPU):  {t_ray:7.1f} s   per cell: {train_ray:.2f} s training, {outside_ray:.2f} s outside"
          f"   (starting the cluster: {cluster:.1f} s, not counted)")
    print(f"Ray overhead per cell: {SLOTS * (t_ray - t_local) / cells:+.2f} s of a slot from the totals, "
          f"{outside_ray - outside_local:+.2f} s outside training; total time ray/local: {t_ray / t_local:.2f}× "
          "(goal ≤ 1.1×)")


if __name__ == "__main__":
    main()
