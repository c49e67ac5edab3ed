"""Newton–Schulz work per rank against world size, on CPU with gloo (threads per rank held equal).

    python scripts/bench_distributed.py [--layers 4] [--width 256] [--repeats 5]

Every rank holds the same filtered gradients (data parallelism); `sharded_map` gives each rank
a FLOP-balanced share of the matrices and all-gathers the results. Prints, per world size,
the NS FLOPs and wall time per rank per optimizer step, and the max deviation from the
single-process result.
"""

from __future__ import annotations

import argparse
import os
import tempfile
import time

import torch
import torch.distributed as dist
import torch.multiprocessing as mp

from trx.optim.matrix_sharding import balance, newton_schulz_flops, sharded_map
from trx.optim.normalizers import orthogonalize_all


def gpt_matrices(layers: int, width: int) -> list[torch.Tensor]:
    g = torch.Generator().manual_seed(0)
    shapes = [(3 * width, width), (width, width), (4 * width, width), (width, 4 * width)] * layers
    return [torch.randn(s, generator=g) for s in shapes]


def work(rank: int, world: int, init: str, args, queue) -> None:
    torch.set_num_threads(1)
    if world > 1:
        dist.init_process_group("gloo", init_method=init, rank=rank, world_size=world)
    mats = gpt_matrices(args.layers, args.width)
    costs = [newton_schulz_flops(m.shape) for m in mats]
    fn = lambda xs: orthogonalize_all(xs, 5, "keller", torch.float32)  # noqa: E731
    reference = fn(mats)
    out = sharded_map(mats, fn, costs)  # warm-up
    times = []
    for _ in range(args.repeats):
        t0 = time.perf_counter()
        out = sharded_map(mats, fn, costs)
        times.append(time.perf_counter() - t0)
    owner = balance(costs, world)
    flops = sum(c for c, r in zip(costs, owner) if r == rank)
    dev = max(float((a - b).abs().max()) for a, b in zip(out, reference))
    queue.put((world, rank, flops, min(times), dev))
    if world > 1:
        dist.destroy_process_group()


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--layers", type=int, default=4)
    p.add_argument("--width", type=int, default=256)
    p.add_argument("--repeats", type=int, default=5)
    args = p.parse_args()
    ctx = mp.get_context("spawn")
    rows = []
    for world in (1, 2):
        queue = ctx.Queue()
        with tempfile.TemporaryDirectory() as d:
            init = f"file://{os.path.join(d, 'rendezvous')}"
            procs = [ctx.Process(target=work, args=(r, world, init, args, queue)) for r in range(world)]
            for pr in procs:
                pr.start()
            rows += [queue.get(timeout=600) for _ in procs]
            for pr in procs:
                pr.join()
    base = {r[1]: r for r in rows if r[0] == 1}[0]
    print(f"Newton–Schulz (5 steps, fp32, 1 thread per rank) on {args.layers} layers of width {args.width}")
    print(f"{'world':>5} {'rank':>4} {'GFLOP/rank':>11} {'ms/step':>9} {'vs world 1':>10} {'max |Δ|':>9}")
    for world, rank, flops, t, dev in sorted(rows):
        print(f"{world:>5} {rank:>4} {flops / 1e9:>11.3f} {t * 1e3:>9.1f} {t / base[3]:>9.2f}x {dev:>9.1e}")


if __name__ == "__main__":
    main()
