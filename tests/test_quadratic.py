"""The 1-D quadratic against closed-form linear-systems theory."""

from __future__ import annotations

import math

import numpy as np
import pytest
from conftest import tiny_config

from trx.config import resolve
from trx.service import run_experiment
from trx.tasks.quadratic1d import contraction_rate, stable_limit, stationary_variance

HEAVY = lambda beta: ([1.0], [1.0, -beta])  # noqa: E731
NESTEROV = lambda beta: ([1.0 + beta, -beta], [1.0, -beta])  # noqa: E731


@pytest.mark.parametrize("beta", [0.0, 0.3, 0.5, 0.9, 0.99])
def test_stable_limits_match_closed_forms(beta):
    assert stable_limit(*HEAVY(beta)) == pytest.approx(2 * (1 + beta), rel=1e-9)
    assert stable_limit(*NESTEROV(beta)) == pytest.approx(2 * (1 + beta) / (1 + 2 * beta), rel=1e-9)


@pytest.mark.parametrize("beta", [0.25, 0.5, 0.81])
def test_heavy_ball_rate_is_sqrt_beta_inside_the_optimal_band(beta):
    lo, hi = (1 - math.sqrt(beta)) ** 2, (1 + math.sqrt(beta)) ** 2
    for h in np.linspace(lo, hi, 7)[1:-1]:
        assert contraction_rate(*HEAVY(beta), h) == pytest.approx(math.sqrt(beta), rel=1e-6)
    assert contraction_rate(*HEAVY(beta), lo / 2) > math.sqrt(beta)  # overdamped: slower


def test_gradient_descent_rate_and_noise_variance():
    assert contraction_rate([1.0], [1.0], 0.3) == pytest.approx(0.7)
    mu, lam, sigma = 0.1, 2.0, 0.5
    closed = mu * sigma**2 / (lam * (2 - mu * lam))  # Var of w(t+1) = (1-μλ)w(t) - μσξ
    assert stationary_variance([1.0], [1.0], mu * lam, mu, sigma) == pytest.approx(closed, rel=1e-9)
    assert math.isinf(stationary_variance([1.0], [1.0], 2.5, 1.25, sigma))


def _run(tmp_path, arms, **task):
    data = tiny_config(
        name="quad",
        steps=400,
        log_every=1,
        eval_every=0,
        divergence_threshold=1e6,
        task={"name": "quadratic1d", **task},
        optimizers=arms,
    )
    return {s["arm"]: s for s in run_experiment(resolve(data), tmp_path).summaries}


def test_measured_rate_matches_prediction(tmp_path):
    arms = {
        "gd": {"lr": 0.3},
        "hb": {"lr": 0.5, "filter": {"name": "heavy_ball", "beta": 0.5}},
        "nag": {"lr": 0.2, "filter": {"name": "nesterov", "beta": 0.7}},
        "iir": {"lr": 0.2, "filter": {"name": "iir", "b": [0.5, 0.2], "a": [1.0, -0.6, 0.1]}},
        "edge": {"lr": 2.9, "filter": {"name": "heavy_ball", "beta": 0.5}},
    }
    out = _run(tmp_path, arms, curvature=1.0, init=1.0)
    for arm, s in out.items():
        th = s["theory"]
        assert s["status"] == "complete", arm
        assert th["measured_rate"] == pytest.approx(th["predicted_rate"], rel=0.01), arm
    assert out["hb"]["theory"]["stable_h_max"] == pytest.approx(3.0, rel=1e-6)


def test_unstable_step_size_diverges_as_predicted(tmp_path):
    out = _run(tmp_path, {"hb": {"lr": 3.1, "filter": {"name": "heavy_ball", "beta": 0.5}}}, curvature=1.0)
    s = out["hb"]
    assert s["status"] == "diverged" and s["diverged"] and s["diverged_at"] is not None
    assert s["theory"]["predicted_rate"] > 1.0
    assert s["theory"]["measured_rate"] == pytest.approx(s["theory"]["predicted_rate"], rel=0.01)


def test_noise_variance_matches_prediction(tmp_path):
    data = tiny_config(
        name="noisy", steps=6000, log_every=1, eval_every=0,
        task={"name": "quadratic1d", "curvature": 1.0, "init": 0.0, "noise": 1.0},
        optimizers={"hb": {"lr": 0.1, "filter": {"name": "heavy_ball", "beta": 0.5}}},
    )
    s = run_experiment(resolve(data), tmp_path).summaries[0]
    th = s["theory"]
    assert th["measured_variance"] == pytest.approx(th["predicted_variance"], rel=0.15)


def test_theory_is_absent_where_it_does_not_apply(tmp_path):
    out = _run(tmp_path, {"adam": {"lr": 0.1, "filter": "ema", "normalizer": "adam"}})
    assert out["adam"]["theory"] is None
