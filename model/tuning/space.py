"""A search space over training settings: declared as text or JSON, validated, shown back, sampled by Optuna.

Any setting ``binwatch train --set`` accepts (a TrainConfig field) can be searched, except those that say
where or how a run executes rather than what it learns (device, workers, seed, recipe, ...). Three kinds:

- float range: ``lr=1e-4..1e-2`` (linear) or ``lr=1e-4..1e-2:log``;
- int range: ``epochs=2..6`` on an integer setting (``:log`` allowed, ``:step=2`` too);
- categorical: ``image_size=96,112,128`` or ``optimizer=adamw,sgd`` (two values at least).

Every bound and choice is checked against the setting's own validation (a learning rate must be > 0, an
image size 32..1024), so a bad space fails when it is declared, naming the field, never trials later.
"""

from __future__ import annotations

import math
import types
import typing
from dataclasses import dataclass
from typing import Any, Literal, Union

from pydantic import ValidationError

from model.config import TrainConfig

# Settings that describe the execution, not the model: searching them would make trials incomparable or
# collide with what the tuner itself decides.
NOT_SEARCHABLE = frozenset(
    {"device", "num_workers", "cache_images", "seed", "recipe", "max_train_batches", "pretrained"}
)
MAX_CHOICES = 64


class SpaceError(ValueError):
    """A search space that cannot be searched; ``field`` names the setting at fault."""

    def __init__(self, field: str, message: str) -> None:
        super().__init__(f"{field}: {message}")
        self.field = field
        self.reason = message


@dataclass(frozen=True)
class FloatRange:
    name: str
    low: float
    high: float
    log: bool = False

    def describe(self) -> str:
        return f"{self.low:g} .. {self.high:g}{' (log)' if self.log else ''}"

    def to_dict(self) -> dict[str, Any]:
        return {"type": "float", "low": self.low, "high": self.high, "log": self.log}

    def suggest(self, trial: Any) -> float:
        return float(trial.suggest_float(self.name, self.low, self.high, log=self.log))


@dataclass(frozen=True)
class IntRange:
    name: str
    low: int
    high: int
    log: bool = False
    step: int = 1

    def describe(self) -> str:
        step = f" step {self.step}" if self.step != 1 else ""
        return f"{self.low} .. {self.high}{step}{' (log)' if self.log else ''}"

    def to_dict(self) -> dict[str, Any]:
        return {"type": "int", "low": self.low, "high": self.high, "log": self.log, "step": self.step}

    def suggest(self, trial: Any) -> int:
        return int(trial.suggest_int(self.name, self.low, self.high, step=self.step, log=self.log))


@dataclass(frozen=True)
class Categorical:
    name: str
    choices: tuple[Any, ...]

    def describe(self) -> str:
        return ", ".join(str(c) for c in self.choices)

    def to_dict(self) -> dict[str, Any]:
        return {"type": "categorical", "choices": list(self.choices)}

    def suggest(self, trial: Any) -> Any:
        return trial.suggest_categorical(self.name, list(self.choices))


Param = FloatRange | IntRange | Categorical


