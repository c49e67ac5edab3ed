"""Optimizer step time, trx vs torch.optim, side by side in one process.

The parameter set is that of a small GPT (4 layers, d = 256, vocabulary 2048, context 256, untied
head: 4.27 M weights), built directly from the shapes with fixed random gradients: the timing is
the optimizer step alone. Each row reports the median time of one `step()` and its ratio to the
reference row of its section.

    python scripts/bench_optim.py                     # CPU, under a minute
    python scripts/bench_optim.py --device cuda
    python scripts/bench_optim.py --threads 2 --repeats 30
"""

from __future__ import annotations

import argparse
import statistics
import time
from collections.abc import Callable

import torch
from torch import nn

from trx.optim import build_optimizer


def gpt_shapes(n_layer: int = 4, d: int = 256, vocab: int = 2048, context: int = 256) -> list[tuple[str, tuple[int, ...], str]]:
    """(name, shape, role) of every parameter of a nanoGPT-style model with an untied head."""
    shapes = [("wte", (vocab, d), "embedding"), ("wpe", (context, d), "embedding")]
    for i in range(n_layer):
        h = f"h.{i}"
        shapes += [
            (f"{h}.ln_1.weight", (d,), "vector"), (f"{h}.ln_1.bias", (d,), "vector"),
            (f"{h}.attn.c_attn.weight", (3 * d, d), "matrix"), (f"{h}.attn.c_attn.bias", (3 * d,), "vector"),
            (f"{h}.attn.c_proj.weight", (d, d), "matrix"), (f"{h}.attn.c_proj.bias", (d,), "vector"),
            (f"{h}.ln_2.weight", (d,), "vector"), (f"{h}.ln_2.bias", (d,), "vector"),
            (f"{h}.mlp.c_fc.weight", (4 * d, d), "matrix"), (f"{h}.mlp.c_fc.bias", (4 * d,), "vector"),
            (f"{h}.mlp.c_proj.weight", (d, 4 * d), "matrix"), (f"{h}.mlp.c_proj.bias", (d,), "vector"),
        ]
    shapes += [("ln_f.weight", (d,), "vector"), ("ln_f.bias", (d,), "vector"), ("lm_head.weight", (vocab, d), "head")]
    return shapes


def make_params(device: str) -> tuple[list[tuple[str, nn.Parameter]], dict[str, str]]:
    gen = torch.Generator().manual_seed(0)
    params, roles = [], {}
    for name, shape, role in gpt_shapes():
        p = nn.Parameter((torch.randn(shape, generator=gen) * 0.02).to(device))
        p.grad = (torch.randn(shape, generator=gen) * 1e-3).to(device)
        params.append((name, p))
        roles[name] = role
    return params, roles


