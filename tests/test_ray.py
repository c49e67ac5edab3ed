"""`trx sweep --ray` on a real Ray cluster: a head and one more worker node started with
`ray start` on this machine, 1 CPU each.

Ray binds to the machine's interface address even when told 127.0.0.1, so the cluster and the
`trx sweep --ray auto` drivers it serves run inside namespaces of their own (`unshare`): a network
namespace where only loopback exists (no traffic leaves the machine), a PID namespace (the whole
cluster dies with it, also on a timeout) and a mount namespace (Ray's files on a private tmpfs).
Starting Ray takes a while, so one session runs every scenario (several at once where they do
not disturb each other) and each test checks its part of the record: equal to the local sweep,
a worker killed mid-cell, a folder the workers cannot see, Ctrl-C and the rerun, two sweeps on
one folder, `--ray local`, and no cluster at all.
"""

from __future__ import annotations

import csv
import json
import os
import secrets
import shutil
import subprocess
import sys
import time
from pathlib import Path
from typing import Any

import pytest
import yaml
from conftest import SAFETY_S

import trx
from trx.errors import UserError

ROOT = Path(trx.__file__).resolve().parents[1]  # the checkout under test: drivers and workers import it
SESSION_TIMEOUT_S = 2 * SAFETY_S  # safety nets only (a busy machine is 5-10x slower); each command has its own, smaller one
OBJECT_STORE_BYTES = 100_000_000  # Ray's minimum is 75 MiB

SWEEP = {  # 4 cells long enough to kill one between checkpoints
    "name": "raysweep",
    "seed": 0,
    "steps": 1000,
    "eval_every": 100,
    "checkpoint_every": 100,
    "log_every": 10,
    "threads": 1,
    "task": {"name": "logreg", "dataset": "wine", "batch_size": 16},
    "optimizers": {
        "sgd": {"lr": 0.1},
        "adam": {"lr": 0.01, "filter": {"name": "ema", "beta": 0.9}, "normalizer": {"name": "adam"}},
    },
    "sweep": {"grid": {"optimizers.*.lr": [0.01, 0.1]}, "seeds": [0]},
}