@dataclass(frozen=True)
class SearchSpace:
    params: tuple[Param, ...]

    @property
    def names(self) -> list[str]:
        return [p.name for p in self.params]

    def suggest(self, trial: Any) -> dict[str, Any]:
        """One point of the space, chosen by the trial's sampler."""
        return {p.name: p.suggest(trial) for p in self.params}

    def to_dict(self) -> dict[str, dict[str, Any]]:
        return {p.name: p.to_dict() for p in self.params}

    def point_of(self, values: dict[str, Any]) -> dict[str, Any] | None:
        """``values`` restricted to this space's settings, or None if any of them falls outside it."""
        point = {}
        for p in self.params:
            value = values.get(p.name)
            if isinstance(p, Categorical):
                if value not in p.choices:
                    return None
            elif value is None or not p.low <= value <= p.high:
                return None
            point[p.name] = value
        return point

    def rows(self) -> list[tuple[str, str, str]]:
        """(setting, kind, values) for showing the space back to the user."""
        kinds = {FloatRange: "float", IntRange: "int", Categorical: "categorical"}
        return [(p.name, kinds[type(p)], p.describe()) for p in self.params]

    @classmethod
    def parse(cls, specs: list[str]) -> SearchSpace:
        """From ``["lr=1e-4..1e-2:log", "image_size=96,112"]`` (the CLI's --space values)."""
        params: list[Param] = []
        for spec in specs:
            name, sep, text = spec.partition("=")
            name = name.strip()
            if not sep or not name or not text.strip():
                raise SpaceError(name or spec, f"expected NAME=LOW..HIGH[:log] or NAME=A,B,...; got {spec!r}")
            params.append(_parse_one(name, text.strip()))
        return cls.build(params)

    @classmethod
    def from_dict(cls, data: dict[str, Any]) -> SearchSpace:
        """From the JSON form (the API's ``space``): ``{"lr": {"type": "float", "low": .., "high": ..}}``."""
        if not isinstance(data, dict):
            raise SpaceError("space", "must be an object of setting name -> range or choices")
        params: list[Param] = []
        for name, spec in data.items():
            if not isinstance(spec, dict):
                raise SpaceError(name, "must be an object with a type (float, int or categorical)")
            kind = spec.get("type")
            extra = set(spec) - {"type", "low", "high", "log", "step", "choices"}
            if extra:
                raise SpaceError(name, f"unknown keys {', '.join(sorted(extra))}")
            if kind in ("float", "int"):
                if "low" not in spec or "high" not in spec:
                    raise SpaceError(name, f"a {kind} range needs low and high")
                log = spec.get("log", False)
                if not isinstance(log, bool):
                    raise SpaceError(name, "log must be true or false")
                if kind == "float":
                    params.append(_float_range(name, spec["low"], spec["high"], log))
                else:
                    params.append(_int_range(name, spec["low"], spec["high"], log, spec.get("step", 1)))
            elif kind == "categorical":
                choices = spec.get("choices")
                if not isinstance(choices, list):
                    raise SpaceError(name, "a categorical needs a list of choices")
                params.append(_categorical(name, choices))
            else:
                raise SpaceError(name, f"type must be float, int or categorical, got {kind!r}")
        return cls.build(params)

    @classmethod
    def build(cls, params: list[Param]) -> SearchSpace:
        if not params:
            raise SpaceError("space", "is empty: give at least one setting to search")
        seen: set[str] = set()
        for p in params:
            if p.name in seen:
                raise SpaceError(p.name, "appears twice in the space")
            seen.add(p.name)
        return cls(tuple(params))


# -- parsing and checking one setting -------------------------------------------------------------------


def _field(name: str) -> Any:
    field = TrainConfig.model_fields.get(name)
    if field is None:
        raise SpaceError(name, "is not a training setting (see `binwatch train --help` and docs/training.md)")
    if name in NOT_SEARCHABLE:
        raise SpaceError(name, "says where or how a trial runs, not what it learns; it cannot be searched")
    return field


def _base_types(name: str) -> set[type]:
    """The Python types a setting takes (Optional stripped): {float}, {int}, {str}, {bool}."""
    annotation = _field(name).annotation
    args = typing.get_args(annotation) if typing.get_origin(annotation) in (Union, types.UnionType) else ()
    members = [a for a in args if a is not type(None)] or [annotation]
    out: set[type] = set()
    for member in members:
        if typing.get_origin(member) is Literal:
            out |= {type(v) for v in typing.get_args(member)}
        elif isinstance(member, type):
            out.add(member)
    return out


def _check_value(name: str, value: Any) -> Any:
    """The value as the setting's own validation converts it; SpaceError naming the field if refused."""
    try:
        return getattr(TrainConfig.model_validate({name: value}), name)
    except ValidationError as exc:
        problem = "; ".join(e["msg"] for e in exc.errors() if e["loc"] and e["loc"][0] == name)
        raise SpaceError(name, f"{value!r} is not a valid value ({problem or exc})") from exc


