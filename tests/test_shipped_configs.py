"""Every YAML in configs/ loads, validates and runs a few steps on the CPU."""

from __future__ import annotations

from pathlib import Path

import pytest

from trx.config import load_config
from trx.service import run_experiment

CONFIGS = sorted((Path(__file__).resolve().parents[1] / "configs").glob("*.yaml"))

# Sizes that keep a GPU-sized config to a few seconds on 2 CPU cores.
SMALL = {
    "small_gpt": ["task.n_layer=1", "task.n_embd=32", "task.n_head=2", "task.block_size=32", "task.batch_size=4",
                  "task.eval_batches=1", "task.compile=false", "task.grad_accum=1"],
    # CIFAR-10 ships in no package: the GPU config's data set is swapped for the offline one.
    "cifar_resnet": ["task.dataset=fashion_mnist", "task.data_dir=null", "task.model=fast", "task.width=8", "task.batch_size=8", "task.train_size=64", "task.val_size=32",
                     "task.eval_batch_size=32", "task.compile=false"],
}


def test_configs_exist():
    assert {p.name for p in CONFIGS} >= {"muon_vs_adam.yaml", "quickstart.yaml", "quadratic_heavy_ball.yaml"}


@pytest.mark.parametrize("path", CONFIGS, ids=lambda p: p.stem)
def test_shipped_config_runs_a_few_steps(path, tmp_path):
    cfg = load_config(path)
    small = SMALL.get(cfg.task.name, [])
    warm = [b.schedule.warmup for a in cfg.optimizers.values() for b in (a, a.aux) if b and b.schedule]
    n = 3 + max([w for w in warm if isinstance(w, int)], default=0)  # warmups in updates must still fit
    steps = [f"steps={n}", "log_every=1", "eval_every=2", "checkpoint_every=0", "device=cpu"]
    cfg = load_config(path, [*steps, *small])
    summaries = run_experiment(cfg, tmp_path).summaries
    assert len(summaries) == len(cfg.optimizers) * len(cfg.seed_list())  # one run per arm and seed
    for s in summaries:
        assert s["status"] in ("complete", "diverged"), (s["arm"], s.get("error"))
        assert s["steps_done"] >= 1


# Configs whose numbers the docs publish: `dtype: auto` would run Newton–Schulz in bf16 on CPUs
# with AVX512-BF16/AMX and in float32 elsewhere, so their numbers would depend on the CPU.
PUBLISHED = [p for p in CONFIGS if p.stem in ("lr_sweep", "muon_vs_adam", "warmup_ablation")]
PUBLISHED += sorted((CONFIGS[0].parent / "experiments").glob("*.yaml"))


@pytest.mark.parametrize("path", [p for p in PUBLISHED if not p.stem.endswith("_gpu")], ids=lambda p: p.stem)
def test_configs_with_published_numbers_pin_the_newton_schulz_dtype(path):
    cfg = load_config(path)
    for name, arm in cfg.optimizers.items():
        dtype = getattr(arm.normalizer, "dtype", None)
        assert dtype in (None, "float32"), f"{path.name}: optimizers.{name}.normalizer.dtype is {dtype!r}"
