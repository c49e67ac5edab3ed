"""Config errors through build_optimizer name the dotted key and say what is allowed."""

from __future__ import annotations

import pytest
import torch
from torch import nn

from trx.optim import ArmConfig, ConfigError, build_optimizer
from trx.optim.base import validate


def params():
    return [("w", nn.Parameter(torch.zeros(3, 3))), ("b", nn.Parameter(torch.zeros(3)))]


def error_of(cfg, roles=None) -> ConfigError:
    with pytest.raises(ConfigError) as info:
        build_optimizer(params(), cfg, total_steps=10, roles=roles)
    return info.value


MUON = {"name": "muon", "dtype": "float32"}


@pytest.mark.parametrize(
    "cfg, key, words",
    [
        ({"lr": 0.1, "fliter": "ema"}, "fliter", ["allowed", "filter"]),
        ({"lr": 0.1, "filter": {"name": "ema", "bta": 0.5}}, "filter.bta", ["allowed", "beta"]),
        ({"lr": 0.1, "normalizer": {"name": "muon", "step": 3}}, "normalizer.step", ["ns_steps"]),
        ({"lr": 0.1, "filter": "emma"}, "filter", ["'emma'", "heavy_ball", "iir"]),
        ({"lr": 0.1, "normalizer": "adamw"}, "normalizer", ["'adamw'", "adam", "muon"]),
        ({"lr": 0.1, "normalizer": {"name": "muon", "coefficients": "foo"}}, "normalizer.coefficients", ["keller"]),
        ({"lr": 0.1, "normalizer": {"name": "muon", "coefficients": [[1, 2]]}}, "normalizer.coefficients", ["3 numbers"]),
        ({"lr": 0.1, "filter": {"name": "ema", "beta": 1.5}}, "filter.beta", ["< 1"]),
        ({"lr": 0.1, "normalizer": {"name": "adam", "beta2": -1}}, "normalizer.beta2", ["≥ 0"]),
        ({"lr": 0.1, "normalizer": {"name": "adam", "eps": 0}}, "normalizer.eps", ["> 0"]),
        ({"lr": 0.1, "normalizer": {"name": "muon", "ns_steps": 0}}, "normalizer.ns_steps", ["≥ 1"]),
        ({"lr": -1}, "lr", ["> 0"]),
        ({}, "lr", ["required"]),
        ({"lr": "x"}, "lr", ["number"]),
        ({"lr": 0.1, "weight_decay": -0.1}, "weight_decay.value", ["≥ 0"]),
        ({"lr": 0.1, "weight_decay": {"value": 0.1, "mode": "both"}}, "weight_decay.mode", ["coupled", "decoupled"]),
        ({"lr": 0.1, "weight_decay": {"exclude": ["bias"]}}, "weight_decay.exclude.0", ["vector"]),
        ({"lr": 0.1, "filter": {"name": "iir", "b": [1], "a": [1, -1.0]}}, "filter.a", ["unstable", "unit circle"]),
        ({"lr": 0.1, "filter": {"name": "iir", "b": [1], "a": [1, -2.5, 1.5]}}, "filter.a", ["unstable"]),
        ({"lr": 0.1, "filter": {"name": "iir", "b": [1], "a": [1, 0.0, 1.0]}}, "filter.a", ["unstable"]),  # poles ±i
        ({"lr": 0.1, "filter": {"name": "iir", "b": [1], "a": [2, -0.5]}}, "filter.a", ["a[0] must be 1"]),
        ({"lr": 0.1, "filter": {"name": "iir", "b": [0.0]}}, "filter.b", ["nonzero"]),
        ({"lr": 0.1, "normalizer": MUON}, "aux", ["b (vector)", "no aux block"]),
        ({"lr": 0.1, "normalizer": MUON, "aux": {"lr": 0.1, "lr_scale": 0.5}}, "aux.lr_scale", ["either"]),
        ({"lr": 0.1, "normalizer": MUON, "aux": {"filter": {"name": "ema", "beta": 2}}}, "aux.filter.beta", ["< 1"]),
        ({"lr": 0.1, "normalizer": MUON, "aux": {"normalizer": "muon"}}, "aux.normalizer", ["only matrices"]),
        ({"lr": 0.1, "normalizer": MUON, "aux": {"foo": 1}}, "aux.foo", ["lr_scale"]),
        ({"lr": 0.1, "main_roles": ["matrx"]}, "main_roles.0", ["matrix", "embedding"]),
        ({"lr": 0.1, "normalizer": MUON, "main_roles": ["matrix", "vector"], "aux": {}}, "main_roles",
         ["muon cannot take vector"]),
        ({"lr": 0.1, "normalizer": "adam", "main_roles": ["matrix"]}, "aux", ["main_roles", "b (vector)"]),
    ],
)
def test_config_error_names_the_key(cfg, key, words):
    err = error_of(cfg)
    assert err.key == key, err
    for word in words:
        assert word in err.message, (word, err.message)
    assert str(err).startswith(f"{key}: ")


