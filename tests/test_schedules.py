"""Schedules against their formulas (README "Schedules"), boundary conditions, errors."""

from __future__ import annotations

import math

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from trx.optim import PROTOTYPES, ConfigError, Schedule, build_optimizer, lr_ratio
from trx.optim.base import validate

FORMULAS = {
    "constant": lambda x: 1.0,
    "linear": lambda x: 1.0 - x,
    "cosine": lambda x: math.cos(math.pi * x / 2) ** 2,
    "sqrt_linear": lambda x: math.sqrt(1.0 - x),
    "one_minus_sqrt": lambda x: 1.0 - math.sqrt(x),
}


def window(total: int, **options):
    return validate(Schedule, options).build(total)


def test_every_prototype_is_tested():
    assert set(PROTOTYPES) == set(FORMULAS)


@pytest.mark.parametrize("name", sorted(FORMULAS))
def test_prototype_follows_its_formula(name):
    total = 11
    s = window(total, name=name)
    for t in range(total):
        assert s(t) == pytest.approx(FORMULAS[name](t / (total - 1)), abs=1e-12)
    assert s(0) == 1.0
    assert s(total - 1) == pytest.approx(0.0 if name != "constant" else 1.0, abs=1e-12)


@pytest.mark.parametrize("name", sorted(FORMULAS))
@pytest.mark.parametrize("warmup", [4, 0.2])
def test_warmup_then_window(name, warmup):
    total = 20
    s = window(total, name=name, warmup=warmup)
    w = 4  # 0.2 of 20 updates
    for t in range(w):
        assert s(t) == pytest.approx((t + 1) / w)
    n = total - w
    for t in range(w, total):
        assert s(t) == pytest.approx(FORMULAS[name]((t - w) / (n - 1)), abs=1e-12)
    assert s(w - 1) == 1.0 and s(w) == 1.0  # warmup ends at 1 and the window starts at 1


def test_fractional_warmup_rounds_to_updates():
    assert validate(Schedule, {"warmup": 0.05}).warmup_updates(1000) == 50
    assert validate(Schedule, {"warmup": 0.05}).warmup_updates(30) == 2  # round(1.5)
    assert validate(Schedule, {"warmup": 7.0}).warmup_updates(1000) == 7  # a whole float is updates


def test_flat_holds_then_decays():
    total, eps = 21, 0.5
    s = window(total, name="linear", flat=eps)
    for t in range(total):
        x = t / (total - 1)
        assert s(t) == pytest.approx(1.0 - max(0.0, (x - eps) / (1 - eps)), abs=1e-12)
    assert s(10) == 1.0 and s(total - 1) == pytest.approx(0.0, abs=1e-12)


def test_warmup_stable_decay():
    s = window(30, name="linear", warmup=5, flat=0.4)
    assert [s(t) for t in range(5)] == pytest.approx([0.2, 0.4, 0.6, 0.8, 1.0])
    assert all(s(t) == 1.0 for t in range(5, 5 + 10))  # x ≤ 0.4 of the 25-update window
    assert s(29) == pytest.approx(0.0, abs=1e-12)


def test_symmetric_linear_is_a_triangle_and_with_flat_a_trapezoid():
    total = 21
    tri = window(total, name="linear", symmetric=True)
    trap = window(total, name="linear", symmetric=True, flat=0.5)
    for t in range(total):
        y = abs(2 * t / (total - 1) - 1)
        assert tri(t) == pytest.approx(1 - y, abs=1e-12)
        assert trap(t) == pytest.approx(1 - max(0.0, (y - 0.5) / 0.5), abs=1e-12)
    assert tri(0) == pytest.approx(0.0) and tri(10) == 1.0 and tri(20) == pytest.approx(0.0, abs=1e-12)
    assert trap(7) == 1.0 and trap(13) == 1.0


def test_symmetric_cosine_with_flat_is_tukey():
    total, eps = 41, 0.3
    s = window(total, name="cosine", symmetric=True, flat=eps)
    for t in range(total):
        y = abs(2 * t / (total - 1) - 1)
        q = max(0.0, (y - eps) / (1 - eps))
        assert s(t) == pytest.approx(math.cos(math.pi * q / 2) ** 2, abs=1e-12)
    assert s(0) == pytest.approx(0.0, abs=1e-12) and s(20) == 1.0


def test_floor_lifts_the_window_but_not_the_warmup():
    s = window(12, name="linear", warmup=2, floor=0.1)
    assert s(0) == pytest.approx(0.5) and s(1) == 1.0
    assert s(2) == 1.0
    assert s(11) == pytest.approx(0.1)
    assert s(6) == pytest.approx(0.1 + 0.9 * (1 - 4 / 9))


def test_holds_last_value_past_the_end():
    s = window(10, name="cosine", floor=0.2)
    assert s(10) == s(9) == s(1000) == pytest.approx(0.2)
    assert window(10, name="constant")(50) == 1.0


