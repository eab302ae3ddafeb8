"""JSON Schema to the OpenAPI subset Gemini's ``Schema`` accepts.

Used for function parameters and ``responseSchema``. Keywords Gemini has pass
unchanged; a missing type is inferred; ``oneOf`` becomes ``anyOf``, ``const`` a
one-value enum, and local ``$ref``s are inlined. Keywords that only narrow a
schema are dropped (it gets looser, never stricter); keywords whose meaning
cannot be kept are refused with a 400 naming the field.
"""

from __future__ import annotations

from typing import Any

from kathan.errors import InvalidRequestError

# The OpenAPI-subset keywords Gemini's Schema has and that pass unchanged.
_SCHEMA_KEEP = (
    "title", "description", "minItems", "maxItems", "minProperties", "maxProperties",
    "minLength", "maxLength", "pattern", "minimum", "maximum", "default", "example",
    "propertyOrdering",
)
# Keywords whose meaning cannot be kept by loosening the schema: refused.
_SCHEMA_REFUSE = (
    "not", "if", "then", "else", "prefixItems", "dependentSchemas", "$dynamicRef",
    "$recursiveRef",
)
_SCHEMA_TYPES = frozenset({"STRING", "NUMBER", "INTEGER", "BOOLEAN", "ARRAY", "OBJECT"})
_SCHEMA_FORMATS = {
    "STRING": frozenset({"enum", "date-time"}),
    "NUMBER": frozenset({"float", "double"}),
    "INTEGER": frozenset({"int32", "int64"}),
}
_MAX_SCHEMA_DEPTH = 64


def to_gemini_schema(schema: dict[str, Any], *, param: str) -> dict[str, Any]:
    """A JSON Schema as Gemini's ``Schema`` (a subset of OpenAPI 3.0's schema object).

    - Converted: ``type`` (upper-cased; ``["x", "null"]`` becomes ``nullable``,
      several types become ``anyOf``; a missing one is inferred from
      ``properties``, ``items`` or a string ``enum``), ``oneOf`` (becomes
      ``anyOf``: "exactly one" loosens to "at least one"), ``const`` (a
      one-value ``enum``), local ``$ref``s into ``$defs``/``definitions``
      (inlined; a recursive one is refused), a one-schema ``allOf`` (merged).
    - Kept: ``properties``, ``required`` (names of listed properties),
      ``items``, ``anyOf``, ``enum`` (of strings), ``nullable``, ``format``
      (those Gemini knows for the type) and ``_SCHEMA_KEEP``.
    - Dropped, loosening the schema: everything else, notably ``$schema``,
      ``$id``, ``$defs``, ``additionalProperties``, ``strict``, ``examples``,
      ``exclusiveMinimum``/``exclusiveMaximum``, ``multipleOf``,
      ``uniqueItems``, ``patternProperties``, ``contains``, enums of
      non-strings, other formats, and empty ``properties``.
    - Refused (400, ``invalid_json_schema``): ``_SCHEMA_REFUSE``, an ``allOf``
      of several schemas, tuple-form ``items``, an array without an ``items``
      schema (Gemini requires one), non-local ``$ref``s.

    >>> to_gemini_schema({"type": "object", "properties": {"a": {"type": "string"}},
    ...                   "additionalProperties": False}, param="p")
    {'type': 'OBJECT', 'properties': {'a': {'type': 'STRING'}}}
    """
    return _SchemaConverter(schema, param).convert(schema, (), "")


