"""Pydantic JSON Schema -> Kubernetes structural OpenAPI v3 schema (what a CRD version accepts).

A structural schema has a type on every node, no $ref, no anyOf/oneOf mixing types, no
``additionalProperties: false`` (the API server prunes unknown fields instead) and no recursion.
"""

from __future__ import annotations

import json
from typing import Any

from pydantic import BaseModel

# A recursive type (a filter holding filters) is unrolled this many times; below that, the schema
# keeps whatever is there unchecked, and the pydantic model checks the full depth when the operator
# reads the object.
RECURSION_DEPTH = 3

_VALIDATIONS = "x-kubernetes-validations"
_PRESERVE = "x-kubernetes-preserve-unknown-fields"
# JSON Schema keywords that the API server rejects or that carry nothing for it.
_DROPPED = {"title", "propertyNames", "$defs"}


class NotStructuralError(ValueError):
    """The model uses a construct that has no structural schema (e.g. a union of two types)."""


def structural_schema(model: type[BaseModel], recursion_depth: int = RECURSION_DEPTH) -> dict[str, Any]:
    raw = model.model_json_schema(by_alias=True, mode="validation")
    schema = _Converter(raw.get("$defs", {}), recursion_depth).convert(raw, {})
    # Inlined definitions share their lists and dicts; callers edit the result, and YAML would
    # print shared nodes as anchors: give every node its own copy.
    copied: dict[str, Any] = json.loads(json.dumps(schema))
    return copied


class _Converter:
    def __init__(self, defs: dict[str, Any], recursion_depth: int) -> None:
        self.defs = defs
        self.recursion_depth = recursion_depth

    def convert(self, node: dict[str, Any], depth: dict[str, int]) -> dict[str, Any]:
        if "$ref" in node:
            return self._inline(node, depth)
        if "anyOf" in node or "oneOf" in node:
            return self.convert(_without_null(node), depth)
        out: dict[str, Any] = {}
        for key, value in node.items():
            if key in _DROPPED or (key == "default" and value is None):
                continue
            if key == "properties":
                out[key] = {name: self.convert(child, depth) for name, child in value.items()}
            elif key == "items":
                out[key] = self.convert(value, depth)
            elif key == "additionalProperties":
                if value is True or value == {}:
                    out[_PRESERVE] = True  # extra="allow": keep what a newer writer adds
                elif value is not False:
                    out[key] = self.convert(value, depth)
            elif key == "const":
                out["enum"] = [value]
            elif key in ("exclusiveMinimum", "exclusiveMaximum"):
                raise NotStructuralError(f"{key} is draft 2020 JSON Schema; use ge/le in the model")
            else:
                out[key] = value
        if "type" not in out:
            if not out.get(_PRESERVE):
                raise NotStructuralError(f"schema without a type: {node}")
            out["type"] = "object"
        return _readable_order(out)

    def _inline(self, node: dict[str, Any], depth: dict[str, int]) -> dict[str, Any]:
        name = node["$ref"].rsplit("/", 1)[-1]
        siblings = {k: v for k, v in node.items() if k != "$ref"}
        if depth.get(name, 0) >= self.recursion_depth:
            description = f"{self.defs[name].get('description', name)} Nested too deep to be checked by the schema."
            return {"description": description, "type": "object", _PRESERVE: True}
        target = self.convert(self.defs[name], {**depth, name: depth.get(name, 0) + 1})
        return _readable_order(_merge(target, self.convert({"type": "object", **siblings}, depth) if siblings else {}))


def _without_null(node: dict[str, Any]) -> dict[str, Any]:
    """``Optional[X]`` is ``anyOf: [X, null]``: an absent field is the API server's null, so keep X."""
    key = "anyOf" if "anyOf" in node else "oneOf"
    options = [option for option in node[key] if option != {"type": "null"}]
    if len(options) != 1:
        raise NotStructuralError(f"{key} of several types cannot be structural: {node[key]}")
    rest = {k: v for k, v in node.items() if k != key}
    if "$ref" in options[0]:
        return {**options[0], **rest}
    return _merge(options[0], rest)


def _merge(base: dict[str, Any], override: dict[str, Any]) -> dict[str, Any]:
    """The field's own keys (description, default, rules) win over the type's; rules add up."""
    merged = {**base, **override}
    rules = base.get(_VALIDATIONS, []) + override.get(_VALIDATIONS, [])
    if rules:
        merged[_VALIDATIONS] = rules
    return merged


_FIRST = ("description", "type")


def _readable_order(node: dict[str, Any]) -> dict[str, Any]:
    """Description and type first, then the rest as pydantic wrote it: the generated YAML reads top-down."""
    return {**{k: node[k] for k in _FIRST if k in node}, **{k: v for k, v in node.items() if k not in _FIRST}}
