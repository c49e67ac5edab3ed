"""Benchmark and accuracy tables for trx.optim.newton_schulz (numbers in docs/newton_schulz.md).

    python scripts/bench_ns.py                  # CPU timings, < 1 minute on 2 cores
    python scripts/bench_ns.py --table          # orthogonality error table (markdown), CPU float32
    python scripts/bench_ns.py --device cuda    # GPU: TFLOP/s vs plain bf16 matmul, eager vs compile
    python scripts/bench_ns.py --device cpu --roofline --tiny   # the GPU report's code on tiny CPU shapes

Shapes are the Muon matrices of a GPT, stacked the way trx stacks them (one (L, m, n) batch per
shape): per layer (d, 3d), (d, d), (4d, d), (d, 4d). `small_gpt` is d=256 with 4 layers,
`gpt2_small` d=768 with 12 layers (1 on CPU unless --layers, to stay under a minute).

The roofline report (`--device cuda`) gives, per stacked shape, the TFLOP/s of each route counting
the standard iteration's FLOPs, and two references: the same GEMMs without the scaling and adds
(`chain`), and one plain square bf16 matmul with the same FLOPs (`same-FLOP mm`, k×k×k with
2k³ = the stack's FLOPs). The summary line is the issue's target: eager Newton–Schulz at
GPT-2-small shapes as a share of the same-FLOP matmul's TFLOP/s (goal ≥ 70%).

Two variants that are not in the library are measured against it:
- `buffered`: the same iteration writing into preallocated buffers (`out=`) so that no step
  allocates. It was not faster, so the library allocates.
- `gram`: the Gram form of the iteration (Zhang, Amsel, Chen, Dao 2026, "Gram Newton–Schulz",
  github.com/Dao-AILab/gram-newton-schulz). Fewer FLOPs on rectangular matrices, but in bf16
  it overshoots the spectrum (see --table), so it stays here.
"""

from __future__ import annotations

import argparse
import importlib.util
import math
import sys
import time
from collections.abc import Callable
from pathlib import Path

import torch

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))
try:
    from trx.optim import newton_schulz as ns
except ImportError:  # a bare GPU box with torch only: the module itself needs nothing else
    _spec = importlib.util.spec_from_file_location("newton_schulz", ROOT / "trx/optim/newton_schulz.py")
    ns = sys.modules["newton_schulz"] = importlib.util.module_from_spec(_spec)  # dynamo looks it up
    _spec.loader.exec_module(ns)

MODELS = {"small_gpt": (256, 4), "gpt2_small": (768, 12)}


def model_shapes(d: int) -> list[tuple[int, int]]:
    return [(d, 3 * d), (d, d), (4 * d, d), (d, 4 * d)]


def ns_flops(batch: int, m: int, n: int, steps: int) -> float:
    """FLOPs of `steps` standard iterations: X Xᵀ, A·A and B·X on the short side s = min(m, n)."""
    s, l = min(m, n), max(m, n)
    return batch * steps * 2.0 * (2 * s * s * l + s**3)


# --- a variant measured against the library ----------------------------------------------------


def buffered_iteration(G: torch.Tensor, steps: int = 5, dtype=torch.float32) -> torch.Tensor:
    """The library's standard form (keller) writing into preallocated ping-pong buffers."""
    X = G.to(dtype)
    tall = X.size(-2) > X.size(-1)
    if tall:
        X = X.mT
    bufs = [torch.empty(X.shape, dtype=dtype, device=X.device) for _ in range(2)]
    A = X.new_empty(*X.shape[:-1], X.size(-2))  # (B, s, s)
    B = torch.empty_like(A)
    X = torch.div(X, X.norm(dim=(-2, -1), keepdim=True).clamp(min=1e-7), out=bufs[1])
    for k, (a, b, c) in enumerate(ns.coefficient_schedule("keller", steps)):
        torch.bmm(X, X.mT, out=A)
        torch.baddbmm(A, A, A, beta=b, alpha=c, out=B)
        X = torch.baddbmm(X, B, X, beta=a, out=bufs[k % 2])
    return (X.mT if tall else X).to(G.dtype)