SESSION = r"""
set -u
ip link set lo up
mkdir -p /tmp/ray && mount -t tmpfs -o size=1g tmpfs /tmp/ray   # Ray's files: private, gone afterwards
export RAY_USAGE_STATS_ENABLED=0
cd "$W"
record() { echo $? > "$W/$1.rc"; }
stamp() { echo "$1 $(date +%s.%N)" >> "$W/times"; }   # how long each part took
trx_sweep() { timeout 1200 "$PY" -m trx sweep "$CFG" "$@"; }
sweep() { trx_sweep --ray auto "$@"; }
finish() {
  cp -r /tmp/ray/session_latest/logs "$W/ray-logs" 2>/dev/null
  timeout 300 "$PY" -m ray.scripts.scripts stop --force > "$W/stop.log" 2>&1
  stamp stopped
}
trap finish EXIT
# A cell of `out` that has a checkpoint and at least 20 updates still to run, with the Ray worker
# running it frozen (SIGSTOP): prints "CELL PID" (waits up to 15 minutes). On an idle machine a
# cell ends 0.2 s after it starts, so a signal sent to a cell that is merely running loses the race
# to its end; a frozen one cannot end before the test acts on it.
frozen_cell() {
  for i in $(seq 1 9000); do
    for c in "$1"/*/sweep/*/*/checkpoint.pt; do
      d=$(dirname "$c")
      pid=$(pgrep -f -x -- "ray::trx $NAME $(basename "$(dirname "$d")")/$(basename "$d")" | head -1)
      [ -n "$pid" ] && kill -STOP "$pid" 2>/dev/null || continue
      last=$(tail -n 1 "$d/metrics.csv" 2>/dev/null | cut -d, -f1)
      if [ -e "$c" ] && [ ! -e "$d/summary.json" ] && [ "${last:-$STEPS}" -le $((STEPS - 20)) ] 2>/dev/null; then
        echo "$d $pid"; return
      fi
      kill -CONT "$pid"
    done
    sleep 0.1
  done
}

# 0. no cluster yet: a one-line error; then a throwaway cluster of the driver's own
stamp none
sweep --out "$W/none" > "$W/none.log" 2>&1; record none
stamp local
(umask 022; mkdir -p "$W/home"; env -u RAY_AUTH_TOKEN -u RAY_AUTH_MODE HOME="$W/home" \
  timeout 240 "$PY" -m trx sweep "$CFG" --ray local --out "$W/raylocal" --grid "optimizers.*.lr=0.1" --set steps=100 \
  > "$W/raylocal.log" 2>&1; record raylocal)
find "$W/home" -name auth_token -printf "%m\n" > "$W/raylocal.token"   # a token file it left, with its mode
pgrep -c raylet > "$W/raylocal.left"

stamp cluster
timeout 600 "$PY" -m ray.scripts.scripts start --head --node-ip-address=127.0.0.1 --port=6379 --num-cpus=1 \
  --include-dashboard=false --object-store-memory=$MEM --temp-dir=/tmp/ray --disable-usage-stats > "$W/head.log" 2>&1
grep -q "Local node IP: 127.0.0.1" "$W/head.log" || exit 10
timeout 600 "$PY" -m ray.scripts.scripts start --address=127.0.0.1:6379 --num-cpus=1 \
  --object-store-memory=$MEM --disable-usage-stats > "$W/worker.log" 2>&1
grep -q "Local node IP: 127.0.0.1" "$W/worker.log" || exit 11
export RAY_ADDRESS=127.0.0.1:6379

# 0b. a driver not in token mode, with a token left in ~/.ray by an earlier run, given the address
stamp notoken
mkdir -p "$W/home2/.ray"; echo -n "$RAY_AUTH_TOKEN" > "$W/home2/.ray/auth_token"; chmod 600 "$W/home2/.ray/auth_token"
env -u RAY_AUTH_TOKEN -u RAY_AUTH_MODE -u RAY_ADDRESS HOME="$W/home2" timeout 240 "$PY" -m trx sweep "$CFG" \
  --ray 127.0.0.1:6379 --out "$W/notoken" > "$W/notoken.log" 2>&1; record notoken

# 1. together: a clean sweep; a driver that writes into a tmpfs only its own mount namespace
# sees, so that no worker sees its --out (as with --out on a node-local disk); a sweep stopped
# by Ctrl-C (SIGINT to its driver) once a cell of it has a checkpoint
stamp clean+blind+ctrl-c
mkdir -p "$W/blind"
(sweep --out "$W/ray" > "$W/ray.log" 2>&1; record ray) &
(unshare -m bash -c "mount -t tmpfs tmpfs '$W/blind' && timeout 1200 '$PY' -m trx sweep '$CFG' --ray auto --out '$W/blind'" \
  > "$W/blind.log" 2>&1; record blind) &
(sweep --out "$W/stop" > "$W/stop1.log" 2>&1; record stop1) &
read -r cell pid < <(frozen_cell "$W/stop")
if [ -n "$cell" ]; then
  pkill -INT -f -- "^$PY -m trx sweep .*--out $W/stop\$"
  kill -INT "$pid"; kill -CONT "$pid"   # the SIGINT that Ray's cancel delivers, waiting for the worker to run
fi
wait
cp -r "$W/stop" "$W/stopped"   # as Ctrl-C left it

# 2. kill -9 the worker process of a running cell once it has a checkpoint
stamp kill
sweep --out "$W/kill" > "$W/kill.log" 2>&1 &
driver=$!
read -r cell pid < <(frozen_cell "$W/kill")
if [ -n "$cell" ]; then
  kill -9 "$pid"
  cp "$cell/checkpoint.pt" "$W/killed.pt"; cp "$cell/metrics.csv" "$W/killed.csv"
  echo "$cell" > "$W/killed.cell"; echo "$pid" > "$W/killed.pid"
fi
wait $driver; record kill

# 2b. SIGTERM to a driver (what `timeout`, Slurm and Kubernetes send) once a cell has a checkpoint
stamp sigterm
sweep --out "$W/term" > "$W/term1.log" 2>&1 &
driver=$!
read -r cell pid < <(frozen_cell "$W/term")
if [ -n "$cell" ]; then
  pkill -TERM -f -- "^$PY -m trx sweep .*--out $W/term\$"
  kill -INT "$pid"; kill -CONT "$pid"
fi
wait $driver; record term1
cp -r "$W/term" "$W/termed"   # as SIGTERM left it

# 3. together: two sweeps of one config into one folder, and the stopped sweep run again
stamp twice+rerun
(sweep --out "$W/twice" > "$W/twice1.log" 2>&1; record twice1) &
(sweep --out "$W/twice" > "$W/twice2.log" 2>&1; record twice2) &
(sweep --out "$W/stop" > "$W/stop2.log" 2>&1; record stop2) &
(sweep --out "$W/term" > "$W/term2.log" 2>&1; record term2) &
wait
stamp end
"""


