"""The config reference (docs/reference/config.md), generated from the config's JSON Schema (dlcli.schema).

Every key of every section, dataset kind, task, model preset, layer, augmentation, optimizer and scheduler, with its
type, default, allowed values and description, exactly as validation reads them: the schema is the one source, so the
reference cannot drift from the code (tests/test_reference.py fails when the committed page is stale).

    python -m dlcli.reference > docs/reference/config.md
"""

from __future__ import annotations

import json

HEADER = """# Config reference

Generated from the config schema by `python -m dlcli.reference > docs/reference/config.md`; do not edit by hand.
Each table lists a section's keys: the type (a link goes to the section that key holds), the default (a key without
one is required) and what it means. Unknown keys are refused, with the closest valid name suggested.
"""


def _anchor(name: str) -> str:
    return name.lower()


class _Writer:
    def __init__(self, schema: dict):
        self.schema = schema
        self.defs = schema["$defs"]
        self.titles: dict[str, str] = {}  # def name -> the heading it is documented under

    def ref(self, node: dict) -> str | None:
        target = node.get("$ref")
        return target.rsplit("/", 1)[-1] if target else None

    def type_of(self, node: dict, depth: int = 0) -> str:
        """A short, readable type: `integer > 0`, `adam | sgd`, `list of number`, a link to a section."""
        if depth > 4:
            return "..."
        target = node.get("$ref", "")
        if "/properties/" in target:  # a key of another section, e.g. a residual block's layers: model.layers' items
            return "a layer, as in [model.layers](#sequentialmodel)"
        name = self.ref(node)
        if name:
            label = self.titles.get(name, name)
            return f"[{label}](#{_anchor(name)})"
        if "const" in node:
            return f"`{node['const']}`"
        if "enum" in node:
            return " \\| ".join(f"`{v}`" for v in node["enum"])
        for key in ("anyOf", "oneOf"):
            if key in node:
                parts = [self.type_of(n, depth + 1) for n in node[key] if n.get("type") != "null"]
                nullable = any(n.get("type") == "null" for n in node[key])
                text = " or ".join(dict.fromkeys(p for p in parts if p))
                return text + (" or null" if nullable else "") if text else "null"
        kind = node.get("type")
        if kind == "array":
            if "prefixItems" in node:
                return "[" + ", ".join(self.type_of(n, depth + 1) for n in node["prefixItems"]) + "]"
            items = node.get("items")
            return f"list of {self.type_of(items, depth + 1)}" if items else "list"
        if kind == "object":
            props = node.get("properties")
            if props and len(props) <= 3 and all("$ref" in v or "anyOf" in v for v in props.values()):
                return "one of " + ", ".join(f"`{k}`" for k in props)
            return "mapping"
        text = {"integer": "integer", "number": "number", "string": "string", "boolean": "bool"}.get(kind, kind or "any")
        bounds = [f"{op} {node[k]}" for k, op in (("exclusiveMinimum", ">"), ("minimum", ">="),
                                                  ("exclusiveMaximum", "<"), ("maximum", "<=")) if k in node]
        if "minLength" in node and kind == "string":
            bounds.append(f"at least {node['minLength']} characters")
        return text + (" " + ", ".join(bounds) if bounds else "")

    @staticmethod
    def default_of(node: dict, required: bool) -> str:
        if required:
            return "required"
        if "default" not in node:
            return ""
        value = node["default"]
        if isinstance(value, (dict, list)) and len(json.dumps(value)) > 40:
            return "see the section"
        return f"`{json.dumps(value)}`"

    def table(self, node: dict, skip: tuple[str, ...] = ()) -> list[str]:
        props = node.get("properties", {})
        required = set(node.get("required", ()))
        rows = ["| key | type | default | description |", "| --- | --- | --- | --- |"]
        for key, value in props.items():
            if key in skip:
                continue
            text = (value.get("description") or "").replace("|", "\\|").replace("\n", " ")
            rows.append(f"| `{key}` | {self.type_of(value)} | {self.default_of(value, key in required)} | {text} |")
        return rows if len(rows) > 2 else ["No keys of its own."]

    def section(self, name: str, level: int, skip: tuple[str, ...] = ()) -> list[str]:
        node = self.defs[name]
        out = [f'{"#" * level} {self.titles.get(name, name)} {{#{_anchor(name)}}}', ""]
        doc = (node.get("description") or "").strip()
        if doc:
            out += [" ".join(doc.split()), ""]
        return out + self.table(node, skip) + [""]