def gram_iteration(G: torch.Tensor, steps: int = 5, dtype=torch.float32, coefficients="keller",
                   restarts=(2, 4), restart_dtype=None) -> torch.Tensor:
    """Gram Newton–Schulz: the same polynomial, iterated on the small Gram matrix.

    Every iterate is X_k = Q·X_0 with Q a polynomial in R = X_0 X_0ᵀ (s × s), so iterate on the
    small matrices instead: Z = b·R + c·R², Q ← Q·(a·I + Z), R ← (a·I + Z)·R·(a·I + Z) (all
    polynomials in R commute), and touch the long (s, l) matrix only at the end, X = Q·X_0.
    In low precision R drifts from X Xᵀ, so before each step in `restarts` the iteration starts
    again from X ← Q·X (the authors restart before step 2 of 5, in float16; in bf16 no single
    restart keeps the standard form's singular values on both log-spaced and low-rank spectra, two
    (before steps 2 and 4) do: docs/newton_schulz.md). With `restart_dtype` the restart products
    Q·X and X Xᵀ are taken in that dtype.
    """
    X = G.to(dtype)
    tall = X.size(-2) > X.size(-1)
    if tall:
        X = X.mT
    X = X / X.norm(dim=(-2, -1), keepdim=True).clamp(min=1e-7)  # (B, s, l)
    schedule = ns.coefficient_schedule(coefficients, steps)
    R = X @ X.mT  # (B, s, s)
    Q = None
    for i, (a, b, c) in enumerate(schedule):
        if Q is not None and i in restarts:
            if restart_dtype is None:
                X, Q = Q @ X, None
                R = X @ X.mT
            else:
                Xr = Q.to(restart_dtype) @ X.to(restart_dtype)
                X, R, Q = Xr.to(dtype), (Xr @ Xr.mT).to(dtype), None
        Z = torch.baddbmm(R, R, R, beta=b, alpha=c)  # b·R + c·R²
        if Q is None:
            Q = Z.clone()
            Q.diagonal(dim1=-2, dim2=-1).add_(a)  # a·I + Z
        else:
            Q = torch.baddbmm(Q, Q, Z, beta=a)  # Q·(a·I + Z)
        if i + 1 < len(schedule) and i + 1 not in restarts:  # R is needed by the next step
            RZ = torch.baddbmm(R, R, Z, beta=a)  # R·(a·I + Z)
            R = torch.baddbmm(RZ, Z, RZ, beta=a)  # (a·I + Z)·R·(a·I + Z)
    X = Q @ X
    return (X.mT if tall else X).to(G.dtype)


# --- timing -------------------------------------------------------------------------------------


def timeit(fn: Callable[[], object], device: str, min_time: float, min_reps: int = 3) -> float:
    """Fastest seconds per call after one warm-up call: the minimum, not the median, because a
    shared CPU adds noise that only ever makes a call slower."""
    sync = torch.cuda.synchronize if device == "cuda" else (lambda: None)
    fn()
    sync()
    times: list[float] = []
    start = time.perf_counter()
    while len(times) < min_reps or time.perf_counter() - start < min_time:
        t0 = time.perf_counter()
        fn()
        sync()
        times.append(time.perf_counter() - t0)
    return min(times)


def stacks(d: int, layers: int, device: str) -> list[torch.Tensor]:
    g = torch.Generator().manual_seed(0)
    return [torch.randn(layers, m, n, generator=g).to(device) for m, n in model_shapes(d)]


def cpu_report(args) -> None:
    print(f"# CPU, torch {torch.__version__}, {torch.get_num_threads()} threads, "
          f"fast bf16: {ns.cpu_has_fast_bf16()}, 5 keller steps, fastest ms per call")
    for model, (d, layers) in MODELS.items():
        layers = args.layers or (layers if d < 512 else 1)
        print(f"\n## {model}: d={d}, {layers} layers")
        print(f"{'shape (L,m,n)':>18} {'fp32':>8} {'bf16':>8} {'fp32/bf16':>9} {'loop fp32':>9} "
              f"{'loop/batch':>10} {'buffered':>10} {'gram fp32':>9} {'gram bf16':>9}")
        totals = dict.fromkeys(["fp32", "bf16", "loop", "buffered", "gram", "gram16"], 0.0)
        for G in stacks(d, layers, "cpu"):
            t = {
                "fp32": timeit(lambda: ns.orthogonalize(G), "cpu", args.min_time),
                "bf16": timeit(lambda: ns.orthogonalize(G, dtype=torch.bfloat16), "cpu", args.min_time),
                "loop": timeit(lambda: [ns.orthogonalize(g) for g in G], "cpu", args.min_time),
                "buffered": timeit(lambda: buffered_iteration(G), "cpu", args.min_time),
                "gram": timeit(lambda: gram_iteration(G), "cpu", args.min_time),
                "gram16": timeit(lambda: gram_iteration(G, dtype=torch.bfloat16), "cpu", args.min_time),
            }
            for k in totals:
                totals[k] += t[k]
            print(_cpu_row(str(tuple(G.shape)), t))
        print(_cpu_row("total", totals))


