"""GPU smoke test: does trx's GPU path work on this machine? Under two minutes on any CUDA GPU.

Checks, one line each (PASS / FAIL / SKIP with the reason):
- every registered task: one training step of a small model on the device, compiled
  (`torch.compile`; the task's own `compile` option where it has one), with the task's bf16
  autocast and memory format, Muon + aux Adam, then its evaluation;
- every registered normalizer: one step on a small model, Newton–Schulz in its `auto` dtype
  (bf16 on CUDA), diagnostics on;
- a checkpoint round trip of a bf16 model under NorMuon and TrasMuon (+ aux Adam): saved with
  torch.save, loaded with weights_only=True; state dtypes kept and the next steps equal to the
  uninterrupted run's.

    python scripts/gpu_smoke.py                  # CUDA; exits 2 when torch sees no CUDA device
    python scripts/gpu_smoke.py --device cpu     # the same checks on the CPU, uncompiled

Exit status: 0 when every check passes (SKIPs allowed), 1 when one fails, 2 without a device.
"""

from __future__ import annotations

import argparse
import copy
import io
import math
import sys
import tempfile
import time
import traceback
from collections.abc import Callable
from pathlib import Path
from typing import Any

import torch
from torch import nn

from trx.optim import NORMALIZERS, build_optimizer
from trx.tasks import TASKS, DataError

# Small options per task: seconds on any GPU, no downloads. A task not listed runs its defaults.
TASK_OPTIONS: dict[str, dict[str, Any]] = {
    "small_gpt": {"n_layer": 2, "n_head": 2, "n_embd": 64, "block_size": 64, "batch_size": 8, "eval_batches": 2},
    "cifar_resnet": {"dataset": "synthetic", "train_size": 256, "val_size": 128, "batch_size": 32,
                     "eval_batch_size": 64, "width": 8},
}

MUON_AUX = {"lr": 0.02, "filter": {"name": "nesterov", "beta": 0.95}, "normalizer": {"name": "muon"},
            "weight_decay": {"value": 0.01}, "aux": {"lr": 1e-3, "filter": {"name": "ema", "beta": 0.9},
                                                      "normalizer": "adam"}}


class Skip(Exception):
    """A check that cannot run here (its data is missing), with the reason."""


def text_file(folder: Path) -> str:
    """A small synthetic text for small_gpt: no data package needed."""
    path = folder / "smoke.txt"
    words = ["to", "be", "or", "not", "that", "is", "the", "question", "whether", "tis", "nobler"]
    gen = torch.Generator().manual_seed(0)
    idx = torch.randint(len(words), (6000,), generator=gen).tolist()
    path.write_text(" ".join(words[i] for i in idx) + "\n", encoding="utf-8")
    return str(path)


def finite_update(params: list[torch.Tensor], before: list[torch.Tensor]) -> str | None:
    """None when every parameter is finite and some moved, else what is wrong."""
    if not all(bool(torch.isfinite(p).all()) for p in params):
        return "a parameter is not finite after the step"
    if not any(not torch.equal(p, b) for p, b in zip(params, before)):
        return "no parameter moved"
    return None


