"""Config loading: defaults, --set overrides, and errors that name the dotted key."""

from __future__ import annotations

import pytest
from conftest import tiny_config

from trx.config import UserError, arm_config, diff_keys, load_config, resolve


def test_defaults_are_filled_in():
    cfg = resolve(tiny_config())
    arm = cfg.optimizers["sgd"]
    assert arm.schedule.name == "constant" and arm.weight_decay.value == 0.0
    assert arm.weight_decay.mode == "decoupled" and arm.weight_decay.exclude == ["vector"]
    adam = cfg.optimizers["adam"]
    assert adam.filter.bias_correction is True
    assert (adam.normalizer.beta2, adam.normalizer.eps) == (0.999, 1e-8)
    muon = resolve(tiny_config(optimizers={"m": {"lr": 0.1, "normalizer": "muon", "aux": {}}})).optimizers["m"]
    n = muon.normalizer
    assert (n.ns_steps, n.coefficients, n.scale, n.dtype) == (5, "keller", "original", "auto")
    assert muon.aux_arm().normalizer.name == "adam"


def test_name_defaults_to_file_stem(write_config):
    data = tiny_config()
    del data["name"]
    assert load_config(write_config(data, "my_exp.yaml")).name == "my_exp"


def test_set_overrides_parse_yaml_values_and_star():
    cfg = resolve(
        tiny_config(),
        [
            "steps=7",
            "optimizers.adam.lr=0.5",
            "optimizers.*.schedule.warmup=2",
            "optimizers.sgd.filter={name: iir, b: [1.0, 0.5], a: [1.0, -0.5]}",
        ],
    )
    assert cfg.steps == 7 and cfg.optimizers["adam"].lr == 0.5
    assert all(a.schedule.warmup == 2 for a in cfg.optimizers.values())
    assert cfg.optimizers["sgd"].filter.b == [1.0, 0.5]


def test_replacing_a_component_name_keeps_sibling_keys():
    data = tiny_config(optimizers={"a": {"lr": 0.1, "filter": {"name": "heavy_ball", "beta": 0.5}}})
    assert resolve(data, ["optimizers.a.filter.name=nesterov"]).optimizers["a"].filter.beta == 0.5
    with pytest.raises(UserError, match=r"optimizers\.a\.filter\.beta: unknown key; allowed: name$"):
        resolve(data, ["optimizers.a.filter.name=none"])


@pytest.mark.parametrize(
    ("overrides", "message"),
    [
        (["stepz=3"], r"^stepz: unknown key; allowed: name, seed, device, steps"),
        (["steps=0"], r"^steps: must be ≥ 1, got 0"),
        (["steps=abc"], r"^steps: must be an integer, got 'abc'"),
        (["device=tpu"], r"^device: must be one of 'auto', 'cpu' or 'cuda'"),
        (["task.name=mnist"], r"^task: unknown name 'mnist'; allowed: .*'logreg'"),
        (["task.dataset=iris"], r"^task\.dataset: must be one of 'digits', 'breast_cancer' or 'wine'"),
        (["optimizers.sgd.lr=-1"], r"^optimizers\.sgd\.lr: must be > 0"),
        (["optimizers.sgd.normalizer.name=muon", "optimizers.sgd.normalizer.ns_steps=0"], r"optimizers\.sgd\.normalizer\.ns_steps: must be ≥ 1, got 0"),
        (["optimizers.sgd.filter={name: iir, b: [1], a: [1, -1.2]}"], r"optimizers\.sgd\.filter\.a: unstable filter"),
        (["optimizers.sgd.schedule={name: linear, warmup: 20}"], r"optimizers\.sgd\.schedule\.warmup: the window after warmup has 0 updates"),
        (["optimizers.sgd.schedule={name: linear, warmup: 2, symmetric: true}"], r"optimizers\.sgd\.schedule\.symmetric"),
        (["optimizers={}"], r"^optimizers: needs at least one arm"),
        (["optimizers.sgd.aux={lr: 1, lr_scale: 1}"], r"optimizers\.sgd\.aux\.lr_scale: give either"),
        (["nokey"], r"--set 'nokey': expected KEY=VALUE"),
        (["steps.x=1"], r"steps\.x: steps is 20, not a mapping"),
        (["optimizers.sgd.lr=[1"], r"--set optimizers\.sgd\.lr: the value is not valid YAML"),
        (["claims=[{text: t, kind: difference, a: {arm: sgd}, b: {arm: adam}, expect: a_better, primary: true},"
          "{text: u, kind: difference, a: {arm: adam}, b: {arm: sgd}, expect: a_better, primary: true}]"],
         r"^claims: at most one claim is primary: true"),
    ],
)
def test_bad_input_names_the_key(overrides, message):
    with pytest.raises(UserError, match=message):
        resolve(tiny_config(), overrides)


def test_missing_and_malformed_files(tmp_path):
    with pytest.raises(UserError, match="no such file"):
        load_config(tmp_path / "absent.yaml")
    bad = tmp_path / "bad.yaml"
    bad.write_text("steps: [1,\n")
    with pytest.raises(UserError, match=r"not valid YAML \(line"):
        load_config(bad)
    bad.write_text("- 1\n- 2\n")
    with pytest.raises(UserError, match="must hold a mapping"):
        load_config(bad)


def test_arm_config_and_diff():
    cfg = resolve(tiny_config())
    one = arm_config(cfg, "adam")
    assert list(one["optimizers"]) == ["adam"] and "sweep" not in one
    other = arm_config(resolve(tiny_config(), ["optimizers.adam.lr=0.2", "seed=3"]), "adam")
    assert diff_keys(one, other) == ["optimizers.adam.lr", "seed"]
    assert diff_keys(one, one) == []


def test_the_experiment_config_is_one_module_level_type_that_pickles():
    """Validated once where it enters trx, then carried typed, across processes too."""
    import pickle

    from trx.config import ExperimentConfig

    cfg = resolve(tiny_config())
    assert isinstance(cfg, ExperimentConfig)
    back = pickle.loads(pickle.dumps(cfg))
    assert back == cfg and type(back.task) is type(cfg.task) and back.seed_list() == cfg.seed_list()


def test_exponent_floats_without_a_dot_are_numbers(tmp_path):
    """YAML 1.1 reads `1e-3` as a string and strict types would refuse it; configs write lrs so."""
    from trx.io import load_yaml

    assert load_yaml("a: 1e-5\nb: [3E+2, -2e3, 1.5e-3]\nc: '1e-5'") == {"a": 1e-5, "b": [300.0, -2000.0, 1.5e-3], "c": "1e-5"}
    path = tmp_path / "c.yaml"
    path.write_text("name: e\nsteps: 10\ntask: {name: quadratic1d}\noptimizers: {gd: {lr: 1e-3}}\n")
    assert load_config(path).optimizers["gd"].lr == pytest.approx(1e-3)