class _SchemaConverter:
    def __init__(self, root: dict[str, Any], param: str) -> None:
        self.root = root
        self.param = param

    def fail(self, at: str, message: str) -> InvalidRequestError:
        where = f"{self.param} (at {at})" if at else self.param
        return InvalidRequestError(
            f"{where}: {message}", param=self.param, code="invalid_json_schema"
        )

    def convert(self, node: Any, refs: tuple[str, ...], at: str) -> dict[str, Any]:
        """``node`` converted; ``at`` is its place in the schema, as a JSON pointer."""
        if at.count("/") > _MAX_SCHEMA_DEPTH:
            raise self.fail(at, "the schema is nested too deeply.")
        if node is True:
            return {}
        if not isinstance(node, dict):
            raise self.fail(at, "a schema must be a JSON object (or true).")
        node = dict(node)
        if (ref := node.pop("$ref", None)) is not None:
            if ref in refs:
                raise self.fail(at, f"'{ref}' refers to itself; Gemini schemas cannot recurse.")
            return self.convert({**self.resolve(ref, at), **node}, (*refs, ref), at)
        for keyword in _SCHEMA_REFUSE:
            if keyword in node:
                raise self.fail(at, f"'{keyword}' cannot be expressed in a Gemini schema.")
        if (all_of := node.pop("allOf", None)) is not None:
            if not isinstance(all_of, list) or len(all_of) != 1 or not isinstance(all_of[0], dict):
                raise self.fail(at, "only an 'allOf' of one schema can be expressed.")
            return self.convert({**all_of[0], **node}, refs, at)
        nullable = node.get("nullable") is True
        enum = [node["const"]] if "const" in node else node.get("enum")
        if isinstance(enum, list) and None in enum:
            nullable, enum = True, [e for e in enum if e is not None]
        raw = node.get("type")
        types = [raw] if isinstance(raw, str) else list(raw) if isinstance(raw, list) else []
        if "null" in types:
            nullable, types = True, [t for t in types if t != "null"]
        if "anyOf" in node or "oneOf" in node:
            return self.variants(node, nullable, refs, at)
        if len(types) > 1:
            rest = {k: v for k, v in node.items() if k not in ("type", "nullable")}
            out: dict[str, Any] = {"anyOf": [
                self.convert({**rest, "type": t}, refs, f"{at}/type/{i}")
                for i, t in enumerate(types)
            ]}
            return {**out, "nullable": True} if nullable else out
        string_enum = isinstance(enum, list) and enum and all(isinstance(e, str) for e in enum)
        # Gemini needs a type; one missing is inferred from the keywords, as JSON Schema implies.
        kind = str(types[0]).upper() if types else (
            "OBJECT" if "properties" in node else "ARRAY" if "items" in node
            else "STRING" if string_enum else None)
        out = {}
        if kind is not None:
            if kind not in _SCHEMA_TYPES:
                raise self.fail(at, f"unknown type {types[0]!r}.")
            out["type"] = kind
        if string_enum and kind == "STRING":
            out["enum"] = enum
        out.update((k, node[k]) for k in _SCHEMA_KEEP if k in node)
        if node.get("format") in _SCHEMA_FORMATS.get(kind or "", ()):
            out["format"] = node["format"]
        properties = node.get("properties")
        if isinstance(properties, dict) and properties:
            out["properties"] = {
                str(name): self.convert(sub, refs, f"{at}/properties/{name}")
                for name, sub in properties.items()
            }
            if required := [r for r in node.get("required") or () if r in properties]:
                out["required"] = required
        items = node.get("items")
        if isinstance(items, list):
            raise self.fail(at, "tuple-form 'items' (a list of schemas) cannot be expressed.")
        if isinstance(items, dict) and items:
            out["items"] = self.convert(items, refs, f"{at}/items")
        elif kind == "ARRAY":
            raise self.fail(at, "Gemini needs the schema of an array's 'items'.")
        return {**out, "nullable": True} if nullable else out

    def variants(
        self, node: dict[str, Any], nullable: bool, refs: tuple[str, ...], at: str
    ) -> dict[str, Any]:
        """``anyOf``/``oneOf``: the alternatives, a ``{"type": "null"}`` one as ``nullable``."""
        key = "anyOf" if "anyOf" in node else "oneOf"
        variants = node[key]
        if "anyOf" in node and "oneOf" in node:
            raise self.fail(at, "'anyOf' and 'oneOf' together cannot be expressed.")
        if not isinstance(variants, list) or not variants:
            raise self.fail(at, f"'{key}' must be a non-empty list of schemas.")
        converted = []
        for i, variant in enumerate(variants):
            if isinstance(variant, dict) and variant.get("type") == "null" and len(variant) == 1:
                nullable = True
            else:
                converted.append(self.convert(variant, refs, f"{at}/{key}/{i}"))
        notes = {k: node[k] for k in ("title", "description", "default", "example") if k in node}
        if len(converted) == 1:
            out = {**converted[0], **notes}
        else:
            out = {"anyOf": converted, **notes} if converted else notes
        return {**out, "nullable": True} if nullable else out

    def resolve(self, ref: Any, at: str) -> Any:
        if not isinstance(ref, str) or not ref.startswith("#/"):
            raise self.fail(at, f"only local references ('#/$defs/...') can be inlined, not "
                                f"{ref!r}.")
        target: Any = self.root
        for token in ref[2:].split("/"):
            token = token.replace("~1", "/").replace("~0", "~")
            if not isinstance(target, dict) or token not in target:
                raise self.fail(at, f"'{ref}' points to nothing in the schema.")
            target = target[token]
        return target
