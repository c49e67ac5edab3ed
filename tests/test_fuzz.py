"""Property-based configs and --set overrides: each either runs or is a UserError naming a key."""

from __future__ import annotations

import math

from conftest import tiny_config
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from trx.config import UserError, resolve
from trx.executors import run_experiment
from trx.runner import prepare

KEYS = [
    "steps", "seed", "log_every", "eval_every", "divergence_threshold", "grad_clip", "checkpoint_every",
    "task", "task.name", "task.dataset", "task.batch_size", "task.curvature", "task.noise", "task.init",
    "optimizers.a", "optimizers.a.lr", "optimizers.a.filter", "optimizers.a.filter.name", "optimizers.a.filter.beta",
    "optimizers.a.filter.b", "optimizers.a.filter.a", "optimizers.a.filter.gamma", "optimizers.a.normalizer",
    "optimizers.a.normalizer.name", "optimizers.a.normalizer.ns_steps", "optimizers.a.normalizer.eps",
    "optimizers.a.normalizer.beta2", "optimizers.a.normalizer.coefficients", "optimizers.a.normalizer.scale",
    "optimizers.a.normalizer.dtype", "optimizers.a.schedule", "optimizers.a.schedule.name",
    "optimizers.a.schedule.warmup", "optimizers.a.schedule.flat", "optimizers.a.schedule.floor",
    "optimizers.a.schedule.symmetric", "optimizers.a.weight_decay", "optimizers.a.weight_decay.value",
    "optimizers.a.weight_decay.mode", "optimizers.a.weight_decay.exclude", "optimizers.a.aux",
    "optimizers.a.aux.lr", "optimizers.a.aux.lr_scale", "optimizers.a.aux.normalizer", "optimizers.*.lr",
    "optimizers.b.lr", "zzz", "task.zzz", "optimizers.a.zzz",
]
NAMES = ["none", "heavy_ball", "nesterov", "ema", "iir", "identity", "sign", "adam", "muon", "linear", "cosine",
         "constant", "logreg", "quadratic1d", "digits", "wine", "keller", "coupled", "decoupled", "vector", "bogus"]
scalars = st.one_of(
    st.none(), st.booleans(), st.integers(-5, 50), st.floats(allow_nan=True, allow_infinity=True, width=32),
    st.sampled_from(NAMES), st.text(max_size=5),
)
values = st.one_of(scalars, st.lists(scalars, max_size=4), st.dictionaries(st.sampled_from(["name", "beta", "b", "a", "lr"]), scalars, max_size=3))


def _yaml(value) -> str:
    import yaml

    if isinstance(value, float) and math.isnan(value):
        return ".nan"
    return yaml.safe_dump(value, default_flow_style=True).strip().removesuffix("...").strip()


@settings(max_examples=80, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture, HealthCheck.too_slow])
@given(st.lists(st.tuples(st.sampled_from(KEYS), values), min_size=1, max_size=3))
def test_overrides_never_end_in_a_traceback(tmp_path_factory, overrides):
    base = tiny_config(steps=3, log_every=1, eval_every=2,
                       optimizers={"a": {"lr": 0.05, "filter": {"name": "heavy_ball", "beta": 0.5}}})
    texts = [f"{k}={_yaml(v)}" for k, v in overrides]
    try:
        cfg = resolve(base, texts)
        if cfg.steps > 50:
            return  # valid, but too long to run here
        summaries = run_experiment(prepare(cfg, tmp_path_factory.mktemp("fuzz"), "cpu"))
    except UserError as exc:
        message = str(exc)
        assert message and "\n" not in message and "Traceback" not in message
        assert ":" in message  # "<key>: <what is allowed>"
        return
    for s in summaries:
        assert s["status"] in ("complete", "diverged"), (texts, s.get("error"))