def check_task(name: str, device: torch.device, compiled: bool, folder: Path) -> str:
    cls = TASKS[name]
    opts = dict(TASK_OPTIONS.get(name, {}))
    fields = cls.Options.model_fields
    if name == "small_gpt" and "text_file" in fields:
        opts["text_file"] = text_file(folder)
    own_compile = "compile" in fields
    if own_compile:
        opts["compile"] = compiled
    if "amp" in fields:
        opts["amp"] = "auto"  # bf16 autocast on CUDA, off on the CPU
    task = cls(cls.Options.model_validate(opts), 0, device)
    try:
        task.prepare()
    except DataError as exc:
        raise Skip(f"data missing: {exc}") from None
    torch.manual_seed(0)
    model = task.build_model()
    if compiled and not own_compile:
        model.compile()
    opt = build_optimizer(model, MUON_AUX, total_steps=10, roles=task.param_roles(model))
    params = [p for p in model.parameters() if p.requires_grad]
    before = [p.detach().clone() for p in params]
    loss = task.loss(model, task.batch(0))
    loss.backward()
    opt.diagnose = True
    opt.step()
    loss = float(loss.detach())
    problem = finite_update(params, before)
    if problem or not math.isfinite(loss):
        raise AssertionError(problem or f"loss {loss}")
    metrics = task.evaluate(model)
    bad = {k: v for k, v in metrics.items() if not math.isfinite(v)}
    if bad:
        raise AssertionError(f"evaluation not finite: {bad}")
    shown = ", ".join(f"{k} {v:.4g}" for k, v in metrics.items())
    how = "compiled" if compiled else "eager"
    ratios = ", ".join(f"{k} {opt.diagnostics[k]:.3g}" for k in ("tr_ratio", "aux_tr_ratio") if k in opt.diagnostics)
    return ", ".join(x for x in (how, f"loss {loss:.4g}", ratios, shown) if x)


class Tiny(nn.Module):
    """Matrices of three shapes (one stacked pair), biases and a LayerNorm: every group kind."""

    def __init__(self):
        super().__init__()
        self.a = nn.Linear(32, 64)
        self.b = nn.Linear(64, 64)
        self.c = nn.Linear(64, 64)
        self.norm = nn.LayerNorm(64)
        self.out = nn.Linear(64, 8)

    def forward(self, x):
        return self.out(self.norm(torch.tanh(self.c(torch.tanh(self.b(torch.tanh(self.a(x))))))))


def tiny_loss(model: nn.Module, t: int, device: torch.device, dtype: torch.dtype = torch.float32) -> torch.Tensor:
    gen = torch.Generator().manual_seed(t)
    x = torch.randn(16, 32, generator=gen).to(device, dtype)
    y = torch.randint(8, (16,), generator=gen).to(device)
    return nn.functional.cross_entropy(model(x).float(), y)


def check_normalizer(name: str, device: torch.device) -> str:
    torch.manual_seed(0)
    model = Tiny().to(device)
    cfg = {"lr": 0.01, "filter": {"name": "ema", "beta": 0.9}, "normalizer": {"name": name}}
    if not NORMALIZERS[name]().accepts("vector"):
        cfg["aux"] = {}
    opt = build_optimizer(model, cfg, total_steps=10)
    params = list(model.parameters())
    before = [p.detach().clone() for p in params]
    tiny_loss(model, 0, device).backward()
    opt.diagnose = True
    opt.step()
    problem = finite_update(params, before)
    if problem:
        raise AssertionError(problem)
    bad = {k: v for k, v in opt.diagnostics.items() if not math.isfinite(v)}
    if bad:
        raise AssertionError(f"diagnostics not finite: {bad}")
    info = opt.info()
    return ", ".join([f"tr_ratio {opt.diagnostics['tr_ratio']:.3g}"] + [f"{k} {v}" for k, v in info.items()])


def train(model: nn.Module, opt: torch.optim.Optimizer, steps: range, device: torch.device) -> None:
    for t in steps:
        opt.zero_grad(set_to_none=True)
        tiny_loss(model, t, device, torch.bfloat16).backward()
        opt.step()


