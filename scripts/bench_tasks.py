"""Throughput of the neural tasks: batch + forward + backward + torch.optim.AdamW step, per second.

    python scripts/bench_tasks.py                       # CPU, small sizes (< 1 minute on 2 cores)
    python scripts/bench_tasks.py --device cuda --full  # GPU, the sizes of configs/*_gpu.yaml
    python scripts/bench_tasks.py --threads 1           # CPU shared with other jobs: 2 spinning
                                                        # OpenMP threads on 2 busy cores crawl

small_gpt reports tokens/s, cifar_resnet images/s (synthetic images of CIFAR-10's shape, so no
data set is needed). Times are medians over --steps timed updates after --warmup untimed ones;
on CUDA each update is synchronized before the clock is read.
"""

from __future__ import annotations

import argparse
import statistics
import time
from dataclasses import dataclass
from typing import Any

import torch

from trx.tasks import TASKS


@dataclass
class Case:
    label: str
    task: str
    options: dict[str, Any]
    unit: str  # "tok/s" or "img/s"


def cases(full: bool, compile: bool) -> list[Case]:
    gpt = (
        dict(n_layer=6, n_head=6, n_embd=384, block_size=256, batch_size=64)
        if full
        else dict(n_layer=2, n_head=4, n_embd=128, block_size=64, batch_size=32)
    )
    img = dict(dataset="synthetic", train_size=4096, val_size=16, batch_size=512 if full else 64)
    return [
        Case("small_gpt", "small_gpt", {**gpt, "eval_batches": 1, "compile": compile}, "tok/s"),
        Case("cifar fast w=64" if full else "cifar fast w=16", "cifar_resnet",
             {**img, "model": "fast", "width": 64 if full else 16, "compile": compile}, "img/s"),
        Case("cifar resnet18", "cifar_resnet", {**img, "model": "resnet18", "batch_size": 512 if full else 16,
                                                "compile": compile}, "img/s"),
    ]


def sync(device: torch.device) -> None:
    if device.type == "cuda":
        torch.cuda.synchronize(device)


def bench(case: Case, device: torch.device, steps: int, warmup: int, amp: str) -> dict[str, Any]:
    cls = TASKS[case.task]
    task = cls(cls.Options(**case.options, amp=amp), seed=0, device=device)
    task.prepare()
    torch.manual_seed(0)
    model = task.build_model()
    opt = torch.optim.AdamW(model.parameters(), lr=1e-3)
    times = []
    for t in range(warmup + steps):
        sync(device)
        start = time.perf_counter()
        task.loss(model, task.batch(t)).backward()  # the batch's gather and augmentation count too
        opt.step()
        opt.zero_grad(set_to_none=True)
        sync(device)
        if t >= warmup:
            times.append(time.perf_counter() - start)
    per_step = statistics.median(times)
    items = task.options.batch_size * (task.options.block_size if case.unit == "tok/s" else 1)
    return {
        "task": case.label,
        "params": sum(p.numel() for p in model.parameters()),
        "batch": task.options.batch_size,
        "ms/step": 1e3 * per_step,
        "throughput": items / per_step,
        "unit": case.unit,
        "amp": "bf16" if task.amp else "fp32",
    }


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--device", default="cpu", help="cpu | cuda | auto")
    p.add_argument("--steps", type=int, default=3, help="timed updates per task")
    p.add_argument("--warmup", type=int, default=1, help="untimed updates first (compilation, autotuning)")
    p.add_argument("--full", action="store_true", help="GPU sizes (GPT 6×384, ResNet-9 w=64, batch 512)")
    p.add_argument("--compile", action="store_true", help="torch.compile the models")
    p.add_argument("--amp", default="auto", choices=["auto", "bf16", "none"], help="bf16 autocast (auto: on for cuda)")
    p.add_argument("--only", default=None, help="run only cases whose label contains this text")
    p.add_argument("--threads", type=int, default=None, help="torch CPU threads (default: torch's); 1 on a busy machine")
    args = p.parse_args()
    if args.threads:
        torch.set_num_threads(args.threads)
    device = torch.device("cuda" if args.device == "auto" and torch.cuda.is_available() else
                          ("cpu" if args.device == "auto" else args.device))
    name = torch.cuda.get_device_name(device) if device.type == "cuda" else f"CPU, {torch.get_num_threads()} threads"
    print(f"device: {name}; torch {torch.__version__}; median of {args.steps} steps after {args.warmup} warm-up")
    print(f"{'task':<18} {'params':>10} {'batch':>6} {'amp':>5} {'ms/step':>9} {'throughput':>14}")
    for case in cases(args.full, args.compile):
        if args.only and args.only not in case.label:
            continue
        r = bench(case, device, args.steps, args.warmup, args.amp)
        print(f"{r['task']:<18} {r['params']:>10,} {r['batch']:>6} {r['amp']:>5} {r['ms/step']:>9.1f} "
              f"{r['throughput']:>10,.0f} {r['unit']}", flush=True)


if __name__ == "__main__":
    main()
