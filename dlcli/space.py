"""The search space of a `sweep:` section: a dotted config key (as `--set` spells it) -> a distribution to draw from.

    optimizer.lr: {loguniform: [1.0e-4, 1.0e-2]}
    model.dropout: {uniform: [0.0, 0.5]}
    model.channels.0: {int: [16, 64, 16]}          # low, high and an optional step
    model.hidden: {choice: [[64], [128, 64]]}

Each distribution is a registry entry (dlcli.registry). `suggest` asks an Optuna trial for a value (Optuna is imported
by dlcli.sweep, not here: validating a config never needs it) and `value` turns what the trial stored back into the
config's value (a choice of lists is stored as JSON text, since Optuna's categorical values are scalars).
"""

from __future__ import annotations

import json
from typing import Any

from pydantic import Field, PositiveFloat, field_validator

from dlcli.registry import Entry, ItemError, Registry

SPACES = Registry("distribution")
SCALARS = (type(None), bool, int, float, str)


class Distribution(Entry):
    def suggest(self, trial, key: str):
        """The config value for this trial (draws it, or reads it where the trial was enqueued with it)."""
        raise NotImplementedError

    def value(self, stored):
        """The config value of what a trial stored for this key."""
        return stored

    def example(self):
        """A value of the space, to check its key against the config before any trial runs."""
        raise NotImplementedError


def _ordered(v):
    if v[0] >= v[1]:
        raise ValueError(f"the low end {v[0]} must be below the high end {v[1]}")
    return v


@SPACES.register("loguniform", positional="range")
class LogUniform(Distribution):
    """A float whose logarithm is uniform in [low, high]: learning rates, weight decay."""

    range: tuple[PositiveFloat, PositiveFloat]
    _check = field_validator("range")(_ordered)

    def suggest(self, trial, key):
        return trial.suggest_float(key, *self.range, log=True)

    def example(self):
        return self.range[0]


@SPACES.register("uniform", positional="range")
class Uniform(Distribution):
    range: tuple[float, float]
    _check = field_validator("range")(_ordered)

    def suggest(self, trial, key):
        return trial.suggest_float(key, *self.range)

    def example(self):
        return self.range[0]


@SPACES.register("int", positional="range")
class Int(Distribution):
    """An integer in [low, high] (both included), on a grid of `step` when given: [low, high] or [low, high, step]."""

    range: list[int] = Field(min_length=2, max_length=3)

    @field_validator("range")
    @classmethod
    def _range(cls, v):
        if len(v) == 3 and v[2] < 1:
            raise ValueError(f"the step {v[2]} must be 1 or more")
        return _ordered(v)

    def suggest(self, trial, key):
        return trial.suggest_int(key, self.range[0], self.range[1], step=self.range[2] if len(self.range) == 3 else 1)

    def example(self):
        return self.range[0]


@SPACES.register("choice", positional="values")
class Choice(Distribution):
    """One of the listed values, any YAML value each (a list of layer widths, a layer spec, a name)."""

    values: list[Any] = Field(min_length=1)

    @field_validator("values")
    @classmethod
    def _distinct(cls, v):
        if len({json.dumps(x, sort_keys=True) for x in v}) != len(v):
            raise ValueError("lists a value twice")
        return v

    @property
    def encoded(self) -> bool:
        return not all(isinstance(x, SCALARS) for x in self.values)

    def suggest(self, trial, key):
        if not self.encoded:
            return trial.suggest_categorical(key, self.values)
        return self.value(trial.suggest_categorical(key, [json.dumps(x) for x in self.values]))

    def value(self, stored):
        return json.loads(stored) if self.encoded and isinstance(stored, str) else stored

    def example(self):
        return self.values[0]


KEY = r"^[A-Za-z_][A-Za-z0-9_]*(\.[A-Za-z0-9_]+)*$"


def parse_space(space: dict) -> dict[str, Distribution]:
    """`{key: {distribution: args}}` -> {key: entry}; errors read `.key.loguniform.range: ...` after the config's
    path to the space."""
    import re

    if not isinstance(space, dict) or not space:
        raise ValueError("needs at least one `dotted.key: {distribution: ...}`, e.g. optimizer.lr: {loguniform: "
                         "[1.0e-4, 1.0e-2]}")
    parsed = {}
    for key, spec in space.items():
        if not isinstance(key, str) or not re.match(KEY, key):
            raise ValueError(f"@.{key}: not a dotted config key like optimizer.lr")
        try:
            parsed[key] = SPACES.parse(spec)
        except ItemError as err:
            raise ValueError(f"@.{key}{err.where}: {err.what}") from None
    return parsed


def space_schema() -> dict:
    """The JSON Schema of a space's values (for dlcli.schema.json): one distribution each."""
    forms = {}
    for name, cls in sorted(SPACES.entries.items()):
        field = cls.model_json_schema()["properties"][cls.positional_field]
        forms[name] = {k: v for k, v in field.items() if k != "title"}
    return {"type": "object", "properties": forms, "additionalProperties": False,
            "minProperties": 1, "maxProperties": 1}
