"""Experiment configs: YAML files, `--set` overrides, validation with errors that name the key."""

from __future__ import annotations

import copy
import functools
import math
import re
from pathlib import Path
from typing import Annotated, Any, Literal, Union

import yaml
from pydantic import (AfterValidator, BeforeValidator, Field, TypeAdapter, ValidationError, create_model, field_validator,
                      model_validator)

from trx.errors import UserError
from trx.io import load_yaml, read_yaml, yaml_problem
from trx.rundir import SWEEP, TENSORBOARD
from trx.monitor import MonitorConfig
from trx.optim.base import ConfigError, Strict, config_errors
from trx.optim.spec import ArmConfig
from trx.tasks import TASKS

MAX_RUNS = 10_000  # seeds of one run, cells of one sweep: more is a typo, and expanding it would take minutes
MAX_BISECTIONS = 10  # beyond this a bracket is narrower than the 4 significant digits a cell id keeps
MAX_SEED = 2**32 - 1  # numpy's and torch's generators take any seed up to here
ARM_NAME = re.compile(r"^[A-Za-z0-9][A-Za-z0-9_.-]*$")


# Names an arm folder cannot take: they sit beside arm folders in an experiment or sweep folder.
RESERVED_NAMES = {SWEEP: "`trx sweep` writes its cells there", TENSORBOARD: "TensorBoard writes there"}
RESERVED_SUFFIXES = (".csv", ".yaml", ".yml", ".json", ".md", ".png", ".pt", ".lock", ".holder", ".tmp")


def reserved_name(name: str) -> str | None:
    """Why an arm cannot be called `name` (None when it can)."""
    if name.lower() in RESERVED_NAMES:
        return RESERVED_NAMES[name.lower()]
    if name.lower().endswith(RESERVED_SUFFIXES):
        return f"names ending in {', '.join(RESERVED_SUFFIXES)} are trx's files"
    return None


@functools.cache
def task_config_type() -> Any:
    """The `task:` block: a union of every registered task's options, tagged by `name`."""
    members = [
        create_model(f"{name}_options", __base__=cls.Options, __module__=__name__,  # type: ignore[call-overload]
                     name=(Literal[name], ...))
        for name, cls in sorted(TASKS.items())
    ]
    globals().update({m.__name__: m for m in members})  # importable by name: configs pickle

    def shorthand(v: Any) -> Any:
        return {"name": v} if isinstance(v, str) else v

    return Annotated[Union[tuple(members)], Field(discriminator="name"), BeforeValidator(shorthand)]  # noqa: UP007


class StableRule(Strict):
    """When a boundary probe counts as stable: it neither diverged nor stalled, and its final
    metric (val_loss where evaluated, else the train loss) passes every bound given."""

    max_metric: float | None = Field(None, description="unstable above this absolute final metric")
    within: float | None = Field(None, gt=0.0, description="unstable above (1 + within) × the best final metric of its series")


class BoundarySearch(Strict):
    """`sweep.boundary`: after the coarse lr grid, bisect in log-lr for the largest stable lr."""

    bisections: int = Field(3, ge=0, le=MAX_BISECTIONS, description="halvings of each log-lr bracket")
    per: Literal["seed", "all"] = Field("seed", description="seed: a boundary per seed; all: stable when every seed is")
    stable: StableRule = Field(default_factory=StableRule, description="the stability rule")


class SweepConfig(Strict):
    """The grid of `trx sweep`: dotted keys → values, lists or {log|linear: [lo, hi], num: n}."""

    grid: dict[str, Any] = Field(default_factory=dict, description="dotted key → values")
    seeds: list[int] | None = Field(None, description="seeds to run every cell with")
    boundary: BoundarySearch | None = Field(None, description="bisect each arm's lr for its stability boundary")


class GroupSelector(Strict):
    """The runs a claim compares: one arm, optionally only its cells with these grid values."""

    arm: str = Field(description="arm name")
    where: dict[str, Any] = Field(default_factory=dict, description="grid key below the arm → value")