def config_reference() -> str:
    """The reference page (Markdown)."""
    from dlcli.augment import AUGMENTS, SEQUENCE_AUGMENTS
    from dlcli.data.catalog import DATASETS
    from dlcli.models.layers import LAYERS
    from dlcli.optim import OPTIMIZERS, SCHEDULERS
    from dlcli.schema import config_schema

    schema = config_schema()
    w = _Writer(schema)
    groups = [("Dataset kinds (`data:`)", "data: {}", DATASETS), ("Layers (`model.layers`)", "{}", LAYERS),
              ("Image augmentations (`data.augment`)", "{}", AUGMENTS),
              ("Sequence augmentations (`data.augment`)", "{}", SEQUENCE_AUGMENTS),
              ("Optimizers (`optimizer:`)", "optimizer: {}", OPTIMIZERS),
              ("Schedulers (`scheduler:`)", "scheduler: {}", SCHEDULERS)]
    placed: dict[str, list[str]] = {}
    for title, spelling, registry in groups:
        names = []
        for entry, cls in sorted(registry.entries.items()):
            found = [d for d in w.defs if d == cls.__name__]
            if found:
                w.titles[found[0]] = spelling.format(entry)
                names.append(found[0])
        placed[title] = names
    props = schema["properties"]
    presets = sorted(props["model"].get("discriminator", {}).get("mapping", {}).items())
    for preset, target in presets:
        w.titles[target.rsplit("/", 1)[-1]] = f"model: {preset}"
    w.titles["TrainConfig"] = "train"
    seen = {n for names in placed.values() for n in names} | {t.rsplit("/", 1)[-1] for _, t in presets}
    seen.add("TrainConfig")

    out = [HEADER, "## The top level", ""]
    rows = ["| key | type | default | description |", "| --- | --- | --- | --- |"]
    required = set(schema.get("required", ()))
    for key, value in props.items():
        text = (value.get("description") or "").replace("|", "\\|")
        kind = {"data": "[a dataset kind](#dataset-kinds)", "model": "[a model](#models)",
                "task": "[a task](#tasks)", "train": "[train](#trainconfig)"}.get(key) or w.type_of(value)
        default = w.default_of(value, key in required)
        rows.append(f"| `{key}` | {kind} | {default} | {text} |")
    out += rows + [""]

    out += ["## Tasks {#tasks}", "",
            "`task: NAME` with the defaults, or `task: {type: NAME, key: value}`.", ""]
    for option in props["task"]["anyOf"]:
        if option.get("type") != "object":
            continue
        name = option["properties"]["type"]["const"]
        out += [f"### task: {name}", ""] + w.table(option, skip=("type",)) + [""]

    out += ["## train {#trainconfig}", ""] + w.table(w.defs["TrainConfig"]) + [""]
    out += ["## Models {#models}", "", "`model: {type: NAME, ...}`; `sequential` is a Keras-like list of layers.", ""]
    for _, target in presets:
        out += w.section(target.rsplit("/", 1)[-1], 3, skip=("type",))
    for title, names in placed.items():
        anchor = " {#dataset-kinds}" if title.startswith("Dataset") else ""
        out += [f"## {title}{anchor}", ""]
        key = "dataset" if title.startswith("Dataset") else "name"
        for name in names:
            out += w.section(name, 3, skip=(key,))
    rest = sorted(set(w.defs) - seen)
    if rest:
        out += ["## Other sections", "", "Sections that the keys above hold.", ""]
        for name in rest:
            out += w.section(name, 3)
    return "\n".join(out).rstrip() + "\n"


if __name__ == "__main__":
    print(config_reference(), end="")
