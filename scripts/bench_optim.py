"""Optimizer step time, trx vs torch.optim, side by side in one process.

The parameter set is that of a GPT built directly from its shapes with fixed random gradients, so
the timing is the optimizer step alone: `--shapes small` (default) is the small GPT (4 layers,
d = 256, vocabulary 2048, context 256, untied head: 4.27 M weights); `--shapes gpt2` is GPT-2
small (12 layers, d = 768, vocabulary 50257, context 1024, untied head: 163 M weights; for a GPU).

The rows are interleaved step by step (one step of each row per round, `--repeats` rounds), so
that drift on a shared machine (clock boost, other load) hits every row alike. Each row reports
its best time (min over rounds: the least disturbed step) and median, and the ratio of best times
to the reference row of its section. The summary compares the targets of the GPU issue:
trx Muon + aux Adam vs torch Muon + fused AdamW, and trx AdamW vs torch fused AdamW.

    python scripts/bench_optim.py --threads 2 --rows core     # CPU, the two comparisons, ~1 min
    python scripts/bench_optim.py                              # every row
    python scripts/bench_optim.py --device cuda --shapes gpt2
"""

from __future__ import annotations

import argparse
import math
import statistics
import time
from collections.abc import Callable

import torch
from torch import nn

from trx.optim import build_optimizer


SHAPES = {"small": dict(n_layer=4, d=256, vocab=2048, context=256),
          "gpt2": dict(n_layer=12, d=768, vocab=50257, context=1024)}


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


def make_params(device: str, shapes: str = "small") -> tuple[list[tuple[str, nn.Parameter]], dict[str, str]]:
    gen = torch.Generator().manual_seed(0)
    params, roles = [], {}
    for name, shape, role in gpt_shapes(**SHAPES[shapes]):
        p = nn.Parameter((torch.randn(shape, generator=gen) * 0.02).to(device))
        p.grad = (torch.randn(shape, generator=gen) * 1e-3).to(device)
        params.append((name, p))
        roles[name] = role
    return params, roles


def time_rows(steps: list[Callable[[], None]], device: str, rounds: int) -> list[list[float]]:
    """Seconds of each call of each step, interleaved step by step: each round times one call of
    every step in turn, so drift affects every row alike."""
    for step in steps:  # warm-up: allocations, lazy state, kernel selection
        for _ in range(3):
            step()
    samples: list[list[float]] = [[] for _ in steps]
    for _ in range(rounds):
        for step, times in zip(steps, samples):
            if device == "cuda":
                torch.cuda.synchronize()
            start = time.perf_counter()
            step()
            if device == "cuda":
                torch.cuda.synchronize()
            times.append(time.perf_counter() - start)
    return samples


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


TORCH_ADAMW, TRX_ADAMW = "torch AdamW fused=True", "trx ema+adam (fused dispatch)"
TORCH_MUON, TRX_MUON = "torch Muon (bf16 NS) + fused AdamW", "trx muon + aux adam"
CORE = {TORCH_ADAMW, TRX_ADAMW, TORCH_MUON, TRX_MUON}


def rows_for(device: str, dtype: str, shapes: str, core: bool) -> list[tuple[str, str, Callable[[], None]]]:
    """(section, label, step) in the order printed; the first row of a section is its reference."""
    fresh = lambda: make_params(device, shapes)  # noqa: E731 - every optimizer gets its own copy
    makers: list[tuple[str, str, Callable[[list, dict], Callable[[], None]]]] = [
        ("adamw", TORCH_ADAMW, lambda p, r: torch_adamw(p, r, fused=True).step),
        ("adamw", "torch AdamW foreach=True", lambda p, r: torch_adamw(p, r, fused=False).step),
        ("adamw", TRX_ADAMW, lambda p, r: trx_step(p, r, ADAMW)),
        ("adamw", "trx ema+adam (stages, fused: false)", lambda p, r: trx_step(p, r, {**ADAMW, "fused": False})),
        ("adamw", "trx ema+adam, diagnose=True", lambda p, r: trx_step(p, r, ADAMW, diagnose=True)),
        ("muon", TORCH_MUON, torch_muon_adamw),
        ("muon", TRX_MUON, lambda p, r: trx_step(p, r, muon_cfg({"name": "muon"}, dtype))),
        ("muon", "trx normuon + aux adam", lambda p, r: trx_step(p, r, muon_cfg({"name": "normuon"}, dtype))),
        ("muon", "trx trasmuon + aux adam", lambda p, r: trx_step(p, r, muon_cfg({"name": "trasmuon"}, dtype))),
        ("muon", "trx muon, diagnose=True", lambda p, r: trx_step(p, r, muon_cfg({"name": "muon"}, dtype), True)),
        ("muon", "trx trasmuon, diagnose=True", lambda p, r: trx_step(p, r, muon_cfg({"name": "trasmuon"}, dtype), True)),
    ]
    return [(section, label, make(*fresh())) for section, label, make in makers if not core or label in CORE]


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--device", default="cpu", choices=["cpu", "cuda"])
    parser.add_argument("--shapes", default="small", choices=sorted(SHAPES), help="small: 4.27 M (CPU) | gpt2: 163 M (GPU)")
    parser.add_argument("--rows", default="all", choices=["all", "core"],
                        help="core: only the two comparisons of the summary (torch vs trx AdamW and Muon + aux)")
    parser.add_argument("--repeats", type=int, default=20, help="rounds; each times one step of every row")
    parser.add_argument("--threads", type=int, default=0, help="torch threads (0: torch's default)")
    parser.add_argument("--dtype", default="bfloat16", choices=["bfloat16", "float32"],
                        help="trx Newton–Schulz dtype (torch.optim.Muon always uses bfloat16)")
    args = parser.parse_args()
    if args.threads:
        torch.set_num_threads(args.threads)
    n = sum(math.prod(shape) for _, shape, _ in gpt_shapes(**SHAPES[args.shapes]))
    where = torch.cuda.get_device_name() if args.device == "cuda" else f"CPU, threads {torch.get_num_threads()}"
    print(f"torch {torch.__version__}, {where}, {args.shapes} GPT shapes: {n / 1e6:.2f} M parameters, "
          f"trx NS dtype {args.dtype}, {args.repeats} interleaved rounds")
    rows = rows_for(args.device, args.dtype, args.shapes, args.rows == "core")
    samples = time_rows([step for _, _, step in rows], args.device, args.repeats)
    best = {label: min(times) for (_, label, _), times in zip(rows, samples)}
    reference: dict[str, float] = {}
    print(f"{'section':8} {'optimizer':40} {'best ms':>9} {'median ms':>10} {'ratio':>7}")
    for (section, label, _), times in zip(rows, samples):
        base = reference.setdefault(section, best[label])
        print(f"{section:8} {label:40} {best[label] * 1e3:9.2f} {statistics.median(times) * 1e3:10.2f} {best[label] / base:7.2f}")
    muon_target = 0.5 if args.device == "cuda" else 0.8
    print("summary (ratio of best times):")
    for ours, theirs, target in ((TRX_MUON, TORCH_MUON, muon_target), (TRX_ADAMW, TORCH_ADAMW, 1.0)):
        ratio = best[ours] / best[theirs]
        print(f"  {ours} / {theirs}: {ratio:.2f}  (target ≤ {target}: {'met' if ratio <= target else 'not met'})")


if __name__ == "__main__":
    main()
