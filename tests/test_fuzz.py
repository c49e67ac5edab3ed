"""Property-based configs and --set overrides: each either runs or is a UserError naming a key."""

from __future__ import annotations

import math
import os

import pytest
from conftest import tiny_config
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from trx.config import UserError, resolve
from trx.service import run_experiment

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
        summaries = run_experiment(cfg, tmp_path_factory.mktemp("fuzz"), device="cpu").summaries
    except UserError as exc:
        message = str(exc)
        assert message and "\n" not in message and "Traceback" not in message
        assert ":" in message  # "<key>: <what is allowed>"
        return
    for s in summaries:
        assert s["status"] in ("complete", "diverged"), (texts, s.get("error"))


# ---- the config grammar: every malformed file is one line, exit 2, nothing written -----------
import subprocess  # noqa: E402
import sys  # noqa: E402
from pathlib import Path  # noqa: E402

import yaml  # noqa: E402
from typer.testing import CliRunner  # noqa: E402

from trx.cli import app  # noqa: E402

NUMERIC_KEYS = [("steps",), ("seed",), ("log_every",), ("eval_every",), ("divergence_threshold",),
                ("optimizers", "sgd", "lr"), ("task", "batch_size"), ("optimizers", "sgd", "filter", "beta")]
bad_values = st.one_of(
    st.booleans(),
    st.text(min_size=1, max_size=6),
    st.integers(min_value=2**63),
    st.integers(max_value=-(2**63)),
    st.sampled_from([math.inf, -math.inf, math.nan]),
    st.lists(st.integers(0, 3), min_size=1, max_size=3),
    st.dictionaries(st.sampled_from(["a", "lr"]), st.integers(0, 3), min_size=1, max_size=2),
)


def _base() -> dict:
    return tiny_config(optimizers={"sgd": {"lr": 0.1, "filter": {"name": "ema", "beta": 0.9}}})


def _with(data: dict, key: tuple[str, ...], value) -> dict:
    node = data
    for part in key[:-1]:
        node = node[part]
    node[key[-1]] = value
    return data


def _bomb(levels: int, width: int) -> str:
    entries = ["b0: &a0 [" + ", ".join(["x"] * width) + "]"]
    entries += [f"b{i}: &a{i} [" + ", ".join([f"*a{i - 1}"] * width) + "]" for i in range(1, levels)]
    return "{" + ", ".join(entries) + "}"


@st.composite
def malformed(draw) -> str:
    """A valid config with one thing wrong: a value's type, nesting depth, an alias bomb, a
    duplicate key or a number too large or not finite."""
    kind = draw(st.sampled_from(["value", "depth", "alias", "duplicate"]))
    key = draw(st.sampled_from(NUMERIC_KEYS))
    if kind == "value":
        value = draw(bad_values)
        if isinstance(value, str) and _parses_as_number(value):
            value = value + "x"
        return yaml.safe_dump(_with(_base(), key, value), sort_keys=False)
    text = yaml.safe_dump(_with(_base(), key, "HOLE"), sort_keys=False)
    if kind == "depth":
        depth = draw(st.integers(51, 3000))
        return text.replace("HOLE", "[" * depth + "1" + "]" * depth)
    if kind == "alias":
        return text.replace("HOLE", _bomb(draw(st.integers(6, 9)), draw(st.integers(8, 9))))
    line = next(line for line in text.splitlines() if line.endswith("HOLE"))
    return text.replace("HOLE", "1", 1).replace(line.replace("HOLE", "1"), line.replace("HOLE", "1") + "\n" + line.replace("HOLE", "2"))


def _parses_as_number(text: str) -> bool:
    try:
        return isinstance(yaml.safe_load(text), (int, float)) and not isinstance(yaml.safe_load(text), bool)
    except yaml.YAMLError:
        return False


@settings(max_examples=60, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture, HealthCheck.too_slow])
@given(malformed())
def test_a_malformed_config_is_one_line_exit_2_and_nothing_written(tmp_path_factory, text):
    folder = tmp_path_factory.mktemp("grammar")
    (folder / "exp.yaml").write_text(text)
    res = CliRunner().invoke(app, ["run", str(folder / "exp.yaml"), "--out", str(folder / "runs")])
    assert res.exit_code == 2, (text[:300], res.stdout, res.stderr, res.exception)
    errors = [line for line in res.stderr.splitlines() if not line.startswith("hint:")]
    assert len(errors) == 1 and errors[0].startswith("error:"), res.stderr
    assert not (folder / "runs").exists()


@pytest.mark.parametrize("hole", ["[" * 50_000 + "]" * 50_000, _bomb(9, 9), "99999999999999999999"],
                         ids=["list-50000", "alias-bomb", "huge-seed"])
def test_a_malformed_config_in_a_real_process_prints_no_traceback(tmp_path, hole):
    text = yaml.safe_dump(_with(_base(), ("seed",), "HOLE"), sort_keys=False).replace("HOLE", hole)
    (tmp_path / "exp.yaml").write_text(text)
    env = {k: v for k, v in os.environ.items() if k != "TRX_DEBUG"}
    res = subprocess.run([sys.executable, "-m", "trx", "run", str(tmp_path / "exp.yaml"), "--out", str(tmp_path / "runs")],
                         capture_output=True, text=True, timeout=300, env=env, cwd=Path(__file__).resolve().parents[1])
    assert res.returncode == 2, res.stderr
    assert "Traceback" not in res.stderr and len([l for l in res.stderr.splitlines() if not l.startswith("hint:")]) == 1
    assert not (tmp_path / "runs").exists()