def _cpu_row(label: str, t: dict[str, float]) -> str:
    ms = {k: 1e3 * v for k, v in t.items()}
    return (f"{label:>18} {ms['fp32']:8.2f} {ms['bf16']:8.2f} {t['fp32'] / t['bf16']:9.2f} "
            f"{ms['loop']:9.2f} {t['loop'] / t['fp32']:10.2f} {ms['buffered']:10.2f} "
            f"{ms['gram']:9.2f} {ms['gram16']:9.2f}")


# --- CUDA ---------------------------------------------------------------------------------------


def matmul_chain(G: torch.Tensor, steps: int = 5) -> torch.Tensor:
    """The GEMMs of `steps` iterations on the same shapes with no scaling or adds: the floor."""
    X = G if G.size(-2) <= G.size(-1) else G.mT
    for _ in range(steps):
        A = X @ X.mT
        X = (A @ A) @ X
    return X


def same_flop_matmul(flops: float, dev: str, min_time: float) -> float:
    """Seconds of one plain bf16 matmul k×k @ k×k with 2k³ ≈ `flops` (k a multiple of 64)."""
    k = max(64, round((flops / 2) ** (1 / 3) / 64) * 64)
    a = torch.randn(k, k, device=dev, dtype=torch.bfloat16)
    b = torch.randn(k, k, device=dev, dtype=torch.bfloat16)
    return timeit(lambda: a @ b, dev, min_time) * flops / (2 * k**3)  # scaled to exactly `flops`


def roofline_report(args, dev: str = "cuda") -> None:
    """Newton–Schulz routes against plain bf16 matmuls of the same shapes and of the same FLOPs."""
    name = torch.cuda.get_device_name() if dev == "cuda" else f"{dev}, {torch.get_num_threads()} threads"
    print(f"# {name}, torch {torch.__version__}, 5 keller steps, bf16")
    big_n = 512 if args.tiny else 8192
    big = torch.randn(big_n, big_n, device=dev, dtype=torch.bfloat16)
    peak = 2 * big_n**3 / timeit(lambda: big @ big, dev, args.min_time) / 1e12
    print(f"plain bf16 matmul {big_n}³: {peak:.3g} TFLOP/s")
    orth = lambda G: ns.orthogonalize(G, dtype=torch.bfloat16)  # noqa: E731
    variants: dict[str, Callable] = {
        "eager": orth,
        "buffered eager": lambda G: buffered_iteration(G, dtype=torch.bfloat16),
        "gram eager": lambda G: gram_iteration(G, dtype=torch.bfloat16),
        "loop (eager)": lambda G: [orth(g) for g in G],
    }
    if not args.no_compile:
        compiled = torch.compile(ns.orthogonalize)
        gram_c = torch.compile(gram_iteration)
        variants["compiled"] = lambda G: compiled(G, dtype=torch.bfloat16)
        variants["gram compiled"] = lambda G: gram_c(G, dtype=torch.bfloat16)
        if dev == "cuda":  # CUDA graphs: the whole iteration replayed as one launch
            graphed = torch.compile(ns.orthogonalize, mode="reduce-overhead")
            variants["compiled+graphs"] = lambda G: graphed(G, dtype=torch.bfloat16)
    models = {"tiny": (64, 2)} if args.tiny else MODELS
    for model, (d, layers) in models.items():
        layers = args.layers or layers
        print(f"\n## {model}: d={d}, {layers} layers; TFLOP/s counting the standard iteration's FLOPs "
              f"(share of the same-FLOP plain matmul's TFLOP/s)")
        print(f"{'shape (L,m,n)':>18} {'chain':>7} {'same-FLOP mm':>12} " + " ".join(f"{k:>16}" for k in variants))
        total = dict.fromkeys(["chain", "mm", *variants], 0.0)
        for G in stacks(d, layers, dev):
            G16 = G.to(torch.bfloat16)
            flops = ns_flops(*G.shape, 5)
            total["chain"] += (t_chain := timeit(lambda: matmul_chain(G16), dev, args.min_time))
            total["mm"] += (t_mm := same_flop_matmul(flops, dev, args.min_time))
            cells = []
            for key, fn in variants.items():
                total[key] += (t := timeit(lambda: fn(G), dev, args.min_time))
                cells.append(f"{flops / t / 1e12:6.3g} ({t_mm / t:4.0%})")
            print(f"{str(tuple(G.shape)):>18} {flops / t_chain / 1e12:7.3g} {flops / t_mm / 1e12:12.3g} "
                  + " ".join(f"{c:>16}" for c in cells))
        print(f"{'total ms':>18} " + " ".join(f"{1e3 * t:>7.3f}" if k == "chain" else f"{1e3 * t:>12.3f}" if k == "mm"
                                          else f"{1e3 * t:>16.3f}" for k, t in total.items()))
        best = min(variants, key=lambda k: total[k])
        print(f"summary {model}: eager NS at {total['mm'] / total['eager']:.0%} of the same-FLOP matmul's "
              f"TFLOP/s (target ≥ 70%); fastest route {best} at {total['mm'] / total[best]:.0%}")