def _number(name: str, text: Any) -> float:
    try:
        value = float(text)
    except (TypeError, ValueError) as exc:
        raise SpaceError(name, f"{text!r} is not a number") from exc
    if not math.isfinite(value):
        raise SpaceError(name, f"{text!r} is not a finite number")
    return value


def _float_range(name: str, low: Any, high: Any, log: bool) -> FloatRange:
    kinds = _base_types(name)
    if float not in kinds:
        raise SpaceError(name, f"takes {_kind_text(kinds)}, not a float range")
    lo, hi = _number(name, low), _number(name, high)
    _check_bounds(name, lo, hi, log)
    _check_value(name, lo)
    _check_value(name, hi)
    return FloatRange(name, lo, hi, log)


def _int_range(name: str, low: Any, high: Any, log: bool, step: Any = 1) -> IntRange:
    kinds = _base_types(name)
    if int not in kinds or float in kinds or bool in kinds:
        raise SpaceError(name, f"takes {_kind_text(kinds)}, not an integer range")
    lo, hi = _number(name, low), _number(name, high)
    if lo != int(lo) or hi != int(hi):
        raise SpaceError(name, f"is an integer setting; bounds {low!r} and {high!r} must be integers")
    step_n = _number(name, step)
    if step_n != int(step_n) or step_n < 1:
        raise SpaceError(name, f"step must be a positive integer, got {step!r}")
    if log and step_n != 1:
        raise SpaceError(name, "a log range cannot have a step")
    _check_bounds(name, lo, hi, log)
    _check_value(name, int(lo))
    _check_value(name, int(hi))
    return IntRange(name, int(lo), int(hi), log, int(step_n))


def _categorical(name: str, choices: list[Any]) -> Categorical:
    _field(name)
    if len(choices) < 2:
        raise SpaceError(name, "a categorical needs two values at least (one value is a --set, not a search)")
    if len(choices) > MAX_CHOICES:
        raise SpaceError(name, f"at most {MAX_CHOICES} choices")
    values = tuple(_check_value(name, c) for c in choices)
    if len(set(map(repr, values))) != len(values):
        raise SpaceError(name, "lists the same value twice")
    if any(v is not None and not isinstance(v, (bool, int, float, str)) for v in values):
        raise SpaceError(name, "choices must be numbers, strings or booleans")
    return Categorical(name, values)


def _check_bounds(name: str, low: float, high: float, log: bool) -> None:
    if low > high:
        raise SpaceError(name, f"low {low:g} is greater than high {high:g}")
    if low == high:
        raise SpaceError(name, f"the range {low:g}..{high:g} is empty: low must be below high")
    if log and low <= 0:
        raise SpaceError(name, f"a log range needs low > 0, got {low:g}")


def _kind_text(kinds: set[type]) -> str:
    names = {bool: "true/false", int: "an integer", float: "a number", str: "one of its named values"}
    return " or ".join(sorted(names.get(k, k.__name__) for k in kinds))


def _parse_one(name: str, text: str) -> Param:
    if ".." in text:
        bounds, _, options = text.partition(":")
        low, _, high = bounds.partition("..")
        log, step = False, "1"
        for option in filter(None, options.split(":")):
            key, _, value = option.partition("=")
            if key == "log" and not value:
                log = True
            elif key == "step" and value:
                step = value
            else:
                raise SpaceError(name, f"unknown range option {option!r} (use :log or :step=N)")
        kinds = _base_types(name)
        if int in kinds and float not in kinds:
            return _int_range(name, low.strip(), high.strip(), log, step)
        if step != "1":
            raise SpaceError(name, "only integer ranges take a step")
        return _float_range(name, low.strip(), high.strip(), log)
    raw = [c.strip() for c in text.split(",")]
    if any(not c for c in raw):
        raise SpaceError(name, f"empty choice in {text!r}")
    return _categorical(name, [_literal(c) for c in raw])


def _literal(text: str) -> Any:
    """Command-line text as the JSON value it spells (numbers, true/false, null), else the string."""
    lowered = text.lower()
    if lowered in ("true", "false"):
        return lowered == "true"
    if lowered in ("none", "null"):
        return None
    for convert in (int, float):
        try:
            return convert(text)
        except ValueError:
            continue
    return text