def check_checkpoint(name: str, device: torch.device) -> str:
    """bf16 model: save after 3 steps, load into fresh copies, 2 more steps on both: equal."""
    cfg = {"lr": 0.01, "filter": {"name": "ema", "beta": 0.9, "bias_correction": False},
           "normalizer": {"name": name}, "aux": {"lr": 1e-3, "normalizer": "adam"}}
    torch.manual_seed(0)
    model = Tiny().to(device, torch.bfloat16)
    opt = build_optimizer(model, cfg, total_steps=10)
    train(model, opt, range(3), device)
    buf = io.BytesIO()
    torch.save({"model": model.state_dict(), "optimizer": opt.state_dict()}, buf)
    buf.seek(0)
    ckpt = torch.load(buf, map_location=device, weights_only=True)
    resumed = copy.deepcopy(model)
    resumed.load_state_dict(ckpt["model"])
    opt2 = build_optimizer(resumed, cfg, total_steps=10)
    opt2.load_state_dict(ckpt["optimizer"])
    for p, q in zip(model.parameters(), resumed.parameters()):
        for key, value in opt.state[p].items():
            got = opt2.state[q][key]
            if got.dtype != value.dtype or got.device != value.device:
                raise AssertionError(f"state {key}: saved {value.dtype} on {value.device}, loaded {got.dtype} on {got.device}")
    train(model, opt, range(3, 5), device)
    train(resumed, opt2, range(3, 5), device)
    gap = max(float((p.float() - q.float()).abs().max()) for p, q in zip(model.parameters(), resumed.parameters()))
    if gap != 0.0:
        raise AssertionError(f"resumed run differs from the uninterrupted one by up to {gap:.3g}")
    kinds = sorted({str(v.dtype).removeprefix("torch.") for st in opt2.state.values() for v in st.values()})
    return f"bf16 model, state dtypes {'/'.join(kinds)} kept, next 2 steps identical"


def run_check(label: str, fn: Callable[[], str], device: torch.device) -> str:
    """Run one check and print its line; returns PASS, FAIL or SKIP."""
    if device.type == "cuda":
        torch.cuda.reset_peak_memory_stats(device)
    start = time.perf_counter()
    try:
        detail = fn()
        if device.type == "cuda":
            torch.cuda.synchronize(device)
            detail += f", peak {torch.cuda.max_memory_allocated(device) / 2**20:.0f} MiB"
        verdict = "PASS"
    except Skip as exc:
        verdict, detail = "SKIP", str(exc)
    except Exception as exc:  # noqa: BLE001 - every failure becomes one FAIL line
        verdict, detail = "FAIL", f"{type(exc).__name__}: {str(exc).splitlines()[0] if str(exc) else ''}"
        if "-v" in sys.argv or "--verbose" in sys.argv:
            traceback.print_exc()
    print(f"{verdict} {label}: {detail} ({time.perf_counter() - start:.1f} s)", flush=True)
    return verdict


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--device", default="cuda", help="cuda (default, compiled) or cpu (uncompiled)")
    ap.add_argument("--no-compile", action="store_true", help="skip torch.compile on CUDA too")
    ap.add_argument("--threads", type=int, default=None, help="torch threads (CPU)")
    ap.add_argument("-v", "--verbose", action="store_true", help="print the traceback of a failure")
    args = ap.parse_args()
    if args.threads:
        torch.set_num_threads(args.threads)
    if args.device.startswith("cuda") and not torch.cuda.is_available():
        print(f"no CUDA device: torch {torch.__version__} sees none (CUDA build: {torch.version.cuda}); "
              "run with --device cpu for the CPU checks", flush=True)
        return 2
    device = torch.device(args.device)
    compiled = device.type == "cuda" and not args.no_compile
    where = torch.cuda.get_device_name(device) if device.type == "cuda" else "CPU"
    print(f"trx GPU smoke: torch {torch.__version__}, CUDA {torch.version.cuda}, {where}", flush=True)
    verdicts = []
    with tempfile.TemporaryDirectory() as tmp:
        for name in sorted(TASKS):
            verdicts.append(run_check(f"task {name}", lambda n=name: check_task(n, device, compiled, Path(tmp)), device))
    for name in sorted(NORMALIZERS):
        verdicts.append(run_check(f"normalizer {name}", lambda n=name: check_normalizer(n, device), device))
    for name in ("normuon", "trasmuon"):
        verdicts.append(run_check(f"checkpoint {name}", lambda n=name: check_checkpoint(n, device), device))
    failed = verdicts.count("FAIL")
    print(f"{'FAIL' if failed else 'PASS'}: {verdicts.count('PASS')} passed, {failed} failed, "
          f"{verdicts.count('SKIP')} skipped", flush=True)
    return 1 if failed else 0


if __name__ == "__main__":
    sys.exit(main())