# --- accuracy -----------------------------------------------------------------------------------


def conditioned(n: int, kappa: float, seed: int = 0, batch: int = 1, cols: int = 0) -> torch.Tensor:
    """(batch, n, cols or n) float64 matrices U·diag(s)·Vᵀ with random orthonormal U, V and s
    log-spaced from 1 down to 1/kappa (n ≤ cols)."""
    g = torch.Generator().manual_seed(seed)
    U = torch.linalg.qr(torch.randn(batch, n, n, generator=g, dtype=torch.float64))[0]
    V = torch.linalg.qr(torch.randn(batch, cols or n, n, generator=g, dtype=torch.float64))[0]
    s = torch.logspace(0, -math.log10(kappa), n, dtype=torch.float64)
    return U * s @ V.mT


def ortho_error(O: torch.Tensor) -> float:
    """‖OᵀO − I‖_F / √n on the short side n of O (O Oᵀ for wide O), in float64; batch mean."""
    O = O.double()
    if O.size(-2) < O.size(-1):
        O = O.mT
    n = O.size(-1)
    E = O.mT @ O - torch.eye(n, dtype=O.dtype)
    return (E.norm(dim=(-2, -1)) / math.sqrt(n)).mean().item()


def table_report(args) -> None:
    n, ks, kappas = 256, [1, 2, 3, 4, 5, 6, 8, 10], [10.0, 1e3, 1e6]
    print(f"Orthogonality error ‖OᵀO − I‖_F/√n after k steps, n={n}, float32, singular values "
          f"log-spaced in [1/κ, 1], mean of 4 random U, V.\n")
    print("| set | κ | " + " | ".join(f"k={k}" for k in ks) + " |")
    print("|---|---|" + "---|" * len(ks))
    for name in ["keller", "polar_express", "svd"]:
        for kappa in kappas:
            G = conditioned(n, kappa, batch=4).float()
            errs = [ortho_error(ns.orthogonalize(G, k, name)) for k in ks]
            print(f"| {name} | {kappa:.0e} | " + " | ".join(f"{e:.2g}" for e in errs) + " |")
    print("\nSingular values of the output after 5 steps, min–max (fp32 | bf16):\n")
    print("| set | " + " | ".join(f"κ={k:.0e}" for k in kappas) + " |")
    print("|---|" + "---|" * len(kappas))
    for name in ["keller", "polar_express", "svd"]:
        cells = []
        for kappa in kappas:
            G = conditioned(n, kappa, batch=4).float()
            bands = []
            for dt in (torch.float32, torch.bfloat16):
                s = torch.linalg.svdvals(ns.orthogonalize(G, 5, name, dtype=dt).double())
                bands.append(f"{s.min():.3f}–{s.max():.3f}")
            cells.append(" \\| ".join(bands))
        print(f"| {name} | " + " | ".join(cells) + " |")
    print("\nGram form vs standard form on (n, 3n) matrices with the same spectra, 5 steps: error "
          "‖O Oᵀ − I‖_F/√n | largest singular value (error: mean of 4 matrices; σ: max over them):\n")
    print("| set | form | restarts | dtype | " + " | ".join(f"κ={k:.0e}" for k in kappas) + " |")
    print("|---|---|---|---|" + "---|" * len(kappas))
    forms = [("standard", "—", lambda G, dt, name: ns.orthogonalize(G, 5, name, dt))]
    forms += [("gram", str(r), lambda G, dt, name, r=r: gram_iteration(G, 5, dt, name, r)) for r in [(2,), (3,), (2, 4)]]
    forms += [("gram, fp32 restart", "(2,)", lambda G, dt, name: gram_iteration(G, 5, dt, name, (2,), torch.float32))]
    for name in ["keller", "polar_express"]:
        for form, restarts, fn in forms:
            for dt in (torch.float32, torch.bfloat16, torch.float16):
                cells = []
                for kappa in kappas:
                    O = fn(conditioned(n, kappa, batch=4, cols=3 * n).float(), dt, name)
                    cells.append(f"{ortho_error(O):.3f} \\| {torch.linalg.svdvals(O.double()).max():.3f}")
                print(f"| {name} | {form} | {restarts} | {str(dt)[6:]} | " + " | ".join(cells) + " |")