def time_rows(steps: list[Callable[[], None]], device: str, repeats: int, rounds: int = 5) -> list[float]:
    """Median seconds of one call of each step, timed in interleaved rounds so that drift (clock
    boost, other load) affects every row alike."""
    for step in steps:  # warm-up: allocations, lazy state, kernel selection
        for _ in range(3):
            step()
    samples: list[list[float]] = [[] for _ in steps]
    per_round = max(1, repeats // rounds)
    for _ in range(rounds):
        for step, times in zip(steps, samples):
            for _ in range(per_round):
                if device == "cuda":
                    torch.cuda.synchronize()
                start = time.perf_counter()
                step()
                if device == "cuda":
                    torch.cuda.synchronize()
                times.append(time.perf_counter() - start)
    return [statistics.median(times) for times in samples]


ADAMW = {
    "lr": 3e-4,
    "filter": {"name": "ema", "beta": 0.9},
    "normalizer": {"name": "adam", "beta2": 0.95, "eps": 1e-8},
    "weight_decay": {"value": 0.1, "mode": "decoupled", "exclude": ["vector"]},
}


def muon_cfg(normalizer: dict, dtype: str) -> dict:
    return {
        "lr": 0.02,
        "filter": {"name": "nesterov", "beta": 0.95},
        "normalizer": {**normalizer, "dtype": dtype},
        "weight_decay": {"value": 0.1, "mode": "decoupled", "exclude": ["vector"]},
        "aux": {"lr": 3e-4, "filter": {"name": "ema", "beta": 0.9}, "normalizer": {"name": "adam", "beta2": 0.95}},
    }


def torch_adamw(params, roles, fused: bool):
    decay = [p for n, p in params if roles[n] != "vector"]
    rest = [p for n, p in params if roles[n] == "vector"]
    groups = [{"params": decay, "weight_decay": 0.1}, {"params": rest, "weight_decay": 0.0}]
    kind = {"fused": True} if fused else {"foreach": True}
    return torch.optim.AdamW(groups, lr=3e-4, betas=(0.9, 0.95), eps=1e-8, **kind)


def torch_muon_adamw(params, roles):
    """torch.optim.Muon on the hidden matrices + fused AdamW on the rest (torch's recipe)."""
    matrices = [p for n, p in params if roles[n] == "matrix"]
    muon = torch.optim.Muon(matrices, lr=0.02, momentum=0.95, nesterov=True, weight_decay=0.1)
    rest = [(n, p) for n, p in params if roles[n] != "matrix"]
    adamw = torch_adamw(rest, roles, fused=True)

    def step():
        muon.step()
        adamw.step()

    return step


def trx_step(params, roles, cfg: dict, diagnose: bool = False):
    opt = build_optimizer(params, cfg, total_steps=10**6, roles=roles)
    opt.diagnose = diagnose
    return opt.step


def rows_for(device: str, dtype: str) -> list[tuple[str, str, Callable[[], None]]]:
    """(section, label, step) in the order printed; the first row of a section is its reference."""
    fresh = lambda: make_params(device)  # noqa: E731 - every optimizer gets its own copy
    p, r = fresh()
    rows = [("adamw", "torch AdamW fused=True", torch_adamw(p, r, fused=True).step)]
    p, r = fresh()
    rows.append(("adamw", "torch AdamW foreach=True", torch_adamw(p, r, fused=False).step))
    p, r = fresh()
    rows.append(("adamw", "trx ema+adam (fused dispatch)", trx_step(p, r, ADAMW)))
    p, r = fresh()
    rows.append(("adamw", "trx ema+adam (stages, fused: false)", trx_step(p, r, {**ADAMW, "fused": False})))
    p, r = fresh()
    rows.append(("adamw", "trx ema+adam, diagnose=True", trx_step(p, r, ADAMW, diagnose=True)))
    p, r = fresh()
    rows.append(("muon", "torch Muon (bf16 NS) + fused AdamW", torch_muon_adamw(p, r)))
    for label, normalizer in [
        ("muon", {"name": "muon"}),
        ("normuon", {"name": "normuon"}),
        ("trasmuon", {"name": "trasmuon"}),
    ]:
        p, r = fresh()
        rows.append(("muon", f"trx {label} ({dtype} NS) + aux adam", trx_step(p, r, muon_cfg(normalizer, dtype))))
    p, r = fresh()
    rows.append(("muon", f"trx muon ({dtype} NS), diagnose=True", trx_step(p, r, muon_cfg({"name": "muon"}, dtype), True)))
    p, r = fresh()
    rows.append(("muon", f"trx trasmuon ({dtype} NS), diagnose=True", trx_step(p, r, muon_cfg({"name": "trasmuon"}, dtype), True)))
    return rows


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--device", default="cpu", choices=["cpu", "cuda"])
    parser.add_argument("--repeats", type=int, default=20, help="timed steps per row, in 5 interleaved rounds (median reported)")
    parser.add_argument("--threads", type=int, default=0, help="torch threads (0: torch's default)")
    parser.add_argument("--dtype", default="bfloat16", choices=["bfloat16", "float32"],
                        help="trx Newton–Schulz dtype (torch.optim.Muon always uses bfloat16)")
    args = parser.parse_args()
    if args.threads:
        torch.set_num_threads(args.threads)
    n = sum(p.numel() for _, p in make_params("cpu")[0])
    print(f"torch {torch.__version__}, device {args.device}, threads {torch.get_num_threads()}, {n / 1e6:.2f} M parameters")
    rows = rows_for(args.device, args.dtype)
    timings = time_rows([step for _, _, step in rows], args.device, args.repeats)
    reference: dict[str, float] = {}
    print(f"{'section':8} {'optimizer':44} {'ms/step':>9} {'ratio':>7}")
    for (section, label, _), seconds in zip(rows, timings):
        base = reference.setdefault(section, seconds)
        print(f"{section:8} {label:44} {seconds * 1e3:9.2f} {seconds / base:7.2f}")


if __name__ == "__main__":
    main()