CLAIM_EXPECT = {"difference": ("a_better", "b_better"), "lr_tolerance": ("a_wider", "b_wider"),
                "equivalence": ("equivalent",), "stability": ("a_stabler", "b_stabler"),
                "steps_to_target": ("a_faster", "b_faster"), "lr_transfer": ("transfers", "shifts"),
                "boundary": ("a_higher", "b_higher", "equivalent")}


class Claim(Strict):
    """A claim the experiment tests; `trx report` judges it over seeds by the test its kind names
    (docs/statistics.md), as one of the report's family of claims."""

    text: str = Field(description="the claim in words")
    kind: Literal["difference", "lr_tolerance", "equivalence", "stability", "steps_to_target", "lr_transfer",
                  "boundary"] = Field(
        description="difference: a final metric; lr_tolerance: lr-band width; equivalence: |a − b| < delta; "
                    "stability: seeds that diverged or stalled; steps_to_target: steps to reach `target`; "
                    "lr_transfer: slope of log best lr on log `axis` (a only); boundary: the largest stable lr "
                    "(sweep.boundary)")
    metric: str | None = Field(None, description="metrics.csv column judged (default: the report's metric)")
    a: GroupSelector
    b: GroupSelector | None = Field(None, description="the other side (every kind but lr_transfer)")
    expect: Literal["a_better", "b_better", "a_wider", "b_wider", "equivalent", "a_stabler", "b_stabler", "a_faster",
                    "b_faster", "transfers", "shifts", "a_higher", "b_higher"] = Field(description="the direction claimed")
    target: float | None = Field(None, description="steps_to_target: the metric value to reach (≤ a loss, ≥ an accuracy)")
    axis: str | None = Field(None, description="lr_transfer: the grid key of the width, e.g. task.n_embd")
    tolerance: float = Field(0.1, gt=0.0, lt=1.0, description="lr_tolerance: relative band around the best")
    delta: float | None = Field(
        None, ge=0.0, description="smallest difference that matters, in the metric's units (decades for "
                                  "lr_tolerance and steps_to_target, decades of lr per decade of width for "
                                  "lr_transfer); declared before the run; required for equivalence and transfers")
    primary: bool = Field(False, description="the experiment's one primary claim: judged without a multiplicity adjustment")
    best_lr: bool = Field(False, description="difference / equivalence: each side at its own best lr (an lr sweep)")
    selection_seeds: list[int] | None = Field(
        None, description="best_lr: seeds that pick the lr (default: all; then evaluation_seeds defaults to the rest)")
    evaluation_seeds: list[int] | None = Field(None, description="seeds the claim is judged on (default: all others)")

    @model_validator(mode="after")
    def _direction_fits(self) -> Claim:
        allowed = CLAIM_EXPECT[self.kind]
        if self.expect not in allowed:
            raise ValueError(f"expect: {self.kind} claims take {' | '.join(allowed)}, got {self.expect}")
        if self.kind == "equivalence" and not self.delta:
            raise ValueError("delta: an equivalence claim needs its margin δ > 0 (metric units)")
        if self.kind == "boundary" and self.expect == "equivalent" and not self.delta:
            raise ValueError("delta: an equivalent boundary claim needs its margin δ > 0 (decades)")
        if self.selection_seeds is not None and not self.best_lr:
            raise ValueError("selection_seeds: only a best_lr claim selects anything")
        if self.best_lr and self.kind not in ("difference", "equivalence", "steps_to_target"):
            raise ValueError(f"best_lr: only difference, equivalence and steps_to_target claims, not {self.kind}")
        return self._kind_fields()

    def _kind_fields(self) -> Claim:
        """The fields only some kinds take: present where needed, absent elsewhere."""
        for key, kind in (("target", "steps_to_target"), ("axis", "lr_transfer")):
            if (getattr(self, key) is None) == (self.kind == kind):
                raise ValueError(f"{key}: {'required for' if self.kind == kind else 'only for'} {kind} claims")
        if (self.b is None) != (self.kind == "lr_transfer"):
            raise ValueError("b: required" if self.b is None else "b: an lr_transfer claim judges one arm (a)")
        if self.expect == "transfers" and not self.delta:
            raise ValueError("delta: a transfers claim needs its margin δ > 0 (decades of lr per decade of width)")
        return self


