"""Registries keyed by the strings a YAML file uses, and the parsing of Keras-like `name: args` items.

Every registered entry is a pydantic model: its fields are the arguments the YAML may give, and its methods
build the torch object (importing torch only when called), so schema checks never import torch.
"""

from __future__ import annotations

import re
from typing import Any, ClassVar

from pydantic import BaseModel, ConfigDict, ValidationError

from dlcli.errors import closest


class Strict(BaseModel):
    """A config section: unknown keys are errors, values are checked once here."""

    model_config = ConfigDict(extra="forbid", frozen=False)


class Entry(Strict):
    """A registered component; `positional_field` names the field a bare scalar fills (`dense: 10`)."""

    entry_name: ClassVar[str] = ""
    positional_field: ClassVar[str | None] = None

    def to_spec(self) -> Any:
        """The YAML form of this entry, with every argument resolved."""
        args = self.model_dump(mode="json")
        return {self.entry_name: args} if args else self.entry_name


class Registry:
    def __init__(self, kind: str):
        self.kind = kind
        self.entries: dict[str, type[Entry]] = {}

    def register(self, name: str, positional: str | None = None):
        def wrap(cls: type[Entry]) -> type[Entry]:
            cls.entry_name = name
            cls.positional_field = positional
            self.entries[name] = cls
            return cls

        return wrap

    def names(self) -> list[str]:
        return sorted(self.entries)

    def parse(self, item: Any, path_has_name: bool = True) -> Entry:
        """`name`, `{name: scalar}` or `{name: {args}}` -> a validated entry, or an ItemError saying what is wrong.

        path_has_name: whether the entry's name is a level of the YAML path (`dense.units`) or a sibling key
        (`optimizer: {name: adam, lr: ...}` gives `optimizer.lr`).
        """
        if isinstance(item, str):
            name, args = item, {}
        elif isinstance(item, dict) and len(item) == 1:
            name, args = next(iter(item.items()))
        else:
            raise ItemError("", f"expected a {self.kind} name or a one-key mapping like `dense: 10`, got {item!r}")
        cls = self.entries.get(name)
        if cls is None:
            raise ItemError("", f"unknown {self.kind} '{name}'{closest(name, self.entries)}")
        prefix = f".{name}" if path_has_name else ""
        if args is None:
            args = {}
        if not isinstance(args, dict):
            if cls.positional_field is None:
                raise ItemError(prefix, f"{name} takes a mapping of arguments, not {args!r}")
            args = {cls.positional_field: args}
        try:
            return cls.model_validate(args)
        except ValidationError as err:
            # An unknown key explains a missing one (a typo), so report it first.
            first = sorted(err.errors(), key=lambda e: e["type"] != "extra_forbidden")[0]
            field = ".".join(str(p) for p in first["loc"] if not _union_member(p))
            if first["type"] == "extra_forbidden":
                raise ItemError(f"{prefix}.{field}", f"unknown key{closest(field, cls.model_fields)}") from None
            msg = "required key is missing" if first["type"] == "missing" else first["msg"].removeprefix("Value error, ")
            words = [e["ctx"]["expected"] for e in err.errors() if e is not first and e["type"] == "literal_error"
                     and [p for p in e["loc"] if not _union_member(p)] == field.split(".")]
            if words:  # a number or a word (dense: outputs): say both
                msg += f" (or {' or '.join(words)})"
            if msg.startswith("@"):  # a nested registry list (an entry's augment) carries the rest of the path
                below, _, msg = msg[1:].partition(": ")
                field += below
            raise ItemError(f"{prefix}.{field}", msg) from None


# How pydantic names the members of a union in an error's location (`constrained-int`, `literal['outputs']`, `int`):
# not keys of the YAML, so left out of the path an error names.
_UNION_MEMBER = re.compile(r"constrained-\w+|\w+(-\w+)?\[.*\]|int|str|float|bool|list|dict|tuple")


def _union_member(part) -> bool:
    return isinstance(part, str) and _UNION_MEMBER.fullmatch(part) is not None


class ItemError(ValueError):
    """A registry item is wrong; `where` is the path below the item (`.dense.units`), `what` the reason."""

    def __init__(self, where: str, what: str):
        super().__init__(f"{where}: {what}")
        self.where, self.what = where, what


def parse_list(registry: Registry, items) -> list[Entry]:
    """A YAML list of registry items (layers, augmentations); errors read `[index].name.key: what`."""
    parsed = []
    for i, item in enumerate(items or []):
        try:
            parsed.append(registry.parse(item))
        except ItemError as err:
            raise ValueError(f"@[{i}]{err.where}: {err.what}") from None
    return parsed
