"""Shared pieces of the optimizer core: strict option models, registries, config errors.

Every stage (filter, normalizer) is a pydantic model: its fields are its YAML options, its
methods are the algorithm. Stages keep no tensors themselves; per-parameter state lives in the
optimizer's `state[p]` dicts, handed to the stage on every update.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Annotated, Any, Literal, Union

from pydantic import BaseModel, BeforeValidator, ConfigDict, Field, ValidationError, model_validator
from pydantic_core import PydanticCustomError

ROLES = ("matrix", "vector", "embedding", "head")
Role = Literal["matrix", "vector", "embedding", "head"]


class ConfigError(ValueError):
    """A bad configuration value. `key` is the dotted config key, `message` says what is allowed."""

    def __init__(self, key: str, message: str):
        super().__init__(f"{key}: {message}" if key else message)
        self.key = key
        self.message = message

    def under(self, prefix: str) -> ConfigError:
        """The same error with its key below `prefix` (e.g. `optimizers.adamw`)."""
        return ConfigError(f"{prefix}.{self.key}" if self.key else prefix, self.message)


class Strict(BaseModel):
    """Options model: unknown keys are errors that list the allowed ones."""

    model_config = ConfigDict(extra="forbid", frozen=True)

    @model_validator(mode="before")
    @classmethod
    def _reject_unknown_keys(cls, data: Any) -> Any:
        if isinstance(data, dict):
            unknown = [k for k in data if k not in cls.model_fields]
            if unknown:
                raise PydanticCustomError(
                    "unknown_key",
                    "unknown key; allowed: {allowed}",
                    {"key": str(unknown[0]), "allowed": ", ".join(cls.model_fields)},
                )
        return data

    @classmethod
    def describe_options(cls) -> list[tuple[str, str, str]]:
        """(option, default, description) for `trx list`."""
        rows = []
        for key, info in cls.model_fields.items():
            if key == "name":
                continue
            default = "required" if info.is_required() else repr(info.get_default(call_default_factory=True))
            rows.append((key, default, info.description or ""))
        return rows


@dataclass
class StepContext:
    """What a stage may need besides tensors: the update index and the diagnostics switch."""

    step: int  # t: updates done before this one
    diagnose: bool = False  # True on logged steps: stages may record diagnostics
    diagnostics: dict[str, float] = field(default_factory=dict)
    data_parallel: bool = False  # every rank holds the same gradients: per-matrix work may be split


def _name_shorthand(value: Any) -> Any:
    """`filter: ema` means `filter: {name: ema}`."""
    return {"name": value} if isinstance(value, str) else value


def component_union(members: dict[str, type[Strict]]) -> Any:
    """The config type of one stage kind: a union of its registered models, tagged by `name`."""
    return Annotated[
        Union[tuple(members.values())],  # noqa: UP007 - a runtime tuple of types
        Field(discriminator="name"),
        BeforeValidator(_name_shorthand),
    ]


class Registry(dict):
    """name → stage model, with a one-line description each (the class docstring's first line)."""

    def __init__(self, kind: str):
        super().__init__()
        self.kind = kind

    def register(self, cls: type[Strict]) -> type[Strict]:
        name = cls.model_fields["name"].default
        if name in self:
            raise ValueError(f"{self.kind} {name!r} registered twice")
        self[name] = cls
        return cls

    def describe(self, name: str) -> str:
        doc = self[name].__doc__ or ""
        return doc.strip().splitlines()[0] if doc.strip() else ""


# Field names whose value is a tagged union: pydantic puts the tag in the error location.
TAGGED_FIELDS: set[str] = {"filter", "normalizer", "task", "pre", "post", "rule"}


_UNION_MEMBERS = {"int", "float", "str", "bool", "none", "list", "dict"}


def _location(loc: tuple[Any, ...], extra: str | None) -> str:
    parts: list[str] = []
    for i, part in enumerate(loc):
        if i > 0 and loc[i - 1] in TAGGED_FIELDS and isinstance(part, str):
            continue  # the union tag: `filter.ema.beta` reads better as `filter.beta`
        if isinstance(part, str) and (part.startswith("function-") or "[" in part or part in _UNION_MEMBERS):
            continue  # a member of a plain union (`int | float`): not part of the user's key
        parts.append(str(part))
    if extra:
        parts.append(extra)
    return ".".join(parts)


_KIND_WORDS = {
    "float": "a number",
    "int": "an integer",
    "bool": "true or false",
    "string": "a string",
    "list": "a list",
    "dict": "a mapping",
    "model": "a mapping",
}


def _message(err: dict[str, Any]) -> str:
    kind, ctx, got = err["type"], err.get("ctx", {}), err.get("input")
    comparisons = {
        "greater_than_equal": ("≥", "ge"),
        "greater_than": (">", "gt"),
        "less_than_equal": ("≤", "le"),
        "less_than": ("<", "lt"),
    }
    if kind in comparisons:
        sign, key = comparisons[kind]
        return f"must be {sign} {ctx[key]}, got {got!r}"
    if kind == "missing":
        return "required"
    if kind == "literal_error":
        return f"must be one of {ctx['expected']}, got {got!r}"
    if kind == "union_tag_invalid":
        return f"unknown name {ctx['tag']!r}; allowed: {ctx['expected_tags']}"
    if kind == "union_tag_not_found":
        return "needs a `name`"
    if kind == "value_error":
        return str(ctx.get("error", err["msg"]))
    if kind == "unknown_key":
        return f"unknown key; allowed: {ctx['allowed']}"
    for word, text in _KIND_WORDS.items():
        if kind.startswith(word) or kind.endswith(f"_{word}") or kind == f"{word}_type":
            return f"must be {text}, got {got!r}"
    return err["msg"]


def config_errors(exc: ValidationError, prefix: str = "") -> list[ConfigError]:
    """Turn a pydantic ValidationError into ConfigErrors with dotted keys, in input order."""
    out = []
    for err in exc.errors():
        extra = err.get("ctx", {}).get("key") if err["type"] == "unknown_key" else None
        message = _message(err)
        head, sep, rest = message.partition(": ")
        if err["type"] == "value_error" and sep and head.isidentifier():
            extra, message = head, rest  # a model validator naming its field: "field: message"
        key = _location(tuple(err["loc"]), extra)
        key = f"{prefix}.{key}" if prefix and key else (prefix or key)
        out.append(ConfigError(key, message))
    return out


def validate(model: type[BaseModel], data: Any, prefix: str = "") -> Any:
    """model.model_validate(data), raising the first problem as a ConfigError."""
    try:
        return model.model_validate(data)
    except ValidationError as exc:
        raise config_errors(exc, prefix)[0] from None