def _one_primary(claims: list[Claim]) -> list[Claim]:
    if sum(c.primary for c in claims) > 1:
        raise ValueError("at most one claim is primary: true")
    return claims


Claims = Annotated[list[Claim], AfterValidator(_one_primary)]  # an experiment's claims: the primary one judged alone


def parse_claims(data: Any) -> list[Claim]:
    """`claims:` of an experiment.yaml validated as a config's are (each claim, at most one
    primary): how `trx report` reads them; a bad one is a UserError naming the key."""
    try:
        return TypeAdapter(Claims).validate_python(data)
    except ValidationError as exc:
        raise UserError(str(config_errors(exc, "claims")[0])) from None


class ExperimentConfig(Strict):
    """One experiment: a task, one or more optimizer arms, and how to run them. Validated once
    where it enters trx (`resolve`: the CLI or the Python API) and passed typed from there on;
    it pickles (task options are module-level classes), so jobs carry it across processes."""

    name: str | None = Field(None, description="experiment name (default: the file's stem)")
    seed: int = Field(0, ge=0, le=MAX_SEED, description="same seed ⇒ same initial weights and batch order in every arm")
    device: Literal["auto", "cpu", "cuda"] = Field("auto", description="auto | cpu | cuda")
    steps: int = Field(ge=1, description="τ, updates per arm")
    eval_every: int = Field(100, ge=0, description="evaluate every N updates (0: only at the end)")
    log_every: int = Field(10, ge=1, description="write a metrics row every N updates")
    seeds: int | list[int] | None = Field(
        None, description="N (seeds seed … seed+N−1) or a list: every arm runs once per seed (trx run)")
    checkpoint_every: int | None = Field(
        None, ge=0, description="checkpoint every N updates (default: at every eval, else every τ/10; 0: never)")
    keep_checkpoint: bool = Field(False, description="keep checkpoint.pt after the arm completes")
    divergence_threshold: float = Field(100.0, gt=1.0, description="loss > this × first loss ⇒ diverged")
    monitor: MonitorConfig | None = Field(
        None, description="spike/divergence rule (first_loss | running_min) and stall rule; default first_loss")
    grad_clip: float | None = Field(None, gt=0.0, description="max global gradient norm, before the filter")
    threads: int | None = Field(None, ge=1, description="torch CPU threads (default: torch's)")
    task: task_config_type() = Field(description="the task and its options")  # type: ignore[valid-type]
    optimizers: dict[str, ArmConfig] = Field(description="named optimizer arms")
    sweep: SweepConfig | None = Field(None, description="grid for `trx sweep`")
    claims: Claims = Field(default_factory=list, description="claims `trx report` gives a verdict on")
    tensorboard: bool = Field(False, description="also write metrics rows as TensorBoard scalars (needs the extra)")

    @field_validator("optimizers")
    @classmethod
    def _arm_names(cls, arms: dict[str, ArmConfig]) -> dict[str, ArmConfig]:
        if not arms:
            raise ValueError("needs at least one arm")
        for name in arms:
            if not ARM_NAME.match(name):
                raise ValueError(f"arm name {name!r} must be letters, digits, '_', '.', '-'")
            if reserved_name(name):
                raise ValueError(f"arm name {name!r} is reserved: {reserved_name(name)}")
        return arms

    @field_validator("name")
    @classmethod
    def _name(cls, name: str | None) -> str | None:
        if name is not None and not ARM_NAME.match(name):
            raise ValueError(f"{name!r} must be letters, digits, '_', '.', '-'")
        return name

    @field_validator("seeds")
    @classmethod
    def _seeds(cls, seeds: int | list[int] | None) -> int | list[int] | None:
        if isinstance(seeds, int) and not 1 <= seeds <= MAX_RUNS:
            raise ValueError(f"must be from 1 to {MAX_RUNS}, got {seeds}")
        if isinstance(seeds, list) and (not seeds or len(set(seeds)) != len(seeds) or min(seeds) < 0
                                        or max(seeds) > MAX_SEED):
            raise ValueError(f"a list of distinct seeds from 0 to {MAX_SEED}")
        return seeds

    @model_validator(mode="after")
    def _claims_name_arms(self) -> ExperimentConfig:
        for i, claim in enumerate(self.claims):
            for side in ("a", "b") if claim.b is not None else ("a",):
                arm = getattr(claim, side).arm
                if arm not in self.optimizers:
                    raise ValueError(f"claims.{i}.{side}.arm: no arm named {arm!r}; arms: {', '.join(self.optimizers)}")
            grid = (self.sweep.grid if self.sweep else {}).keys()
            if claim.axis is not None and not {claim.axis, f"optimizers.{claim.a.arm}.{claim.axis}"} & grid:
                raise ValueError(f"claims.{i}.axis: {claim.axis!r} is not a key of sweep.grid")
            if claim.kind == "boundary" and self.sweep and self.sweep.boundary and self.sweep.boundary.per == "all":
                raise ValueError(f"claims.{i}.kind: a boundary claim pairs per-seed brackets, which "
                                 "sweep.boundary.per: all does not bisect (use per: seed)")
        return self

    def seed_list(self) -> list[int]:
        """The seeds `trx run` runs every arm with."""
        if isinstance(self.seeds, list):
            return list(self.seeds)
        return [self.seed + i for i in range(self.seeds or 1)]

    def checkpoint_interval(self) -> int:
        """Updates between checkpoints (0: none): by default at every evaluation."""
        if self.checkpoint_every is not None:
            return self.checkpoint_every
        return self.eval_every or max(1, self.steps // 10)

    @model_validator(mode="after")
    def _windows_fit(self) -> ExperimentConfig:
        for arm_name, arm in self.optimizers.items():
            for block, block_arm in (("", arm), ("aux.", arm.aux_arm() if arm.aux else None)):
                if block_arm is None:
                    continue
                try:
                    block_arm.schedule.build(self.steps)
                except ConfigError as exc:
                    raise ValueError(f"optimizers.{arm_name}.{block}schedule.{exc.key}: {exc.message}") from None
        return self


def parse_override(text: str) -> tuple[str, Any]:
    """`KEY=VALUE` → (key, YAML-parsed value)."""
    key, sep, raw = text.partition("=")
    key = key.strip()
    if not sep or not key or any(not part for part in key.split(".")):
        raise UserError(f"--set {text!r}: expected KEY=VALUE with a dotted KEY, e.g. optimizers.adamw.lr=0.01")
    try:
        value = load_yaml(raw) if raw.strip() else None
    except yaml.YAMLError as exc:
        raise UserError(f"--set {key}: the value is {yaml_problem(exc)}") from None
    return key, value


def set_dotted(data: dict[str, Any], key: str, value: Any) -> None:
    """Set `a.b.c` in nested dicts, creating mappings; `optimizers.*.x` sets x in every arm."""
    parts = key.split(".")
    if len(parts) >= 2 and parts[0] == "optimizers" and parts[1] == "*":
        arms = data.get("optimizers")
        if not isinstance(arms, dict) or not arms:
            raise UserError(f"{key}: the config has no optimizers to apply '*' to")
        for arm in arms:
            set_dotted(data, ".".join(["optimizers", arm, *parts[2:]]), value)
        return
    node = data
    for i, part in enumerate(parts[:-1]):
        child = node.get(part)
        if child is None:
            child = node[part] = {}
        if not isinstance(child, dict):
            where = ".".join(parts[: i + 1])
            raise UserError(f"{key}: {where} is {child!r}, not a mapping")
        node = child
    node[parts[-1]] = value


def apply_overrides(data: dict[str, Any], overrides: list[str] | tuple[str, ...]) -> None:
    """Apply `--set KEY=VALUE`s in place. A key below `optimizers.<arm>` must name an arm the
    config has: a typo there would otherwise add an arm silently."""
    for text in overrides:
        key, value = parse_override(text)
        parts = key.split(".")
        arms = data.get("optimizers")
        if parts[0] == "optimizers" and len(parts) >= 3 and parts[1] != "*" and isinstance(arms, dict) \
                and parts[1] not in arms:
            raise UserError(f"--set {key}: the config has no arm {parts[1]!r}; arms: {', '.join(arms)}",
                            hint="to add an arm, write it in the config file")
        set_dotted(data, key, value)


MAX_INT = 2**63 - 1  # beyond a 64-bit integer torch, numpy and the CSV readers overflow


def check_numbers(value: Any, key: str = "") -> None:
    """Every number in raw config data is finite and fits 64 bits; raises UserError naming the key."""
    if isinstance(value, dict):
        for k, v in value.items():
            check_numbers(v, f"{key}.{k}" if key else str(k))
    elif isinstance(value, list):
        for i, v in enumerate(value):
            check_numbers(v, f"{key}.{i}")
    elif isinstance(value, float) and not math.isfinite(value):
        raise UserError(f"{key}: must be a finite number, got {value}")
    elif isinstance(value, int) and not isinstance(value, bool) and abs(value) > MAX_INT:
        raise UserError(f"{key}: must be at most 2**63 − 1 in size, got {value}")


def resolve(data: dict[str, Any], overrides: list[str] | tuple[str, ...] = (),
            default_name: str = "experiment") -> ExperimentConfig:
    """Validate raw config data after applying `--set` overrides; raises UserError. Types are
    strict: `true` is not a number and "40" or 40.5 not an integer."""
    data = copy.deepcopy(data)  # plain data; key order kept: arms run in the order the config gives
    apply_overrides(data, overrides)
    data.setdefault("name", default_name)
    check_numbers(data)
    try:
        return ExperimentConfig.model_validate(data, strict=True)
    except ValidationError as exc:
        raise UserError(str(config_errors(exc)[0])) from None


def load_config(path: str | Path, overrides: list[str] | tuple[str, ...] = ()) -> ExperimentConfig:
    """Read, override and validate a config file."""
    path = Path(path)
    return resolve(read_yaml(path), overrides, default_name=path.stem)


def dump(cfg: ExperimentConfig) -> dict[str, Any]:
    """The fully resolved config as plain data (every default filled in)."""
    return cfg.model_dump(mode="json")


def arm_config(cfg: ExperimentConfig, arm: str) -> dict[str, Any]:
    """The resolved config of one arm and one seed: the experiment with only that arm, without
    what belongs to the whole experiment (sweep grid, seed list, claims)."""
    data = dump(cfg)
    data["optimizers"] = {arm: data["optimizers"][arm]}
    for key in ("sweep", "seeds", "claims"):
        data.pop(key, None)
    if data.get("monitor") is None:
        data.pop("monitor", None)  # the default rules: folders written before `monitor` existed still resume
    return data


def config_changes(old: Any, new: dict[str, Any]) -> list[str]:
    """Dotted keys where a run's recorded one-arm config (config.yaml, a checkpoint's record)
    differs from `new`. The record is read through today's schema first, so an option added
    since then, at its default, is no change: folders of an earlier version still resume."""
    arms = list(old.get("optimizers") or {}) if isinstance(old, dict) else []
    if len(arms) == 1:
        try:
            old = arm_config(resolve(old), arms[0])
        except UserError:
            pass  # not valid today: compared as written
    return diff_keys(old, new)


def run_config(cfg: ExperimentConfig, arm: str, seed: int) -> ExperimentConfig:
    """The config of one run: the experiment with only `arm`, run with `seed` (validated here,
    once, for the job that carries it)."""
    return resolve({**arm_config(cfg, arm), "seed": seed}, default_name=cfg.name or "experiment")


def diff_keys(old: Any, new: Any, prefix: str = "") -> list[str]:
    """Dotted keys whose values differ between two plain-data configs."""
    if isinstance(old, dict) and isinstance(new, dict):
        out = []
        for key in sorted(set(old) | set(new), key=str):
            sub = f"{prefix}.{key}" if prefix else str(key)
            out += diff_keys(old.get(key), new.get(key), sub) if key in old and key in new else [sub]
        return out
    return [] if old == new else [prefix or "(root)"]