def test_lr_ratio_blank_where_undefined():
    s = window(10, name="linear", warmup=2)
    assert lr_ratio(s, 0) is None
    assert lr_ratio(s, 1) == pytest.approx(2.0)
    assert lr_ratio(s, 3) == pytest.approx((1 - 1 / 7) / 1.0)
    after_zero = window(10, name="linear")
    assert after_zero(9) == 0.0 and lr_ratio(after_zero, 10) is None  # s(t−1) = 0


def test_optimizer_uses_s_of_t_for_update_t():
    import torch

    p = torch.nn.Parameter(torch.zeros(3))
    opt = build_optimizer([("p", p)], {"lr": 0.5, "schedule": {"name": "linear", "warmup": 2}}, total_steps=6)
    s = opt.stages[0].schedule
    seen = []
    for _ in range(8):
        seen.append(opt.current_lr())
        p.grad = torch.ones(3)
        before = p.detach().clone()
        opt.step()
        assert opt.param_groups[0]["lr"] == pytest.approx(seen[-1])
        assert float((before - p.detach())[0]) == pytest.approx(seen[-1])
    assert seen == pytest.approx([0.5 * s(t) for t in range(8)])
    assert seen[-1] == 0.0  # past τ the last value (0) holds


# --- properties -----------------------------------------------------------------------------

options = st.fixed_dictionaries(
    {"name": st.sampled_from(sorted(FORMULAS))},
    optional={
        "flat": st.floats(0.0, 0.95),
        "floor": st.floats(0.0, 0.95),
        "symmetric": st.booleans(),
        "warmup": st.integers(0, 20),
    },
)


@settings(max_examples=150, deadline=None)
@given(options, st.integers(2, 200))
def test_window_stays_in_unit_interval(opts, total):
    if opts.get("symmetric") and opts.get("warmup"):
        opts = {**opts, "warmup": 0}
    if total - opts.get("warmup", 0) < 2:
        return
    s = window(total, **opts)
    values = [s(t) for t in range(total + 3)]
    assert all(0.0 <= v <= 1.0 for v in values)


@settings(max_examples=150, deadline=None)
@given(st.sampled_from(sorted(FORMULAS)), st.floats(0.0, 0.95), st.floats(0.0, 0.95), st.integers(2, 200))
def test_decay_is_monotone_without_warmup_or_symmetry(name, flat, floor, total):
    s = window(total, name=name, flat=flat, floor=floor)
    values = [s(t) for t in range(total)]
    assert values[0] == 1.0
    assert all(b <= a + 1e-12 for a, b in zip(values, values[1:]))
    assert values[-1] == pytest.approx(floor if name != "constant" else 1.0, abs=1e-9)


# --- config errors ---------------------------------------------------------------------------


def error_of(cfg: dict, total: int = 100) -> ConfigError:
    import torch

    with pytest.raises(ConfigError) as info:
        build_optimizer([("p", torch.nn.Parameter(torch.zeros(2)))], cfg, total_steps=total)
    return info.value


@pytest.mark.parametrize(
    "schedule, key",
    [
        ({"name": "linear", "warmup": -1}, "schedule.warmup"),
        ({"name": "linear", "warmup": 1.5}, "schedule.warmup"),
        ({"name": "linear", "warmup": "ten"}, "schedule.warmup"),
        ({"name": "linear", "warmup": True}, "schedule.warmup"),
        ({"name": "linear", "symmetric": True, "warmup": 3}, "schedule.symmetric"),
        ({"name": "linear", "flat": 1.0}, "schedule.flat"),
        ({"name": "linear", "floor": -0.1}, "schedule.floor"),
        ({"name": "triangle"}, "schedule.name"),
        ({"name": "linear", "warm_up": 3}, "schedule.warm_up"),
    ],
)
def test_bad_schedule_names_the_key(schedule, key):
    err = error_of({"lr": 0.1, "schedule": schedule})
    assert err.key == key, err


def test_window_shorter_than_two_updates_is_an_error():
    err = error_of({"lr": 0.1, "schedule": {"name": "linear", "warmup": 99}}, total=100)
    assert err.key == "schedule.warmup" and "at least 2" in err.message
    err = error_of({"lr": 0.1, "schedule": {"name": "linear", "warmup": 0.5}}, total=3)
    assert err.key == "schedule.warmup"
    err = error_of({"lr": 0.1, "schedule": "cosine"}, total=1)
    assert err.key.startswith("schedule")


def test_aux_schedule_error_is_under_aux():
    import torch

    cfg = {
        "lr": 0.02,
        "normalizer": {"name": "muon", "dtype": "float32"},
        "aux": {"schedule": {"name": "linear", "warmup": 50}},
    }
    params = [("w", torch.nn.Parameter(torch.zeros(3, 3))), ("b", torch.nn.Parameter(torch.zeros(3)))]
    with pytest.raises(ConfigError) as info:
        build_optimizer(params, cfg, total_steps=50)
    assert info.value.key == "aux.schedule.warmup"