def namespace_problem() -> str | None:
    """Why this machine cannot run the session (None when it can)."""
    missing = [tool for tool in ("unshare", "ip", "mount", "pgrep") if shutil.which(tool) is None]
    if missing:
        return f"needs {', '.join(missing)} to keep the Ray cluster in a network namespace of its own"
    try:
        probe = subprocess.run(["unshare", "-n", "-p", "-f", "-m", "--mount-proc", "true"], capture_output=True,
                               text=True, timeout=30)
    except subprocess.TimeoutExpired:
        return "`unshare` did not answer within 30 s"
    if probe.returncode != 0:
        return f"needs `unshare -n` (root) to keep Ray's traffic on loopback: {probe.stderr.strip()}"
    return None


@pytest.fixture(scope="module")
def session(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """Run the local reference sweep, then every Ray scenario in one namespaced cluster session;
    returns the folder that holds what each left behind."""
    pytest.importorskip("ray", reason="Ray is an extra: pip install -e '.[ray]'")
    problem = namespace_problem()
    if problem:
        pytest.skip(problem)
    work = tmp_path_factory.mktemp("ray")
    config = work / "sweep.yaml"
    config.write_text(yaml.safe_dump(SWEEP))
    env = {**os.environ, "PYTHONPATH": os.pathsep.join([str(ROOT), os.environ.get("PYTHONPATH", "")]).rstrip(os.pathsep),
           "W": str(work), "PY": sys.executable, "CFG": str(config), "NAME": SWEEP["name"], "STEPS": str(SWEEP["steps"]),
           "MEM": str(OBJECT_STORE_BYTES)}
    for name in ("RAY_ADDRESS", "RAY_AUTH_TOKEN_PATH"):
        env.pop(name, None)
    env.update(ray_auth())
    (work / "times").write_text(f"local {time.time()}\n")
    local = subprocess.run([sys.executable, "-m", "trx", "sweep", str(config), "--jobs", "2", "--out", str(work / "local")],
                           env=env, capture_output=True, text=True, timeout=SAFETY_S)
    assert local.returncode == 0, local.stdout + local.stderr
    cmd = ["unshare", "-n", "-p", "-f", "-m", "--mount-proc", "--kill-child", "bash", "-c", SESSION]
    try:
        done = subprocess.run(cmd, env=env, capture_output=True, text=True, timeout=SESSION_TIMEOUT_S)
    except subprocess.TimeoutExpired:
        pytest.fail(f"the Ray session took over {SESSION_TIMEOUT_S} s; logs in {work}")
    (work / "session.log").write_text(done.stdout + done.stderr)
    assert done.returncode == 0, f"cluster session failed (rc {done.returncode}): {tail(work, 'head.log', 'worker.log')}"
    return work


def ray_auth() -> dict[str, str]:
    """One token for every Ray process of the session, given in the environment: token mode is
    Ray's default for local clusters (2.59+), and a token in ~/.ray (left by any earlier
    `ray.init()`) would otherwise turn it on for `ray start` but not for drivers given an address."""
    return {"RAY_AUTH_MODE": "token", "RAY_AUTH_TOKEN": secrets.token_hex(32)}


# ---- reading what the session left ------------------------------------------------------------
def tail(work: Path, *names: str, lines: int = 30) -> str:
    out = []
    for name in names:
        path = work / name
        text = path.read_text() if path.exists() else "(missing)"
        out.append(f"--- {name}\n" + "\n".join(text.splitlines()[-lines:]))
    return "\n".join(out)


def rc(work: Path, name: str) -> int:
    return int((work / f"{name}.rc").read_text())


def sweep_root(out: Path) -> Path:
    return out / SWEEP["name"] / "sweep"


def cell_dirs(out: Path) -> list[Path]:
    return sorted(p.parent for p in sweep_root(out).glob("*/*/config.yaml"))


def rows(path: Path, drop: str = "wall_time") -> list[list[str]]:
    """metrics.csv as text, without the column that measures time."""
    with path.open(newline="") as f:
        table = list(csv.reader(f))
    keep = [i for i, name in enumerate(table[0]) if name != drop]
    return [[r[i] for i in keep] for r in table]


def assert_same_metrics(out: Path, reference: Path) -> None:
    """Every cell of `out` has the reference's metrics.csv, bit for bit except wall_time."""
    mine, ref = cell_dirs(out), cell_dirs(reference)
    assert [p.relative_to(out) for p in mine] == [p.relative_to(reference) for p in ref]
    assert len(ref) == 4
    for a, b in zip(mine, ref):
        assert rows(a / "metrics.csv") == rows(b / "metrics.csv"), f"{a} differs from the local sweep"


# ---- the tests --------------------------------------------------------------------------------
@pytest.mark.slow
def test_ray_sweep_equals_local_sweep(session: Path) -> None:
    assert rc(session, "ray") == 0, tail(session, "ray.log")
    assert_same_metrics(session / "ray", session / "local")
    statuses = [json.loads((d / "summary.json").read_text())["status"] for d in cell_dirs(session / "ray")]
    assert statuses == ["complete"] * 4
    assert not list(sweep_root(session / "ray").glob(".trx-ray-*")), "the driver's marker file was left behind"


@pytest.mark.slow
def test_killed_worker_cell_resumes_from_its_checkpoint(session: Path) -> None:
    import torch

    assert (session / "killed.cell").exists(), "no cell was caught between checkpoints: " + tail(session, "kill.log")
    assert (session / "killed.pid").read_text().strip(), "no Ray worker process was found running the cell"
    assert rc(session, "kill") == 0, tail(session, "kill.log")
    cell = Path((session / "killed.cell").read_text().strip())
    resumed_from = torch.load(session / "killed.pt", weights_only=False)["step"]
    assert 0 < resumed_from < SWEEP["steps"]
    final = rows(cell / "metrics.csv", drop="")
    steps = [r[0] for r in final[1:]]
    assert len(steps) == len(set(steps)), "a step was written twice"
    # Rows before the checkpoint were kept from the killed attempt, wall_time and all: resumed, not redone.
    before = [r for r in rows(session / "killed.csv", drop="")[1:] if int(r[0]) < resumed_from]
    assert before and final[1:len(before) + 1] == before
    assert_same_metrics(session / "kill", session / "local")


@pytest.mark.slow
def test_worker_that_cannot_see_the_folder_is_a_clear_error(session: Path) -> None:
    log = (session / "blind.log").read_text()
    assert rc(session, "blind") == 2, log
    assert "cannot see" in log and "put --out on a filesystem every node mounts" in log, log
    assert "Traceback" not in log


@pytest.mark.slow
def test_two_sweeps_on_one_folder_write_each_step_once(session: Path) -> None:
    assert (rc(session, "twice1"), rc(session, "twice2")) == (0, 0), tail(session, "twice1.log", "twice2.log")
    assert_same_metrics(session / "twice", session / "local")


@pytest.mark.slow
def test_ctrl_c_saves_running_cells_and_the_same_command_finishes(session: Path) -> None:
    assert rc(session, "stop1") == 130, tail(session, "stop1.log")
    summaries = {d: json.loads((d / "summary.json").read_text()) for d in cell_dirs(session / "stopped")
                 if (d / "summary.json").exists()}
    interrupted = [d for d, s in summaries.items() if s["status"] == "interrupted"]
    assert interrupted, f"no cell was saved as interrupted: {summaries}"
    for d in interrupted:
        steps = [r[0] for r in rows(d / "metrics.csv")[1:]] if (d / "metrics.csv").exists() else []
        assert (d / "checkpoint.pt").exists() and len(steps) == len(set(steps))
    assert rc(session, "stop2") == 0, tail(session, "stop2.log")
    assert_same_metrics(session / "stop", session / "local")


@pytest.mark.slow
def test_sigterm_saves_running_cells_and_the_same_command_finishes(session: Path) -> None:
    assert rc(session, "term1") == 130, tail(session, "term1.log")
    assert "Traceback" not in (session / "term1.log").read_text()
    summaries = {d: json.loads((d / "summary.json").read_text()) for d in cell_dirs(session / "termed")
                 if (d / "summary.json").exists()}
    interrupted = [d for d, s in summaries.items() if s["status"] == "interrupted"]
    assert interrupted, f"no cell was saved as interrupted: {summaries}"
    for d in cell_dirs(session / "termed"):
        assert not (d / ".lock.holder").exists(), f"{d} names a holder that is gone"
    for d in interrupted:
        assert (d / "checkpoint.pt").exists()
    assert rc(session, "term2") == 0, tail(session, "term2.log")
    assert_same_metrics(session / "term", session / "local")


@pytest.mark.slow
def test_local_address_runs_a_throwaway_cluster_and_stops_it(session: Path) -> None:
    assert rc(session, "raylocal") == 0, tail(session, "raylocal.log")
    statuses = [json.loads((d / "summary.json").read_text())["status"] for d in cell_dirs(session / "raylocal")]
    assert statuses == ["complete", "complete"]
    assert (session / "raylocal.left").read_text().strip() == "0", "the throwaway cluster was left running"


@pytest.mark.slow
def test_local_address_leaves_no_token_that_others_can_read(session: Path) -> None:
    modes = (session / "raylocal.token").read_text().split()
    assert all(int(m, 8) & 0o077 == 0 for m in modes), f"~/.ray/auth_token left with mode {modes}"


@pytest.mark.slow
def test_a_driver_that_sends_no_token_to_a_token_cluster_is_told_the_fix(session: Path) -> None:
    log = (session / "notoken.log").read_text()
    assert rc(session, "notoken") == 2, log
    assert "demands Ray's auth token" in log and "RAY_AUTH_MODE=token" in log and "Traceback" not in log, log


@pytest.mark.slow
def test_no_cluster_is_a_clear_error(session: Path) -> None:
    log = (session / "none.log").read_text()
    assert rc(session, "none") == 2, log
    assert "cannot reach a Ray cluster" in log and "Traceback" not in log


# ---- without a cluster ------------------------------------------------------------------------
def test_without_ray_installed_the_error_names_the_extra(monkeypatch: pytest.MonkeyPatch) -> None:
    from trx.ray_executor import import_ray

    monkeypatch.setitem(sys.modules, "ray", None)  # `import ray` now raises ImportError
    with pytest.raises(UserError, match=r"pip install -e '\.\[ray\]'"):
        import_ray()


@pytest.mark.parametrize("cpus, gpus, flag", [(0, 0, "--cpus-per-cell"), (1, -1, "--gpus-per-cell")])
def test_resources_per_cell_are_checked(cpus: float, gpus: float, flag: str) -> None:
    from trx.ray_executor import RayExecutor

    with pytest.raises(UserError, match=flag):
        RayExecutor("auto", cpus, gpus)


def test_marker_is_unique_seen_while_it_exists_and_removed(tmp_path: Path) -> None:
    from trx.ray_executor import marker, sees

    with marker(tmp_path / "sweep") as one, marker(tmp_path / "sweep") as two:
        assert one != two and sees(one, wait_s=0) and sees(two, wait_s=0)
    assert not sees(one, wait_s=0) and not list((tmp_path / "sweep").iterdir())


def test_jobs_reach_workers_with_absolute_folders_and_threads_from_their_cpus(tmp_path: Path,
                                                                           monkeypatch: pytest.MonkeyPatch) -> None:
    from trx.jobs import ArmJob, CellMeta
    from trx.ray_executor import RayExecutor

    monkeypatch.chdir(tmp_path)
    job = ArmJob({}, "runs/x/sweep/sgd/lr=0.1,seed=0", CellMeta("x", "sgd", 0, {"optimizers.sgd.lr": 0.1}, "lr=0.1,seed=0"))
    placed = RayExecutor("auto", cpus_per_cell=2.5).placed(job)
    assert placed.dir == str(tmp_path / job.dir) and placed.threads == 2
    options = RayExecutor("auto", 2, 0.5).options(job)
    assert options["num_cpus"] == 2 and options["num_gpus"] == 0.5 and options["name"] == "trx x sgd/lr=0.1,seed=0"


def test_a_head_address_where_nothing_listens_fails_at_once() -> None:
    import socket

    from trx.ray_executor import check_reachable

    with socket.socket() as s:  # a loopback port that was free a moment ago
        s.bind(("127.0.0.1", 0))
        port = s.getsockname()[1]
    with pytest.raises(UserError, match="cannot reach a Ray cluster"):
        check_reachable(f"127.0.0.1:{port}", timeout_s=5)
    check_reachable("ray://example.invalid:10001")  # Ray Client addresses are left to Ray


# ---- the auth token and SIGTERM, without a cluster -----------------------------------------------
@pytest.fixture
def home(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Path:
    """A HOME of the test's own, no token and no address in the environment."""
    monkeypatch.setenv("HOME", str(tmp_path))
    for name in ("RAY_AUTH_TOKEN", "RAY_AUTH_TOKEN_PATH", "RAY_AUTH_MODE", "RAY_ADDRESS"):
        monkeypatch.delenv(name, raising=False)
    return tmp_path


def write_token(home: Path, mode: int) -> Path:
    path = home / ".ray" / "auth_token"
    path.parent.mkdir(mode=0o700)
    path.write_text(secrets.token_hex(32))
    path.chmod(mode)
    return path


def test_a_token_that_others_can_read_is_refused_with_the_chmod_to_run(home: Path, tmp_path: Path,
                                                                      write_config: Any) -> None:
    pytest.importorskip("ray", reason="Ray is an extra: pip install -e '.[ray]'")
    from typer.testing import CliRunner

    from trx.cli import app

    path = write_token(home, 0o644)
    res = CliRunner().invoke(app, ["sweep", str(write_config(SWEEP)), "--ray", "auto", "--out", str(tmp_path / "runs")])
    assert res.exit_code == 2, res.output
    assert f"chmod 600 {path}" in res.output and "mode 644" in res.output and "Traceback" not in res.output
    assert not list((tmp_path / "runs").rglob("metrics.csv"))


def test_a_private_token_or_one_given_in_the_environment_passes(home: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    from trx.ray_executor import check_token_file

    path = write_token(home, 0o600)
    check_token_file()
    path.chmod(0o640)
    monkeypatch.setenv("RAY_AUTH_TOKEN", "x" * 64)  # Ray reads the environment first, the file not at all
    check_token_file()


def test_a_throwaway_cluster_gets_a_fresh_token_in_the_environment_only(home: Path) -> None:
    from trx.ray_executor import throwaway_token

    with throwaway_token():
        token = os.environ["RAY_AUTH_TOKEN"]
        assert len(token) == 64 and os.environ["RAY_AUTH_MODE"] == "token"
    assert "RAY_AUTH_TOKEN" not in os.environ and "RAY_AUTH_MODE" not in os.environ
    assert not (home / ".ray").exists()


def test_our_sigterm_handler_survives_ray_init_replacing_it() -> None:
    import signal

    from trx.ray_executor import keeping_sigterm

    def ours(signum: int, frame: Any) -> None: ...

    old = signal.signal(signal.SIGTERM, ours)
    try:
        with keeping_sigterm():
            signal.signal(signal.SIGTERM, lambda signum, frame: sys.exit(signum))  # what ray.init installs
        assert signal.getsignal(signal.SIGTERM) is ours
    finally:
        signal.signal(signal.SIGTERM, old)


@pytest.mark.parametrize("demands, fails", [(True, True), (False, False)])
def test_a_head_that_demands_a_token_the_driver_will_not_send_fails_at_once(home: Path, demands: bool,
                                                                            fails: bool) -> None:
    """A stand-in for Ray's GCS on loopback that answers the cluster-id call as a token cluster
    (UNAUTHENTICATED) or as an open one."""
    grpc = pytest.importorskip("grpc")
    from concurrent.futures import ThreadPoolExecutor

    from trx.ray_executor import check_authenticates

    def cluster_id(request: bytes, context: Any) -> bytes:
        if demands:
            context.abort(grpc.StatusCode.UNAUTHENTICATED, "InvalidAuthToken: Authentication token is missing")
        return b""

    handler = grpc.method_handlers_generic_handler(
        "ray.rpc.NodeInfoGcsService", {"GetClusterId": grpc.unary_unary_rpc_method_handler(cluster_id)})
    server = grpc.server(ThreadPoolExecutor(max_workers=1), handlers=[handler])
    port = server.add_insecure_port("127.0.0.1:0")
    server.start()
    try:
        if fails:
            with pytest.raises(UserError, match="demands Ray's auth token") as err:
                check_authenticates(f"127.0.0.1:{port}")
            assert "RAY_AUTH_MODE=token" in (err.value.hint or "")
        else:
            check_authenticates(f"127.0.0.1:{port}")
    finally:
        server.stop(grace=None)


def test_a_token_the_cluster_refuses_is_one_line_with_the_fix() -> None:
    from types import SimpleNamespace

    from trx.ray_executor import init

    class AuthenticationError(Exception): ...

    def refuse(**options: Any) -> None:
        raise AuthenticationError("RPC error: InvalidAuthToken: Authentication token is missing or incorrect")

    ray = SimpleNamespace(exceptions=SimpleNamespace(AuthenticationError=AuthenticationError), init=refuse)
    with pytest.raises(UserError, match="refused this driver's auth token") as err:
        init(ray, "127.0.0.1:6379")
    assert "RAY_AUTH_MODE=token" in (err.value.hint or "")