def low_rank(rows: int, cols: int, floor: float, seed: int, batch: int = 4, rank: int = 4) -> torch.Tensor:
    """(batch, rows, cols) float32 with `rank` singular values at 1 and the rest at `floor`: a
    gradient-like spectrum (a few strong directions over noise)."""
    g = torch.Generator().manual_seed(seed)
    k = min(rows, cols)
    U = torch.linalg.qr(torch.randn(batch, rows, k, generator=g, dtype=torch.float64))[0]
    V = torch.linalg.qr(torch.randn(batch, cols, k, generator=g, dtype=torch.float64))[0]
    s = torch.full((k,), floor, dtype=torch.float64)
    s[:rank] = 1.0
    return (U * s @ V.mT).float()


def low_rank_report() -> None:
    print("\nLargest singular value after 5 keller steps in bf16 on low-rank spectra (4 singular values "
          "at 1, the rest at 0.1; max over 4 matrices), seeds 0 | 3:\n")
    shapes = [(64, 256), (256, 768)]
    print("| form | restarts before step | " + " | ".join(f"{m}×{n}" for m, n in shapes) + " |")
    print("|---|---|" + "---|" * len(shapes))
    forms = [("standard", "—", lambda G: ns.orthogonalize(G, 5, "keller", torch.bfloat16))]
    forms += [("gram", str(r), lambda G, r=r: gram_iteration(G, 5, torch.bfloat16, "keller", r))
              for r in [(2,), (3,), (2, 4)]]
    for form, restarts, fn in forms:
        cells = []
        for m, n in shapes:
            tops = []
            for seed in (0, 3):
                O = fn(low_rank(m, n, 0.1, seed))
                tops.append(f"{torch.linalg.svdvals(O.double()).max():.3f}" if torch.isfinite(O).all() else "inf")
            cells.append(" \\| ".join(tops))
        print(f"| {form} | {restarts} | " + " | ".join(cells) + " |")


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--device", choices=["cpu", "cuda"], default="cpu")
    p.add_argument("--table", action="store_true", help="print the orthogonality table instead")
    p.add_argument("--layers", type=int, default=0, help="layers per shape (default: per model)")
    p.add_argument("--threads", type=int, default=0, help="torch CPU threads (default: torch's)")
    p.add_argument("--min-time", type=float, default=0.05, help="seconds of timing per cell")
    p.add_argument("--roofline", action="store_true", help="the GPU report (default with --device cuda) on any device")
    p.add_argument("--tiny", action="store_true", help="roofline on tiny shapes (d=64): proves the code path runs")
    p.add_argument("--no-compile", action="store_true", help="roofline without the torch.compile routes")
    args = p.parse_args()
    torch.manual_seed(0)
    if args.threads:
        torch.set_num_threads(args.threads)
    if args.table:
        table_report(args)
        low_rank_report()
    elif args.device == "cuda" or args.roofline:
        roofline_report(args, args.device)
    else:
        cpu_report(args)


if __name__ == "__main__":
    main()