def test_stable_iir_is_accepted():
    build_optimizer(params(), {"lr": 0.1, "filter": {"name": "iir", "b": [0.1], "a": [1, -1.6, 0.64]}}, total_steps=3)


def test_aux_missing_lists_every_parameter_it_cannot_take():
    named = [("w", nn.Parameter(torch.zeros(3, 3))), ("b", nn.Parameter(torch.zeros(3))), ("g", nn.Parameter(torch.ones(3)))]
    with pytest.raises(ConfigError) as info:
        build_optimizer(named, {"lr": 0.1, "normalizer": MUON}, total_steps=10)
    assert "b (vector)" in info.value.message and "g (vector)" in info.value.message
    assert "w " not in info.value.message


def test_roles_with_unknown_names_or_roles():
    err = error_of({"lr": 0.1}, roles={"nope": "matrix"})
    assert err.key == "roles" and "nope" in err.message and "w" in err.message
    err = error_of({"lr": 0.1}, roles={"w": "bias"})
    assert err.key == "roles" and "embedding" in err.message


def test_under_prefixes_the_key():
    err = ConfigError("filter.beta", "must be < 1")
    assert err.under("optimizers.adamw").key == "optimizers.adamw.filter.beta"
    assert err.under("optimizers.adamw").message == "must be < 1"
    assert ConfigError("", "bad").under("x").key == "x"


def test_shorthands_and_defaults():
    arm = validate(ArmConfig, {"lr": 0.1, "filter": "ema", "normalizer": "adam", "weight_decay": 0.1, "schedule": "cosine"})
    assert arm.filter.beta == 0.9 and arm.filter.bias_correction
    assert arm.normalizer.beta2 == 0.999 and arm.normalizer.eps == 1e-8
    assert arm.weight_decay.value == 0.1 and arm.weight_decay.mode == "decoupled" and arm.weight_decay.exclude == ["vector"]
    assert arm.schedule.name == "cosine" and arm.schedule.warmup == 0
    muon = validate(ArmConfig, {"lr": 0.1, "normalizer": "muon"}).normalizer
    assert (muon.ns_steps, muon.coefficients, muon.scale, muon.dtype) == (5, "keller", "original", "auto")
    default = validate(ArmConfig, {"lr": 0.1})
    assert default.filter.name == "none" and default.normalizer.name == "identity" and default.schedule.name == "constant"


def test_aux_inherits_the_main_block_except_its_normalizer():
    arm = validate(ArmConfig, {"lr": 0.02, "filter": {"name": "nesterov", "beta": 0.95}, "normalizer": "muon",
                               "weight_decay": 0.1, "schedule": "linear", "aux": {"lr_scale": 0.5}})
    aux = arm.aux_arm()
    assert aux.lr == pytest.approx(0.01)
    assert aux.filter == arm.filter and aux.weight_decay == arm.weight_decay and aux.schedule == arm.schedule
    assert aux.normalizer.name == "adam"
    assert validate(ArmConfig, {"lr": 0.02, "normalizer": "muon", "aux": {"lr": 3e-4}}).aux_arm().lr == 3e-4


def test_main_roles_send_the_other_roles_to_aux():
    """AdamW with Muon's split: only matrices in main; embedding, head and vectors in aux."""
    from trx.optim.optimizer import plan_groups

    model = nn.Sequential(nn.Embedding(5, 4), nn.LayerNorm(4), nn.Linear(4, 4), nn.Linear(4, 5))
    cfg = {"lr": 1e-3, "filter": "ema", "normalizer": "adam", "main_roles": ["matrix"], "aux": {"lr": 3e-3}}
    plan = plan_groups(model, cfg, roles={"3.weight": "head"})
    block_of = {name: (g["block"], role) for g in plan for name, role, _ in g["params"]}
    assert block_of == {"0.weight": ("aux", "embedding"), "1.weight": ("aux", "vector"), "1.bias": ("aux", "vector"),
                        "2.weight": ("main", "matrix"), "2.bias": ("aux", "vector"), "3.weight": ("aux", "head"),
                        "3.bias": ("aux", "vector")}
    assert all(g["arm"].lr == (1e-3 if g["block"] == "main" else 3e-3) for g in plan)
    default = plan_groups(model, {**cfg, "main_roles": None}, roles={"3.weight": "head"})
    assert {g["block"] for g in default} == {"main"}  # without main_roles adam takes every role
